//! The client's session machine: the initiator of the Noise handshake, the
//! session hello, keepalive pings and the clock-offset estimate, timers and
//! the session's end. Its other methods are in `calls` (the call table),
//! `forward` (the spans it forwards), `measure` (output windows) and
//! `resume` (detach, reattach, give up); what those keep is in `spans` and
//! `resumable`.

mod calls;
mod forward;
mod measure;
mod resumable;
mod resume;
mod spans;

pub use resumable::{Abandonment, ReattachError};
pub use spans::{ForwardError, Forwarded, SpanCounts};
#[cfg(test)]
pub(crate) use spans::{HELD_BATCHES, LINGER};

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Mark;
use super::events::Events;
use super::peer_clock::{self, Estimate, Offset, Sample, Status};
use super::shared::{Shared, handshake_frame};
use super::window::Probe;
use super::{
    CallError, Closed, Limits, LinkFailure, Now, Received, SessionError, Stage, Transmit, Violation,
};
use super::{EncodedTimings, StdinFlow};
use super::{output, stdin};
use crate::keys::{PublicKey, StaticKeypair};
use crate::limits::{term_ok, terminal_size_ok};
use crate::noise::{ClientHandshake, EarlyAnswer, EarlyTicket};
use crate::pb::session::{
    Envelope, ExecRequest, Hello, Ping, Pong, StdinMode, TraceContext, envelope::Body,
    terminal_event,
};
use crate::pb::tunnel::{CloseReason, Frame, FrameKind};

/// Pings remembered while waiting for their pongs.
const PINGS: usize = 8;

/// What the exec-server said in its hello answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Its version.
    pub server_version: String,
    /// Most calls it runs at once on this session.
    pub max_processes: u32,
    /// Largest output chunk it sends.
    pub max_chunk: u32,
    /// The output credit of a call that may be unacknowledged (0: none):
    /// what the caller's queue for one call must hold.
    pub output_window: u32,
    /// Whether it starts login shells (`ExecRequest.login_shell`).
    pub login_shell: bool,
    /// The hello exchange's clock-offset sample, if it was a possible one.
    pub clock: Option<Sample>,
    /// The exec-server run's ticket, for the early data of later sessions
    /// ([`FirstCall::ticket`]), if it offered one.
    pub early_ticket: Option<EarlyTicket>,
}

/// What the session's start cost, counted from the protocol's own steps
/// (never from elapsed time).
///
/// A *flight* is what the client sends before it next has to hear from the
/// exec-server: the first is handshake message 1 (with the relay `Open`),
/// and each later one is the first thing sent after something arrived. The
/// round trips before the first event of the session's first call are the
/// flights up to the one that carried the request that event answers (a
/// flight sent meanwhile that the event does not wait for, such as closing
/// the call's stdin, is not one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Flights sent so far.
    pub flights: u32,
    /// Round trips waited on before the first event of the session's first
    /// call (`None` until that event has arrived).
    pub round_trips: Option<u32>,
    /// Calls sent again once the session was up because the exec-server
    /// refused to run them from handshake message 1 (early data).
    pub early_retries: u32,
}

/// A terminal event of one call, as the exec-server pushed it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// The call.
    pub call_id: u64,
    /// Its place in the call's sequence (from 0, without gaps).
    pub seq: u64,
    /// What happened.
    pub kind: terminal_event::Kind,
    /// Whether it is the call's final event (exited or error).
    pub last: bool,
    /// With the final event: the exec-server's stage timings for the call,
    /// when it sent them (decoded by whoever places them).
    pub timings: Option<EncodedTimings>,
    /// The trace context the exec-server sent with it.
    pub trace: Option<TraceContext>,
    /// Where it came from.
    pub received: Received,
    /// With the final event of a call that had stdin: how its window
    /// treated it.
    pub stdin: Option<StdinFlow>,
}

