//! Both ends of the session driven byte to byte in memory.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;

use super::config::IK_PATTERN_AESGCM;
use super::handshake::{MSG1_LEN, MSG2_LEN};
use super::timestamp::{decode_timestamp, encode_timestamp};
use super::*;
use crate::envelope;
use crate::keys::{AuthorizedKeys, StaticKeypair};
use crate::limits::{MAX_ENVELOPE, MAX_NOISE_MESSAGE, MAX_NOISE_PLAINTEXT};
use crate::pb::session::{self as s, Envelope, envelope::Body};

const ROUTE: &[u8] = b"0123456789abcdef0123456789abcdef";

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// The monotonic start of every test's sessions (rekey timers).
fn i0() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

struct World {
    client: StaticKeypair,
    server: StaticKeypair,
    authorized: AuthorizedKeys,
    replay: ReplayGuard,
}

impl World {
    fn new() -> Self {
        let client = StaticKeypair::generate().unwrap();
        let server = StaticKeypair::generate().unwrap();
        let authorized = AuthorizedKeys::from_keys([client.public()]);
        Self {
            client,
            server,
            authorized,
            replay: ReplayGuard::default(),
        }
    }

    fn accept(
        &mut self,
        msg1: &[u8],
        now: SystemTime,
        cfg: SessionConfig,
    ) -> Result<Accepted, HandshakeError> {
        accept(
            &self.server,
            ROUTE,
            msg1,
            now,
            i0(),
            &self.authorized,
            &mut self.replay,
            cfg,
        )
    }

    fn session(&mut self, cfg: SessionConfig) -> (Transport, Transport) {
        let (hs, msg1) =
            ClientHandshake::start(&self.client, &self.server.public(), ROUTE, t0(), cfg).unwrap();
        assert_eq!(msg1.len(), MSG1_LEN);
        let acc = self.accept(&msg1, t0(), cfg).unwrap();
        assert_eq!(acc.client, self.client.public());
        assert_eq!(acc.msg2.len(), MSG2_LEN);
        let client = hs.finish(&acc.msg2, i0()).unwrap();
        assert_eq!(client.remote_static(), self.server.public());
        assert_eq!(acc.transport.remote_static(), self.client.public());
        (client, acc.transport)
    }
}

fn pair() -> (Transport, Transport) {
    World::new().session(SessionConfig::default())
}

/// Moves everything `from` has pending into `to`; returns the messages.
fn pump(from: &mut Transport, to: &mut Transport, now: Instant) -> Vec<Bytes> {
    let mut msgs = Vec::new();
    while let Some(m) = from.poll_transmit(now).unwrap() {
        assert!(m.len() <= MAX_NOISE_MESSAGE);
        to.receive(&m).unwrap();
        msgs.push(m);
    }
    assert!(!from.has_pending());
    msgs
}

fn drain(t: &mut Transport) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(e) = t.poll_envelope().unwrap() {
        out.push(e);
    }
    out
}

