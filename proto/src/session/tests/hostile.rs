//! Hostile and broken peers: tampered, duplicated, reordered and truncated frames, floods, wrong keys, protocol violations, backlog bounds.

use super::*;

#[test]
fn a_tampered_frame_ends_that_session() {
    let mut p = Pair::ready();
    let id = p.exec(true);
    p.tamper_up = Some(Box::new(|_, mut f: Frame| {
        let mut bytes = f.payload.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        f.payload = bytes.into();
        vec![f]
    }));
    p.client
        .write_stdin(id, Bytes::from_static(b"x"), p.now)
        .unwrap();
    p.run();
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Transport(TransportError::Decrypt)))
    ));
    // No stdin reached the process.
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Stdin { .. }))
    );
    assert!(p.server.is_done() || p.down.ended);
}

#[test]
fn duplicated_reordered_or_truncated_frames_end_the_session() {
    let cases: Vec<(&str, Tamper)> = vec![
        ("duplicated", Box::new(|_, f: Frame| vec![f.clone(), f])),
        (
            "truncated",
            Box::new(|_, mut f: Frame| {
                f.payload = f.payload.slice(..f.payload.len() / 2);
                vec![f]
            }),
        ),
        ("reordered", {
            let mut held: Option<Frame> = None;
            Box::new(move |_, f: Frame| match held.take() {
                None => {
                    held = Some(f);
                    vec![]
                }
                Some(first) => vec![f, first],
            })
        }),
    ];
    for (name, tamper) in cases {
        let mut p = Pair::ready();
        let id = p.exec(true);
        p.tamper_up = Some(tamper);
        for chunk in [&b"one"[..], b"two", b"three"] {
            // Once the session has failed, writes fail too.
            let _ = p
                .client
                .write_stdin(id, Bytes::copy_from_slice(chunk), p.now);
            p.run();
        }
        assert!(
            matches!(p.server_end(), Some(Err(SessionError::Transport(_)))),
            "{name}: {:?}",
            p.server_events
        );
    }
}

#[test]
fn a_peer_that_pings_and_never_reads_cannot_grow_the_exec_server() {
    let mut p = Pair::ready();
    p.client_reads = false;
    let bound = Limits::server().backlog + 2 * crate::limits::MAX_NOISE_MESSAGE;
    let mut peak = 0;
    for _ in 0..50_000 {
        // A hostile client: pings regardless of its own backlog.
        let _ = p.client.ping(p.now);
        p.run();
        peak = peak.max(p.server.backlog());
    }
    assert!(
        p.server.backlog() > Limits::server().backlog,
        "the flood filled the backlog"
    );
    assert!(peak <= bound, "exec-server backlog {peak} over {bound}");
    assert!(!p.server.wants_frames(), "it stopped reading");
    // Its frames wait in the link (bounded there by flow control), not in
    // the exec-server.
    assert!(!p.up.frames.is_empty());
    assert!(p.server_end().is_none(), "a slow reader is not an error");
}

#[test]
fn an_unauthorized_key_is_refused_in_the_clear() {
    let (client_key, server_key) = keys();
    let (stranger, _) = keys();
    let acceptor = Arc::new(Acceptor::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public()]),
    ));
    let mut p = Pair::from_parts(
        &stranger,
        &server_key.public(),
        acceptor,
        Limits::client(),
        Limits::server(),
    );
    p.run();
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Handshake(HandshakeError::Unauthorized { client }))) if *client == stranger.public()
    ));
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Refused(CloseReason::Unauthorized)))
    ));
}

#[test]
fn an_authenticated_client_without_a_slot_is_told_busy() {
    let mut p = Pair::new();
    let now = p.now;
    while let Some(t) = p.client.poll_transmit(now) {
        p.up.frames.push_back(t.frame);
    }
    let msg1 = p.up.frames.pop_front().unwrap();
    p.server.handle_frame(msg1, now);
    assert!(matches!(
        p.server.poll_event(),
        Some(ServerEvent::Authenticated { .. })
    ));
    // No slot: message 2 never leaves; a clear busy does.
    p.server.refuse_busy(now);
    let t = p.server.poll_transmit(now).unwrap();
    assert_eq!(t.frame.kind, FrameKind::Close as i32);
    assert_eq!(t.frame.close_reason, CloseReason::Busy as i32);
    p.down.frames.push_back(t.frame);
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Refused(CloseReason::Busy)))
    ));
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Handshake(HandshakeError::Busy)))
    ));
}

