//! The client's own count of its flights and round trips.

use super::*;

#[test]
fn a_cold_call_waits_three_round_trips_before_its_first_event() {
    let mut p = Pair::new();
    assert_eq!(p.client.counters().flights, 0, "nothing has left yet");
    p.run();
    assert!(p.client.is_ready());
    // Message 1, then the hello once message 2 had arrived.
    assert_eq!(p.client.counters().flights, 2);
    assert_eq!(p.client.counters().round_trips, None);
    let id = p.exec(false);
    assert_eq!(p.client.first_call(), Some(id));
    assert_eq!(p.client.counters().round_trips, None, "no event yet");
    p.push(id, started());
    assert_eq!(
        p.client.counters(),
        Counters {
            flights: 3,
            round_trips: Some(3),
            early_retries: 0,
        }
    );
    // Later events, and later calls, change nothing of the first call's
    // count.
    p.push(id, exit(0));
    let second = p.exec(false);
    p.push(second, started());
    assert_eq!(p.client.counters().round_trips, Some(3));
    assert_eq!(p.client.first_call(), Some(id));
}

#[test]
fn frames_sent_without_an_answer_between_them_are_one_flight() {
    let mut p = Pair::ready();
    let before = p.client.counters().flights;
    // Two calls queued back to back, before anything comes back.
    let a = p.client.next_call_id();
    let req = ExecRequest {
        argv: vec![Bytes::from_static(b"prog")],
        ..Default::default()
    };
    p.client
        .start_call(a, req.clone(), None, None, p.now)
        .unwrap();
    while p.client.poll_transmit(p.now).is_some() {}
    p.client.start_call(a + 1, req, None, None, p.now).unwrap();
    while p.client.poll_transmit(p.now).is_some() {}
    assert_eq!(p.client.counters().flights, before + 1);
}