fn ping(n: u64) -> Bytes {
    envelope::encode(&Envelope {
        call_id: n,
        body: Some(Body::Ping(s::Ping { nonce: n })),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn handshake_and_envelopes_both_ways() {
    let (mut c, mut srv) = pair();
    let hello = Envelope {
        call_id: 0,
        body: Some(Body::Hello(s::Hello {
            client_version: "test".into(),
            output_window: 0,
            acks_when_asked: false,
        })),
        ..Default::default()
    };
    c.send(&envelope::encode(&hello).unwrap()).unwrap();
    assert!(c.has_pending());
    pump(&mut c, &mut srv, i0());
    let got = drain(&mut srv);
    assert_eq!(got.len(), 1);
    assert_eq!(envelope::decode(&got[0]).unwrap(), hello);

    let ack = Envelope {
        body: Some(Body::HelloAck(s::HelloAck {
            server_version: "s".into(),
            max_processes: 4,
            max_chunk: 32768,
            stdin_window: 0,
            output_window: 0,
            resume_token: Default::default(),
            login_shell: false,
            early_ticket: Default::default(),
            span_batch_max: 0,
            clock: None,
        })),
        ..Default::default()
    };
    srv.send(&envelope::encode(&ack).unwrap()).unwrap();
    pump(&mut srv, &mut c, i0());
    let got = drain(&mut c);
    assert_eq!(envelope::decode(&got[0]).unwrap(), ack);

    assert_eq!(c.stats().messages_sent, 1);
    assert_eq!(c.stats().messages_received, 1);
    assert_eq!(srv.stats().messages_received, 1);
    assert_eq!(c.stats().bytes_sent, srv.stats().bytes_received);
    assert_eq!(c.poll_transmit(i0()).unwrap(), None);
}

#[test]
fn small_envelopes_coalesce() {
    let (mut c, mut srv) = pair();
    let sent: Vec<Bytes> = (0..200).map(ping).collect();
    for e in &sent {
        c.send(e).unwrap();
    }
    let msgs = pump(&mut c, &mut srv, i0());
    assert_eq!(msgs.len(), 1);
    assert_eq!(drain(&mut srv), sent);
}

#[test]
fn stream_offsets_say_when_an_envelope_has_left() {
    let (mut c, _srv) = pair();
    assert_eq!((c.queued_offset(), c.sent_offset()), (0, 0));
    let big: Vec<u8> = vec![7; MAX_NOISE_PLAINTEXT * 2];
    c.send(&big).unwrap();
    let after_big = c.queued_offset();
    assert_eq!(after_big, big.len() as u64 + 4);
    c.send(b"small").unwrap();
    let after_small = c.queued_offset();
    assert_eq!(after_small, after_big + 9);
    // The big envelope needs three messages; the small one rides in the last.
    c.poll_transmit(i0()).unwrap().unwrap();
    assert!(c.sent_offset() < after_big);
    c.poll_transmit(i0()).unwrap().unwrap();
    assert!(c.sent_offset() < after_big);
    c.poll_transmit(i0()).unwrap().unwrap();
    assert_eq!(c.sent_offset(), after_small);
    assert!(c.poll_transmit(i0()).unwrap().is_none());
    assert_eq!(c.queued_offset(), c.sent_offset());
}

#[test]
fn a_boundary_ends_a_message_after_its_envelope() {
    let (mut c, mut srv) = pair();
    c.send(b"first").unwrap();
    let first_end = c.queued_offset();
    c.send(b"second").unwrap();
    let m1 = c
        .poll_transmit_until(i0(), Some(first_end))
        .unwrap()
        .unwrap();
    assert_eq!(c.sent_offset(), first_end);
    srv.receive(&m1).unwrap();
    assert_eq!(drain(&mut srv), vec![Bytes::from_static(b"first")]);
    // A boundary already passed does not limit the next message.
    let m2 = c
        .poll_transmit_until(i0(), Some(first_end))
        .unwrap()
        .unwrap();
    srv.receive(&m2).unwrap();
    assert_eq!(drain(&mut srv), vec![Bytes::from_static(b"second")]);
    assert!(!c.has_pending());
}

#[test]
fn one_mib_envelope_spans_messages() {
    let (mut c, mut srv) = pair();
    let big: Vec<u8> = (0..MAX_ENVELOPE).map(|i| (i % 251) as u8).collect();
    c.send(&big).unwrap();
    c.send(b"after").unwrap();
    let msgs = pump(&mut c, &mut srv, i0());
    assert_eq!(
        msgs.len(),
        (MAX_ENVELOPE + 4 + 9).div_ceil(MAX_NOISE_PLAINTEXT - 1)
    );
    assert!(msgs.iter().all(|m| m.len() <= MAX_NOISE_MESSAGE));
    assert_eq!(msgs[0].len(), MAX_NOISE_MESSAGE);
    let got = drain(&mut srv);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].as_ref(), big.as_slice());
    assert_eq!(got[1].as_ref(), b"after");
}

#[test]
fn shared_output_fields_arrive_whole_and_in_order() {
    use prost::Message as _;
    let (mut c, mut srv) = pair();
    // Output fields large enough to be shared, small ones written in
    // place, and a whole envelope between them, spanning records.
    let sizes = [100_000, 10, 4096, 70_000, 2047, 2048];
    let sent: Vec<Envelope> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Envelope {
            call_id: i as u64,
            body: Some(Body::Event(s::TerminalEvent {
                seq: i as u64,
                kind: Some(s::terminal_event::Kind::Stdout(Bytes::from(vec![
                    i as u8;
                    n
                ]))),
                timings: None,
            })),
            ..Default::default()
        })
        .collect();
    for (i, e) in sent.iter().enumerate() {
        srv.send_message(e).unwrap();
        if i == 2 {
            srv.send(&ping(9)).unwrap();
        }
    }
    let msgs = pump(&mut srv, &mut c, i0());
    assert!(msgs.iter().all(|m| m.len() <= MAX_NOISE_MESSAGE));
    let mut got = drain(&mut c)
        .into_iter()
        .map(|b| Envelope::decode(b).unwrap());
    for (i, e) in sent.iter().enumerate() {
        assert_eq!(got.next().as_ref(), Some(e));
        if i == 2 {
            assert_eq!(got.next().unwrap().call_id, 9);
        }
    }
    assert!(got.next().is_none());
}

