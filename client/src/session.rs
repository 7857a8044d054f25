//! One established session as callers hold it: the bounded command queue
//! to its driver task, and the state both share (cancellations, how the
//! session ended, the clock offset).
//!
//! Cancellation never goes through the queue: a dropped call is added to
//! the shared list and the driver woken, so a full queue cannot lose it.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry::trace::SpanContext;
use proto::pb::session::{ExecRequest, TraceContext as PbTrace};
use proto::session::{Closed, Counters, StdinFlow};
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Target;
use crate::error::{SessionLost, Via};
use crate::exec::{Event, ExecFailure};
use crate::link_state::LinkWatch;
use crate::outbound::Drained;

/// An event on its way to the caller, with when the driver handed it over
/// (for the delivery queue's residence time).
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) event: Event,
    pub(crate) at: Instant,
    /// When it was decoded (where the final event's `terminal.handoff`
    /// starts).
    pub(crate) decoded: SystemTime,
    /// Its place in the call's sequence and its output credit (what the
    /// caller's taking it gives back to the exec-server); none for an
    /// event made here (a failure).
    pub(crate) flow: Option<(u64, u64)>,
}

/// The trace of a message queued by a call.
#[derive(Debug, Clone)]
pub(crate) struct Traced {
    /// The call's `tool.dispatch` context (parent of the driver's spans).
    pub(crate) parent: Context,
    /// What the message is (`exec`, `signal`, ...), for its spans.
    pub(crate) what: &'static str,
    /// When the caller queued it.
    pub(crate) enqueued: SystemTime,
}

impl Traced {
    pub(crate) fn now(parent: &Context, what: &'static str) -> Self {
        Self::at(parent, what, SystemTime::now())
    }

    /// Queued at `enqueued` (the instant the previous stage ended).
    pub(crate) fn at(parent: &Context, what: &'static str, enqueued: SystemTime) -> Self {
        Self {
            parent: parent.clone(),
            what,
            enqueued,
        }
    }
}

/// What a call's caller and the driver share besides its event queue: how
/// the call ended when the driver (not the exec-server) ended it, kept
/// here so that a full queue can never lose it, and its resumes.
#[derive(Debug, Default)]
pub(crate) struct CallShared {
    /// The call's last event, made by the driver (a lost session, lost
    /// output): the caller takes it once the queue is drained and closed.
    fate: Mutex<Option<ExecFailure>>,
    /// Times the call's session came back over a new link.
    resumes: AtomicU32,
    /// Output bytes sent again after those resumes.
    replayed: AtomicU64,
    /// The session's counters when the call's first event arrived, if the
    /// call was the session's first.
    counters: Mutex<Option<Counters>>,
    /// How the call's stdin window treated it, once its final event came.
    stdin: Mutex<Option<StdinFlow>>,
    /// Output its caller took that the driver was not told of yet.
    untold: Mutex<Untold>,
}

/// Output a caller took and has not reported: its caller reports it in
/// steps of a quarter of the window, or at once when the exec-server asked.
#[derive(Debug, Default)]
struct Untold {
    /// The latest event taken, and the credit taken since the last report.
    seq: u64,
    cost: u64,
    /// The exec-server asked while there was nothing to report: the next
    /// take is reported at once.
    asked: bool,
}

impl CallShared {
    /// The caller took event `seq`, of output credit `cost`: what to
    /// report now (once `step` has been taken since the last report, or
    /// the exec-server asked), as `(seq, cost)`.
    pub(crate) fn took(&self, seq: u64, cost: u64, step: u64) -> Option<(u64, u64)> {
        let mut untold = self.untold.lock().unwrap_or_else(PoisonError::into_inner);
        untold.seq = seq;
        untold.cost += cost;
        if untold.cost < step.max(1) && !untold.asked {
            return None;
        }
        untold.asked = false;
        Some((seq, std::mem::take(&mut untold.cost)))
    }

