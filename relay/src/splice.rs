//! Forwarding frames between the client's and the exec-server's halves of a
//! session.
//!
//! Each direction is a pump: read a frame, check it, write it to the other
//! side's queue, bounded in frames and in bytes (its own share and the
//! relay-wide [`Budget`]); a pump that cannot queue waits before reading
//! again, so a slow reader slows the writer, never the relay's memory. The session ends when either side ends, breaks the protocol, or
//! the session idles out; the other side is told with a clear close frame.
//!
//! A frame with a valid hop header (a traceparent in clear) gets a
//! `relay.forward` span from its arrival to its write on the other side,
//! child of that traceparent; the header is rewritten to name the
//! `relay.forward` span before the frame goes on (the relay is a trace hop).
//! An invalid or oversized header is removed and the frame forwarded as is;
//! a header whose trace is not sampled goes on unchanged, with no span and
//! no timing (nothing of that trace is recorded anywhere).
//!
//! A frame the relay leaves as it is (no hop header, no timings: most
//! frames of a bulk transfer) goes on as the gRPC message it arrived in,
//! its bytes untouched (`proto::frame_wire`); the others are written anew.
//!
//! The relay's forwards of traced frames are also told to the client, in
//! clear on its frames (`Frame.hop_timings`): each traced frame toward the
//! client carries its own forward and those toward the exec-server since
//! the last one, so a client with no collector can place the relay's stage
//! in its own trace. `relay.forward` therefore ends when the frame is ready
//! to go on (room in the other side's buffers found), the instant its
//! timing is read. Timings a peer sends are removed: only relays write
//! them, and only the fleet's relay a session was forwarded to has its own
//! kept on the way to the client (so a frame carries at most two relays'
//! worth).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span, SpanKind, Tracer};
use telemetry::w3c::{Extracted, TraceContext};
use telemetry::{carriers, otel, spans};

use proto::limits::{MAX_FRAME_PAYLOAD, MAX_HOP_HEADER, RELAY_HOP_TIMINGS};
use proto::pb::tunnel::{CloseReason, Frame, FrameKind, HopDirection, HopTiming};
use tokio_util::sync::CancellationToken;

use proto::admission::Ticket;
use tokio::sync::mpsc;

use crate::budget::{Budget, Charge, FRAME_OVERHEAD, Queue};
use crate::credit::{Forwarding, SessionCredit};
use crate::peer_credit::Gate;
use crate::wire::Inbound;
use proto::frame_wire::{Message, Outgoing, UntilSent};

/// A frame queued toward one side, with the bytes it holds of the budget
/// (given back when the frame has been sent). Boxed: a queue's slots are
/// allocated in blocks, and a session's two queues cost a pointer a slot
/// rather than a frame's fields.
#[derive(Debug)]
pub(crate) struct Charged(Box<Queued>);

#[derive(Debug)]
struct Queued {
    frame: Frame,
    /// The message it arrived in, passed on as it is.
    message: Option<Message>,
    charge: Option<Charge>,
    /// Its payload under the exec-server's credit, granted again once it
    /// has been sent.
    forwarding: Option<Forwarding>,
}

impl Charged {
    fn new(
        frame: Frame,
        message: Option<Message>,
        charge: Option<Charge>,
        forwarding: Option<Forwarding>,
    ) -> Self {
        Self(Box::new(Queued {
            frame,
            message,
            charge,
            forwarding,
        }))
    }

    /// A frame that is not counted (a clear close: one per session end).
    fn free(frame: Frame) -> Self {
        Self::new(frame, None, None, None)
    }

    /// A frame with its charge (none: not counted).
    pub(crate) fn counted(frame: Frame, charge: Option<Charge>) -> Self {
        Self::new(frame, None, charge, None)
    }
}

/// The relay's queue toward one side of a session.
pub(crate) type Outbound = mpsc::Sender<Charged>;

/// The frames of a tunnel half's body (the response of a stream this
/// relay serves, or the request of a session it opened at a fleet peer):
/// those queued on `rx`, each giving its bytes back (to the budget, and to
/// its session's credit) once HTTP/2 has written it to the connection. So
/// what HTTP/2 buffers for a peer that stopped reading is counted as the
/// queue is: a stalled session holds at most its credit here, in all.
pub(crate) fn body_stream(
    rx: mpsc::Receiver<Charged>,
) -> impl futures::Stream<Item = Result<Outgoing, tonic::Status>> + Send + 'static {
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |c| {
        let Queued {
            frame,
            message,
            charge,
            forwarding,
        } = *c.0;
        let until_sent = match (charge, forwarding) {
            (None, None) => None,
            counted => Some(UntilSent::new(counted)),
        };
        Ok(Outgoing {
            frame,
            message,
            until_sent,
        })
    })
}

