//! Commands survive a lost link: the relay is killed (SIGKILL) in the
//! middle of commands and comes back, one of two relays dies for good, or
//! only the exec-server's own link drops; every command goes on where it
//! stopped, every byte exactly once (stdin too, written without pause
//! through the outage), and ends with its real exit status; the outage is
//! in its trace. What a session keeps while its link is down stays within
//! its bounds, the commands waiting instead. And the ways it can still end
//! clearly: `--no-resume`, or a relay that does not come back in time. A
//! terminal whose link is lost for good (no resume within the
//! exec-server's grace) is hung up: its session leader gets SIGHUP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use integration_tests::binaries::{self, ProcStack};
use integration_tests::trace_check;
use telemetry::spans;

/// Bounds every wait here (never a measure of speed).
const PATIENCE: Duration = Duration::from_secs(120);

/// A command that writes numbered lines for a few seconds, then exits 7:
/// its output is known exactly, and a relay killed meanwhile lands mid
/// stream.
const PACED: &str = "i=0; while [ $i -lt 80 ]; do seq $((i*4000)) $((i*4000+3999)); \
                     i=$((i+1)); sleep 0.05; done; exit 7";

fn expected() -> Vec<u8> {
    let out = Command::new("sh").args(["-c", PACED]).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    out.stdout
}

/// Runs `cmd`, reading its stdout as it comes; `started` hears once some
/// output has arrived.
fn run_watched(mut cmd: Command) -> (mpsc::Receiver<()>, std::thread::JoinHandle<Output>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut told = false;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    if !told && all.len() > 100_000 {
                        told = true;
                        let _ = tx.send(());
                    }
                }
            }
        }
        let mut out = child.wait_with_output().unwrap();
        out.stdout = all;
        out
    });
    (rx, handle)
}

/// Kills the relay (no goodbye to anyone) and starts it again on its
/// address once `down` has passed.
fn bounce_relay(stack: &mut ProcStack, down: Duration) {
    stack.kill_relay();
    std::thread::sleep(down);
    stack.start_relay_again().unwrap();
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command that prints numbered lines (blocks of 1000) until the file
/// `first` exists, then a line `MARK`, then more blocks until `second`
/// exists, and exits 7: the test decides when it ends, so the outage is
/// over (and seen to be) while it still runs.
fn until_flags(first: &std::path::Path, second: &std::path::Path) -> String {
    let block = "seq $((i*1000)) $((i*1000+999)); i=$((i+1)); sleep 0.02";
    format!(
        "i=0; while [ ! -e '{}' ]; do {block}; done; echo MARK; \
         while [ ! -e '{}' ]; do {block}; done; sleep 0.1; exit 7",
        first.display(),
        second.display()
    )
}

/// Checks that `out` is what [`until_flags`] prints: every number from 0
/// once and in order, in whole blocks, with one `MARK` between two.
fn assert_flag_output(out: &[u8]) {
    let text = String::from_utf8(out.to_vec()).expect("the output is text");
    let mut next = 0u64;
    let mut marks = 0;
    for line in text.lines() {
        if line == "MARK" {
            marks += 1;
            assert_eq!(next % 1000, 0, "MARK inside a block");
            continue;
        }
        assert_eq!(line, next.to_string(), "line {next} is missing or repeated");
        next += 1;
    }
    assert_eq!(marks, 1);
    assert_eq!(next % 1000, 0, "a block was cut short");
    assert!(text.ends_with('\n'));
}

/// Runs `cmd`, reading its stdout as it comes; `lines` hears each line.
fn run_lines(mut cmd: Command) -> (mpsc::Receiver<String>, std::thread::JoinHandle<Output>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut reader = std::io::BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match std::io::BufRead::read_until(&mut reader, b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    all.extend_from_slice(&line);
                    let _ = tx.send(text(&line).trim_end().to_owned());
                }
            }
        }
        let mut out = child.wait_with_output().unwrap();
        out.stdout = all;
        out
    });
    (rx, handle)
}

