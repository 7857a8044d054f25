//! `exec`: run one command with the server's effective settings, trying
//! each listed relay in turn until one connects, and stream its events.

use std::io::Write;
use std::path::{Path, PathBuf};

use proto::keys::{PublicKey, StaticKeypair};
use rex_client::{
    Busy, Client, ClientConfig, ClientError, ConnectError, Event, ExecSpec, Target, Waiting,
};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use super::{CliError, Context, EXIT_CONNECTION, ExecArgs};
use crate::settings::{Inputs, Route, Settings};

/// How long the CLI waits at exit for its record to be saved.
const RECORD_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// The shell's exit code for a status.
pub(super) fn exit_code(code: i32) -> u8 {
    u8::try_from(code & 0xff).unwrap_or(EXIT_CONNECTION)
}

/// The effective settings for `exec` (or `config show`) from the flags,
/// the process environment, the config file and the known servers.
pub(super) fn settings(
    ctx: &Context,
    name: Option<&str>,
    args: &crate::settings::ServerArgs,
) -> Result<Settings, CliError> {
    let env = |var: &str| std::env::var(var).ok();
    Ok(Settings::resolve(&Inputs {
        name,
        args,
        env: &env,
        config: ctx.config.as_ref(),
        known: &ctx.known,
        default_key: crate::paths::default_key(),
    })?)
}

/// What `exec` needs that the settings must provide.
struct Plan {
    key: StaticKeypair,
    server: PublicKey,
    targets: Vec<Target>,
}

fn plan(settings: &Settings, config_path: Option<&Path>) -> Result<Plan, CliError> {
    let config =
        config_path.map_or_else(|| "the config file".to_owned(), |p| p.display().to_string());
    let route = settings.route.as_ref().ok_or_else(|| {
        CliError::usage(format!(
            "no relay: give --relay ADDRESS (or --direct URL), or set `relay` in [defaults] or \
             the server's table of {config}"
        ))
    })?;
    let server = settings.server.as_ref().ok_or_else(|| {
        CliError::usage(
            "no exec-server key: name a configured server (`exec NAME -- …`), give --server \
             PUBKEY or --server-file PATH, or record one with `core-client trust NAME --server \
             PUBKEY`",
        )
    })?;
    let key_path = settings.key.as_ref().ok_or_else(|| {
        CliError::usage(
            "no client key: run `core-client keygen` once (it writes the default key), or give \
             --key FILE",
        )
    })?;
    let key =
        StaticKeypair::read_file(&key_path.value).map_err(|e| CliError::usage(e.to_string()))?;
    let targets = match &route.value {
        Route::Direct(url) => vec![Target::Direct(url.clone())],
        Route::Relays(relays) => relays
            .iter()
            .map(|r| Target::Relay(r.url().to_owned()))
            .collect(),
    };
    Ok(Plan {
        key,
        server: server.value,
        targets,
    })
}

fn exec_spec(args: &ExecArgs, settings: &Settings) -> ExecSpec {
    let mut spec = ExecSpec::new(args.command.clone());
    for (k, v) in &settings.env {
        spec.env.push((k.into(), v.value.clone().into()));
    }
    spec.cwd = settings.cwd.as_ref().map(|c| c.value.clone());
    spec.stdin = !args.no_stdin;
    spec
}

/// Opens the record store for `exec`: `None` when records are off or no
/// data directory is known (reported once), an error only when strict.
/// Unless strict, the database is opened by the writer in the background,
/// so that a locked or slow database never holds the command up; what
/// went wrong is reported (in one line) at exit.
fn open_records(
    args: &ExecArgs,
    data_dir: Option<&Path>,
) -> Result<Option<metadata::Persister>, CliError> {
    if args.no_records {
        return Ok(None);
    }
    let writer = metadata::WriterConfig {
        service: "core-client",
        // Failures are reported once, at exit, by the barrier.
        log_failures: false,
        ..metadata::WriterConfig::default()
    };
    let opened = match data_dir {
        Some(dir) if args.strict_records => metadata::open(dir, writer).map_err(|e| e.to_string()),
        Some(dir) => Ok(metadata::open_in_background(dir, writer)),
        None => Err("no data directory is known: give --data-dir or REX_DATA_DIR".into()),
    };
    match opened {
        Ok(p) => Ok(Some(p)),
        Err(e) if args.strict_records => Err(CliError::failed(format!(
            "{e} (not running the command: --strict-records)"
        ))),
        Err(e) => {
            eprintln!("core-client: warning: {e}; this command is not recorded");
            Ok(None)
        }
    }
}

