//! Early data is never run twice: an attacker on the path records every
//! client frame of real sessions whose command rode in handshake message 1
//! and replays them to the exec-server, before and after it restarts; the
//! command appends a line to a file each time it runs.
//!
//! The CLI, the relay and the exec-server run as their own processes; the
//! client reaches the relay through a recording proxy and an emulated
//! 20 ms link.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use integration_tests::binaries::ProcStack;
use integration_tests::proxy::{self, Behaviour, Recording, Replayed};
use link_emulator::{Config, Emulator};

/// How long a replay reads what comes back (a refused replay gets no
/// answer at all: the whole time is waited).
const REPLAY_WAIT: Duration = Duration::from_secs(5);
/// The bound on waiting for an answer that must come (it ends the wait).
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Runs `sh -c 'echo run >> FILE'` through `url` with the CLI; returns the
/// session counters' `early_retries` from its trace.
fn append(stack: &ProcStack, url: &str, file: &std::path::Path) -> i64 {
    let script = format!("echo run >> {}", file.display());
    let (_, spans) = stack.traced_exec(url, &["sh", "-c", &script]).unwrap();
    integration_tests::trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH)
        .attr_i64(telemetry::spans::ATTR_SESSION_EARLY_RETRIES)
        .unwrap()
}

fn lines(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |t| t.lines().count())
}

async fn replay_all(stack: &ProcStack, recording: &Recording) -> Vec<Replayed> {
    let mut got = Vec::new();
    for (server, frames) in recording.sessions() {
        got.push(
            proxy::replay(&stack.relay_url, &server, frames, (REPLAY_WAIT, false))
                .await
                .unwrap(),
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_replayed_before_and_after_a_restart_never_runs_its_command_again() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let emulator =
        Emulator::start(Config::new(stack.relay_addr().unwrap()).rtt(Duration::from_millis(20)))
            .unwrap();
    let recording = Arc::new(Recording::default());
    let url = proxy::start(
        emulator.url(),
        Behaviour {
            record: Some(Arc::clone(&recording)),
            ..Behaviour::default()
        },
    )
    .await
    .unwrap();
    let file = stack.dir.path().join("runs");

    // The first command knows no ticket of the exec-server's run: it is
    // sent again after the handshake. The second runs from message 1.
    let (a, b) = {
        let (stack, url, file) = (&stack, url.clone(), file.clone());
        tokio::task::block_in_place(|| (append(stack, &url, &file), append(stack, &url, &file)))
    };
    assert_eq!((a, b), (1, 0), "early retries of the first and second exec");
    assert_eq!(lines(&file), 2);
    let recorded = recording.sessions();
    assert_eq!(recorded.len(), 2, "two sessions recorded");
    assert!(recorded.iter().all(|(_, frames)| !frames.is_empty()));

    // Every client frame of both sessions again, to the same exec-server
    // (twice): a replayed message 1 is refused outright, and the frames
    // after it belong to a handshake that is not happening.
    for round in 0..2 {
        let got = replay_all(&stack, &recording).await;
        assert_eq!(lines(&file), 2, "round {round}: {got:?}");
        for r in &got {
            assert_eq!(r.data, 0, "round {round}: nothing came of it: {got:?}");
        }
    }

    // Message 1 of the session whose command ran from it, alone: refused
    // outright (a replay), not even answered.
    let (server, frames) = recorded[1].clone();
    let msg1 = vec![frames[0].clone()];
    let got = proxy::replay(
        &stack.relay_url,
        &server,
        msg1.clone(),
        (REPLAY_WAIT, false),
    )
    .await
    .unwrap();
    assert_eq!(got.handshakes, 0, "{got:?}");
    assert_eq!(lines(&file), 2);

    // The exec-server restarts: its replay register is empty, but it is a
    // new run, with a new ticket. Message 1 alone reaches it and is
    // answered (message 2: "again after the handshake", which a recording
    // cannot do): its command does not run.
    stack.restart_server(&[], 1).unwrap();
    let got = proxy::replay(&stack.relay_url, &server, msg1.clone(), (ANSWER_WAIT, true))
        .await
        .unwrap();
    assert_eq!(
        got.handshakes, 1,
        "the restarted exec-server answered: {got:?}"
    );
    assert_eq!(lines(&file), 2, "after the restart, message 1 alone");
    // Then every recording, twice, and message 1 again: nothing runs.
    for round in 0..2 {
        let got = replay_all(&stack, &recording).await;
        assert_eq!(lines(&file), 2, "after the restart, round {round}: {got:?}");
    }
    let got = proxy::replay(&stack.relay_url, &server, msg1, (REPLAY_WAIT, false))
        .await
        .unwrap();
    assert_eq!(got.handshakes, 0, "a replay once more: {got:?}");
    assert_eq!(lines(&file), 2);

    // The client itself is not hurt: its next command runs once (after
    // the handshake: the ticket it kept names the run before the restart).
    let c = tokio::task::block_in_place(|| append(&stack, &url, &file));
    assert_eq!(c, 1);
    assert_eq!(lines(&file), 3);
}