    /// The exec-server asked for the call's output to be acknowledged:
    /// what the caller took and did not report, as `(seq, cost)`, or
    /// `None` (its next take is then reported at once).
    pub(crate) fn ask(&self) -> Option<(u64, u64)> {
        let mut untold = self.untold.lock().unwrap_or_else(PoisonError::into_inner);
        if untold.cost == 0 {
            untold.asked = true;
            return None;
        }
        Some((untold.seq, std::mem::take(&mut untold.cost)))
    }

    /// Sets how the call ended (the first word stands).
    pub(crate) fn end(&self, failure: ExecFailure) {
        self.fate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(failure);
    }

    /// How the driver ended the call, if it did.
    pub(crate) fn take_fate(&self) -> Option<ExecFailure> {
        self.fate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The session came back; `replayed` output bytes of the call were
    /// sent again.
    pub(crate) fn resumed(&self, replayed: u64) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
        self.replayed.fetch_add(replayed, Ordering::Relaxed);
    }

    pub(crate) fn resumes(&self) -> u32 {
        self.resumes.load(Ordering::Relaxed)
    }

    pub(crate) fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    /// The call opened its session: what the session's start cost it.
    pub(crate) fn set_counters(&self, counters: Counters) {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner) = Some(counters);
    }

    pub(crate) fn counters(&self) -> Option<Counters> {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The call's final event came, with how its stdin window treated it.
    pub(crate) fn set_stdin_flow(&self, flow: StdinFlow) {
        *self.stdin.lock().unwrap_or_else(PoisonError::into_inner) = Some(flow);
    }

    pub(crate) fn stdin_flow(&self) -> Option<StdinFlow> {
        *self.stdin.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A control message of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    CloseStdin,
    Signal(i32),
    Cancel,
}

/// What callers ask of the driver. Signals, cancels and resizes travel on a
/// queue of their own, taken even while the session's backlog is full, so
/// that a process that does not read its stdin can still be interrupted
/// (or redrawn).
#[derive(Debug)]
pub(crate) enum Command {
    /// Start call `call_id` (ids increase in queue order: see
    /// [`SessionHandle::start`]); if it cannot start, its events say why.
    Start {
        call_id: u64,
        request: ExecRequest,
        trace: Option<PbTrace>,
        events: mpsc::Sender<Routed>,
        traced: Traced,
        /// Set once the driver has taken the start (see [`StartTaken`]).
        taken: watch::Sender<bool>,
        /// What the call's caller shares with the driver.
        call: Arc<CallShared>,
    },
    /// Stdin for a call (at most one chunk).
    Stdin { call_id: u64, data: Bytes },
    /// A traced control message for a call.
    Control {
        call_id: u64,
        control: Control,
        traced: Traced,
    },
    /// A terminal call's new window size (counted, not traced).
    Resize { call_id: u64, rows: u16, cols: u16 },
    /// A ping; its round trip is the answer.
    Ping {
        reply: oneshot::Sender<std::time::Duration>,
    },
}

/// A call to start, before it has an id: what [`Command::Start`] carries
/// besides the id. A cold dispatch hands it to the session's opening, so
/// that it rides in handshake message 1 (early data).
#[derive(Debug)]
pub(crate) struct NewCall {
    pub(crate) request: ExecRequest,
    pub(crate) trace: Option<PbTrace>,
    pub(crate) events: mpsc::Sender<Routed>,
    pub(crate) traced: Traced,
    pub(crate) taken: watch::Sender<bool>,
    pub(crate) call: Arc<CallShared>,
}

/// The caller's ends of a [`NewCall`]: its event queue, what it shares
/// with the driver, and whether its start was taken.
pub(crate) type CallerEnds = (mpsc::Receiver<Routed>, Arc<CallShared>, StartTaken);

impl NewCall {
    /// A call of `request` under the dispatch `parent`, its event queue
    /// holding `queue` events; queued now (the caller sets `traced` again
    /// when it queues it later).
    pub(crate) fn start(
        request: ExecRequest,
        trace: Option<PbTrace>,
        parent: &Context,
        queue: usize,
    ) -> (Self, CallerEnds) {
        let (events, rx) = mpsc::channel(queue);
        let (taken, started) = StartTaken::new();
        let call = Arc::new(CallShared::default());
        let new = Self {
            request,
            trace,
            events,
            traced: Traced::now(parent, "exec"),
            taken,
            call: Arc::clone(&call),
        };
        (new, (rx, call, started))
    }

    /// Its start, as call `call_id`.
    pub(crate) fn into_command(self, call_id: u64) -> Command {
        Command::Start {
            call_id,
            request: self.request,
            trace: self.trace,
            events: self.events,
            traced: self.traced,
            taken: self.taken,
            call: self.call,
        }
    }
}

/// Whether the driver has taken a call's start. Signals, cancels and
/// resizes travel on a queue of their own that the driver serves first, so
/// one sent right after the start could overtake it and find no call; a
/// controller waits for this first (or for the session's end).
#[derive(Debug, Clone)]
pub(crate) struct StartTaken(watch::Receiver<bool>);

impl StartTaken {
    /// A new flag, and the sender the start carries.
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Waits until the start was taken, or was dropped with the session.
    pub(crate) async fn wait(&self) {
        let _ = self.0.clone().wait_for(|taken| *taken).await;
    }
}

/// Output a caller took: through which event of the call, and its credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) call_id: u64,
    pub(crate) seq: u64,
    pub(crate) cost: u64,
}

