//! `exec`: run one command with the server's effective settings, trying
//! each listed relay in turn until one connects, and stream its events; on
//! a remote terminal when asked (the local one then in raw mode, its
//! window changes passed on).

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use proto::keys::{PublicKey, StaticKeypair};
use proto::limits::MAX_TERMINAL_SIZE;
use rex_client::agent::{AgentClient, AgentConfig};
use rex_client::{
    AgentError, Client, ClientConfig, ClientError, ExecSpec, LinkState, Target, Terminal,
    TlsSettings,
};
use std::sync::Arc;
use telemetry::forward::{Spool, SpoolLimits, WithSpool};
use telemetry::setup::Flusher;
use telemetry::spans;
use tokio::signal::unix::SignalKind;
use tokio::sync::watch;

use super::call::{Call, Chunk, Drain, Input, LocalSignal, Outcome, Step};
use super::context::Context;
use super::error::CliError;
use super::exec_args::ExecArgs;
use super::life::{CliRun, ProcessStart};
use super::link_notice::LinkNotice;
use super::signals::{LocalSignals, delivered, sig};
use super::stdin;
use super::tty;
use super::verbose::Verbose;
use crate::config::options::{Terminal as TerminalOption, Warm};
use crate::settings::{Inputs, Route, Settings, Source};

/// How long the CLI waits for a running agent to take its call.
const AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the CLI waits at exit for its record to be saved.
const RECORD_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// The most an exit waits for the transport to take the session's close
/// (it never waits for the exec-server's answer).
const CLOSE_SENT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a session ended by a local signal may take to close cleanly.
const HANG_UP: std::time::Duration = std::time::Duration::from_secs(3);

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

/// What `exec` (and `probe`) need that the settings must provide.
pub(super) struct Plan {
    pub(super) key: StaticKeypair,
    pub(super) server: PublicKey,
    pub(super) targets: Vec<Target>,
    pub(super) tls: TlsSettings,
}

