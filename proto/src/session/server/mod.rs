//! The exec-server's session machine: the responder of the Noise handshake
//! (authorized keys, replay guard), the hello answer, pongs, timers and the
//! session's end. Its other methods are in `calls` (the call table),
//! `measure` (stdin windows) and `resume` (detach and adoption by a new
//! link); what a resume keeps and leaves behind is in `resumable`.

mod calls;
mod measure;
mod resumable;
mod resume;

pub use resumable::{Account, Adopted, Tombstone};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;

use super::events::Events;
use super::shared::{Shared, handshake_frame};
use super::window::{Budget, Probe};
use super::{
    CallError, Closed, Limits, LinkFailure, Now, Received, SessionError, Stage, Transmit, Violation,
};
use super::{output, stdin};
use crate::keys::{AuthorizedKeys, Origin, PublicKey, StaticKeypair};
use crate::limits::MAX_CHUNK;
use crate::noise::{self, ReplayGuard};
use crate::pb::clock::ClockStatus;
use crate::pb::session::{
    Envelope, ExecErrorKind, ExecRequest, HelloAck, Ping, Pong, StdinAck, TraceContext,
    envelope::Body,
};
use crate::pb::tunnel::{CloseReason, Frame, FrameKind};

/// Where the machine takes the authorized keys from at each handshake:
/// a fixed set, or one the exec-server keeps up to date with its file.
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// The keys in force now.
    fn current(&self) -> Arc<AuthorizedKeys>;
}

/// A set that never changes.
#[derive(Debug)]
struct FixedKeys(Arc<AuthorizedKeys>);

impl KeySource for FixedKeys {
    fn current(&self) -> Arc<AuthorizedKeys> {
        Arc::clone(&self.0)
    }
}

/// What every session of one exec-server shares to answer handshakes.
#[derive(Debug)]
pub struct Acceptor {
    /// The exec-server's static key.
    pub key: StaticKeypair,
    /// The route bound into the prologue: the exec-server's id.
    pub route: String,
    /// The client keys admitted, read at each handshake.
    pub keys: Arc<dyn KeySource>,
    /// Refuses replayed handshake messages.
    pub replay: Mutex<ReplayGuard>,
    /// The version named in the hello answer.
    pub version: String,
    /// Whether the endpoint starts login shells (`ExecRequest.login_shell`);
    /// the hello answer says so, and a request for one is refused without.
    pub login_shell: bool,
    /// The most bytes of one batch of a client's forwarded spans the
    /// endpoint takes (the hello answer says so); 0: it takes none.
    pub span_batch_max: u32,
    /// What the endpoint last read of its clock, told in the hello answer
    /// and every pong (the endpoint refreshes it; `None`: tell nothing).
    pub clock: RwLock<Option<ClockStatus>>,
    /// What calls' stdin windows may hold beyond their first window, in
    /// all ([`STDIN_BUDGET`] by default).
    pub stdin_budget: Arc<Budget>,
}

/// The default of [`Acceptor::stdin_budget`]: 256 MiB.
pub const STDIN_BUDGET: u64 = 256 * 1024 * 1024;

impl Acceptor {
    /// An acceptor for `key`, admitting `authorized`.
    pub fn new(key: StaticKeypair, authorized: AuthorizedKeys) -> Self {
        Self::with_source(key, Arc::new(FixedKeys(Arc::new(authorized))))
    }

    /// An acceptor for `key`, admitting what `keys` holds at each handshake.
    pub fn with_source(key: StaticKeypair, keys: Arc<dyn KeySource>) -> Self {
        let route = key.public().server_id();
        Self {
            key,
            route,
            keys,
            replay: Mutex::new(ReplayGuard::default()),
            version: env!("CARGO_PKG_VERSION").into(),
            login_shell: true,
            span_batch_max: 0,
            clock: RwLock::new(None),
            stdin_budget: Arc::new(Budget::new(STDIN_BUDGET)),
        }
    }

