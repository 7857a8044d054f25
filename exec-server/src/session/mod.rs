//! One client session on the exec-server: the session machine
//! (`proto::session::ServerSession`) run by the one driver
//! (`proto::driver`), and beside it the endpoint that runs the calls'
//! processes and pushes their terminal events into the machine.
//!
//! Nothing one direction does blocks the other: stdin waiting for a slow
//! process holds only further frames (never output), and output waiting for
//! a slow client holds only further events (the processes stop reading
//! their pipes), while the machine's backlog bound keeps both bounded.
//!
//! Spans made here: `relay.frame.recv` for the client's exec request and
//! control messages; `rpc.server.exec` per call, ending when its final
//! event has left; `terminal.push` from the first event taken to the last
//! one sent, with byte, chunk and queue-time totals; and `relay.frame.send`
//! for the started and final events and the first and last output chunk.
//! Frames carrying those get the call's dispatch context as their hop
//! header, so the relay's `relay.forward` joins the trace.

mod call;
mod context;
mod machine;
mod park;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use futures::Stream;
use opentelemetry::KeyValue;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanKind, Status as SpanStatus, Tracer};
use proto::driver::{Delivery, Detached, Driven, Endpoint, Wake, drive_detached};
use proto::keys::{AuthorizedKeys, Origin, PublicKey};
use proto::noise::HandshakeError;
use proto::pb::session::{TraceContext as PbTrace, terminal_event};
use proto::pb::tunnel::Frame;
use proto::session::{
    Closed, Mark, Now, Received, ServerEvent, ServerSession, SessionError, Stage as SessionStage,
};
use telemetry::frame_spans;
use telemetry::remote::Stage;
use telemetry::{carriers, otel, spans};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use self::call::{Call, LastChunk};
pub(crate) use self::context::ServerContext;
use self::machine::{Leaving, Machine, Tag};
use self::park::{Handover, Inbound};
use crate::credit::Retention;
use crate::process::{Control, Outgoing};

/// The authenticated close a session gets when its key is removed from
/// the authorized keys (or no longer admitted from where it came).
const KEY_REVOKED: &str = "the client key is no longer authorized on this exec-server";

/// What a process's record says when its client gave its session up (a
/// tampered link, a resume abandoned, the caller gone).
const ABANDONED_BY_CLIENT: &str = "abandoned by its client";

/// Terminal events queued from a session's processes before they wait.
const EVENT_QUEUE: usize = 64;

/// The outbound half of a tunnel stream.
pub(crate) use proto::relay_link::FrameSender;

/// Why a session could not be served or ended abnormally.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The exec-server is at its session limit; the client was told.
    #[error("at the limit of concurrent sessions")]
    Busy,
    /// The session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Serves one session over a tunnel stream until it ends. Stops cleanly