#[test]
fn a_relay_killed_mid_command_costs_a_pause_not_the_command() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let (first, second) = (
        stack.dir.path().join("first"),
        stack.dir.path().join("second"),
    );
    let traces = stack.dir.path().join("traces.jsonl");
    let script = until_flags(&first, &second);
    let cmd = stack.exec_with(&["--print-trace-id", "--no-agent"], &["sh", "-c", &script]);
    let (lines, done) = run_lines(cmd);
    // Output flows; then the relay dies and comes back.
    for _ in 0..5000 {
        lines.recv_timeout(PATIENCE).unwrap();
    }
    bounce_relay(&mut stack, Duration::from_millis(300));
    // The exec-server took the session back; what the command prints from
    // now on comes after the resume's answer, on the new link.
    stack
        .server
        .wait_for_line("was resumed over a new link", PATIENCE)
        .unwrap();
    std::fs::write(&first, b"").unwrap();
    while lines.recv_timeout(PATIENCE).unwrap() != "MARK" {}
    std::fs::write(&second, b"").unwrap();
    let out = done.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert_flag_output(&out.stdout);

    // The outage is in the command's trace, under its dispatch, with how
    // it came back; the dispatch still tiles, and the outage lies within
    // the stage the command was in (running), its phases tiling it.
    let id = binaries::printed_trace_id(&out).unwrap();
    let spans = trace_check::from_trace_file(&traces, &id);
    let dispatch = trace_check::one(&spans, spans::TOOL_DISPATCH);
    trace_check::assert_tiles(&spans, dispatch, trace_check::RemoteClock::Placed);
    let reattach = trace_check::one(&spans, spans::SESSION_REATTACH);
    assert_eq!(
        reattach.parent_span_id.as_deref(),
        Some(dispatch.span_id.as_str())
    );
    assert_eq!(
        trace_check::stage_holding(&spans, reattach),
        spans::RPC_SERVER_EXEC
    );
    trace_check::assert_children_tile(&spans, reattach);
    for key in [
        "rex.replayed.bytes",
        "rex.resume.attempts",
        "rex.resume.via",
    ] {
        assert!(reattach.attributes.contains_key(key), "{key}: {reattach:?}");
    }
    let children: Vec<&str> = trace_check::children(&spans, reattach)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for name in [
        spans::RELAY_CONNECT,
        spans::NOISE_HANDSHAKE,
        spans::SESSION_RESUME,
    ] {
        assert!(children.contains(&name), "{name} missing: {children:?}");
    }
    // Each attempt's relay.connect says what it dialled, as the first
    // link's does.
    for connect in trace_check::children(&spans, reattach)
        .iter()
        .filter(|s| s.name == spans::RELAY_CONNECT)
    {
        for key in ["rpc.system", "rpc.method", "server.address", "server.port"] {
            assert!(connect.attributes.contains_key(key), "{key}: {connect:?}");
        }
    }
    // Nothing of the command's output is in any span.
    for s in &spans {
        for v in s.attributes.values() {
            assert!(
                !format!("{v:?}").contains("MARK"),
                "{} carries output",
                s.name
            );
        }
    }
}

/// A command whose stdout is `bytes` random bytes and whose stderr is
/// their SHA-256 as `sha256sum` prints it, computed on the exec-server,
/// then exits 3.
fn random_with_digest(bytes: u64) -> String {
    format!("{{ head -c {bytes} /dev/urandom | tee /dev/fd/3 | sha256sum >&2; }} 3>&1; exit 3")
}

/// What a digest command's run came to: its stdout's length and SHA-256
/// (as hex), its stderr, its exit status.
struct Digested {
    len: u64,
    sha256: String,
    stderr: String,
    status: Option<i32>,
}

impl Digested {
    /// The digest the command printed on the exec-server.
    fn remote(&self) -> &str {
        self.stderr
            .lines()
            .find_map(|l| l.strip_suffix("  -"))
            .unwrap_or_else(|| panic!("no digest printed: {}", self.stderr))
    }
}

/// Runs `cmd`, hashing its stdout as it comes (never holding it); `past`
/// hears once `mark` bytes have arrived.
fn run_digested(
    mut cmd: Command,
    mark: u64,
) -> (mpsc::Receiver<()>, std::thread::JoinHandle<Digested>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let mut told = false;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    ctx.update(&buf[..n]);
                    len += n as u64;
                    if !told && len >= mark {
                        told = true;
                        let _ = tx.send(());
                    }
                }
            }
        }
        let out = child.wait_with_output().unwrap();
        Digested {
            len,
            sha256: hex::encode(ctx.finish().as_ref()),
            stderr: text(&out.stderr),
            status: out.status.code(),
        }
    });
    (rx, handle)
}

/// The output each command of the concurrent test writes: 64 MiB, large
/// enough that a relay killed after the first 8 MiB lands in the middle of
/// every stream with most of it still to come, small enough that three of
/// them (192 MiB through the relay, in a debug build) take well under a
/// minute on a quiet machine.
const STREAM: u64 = 64 << 20;

