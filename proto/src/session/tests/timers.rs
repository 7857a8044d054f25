//! Timers on simulated time: keepalive, idle, handshake deadlines, rekey.

use super::*;

#[test]
fn keepalive_pings_measure_the_clock_and_keep_the_session() {
    let mut p = Pair::ready();
    assert!(p.client.clock_offset().is_some(), "the hello gave a sample");
    p.advance(Duration::from_secs(29));
    assert!(p.client_events.is_empty());
    p.advance(Duration::from_secs(2));
    assert!(
        matches!(p.client_events.as_slice(), [ClientEvent::Pong { .. }]),
        "{:?}",
        p.client_events
    );
    // Hours of quiet, answered each time: the session lives on.
    p.advance(Duration::from_secs(3 * 3600));
    assert!(p.client_end().is_none() && p.server_end().is_none());
    let pongs = p
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Pong { .. }))
        .count();
    assert_eq!(pongs, 3 * 3600 / 30 + 1);
}

#[test]
fn a_silent_exec_server_is_declared_dead_after_the_idle_timeout() {
    let mut p = Pair::ready();
    // The exec-server stops reading (and so answering).
    p.server_reads = false;
    p.advance(Duration::from_secs(89));
    assert!(p.client_end().is_none());
    p.advance(Duration::from_secs(2));
    assert!(
        matches!(
            p.client_end(),
            Some(Err(SessionError::Timeout(Stage::Idle)))
        ),
        "{:?}",
        p.client_events
    );
}

#[test]
fn a_silent_client_is_dropped_by_the_exec_server() {
    let mut client = Limits::client();
    // A client that never pings.
    client.keepalive = Duration::from_secs(3600);
    client.idle_timeout = Duration::from_secs(7200);
    let mut p = Pair::with(client, Limits::server());
    p.run();
    p.advance(Duration::from_secs(119));
    assert!(p.server_end().is_none());
    p.advance(Duration::from_secs(2));
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Timeout(Stage::Idle)))
    ));
}

#[test]
fn a_slow_reader_is_not_taken_for_a_dead_peer() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.client_events.clear();
    // The caller stops taking events: the next one is handed back.
    p.server.push(id, out("one"), None, None, p.now).unwrap();
    p.client_reads = false;
    p.run();
    let frame = p.down.frames.pop_front().unwrap();
    p.client.handle_frame(frame, p.now);
    let ev = p.client.poll_event().unwrap();
    p.client.defer(ev);
    assert!(!p.client.wants_frames());
    // Far longer than the idle timeout: neither side gives up.
    p.advance(Duration::from_secs(600));
    assert!(p.client_end().is_none() && p.server_end().is_none());
    // The caller catches up; everything resumes.
    p.client_reads = true;
    p.run();
    p.push(id, exit(0));
    assert_eq!(p.client_calls().len(), 2);
    assert!(p.client_end().is_none());
}

#[test]
fn rekey_under_traffic() {
    let mut client = Limits::client();
    client.noise.rekey_after_messages = 3;
    let mut server = Limits::server();
    server.noise.rekey_after_messages = 5;
    server.noise.rekey_after = Duration::from_secs(60);
    let mut p = Pair::with(client, server);
    p.run();
    let id = p.exec(true);
    p.push(id, started());
    let mut want_out = Vec::new();
    let mut want_in = Vec::new();
    for i in 0..200u32 {
        let chunk = Bytes::from(i.to_be_bytes().repeat(2000));
        want_out.extend_from_slice(&chunk);
        p.server
            .push(id, Kind::Stdout(chunk.clone()), None, None, p.now)
            .unwrap();
        want_in.extend_from_slice(&chunk);
        p.client.write_stdin(id, chunk, p.now).unwrap();
        p.run();
        if i % 20 == 0 {
            // Time passes too: the exec-server also rekeys by time.
            p.advance(Duration::from_secs(61));
        }
    }
    p.push(id, exit(0));
    let got_out: Vec<u8> = p
        .client_calls()
        .iter()
        .filter_map(|c| match &c.2 {
            Kind::Stdout(d) => Some(d.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    let got_in: Vec<u8> = p
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Stdin { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(got_out == want_out, "stdout differs after rekeys");
    assert!(got_in == want_in, "stdin differs after rekeys");
    let c = p.client.link.transport.as_ref().unwrap().stats();
    let s = p.server.link.transport.as_ref().unwrap().stats();
    assert!(c.rekeys_sent > 10, "{c:?}");
    assert!(s.rekeys_sent > 10, "{s:?}");
    assert_eq!(c.rekeys_sent, s.rekeys_received);
    assert_eq!(s.rekeys_sent, c.rekeys_received);
}

#[test]
fn a_peer_that_never_answers_the_handshake() {
    let mut p = Pair::new();
    p.server_frozen = true;
    p.advance(Duration::from_secs(14));
    assert!(p.client_end().is_none());
    p.advance(Duration::from_secs(2));
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Timeout(Stage::Handshake)))
    ));
    assert!(p.client.is_done(), "nothing to linger for");
}

#[test]
fn a_client_that_never_sends_its_handshake_is_dropped_with_a_clear_timeout() {
    let (_, server_key) = keys();
    let acceptor = Arc::new(Acceptor::new(server_key, AuthorizedKeys::default()));
    let now = Now::system();
    let mut s: ServerSession<Tag> = ServerSession::new(acceptor, Limits::server(), now);
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, now.at + Duration::from_secs(10));
    let later = now.after(Duration::from_secs(10));
    s.handle_timeout(later);
    let t = s.poll_transmit(later).unwrap();
    assert_eq!(t.frame.kind, FrameKind::Close as i32);
    assert_eq!(t.frame.close_reason, CloseReason::Timeout as i32);
    assert!(s.poll_end_link());
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Ended(Err(SessionError::Timeout(
            Stage::Handshake
        ))))
    ));
}
