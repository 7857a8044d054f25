//! Pairwise tests of the session machines: a client and an exec-server
//! wired together in memory, time advanced by the test. Nothing here reads
//! a clock after the start or sleeps.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::keys::{AuthorizedKeys, StaticKeypair};
use crate::noise::{HandshakeError, TransportError};
use crate::pb::session::{
    ExecErrorKind, ExecRequest, Exited, Started, StdinMode, TraceContext, exited,
    terminal_event::Kind,
};
use crate::pb::tunnel::{CloseReason, Frame, FrameKind};

type Tag = &'static str;

/// Frames in flight per direction before the sender must wait (the link's
/// flow control).
const WIRE: usize = 16;

/// Rewrites the `n`th frame the client sends into what reaches the link.
type Tamper = Box<dyn FnMut(usize, Frame) -> Vec<Frame>>;

/// One direction of the in-memory link.
#[derive(Default)]
struct Wire {
    frames: VecDeque<Frame>,
    /// The sender ended its half.
    ended: bool,
    /// The receiver has been told.
    end_delivered: bool,
    /// Frames handed to the receiver so far.
    delivered: usize,
}

struct Pair {
    now: Now,
    client: ClientSession<Tag>,
    server: ServerSession<Tag>,
    up: Wire,
    down: Wire,
    client_events: Vec<ClientEvent>,
    server_events: Vec<ServerEvent>,
    client_done: Vec<Tag>,
    server_done: Vec<Tag>,
    /// Hop headers of the frames the client sent, in order.
    up_hops: Vec<String>,
    /// Whether the client reads what the exec-server sends.
    client_reads: bool,
    /// Whether the exec-server reads what the client sends.
    server_reads: bool,
    /// Whether the exec-server does anything at all (reads, sends, timers).
    server_frozen: bool,
    /// Whether the exec-server's processes take the stdin they get.
    server_consumes: bool,
    /// Applied to each frame the client sends before it is queued.
    tamper_up: Option<Tamper>,
}

fn keys() -> (StaticKeypair, StaticKeypair) {
    (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    )
}

impl Pair {
    fn new() -> Self {
        Self::with(Limits::client(), Limits::server())
    }

    fn with(client_limits: Limits, server_limits: Limits) -> Self {
        let (client_key, server_key) = keys();
        let acceptor = Arc::new(Acceptor::new(
            server_key.clone(),
            AuthorizedKeys::from_keys([client_key.public()]),
        ));
        Self::from_parts(
            &client_key,
            &server_key.public(),
            acceptor,
            client_limits,
            server_limits,
        )
    }

    fn from_parts(
        client_key: &StaticKeypair,
        server_pub: &crate::keys::PublicKey,
        acceptor: Arc<Acceptor>,
        client_limits: Limits,
        server_limits: Limits,
    ) -> Self {
        let now = Now::system();
        let client = ClientSession::new(client_key, server_pub, client_limits, now).unwrap();
        let server = ServerSession::new(acceptor, server_limits, now);
        Self {
            now,
            client,
            server,
            up: Wire::default(),
            down: Wire::default(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_done: Vec::new(),
            server_done: Vec::new(),
            up_hops: Vec::new(),
            client_reads: true,
            server_reads: true,
            server_frozen: false,
            server_consumes: true,
            tamper_up: None,
        }
    }

    /// A pair whose handshake and hello are done.
    fn ready() -> Self {
        let mut p = Self::new();
        p.run();
        assert!(
            p.client.is_ready(),
            "client not ready: {:?}",
            p.client_events
        );
        assert!(matches!(
            p.server_events.as_slice(),
            [ServerEvent::Authenticated { .. }]
        ));
        assert!(matches!(
            p.client_events.as_slice(),
            [ClientEvent::Secured, ClientEvent::Ready(_)]
        ));
        p.client_events.clear();
        p.server_events.clear();
        p
    }

    /// Moves frames and events until nothing more happens.
    fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the machines never went quiet");
    }

