//! The first call riding in handshake message 1 (early data): when the
//! exec-server runs it from there, when it asks for it again over the
//! session, and that no message 1, however replayed, runs a call twice.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;

use super::*;
use crate::noise::{Early, EarlyRefusal, EarlyTicket, MAX_EARLY_DATA, ReplayGuard};

const WINDOW: Duration = Duration::from_secs(120);

fn request() -> ExecRequest {
    ExecRequest {
        argv: vec![Bytes::from_static(b"prog")],
        ..Default::default()
    }
}

/// An acceptor (one run of an exec-server) admitting `client`, whose
/// replay guard has room for `capacity` initiations.
fn acceptor(server: &StaticKeypair, client: &StaticKeypair, capacity: usize) -> Arc<Acceptor> {
    let mut a = Acceptor::new(server.clone(), AuthorizedKeys::from_keys([client.public()]));
    a.replay = Mutex::new(ReplayGuard::new(WINDOW, capacity));
    Arc::new(a)
}

/// A run of an exec-server with room in its replay guard.
fn running(server: &StaticKeypair, client: &StaticKeypair) -> Arc<Acceptor> {
    acceptor(server, client, 1024)
}

/// The ticket `acceptor`'s run hands out in its hello answers.
fn ticket_of(acceptor: &Acceptor) -> EarlyTicket {
    acceptor.replay.lock().unwrap().ticket().unwrap()
}

/// A pair whose client starts with its first call in message 1, with the
/// ticket of `acceptor`'s run, its wall clock `skew` away from the
/// exec-server's; the frames it sends are recorded.
fn early_pair(
    client_key: &StaticKeypair,
    server_key: &StaticKeypair,
    acceptor: Arc<Acceptor>,
    now: Now,
    skew: Duration,
) -> (Pair, Rc<RefCell<Vec<Frame>>>) {
    let ticket = ticket_of(&acceptor);
    early_pair_with(client_key, server_key, acceptor, now, skew, ticket)
}

/// [`early_pair`], with `ticket` in message 1.
fn early_pair_with(
    client_key: &StaticKeypair,
    server_key: &StaticKeypair,
    acceptor: Arc<Acceptor>,
    now: Now,
    skew: Duration,
    ticket: EarlyTicket,
) -> (Pair, Rc<RefCell<Vec<Frame>>>) {
    let client_now = Now {
        at: now.at,
        wall: now.wall - skew,
    };
    let client = ClientSession::with_call(
        client_key,
        &server_key.public(),
        Limits::client(),
        client_now,
        FirstCall {
            id: 1,
            request: request(),
            trace: None,
            mark: Some(Mark::new("exec", None)),
            ticket,
        },
    )
    .unwrap();
    let mut p = Pair::with_client(
        client,
        client_key,
        &server_key.public(),
        acceptor,
        Limits::server(),
        now,
    );
    let sent = Rc::new(RefCell::new(Vec::new()));
    let record = Rc::clone(&sent);
    p.tamper_up = Some(Box::new(move |_, f: Frame| {
        record.borrow_mut().push(f.clone());
        vec![f]
    }));
    (p, sent)
}

fn execs(events: &[ServerEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Exec { call_id, .. } => Some(*call_id),
            _ => None,
        })
        .collect()
}

/// Feeds `frames` (a recorded client's) to a new exec-server session of
/// `acceptor`, and returns its events.
fn replay_to(acceptor: &Arc<Acceptor>, frames: &[Frame], now: Now) -> Vec<ServerEvent> {
    let mut s: ServerSession<Tag> = ServerSession::new(Arc::clone(acceptor), Limits::server(), now);
    let mut events = Vec::new();
    for f in frames {
        s.handle_frame(f.clone(), now);
        while let Some(ev) = s.poll_event() {
            events.push(ev);
        }
        while s.poll_transmit(now).is_some() {}
    }
    s.handle_link_end(None, now);
    while let Some(ev) = s.poll_event() {
        events.push(ev);
    }
    events
}

#[test]
fn an_accepted_call_runs_from_message_1_in_one_round_trip() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let acceptor = running(&server_key, &client_key);
    let (mut p, _) = early_pair(&client_key, &server_key, acceptor, now, Duration::ZERO);
    p.run();
    assert_eq!(p.server.early_data(), Some(Early::Accepted));
    assert_eq!(execs(&p.server_events), [1]);
    // The mark came back with message 1.
    assert_eq!(p.client_done, ["exec"]);
    assert!(p.client.is_ready());
    p.push(1, started());
    p.push(1, exit(0));
    assert_eq!(p.client_calls().len(), 2);
    assert_eq!(
        p.client.counters(),
        Counters {
            flights: 1,
            round_trips: Some(1),
            early_retries: 0,
        }
    );
    // Only the one frame went up: message 1 carried everything.
    assert_eq!(p.up_hops.len(), 1);
    // The session goes on as any other: a second call.
    let second = p.exec(false);
    p.push(second, started());
    assert_eq!(execs(&p.server_events), [1, second]);
}