    /// The clock status to tell a client now.
    fn clock(&self) -> Option<ClockStatus> {
        self.clock.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the exec-server machine tells its caller. Exhaustive on purpose:
/// an endpoint must handle every event, and a new one must not build until
/// it does.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// Handshake message 1 authenticated this client key (message 2 is on
    /// its way).
    Authenticated {
        /// The client's static key.
        client: PublicKey,
    },
    /// Run a program for a new call.
    Exec {
        /// The call.
        call_id: u64,
        /// What to run.
        request: ExecRequest,
        /// The client's trace context.
        trace: Option<TraceContext>,
        /// Where it came from.
        received: Received,
    },
    /// An exec request the machine refused itself (bad call id, too many
    /// calls, a terminal out of bounds); the refusal has been sent.
    Refused {
        /// The call.
        call_id: u64,
        /// Why.
        kind: ExecErrorKind,
        /// Why, as the client was told.
        message: &'static str,
        /// The client's trace context.
        trace: Option<TraceContext>,
        /// Where it came from.
        received: Received,
    },
    /// Stdin for a call's process.
    Stdin {
        /// The call.
        call_id: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The call's stdin is closed (after everything sent before).
    StdinClose {
        /// The call.
        call_id: u64,
        /// The client's trace context.
        trace: Option<TraceContext>,
        /// Where it came from.
        received: Received,
    },
    /// Deliver a signal to the call's process group.
    Signal {
        /// The call.
        call_id: u64,
        /// The signal number.
        signal: i32,
        /// The client's trace context.
        trace: Option<TraceContext>,
        /// Where it came from.
        received: Received,
    },
    /// The client's caller has taken some of the call's output: `freed`
    /// more credit may be sent. Also for a finished call (whose credit an
    /// endpoint gives back), and with `freed` 0 when an acknowledgement
    /// settles a finished call: the session no longer keeps it
    /// ([`ServerSession::call_ids`]).
    OutputAcked {
        /// The call.
        call_id: u64,
        /// The credit freed.
        freed: u64,
        /// The call's output window, when the client changed it (0: as
        /// before): the endpoint's credit follows (wider at once; narrower
        /// as acknowledged credit comes back).
        window: u32,
    },
    /// The call's terminal window changed size (checked: the call has a
    /// terminal, and the size is within bounds).
    Resize {
        /// The call.
        call_id: u64,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Kill the call's process group (it ends with its exit event).
    Cancel {
        /// The call.
        call_id: u64,
        /// The client's trace context.
        trace: Option<TraceContext>,
        /// Where it came from.
        received: Received,
    },
    /// The link broke under a session that can be resumed: its calls (and
    /// their processes) are kept; the machine takes no more frames, and
    /// its events are kept for the resume. The driver stops.
    Detached {
        /// How the link broke.
        error: SessionError,
    },
    /// The client asks to resume the session `token` names (instead of a
    /// hello): the endpoint hands that session's machine to
    /// [`ServerSession::adopt`], or calls
    /// [`ServerSession::refuse_resume`].
    Resume {
        /// The session's token.
        token: bytes::Bytes,
    },
    /// A batch of the client's own spans to export for it (only after the
    /// hello, so from an authenticated client; within the batch limit).
    Spans(SpanBatch),
    /// A session whose link broke was not resumed within its grace
    /// ([`Limits::resume_grace`]): it is over, every call's process should
    /// end, and `tombstone` is what a client that comes back late is told
    /// ([`ServerSession::refuse_resume`]). The last event.
    Expired {
        /// What its calls produced and how they ended.
        tombstone: Tombstone,
    },
    /// The session is over: every call's process should end. The last
    /// event.
    Ended(Result<Closed, SessionError>),
}

/// A client's forwarded spans ([`ServerEvent::Spans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanBatch {
    /// The call they belong to.
    pub call_id: u64,
    /// An encoded OTLP `TracesData`, as the client sent it (unchecked).
    pub traces: Bytes,
    /// Spans in it, as the client says.
    pub spans: u32,
    /// Spans the client says it dropped since its last batch.
    pub dropped: u32,
}

/// What [`ServerSession::push`] queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The event's sequence number.
    pub seq: u64,
    /// The envelope-stream offset just past it.
    pub offset: u64,
    /// Whether it was the call's final event.
    pub last: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdin {
    Null,
    Open,
    Closed,
}

#[derive(Debug)]
struct Call {
    next_seq: u64,
    stdin: Stdin,
    /// Whether it runs on a terminal (only then may it be resized).
    terminal: bool,
    /// What arrived of its stdin, and what the process has taken.
    received: stdin::Incoming,
    /// Its output not yet acknowledged (kept for a resume).
    output: output::Sent,
    /// Its output window: the session's, until the client widens it (or
    /// narrows it back, as far as the session's).
    output_window: u32,
    /// The widest it has been: what may still be in flight while the
    /// endpoint's credit follows a narrower one.
    output_widest: u32,
    /// The trace context its events last carried (a resume's replay
    /// carries it again).
    trace: Option<TraceContext>,
    /// Its final event has been pushed (it stays, kept for a resume,
    /// until the client acknowledges it).
    finished: bool,
    /// Stdout and stderr bytes pushed, in all.
    produced: (u64, u64),
    /// Its exit, once pushed.
    exit: Option<crate::pb::session::Exited>,
    /// Where an ask for an acknowledgement stands
    /// ([`ServerSession::want_ack`]).
    ack: Ask,
}

/// A call's ask for an acknowledgement of its output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Ask {
    /// None wanted.
    #[default]
    No,
    /// Wanted, not sent yet: nothing unacknowledged has reached the link
    /// (what the process holds is still on its way), or the link is down.
    /// Sent with the call's next event, or once a resume replays it.
    Wanted,
    /// Sent; no acknowledgement that freed anything has come since.
    Sent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Hello,
    /// A resume was asked for; the endpoint adopts the session or refuses.
    Resuming,
    Ready,
}

/// The exec-server end of one session.
pub struct ServerSession<T> {
    pub(super) shared: Shared<T>,
    acceptor: Arc<Acceptor>,
    state: State,
    deadline: Option<Instant>,
    client: Option<PublicKey>,
    origin: Origin,
    calls: HashMap<u64, Call>,
    highest_call: u64,
    /// The session's output window (from the hello; 0: none).
    output_window: u32,
    /// The client acknowledges output when asked (from its hello or resume).
    acks_when_asked: bool,
    /// What a resume of this session is checked against, when offered.
    resumable: Option<resumable::Resumable>,
    /// The resume the client asked for, until adopted or refused.
    asked: Option<crate::pb::session::Resume>,
    /// The link broke (when): the calls are kept for a resume until the
    /// grace has passed.
    detached: bool,
    detached_at: Option<Instant>,
    /// The latest time an input carried.
    clock: Instant,
    /// Early data from message 1 that may run (the hello and the first
    /// call), and when it arrived: taken once the endpoint has taken
    /// `Authenticated`.
    early: Option<(Bytes, Now)>,
    /// What the replay guard said of message 1's early data, if it carried
    /// any.
    early_answer: Option<noise::Early>,
    /// Finished calls removed before the client acknowledged their final
    /// events (oldest first, as many as calls at most): what a resume
    /// tells the client of them.
    trimmed: VecDeque<(u64, Account)>,
    /// Spans of forwarded batches refused (over the limit, or not taken).
    spans_refused: u64,
    /// Probes sent to a quiet client (each ping's nonce).
    pub(super) pings_sent: u64,
    /// The round trip measured for stdin windows.
    probe: Probe,
    /// The stdin window the latest call that widened its own ended with,
    /// and when: a call started within
    /// [`PATH_MEMORY`](crate::session::window::PATH_MEMORY) starts there.
    /// Not adopted by a resume, which may come over another path.
    stdin_path: Option<(u32, Instant)>,
    events: Events<ServerEvent>,
}

impl<T> std::fmt::Debug for ServerSession<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("state", &self.state)
            .field("calls", &self.calls.len())
            .field("over", &self.shared.is_over())
            .finish_non_exhaustive()
    }
}