#[test]
fn commands_streaming_at_once_survive_a_relay_killed_and_restarted_byte_exact() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let script = random_with_digest(STREAM);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            run_digested(
                stack.exec_with(&["--no-agent"], &["sh", "-c", &script]),
                8 << 20,
            )
        })
        .collect();
    // Every stream is flowing; then the relay dies and comes back.
    for (past, _) in &runs {
        past.recv_timeout(PATIENCE).unwrap();
    }
    bounce_relay(&mut stack, Duration::from_millis(300));
    for (_, done) in runs {
        let got = done.join().unwrap();
        assert_eq!(got.status, Some(3), "{}", got.stderr);
        assert_eq!(got.len, STREAM, "{}", got.stderr);
        assert_eq!(got.sha256, got.remote(), "the bytes differ from those sent");
    }
    // The sessions were resumed, not replaced.
    for _ in 0..3 {
        stack
            .server
            .wait_for_line("was resumed over a new link", PATIENCE)
            .unwrap();
    }
}

#[test]
fn a_command_survives_the_exec_servers_own_link_dropping_and_coming_back() {
    let mut stack = ProcStack::start(&[]).unwrap();
    // The exec-server reaches the relay through a forwarder that cuts its
    // connections; the client reaches the relay directly.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cutter = rt
        .block_on(integration_tests::proxy::Cutter::start(
            stack.relay_addr().unwrap(),
        ))
        .unwrap();
    stack.restart_server_via(&[&cutter.url()], &[], 1).unwrap();
    let script = random_with_digest(16 << 20);
    let (past, done) = run_digested(
        stack.exec_with(&["--no-agent"], &["sh", "-c", &script]),
        2 << 20,
    );
    past.recv_timeout(PATIENCE).unwrap();
    // Only the exec-server's link breaks: its registration and the
    // session's half; the relay ends the client's half with it.
    cutter.cut();
    stack
        .server
        .wait_for_line("a session's link broke", PATIENCE)
        .unwrap();
    // It registers again through the forwarder, and the client comes back.
    stack
        .server
        .wait_for_line("was resumed over a new link", PATIENCE)
        .unwrap();
    let got = done.join().unwrap();
    assert_eq!(got.status, Some(3), "{}", got.stderr);
    assert_eq!(got.len, 16 << 20, "{}", got.stderr);
    assert_eq!(got.sha256, got.remote(), "the bytes differ from those sent");
    drop(cutter);
}

/// Pseudo-random bytes (xorshift from `seed`), `n` of them from `at`.
fn generated(seed: u64, at: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    // Each byte is its own step of the generator, so any stretch of the
    // stream can be made on its own.
    let mut out = Vec::with_capacity(n);
    x ^= at.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push((x >> 24) as u8);
    }
    out
}

#[test]
fn stdin_in_flight_arrives_exactly_once_across_a_relay_restart() {
    let mut stack = ProcStack::start(&[]).unwrap();
    // The remote side digests what it read; the local side digests what it
    // sent. The client writes without pause from start to end, so that
    // stdin is on its way (sent, not yet taken) when the relay dies, and
    // goes on being written while it is down.
    const TOTAL: u64 = 48 << 20;
    const CHUNK: usize = 1 << 16;
    let mut cmd = stack.exec_with(&["--no-agent"], &["sh", "-c", "sha256sum; exit 3"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (past, passed) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut at = 0u64;
        while at < TOTAL {
            let chunk = generated(0x5eed, at, CHUNK);
            stdin.write_all(&chunk).unwrap();
            ctx.update(&chunk);
            at += CHUNK as u64;
            if at == 8 << 20 {
                let _ = past.send(());
            }
        }
        hex::encode(ctx.finish().as_ref())
    });
    passed.recv_timeout(PATIENCE).unwrap();
    bounce_relay(&mut stack, Duration::from_millis(300));
    let sent = writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{sent}  -\n"));
    stack
        .server
        .wait_for_line("was resumed over a new link", PATIENCE)
        .unwrap();
}

