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
    // The exec-server falls silent (hung, or the path black-holed both
    // ways): it neither answers nor, now, asks whether the client is there.
    p.server_frozen = true;
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

/// A client that never pings by itself.
fn quiet_client() -> Limits {
    let mut client = Limits::client();
    client.keepalive = Duration::from_secs(3600);
    client.idle_timeout = Duration::from_secs(7200);
    client
}

#[test]
fn a_silent_client_is_dropped_by_the_exec_server() {
    let mut p = Pair::with(quiet_client(), Limits::server());
    p.run();
    // The client is gone: nothing it is sent is read or answered.
    p.client_reads = false;
    p.advance(Duration::from_secs(119));
    assert!(p.server_end().is_none());
    p.advance(Duration::from_secs(2));
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Timeout(Stage::Idle)))
    ));
}

#[test]
fn a_live_client_that_never_pings_answers_the_exec_servers_probes() {
    // An exec-server that gives up on a client after 2 s of silence asks
    // after 0.5 s; the client answers, so hours of quiet end nothing.
    let mut p = Pair::with(quiet_client(), Limits::server_idle(Duration::from_secs(2)));
    p.run();
    p.advance(Duration::from_secs(3600));
    assert!(p.client_end().is_none() && p.server_end().is_none());
    // One probe per quiet period: about one every half second, not a
    // stream of them.
    let probes = p.server.pings_sent;
    assert!((7000..=7200).contains(&probes), "{probes}");
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
    let c = p.client.shared.transport.as_ref().unwrap().stats();
    let s = p.server.shared.transport.as_ref().unwrap().stats();
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

#[test]
fn the_exec_servers_clock_status_comes_in_the_hello_answer_and_pongs() {
    use crate::session::peer_clock::{Source, Status};
    let mut p = Pair::new();
    let same = Status {
        boot: Some([7; 16]),
        max_error: None,
    };
    *p.acceptor.clock.write().unwrap() = Some(same.to_wire());
    p.run();
    assert!(p.client.is_ready());
    let now = p.now.unix_nanos();
    // Told the same boot id as ours: the same clock, exactly.
    let o = p.client.clock_interval(&same, now).unwrap();
    assert_eq!(o.source, Source::SameHost);
    assert_eq!((o.offset_nanos, o.bound_nanos()), (0, 0));
    // Another kernel, unsynchronized: the hello's two-way sample.
    let other = Status {
        boot: Some([8; 16]),
        max_error: Some(Duration::from_millis(1)),
    };
    assert_eq!(
        p.client.clock_interval(&other, now).unwrap().source,
        Source::TwoWay
    );
    // The exec-server's kernel becomes synchronized with a 1 ms error;
    // the next pong says so. Both synchronized, ± 2 ms: but the
    // simulated round trips are tighter, so the two-way estimate holds.
    let synced = Status {
        boot: Some([7; 16]),
        max_error: Some(Duration::from_millis(1)),
    };
    *p.acceptor.clock.write().unwrap() = Some(synced.to_wire());
    p.advance(Duration::from_secs(31));
    let now = p.now.unix_nanos();
    let o = p.client.clock_interval(&other, now).unwrap();
    assert_eq!(o.source, Source::TwoWay);
    assert!(o.bound < Duration::from_millis(2), "{o:?}");
    // An hour later with no new sample (pings stopped by a frozen
    // exec-server would end the session, so look ahead instead): drift
    // makes the synchronized bound the tighter one.
    let later = now + 3_600 * 1_000_000_000;
    let o = p.client.clock_interval(&other, later).unwrap();
    assert_eq!(o.source, Source::Synchronized);
    assert_eq!(o.bound, Duration::from_millis(2));
}
