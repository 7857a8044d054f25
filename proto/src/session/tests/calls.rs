//! Calls: exec round trips, interleaving, signals and cancels, the caps, marks.

use super::*;

#[test]
fn exec_round_trip() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    assert_eq!(id, 1);
    let [
        ServerEvent::Exec {
            call_id, request, ..
        },
    ] = p.server_events.as_slice()
    else {
        panic!("{:?}", p.server_events)
    };
    assert_eq!(*call_id, id);
    assert_eq!(request.argv, vec![Bytes::from_static(b"prog")]);
    assert_eq!(p.push(id, started()).seq, 0);
    assert_eq!(p.push(id, out("hi\n")).seq, 1);
    assert_eq!(p.push(id, Kind::Stderr(Bytes::from_static(b"oops"))).seq, 2);
    let last = p.push(id, exit(3));
    assert!(last.last);
    assert_eq!(
        p.client_calls(),
        vec![
            (id, 0, started(), false),
            (id, 1, out("hi\n"), false),
            (id, 2, Kind::Stderr(Bytes::from_static(b"oops")), false),
            (id, 3, exit(3), true),
        ]
    );
    assert_eq!(p.client.open_calls(), 0);
    assert_eq!(p.server.open_calls(), 0);
    // The call is over on both sides: nothing more goes out for it.
    assert_eq!(
        p.server.push(id, out("late"), None, None, p.now),
        Err(CallError::UnknownCall(id))
    );
    assert_eq!(
        p.client.signal(id, 15, None, p.now),
        Err(CallError::Finished(id))
    );
}

#[test]
fn call_ids_must_increase() {
    let mut p = Pair::ready();
    let a = p.exec(false);
    let req = ExecRequest {
        argv: vec![Bytes::from_static(b"x")],
        ..Default::default()
    };
    assert_eq!(
        p.client.start_call(a, req.clone(), None, None, p.now),
        Err(CallError::StaleCallId(a))
    );
    assert_eq!(
        p.client.start_call(0, req.clone(), None, None, p.now),
        Err(CallError::StaleCallId(0))
    );
    // Gaps are fine: the caller picks its ids.
    p.client.start_call(a + 10, req, None, None, p.now).unwrap();
    assert_eq!(p.client.next_call_id(), a + 11);
    p.run();
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Exec { call_id, .. } if *call_id == a + 10))
    );
}

#[test]
fn interleaved_calls_keep_their_own_order() {
    let mut p = Pair::ready();
    let a = p.exec(false);
    let b = p.exec(false);
    assert_ne!(a, b);
    p.push(b, started());
    p.push(a, started());
    p.push(a, out("a1"));
    p.push(b, out("b1"));
    p.push(a, out("a2"));
    p.push(b, exit(0));
    p.push(a, exit(1));
    let calls = p.client_calls();
    let of = |id| -> Vec<(u64, Kind)> {
        calls
            .iter()
            .filter(|c| c.0 == id)
            .map(|c| (c.1, c.2.clone()))
            .collect()
    };
    assert_eq!(
        of(a),
        vec![(0, started()), (1, out("a1")), (2, out("a2")), (3, exit(1))]
    );
    assert_eq!(of(b), vec![(0, started()), (1, out("b1")), (2, exit(0))]);
}

#[test]
fn signal_and_cancel_reach_the_call() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.server_events.clear();
    p.client.signal(id, 2, None, p.now).unwrap();
    p.client.cancel(id, None, p.now).unwrap();
    p.run();
    assert!(matches!(
        p.server_events.as_slice(),
        [
            ServerEvent::Signal { call_id: a, signal: 2, .. },
            ServerEvent::Cancel { call_id: b, .. }
        ] if *a == id && *b == id
    ));
    p.push(id, exit(137));
    assert_eq!(p.client_calls().last().map(|c| c.3), Some(true));
}

#[test]
fn a_cancel_crossing_the_final_event_is_harmless() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.server_events.clear();
    // The client cancels while the exit is already on its way.
    p.client.cancel(id, None, p.now).unwrap();
    p.server.push(id, exit(0), None, None, p.now).unwrap();
    p.run();
    // Reported (each traced message is accounted for), for a call that is
    // no longer open; not a violation.
    assert!(
        matches!(p.server_events.as_slice(), [ServerEvent::Cancel { call_id, .. }] if *call_id == id),
        "{:?}",
        p.server_events
    );
    assert_eq!(p.server.open_calls(), 0);
    assert!(p.server_end().is_none() && p.client_end().is_none());
    assert_eq!(p.client_calls().last().map(|c| c.3), Some(true));
}

#[test]
fn a_forgotten_call_is_cancelled_and_its_events_dropped() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.client_events.clear();
    p.server_events.clear();
    p.client.forget(id, Some(Mark::new("cancel", None)), p.now);
    p.run();
    assert!(matches!(
        p.server_events.as_slice(),
        [ServerEvent::Cancel { .. }]
    ));
    assert_eq!(p.client_done, vec!["cancel"]);
    p.push(id, out("nobody reads this"));
    p.push(id, exit(137));
    assert!(p.client_events.is_empty(), "{:?}", p.client_events);
    assert_eq!(p.client.open_calls(), 0);
}

