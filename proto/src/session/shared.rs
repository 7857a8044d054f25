//! What both session machines share: the Noise transport and the frames
//! before it, marked messages and their hop headers, the backlog bound,
//! the idle clock, and how a session ends (close, linger, failure).

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::{CallError, Closed, Limits, LinkFailure, Mark, Now, Received, SessionError, Transmit};
use crate::envelope;
use crate::noise::Transport;
use crate::pb::session::{Envelope, TerminalEvent, TraceContext, envelope::Body};
use crate::pb::tunnel::{CloseReason, Frame};

/// Room above the backlog bound for what the peer's frames ask in reply
/// (pongs, acknowledgements of stdin). A machine's own output stops at the
/// bound (one chunk past it at most), and an exec-server stops reading only
/// once replies have filled this room too: a session full of its own output
/// still reads its peer (acknowledgements, a cancel, its link's end), while
/// a peer that asks and never reads still cannot grow it.
pub(super) const REPLY_ROOM: usize = crate::limits::MAX_CHUNK + 16 * 1024;

/// A marked message waiting to leave.
#[derive(Debug)]
struct Pending<T> {
    /// The envelope-stream offset just past it.
    end: u64,
    hop: Option<String>,
    /// Handed back once it has left (none: only its hop header matters).
    tag: Option<T>,
}

/// How far the session has got in ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Not ending.
    Open,
    /// Flushing what is queued, then the authenticated close.
    Flushing,
    /// Our half of the link ends once the driver sees [`Shared::poll_end_link`].
    EndHalf,
    /// Our half has ended; waiting (bounded) for the peer's.
    Lingering,
}

/// The shared core of a session machine.
#[derive(Debug)]
pub(super) struct Shared<T> {
    pub(super) limits: Limits,
    /// The Noise session, once the handshake is done.
    pub(super) transport: Option<Transport>,
    /// Frames outside the transport (handshake messages, a clear close);
    /// they go before anything the transport produces.
    clear: VecDeque<Frame>,
    /// Handed back with the next clear frame's transmit.
    clear_tag: Option<T>,
    marks: VecDeque<Pending<T>>,
    ending: Ending,
    /// Set once: how the session ended (the machine then takes no input).
    end: Option<Result<Closed, SessionError>>,
    /// The reason sent in our authenticated close.
    close_reason: &'static str,
    peer_ended: bool,
    half_ended: bool,
    linger_deadline: Option<Instant>,
    /// When the idle clock last started: something arrived, or reading
    /// resumed.
    pub(super) quiet_since: Instant,
    /// Whether the machine stopped reading since the idle clock last ran.
    pub(super) stalled: bool,
    /// Whether a keepalive ping went out in the current quiet period.
    pub(super) keepalive_sent: bool,
    /// When the last frame left.
    pub(super) last_sent: Instant,
    /// The frame being processed.
    arrived: SystemTime,
    hop: String,
    /// Its relay timings, until a message takes them.
    relay: Vec<crate::pb::tunnel::HopTiming>,
}

impl<T> Shared<T> {
    pub(super) fn new(limits: Limits, now: Now) -> Self {
        Self {
            limits,
            transport: None,
            clear: VecDeque::new(),
            clear_tag: None,
            marks: VecDeque::new(),
            ending: Ending::Open,
            end: None,
            close_reason: "",
            peer_ended: false,
            half_ended: false,
            linger_deadline: None,
            quiet_since: now.at,
            stalled: false,
            keepalive_sent: false,
            last_sent: now.at,
            arrived: now.wall,
            hop: String::new(),
            relay: Vec::new(),
        }
    }

    /// Queues a frame outside the transport.
    pub(super) fn send_clear(&mut self, frame: Frame) {
        self.clear.push_back(frame);
    }

    /// Queues the first frame, whose transmit hands `tag` back (message 1
    /// carrying a call).
    pub(super) fn send_clear_marked(&mut self, frame: Frame, tag: Option<T>) {
        self.clear.push_back(frame);
        self.clear_tag = tag;
    }

    /// Takes back the clear frames not yet sent (a handshake answer that
    /// is not to go after all).
    pub(super) fn retract_clear(&mut self) {
        self.clear.clear();
    }