#[test]
fn oversized_envelope_is_refused_on_send() {
    let (mut c, _srv) = pair();
    let err = c.send(&vec![0u8; MAX_ENVELOPE + 1]).unwrap_err();
    assert!(matches!(
        err,
        TransportError::EnvelopeStream(
            crate::envelope_stream::EnvelopeStreamError::TooLarge { .. }
        )
    ));
    // Not fatal.
    c.send(b"ok").unwrap();

    let mut w = World::new();
    let cfg = SessionConfig {
        max_envelope: 100,
        ..Default::default()
    };
    let (mut c, _srv) = w.session(cfg);
    assert!(c.send(&[0u8; 101]).is_err());
    assert!(c.send(&[0u8; 100]).is_ok());
}

#[test]
fn peer_declaring_oversized_envelope_ends_the_session() {
    let mut w = World::new();
    let small = SessionConfig {
        max_envelope: 100,
        ..Default::default()
    };
    let (hs, msg1) = ClientHandshake::start(
        &w.client,
        &w.server.public(),
        ROUTE,
        t0(),
        SessionConfig::default(),
    )
    .unwrap();
    let acc = w.accept(&msg1, t0(), small).unwrap();
    let mut c = hs.finish(&acc.msg2, i0()).unwrap();
    let mut srv = acc.transport;
    c.send(&[1u8; 101]).unwrap();
    pump(&mut c, &mut srv, i0());
    assert!(matches!(
        srv.poll_envelope(),
        Err(TransportError::EnvelopeStream(_))
    ));
    assert_eq!(srv.poll_envelope(), Err(TransportError::Dead));
}

#[test]
fn wrong_server_key_fails() {
    let mut w = World::new();
    let impostor = StaticKeypair::generate().unwrap();
    // The client pins a key the exec-server does not hold: the exec-server
    // cannot even read message 1.
    let (hs, msg1) = ClientHandshake::start(
        &w.client,
        &impostor.public(),
        ROUTE,
        t0(),
        SessionConfig::default(),
    )
    .unwrap();
    assert_eq!(
        w.accept(&msg1, t0(), SessionConfig::default()).unwrap_err(),
        HandshakeError::Decrypt
    );
    // Whatever message 2 the client is then given (here a genuine one from
    // another handshake), finish fails.
    let (_other, msg1b) = ClientHandshake::start(
        &w.client,
        &w.server.public(),
        ROUTE,
        t0(),
        SessionConfig::default(),
    )
    .unwrap();
    let acc = w.accept(&msg1b, t0(), SessionConfig::default()).unwrap();
    let err = hs.finish(&acc.msg2, i0()).unwrap_err();
    assert_eq!(err, HandshakeError::Decrypt);
    assert!(
        err.to_string()
            .contains("static key is not the expected one")
    );
}

#[test]
fn msg2_from_another_handshake_fails() {
    let mut w = World::new();
    let cfg = SessionConfig::default();
    let (hs1, m1a) =
        ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap();
    let (hs2, m1b) =
        ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap();
    let a = w.accept(&m1a, t0(), cfg).unwrap();
    let b = w.accept(&m1b, t0(), cfg).unwrap();
    assert_eq!(
        hs1.finish(&b.msg2, i0()).unwrap_err(),
        HandshakeError::Decrypt
    );
    assert!(hs2.finish(&b.msg2, i0()).is_ok());
    drop(a);
}

#[test]
fn unauthorized_client_is_refused_with_its_key() {
    let mut w = World::new();
    let stranger = StaticKeypair::generate().unwrap();
    let (_hs, msg1) = ClientHandshake::start(
        &stranger,
        &w.server.public(),
        ROUTE,
        t0(),
        SessionConfig::default(),
    )
    .unwrap();
    let err = w.accept(&msg1, t0(), SessionConfig::default()).unwrap_err();
    assert_eq!(
        err,
        HandshakeError::Unauthorized {
            client: stranger.public()
        }
    );
    assert!(w.replay.is_empty(), "refused handshakes are not remembered");
}

