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

mod calls;
mod counters;
mod early;
mod ending;
mod forward;
mod hostile;
mod login_shell;
mod output;
mod resume;
mod stdin;
mod terminal;
mod timers;
mod window;

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
    /// What a new link's exec-server end is made from.
    client_key: StaticKeypair,
    server_pub: crate::keys::PublicKey,
    acceptor: Arc<Acceptor>,
    server_limits: Limits,
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
        Self::with_client(client, client_key, server_pub, acceptor, server_limits, now)
    }

    /// A pair of `client` (made by the test) and a new exec-server
    /// session, at `now`.
    fn with_client(
        client: ClientSession<Tag>,
        client_key: &StaticKeypair,
        server_pub: &crate::keys::PublicKey,
        acceptor: Arc<Acceptor>,
        server_limits: Limits,
        now: Now,
    ) -> Self {
        let server = ServerSession::new(Arc::clone(&acceptor), server_limits, now);
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
            client_key: client_key.clone(),
            server_pub: *server_pub,
            acceptor,
            server_limits,
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
        let id = self.client.next_call_id();
        self.client
            .start_call(id, req, None, None, self.now)
            .unwrap();
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
    Kind::Started(Started {
        pid: 7,
        program: String::new(),
    })
}

fn exit(code: i32) -> Kind {
    Kind::Exited(Exited {
        status: Some(exited::Status::Code(code)),
    })
}

fn out(s: &'static str) -> Kind {
    Kind::Stdout(Bytes::from_static(s.as_bytes()))
}