/// The key, server, relays and TLS settings, or the usage error saying
/// which is missing.
pub(super) fn plan(settings: &Settings, config_path: Option<&Path>) -> Result<Plan, CliError> {
    let config =
        config_path.map_or_else(|| "the config file".to_owned(), |p| p.display().to_string());
    let route = settings.route.as_ref().ok_or_else(|| {
        CliError::usage(format!(
            "no relay: give --relay ADDRESS (or --direct URL), set `relay` in [defaults] or \
             the server's table of {config}, or record it with `core-client trust NAME --relay \
             ADDRESS`"
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
    let tls = match &settings.ca {
        Some(ca) => TlsSettings::from_ca_file(&ca.value)
            .map_err(|e| CliError::usage(format!("CA file ({}): {e}", ca.source)))?,
        None => TlsSettings::system(),
    };
    Ok(Plan {
        key,
        server: server.value,
        targets,
        tls,
    })
}

fn exec_spec(args: &ExecArgs, settings: &Settings, terminal: Option<Terminal>) -> ExecSpec {
    // No command: the remote user's login shell, as `ssh HOST` runs.
    let mut spec = if args.command.is_empty() {
        ExecSpec::login_shell()
    } else {
        ExecSpec::new(args.command.clone())
    };
    for (k, v) in &settings.env {
        spec.env.push((k.into(), v.value.clone().into()));
    }
    spec.cwd = settings.cwd.as_ref().map(|c| c.value.clone());
    spec.stdin = !args.no_stdin;
    spec.terminal = terminal;
    spec
}

/// Whether the command runs on a terminal: never with -T, always with -t,
/// else as the `terminal` option says, as ssh's `RequestTTY` does: `auto`
/// (the default) gives one to the login shell (no command) when the local
/// stdin and stdout are terminals and stdin is forwarded, ssh's rule for an
/// interactive session, and pipes to a command; `always` to both; `never`
/// to neither.
fn wants_terminal(
    args: &ExecArgs,
    option: TerminalOption,
    stdin_is_terminal: bool,
    stdout_is_terminal: bool,
) -> bool {
    if args.no_tty {
        return false;
    }
    if args.tty {
        return true;
    }
    let shell = args.command.is_empty();
    match option {
        TerminalOption::Never => false,
        TerminalOption::Auto => shell && !args.no_stdin && stdin_is_terminal && stdout_is_terminal,
        TerminalOption::Always => true,
    }
}

/// The local window's size, within the bounds a remote terminal takes
/// (24x80 when there is no local terminal).
fn local_size() -> (u16, u16) {
    let max = u16::try_from(MAX_TERMINAL_SIZE).unwrap_or(u16::MAX);
    let (rows, cols) = tty::size().unwrap_or(tty::DEFAULT_SIZE);
    (rows.min(max), cols.min(max))
}

/// The remote terminal: the local window's size and the local TERM (when
/// it names a terminal type).
fn remote_terminal(term: Option<String>) -> Terminal {
    let (rows, cols) = local_size();
    Terminal {
        rows,
        cols,
        term: term.filter(|t| !t.is_empty() && proto::limits::term_ok(t)),
    }
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
    let mut writer = metadata::WriterConfig::default();
    writer.service = "core-client";
    // Failures are reported once, at exit, by the barrier.
    writer.log_failures = false;
    // The exit waits for the record: written through to the OS (it
    // survives this process however it ends), not fsynced.
    writer.durability = metadata::Durability::ProcessCrash;
    // One command: nothing to group its states with.
    writer.group_commit = std::time::Duration::ZERO;
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

/// What `exec` needs to trace its own life: when the process started, and
/// a way to flush its spans while it times that.
pub(crate) struct Lifetime {
    /// The process's start (read first thing in `main`).
    pub started: ProcessStart,
    /// Exports the spans ended so far.
    pub flusher: Flusher,
}

/// Runs `exec`: returns the process's exit code. Its own life is traced
/// (`cli.run`, under the caller's `TRACEPARENT` if any), and its spans are
/// flushed before it returns.
pub(crate) async fn exec(
    args: ExecArgs,
    mut ctx: Context,
    data_dir: Option<PathBuf>,
    life: Lifetime,
) -> Result<u8, CliError> {
    // The caller's trace continues into ours; an invalid value starts a new trace.
    let parent = telemetry::otel::context_from(&telemetry::carriers::env::extract_from_env());
    let mut run = CliRun::start(life.started, &parent);
    let result = traced_exec(args, &mut ctx, data_dir, &mut run).await;
    if result.is_err() {
        run.failed();
    }
    match run.flush(life.flusher).await {
        Some((spool, Ok(written))) => ctx.verbose.say(
            1,
            format_args!(
                "spans: {} left for the next session to this exec-server ({}){}",
                written.spans,
                spool.dir().display(),
                if written.dropped > 0 {
                    format!("; {} older ones let go", written.dropped)
                } else {
                    String::new()
                }
            ),
        ),
        Some((spool, Err(e))) => eprintln!(
            "core-client: warning: cannot keep the last spans for the exec-server in {}: {e}; \
             they stay in the local trace file",
            spool.dir().display()
        ),
        None => {}
    }
    result
}

async fn traced_exec(
    args: ExecArgs,
    ctx: &mut Context,
    data_dir: Option<PathBuf>,
    run: &mut CliRun,
) -> Result<u8, CliError> {
    let settings = settings(ctx, args.name.as_deref(), &args.server)?;
    say_settings(ctx, &settings);
    let plan = plan(&settings, ctx.config.as_ref().map(|c| c.path.as_path()))?;
    let records = open_records(&args, data_dir.as_deref())?;
    let strict = args.strict_records;
    let tickets = data_dir.as_deref().map(crate::tickets::Tickets::in_dir);
    let spool = data_dir.as_deref().map(rex_agent::spool_root);
    let result = exec_with(
        &args,
        &settings,
        plan,
        (records.clone(), tickets, spool),
        ctx,
        run,
    )
    .await;
    run.stage(spans::CLI_FINISH);
    // The record is saved before the exit, without holding the exit up
    // for long.
    if let Some(records) = records {
        // Nothing to wait for when no record was made here (the agent kept
        // it, say): no thread is started for the barrier.
        let saved = if records.offered() {
            tokio::task::spawn_blocking(move || records.finish(RECORD_FLUSH))
                .await
                .unwrap_or_else(|e| Err(metadata::PersistError::Stopped(e.to_string().into())))
        } else {
            Ok(())
        };
        run.stage(spans::CLI_RECORDS);
        if let Err(e) = saved {
            if strict {
                return Err(CliError::failed(format!("{e} (--strict-records)")));
            }
            eprintln!("core-client: warning: {e}; this command's record is not saved");
        }
    }
    result
}

/// `-v`: the files read and where the settings that route the command
/// came from; `-vv`: every setting's source (environment variables by
/// name only).
fn say_settings(ctx: &Context, s: &Settings) {
    let v = ctx.verbose;
    if !v.at(1) {
        return;
    }
    match &ctx.config {
        Some(c) => v.say(1, format_args!("reading config file {}", c.path.display())),
        None => v.say(1, format_args!("no config file")),
    }
    v.say(
        1,
        format_args!("known servers: {}", ctx.known.path().display()),
    );
    if let Some(name) = &s.name {
        let known = if s.known { "known" } else { "not known" };
        v.say(1, format_args!("server `{name}` ({known})"));
    }
    match &s.route {
        Some(r) => match &r.value {
            Route::Direct(url) => v.say(1, format_args!("direct {url} from {}", r.source)),
            Route::Relays(relays) => {
                for relay in relays {
                    v.say(
                        1,
                        format_args!(
                            "relay {} ({}) from {}",
                            relay.url(),
                            if relay.uses_tls() {
                                "TLS"
                            } else {
                                "plain HTTP/2"
                            },
                            r.source
                        ),
                    );
                }
            }
        },
        None => v.say(1, format_args!("no relay")),
    }
    if let Some(k) = &s.server {
        v.say(
            1,
            format_args!("server key id {} from {}", k.value.server_id(), k.source),
        );
    }
    if let Some(k) = &s.key {
        v.say(
            1,
            format_args!("client key file {} from {}", k.value.display(), k.source),
        );
    }
    if !v.at(2) {
        return;
    }
    if let Some(c) = &s.ca {
        v.say(
            2,
            format_args!("ca {} from {}", c.value.display(), c.source),
        );
    }
    if let Some(c) = &s.cwd {
        v.say(
            2,
            format_args!("cwd {} from {}", c.value.display(), c.source),
        );
    }
    for (name, value) in &s.env {
        v.say(
            2,
            format_args!("env {name} (value not shown) from {}", value.source),
        );
    }
    v.say(
        2,
        format_args!(
            "accept_new {} from {}",
            s.accept_new.value, s.accept_new.source
        ),
    );
    v.say(
        2,
        format_args!("warm {} from {}", s.warm.value, s.warm.source),
    );
    v.say(
        2,
        format_args!(
            "span_forwarding {} from {}",
            s.span_forwarding.value, s.span_forwarding.source
        ),
    );
    v.say(
        2,
        format_args!("resume {} from {}", s.resume.value, s.resume.source),
    );
    v.say(
        2,
        format_args!("terminal {} from {}", s.terminal.value, s.terminal.source),
    );
}

/// The link's next state; `None` once the session is gone (then never
/// again: the caller stops asking); never ready without a watch.
async fn link_changed(link: &mut Option<watch::Receiver<LinkState>>) -> Option<LinkState> {
    match link {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Writes a notice's line to stderr, if there is one.
fn say(line: Option<String>) {
    if let Some(line) = line {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
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
    (records, tickets, spool_root): (
        Option<metadata::Persister>,
        Option<crate::tickets::Tickets>,
        Option<PathBuf>,
    ),
    ctx: &mut Context,
    life: &mut CliRun,
) -> Result<u8, CliError> {
    // Spans an earlier command could not send to this exec-server before
    // it exited go with this session's.
    let spool = spool_root
        .as_deref()
        .map(|root| Spool::new(root, &plan.server.server_id(), SpoolLimits::default()));
    let source = settings
        .span_forwarding
        .value
        .then(telemetry::forward::source)
        .flatten();
    let terminal = wants_terminal(
        args,
        settings.terminal.value,
        tty::stdin_is_terminal(),
        tty::stdout_is_terminal(),
    )
    .then(|| remote_terminal(std::env::var("TERM").ok()));
    let mut spec = exec_spec(args, settings, terminal);
    spec.parent = Some(life.context().clone());
    // The dispatch starts where the CLI's start-up ends.
    spec.dispatched_at = Some(life.ready());
    let prefix = prefix(settings);
    let last = plan.targets.len().saturating_sub(1);
    let mut started = None;
    let v = ctx.verbose;
    // The signals are ours from here on (see `signals`). One that comes
    // before the call has started ends the dispatch when nothing can have
    // reached the exec-server (or through the agent, which ends the call
    // with its connection); once the request may have left in message 1,
    // it is kept and forwarded as soon as the call starts, as if it had
    // come then.
    let mut call = Call::new(spec.terminal.is_some(), prefix.clone());
    let mut signals = LocalSignals::new(&call)?;
    let mut pending: Option<LocalSignal> = None;
    if !args.no_agent {
        let dispatch = through_agent(args, settings, &plan, records.clone(), &spec);
        let through = tokio::select! {
            biased;
            through = dispatch => through,
            s = signals.next() => {
                return Ok(interrupted(s, "the agent started the command", v, life));
            }
        };
        match through {
            Ok(ThroughAgent::Started(run)) => {
                v.say(1, format_args!("running through the agent's session"));
                let run = *run;
                if let Some(url) = plan.targets.first().map(Target::url) {
                    accept_new(settings, plan.server, url, ctx);
                }
                started = Some((None, run));
            }
            // No agent runs: this command opens a session of its own.
            Ok(ThroughAgent::NoAgent) => {
                v.say(
                    1,
                    format_args!("no agent running: opening a session of this command's own"),
                );
            }
            // The agent could not take the call: a dispatch of its own
            // follows the one that failed.
            Ok(ThroughAgent::Fallback) => spec.dispatched_at = None,
            Err(e) if e.is_connection() => {
                life.dispatched(None);
                return Err(CliError::connection(format!("{prefix}{e}")));
            }
            Err(e) => {
                life.dispatched(None);
                return Err(CliError::usage(format!("{prefix}{e}")));
            }
        }
    }
    let targets = if started.is_some() {
        Vec::new()
    } else {
        plan.targets
    };
    for (i, target) in targets.iter().enumerate() {
        let url = target.url().to_owned();
        let mut config = ClientConfig::new(plan.key.clone(), plan.server, target.clone())
            .alternates_of(&targets, i);
        config.resume = settings.resume.value.duration();
        config.tls = plan.tls.clone();
        config.metadata = records.clone();
        config.record_args = args.record_args;
        let server_id = plan.server.server_id();
        config.early_ticket = tickets.as_ref().and_then(|t| t.get(&server_id));
        let known_ticket = config.early_ticket;
        // With no collector of our own (spans go to the local trace
        // file), an exec-server that exports them takes them.
        config.span_source = match (&source, &spool) {
            (Some(source), Some(spool)) => {
                Some(Arc::new(WithSpool::new(Arc::clone(source), spool.clone())))
            }
            (source, _) => source.clone(),
        };
        let client = Client::new(config);
        v.say(
            1,
            format_args!(
                "connecting to {url} for server id {}",
                plan.server.server_id()
            ),
        );
        let attempt = {
            let mut exec = std::pin::pin!(client.exec(spec.clone()));
            loop {
                tokio::select! {
                    biased;
                    attempt = &mut exec => break attempt,
                    s = signals.next() => {
                        if pending.is_some() || !client.request_left() {
                            return Ok(interrupted(s, "the command was sent", v, life));
                        }
                        // It rode in message 1 (and may be running): the
                        // signal is forwarded once the call has started.
                        pending = Some(s);
                    }
                }
            }
        };
        // A later attempt's dispatch starts when it is made.
        spec.dispatched_at = None;
        match &attempt {
            Ok(_) => v.say(
                1,
                format_args!("connected through {url}: handshake done, the server's key proved"),
            ),
            Err(e) => v.say(1, format_args!("{url}: {e}")),
        }
        match attempt {
            Ok(run) => {
                accept_new(settings, plan.server, &url, ctx);
                keep_ticket(&client, known_ticket, tickets.as_ref(), &server_id, v);
                started = Some((Some(client), run));
                break;
            }
            // A request that left in message 1 is not sent again through
            // another relay (the library tried them with the same message 1).
            Err(e) if i < last && e.next_relay_may_help() && !client.request_left() => {
                eprintln!("core-client: warning: {prefix}{e}; trying the next relay");
            }
            Err(e) if e.is_connection() => {
                life.dispatched(None);
                return Err(CliError::connection(format!("{prefix}{e}")));
            }
            Err(e) => {
                life.dispatched(None);
                return Err(CliError::usage(format!("{prefix}{e}")));
            }
        }
    }
    let Some((client, mut run)) = started else {
        return Err(CliError::usage("no relay to try"));
    };
    if args.print_trace_id
        && let Some(id) = run.trace_id()
    {
        eprintln!("core-client: trace {id}");
    } else if let Some(id) = run.trace_id() {
        v.say(2, format_args!("trace {id}"));
    }
    v.say(1, format_args!("command started"));
    let control = run.controller();
    let terminal = spec.terminal.is_some();
    // The stdin pump is the command's only task of its own (with the
    // window's, on a terminal); it ends with the process (or when stdin
    // does).
    let tasks = lifecycle::Tasks::new();
    if !args.no_stdin {
        stdin::pump(&tasks, control.clone());
    }
    // Output is written by a thread of its own, so a stdout nobody reads
    // never keeps the signals (see `call`'s rules) from being seen.
    let mut winch = terminal
        .then(|| sig(SignalKind::window_change()))
        .transpose()?;
    let (size_tx, size_rx) = watch::channel(local_size());
    if terminal {
        // Only the latest size matters: a window dragged about sends what
        // the session can take, never a queue of stale sizes.
        let control = control.clone();
        let mut sizes = size_rx;
        tasks.spawn(tracing::debug_span!("resize"), async move {
            while sizes.changed().await.is_ok() {
                let (rows, cols) = *sizes.borrow_and_update();
                if control.resize(rows, cols).await.is_err() {
                    return;
                }
            }
        });
    }
    let (mut out, mut broken) = Output::new();
    // Raw mode last, once nothing more can fail before the loop; undone
    // however this function returns.
    let raw = if terminal {
        tty::Raw::enter().map_err(|e| {
            CliError::usage(format!("cannot put the local terminal in raw mode: {e}"))
        })?
    } else {
        None
    };
    // The link's losses and returns, told on a terminal (and by -v).
    let mut link = run.link();
    let mut notice = LinkNotice::new(tty::stderr_is_terminal(), raw.is_some(), v);
    let mut stdout_gone = false;
    // Output held until the output thread has room for it.
    let mut held: Option<Chunk> = None;
    let (outcome, finish) = loop {
        // In order: the link's news first (the session marks the link back
        // before it hands over the output that came with its return, so
        // "link back" is told before that output), then local signals, then
        // the call's events. A signal that came during the dispatch goes
        // first.
        let input = if let Some(s) = pending.take() {
            Input::Signal(s)
        } else {
            tokio::select! {
                biased;
                state = link_changed(&mut link) => {
                    match state {
                        Some(state) => say(notice.seen(&state)),
                        None => link = None,
                    }
                    continue;
                }
                () = proto::driver::sleep_until(notice.due()) => {
                    say(notice.tell());
                    continue;
                }
                s = signals.next() => Input::Signal(s),
                Some(()) = delivered(&mut winch) => {
                    size_tx.send_replace(local_size());
                    continue;
                }
                Ok(()) = &mut broken, if !stdout_gone => {
                    stdout_gone = true;
                    Input::StdoutGone
                }
                permit = out.tx.reserve(), if held.is_some() => {
                    if let (Ok(permit), Some(chunk)) = (permit, held.take()) {
                        permit.send(chunk);
                    }
                    continue;
                }
                ev = run.next(), if held.is_none() => Input::Event(ev),
            }
        };
        if let Input::Event(None) = &input {
            v.say(1, format_args!("the session ended"));
        }
        match call.input(input) {
            Step::Nothing => {}
            Step::Write { chunk, hold } => {
                out.run().map_err(|e| CliError::usage(e.to_string()))?;
                if hold {
                    held = Some(chunk);
                } else {
                    let _ = out.tx.try_send(chunk);
                }
            }
            Step::Forward { signal, drop_held } => {
                if drop_held {
                    held = None;
                }
                forward(&tasks, &control, signal);
            }
            Step::Finish(outcome) => break (outcome, true),
            Step::End(outcome) => break (outcome, false),
        }
    };
    life.dispatched(run.ended_at());
    if let Some(c) = run.session_counters()
        && let Some(round_trips) = c.round_trips
    {
        v.say(
            1,
            format_args!(
                "session: {round_trips} round trip(s) before the first event, {} flight(s), {} \
                 retry(ies) after early data was refused",
                c.flights, c.early_retries
            ),
        );
    }
    // Said only where forwarding applies: no collector of our own, and
    // not turned off.
    let forwarding = source.is_some();
    if forwarding
        && let (Some(spool), Some(max)) = (spool, run.span_batch_max())
        && max > 0
    {
        life.spool_rest(spool, max);
    }
    match run.spans_forwarded() {
        Some(true) if forwarding => v.say(
            1,
            format_args!("spans: handed to the exec-server, which exports them to its collector"),
        ),
        Some(false) if forwarding => v.say(
            1,
            format_args!(
                "spans: the exec-server does not take forwarded spans; they stay in the local \
                 trace file"
            ),
        ),
        _ => {}
    }
    match &outcome {
        Outcome::Done(code) => v.say(1, format_args!("exit status {code}")),
        Outcome::Failed(e) => v.say(1, format_args!("failed: exit status {}", e.code)),
        Outcome::GaveUp(code) | Outcome::HungUp(code) => {
            v.say(1, format_args!("stopped waiting: exit status {code}"));
        }
    }
    let result = match outcome {
        Outcome::GaveUp(code) => {
            // Nothing more is waited for: not the output, nor the session.
            return Ok(code);
        }
        Outcome::HungUp(signal) => {
            // The local terminal first (so that the line below reads as
            // one), then the session is closed (its command killed, its
            // terminal hung up), within a bound.
            drop(raw);
            eprintln!("{}", hung_up_line(signal));
            match client {
                Some(client) => {
                    let _ = tokio::time::timeout(HANG_UP, client.close()).await;
                }
                // Through an agent: the call ends with its connection.
                None => drop(run),
            }
            return Ok(128 + signal);
        }
        Outcome::Done(code) => Ok(code),
        Outcome::Failed(e) => Err(e),
    };
    // What was received is written before the exit, as the call says
    // (after a forwarded signal, only if stdout and stderr can take it),
    // unless a signal comes meanwhile.
    let mut written = std::pin::pin!(out.finish());
    let drain = match call.drain() {
        Drain::All => true,
        Drain::IfWritable => writable_now(&[std::io::stdout().as_fd(), std::io::stderr().as_fd()]),
    };
    if finish && drain {
        loop {
            let input = tokio::select! {
                _ = &mut written => break,
                s = signals.next() => Input::Signal(s),
            };
            if let Step::End(Outcome::GaveUp(code)) = call.input(input) {
                return Ok(code);
            }
        }
    }
    // The close is sent, never waited for: the exit costs no round trip.
    if let Some(client) = client
        && !client.close_sent(CLOSE_SENT).await
    {
        v.say(
            1,
            format_args!("the connection did not take the close in time: it may not have left"),
        );
    }
    result
}

/// A signal ended the dispatch before `what`: said under `-v`, the
/// dispatch ended; the exit status.
fn interrupted(signal: LocalSignal, what: &str, v: Verbose, life: &mut CliRun) -> u8 {
    v.say(1, format_args!("interrupted before {what}"));
    life.dispatched(None);
    128 + signal.number()
}

/// Keeps the ticket of the exec-server's run that the session was given,
/// if it is new, for the next `exec`'s early data (see
/// [`crate::tickets`]); says under `-v` whether this one's command rode in
/// handshake message 1 with a ticket of that run.
fn keep_ticket(
    client: &Client,
    known: Option<rex_client::EarlyTicket>,
    tickets: Option<&crate::tickets::Tickets>,
    server_id: &str,
    v: Verbose,
) {
    let given = client.early_ticket();
    match (known, given) {
        (Some(k), Some(g)) if k == g => v.say(
            1,
            format_args!("early data: the command went in handshake message 1 with the ticket of the server's current run"),
        ),
        (Some(_), _) => v.say(
            1,
            format_args!(
                "the server restarted since its early-data ticket was kept: the command is sent \
                 again after the handshake"
            ),
        ),
        (None, _) => v.say(
            1,
            format_args!(
                "no early-data ticket kept for this server: the command is sent again after the \
                 handshake"
            ),
        ),
    }
    if let (Some(g), Some(tickets)) = (given, tickets)
        && known != Some(g)
    {
        match tickets.put(server_id, g) {
            Ok(()) => v.say(
                2,
                format_args!("kept the server's early-data ticket for the next exec"),
            ),
            Err(e) => v.say(
                1,
                format_args!("cannot keep the server's early-data ticket: {e}"),
            ),
        }
    }
}

/// What became of a call offered to the agent.
enum ThroughAgent {
    /// It runs through the agent.
    Started(Box<rex_client::Execution>),
    /// No agent runs (nothing is said).
    NoAgent,
    /// The agent has gone or cannot take the call (one line said so).
    Fallback,
}

/// The warm policy the settings give the agent for this server: `None`
/// when nothing sets `warm` (the agent's own `--warm-interval` then).
pub(super) fn warm_policy(settings: &Settings) -> Option<rex_client::WarmPolicy> {
    if settings.warm.source == Source::Default {
        return None;
    }
    Some(match settings.warm.value {
        Warm::Off => rex_client::WarmPolicy::off(),
        Warm::Every(d) => rex_client::WarmPolicy::every(d),
    })
}

/// How a command reaches the agent at `socket` and what the agent needs
/// to hold its session (`None` when the key file's path cannot be made
/// absolute, or none is known).
pub(super) fn agent_config(
    socket: PathBuf,
    settings: &Settings,
    plan: &Plan,
    records: Option<metadata::Persister>,
    record_args: bool,
    records_dir: Option<PathBuf>,
) -> Option<AgentConfig> {
    let key_file = settings
        .key
        .as_ref()
        .and_then(|k| std::path::absolute(&k.value).ok())?;
    let (relays, direct) = match &settings.route.as_ref().map(|r| &r.value) {
        Some(Route::Direct(url)) => (Vec::new(), Some(url.clone())),
        _ => (
            plan.targets.iter().map(|t| t.url().to_owned()).collect(),
            None,
        ),
    };
    let mut config = AgentConfig::new(
        socket,
        plan.server,
        key_file,
        plan.key.public(),
        AGENT_TIMEOUT,
    );
    config.relays = relays;
    config.direct = direct;
    config.ca_file = settings
        .ca
        .as_ref()
        .and_then(|ca| std::path::absolute(&ca.value).ok());
    config.warm = warm_policy(settings);
    config.metadata = records;
    config.record_args = record_args;
    config.records_dir = records_dir;
    Some(config)
}

/// Runs the call through a running agent, if there is one; otherwise
/// (or when it cannot take the call) the command runs without it.
async fn through_agent(
    args: &ExecArgs,
    settings: &Settings,
    plan: &Plan,
    records: Option<metadata::Persister>,
    spec: &ExecSpec,
) -> Result<ThroughAgent, ClientError> {
    let socket = rex_agent::place::socket_path();
    if !socket.exists() {
        return Ok(ThroughAgent::NoAgent);
    }
    // The agent keeps the record when it keeps this process's store (not
    // with --strict-records, whose failures must stop the command here).
    let records_dir = records
        .as_ref()
        .filter(|_| !args.strict_records)
        .and_then(|r| r.path().parent())
        .and_then(|dir| std::path::absolute(dir).ok());
    let Some(config) = agent_config(
        socket.clone(),
        settings,
        plan,
        records,
        args.record_args,
        records_dir,
    ) else {
        return Ok(ThroughAgent::NoAgent);
    };
    let agent = AgentClient::new(config);
    match agent.exec(spec.clone()).await {
        Ok(run) => Ok(ThroughAgent::Started(Box::new(run))),
        // Nobody listens: an agent that died left its socket.
        Err(ClientError::Agent(e)) if e.agent_gone() => {
            let _ = std::fs::remove_file(&socket);
            eprintln!(
                "core-client: warning: the agent at {} is gone (removed its stale socket); \
                 running without it",
                socket.display()
            );
            Ok(ThroughAgent::Fallback)
        }
        // An agent that is there but could not take the call: its socket
        // stays.
        Err(ClientError::Agent(
            e @ (AgentError::Unavailable { .. } | AgentError::Busy(_) | AgentError::Lost(_)),
        )) => {
            eprintln!("core-client: warning: {e}; running without the agent");
            Ok(ThroughAgent::Fallback)
        }
        Err(e) => Err(e),
    }
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

/// The one line `exec` says when a signal to it ended a terminal session
/// (as ssh says "Killed by signal 15.").
fn hung_up_line(signal: u8) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    };
    format!(
        "core-client: killed by {name} (signal {signal}): the remote command's terminal was hung \
         up"
    )
}

/// Chunks waiting for the output thread.
const OUTPUT_QUEUE: usize = 16;

/// The output thread and its queue. The thread starts with the first
/// output: a command that prints nothing starts none.
struct Output {
    tx: tokio::sync::mpsc::Sender<Chunk>,
    /// The thread's ends, until it starts.
    idle: Option<Writer>,
    done: tokio::sync::oneshot::Receiver<()>,
}

/// What the output thread takes: its queue, where it says stdout broke,
/// and where it says it wrote everything.
struct Writer {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    broken: tokio::sync::oneshot::Sender<()>,
    done: tokio::sync::oneshot::Sender<()>,
}

impl Output {
    /// The queue; the receiver fires once if stdout fails.
    fn new() -> (Self, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(OUTPUT_QUEUE);
        let (broken_tx, broken) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let idle = Writer {
            rx,
            broken: broken_tx,
            done: done_tx,
        };
        (
            Self {
                tx,
                idle: Some(idle),
                done,
            },
            broken,
        )
    }

    /// Starts the thread, if it has not started.
    fn run(&mut self) -> std::io::Result<()> {
        let Some(writer) = self.idle.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("output".into())
            .spawn(move || writer.run())?;
        Ok(())
    }

    /// Closes the queue; resolves once everything queued is written (at
    /// once when nothing was).
    fn finish(self) -> tokio::sync::oneshot::Receiver<()> {
        drop(self.tx);
        drop(self.idle);
        self.done
    }
}

/// Whether every one of `fds` can take more output now, without waiting
/// (a pipe nobody reads, when full, cannot).
fn writable_now(fds: &[std::os::fd::BorrowedFd<'_>]) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::OUT))
        .collect();
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut polled, Some(&now))
        .is_ok_and(|_| polled.iter().all(|fd| fd.revents() == PollFlags::OUT))
}

impl Writer {
    fn run(mut self) {
        let mut broken = Some(self.broken);
        while let Some(chunk) = self.rx.blocking_recv() {
            match chunk {
                Chunk::Out(d) if broken.is_some() => {
                    let mut out = std::io::stdout().lock();
                    if out.write_all(&d).and_then(|()| out.flush()).is_err()
                        && let Some(tx) = broken.take()
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
        let _ = self.done.send(());
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
            tty: false,
            no_tty: false,
            print_trace_id: false,
            record_args: false,
            strict_records: false,
            no_records: false,
            no_agent: false,
            command: vec!["env".into()],
        };
        let spec = exec_spec(&exec, &s, None);
        assert_eq!(
            spec.env,
            vec![("A".into(), "1".into()), ("B".into(), "=2".into())]
        );
        assert_eq!(spec.cwd, Some(PathBuf::from("/w")));
        assert!(spec.stdin);
    }

    #[test]
    fn a_hang_up_by_signal_is_one_line_naming_it() {
        for (signal, name) in [(1, "SIGHUP"), (2, "SIGINT"), (15, "SIGTERM")] {
            let line = hung_up_line(signal);
            assert!(line.starts_with("core-client: killed by "), "{line}");
            assert!(line.contains(name), "{line}");
            assert_eq!(line.lines().count(), 1);
        }
    }

    #[test]
    fn a_full_pipe_cannot_take_output_at_once() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        assert!(writable_now(&[write.as_fd()]));
        // Fill it, as a stdout nobody reads ends up.
        rustix::fs::fcntl_setfl(&write, rustix::fs::OFlags::NONBLOCK).unwrap();
        let chunk = [0u8; 4096];
        while rustix::io::write(&write, &chunk).is_ok() {}
        assert!(!writable_now(&[write.as_fd()]));
        // One full among writable ones is enough to say no.
        let (_r2, other) = rustix::pipe::pipe().unwrap();
        assert!(!writable_now(&[other.as_fd(), write.as_fd()]));
        // Read a little: room again.
        let mut buf = vec![0u8; 65536];
        rustix::io::read(&read, &mut buf).unwrap();
        assert!(writable_now(&[other.as_fd(), write.as_fd()]));
    }

    /// A parser of `exec`'s arguments alone (that the whole parser parses
    /// them alike is `parse`'s to test).
    #[derive(Debug, clap::Parser)]
    struct ExecAlone {
        #[command(flatten)]
        args: ExecArgs,
    }

    /// `exec ARGS`.
    fn parse(args: &[&str]) -> ExecArgs {
        use clap::Parser;
        ExecAlone::try_parse_from(["exec"].iter().chain(args).copied())
            .unwrap()
            .args
    }

    /// `exec FLAGS -- sh`: a command.
    fn args_with(flags: &[&str]) -> ExecArgs {
        let all: Vec<&str> = flags.iter().copied().chain(["--", "sh"]).collect();
        parse(&all)
    }

    #[test]
    fn a_terminal_when_forced_or_as_the_option_says() {
        use TerminalOption::{Always, Auto, Never};
        let shell = parse(&["box"]);
        let shell_n = parse(&["box", "-n"]);
        for args in [
            args_with(&[]),
            args_with(&["-n"]),
            shell.clone(),
            shell_n.clone(),
        ] {
            let mut t = args.clone();
            t.tty = true;
            let mut big_t = args.clone();
            big_t.no_tty = true;
            // -t and -T win over the option and over what the local side
            // is, for a command and for the login shell.
            for option in [Never, Auto, Always] {
                for (i, o) in [(false, false), (true, true), (true, false)] {
                    assert!(wants_terminal(&t, option, i, o));
                    assert!(!wants_terminal(&big_t, option, i, o));
                }
            }
            // never: pipes; always: a terminal, whatever the local side.
            assert!(!wants_terminal(&args, Never, true, true));
            assert!(wants_terminal(&args, Always, false, false));
        }
        // auto, the default: a command gets pipes, as ssh gives it...
        assert_eq!(TerminalOption::default(), Auto);
        assert!(!wants_terminal(&args_with(&[]), Auto, true, true));
        // ...and the login shell a terminal when stdin and stdout are
        // both terminals and stdin is forwarded (ssh's rule for an
        // interactive session); else pipes, as `ssh -T HOST` gives.
        assert!(wants_terminal(&shell, Auto, true, true));
        assert!(!wants_terminal(&shell, Auto, true, false));
        assert!(!wants_terminal(&shell, Auto, false, true));
        assert!(!wants_terminal(&shell_n, Auto, true, true));
    }

    #[test]
    fn no_command_is_the_login_shell() {
        let key = StaticKeypair::generate().unwrap().public();
        let server = ServerArgs {
            server: Some(key.to_string()),
            ..ServerArgs::default()
        };
        let ctx = Context::default();
        let s = Settings::resolve(&Inputs {
            name: None,
            args: &server,
            env: &|_| None,
            config: None,
            known: &ctx.known,
            default_key: None,
        })
        .unwrap();
        for args in [
            parse(&["box"]),
            parse(&["box", "--"]),
            parse(&["--server", "k"]),
        ] {
            assert!(args.command.is_empty());
            let spec = exec_spec(&args, &s, None);
            assert!(spec.login_shell);
            assert!(spec.argv.is_empty());
            assert_eq!(spec.program(), None);
        }
        let spec = exec_spec(&args_with(&[]), &s, None);
        assert!(!spec.login_shell);
        assert_eq!(spec.program().as_deref(), Some("sh"));
    }

    #[test]
    fn the_remote_terminal_takes_a_usable_term_only() {
        let t = remote_terminal(Some("xterm-256color".into()));
        assert_eq!(t.term.as_deref(), Some("xterm-256color"));
        assert!(t.rows >= 1 && t.cols >= 1);
        assert_eq!(remote_terminal(Some(String::new())).term, None);
        assert_eq!(remote_terminal(Some("bad term".into())).term, None);
        assert_eq!(remote_terminal(None).term, None);
    }

    #[test]
    fn minus_t_and_minus_big_t_conflict() {
        use clap::Parser;
        let err = ExecAlone::try_parse_from(["exec", "-t", "-T", "--", "sh"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