#[test]
fn replayed_msg1_is_refused() {
    let mut w = World::new();
    let cfg = SessionConfig::default();
    let (_hs, msg1) =
        ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap();
    w.accept(&msg1, t0(), cfg).unwrap();
    let later = t0() + Duration::from_secs(30);
    assert_eq!(
        w.accept(&msg1, later, cfg).unwrap_err(),
        HandshakeError::Replay
    );
    // Once outside the window the timestamp check refuses it.
    let much_later = t0() + Duration::from_secs(121);
    assert_eq!(
        w.accept(&msg1, much_later, cfg).unwrap_err(),
        HandshakeError::ClockSkew
    );
    assert!(w.replay.is_empty(), "the old entry expired");
}

#[test]
fn concurrent_handshakes_from_one_key_accepted_out_of_order() {
    let mut w = World::new();
    let cfg = SessionConfig::default();
    let mut started = Vec::new();
    for i in 0..4u64 {
        let t = t0() + Duration::from_millis(i * 10);
        started.push(ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t, cfg).unwrap());
    }
    // Same timestamp, too.
    started.push(ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap());
    let now = t0() + Duration::from_millis(50);
    let mut accepted = Vec::new();
    for i in [3usize, 0, 4, 2, 1] {
        accepted.push((i, w.accept(&started[i].1, now, cfg).unwrap()));
    }
    let mut hs: Vec<Option<ClientHandshake>> = started.into_iter().map(|(h, _)| Some(h)).collect();
    for (i, acc) in accepted {
        let mut c = hs[i].take().unwrap().finish(&acc.msg2, i0()).unwrap();
        let mut srv = acc.transport;
        c.send(&ping(i as u64)).unwrap();
        pump(&mut c, &mut srv, i0());
        assert_eq!(drain(&mut srv), vec![ping(i as u64)]);
    }
}

#[test]
fn timestamp_outside_window_is_clock_skew() {
    let mut w = World::new();
    let cfg = SessionConfig::default();
    for offset in [Duration::from_secs(121), Duration::from_secs(3600)] {
        for client_time in [t0() - offset, t0() + offset] {
            let (_hs, msg1) =
                ClientHandshake::start(&w.client, &w.server.public(), ROUTE, client_time, cfg)
                    .unwrap();
            assert_eq!(
                w.accept(&msg1, t0(), cfg).unwrap_err(),
                HandshakeError::ClockSkew
            );
        }
    }
    for client_time in [
        t0() - Duration::from_secs(120),
        t0() + Duration::from_secs(120),
    ] {
        let (_hs, msg1) =
            ClientHandshake::start(&w.client, &w.server.public(), ROUTE, client_time, cfg).unwrap();
        w.accept(&msg1, t0(), cfg).unwrap();
    }
}

#[test]
fn route_mismatch_fails() {
    let mut w = World::new();
    let cfg = SessionConfig::default();
    let (_hs, msg1) =
        ClientHandshake::start(&w.client, &w.server.public(), b"another-route", t0(), cfg).unwrap();
    assert_eq!(
        w.accept(&msg1, t0(), cfg).unwrap_err(),
        HandshakeError::Decrypt
    );
}

#[test]
fn both_suites_work_and_mismatch_fails() {
    for suite in Suite::ALL {
        let mut w = World::new();
        let cfg = SessionConfig {
            suite,
            ..Default::default()
        };
        let (mut c, mut srv) = w.session(cfg);
        c.send(&ping(1)).unwrap();
        pump(&mut c, &mut srv, i0());
        assert_eq!(drain(&mut srv), vec![ping(1)]);
        srv.send(&ping(2)).unwrap();
        pump(&mut srv, &mut c, i0());
        assert_eq!(drain(&mut c), vec![ping(2)]);
    }
    let mut w = World::new();
    let chacha = SessionConfig {
        suite: Suite::ChaChaPoly,
        ..Default::default()
    };
    let aes = SessionConfig {
        suite: Suite::AesGcm,
        ..Default::default()
    };
    for (cc, sc) in [(chacha, aes), (aes, chacha)] {
        let (_hs, msg1) =
            ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cc).unwrap();
        assert_eq!(
            w.accept(&msg1, t0(), sc).unwrap_err(),
            HandshakeError::Decrypt
        );
    }
}

