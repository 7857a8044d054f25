//! A cold command's round trips, counted by the client's session itself,
//! across an emulated 50 ms link between the CLI and the relay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use integration_tests::binaries::{self, ProcStack};
use integration_tests::trace_check;
use link_emulator::{Config, Emulator};

/// Runs a cold `core-client exec -- true` through the emulator and returns
/// its `tool.dispatch` span's counters and the `trace show` text.
fn cold_true(stack: &ProcStack, emulator: &Emulator) -> ((i64, i64, i64), String) {
    let out = binaries::exec_command(
        &emulator.url(),
        &stack.server_pub,
        &stack.client_key,
        &["--no-agent", "--print-trace-id"],
        &["true"],
    )
    .unwrap()
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = binaries::printed_trace_id(&out).unwrap();
    let traces = stack.dir.path().join("traces.jsonl");
    let spans = trace_check::from_trace_file(&traces, &id);
    let dispatch = trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH);
    let counters = (
        dispatch
            .attr_i64(telemetry::spans::ATTR_SESSION_ROUND_TRIPS)
            .unwrap(),
        dispatch
            .attr_i64(telemetry::spans::ATTR_SESSION_FLIGHTS)
            .unwrap(),
        dispatch
            .attr_i64(telemetry::spans::ATTR_SESSION_EARLY_RETRIES)
            .unwrap(),
    );
    let shown = binaries::core_client(stack.dir.path())
        .unwrap()
        .args(["trace", "show", &id])
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    (counters, String::from_utf8(shown.stdout).unwrap())
}

#[test]
fn a_cold_exec_says_how_many_round_trips_it_waited_on() {
    let stack = ProcStack::start(&[]).unwrap();
    let emulator =
        Emulator::start(Config::new(stack.relay_addr().unwrap()).rtt(Duration::from_millis(50)))
            .unwrap();
    let ((round_trips, flights, retries), shown) = cold_true(&stack, &emulator);
    // Message 1 (with the relay's Open), the hello, the exec request.
    assert_eq!((round_trips, flights, retries), (3, 3, 0), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l == "session: 3 round trips before the first event, 3 flights"),
        "{shown}"
    );
    // It all went through the emulated link.
    assert!(emulator.stats().accepted >= 1);
}
