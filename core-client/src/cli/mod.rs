//! The `core-client` command line: its arguments, its commands, and their
//! one-line errors and exit codes.
//!
//! Layout:
//! - this module: the arguments ([`Cli`]), [`CliError`] and the
//!   [`Context`] every command reads (config file, known servers).
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
//! - `parse`: parsing the command line (`exec` by a parser of its own),
//!   and `exec`'s arguments ([`ExecArgs`]).
//! - `show`: `config show`.
//! - `signals`: the local signals `exec` listens for, taken from before
//!   its dispatch.
//! - `verbose`: `-v`, what `exec` does, one line a step.
//! - `views`: `history` and `trace show`, naming servers as the user did.
//! - `report`: `report`, over many commands (see the `analysis` crate).
//! - `probe`: `probe`, a command run many times and reported on.
//! - `docs`: `completions` and `man`.

pub(crate) mod agent;
mod call;
mod docs;
mod exec;
mod identity;
mod life;
mod link_notice;
mod parse;
pub(crate) mod probe;
pub(crate) mod report;
mod show;
mod signals;
mod tty;
mod verbose;
mod views;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::known::{KnownError, KnownServers};
use crate::names::ServerNames;
use crate::settings::{ServerArgs, SettingsError};

pub(crate) use docs::{completions, man};
pub(crate) use exec::{Lifetime, exec};
pub(crate) use identity::{keygen, pubkey, trust};
pub(crate) use life::ProcessStart;
pub(crate) use parse::ExecArgs;
pub(crate) use parse::parse;
pub(crate) use show::config_show;
pub(crate) use verbose::Verbose;
pub(crate) use views::{history, trace_show};

/// Exit code for connection and authentication failures (as ssh uses).
pub(crate) const EXIT_CONNECTION: u8 = 255;
/// Exit code for usage and configuration errors.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code once stdout is gone (`… | head -1`): that of a process
/// killed by SIGPIPE, 128 + 13.
pub(crate) const EXIT_STDOUT_GONE: u8 = 128 + 13;