/// What callers and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Calls whose callers went away, to be cancelled.
    cancelled: Mutex<Vec<(u64, Traced)>>,
    /// Output callers took, to be acknowledged (one entry per call at
    /// most: a later report adds to it).
    taken: Mutex<Vec<Taken>>,
    /// Wakes the driver for `cancelled` and `taken`.
    pub(crate) wake: Notify,
    /// How the session ended, once it has.
    end: Mutex<Option<SessionLost>>,
    /// The latest estimate of the exec-server's clock minus ours (ns).
    clock_offset: AtomicI64,
    /// The session's counters as of the last event it delivered.
    counters: Mutex<Counters>,
    /// Cancelled to close the session.
    pub(crate) closing: CancellationToken,
    /// Cancelled once a close was sent whose answer is not waited for:
    /// the driver stops and lets the link go.
    pub(crate) let_go: CancellationToken,
    /// Whether the transport is done with the current link's sending half.
    pub(crate) drained: Arc<Drained>,
    /// What the link goes to.
    pub(crate) via: Via,
    /// The link's state, for callers that watch it.
    pub(crate) link: LinkWatch,
    /// Calls whose spans to forward now (their dispatch has ended), with
    /// their trace ids; at most [`FORWARDS`].
    forwards: Mutex<Vec<(u64, opentelemetry::trace::TraceId)>>,
    /// The most bytes of a forwarded batch the exec-server takes (its
    /// hello answer): 0 it takes none, [`NOT_KNOWN`] not known yet.
    forwarding: std::sync::atomic::AtomicU64,
    /// Whether the driver forwards spans at all: it has a span source and
    /// the exec-server takes batches. Until it does, asking it to forward
    /// would only wake it for nothing (on the command's path: the caller
    /// asks as its final event arrives).
    forwards_spans: std::sync::atomic::AtomicBool,
}

/// Calls waiting for their spans to be forwarded, at most (more stay
/// where the process keeps its spans).
pub(crate) const FORWARDS: usize = 64;

/// [`Shared`]'s forwarding before the hello answer.
const NOT_KNOWN: u64 = u64::MAX;

