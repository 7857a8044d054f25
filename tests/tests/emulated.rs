//! The stack across an emulated real network: the CLI reaches the relay
//! through the link emulator (a 50 ms round trip), as a user tens of
//! milliseconds away does. Output arrives byte-exact with its exit status
//! (200 MB of it, compared with a local run of the same command), stdin of
//! many megabytes arrives byte-exact (its digest on both sides) with more
//! than its first window in flight (the window grew with the path),
//! the emulator saw the bytes cross (more than the relay's HTTP/2 window
//! for a stream at once: the relay widens an authenticated client's
//! connection; so does an exec-server that clients reach directly, and an
//! exec-server far from its relay takes as wide a window on its own link),
//! and a link reset mid-command is
//! survived (the session resumes through a new connection). Across a long
//! path a call's output credit, not HTTP/2's window, is what bounds the
//! output in flight (it grows with the path, up to its ceiling), and
//! Ctrl-C ends a command that prints without end with at most its credit
//! after it. An exec-server far from its relay likewise sends within the
//! relay's credit, which follows its path, and not within HTTP/2's window
//! for the relay's links. Fifty bulk sessions at once stay inside the relay's budget
//! (its resident memory read from /proc). Counts and contents are asserted, never
//! elapsed times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::binaries::{self, ProcStack};
use integration_tests::memory::rss_kib;
use link_emulator::{Config, CutKind, Emulator};

fn emulated(stack: &ProcStack, rtt: Duration) -> Emulator {
    Emulator::start(Config::new(stack.relay_addr().unwrap()).rtt(rtt)).unwrap()
}

/// A call's first output credit (the client's default), what may be in
/// flight until the client widens it.
fn credit() -> u64 {
    u64::from(proto::session::Limits::client().output_window)
}
/// HTTP/2 frame headers and control frames beside the data.
const FRAMING: u64 = 64 * 1024;

/// `out` is a successful run that printed `len` zero bytes.
fn assert_zeros(out: &std::process::Output, len: usize) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), len);
    assert!(out.stdout.iter().all(|&b| b == 0));
}

