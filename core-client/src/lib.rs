//! The `core-client` command line, over the client library (`rex-client`).
//!
//! Layout:
//! - [`cli`]: the commands (`exec`, `keygen`, `pubkey`, `trust`, `config
//!   show`, `history`, `trace show`, `report`, `agent`, `completions`, `man`,
//!   `demo`) and
//!   their one-line errors and exit codes.
//! - [`settings`]: a server's effective settings (flags over the config
//!   file over built-in defaults) and where each came from.
//! - [`config`]: the config file (named servers, `[defaults]`), checked
//!   with file:line messages.
//! - [`known`]: the known servers (trust on first use, opt-in).
//! - [`address`]: relay addresses as people type them (`proto`'s, which
//!   the exec-server's `--relay` reads too).
//! - [`names`]: server ids shown as the names the user gave them (what
//!   the trace views of the `analysis` crate ask for).
//! - [`paths`]: the config directory and the files in it.
//! - [`tickets`]: the exec-servers' early-data tickets, kept between runs
//!   in the data directory.
//! - [`demo`]: relay, exec-server and client in one process, on loopback
//!   (the only place that links the relay and the exec-server).
//! - [`stdout`]: stdout for a command that prints as it goes, where a
//!   reader that went away is remembered (exit 141), never a panic.

pub use proto::address;
pub mod cli;
pub mod config;
pub mod demo;
pub mod known;
pub mod names;
pub mod paths;
pub mod settings;
pub mod stdout;
pub mod tickets;