#[test]
fn a_command_comes_back_through_the_other_relay_when_one_dies() {
    let mut stack = ProcStack::start(&[]).unwrap();
    // A second relay, and the exec-server registered with both.
    let second = binaries::spawn("relay", &["--listen", "127.0.0.1:0"], &[]).unwrap();
    let line = second.wait_for_line("listening on", PATIENCE).unwrap();
    let second_url = format!("http://{}", line.rsplit(' ').next().unwrap().trim());
    let dir = stack.dir.path().to_owned();
    let (key, ak) = (dir.join("server.key"), dir.join("authorized_keys"));
    stack.server = binaries::spawn(
        "exec-server",
        &[
            "--relay",
            &stack.relay_url,
            "--relay",
            &second_url,
            "--key",
            key.to_str().unwrap(),
            "--authorized-keys",
            ak.to_str().unwrap(),
            "--no-records",
        ],
        &[],
    )
    .unwrap();
    for _ in 0..2 {
        stack
            .server
            .wait_for_line("registered with relay", PATIENCE)
            .unwrap();
    }
    // Its health probe answers per relay.
    let health = |relays: &[&str]| {
        let mut args = vec!["health".to_owned()];
        for r in relays {
            args.extend(["--relay".to_owned(), (*r).to_owned()]);
        }
        args.extend(["--key".to_owned(), key.to_str().unwrap().to_owned()]);
        Command::new(binaries::path("exec-server").unwrap())
            .args(&args)
            .output()
            .unwrap()
    };
    let both = health(&[&stack.relay_url, &second_url]);
    assert!(both.status.success(), "{}", text(&both.stderr));

    // The first relay dies for good in the middle of a command: it comes
    // back through the second.
    let want = expected();
    let mut cmd = binaries::core_client(&dir).unwrap();
    cmd.arg("exec")
        .args([
            "--no-agent",
            "--relay",
            &stack.relay_url,
            "--relay",
            &second_url,
        ])
        .args(["--server", &stack.server_pub, "--key"])
        .arg(&stack.client_key)
        .args(["--", "sh", "-c", PACED]);
    let (started, done) = run_watched(cmd);
    started.recv_timeout(PATIENCE).unwrap();
    let _ = stack.relay.child.kill();
    let _ = stack.relay.child.wait();
    let out = done.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(out.stdout == want, "the output differs from the command's");
    // And the health probe names the relay that is gone, and only it.
    let one = health(&[&stack.relay_url, &second_url]);
    assert_eq!(one.status.code(), Some(1));
    let lines = text(&one.stderr);
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(lines.contains(&stack.relay_url), "{lines}");
}

#[test]
fn a_session_that_does_not_come_back_in_time_ends_its_command_with_one_line() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let traces = stack.dir.path().join("traces.jsonl");
    let cmd = stack.exec_with(
        &["--no-agent", "--print-trace-id", "-o", "resume=2s"],
        &["sh", "-c", PACED],
    );
    let (started, done) = run_watched(cmd);
    started.recv_timeout(PATIENCE).unwrap();
    // The relay dies for good.
    stack.kill_relay();
    let out = done.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("core-client: trace "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    // The outage is in the trace, failed where the client gave up, its
    // attempts tiling it.
    let id = binaries::printed_trace_id(&out).unwrap();
    let spans = trace_check::from_trace_file(&traces, &id);
    let reattach = trace_check::one(&spans, spans::SESSION_REATTACH);
    assert!(reattach.status_error.is_some(), "{reattach:?}");
    trace_check::assert_children_tile(&spans, reattach);
    let dispatch = trace_check::one(&spans, spans::TOOL_DISPATCH);
    assert!(dispatch.status_error.is_some());
    assert!(reattach.end_unix_nanos <= dispatch.end_unix_nanos);
}

#[test]
fn without_resume_the_command_ends_with_its_link() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let cmd = stack.exec_with(&["--no-agent", "--no-resume"], &["sh", "-c", PACED]);
    let (started, done) = run_watched(cmd);
    started.recv_timeout(PATIENCE).unwrap();
    bounce_relay(&mut stack, Duration::from_millis(300));
    let out = done.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A command that prints `ready`, waits for `flag`, then prints the
/// numbers 1 to `n` and exits 5.
fn after_flag(flag: &std::path::Path, n: u64) -> String {
    format!(
        "echo ready; while [ ! -e '{}' ]; do sleep 0.05; done; seq 1 {n}; exit 5",
        flag.display()
    )
}

fn after_flag_output(n: u64) -> Vec<u8> {
    let mut want = b"ready\n".to_vec();
    for i in 1..=n {
        want.extend_from_slice(format!("{i}\n").as_bytes());
    }
    want
}

