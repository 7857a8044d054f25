//! The local agent (`core-client agent`) with the three binaries as
//! processes: start, status and stop; execs through it behaving exactly as
//! without it (stdin, output, exit codes, signals, the login shell named by
//! the shell the exec-server started); `--no-agent`; a stale
//! socket; the agent killed in the middle of a command; another user
//! refused; a CLI that stops reading holding up its own call only; and the
//! agent as a hop of the trace, which still tiles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::binaries::{self, ProcStack};
use integration_tests::trace_check;
use telemetry::spans;

/// A bound on waits that only a broken build reaches.
const PATIENCE: Duration = Duration::from_secs(60);

/// The stack and its agent's socket (where `exec` commands look for it).
struct Fixture {
    stack: ProcStack,
    socket: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let stack = ProcStack::start(&[]).unwrap();
        let socket = stack.dir.path().join("agent").join("agent.sock");
        Self { stack, socket }
    }

    fn dir(&self) -> &Path {
        self.stack.dir.path()
    }

    /// `core-client agent ARGS` with this fixture's socket and files.
    fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binaries::path("core-client").unwrap());
        cmd.arg("agent")
            .args(args)
            .env("REX_AGENT_SOCKET", &self.socket)
            .env("REX_TRACE_FILE", self.dir().join("traces.jsonl"))
            .env("XDG_CONFIG_HOME", self.dir().join("config"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null());
        cmd
    }

    fn start_agent(&self) -> u32 {
        let out = self.agent(&["start", "--persist", "10m"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        self.status()["pid"].as_u64().unwrap() as u32
    }

    fn status(&self) -> serde_json::Value {
        let out = self.agent(&["status", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn served(&self) -> u64 {
        self.status()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["calls_served"].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.agent(&["stop"]).output();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn agent_start_status_and_stop() {
    let f = Fixture::new();
    let pid = f.start_agent();
    assert!(pid > 0);
    let status = f.status();
    assert_eq!(status["sessions"].as_array().unwrap().len(), 0);
    assert_eq!(status["max_sessions"], 16);
    assert_eq!(status["persist_ms"], 600_000);
    let mode = std::fs::metadata(&f.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is the user's alone");
    let dir_mode = std::fs::metadata(f.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    // A second start finds it running.
    let again = f.agent(&["start"]).output().unwrap();
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("already running"));
    // The table form names the socket and says nothing is held yet.
    let table = f.agent(&["status"]).output().unwrap();
    assert!(text(&table.stdout).contains(&format!("agent pid {pid}")));
    let stop = f.agent(&["stop"]).output().unwrap();
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert!(!f.socket.exists(), "the socket goes with the agent");
    let gone = f.agent(&["status"]).output().unwrap();
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(text(&gone.stderr).lines().count(), 1);
    assert!(text(&gone.stderr).contains("no agent is running"));
}

#[test]
fn exec_through_the_agent_is_exactly_exec_without_it() {
    let f = Fixture::new();
    f.start_agent();
    // Stdin and output, byte-exact, and the exit code.
    let input = random_bytes(3 * 1024 * 1024 + 11);
    let out = binaries::run_with_stdin(
        f.stack.exec(&["sh", "-c", "cat; echo err >&2; exit 7"]),
        &input,
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(out.stdout == input, "stdout differs");
    assert_eq!(out.stderr, b"err\n");
    // A signal's death, a missing program, a bad directory.
    let out = f
        .stack
        .exec(&["sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(143));
    let out = f.stack.exec(&["no-such-program-here"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    // All through one warm session the agent holds.
    let status = f.status();
    let sessions = status["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["calls_served"], 3);
    assert_eq!(sessions[0]["warm"]["enabled"], true);
    // --no-agent runs without it.
    let out = f
        .stack
        .exec_with(&["--no-agent"], &["echo", "alone"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"alone\n");
    assert_eq!(f.served(), 3);
}

#[test]
fn the_login_shell_through_the_agent_is_named_as_without_it() {
    let f = Fixture::new();
    f.start_agent();
    let shell = exec_server::shell::LoginShell::of_this_user();
    // No command: the login shell, reading the script from its stdin.
    let out = binaries::run_with_stdin(
        f.stack.exec_with(&["--print-trace-id"], &[]),
        b"echo \"zero=$0\"; exit 6\n",
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let zero = format!("zero={}", shell.argv0().into_string().unwrap());
    assert!(
        text(&out.stdout).lines().any(|l| l == zero),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(f.served(), 1, "it went through the agent");
    // The CLI's dispatch is named by the shell the exec-server started.
    let id = binaries::printed_trace_id(&out).unwrap();
    let spans = trace_check::from_trace_file(&f.dir().join("traces.jsonl"), &id);
    for name in [spans::TOOL_DISPATCH, spans::AGENT_DISPATCH] {
        let dispatch = trace_check::one(&spans, name);
        assert_eq!(
            dispatch.attr_str("process.executable.name"),
            Some(shell.program().as_str()),
            "{name}"
        );
        assert_eq!(dispatch.attr_bool("rex.login_shell"), Some(true), "{name}");
    }
}

#[test]
fn the_agent_is_a_hop_of_the_trace_and_the_stages_still_tile() {
    let f = Fixture::new();
    f.start_agent();
    // The first call opens the agent's session; the second finds it warm.
    for _ in 0..2 {
        let out = f
            .stack
            .exec_with(&["--print-trace-id"], &["echo", "traced"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = f
        .stack
        .exec_with(&["--print-trace-id"], &["echo", "traced"])
        .output()
        .unwrap();
    let id = binaries::printed_trace_id(&out).unwrap();
    // The agent wrote its spans before the CLI exited.
    let spans = trace_check::from_trace_file(&f.dir().join("traces.jsonl"), &id);
    let run = trace_check::one(&spans, spans::CLI_RUN);
    assert_eq!(trace_check::roots(&spans).len(), 1);
    assert_eq!(trace_check::roots(&spans)[0].span_id, run.span_id);
    trace_check::assert_cli_run_tiles(&spans);
    let dispatch = spans
        .iter()
        .find(|s| s.name == spans::TOOL_DISPATCH && s.service == "core-client")
        .unwrap();
    trace_check::assert_path_tiles(
        &spans,
        dispatch,
        trace_check::RemoteClock::Placed,
        trace_check::AGENT_PATH,
    );
    let hop = trace_check::one(&spans, spans::AGENT_DISPATCH);
    assert_eq!(hop.parent_span_id.as_ref(), Some(&dispatch.span_id));
    // Inside the hop, the agent's stages tile its call as the CLI's do.
    trace_check::assert_path_tiles(
        &spans,
        hop,
        trace_check::RemoteClock::Placed,
        &trace_check::path_of("core-client-agent"),
    );
    let acquire = spans
        .iter()
        .find(|s| s.name == spans::SESSION_ACQUIRE)
        .unwrap();
    assert_eq!(acquire.service, "core-client-agent");
    assert_eq!(acquire.attr_str("rex.session.warmth"), Some("warm"));
}

#[test]
fn a_stale_socket_is_removed_and_the_command_runs_without_it() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.socket.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        f.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // A socket nobody listens on: an agent that died.
    drop(std::os::unix::net::UnixListener::bind(&f.socket).unwrap());
    assert!(f.socket.exists());
    let out = f.stack.exec(&["echo", "still"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"still\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("stale socket"), "{err}");
    assert!(!f.socket.exists(), "removed");
    // And no line at all when no agent runs.
    let out = f.stack.exec(&["echo", "quiet"]).output().unwrap();
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn killing_the_agent_mid_command_fails_it_with_one_line_and_255() {
    let f = Fixture::new();
    let pid = f.start_agent();
    let child = f
        .stack
        .exec(&["sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while f.status()["calls_running"] != 1 {
        assert!(Instant::now() < deadline, "the call never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("agent"), "{err}");
}

#[test]
fn a_cli_that_stops_reading_holds_up_its_own_call_only() {
    let f = Fixture::new();
    f.start_agent();
    // 64 MiB to a CLI whose stdout nobody reads for now.
    let mut flood = f
        .stack
        .exec(&["head", "-c", "67108864", "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while f.status()["calls_running"] != 1 {
        assert!(Instant::now() < deadline, "the flood never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Other commands through the same agent and session run meanwhile.
    for i in 0..3 {
        let out = f
            .stack
            .exec(&["echo", &format!("other {i}")])
            .output()
            .unwrap();
        assert_eq!(out.stdout, format!("other {i}\n").into_bytes());
    }
    assert_eq!(f.status()["sessions"].as_array().unwrap().len(), 1);
    // The flood's output was held back, not lost.
    let mut stdout = flood.stdout.take().unwrap();
    let mut n = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = stdout.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        assert!(buf[..k].iter().all(|b| *b == 0));
        n += k;
    }
    assert_eq!(n, 64 * 1024 * 1024);
    assert!(wait_bounded(flood).status.success());
}

#[test]
fn another_users_connection_is_refused() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to run a command as a second user");
        return;
    }
    let f = Fixture::new();
    f.start_agent();
    let as_nobody = |f: &Fixture| {
        let mut cmd = f.agent(&["status"]);
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
        cmd.env("XDG_CONFIG_HOME", "/nonexistent").output().unwrap()
    };
    // The directory and socket keep others out...
    let out = as_nobody(&f);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // ...and with them opened up, the agent refuses by the peer's uid.
    let dir = f.socket.parent().unwrap();
    std::fs::set_permissions(f.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&f.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = as_nobody(&f);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no agent is running"));
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(
        log.contains("refused a connection from another user"),
        "{log}"
    );
    // The agent's own user is still served.
    assert!(f.status()["pid"].as_u64().is_some());
}

/// Waits for a child, killing it if it outlives [`PATIENCE`].
fn wait_bounded(mut child: std::process::Child) -> Output {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the command did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_agent_stops_when_idle_for_its_persist_time() {
    let f = Fixture::new();
    let out = f.agent(&["start", "--persist", "1s"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = f.stack.exec(&["echo", "once"]).output().unwrap();
    assert_eq!(out.stdout, b"once\n");
    let deadline = Instant::now() + PATIENCE;
    while f.socket.exists() {
        assert!(Instant::now() < deadline, "the agent never idled out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = f.agent(&["status"]).output().unwrap();
    assert_eq!(gone.status.code(), Some(1));
}

#[test]
fn the_agent_survives_a_relay_restart() {
    let mut f = Fixture::new();
    f.start_agent();
    let out = f.stack.exec(&["echo", "before"]).output().unwrap();
    assert_eq!(out.stdout, b"before\n");
    // The relay goes and comes back on its address; the exec-server
    // registers again.
    let addr = f.stack.relay_url.trim_start_matches("http://").to_owned();
    let _ = f.stack.relay.child.kill();
    let _ = f.stack.relay.child.wait();
    f.stack.relay = binaries::spawn("relay", &["--listen", &addr], &[]).unwrap();
    f.stack
        .server
        .wait_for_line("registered with relay", PATIENCE)
        .unwrap();
    // The agent's session died with the relay: the next call opens a new
    // one, through the same agent.
    let out = f.stack.exec(&["echo", "after"]).output().unwrap();
    assert_eq!(out.stdout, b"after\n", "{}", text(&out.stderr));
    assert_eq!(f.served(), 2);
}