/// What a pump counts its queued bytes against.
#[derive(Debug, Clone)]
pub(crate) struct Buffers {
    /// The relay-wide budget.
    pub(crate) budget: Arc<Budget>,
    /// The share of one direction of a session.
    pub(crate) session_buffer: usize,
}

/// The bytes a frame is counted for.
pub(crate) fn cost(frame: &Frame) -> usize {
    frame.payload.len() + frame.hop_traceparent.len() + FRAME_OVERHEAD
}

/// Which way a pump forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to exec-server.
    ToServer,
    /// Exec-server to client.
    ToClient,
}

/// Bounds that apply to one spliced session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpliceLimits {
    /// Close the session when no frame moved either way for this long.
    pub(crate) idle_timeout: Duration,
    /// The exec-server must answer the handshake within this long.
    pub(crate) handshake_timeout: Duration,
    /// Whether hop headers are honoured (otherwise they are stripped).
    pub(crate) hop_headers: bool,
    /// The source (toward the client) is the relay of the fleet this one
    /// forwarded the session to. Its timings on frames toward the client
    /// are kept, ahead of this relay's own (at most [`RELAY_HOP_TIMINGS`]
    /// of each; any other source's are removed). And when the session ends
    /// from the client's side, what that relay still sends is read and
    /// dropped, for at most [`PEER_DRAIN`], until it ends its stream: the
    /// frames queued toward it (the client's last ones, its close) are then
    /// sent before the stream is let go (letting go of it first would reset
    /// the stream and lose them, and the exec-server would take the end for
    /// a broken link).
    pub(crate) from_peer: bool,
    /// This relay's place on the session's path, told on its timings: 0
    /// the client's relay, 1 the relay a session was forwarded to.
    pub(crate) path_hop: u32,
}

/// How long a session forwarded to another relay waits for that relay to
/// end its stream once the client's side has ended.
const PEER_DRAIN: Duration = Duration::from_secs(5);

/// Totals for one direction of a finished session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PumpStats {
    /// Frames forwarded.
    pub(crate) frames: u64,
    /// Payload bytes forwarded.
    pub(crate) bytes: u64,
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// The source ended its stream.
    SourceClosed,
    /// The source's stream failed (peer gone).
    SourceFailed,
    /// The destination went away.
    DestinationGone,
    /// The source broke the protocol.
    Protocol,
    /// Nothing moved for too long.
    Idle,
    /// The exec-server did not answer the handshake in time.
    HandshakeTimeout,
    /// The session was cancelled (the other pump ended, or shutdown).
    Cancelled,
}

/// `error.type` for a pump the relay ended as a failure (a broken
/// protocol, an idle session, no handshake in time); `None` when a peer
/// ended it (closed, or went away: a CLI leaves once its close is sent,
/// without waiting) or the other half ended first.
pub(crate) fn error_type(end: PumpEnd) -> Option<&'static str> {
    match end {
        PumpEnd::SourceClosed
        | PumpEnd::SourceFailed
        | PumpEnd::DestinationGone
        | PumpEnd::Cancelled => None,
        PumpEnd::Protocol => Some("protocol"),
        PumpEnd::Idle => Some("idle"),
        PumpEnd::HandshakeTimeout => Some("handshake_timeout"),
    }
}

/// Shared state of one spliced session.
#[derive(Debug)]
pub(crate) struct Session {
    started: Instant,
    last_activity_ms: AtomicU64,
    /// Forwards toward the exec-server not yet told to the client (the
    /// newest [`RELAY_HOP_TIMINGS`] - 1; the client's frame carries its own).
    to_tell: std::sync::Mutex<std::collections::VecDeque<HopTiming>>,
    /// Cancelled when either pump ends; also a child of the relay's shutdown.
    pub(crate) cancel: CancellationToken,
}

