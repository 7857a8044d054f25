//! The `core-client` command line, over the client library (`rex-client`).
//!
//! Layout:
//! - `run`: [`main`]: the command line parsed, each command run on the
//!   runtime and span export it needs, its outcome an exit status.
//! - `cli`: the commands (`exec`, `keygen`, `pubkey`, `trust`, `config
//!   show`, `history`, `trace show`, `report`, `probe`, `agent`,
//!   `completions`, `man`) and their one-line errors and exit codes.
//! - `settings`: a server's effective settings (flags over the config
//!   file over built-in defaults) and where each came from.
//! - `config`: the config file (named servers, `[defaults]`), checked
//!   with file:line messages.
//! - `known`: the known servers (trust on first use, opt-in).
//! - `address`: relay addresses as people type them (`proto`'s, which
//!   the exec-server's `--relay` reads too).
//! - `names`: server ids shown as the names the user gave them (what
//!   the trace views of the `analysis` crate ask for).
//! - `paths`: the config directory and the files in it.
//! - `tickets`: the exec-servers' early-data tickets, kept between runs
//!   in the data directory.
//!
//! It links neither service: the demo that runs all three in one process
//! is a program of its own (`rex-demo`).

#![warn(unreachable_pub)]

pub(crate) use proto::address;
mod cli;
mod config;
mod known;
mod names;
mod paths;
mod run;
mod settings;
mod tickets;

pub use run::main;