/// What the client machine tells its caller. Exhaustive on purpose: an
/// endpoint must handle every event, and a new one must not build until
/// it does.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// Handshake message 2 proved that the peer holds the pinned key.
    Secured,
    /// The hello was answered: calls may start.
    Ready(Ready),
    /// A call's terminal event.
    Call(CallEvent),
    /// The exec-server asked for the call's output to be acknowledged (its
    /// memory for unacknowledged output is short). An endpoint that holds
    /// back what its caller took (to report it in larger steps) reports it
    /// now with [`ClientSession::output_taken`], or with the caller's next
    /// take: the machine acknowledges the next report at once.
    AckWanted {
        /// The call.
        call_id: u64,
    },
    /// A ping was answered.
    Pong {
        /// The ping's nonce (from [`ClientSession::ping`]).
        nonce: u64,
        /// The round trip, on the monotonic clock.
        rtt: Duration,
        /// The clock-offset sample it gave.
        sample: Option<Sample>,
    },
    /// The link broke under a session the exec-server keeps for a resume:
    /// the calls wait (the driver stops; [`ClientSession::reattach`] starts
    /// a new link, [`ClientSession::give_up`] ends the session).
    Detached {
        /// How the link broke.
        error: SessionError,
    },
    /// The session is back over a new link (`expired`: the exec-server no
    /// longer had it; its calls are [`ClientEvent::Lost`]).
    Resumed {
        /// Whether the session was gone.
        expired: bool,
        /// Per call resumed, the output bytes sent again (what the lost
        /// link had not delivered).
        replayed: Vec<(u64, u64)>,
    },
    /// A call the resumed session no longer has: the output that will
    /// never arrive, and how it ended when that is known. The call is over.
    Lost {
        /// The call.
        call_id: u64,
        /// The stdout and stderr bytes that will never arrive, exactly;
        /// `None`: the exec-server no longer knows how much the call
        /// produced, so what was lost is unknown.
        lost: Option<(u64, u64)>,
        /// How its process ended, when known.
        exit: Option<crate::pb::session::Exited>,
        /// Whether the whole session was gone (its grace expired, or the
        /// exec-server restarted); otherwise only this call was.
        expired: bool,
    },
    /// The exec-server took the session this machine gave up
    /// ([`ClientSession::abandon`]): its calls' processes end (`expired`:
    /// it no longer had the session, so they had ended already). The
    /// machine then closes.
    Abandoned {
        /// Whether the session was already gone.
        expired: bool,
    },
    /// The session is over: every call still open has ended with it. The
    /// last event.
    Ended(Result<Closed, SessionError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdin {
    Null,
    Open,
    Closed,
}

#[derive(Debug)]
struct Call<T> {
    next_seq: u64,
    stdin: Stdin,
    /// Whether it runs on a terminal (only then may it be resized).
    terminal: bool,
    /// The stdin not yet sent, waiting for credit.
    out: stdin::Outgoing<T>,
    /// The caller is gone: events are checked, then dropped.
    forgotten: bool,
    /// Its output received, taken and acknowledged.
    output: output::Received,
    /// What every message of the call carries.
    trace: Option<TraceContext>,
    /// Stdout and stderr bytes received, in all.
    received: (u64, u64),
    /// The request, until the call's first event shows that it arrived:
    /// sent again when a resume finds that it never did.
    request: Option<ExecRequest>,
}

/// The first call, riding in handshake message 1 (early data) with the
/// hello ([`ClientSession::with_call`]).
#[derive(Debug)]
pub struct FirstCall<T> {
    /// Its id (from 1).
    pub id: u64,
    /// What to run.
    pub request: ExecRequest,
    /// The trace context every message of the call carries.
    pub trace: Option<TraceContext>,
    /// Handed back with message 1's transmit.
    pub mark: Option<Mark<T>>,
    /// The ticket of the exec-server's run, from an earlier session's
    /// hello answer ([`Ready::early_ticket`]); with another run's, or
    /// [`EarlyTicket::NONE`], the call is sent again after the handshake.
    pub ticket: EarlyTicket,
}

/// Why a session could not start with its first call in message 1.
///
/// Not `#[non_exhaustive]`: the split is closed (the call alone is at
/// fault and the session can open without it, or the session cannot
/// open); what goes wrong within each grows in [`CallError`] and
/// [`SessionError`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum FirstCallError {
    /// The call is not one that can be sent.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The session could not start (early data over
    /// [`MAX_EARLY_DATA`](crate::noise::MAX_EARLY_DATA) among them).
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A call sent in message 1, kept until message 2 says whether it runs.
#[derive(Debug)]
struct Early {
    id: u64,
    request: ExecRequest,
    trace: Option<TraceContext>,
    /// Message 1's hop header, for the frame that sends it again.
    hop: Option<String>,
    /// When the hello left with it (for the hello's clock sample).
    sent_unix_nanos: u64,
}

enum State {
    Handshaking {
        hs: Box<ClientHandshake>,
    },
    Hello {
        sent_unix_nanos: u64,
    },
    Ready,
    /// A new link's handshake, to resume the session over it.
    Reattaching {
        hs: Box<ClientHandshake>,
    },
    /// The resume asked for; waiting for the answer.
    Resuming,
}

/// The client end of one session.
pub struct ClientSession<T> {
    pub(super) shared: Shared<T>,
    state: State,
    deadline: Option<Instant>,
    calls: HashMap<u64, Call<T>>,
    next_call: u64,
    max_calls: usize,
    /// The exec-server's stdin window (0: none).
    stdin_window: u32,
    /// The session's output window (0: none).
    output_window: u32,
    /// Whether the exec-server starts login shells (its hello answer
    /// says so).
    login_shell: bool,
    /// Stdin bytes queued in all calls, waiting for credit.
    stdin_queued: usize,
    /// No call's output window falls back before this (it may be early:
    /// arrivals only delay a fall-back); `None` while every window is at
    /// its first. Kept so that the timer needs no scan of the calls.
    window_check: Option<Instant>,
    /// The output window of the latest call that ended with one wider than
    /// the session's, and when it ended: where the next call starts, within
    /// [`PATH_MEMORY`](crate::session::window::PATH_MEMORY).
    path_window: Option<(u32, Instant)>,
    events: Events<ClientEvent>,
    clock: Estimate,
    /// What the exec-server last told of its clock.
    peer_clock: Status,
    /// Outstanding pings: nonce and when sent.
    pings: VecDeque<(u64, Instant)>,
    last_nonce: u64,
    /// The session's resume token and secret, when the exec-server offers
    /// resumes.
    resumable: Option<resumable::Resumable>,
    /// The link broke: calls are kept until the session is resumed over a
    /// new link (or given up).
    detached: bool,
    /// Final events received and not yet acknowledged: the exec-server
    /// keeps those calls for a resume until told (with the next message).
    final_acks: Vec<(u64, u64)>,
    /// The round trip measured for output windows.
    probe: Probe,
    /// Flights and round trips so far.
    counters: Counters,
    /// Something arrived since the last flight: the next frame sent starts
    /// a new one.
    answered: bool,
    /// The session's first call, once started.
    first_call: Option<u64>,
    /// The flight that carries (or carried) its request, the last time it
    /// was sent.
    first_flight: Option<u32>,
    /// The call message 1 carried, until message 2 answers.
    early: Option<Early>,
    /// Calls that were open when the session ended with an error or was
    /// given up: the exec-server may still be running them.
    orphaned: usize,
    /// This machine only gives a session up ([`ClientSession::abandon`]).
    abandoning: bool,
    /// The client's spans forwarded to the exec-server.
    forwarding: spans::Forwarding,
}

impl<T> std::fmt::Debug for ClientSession<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("ready", &matches!(self.state, State::Ready))
            .field("calls", &self.calls.len())
            .field("over", &self.shared.is_over())
            .finish_non_exhaustive()
    }
}