#[test]
fn suite_names_parse() {
    assert_eq!("chachapoly".parse::<Suite>().unwrap(), Suite::ChaChaPoly);
    assert_eq!("AESGCM".parse::<Suite>().unwrap(), Suite::AesGcm);
    assert!("rot13".parse::<Suite>().is_err());
    for s in Suite::ALL {
        assert_eq!(s.to_string().parse::<Suite>().unwrap(), s);
        assert!(s.params().is_ok());
    }
    assert_eq!(Suite::default().protocol_name(), IK_PATTERN_AESGCM);
}

#[test]
fn flipped_bit_is_decrypt_and_the_transport_is_dead() {
    let (mut c, mut srv) = pair();
    c.send(&ping(1)).unwrap();
    let m = c.poll_transmit(i0()).unwrap().unwrap();
    for i in [0, m.len() / 2, m.len() - 1] {
        let (mut c, mut srv) = pair();
        c.send(&ping(1)).unwrap();
        let m = c.poll_transmit(i0()).unwrap().unwrap();
        let mut bad = m.to_vec();
        bad[i] ^= 0x04;
        assert_eq!(srv.receive(&bad), Err(TransportError::Decrypt));
        assert!(srv.is_dead());
        assert_eq!(srv.receive(&m), Err(TransportError::Dead));
        assert_eq!(srv.poll_envelope(), Err(TransportError::Dead));
        assert_eq!(srv.send(b"x"), Err(TransportError::Dead));
        assert_eq!(srv.poll_transmit(i0()), Err(TransportError::Dead));
        assert_eq!(srv.close("x"), Err(TransportError::Dead));
        assert!(!srv.has_pending());
    }
    // Replaying a message (nonce reuse) is also a decrypt failure.
    srv.receive(&m).unwrap();
    assert_eq!(srv.receive(&m), Err(TransportError::Decrypt));
}

#[test]
fn truncated_oversized_and_empty_messages_are_errors() {
    let make = || {
        let (mut c, srv) = pair();
        c.send(&ping(1)).unwrap();
        let m = c.poll_transmit(i0()).unwrap().unwrap();
        (srv, m)
    };
    let (mut srv, _) = make();
    assert_eq!(srv.receive(&[]), Err(TransportError::Malformed));
    let (mut srv, _) = make();
    assert_eq!(srv.receive(&[0u8; 15]), Err(TransportError::Malformed));
    let (mut srv, _) = make();
    assert_eq!(
        srv.receive(&vec![0u8; MAX_NOISE_MESSAGE + 1]),
        Err(TransportError::Malformed)
    );
    let (mut srv, m) = make();
    assert_eq!(srv.receive(&m[..m.len() - 1]), Err(TransportError::Decrypt));
    let (mut srv, _) = make();
    assert_eq!(srv.receive(&[0u8; 16]), Err(TransportError::Decrypt));

    // Handshake messages.
    let mut w = World::new();
    let cfg = SessionConfig::default();
    for bad in [
        &[][..],
        &[0u8; 31],
        &[0u8; MSG1_LEN - 1],
        &vec![0u8; MAX_NOISE_MESSAGE + 1],
    ] {
        assert!(w.accept(bad, t0(), cfg).is_err());
    }
    assert_eq!(
        w.accept(&[0u8; MSG1_LEN], t0(), cfg).unwrap_err(),
        HandshakeError::Decrypt
    );
    let (_hs, msg1) =
        ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap();
    assert!(w.accept(&msg1[..msg1.len() - 1], t0(), cfg).is_err());
    for bad in [
        &[][..],
        &[0u8; MSG2_LEN - 1],
        &vec![0u8; MAX_NOISE_MESSAGE + 1],
    ] {
        let (hs, _) =
            ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap();
        assert_eq!(hs.finish(bad, i0()).unwrap_err(), HandshakeError::Malformed);
    }
    let (hs, _) = ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap();
    assert_eq!(
        hs.finish(&[0u8; MSG2_LEN], i0()).unwrap_err(),
        HandshakeError::Decrypt
    );
}

#[test]
fn rekey_by_message_count_both_directions() {
    let mut w = World::new();
    let cfg = SessionConfig {
        rekey_after_messages: 3,
        ..Default::default()
    };
    let (mut c, mut srv) = w.session(cfg);
    for round in 0..50u64 {
        // One DATA message per round (one envelope each).
        c.send(&ping(round)).unwrap();
        pump(&mut c, &mut srv, i0());
        assert_eq!(drain(&mut srv), vec![ping(round)]);
        srv.send(&ping(1000 + round)).unwrap();
        srv.send(&vec![7u8; 100_000]).unwrap();
        pump(&mut srv, &mut c, i0());
        let got = drain(&mut c);
        assert_eq!(got[0], ping(1000 + round));
        assert_eq!(got[1].len(), 100_000);
    }
    let cs = c.stats();
    let ss = srv.stats();
    // Client: 50 DATA messages, a rekey after every 3.
    assert_eq!(cs.rekeys_sent, 16);
    assert_eq!(ss.rekeys_received, cs.rekeys_sent);
    // Server: 2 DATA messages per round.
    assert_eq!(ss.rekeys_sent, 33);
    assert_eq!(cs.rekeys_received, ss.rekeys_sent);
    assert_eq!(cs.messages_sent, ss.messages_received);
}