impl<T> ServerSession<T> {
    /// A session waiting for handshake message 1.
    pub fn new(acceptor: Arc<Acceptor>, limits: Limits, now: Now) -> Self {
        Self {
            shared: Shared::new(limits, now),
            acceptor,
            state: State::Handshaking,
            deadline: Some(now.at + limits.handshake_timeout),
            client: None,
            origin: Origin::Unknown,
            calls: HashMap::new(),
            highest_call: 0,
            output_window: 0,
            acks_when_asked: false,
            resumable: None,
            asked: None,
            detached: false,
            detached_at: None,
            clock: now.at,
            early: None,
            early_answer: None,
            trimmed: VecDeque::new(),
            spans_refused: 0,
            pings_sent: 0,
            probe: Probe::default(),
            stdin_path: None,
            events: Events::default(),
        }
    }

    /// Where the session comes from (for keys with `from=`); through a
    /// relay unless said otherwise.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// The client's authenticated key, once known.
    pub fn client(&self) -> Option<PublicKey> {
        self.client
    }

    /// Whether the session is over.
    #[cfg(test)]
    pub(crate) fn is_over(&self) -> bool {
        self.shared.is_over()
    }

    /// Bytes queued to send and not yet handed to the link.
    pub fn backlog(&self) -> usize {
        self.shared.backlog()
    }