    fn step(&mut self) -> bool {
        let now = self.now;
        let mut progress = false;
        while self.up.frames.len() < WIRE
            && let Some(t) = self.client.poll_transmit(now)
        {
            progress = true;
            self.client_done.extend(t.done);
            let n = self.up_hops.len();
            self.up_hops.push(t.frame.hop_traceparent.clone());
            let frames = match self.tamper_up.as_mut() {
                Some(f) => f(n, t.frame),
                None => vec![t.frame],
            };
            self.up.frames.extend(frames);
        }
        if self.client.poll_end_link() {
            progress = true;
            self.up.ended = true;
        }
        while !self.server_frozen
            && self.down.frames.len() < WIRE
            && let Some(t) = self.server.poll_transmit(now)
        {
            progress = true;
            self.server_done.extend(t.done);
            self.down.frames.push_back(t.frame);
        }
        if !self.server_frozen && self.server.poll_end_link() {
            progress = true;
            self.down.ended = true;
        }
        if self.server_reads && !self.server_frozen {
            while self.server.wants_frames() {
                let Some(f) = self.up.frames.pop_front() else {
                    break;
                };
                progress = true;
                self.up.delivered += 1;
                self.server.handle_frame(f, now);
                while let Some(ev) = self.server.poll_event() {
                    self.server_took(&ev);
                    self.server_events.push(ev);
                }
            }
            if self.up.frames.is_empty() && self.up.ended && !self.up.end_delivered {
                progress = true;
                self.up.end_delivered = true;
                self.server.handle_link_end(None, now);
            }
        }
        if self.client_reads {
            while self.client.wants_frames() {
                let Some(f) = self.down.frames.pop_front() else {
                    break;
                };
                progress = true;
                self.down.delivered += 1;
                self.client.handle_frame(f, now);
                while let Some(ev) = self.client.poll_event() {
                    self.client_events.push(ev);
                }
            }
            if self.down.frames.is_empty() && self.down.ended && !self.down.end_delivered {
                progress = true;
                self.down.end_delivered = true;
                self.client.handle_link_end(None, now);
            }
        }
        while !self.server_frozen
            && let Some(ev) = self.server.poll_event()
        {
            progress = true;
            self.server_took(&ev);
            self.server_events.push(ev);
        }
        while self.client_reads
            && let Some(ev) = self.client.poll_event()
        {
            progress = true;
            self.client_events.push(ev);
        }
        progress
    }

    /// The exec-server's processes take their stdin as it comes.
    fn server_took(&mut self, ev: &ServerEvent) {
        if let ServerEvent::Stdin { call_id, data } = ev
            && self.server_consumes
        {
            let _ = self
                .server
                .stdin_taken(*call_id, data.len() as u64, self.now);
        }
    }

    fn server_timeout(&self) -> Option<std::time::Instant> {
        if self.server_frozen {
            None
        } else {
            self.server.poll_timeout()
        }
    }

    /// Advances simulated time by `total`, firing each timer when it is due.
    fn advance(&mut self, total: Duration) {
        let end = self.now.at + total;
        loop {
            self.run();
            let next = [self.client.poll_timeout(), self.server_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(next) = next else { break };
            let step = next.saturating_duration_since(self.now.at);
            self.now = self.now.after(step);
            if self.client.poll_timeout().is_some_and(|t| t <= self.now.at) {
                self.client.handle_timeout(self.now);
            }
            if self.server_timeout().is_some_and(|t| t <= self.now.at) {
                self.server.handle_timeout(self.now);
            }
        }
        let rest = end.saturating_duration_since(self.now.at);
        self.now = self.now.after(rest);
        self.run();
    }

    fn exec(&mut self, stdin: bool) -> u64 {
        let req = ExecRequest {
            argv: vec![Bytes::from_static(b"prog")],
            stdin: if stdin {
                StdinMode::Pipe as i32
            } else {
                StdinMode::Null as i32
            },
            ..Default::default()
        };
        let id = self.client.start_call(req, None, None, self.now).unwrap();
        self.run();
        id
    }

    fn push(&mut self, call: u64, kind: Kind) -> server::Pushed {
        let pushed = self.server.push(call, kind, None, None, self.now).unwrap();
        self.run();
        pushed
    }

    fn client_calls(&self) -> Vec<(u64, u64, Kind, bool)> {
        self.client_events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Call(c) => Some((c.call_id, c.seq, c.kind.clone(), c.last)),
                _ => None,
            })
            .collect()
    }

    fn client_end(&self) -> Option<&Result<Closed, SessionError>> {
        self.client_events.iter().find_map(|e| match e {
            ClientEvent::Ended(end) => Some(end),
            _ => None,
        })
    }

    fn server_end(&self) -> Option<&Result<Closed, SessionError>> {
        self.server_events.iter().find_map(|e| match e {
            ServerEvent::Ended(end) => Some(end),
            _ => None,
        })
    }
}

fn started() -> Kind {
    Kind::Started(Started { pid: 7 })
}

fn exit(code: i32) -> Kind {
    Kind::Exited(Exited {
        status: Some(exited::Status::Code(code)),
    })
}

fn out(s: &'static str) -> Kind {
    Kind::Stdout(Bytes::from_static(s.as_bytes()))
}

