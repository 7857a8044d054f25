//! The `core-client` command line.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use proto::keys::{PublicKey, StaticKeypair};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use rex_client::{Client, ClientConfig, Event, ExecSpec, Target};

/// Exit code for connection and authentication failures (as ssh uses).
pub const EXIT_CONNECTION: u8 = 255;

/// Runs commands on exec-servers through an encrypted relay, and shows
/// where each command's time went.
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
pub struct Cli {
    /// The local trace file (OTLP JSON, one trace per line) [default:
    /// the user data dir's rex/traces.jsonl]
    #[arg(long, global = true, env = "REX_TRACE_FILE", value_name = "PATH")]
    pub trace_file: Option<PathBuf>,
    /// Where command records are kept (DIR/metadata.sqlite3) [default: the
    /// user data dir's rex/]
    #[arg(long, global = true, env = "REX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

impl Cli {
    /// The data directory to use, if any can be named.
    pub fn data_dir_path(&self) -> Option<PathBuf> {
        self.data_dir
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(metadata::location::default_dir)
    }

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
    /// List recent commands, newest first (from the local records).
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (one array of records) instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    #[arg(long, env = "REX_SERVER", required_unless_present = "server_file")]
    pub server: Option<String>,
    /// Read the exec-server's public key from a file instead (its first
    /// non-comment line).
    #[arg(
        long,
        env = "REX_SERVER_FILE",
        value_name = "PATH",
        conflicts_with = "server"
    )]
    pub server_file: Option<PathBuf>,
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
    /// Record the command's arguments too (by default only the program
    /// name is recorded).
    #[arg(long)]
    pub record_args: bool,
    /// Do not run the command unless its record can be kept, and fail if
    /// it could not be saved.
    #[arg(long, conflicts_with = "no_records")]
    pub strict_records: bool,
    /// Keep no record of this command.
    #[arg(long)]
    pub no_records: bool,
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
    let server: PublicKey = match (&args.server, &args.server_file) {
        (Some(text), _) => text.parse().map_err(|_| {
            CliError::usage("--server: not a valid public key (expected the 44-character key printed by `exec-server keygen`)")
        })?,
        (None, Some(path)) => {
            PublicKey::read_file(path).map_err(|e| CliError::usage(e.to_string()))?
        }
        (None, None) => return Err(CliError::usage("give --server PUBKEY or --server-file PATH")),
    };
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

/// How long the CLI waits at exit for its record to be saved.
const RECORD_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the record store for `exec`: `None` when records are off or the
/// store cannot be used (reported once), an error only when strict.
fn open_records(
    args: &ExecArgs,
    data_dir: Option<&std::path::Path>,
) -> Result<Option<metadata::Persister>, CliError> {
    if args.no_records {
        return Ok(None);
    }
    let writer = metadata::WriterConfig {
        service: "core-client",
        ..metadata::WriterConfig::default()
    };
    let opened = match data_dir {
        Some(dir) => metadata::open(dir, writer).map_err(|e| e.to_string()),
        None => Err("no data directory is known: give --data-dir or REX_DATA_DIR".into()),
    };
    match opened {
        Ok(p) => Ok(Some(p)),
        Err(e) if args.strict_records => Err(CliError {
            message: format!("{e} (not running the command: --strict-records)"),
            code: 1,
        }),
        Err(e) => {
            eprintln!("core-client: warning: {e}; this command is not recorded");
            Ok(None)
        }
    }
}

/// Runs `exec`: returns the process's exit code.
pub async fn exec(args: ExecArgs, data_dir: Option<PathBuf>) -> Result<u8, CliError> {
    let mut config = client_config(&args)?;
    config.metadata = open_records(&args, data_dir.as_deref())?;
    config.record_args = args.record_args;
    let records = config.metadata.clone();
    let strict = args.strict_records;
    let result = exec_with(args, config).await;
    // The record is saved before the exit, without holding the exit up
    // for long.
    if let Some(records) = records {
        let saved = tokio::task::spawn_blocking(move || records.shutdown(RECORD_FLUSH))
            .await
            .unwrap_or_else(|e| Err(metadata::PersistError::Stopped(e.to_string().into())));
        if let Err(e) = saved {
            if strict {
                return Err(CliError {
                    message: format!("{e} (--strict-records)"),
                    code: 1,
                });
            }
            eprintln!("core-client: warning: {e}");
        }
    }
    result
}

