//! The exec-server: registers with a relay (and optionally listens
//! directly), answers Noise IK handshakes from authorized clients, runs their
//! commands, and pushes terminal events back as they happen.
//!
//! Layout:
//! - [`config`]: settings and their bounds.
//! - [`server`]: start, run and graceful shutdown.
//! - [`link`]: the dial-out registration with a relay and session accept.
//! - [`direct`]: the tunnel service for clients that connect directly.
//! - [`session`]: one Noise session: handshake, dispatch, event push.
//! - [`process`]: one child process: spawn, pipes, signals, exit.

pub mod config;
pub mod direct;
pub mod link;
pub mod process;
pub mod server;
pub mod session;
pub mod stdin;

pub use config::ExecServerConfig;
pub use server::{ExecServerError, ExecServerHandle, run, start};
