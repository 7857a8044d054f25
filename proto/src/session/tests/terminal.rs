//! Terminal calls: the terminal request and its bounds, resizes and their
//! refusals on either side.

use super::*;
use crate::pb::session::{Resize, Terminal, envelope::Body};

fn terminal_request(rows: u32, cols: u32, term: &str) -> ExecRequest {
    ExecRequest {
        argv: vec![Bytes::from_static(b"sh")],
        stdin: StdinMode::Pipe as i32,
        terminal: Some(Terminal {
            rows,
            cols,
            term: term.into(),
        }),
        ..Default::default()
    }
}

impl Pair {
    /// Starts a terminal call of `rows` by `cols`.
    fn exec_terminal(&mut self, rows: u32, cols: u32) -> u64 {
        let id = self.client.next_call_id();
        self.client
            .start_call(
                id,
                terminal_request(rows, cols, "xterm-256color"),
                None,
                None,
                self.now,
            )
            .unwrap();
        self.run();
        id
    }

    /// Sends a raw resize, as a peer that skips the client machine's
    /// checks would.
    fn raw_resize(&mut self, call_id: u64, rows: u32, cols: u32) {
        self.client
            .shared
            .send(
                call_id,
                None,
                Body::Resize(Resize { rows, cols }),
                None,
                self.now,
            )
            .unwrap();
        self.run();
    }

    fn resizes(&self) -> Vec<(u64, u16, u16)> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Resize {
                    call_id,
                    rows,
                    cols,
                } => Some((*call_id, *rows, *cols)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_terminal_request_reaches_the_exec_server_whole() {
    let mut p = Pair::ready();
    let id = p.exec_terminal(30, 100);
    let [
        ServerEvent::Exec {
            call_id, request, ..
        },
    ] = p.server_events.as_slice()
    else {
        panic!("{:?}", p.server_events)
    };
    assert_eq!(*call_id, id);
    assert_eq!(
        request.terminal,
        Some(Terminal {
            rows: 30,
            cols: 100,
            term: "xterm-256color".into()
        })
    );
}

#[test]
fn resizes_reach_the_call_in_order_and_are_not_marked() {
    let mut p = Pair::ready();
    let id = p.exec_terminal(24, 80);
    p.push(id, started());
    p.server_events.clear();
    let frames = p.up_hops.len();
    p.client.resize(id, 40, 120, p.now).unwrap();
    p.client.resize(id, 1, 1, p.now).unwrap();
    p.client.resize(id, 10_000, 10_000, p.now).unwrap();
    p.run();
    assert_eq!(
        p.resizes(),
        vec![(id, 40, 120), (id, 1, 1), (id, 10_000, 10_000)]
    );
    // Untraced: no hop header on their frames, nothing handed back.
    assert!(p.up_hops[frames..].iter().all(String::is_empty));
    assert!(p.client_done.is_empty());
    assert!(p.server_end().is_none() && p.client_end().is_none());
}

#[test]
fn the_client_machine_refuses_bad_resizes_locally() {
    let mut p = Pair::ready();
    let pipe = p.exec(true);
    let tty = p.exec_terminal(24, 80);
    p.server_events.clear();
    assert_eq!(
        p.client.resize(pipe, 24, 80, p.now),
        Err(CallError::NoTerminal(pipe))
    );
    assert_eq!(
        p.client.resize(tty, 0, 80, p.now),
        Err(CallError::TerminalSize { rows: 0, cols: 80 })
    );
    assert_eq!(
        p.client.resize(tty, 24, 10_001, p.now),
        Err(CallError::TerminalSize {
            rows: 24,
            cols: 10_001
        })
    );
    assert_eq!(
        p.client.resize(tty + 5, 24, 80, p.now),
        Err(CallError::UnknownCall(tty + 5))
    );
    p.run();
    assert!(p.server_events.is_empty(), "{:?}", p.server_events);
    // A call that has ended takes no resize either.
    p.push(tty, started());
    p.push(tty, exit(0));
    assert_eq!(
        p.client.resize(tty, 24, 80, p.now),
        Err(CallError::Finished(tty))
    );
}

#[test]
fn the_client_machine_refuses_a_terminal_out_of_bounds() {
    let mut p = Pair::ready();
    for (rows, cols) in [(0, 80), (24, 0), (10_001, 80), (24, u32::MAX)] {
        let id = p.client.next_call_id();
        assert_eq!(
            p.client
                .start_call(id, terminal_request(rows, cols, "xterm"), None, None, p.now),
            Err(CallError::TerminalSize { rows, cols })
        );
    }
    let id = p.client.next_call_id();
    assert_eq!(
        p.client
            .start_call(id, terminal_request(24, 80, "a b"), None, None, p.now),
        Err(CallError::TermValue)
    );
    let long = "x".repeat(crate::limits::MAX_TERM + 1);
    assert_eq!(
        p.client
            .start_call(id, terminal_request(24, 80, &long), None, None, p.now),
        Err(CallError::TermValue)
    );
    p.run();
    assert!(p.server_events.is_empty(), "{:?}", p.server_events);
    assert_eq!(p.client.open_calls(), 0);
    // An empty TERM is fine: the environment's stands.
    p.client
        .start_call(id, terminal_request(24, 80, ""), None, None, p.now)
        .unwrap();
}

#[test]
fn the_exec_server_refuses_a_terminal_out_of_bounds_as_a_bad_request() {
    let mut p = Pair::ready();
    // Sent raw: the client machine would refuse it first. The client
    // takes no events for a call it does not know, so it does not read.
    p.client_reads = false;
    let cases = [
        (7, terminal_request(0, 80, "xterm")),
        (8, terminal_request(24, 10_001, "xterm")),
        (9, terminal_request(24, 80, "bad\nterm")),
    ];
    for (id, req) in cases {
        p.client
            .shared
            .send(id, None, Body::Exec(req), None, p.now)
            .unwrap();
    }
    p.run();
    let refused: Vec<(u64, ExecErrorKind, &str)> = p
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Refused {
                call_id,
                kind,
                message,
                ..
            } => Some((*call_id, *kind, *message)),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 3, "{:?}", p.server_events);
    assert!(
        refused
            .iter()
            .all(|(_, kind, _)| *kind == ExecErrorKind::BadRequest)
    );
    assert!(refused[0].2.contains("terminal size"), "{}", refused[0].2);
    assert!(refused[2].2.contains("TERM"), "{}", refused[2].2);
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Exec { .. }))
    );
    assert_eq!(p.server.open_calls(), 0);
    assert!(p.server_end().is_none());
}

