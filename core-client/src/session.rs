//! The client side of one established session: a single driver task that
//! writes queued messages, reads frames, and routes terminal events to
//! their calls. Callers talk to it through a bounded queue.
//!
//! Stage spans made here: `rpc.client.queue` (from the enqueue time each
//! traced command carries), `relay.frame.send` for the exec request and
//! control messages, and `relay.frame.recv` for the started/exit events and
//! the first and last output chunk, all children of the call's
//! `tool.dispatch`. Other output chunks are only counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span, SpanContext, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::envelope;
use proto::noise::Transport;
use proto::pb::session::{Ping, TraceContext as PbTrace, envelope::Body, exited, terminal_event};
use proto::pb::tunnel::{CloseReason, Frame, FrameKind};
use telemetry::framing::{self, SendTracker};
use telemetry::w3c::Extracted;
use telemetry::{carriers, otel, spans};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::connect::Established;
use crate::exec::{Event, ExecFailure, ExitStatus};

/// Plaintext buffered in the transport before the driver stops taking
/// caller messages.
const TRANSPORT_HIGH_WATER: usize = 256 * 1024;

/// An event on its way to the caller, with when the driver decoded it
/// (for the delivery queue's residence time).
#[derive(Debug)]
pub struct Routed {
    /// The event.
    pub event: Event,
    /// When the driver handed it to the call's queue.
    pub at: Instant,
}

/// The trace of a message queued by a call.
#[derive(Debug, Clone)]
pub struct Traced {
    /// The call's `tool.dispatch` context (parent of the driver's spans).
    pub parent: Context,
    /// What the message is (`exec`, `signal`, ...), for its spans.
    pub what: &'static str,
    /// When the caller queued it.
    pub enqueued: SystemTime,
}

/// A message from a caller to the driver.
#[derive(Debug)]
pub enum Command {
    /// Start a call: register its event sink and send its exec request.
    Start {
        /// The call.
        call_id: u64,
        /// The encoded exec envelope.
        envelope: Bytes,
        /// Where its events go.
        events: mpsc::Sender<Routed>,
        /// The exec request's trace.
        trace: Traced,
    },
    /// Send an encoded envelope (stdin, signal, cancel); control messages
    /// are traced, stdin data is not.
    Send(Bytes, Option<Traced>),
    /// The caller dropped the call: stop routing its events.
    Forget(u64),
}

/// A handle on a live session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    commands: mpsc::Sender<Command>,
    next_call: Arc<AtomicU64>,
    closed: CancellationToken,
    /// Set when the driver ends, with why.
    end_reason: Arc<Mutex<Option<String>>>,
    /// The latest estimate of the exec-server's clock minus ours.
    clock_offset: Arc<AtomicI64>,
}

impl SessionHandle {
    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || self.commands.is_closed()
    }

    /// A fresh call id.
    pub fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a command, waiting for room. Fails if the session ended.
    pub async fn send(&self, cmd: Command) -> Result<(), String> {
        match self.commands.send(cmd).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.reason().await),
        }
    }

    /// Queues a command without waiting (used from `Drop`).
    pub fn try_send(&self, cmd: Command) {
        let _ = self.commands.try_send(cmd);
    }

    /// The latest estimate of the exec-server's clock minus this host's,
    /// in nanoseconds (from the hello exchange, then each keepalive).
    pub fn clock_offset_nanos(&self) -> i64 {
        self.clock_offset.load(Ordering::Relaxed)
    }

    /// Why the session ended (or "session closed").
    pub async fn reason(&self) -> String {
        self.end_reason
            .lock()
            .await
            .clone()
            .unwrap_or_else(|| "session closed".into())
    }

    /// Asks the driver to close the session cleanly and waits until it has.
    pub async fn close(&self) {
        self.closed.cancel();
        self.commands.closed().await;
    }
}

