//! The `core-client` command line.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use proto::keys::{PublicKey, StaticKeypair};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::{Client, ClientConfig, Event, ExecSpec, Target};

/// Exit code for connection and authentication failures (as ssh uses).
pub const EXIT_CONNECTION: u8 = 255;

/// Runs commands on exec-servers through an encrypted relay, and shows
/// where each command's time went.
///
/// Spans are exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (or
/// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; otherwise they are written
/// to a local trace file that `core-client trace show` reads.
/// OTEL_SDK_DISABLED=true turns export off.
#[derive(Debug, Parser)]
#[command(name = "core-client", version)]
pub struct Cli {
    /// The local trace file (OTLP JSON, one trace per line) [default:
    /// the user data dir's rex/traces.jsonl]
    #[arg(long, global = true, env = "REX_TRACE_FILE", value_name = "PATH")]
    pub trace_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

impl Cli {
    /// The trace file to use, if any can be named.
    pub fn trace_file_path(&self) -> Option<PathBuf> {
        self.trace_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(telemetry::trace_file::default_path)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run a command on an exec-server; stream its output; exit with its status.
    Exec(ExecArgs),
    /// Write a new static private key (mode 0600) and print its public key.
    Keygen {
        /// Where to write the private key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key for a private key file.
    Pubkey {
        /// The private key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Run a relay, an exec-server and a client in this process, run a
    /// short command through them (no setup needed) and print its trace.
    Demo,
    /// Look at recorded traces.
    Trace {
        /// What to do with traces.
        #[command(subcommand)]
        command: TraceCommand,
    },
}

/// `trace` subcommands.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Print a trace from the local trace file as a waterfall and a
    /// per-stage table.
    Show {
        /// A trace id (32 hex digits) or `last`.
        #[arg(default_value = "last", value_name = "TRACE_ID|last")]
        trace: String,
    },
}

/// Arguments of `exec`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["relay", "direct"])))]
pub struct ExecArgs {
    /// Relay URL, e.g. http://relay.example:7600.
    #[arg(long, env = "REX_RELAY")]
    pub relay: Option<String>,
    /// Connect straight to an exec-server's --listen address instead.
    #[arg(long)]
    pub direct: Option<String>,
    /// The exec-server's public key (as printed by `exec-server keygen`).
    #[arg(long, env = "REX_SERVER")]
    pub server: String,
    /// This client's private key file (from `core-client keygen`).
    #[arg(long, env = "REX_KEY")]
    pub key: PathBuf,
    /// Set a remote environment variable (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Remote working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Do not forward stdin (the remote stdin is /dev/null).
    #[arg(short = 'n', long)]
    pub no_stdin: bool,
    /// Print the command's trace id on stderr when it ends.
    #[arg(long)]
    pub print_trace_id: bool,
    /// The program and its arguments (no shell unless you run one).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// An error at the CLI's edge: the message and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// One clear line.
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
            code: 2,
        }
    }
}

fn exit_code(code: i32) -> u8 {
    u8::try_from(code & 0xff).unwrap_or(EXIT_CONNECTION)
}

/// Builds the client settings for `exec`.
pub fn client_config(args: &ExecArgs) -> Result<ClientConfig, CliError> {
    let key = StaticKeypair::read_file(&args.key).map_err(|e| CliError::usage(e.to_string()))?;
    let server: PublicKey = args.server.parse().map_err(|_| {
        CliError::usage("--server: not a valid public key (expected the 44-character key printed by `exec-server keygen`)")
    })?;
    let target = match (&args.relay, &args.direct) {
        (Some(r), _) => Target::Relay(r.clone()),
        (None, Some(d)) => Target::Direct(d.clone()),
        (None, None) => return Err(CliError::usage("give --relay URL or --direct URL")),
    };
    Ok(ClientConfig::new(key, server, target))
}

fn exec_spec(args: &ExecArgs) -> Result<ExecSpec, CliError> {
    let mut spec = ExecSpec::new(args.command.clone());
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CliError::usage("--env takes NAME=VALUE"))?;
        spec.env.push((k.into(), v.into()));
    }
    spec.cwd = args.cwd.clone();
    spec.stdin = !args.no_stdin;
    Ok(spec)
}

