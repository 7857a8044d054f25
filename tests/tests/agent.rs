//! The local agent (`core-client agent`) with the three binaries as
//! processes: start, status and stop; execs through it behaving exactly as
//! without it (stdin, output, exit codes, signals, the login shell named by
//! the shell the exec-server started); `--no-agent`; a stale socket, and a
//! busy agent's socket left alone; the agent killed in the middle of a
//! command; another user refused; a CLI that stops reading holding up its
//! own call only; its bounds (sessions, connections); the config file's
//! `warm` option (servers warm from the agent's start) and `agent warm`;
//! recovering from a relay restart by its next warm; the agent as a hop
//! of the trace, which still tiles; and a CLI that exports over OTLP
//! through it (on one thread) sending its spans before it exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use integration_tests::binaries::{self, ProcStack};
use integration_tests::otlp::OtlpReceiver;
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

    /// Where the CLIs keep their records (`binaries::core_client`'s).
    fn data_dir(&self) -> PathBuf {
        self.stack.client_key.parent().unwrap().join("client-data")
    }

    /// The command records in `dir`, newest first (the agent's barrier
    /// passed first: it saves a call's record after the call's exit).
    fn records_in(&self, dir: &Path) -> Vec<metadata::CommandRecord> {
        self.flushed();
        metadata::Store::open(&dir.join("metadata.sqlite3"))
            .unwrap()
            .commands(100)
            .unwrap()
    }

    /// `core-client agent ARGS` with this fixture's socket and files.
    fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binaries::path("core-client").unwrap());
        cmd.arg("agent")
            .args(args)
            .env("REX_AGENT_SOCKET", &self.socket)
            .env("REX_TRACE_FILE", self.dir().join("traces.jsonl"))
            // The CLIs' data directory: the agent keeps their records.
            .env("REX_DATA_DIR", self.data_dir())
            .env("XDG_CONFIG_HOME", self.dir().join("config"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null());
        cmd
    }

    fn start_agent(&self) -> u32 {
        self.start_agent_with(&[])
    }

    /// `agent start --persist 10m ARGS`: its pid.
    fn start_agent_with(&self, args: &[&str]) -> u32 {
        let out = self
            .agent(&["start", "--persist", "10m"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        self.status()["pid"].as_u64().unwrap() as u32
    }

    /// Writes the config file `exec NAME` and the agent read.
    fn write_config(&self, config: &str) {
        let dir = self.dir().join("config").join("rex");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
    }

    /// A `[servers.NAME]` table for this stack's exec-server through
    /// `relay`, with `warm` if given.
    fn server_table(&self, name: &str, relay: &str, warm: Option<&str>) -> String {
        let mut table = format!(
            "[servers.{name}]\nrelay = \"{relay}\"\nserver = \"{}\"\nkey = \"{}\"\n",
            self.stack.server_pub,
            self.stack.client_key.display()
        );
        if let Some(w) = warm {
            table.push_str(&format!("warm = \"{w}\"\n"));
        }
        table
    }

    /// `core-client ARGS` in this fixture's sandbox (its config, trace
    /// file and agent).
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = binaries::core_client(self.dir()).unwrap();
        cmd.args(args);
        cmd
    }

    /// `core-client exec` through `relay` (another spelling of the stack's
    /// relay is another route to the agent).
    fn exec_via(&self, relay: &str, argv: &[&str]) -> Command {
        binaries::exec_command(
            relay,
            &self.stack.server_pub,
            &self.stack.client_key,
            &[],
            argv,
        )
        .unwrap()
    }

    /// The session held for `target`, from `agent status --json`.
    fn session(&self, target: &str) -> Option<serde_json::Value> {
        self.status()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["target"] == target)
            .cloned()
    }

    /// `agent flush`: everything the agent took is written.
    fn flushed(&self) {
        let out = self.agent(&["flush"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// Every span the CLI and the agent wrote so far (the agent's barrier
    /// passed first).
    fn spans(&self) -> Vec<integration_tests::otlp::RecordedSpan> {
        self.flushed();
        trace_check::all_from_trace_file(&self.dir().join("traces.jsonl"))
    }

    /// Trace `id`'s spans (the agent's barrier passed first).
    fn trace(&self, id: &str) -> Vec<integration_tests::otlp::RecordedSpan> {
        self.flushed();
        trace_check::from_trace_file(&self.dir().join("traces.jsonl"), id)
    }

    /// The `session.warm` spans of the agent made on `trigger`.
    fn warms(&self, trigger: &str) -> Vec<integration_tests::otlp::RecordedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == spans::SESSION_WARM && s.service == "core-client-agent")
            .filter(|s| s.attr_str("rex.warm.trigger") == Some(trigger))
            .collect()
    }

    /// `rex.session.warmth` of the agent's `session.acquire` for a command
    /// run with `--print-trace-id`.
    fn warmth_of(&self, out: &Output) -> String {
        let id = binaries::printed_trace_id(out).unwrap();
        let spans = self.trace(&id);
        let acquire = trace_check::one(&spans, spans::SESSION_ACQUIRE);
        assert_eq!(acquire.service, "core-client-agent", "through the agent");
        acquire.attr_str("rex.session.warmth").unwrap().to_owned()
    }

    /// Waits (bounded) until the agent runs exactly one call.
    fn until_one_call_runs(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.status()["calls_running"] != 1 {
            assert!(Instant::now() < deadline, "the call never started");
            std::thread::sleep(Duration::from_millis(50));
        }
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
    // Its barrier says so too; the readers that pass it run on.
    let flush = f.agent(&["flush"]).output().unwrap();
    assert_eq!(flush.status.code(), Some(1));
    assert!(
        text(&flush.stderr).contains("no agent is running"),
        "{}",
        text(&flush.stderr)
    );
    let history = f.cli(&["history"]).output().unwrap();
    let said = text(&history.stderr);
    assert!(
        said.contains("no commands have been recorded yet"),
        "{said}"
    );
    assert!(!said.contains("agent"), "{said}");
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
    let spans = f.trace(&id);
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
    // The agent writes its spans once it has handed the exit on, off the
    // CLI's path; `trace show` passes its barrier first.
    let shown = f.cli(&["trace", "show", &id]).output().unwrap();
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown = text(&shown.stdout);
    assert!(
        shown.contains(spans::AGENT_DISPATCH) && shown.contains("core-client-agent"),
        "{shown}"
    );
    let spans = f.trace(&id);
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
        &trace_check::path_of(&spans, "core-client-agent"),
    );
    let acquire = spans
        .iter()
        .find(|s| s.name == spans::SESSION_ACQUIRE)
        .unwrap();
    assert_eq!(acquire.service, "core-client-agent");
    assert_eq!(acquire.attr_str("rex.session.warmth"), Some("warm"));
}

