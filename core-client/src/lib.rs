//! The client library a remote-exec stack embeds, and the `core-client` CLI.
//!
//! ```no_run
//! # async fn f(config: core_client::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use core_client::{Client, Event, ExecSpec};
//! let client = Client::new(config);
//! let mut run = client.exec(ExecSpec::new(["sh", "-c", "echo hi; exit 3"])).await?;
//! while let Some(event) = run.next().await {
//!     if let Event::Stdout(bytes) = event {
//!         print!("{}", String::from_utf8_lossy(&bytes));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`config`]: client settings and the target (relay or direct).
//! - [`client`]: [`Client`] (one warm, reused session) and [`Execution`].
//! - [`exec`]: what a call is ([`ExecSpec`]) and what comes back ([`Event`]).
//! - [`connect`]: reaching the relay, the Noise handshake, session init.
//! - [`session`]: the driver task of one established session.
//! - [`records`]: each command's metadata record (off the hot path).
//! - [`cli`]: the `core-client` command line (`exec`, `keygen`, `demo`).
//! - [`demo`]: relay, exec-server and client in one process, on loopback.
//! - [`waterfall`]: a recorded trace rendered as text (`trace show`).

pub mod cli;
pub mod client;
pub mod config;
pub mod connect;
pub mod demo;
pub mod exec;
pub mod records;
pub mod session;
pub mod waterfall;

pub use client::{Client, ClientError, Controller, Execution};
pub use config::{ClientConfig, Target};
pub use connect::ConnectError;
pub use exec::{Event, ExecFailure, ExecSpec, ExitStatus, Output};