/// Runs `exec`: returns the process's exit code.
pub async fn exec(
    args: ExecArgs,
    mut ctx: Context,
    data_dir: Option<PathBuf>,
) -> Result<u8, CliError> {
    let settings = settings(&ctx, args.name.as_deref(), &args.server)?;
    for warning in settings.unsupported() {
        eprintln!("core-client: warning: {warning}");
    }
    let plan = plan(&settings, ctx.config.as_ref().map(|c| c.path.as_path()))?;
    let records = open_records(&args, data_dir.as_deref())?;
    let strict = args.strict_records;
    let result = exec_with(&args, &settings, plan, records.clone(), &mut ctx).await;
    // The record is saved before the exit, without holding the exit up
    // for long.
    if let Some(records) = records {
        let saved = tokio::task::spawn_blocking(move || records.shutdown(RECORD_FLUSH))
            .await
            .unwrap_or_else(|e| Err(metadata::PersistError::Stopped(e.to_string().into())));
        if let Err(e) = saved {
            if strict {
                return Err(CliError::failed(format!("{e} (--strict-records)")));
            }
            eprintln!("core-client: warning: {e}; this command's record is not saved");
        }
    }
    result
}

/// Whether a failure to start through one relay is worth trying the next
/// relay for: the relay could not be reached, or it does not have the
/// exec-server (another relay may).
fn next_relay_may_help(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect(
            ConnectError::Unreachable { .. }
                | ConnectError::UnknownServer(_)
                | ConnectError::Busy(Busy::Relay)
                | ConnectError::Timeout(Waiting::Relay)
        )
    )
}

/// `NAME: ` when the server has a name, so errors say which server.
fn prefix(settings: &Settings) -> String {
    settings
        .name
        .as_ref()
        .map(|n| format!("{n}: "))
        .unwrap_or_default()
}

/// Records the server in the known servers after its first successful
/// handshake, if `--accept-new` asked and it is not known yet.
fn accept_new(settings: &Settings, server: PublicKey, url: &str, ctx: &mut Context) {
    if !settings.accept_new.value || settings.known {
        return;
    }
    let added = match &settings.name {
        Some(name) => ctx.known.add(Some(name), server, Some(url)),
        None if ctx.known.knows_pairing(url, &server) => return,
        None => ctx.known.add(None, server, Some(url)),
    };
    let who = settings
        .name
        .as_ref()
        .map_or_else(|| "the server".to_owned(), |n| format!("`{n}`"));
    match added {
        Ok(()) => eprintln!(
            "core-client: warning: permanently added {who} (id {}) through {url} to the known \
             servers ({})",
            server.server_id(),
            ctx.known.path().display()
        ),
        Err(e) => eprintln!("core-client: warning: {e}"),
    }
}