    /// Spans of forwarded batches refused (over the limit the hello answer
    /// gave, or sent when it offered none).
    #[cfg(test)]
    pub(crate) fn spans_refused(&self) -> u64 {
        self.spans_refused
    }

    /// Calls running on the session.
    pub(crate) fn open_calls(&self) -> usize {
        self.calls.values().filter(|c| !c.finished).count()
    }

    /// The output credit of `call_id`'s events kept unacknowledged (0 for
    /// a call it does not hold).
    pub fn retained_by(&self, call_id: u64) -> u64 {
        self.calls.get(&call_id).map_or(0, |c| c.output.in_flight())
    }

    /// The output credit of every call's events kept unacknowledged
    /// (finished calls kept for a resume included).
    pub fn retained(&self) -> u64 {
        self.calls.values().map(|c| c.output.in_flight()).sum()
    }

    /// The output credit a call may have unacknowledged when it starts
    /// (from the hello; 0: no limit). The endpoint reads a call's output
    /// only while it has credit ([`ServerEvent::OutputAcked`] gives some
    /// back, and widens a call's window when the client asks).
    pub fn output_window(&self) -> u32 {
        self.output_window
    }

    /// Whether the client acknowledges a call's output when asked
    /// ([`want_ack`](Self::want_ack)), whatever part of its window it has
    /// taken: the endpoint may then hold a call's unacknowledged output to
    /// far less than its window.
    pub fn acks_when_asked(&self) -> bool {
        self.acks_when_asked
    }