/// when `shutdown` is cancelled. `startup` is the session's place among the
/// unauthenticated ones (direct sessions): given back once message 1 has
/// authenticated, when a session slot is taken instead (or the client is
/// told the exec-server is busy).
/// `origin` is where the session comes from (for keys limited by
/// `from=`).
pub(crate) async fn serve<S>(
    inbound: S,
    outbound: FrameSender,
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
    startup: Option<proto::admission::Ticket>,
    origin: Origin,
) -> Result<Closed, ServeError>
where
    S: Stream<Item = Result<Frame, Status>> + Unpin + Send + 'static,
{
    let machine = ServerSession::new(Arc::clone(&ctx.acceptor), ctx.limits(), Now::system())
        .with_origin(origin);
    let mut runner = Runner::new(Arc::clone(&ctx), shutdown.child_token(), origin);
    runner.startup = startup;
    let mut driven = drive(
        &shutdown,
        machine,
        runner,
        Box::pin(inbound),
        Some(outbound),
    )
    .await;
    loop {
        let Driven {
            mut machine,
            endpoint: mut runner,
            link,
        } = driven;
        // This link asks to resume another session: it goes there, or (not
        // that session's client, or the session is gone) on as a new one.
        if let Some(token) = runner.resume.take()
            && let Some((inbound, outbound)) = link
        {
            let Some(back) = hand_over(&ctx, &token, machine, inbound, outbound).await else {
                return Ok(Closed::Local);
            };
            let mut machine = back.machine;
            let tombstone = ctx.parked.exhume(&token);
            machine.refuse_resume(tombstone.as_ref(), Now::system());
            driven = drive(&shutdown, machine, runner, back.inbound, back.outbound).await;
            continue;
        }
        // Its client came back over a new link before this end found the
        // old one broken: the old link is dropped, the new one adopts.
        if let Some(link) = runner.takeover.take() {
            let old = std::mem::replace(&mut machine, link.machine);
            let now = Now::system();
            let adopted = machine.adopt(old, now);
            runner.adopted(&machine, adopted);
            driven = drive(&shutdown, machine, runner, link.inbound, link.outbound).await;
            continue;
        }
        if machine.is_detached()
            && let Some(link) = park(&ctx, &shutdown, &mut machine, &mut runner).await
        {
            let old = std::mem::replace(&mut machine, link.machine);
            let now = Now::system();
            let adopted = machine.adopt(old, now);
            runner.adopted(&machine, adopted);
            driven = drive(&shutdown, machine, runner, link.inbound, link.outbound).await;
            continue;
        }
        return match runner.end.take() {
            Some(Err(SessionError::Handshake(HandshakeError::Busy))) if runner.refused_busy => {
                Err(ServeError::Busy)
            }
            Some(Ok(closed)) => Ok(closed),
            Some(Err(e)) => Err(e.into()),
            None => Ok(Closed::Local),
        };
    }
}

/// Drives a session over a link until it is over, detached, or its link
/// asks for another session.
async fn drive(
    shutdown: &CancellationToken,
    machine: Machine,
    runner: Runner,
    inbound: Inbound,
    outbound: Option<FrameSender>,
) -> Driven<Machine, Runner, Inbound> {
    // A link whose sending half is gone: the driver finds it closed.
    let outbound = outbound.unwrap_or_else(|| mpsc::channel(1).0);
    let stop = shutdown.clone();
    proto::driver::drive_link(machine, runner, inbound, outbound, async move {
        stop.cancelled().await;
    })
    .await
}

/// Hands a link that asks to resume `token` to that session, if parked.
/// `None`: the session took it over; otherwise the link comes back.
async fn hand_over(
    ctx: &ServerContext,
    token: &[u8],
    machine: Machine,
    inbound: Inbound,
    outbound: Option<FrameSender>,
) -> Option<Handover> {
    let (refused, back) = tokio::sync::oneshot::channel();
    let link = Handover {
        machine,
        inbound,
        outbound,
        refused,
    };
    let Some(session) = ctx.parked.find(token) else {
        return Some(link);
    };
    if let Err(e) = session.send(Box::new(link)).await {
        return Some(*e.0);
    }
    back.await.ok()
}

/// Keeps a session whose link broke, its processes running, until its
/// client resumes it over a new link (returned), its grace runs out, or the
/// exec-server shuts down (the session is then over, `runner.end` says
/// why).
async fn park(
    ctx: &ServerContext,
    shutdown: &CancellationToken,
    machine: &mut Machine,
    runner: &mut Runner,
) -> Option<Handover> {
    let grace = ctx.config.resume_grace;
    runner.register(machine);
    if runner.token.is_none() || runner.takeovers.is_none() {
        runner.expire();
        return None;
    }
    // What is held now (sent and unacknowledged, queued, or reserved for a
    // read) counts against the bounds at once; what the processes read
    // from now on, as they read it.
    let held = machine.retained().saturating_add(
        runner
            .calls
            .iter()
            .map(|(&id, call)| {
                let window = u64::from(machine.output_window());
                let free = call.credit.available().unwrap_or(window);
                window
                    .saturating_sub(free)
                    .saturating_sub(machine.retained_by(id))
            })
            .sum(),
    );
    runner.retention.detach(held);
    tracing::info!(
        processes = runner.calls.len(),
        grace_s = grace.as_secs(),
        held_bytes = held,
        "a session's link broke: its commands keep running while its client comes back"
    );
    // The driver runs it without a link: its grace (the machine's timer),
    // its processes' events, and the links whose client asks to resume it
    // (the runner takes the one that may, and refuses the others).
    match drive_detached(machine, runner, shutdown.cancelled()).await {
        // Still registered: the resumed session may be taken back again.
        Detached::HandedOver => runner.takeover.take(),
        // Its grace passed: the runner has ended it (`runner.end`).
        Detached::Over => None,
        Detached::Shutdown => {
            runner.expire();
            None
        }
    }
}