async fn exec_with(
    args: &ExecArgs,
    settings: &Settings,
    plan: Plan,
    records: Option<metadata::Persister>,
    ctx: &mut Context,
) -> Result<u8, CliError> {
    let spec = {
        let mut spec = exec_spec(args, settings);
        // The caller's trace continues into ours; an invalid value starts a new trace.
        spec.parent = Some(telemetry::otel::context_from(
            &telemetry::carriers::env::extract_from_env(),
        ));
        spec
    };
    let prefix = prefix(settings);
    let tls_warnings: Vec<Option<String>> = match settings.route.as_ref().map(|r| &r.value) {
        Some(Route::Relays(relays)) => relays.iter().map(|r| r.tls_warning()).collect(),
        _ => Vec::new(),
    };
    let last = plan.targets.len().saturating_sub(1);
    let mut started = None;
    for (i, target) in plan.targets.into_iter().enumerate() {
        if let Some(Some(warning)) = tls_warnings.get(i) {
            eprintln!("core-client: warning: {warning}");
        }
        let url = target.url().to_owned();
        let mut config = ClientConfig::new(plan.key.clone(), plan.server, target);
        config.metadata = records.clone();
        config.record_args = args.record_args;
        let client = Client::new(config);
        match client.exec(spec.clone()).await {
            Ok(run) => {
                accept_new(settings, plan.server, &url, ctx);
                started = Some((client, run));
                break;
            }
            Err(e) if i < last && next_relay_may_help(&e) => {
                eprintln!("core-client: warning: {prefix}{e}; trying the next relay");
            }
            Err(e) if e.is_connection() => {
                return Err(CliError::connection(format!("{prefix}{e}")));
            }
            Err(e) => return Err(CliError::usage(format!("{prefix}{e}"))),
        }
    }
    let Some((client, mut run)) = started else {
        return Err(CliError::usage("no relay to try"));
    };
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
    // SIGINT/SIGTERM go to the remote process group; a second one gives
    // up waiting. Output is written by a thread of its own, so a stdout
    // nobody reads never keeps the signals from being seen; once a signal
    // was forwarded, output that stdout cannot take at once is dropped, so
    // that the exit status can arrive.
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| CliError::usage(e.to_string()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| CliError::usage(e.to_string()))?;
    let (out, mut broken) = Output::start().map_err(|e| CliError::usage(e.to_string()))?;
    let mut interrupted = false;
    let mut cancelled = false;
    let mut pending: Option<Chunk> = None;
    let outcome = loop {
        let ev = tokio::select! {
            ev = run.next(), if pending.is_none() => ev,
            permit = out.tx.reserve(), if pending.is_some() => {
                if let (Ok(permit), Some(chunk)) = (permit, pending.take()) {
                    permit.send(chunk);
                }
                continue;
            }
            _ = sigint.recv() => {
                if interrupted {
                    break Outcome::GaveUp(130);
                }
                interrupted = true;
                pending = None;
                forward(&tasks, &control, Some(2));
                continue;
            }
            _ = sigterm.recv() => {
                if interrupted {
                    break Outcome::GaveUp(143);
                }
                interrupted = true;
                pending = None;
                forward(&tasks, &control, Some(15));
                continue;
            }
            Ok(()) = &mut broken, if !cancelled => {
                // Our stdout is gone (e.g. a closed pipe): stop the remote side.
                cancelled = true;
                forward(&tasks, &control, None);
                continue;
            }
        };
        let chunk = match ev {
            Some(Event::Started { .. }) => continue,
            Some(Event::Stdout(d)) => Chunk::Out(d),
            Some(Event::Stderr(d)) => Chunk::Err(d),
            Some(Event::Exited(status)) => break Outcome::Done(exit_code(status.shell_code())),
            Some(Event::Failed(f)) => {
                break Outcome::Failed(CliError {
                    message: format!("{prefix}{f}"),
                    code: exit_code(f.shell_code()),
                });
            }
            None => break Outcome::Done(EXIT_CONNECTION),
        };
        if interrupted {
            let _ = out.tx.try_send(chunk);
        } else {
            pending = Some(chunk);
        }
    };
    let result = match outcome {
        Outcome::GaveUp(code) => {
            // Nothing more is waited for: not the output, nor the session.
            return Ok(code);
        }
        Outcome::Done(code) => Ok(code),
        Outcome::Failed(e) => Err(e),
    };
    // Everything received is written before the exit, unless a signal
    // came (output is being dropped then) or comes now: nobody waits for a
    // stdout nobody reads.
    let written = out.finish();
    if !interrupted {
        tokio::select! {
            _ = written => {}
            _ = sigint.recv() => return Ok(130),
            _ = sigterm.recv() => return Ok(143),
        }
    }
    client.close().await;
    result
}