/// The number after `key=` in a log line.
fn logged(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// Lines the command prints once its flag is there: about 2.6 MB, more
/// than the bounds below and less than one command's own buffer (4 MiB),
/// so only those bounds can stop it.
const LINES: u64 = 400_000;

/// One MiB, the bound the tests below set.
const BOUND: u64 = 1 << 20;

#[test]
fn a_parked_sessions_output_stops_at_its_bound_and_arrives_whole_after_the_resume() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let bound = BOUND.to_string();
    stack
        .restart_server(&["--resume-session-buffer", &bound], 1)
        .unwrap();
    let flag = stack.dir.path().join("go");
    let cmd = stack.exec_with(&["--no-agent"], &["sh", "-c", &after_flag(&flag, LINES)]);
    let (lines, done) = run_lines(cmd);
    assert_eq!(lines.recv_timeout(PATIENCE).unwrap(), "ready");
    // The link goes; only then does the command write.
    stack.kill_relay();
    stack
        .server
        .wait_for_line("a session's link broke", PATIENCE)
        .unwrap();
    std::fs::write(&flag, b"").unwrap();
    // It writes until the session's bound, then waits on its output.
    let reached = stack
        .server
        .wait_for_line("reached its bound", PATIENCE)
        .unwrap();
    assert_eq!(logged(&reached, "session_bound"), BOUND, "{reached}");
    stack.start_relay_again().unwrap();
    let resumed = stack
        .server
        .wait_for_line("was resumed over a new link", PATIENCE)
        .unwrap();
    // What was kept while the link was down stayed within the bound.
    assert!(logged(&resumed, "replayed_bytes") <= BOUND, "{resumed}");
    let out = done.join().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        out.stdout == after_flag_output(LINES),
        "the output differs from the command's"
    );
}

#[test]
fn the_exec_server_wide_bound_holds_across_parked_sessions() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let bound = BOUND.to_string();
    stack
        .restart_server(&["--resume-total-buffer", &bound], 1)
        .unwrap();
    let flag = stack.dir.path().join("go");
    // Two commands, each in a session of its own.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let cmd = stack.exec_with(&["--no-agent"], &["sh", "-c", &after_flag(&flag, LINES)]);
            let (lines, done) = run_lines(cmd);
            assert_eq!(lines.recv_timeout(PATIENCE).unwrap(), "ready");
            (lines, done)
        })
        .collect();
    stack.kill_relay();
    for _ in 0..2 {
        stack
            .server
            .wait_for_line("a session's link broke", PATIENCE)
            .unwrap();
    }
    std::fs::write(&flag, b"").unwrap();
    let reached = stack
        .server
        .wait_for_line("reached its bound", PATIENCE)
        .unwrap();
    assert_eq!(logged(&reached, "total_bound"), BOUND, "{reached}");
    stack.start_relay_again().unwrap();
    // Each kept at most the bound in all (the one resumed second may have
    // taken what the first gave back, but never more than the bound).
    for _ in 0..2 {
        let resumed = stack
            .server
            .wait_for_line("was resumed over a new link", PATIENCE)
            .unwrap();
        assert!(logged(&resumed, "replayed_bytes") <= BOUND, "{resumed}");
    }
    for (_, done) in runs {
        let out = done.join().unwrap();
        assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
        assert!(
            out.stdout == after_flag_output(LINES),
            "the output differs from the command's"
        );
    }
}

#[test]
fn a_terminal_whose_link_is_not_back_within_the_grace_is_hung_up() {
    let mut stack = ProcStack::start(&[("REX_RESUME_GRACE", "1s")]).unwrap();
    let dir = stack.dir.path().to_path_buf();
    let marker = dir.join("hung-up");
    // The session leader says on the exec-server's side that it heard the
    // hang-up (a file in its directory), as a shell does when its line
    // drops.
    let script = "trap 'echo HUP > hung-up; exit 0' HUP; echo ready; while :; do sleep 0.05; done";
    let mut cmd = stack.exec_with(
        &["--no-agent", "-t", "-n", "--cwd", dir.to_str().unwrap()],
        &["sh", "-c", script],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = cmd.spawn().unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut shown = Vec::new();
    while !shown.ends_with(b"ready\r\n") {
        let mut buf = [0u8; 256];
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the command ended first: {}", text(&shown));
        shown.extend_from_slice(&buf[..n]);
    }
    assert!(!marker.exists());
    // The link goes for good: the relay is killed (no goodbye to anyone)
    // and never comes back, so the client cannot resume the session.
    stack.relay.child.kill().unwrap();
    stack.relay.child.wait().unwrap();
    stack
        .server
        .wait_for_line("a session's link broke", PATIENCE)
        .unwrap();
    stack
        .server
        .wait_for_line("not resumed within its grace", PATIENCE)
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the session leader never heard the hang-up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Written whole once the trap has run (it exits right after).
    while std::fs::read_to_string(&marker).unwrap() != "HUP\n" {
        assert!(std::time::Instant::now() < deadline, "{marker:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.kill();
    let _ = client.wait();
}