/// The next link asking to take the session over, or never without a
/// registration.
async fn takeover(links: Option<&mut mpsc::Receiver<Box<Handover>>>) -> Option<Box<Handover>> {
    match links {
        Some(links) => links.recv().await,
        None => std::future::pending().await,
    }
}

/// The exec-server's endpoint: runs the calls' processes.
struct Runner {
    ctx: Arc<ServerContext>,
    tracer: BoxedTracer,
    calls: HashMap<u64, Call>,
    /// Events from the session's processes.
    events_tx: mpsc::Sender<Outgoing>,
    events_rx: mpsc::Receiver<Outgoing>,
    /// Cancelled when the session ends: every process is killed.
    session_cancel: CancellationToken,
    /// Woken when a process has taken stdin.
    stdin_wake: Arc<Notify>,
    /// Woken when a process waits for room in the exec-server's budget
    /// for unacknowledged output.
    ack_wake: Arc<Notify>,
    client: Option<PublicKey>,
    /// Where the session comes from.
    origin: Origin,
    /// The authorized keys in force: the session ends if its key goes.
    keys: watch::Receiver<Arc<AuthorizedKeys>>,
    /// This session's local id (for process records).
    session_id: String,
    /// Per call with output in flight, the stream offset its latest chunk
    /// ends at (at most one entry per call).
    unsent_chunks: Vec<(u64, u64)>,
    /// `output.last` spans whose chunk had not left when the call ended.
    late: Vec<(u64, BoxedSpan)>,
    /// How the session ended.
    end: Option<Result<Closed, SessionError>>,
    /// The place among unauthenticated sessions, until authenticated.
    startup: Option<proto::admission::Ticket>,
    /// The session slot, once authenticated.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Whether the client was refused for want of a slot.
    refused_busy: bool,
    /// The session this link's client asks to resume (the driver hands
    /// the link over).
    resume: Option<bytes::Bytes>,
    /// The bounds on what its processes may still write while its link is
    /// down.
    retention: Arc<Retention>,
    /// The session's resume token, once registered (see
    /// [`Runner::register`]).
    token: Option<Vec<u8>>,
    /// New links whose client asks to resume this session.
    takeovers: Option<mpsc::Receiver<Box<Handover>>>,
    /// A new link that takes the session over from its current one.
    takeover: Option<Handover>,
    /// The output credit of finished calls whose output the client has
    /// not all acknowledged: charged to the exec-server's budget until it
    /// has (or the session no longer keeps the call).
    finished: HashMap<u64, crate::credit::Credit>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Whatever it held against the exec-server's bound goes back, and
        // nobody can resume it any more.
        self.retention.attach();
        if let Some(token) = &self.token {
            self.ctx.parked.unpark(token);
        }
    }
}

