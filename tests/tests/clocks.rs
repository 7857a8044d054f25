//! Where the remote side's times are placed on the client's clock, and how
//! sure that placement is: across an asymmetric emulated path (5 ms from
//! the CLI to the relay, 45 ms back), on one host.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::binaries::{self, ProcStack};
use integration_tests::otlp::RecordedSpan;
use link_emulator::{Config, Emulator, PathSettings};

const UP: Duration = Duration::from_millis(5);
const DOWN: Duration = Duration::from_millis(45);

/// A relay and exec-server started with `env`, and an emulator in front
/// of the relay: 5 ms toward it, 45 ms back.
fn stack_behind_an_asymmetric_path(env: &[(&str, &str)]) -> (ProcStack, Emulator) {
    let stack = ProcStack::start(env).unwrap();
    let mut config = Config::new(stack.relay_addr().unwrap());
    config.up = PathSettings::delay(UP);
    config.down = PathSettings::delay(DOWN);
    let emulator = Emulator::start(config).unwrap();
    (stack, emulator)
}

/// Runs `echo hi` through the emulator; its spans from the CLI's trace
/// file and the `trace show` text.
fn echo(stack: &ProcStack, emulator: &Emulator) -> (Vec<RecordedSpan>, String) {
    let (id, spans) = stack
        .traced_exec(&emulator.url(), &["sh", "-c", "echo hi"])
        .unwrap();
    (spans, stack.trace_show(&id).unwrap())
}

fn leg<'a>(spans: &'a [RecordedSpan], name: &str) -> &'a RecordedSpan {
    spans
        .iter()
        .find(|s| s.name == telemetry::spans::LINK_TRANSIT && s.attr_str("rex.leg") == Some(name))
        .unwrap_or_else(|| panic!("no {name} leg in {spans:#?}"))
}

fn forward<'a>(spans: &'a [RecordedSpan], direction: &str) -> Vec<&'a RecordedSpan> {
    spans
        .iter()
        .filter(|s| {
            s.name == telemetry::spans::RELAY_FORWARD
                && s.attr_str("rex.direction") == Some(direction)
        })
        .collect()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

#[test]
fn on_one_host_the_legs_are_placed_from_raw_times_and_keep_their_asymmetry() {
    let (stack, emulator) = stack_behind_an_asymmetric_path(&[]);
    // Twice: the second command's session has a ticket (one round trip),
    // the first's does not; both are placed the same way.
    for _ in 0..2 {
        let (spans, shown) = echo(&stack, &emulator);
        // Every remote stage was placed by the same-host source: offset
        // exactly 0, bound 0.
        let placed: Vec<&RecordedSpan> = spans
            .iter()
            .filter(|s| s.attr_bool("rex.remote.placed") == Some(true))
            .collect();
        assert!(
            placed.iter().filter(|s| s.service == "exec-server").count() >= 8,
            "{shown}"
        );
        assert!(placed.iter().any(|s| s.service == "relay"), "{shown}");
        for s in &placed {
            assert_eq!(
                s.attr_str("rex.clock.source"),
                Some("same-host"),
                "{}",
                s.name
            );
            assert_eq!(s.attr_i64("rex.clock.offset_ns"), Some(0), "{}", s.name);
            assert_eq!(s.attr_i64("rex.clock.bound_ns"), Some(0), "{}", s.name);
        }
        // The legs are placed from raw times: each ends or starts exactly
        // where the relay's own forward of its frame does (nothing moved
        // them), so each is its own and its split is measured...
        let request_forward = forward(&spans, "to_server")
            .into_iter()
            .min_by_key(|s| s.start_unix_nanos)
            .unwrap();
        let final_forward = forward(&spans, "to_client")
            .into_iter()
            .max_by_key(|s| s.start_unix_nanos)
            .unwrap();
        let out = leg(&spans, "client_relay");
        let back = leg(&spans, "relay_client");
        assert_eq!(out.end_unix_nanos, request_forward.start_unix_nanos);
        assert_eq!(back.start_unix_nanos, final_forward.end_unix_nanos);
        for l in [
            out,
            back,
            leg(&spans, "relay_server"),
            leg(&spans, "server_relay"),
        ] {
            assert_eq!(l.attr_str("rex.clock.split"), Some("measured"), "{shown}");
            assert_eq!(l.attr_str("rex.clock.source"), Some("same-host"));
            assert_eq!(l.attr_i64("rex.round_trip_ns"), None);
        }
        // ...and keeps the path's asymmetry: the leg back took at least
        // the 45 ms the path holds each frame for (an even split of the
        // round trip would make it about 25).
        assert!(
            back.end_unix_nanos - back.start_unix_nanos >= nanos(DOWN),
            "{shown}"
        );
        assert!(
            out.end_unix_nanos - out.start_unix_nanos >= nanos(UP),
            "{shown}"
        );
        // The waterfall says why it knows, and states each leg's duration.
        assert!(
            shown.contains("exec-server's stages: brought home in the session, placed on our clock as it is (same host"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "relay's forwards: told on its frames, placed on our clock as it is (same host"
            ),
            "{shown}"
        );
        assert!(
            !shown.contains("split unknown") && !shown.contains('░'),
            "{shown}"
        );
    }
}