/// Starts the driver for an established session.
pub fn spawn(established: Established, keepalive: Duration, queue: usize) -> SessionHandle {
    let (tx, rx) = mpsc::channel(queue);
    let closed = CancellationToken::new();
    let end_reason = Arc::new(Mutex::new(None));
    let clock_offset = Arc::new(AtomicI64::new(established.clock_offset_nanos));
    let handle = SessionHandle {
        commands: tx,
        next_call: Arc::new(AtomicU64::new(1)),
        closed: closed.clone(),
        end_reason: Arc::clone(&end_reason),
        clock_offset: Arc::clone(&clock_offset),
    };
    let driver = Driver {
        transport: established.transport,
        outbound: established.outbound,
        commands: rx,
        calls: HashMap::new(),
        pending_event: None,
        keepalive,
        closed,
        tracer: opentelemetry::global::tracer("core-client"),
        sends: SendTracker::default(),
        via: established.via,
        frame: (SystemTime::now(), None),
        clock_offset,
    };
    let inbound = established.inbound;
    tokio::spawn(async move {
        let mut driver = driver;
        let mut inbound = inbound;
        let reason = driver.run(&mut inbound).await;
        if driver.closed.is_cancelled() || driver.commands.is_closed() {
            // Our close is queued on the link: end our half of the stream
            // (the queued frames still go out first), so that the relay and
            // the exec-server see the end at once rather than waiting for
            // it, then let their side end (bounded).
            driver.end_link();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while let Ok(Some(_)) = inbound.message().await {}
            })
            .await;
        }
        tracing::debug!(%reason, "session ended");
        *end_reason.lock().await = Some(reason.clone());
        driver.fail_all(&reason);
        // Dropping the driver closes the command queue.
    });
    handle
}

/// A call the driver routes events to.
struct Call {
    sink: mpsc::Sender<Routed>,
    /// The call's `tool.dispatch` context.
    parent: Context,
    output_chunks: u64,
    /// The latest output chunk, recorded once the final event proves it
    /// the last.
    last_chunk: Option<ChunkTimes>,
}

/// A chunk's arrival, its decode, and its frame's hop context.
type ChunkTimes = (SystemTime, SystemTime, Option<SpanContext>);

struct Driver {
    transport: Transport,
    outbound: mpsc::Sender<Result<Frame, Status>>,
    commands: mpsc::Receiver<Command>,
    calls: HashMap<u64, Call>,
    /// An event waiting for room in its call's queue; while set, no more
    /// frames are read.
    pending_event: Option<(u64, Event, bool)>,
    keepalive: Duration,
    closed: CancellationToken,
    tracer: BoxedTracer,
    /// `relay.frame.send` spans waiting for their bytes to leave.
    sends: SendTracker,
    /// What the link goes to ("the relay" or "the exec-server").
    via: &'static str,
    /// The frame being decoded: its arrival and its hop context.
    frame: (SystemTime, Option<SpanContext>),
    clock_offset: Arc<AtomicI64>,
}

fn close_reason_text(reason: i32) -> String {
    match CloseReason::try_from(reason) {
        Ok(CloseReason::PeerGone) => "the exec-server went away".into(),
        Ok(CloseReason::Timeout) => "the session timed out at the relay".into(),
        Ok(CloseReason::Shutdown) => "the relay is shutting down".into(),
        Ok(CloseReason::Protocol) => "the relay closed the session (protocol error)".into(),
        _ => "the link was closed".into(),
    }
}

impl Driver {
    /// Ends our half of the link: the stream to the relay ends once the
    /// frames already queued on it are sent.
    fn end_link(&mut self) {
        let (ended, _) = mpsc::channel(1);
        self.outbound = ended;
    }