impl Runner {
    fn new(ctx: Arc<ServerContext>, session_cancel: CancellationToken, origin: Origin) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let keys = ctx.config.keys.subscribe();
        Self {
            origin,
            keys,
            tracer: opentelemetry::global::tracer("exec-server"),
            calls: HashMap::new(),
            events_tx,
            events_rx,
            session_cancel,
            stdin_wake: Arc::new(Notify::new()),
            ack_wake: Arc::new(Notify::new()),
            client: None,
            session_id: metadata::record::new_id(),
            unsent_chunks: Vec::new(),
            late: Vec::new(),
            end: None,
            startup: None,
            slot: None,
            refused_busy: false,
            resume: None,
            retention: Retention::new(ctx.config.resume_session_buffer, Arc::clone(&ctx.retained)),
            token: None,
            takeovers: None,
            takeover: None,
            finished: HashMap::new(),
            ctx,
        }
    }

    /// Registers the session under its resume token once it has one, so
    /// that a new link whose client asks to resume it finds it, whether its
    /// current link is known to be broken yet or not.
    fn register(&mut self, machine: &Machine) {
        if self.token.is_some() {
            return;
        }
        let Some(token) = machine.resume_token().map(<[u8]>::to_vec) else {
            return;
        };
        // Too many registered: this session cannot be resumed.
        self.takeovers = self.ctx.parked.park(&token);
        self.token = Some(token);
    }

    /// Records `relay.frame.recv` for a traced client message; returns its
    /// stage.
    fn trace_recv(
        &self,
        trace: Option<&PbTrace>,
        received: &Received,
        what: &'static str,
    ) -> Stage {
        let parent = trace
            .map(|t| otel::context_from(&carriers::envelope::extract(t)))
            .unwrap_or_default();
        frame_spans::record_recv(
            &self.tracer,
            &parent,
            received.arrived,
            what,
            &[frame_spans::hop_context(&received.hop)],
            vec![],
        )
    }

    /// Records `relay.frame.recv` for a control message of a call, into
    /// the call's summary while it runs.
    fn trace_control(
        &mut self,
        call_id: u64,
        trace: Option<&PbTrace>,
        received: &Received,
        what: &'static str,
    ) {
        let stage = self.trace_recv(trace, received, what);
        if let Some(call) = self.calls.get_mut(&call_id) {
            call.stages.push(stage);
        }
    }

    /// An exec request the machine refused: its `rpc.server.exec` says why.
    fn refused(&self, call_id: u64, trace: Option<&PbTrace>, message: &'static str) {
        let parent = trace
            .map(|t| otel::context_from(&carriers::envelope::extract(t)))
            .unwrap_or_default();
        let mut span = self
            .tracer
            .span_builder(spans::RPC_SERVER_EXEC)
            .with_kind(SpanKind::Server)
            .with_attributes(vec![KeyValue::new(
                "rex.call_id",
                i64::try_from(call_id).unwrap_or(i64::MAX),
            )])
            .start_with_context(&self.tracer, &parent);
        span.set_status(SpanStatus::error(message));
        span.end();
    }

    /// Pushes one process event into the machine, with its spans.
    fn push(&mut self, machine: &mut Machine, out: Outgoing, now: Now) {
        let call_id = out.call_id;
        // Taken out while its event is pushed; put back unless it was the
        // final one.
        let Some(mut call) = self.calls.remove(&call_id) else {
            return;
        };
        let what = call.push.count(&out, &self.tracer, &call.exec_cx, now.wall);
        call.record_event(&self.ctx, &out);
        let is_output = matches!(
            out.kind,
            terminal_event::Kind::Stdout(_) | terminal_event::Kind::Stderr(_)
        );
        let mut tag: Tag = Vec::new();
        if let Some(w) = what {
            let (span, stage) =
                frame_spans::send_stage(&self.tracer, &call.push.cx, w, now.wall).into_parts();
            call.sending.push(stage);
            tag.push(Leaving {
                span,
                call: Some(call_id),
            });
        }
        let error = match &out.kind {
            terminal_event::Kind::Error(e) => Some(e.message.clone()),
            _ => None,
        };
        let trace = if error.is_some() {
            call.error_trace.clone()
        } else {
            call.trace.clone()
        };
        let hop = call.hop.clone();
        if !out.last {
            let mark = (!tag.is_empty()).then(|| Mark::new(tag, hop));
            if let Ok(pushed) = machine.push(call_id, out.kind, Some(&trace), mark, now)
                && is_output
            {
                // Every chunk may be the last one: note when it leaves.
                call.push.last_chunk = Some(LastChunk {
                    taken: now.wall,
                    mark: pushed.offset,
                    sent: None,
                });
                self.unsent_chunks.retain(|(id, _)| *id != call_id);
                self.unsent_chunks.push((call_id, pushed.offset));
            }
            self.calls.insert(call_id, call);
            return;
        }
        // The final event: the last chunk's span is made now that it is
        // known to be the last, and the call's spans end once the final
        // event's frame has left.
        self.unsent_chunks.retain(|(id, _)| *id != call_id);
        call.credit.finish();
        self.finished.insert(call_id, call.credit.clone());
        let mut stages = std::mem::take(&mut call.stages);
        stages.append(out.stages);
        if let Some(chunk) = call.push.last_chunk.take() {
            let mut last =
                frame_spans::send_stage(&self.tracer, &call.push.cx, "output.last", chunk.taken);
            last.set_int("rex.output.chunks", call.push.output_chunks());
            match chunk.sent {
                Some(at) => stages.push(last.end_at(at)),
                None => {
                    let (span, stage) = last.into_parts();
                    stages.push(stage);
                    self.late.push((chunk.mark, span));
                }
            }
        }
        // Messages still leaving end, in the summary, with the final event
        // (which leaves after them).
        for stage in call.sending.drain(..) {
            stages.push(stage);
        }
        if let Some(push_span) = call.push.finish() {
            let (span, stage) = push_span.into_parts();
            stages.push(stage);
            tag.push(Leaving { span, call: None });
        }
        if let Some(message) = error {
            call.span.fail(message);
        }
        tracing::debug!(program = %call.program, "call finished");
        let (span, stage) = call.span.into_parts();
        stages.push(stage);
        tag.push(Leaving { span, call: None });
        // The summary goes only with a sampled trace: an unsampled one is
        // recorded nowhere.
        let mark = Some(Mark::new(tag, hop));
        let _ = if call.sampled {
            let timings =
                telemetry::timings_wire::encode(&stages, now.wall, telemetry::host::name());
            machine.push_final(call_id, out.kind, timings, Some(&trace), mark, now)
        } else {
            machine.push(call_id, out.kind, Some(&trace), mark, now)
        };
        self.forget_finished(machine);
    }

    /// Notes when each call's latest output chunk left, and ends the spans
    /// that waited for their bytes to leave.
    fn sent(&mut self, sent: u64, now: SystemTime) {
        if !self.unsent_chunks.is_empty() {
            let calls = &mut self.calls;
            self.unsent_chunks.retain(|(id, mark)| {
                if *mark > sent {
                    return true;
                }
                if let Some(chunk) = calls.get_mut(id).and_then(|c| c.push.last_chunk.as_mut())
                    && chunk.mark == *mark
                {
                    chunk.sent = Some(now);
                }
                false
            });
        }
        self.late.retain_mut(|(mark, span)| {
            if *mark > sent {
                return true;
            }
            span.end_with_timestamp(now);
            false
        });
    }

    /// A parked session is over (its grace ran out, or the exec-server is
    /// stopping): its processes end.
    fn expire(&mut self) {
        let end = Err(SessionError::Timeout(SessionStage::Resume));
        self.ended(&end);
        self.end = Some(end);
    }

    /// The session's client took it back over a new link: what was in
    /// flight on the old one is gone with it, and calls the client no
    /// longer knows end.
    fn adopted(&mut self, machine: &Machine, adopted: proto::session::Adopted) {
        // Its client acknowledges the output as it takes it again.
        self.retention.attach();
        self.unsent_chunks.clear();
        let now = SystemTime::now();
        for (_, mut span) in self.late.drain(..) {
            span.end_with_timestamp(now);
        }
        self.forget_finished(machine);
        let kept = machine.call_ids();
        let gone: Vec<u64> = self
            .calls
            .keys()
            .filter(|id| !kept.contains(id))
            .copied()
            .collect();
        // A client that gave the session up (it could not go on with it)
        // wants every process ended now, not at the grace's end.
        let why = if adopted.abandoned {
            ABANDONED_BY_CLIENT
        } else {
            "its client no longer knew it"
        };
        for id in gone {
            if let Some(call) = self.calls.remove(&id) {
                call.cancel.cancel();
                call.abandon(&self.ctx, why);
            }
        }
        if adopted.abandoned {
            tracing::info!(
                processes = adopted.dropped,
                "a session's client gave it up: its commands end"
            );
            return;
        }
        tracing::info!(
            replayed_events = adopted.events,
            replayed_bytes = adopted.bytes,
            processes = self.calls.len(),
            "a session was resumed over a new link"
        );
    }

    /// The session is over: every process ends, and the calls' spans and
    /// records say so.
    fn ended(&mut self, end: &Result<Closed, SessionError>) {
        // Refusals anyone can cause are logged one line per kind per
        // interval (the rest are counted in the summary line).
        let log = &self.ctx.refusals;
        let now = std::time::Instant::now();
        match end {
            // Our own refusal at the session limit (counted, not a fault).
            Err(SessionError::Handshake(HandshakeError::Busy)) if self.refused_busy => {
                tracing::debug!("refused an authenticated client: at the session limit");
            }
            Err(SessionError::Handshake(HandshakeError::Unauthorized { client })) => {
                if let Some(held) = log.admit("unauthorized key", now) {
                    tracing::warn!(client = %client.short(), held_back = held, "refused a client key that is not authorized");
                }
            }
            Err(SessionError::Handshake(e)) => {
                if let Some(held) = log.admit("bad handshake", now) {
                    tracing::warn!(error = %e, held_back = held, "handshake failed");
                }
            }
            Err(SessionError::Transport(e)) => {
                if let Some(held) = log.admit("corrupt session message", now) {
                    tracing::warn!(error = %e, held_back = held, "a session message failed; closed the session");
                }
            }
            Err(SessionError::Protocol(v)) => {
                if let Some(held) = log.admit("protocol violation", now) {
                    tracing::warn!(violation = %v, held_back = held, "the client broke the session protocol; closed the session");
                }
            }
            Err(e) => tracing::debug!(error = %e, "session ended"),
            Ok(_) => tracing::debug!("session closed"),
        }
        self.session_cancel.cancel();
        self.retention.attach();
        if let Some(token) = &self.token {
            self.ctx.parked.unpark(token);
        }
        let why = match end {
            Err(SessionError::Timeout(SessionStage::Resume)) => {
                "its session was not resumed in time"
            }
            _ => "session ended",
        };
        for (_, call) in self.calls.drain() {
            call.abandon(&self.ctx, why);
        }
        for (_, mut span) in self.late.drain(..) {
            span.set_status(SpanStatus::error("session ended"));
            span.end();
        }
    }

    /// Lets go of the credit of finished calls the session no longer
    /// keeps (acknowledged, trimmed, or dropped by a resume).
    fn forget_finished(&mut self, machine: &Machine) {
        if self.finished.is_empty() {
            return;
        }
        let kept = machine.call_ids();
        self.finished.retain(|id, _| kept.contains(id));
    }

    /// Tells the machine how much stdin each process has taken since last
    /// time (so the client may send more).
    fn report_stdin(&mut self, machine: &mut Machine, now: Now) {
        for (call_id, call) in &mut self.calls {
            let Some(stdin) = &call.stdin else { continue };
            let taken = stdin.taken();
            if taken > call.stdin_reported {
                // A call that just ended takes no acknowledgement.
                let _ = machine.stdin_taken(*call_id, taken - call.stdin_reported, now);
                call.stdin_reported = taken;
            }
        }
    }
}

