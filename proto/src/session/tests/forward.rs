//! The client's own spans forwarded to the exec-server: only to one whose
//! hello answer takes them, after the call's final event, bounded, and
//! never from a peer that has not authenticated and said hello.

use super::*;
use crate::noise::ClientHandshake;
use crate::pb::session::{Envelope, ForwardedSpans, envelope::Body};

const MAX: u32 = 4096;

/// A pair whose exec-server takes batches of up to `max` bytes.
fn forwarding(max: u32) -> Pair {
    let (client_key, server_key) = keys();
    let mut acceptor = Acceptor::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public()]),
    );
    acceptor.span_batch_max = max;
    let mut p = Pair::from_parts(
        &client_key,
        &server_key.public(),
        Arc::new(acceptor),
        Limits::client(),
        Limits::server(),
    );
    p.run();
    assert!(p.client.is_ready());
    p.client_events.clear();
    p.server_events.clear();
    p
}

/// The batches the exec-server handed to its endpoint, in order.
fn batches(p: &Pair) -> Vec<SpanBatch> {
    p.server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Spans(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn otlp(tag: &'static [u8]) -> Bytes {
    Bytes::from_static(tag)
}

#[test]
fn the_hello_answer_says_whether_spans_are_taken() {
    let p = forwarding(MAX);
    assert_eq!(p.client.span_batch_max(), Some(MAX));
    let mut p = Pair::ready();
    assert_eq!(p.client.span_batch_max(), None);
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, exit(0));
    assert_eq!(
        p.client.forward_spans(id, otlp(b"s"), 1, p.now),
        Err(ForwardError::NotOffered)
    );
    p.run();
    assert!(batches(&p).is_empty());
}

#[test]
fn batches_of_an_open_call_wait_for_its_final_event_in_order() {
    let mut p = forwarding(MAX);
    let a = p.exec(false);
    let b = p.exec(false);
    p.push(a, started());
    p.push(b, started());
    for (call, tag, spans) in [(a, &b"a1"[..], 2), (b, b"b1", 1), (a, b"a2", 3)] {
        assert_eq!(
            p.client
                .forward_spans(call, Bytes::from_static(tag), spans, p.now),
            Ok(Forwarded::Held)
        );
    }
    p.run();
    assert!(batches(&p).is_empty(), "nothing before a final event");
    p.push(a, out("x"));
    assert!(batches(&p).is_empty());
    p.push(a, exit(0));
    // a's batches wait for others to go with them, at most LINGER.
    assert!(batches(&p).is_empty());
    p.advance(LINGER);
    // a's batches, in the order given, after its final event, as one
    // message (OTLP messages joined end to end are one).
    let got = batches(&p);
    assert_eq!(
        got.iter()
            .map(|b| (b.call_id, b.traces.clone(), b.spans))
            .collect::<Vec<_>>(),
        vec![(a, otlp(b"a1a2"), 5)]
    );
    p.push(b, exit(1));
    p.advance(LINGER);
    let got = batches(&p);
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].call_id, got[1].traces.clone()), (b, otlp(b"b1")));
    // A finished call's batch goes without waiting for a final event.
    assert_eq!(
        p.client.forward_spans(a, otlp(b"a3"), 1, p.now),
        Ok(Forwarded::Sent)
    );
    p.advance(LINGER);
    assert_eq!(batches(&p).len(), 3);
    assert_eq!(
        p.client.span_counts(),
        SpanCounts {
            sent: 7,
            dropped: 0
        }
    );
}

#[test]
fn batches_of_many_calls_go_together_and_before_the_close() {
    let mut p = forwarding(MAX);
    let mut calls = Vec::new();
    for _ in 0..3 {
        let id = p.exec(false);
        p.push(id, started());
        p.push(id, exit(0));
        calls.push(id);
    }
    for (id, tag) in calls.iter().zip([&b"x"[..], b"y", b"z"]) {
        assert_eq!(
            p.client
                .forward_spans(*id, Bytes::from_static(tag), 2, p.now),
            Ok(Forwarded::Sent)
        );
    }
    // Nothing has gone yet; the close takes them, ahead of itself.
    p.run();
    assert!(batches(&p).is_empty());
    p.client.close(p.now);
    p.run();
    let got = batches(&p);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].call_id, got[0].traces.clone(), got[0].spans),
        (calls[2], otlp(b"xyz"), 6)
    );
    assert!(
        p.server_end().is_some_and(|e| e.is_ok()),
        "{:?}",
        p.server_end()
    );
    assert_eq!(p.client.span_counts().sent, 6);
}

#[test]
fn gathered_batches_never_outgrow_the_exec_servers_limit() {
    let mut p = forwarding(10);
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, exit(0));
    // 3 bytes wait; 4 more would still fit but reach half the limit: both
    // go at once. Then 3 wait, and 8 would outgrow 10: the 3 go first.
    for (tag, sent) in [
        (&b"abc"[..], 0),
        (b"defg", 1),
        (b"hij", 1),
        (b"klmnopqr", 3),
    ] {
        p.client
            .forward_spans(id, Bytes::from_static(tag), 1, p.now)
            .unwrap();
        p.run();
        assert_eq!(batches(&p).len(), sent, "after {tag:?}");
    }
    let got: Vec<Bytes> = batches(&p).into_iter().map(|b| b.traces).collect();
    assert_eq!(got, [otlp(b"abcdefg"), otlp(b"hij"), otlp(b"klmnopqr")]);
    assert!(got.iter().all(|t| t.len() <= 10));
}