#[test]
fn the_exec_server_refuses_calls_over_its_cap() {
    let mut server = Limits::server();
    server.max_calls = 1;
    let mut client = Limits::client();
    // The client would refuse locally first; let it ask anyway.
    client.max_calls = 8;
    let mut p = Pair::with(client, server);
    p.run();
    // The hello answer lowered the client's own cap to the exec-server's.
    let a = p.exec(false);
    let req = ExecRequest {
        argv: vec![Bytes::from_static(b"x")],
        ..Default::default()
    };
    assert_eq!(
        p.client
            .start_call(p.client.next_call_id(), req.clone(), None, None, p.now),
        Err(CallError::TooManyCalls(1))
    );
    p.push(a, started());
    p.push(a, exit(0));
    let next = p.client.next_call_id();
    assert!(p.client.start_call(next, req, None, None, p.now).is_ok());
}

#[test]
fn an_exec_over_the_servers_cap_gets_an_error_event() {
    let mut server = Limits::server();
    server.max_calls = 1;
    let mut p = Pair::with(Limits::client(), server);
    p.run();
    // Pretend the hello answer did not lower the client's cap.
    p.client.max_calls_for_tests(8);
    let a = p.exec(false);
    let b = p.exec(false);
    assert!(matches!(
        p.server_events.last(),
        Some(ServerEvent::Refused { call_id, kind: ExecErrorKind::TooManyProcesses, .. }) if *call_id == b
    ));
    let calls = p.client_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, b);
    assert!(
        matches!(&calls[0].2, Kind::Error(e) if e.kind == ExecErrorKind::TooManyProcesses as i32)
    );
    assert!(calls[0].3, "a refusal is the call's last event");
    p.push(a, started());
}

#[test]
fn marked_messages_end_their_frame_and_carry_their_hop() {
    let mut p = Pair::ready();
    let hop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = ExecRequest {
        argv: vec![Bytes::from_static(b"prog")],
        stdin: StdinMode::Pipe as i32,
        ..Default::default()
    };
    let trace = TraceContext {
        traceparent: hop.into(),
        tracestate: String::new(),
    };
    let before = p.up_hops.len();
    let id = p.client.next_call_id();
    p.client
        .start_call(
            id,
            req,
            Some(trace.clone()),
            Some(Mark::new("exec", Some(hop.into()))),
            p.now,
        )
        .unwrap();
    // Unmarked stdin right behind it must not share its frame.
    p.client
        .write_stdin(id, Bytes::from_static(b"data"), p.now)
        .unwrap();
    p.run();
    assert_eq!(p.client_done, vec!["exec"]);
    assert_eq!(&p.up_hops[before..], &[hop.to_owned(), String::new()]);
    // Every message of the call carries the call's trace context.
    match &p.server_events[..] {
        [
            ServerEvent::Exec {
                trace: t, received, ..
            },
            ServerEvent::Stdin { .. },
        ] => {
            assert_eq!(t.as_ref(), Some(&trace));
            assert_eq!(received.hop, hop);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_exec_servers_marks_come_back_when_their_frame_leaves() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.server
        .push(id, started(), None, Some(Mark::new("started", None)), p.now)
        .unwrap();
    p.server.push(id, out("x"), None, None, p.now).unwrap();
    p.server
        .push(id, exit(0), None, Some(Mark::new("exited", None)), p.now)
        .unwrap();
    assert!(p.server_done.is_empty(), "nothing has left yet");
    p.run();
    assert_eq!(p.server_done, vec!["started", "exited"]);
}

#[test]
fn the_final_event_brings_the_remote_timings_and_no_other_does() {
    use crate::pb::session::{CallTimings, StageTiming};
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    let timings = CallTimings {
        version: 1,
        stages: vec![StageTiming {
            name: "process.run".into(),
            span_id: 7,
            start_ns: -5_000,
            duration_ns: 4_000,
            ..Default::default()
        }],
        dropped: 2,
        host: "build-box".into(),
    };
    // Offered with an event that is not the last: left out.
    p.server
        .push_final(
            id,
            out("x"),
            EncodedTimings::encode(&timings),
            None,
            None,
            p.now,
        )
        .unwrap();
    p.server
        .push_final(
            id,
            exit(0),
            EncodedTimings::encode(&timings),
            None,
            None,
            p.now,
        )
        .unwrap();
    p.run();
    let got: Vec<(bool, Option<CallTimings>)> = p
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Call(ev) => {
                Some((ev.last, ev.timings.as_ref().map(|t| t.decode().unwrap())))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![(false, None), (false, None), (true, Some(timings))]
    );
}