/// Sends a signal (or, with `None`, a cancel) to the remote command from
/// a task of its own: the event loop goes on draining events meanwhile.
fn forward(tasks: &lifecycle::Tasks, control: &rex_client::Controller, signal: Option<i32>) {
    let control = control.clone();
    tasks.spawn(tracing::debug_span!("forward"), async move {
        let _ = match signal {
            Some(n) => control.signal(n).await,
            None => control.cancel().await,
        };
    });
}

/// How the event loop ended.
enum Outcome {
    /// The command ended (or the session did): its code.
    Done(u8),
    /// The command could not run or was lost.
    Failed(CliError),
    /// A second signal: stop waiting (128 + the signal).
    GaveUp(u8),
}

/// A piece of the command's output.
enum Chunk {
    Out(bytes::Bytes),
    Err(bytes::Bytes),
}

/// Chunks waiting for the output thread.
const OUTPUT_QUEUE: usize = 16;

/// The output thread and its queue.
struct Output {
    tx: tokio::sync::mpsc::Sender<Chunk>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Output {
    /// Starts the thread; the receiver fires once if stdout fails.
    fn start() -> std::io::Result<(Self, tokio::sync::oneshot::Receiver<()>)> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(OUTPUT_QUEUE);
        let (broken_tx, broken) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                let mut broken_tx = Some(broken_tx);
                while let Some(chunk) = rx.blocking_recv() {
                    match chunk {
                        Chunk::Out(d) if broken_tx.is_some() => {
                            let mut out = std::io::stdout().lock();
                            if out.write_all(&d).and_then(|()| out.flush()).is_err()
                                && let Some(tx) = broken_tx.take()
                            {
                                let _ = tx.send(());
                            }
                        }
                        Chunk::Out(_) => {}
                        Chunk::Err(d) => {
                            let mut err = std::io::stderr().lock();
                            let _ = err.write_all(&d).and_then(|()| err.flush());
                        }
                    }
                }
                let _ = done_tx.send(());
            })?;
        Ok((Self { tx, done }, broken))
    }

    /// Closes the queue; resolves once everything queued is written.
    fn finish(self) -> tokio::sync::oneshot::Receiver<()> {
        drop(self.tx);
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ServerArgs;

    #[test]
    fn env_and_cwd_reach_the_request() {
        let key = StaticKeypair::generate().unwrap().public();
        let args = ServerArgs {
            server: Some(key.to_string()),
            env: vec!["A=1".into(), "B==2".into()],
            cwd: Some("/w".into()),
            ..ServerArgs::default()
        };
        let ctx = Context::default();
        let s = Settings::resolve(&Inputs {
            name: None,
            args: &args,
            env: &|_| None,
            config: None,
            known: &ctx.known,
            default_key: None,
        })
        .unwrap();
        let exec = ExecArgs {
            name: None,
            server: args.clone(),
            no_stdin: false,
            print_trace_id: false,
            record_args: false,
            strict_records: false,
            no_records: false,
            command: vec!["env".into()],
        };
        let spec = exec_spec(&exec, &s);
        assert_eq!(
            spec.env,
            vec![("A".into(), "1".into()), ("B".into(), "=2".into())]
        );
        assert_eq!(spec.cwd, Some(PathBuf::from("/w")));
        assert!(spec.stdin);
    }

    #[test]
    fn shell_exit_codes() {
        assert_eq!(exit_code(3), 3);
        assert_eq!(exit_code(128 + 9), 137);
        assert_eq!(exit_code(256 + 1), 1);
    }

    #[test]
    fn only_relay_trouble_tries_the_next_relay() {
        assert!(next_relay_may_help(&ClientError::Connect(
            ConnectError::UnknownServer("x".into())
        )));
        assert!(next_relay_may_help(&ClientError::Connect(
            ConnectError::Timeout(Waiting::Relay)
        )));
        assert!(!next_relay_may_help(&ClientError::Connect(
            ConnectError::Timeout(Waiting::ExecServer)
        )));
        let key = StaticKeypair::generate().unwrap().public();
        assert!(!next_relay_may_help(&ClientError::Connect(
            ConnectError::Unauthorized(key)
        )));
    }
}