/// Whether a first call of `request` (with `trace`) can ride in
/// handshake message 1 beside the hello: it fits
/// ([`ClientSession::with_call`] refuses one that does not with
/// [`HandshakeError::EarlyDataTooLarge`]), and it is no login shell (which
/// is sent only to an exec-server whose hello answer says it starts them:
/// an older one would read it as a request with no program). A caller
/// sends another after the handshake instead.
///
/// [`HandshakeError::EarlyDataTooLarge`]: crate::noise::HandshakeError::EarlyDataTooLarge
pub fn fits_early(limits: &Limits, request: &ExecRequest, trace: Option<&TraceContext>) -> bool {
    !request.login_shell
        && early_payload(limits, u64::MAX, 1, request, trace)
            .is_ok_and(|early| early.len() <= crate::noise::MAX_EARLY_DATA)
}

/// Message 1's early data: the hello and the first call, framed.
fn early_payload(
    limits: &Limits,
    sent_unix_nanos: u64,
    id: u64,
    request: &ExecRequest,
    trace: Option<&TraceContext>,
) -> Result<bytes::Bytes, CallError> {
    let hello = Envelope {
        call_id: 0,
        trace: None,
        send_time_unix_nanos: sent_unix_nanos,
        body: Some(Body::Hello(Hello {
            client_version: env!("CARGO_PKG_VERSION").into(),
            output_window: limits.output_window,
            acks_when_asked: true,
        })),
    };
    let exec = Envelope {
        call_id: id,
        trace: trace.cloned(),
        send_time_unix_nanos: sent_unix_nanos,
        body: Some(Body::Exec(request.clone())),
    };
    let mut early = crate::envelope_stream::EnvelopeEncoder::with_max(limits.noise.max_envelope);
    for env in [&hello, &exec] {
        early.push_message(env).map_err(
            |crate::envelope_stream::EnvelopeStreamError::TooLarge { len, max }| {
                CallError::TooLarge(crate::envelope::EnvelopeError::TooLarge { len, max })
            },
        )?;
    }
    Ok(early.take(usize::MAX))
}