    /// Whether the session is over (no more input is taken).
    pub(super) fn is_over(&self) -> bool {
        self.end.is_some()
    }

    /// How the session ended, if it has.
    pub(super) fn end(&self) -> Option<&Result<Closed, SessionError>> {
        self.end.as_ref()
    }

    /// Bytes waiting to leave through the transport.
    pub(super) fn backlog(&self) -> usize {
        self.transport.as_ref().map_or(0, Transport::pending_bytes)
            + self.clear.iter().map(|f| f.payload.len()).sum::<usize>()
    }

    /// Whether the backlog is over its bound.
    pub(super) fn over_backlog(&self) -> bool {
        self.backlog() > self.limits.backlog
    }

    /// Whether the backlog is over its bound and the [room](REPLY_ROOM)
    /// above it for replies.
    pub(super) fn over_reply_room(&self) -> bool {
        self.backlog() > self.limits.backlog + REPLY_ROOM
    }

    /// Notes a frame arriving (for [`Received`] and the idle clock).
    pub(super) fn begin_frame(&mut self, frame: &mut Frame, now: Now) {
        self.arrived = now.wall;
        self.hop = std::mem::take(&mut frame.hop_traceparent);
        self.relay = std::mem::take(&mut frame.hop_timings);
        self.relay.truncate(crate::limits::MAX_HOP_TIMINGS);
        self.quiet_since = now.at;
        self.stalled = false;
        self.keepalive_sent = false;
    }

    /// Where a message of the frame being processed came from (the
    /// frame's relay timings go with the first).
    pub(super) fn received(&mut self, sent_unix_nanos: u64) -> Received {
        Received {
            arrived: self.arrived,
            hop: self.hop.clone(),
            sent_unix_nanos,
            relay: std::mem::take(&mut self.relay),
        }
    }

    /// Decrypts one data frame into the transport's buffer.
    pub(super) fn receive(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let transport = self
            .transport
            .as_mut()
            .ok_or(SessionError::Protocol(super::Violation::UnexpectedFrame))?;
        transport.receive(payload)?;
        Ok(())
    }

    /// The next whole envelope received, decoded.
    pub(super) fn next_envelope(&mut self) -> Result<Option<Envelope>, SessionError> {
        let Some(transport) = self.transport.as_mut() else {
            return Ok(None);
        };
        match transport.poll_envelope()? {
            Some(bytes) => Ok(Some(envelope::decode_bytes(bytes)?)),
            None => Ok(None),
        }
    }

    /// The peer's authenticated close, once received.
    pub(super) fn peer_closed(&self) -> Option<String> {
        self.transport
            .as_ref()
            .and_then(Transport::peer_closed)
            .map(str::to_owned)
    }

    /// Whether an envelope may be queued now ([`send`](Self::send) would
    /// take it).
    pub(super) fn accepts(&self) -> bool {
        self.ending == Ending::Open && self.end.is_none() && self.transport.is_some()
    }

