//! The command line: its arguments ([`Cli`], the subcommands and their
//! options) and parsing them: by the whole parser, or for a command line
//! that starts with `exec` by a parser of `exec` alone.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand};

use super::agent::AgentCommand;
use super::exec_args::{EXEC_ABOUT, EXEC_LONG_ABOUT, ExecArgs};
use super::probe::ProbeArgs;
use super::report::ReportArgs;
use crate::settings::ServerArgs;

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
    /// Run a command on an exec-server (its help is in `exec_args`, which
    /// the parser of `exec` alone shares).
    #[command(about = EXEC_ABOUT, long_about = EXEC_LONG_ABOUT)]
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
        command: AgentCommand,
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
    Report(ReportArgs),
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
    Probe(ProbeArgs),
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

/// Parses this process's arguments, exiting with clap's message (and
/// status 2, or 0 for help) when they are not valid.
///
/// A command line whose first argument is `exec`, the one run most and
/// the one whose start-up counts, is parsed by a parser of `exec` alone:
/// building every subcommand's parser is most of clap's cost at start-up.
/// The outcome, help and errors are those of the whole parser (tested).
pub(crate) fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "exec") {
        return parse_exec(args).unwrap_or_else(|e| e.exit());
    }
    parse_whole(args).unwrap_or_else(|e| e.exit())
}

/// [`Cli`] by the whole parser, `exec`'s command found as ssh finds it
/// (see [`command_starts`]).
fn parse_whole(mut args: Vec<OsString>) -> Result<Cli, clap::Error> {
    if args.iter().any(|a| a == "exec") {
        args = command_starts(args, &exec_parser());
    }
    Cli::try_parse_from(args)
}

/// The parser of the global options and `exec` alone.
fn exec_parser() -> clap::Command {
    // As the derived parser does: the variant's help over the doc comment
    // of `ExecArgs`.
    let exec = ExecArgs::augment_args(clap::Command::new("exec"))
        .about(EXEC_ABOUT)
        .long_about(EXEC_LONG_ABOUT);
    GlobalArgs::augment_args(clap::Command::new("core-client").version(env!("CARGO_PKG_VERSION")))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(exec)
}

/// ssh's habit: in `exec NAME COMMAND [ARG]...` the first word after the
/// name starts the remote command, and every word after it (options
/// too, and `--`) is the command's. Returns the command line with `--`
/// put before that word, which is how clap is told; a line that already
/// has `--` before it, or is not an `exec` line, is returned as it is.
/// `parser` says which options take a value (the global options and
/// `exec`'s).
fn command_starts(mut args: Vec<OsString>, parser: &clap::Command) -> Vec<OsString> {
    let exec = parser.find_subcommand("exec");
    let takes_value = |word: &str| -> Option<bool> {
        let args = parser
            .get_arguments()
            .chain(exec.into_iter().flat_map(|e| e.get_arguments()));
        let mut args = args.filter(|a| !a.is_positional());
        let found = if let Some(long) = word.strip_prefix("--") {
            args.find(|a| {
                a.get_long() == Some(long)
                    || a.get_all_aliases()
                        .into_iter()
                        .flatten()
                        .any(|alias| alias == long)
            })
        } else {
            let short = word.chars().next()?;
            args.find(|a| a.get_short() == Some(short))
        };
        found.map(|a| a.get_action().takes_values())
    };
    let mut in_exec = false;
    let mut name_seen = false;
    let mut i = 1;
    while i < args.len() {
        let Some(word) = args.get(i).and_then(|a| a.to_str()) else {
            // Not UTF-8: not an option; a positional.
            if in_exec && name_seen {
                args.insert(i, OsString::from("--"));
                return args;
            }
            if in_exec {
                name_seen = true;
            } else {
                return args;
            }
            i += 1;
            continue;
        };
        if word == "--" {
            return args;
        }
        if let Some(long) = word.strip_prefix("--") {
            // `--opt=value` carries its value; `--opt value` takes the next.
            if !long.contains('=') && takes_value(word) == Some(true) {
                i += 1;
            }
        } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            // A cluster such as `-nt`; the first short that takes a value
            // takes the rest of the word, or the next word.
            for (at, c) in shorts.char_indices() {
                if takes_value(&c.to_string()) == Some(true) {
                    if at + c.len_utf8() == shorts.len() {
                        i += 1;
                    }
                    break;
                }
            }
        } else if !in_exec {
            if word != "exec" {
                return args;
            }
            in_exec = true;
        } else if !name_seen {
            name_seen = true;
        } else {
            args.insert(i, OsString::from("--"));
            return args;
        }
        i += 1;
    }
    args
}

/// [`Cli`] from a command line whose first argument is `exec`, by a
/// parser of the global options and `exec` alone.
fn parse_exec(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut parser = exec_parser();
    let args = command_starts(args, &parser);
    let matches = parser.try_get_matches_from_mut(args)?;
    let global = GlobalArgs::from_arg_matches(&matches)?;
    let Some(("exec", exec)) = matches.subcommand() else {
        return Err(parser.error(
            clap::error::ErrorKind::MissingSubcommand,
            "`exec` was expected",
        ));
    };
    Ok(Cli {
        global,
        command: CliCommand::Exec(ExecArgs::from_arg_matches(exec)?),
    })
}

#[cfg(test)]
mod tests;