    async fn run(&mut self, inbound: &mut Streaming<Frame>) -> String {
        let mut ping = tokio::time::interval(self.keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let outbound = self.outbound.clone();
        let closed = self.closed.clone();
        loop {
            let can_take = self.transport.pending_bytes() < TRANSPORT_HIGH_WATER;
            let has_output = self.transport.has_pending();
            let target = self
                .pending_event
                .as_ref()
                .and_then(|(id, _, _)| self.calls.get(id).map(|c| c.sink.clone()));
            tokio::select! {
                biased;
                () = closed.cancelled() => {
                    proto::link::close_session(&mut self.transport, &self.outbound, "client closed the session").await;
                    return "closed by the client".into();
                }
                permit = outbound.reserve(), if has_output => {
                    let Ok(permit) = permit else { return format!("the link to {} was lost", self.via) };
                    match self.transport.poll_transmit_until(SystemTime::now(), self.sends.next_boundary()) {
                        Ok(Some(msg)) => {
                            let mut frame = proto::frames::data(msg);
                            let done = self.sends.transmitted(self.transport.sent_offset());
                            if let Some(hop) = &done.hop {
                                frame.hop_traceparent.clone_from(hop);
                            }
                            permit.send(Ok(frame));
                            done.end();
                        }
                        Ok(None) => {}
                        Err(e) => return format!("transport error: {e}"),
                    }
                }
                permit = reserve(target), if self.pending_event.is_some() => {
                    if let Some((call_id, ev, last)) = self.pending_event.take() {
                        if let Some(permit) = permit {
                            permit.send(Routed { event: ev, at: Instant::now() });
                        }
                        if last {
                            self.calls.remove(&call_id);
                        }
                    }
                    if let Err(e) = self.drain() {
                        return e;
                    }
                }
                cmd = self.commands.recv(), if can_take => match cmd {
                    Some(cmd) => if let Err(e) = self.command(cmd) { return e },
                    None => {
                        proto::link::close_session(&mut self.transport, &self.outbound, "client closed the session").await;
                        return "closed by the client".into();
                    }
                },
                _ = ping.tick() => {
                    // The nonce is our send time: the pong gives a clock-offset sample.
                    let ping = Body::Ping(Ping { nonce: proto::clock::now_unix_nanos() });
                    if let Ok(bytes) = envelope::encode_new(0, None, ping)
                        && let Err(e) = self.transport.send(&bytes)
                    {
                        return format!("transport error: {e}");
                    }
                }
                f = inbound.message(), if self.pending_event.is_none() => match f {
                    Ok(Some(f)) => {
                        self.frame = (SystemTime::now(), framing::hop_context(&f.hop_traceparent));
                        match FrameKind::try_from(f.kind) {
                            Ok(FrameKind::Data) => {}
                            Ok(FrameKind::Close) => return close_reason_text(f.close_reason),
                            _ => return "the peer sent an unexpected frame".into(),
                        }
                        if let Err(e) = self.transport.receive(&f.payload) {
                            return format!("the session was corrupted ({e}); closed it");
                        }
                        if let Err(e) = self.drain() {
                            return e;
                        }
                        if let Some(reason) = self.transport.peer_closed() {
                            return format!("the exec-server closed the session: {reason}");
                        }
                    }
                    Ok(None) => return format!("{} ended the link", self.via),
                    Err(s) => return format!("the connection to {} broke: {}", self.via, s.message()),
                },
            }
        }
    }

    fn command(&mut self, cmd: Command) -> Result<(), String> {
        let (bytes, trace) = match cmd {
            Command::Start {
                call_id,
                envelope,
                events,
                trace,
            } => {
                self.calls.insert(
                    call_id,
                    Call {
                        sink: events,
                        parent: trace.parent.clone(),
                        output_chunks: 0,
                        last_chunk: None,
                    },
                );
                (envelope, Some(trace))
            }
            Command::Send(bytes, trace) => (bytes, trace),
            Command::Forget(call_id) => {
                self.calls.remove(&call_id);
                return Ok(());
            }
        };
        let Some(trace) = trace else {
            return self
                .transport
                .send(&bytes)
                .map_err(|e| format!("transport error: {e}"));
        };
        // rpc.client.queue: from the caller's enqueue until now.
        let mut queue = self
            .tracer
            .span_builder(spans::RPC_CLIENT_QUEUE)
            .with_start_time(trace.enqueued)
            .with_attributes(vec![KeyValue::new("rex.message", trace.what)])
            .start_with_context(&self.tracer, &trace.parent);
        queue.end();
        let send = framing::send_span(&self.tracer, &trace.parent, trace.what);
        self.transport
            .send(&bytes)
            .map_err(|e| format!("transport error: {e}"))?;
        let hop = framing::hop_header_for(trace.parent.span().span_context(), &trace.parent);
        self.sends
            .track(self.transport.queued_offset(), vec![send], hop);
        Ok(())
    }

    /// Routes decoded envelopes until none is left or an event must wait.
    fn drain(&mut self) -> Result<(), String> {
        while self.pending_event.is_none() {
            let bytes = match self.transport.poll_envelope() {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("the session was corrupted ({e}); closed it")),
            };
            let env = envelope::decode(&bytes)
                .map_err(|_| "the exec-server sent an undecodable message".to_string())?;
            match env.body {
                Some(Body::Event(ev)) => {
                    self.route(
                        env.call_id,
                        ev,
                        env.trace.as_ref(),
                        env.send_time_unix_nanos,
                    );
                }
                Some(Body::Pong(p)) => {
                    let now = proto::clock::now_unix_nanos();
                    if let Some(offset) = clock_offset(p.nonce, p.recv_time_unix_nanos, now) {
                        self.clock_offset.store(offset, Ordering::Relaxed);
                    }
                }
                Some(Body::HelloAck(_)) => {}
                Some(Body::Ping(_)) => {}
                _ => return Err("the exec-server sent an unexpected message".into()),
            }
        }
        Ok(())
    }