impl Session {
    /// A new session whose cancellation follows `parent`.
    pub(crate) fn new(parent: &CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            to_tell: std::sync::Mutex::new(std::collections::VecDeque::new()),
            cancel: parent.child_token(),
        })
    }

    /// Keeps a forward toward the exec-server to tell the client.
    fn note(&self, timing: HopTiming) {
        let mut held = self
            .to_tell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while held.len() + 1 >= RELAY_HOP_TIMINGS {
            held.pop_front();
        }
        held.push_back(timing);
    }

    /// The forwards to tell the client after `peer`'s (the timings of the
    /// relay the session was forwarded to, if kept), and `own` (its
    /// frame's).
    fn tell(&self, mut peer: Vec<HopTiming>, own: HopTiming) -> Vec<HopTiming> {
        let mut held = self
            .to_tell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peer.extend(held.drain(..));
        peer.push(own);
        peer
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Checks one frame from a peer. Returns `None` if it breaks the protocol.
fn check(mut frame: Frame, limits: &SpliceLimits) -> Option<Frame> {
    match FrameKind::try_from(frame.kind) {
        Ok(FrameKind::Handshake | FrameKind::Data | FrameKind::Close) => {}
        _ => return None,
    }
    if frame.payload.len() > MAX_FRAME_PAYLOAD {
        return None;
    }
    if !limits.hop_headers || frame.hop_traceparent.len() > MAX_HOP_HEADER {
        // Oversized or disabled hop headers are dropped, never fatal.
        frame.hop_traceparent.clear();
    }
    // Only relays tell their timings (the one a session was forwarded to
    // through this relay, as its pump toward the client asks).
    if limits.from_peer {
        // The peer's newest, at most one relay's worth.
        let extra = frame.hop_timings.len().saturating_sub(RELAY_HOP_TIMINGS);
        frame.hop_timings.drain(..extra);
    } else {
        frame.hop_timings.clear();
    }
    Some(frame)
}

/// A traced frame's forward: its span and what its timing needs.
struct Forward {
    span: opentelemetry::global::BoxedSpan,
    arrived: SystemTime,
    trace_id: [u8; 16],
    parent: u64,
}

impl Forward {
    /// Its timing, the frame ready to go on at `ready`.
    fn timing(
        &self,
        dir: Direction,
        ready: SystemTime,
        frame_bytes: usize,
        path_hop: u32,
    ) -> HopTiming {
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        HopTiming {
            trace_id: self.trace_id.to_vec().into(),
            parent_span_id: self.parent,
            span_id: u64::from_be_bytes(self.span.span_context().span_id().to_bytes()),
            direction: match dir {
                Direction::ToServer => HopDirection::ToServer,
                Direction::ToClient => HopDirection::ToClient,
            } as i32,
            arrived_unix_nanos: nanos(self.arrived),
            duration_ns: nanos(ready).saturating_sub(nanos(self.arrived)),
            frame_bytes: u32::try_from(frame_bytes).unwrap_or(u32::MAX),
            host: telemetry::host::name()
                .map(|h| h.chars().take(64).collect())
                .unwrap_or_default(),
            clock: Some(telemetry::clock_status::status().to_wire()),
            path_hop,
        }
    }
}

/// The bytes a relay's timings on a frame are counted for, at most (each
/// names its span, times, host and clock).
const TIMINGS_COST: usize = RELAY_HOP_TIMINGS * 160;

/// Starts `relay.forward` for a frame with a valid hop header (arrived at
/// `arrived`) and rewrites the header to name the new span. A header that
/// does not parse is removed; the frame itself is never refused for it.
fn start_forward(
    tracer: &BoxedTracer,
    frame: &mut Frame,
    dir: Direction,
    arrived: SystemTime,
) -> Option<Forward> {
    if frame.hop_traceparent.is_empty() {
        return None;
    }
    let Some(parent) = carriers::hop::extract(&frame.hop_traceparent) else {
        frame.hop_traceparent.clear();
        return None;
    };
    // A trace not sampled records nothing anywhere: no span, no timing,
    // and the header goes on as it came.
    if !parent.sampled() {
        return None;
    }
    let parent_cx = otel::context_from(&Extracted::Valid(TraceContext {
        parent,
        state: None,
    }));
    let direction = match dir {
        Direction::ToServer => "to_server",
        Direction::ToClient => "to_client",
    };
    let span = tracer
        .span_builder(spans::RELAY_FORWARD)
        .with_kind(SpanKind::Internal)
        .with_start_time(arrived)
        .with_attributes(vec![
            KeyValue::new("rex.direction", direction),
            KeyValue::new("rex.frame.bytes", frame.payload.len() as i64),
        ])
        .start_with_context(tracer, &parent_cx);
    frame.hop_traceparent =
        telemetry::frame_spans::hop_header_for(span.span_context(), &parent_cx).unwrap_or_default();
    Some(Forward {
        span,
        arrived,
        trace_id: parent.trace_id,
        parent: u64::from_be_bytes(parent.parent_id),
    })
}

/// Reads and drops what `from` still sends until it ends, for at most
/// `within`.
async fn drain(from: &mut Inbound, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        while let Ok(Some(_)) = from.message().await {}
    })
    .await;
}