#[test]
fn a_wrong_server_key_fails_the_handshake() {
    let (client_key, server_key) = keys();
    let (other, _) = keys();
    let acceptor = Arc::new(Acceptor::new(
        server_key,
        AuthorizedKeys::from_keys([client_key.public()]),
    ));
    // The client pins a key the exec-server does not hold.
    let mut p = Pair::from_parts(
        &client_key,
        &other.public(),
        acceptor,
        Limits::client(),
        Limits::server(),
    );
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Refused(CloseReason::HandshakeFailed)))
    ));
}

#[test]
fn an_event_out_of_sequence_is_a_protocol_violation() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    // A hostile exec-server skips a sequence number.
    let transport = p.server.shared.transport.as_mut().unwrap();
    let env = crate::pb::session::Envelope {
        call_id: id,
        body: Some(crate::pb::session::envelope::Body::Event(
            crate::pb::session::TerminalEvent {
                timings: None,
                seq: 5,
                kind: Some(out("x")),
            },
        )),
        ..Default::default()
    };
    transport.send_message(&env).unwrap();
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Protocol(Violation::Sequence {
            expected: 1,
            got: 5,
            ..
        })))
    ));
    // The client told the exec-server with an authenticated close.
    assert!(matches!(p.server_end(), Some(Ok(Closed::Peer(r))) if r == "protocol error"));
}

#[test]
fn events_for_calls_never_started_are_violations() {
    let mut p = Pair::ready();
    let transport = p.server.shared.transport.as_mut().unwrap();
    let env = crate::pb::session::Envelope {
        call_id: 99,
        body: Some(crate::pb::session::envelope::Body::Event(
            crate::pb::session::TerminalEvent {
                timings: None,
                seq: 0,
                kind: Some(started()),
            },
        )),
        ..Default::default()
    };
    transport.send_message(&env).unwrap();
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Protocol(Violation::UnknownCall(99))))
    ));
}

#[test]
fn a_hostile_client_sending_stdin_for_a_null_stdin_call_is_cut_off() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    let transport = p.client.shared.transport.as_mut().unwrap();
    let env = crate::pb::session::Envelope {
        call_id: id,
        body: Some(crate::pb::session::envelope::Body::Stdin(
            crate::pb::session::StdinData {
                data: Bytes::from_static(b"x"),
            },
        )),
        ..Default::default()
    };
    transport.send_message(&env).unwrap();
    p.run();
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Protocol(Violation::Stdin(_))))
    ));
}

/// Starts a call whose client stops reading, and pushes its output until
/// the exec-server takes no more: the backlog's bound applied. Returns
/// the call.
fn fill_with_output(p: &mut Pair) -> u64 {
    let id = p.exec(false);
    p.push(id, started());
    p.client_reads = false;
    let chunk = Bytes::from(vec![1u8; crate::limits::MAX_CHUNK]);
    let mut pushed = 0;
    while p.server.wants_input() {
        p.server
            .push(id, Kind::Stdout(chunk.clone()), None, None, p.now)
            .unwrap();
        pushed += 1;
        p.run();
        assert!(pushed < 10_000, "the backlog bound never applied");
    }
    id
}

#[test]
fn the_exec_server_stops_taking_events_over_its_backlog() {
    let mut p = Pair::ready();
    fill_with_output(&mut p);
    assert!(p.server.backlog() <= Limits::server().backlog + crate::limits::MAX_CHUNK + 64);
    // Once the client reads again, the exec-server takes events again.
    p.client_reads = true;
    p.run();
    assert!(p.server.wants_input());
}

#[test]
fn an_exec_server_full_of_its_own_output_still_reads_its_client() {
    let mut p = Pair::ready();
    let id = fill_with_output(&mut p);
    assert!(p.server.backlog() > Limits::server().backlog);
    // Its own output stopped its output, not its reading: it still wants
    // frames (so its driver reads the link, and sees the link's end), and
    // the client's cancel gets through.
    assert!(p.server.wants_frames());
    p.client.forget(id, None, p.now);
    p.run();
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Cancel { .. })),
        "{:?}",
        p.server_events
    );
}

#[test]
fn the_clients_backlog_bound_stops_its_commands_not_its_reading() {
    let mut p = Pair::ready();
    let id = p.exec(true);
    p.server_reads = false;
    let chunk = Bytes::from(vec![2u8; crate::limits::MAX_CHUNK]);
    while p.client.wants_input() {
        p.client.write_stdin(id, chunk.clone(), p.now).unwrap();
        p.run();
    }
    // Over its backlog it still reads what the exec-server sends.
    assert!(p.client.wants_frames());
    p.push(id, started());
    assert_eq!(p.client_calls().len(), 1);
    // And a cancel still gets through the full backlog.
    p.client.forget(id, None, p.now);
    p.server_reads = true;
    p.run();
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Cancel { .. }))
    );
}