/// Runs commands on exec-servers through an encrypted relay, and shows
/// where each command's time went.
///
/// Servers are named in a config file ($XDG_CONFIG_HOME/rex/config.toml,
/// else ~/.config/rex/config.toml, or --config FILE): a
/// `[servers.build-box]` table with `relay = "10.0.0.5:7600"`, then
/// `core-client keygen` (once), `core-client trust build-box --server KEY`
/// and `core-client exec build-box -- make`.
///
/// Spans are exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or
/// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: over gRPC, or over HTTP
/// when OTEL_EXPORTER_OTLP_PROTOCOL is http/protobuf or http/json (then
/// /v1/traces is appended to OTEL_EXPORTER_OTLP_ENDPOINT);
/// OTEL_EXPORTER_OTLP_HEADERS adds headers (key=value,...). Otherwise they
/// are written to a local trace file that `core-client trace show` reads.
/// OTEL_SDK_DISABLED=true turns export off.
#[derive(Debug, Parser)]
#[command(name = "core-client", version)]
pub(crate) struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// Options every subcommand takes (before or after it).
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The local trace file (OTLP JSON, one trace per line) [default:
    /// the user data dir's rex/traces.jsonl]
    #[arg(long, global = true, env = "REX_TRACE_FILE", value_name = "PATH")]
    pub trace_file: Option<PathBuf>,
    /// Where command records are kept (DIR/metadata.sqlite3) [default: the
    /// user data dir's rex/]
    #[arg(long, global = true, env = "REX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The config file [default: $XDG_CONFIG_HOME/rex/config.toml, else
    /// ~/.config/rex/config.toml; none is needed]
    #[arg(long, global = true, env = "REX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Say what `exec` does, one line a step on stderr (the config and
    /// known-servers entries used, each relay tried, the connection's
    /// outcome, resumes); -vv says more. Never keys or the command.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Cli {
    /// The data directory to use, if any can be named.
    pub(crate) fn data_dir_path(&self) -> Option<PathBuf> {
        self.global
            .data_dir
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(metadata::location::default_dir)
    }

    /// The trace file to use, if any can be named.
    pub(crate) fn trace_file_path(&self) -> Option<PathBuf> {
        self.global
            .trace_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(telemetry::trace_file::default_path)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CliCommand {
    /// Run a command on an exec-server (its help is in `parse`, which the
    /// parser of `exec` alone shares).
    #[command(about = parse::EXEC_ABOUT, long_about = parse::EXEC_LONG_ABOUT)]
    Exec(ExecArgs),
    /// Write a new static private key (mode 0600) and print its public key,
    /// which is also written beside it, to FILE.pub (as ssh-keygen does).
    ///
    /// Without --out, the key is this client's default identity:
    /// $XDG_CONFIG_HOME/rex/client.key (else ~/.config/rex/client.key, in
    /// a directory of mode 0700), which `exec` uses when no --key is
    /// given. An existing key is never overwritten.
    Keygen {
        /// Where to write the private key (must not exist) [default: the
        /// default identity]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the public key for a private key file.
    Pubkey {
        /// The private key file [default: the default identity]
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Record an exec-server's key under a name (known servers, as ssh's
    /// known_hosts).
    ///
    /// `exec NAME` then uses this key when the config file gives none, and
    /// refuses to connect if the name is ever offered another key.
    Trust(TrustArgs),
    /// Look at the configuration.
    Config {
        /// What to look at.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// A local agent that holds warm sessions, so that each `exec` finds
    /// its session established (as ssh's ControlMaster does).
    ///
    /// `exec` uses a running agent by itself for the same relay, server and
    /// key (`--no-agent` opts out), and runs without it, saying so in one
    /// line, if it has gone or is busy. Servers whose `warm` option is an
    /// interval are held and warmed from the agent's start; `agent warm`
    /// warms now. The agent listens on a socket only its user may use:
    /// $REX_AGENT_SOCKET, else $XDG_RUNTIME_DIR/rex/agent.sock, else
    /// /tmp/rex-agent-UID/agent.sock.
    Agent {
        /// What to do.
        #[command(subcommand)]
        command: agent::AgentCommand,
    },
    /// List recent commands, newest first (from the local records).
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (one array of records) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only commands run on this server: a configured or known name, or
        /// a server id (or its first digits).
        #[arg(long, value_name = "NAME|ID")]
        server: Option<String>,
    },
    /// Where the time goes across many commands: per-stage percentiles
    /// and shares, cold against warm, time to first output, the slowest
    /// commands, an A/B comparison and go/no-go gates.
    ///
    /// Reads the local trace file (every rotated generation), an OTLP JSON
    /// file (--file) or Jaeger (--jaeger URL --service NAME). Prints tables
    /// or JSON (--json).
    ///
    /// Exit status: 0, or 1 when a gate fails (or rests on fewer than
    /// --min-count commands); 2 for a malformed gate or other usage error;
    /// 3 when the source cannot be read.
    Report(report::ReportArgs),
    /// Run a command many times against one exec-server and print the
    /// report of exactly those commands (`mtr` for remote commands).
    ///
    /// --cold opens a new session for each command, --warm (the default)
    /// shares one session established first, both together alternate
    /// them. A progress line shows on a terminal; Ctrl-C stops starting
    /// commands and reports those that ran. Their traces land in the trace
    /// file like any others.
    ///
    /// Exit status: 0, or 1 when a gate fails; 2 for usage errors; 255
    /// when no command could be run.
    Probe(probe::ProbeArgs),
    /// Look at recorded traces.
    Trace {
        /// What to do with traces.
        #[command(subcommand)]
        command: TraceCommand,
    },
    /// Print a shell completion script (e.g. `core-client completions bash
    /// > ~/.local/share/bash-completion/completions/core-client`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; e.g. `core-client man | man -l -`).
    Man {
        /// A subcommand's page instead (e.g. `exec`).
        subcommand: Option<String>,
    },
}

/// `trace` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TraceCommand {
    /// Print a trace from the local trace file as a waterfall and a
    /// per-stage table.
    Show {
        /// A trace id (32 hex digits) or `last`.
        #[arg(default_value = "last", value_name = "TRACE_ID|last")]
        trace: String,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print a server's effective settings and where each came from (a
    /// flag, the environment, a line of the config file, the known
    /// servers, or a built-in default). Takes the same flags as `exec`.
    Show {
        /// A server name from the config file or the known servers.
        name: Option<String>,
        /// Flags, as `exec` takes them.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Arguments of `trust`.
#[derive(Debug, Args)]
pub(crate) struct TrustArgs {
    /// The name to know the server by (as in [servers.NAME] and `exec NAME`).
    pub name: String,
    /// The exec-server's public key (as printed by `exec-server keygen`).
    #[arg(long, value_name = "PUBKEY", required_unless_present = "server_file")]
    pub server: Option<String>,
    /// Read the key from a file instead (its first non-comment line).
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    pub server_file: Option<PathBuf>,
    /// Replace the key already known for NAME (after a change you expect).
    #[arg(long)]
    pub replace: bool,
    /// Record the relay NAME is reached through (any address --relay
    /// takes): `exec NAME` uses it when no flag, variable or config file
    /// names a relay.
    #[arg(long, value_name = "ADDRESS")]
    pub relay: Option<String>,
}

/// An error at the CLI's edge: the message and the exit code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CliError {
    /// One clear line (a changed server key's warning is several, as
    /// ssh's is).
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl CliError {
    fn connection(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_CONNECTION,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }

    fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::usage(e.to_string())
    }
}

impl From<KnownError> for CliError {
    fn from(e: KnownError) -> Self {
        match e {
            KnownError::KeyChanged(_) => Self::connection(e.to_string()),
            _ => Self::usage(e.to_string()),
        }
    }
}

impl From<SettingsError> for CliError {
    fn from(e: SettingsError) -> Self {
        match e {
            // Refused as ssh refuses a changed host key.
            SettingsError::KeyChanged(_) => Self::connection(e.to_string()),
            _ => Self::usage(e.to_string()),
        }
    }
}

/// What every command may read: the config file (if any) and the known
/// servers.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The config file, read and checked.
    pub config: Option<Config>,
    /// The known servers.
    pub known: KnownServers,
    /// How much `exec` says of what it does (`-v`).
    pub verbose: Verbose,
}

impl Context {
    /// Reads `--config FILE` (which must exist), else the default config
    /// file if there is one, and the known servers.
    pub(crate) fn load(config: Option<&Path>) -> Result<Self, CliError> {
        let config = match config.filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => Some(Config::load(path)?),
            None => match crate::paths::default_config() {
                Some(path) => Config::load_if_present(&path)?,
                None => None,
            },
        };
        let known = match crate::paths::known_servers() {
            Some(path) => KnownServers::load(&path)?,
            None => KnownServers::default(),
        };
        Ok(Self {
            config,
            known,
            verbose: Verbose::default(),
        })
    }

    /// The names servers are shown by.
    pub(crate) fn names(&self) -> ServerNames {
        ServerNames::load(self.config.as_ref(), &self.known)
    }
}

#[cfg(test)]
mod tests;