    /// Queues an envelope; returns the stream offset just past it.
    pub(super) fn send(
        &mut self,
        call_id: u64,
        trace: Option<&TraceContext>,
        body: Body,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<u64, CallError> {
        let mark = mark.map(|m| (Some(m.tag), m.hop));
        self.send_lent(call_id, trace, body, mark, now).0
    }

    /// [`send`](Self::send) with `hop` as the hop header of the frame that
    /// ends the message, and no tag.
    pub(super) fn send_with_hop(
        &mut self,
        call_id: u64,
        trace: Option<&TraceContext>,
        body: Body,
        hop: Option<String>,
        now: Now,
    ) -> Result<u64, CallError> {
        let mark = hop.is_some().then_some((None, hop));
        self.send_lent(call_id, trace, body, mark, now).0
    }

    /// [`send`](Self::send) of a call's terminal event, which is handed
    /// back once encoded (a call keeps its events for a resume: it need
    /// not copy them, stage timings and all).
    pub(super) fn send_event(
        &mut self,
        call_id: u64,
        trace: Option<&TraceContext>,
        event: TerminalEvent,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> (Result<u64, CallError>, TerminalEvent) {
        let mark = mark.map(|m| (Some(m.tag), m.hop));
        let (result, body) = self.send_lent(call_id, trace, Body::Event(event), mark, now);
        let event = match body {
            Some(Body::Event(event)) => event,
            _ => TerminalEvent::default(),
        };
        (result, event)
    }

    /// Encodes and queues `body`, and hands it back.
    fn send_lent(
        &mut self,
        call_id: u64,
        trace: Option<&TraceContext>,
        body: Body,
        mark: Option<(Option<T>, Option<String>)>,
        now: Now,
    ) -> (Result<u64, CallError>, Option<Body>) {
        if self.ending != Ending::Open || self.end.is_some() {
            return (Err(CallError::Ended), Some(body));
        }
        let Some(transport) = self.transport.as_mut() else {
            return (Err(CallError::NotReady), Some(body));
        };
        let env = Envelope {
            call_id,
            trace: trace.cloned(),
            send_time_unix_nanos: now.unix_nanos(),
            body: Some(body),
        };
        let sent = transport.send_message(&env).map_err(|e| match e {
            crate::noise::TransportError::EnvelopeStream(
                crate::envelope_stream::EnvelopeStreamError::TooLarge { len, max },
            ) => CallError::TooLarge(crate::envelope::EnvelopeError::TooLarge { len, max }),
            _ => CallError::Ended,
        });
        let end = transport.queued_offset();
        let body = env.body;
        if let Err(e) = sent {
            return (Err(e), body);
        }
        if let Some((tag, hop)) = mark {
            self.marks.push_back(Pending { end, hop, tag });
        }
        (Ok(end), body)
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a frame.
    pub(super) fn has_transmit(&self) -> bool {
        !self.clear.is_empty()
            || self.ending == Ending::Flushing
            || self
                .transport
                .as_ref()
                .is_some_and(|t| t.has_pending() && !self.half_ended)
    }

    /// The next frame to send.
    pub(super) fn poll_transmit(&mut self, now: Now) -> Option<Transmit<T>> {
        let t = self.next_transmit(now);
        if t.is_some() {
            self.last_sent = now.at;
        }
        t
    }

    fn next_transmit(&mut self, now: Now) -> Option<Transmit<T>> {
        if self.half_ended {
            return None;
        }
        if let Some(frame) = self.clear.pop_front() {
            return Some(Transmit {
                frame,
                done: self.clear_tag.take().into_iter().collect(),
                sent: self.transport.as_ref().map_or(0, Transport::sent_offset),
            });
        }
        let transport = self.transport.as_mut()?;
        let boundary = self.marks.front().map(|p| p.end);
        match transport.poll_transmit_until(now.at, boundary) {
            Ok(Some(msg)) => {
                let sent = transport.sent_offset();
                let mut frame = crate::frames::data(msg);
                let mut done = Vec::new();
                while self.marks.front().is_some_and(|p| p.end <= sent) {
                    if let Some(p) = self.marks.pop_front() {
                        if frame.hop_traceparent.is_empty()
                            && let Some(hop) = p.hop
                        {
                            frame.hop_traceparent = hop;
                        }
                        done.extend(p.tag);
                    }
                }
                Some(Transmit { frame, done, sent })
            }
            Ok(None) if self.ending == Ending::Flushing => {
                self.ending = Ending::EndHalf;
                let reason = self.close_reason;
                match transport.close(reason) {
                    Ok(msg) => Some(Transmit {
                        frame: crate::frames::data(msg),
                        done: Vec::new(),
                        sent: transport.sent_offset(),
                    }),
                    Err(_) => None,
                }
            }
            Ok(None) => None,
            Err(e) => {
                self.fail(e.into(), None, now);
                None
            }
        }
    }

    /// Whether the driver should end our half of the link now (once).
    pub(super) fn poll_end_link(&mut self) -> bool {
        if self.ending == Ending::EndHalf && self.clear.is_empty() {
            self.ending = Ending::Lingering;
            self.half_ended = true;
            return true;
        }
        false
    }

    /// Begins a clean close: what is queued goes first, then the
    /// authenticated close with `reason`, then our half of the link ends.
    pub(super) fn close(&mut self, reason: &'static str, now: Now) {
        if self.end.is_some() {
            return;
        }
        self.end = Some(Ok(Closed::Local));
        self.begin_ending(reason, now);
    }

    fn begin_ending(&mut self, reason: &'static str, now: Now) {
        if self.ending != Ending::Open {
            return;
        }
        self.close_reason = reason;
        // One bound for all of it: flushing, the close, and the peer's end.
        self.linger_deadline = Some(now.at + self.limits.linger);
        let usable = self
            .transport
            .as_ref()
            .is_some_and(|t| !t.is_dead() && !t.is_closed());
        self.ending = if usable {
            Ending::Flushing
        } else {
            Ending::EndHalf
        };
    }

    /// The peer closed the session with an authenticated close: answer with
    /// ours (nothing queued is worth sending now) and end.
    pub(super) fn peer_close(&mut self, reason: String, now: Now) {
        if self.end.is_some() {
            return;
        }
        self.end = Some(Ok(Closed::Peer(reason)));
        self.discard_pending();
        self.begin_ending("closed by the peer", now);
    }

    /// Ends the session with `err`. Before the session is established,
    /// `clear` is sent to the peer in the clear; after, a peer that broke
    /// the protocol gets an authenticated close saying so (and is given the
    /// linger to read it). When the link is gone, the peer unresponsive or
    /// the transport broken, nothing is waited for.
    pub(super) fn fail(&mut self, err: SessionError, clear: Option<CloseReason>, now: Now) {
        if self.end.is_some() {
            return;
        }
        let (reason, wait) = match &err {
            SessionError::Protocol(_) | SessionError::Envelope(_) => ("protocol error", true),
            SessionError::Handshake(_) => ("handshake failed", true),
            SessionError::Timeout(_) => ("timed out", false),
            SessionError::Transport(_)
            | SessionError::Refused(_)
            | SessionError::LinkClosed(_)
            | SessionError::LinkEnded
            | SessionError::LinkFailed(_) => ("", false),
        };
        let gone = matches!(
            err,
            SessionError::Refused(_)
                | SessionError::LinkClosed(_)
                | SessionError::LinkEnded
                | SessionError::LinkFailed(_)
        );
        self.end = Some(Err(err));
        self.discard_pending();
        if !wait {
            self.peer_ended = true;
        }
        if let Some(reason) = clear {
            self.clear.push_back(crate::frames::close(reason));
        }
        if gone {
            // Nothing can reach the peer any more.
            self.clear.clear();
            self.ending = Ending::EndHalf;
            self.linger_deadline = Some(now.at);
            return;
        }
        self.begin_ending(reason, now);
    }

    fn discard_pending(&mut self) {
        if let Some(t) = self.transport.as_mut() {
            let _ = t.discard_pending();
        }
    }

    /// The peer ended its half of the link (`failure`: it broke).
    pub(super) fn link_ended(&mut self, failure: Option<LinkFailure>, now: Now) {
        self.peer_ended = true;
        if self.end.is_none() {
            let err = match failure {
                Some(failure) => SessionError::LinkFailed(failure),
                None => SessionError::LinkEnded,
            };
            self.fail(err, None, now);
        }
    }

    /// Whether the session is completely over: our half ended, and the
    /// peer's too (or the linger ran out).
    pub(super) fn is_done(&self) -> bool {
        self.half_ended && self.peer_ended
    }

    /// The deadline by which an ending session is over, whatever the peer
    /// does.
    pub(super) fn linger_deadline(&self) -> Option<Instant> {
        if self.is_done() {
            None
        } else {
            self.linger_deadline
        }
    }

    /// Fires the linger timer: what could not be sent is dropped, our half
    /// ends, and the peer's is no longer waited for.
    pub(super) fn handle_linger(&mut self, now: Now) {
        if self.linger_deadline.is_some_and(|d| now.at >= d) {
            self.clear.clear();
            if !self.half_ended {
                self.ending = Ending::EndHalf;
            }
            self.peer_ended = true;
        }
    }

    /// Restarts the idle clock if the machine is not reading, or has just
    /// resumed.
    pub(super) fn idle_clock(&mut self, reading: bool, now: Now) {
        if !reading || self.stalled {
            self.quiet_since = now.at;
            self.keepalive_sent = false;
        }
        self.stalled = !reading;
    }
}

/// A frame's payload, for the clear frames.
pub(super) fn handshake_frame(msg: Vec<u8>) -> Frame {
    crate::frames::handshake(Bytes::from(msg))
}