    /// Asks the client to acknowledge what it has taken of the call's
    /// output (the endpoint's memory for unacknowledged output is short
    /// and the call's process waits for room). Only a client that
    /// [acknowledges when asked](Self::acks_when_asked) is asked, at most
    /// once until it next acknowledges the call, and only once something
    /// unacknowledged has been sent: an ask made before that (the output
    /// the process holds still on its way, or the link down) goes with the
    /// call's next event, or after a resume's replay.
    pub fn want_ack(&mut self, call_id: u64, now: Now) {
        if !self.acks_when_asked {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.ack == Ask::Sent {
            return;
        }
        call.ack = Ask::Wanted;
        self.send_ask(call_id, now);
    }

    /// Sends the call's wanted ask, if it may go now.
    fn send_ask(&mut self, call_id: u64, now: Now) {
        if self.state != State::Ready || self.detached {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if call.ack != Ask::Wanted || call.output.is_empty() {
            return;
        }
        call.ack = Ask::Sent;
        // Nothing of the call's trace rides on it: it is flow control.
        let _ = self.send(
            call_id,
            None,
            Body::AckWanted(crate::pb::session::AckWanted {}),
            now,
        );
    }

    /// The output window granted for `asked`: up to our ceiling, never
    /// below the session's.
    pub(super) fn granted_output_window(&self, asked: u32) -> u32 {
        let ceiling = self.shared.limits.output_window_max.max(self.output_window);
        asked.min(ceiling).max(self.output_window)
    }

    /// A call's output window now (0 for a call it does not hold): the
    /// session's, or what the client asked for the call, as granted.
    pub fn output_window_of(&self, call_id: u64) -> u32 {
        self.calls.get(&call_id).map_or(0, |c| c.output_window)
    }

    /// Hands in a frame from the link.
    pub fn handle_frame(&mut self, mut frame: Frame, now: Now) {
        if self.shared.is_over() {
            return;
        }
        self.shared.begin_frame(&mut frame, now);
        if let Err(e) = self.frame(frame, now) {
            self.fail(e, now);
        }
        self.after(now);
    }

    fn frame(&mut self, frame: Frame, now: Now) -> Result<(), SessionError> {
        match FrameKind::try_from(frame.kind) {
            Ok(FrameKind::Handshake) if self.state == State::Handshaking => {
                let accepted = {
                    let a = &*self.acceptor;
                    let keys = a.keys.current();
                    let mut replay = a.replay.lock().unwrap_or_else(|e| e.into_inner());
                    let answered = noise::accept_early(
                        &a.key,
                        a.route.as_bytes(),
                        &frame.payload,
                        now.wall,
                        now.at,
                        &keys,
                        &mut replay,
                        self.shared.limits.noise,
                    )?;
                    // A key limited to some addresses (`from=`) is refused
                    // from anywhere else.
                    if !keys.admits(&answered.accepted.client, self.origin) {
                        return Err(noise::HandshakeError::Unauthorized {
                            client: answered.accepted.client,
                        }
                        .into());
                    }
                    self.early_answer = answered.early;
                    // Run once the endpoint has taken `Authenticated` (and
                    // not refused the session a slot).
                    self.early = answered.data.map(|d| (Bytes::from(d), now));
                    answered.accepted
                };
                self.shared.send_clear(handshake_frame(accepted.msg2));
                self.shared.transport = Some(accepted.transport);
                self.client = Some(accepted.client);
                self.state = State::Hello;
                self.events.push(ServerEvent::Authenticated {
                    client: accepted.client,
                });
                Ok(())
            }
            Ok(FrameKind::Close) => {
                let reason =
                    CloseReason::try_from(frame.close_reason).unwrap_or(CloseReason::Unspecified);
                Err(match self.state {
                    State::Ready => SessionError::LinkClosed(reason),
                    _ => SessionError::Refused(reason),
                })
            }
            Ok(FrameKind::Data) if self.state != State::Handshaking => {
                self.shared.receive(&frame.payload)?;
                while let Some(env) = self.shared.next_envelope()? {
                    self.envelope(env, now)?;
                }
                if let Some(reason) = self.shared.peer_closed() {
                    self.shared.peer_close(reason, now);
                }
                Ok(())
            }
            _ => Err(SessionError::Protocol(Violation::UnexpectedFrame)),
        }
    }

    fn envelope(&mut self, env: Envelope, now: Now) -> Result<(), SessionError> {
        let call_id = env.call_id;
        let trace = env.trace;
        let received = self.shared.received(env.send_time_unix_nanos);
        let body = env
            .body
            .ok_or(SessionError::Protocol(Violation::EmptyMessage))?;
        match body {
            Body::Hello(hello) if self.state == State::Hello => {
                let limits = self.shared.limits;
                self.output_window = output::negotiate(hello.output_window, limits.output_window);
                self.acks_when_asked = hello.acks_when_asked;
                let ack = HelloAck {
                    server_version: self.acceptor.version.clone(),
                    max_processes: u32::try_from(limits.max_calls).unwrap_or(u32::MAX),
                    max_chunk: MAX_CHUNK as u32,
                    stdin_window: limits.stdin_window,
                    output_window: self.output_window,
                    resume_token: self.offer_resume(),
                    login_shell: self.acceptor.login_shell,
                    span_batch_max: self.acceptor.span_batch_max,
                    early_ticket: self
                        .acceptor
                        .replay
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .ticket()
                        .map(|t| Bytes::copy_from_slice(t.as_bytes()))
                        .unwrap_or_default(),
                    clock: self.acceptor.clock(),
                };
                self.send(0, None, Body::HelloAck(ack), now)?;
                self.state = State::Ready;
                self.deadline = None;
                Ok(())
            }
            Body::Resume(asked) if self.state == State::Hello => {
                // The endpoint finds the session the token names and
                // adopts it here, or refuses.
                let token = asked.token.clone();
                self.asked = Some(asked);
                self.state = State::Resuming;
                self.events.push(ServerEvent::Resume { token });
                Ok(())
            }
            Body::Hello(_) | Body::Resume(_) => {
                Err(SessionError::Protocol(Violation::RepeatedHello))
            }
            _ if self.state != State::Ready => Err(SessionError::Protocol(
                Violation::UnexpectedMessage("message before the hello"),
            )),
            Body::Ping(p) => {
                let pong = Body::Pong(Pong {
                    nonce: p.nonce,
                    recv_time_unix_nanos: now.unix_nanos(),
                    clock: self.acceptor.clock(),
                });
                self.send(0, None, pong, now)
            }
            Body::Pong(p) => {
                self.measured(p.nonce, now);
                Ok(())
            }
            Body::StdinAck(_) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "stdin acknowledgement",
            ))),
            Body::OutputAck(a) => {
                // An acknowledgement may come for a finished call (kept for
                // a resume), or cross a call's end.
                let asked = self.granted_output_window(a.window);
                if let Some(call) = self.calls.get_mut(&call_id) {
                    let freed = call
                        .output
                        .ack(call_id, a.seq, call.next_seq)
                        .map_err(SessionError::Protocol)?;
                    // An acknowledgement that frees nothing (one that only
                    // tells a wider window) does not answer an ask: the
                    // process that asked waits on, and asks no more.
                    if freed > 0 && call.ack == Ask::Sent {
                        call.ack = Ask::No;
                    }
                    // The client widens a running call's window (up to
                    // our ceiling), or narrows it back when the call goes
                    // quiet (never below the session's); 0 leaves it.
                    let window = if self.output_window != 0
                        && a.window != 0
                        && !call.finished
                        && asked != call.output_window
                    {
                        call.output_window = asked;
                        call.output_widest = call.output_widest.max(asked);
                        asked
                    } else {
                        0
                    };
                    // Reported for a finished call too, and when nothing
                    // was freed but the call is settled: the endpoint
                    // lets go of what it holds for the call only then.
                    let settled = call.settled();
                    if settled {
                        self.calls.remove(&call_id);
                    }
                    if freed > 0 || settled || window > 0 {
                        self.events.push(ServerEvent::OutputAcked {
                            call_id,
                            freed,
                            window,
                        });
                    }
                } else {
                    self.live(call_id)?;
                }
                Ok(())
            }
            Body::Exec(request) => self.exec(call_id, request, trace, received, now),
            Body::Spans(batch) => {
                let max = self.acceptor.span_batch_max as usize;
                if max == 0 || batch.traces.len() > max {
                    // Not what the hello answer offered: dropped, counted.
                    self.spans_refused += u64::from(batch.spans.max(1));
                } else {
                    self.events.push(ServerEvent::Spans(SpanBatch {
                        call_id,
                        traces: batch.traces,
                        spans: batch.spans,
                        dropped: batch.dropped,
                    }));
                }
                Ok(())
            }
            Body::Stdin(d) => {
                if self.stdin_open(call_id)? {
                    let rtt = self.probe.least();
                    let grown = match self.calls.get_mut(&call_id) {
                        Some(call) => call
                            .received
                            .receive(call_id, d.data.len(), now.at, rtt)
                            .map_err(SessionError::Protocol)?,
                        None => None,
                    };
                    if let Some((consumed, window)) = grown {
                        // The window grew on what arrived: the client hears
                        // of it at once.
                        let ack = Body::StdinAck(StdinAck { consumed, window });
                        self.send(call_id, None, ack, now)?;
                    }
                    self.measure(call_id, now);
                    self.events.push(ServerEvent::Stdin {
                        call_id,
                        data: d.data,
                    });
                }
                Ok(())
            }
            // Control messages for a call that has ended (they crossed its
            // final event) are still reported, so that each traced message
            // is accounted for; the endpoint finds no process for them.
            Body::StdinClose(_) => {
                if self.live(call_id)? {
                    self.stdin_open(call_id)?;
                    if let Some(call) = self.calls.get_mut(&call_id) {
                        call.stdin = Stdin::Closed;
                        call.received.close();
                    }
                }
                self.events.push(ServerEvent::StdinClose {
                    call_id,
                    trace,
                    received,
                });
                Ok(())
            }
            Body::Signal(s) => {
                self.live(call_id)?;
                self.events.push(ServerEvent::Signal {
                    call_id,
                    signal: s.signal,
                    trace,
                    received,
                });
                Ok(())
            }
            Body::Resize(r) => {
                self.resize(call_id, r.rows, r.cols)?;
                Ok(())
            }
            Body::Cancel(_) => {
                self.live(call_id)?;
                self.events.push(ServerEvent::Cancel {
                    call_id,
                    trace,
                    received,
                });
                Ok(())
            }
            Body::HelloAck(_) | Body::Resumed(_) => Err(SessionError::Protocol(
                Violation::UnexpectedMessage("hello answer"),
            )),
            Body::Event(_) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "terminal event",
            ))),
            Body::AckWanted(_) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "acknowledgement asked for",
            ))),
        }
    }

    fn send(
        &mut self,
        call_id: u64,
        trace: Option<&TraceContext>,
        body: Body,
        now: Now,
    ) -> Result<(), SessionError> {
        match self.shared.send(call_id, trace, body, None, now) {
            Ok(_) | Err(CallError::Ended) => Ok(()),
            Err(_) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "message too large to answer",
            ))),
        }
    }

    /// Refuses an authenticated client for want of a session slot (the
    /// exec-server takes one only once message 1 has authenticated): the
    /// answer to message 1, if it has not left yet, is taken back, and the
    /// client is told in the clear that the exec-server is busy. Does
    /// nothing once the hello has been answered.
    pub fn refuse_busy(&mut self, now: Now) {
        if self.state != State::Hello || self.shared.is_over() {
            return;
        }
        self.shared.retract_clear();
        self.shared.transport = None;
        // Nothing of message 1 runs.
        self.early = None;
        self.fail(SessionError::Handshake(noise::HandshakeError::Busy), now);
        self.after(now);
    }

    /// Closes the session cleanly (shutting down): what is queued goes
    /// first, then the authenticated close.
    pub fn close(&mut self, reason: &'static str, now: Now) {
        self.shared.close(reason, now);
        self.after(now);
    }

    /// The exec-server is shutting down: closes the session cleanly.
    pub fn shutdown(&mut self, now: Now) {
        self.close("exec-server shutting down", now);
    }

    /// The peer ended its half of the link (`failure`: the link broke).
    pub fn handle_link_end(&mut self, failure: Option<LinkFailure>, now: Now) {
        self.shared.link_ended(failure, now);
        self.after(now);
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self, now: Now) -> Option<Transmit<T>> {
        let t = self.shared.poll_transmit(now);
        self.after(now);
        t
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a frame.
    pub(crate) fn has_transmit(&self) -> bool {
        self.shared.has_transmit()
    }

    /// Whether the driver should end our half of the link now (true once).
    pub fn poll_end_link(&mut self) -> bool {
        self.shared.poll_end_link()
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.sync_end();
        if self.events.is_empty()
            && let Some((data, now)) = self.early.take()
            && !self.shared.is_over()
        {
            if let Err(e) = self.run_early(&data, now) {
                self.fail(e, now);
            }
            self.after(now);
        }
        self.events.poll()
    }

    /// What the replay guard said of the early data message 1 carried
    /// (`None`: it carried none).
    pub fn early_data(&self) -> Option<noise::Early> {
        self.early_answer
    }

    /// Runs message 1's early data: the hello, then at most one call.
    fn run_early(&mut self, data: &Bytes, now: Now) -> Result<(), SessionError> {
        let mut decoder =
            crate::envelope_stream::EnvelopeDecoder::new(self.shared.limits.noise.max_envelope);
        decoder.feed(data);
        let mut seen = 0;
        while let Some(bytes) = decoder
            .next()
            .map_err(|_| SessionError::Protocol(Violation::UnexpectedMessage("early data")))?
        {
            let env = crate::envelope::decode_bytes(bytes)?;
            let allowed = matches!(
                (&env.body, seen),
                (Some(Body::Hello(_)), 0) | (Some(Body::Exec(_)), 1)
            );
            if !allowed {
                return Err(SessionError::Protocol(Violation::UnexpectedMessage(
                    "early data other than the hello and one call",
                )));
            }
            seen += 1;
            self.envelope(env, now)?;
        }
        if decoder.buffered() > 0 || seen == 0 {
            return Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "early data cut short",
            )));
        }
        Ok(())
    }

    /// Hands back an event the caller cannot take yet (stdin for a process
    /// whose queue is full); it is the next one returned, and no frame is
    /// read until then.
    pub fn defer(&mut self, event: ServerEvent) {
        self.events.defer(event);
        self.shared.stalled = true;
    }

    /// Whether the machine reads frames now: not while events wait, nor
    /// while replies have filled the backlog's room above its bound (every
    /// frame may need an answer). A backlog over its bound from the
    /// session's own output alone stops its output, not its reading.
    pub(crate) fn wants_frames(&self) -> bool {
        self.shared.is_over()
            || (self.events.is_empty() && self.early.is_none() && !self.shared.over_reply_room())
    }

    /// Whether the machine takes terminal events now.
    pub(crate) fn wants_input(&self) -> bool {
        self.state == State::Ready && !self.shared.is_over() && !self.shared.over_backlog()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.detached {
            return self.grace_end();
        }
        if let Some(linger) = self.shared.linger_deadline() {
            return Some(linger);
        }
        if self.shared.is_over() {
            return None;
        }
        if let Some(d) = self.deadline {
            return Some(d);
        }
        if !self.wants_frames() {
            return None;
        }
        let idle = self.shared.quiet_since + self.shared.limits.idle_timeout;
        if self.state == State::Ready && !self.shared.keepalive_sent {
            return Some(idle.min(self.shared.quiet_since + self.shared.limits.keepalive));
        }
        Some(idle)
    }

    /// When a detached session's grace ends.
    fn grace_end(&self) -> Option<Instant> {
        self.detached_at
            .map(|at| at + self.shared.limits.resume_grace)
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.clock = self.clock.max(now.at);
        if self.detached {
            if self.grace_end().is_some_and(|end| now.at >= end) {
                self.expire();
            }
            return;
        }
        self.shared.handle_linger(now);
        if !self.shared.is_over() {
            let reading = self.wants_frames();
            self.shared.idle_clock(reading, now);
            if self.deadline.is_some_and(|d| now.at >= d) {
                let stage = match self.state {
                    State::Handshaking => Stage::Handshake,
                    _ => Stage::Hello,
                };
                self.fail(SessionError::Timeout(stage), now);
            } else if reading {
                let quiet = now.at.saturating_duration_since(self.shared.quiet_since);
                if quiet >= self.shared.limits.idle_timeout {
                    self.fail(SessionError::Timeout(Stage::Idle), now);
                } else if quiet >= self.shared.limits.keepalive
                    && !self.shared.keepalive_sent
                    && self.state == State::Ready
                {
                    self.idle_windows(now);
                    self.probe(now);
                }
            }
        }
        self.sync_end();
    }

    /// Asks a client that has been quiet for a keepalive whether it is
    /// still there (once per quiet period): a live client answers, however
    /// rarely it pings by itself, and a gone one is declared dead at the
    /// idle timeout.
    fn probe(&mut self, now: Now) {
        self.pings_sent += 1;
        let ping = Body::Ping(Ping {
            nonce: self.pings_sent,
        });
        // A session that cannot send is ending anyway.
        let _ = self.shared.send(0, None, ping, None, now);
        self.shared.keepalive_sent = true;
    }

    /// Overrides the output window the hello set (a peer that ignores it).
    #[cfg(test)]
    pub(crate) fn set_output_window_for_tests(&mut self, window: u32) {
        self.output_window = window;
    }

    /// Whether the session is completely over (or detached) and every
    /// event taken.
    pub(crate) fn is_done(&self) -> bool {
        (self.events.ended() || self.detached) && self.shared.is_done() && self.events.is_empty()
    }

    fn fail(&mut self, err: SessionError, now: Now) {
        // Before the client can read an authenticated close, it is told in
        // the clear.
        let clear = if self.shared.transport.is_none() {
            err.close_reason()
        } else {
            None
        };
        self.shared.fail(err, clear, now);
    }

    fn after(&mut self, now: Now) {
        self.clock = self.clock.max(now.at);
        let reading = self.wants_frames();
        self.shared.idle_clock(reading, now);
        self.sync_end();
    }

    /// The grace passed without a resume: the session is over, and what a
    /// late client is told is handed to the endpoint.
    fn expire(&mut self) {
        let tombstone = self.tombstone();
        self.detached = false;
        self.detached_at = None;
        self.calls.clear();
        self.events.end(ServerEvent::Expired { tombstone });
    }

    fn sync_end(&mut self) {
        if self.events.ended() || self.detached {
            return;
        }
        if let Some(end) = self.shared.end() {
            let end = end.clone();
            if let Err(e) = &end
                && self.detachable(e)
            {
                // The link broke under a session that can be resumed: its
                // calls are kept (the endpoint keeps their processes) for
                // the grace.
                self.detached = true;
                self.detached_at = Some(self.clock);
                self.probe.cancel();
                self.events.push(ServerEvent::Detached { error: e.clone() });
                return;
            }
            self.calls.clear();
            self.events.end(ServerEvent::Ended(end));
        }
    }
}