#[test]
fn a_first_flight_sent_again_after_a_refusal_counts_one_round_trip_more() {
    // What the client does when the relay refuses the `Open` as busy:
    // message 1, the call in it, goes again as it was.
    let (client_key, server_key) = keys();
    let now = Now::system();
    let acceptor = running(&server_key, &client_key);
    let (mut p, _) = early_pair(&client_key, &server_key, acceptor, now, Duration::ZERO);
    p.client.first_flight_sent_again();
    p.run();
    p.push(1, started());
    assert_eq!(execs(&p.server_events), [1]);
    assert_eq!(
        p.client.counters(),
        Counters {
            flights: 2,
            round_trips: Some(2),
            early_retries: 0,
        }
    );
}

#[test]
fn the_same_message_1_replayed_inside_the_window_is_refused_and_runs_nothing() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let acceptor = running(&server_key, &client_key);
    let (mut p, sent) = early_pair(
        &client_key,
        &server_key,
        Arc::clone(&acceptor),
        now,
        Duration::ZERO,
    );
    p.run();
    p.push(1, started());
    assert_eq!(execs(&p.server_events), [1]);
    let recorded = sent.borrow().clone();
    // Every client frame again, a little later, to the same exec-server.
    let events = replay_to(&acceptor, &recorded, now.after(Duration::from_secs(5)));
    assert!(execs(&events).is_empty(), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            ServerEvent::Ended(Err(SessionError::Handshake(HandshakeError::Replay)))
        )),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ServerEvent::Authenticated { .. })),
        "no session for a replay: {events:?}"
    );
}

/// A call whose early data was refused: sent again once over the session,
/// run exactly once, in two round trips.
fn runs_once_after_a_retry(mut p: Pair, why: EarlyRefusal) {
    p.run();
    assert_eq!(p.server.early_data(), Some(Early::Refused(why)));
    assert!(p.client.is_ready());
    assert_eq!(execs(&p.server_events), [1], "{:?}", p.server_events);
    p.push(1, started());
    p.push(1, exit(0));
    assert_eq!(p.client_calls().len(), 2);
    assert_eq!(
        p.client.counters(),
        Counters {
            flights: 2,
            round_trips: Some(2),
            early_retries: 1,
        }
    );
    // Nothing more is sent again later.
    p.advance(Duration::from_secs(1));
    assert_eq!(execs(&p.server_events), [1]);
}

#[test]
fn a_timestamp_outside_the_window_is_run_once_after_the_handshake() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let acceptor = running(&server_key, &client_key);
    // The client's clock is behind the exec-server's by more than the
    // window.
    let (p, _) = early_pair(
        &client_key,
        &server_key,
        acceptor,
        now,
        WINDOW + Duration::from_secs(1),
    );
    runs_once_after_a_retry(p, EarlyRefusal::Stale);
}

#[test]
fn an_exec_server_restarted_within_the_window_runs_the_call_once_after_the_handshake() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    // The client learned the ticket of a run that has since ended; the
    // new run's register knows nothing of what that one accepted.
    let before = running(&server_key, &client_key);
    let restarted = running(&server_key, &client_key);
    let (p, _) = early_pair_with(
        &client_key,
        &server_key,
        restarted,
        now,
        Duration::ZERO,
        ticket_of(&before),
    );
    runs_once_after_a_retry(p, EarlyRefusal::Restarted);
}

#[test]
fn a_client_that_knows_no_ticket_runs_the_call_once_after_the_handshake_and_learns_one() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let acceptor = running(&server_key, &client_key);
    let (mut p, _) = early_pair_with(
        &client_key,
        &server_key,
        Arc::clone(&acceptor),
        now,
        Duration::ZERO,
        EarlyTicket::NONE,
    );
    p.run();
    assert_eq!(
        p.server.early_data(),
        Some(Early::Refused(EarlyRefusal::Restarted))
    );
    assert_eq!(execs(&p.server_events), [1]);
    // The hello answer hands it this run's ticket: its next session's
    // early data runs from message 1.
    let ready = p
        .client_events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Ready(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ready.early_ticket, Some(ticket_of(&acceptor)));
    let (mut next, _) = early_pair_with(
        &client_key,
        &server_key,
        acceptor,
        now,
        Duration::ZERO,
        ready.early_ticket.unwrap(),
    );
    next.run();
    assert_eq!(next.server.early_data(), Some(Early::Accepted));
    assert_eq!(execs(&next.server_events), [1]);
}