/// Checks a call before it is sent: a login shell without a command, and
/// only to an exec-server that offers them (`login_shell`); a terminal of
/// a size and type within bounds.
fn check_request(request: &ExecRequest, login_shell: bool) -> Result<(), CallError> {
    if request.login_shell {
        if !request.argv.is_empty() {
            return Err(CallError::LoginShellWithCommand);
        }
        if !login_shell {
            return Err(CallError::NoLoginShell);
        }
    }
    if let Some(t) = &request.terminal {
        if !terminal_size_ok(t.rows, t.cols) {
            return Err(CallError::TerminalSize {
                rows: t.rows,
                cols: t.cols,
            });
        }
        if !term_ok(&t.term) {
            return Err(CallError::TermValue);
        }
    }
    Ok(())
}

impl<T> ClientSession<T> {
    /// Starts a session with the exec-server whose static key is `server`
    /// (pinned), as `key`. The first frame to send is handshake message 1.
    pub fn new(
        key: &StaticKeypair,
        server: &PublicKey,
        limits: Limits,
        now: Now,
    ) -> Result<Self, SessionError> {
        let route = server.server_id();
        let (hs, msg1) =
            ClientHandshake::start(key, server, route.as_bytes(), now.wall, limits.noise)?;
        let mut shared = Shared::new(limits, now);
        shared.send_clear(handshake_frame(msg1));
        Ok(Self::handshaking(shared, hs, limits, now))
    }

    /// A session whose message 1 is queued on `link`, waiting for message
    /// 2, with no call yet.
    fn handshaking(shared: Shared<T>, hs: ClientHandshake, limits: Limits, now: Now) -> Self {
        Self {
            shared,
            state: State::Handshaking { hs: Box::new(hs) },
            deadline: Some(now.at + limits.handshake_timeout),
            calls: HashMap::new(),
            next_call: 1,
            max_calls: limits.max_calls,
            stdin_window: 0,
            output_window: 0,
            login_shell: false,
            stdin_queued: 0,
            window_check: None,
            path_window: None,
            events: Events::default(),
            clock: Estimate::default(),
            peer_clock: Status::default(),
            pings: VecDeque::new(),
            last_nonce: 0,
            resumable: None,
            detached: false,
            final_acks: Vec::new(),
            probe: Probe::default(),
            counters: Counters::default(),
            answered: true,
            first_call: None,
            first_flight: None,
            early: None,
            orphaned: 0,
            abandoning: false,
            forwarding: spans::Forwarding::default(),
        }
    }

    /// Starts a session whose first call rides with the hello in
    /// handshake message 1 (early data), so that a cold call costs one
    /// round trip. If the exec-server will not run it from message 1 (it
    /// cannot rule out a replay: see
    /// [`ReplayGuard::check_early`](crate::noise::ReplayGuard::check_early)),
    /// its message 2 says so and the call is sent again, once, over the
    /// session ([`Counters::early_retries`]). The call is checked as
    /// [`start_call`](Self::start_call) checks it; a login shell is refused
    /// ([`CallError::NoLoginShell`]: whether the exec-server starts them is
    /// known only from its hello answer; see [`fits_early`]).
    pub fn with_call(
        key: &StaticKeypair,
        server: &PublicKey,
        limits: Limits,
        now: Now,
        first: FirstCall<T>,
    ) -> Result<Self, FirstCallError> {
        let FirstCall {
            id,
            request,
            trace,
            mark,
            ticket,
        } = first;
        if id == 0 {
            return Err(CallError::StaleCallId(id).into());
        }
        check_request(&request, false)?;
        let sent_unix_nanos = now.unix_nanos();
        let early = early_payload(&limits, sent_unix_nanos, id, &request, trace.as_ref())?;
        let route = server.server_id();
        let (hs, msg1) = ClientHandshake::start_early(
            key,
            server,
            route.as_bytes(),
            now.wall,
            limits.noise,
            ticket,
            &early,
        )
        .map_err(SessionError::from)?;
        let mut frame = handshake_frame(msg1);
        let mut tag = None;
        let mut hop = None;
        if let Some(mark) = mark {
            hop.clone_from(&mark.hop);
            frame.hop_traceparent = mark.hop.unwrap_or_default();
            tag = Some(mark.tag);
        }
        let mut shared = Shared::new(limits, now);
        shared.send_clear_marked(frame, tag);
        let terminal = request.terminal.is_some();
        let stdin = if request.stdin == StdinMode::Pipe as i32 {
            Stdin::Open
        } else {
            Stdin::Null
        };
        let mut session = Self::handshaking(shared, hs, limits, now);
        session.calls.insert(
            id,
            Call {
                next_seq: 0,
                stdin,
                terminal,
                // Both windows are set again by the hello answer, which
                // comes before the call's first event.
                out: stdin::Outgoing::new(0),
                forgotten: false,
                output: output::Received::new(limits.output_window, limits.output_window_max),
                trace: trace.clone(),
                received: (0, 0),
                request: Some(request.clone()),
            },
        );
        session.next_call = id + 1;
        session.first_call = Some(id);
        session.first_flight = Some(1);
        session.early = Some(Early {
            id,
            request,
            trace,
            hop,
            sent_unix_nanos,
        });
        Ok(session)
    }

