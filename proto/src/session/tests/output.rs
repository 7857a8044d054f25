//! Output flow control: the window, acknowledgements, and a caller that
//! stops reading holding up its own call only.

use super::*;
use crate::session::output::{EVENT_COST, MIN_WINDOW, cost};

/// A pair whose sessions use an output window of `window`.
fn windowed(window: u32) -> Pair {
    let client = Limits {
        output_window: window,
        ..Limits::client()
    };
    let mut p = Pair::with(client, Limits::server());
    p.run();
    assert!(p.client.is_ready());
    p.client_events.clear();
    p.server_events.clear();
    p
}

fn chunk(n: usize) -> Kind {
    Kind::Stdout(Bytes::from(vec![b'x'; n]))
}

fn acked(p: &Pair, id: u64) -> u64 {
    p.server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::OutputAcked { call_id, freed, .. } if *call_id == id => Some(*freed),
            _ => None,
        })
        .sum()
}

#[test]
fn both_ends_use_the_smaller_window() {
    let p = windowed(MIN_WINDOW * 2);
    assert_eq!(p.client.output_window(), MIN_WINDOW * 2);
    assert_eq!(p.server.output_window(), MIN_WINDOW * 2);
    let p = Pair::ready();
    assert_eq!(
        p.server.output_window(),
        Limits::server()
            .output_window
            .min(Limits::client().output_window)
    );
}

#[test]
fn the_exec_server_sends_no_more_than_the_window_until_the_caller_takes_some() {
    let window = MIN_WINDOW;
    let mut p = windowed(window);
    let id = p.exec(false);
    p.push(id, started());
    let size = 30_000;
    let mut pushed = 1;
    loop {
        match p.server.push(id, chunk(size), None, None, p.now) {
            Ok(_) => pushed += 1,
            Err(CallError::OutputWindow(call)) => {
                assert_eq!(call, id);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(pushed < 100, "the window never filled");
    }
    p.run();
    let in_flight = EVENT_COST + (pushed - 1) * (size as u64 + EVENT_COST);
    assert!(in_flight <= u64::from(window));
    assert!(in_flight + size as u64 + EVENT_COST > u64::from(window));
    // Nothing is acknowledged until the caller takes an eighth of the
    // window.
    assert_eq!(acked(&p, id), 0);
    let events = p.client_calls();
    assert_eq!(events.len() as u64, pushed);
    p.client
        .output_taken(id, events[0].1, cost(&events[0].2), p.now);
    p.run();
    assert_eq!(acked(&p, id), 0, "less than an eighth of the window taken");
    let last = events.last().unwrap().1;
    let rest: u64 = events[1..].iter().map(|e| cost(&e.2)).sum();
    p.client.output_taken(id, last, rest, p.now);
    p.run();
    assert_eq!(acked(&p, id), in_flight, "everything taken is freed");
    // There is room again.
    p.server.push(id, chunk(size), None, None, p.now).unwrap();
    p.push(id, exit(0));
    assert!(p.client_calls().last().unwrap().3, "the call ended");
}

#[test]
fn a_caller_that_stops_reading_holds_up_its_own_call_only() {
    let window = MIN_WINDOW;
    let mut p = windowed(window);
    let slow = p.exec(false);
    let other = p.exec(false);
    p.push(slow, started());
    while p
        .server
        .push(slow, chunk(30_000), None, None, p.now)
        .is_ok()
    {}
    p.run();
    // The other call runs to its end meanwhile, through the same session.
    p.push(other, started());
    p.push(other, out("fine"));
    p.push(other, exit(0));
    let ended: Vec<_> = p
        .client_calls()
        .into_iter()
        .filter(|(call, ..)| *call == other)
        .collect();
    assert_eq!(ended.len(), 3);
    assert!(ended[2].3);
    assert!(p.client.wants_frames(), "the session still reads");
}

#[test]
fn a_forgotten_calls_output_is_taken_at_once() {
    let window = MIN_WINDOW;
    let mut p = windowed(window);
    let id = p.exec(false);
    p.push(id, started());
    p.client.forget(id, None, p.now);
    p.run();
    // Far more than the window goes through: the client takes it all.
    for _ in 0..20 {
        let mut room = true;
        while room {
            room = p.server.push(id, chunk(30_000), None, None, p.now).is_ok();
        }
        p.run();
    }
    assert!(acked(&p, id) > 10 * u64::from(window));
    assert!(p.client_end().is_none());
}

#[test]
fn an_exec_server_over_the_window_ends_its_session() {
    let window = MIN_WINDOW;
    let mut p = windowed(window);
    // An exec-server that ignores the window it announced.
    p.server.set_output_window_for_tests(0);
    let id = p.exec(false);
    p.push(id, started());
    for _ in 0..10 {
        let _ = p.server.push(id, chunk(30_000), None, None, p.now);
    }
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::Protocol(Violation::OutputWindow(call)))) if *call == id
    ));
}

