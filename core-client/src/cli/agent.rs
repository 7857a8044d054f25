//! `agent start`, `agent stop`, `agent status`: the local agent that holds
//! warm sessions for later `exec`s (as ssh's ControlMaster).

use lifecycle::durations::parse as parse_duration;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Subcommand};
use proto::pb::agent::{self as wire, reply, request};
use rex_client::WarmPolicy;

use super::{CliError, EXIT_USAGE};
use crate::agent::{self, Options, place};
use crate::names::ServerNames;

/// How long `agent start` waits for the agent to answer.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long `agent stop` waits for the agent to be gone.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// `agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
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
}

/// `agent start`'s settings.
#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// Stop after this long with no command running (e.g. `10m`, `2h`;
    /// `0` never stops).
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub persist: Duration,
    /// Most sessions held (a new server or key takes the place of the
    /// session used least recently among those idle).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_sessions: usize,
    /// How often each held session is warmed (pinged, or established
    /// again if lost).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub warm_interval: Duration,
    /// Run in this process, in the foreground (for a service manager).
    #[arg(long)]
    pub foreground: bool,
}

fn options(
    args: &StartArgs,
    socket: PathBuf,
    flusher: Option<telemetry::setup::Flusher>,
) -> Options {
    Options {
        socket,
        persist: (!args.persist.is_zero()).then_some(args.persist),
        max_sessions: args.max_sessions.max(1),
        warm: WarmPolicy::every(args.warm_interval),
        flusher,
    }
}