impl Shared {
    pub(crate) fn new(target: &Target) -> Arc<Self> {
        Arc::new(Self {
            cancelled: Mutex::new(Vec::new()),
            taken: Mutex::new(Vec::new()),
            wake: Notify::new(),
            end: Mutex::new(None),
            clock_offset: AtomicI64::new(0),
            counters: Mutex::new(Counters::default()),
            closing: CancellationToken::new(),
            let_go: CancellationToken::new(),
            drained: Arc::new(Drained::default()),
            via: target.via(),
            link: LinkWatch::new(target.url()),
            forwards: Mutex::new(Vec::new()),
            forwarding: std::sync::atomic::AtomicU64::new(NOT_KNOWN),
            forwards_spans: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Asks the driver to forward call `call_id`'s spans of `trace_id`
    /// ended so far (never waits; beyond [`FORWARDS`] they stay local).
    pub(crate) fn forward(&self, call_id: u64, trace_id: opentelemetry::trace::TraceId) {
        if !self
            .forwards_spans
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        {
            let mut f = self.forwards.lock().unwrap_or_else(PoisonError::into_inner);
            if f.len() >= FORWARDS {
                return;
            }
            f.push((call_id, trace_id));
        }
        self.wake.notify_one();
    }

    /// Takes the forwards asked for since the last look.
    pub(crate) fn take_forwards(&self) -> Vec<(u64, opentelemetry::trace::TraceId)> {
        std::mem::take(&mut *self.forwards.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records the most bytes of a forwarded batch the exec-server takes
    /// (`None`: it takes none) and whether the driver, which may have no
    /// spans to give (`has_source`), forwards any.
    pub(crate) fn set_forwarding(&self, max: Option<u32>, has_source: bool) {
        let max = max.map_or(0, u64::from);
        self.forwarding
            .store(max, std::sync::atomic::Ordering::Relaxed);
        self.forwards_spans
            .store(has_source && max > 0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The most bytes of a forwarded batch the exec-server takes:
    /// `Some(0)` it takes none, `None` not known yet.
    pub(crate) fn forwarding(&self) -> Option<u32> {
        match self.forwarding.load(std::sync::atomic::Ordering::Relaxed) {
            NOT_KNOWN => None,
            max => Some(u32::try_from(max).unwrap_or(u32::MAX)),
        }
    }

    /// Takes the calls cancelled since the last look.
    pub(crate) fn take_cancelled(&self) -> Vec<(u64, Traced)> {
        std::mem::take(
            &mut *self
                .cancelled
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Takes the output reports since the last look.
    pub(crate) fn take_taken(&self) -> Vec<Taken> {
        std::mem::take(&mut *self.taken.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reports output a caller took, and wakes the driver.
    pub(crate) fn report_taken(&self, report: Taken) {
        {
            let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            match taken.iter_mut().find(|t| t.call_id == report.call_id) {
                Some(t) => {
                    t.seq = t.seq.max(report.seq);
                    t.cost += report.cost;
                }
                None => taken.push(report),
            }
        }
        self.wake.notify_one();
    }

    pub(crate) fn set_end(&self, lost: SessionLost) {
        *self.end.lock().unwrap_or_else(PoisonError::into_inner) = Some(lost);
    }

    /// Why the session ended (a clean local close if it did not say).
    pub(crate) fn lost(&self) -> SessionLost {
        self.end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| SessionLost::new(self.via, Ok(Closed::Local)))
    }

    pub(crate) fn set_clock_offset(&self, nanos: i64) {
        self.clock_offset.store(nanos, Ordering::Relaxed);
    }

    /// The latest estimate of the exec-server's clock minus ours (ns).
    pub(crate) fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::Relaxed)
    }

    pub(crate) fn set_counters(&self, counters: Counters) {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner) = counters;
    }

    /// The session's counters as of the last event it delivered.
    pub(crate) fn counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Signals, cancels and resizes queued per session (a small bound: they
/// are taken even over the backlog).
pub(crate) const CONTROL_QUEUE: usize = 16;

/// A handle on a live session. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    commands: mpsc::Sender<Command>,
    controls: mpsc::Sender<Command>,
    /// The next call id; held while a start is queued, so that ids reach
    /// the driver in increasing order.
    next_call: Arc<AsyncMutex<u64>>,
    shared: Arc<Shared>,
    /// The session's output window (0: none).
    output_window: u32,
    /// The span it was established under (a call's `session.acquire`, or
    /// a `session.warm`): what its warms link to.
    origin: SpanContext,
}

impl SessionHandle {
    /// A handle whose next call is `next_call` (1, or 2 when the first
    /// rode in handshake message 1).
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        controls: mpsc::Sender<Command>,
        shared: Arc<Shared>,
        (output_window, next_call): (u32, u64),
        origin: SpanContext,
    ) -> Self {
        Self {
            commands,
            controls,
            next_call: Arc::new(AsyncMutex::new(next_call)),
            shared,
            output_window,
            origin,
        }
    }

    /// The span it was established under.
    pub(crate) fn origin(&self) -> &SpanContext {
        &self.origin
    }

    /// Gives up on the session (it does not answer): it closes, and the
    /// next call establishes a new one. Does not wait.
    pub(crate) fn abandon(&self) {
        self.shared.closing.cancel();
    }

    /// The session's output window (0: none).
    pub(crate) fn output_window(&self) -> u32 {
        self.output_window
    }

    /// Reports output a caller took (for the exec-server's credit).
    pub(crate) fn report_taken(&self, report: Taken) {
        self.shared.report_taken(report);
    }

    /// Queues the start of a new call built by `start` from its id, and
    /// returns the id. The caller does not wait for the driver: a start the
    /// session refuses ends the call with a failure event.
    pub(crate) async fn start(
        &self,
        start: impl FnOnce(u64) -> Command,
    ) -> Result<u64, SessionLost> {
        let mut next = self.next_call.lock().await;
        let id = *next;
        self.commands
            .send(start(id))
            .await
            .map_err(|_| self.lost())?;
        *next += 1;
        Ok(id)
    }

    /// Whether the session has ended (or is closing).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closing.is_cancelled()
            || self.commands.is_closed()
            || self
                .shared
                .end
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    /// Queues a command, waiting for room. Fails if the session ended.
    /// Signals, cancels and resizes take the control queue; everything else
    /// (stdin and its close included, which must keep their order) the
    /// command queue.
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), SessionLost> {
        let queue = match &cmd {
            Command::Control {
                control: Control::Signal(_) | Control::Cancel,
                ..
            }
            | Command::Resize { .. }
            | Command::Ping { .. } => &self.controls,
            _ => &self.commands,
        };
        queue.send(cmd).await.map_err(|_| self.lost())
    }

    /// Asks the driver to forward call `call_id`'s spans of `trace_id`
    /// ended so far (never waits).
    pub(crate) fn forward(&self, call_id: u64, trace_id: opentelemetry::trace::TraceId) {
        self.shared.forward(call_id, trace_id);
    }

    /// The most bytes of a forwarded batch the exec-server takes:
    /// `Some(0)` it takes none, `None` not known yet.
    pub(crate) fn forwarding(&self) -> Option<u32> {
        self.shared.forwarding()
    }

    /// Pings the exec-server; its round trip.
    pub(crate) async fn ping(&self) -> Result<std::time::Duration, SessionLost> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Ping { reply }).await?;
        answer.await.map_err(|_| self.lost())
    }

    /// Cancels a call whose caller went away. Never waits and is never
    /// lost: the call goes on a shared list and the driver is woken.
    pub(crate) fn cancel_on_drop(&self, call_id: u64, traced: Traced) {
        self.shared
            .cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((call_id, traced));
        self.shared.wake.notify_one();
    }

    /// The latest estimate of the exec-server's clock minus this host's,
    /// in nanoseconds (from the hello exchange, then each keepalive).
    pub(crate) fn clock_offset_nanos(&self) -> i64 {
        self.shared.clock_offset()
    }

    /// The session's counters as of the last event it delivered.
    pub(crate) fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// Why the session ended (a clean local close if it did not say).
    pub(crate) fn lost(&self) -> SessionLost {
        self.shared.lost()
    }

    /// A watch of the session's link.
    pub(crate) fn link(&self) -> watch::Receiver<crate::LinkState> {
        self.shared.link.subscribe()
    }

    /// Sends the session's authenticated close (after what is queued)
    /// without waiting for the exec-server's answer: returns once the
    /// transport is done with the link's sending half (its last frame, the
    /// close, handed to the HTTP/2 stream) or the driver stopped. The
    /// transport then still has to write it: see [`Client::close_sent`].
    ///
    /// [`Client::close_sent`]: crate::Client::close_sent
    pub(crate) async fn close_handed(&self) {
        self.shared.closing.cancel();
        tokio::select! {
            () = self.shared.drained.wait() => {}
            () = self.commands.closed() => {}
        }
    }

    /// Stops the driver without waiting for the exec-server's answer, and
    /// returns once it has let go of the link.
    pub(crate) async fn let_go(&self) {
        self.shared.let_go.cancel();
        self.commands.closed().await;
    }

    /// Closes the session cleanly and waits until its driver has stopped.
    pub(crate) async fn close(&self) {
        self.shared.closing.cancel();
        self.commands.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancellation_is_not_lost_to_a_full_queue() {
        let (commands, _commands_rx) = mpsc::channel(1);
        let (controls, _controls_rx) = mpsc::channel(1);
        let shared = Shared::new(&Target::Relay("http://relay".into()));
        let handle = SessionHandle::new(
            commands,
            controls,
            Arc::clone(&shared),
            (0, 1),
            SpanContext::empty_context(),
        );
        // Fill the command queue: nothing more fits.
        handle
            .send(Command::Stdin {
                call_id: 1,
                data: Bytes::from_static(b"x"),
            })
            .await
            .unwrap();
        assert!(handle.commands.try_reserve().is_err(), "the queue is full");
        handle.cancel_on_drop(1, Traced::now(&Context::new(), "cancel"));
        handle.cancel_on_drop(2, Traced::now(&Context::new(), "cancel"));
        // The driver is woken (a stored permit) and finds both.
        shared.wake.notified().await;
        let ids: Vec<u64> = shared
            .take_cancelled()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        assert!(shared.take_cancelled().is_empty(), "taken once");
    }

    /// Whether the driver was woken (a stored permit), taking the permit.
    async fn woken(shared: &Shared) -> bool {
        tokio::time::timeout(std::time::Duration::ZERO, shared.wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_forward_wakes_the_driver_only_when_it_forwards() {
        let shared = Shared::new(&Target::Relay("http://relay".into()));
        let trace = opentelemetry::trace::TraceId::from_bytes([7; 16]);
        // Before the hello's answer, with no spans to give, or to an
        // exec-server that takes none: asked for nothing, not woken.
        for (max, source) in [
            (None, false),
            (Some(64 * 1024), false),
            (Some(0), true),
            (None, true),
        ] {
            if max.is_some() || source {
                shared.set_forwarding(max, source);
            }
            shared.forward(1, trace);
            assert!(shared.take_forwards().is_empty(), "{max:?} {source}");
            assert!(!woken(&shared).await, "{max:?} {source}");
        }
        // Spans to give, and an exec-server that takes them.
        shared.set_forwarding(Some(64 * 1024), true);
        assert_eq!(shared.forwarding(), Some(64 * 1024));
        shared.forward(2, trace);
        assert!(woken(&shared).await);
        assert_eq!(shared.take_forwards(), vec![(2, trace)]);
    }
}