#[test]
fn an_acknowledgement_of_output_never_sent_ends_the_session() {
    let mut p = windowed(MIN_WINDOW);
    let id = p.exec(false);
    p.push(id, started());
    p.client.output_taken(id, 0, EVENT_COST, p.now);
    // Forged: an acknowledgement of seq 5, which was never sent.
    p.client.ack_for_tests(id, 5, p.now);
    p.run();
    assert!(matches!(
        p.server_end(),
        Some(Err(SessionError::Protocol(Violation::OutputAck(call)))) if *call == id
    ));
}

/// Delivers the exec-server's ask to the client and answers it, as an
/// endpoint does once it has reported what its caller took.
fn answer(p: &mut Pair, id: u64) {
    p.run();
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::AckWanted { call_id } if *call_id == id)),
        "the client's endpoint heard of the ask"
    );
    p.client_events.clear();
    p.client.answer_ack_wanted(id, p.now);
    p.run();
}

#[test]
fn asked_for_an_acknowledgement_the_client_gives_what_its_caller_took() {
    let window = MIN_WINDOW * 8;
    let mut p = windowed(window);
    assert!(
        p.server.acks_when_asked(),
        "the client said so in its hello"
    );
    let id = p.exec(false);
    p.push(id, started());
    for _ in 0..3 {
        p.push(id, chunk(1000));
    }
    let events = p.client_calls();
    assert_eq!(events.len(), 4);
    // Far less than an eighth of the window taken: no acknowledgement.
    let first: u64 = events[..2].iter().map(|e| cost(&e.2)).sum();
    p.client.output_taken(id, events[1].1, first, p.now);
    p.run();
    assert_eq!(acked(&p, id), 0);
    // Asked, the client acknowledges what its caller took, and no more.
    p.server.want_ack(id, p.now);
    answer(&mut p, id);
    assert_eq!(acked(&p, id), first);
    // Asked when its caller took nothing since, it answers the next take
    // at once, however small.
    p.server.want_ack(id, p.now);
    answer(&mut p, id);
    assert_eq!(acked(&p, id), first);
    p.client
        .output_taken(id, events[2].1, cost(&events[2].2), p.now);
    p.run();
    assert_eq!(acked(&p, id), first + cost(&events[2].2));
    // Nothing unacknowledged is left to ask for once the caller took all.
    p.client
        .output_taken(id, events[3].1, cost(&events[3].2), p.now);
    p.server.want_ack(id, p.now);
    answer(&mut p, id);
    assert_eq!(
        acked(&p, id),
        first + cost(&events[2].2) + cost(&events[3].2)
    );
    p.push(id, exit(0));
}

#[test]
fn an_ask_made_before_output_reaches_the_link_goes_with_the_next_event() {
    let mut p = windowed(MIN_WINDOW * 8);
    let id = p.exec(false);
    p.push(id, started());
    let events = p.client_calls();
    let first = cost(&events[0].2);
    p.client.output_taken(id, events[0].1, first, p.now);
    p.server.want_ack(id, p.now);
    answer(&mut p, id);
    assert_eq!(acked(&p, id), first);
    // The process waits for room while its read is still on its way:
    // nothing unacknowledged has been sent, so the ask waits...
    p.server.want_ack(id, p.now);
    p.run();
    let asks = |p: &Pair| {
        p.client_events
            .iter()
            .filter(|e| matches!(e, ClientEvent::AckWanted { .. }))
            .count()
    };
    assert_eq!(asks(&p), 0, "asked with nothing to acknowledge");
    // ...and goes with the call's next event (asked again meanwhile, once).
    p.server.want_ack(id, p.now);
    p.push(id, chunk(1000));
    p.run();
    assert_eq!(asks(&p), 1);
    let events = p.client_calls();
    let (_, seq, kind, _) = events.last().unwrap();
    answer(&mut p, id);
    p.client.output_taken(id, *seq, cost(kind), p.now);
    p.run();
    assert_eq!(
        acked(&p, id),
        first + cost(kind),
        "the next take answered the ask at once"
    );
    p.push(id, exit(0));
}
