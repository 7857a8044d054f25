//! The latency scenarios: `floor` (a warm exec of `true` through the relay
//! against the exec-server's own spawn of `true`), `warm` (against ssh
//! through a `ControlMaster`), `first_byte` (dispatch to the first stdout
//! byte of `echo x`) and `cold` (a new `core-client` process against a
//! fresh `ssh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use proto::pb::session::{ExecRequest, StdinMode, terminal_event};
use rex_client::{Client, Event, ExecSpec, ExitStatus};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rounds::{Plan, latencies};
use super::ssh::Ssh;
use super::{Comparison, Target, Unit};
use crate::bench::exec_true;

/// The exec-server's own path for one `true`, with no session or network:
/// `exec_server::process::run` spawning it and pushing its events into a
/// local queue, until the final event. Its wall time.
pub async fn local_true() -> Result<Duration, String> {
    let started = Instant::now();
    let (events_tx, mut events) = mpsc::channel(64);
    let (_control_tx, control) = mpsc::channel(1);
    let io = exec_server::process::ProcessIo {
        call_id: 1,
        events: events_tx,
        control,
        stdin: None,
        cancel: CancellationToken::new(),
        credit: exec_server::credit::Credit::unlimited(),
        ended: CancellationToken::new(),
        resize: None,
    };
    let request = ExecRequest {
        argv: vec![bytes::Bytes::from_static(b"true")],
        stdin: StdinMode::Null as i32,
        ..ExecRequest::default()
    };
    let task = tokio::spawn(exec_server::process::run(
        request,
        io,
        exec_server::process::Launch::plain(),
        exec_server::process::ProcessTrace::detached(),
    ));
    let mut exited = false;
    while let Some(out) = events.recv().await {
        if let terminal_event::Kind::Exited(e) = &out.kind {
            exited = e.status == Some(proto::pb::session::exited::Status::Code(0));
        }
        if out.last {
            break;
        }
    }
    let took = started.elapsed();
    task.await.map_err(|e| format!("local spawn task: {e}"))?;
    if exited {
        Ok(took)
    } else {
        Err("the local spawn of `true` did not exit 0".into())
    }
}

/// Times `ssh` (through `control`, if given) running `remote`: until it
/// exits, checking it printed exactly `expect`.
pub(crate) async fn ssh_run(
    ssh: &Ssh,
    control: Option<&Path>,
    remote: &str,
    expect: &[u8],
) -> Result<Duration, String> {
    let started = Instant::now();
    let stdout = ssh.output(control, remote).await?;
    let took = started.elapsed();
    if stdout == expect {
        Ok(took)
    } else {
        Err(format!("ssh {remote:?} printed {stdout:?}"))
    }
}

/// Times `ssh` through `control` running `echo x`: until the first stdout
/// byte arrives; then checks the whole output and the exit.
async fn ssh_first_byte(ssh: &Ssh, control: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = ssh
        .command(Some(control))
        .arg(ssh.destination())
        .arg("echo x")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("ssh: no stdout pipe")?;
    let mut out = vec![0u8; 16];
    let n = stdout
        .read(&mut out)
        .await
        .map_err(|e| format!("ssh stdout: {e}"))?;
    let took = started.elapsed();
    let mut rest = Vec::new();
    stdout
        .read_to_end(&mut rest)
        .await
        .map_err(|e| format!("ssh stdout: {e}"))?;
    out.truncate(n);
    out.extend_from_slice(&rest);
    let status = child.wait().await.map_err(|e| format!("ssh: {e}"))?;
    if status.success() && out == b"x\n" {
        Ok(took)
    } else {
        Err(format!("ssh `echo x` went wrong: {status}, {out:?}"))
    }
}

