//! Stdin: order, close, and the per-call window.

use super::*;

fn stdin_received(p: &Pair, id: u64) -> Vec<u8> {
    p.server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Stdin { call_id, data } if *call_id == id => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn stdin_arrives_in_order_then_closes() {
    let mut p = Pair::ready();
    let id = p.exec(true);
    p.server_events.clear();
    let big = Bytes::from(vec![7u8; crate::limits::MAX_CHUNK * 2 + 5]);
    p.client
        .write_stdin(id, Bytes::from_static(b"first "), p.now)
        .unwrap();
    p.client.write_stdin(id, big.clone(), p.now).unwrap();
    p.client
        .write_stdin(id, Bytes::from_static(b"last"), p.now)
        .unwrap();
    p.client.close_stdin(id, None, p.now).unwrap();
    assert_eq!(
        p.client.write_stdin(id, Bytes::from_static(b"x"), p.now),
        Err(CallError::StdinClosed(id))
    );
    p.run();
    let mut got = Vec::new();
    let mut closed = false;
    for ev in &p.server_events {
        match ev {
            ServerEvent::Stdin { call_id, data } => {
                assert_eq!(*call_id, id);
                assert!(!closed, "stdin after its close");
                assert!(data.len() <= crate::limits::MAX_CHUNK);
                got.extend_from_slice(data);
            }
            ServerEvent::StdinClose { call_id, .. } => {
                assert_eq!(*call_id, id);
                closed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(closed);
    let mut want = b"first ".to_vec();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"last");
    assert_eq!(got, want);
}

#[test]
fn stdin_is_refused_for_a_call_without_a_pipe() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    assert_eq!(
        p.client.write_stdin(id, Bytes::from_static(b"x"), p.now),
        Err(CallError::StdinClosed(id))
    );
    assert_eq!(
        p.client.close_stdin(id, None, p.now),
        Err(CallError::StdinClosed(id))
    );
}

#[test]
fn stdin_beyond_the_window_waits_for_the_process_and_arrives_intact() {
    let mut p = Pair::ready();
    p.server_consumes = false;
    let id = p.exec(true);
    let window = Limits::server().stdin_window as usize;
    let data: Vec<u8> = (0..4 * window).map(|i| (i % 251) as u8).collect();
    p.client
        .write_stdin(id, Bytes::from(data.clone()), p.now)
        .unwrap();
    p.client.close_stdin(id, None, p.now).unwrap();
    p.run();
    let first = stdin_received(&p, id).len();
    assert!(
        first >= window && first <= window + crate::limits::MAX_CHUNK,
        "{first}"
    );
    assert!(
        p.client.backlog() >= 4 * window - first,
        "the rest waits at the client"
    );
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::StdinClose { .. }))
    );
    // The process takes what it got: the rest follows, then the close.
    p.server_consumes = true;
    let got = first as u64;
    p.server.stdin_taken(id, got, p.now).unwrap();
    p.run();
    assert_eq!(stdin_received(&p, id), data);
    assert!(matches!(
        p.server_events.last(),
        Some(ServerEvent::StdinClose { call_id, .. }) if *call_id == id
    ));
    assert_eq!(p.client.backlog(), 0);
}

#[test]
fn a_process_that_never_reads_stdin_holds_up_no_signal_cancel_or_other_call() {
    let mut p = Pair::ready();
    p.server_consumes = false;
    let stuck = p.exec(true);
    p.push(stuck, started());
    p.client
        .write_stdin(stuck, Bytes::from(vec![0u8; 4 << 20]), p.now)
        .unwrap();
    p.run();
    assert!(!p.client.wants_input(), "the client holds the stdin back");
    assert!(p.server.wants_frames(), "the exec-server keeps reading");
    p.server_events.clear();
    // A signal and a cancel for the stuck call still get through, and so
    // does another call.
    p.client.signal(stuck, 2, None, p.now).unwrap();
    p.client.cancel(stuck, None, p.now).unwrap();
    p.run();
    assert!(matches!(
        p.server_events.as_slice(),
        [ServerEvent::Signal { .. }, ServerEvent::Cancel { .. }]
    ));
    p.push(stuck, exit(137));
    assert_eq!(p.client.backlog(), 0, "its queued stdin went with it");
    let other = p.exec(false);
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Exec { call_id, .. } if *call_id == other))
    );
}

#[test]
fn a_client_that_ignores_the_stdin_window_is_cut_off() {
    let mut p = Pair::ready();
    p.server_consumes = false;
    let id = p.exec(true);
    let transport = p.client.shared.transport.as_mut().unwrap();
    for _ in 0..(Limits::server().stdin_window as usize / crate::limits::MAX_CHUNK + 2) {
        let env = crate::pb::session::Envelope {
            call_id: id,
            body: Some(crate::pb::session::envelope::Body::Stdin(
                crate::pb::session::StdinData {
                    data: Bytes::from(vec![0u8; crate::limits::MAX_CHUNK]),
                },
            )),
            ..Default::default()
        };
        transport.send_message(&env).unwrap();
    }
    p.run();
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Protocol(Violation::StdinWindow(_))))
    ));
}

#[test]
fn a_signal_overtakes_stdin_the_window_let_go() {
    // A window wide enough for all of it: only the session's own queueing
    // could hold the signal behind the stdin.
    let wide = Limits {
        stdin_window: 8 << 20,
        stdin_window_max: 8 << 20,
        ..Limits::server()
    };
    let mut p = Pair::with(Limits::client(), wide);
    p.run();
    p.client_events.clear();
    p.server_events.clear();
    let id = p.exec(true);
    p.client
        .write_stdin(id, Bytes::from(vec![0u8; 4 << 20]), p.now)
        .unwrap();
    p.client.signal(id, 2, None, p.now).unwrap();
    p.run();
    let mut before = 0;
    let mut signalled = false;
    let mut total = 0;
    for e in &p.server_events {
        match e {
            ServerEvent::Stdin { data, .. } => {
                total += data.len();
                if !signalled {
                    before += data.len();
                }
            }
            ServerEvent::Signal { .. } => signalled = true,
            _ => {}
        }
    }
    assert!(signalled);
    assert_eq!(total, 4 << 20, "all of the stdin arrived");
    // A few chunks at most went before it (the lane), not the window.
    assert!(
        before <= 256 * 1024,
        "{before} bytes of stdin went before the signal"
    );
}