    /// The flight the next frame sent belongs to: a new one if something
    /// arrived since the last was sent.
    fn next_flight(&self) -> u32 {
        self.counters
            .flights
            .saturating_add(u32::from(self.answered))
    }

    /// Whether the hello has been answered and the session not ended.
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready) && !self.shared.is_over()
    }

    /// Whether the session is over (it takes no more commands).
    #[cfg(test)]
    pub(crate) fn is_over(&self) -> bool {
        self.shared.is_over()
    }

    /// The best current estimate of the exec-server's clock minus ours.
    pub fn clock_offset(&self) -> Option<Sample> {
        self.clock.best()
    }

    /// The exec-server's clock minus ours as an interval, from the
    /// tightest source available now ([`peer_clock::choose`]): `ours` is what
    /// the caller read of its own clock, `now_unix_nanos` its wall clock.
    pub fn clock_interval(&self, ours: &Status, now_unix_nanos: u64) -> Option<Offset> {
        peer_clock::choose(ours, &self.peer_clock, &self.clock, now_unix_nanos)
    }

    /// Adds a clock-offset sample the caller measured itself (a call's
    /// whole exchange, from the exec-server's stage timings).
    pub fn add_clock_sample(&mut self, sample: Sample) {
        self.clock.add(sample);
    }

    /// The output credit of one call the exec-server may send beyond what
    /// the caller has taken (from the hello answer; 0: no limit): how much
    /// the caller's queue for a call must hold.
    pub fn output_window(&self) -> u32 {
        self.output_window
    }

    /// Bytes queued to send and not yet handed to the link (stdin waiting
    /// for credit included).
    pub fn backlog(&self) -> usize {
        self.shared.backlog() + self.stdin_queued
    }

    /// Flights sent and round trips waited on so far ([`Counters`]).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The first flight (handshake message 1, with the call riding in it
    /// if any) was refused by what was dialled before it reached the
    /// exec-server, and is sent again as it was: one flight more, and one
    /// more round trip before whatever it carried is answered.
    pub fn first_flight_sent_again(&mut self) {
        self.counters.flights = self.counters.flights.saturating_add(1);
        if let Some(f) = &mut self.first_flight {
            *f = f.saturating_add(1);
        }
    }

    /// The session's first call, once started (the call
    /// [`Counters::round_trips`] is about).
    pub fn first_call(&self) -> Option<u64> {
        self.first_call
    }

    /// Calls open on the session (including forgotten ones still running).
    #[cfg(test)]
    pub(crate) fn open_calls(&self) -> usize {
        self.calls.len()
    }

    /// Hands in a frame from the link.
    pub fn handle_frame(&mut self, mut frame: Frame, now: Now) {
        if self.shared.is_over() {
            return;
        }
        self.shared.begin_frame(&mut frame, now);
        self.answered = true;
        if let Err(e) = self.frame(frame, now) {
            self.fail(e, now);
        }
        self.sync_end();
    }

    fn frame(&mut self, frame: Frame, now: Now) -> Result<(), SessionError> {
        match FrameKind::try_from(frame.kind) {
            Ok(FrameKind::Handshake) if matches!(self.state, State::Reattaching { .. }) => {
                self.resume_handshake(&frame.payload, now)
            }
            Ok(FrameKind::Handshake) => {
                let hs =
                    match std::mem::replace(&mut self.state, State::Hello { sent_unix_nanos: 0 }) {
                        State::Handshaking { hs } => hs,
                        other => {
                            self.state = other;
                            return Err(SessionError::Protocol(Violation::UnexpectedFrame));
                        }
                    };
                let (transport, answer) = hs.finish_early(&frame.payload, now.at)?;
                self.shared.transport = Some(transport);
                self.events.push(ClientEvent::Secured);
                let early = self.early.take();
                let sent_unix_nanos = match (early, answer) {
                    (None, EarlyAnswer::None) => {
                        let sent_unix_nanos = now.unix_nanos();
                        self.send_hello(now)?;
                        sent_unix_nanos
                    }
                    // The hello and the call are on their way to run.
                    (Some(early), EarlyAnswer::Accepted) => early.sent_unix_nanos,
                    // Not run: both again, once, over the session.
                    (Some(early), EarlyAnswer::Refused) => {
                        let sent_unix_nanos = now.unix_nanos();
                        self.send_hello(now)?;
                        self.shared
                            .send_with_hop(
                                early.id,
                                early.trace.as_ref(),
                                Body::Exec(early.request),
                                early.hop,
                                now,
                            )
                            .map_err(|_| SessionError::Protocol(Violation::UnexpectedFrame))?;
                        self.counters.early_retries += 1;
                        self.first_flight = Some(self.next_flight());
                        sent_unix_nanos
                    }
                    _ => {
                        return Err(SessionError::Protocol(Violation::UnexpectedMessage(
                            "an answer about early data that was not sent",
                        )));
                    }
                };
                self.state = State::Hello { sent_unix_nanos };
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
            Ok(FrameKind::Data)
                if !matches!(
                    self.state,
                    State::Handshaking { .. } | State::Reattaching { .. }
                ) =>
            {
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
        let received = self.shared.received(env.send_time_unix_nanos);
        match env.body {
            Some(Body::HelloAck(ack)) => {
                let State::Hello { sent_unix_nanos } = self.state else {
                    return Err(SessionError::Protocol(Violation::RepeatedHello));
                };
                let sample =
                    Sample::new(sent_unix_nanos, env.send_time_unix_nanos, now.unix_nanos());
                if let Some(s) = sample {
                    self.clock.add(s);
                }
                if let Some(c) = &ack.clock {
                    self.peer_clock = Status::from_wire(c);
                }
                if ack.max_processes > 0 {
                    self.max_calls = self.max_calls.min(ack.max_processes as usize);
                }
                self.stdin_window = ack.stdin_window;
                self.login_shell = ack.login_shell;
                self.forwarding.max = ack.span_batch_max;
                // The exec-server may not ask for more than we offered.
                self.output_window =
                    output::negotiate(ack.output_window, self.shared.limits.output_window);
                self.offered(&ack.resume_token);
                // A call that rode in message 1 takes the windows now in
                // force (its first event comes after this answer).
                for call in self.calls.values_mut() {
                    call.out = stdin::Outgoing::new(self.stdin_window);
                    call.output = output::Received::new(
                        self.output_window,
                        self.shared.limits.output_window_max,
                    );
                }
                self.state = State::Ready;
                self.deadline = None;
                self.events.push(ClientEvent::Ready(Ready {
                    server_version: ack.server_version,
                    max_processes: ack.max_processes,
                    max_chunk: ack.max_chunk,
                    output_window: self.output_window,
                    login_shell: ack.login_shell,
                    clock: sample,
                    early_ticket: EarlyTicket::from_slice(&ack.early_ticket),
                }));
                Ok(())
            }
            Some(Body::Resumed(answer)) if matches!(self.state, State::Resuming) => {
                self.resumed(answer, now);
                Ok(())
            }
            Some(_) if !matches!(self.state, State::Ready) => Err(SessionError::Protocol(
                Violation::UnexpectedMessage("message before the hello answer"),
            )),
            Some(Body::Resume(_) | Body::Resumed(_)) => Err(SessionError::Protocol(
                Violation::UnexpectedMessage("resume"),
            )),
            Some(Body::Event(ev)) => self.call_event(env.call_id, ev, env.trace, received, now),
            Some(Body::Pong(p)) => {
                self.pong(p, now);
                Ok(())
            }
            Some(Body::StdinAck(a)) => self.stdin_ack(env.call_id, a.consumed, a.window, now),
            Some(Body::Ping(p)) => {
                let pong = Body::Pong(Pong {
                    nonce: p.nonce,
                    recv_time_unix_nanos: now.unix_nanos(),
                    clock: None,
                });
                // Ending already: nothing to answer.
                let _ = self.shared.send(0, None, pong, None, now);
                Ok(())
            }
            Some(Body::Hello(_)) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "hello",
            ))),
            Some(Body::Exec(_)) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "exec request",
            ))),
            Some(Body::Stdin(_) | Body::StdinClose(_)) => Err(SessionError::Protocol(
                Violation::UnexpectedMessage("stdin"),
            )),
            Some(Body::Signal(_) | Body::Cancel(_) | Body::Resize(_)) => Err(
                SessionError::Protocol(Violation::UnexpectedMessage("signal, cancel or resize")),
            ),
            Some(Body::OutputAck(_)) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "output acknowledgement",
            ))),
            Some(Body::Spans(_)) => Err(SessionError::Protocol(Violation::UnexpectedMessage(
                "forwarded spans",
            ))),
            Some(Body::AckWanted(_)) => {
                self.ack_wanted(env.call_id);
                Ok(())
            }
            None => Err(SessionError::Protocol(Violation::EmptyMessage)),
        }
    }

    fn send_hello(&mut self, now: Now) -> Result<(), SessionError> {
        let hello = Body::Hello(Hello {
            client_version: env!("CARGO_PKG_VERSION").into(),
            output_window: self.shared.limits.output_window,
            acks_when_asked: true,
        });
        self.shared
            .send(0, None, hello, None, now)
            .map_err(|_| SessionError::Protocol(Violation::UnexpectedFrame))?;
        Ok(())
    }

    fn pong(&mut self, p: Pong, now: Now) {
        if self.measured(p.nonce, now) {
            return;
        }
        let Some(i) = self.pings.iter().position(|(n, _)| *n == p.nonce) else {
            // Not ours, or long forgotten: nothing to learn from it.
            return;
        };
        let Some((nonce, sent_at)) = self.pings.remove(i) else {
            return;
        };
        let sample = Sample::new(nonce, p.recv_time_unix_nanos, now.unix_nanos());
        if let Some(s) = sample {
            self.clock.add(s);
        }
        if let Some(c) = &p.clock {
            self.peer_clock = Status::from_wire(c);
        }
        let rtt = now.at.saturating_duration_since(sent_at);
        // A round trip of the link, for output windows that follow it.
        self.probe.seen(rtt);
        self.events.push(ClientEvent::Pong { nonce, rtt, sample });
    }

    /// Sends a ping; its pong comes back as [`ClientEvent::Pong`] with this
    /// nonce.
    pub fn ping(&mut self, now: Now) -> Result<u64, CallError> {
        self.check_ready()?;
        self.send_final_acks(now);
        // The nonce is our send time: the pong gives a clock sample.
        let nonce = now.unix_nanos().max(self.last_nonce + 1);
        self.shared
            .send(0, None, Body::Ping(Ping { nonce }), None, now)?;
        self.last_nonce = nonce;
        if self.pings.len() >= PINGS {
            self.pings.pop_front();
        }
        self.pings.push_back((nonce, now.at));
        self.after(now);
        Ok(nonce)
    }

    /// Closes the session cleanly: what is queued goes first, then the
    /// authenticated close; calls still open end with the session.
    pub fn close(&mut self, now: Now) {
        // Gathered spans go first, in the close's flight.
        if !self.shared.is_over() {
            self.send_gathered(now);
        }
        self.shared.close("client closed the session", now);
        self.sync_end();
    }

    /// The local side is done: closes the session cleanly.
    pub fn shutdown(&mut self, now: Now) {
        self.close(now);
    }

    /// The peer ended its half of the link (`failure`: the link broke).
    pub fn handle_link_end(&mut self, failure: Option<LinkFailure>, now: Now) {
        self.shared.link_ended(failure, now);
        self.sync_end();
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self, now: Now) -> Option<Transmit<T>> {
        self.refill_stdin(now);
        let t = self.shared.poll_transmit(now);
        if t.is_some() && self.answered {
            self.answered = false;
            self.counters.flights = self.counters.flights.saturating_add(1);
        }
        self.sync_end();
        t
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a frame.
    pub(crate) fn has_transmit(&self) -> bool {
        self.shared.has_transmit() || self.stdin_ready()
    }

    /// Whether the driver should end our half of the link now (true once).
    pub fn poll_end_link(&mut self) -> bool {
        self.shared.poll_end_link()
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.sync_end();
        self.events.poll()
    }

    /// Hands back an event the caller cannot take yet; it is the next one
    /// [`poll_event`](Self::poll_event) returns, and no frame is read until
    /// then.
    pub fn defer(&mut self, event: ClientEvent) {
        self.events.defer(event);
        self.shared.stalled = true;
    }

    /// Whether the machine reads frames now.
    pub(crate) fn wants_frames(&self) -> bool {
        // Once over, frames are only drained until the peer ends the link.
        self.shared.is_over() || self.events.is_empty()
    }

    /// Whether the machine takes commands now (ready, and the backlog
    /// under its bound).
    pub(crate) fn wants_input(&self) -> bool {
        self.is_ready() && self.backlog() <= self.shared.limits.backlog
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(linger) = self.shared.linger_deadline() {
            return Some(linger);
        }
        if self.shared.is_over() {
            return None;
        }
        if let Some(d) = self.deadline {
            return Some(d);
        }
        let limits = &self.shared.limits;
        // Spans to send, and a quiet call's output window falling back
        // (only once ready: the timers fire nothing else before).
        let idle = self
            .window_check
            .filter(|_| matches!(self.state, State::Ready));
        let spans = match (self.spans_due(), idle) {
            (Some(s), Some(w)) => Some(s.min(w)),
            (s, w) => s.or(w),
        }
        .filter(|_| !self.detached);
        // Something goes out at least every keepalive, reading or not, so
        // the exec-server knows we are here.
        let send = self.shared.last_sent + limits.keepalive;
        if !self.wants_frames() {
            return Some(spans.map_or(send, |s| s.min(send)));
        }
        let idle = self.shared.quiet_since + limits.idle_timeout;
        let probe = if self.shared.keepalive_sent {
            idle
        } else {
            self.shared.quiet_since + limits.keepalive
        };
        let due = send.min(idle).min(probe);
        Some(spans.map_or(due, |s| s.min(due)))
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.shared.handle_linger(now);
        if !self.shared.is_over() {
            self.timers(now);
        }
        self.sync_end();
    }

    fn timers(&mut self, now: Now) {
        let reading = self.wants_frames();
        self.shared.idle_clock(reading, now);
        if self.deadline.is_some_and(|d| now.at >= d) {
            let stage = match self.state {
                State::Handshaking { .. } | State::Reattaching { .. } => Stage::Handshake,
                _ => Stage::Hello,
            };
            self.fail(SessionError::Timeout(stage), now);
            return;
        }
        if !matches!(self.state, State::Ready) {
            return;
        }
        if !self.detached {
            self.spans_timer(now);
            self.idle_windows(now);
        }
        let limits = self.shared.limits;
        let quiet = now.at.saturating_duration_since(self.shared.quiet_since);
        if reading && quiet >= limits.idle_timeout {
            self.fail(SessionError::Timeout(Stage::Idle), now);
            return;
        }
        // A probe when nothing has arrived for a keepalive (once per quiet
        // period), and a sign of life when nothing has left for one.
        let probe = reading && quiet >= limits.keepalive && !self.shared.keepalive_sent;
        let silent = now.at.saturating_duration_since(self.shared.last_sent) >= limits.keepalive;
        if probe || silent {
            let sent = self.ping(now).is_ok();
            if sent && probe {
                self.shared.keepalive_sent = true;
            }
        }
    }

    /// Whether the session is completely over and every event taken: the
    /// driver can stop.
    pub(crate) fn is_done(&self) -> bool {
        (self.events.ended() || self.detached) && self.shared.is_done() && self.events.is_empty()
    }

    fn fail(&mut self, err: SessionError, now: Now) {
        self.shared.fail(err, None, now);
    }

    fn after(&mut self, now: Now) {
        let reading = self.wants_frames();
        self.shared.idle_clock(reading, now);
        self.sync_end();
    }

    /// Overrides the call cap the hello answer set.
    #[cfg(test)]
    pub(super) fn max_calls_for_tests(&mut self, n: usize) {
        self.max_calls = n;
    }

    /// Reports the end once it is known: it is the last event.
    fn sync_end(&mut self) {
        if self.events.ended() || self.detached {
            return;
        }
        if let Some(end) = self.shared.end() {
            let end = end.clone();
            if let Err(e) = &end
                && self.detachable(e)
            {
                // The calls wait for the session to come back.
                self.detached = true;
                self.state = State::Ready;
                self.pings.clear();
                self.unmeasure();
                self.events.push(ClientEvent::Detached { error: e.clone() });
                return;
            }
            if end.is_err() {
                self.orphaned = self.calls.len();
            }
            self.calls.clear();
            self.drop_held_spans();
            self.stdin_queued = 0;
            self.pings.clear();
            self.events.end(ClientEvent::Ended(end));
        }
    }
}