async fn exec_with(args: ExecArgs, config: ClientConfig) -> Result<u8, CliError> {
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
    // The stdin pump is the command's only task of its own; it ends with
    // the process (or when stdin does).
    let tasks = lifecycle::Tasks::new();
    if !args.no_stdin {
        let control = control.clone();
        tasks.spawn(tracing::debug_span!("stdin"), async move {
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

/// Runs `history`: the newest `limit` command records, as a table or JSON.
pub fn history(
    data_dir: Option<&std::path::Path>,
    limit: usize,
    json: bool,
) -> Result<u8, CliError> {
    let Some(dir) = data_dir else {
        return Err(CliError::usage(
            "no data directory is known: give --data-dir or REX_DATA_DIR",
        ));
    };
    let path = dir.join(metadata::store::FILE_NAME);
    if !path.exists() {
        return Err(CliError {
            message: format!(
                "no commands have been recorded yet ({} does not exist)",
                path.display()
            ),
            code: 1,
        });
    }
    let fail = |e: metadata::StoreError| CliError {
        message: e.to_string(),
        code: 1,
    };
    let rows = metadata::Store::open(&path)
        .and_then(|s| s.commands(limit))
        .map_err(fail)?;
    let mut out = std::io::stdout().lock();
    let text = if json {
        serde_json::to_string_pretty(&rows).map_err(|e| CliError {
            message: e.to_string(),
            code: 1,
        })? + "\n"
    } else {
        history_table(&rows)
    };
    // A closed stdout (e.g. `| head`) is not an error worth a message.
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

/// The `history` table.
pub fn history_table(rows: &[metadata::CommandRecord]) -> String {
    let ms = |us: Option<i64>| {
        us.map(|u| format!("{:.3}", u as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let mut table = vec![[
        "when (UTC)".to_owned(),
        "server".into(),
        "program".into(),
        "exit".into(),
        "first out ms".into(),
        "total ms".into(),
        "trace".into(),
    ]];
    for r in rows {
        let exit = match (&r.exit, r.progress) {
            (Some(e), _) => e.short(),
            (None, p) => p.as_str().to_owned(),
        };
        table.push([
            utc_time(r.started_unix_ms),
            r.server_id.chars().take(8).collect(),
            r.program.clone(),
            exit,
            ms(r.first_output_us),
            ms(r.total_us),
            if r.trace.trace_id.is_empty() {
                "-".into()
            } else {
                r.trace.trace_id.clone()
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for Unix milliseconds.
pub fn utc_time(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_795_269_845_123), "2026-11-21 14:04:05");
        assert_eq!(utc_time(-1_000), "1969-12-31 23:59:59");
    }

    #[test]
    fn history_table_lines_up() {
        let row = metadata::CommandRecord {
            id: "x".into(),
            server_id: "729d6f42801054537bf00a73006349c3".into(),
            program: "sh".into(),
            args: None,
            trace: metadata::TraceRef {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            },
            started_unix_ms: 0,
            first_output_us: Some(1500),
            total_us: Some(2500),
            progress: metadata::Progress::Finished,
            exit: Some(metadata::Exit::Code(3)),
            stdout_bytes: 1,
            stderr_bytes: 0,
        };
        let text = history_table(&[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("when (UTC)"));
        assert!(
            lines[1].starts_with("1970-01-01 00:00:00  729d6f42  sh"),
            "{text}"
        );
        assert!(lines[1].contains("1.500") && lines[1].contains("2.500"));
        assert!(lines[1].ends_with("4bf92f3577b34da6a3ce929d0e0e4736"));
        let col = lines[0].find("trace").unwrap();
        assert_eq!(lines[1].find("4bf92f").unwrap(), col);
    }

    #[test]
    fn shell_exit_codes() {
        assert_eq!(exit_code(3), 3);
        assert_eq!(exit_code(128 + 9), 137);
        assert_eq!(exit_code(256 + 1), 1);
    }
}