#[test]
fn across_a_long_path_the_calls_credit_grows_and_bounds_the_output_in_flight_not_http2() {
    const LEN: usize = 48 * 1024 * 1024;
    let stack = ProcStack::start(&[]).unwrap();
    // Long enough that the relay always has more than the other links'
    // HTTP/2 window, and than the call's first credit, to send before the
    // first acknowledgement returns.
    let link = emulated(&stack, Duration::from_millis(400));
    let out = stack
        .exec_via(
            &link.url(),
            &[],
            &["head", "-c", &LEN.to_string(), "/dev/zero"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_zeros(&out, LEN);
    let stats = link.shutdown();
    // More than the call's first credit was on the path at once (the
    // client widened it with the path; at 1 MiB of HTTP/2 window a 50 ms
    // round trip held output to about 20 MiB/s, at a fixed 4 MiB credit to
    // about 80), and never more than the widest credit.
    assert!(stats.down.peak_queued > credit() + FRAMING, "{stats}");
    let widest = u64::from(proto::session::Limits::client().output_window_max);
    assert!(stats.down.peak_queued <= widest + FRAMING, "{stats}");
}

/// The relay's HTTP/2 window for each stream of its links until it widens
/// a connection: what an exec-server's session had in flight at most,
/// however far away it was.
const LINK_STREAM_WINDOW: u64 = 1024 * 1024;

#[test]
fn an_exec_server_across_a_long_path_sends_within_its_credit_not_the_links_window() {
    const LEN: usize = 32 * 1024 * 1024;
    let mut stack = ProcStack::start(&[]).unwrap();
    // The exec-server registers through a 100 ms round trip; the CLI is
    // next to the relay.
    let link = emulated(&stack, Duration::from_millis(100));
    stack.restart_server_via(&[&link.url()], &[], 1).unwrap();
    let out = stack
        .exec(&["head", "-c", &LEN.to_string(), "/dev/zero"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_zeros(&out, LEN);
    let stats = link.shutdown();
    // More than HTTP/2's window for one stream was on the path at once
    // (the relay widened the exec-server's connection for its credit, which
    // grew with the path), and never more than the widest credit.
    assert!(
        stats.up.peak_queued > LINK_STREAM_WINDOW + FRAMING,
        "{stats}"
    );
    let widest = u64::from(proto::routing::MAX_CREDIT_WINDOW);
    assert!(
        stats.up.peak_queued <= widest + widest / 8 + FRAMING,
        "{stats}"
    );
}

#[test]
fn ctrl_c_across_a_50ms_link_ends_a_command_that_prints_without_end_with_at_most_its_credit_after()
{
    let stack = ProcStack::start(&[]).unwrap();
    let link = emulated(&stack, Duration::from_millis(50));
    let mut cli = stack
        .exec_via(&link.url(), &[], &["yes", "a line of output"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = cli.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut before = 0u64;
    let reading = Instant::now();
    while before == 0 || reading.elapsed() < Duration::from_secs(2) {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the output ended before Ctrl-C");
        before += n as u64;
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(cli.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut after = 0u64;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        after += n as u64;
    }
    let status = cli.wait().unwrap();
    // The remote command died of SIGINT: 128 + 2.
    assert_eq!(status.code(), Some(130), "{status:?}");
    // What was in flight when the signal left, and what the pipes held:
    // the call's credit (widened with the path) bounds it.
    let widest = u64::from(proto::session::Limits::client().output_window_max);
    assert!(
        after <= widest + 1024 * 1024,
        "{after} bytes after Ctrl-C ({before} before)"
    );
}

#[test]
fn a_cold_command_across_a_50ms_link_is_byte_exact() {
    let stack = ProcStack::start(&[]).unwrap();
    let link = emulated(&stack, Duration::from_millis(50));
    let mut cmd = binaries::exec_command(
        &link.url(),
        &stack.server_pub,
        &stack.client_key,
        &[],
        &[
            "sh",
            "-c",
            "head -c 300000 /dev/zero | tr '\\0' x; echo; echo err >&2; exit 3",
        ],
    )
    .unwrap();
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 300_001);
    assert!(out.stdout[..300_000].iter().all(|&b| b == b'x'));
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    let stats = link.shutdown();
    assert!(stats.accepted >= 1, "{stats}");
    // The output crossed the emulated link (sealed, so a little more).
    assert!(stats.down.delivered > 300_000, "{stats}");
    assert!(stats.up.delivered > 0, "{stats}");
}

#[test]
fn a_link_reset_mid_command_is_survived() {
    let stack = ProcStack::start(&[]).unwrap();
    let link = emulated(&stack, Duration::from_millis(20));
    let flag = stack.dir.path().join("go-on");
    let script = format!(
        "echo before; while [ ! -e '{}' ]; do sleep 0.05; done; echo after; exit 5",
        flag.display()
    );
    let mut cmd = binaries::exec_command(
        &link.url(),
        &stack.server_pub,
        &stack.client_key,
        &[],
        &["sh", "-c", &script],
    )
    .unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "before\n");
    // The path resets (a middlebox lost its state): both ends get RST.
    assert_eq!(link.cut_all(CutKind::Reset), 1);
    std::fs::write(&flag, b"").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(rest, "after\n", "stderr: {err}");
    assert_eq!(status.code(), Some(5), "stderr: {err}");
    let stats = link.stats();
    assert_eq!(stats.resets, 1, "{stats}");
    assert!(
        stats.accepted >= 2,
        "the session came back over a new connection: {stats}"
    );
}

/// The CLI sends its close and exits without waiting for the answer (no
/// round trip spent closing, see the `network` benchmark): the close must
/// still arrive, so the exec-server ends the session rather than holding
/// it for a resume.
#[test]
fn the_cli_exits_without_waiting_for_its_close_and_the_session_still_closes_cleanly() {
    let stack = ProcStack::start(&[("RUST_LOG", "info,exec_server=debug")]).unwrap();
    let link = emulated(&stack, Duration::from_millis(50));
    let mut cmd = binaries::exec_command(
        &link.url(),
        &stack.server_pub,
        &stack.client_key,
        &[],
        &["true"],
    )
    .unwrap();
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The exec-server got the authenticated close (its session closed),
    // not a broken link it would hold for a resume.
    let line = binaries::recv_line(
        &stack.server.stderr_lines,
        |l| l.contains("session closed") || l.contains("link broke"),
        "the session's end",
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(line.contains("session closed"), "{line}");
}

/// Deterministic, varied bytes (not a run of one value, which would hide
/// a chunk sent twice or out of order).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn two_hundred_megabytes_across_a_50ms_link_arrive_byte_exact() {
    // `seq 1 24000000`: 204,888,897 bytes, every line different.
    const LAST: &str = "24000000";
    let stack = ProcStack::start(&[]).unwrap();
    let link = emulated(&stack, Duration::from_millis(50));
    let mut cli = stack
        .exec_via(&link.url(), &[], &["seq", "1", LAST])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut expected = std::process::Command::new("seq")
        .args(["1", LAST])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = cli.stdout.take().unwrap();
    let mut want = BufReader::new(expected.stdout.take().unwrap());
    let mut buf = vec![0u8; 1 << 16];
    let mut same = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = got.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        want.read_exact(&mut same[..n])
            .unwrap_or_else(|e| panic!("more output than seq's after {total} bytes: {e}"));
        assert!(
            buf[..n] == same[..n],
            "the output differs from byte {total}"
        );
        total += n as u64;
    }
    let mut rest = Vec::new();
    want.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "{} bytes missing after {total}",
        rest.len()
    );
    assert!(expected.wait().unwrap().success());
    let status = cli.wait().unwrap();
    let mut err = String::new();
    cli.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(total, 204_888_897);
    let stats = link.shutdown();
    assert!(stats.down.delivered > total, "{stats}");
}

/// Runs `cmd` (a remote `sha256sum`) with `data` on its stdin and checks
/// that it printed what `sha256sum` here prints for `data`.
fn assert_same_digest(cmd: std::process::Command, data: &[u8]) {
    let out = binaries::run_with_stdin(cmd, data).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut here = std::process::Command::new("sha256sum");
    here.stdin(Stdio::piped());
    let local = binaries::run_with_stdin(here, data).unwrap();
    assert!(local.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
}

/// What a large stdin across a long path must have had in flight at once
/// (`peak`, the bytes on the path toward the exec-server): more than its
/// call's first stdin window and a chunk (the window grew with the path),
/// and more than HTTP/2's window for a stream of the links (the link's
/// receiving end widened it for an authenticated client).
fn assert_stdin_window_followed_the_path(peak: u64, stats: &impl std::fmt::Display) {
    let first = u64::from(proto::session::Limits::server().stdin_window);
    let chunk = proto::limits::MAX_CHUNK as u64;
    assert!(peak > first + chunk + FRAMING, "{stats}");
    assert!(peak > LINK_STREAM_WINDOW + FRAMING, "{stats}");
}

const STDIN_LEN: usize = 24 * 1024 * 1024;

#[test]
fn a_large_stdin_across_a_50ms_link_arrives_byte_exact() {
    let data = pattern(STDIN_LEN);
    let stack = ProcStack::start(&[]).unwrap();
    let link = emulated(&stack, Duration::from_millis(50));
    assert_same_digest(stack.exec_via(&link.url(), &[], &["sha256sum"]), &data);
    let stats = link.shutdown();
    assert!(stats.up.delivered > STDIN_LEN as u64, "{stats}");
    // The relay widened the client's connection once its session had
    // authenticated.
    assert_stdin_window_followed_the_path(stats.up.peak_queued, &stats);
}

#[test]
fn a_large_stdin_to_an_exec_server_50ms_from_its_relay_arrives_byte_exact() {
    let data = pattern(STDIN_LEN);
    let mut stack = ProcStack::start(&[]).unwrap();
    // The exec-server registers through a 50 ms round trip; the CLI is
    // next to the relay.
    let link = emulated(&stack, Duration::from_millis(50));
    stack.restart_server_via(&[&link.url()], &[], 1).unwrap();
    assert_same_digest(stack.exec(&["sha256sum"]), &data);
    let stats = link.shutdown();
    assert!(stats.down.delivered > STDIN_LEN as u64, "{stats}");
    // The exec-server's own link to the relay takes a wide window.
    assert_stdin_window_followed_the_path(stats.down.peak_queued, &stats);
}

#[test]
fn a_large_stdin_to_a_listening_exec_server_50ms_away_arrives_byte_exact() {
    let data = pattern(STDIN_LEN);
    let mut stack = ProcStack::start(&[]).unwrap();
    stack
        .restart_server(&["--listen", "127.0.0.1:0"], 0)
        .unwrap();
    let line = stack
        .server
        .wait_for_line("accepting clients directly", Duration::from_secs(30))
        .unwrap();
    let addr: std::net::SocketAddr = line
        .split_once("addr=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    let link = Emulator::start(Config::new(addr).rtt(Duration::from_millis(50))).unwrap();
    assert_same_digest(stack.exec_via(&link.url(), &[], &["sha256sum"]), &data);
    let stats = link.shutdown();
    assert!(stats.up.delivered > STDIN_LEN as u64, "{stats}");
    // The exec-server widened the client's connection once its session had
    // authenticated, as a relay does.
    assert_stdin_window_followed_the_path(stats.up.peak_queued, &stats);
}

#[test]
fn fifty_concurrent_bulk_sessions_across_a_50ms_link_stay_inside_the_relays_budget() {
    const SESSIONS: usize = 50;
    const LEN: usize = 4_000_000;
    // The relay's defaults: 128 KiB queued per direction of a session,
    // 256 MiB for all sessions together.
    const SESSION_BUFFER: u64 = 128 * 1024;
    const BUDGET: u64 = 256 * 1024 * 1024;
    let stack = ProcStack::start(&[]).unwrap();
    let relay = stack.relay.child.id();
    let relay_before = rss_kib(relay).unwrap();
    let link = emulated(&stack, Duration::from_millis(50));
    let mut clis = Vec::new();
    for _ in 0..SESSIONS {
        let cli = stack
            .exec_via(
                &link.url(),
                &[],
                &["head", "-c", &LEN.to_string(), "/dev/zero"],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        clis.push(cli);
    }
    // Each CLI's output is counted on a thread of its own while the
    // relay's resident memory is sampled.
    let readers: Vec<_> = clis
        .iter_mut()
        .map(|cli| {
            let mut out = cli.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0usize;
                loop {
                    match out.read(&mut buf).unwrap() {
                        0 => return n,
                        k => n += k,
                    }
                }
            })
        })
        .collect();
    let mut peak = relay_before;
    while readers.iter().any(|r| !r.is_finished()) {
        peak = peak.max(rss_kib(relay).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    for (reader, mut cli) in readers.into_iter().zip(clis) {
        assert_eq!(reader.join().unwrap(), LEN);
        let status = cli.wait().unwrap();
        let mut err = String::new();
        cli.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "{status:?}: {err}");
    }
    let grew = (peak.saturating_sub(relay_before)) * 1024;
    eprintln!(
        "{SESSIONS} bulk sessions across 50 ms: the relay grew by {} KiB at most ({} KiB a session)",
        grew / 1024,
        grew / 1024 / SESSIONS as u64
    );
    assert!(grew <= BUDGET, "{grew} bytes");
    // Far less in fact: each session's queues, and its share of the
    // links' buffers.
    let per_session = grew / SESSIONS as u64;
    assert!(
        per_session <= 16 * SESSION_BUFFER,
        "{per_session} bytes a session"
    );
}
