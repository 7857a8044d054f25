//! A link emulator: a bounded userspace TCP forwarder on loopback that
//! makes the path between two components behave like a real network —
//! one-way delay and jitter per direction, a bandwidth cap with a bounded
//! bottleneck buffer (so a queue forms where a real one would), stalls,
//! and cuts (close or reset, at a byte count or a time). It keeps order,
//! never buffers without bound, and counts what it carried.
//!
//! The kernel's `netem` is not available everywhere the project's tests
//! run, so every real-network test and benchmark puts one of these between
//! the components it measures (and ssh, when it is the peer, through the
//! same settings).
//!
//! Layout:
//! - [`config`](Config): what a path does ([`PathSettings`] per
//!   [`Direction`]), the bounds, and a [`Cut`] for every connection.
//! - `lane`: one direction's delay line, bounded in bytes.
//! - `live`: what every connection reads of a running emulator (its
//!   configuration, the paths as changed live, stalls, counters).
//! - `conn`: one connection, a reader and a writer thread per direction;
//!   the bottleneck and the delay are applied as bytes are read, and each
//!   chunk leaves when it is due.
//! - [`Emulator`]: the listener, live settings, stalls, cuts and
//!   [`LinkStats`].
//! - [`units`]: durations, rates and sizes as people write them.
//!
//! Threads, not an async runtime: each chunk is written within tens of
//! microseconds of its due instant (a futex wait), where a runtime's timer
//! wheel rounds every wait up to the next millisecond — an error of up to
//! 4 ms per round trip through a client, a relay and back. The writer
//! threads also ask the kernel for no timer slack (it would otherwise
//! round their waits up by 50 µs to batch wake-ups): a 1-byte echo across
//! a 50 ms path measured 50.63 ms with the slack, 50.51 ms without.
//!
//! ```no_run
//! use std::time::Duration;
//! use link_emulator::{Config, Emulator};
//!
//! let relay: std::net::SocketAddr = "127.0.0.1:7600".parse().unwrap();
//! let link = Emulator::start(Config::new(relay).rtt(Duration::from_millis(50))).unwrap();
//! // Clients dial link.addr() instead of the relay; 25 ms each way.
//! println!("{}", link.stats());
//! ```

mod config;
mod conn;
mod emulator;
mod lane;
mod live;
mod stats;
pub mod units;

pub use config::{Config, Cut, CutAt, CutKind, Direction, PathSettings};
pub use emulator::{Emulator, Error};
pub use stats::{DirectionStats, LinkStats};