/// Times our `echo x` on the warm session: dispatch until the first stdout
/// byte is handed over; then checks the whole output and the exit.
async fn our_first_byte(client: &Client) -> Result<Duration, String> {
    let started = Instant::now();
    let mut run = client
        .exec(ExecSpec::new(["echo", "x"]))
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let mut first = None;
    let mut out = Vec::new();
    let mut status = None;
    while let Some(event) = run.next().await {
        match event {
            Event::Stdout(bytes) => {
                first.get_or_insert_with(|| started.elapsed());
                out.extend_from_slice(&bytes);
            }
            Event::Exited(s) => status = Some(s),
            Event::Failed(f) => return Err(format!("`echo x` failed: {f}")),
            Event::Started { .. } | Event::Stderr(_) | Event::Reconnecting | Event::Resumed => {}
        }
    }
    match (first, status) {
        (Some(took), Some(ExitStatus::Code(0))) if out == b"x\n" => Ok(took),
        other => Err(format!("`echo x` went wrong: {other:?}, {out:?}")),
    }
}

/// What the cold scenario runs: the `core-client` binary and its flags.
#[derive(Debug, Clone)]
pub struct ColdClient {
    /// The (release) `core-client` binary.
    pub binary: PathBuf,
    /// The relay URL.
    pub relay: String,
    /// The exec-server's public key.
    pub server: String,
    /// The client's private key file.
    pub key: PathBuf,
    /// A scratch directory for its records and local trace file.
    pub data_dir: PathBuf,
    /// The agent socket it looks for: one where no agent runs for the
    /// cold scenario, a running agent's for `cli warm`.
    pub agent_socket: PathBuf,
    /// Whether every run must go through the agent at `agent_socket`: a
    /// run that fell back to a session of its own (it says so on stderr)
    /// is an error, never measured as warm.
    pub through_agent: bool,
    /// Environment set for each run beyond the scenario's own (e.g.
    /// `REX_NO_SPAN_FORWARDING`).
    pub env: Vec<(&'static str, &'static str)>,
}