/// Handshake message 1, which the relay reads with the stream's opening
/// (it may carry the session's first call, early data): checked as every
/// frame is (`None`: it breaks the protocol) and, with a hop header,
/// traced as one (`relay.forward`), its timing kept to tell the client.
/// Call [`FirstForward::sent`] once it has been handed on.
pub(crate) fn first_frame(
    frame: Frame,
    session: &Session,
    limits: &SpliceLimits,
    arrived: SystemTime,
) -> Option<(Frame, FirstForward)> {
    let mut frame = check(frame, limits)?;
    let forward = match limits.hop_headers {
        true if !frame.hop_traceparent.is_empty() => {
            let tracer = opentelemetry::global::tracer("relay");
            start_forward(&tracer, &mut frame, Direction::ToServer, arrived)
        }
        _ => None,
    };
    // Ready to go on: its forward's end, told to the client with the
    // exec-server's answer.
    let ready = SystemTime::now();
    if let Some(f) = &forward {
        session.note(f.timing(
            Direction::ToServer,
            ready,
            frame.payload.len(),
            limits.path_hop,
        ));
    }
    Some((frame, FirstForward { forward, ready }))
}

/// The forward of message 1 ([`first_frame`]), ended once it was handed on.
pub(crate) struct FirstForward {
    forward: Option<Forward>,
    ready: SystemTime,
}

impl FirstForward {
    /// It was handed on (`delivered`), or the exec-server was gone.
    pub(crate) fn sent(self, delivered: bool) {
        if let Some(mut f) = self.forward {
            if !delivered {
                f.span
                    .set_status(opentelemetry::trace::Status::error("destination gone"));
            }
            f.span.end_with_timestamp(self.ready);
        }
    }
}