    /// Records `relay.frame.recv` for the traced events of a call: started,
    /// the first output chunk, the last output chunk (once the final event
    /// shows it was the last), and the final event.
    fn trace_recv(
        &mut self,
        call_id: u64,
        kind: &terminal_event::Kind,
        trace: Option<&PbTrace>,
        sent_unix_nanos: u64,
    ) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let (arrived, hop) = (self.frame.0, self.frame.1.clone());
        let what = match kind {
            terminal_event::Kind::Started(_) => "started",
            terminal_event::Kind::Stdout(_) | terminal_event::Kind::Stderr(_) => {
                call.output_chunks += 1;
                // Every chunk may be the last (a one-chunk output's first
                // and last are the same chunk, so span counts stay fixed).
                // Only times are kept per chunk; nothing is parsed.
                call.last_chunk = Some((arrived, SystemTime::now(), hop.clone()));
                if call.output_chunks > 1 {
                    return;
                }
                "output.first"
            }
            terminal_event::Kind::Exited(_) => "exited",
            terminal_event::Kind::Error(_) => "error",
        };
        // The event's own context (the process span), linked from ours.
        let origin = trace.and_then(|t| match carriers::envelope::extract(t) {
            Extracted::Valid(tc) => Some(otel::to_span_context(&tc)),
            _ => None,
        });
        let offset = self.clock_offset.load(Ordering::Relaxed);
        let transit = transit_nanos(arrived, sent_unix_nanos, offset);
        let attrs = |extra: Option<i64>| {
            extra
                .map(|t| vec![KeyValue::new("rex.transit_ns", t)])
                .unwrap_or_default()
        };
        if matches!(
            kind,
            terminal_event::Kind::Exited(_) | terminal_event::Kind::Error(_)
        ) && let Some((a, d, h)) = call.last_chunk.take()
        {
            framing::record_recv_until(
                &self.tracer,
                &call.parent,
                (a, d),
                "output.last",
                &[origin.clone(), h],
                vec![KeyValue::new(
                    "rex.output.chunks",
                    call.output_chunks as i64,
                )],
            );
        }
        framing::record_recv(
            &self.tracer,
            &call.parent,
            arrived,
            what,
            &[origin, hop],
            attrs(transit),
        );
    }

    fn route(
        &mut self,
        call_id: u64,
        ev: proto::pb::session::TerminalEvent,
        trace: Option<&PbTrace>,
        sent_unix_nanos: u64,
    ) {
        if let Some(kind) = &ev.kind {
            self.trace_recv(call_id, kind, trace, sent_unix_nanos);
        }
        let (event, last) = match ev.kind {
            Some(terminal_event::Kind::Started(s)) => (Event::Started { pid: s.pid }, false),
            Some(terminal_event::Kind::Stdout(d)) => (Event::Stdout(d), false),
            Some(terminal_event::Kind::Stderr(d)) => (Event::Stderr(d), false),
            Some(terminal_event::Kind::Exited(x)) => {
                let status = match x.status {
                    Some(exited::Status::Code(c)) => ExitStatus::Code(c),
                    Some(exited::Status::Signal(s)) => ExitStatus::Signal(s),
                    None => ExitStatus::Code(-1),
                };
                (Event::Exited(status), true)
            }
            Some(terminal_event::Kind::Error(e)) => (
                Event::Failed(ExecFailure::from_remote(e.kind, e.message)),
                true,
            ),
            None => return,
        };
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        let routed = Routed {
            event,
            at: Instant::now(),
        };
        match call.sink.try_send(routed) {
            Ok(()) if last => {
                self.calls.remove(&call_id);
            }
            Ok(()) => {}
            // The sink stays registered until the pending event is delivered.
            Err(mpsc::error::TrySendError::Full(routed)) => {
                self.pending_event = Some((call_id, routed.event, last));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.calls.remove(&call_id);
            }
        }
    }

    fn fail_all(&mut self, reason: &str) {
        self.sends.abandon(reason);
        for (_, call) in self.calls.drain() {
            let _ = call.sink.try_send(Routed {
                event: Event::Failed(ExecFailure::SessionLost(reason.to_owned())),
                at: Instant::now(),
            });
        }
    }
}