/// What the runner feeds the machine.
enum Input {
    /// A process's terminal event.
    Event(Outgoing),
    /// Some process has taken stdin.
    StdinTaken,
    /// Some process waits for room in the exec-server's budget for
    /// unacknowledged output: its client is asked to acknowledge.
    AckWanted,
    /// The authorized keys changed.
    KeysChanged,
    /// A new link whose client asks to resume this session (boxed: its
    /// machine is large, and this is rare).
    Takeover(Box<Handover>),
}

impl Endpoint<Machine> for Runner {
    type Input = Input;

    fn wait(
        &mut self,
        accepting: bool,
        _blocked: bool,
    ) -> impl std::future::Future<Output = Wake<Input>> + Send {
        let stdin = Arc::clone(&self.stdin_wake);
        let acks = Arc::clone(&self.ack_wake);
        let events = &mut self.events_rx;
        let keys = &mut self.keys;
        let takeovers = self.takeovers.as_mut();
        async move {
            tokio::select! {
                biased;
                Some(link) = takeover(takeovers) => Wake::Input(Input::Takeover(link)),
                // Acknowledgements are taken even over the backlog: one per
                // call at most, and a client may be waiting for them.
                () = stdin.notified() => Wake::Input(Input::StdinTaken),
                // As small, and what frees the exec-server's budget.
                () = acks.notified() => Wake::Input(Input::AckWanted),
                Ok(()) = keys.changed() => Wake::Input(Input::KeysChanged),
                out = events.recv(), if accepting => match out {
                    Some(out) => Wake::Input(Input::Event(out)),
                    // The runner holds a sender: never reached.
                    None => Wake::Closed,
                },
            }
        }
    }

