//! The one lifecycle pattern every service and the client library follow
//! (docs/architecture.md, "Shutdown"): a cancellation token tells tasks to
//! stop, a task tracker lets shutdown wait for them, and every task carries
//! its span.
//!
//! Layout:
//! - `tasks`: [`Tasks`], the tracked set every task is spawned through.
//! - `signals` (feature `signals`, for service binaries): SIGINT and
//!   SIGTERM start a graceful shutdown; SIGHUP is reported for a reload.
//! - `limits` (feature `limits`): the descriptor limit raised at start.
//! - `durations` (feature `durations`): durations on command lines.
//! - `config_file` (feature `config-file`): a service's settings from a
//!   TOML file, each key a flag's long name.
//! - `runtime` (feature `runtime`): the multi-thread runtime a service
//!   runs on, with the workers it is given.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "config-file")]
pub mod config_file;
#[cfg(feature = "durations")]
pub mod durations;
#[cfg(feature = "limits")]
pub mod limits;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "signals")]
pub mod signals;
mod tasks;

pub use tasks::Tasks;