#[test]
fn rekey_by_time_both_directions() {
    let (mut c, mut srv) = pair();
    let mut now = i0();
    for round in 0..20u64 {
        c.send(&ping(round)).unwrap();
        let msgs = pump(&mut c, &mut srv, now);
        // The first round uses the fresh key; each later round is 121 s on.
        assert_eq!(msgs.len(), if round == 0 { 1 } else { 2 });
        assert_eq!(drain(&mut srv), vec![ping(round)]);
        srv.send(&ping(round + 500)).unwrap();
        pump(&mut srv, &mut c, now);
        assert_eq!(drain(&mut c), vec![ping(round + 500)]);
        now += Duration::from_secs(121);
    }
    assert_eq!(c.stats().rekeys_sent, 19);
    assert_eq!(srv.stats().rekeys_received, 19);
    assert_eq!(srv.stats().rekeys_sent, 19);
    assert_eq!(c.stats().rekeys_received, 19);
    // Within the interval, no rekey; at the interval, a rekey.
    let last = now - Duration::from_secs(121);
    c.send(&ping(1)).unwrap();
    assert_eq!(
        pump(&mut c, &mut srv, last + Duration::from_secs(119)).len(),
        1
    );
    c.send(&ping(2)).unwrap();
    assert_eq!(
        pump(&mut c, &mut srv, last + Duration::from_secs(120)).len(),
        2
    );
    // An earlier instant does not trigger one.
    c.send(&ping(3)).unwrap();
    assert_eq!(pump(&mut c, &mut srv, i0()).len(), 1);
    assert_eq!(drain(&mut srv).len(), 3);
}

#[test]
fn message_out_of_rekey_order_fails() {
    let mut w = World::new();
    let cfg = SessionConfig {
        rekey_after_messages: 1,
        ..Default::default()
    };
    let (mut c, mut srv) = w.session(cfg);
    c.send(&ping(1)).unwrap();
    let d1 = c.poll_transmit(i0()).unwrap().unwrap();
    c.send(&ping(2)).unwrap();
    let rk = c.poll_transmit(i0()).unwrap().unwrap();
    let d2 = c.poll_transmit(i0()).unwrap().unwrap();
    srv.receive(&d1).unwrap();
    // Dropping the REKEY: the next message is under a key the server lacks.
    assert_eq!(srv.receive(&d2), Err(TransportError::Decrypt));
    drop(rk);
}

#[test]
fn authenticated_close_is_seen_with_its_reason() {
    let (mut c, mut srv) = pair();
    c.send(&ping(1)).unwrap();
    pump(&mut c, &mut srv, i0());
    let bye = c.close("client done").unwrap();
    assert!(c.is_closed());
    assert_eq!(c.send(b"x"), Err(TransportError::Closed));
    assert_eq!(c.close("again"), Err(TransportError::Closed));
    assert_eq!(c.poll_transmit(i0()), Ok(None));
    assert_eq!(srv.peer_closed(), None);
    srv.receive(&bye).unwrap();
    assert_eq!(srv.peer_closed(), Some("client done"));
    // Data that arrived before the close is still delivered.
    assert_eq!(drain(&mut srv), vec![ping(1)]);
    // The half-closed side can still talk back.
    srv.send(&ping(2)).unwrap();
    pump(&mut srv, &mut c, i0());
    assert_eq!(drain(&mut c), vec![ping(2)]);
    let bye2 = srv.close("").unwrap();
    c.receive(&bye2).unwrap();
    assert_eq!(c.peer_closed(), Some(""));
}

#[test]
fn long_close_reason_is_cut_at_a_char_boundary() {
    let (mut c, mut srv) = pair();
    let reason = "é".repeat(200); // 400 bytes
    let bye = c.close(&reason).unwrap();
    srv.receive(&bye).unwrap();
    let got = srv.peer_closed().unwrap();
    assert_eq!(got.len(), 256);
    assert!(reason.starts_with(got));
}

