//! The stack across an emulated real network: the CLI reaches the relay
//! through the link emulator (a 50 ms round trip), as a user tens of
//! milliseconds away does. Output arrives byte-exact with its exit status,
//! the emulator saw the bytes cross, and a link reset mid-command is
//! survived (the session resumes through a new connection). Counts and
//! contents are asserted, never elapsed times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use integration_tests::binaries::{self, ProcStack};
use link_emulator::{Config, CutKind, Emulator};

fn emulated(stack: &ProcStack, rtt: Duration) -> Emulator {
    Emulator::start(Config::new(stack.relay_addr().unwrap()).rtt(rtt)).unwrap()
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