#[test]
fn a_message_1_replayed_to_a_restarted_exec_server_runs_nothing() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let before = running(&server_key, &client_key);
    let (mut p, sent) = early_pair(&client_key, &server_key, before, now, Duration::ZERO);
    p.run();
    assert_eq!(execs(&p.server_events), [1]);
    let recorded = sent.borrow().clone();
    // The exec-server restarts (an empty register) and the recording is
    // played to it, inside the window and after it.
    let later = now.after(Duration::from_secs(10));
    let restarted = running(&server_key, &client_key);
    for at in [later, now.after(WINDOW + Duration::from_secs(30))] {
        let events = replay_to(&restarted, &recorded, at);
        assert!(execs(&events).is_empty(), "{events:?}");
    }
}

#[test]
fn a_full_register_runs_the_call_once_after_the_handshake() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let acceptor = acceptor(&server_key, &client_key, 1);
    // A first session takes the register's only place.
    let (mut first, _) = early_pair(
        &client_key,
        &server_key,
        Arc::clone(&acceptor),
        now,
        Duration::ZERO,
    );
    first.run();
    assert_eq!(first.server.early_data(), Some(Early::Accepted));
    let (p, sent) = early_pair(
        &client_key,
        &server_key,
        Arc::clone(&acceptor),
        now,
        Duration::ZERO,
    );
    let recorded = Rc::clone(&sent);
    runs_once_after_a_retry(p, EarlyRefusal::Full);
    // The message the register could not remember runs nothing when
    // replayed, even once there is room again within the window.
    acceptor.replay.lock().unwrap().clear_for_tests();
    let events = replay_to(
        &acceptor,
        &recorded.borrow(),
        now.after(Duration::from_secs(1)),
    );
    assert_eq!(execs(&events), Vec::<u64>::new(), "{events:?}");
}

#[test]
fn early_data_from_an_unauthorized_key_runs_nothing() {
    let (client_key, server_key) = keys();
    let stranger = StaticKeypair::generate().unwrap();
    let now = Now::system();
    let acceptor = running(&server_key, &client_key);
    let (mut p, _) = early_pair(&stranger, &server_key, acceptor, now, Duration::ZERO);
    p.run();
    assert!(execs(&p.server_events).is_empty());
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Handshake(
            HandshakeError::Unauthorized { .. }
        )))
    ));
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Refused(CloseReason::Unauthorized)))
    ));
}

#[test]
fn oversize_early_data_is_refused_with_a_clear_error() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let big = ExecRequest {
        argv: vec![Bytes::from(vec![b'a'; MAX_EARLY_DATA])],
        ..Default::default()
    };
    let err = ClientSession::<Tag>::with_call(
        &client_key,
        &server_key.public(),
        Limits::client(),
        now,
        FirstCall {
            id: 1,
            request: big,
            trace: None,
            mark: None,
            ticket: EarlyTicket::NONE,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            FirstCallError::Session(SessionError::Handshake(HandshakeError::EarlyDataTooLarge {
                max: MAX_EARLY_DATA,
                ..
            }))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("early data too large"), "{err}");
}

#[test]
fn early_data_other_than_the_hello_and_one_call_ends_the_session_and_runs_nothing() {
    let (client_key, server_key) = keys();
    let now = Now::system();
    let acceptor = running(&server_key, &client_key);
    // A message 1 whose early data is a call with no hello before it.
    let exec = crate::pb::session::Envelope {
        call_id: 1,
        trace: None,
        send_time_unix_nanos: 0,
        body: Some(crate::pb::session::envelope::Body::Exec(request())),
    };
    let mut enc = crate::envelope_stream::EnvelopeEncoder::new();
    enc.push_message(&exec).unwrap();
    let early = enc.take(usize::MAX);
    let route = server_key.public().server_id();
    let (_, msg1) = crate::noise::ClientHandshake::start_early(
        &client_key,
        &server_key.public(),
        route.as_bytes(),
        now.wall,
        Limits::client().noise,
        ticket_of(&acceptor),
        &early,
    )
    .unwrap();
    let frame = Frame {
        kind: FrameKind::Handshake as i32,
        payload: msg1.into(),
        ..Default::default()
    };
    let events = replay_to(&acceptor, &[frame], now);
    assert!(execs(&events).is_empty(), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            ServerEvent::Ended(Err(SessionError::Protocol(Violation::UnexpectedMessage(_))))
        )),
        "{events:?}"
    );
}
