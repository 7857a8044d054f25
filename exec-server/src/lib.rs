//! The exec-server: registers with a relay (and optionally listens
//! directly), answers Noise IK handshakes from authorized clients, runs their
//! commands, and pushes terminal events back as they happen.
//!
//! Layout:
//! - [`config`]: settings and their bounds.
//! - `server`: start ([`start`]), run ([`run`]) and graceful shutdown.
//! - [`registration`]: the dial-out registration with a relay (the
//!   exec-server's link to it) and session accept.
//! - `link_credit`: the relay's credit for a session's frames toward its
//!   client, a frame sent only within what the relay granted.
//! - [`credit`]: a call's output credit (the session's output window),
//!   which its process reserves from before reading its output.
//! - `contain`: a command's processes end with it and with the
//!   exec-server (death signal, process group, a cgroup v2 per command;
//!   `contain::cgroups` keeps a few empty cgroups ready for the next
//!   commands).
//! - `spawn`: starting a process without copying the exec-server
//!   (`clone(CLONE_VM | CLONE_VFORK)`, the containment steps in the child),
//!   and waiting for its exit.
//! - [`environment`]: the environment a command starts with (an
//!   allow-list of the exec-server's variables, never its own settings or
//!   telemetry's, and what the request sets).
//! - `direct`: the tunnel service for clients that connect directly.
//! - [`keys`]: the authorized keys in force, re-read when their file
//!   changes (checked at each handshake) and on SIGHUP.
//! - `session`: one client session: the session machine
//!   (`proto::session::ServerSession`) run by `proto::driver`, and beside it
//!   the endpoint that starts each call's process and pushes its events.
//! - [`unacked`]: the one budget for output clients have not
//!   acknowledged (per client key and in all): a command whose read does
//!   not fit waits on its output.
//! - `stdin`: a call's stdin between the session and the process (never
//!   more than the session's stdin window), with what the process took.
//! - [`process`]: one child process: spawn, pipes (or its terminal),
//!   signals, resizes, exit.
//! - `pty`: a pseudo-terminal for a process that asks for one.
//! - [`shell`]: the login shell a call may ask for instead of a command.

pub mod config;
mod contain;
pub mod credit;
mod direct;
pub mod environment;
pub mod keys;
mod link_credit;
pub mod process;
mod pty;
pub mod registration;
mod server;
mod session;
pub mod shell;
mod spawn;
mod stdin;
pub mod unacked;

pub use config::ExecServerConfig;
pub use contain::READY_CGROUPS;
pub use server::{ExecServerError, ExecServerHandle, run, start};
