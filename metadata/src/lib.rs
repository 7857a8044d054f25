//! Durable records of what ran, kept off the hot path (docs/architecture.md, "Records off the hot path").
//!
//! Layout:
//! - [`record`]: what is recorded (a client's commands, an exec-server's
//!   processes) and the key whose latest state wins.
//! - [`store`]: the embedded SQLite store (WAL, schema version, refuses a
//!   newer schema), writes in one transaction per batch, and the queries
//!   behind `core-client history`.
//! - `writer`: [`Persister`], the background writer thread: `record`
//!   never waits for the disk; `flush` is the barrier.
//! - [`location`]: where the database lives by default.

// Tests may unwrap; the library may not (the workspace lints deny it).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod location;
pub mod record;
pub mod store;
mod writer;

pub use record::{CommandRecord, Exit, ProcessRecord, Progress, Record, TraceRef};
pub use store::{Durability, Store, StoreError};
pub use writer::{Faults, PersistError, Persister, WriterConfig};

/// Opens the store in `dir` and starts its writer.
pub fn open(dir: &std::path::Path, config: WriterConfig) -> Result<Persister, StoreError> {
    let store = Store::open_with(&dir.join(store::FILE_NAME), config.durability)?;
    Ok(Persister::start(store, config))
}

/// Starts a writer for the store in `dir` that opens it itself, in the
/// background: never waits for the disk or a lock. The writer's thread
/// opens the database with the first record; a database that cannot be
/// opened is retried like a failed write, and reported by the barriers.
pub fn open_in_background(dir: &std::path::Path, config: WriterConfig) -> Persister {
    Persister::start_opening(dir.join(store::FILE_NAME), config)
}