#[test]
fn exec_round_trip() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    assert_eq!(id, 1);
    let [
        ServerEvent::Exec {
            call_id, request, ..
        },
    ] = p.server_events.as_slice()
    else {
        panic!("{:?}", p.server_events)
    };
    assert_eq!(*call_id, id);
    assert_eq!(request.argv, vec![Bytes::from_static(b"prog")]);
    assert_eq!(p.push(id, started()).seq, 0);
    assert_eq!(p.push(id, out("hi\n")).seq, 1);
    assert_eq!(p.push(id, Kind::Stderr(Bytes::from_static(b"oops"))).seq, 2);
    let last = p.push(id, exit(3));
    assert!(last.last);
    assert_eq!(
        p.client_calls(),
        vec![
            (id, 0, started(), false),
            (id, 1, out("hi\n"), false),
            (id, 2, Kind::Stderr(Bytes::from_static(b"oops")), false),
            (id, 3, exit(3), true),
        ]
    );
    assert_eq!(p.client.open_calls(), 0);
    assert_eq!(p.server.open_calls(), 0);
    // The call is over on both sides: nothing more goes out for it.
    assert_eq!(
        p.server.push(id, out("late"), None, None, p.now),
        Err(CallError::UnknownCall(id))
    );
    assert_eq!(
        p.client.signal(id, 15, None, p.now),
        Err(CallError::Finished(id))
    );
}

#[test]
fn interleaved_calls_keep_their_own_order() {
    let mut p = Pair::ready();
    let a = p.exec(false);
    let b = p.exec(false);
    assert_ne!(a, b);
    p.push(b, started());
    p.push(a, started());
    p.push(a, out("a1"));
    p.push(b, out("b1"));
    p.push(a, out("a2"));
    p.push(b, exit(0));
    p.push(a, exit(1));
    let calls = p.client_calls();
    let of = |id| -> Vec<(u64, Kind)> {
        calls
            .iter()
            .filter(|c| c.0 == id)
            .map(|c| (c.1, c.2.clone()))
            .collect()
    };
    assert_eq!(
        of(a),
        vec![(0, started()), (1, out("a1")), (2, out("a2")), (3, exit(1))]
    );
    assert_eq!(of(b), vec![(0, started()), (1, out("b1")), (2, exit(0))]);
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
fn signal_and_cancel_reach_the_call() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.server_events.clear();
    p.client.signal(id, 2, None, p.now).unwrap();
    p.client.cancel(id, None, p.now).unwrap();
    p.run();
    assert!(matches!(
        p.server_events.as_slice(),
        [
            ServerEvent::Signal { call_id: a, signal: 2, .. },
            ServerEvent::Cancel { call_id: b, .. }
        ] if *a == id && *b == id
    ));
    p.push(id, exit(137));
    assert_eq!(p.client_calls().last().map(|c| c.3), Some(true));
}

#[test]
fn a_cancel_crossing_the_final_event_is_harmless() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.server_events.clear();
    // The client cancels while the exit is already on its way.
    p.client.cancel(id, None, p.now).unwrap();
    p.server.push(id, exit(0), None, None, p.now).unwrap();
    p.run();
    // Reported (each traced message is accounted for), for a call that is
    // no longer open; not a violation.
    assert!(
        matches!(p.server_events.as_slice(), [ServerEvent::Cancel { call_id, .. }] if *call_id == id),
        "{:?}",
        p.server_events
    );
    assert_eq!(p.server.open_calls(), 0);
    assert!(p.server_end().is_none() && p.client_end().is_none());
    assert_eq!(p.client_calls().last().map(|c| c.3), Some(true));
}

#[test]
fn a_forgotten_call_is_cancelled_and_its_events_dropped() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.push(id, started());
    p.client_events.clear();
    p.server_events.clear();
    p.client.forget(id, Some(Mark::new("cancel", None)), p.now);
    p.run();
    assert!(matches!(
        p.server_events.as_slice(),
        [ServerEvent::Cancel { .. }]
    ));
    assert_eq!(p.client_done, vec!["cancel"]);
    p.push(id, out("nobody reads this"));
    p.push(id, exit(137));
    assert!(p.client_events.is_empty(), "{:?}", p.client_events);
    assert_eq!(p.client.open_calls(), 0);
}