/// Forwards frames from `from` to `to` until something ends the session.
/// `startup` is the session's place among the unauthenticated ones: the
/// pump toward the client gives it back once the exec-server's first frame
/// (its handshake answer) has passed. `credit`: the relay's credit for
/// the frames from `from` (an exec-server that asked for it, or a peer
/// relay this relay forwarded the session to), checked as each arrives and
/// granted again as each is sent toward the client. `gate`: the credit of
/// the relay that forwarded the session here, which each frame toward it
/// waits for.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pump(
    mut from: Inbound,
    to: Outbound,
    dir: Direction,
    session: Arc<Session>,
    limits: SpliceLimits,
    buffers: Buffers,
    mut startup: Option<Ticket>,
    credit: Option<Arc<SessionCredit>>,
    gate: Option<Arc<Gate>>,
) -> (PumpEnd, PumpStats) {
    let queue = Queue::new(buffers.session_buffer);
    let mut stats = PumpStats::default();
    let mut first = true;
    // Payload bytes let through `gate`.
    let mut gated = 0;
    // The exec-server's first frame (handshake message 2) is bounded by the
    // handshake timeout; after that only the session idle timeout applies.
    // One timer serves the whole pump: it is re-armed when it fires (from the
    // session's last activity), never per frame.
    let first_wait = if dir == Direction::ToClient {
        limits.handshake_timeout
    } else {
        limits.idle_timeout
    };
    let timer = tokio::time::sleep(first_wait);
    tokio::pin!(timer);
    // With hop headers off the relay makes no per-frame spans at all.
    let tracer = limits
        .hop_headers
        .then(|| opentelemetry::global::tracer("relay"));
    let end = loop {
        let next = tokio::select! {
            () = session.cancel.cancelled() => break PumpEnd::Cancelled,
            () = &mut timer => {
                if first && dir == Direction::ToClient {
                    break PumpEnd::HandshakeTimeout;
                }
                let idle = session.idle_for();
                if idle >= limits.idle_timeout {
                    break PumpEnd::Idle;
                }
                timer.as_mut().reset(tokio::time::Instant::now() + (limits.idle_timeout - idle));
                continue;
            }
            r = from.next() => r,
        };
        let (frame, mut message) = match next {
            Ok(Some(f)) => f,
            Ok(None) => break PumpEnd::SourceClosed,
            Err(_) => break PumpEnd::SourceFailed,
        };
        if first {
            first = false;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + limits.idle_timeout);
        }
        session.touch();
        let Some(mut frame) = check(frame, &limits) else {
            break PumpEnd::Protocol;
        };
        // Only frames with a hop header cost a clock read and a span.
        let forward = match &tracer {
            Some(t) if !frame.hop_traceparent.is_empty() => {
                start_forward(t, &mut frame, dir, SystemTime::now())
            }
            _ => None,
        };
        let len = frame.payload.len() as u64;
        // Past its grant: the exec-server broke the protocol.
        if credit.as_ref().is_some_and(|c| !c.received(len)) {
            break PumpEnd::Protocol;
        }
        let is_close = frame.kind == FrameKind::Close as i32;
        let is_handshake = frame.kind == FrameKind::Handshake as i32;
        // A traced frame toward the client will carry timings (and a
        // peer's may carry its own).
        let told = match (
            forward.is_some() && dir == Direction::ToClient,
            limits.from_peer,
        ) {
            (true, true) => 2 * TIMINGS_COST,
            (true, false) => TIMINGS_COST,
            (false, true) if !frame.hop_timings.is_empty() => TIMINGS_COST,
            (false, _) => 0,
        };
        // Room in this direction's share and the relay's budget first:
        // until then nothing more is read from the sender.
        let Some(charge) = buffers
            .budget
            .charge(&queue, cost(&frame) + told, &session.cancel)
            .await
        else {
            break PumpEnd::Cancelled;
        };
        // The frame is ready to go on: its forward's end.
        let ready = forward.as_ref().map(|f| {
            let ready = SystemTime::now();
            let timing = f.timing(dir, ready, frame.payload.len(), limits.path_hop);
            match dir {
                Direction::ToServer => session.note(timing),
                Direction::ToClient => {
                    let peer = std::mem::take(&mut frame.hop_timings);
                    frame.hop_timings = session.tell(peer, timing);
                }
            }
            ready
        });
        // Unchanged (no hop header, no timings, as most frames of a bulk
        // transfer): the message it arrived in goes on as it is.
        if !frame.hop_traceparent.is_empty() || !frame.hop_timings.is_empty() {
            message = None;
        }
        let charged = Charged::new(
            frame,
            message,
            Some(charge),
            credit.as_ref().map(|c| Forwarding::new(c, len)),
        );
        // Toward a forwarding relay, within its credit: until then the
        // frame waits here, holding its charge and the exec-server's credit.
        if let Some(gate) = &gate {
            gated += len;
            tokio::select! {
                () = session.cancel.cancelled() => break PumpEnd::Cancelled,
                () = gate.until(gated) => {}
            }
        }
        let sent = tokio::select! {
            () = session.cancel.cancelled() => break PumpEnd::Cancelled,
            r = to.send(charged) => r,
        };
        if let (Some(mut f), Some(ready)) = (forward, ready) {
            if sent.is_err() {
                f.span
                    .set_status(opentelemetry::trace::Status::error("destination gone"));
            }
            f.span.end_with_timestamp(ready);
        }
        if sent.is_err() {
            break PumpEnd::DestinationGone;
        }
        stats.frames += 1;
        stats.bytes += len;
        // The exec-server's handshake answer has passed: the session is
        // no longer an unauthenticated one (authenticated, unless the
        // exec-server's first word was a refusal).
        if dir == Direction::ToClient
            && let Some(ticket) = startup.take()
            && is_handshake
        {
            ticket.authenticated();
        }
        if is_close {
            break PumpEnd::SourceClosed;
        }
    };
    if end == PumpEnd::Cancelled && limits.from_peer && dir == Direction::ToClient {
        drain(&mut from, PEER_DRAIN).await;
    }
    // Tell the other side why, when it is still there and did not cause it.
    let reason = match end {
        PumpEnd::SourceFailed => Some(CloseReason::PeerGone),
        PumpEnd::Protocol => Some(CloseReason::Protocol),
        PumpEnd::Idle | PumpEnd::HandshakeTimeout => Some(CloseReason::Timeout),
        PumpEnd::SourceClosed | PumpEnd::DestinationGone | PumpEnd::Cancelled => None,
    };
    if let Some(reason) = reason {
        let _ = to.try_send(Charged::free(proto::frames::close(reason)));
    }
    session.cancel.cancel();
    drop(startup);
    (end, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::limits::MAX_HOP_TIMINGS;

    fn limits(hop: bool) -> SpliceLimits {
        SpliceLimits {
            idle_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            hop_headers: hop,
            from_peer: false,
            path_hop: 0,
        }
    }

    fn frame(kind: i32, len: usize, hop: &str) -> Frame {
        Frame {
            kind,
            payload: vec![0u8; len].into(),
            hop_traceparent: hop.to_owned(),
            close_reason: 0,
            hop_timings: Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_untouched_frame_goes_on_as_the_message_it_came_in() {
        use proto::frame_wire::{FrameBody, FrameReader};
        use proto::limits::MAX_GRPC_MESSAGE;
        let hop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sent = vec![
            frame(FrameKind::Handshake as i32, 40, ""),
            frame(FrameKind::Data as i32, 60_000, ""),
            frame(FrameKind::Data as i32, 10, hop),
        ];
        let frames = sent.clone().into_iter().map(|f| Ok(Outgoing::from(f)));
        let body = FrameBody::new(futures::stream::iter(frames), MAX_GRPC_MESSAGE);
        let from = Inbound::Wire(FrameReader::new(
            tonic::body::Body::new(body),
            MAX_GRPC_MESSAGE,
        ));
        let (tx, mut rx) = mpsc::channel(8);
        let buffers = Buffers {
            budget: Budget::new(1 << 20),
            session_buffer: 1 << 20,
        };
        let session = Session::new(&CancellationToken::new());
        let (end, stats) = pump(
            from,
            tx,
            Direction::ToServer,
            session,
            limits(true),
            buffers,
            None,
            None,
            None,
        )
        .await;
        assert_eq!((end, stats.frames), (PumpEnd::SourceClosed, 3));
        let mut got = Vec::new();
        while let Ok(c) = rx.try_recv() {
            got.push(c);
        }
        // The untraced ones as they came; the traced one written anew (its
        // hop header is the relay's to rewrite).
        let passed: Vec<bool> = got.iter().map(|c| c.0.message.is_some()).collect();
        assert_eq!(passed, [true, true, false]);
        assert_eq!(got[1].0.frame, sent[1]);
    }

    #[test]
    fn a_forward_is_told_with_its_trace_parent_and_times() {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::SdkTracerProvider;
        let tracer = BoxedTracer::new(Box::new(
            SdkTracerProvider::builder().build().tracer("relay"),
        ));
        let hop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut f = frame(FrameKind::Data as i32, 10, hop);
        let arrived = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_000);
        let forward = start_forward(&tracer, &mut f, Direction::ToServer, arrived).unwrap();
        let t = forward.timing(
            Direction::ToServer,
            arrived + Duration::from_nanos(250),
            10,
            1,
        );
        assert_eq!(
            t.trace_id.as_ref(),
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736u128.to_be_bytes()
        );
        assert_eq!(t.parent_span_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(
            t.span_id.to_be_bytes(),
            forward.span.span_context().span_id().to_bytes()
        );
        assert_eq!(t.direction, HopDirection::ToServer as i32);
        assert_eq!(
            (t.arrived_unix_nanos, t.duration_ns, t.frame_bytes),
            (1_000, 250, 10)
        );
    }

    #[test]
    fn the_client_is_told_its_frame_and_the_last_forwards_toward_the_server() {
        let session = Session::new(&CancellationToken::new());
        let timing = |id: u64| HopTiming {
            span_id: id,
            ..HopTiming::default()
        };
        for id in 1..=5 {
            session.note(timing(id));
        }
        let told: Vec<u64> = session
            .tell(Vec::new(), timing(9))
            .iter()
            .map(|t| t.span_id)
            .collect();
        // Bounded: the newest toward the server, then the frame's own.
        assert_eq!(told, [3, 4, 5, 9]);
        assert!(told.len() <= MAX_HOP_TIMINGS);
        let told: Vec<u64> = session
            .tell(Vec::new(), timing(10))
            .iter()
            .map(|t| t.span_id)
            .collect();
        assert_eq!(told, [10]);
    }

    #[test]
    fn timings_a_peer_sends_are_removed() {
        let mut f = frame(FrameKind::Data as i32, 10, "");
        f.hop_timings.push(HopTiming::default());
        let f = check(f, &limits(true)).unwrap();
        assert!(f.hop_timings.is_empty());
    }

    #[test]
    fn the_forwarded_relays_timings_are_kept_bounded_and_told_first() {
        let peer = SpliceLimits {
            from_peer: true,
            ..limits(true)
        };
        let mut f = frame(FrameKind::Data as i32, 10, "");
        for id in 1..=6 {
            f.hop_timings.push(HopTiming {
                span_id: id,
                path_hop: 1,
                ..HopTiming::default()
            });
        }
        let f = check(f, &peer).unwrap();
        let kept: Vec<u64> = f.hop_timings.iter().map(|t| t.span_id).collect();
        assert_eq!(kept, [3, 4, 5, 6], "the peer's newest, one relay's worth");
        let session = Session::new(&CancellationToken::new());
        session.note(HopTiming {
            span_id: 8,
            ..HopTiming::default()
        });
        let own = HopTiming {
            span_id: 9,
            ..HopTiming::default()
        };
        let told: Vec<u64> = session
            .tell(f.hop_timings, own)
            .iter()
            .map(|t| t.span_id)
            .collect();
        assert_eq!(told, [3, 4, 5, 6, 8, 9]);
        assert!(told.len() <= MAX_HOP_TIMINGS);
    }

    #[test]
    fn a_hop_header_becomes_the_parent_of_relay_forward_and_is_rewritten() {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer("relay")));
        let hop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut f = frame(FrameKind::Data as i32, 10, hop);
        let arrived = SystemTime::now();
        let span = start_forward(&tracer, &mut f, Direction::ToClient, arrived).unwrap();
        drop(span);
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.name, spans::RELAY_FORWARD);
        assert_eq!(s.start_time, arrived);
        assert_eq!(
            s.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(s.parent_span_id.to_string(), "00f067aa0ba902b7");
        // The next hop sees relay.forward as its parent, traceparent only.
        let rewritten = telemetry::w3c::TraceParent::parse(&f.hop_traceparent).unwrap();
        assert_eq!(rewritten.parent_id, s.span_context.span_id().to_bytes());
        assert_eq!(rewritten.trace_id, s.span_context.trace_id().to_bytes());

        // A malformed header is removed and makes no span; the frame goes on.
        for bad in [
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let mut f = frame(FrameKind::Data as i32, 10, bad);
            assert!(start_forward(&tracer, &mut f, Direction::ToServer, arrived).is_none());
            assert!(f.hop_traceparent.is_empty());
        }
        let mut f = frame(FrameKind::Data as i32, 10, "");
        assert!(start_forward(&tracer, &mut f, Direction::ToServer, arrived).is_none());
        // A trace not sampled: no span, and the header goes on unchanged.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut f = frame(FrameKind::Data as i32, 10, unsampled);
        assert!(start_forward(&tracer, &mut f, Direction::ToServer, arrived).is_none());
        assert_eq!(f.hop_traceparent, unsampled);
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 1);
    }

    #[test]
    fn frame_checks() {
        let l = limits(true);
        assert!(check(frame(FrameKind::Data as i32, 10, ""), &l).is_some());
        assert!(check(frame(0, 10, ""), &l).is_none());
        assert!(check(frame(99, 10, ""), &l).is_none());
        assert!(check(frame(FrameKind::Data as i32, MAX_FRAME_PAYLOAD + 1, ""), &l).is_none());
        let long = "x".repeat(MAX_HOP_HEADER + 1);
        let f = check(frame(FrameKind::Data as i32, 1, &long), &l).unwrap();
        assert!(f.hop_traceparent.is_empty(), "oversized hop header dropped");
        let f = check(frame(FrameKind::Data as i32, 1, "abc"), &limits(false)).unwrap();
        assert!(f.hop_traceparent.is_empty(), "hop headers off strips them");
        let f = check(frame(FrameKind::Data as i32, 1, "abc"), &l).unwrap();
        assert_eq!(f.hop_traceparent, "abc");
    }
}