    fn apply(&mut self, machine: &mut Machine, input: Input, now: Now) {
        match input {
            Input::Event(out) => self.push(machine, out, now),
            Input::StdinTaken => self.report_stdin(machine, now),
            Input::AckWanted => {
                for (call_id, call) in &self.calls {
                    if call.credit.take_asked() {
                        machine.want_ack(*call_id, now);
                    }
                }
            }
            // Its client came back over a new link: while parked, the new
            // link takes the session over; while this one still looked
            // alive, this one is given up for it.
            Input::Takeover(link) => {
                if self.takeover.is_none() && link.machine.may_resume(machine) {
                    if !machine.is_detached() {
                        tracing::info!(
                            "a session's client came back over a new link before its old one \
                             was found broken"
                        );
                        machine.supersede(now);
                    }
                    self.takeover = Some(*link);
                } else {
                    // Not this session's client (or a resume seen before).
                    link.refuse();
                }
            }
            Input::KeysChanged => {
                let keys = self.keys.borrow_and_update().clone();
                if let Some(client) = self.client
                    && !keys.admits(&client, self.origin)
                {
                    tracing::info!(client = %client.short(), "closing a session: its key is no longer authorized");
                    machine.close(KEY_REVOKED, now);
                }
            }
        }
    }

    fn deliver(
        &mut self,
        machine: &mut Machine,
        event: ServerEvent,
        now: Now,
    ) -> Delivery<ServerEvent> {
        self.register(machine);
        match event {
            ServerEvent::Authenticated { client } => {
                if let Some(ticket) = self.startup.take() {
                    ticket.authenticated();
                }
                match Arc::clone(&self.ctx.sessions).try_acquire_owned() {
                    Ok(slot) => {
                        tracing::debug!(client = %client.short(), "session established");
                        self.slot = Some(slot);
                        self.client = Some(client);
                    }
                    Err(_) => {
                        self.refused_busy = true;
                        machine.refuse_busy(now);
                    }
                }
            }
            ServerEvent::Exec {
                call_id,
                request,
                trace,
                received,
            } => {
                let received = self.trace_recv(trace.as_ref(), &received, "exec");
                // The call's spans may come home through the session: its
                // client may forward one call's worth more.
                if let (Some(forwarder), Some(client)) =
                    (&self.ctx.config.span_forwarding, self.client)
                {
                    forwarder.called(&client.to_string(), std::time::Instant::now());
                }
                // The call's own window: the client may have asked for a
                // wider one than the session's (from a path it measured).
                let window = match machine.output_window_of(call_id) {
                    0 => machine.output_window(),
                    w => w,
                };
                let call = Call::start(
                    &self.ctx,
                    &self.tracer,
                    call::Starting {
                        call_id,
                        client: self.client,
                        session_id: &self.session_id,
                        request,
                        trace,
                        received,
                    },
                    self.events_tx.clone(),
                    &self.session_cancel,
                    &self.stdin_wake,
                    call::OutputCredit {
                        window,
                        retention: &self.retention,
                        acks_when_asked: machine.acks_when_asked(),
                        ack_wake: &self.ack_wake,
                    },
                );
                self.calls.insert(call_id, call);
            }
            ServerEvent::Refused {
                call_id,
                message,
                trace,
                received,
                ..
            } => {
                let _ = self.trace_recv(trace.as_ref(), &received, "exec");
                self.refused(call_id, trace.as_ref(), message);
            }
            // Never more than the stdin window is in flight, so it can
            // always be taken.
            ServerEvent::Stdin { call_id, data } => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.push.stdin_bytes = call
                        .push
                        .stdin_bytes
                        .saturating_add(i64::try_from(data.len()).unwrap_or(i64::MAX));
                    if let Some(stdin) = &call.stdin {
                        stdin.push(data);
                    }
                }
            }
            // Counted, not traced: a window dragged about makes many.
            ServerEvent::Resize {
                call_id,
                rows,
                cols,
            } => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    if let Some(n) = call.push.resizes.as_mut() {
                        *n += 1;
                    }
                    if let Some(size) = &call.resize {
                        size.send_replace((rows, cols));
                    }
                }
            }
            ServerEvent::StdinClose {
                call_id,
                trace,
                received,
            } => {
                self.trace_control(call_id, trace.as_ref(), &received, "stdin_close");
                // Earlier stdin is already queued: the close follows it.
                if let Some(stdin) = self.calls.get(&call_id).and_then(|c| c.stdin.as_ref()) {
                    stdin.close();
                }
            }
            ServerEvent::Signal {
                call_id,
                signal,
                trace,
                received,
            } => {
                self.trace_control(call_id, trace.as_ref(), &received, "signal");
                if let Some(call) = self.calls.get(&call_id) {
                    let _ = call.control.try_send(Control::Signal(signal));
                }
            }
            ServerEvent::OutputAcked {
                call_id,
                freed,
                window,
            } => {
                if let Some(call) = self.calls.get(&call_id) {
                    call.credit.release(freed);
                    if window > 0 {
                        call.credit.resize(window);
                    }
                } else if let Some(credit) = self.finished.get(&call_id) {
                    credit.release(freed);
                    self.forget_finished(machine);
                }
            }
            ServerEvent::Cancel {
                call_id,
                trace,
                received,
            } => {
                self.trace_control(call_id, trace.as_ref(), &received, "cancel");
                if let Some(call) = self.calls.get(&call_id) {
                    call.cancel.cancel();
                }
            }
            // The driver stops; the session is parked.
            ServerEvent::Detached { error } => {
                tracing::debug!(error = %error, "the session's link broke");
            }
            ServerEvent::Resume { token } => self.resume = Some(token),
            // The client's own spans: exported for its key, within the
            // forwarder's rates (never waited for).
            ServerEvent::Spans(batch) => {
                if let (Some(forwarder), Some(client)) =
                    (&self.ctx.config.span_forwarding, self.client)
                {
                    forwarder.offer(
                        &client.to_string(),
                        batch.traces.to_vec(),
                        batch.spans,
                        batch.dropped,
                        std::time::Instant::now(),
                    );
                }
            }
            // Its grace passed (the machine's timer, while parked): what a
            // late client is told is kept, and its commands end.
            ServerEvent::Expired { tombstone } => {
                if let Some(token) = &self.token {
                    self.ctx.parked.bury(token, tombstone);
                }
                tracing::info!(
                    processes = self.calls.len(),
                    "a session was not resumed within its grace: its commands end"
                );
                self.expire();
            }
            ServerEvent::Ended(end) => {
                self.ended(&end);
                self.end = Some(end);
            }
        }
        Delivery::Taken
    }

    fn hand_over(&self) -> bool {
        self.resume.is_some() || self.takeover.is_some()
    }

    fn transmitted(&mut self, done: Vec<Tag>, sent: u64, now: Now) {
        for leaving in done.into_iter().flatten() {
            let Leaving { mut span, call } = leaving;
            span.end_with_timestamp(now.wall);
            if let Some(call) = call.and_then(|id| self.calls.get_mut(&id)) {
                call.left(span.span_context().span_id(), now.wall);
            }
        }
        self.sent(sent, now.wall);
    }
}
