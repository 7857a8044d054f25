//! The `core-client` command line: its arguments, its commands, and their
//! one-line errors and exit codes.
//!
//! Layout:
//! - this module: what the rest of the crate calls (re-exported).
//! - `parse`: the arguments (`Cli`) and parsing them (`exec` by a parser
//!   of its own).
//! - `exec_args`: `exec`'s arguments (`ExecArgs`) and help.
//! - `error`: [`CliError`] and the exit codes.
//! - `context`: the [`Context`] every command reads (config file, known
//!   servers).
//! - `exec`: `exec`, over the effective settings (through a running agent
//!   when there is one).
//! - `call`: what `exec` does with a running call's events and this
//!   process's signals, as a state machine without I/O.
//! - [`agent`]: `agent start`, `stop`, `status`, `warm` and `flush`, over
//!   `rex_agent` (the agent itself).
//! - `tty`: the local terminal in terminal mode (size, raw mode and its
//!   restoration).
//! - `identity`: `keygen`, `pubkey` and `trust` (keys and known servers).
//! - `life`: the CLI's own life as spans (`cli.run` and its stages).
//! - `link_notice`: a lost link and its return, told on a terminal.
//! - `show`: `config show`.
//! - `signals`: the local signals `exec` listens for, taken from before
//!   its dispatch.
//! - `stdin`: `exec`'s stdin sent as it is read (the null device closed
//!   at once).
//! - `verbose`: `-v`, what `exec` does, one line a step.
//! - `views`: `history` and `trace show`, naming servers as the user did.
//! - `report`: `report`, over many commands (see the `analysis` crate).
//! - `probe`: `probe`, a command run many times and reported on.
//! - `docs`: `completions` and `man`.

pub(crate) mod agent;
mod call;
mod context;
mod docs;
mod error;
mod exec;
mod exec_args;
mod identity;
mod life;
mod link_notice;
mod parse;
pub(crate) mod probe;
pub(crate) mod report;
mod show;
mod signals;
mod stdin;
mod tty;
mod verbose;
mod views;

pub(crate) use context::Context;
pub(crate) use docs::{completions, man};
pub(crate) use error::CliError;
pub(crate) use exec::{Lifetime, exec};
pub(crate) use identity::{keygen, pubkey, trust};
pub(crate) use life::ProcessStart;
pub(crate) use parse::{CliCommand, ConfigCommand, TraceCommand, parse};
pub(crate) use show::config_show;
pub(crate) use verbose::Verbose;
pub(crate) use views::{history, trace_show};
