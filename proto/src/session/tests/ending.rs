//! How sessions end: clean close, linger, shutdown, a lost link.

use super::*;

#[test]
fn a_clean_close_ends_both_sides_and_the_calls() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.client.close(p.now);
    p.run();
    assert!(matches!(p.client_end(), Some(Ok(Closed::Local))));
    assert!(
        matches!(p.server_end(), Some(Ok(Closed::Peer(r))) if r == "client closed the session"),
        "{:?}",
        p.server_events
    );
    assert!(p.up.ended && p.down.ended);
    assert!(p.client.is_done() && p.server.is_done());
    // The running call ended with the session.
    assert_eq!(p.server.open_calls(), 0);
    assert_eq!(
        p.client
            .start_call(99, ExecRequest::default(), None, None, p.now),
        Err(CallError::Ended)
    );
}

#[test]
fn a_close_sends_what_was_queued_first() {
    let mut p = Pair::ready();
    let id = p.exec(true);
    p.server_events.clear();
    p.client
        .write_stdin(id, Bytes::from_static(b"tail"), p.now)
        .unwrap();
    p.client.close(p.now);
    p.run();
    assert!(matches!(
        p.server_events.as_slice(),
        [
            ServerEvent::Stdin { .. },
            ServerEvent::Ended(Ok(Closed::Peer(_)))
        ]
    ));
}

#[test]
fn linger_is_bounded_when_the_peer_never_ends_the_link() {
    let mut p = Pair::ready();
    // The exec-server reads nothing any more: it never ends its half.
    p.server_reads = false;
    p.client.close(p.now);
    p.run();
    assert!(p.up.ended);
    assert!(!p.client.is_done(), "lingering for the peer's end");
    p.advance(Duration::from_millis(1999));
    assert!(!p.client.is_done());
    p.advance(Duration::from_millis(2));
    assert!(p.client.is_done());
}

#[test]
fn the_exec_server_shutting_down_ends_the_clients_session() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.server.close("exec-server shutting down", p.now);
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Ok(Closed::Peer(r))) if r == "exec-server shutting down"
    ));
    assert!(p.client.is_done() && p.server.is_done());
    assert_eq!(p.client.cancel(id, None, p.now), Err(CallError::Ended));
}

#[test]
fn a_lost_link_ends_the_session_with_its_cause() {
    let mut p = Pair::ready();
    p.exec(false);
    let reset = LinkFailure::new(LinkFailureKind::Broken, "reset");
    p.client.handle_link_end(Some(reset.clone()), p.now);
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::LinkFailed(f))) if *f == reset && f.kind() == LinkFailureKind::Broken
    ));
    // The exec-server sees its link end in turn.
    assert!(matches!(p.server_end(), Some(Err(SessionError::LinkEnded))));
}
