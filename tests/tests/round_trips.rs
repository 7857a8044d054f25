//! A cold command's round trips, counted by the client's session itself,
//! across an emulated 50 ms link between the CLI and the relay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::binaries::ProcStack;
use integration_tests::trace_check;
use link_emulator::{Config, Emulator};

/// Runs a cold `core-client exec -- true` through the emulator and returns
/// its `tool.dispatch` span's counters and the `trace show` text.
fn cold_true(stack: &ProcStack, emulator: &Emulator) -> ((i64, i64, i64), String) {
    let (id, spans) = stack.traced_exec(&emulator.url(), &["true"]).unwrap();
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
    (counters, stack.trace_show(&id).unwrap())
}

#[test]
fn a_cold_exec_takes_one_round_trip_once_the_cli_knows_the_servers_run() {
    let stack = ProcStack::start(&[]).unwrap();
    let emulator =
        Emulator::start(Config::new(stack.relay_addr().unwrap()).rtt(Duration::from_millis(50)))
            .unwrap();
    // The first exec knows no ticket of the exec-server's run: message 1
    // carries the hello and the command, the exec-server answers "again
    // after the handshake", and they are sent again, once.
    let ((round_trips, flights, retries), shown) = cold_true(&stack, &emulator);
    assert_eq!((round_trips, retries), (2, 1), "{shown}");
    // (Closing the command's stdin may be a flight of its own before the
    // first event arrives: nothing waits for it.)
    assert!((2..=3).contains(&flights), "{shown}");
    assert!(
        shown.lines().any(
            |l| l.starts_with("session: 2 round trips before the first event, ")
                && l.ends_with(", 1 retry after early data was refused")
        ),
        "{shown}"
    );
    // The hello answer gave it the run's ticket, which the CLI kept: the
    // next cold exec (a new process) runs from message 1.
    for _ in 0..2 {
        let ((round_trips, flights, retries), shown) = cold_true(&stack, &emulator);
        assert_eq!((round_trips, retries), (1, 0), "{shown}");
        assert!((1..=2).contains(&flights), "{shown}");
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("session: 1 round trip before the first event, ")),
            "{shown}"
        );
    }
    // It all went through the emulated link.
    assert!(emulator.stats().accepted >= 3);
}