#[test]
fn the_exec_server_refuses_calls_over_its_cap() {
    let mut server = Limits::server();
    server.max_calls = 1;
    let mut client = Limits::client();
    // The client would refuse locally first; let it ask anyway.
    client.max_calls = 8;
    let mut p = Pair::with(client, server);
    p.run();
    // The hello answer lowered the client's own cap to the exec-server's.
    let a = p.exec(false);
    let req = ExecRequest {
        argv: vec![Bytes::from_static(b"x")],
        ..Default::default()
    };
    assert_eq!(
        p.client.start_call(req.clone(), None, None, p.now),
        Err(CallError::TooManyCalls(1))
    );
    p.push(a, started());
    p.push(a, exit(0));
    assert!(p.client.start_call(req, None, None, p.now).is_ok());
}

#[test]
fn an_exec_over_the_servers_cap_gets_an_error_event() {
    let mut server = Limits::server();
    server.max_calls = 1;
    let mut p = Pair::with(Limits::client(), server);
    p.run();
    // Pretend the hello answer did not lower the client's cap.
    p.client.max_calls_for_tests(8);
    let a = p.exec(false);
    let b = p.exec(false);
    assert!(matches!(
        p.server_events.last(),
        Some(ServerEvent::Refused { call_id, kind: ExecErrorKind::TooManyProcesses, .. }) if *call_id == b
    ));
    let calls = p.client_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, b);
    assert!(
        matches!(&calls[0].2, Kind::Error(e) if e.kind == ExecErrorKind::TooManyProcesses as i32)
    );
    assert!(calls[0].3, "a refusal is the call's last event");
    p.push(a, started());
}

#[test]
fn marked_messages_end_their_frame_and_carry_their_hop() {
    let mut p = Pair::ready();
    let hop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = ExecRequest {
        argv: vec![Bytes::from_static(b"prog")],
        stdin: StdinMode::Pipe as i32,
        ..Default::default()
    };
    let trace = TraceContext {
        traceparent: hop.into(),
        tracestate: String::new(),
    };
    let before = p.up_hops.len();
    let id = p
        .client
        .start_call(
            req,
            Some(trace.clone()),
            Some(Mark::new("exec", Some(hop.into()))),
            p.now,
        )
        .unwrap();
    // Unmarked stdin right behind it must not share its frame.
    p.client
        .write_stdin(id, Bytes::from_static(b"data"), p.now)
        .unwrap();
    p.run();
    assert_eq!(p.client_done, vec!["exec"]);
    assert_eq!(&p.up_hops[before..], &[hop.to_owned(), String::new()]);
    // Every message of the call carries the call's trace context.
    match &p.server_events[..] {
        [
            ServerEvent::Exec {
                trace: t, received, ..
            },
            ServerEvent::Stdin { .. },
        ] => {
            assert_eq!(t.as_ref(), Some(&trace));
            assert_eq!(received.hop, hop);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_exec_servers_marks_come_back_when_their_frame_leaves() {
    let mut p = Pair::ready();
    let id = p.exec(false);
    p.server
        .push(id, started(), None, Some(Mark::new("started", None)), p.now)
        .unwrap();
    p.server.push(id, out("x"), None, None, p.now).unwrap();
    p.server
        .push(id, exit(0), None, Some(Mark::new("exited", None)), p.now)
        .unwrap();
    assert!(p.server_done.is_empty(), "nothing has left yet");
    p.run();
    assert_eq!(p.server_done, vec!["started", "exited"]);
}

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
            .start_call(ExecRequest::default(), None, None, p.now),
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
    p.client
        .handle_link_end(Some(tonic::Status::unavailable("reset")), p.now);
    p.run();
    assert!(matches!(
        p.client_end(),
        Some(Err(SessionError::LinkFailed(s))) if s.message() == "reset"
    ));
    // The exec-server sees its link end in turn.
    assert!(matches!(p.server_end(), Some(Err(SessionError::LinkEnded))));
}

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
    let transport = p.server.link.transport.as_mut().unwrap();
    let env = crate::pb::session::Envelope {
        call_id: id,
        body: Some(crate::pb::session::envelope::Body::Event(
            crate::pb::session::TerminalEvent {
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
    let transport = p.server.link.transport.as_mut().unwrap();
    let env = crate::pb::session::Envelope {
        call_id: 99,
        body: Some(crate::pb::session::envelope::Body::Event(
            crate::pb::session::TerminalEvent {
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
    let transport = p.client.link.transport.as_mut().unwrap();
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

#[test]
fn the_exec_server_stops_taking_events_over_its_backlog() {
    let mut p = Pair::ready();
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
    assert!(p.server.backlog() <= Limits::server().backlog + crate::limits::MAX_CHUNK + 64);
    // Once the client reads again, the exec-server takes events again.
    p.client_reads = true;
    p.run();
    assert!(p.server.wants_input());
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
    let transport = p.client.link.transport.as_mut().unwrap();
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