impl ColdClient {
    /// Times one `core-client exec ... -- true` (a new process: connect,
    /// handshake, exec), with its defaults: records kept, spans written
    /// to its local trace file.
    pub(crate) async fn run(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let out = self
            .exec(&["true"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let took = started.elapsed();
        if !out.status.success() || !out.stdout.is_empty() {
            return Err(format!(
                "core-client exec true went wrong: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if self.through_agent && !out.stderr.is_empty() {
            return Err(format!(
                "core-client exec true did not run through the agent: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(took)
    }

    /// Runs `core-client exec ... -- yes`, reads its output for a while,
    /// then sends it SIGINT as Ctrl-C does; the time from the signal to
    /// the CLI's exit (which must be 130: the remote `yes` died of
    /// SIGINT), and the output bytes that arrived after the signal.
    pub(crate) async fn ctrl_c(&self) -> Result<(Duration, u64), String> {
        let mut child = self
            .exec(&["yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let mut stdout = child.stdout.take().ok_or("core-client: no stdout pipe")?;
        let mut buf = vec![0u8; 64 * 1024];
        let (mut before, reading) = (0u64, Instant::now());
        while before == 0 || reading.elapsed() < Duration::from_millis(500) {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| format!("core-client stdout: {e}"))?;
            if n == 0 {
                return Err("`yes` ended before Ctrl-C".into());
            }
            before += n as u64;
        }
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("core-client: no pid")?;
        let signalled = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .map_err(|e| format!("SIGINT: {e}"))?;
        let mut after = 0u64;
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| format!("core-client stdout: {e}"))?;
            if n == 0 {
                break;
            }
            after += n as u64;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("core-client: {e}"))?;
        let took = signalled.elapsed();
        if status.code() != Some(130) {
            return Err(format!(
                "Ctrl-C during `yes`: the CLI ended with {status}, not 130"
            ));
        }
        Ok((took, after))
    }

    /// `core-client exec ... -- ARGV` with this client's settings: records
    /// kept, spans written to its local trace file, never the user's own
    /// configuration, known servers, agent or collector.
    fn exec(&self, argv: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args([
            "exec",
            "-n",
            "--relay",
            &self.relay,
            "--server",
            &self.server,
            "--key",
        ])
        .arg(&self.key)
        .arg("--")
        .args(argv)
        .env("REX_DATA_DIR", &self.data_dir)
        .env("REX_TRACE_FILE", self.data_dir.join("traces.jsonl"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("TRACEPARENT")
        .env("REX_AGENT_SOCKET", &self.agent_socket)
        // Never the user's own config file, known servers or agent.
        .env("XDG_CONFIG_HOME", self.data_dir.join("config"))
        .envs(self.env.iter().copied());
        cmd
    }

    /// Runs `core-client agent VERB` (`start`, `stop`) for the agent at
    /// `agent_socket`, sharing this client's data directory (as a user's
    /// agent and CLI share theirs: the agent keeps the records).
    pub fn agent(&self, verb: &str) -> Result<(), String> {
        let out = std::process::Command::new(&self.binary)
            .args(["agent", verb])
            .env("REX_AGENT_SOCKET", &self.agent_socket)
            .env("XDG_CONFIG_HOME", self.data_dir.join("config"))
            .env("REX_TRACE_FILE", self.data_dir.join("traces.jsonl"))
            .env("REX_DATA_DIR", &self.data_dir)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .output()
            .map_err(|e| format!("core-client agent {verb}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "core-client agent {verb}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The calls the agent at `agent_socket` has served in all (`agent
    /// status --json`).
    pub async fn agent_served(&self) -> Result<u64, String> {
        let out = tokio::process::Command::new(&self.binary)
            .args(["agent", "status", "--json"])
            .env("REX_AGENT_SOCKET", &self.agent_socket)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        if !out.status.success() {
            return Err(format!(
                "core-client agent status: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("core-client agent status --json: {e}"))?;
        let sessions = status["sessions"]
            .as_array()
            .ok_or("core-client agent status --json: no sessions")?;
        Ok(sessions
            .iter()
            .filter_map(|s| s["calls_served"].as_u64())
            .sum())
    }
}

fn comparison(
    id: &'static str,
    (ours, peer): (super::Series, super::Series),
    target: f64,
    note: String,
) -> Comparison {
    Comparison {
        id,
        unit: Unit::Micros,
        ours,
        peer: Some(peer),
        target: Target::AtMost(target),
        notes: vec![note],
    }
}

/// The rounds of the scenarios against ssh through a `ControlMaster`.
fn ssh_plan(rounds: usize) -> Plan {
    Plan {
        rounds,
        warmup: 10,
        iterations: 60,
    }
}

/// `floor`: a warm exec of `true` through the relay against the
/// exec-server spawning `true` locally. Target ≤ 1.15.
pub async fn floor(rounds: usize, client: &Client) -> Result<Comparison, String> {
    let plan = Plan {
        rounds,
        warmup: 50,
        iterations: 200,
    };
    let sides = latencies(
        plan,
        (
            "warm exec of `true` through the relay",
            "exec-server's local spawn of `true`",
        ),
        async || exec_true(client).await,
        async || local_true().await,
    )
    .await?;
    Ok(comparison(
        "floor",
        sides,
        1.15,
        format!("{} execs of each per round, alternating", plan.iterations),
    ))
}

/// `warm`: a warm exec of `true` through the relay against ssh through a
/// `ControlMaster`. Target ≤ 0.2.
pub async fn warm(
    rounds: usize,
    client: &Client,
    ssh: &Ssh,
    master: &Path,
) -> Result<Comparison, String> {
    let plan = ssh_plan(rounds);
    let sides = latencies(
        plan,
        (
            "warm exec of `true` through the relay",
            "ssh ControlMaster `true`",
        ),
        async || exec_true(client).await,
        async || ssh_run(ssh, Some(master), "true", b"").await,
    )
    .await?;
    Ok(comparison(
        "warm",
        sides,
        0.2,
        format!(
            "{} commands of each per round, alternating",
            plan.iterations
        ),
    ))
}

/// `first_byte`: dispatch to the first stdout byte of `echo x` at the
/// caller, against ssh through a `ControlMaster`. Target ≤ 0.2.
pub async fn first_byte(
    rounds: usize,
    client: &Client,
    ssh: &Ssh,
    master: &Path,
) -> Result<Comparison, String> {
    let plan = ssh_plan(rounds);
    let sides = latencies(
        plan,
        ("`echo x` on the warm session", "ssh ControlMaster `echo x`"),
        async || our_first_byte(client).await,
        async || ssh_first_byte(ssh, master).await,
    )
    .await?;
    Ok(comparison(
        "first byte",
        sides,
        0.2,
        "time to the first stdout byte at the caller; whole output checked".into(),
    ))
}

/// `cold`: `core-client exec ... -- true` as a new process against a fresh
/// `ssh localhost true`. Target ≤ 0.05.
pub async fn cold(rounds: usize, client: &ColdClient, ssh: &Ssh) -> Result<Comparison, String> {
    let plan = Plan {
        rounds,
        warmup: 3,
        iterations: 20,
    };
    let sides = latencies(
        plan,
        (
            "`core-client exec -- true` (new process)",
            "`ssh localhost true` (new connection)",
        ),
        async || client.run().await,
        async || ssh_run(ssh, None, "true", b"").await,
    )
    .await?;
    Ok(comparison(
        "cold",
        sides,
        0.05,
        format!(
            "{} runs of each per round; the client keeps records and writes its spans to its local trace file, as by default",
            plan.iterations
        ),
    ))
}

/// `cli warm`: `core-client exec ... -- true` as a new process through a
/// running agent (its warm session) against `ssh` through a
/// `ControlMaster`. Target ≤ 0.5. Every run is checked to have gone
/// through the agent: none may say it fell back, and the agent's count of
/// calls served must rise by exactly the number of runs.
pub async fn cli_warm(
    rounds: usize,
    client: &ColdClient,
    ssh: &Ssh,
    master: &Path,
) -> Result<Comparison, String> {
    if !client.through_agent {
        return Err("cli warm measures runs through the agent only".into());
    }
    let plan = Plan {
        rounds,
        warmup: 5,
        iterations: 40,
    };
    let served_before = client.agent_served().await?;
    let mut runs = 0u64;
    let sides = latencies(
        plan,
        (
            "`core-client exec -- true` through a running agent (new process)",
            "ssh ControlMaster `true` (new process)",
        ),
        async || {
            runs += 1;
            client.run().await
        },
        async || ssh_run(ssh, Some(master), "true", b"").await,
    )
    .await?;
    let served = client.agent_served().await? - served_before;
    if served != runs {
        return Err(format!(
            "the agent served {served} of the {runs} runs: the others ran without it"
        ));
    }
    Ok(comparison(
        "cli warm",
        sides,
        0.5,
        format!(
            "{} runs of each per round, each checked to have run through the agent (its calls served rose by exactly the runs); records are kept (by the agent, in the CLI's data directory) and the CLI and the agent write their spans to the local trace file, as by default",
            plan.iterations
        ),
    ))
}

/// How long the sessions sit idle (lost) before `idle first`'s command.
pub const IDLE: Duration = Duration::from_millis(400);

/// `idle first`: the first command after an idle period in which the
/// session was lost, with the warm policy on (every 100 ms) against off
/// (target ≤ 0.5), and against a call on a live session after the same
/// idle period (target ≤ 1.1: the policy should make it as fast as a
/// warm call).
pub async fn idle_first(
    rounds: usize,
    on: &Client,
    off: &Client,
    live: &Client,
) -> Result<[Comparison; 2], String> {
    let plan = Plan {
        rounds,
        warmup: 2,
        iterations: 15,
    };
    let after_idle = async |client: &Client| {
        client.close().await;
        tokio::time::sleep(IDLE).await;
        exec_true(client).await
    };
    let note = format!(
        "{} runs of each per round; before each run after idle, the session is closed and the client left idle for {} ms",
        plan.iterations,
        IDLE.as_millis()
    );
    let label = "first `true` after the session was lost and 400 ms idle, warm policy on (100 ms)";
    let against_off = latencies(
        plan,
        (label, "the same, warm policy off"),
        async || after_idle(on).await,
        async || after_idle(off).await,
    )
    .await?;
    // The live session idles as long (so both calls start from the same
    // idle machine): what differs is only that its session was never lost.
    let after_idle_live = async |client: &Client| {
        tokio::time::sleep(IDLE).await;
        exec_true(client).await
    };
    let against_warm = latencies(
        plan,
        (label, "`true` on a live session after the same 400 ms idle"),
        async || after_idle(on).await,
        async || after_idle_live(live).await,
    )
    .await?;
    Ok([
        comparison("idle first", against_off, 0.5, note.clone()),
        comparison("idle first vs warm", against_warm, 1.1, note),
    ])
}