#[test]
fn a_cli_exporting_over_otlp_through_the_agent_sends_its_spans_before_it_exits() {
    let f = Fixture::new();
    f.start_agent();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rx = rt.block_on(OtlpReceiver::start()).unwrap();
    // Over gRPC and over HTTP: both clients live on the CLI's one thread,
    // which must go on running them while the last spans leave.
    for (protocol, endpoint) in [
        ("grpc", rx.endpoint()),
        ("http/protobuf", rx.http_endpoint()),
    ] {
        let out = f
            .stack
            .exec_with(&["--print-trace-id"], &["true"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .output()
            .unwrap();
        assert!(out.status.success(), "{protocol}: {}", text(&out.stderr));
        let id = binaries::printed_trace_id(&out).unwrap();
        // Received by the time the CLI exited: `cli.run` leaves last.
        let cli: Vec<String> = rx
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == id && s.service == "core-client")
            .map(|s| s.name)
            .collect();
        for name in [
            spans::CLI_RUN,
            spans::CLI_FLUSH,
            spans::TOOL_DISPATCH,
            spans::AGENT_REQUEST,
        ] {
            assert!(
                cli.iter().any(|n| n == name),
                "{protocol}: {name} in {cli:?}"
            );
        }
    }
    assert_eq!(f.served(), 2, "both went through the agent");
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
fn the_agent_keeps_the_records_of_the_commands_run_through_it() {
    let f = Fixture::new();
    f.start_agent();
    let out = f
        .stack
        .exec_with(&["--print-trace-id"], &["sh", "-c", "echo out; exit 4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(f.served(), 1, "it went through the agent");
    let id = binaries::printed_trace_id(&out).unwrap();
    // Saved with the command's outcome (seen after `agent flush`, the
    // barrier `history` passes too); made by the agent (the record's span
    // is the agent's dispatch), so the CLI wrote nothing of its own.
    let records = f.records_in(&f.data_dir());
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.program, "sh");
    assert_eq!(record.args, None, "arguments only with --record-args");
    assert_eq!(record.exit, Some(metadata::Exit::Code(4)));
    assert_eq!(record.progress, metadata::Progress::Finished);
    assert_eq!(record.stdout_bytes, 4);
    assert_eq!(record.trace.trace_id, id);
    let spans = f.trace(&id);
    let dispatch = trace_check::one(&spans, spans::AGENT_DISPATCH);
    assert_eq!(record.trace.span_id, dispatch.span_id);

    // --record-args is passed on; --no-records records nothing.
    let out = f
        .stack
        .exec_with(&["--record-args"], &["echo", "a", "b"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = f
        .stack
        .exec_with(&["--no-records"], &["true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(f.served(), 3);
    let records = f.records_in(&f.data_dir());
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0].program, "echo");
    assert_eq!(records[0].args, Some(vec!["a".to_owned(), "b".to_owned()]));
}

#[test]
fn a_command_whose_cli_is_killed_still_has_its_outcome_recorded_by_the_agent() {
    let f = Fixture::new();
    f.start_agent();
    let mut child = f
        .stack
        .exec(&["sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    f.until_one_call_runs();
    // The agent counts a call from its claim on the session, before the
    // command starts: a CLI killed that early leaves nothing to record.
    // Its command is running once its record says so.
    let deadline = Instant::now() + PATIENCE;
    while !f
        .records_in(&f.data_dir())
        .iter()
        .any(|r| r.progress == metadata::Progress::Running)
    {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The agent cancels the call and records how it ended.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let records = f.records_in(&f.data_dir());
        if let [record] = records.as_slice()
            && record.progress == metadata::Progress::Finished
        {
            assert_eq!(record.program, "sleep");
            assert!(
                !matches!(record.exit, Some(metadata::Exit::Code(0)) | None),
                "{record:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never recorded: {records:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_cli_with_another_data_directory_keeps_its_own_records() {
    let f = Fixture::new();
    f.start_agent();
    let other = f.dir().join("other-data");
    let out = f
        .stack
        .exec(&["true"])
        .env("REX_DATA_DIR", &other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(f.served(), 1, "it went through the agent");
    let records = f.records_in(&other);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].exit, Some(metadata::Exit::Code(0)));
    assert!(
        !f.data_dir().join("metadata.sqlite3").exists(),
        "the agent recorded a command it was not asked to"
    );
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
    f.until_one_call_runs();
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

/// The stack's relay by another name: another route for the agent.
fn other_spelling(relay_url: &str) -> String {
    relay_url.replace("127.0.0.1", "localhost")
}

/// A child whose stdout lines arrive on a channel (read by a thread of its
/// own), so that a test can wait for one without hanging.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line of its stdout.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("no line from the command")
    }

    /// Its exit code and the rest of its stdout (lines) and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the command did not end");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let rest = self.lines.iter().collect();
        (status.code(), rest, err)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

/// Polls `agent status --json` until `wanted` accepts it.
fn until_status(f: &Fixture, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = f.status();
        if wanted(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never got there: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn persist_is_passed_on_exactly() {
    let f = Fixture::new();
    let out = f
        .agent(&["start", "--persist", "90500ms"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(f.status()["persist_ms"], 90_500, "not rounded to seconds");
}

#[test]
fn servers_with_a_warm_interval_are_warm_from_the_agents_start() {
    let f = Fixture::new();
    let relay = f.stack.relay_url.clone();
    let other = other_spelling(&relay);
    f.write_config(&format!(
        "{}{}",
        f.server_table("box", &relay, Some("1h")),
        f.server_table("quiet", &other, Some("off"))
    ));
    let out = f.agent(&["start", "--persist", "10m"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("keeping 1 server warm"),
        "{}",
        text(&out.stdout)
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // `box` is held and had its first warm before `agent start` returned;
    // `quiet` is not held.
    let status = f.status();
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1);
    let held = f.session(&relay).expect("box held from the start");
    assert_eq!(held["warm"]["enabled"], true);
    assert_eq!(held["warm"]["interval_ms"], 3_600_000);
    assert_eq!(held["warm"]["last_outcome"], "ok");
    assert_eq!(held["calls_served"], 0);
    let last = held["warm"]["last_warm_at_ms"].as_u64().unwrap();
    assert_eq!(held["warm"]["next_warm_at_ms"], last + 3_600_000);
    // The first command to it finds its session warm.
    let out = f
        .cli(&["exec", "--print-trace-id", "box", "--", "echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n", "{}", text(&out.stderr));
    assert_eq!(f.warmth_of(&out), "warm");
    // `quiet` is held from its first command, and not warmed on a timer.
    let out = f
        .cli(&["exec", "quiet", "--", "echo", "q"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"q\n", "{}", text(&out.stderr));
    let quiet = f.session(&other).expect("held once used");
    assert_eq!(quiet["warm"]["enabled"], false);
    assert_eq!(quiet["warm"]["next_warm_at_ms"], serde_json::Value::Null);
    assert_eq!(quiet["calls_served"], 1);
    // A command's `warm` option changes the session's policy.
    let out = f
        .cli(&["exec", "-o", "warm=2h", "quiet", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let quiet = f.session(&other).unwrap();
    assert_eq!(quiet["warm"]["enabled"], true);
    assert_eq!(quiet["warm"]["interval_ms"], 7_200_000);
}

#[test]
fn agent_warm_warms_now_and_starts_the_cycle_again() {
    let f = Fixture::new();
    let relay = f.stack.relay_url.clone();
    f.write_config(&f.server_table("box", &relay, Some("1h")));
    f.start_agent();
    let before = f.session(&relay).unwrap();
    let first = before["warm"]["last_warm_at_ms"].as_u64().unwrap();
    assert!(f.warms("manual").is_empty());
    // By name.
    let out = f.cli(&["agent", "warm", "box"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with(&format!("box via {relay}: warm (")),
        "{said}"
    );
    assert!(said.contains("; next warm in "), "{said}");
    // One more warm, a ping of the session held, and the cycle counts from
    // it.
    let manual = f.warms("manual");
    assert_eq!(manual.len(), 1);
    assert_eq!(manual[0].attr_str("rex.warm.kind"), Some("ping"));
    let after = f.session(&relay).unwrap();
    let last = after["warm"]["last_warm_at_ms"].as_u64().unwrap();
    assert!(last >= first);
    assert_eq!(after["warm"]["next_warm_at_ms"], last + 3_600_000);
    assert_eq!(after["warm"]["last_outcome"], "ok");
    // With no name: every session held.
    let out = f.cli(&["agent", "warm"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert_eq!(f.warms("manual").len(), 2);
    // A server not held yet, named by flags: held now, its session
    // established by the warm.
    let other = other_spelling(&relay);
    let key = f.stack.client_key.display().to_string();
    let out = f
        .cli(&[
            "agent",
            "warm",
            "--relay",
            &other,
            "--server",
            &f.stack.server_pub,
            "--key",
            &key,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manual = f.warms("manual");
    assert_eq!(manual.len(), 3);
    assert!(
        manual
            .iter()
            .any(|w| w.attr_str("rex.warm.kind") == Some("establish"))
    );
    let held = f.session(&other).expect("held by the warm");
    assert_eq!(held["warm"]["last_outcome"], "ok");
    assert_eq!(held["calls_served"], 0);
    // A warm that fails says why and exits 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = f
        .cli(&[
            "agent",
            "warm",
            "--relay",
            &nowhere,
            "--server",
            &f.stack.server_pub,
            "--key",
            &key,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("failed: cannot reach"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn at_most_max_sessions_are_held() {
    let f = Fixture::new();
    f.start_agent_with(&["--max-sessions", "1"]);
    let a = f.stack.relay_url.clone();
    let b = other_spelling(&a);
    let out = f.exec_via(&a, &["echo", "a"]).output().unwrap();
    assert_eq!(out.stdout, b"a\n", "{}", text(&out.stderr));
    assert!(f.session(&a).is_some());
    // A new route takes the place of the idle one used least recently.
    let out = f.exec_via(&b, &["echo", "b"]).output().unwrap();
    assert_eq!(out.stdout, b"b\n", "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let status = f.status();
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1);
    assert!(f.session(&a).is_none(), "dropped");
    assert_eq!(f.session(&b).unwrap()["calls_served"], 1);
    // With its one session running a command, a command for another route
    // runs without the agent, saying so in one line.
    let long = Running::spawn(f.exec_via(&b, &["sh", "-c", "echo ready; read x; echo $x"]));
    assert_eq!(long.line(), "ready");
    let out = f.exec_via(&a, &["echo", "around"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"around\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the agent is busy") && err.contains("running without the agent"),
        "{err}"
    );
    assert!(f.socket.exists());
    let status = f.status();
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(status["calls_running"], 1);
    let mut long = long;
    long.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"done\n")
        .unwrap();
    let (code, rest, err) = long.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rest, ["done"]);
    assert_eq!(f.session(&b).unwrap()["calls_served"], 2);
}

#[test]
fn a_busy_agent_keeps_its_socket_and_the_command_runs_without_it() {
    let f = Fixture::new();
    f.start_agent_with(&["--max-connections", "1"]);
    let long = Running::spawn(f.stack.exec(&["sh", "-c", "echo ready; read x; echo $x"]));
    assert_eq!(long.line(), "ready");
    // The one connection is taken: the next command runs without the
    // agent, and the agent's socket stays.
    let out = f.stack.exec(&["echo", "second"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"second\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("busy"), "{err}");
    assert!(!err.contains("stale"), "{err}");
    assert!(f.socket.exists(), "a live agent's socket is never removed");
    let status = f.agent(&["status"]).output().unwrap();
    assert_eq!(status.status.code(), Some(1));
    assert!(
        text(&status.stderr).contains("busy"),
        "{}",
        text(&status.stderr)
    );
    let mut long = long;
    long.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"first\n")
        .unwrap();
    let (code, rest, err) = long.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rest, ["first"]);
    // Free again: through the agent. A call's place is given back as it
    // ends (before the agent writes its spans and record), so the status
    // asked for at once is answered.
    let out = f.stack.exec(&["echo", "third"]).output().unwrap();
    assert_eq!(out.stdout, b"third\n");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(f.served(), 2);
}

#[test]
fn signals_reach_the_remote_command_through_the_agent_as_without_it() {
    use nix::sys::signal::Signal;
    let f = Fixture::new();
    f.start_agent();
    let trap = "trap 'echo caught; exit 7' TERM; echo ready; sleep 60 >/dev/null 2>&1 & wait";
    for (flags, through) in [(&[][..], true), (&["--no-agent"][..], false)] {
        let served = if through { f.served() } else { 0 };
        // Ctrl-C: the remote command dies of it, and so the CLI exits 130.
        let run = Running::spawn(
            f.stack
                .exec_with(flags, &["sh", "-c", "echo ready; exec sleep 60"]),
        );
        assert_eq!(run.line(), "ready");
        run.signal(Signal::SIGINT);
        let (code, rest, err) = run.finish();
        assert_eq!(code, Some(130), "through the agent: {through}: {err}");
        assert!(rest.is_empty());
        // SIGTERM reaches the command's own handler: its output and its
        // exit status come back.
        let run = Running::spawn(f.stack.exec_with(flags, &["sh", "-c", trap]));
        assert_eq!(run.line(), "ready");
        run.signal(Signal::SIGTERM);
        let (code, rest, err) = run.finish();
        assert_eq!(code, Some(7), "through the agent: {through}: {err}");
        assert_eq!(rest, ["caught"]);
        assert!(err.is_empty(), "{err}");
        if through {
            assert_eq!(f.served(), served + 2, "both ran through the agent");
        }
    }
}

#[test]
fn the_agent_recovers_by_its_next_warm_after_a_relay_restart() {
    let mut f = Fixture::new();
    f.start_agent_with(&["--warm-interval", "200ms"]);
    let out = f.stack.exec(&["echo", "before"]).output().unwrap();
    assert_eq!(out.stdout, b"before\n");
    let addr = f.stack.relay_url.trim_start_matches("http://").to_owned();
    let _ = f.stack.relay.child.kill();
    let _ = f.stack.relay.child.wait();
    let restarted = unix_ms_now();
    f.stack.relay = binaries::spawn("relay", &["--listen", &addr], &[]).unwrap();
    f.stack
        .server
        .wait_for_line("registered with relay", PATIENCE)
        .unwrap();
    // With no command, a warm after the restart brings the session back.
    let relay = f.stack.relay_url.clone();
    until_status(&f, |s| {
        s["sessions"].as_array().unwrap().iter().any(|h| {
            h["target"] == relay.as_str()
                && h["warm"]["last_warm_at_ms"]
                    .as_u64()
                    .is_some_and(|t| t > restarted)
                && h["warm"]["last_outcome"] == "ok"
        })
    });
    // The next command finds it warm.
    let out = f
        .stack
        .exec_with(&["--print-trace-id"], &["echo", "after"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"after\n", "{}", text(&out.stderr));
    assert_eq!(f.warmth_of(&out), "warm");
    assert_eq!(f.served(), 2);
}
