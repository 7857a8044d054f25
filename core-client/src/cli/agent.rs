//! `agent start`, `agent stop`, `agent status`, `agent warm`, `agent
//! flush`: the local agent that holds warm sessions for later `exec`s (as
//! ssh's ControlMaster). The agent itself is `rex_agent`: these commands
//! map their flags onto its options, ask it, and print what it says.

use lifecycle::durations::parse as parse_duration;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use analysis::views::{self, AgentStatus, HeldSession};
use clap::{Args, Subcommand};
use proto::pb::agent as wire;
use rex_agent::ask::{self, AskError};
use rex_agent::place;
use rex_client::WarmPolicy;

use super::context::Context;
use super::error::{CliError, EXIT_USAGE};
use crate::config::options::Warm;
use crate::names::ServerNames;
use crate::settings::ServerArgs;

/// How long `agent start` waits for the agent to answer, and for the
/// first warm of the servers it keeps warm from the start.
const START_WAIT: Duration = Duration::from_secs(30);

/// `agent` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Start the agent in the background (if none runs): later `exec`s
    /// for the same relay, server and key run on the sessions it holds,
    /// warm.
    Start(StartArgs),
    /// Stop the agent: its sessions close (commands running through it end,
    /// exit 255).
    Stop,
    /// Show the agent and the sessions it holds: per server the next and
    /// last warm, the last round trip and the calls served.
    Status {
        /// Print JSON (times in Unix milliseconds) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Warm sessions now: each named server's (held from now on if it was
    /// not), or the one the flags name, or every session held when none
    /// is named. Each one's cycle starts again: its next warm is a full
    /// interval later.
    Warm(WarmArgs),
    /// Wait until the agent has written the spans and saved the records of
    /// every command that ended through it (it does so just after each
    /// command's exit, off the command's path). `trace show`, `report` and
    /// `history` do this first by themselves; scripts that read the trace
    /// file or the records directly can run it first.
    Flush,
}

/// `agent warm`'s servers.
#[derive(Debug, Args, Clone)]
pub(crate) struct WarmArgs {
    /// Servers named in the config file or the known servers.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Or where and how, as `exec` takes it.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `agent start`'s settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct StartArgs {
    /// Stop after this long with no command running (e.g. `10m`, `2h`;
    /// `0` never stops).
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub persist: Duration,
    /// Most sessions held (a new server or key takes the place of the
    /// session used least recently among those idle; when all are running
    /// commands, a command for another server runs without the agent).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_sessions: usize,
    /// Most connections open at once (each command through the agent is
    /// one): beyond it, the agent answers busy and the command runs
    /// without it.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,
    /// How often each held session is warmed (pinged, or established
    /// again if lost), unless the server's `warm` option says otherwise.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub warm_interval: Duration,
    /// Run in this process, in the foreground (for a service manager).
    #[arg(long)]
    pub foreground: bool,
    /// Keep the agent's spans in the local trace file: never forward them
    /// through its sessions to an exec-server that would export them (also
    /// `span_forwarding = false` in the config file's `[defaults]`).
    #[arg(long, env = "REX_NO_SPAN_FORWARDING")]
    pub no_span_forwarding: bool,
}

/// The agent's options from `agent start`'s flags and the config file:
/// its spans and records go where this process's would (`data_dir`), and
/// its sessions forward their calls' spans unless turned off (as for
/// `exec`).
fn options(
    args: &StartArgs,
    flusher: Option<telemetry::setup::Flusher>,
    prewarm: Vec<wire::Route>,
    data_dir: Option<&Path>,
    config: Option<&crate::config::Config>,
) -> rex_agent::Options {
    let mut options = rex_agent::Options::default();
    options.persist = (!args.persist.is_zero()).then_some(args.persist);
    options.max_sessions = args.max_sessions.max(1);
    options.max_connections = args.max_connections.max(1);
    options.warm = WarmPolicy::every(args.warm_interval);
    options.prewarm = prewarm;
    options.flusher = flusher;
    options.data_dir = data_dir.map(Path::to_path_buf);
    options.forward_spans = !args.no_span_forwarding
        && config
            .and_then(|c| c.defaults.span_forwarding.as_ref())
            .is_none_or(|f| f.value);
    options
}