#[test]
fn a_clock_that_is_not_its_kernels_is_estimated_and_the_split_is_unknown() {
    let Some(lib) = binaries::libfaketime() else {
        return;
    };
    let lib = lib.to_str().unwrap().to_owned();
    // The relay and the exec-server run 3 s ahead (timers on the real
    // monotonic clock), so they withhold their kernel's word.
    let (stack, emulator) = stack_behind_an_asymmetric_path(&[
        ("LD_PRELOAD", &lib),
        ("FAKETIME", "+3s"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_DONT_RESET", "1"),
        ("REX_CLOCK_STATUS", "withheld"),
    ]);
    let (spans, shown) = echo(&stack, &emulator);
    let placed: Vec<&RecordedSpan> = spans
        .iter()
        .filter(|s| s.attr_bool("rex.remote.placed") == Some(true))
        .collect();
    assert!(!placed.is_empty(), "{shown}");
    // The best sample's round trip crossed the emulated path both ways
    // (50 ms at least), so half of it bounds the offset from below.
    let half_rtt = nanos(UP + DOWN) / 2;
    for s in &placed {
        assert_eq!(
            s.attr_str("rex.clock.source"),
            Some("two-way"),
            "{}",
            s.name
        );
        let bound = s.attr_i64("rex.clock.bound_ns").unwrap();
        assert!(
            u64::try_from(bound).unwrap() >= half_rtt,
            "{}: bound {bound} ns",
            s.name
        );
        // And the skew is within it.
        let offset = s.attr_i64("rex.clock.offset_ns").unwrap();
        assert!(
            (offset - 3_000_000_000).abs() <= bound + 1_000_000,
            "{}: offset {offset} ns, bound {bound} ns",
            s.name
        );
    }
    // Every leg's split is unknown; each states the round trip it is part
    // of, the same for both legs of a pair, and that is what they sum to.
    let pairs = [
        ("client_relay", "relay_client"),
        ("relay_server", "server_relay"),
    ];
    for (there, back) in pairs {
        let (a, b) = (leg(&spans, there), leg(&spans, back));
        for l in [a, b] {
            assert_eq!(l.attr_str("rex.clock.split"), Some("unknown"), "{shown}");
        }
        let rtt = a.attr_i64("rex.round_trip_ns").unwrap();
        assert_eq!(Some(rtt), b.attr_i64("rex.round_trip_ns"));
        let sum = (a.end_unix_nanos - a.start_unix_nanos) + (b.end_unix_nanos - b.start_unix_nanos);
        assert_eq!(u64::try_from(rtt).unwrap(), sum);
    }
    // The client↔relay round trip crossed the emulated path.
    let rtt = leg(&spans, "client_relay")
        .attr_i64("rex.round_trip_ns")
        .unwrap();
    assert!(u64::try_from(rtt).unwrap() >= nanos(UP + DOWN), "{shown}");
    // The waterfall never states a leg's own duration: it says the round
    // trip, with the split unknown, and the header says why.
    let leg_rows: Vec<&str> = shown
        .lines()
        .filter(|l| l.contains("link.transit ("))
        .collect();
    assert_eq!(leg_rows.len(), 4, "{shown}");
    for row in &leg_rows {
        assert!(row.contains(" ? ") && !row.contains('█'), "{shown}");
    }
    assert_eq!(
        shown.matches("there and back, split unknown").count(),
        2,
        "{shown}"
    );
    assert!(
        shown.contains("(estimated from round trips: how each round trip splits between its two ways is unknown)"),
        "{shown}"
    );
}