#[test]
fn batches_over_a_bound_are_dropped_with_a_count() {
    let mut p = forwarding(64);
    let id = p.exec(false);
    p.push(id, started());
    // Over the exec-server's batch limit.
    let big = Bytes::from(vec![0u8; 65]);
    assert_eq!(
        p.client.forward_spans(id, big, 5, p.now),
        Ok(Forwarded::Dropped)
    );
    // Over what may be held while the call is open.
    for _ in 0..HELD_BATCHES {
        assert_eq!(
            p.client.forward_spans(id, otlp(b"h"), 1, p.now),
            Ok(Forwarded::Held)
        );
    }
    assert_eq!(
        p.client.forward_spans(id, otlp(b"h"), 2, p.now),
        Ok(Forwarded::Dropped)
    );
    assert_eq!(p.client.span_counts().dropped, 7);
    p.push(id, exit(0));
    p.advance(LINGER);
    // The held batches go together; the message tells the exec-server
    // what was dropped, once.
    let got = batches(&p);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].dropped, 7);
    assert_eq!(got[0].spans, HELD_BATCHES as u32);
    assert_eq!(got[0].traces, Bytes::from(vec![b'h'; HELD_BATCHES]));
    assert_eq!(
        p.client.span_counts(),
        SpanCounts {
            sent: HELD_BATCHES as u64,
            dropped: 7
        }
    );
}

#[test]
fn held_batches_of_a_session_that_ends_are_counted_as_dropped() {
    let mut p = forwarding(MAX);
    let id = p.exec(false);
    assert_eq!(
        p.client.forward_spans(id, otlp(b"h"), 4, p.now),
        Ok(Forwarded::Held)
    );
    p.client.close(p.now);
    p.run();
    assert!(batches(&p).is_empty());
    assert_eq!(p.client.span_counts().dropped, 4);
    assert_eq!(
        p.client.forward_spans(id, otlp(b"h"), 1, p.now),
        Err(ForwardError::Ended)
    );
}

#[test]
fn the_exec_server_refuses_batches_over_its_limit_or_not_offered() {
    // Peers that ignore the hello answer (the client's own checks
    // bypassed): one over the limit of 8 bytes, one to an exec-server that
    // takes none.
    for mut p in [forwarding(8), Pair::ready()] {
        let batch = Body::Spans(ForwardedSpans {
            traces: Bytes::from(vec![1u8; 9]),
            spans: 3,
            dropped: 0,
        });
        p.client.shared.send(0, None, batch, None, p.now).unwrap();
        p.run();
        assert!(batches(&p).is_empty());
        assert_eq!(p.server.spans_refused(), 3);
        assert!(p.server_end().is_none(), "refused, not a violation");
    }
}

#[test]
fn spans_before_the_hello_end_the_session_and_are_not_taken() {
    let (client_key, server_key) = keys();
    let mut acceptor = Acceptor::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public()]),
    );
    acceptor.span_batch_max = MAX;
    let acceptor = Arc::new(acceptor);
    let now = Now::system();
    let mut server = ServerSession::<Tag>::new(Arc::clone(&acceptor), Limits::server(), now);
    let route = server_key.public().server_id();
    let (hs, msg1) = ClientHandshake::start(
        &client_key,
        &server_key.public(),
        route.as_bytes(),
        now.wall,
        Limits::client().noise,
    )
    .unwrap();
    server.handle_frame(crate::frames::handshake(msg1.into()), now);
    let msg2 = server.poll_transmit(now).unwrap().frame;
    let (mut transport, _) = hs.finish_early(&msg2.payload, now.at).unwrap();
    // Authenticated, but spans instead of the hello.
    let spans = Envelope {
        call_id: 0,
        trace: None,
        send_time_unix_nanos: now.unix_nanos(),
        body: Some(Body::Spans(ForwardedSpans {
            traces: otlp(b"s"),
            spans: 1,
            dropped: 0,
        })),
    };
    transport.send_message(&spans).unwrap();
    let record = transport
        .poll_transmit_until(now.at, None)
        .unwrap()
        .unwrap();
    server.handle_frame(crate::frames::data(record), now);
    let mut events = Vec::new();
    while let Some(ev) = server.poll_event() {
        events.push(ev);
    }
    assert!(
        !events.iter().any(|e| matches!(e, ServerEvent::Spans(_))),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(ServerEvent::Ended(Err(SessionError::Protocol(
                Violation::UnexpectedMessage(_)
            ))))
        ),
        "{events:?}"
    );
}

#[test]
fn a_key_that_is_not_authorized_never_gets_to_forward() {
    let (client_key, server_key) = keys();
    let stranger = StaticKeypair::generate().unwrap();
    let mut acceptor = Acceptor::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public()]),
    );
    acceptor.span_batch_max = MAX;
    let mut p = Pair::from_parts(
        &stranger,
        &server_key.public(),
        Arc::new(acceptor),
        Limits::client(),
        Limits::server(),
    );
    p.run();
    assert_eq!(p.client.span_batch_max(), None);
    assert!(p.client.forward_spans(1, otlp(b"s"), 1, p.now).is_err());
    p.run();
    assert!(batches(&p).is_empty());
}