/// The servers the agent keeps warm from its start: every server named in
/// the config file or the known servers whose `warm` option (its own, or
/// `[defaults]`'s) is an interval, as `exec NAME` would reach it. A server
/// that cannot be (no relay, no key...) is named in `skipped`, with why.
fn prewarm(ctx: &Context) -> (Vec<wire::Route>, Vec<String>) {
    let mut names: BTreeSet<String> = ctx
        .config
        .as_ref()
        .map(|c| c.servers.keys().cloned().collect())
        .unwrap_or_default();
    names.extend(ctx.known.entries().iter().filter_map(|k| k.name.clone()));
    let mut routes = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        let settings = match super::exec::settings(ctx, Some(&name), &ServerArgs::default()) {
            Ok(s) => s,
            Err(e) => {
                skipped.push(format!("{name}: {}", e.message));
                continue;
            }
        };
        if !matches!(settings.warm.value, Warm::Every(_)) {
            continue;
        }
        match route_of(ctx, &settings) {
            Ok(route) => routes.push(route),
            Err(e) => skipped.push(format!("{name}: {}", e.message)),
        }
    }
    (routes, skipped)
}

/// The agent-protocol route of a server's settings, as `exec` reaches it.
fn route_of(ctx: &Context, settings: &crate::settings::Settings) -> Result<wire::Route, CliError> {
    let plan = super::exec::plan(settings, ctx.config.as_ref().map(|c| c.path.as_path()))?;
    let config =
        super::exec::agent_config(place::socket_path(), settings, &plan, None, false, None)
            .ok_or_else(|| CliError::usage("the client key file's path cannot be made absolute"))?;
    Ok(config.route())
}