#[test]
fn the_exec_server_drops_resizes_it_cannot_apply_and_goes_on() {
    let mut p = Pair::ready();
    let pipe = p.exec(false);
    let tty = p.exec_terminal(24, 80);
    p.push(tty, started());
    p.server_events.clear();
    // Out of bounds, or for a call without a terminal: dropped.
    p.raw_resize(tty, 0, 80);
    p.raw_resize(tty, 24, 10_001);
    p.raw_resize(tty, 70_000, 80);
    p.raw_resize(pipe, 24, 80);
    assert!(p.resizes().is_empty(), "{:?}", p.server_events);
    // The session, the call and its terminal go on.
    p.client.resize(tty, 50, 132, p.now).unwrap();
    p.run();
    assert_eq!(p.resizes(), vec![(tty, 50, 132)]);
    p.push(tty, out("still here"));
    p.push(tty, exit(0));
    assert!(p.server_end().is_none() && p.client_end().is_none());
    assert_eq!(p.client_calls().last().map(|c| c.3), Some(true));
}

#[test]
fn a_resize_crossing_the_final_event_is_harmless() {
    let mut p = Pair::ready();
    let id = p.exec_terminal(24, 80);
    p.push(id, started());
    p.server_events.clear();
    p.client.resize(id, 30, 90, p.now).unwrap();
    p.server.push(id, exit(0), None, None, p.now).unwrap();
    p.run();
    assert!(p.resizes().is_empty(), "{:?}", p.server_events);
    assert!(p.server_end().is_none() && p.client_end().is_none());
    assert_eq!(p.server.open_calls(), 0);
}

#[test]
fn a_resize_for_a_call_that_never_was_is_a_violation() {
    let mut p = Pair::ready();
    p.raw_resize(42, 24, 80);
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Protocol(Violation::UnknownCall(42))))
    ));
}

#[test]
fn a_resize_from_the_exec_server_is_a_violation() {
    let mut p = Pair::ready();
    let id = p.exec_terminal(24, 80);
    p.server
        .shared
        .send(
            id,
            None,
            Body::Resize(Resize { rows: 1, cols: 1 }),
            None,
            p.now,
        )
        .unwrap();
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Protocol(Violation::UnexpectedMessage(_))))
    ));
}

#[test]
fn resizes_wait_like_any_message_while_the_exec_server_does_not_read() {
    let mut p = Pair::ready();
    let id = p.exec_terminal(24, 80);
    p.server_events.clear();
    p.server_reads = false;
    for i in 1..=100u16 {
        p.client.resize(id, i, i, p.now).unwrap();
        p.run();
    }
    assert!(p.resizes().is_empty());
    p.server_reads = true;
    p.run();
    let got = p.resizes();
    assert_eq!(got.len(), 100);
    assert_eq!(
        got.last(),
        Some(&(id, 100, 100)),
        "the latest size comes last"
    );
}