/// Runs `exec`: returns the process's exit code.
pub async fn exec(args: ExecArgs) -> Result<u8, CliError> {
    let config = client_config(&args)?;
    let mut spec = exec_spec(&args)?;
    // The caller's trace continues into ours; an invalid value starts a new trace.
    spec.parent = Some(telemetry::otel::context_from(
        &telemetry::carriers::env::extract_from_env(),
    ));
    let client = Client::new(config);
    let mut run = client.exec(spec).await.map_err(|e| {
        if e.is_connection() {
            CliError::connection(e.to_string())
        } else {
            CliError::usage(e.to_string())
        }
    })?;
    if args.print_trace_id
        && let Some(id) = run.trace_id()
    {
        eprintln!("core-client: trace {id}");
    }
    let control = run.controller();
    if !args.no_stdin {
        let control = control.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; proto::limits::MAX_CHUNK];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if control.write_stdin(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = control.close_stdin().await;
        });
    }
    // SIGINT/SIGTERM go to the remote process group; a second SIGINT gives up.
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| CliError::usage(e.to_string()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| CliError::usage(e.to_string()))?;
    let mut interrupted = false;
    let code = loop {
        let ev = tokio::select! {
            ev = run.next() => ev,
            _ = sigint.recv() => {
                if interrupted {
                    break 130;
                }
                interrupted = true;
                let _ = control.signal(2).await;
                continue;
            }
            _ = sigterm.recv() => {
                let _ = control.signal(15).await;
                continue;
            }
        };
        match ev {
            Some(Event::Started { .. }) => {}
            Some(Event::Stdout(d)) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(&d).and_then(|()| out.flush()).is_err() {
                    // Our stdout is gone (e.g. a closed pipe): stop the remote side.
                    let _ = control.cancel().await;
                }
            }
            Some(Event::Stderr(d)) => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&d).and_then(|()| err.flush());
            }
            Some(Event::Exited(status)) => break exit_code(status.shell_code()),
            Some(Event::Failed(f)) => {
                let code = f.shell_code();
                client.close().await;
                return Err(CliError {
                    message: f.to_string(),
                    code: exit_code(code),
                });
            }
            None => break EXIT_CONNECTION,
        }
    };
    client.close().await;
    Ok(code)
}

/// Runs `trace show`: prints the trace to stdout.
pub fn trace_show(file: Option<&std::path::Path>, selector: &str) -> Result<u8, CliError> {
    let Some(path) = file else {
        return Err(CliError::usage(
            "no trace file: set --trace-file or REX_TRACE_FILE (no user data dir is known)",
        ));
    };
    let mut out = std::io::stdout().lock();
    crate::waterfall::show(path, selector, &mut out).map_err(|e| CliError {
        message: e.to_string(),
        code: 1,
    })?;
    Ok(0)
}

/// Runs `keygen`.
pub fn keygen(out: &std::path::Path) -> Result<u8, CliError> {
    let kp = StaticKeypair::generate_to_file(out).map_err(|e| CliError::usage(e.to_string()))?;
    println!("{}", kp.public());
    Ok(0)
}

/// Runs `pubkey`.
pub fn pubkey(key: &std::path::Path) -> Result<u8, CliError> {
    let kp = StaticKeypair::read_file(key).map_err(|e| CliError::usage(e.to_string()))?;
    println!("{}", kp.public());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_requires_a_target_and_a_command() {
        assert!(
            Cli::try_parse_from([
                "core-client",
                "exec",
                "--server",
                "x",
                "--key",
                "k",
                "--",
                "ls"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "core-client",
                "exec",
                "--relay",
                "http://r",
                "--server",
                "x",
                "--key",
                "k"
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from([
            "core-client",
            "exec",
            "--relay",
            "http://r",
            "--server",
            "x",
            "--key",
            "k",
            "--",
            "ls",
            "-la",
        ])
        .unwrap();
        let CliCommand::Exec(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            args.command,
            vec![OsString::from("ls"), OsString::from("-la")]
        );
    }

    #[test]
    fn env_flags_are_parsed() {
        let cli = Cli::try_parse_from([
            "core-client",
            "exec",
            "--relay",
            "http://r",
            "--server",
            "x",
            "--key",
            "k",
            "-e",
            "A=1",
            "-e",
            "B==2",
            "--",
            "env",
        ])
        .unwrap();
        let CliCommand::Exec(args) = cli.command else {
            panic!()
        };
        let spec = exec_spec(&args).unwrap();
        assert_eq!(
            spec.env,
            vec![("A".into(), "1".into()), ("B".into(), "=2".into())]
        );
        assert!(spec.stdin);
    }

    #[test]
    fn shell_exit_codes() {
        assert_eq!(exit_code(3), 3);
        assert_eq!(exit_code(128 + 9), 137);
        assert_eq!(exit_code(256 + 1), 1);
    }
}