#[test]
fn anything_after_close_is_an_error() {
    let (mut c, mut srv) = pair();
    let bye = c.encrypt_record(RECORD_CLOSE, b"bye").unwrap();
    let data = c.encrypt_record(RECORD_DATA, &ping(1)).unwrap();
    srv.receive(&bye).unwrap();
    assert_eq!(srv.receive(&data), Err(TransportError::AfterClose));
    assert!(srv.is_dead());
}

#[test]
fn bad_records_are_errors() {
    let cases: [(u8, &[u8], TransportError); 5] = [
        (0x07, b"", TransportError::UnknownRecord(0x07)),
        (0x00, b"x", TransportError::UnknownRecord(0x00)),
        (RECORD_REKEY, b"x", TransportError::Malformed),
        (RECORD_CLOSE, &[0xff, 0xfe], TransportError::Malformed),
        (RECORD_CLOSE, &[b'a'; 257], TransportError::Malformed),
    ];
    for (kind, body, want) in cases {
        let (mut c, mut srv) = pair();
        let m = c.encrypt_record(kind, body).unwrap();
        assert_eq!(srv.receive(&m), Err(want));
        assert!(srv.is_dead());
    }
    // An empty record (tag only).
    let (mut c, mut srv) = pair();
    let out = c.encrypt_raw(&[]).unwrap();
    assert_eq!(out.len(), 16);
    assert_eq!(srv.receive(&out), Err(TransportError::Malformed));
}

#[test]
fn debug_output_shows_no_keys() {
    let w = World::new();
    let cfg = SessionConfig::default();
    let (hs, _) = ClientHandshake::start(&w.client, &w.server.public(), ROUTE, t0(), cfg).unwrap();
    let (c, srv) = World::new().session(cfg);
    for text in [format!("{hs:?}"), format!("{c:?}"), format!("{srv:?}")] {
        for key in [
            w.client.public(),
            w.server.public(),
            c.remote_static(),
            srv.remote_static(),
        ] {
            assert!(!text.contains(&key.to_string()), "{text}");
        }
    }
}

#[test]
fn timestamps_round_trip() {
    let t = UNIX_EPOCH + Duration::new(1_700_000_123, 456_789_012);
    let enc = encode_timestamp(t);
    assert_eq!(&enc[..8], &1_700_000_123u64.to_be_bytes());
    assert_eq!(&enc[8..], &456_789_012u32.to_be_bytes());
    assert_eq!(
        decode_timestamp(&enc),
        Some(Duration::new(1_700_000_123, 456_789_012))
    );
    assert_eq!(decode_timestamp(&enc[..11]), None);
    let mut bad = enc;
    bad[8..].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    assert_eq!(decode_timestamp(&bad), None);
    assert_eq!(
        encode_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
        [0u8; 12]
    );
}

#[test]
fn prologue_layout() {
    assert_eq!(
        prologue(Suite::ChaChaPoly, b"abc"),
        b"rex/3\0Noise_IK_25519_ChaChaPoly_BLAKE2s\0abc".to_vec()
    );
}

#[test]
fn replay_guard_capacity_and_expiry() {
    let kp = StaticKeypair::generate().unwrap().public();
    let mut g = ReplayGuard::new(Duration::from_secs(10), 2);
    let ts = |s: u64| Duration::from_secs(1_700_000_000 + s);
    let at = |s: u64| UNIX_EPOCH + ts(s);
    g.check(&kp, &[1; 32], ts(0), at(0)).unwrap();
    g.check(&kp, &[2; 32], ts(1), at(1)).unwrap();
    assert_eq!(
        g.check(&kp, &[3; 32], ts(1), at(1)),
        Err(HandshakeError::Busy)
    );
    assert_eq!(
        g.check(&kp, &[1; 32], ts(0), at(1)),
        Err(HandshakeError::Replay)
    );
    // At 10.5 s the first entry (ts 0) has expired; room again.
    let later = UNIX_EPOCH + ts(10) + Duration::from_millis(500);
    g.check(&kp, &[3; 32], ts(10), later).unwrap();
    assert_eq!(g.len(), 2);
    // The expired one is refused by its timestamp.
    assert_eq!(
        g.check(&kp, &[1; 32], ts(0), later),
        Err(HandshakeError::ClockSkew)
    );
    // A server clock stepping back does not revive expired initiations.
    assert_eq!(
        g.check(&kp, &[1; 32], ts(0), at(2)),
        Err(HandshakeError::ClockSkew)
    );
    // A different client with the same ephemeral is a different pair.
    let other = StaticKeypair::generate().unwrap().public();
    let mut g = ReplayGuard::default();
    g.check(&kp, &[9; 32], ts(0), at(0)).unwrap();
    g.check(&other, &[9; 32], ts(0), at(0)).unwrap();
}