/// `agent start`: in the background (a process of its own that outlives
/// this one), or in the foreground with `--foreground`. In the background,
/// it returns once the servers kept warm from the start have had their
/// first warm (so that the next `exec` finds them warm).
pub(crate) fn start(
    args: &StartArgs,
    trace_file: Option<&Path>,
    data_dir: Option<&Path>,
    config: Option<&Path>,
    ctx: &Context,
) -> Result<u8, CliError> {
    let socket = place::socket_path();
    place::prepare_dir(&socket).map_err(|e| CliError::failed(e.to_string()))?;
    let log = socket.with_file_name("agent.log");
    let runtime = runtime()?;
    if let Ok(status) = runtime.block_on(ask::status(&socket)) {
        println!(
            "an agent is already running (pid {}) at {}",
            status.pid,
            socket.display()
        );
        return Ok(0);
    }
    let exe = std::env::current_exe().map_err(|e| CliError::failed(e.to_string()))?;
    let log_file = std::fs::File::create(&log)
        .map_err(|e| CliError::failed(format!("{}: {e}", log.display())))?;
    // The agent works the servers to keep warm out itself; what it cannot
    // keep warm is said here.
    for why in prewarm(ctx).1 {
        eprintln!("core-client: warning: not kept warm: {why}");
    }
    let mut cmd = Command::new(exe);
    cmd.args(["agent", "start", "--foreground"])
        .arg("--persist")
        .arg(exactly(args.persist))
        .arg("--max-sessions")
        .arg(args.max_sessions.to_string())
        .arg("--max-connections")
        .arg(args.max_connections.to_string())
        .arg("--warm-interval")
        .arg(exactly(args.warm_interval))
        .args(args.no_span_forwarding.then_some("--no-span-forwarding"))
        .env(place::SOCKET_ENV, &socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    // It writes its spans and records where this process would, and reads
    // the config file this process read.
    if let Some(t) = trace_file {
        cmd.env(telemetry::trace_file::PATH_ENV, t);
    }
    if let Some(d) = data_dir.and_then(|d| std::path::absolute(d).ok()) {
        cmd.env(metadata::location::DATA_DIR_ENV, d);
    }
    if let Some(c) = config.and_then(|c| std::path::absolute(c).ok()) {
        cmd.arg("--config").arg(c);
    }
    // Its own process group: the terminal's signals (Ctrl-C) are not its.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the agent: {e}")))?;
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Ok(status) = runtime.block_on(ask::status(&socket)) {
            let status = first_warms(&runtime, &socket, status, deadline);
            let names = ctx.names();
            for h in &status.sessions {
                if !h.last_warm_failure.is_empty() {
                    eprintln!(
                        "core-client: warning: {}: its first warm failed: {}",
                        views::session_label(&names, &h.server_id),
                        h.last_warm_failure
                    );
                }
            }
            let persist = if args.persist.is_zero() {
                "it runs until `core-client agent stop`".to_owned()
            } else {
                format!(
                    "it stops after {} with no command",
                    analysis::time::human(args.persist)
                )
            };
            let warm = match status.sessions.len() {
                0 => String::new(),
                1 => "; keeping 1 server warm".to_owned(),
                n => format!("; keeping {n} servers warm"),
            };
            println!(
                "agent started (pid {}) at {}; {persist}{warm}",
                status.pid,
                socket.display()
            );
            return Ok(0);
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let last = said.lines().last().unwrap_or("no reason given");
            return Err(CliError::failed(format!(
                "the agent did not start ({exit}): {last}"
            )));
        }
        if Instant::now() >= deadline {
            return Err(CliError::failed(format!(
                "the agent did not answer within {}s (its log: {})",
                START_WAIT.as_secs(),
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A duration as `--persist` and `--warm-interval` take it, exactly.
fn exactly(d: Duration) -> String {
    format!("{}ns", d.as_nanos())
}

/// Waits (until `deadline`) for the first warm of each session the agent
/// holds from its start (it holds them all before it answers): the status
/// then.
fn first_warms(
    runtime: &tokio::runtime::Runtime,
    socket: &Path,
    mut status: wire::Status,
    deadline: Instant,
) -> wire::Status {
    let done = |s: &wire::Status| {
        s.sessions
            .iter()
            .all(|h| !h.warm_enabled || h.last_warm_unix_ms != 0)
    };
    while !done(&status) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        match runtime.block_on(ask::status(socket)) {
            Ok(s) => status = s,
            Err(_) => break,
        }
    }
    status
}

/// `agent start --foreground`: runs the agent until it is stopped.
pub(crate) async fn run_foreground(
    args: StartArgs,
    flusher: Option<telemetry::setup::Flusher>,
    ctx: Context,
    data_dir: Option<&Path>,
) -> Result<u8, CliError> {
    let socket = place::socket_path();
    let listener = rex_agent::bind(&socket)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let (routes, skipped) = prewarm(&ctx);
    for why in &skipped {
        tracing::warn!("not kept warm: {why}");
    }
    let options = options(&args, flusher, routes, data_dir, ctx.config.as_ref());
    rex_agent::serve(listener, options).await;
    Ok(0)
}

/// `agent stop`.
pub(crate) fn stop() -> Result<u8, CliError> {
    let socket = place::socket_path();
    let runtime = runtime()?;
    match runtime.block_on(ask::stop(&socket)) {
        Ok(()) => {}
        Err(AskError::Unexpected) => {
            return Err(CliError::failed("the agent did not agree to stop"));
        }
        Err(e) => return Err(not_running(&socket, &e)),
    }
    println!("agent stopped");
    Ok(0)
}

/// `agent flush`: exit 0 once everything is written, 1 with a line when
/// a record could not be saved or no agent runs.
pub(crate) fn flush() -> Result<u8, CliError> {
    let socket = place::socket_path();
    let runtime = runtime()?;
    match runtime.block_on(ask::flushed(&socket)) {
        Ok(None) => Ok(0),
        Ok(Some(record_error)) => Err(CliError::failed(record_error)),
        Err(e) => Err(not_running(&socket, &e)),
    }
}

/// Before reading the trace file or the records: a running agent's
/// barrier (nothing when none runs; an agent that does not answer in time
/// is not waited for longer).
pub(crate) fn barrier() {
    let socket = place::socket_path();
    if !socket.exists() {
        return;
    }
    if let Ok(runtime) = runtime() {
        let _ = runtime.block_on(ask::flushed(&socket));
    }
}

/// `agent status`.
pub(crate) fn status(json: bool, names: &ServerNames) -> Result<u8, CliError> {
    let socket = place::socket_path();
    let runtime = runtime()?;
    let status = runtime
        .block_on(ask::status(&socket))
        .map_err(|e| not_running(&socket, &e))?;
    let mut out = std::io::stdout().lock();
    let text = if json {
        status_json(&status, &socket)
    } else {
        status_table(&status, &socket, names, SystemTime::now())
    };
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

/// `agent warm [NAME...]`: the sessions warmed, one line each.
pub(crate) fn warm(args: &WarmArgs, ctx: &Context) -> Result<u8, CliError> {
    let socket = place::socket_path();
    let flags = !args.server.relay.is_empty()
        || args.server.direct.is_some()
        || args.server.server.is_some()
        || args.server.server_file.is_some();
    let mut routes = Vec::new();
    let names: Vec<Option<&str>> = if args.names.is_empty() {
        if flags { vec![None] } else { Vec::new() }
    } else {
        args.names.iter().map(|n| Some(n.as_str())).collect()
    };
    for name in names {
        let settings = super::exec::settings(ctx, name, &args.server)?;
        routes.push(route_of(ctx, &settings)?);
    }
    let runtime = runtime()?;
    let warmed = match runtime.block_on(ask::warm(&socket, routes)) {
        Ok(warmed) => warmed,
        Err(e @ AskError::Unexpected) => return Err(CliError::failed(e.to_string())),
        Err(e) => return Err(not_running(&socket, &e)),
    };
    let names = ctx.names();
    let text = warmed_lines(&warmed, &names, SystemTime::now());
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    for why in &warmed.refused {
        eprintln!("core-client: cannot warm: {why}");
    }
    let failed = warmed
        .sessions
        .iter()
        .any(|h| !h.last_warm_failure.is_empty());
    Ok(u8::from(failed || !warmed.refused.is_empty()))
}

/// One line per session `agent warm` warmed: how it went and when the
/// next warm is.
pub(crate) fn warmed_lines(w: &wire::Warmed, names: &ServerNames, now: SystemTime) -> String {
    let sessions: Vec<HeldSession<'_>> = w.sessions.iter().map(held).collect();
    views::warmed(&sessions, !w.refused.is_empty(), names, now)
}

/// A held session as the views show it.
fn held(h: &wire::Held) -> HeldSession<'_> {
    HeldSession {
        server_id: &h.server_id,
        target: &h.target,
        warm_enabled: h.warm_enabled,
        next_warm_unix_ms: h.next_warm_unix_ms,
        last_warm_unix_ms: h.last_warm_unix_ms,
        last_warm_failure: &h.last_warm_failure,
        last_latency_us: h.last_latency_us,
        calls_running: h.calls_running,
        calls_served: h.calls_served,
    }
}

fn not_running(socket: &Path, e: &AskError) -> CliError {
    let message = match e {
        // There, but at its connection limit.
        AskError::Busy(_) => format!("{e} (at {})", socket.display()),
        _ => format!("no agent is running at {} ({e})", socket.display()),
    };
    CliError { message, code: 1 }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start runtime: {e}")))
}

/// The table `agent status` prints.
pub(crate) fn status_table(
    s: &wire::Status,
    socket: &Path,
    names: &ServerNames,
    now: SystemTime,
) -> String {
    let status = AgentStatus {
        pid: s.pid,
        socket,
        started_unix_ms: s.started_unix_ms,
        idle_until_unix_ms: s.idle_until_unix_ms,
        max_sessions: s.max_sessions,
        calls_running: s.calls_running,
        sessions: s.sessions.iter().map(held).collect(),
    };
    views::agent_status(&status, names, now)
}

/// The JSON `agent status --json` prints (times in Unix milliseconds,
/// `null` when there is none).
pub(crate) fn status_json(s: &wire::Status, socket: &Path) -> String {
    let ms = |v: u64| (v != 0).then_some(v);
    let sessions: Vec<serde_json::Value> = s
        .sessions
        .iter()
        .map(|h| {
            serde_json::json!({
                "server_id": h.server_id,
                "target": h.target,
                "client_key": h.client_key,
                "warm": {
                    "enabled": h.warm_enabled,
                    "interval_ms": h.warm_interval_ms,
                    "next_warm_at_ms": ms(h.next_warm_unix_ms),
                    "last_warm_at_ms": ms(h.last_warm_unix_ms),
                    "last_outcome": if h.last_warm_unix_ms == 0 {
                        serde_json::Value::Null
                    } else if h.last_warm_failure.is_empty() {
                        serde_json::json!("ok")
                    } else {
                        serde_json::json!({ "failed": h.last_warm_failure })
                    },
                    "last_latency_us": ms(h.last_latency_us),
                },
                "calls_running": h.calls_running,
                "calls_served": h.calls_served,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "pid": s.pid,
        "socket": socket.display().to_string(),
        "started_at_ms": s.started_unix_ms,
        "persist_ms": ms(s.persist_ms),
        "idle_until_ms": ms(s.idle_until_unix_ms),
        "max_sessions": s.max_sessions,
        "calls_running": s.calls_running,
        "sessions": sessions,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// Usage errors of `agent start`'s values.
pub(crate) fn check(args: &StartArgs) -> Result<(), CliError> {
    if args.warm_interval < WarmPolicy::MIN_INTERVAL {
        return Err(CliError {
            message: format!(
                "--warm-interval must be at least {}ms",
                WarmPolicy::MIN_INTERVAL.as_millis()
            ),
            code: EXIT_USAGE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_passed_to_the_agent_exactly() {
        for d in [
            Duration::from_millis(500),
            Duration::from_millis(90_500),
            Duration::from_nanos(1_500),
            Duration::from_secs(600),
        ] {
            assert_eq!(parse_duration(&exactly(d)), Ok(d));
        }
    }

    #[test]
    fn agent_warm_says_how_each_warm_went_and_when_the_next_is() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let held = |failure: &str, enabled: bool| wire::Held {
            server_id: "ab".repeat(16),
            target: "http://10.0.0.5:7600".into(),
            warm_enabled: enabled,
            warm_interval_ms: 30_000,
            next_warm_unix_ms: if enabled { 1_000_030_000 } else { 0 },
            last_warm_unix_ms: 1_000_000_000,
            last_warm_failure: failure.into(),
            last_latency_us: 1_250,
            ..Default::default()
        };
        let warmed = wire::Warmed {
            sessions: vec![held("", true), held("cannot reach it", false)],
            refused: vec![],
        };
        let text = warmed_lines(&warmed, &ServerNames::default(), now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "abababababababab via http://10.0.0.5:7600: warm (1.250 ms); next warm in 30s",
                "abababababababab via http://10.0.0.5:7600: failed: cannot reach it; not warmed on a timer",
            ]
        );
        let none = warmed_lines(&wire::Warmed::default(), &ServerNames::default(), now);
        assert!(none.starts_with("no sessions held"));
    }

    #[test]
    fn the_status_table_says_when_each_warm_fires_and_fired() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs: i64| (1_000_000 + secs) as u64 * 1000;
        let status = wire::Status {
            pid: 42,
            started_unix_ms: at(-3600),
            persist_ms: 600_000,
            idle_until_unix_ms: at(590),
            max_sessions: 16,
            calls_running: 0,
            sessions: vec![wire::Held {
                server_id: "ab".repeat(16),
                target: "http://10.0.0.5:7600".into(),
                client_key: "k".into(),
                warm_enabled: true,
                warm_interval_ms: 30_000,
                next_warm_unix_ms: at(12),
                last_warm_unix_ms: at(-18),
                last_warm_failure: String::new(),
                last_latency_us: 1_250,
                calls_running: 0,
                calls_served: 7,
            }],
        };
        let table = status_table(
            &status,
            Path::new("/run/a.sock"),
            &ServerNames::default(),
            now,
        );
        assert!(
            table.starts_with("agent pid 42 at /run/a.sock: up 1h, 1 of 16 sessions held"),
            "{table}"
        );
        assert!(table.contains("stops in 9m50s if idle"), "{table}");
        // Each held session is the row analysis draws (how the table looks
        // is analysis's, tested there).
        let drawn = views::AgentStatus {
            pid: 42,
            socket: Path::new("/run/a.sock"),
            started_unix_ms: at(-3600),
            idle_until_unix_ms: at(590),
            max_sessions: 16,
            calls_running: 0,
            sessions: vec![views::HeldSession {
                server_id: &status.sessions[0].server_id,
                target: "http://10.0.0.5:7600",
                warm_enabled: true,
                next_warm_unix_ms: at(12),
                last_warm_unix_ms: at(-18),
                last_warm_failure: "",
                last_latency_us: 1_250,
                calls_running: 0,
                calls_served: 7,
            }],
        };
        assert_eq!(
            table,
            views::agent_status(&drawn, &ServerNames::default(), now)
        );
        let json: serde_json::Value =
            serde_json::from_str(&status_json(&status, Path::new("/run/a.sock"))).unwrap();
        assert_eq!(json["sessions"][0]["warm"]["next_warm_at_ms"], at(12));
        assert_eq!(json["sessions"][0]["warm"]["last_outcome"], "ok");
        assert_eq!(json["sessions"][0]["calls_served"], 7);
    }
}