/// The peer's clock minus ours, from a request sent at `sent`, answered
/// with the peer's time `peer`, and received back at `received` (all Unix
/// nanoseconds), assuming a symmetric path. `None` for impossible samples.
pub fn clock_offset(sent: u64, peer: u64, received: u64) -> Option<i64> {
    if sent == 0 || peer == 0 || received < sent {
        return None;
    }
    let mid = i128::from(sent) + (i128::from(received) - i128::from(sent)) / 2;
    i64::try_from(i128::from(peer) - mid).ok()
}

/// How long a message took from the peer's send time to `arrived` here,
/// correcting the peer's clock by `offset` (peer minus ours).
fn transit_nanos(arrived: SystemTime, sent_unix_nanos: u64, offset: i64) -> Option<i64> {
    if sent_unix_nanos == 0 {
        return None;
    }
    let arrived = i128::try_from(
        arrived
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_nanos(),
    )
    .ok()?;
    let sent_here = i128::from(sent_unix_nanos) - i128::from(offset);
    i64::try_from(arrived - sent_here).ok()
}

async fn reserve(target: Option<mpsc::Sender<Routed>>) -> Option<mpsc::OwnedPermit<Routed>> {
    match target {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_is_the_peer_time_minus_the_midpoint() {
        // Sent at 1000, answered by a clock 500 ahead at (local 1100) 1600,
        // received at 1200.
        assert_eq!(clock_offset(1000, 1600, 1200), Some(500));
        assert_eq!(clock_offset(1000, 900, 1200), Some(-200));
        // Impossible samples are ignored.
        assert_eq!(clock_offset(0, 1600, 1200), None);
        assert_eq!(clock_offset(1000, 0, 1200), None);
        assert_eq!(clock_offset(1000, 1600, 999), None);
    }

    #[test]
    fn transit_corrects_the_senders_clock() {
        let arrived = SystemTime::UNIX_EPOCH + Duration::from_nanos(10_000);
        // Sent at peer time 9_500 with the peer 500 ahead: local 9_000.
        assert_eq!(transit_nanos(arrived, 9_500, 500), Some(1_000));
        assert_eq!(transit_nanos(arrived, 9_500, 0), Some(500));
        assert_eq!(transit_nanos(arrived, 0, 0), None);
    }
}