fn live_pair_and_message() -> (Transport, Bytes) {
    let (mut c, srv) = pair();
    c.send(&ping(1)).unwrap();
    let m = c.poll_transmit(i0()).unwrap().unwrap();
    (srv, m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn receive_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..70_000)) {
        let (mut srv, _) = live_pair_and_message();
        let r = srv.receive(&bytes);
        prop_assert!(r.is_err());
        let _ = srv.poll_envelope();
        let _ = srv.receive(&bytes);
    }

    #[test]
    fn receive_of_mutated_message_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let (mut srv, m) = live_pair_and_message();
        let mut bad = m.to_vec();
        for (i, x) in flips {
            let i = i.index(bad.len());
            bad[i] ^= x;
        }
        bad.truncate(cut.index(bad.len() + 1));
        prop_assert!(srv.receive(&bad).is_err());
    }

    #[test]
    fn accept_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut w = World::new();
        prop_assert!(w.accept(&bytes, t0(), SessionConfig::default()).is_err());
    }
}

#[test]
fn both_ends_agree_on_the_handshake_hash() {
    let (c, srv) = pair();
    assert_eq!(c.handshake_hash().len(), 32);
    assert_eq!(c.handshake_hash(), srv.handshake_hash());
    let (c2, _) = pair();
    assert_ne!(c.handshake_hash(), c2.handshake_hash(), "one per handshake");
}

#[test]
fn replay_guard_early_data_runs_only_what_it_can_remember() {
    let kp = StaticKeypair::generate().unwrap().public();
    let ts = |s: u64| Duration::from_secs(1_700_000_000 + s);
    let at = |s: u64| UNIX_EPOCH + ts(s);
    let mut g = ReplayGuard::new(Duration::from_secs(10), 4);
    let ticket = g.ticket().unwrap();
    assert_ne!(ticket, EarlyTicket::NONE);
    // Another run's ticket (or none): the handshake goes on, nothing runs
    // early; remembered all the same, so its replay is refused entirely.
    let other = ReplayGuard::new(Duration::from_secs(10), 3)
        .ticket()
        .unwrap();
    assert_ne!(other, ticket, "one ticket per run");
    for (eph, t) in [(1u8, other), (8, EarlyTicket::NONE)] {
        assert_eq!(
            g.check_early(&kp, &[eph; 32], ts(5), t, at(5)),
            Ok(Early::Refused(EarlyRefusal::Restarted))
        );
        assert_eq!(
            g.check_early(&kp, &[eph; 32], ts(5), ticket, at(6)),
            Err(HandshakeError::Replay)
        );
    }
    // This run's ticket: it runs, once.
    assert_eq!(
        g.check_early(&kp, &[2; 32], ts(11), ticket, at(11)),
        Ok(Early::Accepted)
    );
    assert_eq!(
        g.check_early(&kp, &[2; 32], ts(11), ticket, at(12)),
        Err(HandshakeError::Replay)
    );
    // Older than the window: the handshake goes on, nothing runs early.
    assert_eq!(
        g.check_early(&kp, &[3; 32], ts(0), ticket, at(12)),
        Ok(Early::Refused(EarlyRefusal::Stale))
    );
    // Ahead by more than the window: refused entirely.
    assert_eq!(
        g.check_early(&kp, &[4; 32], ts(30), ticket, at(12)),
        Err(HandshakeError::ClockSkew)
    );
    g.check_early(&kp, &[5; 32], ts(12), ticket, at(12))
        .unwrap();
    // Full: not remembered, so nothing stamped up to it runs early, even
    // once there is room.
    assert_eq!(
        g.check_early(&kp, &[6; 32], ts(13), ticket, at(13)),
        Ok(Early::Refused(EarlyRefusal::Full))
    );
    assert_eq!(
        g.check_early(&kp, &[6; 32], ts(13), ticket, at(16)),
        Ok(Early::Refused(EarlyRefusal::Full))
    );
    assert_eq!(
        g.check_early(&kp, &[7; 32], ts(22), ticket, at(22)),
        Ok(Early::Accepted)
    );
}