/// `agent start`: in the background (a process of its own that outlives
/// this one), or in the foreground with `--foreground`.
pub fn start(args: &StartArgs, trace_file: Option<&Path>) -> Result<u8, CliError> {
    let socket = place::socket_path();
    place::prepare_dir(&socket).map_err(|e| CliError::failed(e.to_string()))?;
    let log = socket.with_file_name("agent.log");
    let runtime = runtime()?;
    if let Ok(status) = runtime.block_on(status_of(&socket)) {
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
    let mut cmd = Command::new(exe);
    cmd.args(["agent", "start", "--foreground"])
        .arg("--persist")
        .arg(format!("{}s", args.persist.as_secs()))
        .arg("--max-sessions")
        .arg(args.max_sessions.to_string())
        .arg("--warm-interval")
        .arg(format!("{}ms", args.warm_interval.as_millis()))
        .env(place::SOCKET_ENV, &socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    // It writes its spans where this process would.
    if let Some(t) = trace_file {
        cmd.env(telemetry::trace_file::PATH_ENV, t);
    }
    // Its own process group: the terminal's signals (Ctrl-C) are not its.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the agent: {e}")))?;
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Ok(status) = runtime.block_on(status_of(&socket)) {
            let persist = if args.persist.is_zero() {
                "it runs until `core-client agent stop`".to_owned()
            } else {
                format!("it stops after {} with no command", human(args.persist))
            };
            println!(
                "agent started (pid {}) at {}; {persist}",
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

/// `agent start --foreground`: runs the agent until it is stopped.
pub async fn run_foreground(
    args: StartArgs,
    flusher: Option<telemetry::setup::Flusher>,
) -> Result<u8, CliError> {
    let socket = place::socket_path();
    let listener = agent::bind(&socket)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let tasks = lifecycle::Tasks::new();
    let shutdown = lifecycle::signals::stop_on_signals(&tasks);
    tracing::info!(socket = %socket.display(), "agent listening");
    agent::run(listener, options(&args, socket, flusher), shutdown).await;
    Ok(0)
}

/// `agent stop`.
pub fn stop() -> Result<u8, CliError> {
    let socket = place::socket_path();
    let runtime = runtime()?;
    let reply = runtime
        .block_on(agent::ask(&socket, request::Body::Stop(wire::Empty {})))
        .map_err(|e| not_running(&socket, &e))?;
    if !matches!(reply.body, Some(reply::Body::Stopping(_))) {
        return Err(CliError::failed("the agent did not agree to stop"));
    }
    let deadline = Instant::now() + STOP_WAIT;
    while socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("agent stopped");
    Ok(0)
}

/// `agent status`.
pub fn status(json: bool, names: &ServerNames) -> Result<u8, CliError> {
    let socket = place::socket_path();
    let runtime = runtime()?;
    let status = runtime
        .block_on(status_of(&socket))
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

fn not_running(socket: &Path, e: &std::io::Error) -> CliError {
    CliError {
        message: format!("no agent is running at {} ({e})", socket.display()),
        code: 1,
    }
}

async fn status_of(socket: &Path) -> std::io::Result<wire::Status> {
    match agent::ask(socket, request::Body::Status(wire::Empty {}))
        .await?
        .body
    {
        Some(reply::Body::Status(s)) => Ok(s),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the agent answered something else",
        )),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start runtime: {e}")))
}

/// A duration as a person writes it: `10m`, `1h30m`, `45s`, `250ms`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// `in 12s` / `3s ago` from Unix milliseconds (none: `-`).
fn relative(unix_ms: u64, now: SystemTime) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now_ms = agent::unix_ms(now);
    if unix_ms >= now_ms {
        format!("in {}", human(Duration::from_millis(unix_ms - now_ms)))
    } else {
        format!("{} ago", human(Duration::from_millis(now_ms - unix_ms)))
    }
}

/// The table `agent status` prints.
pub fn status_table(
    s: &wire::Status,
    socket: &Path,
    names: &ServerNames,
    now: SystemTime,
) -> String {
    let mut out = format!(
        "agent pid {} at {}: up {}, {} of {} sessions held, {} command{} running",
        s.pid,
        socket.display(),
        human(Duration::from_millis(
            agent::unix_ms(now).saturating_sub(s.started_unix_ms)
        )),
        s.sessions.len(),
        s.max_sessions,
        s.calls_running,
        if s.calls_running == 1 { "" } else { "s" },
    );
    if s.idle_until_unix_ms != 0 {
        out.push_str(&format!(
            "; stops {} if idle",
            relative(s.idle_until_unix_ms, now)
        ));
    }
    out.push('\n');
    if s.sessions.is_empty() {
        out.push_str("no sessions held yet (the first exec through the agent opens one)\n");
        return out;
    }
    out.push_str(&format!(
        "{:<20} {:<28} {:<10} {:<10} {:>10} {:>8} {:>7}  {}\n",
        "server",
        "via",
        "next warm",
        "last warm",
        "round trip",
        "running",
        "served",
        "last outcome"
    ));
    for h in &s.sessions {
        let server = names.name(&h.server_id).map_or_else(
            || h.server_id[..h.server_id.len().min(16)].to_owned(),
            str::to_owned,
        );
        let next = if !h.warm_enabled {
            "off".to_owned()
        } else if h.next_warm_unix_ms == 0 && h.calls_running > 0 {
            "(in use)".to_owned()
        } else {
            relative(h.next_warm_unix_ms, now)
        };
        let rtt = if h.last_latency_us == 0 {
            "-".to_owned()
        } else {
            format!("{:.3} ms", h.last_latency_us as f64 / 1000.0)
        };
        let outcome = if h.last_warm_unix_ms == 0 {
            "-".to_owned()
        } else if h.last_warm_failure.is_empty() {
            "ok".to_owned()
        } else {
            format!("failed: {}", h.last_warm_failure)
        };
        out.push_str(&format!(
            "{:<20} {:<28} {:<10} {:<10} {:>10} {:>8} {:>7}  {}\n",
            server,
            h.target,
            next,
            relative(h.last_warm_unix_ms, now),
            rtt,
            h.calls_running,
            h.calls_served,
            outcome
        ));
    }
    out
}

/// The JSON `agent status --json` prints (times in Unix milliseconds,
/// `null` when there is none).
pub fn status_json(s: &wire::Status, socket: &Path) -> String {
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
pub fn check(args: &StartArgs) -> Result<(), CliError> {
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
        let row = table.lines().nth(2).unwrap();
        for part in [
            "abababab",
            "http://10.0.0.5:7600",
            "in 12s",
            "18s ago",
            "1.250 ms",
            " 7 ",
            "ok",
        ] {
            assert!(row.contains(part), "{part} missing in {row}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&status_json(&status, Path::new("/run/a.sock"))).unwrap();
        assert_eq!(json["sessions"][0]["warm"]["next_warm_at_ms"], at(12));
        assert_eq!(json["sessions"][0]["warm"]["last_outcome"], "ok");
        assert_eq!(json["sessions"][0]["calls_served"], 7);
    }
}
