//! The client's endpoint beside the session driver: it applies callers'
//! commands to the session machine and routes each call's events to its
//! caller, making the client's framing spans on the way.
//!
//! Stage spans made here: `rpc.client.queue` (from the enqueue time each
//! traced command carries), `relay.frame.send` for the exec request and
//! control messages (ended when their frame has left), and
//! `relay.frame.recv` for the started and final events and the first and
//! last output chunk, all children of the call's `tool.dispatch`. Other
//! output chunks are only counted; stdin and resizes are not traced (the
//! call counts them on `terminal.delivery`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanContext, SpanId, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::driver::{Delivery, Endpoint, Wake};
use proto::limits::MAX_HOP_TIMINGS;
use proto::noise::EarlyTicket;
use proto::pb::session::{CallTimings, TraceContext as PbTrace, exited, terminal_event};
use proto::pb::tunnel::{HopDirection, HopTiming};
use proto::session::peer_clock::{Offset, Sample as ClockSample, Source};
use proto::session::{
    CallError, CallEvent, ClientEvent, ClientSession, Closed, FirstCall, Mark, Now, Ready,
    Received, SessionError,
};
use telemetry::forward::SpanSource;
use telemetry::frame_spans;
use telemetry::placement::clock_attributes;
use telemetry::w3c::Extracted;
use telemetry::{carriers, otel, spans};
use tokio::sync::{mpsc, oneshot};

use crate::error::SessionLost;
use crate::exec::{Event, ExecFailure, ExitStatus, Gap};
use crate::session::{CallShared, Command, Control, NewCall, Routed, Shared, Traced};

/// The id of a call that rides in handshake message 1.
pub(crate) const FIRST_CALL: u64 = 1;

/// What a marked message hands back once it has left: its
/// `relay.frame.send` span, and for an exec request its call (whose
/// request has then left).
pub(crate) struct Tag {
    span: BoxedSpan,
    exec: Option<u64>,
}

/// The session machine as the client runs it.
pub(crate) type Machine = ClientSession<Tag>;

/// The session is ready: the hello answer, and when the handshake and the
/// hello finished (for the set-up spans).
#[derive(Debug)]
pub(crate) struct Established {
    pub(crate) ready: Ready,
    pub(crate) secured_at: SystemTime,
    pub(crate) ready_at: SystemTime,
}

/// What the driver's endpoint waits for besides frames.
#[allow(
    clippy::large_enum_variant,
    reason = "moved once, from the command queue into the machine; boxing would allocate per command"
)]
pub(crate) enum Input {
    Command(Command),
    /// Callers left calls, or took output: see the shared state.
    Woken,
}

/// A call the router routes events to.
struct Route {
    sink: mpsc::Sender<Routed>,
    /// What the call's caller shares with the driver (its fate, its
    /// resumes).
    call: Arc<CallShared>,
    /// The call's `tool.dispatch` context.
    parent: Context,
    /// When its exec request was taken for sending.
    started: SystemTime,
    /// When the frame completing its exec request left.
    left: Option<SystemTime>,
    output_chunks: u64,
    /// The latest output chunk's arrival, decode and hop, recorded once the
    /// final event proves it the last.
    last_chunk: Option<(SystemTime, SystemTime, Option<SpanContext>)>,
    /// The relay's forwards of this call's frames, as the relay told them.
    relay: RelayTimings,
}

impl Route {
    /// The route of a call whose request is taken for sending at `now`.
    fn new(sink: mpsc::Sender<Routed>, call: Arc<CallShared>, parent: Context, now: Now) -> Self {
        Self {
            sink,
            call,
            parent,
            started: now.wall,
            left: None,
            output_chunks: 0,
            last_chunk: None,
            relay: RelayTimings::default(),
        }
    }
}

/// A call's relay forwards, bounded: for each relay of the session's path
/// (the client's, and the one a fleet forwarded the session to), the first
/// toward the exec-server (the exec request's) and the latest toward the
/// client (at the end, the final event's); and a few others.
#[derive(Debug, Default)]
struct RelayTimings {
    ends: [RelayEnds; 2],
    others: Vec<HopTiming>,
}

/// One relay's first forward toward the exec-server and latest toward the
/// client.
#[derive(Debug, Default)]
struct RelayEnds {
    out: Option<HopTiming>,
    back: Option<HopTiming>,
}

impl RelayTimings {
    fn add(&mut self, t: HopTiming) {
        // A third relay is none of a session's path: not kept.
        let Some(ends) = usize::try_from(t.path_hop)
            .ok()
            .and_then(|i| self.ends.get_mut(i))
        else {
            return;
        };
        let other = if t.direction == HopDirection::ToServer as i32 {
            match &ends.out {
                Some(first) if first.arrived_unix_nanos <= t.arrived_unix_nanos => Some(t),
                _ => ends.out.replace(t),
            }
        } else {
            match &ends.back {
                Some(latest) if latest.arrived_unix_nanos > t.arrived_unix_nanos => Some(t),
                _ => ends.back.replace(t),
            }
        };
        if let Some(o) = other
            && self.others.len() < MAX_HOP_TIMINGS
        {
            self.others.push(o);
        }
    }

    /// Whether one of the forwards kept is span `span_id`.
    fn holds(&self, span_id: u64) -> bool {
        span_id != 0
            && self
                .ends
                .iter()
                .flat_map(|e| e.out.iter().chain(e.back.iter()))
                .chain(self.others.iter())
                .any(|t| t.span_id == span_id)
    }

    fn all(&self) -> Vec<HopTiming> {
        self.ends
            .iter()
            .flat_map(|e| e.out.iter().chain(e.back.iter()))
            .chain(self.others.iter())
            .cloned()
            .collect()
    }
}

/// The client's endpoint.
pub(crate) struct Router {
    commands: mpsc::Receiver<Command>,
    controls: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    calls: HashMap<u64, Route>,
    /// The call whose caller has no room for its next event.
    blocked: Option<u64>,
    /// The latest call whose start was taken (ids increase in queue order,
    /// so every call up to it has been).
    last_start: u64,
    /// Calls dropped by their callers before their start was taken (at
    /// most one entry per call, removed when its start comes).
    unstarted_cancels: HashSet<u64>,
    tracer: BoxedTracer,
    ready: Option<oneshot::Sender<Result<Established, SessionError>>>,
    secured_at: Option<SystemTime>,
    /// Pings asked for, by nonce, and who waits for each.
    pings: Vec<(u64, oneshot::Sender<std::time::Duration>)>,
    /// Whether calls hear of a broken link and its resume.
    resume_events: bool,
    /// The link broke and the session is coming back.
    pub(crate) outage: Option<Outage>,
    /// Whether the session is up: not between a broken link and the
    /// answer to its resume. Until then callers' controls, cancellations
    /// and acknowledgements wait (none may precede the resume on a new
    /// link, and none is lost).
    online: bool,
    /// Times the session came back over a new link.
    pub(crate) resumes: u64,
    /// How the session ended, held while it is given up at the
    /// exec-server (its calls may still run there): the calls hear of it
    /// afterwards ([`Router::end_held`]).
    held_end: Option<(Result<Closed, SessionError>, Now)>,
    /// Where the calls' own spans are taken from to forward them to an
    /// exec-server that takes them.
    span_source: Option<Arc<dyn SpanSource>>,
    /// The calls whose spans were forwarded, with their traces, latest
    /// last (at most [`crate::session::FORWARDS`]): at the close, what
    /// ended since in their traces goes too (a caller's span around the
    /// call, say).
    forwarded: std::collections::VecDeque<(u64, TraceId)>,
}

/// Pings waiting for their pongs at most.
const PINGS: usize = 8;

/// A broken link, from when the session noticed until it came back, and
/// how it came back (for each waiting call's `session.reattach`).
#[derive(Debug)]
pub(crate) struct Outage {
    /// When the loss was noticed.
    pub(crate) lost_at: SystemTime,
    /// Each phase (wait, connect, a new link that broke), in order: span
    /// name, start, end, and whether it worked. Each starts where the one
    /// before ended (the first at the loss), so that they tile the outage.
    pub(crate) phases: Vec<(&'static str, SystemTime, SystemTime, bool)>,
    /// Where the next phase starts.
    pub(crate) cursor: SystemTime,
    /// The attempts made.
    pub(crate) attempts: u32,
    /// The URL the session came back through.
    pub(crate) via: Option<String>,
    /// The URL each `relay.connect` phase dialled, in order (at most
    /// [`PHASES`]).
    pub(crate) dialled: Vec<String>,
    /// When the new link was opened (its handshake starts).
    pub(crate) opened_at: Option<SystemTime>,
}

/// Phases kept per outage at most: beyond, the last one stretches over
/// the rest (the attempts are still counted).
const PHASES: usize = 64;

impl Outage {
    fn new(lost_at: SystemTime) -> Self {
        Self {
            lost_at,
            phases: Vec::new(),
            cursor: lost_at,
            attempts: 0,
            via: None,
            dialled: Vec::new(),
            opened_at: None,
        }
    }

    /// A `relay.connect` phase dialled `url`.
    pub(crate) fn dialled(&mut self, url: &str) {
        if self.dialled.len() < PHASES {
            self.dialled.push(url.to_owned());
        }
    }

    /// A phase named `name` ran from where the last one ended to `end`
    /// (never before it); returns where the next one starts.
    pub(crate) fn note_at(&mut self, name: &'static str, end: SystemTime, ok: bool) -> SystemTime {
        let start = self.cursor;
        let end = end.max(start);
        if self.phases.len() < PHASES {
            self.phases.push((name, start, end, ok));
        } else if let Some(last) = self.phases.last_mut() {
            last.2 = end;
            last.3 &= ok;
        }
        self.cursor = end;
        end
    }

    /// [`note_at`](Self::note_at) now.
    pub(crate) fn note(&mut self, name: &'static str, ok: bool) -> SystemTime {
        self.note_at(name, SystemTime::now(), ok)
    }
}

impl Router {
    /// The link's state, as callers watch it.
    pub(crate) fn link(&self) -> &crate::link_state::LinkWatch {
        &self.shared.link
    }

    /// Where the transport says it has taken a link's last frame.
    pub(crate) fn drained(&self) -> Arc<crate::outbound::Drained> {
        Arc::clone(&self.shared.drained)
    }

    pub(crate) fn new(
        (commands, controls): (mpsc::Receiver<Command>, mpsc::Receiver<Command>),
        shared: Arc<Shared>,
        ready: oneshot::Sender<Result<Established, SessionError>>,
    ) -> Self {
        Self {
            commands,
            controls,
            shared,
            calls: HashMap::new(),
            blocked: None,
            last_start: 0,
            unstarted_cancels: HashSet::new(),
            tracer: opentelemetry::global::tracer("core-client"),
            ready: Some(ready),
            secured_at: None,
            pings: Vec::new(),
            resume_events: false,
            outage: None,
            online: true,
            resumes: 0,
            held_end: None,
            span_source: None,
            forwarded: std::collections::VecDeque::new(),
        }
    }

    /// Forwards the calls' spans from `source` to an exec-server that
    /// takes them.
    pub(crate) fn with_span_source(mut self, source: Option<Arc<dyn SpanSource>>) -> Self {
        self.span_source = source;
        self
    }

    /// Forwards the spans of `trace_id` that have ended so far as call
    /// `call_id`'s, if the exec-server takes them (otherwise they stay
    /// where the process keeps them).
    fn forward_spans(&mut self, machine: &mut Machine, call_id: u64, trace_id: TraceId, now: Now) {
        if self.span_source.is_none() || machine.span_batch_max().is_none() {
            return;
        }
        if !self.forwarded.contains(&(call_id, trace_id)) {
            if self.forwarded.len() >= crate::session::FORWARDS
                && let Some((old_call, old_trace)) = self.forwarded.pop_front()
            {
                // Its last look: a span of its trace that ended after the
                // call's own (the caller's span around it, say) goes now,
                // not never.
                self.send_spans(machine, old_call, old_trace, now);
            }
            self.forwarded.push_back((call_id, trace_id));
        }
        self.send_spans(machine, call_id, trace_id, now);
    }

    /// Sends the spans of `trace_id` that have ended and were not sent yet,
    /// as call `call_id`'s.
    fn send_spans(&mut self, machine: &mut Machine, call_id: u64, trace_id: TraceId, now: Now) {
        let (Some(source), Some(max)) = (&self.span_source, machine.span_batch_max()) else {
            return;
        };
        let taken = source.take(trace_id, max as usize);
        machine.spans_dropped(taken.dropped);
        for batch in taken.batches {
            // A batch the session cannot take is counted by it.
            let _ =
                machine.forward_spans(call_id, bytes::Bytes::from(batch.traces), batch.spans, now);
        }
    }

    /// Forwards what the calls' callers asked for since the last look.
    fn forward_asked(&mut self, machine: &mut Machine, now: Now) {
        for (call_id, trace_id) in self.shared.take_forwards() {
            self.forward_spans(machine, call_id, trace_id, now);
        }
    }

    /// Calls hear of a broken link and its resume
    /// ([`Event::Reconnecting`], [`Event::Resumed`]).
    pub(crate) fn with_resume_events(mut self, on: bool) -> Self {
        self.resume_events = on;
        self
    }

    /// Tells every call `event` (best effort: a caller with no room misses
    /// a notice, never output).
    fn notify(&self, event: &Event) {
        if !self.resume_events {
            return;
        }
        for route in self.calls.values() {
            let _ = route.sink.try_send(Routed {
                event: event.clone(),
                at: Instant::now(),
                decoded: SystemTime::now(),
                flow: None,
            });
        }
    }

    /// `session.reattach` for a call that waited through an outage, with
    /// its phases as children, ending at `end`.
    fn reattach_span(
        &self,
        route: &Route,
        outage: &Outage,
        end: SystemTime,
        attributes: Vec<KeyValue>,
        failed: Option<String>,
    ) {
        let tracer = &self.tracer;
        let mut span = tracer
            .span_builder(spans::SESSION_REATTACH)
            .with_start_time(outage.lost_at)
            .with_attributes(attributes)
            .start_with_context(tracer, &route.parent);
        span.set_attribute(KeyValue::new(
            "rex.resume.attempts",
            i64::from(outage.attempts),
        ));
        if let Some(via) = &outage.via {
            span.set_attribute(KeyValue::new("rex.resume.via", via.clone()));
        }
        let cx = route
            .parent
            .with_remote_span_context(span.span_context().clone());
        let mut attempt = 0i64;
        let mut dialled = outage.dialled.iter();
        for (name, start, stop, ok) in &outage.phases {
            let mut builder = tracer.span_builder(*name).with_start_time(*start);
            if *name == spans::RELAY_CONNECT {
                // A call to Tunnel/Open, as the first link's, at the URL
                // this attempt dialled.
                let attributes = match dialled.next() {
                    Some(url) => crate::tunnel::connect_attributes(url),
                    None => telemetry::semconv::rpc(
                        telemetry::semconv::TUNNEL_SERVICE,
                        telemetry::semconv::METHOD_OPEN,
                    )
                    .to_vec(),
                };
                builder = builder
                    .with_kind(opentelemetry::trace::SpanKind::Client)
                    .with_attributes(attributes);
            }
            let mut child = builder.start_with_context(tracer, &cx);
            if *name == spans::SESSION_REATTACH_WAIT {
                attempt += 1;
                child.set_attribute(KeyValue::new("rex.attempt", attempt));
            }
            if !ok {
                child.set_status(opentelemetry::trace::Status::error("attempt failed"));
            }
            child.end_with_timestamp(*stop);
        }
        if let Some(opened) = outage.opened_at {
            let secured = self
                .secured_at
                .unwrap_or(opened)
                .clamp(opened, end.max(opened));
            let mut hs = tracer
                .span_builder(spans::NOISE_HANDSHAKE)
                .with_start_time(opened)
                .start_with_context(tracer, &cx);
            hs.end_with_timestamp(secured);
            let mut resume = tracer
                .span_builder(spans::SESSION_RESUME)
                .with_start_time(secured)
                .start_with_context(tracer, &cx);
            resume.end_with_timestamp(end.max(secured));
        }
        if let Some(message) = failed {
            span.set_status(opentelemetry::trace::Status::error(message));
        }
        span.end_with_timestamp(end);
    }

    /// `rpc.client.queue` for a traced command taken at `now`, and the
    /// `relay.frame.send` mark its message goes out with (starting where
    /// the queue ended); `exec` names the call whose request it is.
    fn mark(&self, traced: &Traced, now: Now, exec: Option<u64>) -> Mark<Tag> {
        let mut queue = self
            .tracer
            .span_builder(spans::RPC_CLIENT_QUEUE)
            .with_start_time(traced.enqueued)
            .with_attributes(vec![KeyValue::new("rex.message", traced.what)])
            .start_with_context(&self.tracer, &traced.parent);
        queue.end_with_timestamp(now.wall);
        let (span, _) =
            frame_spans::send_stage(&self.tracer, &traced.parent, traced.what, now.wall)
                .into_parts();
        let hop = frame_spans::hop_header_for(traced.parent.span().span_context(), &traced.parent);
        Mark::new(Tag { span, exec }, hop)
    }

    /// Routes `new` as call 1, riding in handshake message 1 (early data):
    /// its `rpc.client.queue`, and the mark message 1 goes out with.
    pub(crate) fn first_call(
        &mut self,
        new: NewCall,
        ticket: EarlyTicket,
        now: Now,
    ) -> FirstCall<Tag> {
        let NewCall {
            request,
            trace,
            events,
            traced,
            taken,
            call,
        } = new;
        taken.send_replace(true);
        self.last_start = FIRST_CALL;
        let mark = self.mark(&traced, now, Some(FIRST_CALL));
        self.calls
            .insert(FIRST_CALL, Route::new(events, call, traced.parent, now));
        FirstCall {
            id: FIRST_CALL,
            request,
            trace,
            mark: Some(mark),
            ticket,
        }
    }

    /// Call 1 could not be sent in message 1: it ends with `failure`
    /// (its queue closes with its route, and its caller finds it).
    pub(crate) fn fail_first_call(&mut self, failure: ExecFailure) {
        if let Some(route) = self.calls.remove(&FIRST_CALL) {
            route.call.end(failure);
        }
    }

    fn command(&mut self, machine: &mut Machine, cmd: Command, now: Now) {
        match cmd {
            Command::Start {
                call_id,
                request,
                trace,
                events,
                traced,
                taken,
                call,
            } => {
                taken.send_replace(true);
                self.last_start = self.last_start.max(call_id);
                if self.unstarted_cancels.remove(&call_id) {
                    // Its caller went away before it was sent: it never
                    // runs.
                    return;
                }
                let mark = self.mark(&traced, now, Some(call_id));
                match machine.start_call(call_id, request, trace, Some(mark), now) {
                    Ok(()) => {
                        self.calls
                            .insert(call_id, Route::new(events, call, traced.parent, now));
                    }
                    // The call ends before it began; its caller is told.
                    Err(e) => {
                        let failure = match e {
                            CallError::TooManyCalls(_)
                            | CallError::TooLarge(_)
                            | CallError::NoLoginShell
                            | CallError::LoginShellWithCommand => {
                                ExecFailure::Refused(e.to_string())
                            }
                            _ => ExecFailure::SessionLost(self.shared.lost()),
                        };
                        // Its queue closes with this: the caller finds it.
                        call.end(failure);
                        drop(events);
                    }
                }
            }
            Command::Ping { reply } => {
                if let Ok(nonce) = machine.ping(now) {
                    // The machine remembers a few pings; so does this.
                    if self.pings.len() >= PINGS {
                        self.pings.remove(0);
                    }
                    self.pings.push((nonce, reply));
                }
                // Otherwise the session is ending: the reply is dropped,
                // and the caller learns why from the session.
            }
            Command::Stdin { call_id, data } => {
                // A call that has ended takes no more input; the process
                // is gone, as with a pipe whose reader exited.
                let _ = machine.write_stdin(call_id, data, now);
            }
            Command::Resize {
                call_id,
                rows,
                cols,
            } => {
                // A call that has ended has no window to redraw.
                let _ = machine.resize(call_id, rows, cols, now);
            }
            Command::Control {
                call_id,
                control,
                traced,
            } => {
                // A call whose last event has arrived has nothing to close,
                // signal or cancel: nothing is sent (or traced after its
                // dispatch ended).
                if !self.calls.contains_key(&call_id) {
                    return;
                }
                let mark = Some(self.mark(&traced, now, None));
                let _ = match control {
                    Control::CloseStdin => machine.close_stdin(call_id, mark, now),
                    Control::Signal(n) => machine.signal(call_id, n, mark, now),
                    Control::Cancel => machine.cancel(call_id, mark, now),
                };
            }
        }
    }

    /// Hands a call's event to its caller; hands it back if the caller has
    /// no room.
    fn call_event(
        &mut self,
        machine: &mut Machine,
        mut ev: CallEvent,
        now: Now,
    ) -> Delivery<ClientEvent> {
        let call_id = ev.call_id;
        // The relay's timings go to the calls they name (a frame may hold
        // several calls' messages), once.
        let mut chained = Vec::new();
        for timing in std::mem::take(&mut ev.received.relay) {
            let named = SpanId::from_bytes(timing.parent_span_id.to_be_bytes());
            match self
                .calls
                .values_mut()
                .find(|r| r.parent.span().span_context().span_id() == named)
            {
                Some(route) => route.relay.add(timing),
                None => chained.push(timing),
            }
        }
        // Through two relays of a fleet, a relay's forward may name the
        // other relay's forward of the same frame: it goes to that call.
        for timing in chained {
            if let Some(route) = self
                .calls
                .values_mut()
                .find(|r| r.relay.holds(timing.parent_span_id))
            {
                route.relay.add(timing);
            }
        }
        let Some(route) = self.calls.get(&call_id) else {
            return Delivery::Taken;
        };
        if route.sink.is_closed() {
            // The caller is gone: stop the process.
            machine.forget(call_id, None, now);
            self.calls.remove(&call_id);
            return Delivery::Taken;
        }
        if route.sink.capacity() == 0 {
            self.blocked = Some(call_id);
            return Delivery::Later(ClientEvent::Call(ev));
        }
        let decoded = self.trace_recv(&ev);
        if let (Some(flow), Some(route)) = (ev.stdin, self.calls.get(&call_id)) {
            route.call.set_stdin_flow(flow);
        }
        let counters = machine.counters();
        self.shared.set_counters(counters);
        if ev.seq == 0
            && machine.first_call() == Some(call_id)
            && let Some(route) = self.calls.get(&call_id)
        {
            // The call opened the session: what that cost it.
            route.call.set_counters(counters);
        }
        let CallEvent {
            seq,
            kind,
            last,
            timings,
            received,
            ..
        } = ev;
        // The caller has its final event first; the exec-server's stages
        // are placed just after, off the call's path. A flush waits for
        // them (`placing` is the barrier), so a flushed trace is whole.
        let placing = last.then(telemetry::placement::pending::placing);
        let flow = Some((seq, proto::session::output::cost(&kind)));
        let routed = Routed {
            event: to_event(kind),
            at: Instant::now(),
            decoded,
            flow,
        };
        // Room was checked and only this task sends to the sink.
        if let Some(route) = self.calls.get(&call_id) {
            let _ = route.sink.try_send(routed);
        }
        if last && let Some(route) = self.calls.remove(&call_id) {
            self.place_final(machine, &route, timings, &received);
            // The call's spans ended so far go after its final event (the
            // rest when its dispatch ends: `Shared::forward`).
            let sc = route.parent.span().span_context().clone();
            if sc.is_sampled() {
                self.forward_spans(machine, call_id, sc.trace_id(), now);
            }
        }
        drop(placing);
        Delivery::Taken
    }

    /// Places what lies between a finished call's request and its final
    /// event: the exec-server's stages and the legs to them when it sent
    /// its timings (the call's own exchange taken as a clock sample too:
    /// often the best one a short-lived session gets, and later calls use
    /// it), else one `remote.unreported` stage. Timings that do not decode
    /// lose the call its stages only.
    fn place_final(
        &self,
        machine: &mut Machine,
        route: &Route,
        timings: Option<proto::session::EncodedTimings>,
        received: &Received,
    ) {
        let timings = match timings.map(|t| t.decode()) {
            Some(Ok(timings)) => timings,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the exec-server's timings did not decode");
                return self.unreported(route, received);
            }
            None => return self.unreported(route, received),
        };
        if let Some(sample) = exchange_sample(route, &timings, received) {
            machine.add_clock_sample(sample);
        }
        let local = telemetry::clock_status::status();
        let offset = self.refresh_offset(machine, &local);
        self.bring_home(route, &timings, received, offset, &local);
    }

    /// The exec-server's clock minus ours from the best source now (`local`
    /// being what we read of our own clock), kept for the offsets the
    /// session's other spans state.
    fn refresh_offset(
        &self,
        machine: &Machine,
        local: &proto::session::peer_clock::Status,
    ) -> Option<Offset> {
        let offset =
            machine.clock_interval(local, proto::wall_time::unix_nanos(SystemTime::now()))?;
        self.shared.set_clock_offset(offset.offset_nanos);
        Some(offset)
    }

    /// Places the exec-server's stages for a finished call on our clock:
    /// records the two `link.transit` legs between them and ours, and
    /// writes the stages where this process keeps its spans (the local
    /// trace file), if it does.
    fn bring_home(
        &self,
        route: &Route,
        timings: &CallTimings,
        received: &Received,
        offset: Option<Offset>,
        local: &proto::session::peer_clock::Status,
    ) {
        let sc = route.parent.span().span_context().clone();
        if !sc.is_sampled() {
            return;
        }
        // No sample at all (none could be taken): the last offset known,
        // with no bound to speak of.
        let offset = offset.unwrap_or(Offset {
            source: Source::TwoWay,
            offset_nanos: self.shared.clock_offset(),
            bound: std::time::Duration::MAX,
        });
        let left = route.left.unwrap_or(route.started);
        // The relay's forwards first, between the request leaving and the
        // final event arriving; the exec-server's work then lies between
        // them (the relay forwarded the request before it arrived, and
        // received the final event after it left).
        let hops = place_hops(route, &sc, left, received, local);
        let window = match &hops {
            Some(h) => telemetry::placement::stages::Window {
                request_sent: h.nearest_server().to_server.1,
                final_arrived: h.nearest_server().to_client.0,
            },
            None => telemetry::placement::stages::Window {
                request_sent: left,
                final_arrived: received.arrived,
            },
        };
        // Without a sink for them (the exec-server exports its own), the
        // stages are placed for their times only, not made into spans.
        let sink = telemetry::remote::sink();
        let placed = match sink {
            Some(_) => telemetry::placement::stages::place(
                timings,
                sc.trace_id(),
                received.sent_unix_nanos,
                offset,
                Some(window),
            ),
            None => telemetry::placement::stages::locate(
                timings,
                received.sent_unix_nanos,
                offset,
                Some(window),
            ),
        };
        let placed = match placed {
            Ok(placed) => placed,
            Err(e) => {
                tracing::debug!(error = %e, "the exec-server's timings were left out");
                return;
            }
        };
        let server = placed.offset;
        // Each leg with the clocks of its far ends (ours is the reference).
        let legs = match &hops {
            Some(h) => {
                let nearest = h.nearest_server();
                let there = Leg::new(
                    "to_server",
                    "relay_server",
                    nearest.to_server.1,
                    placed.first_start(),
                    &[nearest.offset, server],
                );
                let home = Leg::new(
                    "to_client",
                    "server_relay",
                    placed.sent,
                    nearest.to_client.0,
                    &[server, nearest.offset],
                );
                // Beyond the relays, in the middle of the legs to them.
                let mut legs = relay_legs(h, left, received.arrived);
                let middle = legs.len() / 2;
                legs.splice(middle..middle, [there, home]);
                legs
            }
            None => vec![
                Leg::new(
                    "to_server",
                    "end_to_end",
                    left,
                    placed.first_start(),
                    &[server],
                ),
                Leg::new(
                    "to_client",
                    "end_to_end",
                    placed.sent,
                    received.arrived,
                    &[server],
                ),
            ],
        };
        for leg in &legs {
            let attributes = leg.attributes(&legs, &server, hops.as_ref().map(|h| &h.first.offset));
            self.placed_stage(route, spans::LINK_TRANSIT, leg.from, leg.to, attributes);
        }
        if let Some(sink) = sink {
            let mut spans = placed.spans;
            if let Some(h) = hops {
                spans.extend(h.spans);
            }
            sink.record(spans);
        }
    }

    /// A finished call the exec-server reported no stages for (one from
    /// before the summaries, or `--no-call-timings`): what lies between
    /// the request leaving and the final event arriving is one
    /// `remote.unreported` stage, with the relay's forwards and the legs to
    /// and from it around it when the relay told them, so the dispatch
    /// still tiles.
    fn unreported(&self, route: &Route, received: &Received) {
        let sc = route.parent.span().span_context().clone();
        if !sc.is_sampled() {
            return;
        }
        let left = route.left.unwrap_or(route.started);
        let hops = place_hops(
            route,
            &sc,
            left,
            received,
            &telemetry::clock_status::status(),
        );
        match &hops {
            Some(h) => {
                // The legs to and from the relay, as a reported call's are;
                // the relay's forwards and everything beyond them undivided.
                let legs = relay_legs(h, left, received.arrived);
                for leg in &legs {
                    let attributes = leg.attributes(&legs, &h.first.offset, Some(&h.first.offset));
                    self.placed_stage(route, spans::LINK_TRANSIT, leg.from, leg.to, attributes);
                }
                let nearest = h.nearest_server();
                let attributes = clock_attributes(&nearest.offset).to_vec();
                let (from, to) = (nearest.to_server.1, nearest.to_client.0);
                self.placed_stage(route, spans::REMOTE_UNREPORTED, from, to, attributes);
            }
            None => {
                let (from, to) = (left, received.arrived);
                self.placed_stage(route, spans::REMOTE_UNREPORTED, from, to, Vec::new());
            }
        }
        if let (Some(sink), Some(h)) = (telemetry::remote::sink(), hops) {
            sink.record(h.spans);
        }
    }

    /// One stage of the call placed on our clock from `from` to `to`, a
    /// child of the call's dispatch.
    fn placed_stage(
        &self,
        route: &Route,
        name: &'static str,
        from: SystemTime,
        to: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_start_time(from)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &route.parent);
        span.end_with_timestamp(to.max(from));
    }

    /// Records `relay.frame.recv` for the traced events of a call: started,
    /// the first output chunk, the last output chunk (once the final event
    /// shows it was the last), and the final event. Returns when the event
    /// was decoded.
    fn trace_recv(&mut self, ev: &CallEvent) -> SystemTime {
        let offset = self.shared.clock_offset();
        let Some(call) = self.calls.get_mut(&ev.call_id) else {
            return SystemTime::now();
        };
        let Received {
            arrived,
            hop,
            sent_unix_nanos,
            ..
        } = &ev.received;
        let hop = frame_spans::hop_context(hop);
        let what = match &ev.kind {
            terminal_event::Kind::Started(_) => "started",
            terminal_event::Kind::Stdout(_) | terminal_event::Kind::Stderr(_) => {
                call.output_chunks += 1;
                // Every chunk may be the last (a one-chunk output's first
                // and last are the same chunk, so span counts stay fixed).
                // Only times are kept per chunk; nothing is parsed.
                let decoded = SystemTime::now();
                call.last_chunk = Some((*arrived, decoded, hop.clone()));
                if call.output_chunks > 1 {
                    return decoded;
                }
                "output.first"
            }
            terminal_event::Kind::Exited(_) => "exited",
            terminal_event::Kind::Error(_) => "error",
        };
        // The event's own context (the process span), linked from ours.
        let origin = ev.trace.as_ref().and_then(origin);
        if ev.last
            && let Some((a, d, h)) = call.last_chunk.take()
        {
            frame_spans::record_recv_until(
                &self.tracer,
                &call.parent,
                (a, d),
                "output.last",
                &[origin.clone(), h],
                vec![KeyValue::new(
                    "rex.output.chunks",
                    i64::try_from(call.output_chunks).unwrap_or(i64::MAX),
                )],
            );
        }
        let attributes = transit_nanos(*arrived, *sent_unix_nanos, offset)
            .map(|t| vec![KeyValue::new("rex.transit_ns", t)])
            .unwrap_or_default();
        let stage = frame_spans::record_recv(
            &self.tracer,
            &call.parent,
            *arrived,
            what,
            &[origin, hop],
            attributes,
        );
        stage.end.unwrap_or_else(SystemTime::now)
    }

    /// The session is over: every call still open ends with it (told
    /// through its shared state as its queue closes, so that a full queue
    /// cannot lose it).
    fn ended(&mut self, lost: &SessionLost) {
        for (_, route) in self.calls.drain() {
            route.call.end(ExecFailure::SessionLost(lost.clone()));
        }
    }

    /// A new link came up during an outage but broke before the resume was
    /// answered: its handshake (and resume, if asked) are phases of the
    /// outage that did not work.
    fn new_link_broke(&mut self, now: SystemTime) {
        let secured = self.secured_at.take();
        let Some(outage) = self.outage.as_mut() else {
            return;
        };
        if outage.opened_at.take().is_none() {
            return;
        }
        match secured.filter(|s| *s >= outage.cursor) {
            Some(secured) => {
                outage.note_at(spans::NOISE_HANDSHAKE, secured, true);
                outage.note_at(spans::SESSION_RESUME, now, false);
            }
            None => {
                outage.note_at(spans::NOISE_HANDSHAKE, now, false);
            }
        }
    }
}

/// The call's exchange as a four-timestamp clock sample: its request
/// leaving here, reaching the exec-server (its earliest stage), the final
/// event leaving there and arriving here.
fn exchange_sample(
    route: &Route,
    timings: &CallTimings,
    received: &Received,
) -> Option<ClockSample> {
    let (peer_received, peer_sent) =
        telemetry::placement::stages::peer_times(timings, received.sent_unix_nanos)?;
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
    };
    ClockSample::exchange(
        nanos(route.left.unwrap_or(route.started))?,
        peer_received,
        peer_sent,
        nanos(received.arrived)?,
    )
}

fn origin(trace: &PbTrace) -> Option<SpanContext> {
    match carriers::envelope::extract(trace) {
        Extracted::Valid(tc) => Some(otel::to_span_context(&tc)),
        _ => None,
    }
}

/// A terminal event as the caller sees it.
pub(crate) fn to_event(kind: terminal_event::Kind) -> Event {
    match kind {
        terminal_event::Kind::Started(s) => Event::Started {
            pid: s.pid,
            program: (!s.program.is_empty())
                .then(|| proto::program::program_name(s.program.as_bytes())),
        },
        terminal_event::Kind::Stdout(d) => Event::Stdout(d),
        terminal_event::Kind::Stderr(d) => Event::Stderr(d),
        terminal_event::Kind::Exited(x) => Event::Exited(match x.status {
            Some(exited::Status::Code(c)) => ExitStatus::Code(c),
            Some(exited::Status::Signal(s)) => ExitStatus::Signal(s),
            None => ExitStatus::Code(-1),
        }),
        terminal_event::Kind::Error(e) => {
            Event::Failed(ExecFailure::from_remote(e.kind, e.message))
        }
    }
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

impl Endpoint<Machine> for Router {
    type Input = Input;

    fn wait(
        &mut self,
        accepting: bool,
        blocked: bool,
    ) -> impl std::future::Future<Output = Wake<Input>> + Send {
        let sink = self
            .blocked
            .filter(|_| blocked)
            .and_then(|id| self.calls.get(&id))
            .map(|route| route.sink.clone());
        let shared = Arc::clone(&self.shared);
        let online = self.online;
        let (commands, controls) = (&mut self.commands, &mut self.controls);
        async move {
            tokio::select! {
                biased;
                // Cancellations, signals and cancels are taken even over
                // the backlog: they are small and bounded, and must not
                // wait behind stdin. Not while a new link's resume is
                // under way: nothing may precede it there, and they wait
                // (a woken driver's permit is kept) rather than be lost.
                () = shared.wake.notified(), if online => Wake::Input(Input::Woken),
                Some(cmd) = controls.recv(), if online => Wake::Input(Input::Command(cmd)),
                _ = reserve(sink.as_ref()), if blocked => Wake::Ready,
                cmd = commands.recv(), if accepting => match cmd {
                    Some(cmd) => Wake::Input(Input::Command(cmd)),
                    None => Wake::Closed,
                },
                // Nothing to wait for here: the link and the timers wake
                // the driver.
                else => std::future::pending().await,
            }
        }
    }

    fn apply(&mut self, machine: &mut Machine, input: Input, now: Now) {
        match input {
            Input::Command(cmd) => self.command(machine, cmd, now),
            Input::Woken => {
                for (call_id, traced) in self.shared.take_cancelled() {
                    if call_id > self.last_start {
                        // Its start is still queued (cancellations overtake
                        // it): it is dropped when it comes.
                        self.unstarted_cancels.insert(call_id);
                        continue;
                    }
                    let mark = self.mark(&traced, now, None);
                    machine.forget(call_id, Some(mark), now);
                    self.calls.remove(&call_id);
                }
                for t in self.shared.take_taken() {
                    machine.output_taken(t.call_id, t.seq, t.cost, now);
                }
                self.forward_asked(machine, now);
            }
        }
    }

    fn deliver(
        &mut self,
        machine: &mut Machine,
        event: ClientEvent,
        now: Now,
    ) -> Delivery<ClientEvent> {
        match event {
            ClientEvent::Secured => self.secured_at = Some(now.wall),
            ClientEvent::Ready(ready) => {
                self.shared
                    .set_forwarding(machine.span_batch_max(), self.span_source.is_some());
                self.refresh_offset(machine, &telemetry::clock_status::status());
                if let Some(tx) = self.ready.take() {
                    let _ = tx.send(Ok(Established {
                        ready,
                        secured_at: self.secured_at.unwrap_or(now.wall),
                        ready_at: now.wall,
                    }));
                }
            }
            ClientEvent::Call(ev) => {
                let delivery = self.call_event(machine, ev, now);
                if matches!(delivery, Delivery::Taken) {
                    self.blocked = None;
                }
                return delivery;
            }
            // What the caller took and holds back is reported now (or its
            // next take is).
            ClientEvent::AckWanted { call_id } => {
                if let Some((seq, cost)) = self.calls.get(&call_id).and_then(|r| r.call.ask()) {
                    machine.output_taken(call_id, seq, cost, now);
                }
                machine.answer_ack_wanted(call_id, now);
            }
            ClientEvent::Pong { nonce, rtt, .. } => {
                self.refresh_offset(machine, &telemetry::clock_status::status());
                if let Some(i) = self.pings.iter().position(|(n, _)| *n == nonce) {
                    let (_, reply) = self.pings.swap_remove(i);
                    let _ = reply.send(rtt);
                }
            }
            // The driver stops; the session comes back over a new link.
            ClientEvent::Detached { error } => {
                tracing::debug!(error = %error, calls = self.calls.len(), "the session's link broke");
                self.online = false;
                // A new link that did not come up is the same outage.
                self.new_link_broke(now.wall);
                self.secured_at = None;
                if self.outage.is_none() {
                    self.outage = Some(Outage::new(now.wall));
                    self.shared.link.lost();
                    self.notify(&Event::Reconnecting);
                }
            }
            ClientEvent::Resumed { expired, replayed } => {
                self.online = true;
                self.resumes += 1;
                if let Some(outage) = self.outage.take() {
                    for (call_id, route) in &self.calls {
                        let bytes = replayed
                            .iter()
                            .find(|(id, _)| id == call_id)
                            .map_or(0, |(_, b)| *b);
                        route.call.resumed(bytes);
                        let attributes = vec![KeyValue::new(
                            "rex.replayed.bytes",
                            i64::try_from(bytes).unwrap_or(i64::MAX),
                        )];
                        self.reattach_span(route, &outage, now.wall, attributes, None);
                    }
                    // Calls lost with an expired session had theirs with
                    // their loss.
                }
                if !expired {
                    self.shared.link.resumed();
                    self.notify(&Event::Resumed);
                }
            }
            ClientEvent::Lost {
                call_id,
                lost,
                exit,
                expired,
            } => {
                if let Some(route) = self.calls.remove(&call_id) {
                    let gap = lost.map(|(stdout, stderr)| Gap { stdout, stderr });
                    let failure = ExecFailure::OutputLost {
                        gap,
                        exit: exit.map(|x| match x.status {
                            Some(exited::Status::Code(c)) => ExitStatus::Code(c),
                            Some(exited::Status::Signal(s)) => ExitStatus::Signal(s),
                            None => ExitStatus::Code(-1),
                        }),
                        session_expired: expired,
                    };
                    if let Some(outage) = &self.outage {
                        let attributes = match gap {
                            Some(g) => vec![
                                KeyValue::new(
                                    "rex.gap.stdout_bytes",
                                    i64::try_from(g.stdout).unwrap_or(i64::MAX),
                                ),
                                KeyValue::new(
                                    "rex.gap.stderr_bytes",
                                    i64::try_from(g.stderr).unwrap_or(i64::MAX),
                                ),
                            ],
                            None => vec![KeyValue::new("rex.gap.known", false)],
                        };
                        let why = Some(failure.to_string());
                        self.reattach_span(&route, outage, now.wall, attributes, why);
                    }
                    // Its queue closes with this: the caller finds it after
                    // the events before it, whatever room the queue had.
                    route.call.end(failure);
                }
            }
            // Only a machine that gives a session up says this.
            ClientEvent::Abandoned { .. } => {}
            ClientEvent::Ended(end) => {
                if end.is_err() && !self.calls.is_empty() && machine.abandonment().is_some() {
                    // The exec-server may still run the calls: they hear
                    // of the end once it has been told to end them. No
                    // new call takes the session meanwhile.
                    self.shared
                        .set_end(SessionLost::new(self.shared.via, end.clone()));
                    self.held_end = Some((end, now));
                } else {
                    self.end_session(end, false, now);
                }
            }
        }
        Delivery::Taken
    }

    fn transmitted(&mut self, done: Vec<Tag>, _sent: u64, now: Now) {
        for Tag { mut span, exec } in done {
            span.end_with_timestamp(now.wall);
            if let Some(route) = exec.and_then(|id| self.calls.get_mut(&id)) {
                route.left = Some(now.wall);
            }
        }
    }

    fn closing(&mut self, machine: &mut Machine, now: Now) {
        // Spans whose dispatch ended just before the close go first, and
        // what ended since in the traces of the calls already forwarded.
        self.forward_asked(machine, now);
        for (call_id, trace_id) in std::mem::take(&mut self.forwarded) {
            self.forward_spans(machine, call_id, trace_id, now);
        }
    }
}

impl Router {
    /// The end held while the session is given up at the exec-server, if
    /// it was.
    pub(crate) fn take_held_end(&mut self) -> Option<(Result<Closed, SessionError>, Now)> {
        self.held_end.take()
    }

    /// The session is over (at `now`): its calls end with `end`
    /// (`remote_ended`: the exec-server was told to end their processes,
    /// and answered).
    pub(crate) fn end_session(
        &mut self,
        end: Result<Closed, SessionError>,
        remote_ended: bool,
        now: Now,
    ) {
        if let (Some(tx), Err(e)) = (self.ready.take(), &end) {
            let _ = tx.send(Err(e.clone()));
        }
        let lost = SessionLost::new(self.shared.via, end).with_remote_ended(remote_ended);
        tracing::debug!(reason = %lost, "session ended");
        // The client gave up coming back: each waiting call's
        // outage ends here, failed.
        self.new_link_broke(now.wall);
        if let Some(mut outage) = self.outage.take() {
            // From its last attempt to now (the give-up itself).
            if now.wall > outage.cursor {
                outage.note_at(spans::SESSION_REATTACH_WAIT, now.wall, false);
            }
            let end = outage.cursor;
            let why = format!("gave up coming back: {lost}");
            for route in self.calls.values() {
                self.reattach_span(route, &outage, end, Vec::new(), Some(why.clone()));
            }
        }
        self.shared.set_end(lost.clone());
        self.ended(&lost);
    }
}

async fn reserve(sink: Option<&mpsc::Sender<Routed>>) {
    if let Some(sink) = sink {
        // Closed counts as ready too: the next delivery finds it closed.
        let _ = sink.reserve().await;
    }
}

/// The relay's forwards of a finished call, placed between the request
/// leaving (`left`) and the final event arriving, if the relay told them.
fn place_hops(
    route: &Route,
    sc: &opentelemetry::trace::SpanContext,
    left: SystemTime,
    received: &Received,
    local: &proto::session::peer_clock::Status,
) -> Option<telemetry::placement::hops::PlacedHops> {
    telemetry::placement::hops::place(
        &route.relay.all(),
        sc.trace_id(),
        sc.span_id(),
        telemetry::placement::hops::Legs {
            request_left: left,
            final_arrived: received.arrived,
        },
        local,
    )
}

/// The legs between us and the relay: from the request leaving (`left`)
/// to the relay's forward of it, and from its forward of the final event
/// to that event arriving here (`arrived`); with a second relay of a fleet,
/// the legs between the two relays in the middle (toward the exec-server
/// first).
fn relay_legs(
    hops: &telemetry::placement::hops::PlacedHops,
    left: SystemTime,
    arrived: SystemTime,
) -> Vec<Leg> {
    let first = &hops.first;
    let out = Leg::new(
        "to_server",
        "client_relay",
        left,
        first.to_server.0,
        &[first.offset],
    );
    let back = Leg::new(
        "to_client",
        "relay_client",
        first.to_client.1,
        arrived,
        &[first.offset],
    );
    match &hops.second {
        Some(second) => vec![
            out,
            Leg::new(
                "to_server",
                "relay_relay",
                first.to_server.1,
                second.to_server.0,
                &[first.offset, second.offset],
            ),
            Leg::new(
                "to_client",
                "relay_relay",
                second.to_client.1,
                first.to_client.0,
                &[second.offset, first.offset],
            ),
            back,
        ],
        None => vec![out, back],
    }
}

/// One `link.transit` leg of a call: when it ran on our clock, whether the
/// clocks of its far ends tell how its round trip splits, and which leg of
/// the call runs opposite it (the one of the same pair going the other
/// way: the two make one round trip).
struct Leg {
    direction: &'static str,
    name: &'static str,
    from: SystemTime,
    to: SystemTime,
    /// Every far end was placed by a source that sees asymmetry.
    knows_split: bool,
}

impl Leg {
    fn new(
        direction: &'static str,
        name: &'static str,
        from: SystemTime,
        to: SystemTime,
        ends: &[Offset],
    ) -> Self {
        Self {
            direction,
            name,
            from,
            to: to.max(from),
            knows_split: ends.iter().all(|o| o.source.knows_split()),
        }
    }

    /// The round trip it is part of: the client's with the relay, the
    /// relay's with the exec-server, or end to end.
    fn pair(&self) -> &'static str {
        match self.name {
            "client_relay" | "relay_client" => "client_relay",
            "relay_server" | "server_relay" => "relay_server",
            other => other,
        }
    }

    fn duration_nanos(&self) -> i64 {
        self.to
            .duration_since(self.from)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Its attributes: direction and leg, how the far clock was placed
    /// (`placed`: the exec-server's, or the relay's when the exec-server
    /// told nothing) and the relay's offset if it told its forwards, and
    /// whether its split is known; when not, the round trip it makes with
    /// its opposite (the one measured interval).
    fn attributes(&self, legs: &[Leg], placed: &Offset, relay: Option<&Offset>) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new("rex.direction", self.direction),
            KeyValue::new("rex.leg", self.name),
        ];
        attributes.extend(clock_attributes(placed));
        if let Some(relay) = relay {
            attributes.push(KeyValue::new(
                "rex.relay.clock_offset_ns",
                relay.offset_nanos,
            ));
        }
        if self.knows_split {
            attributes.push(KeyValue::new(spans::ATTR_CLOCK_SPLIT, "measured"));
        } else {
            attributes.push(KeyValue::new(spans::ATTR_CLOCK_SPLIT, "unknown"));
            let opposite = legs
                .iter()
                .find(|l| l.pair() == self.pair() && l.direction != self.direction)
                .map_or(0, Leg::duration_nanos);
            attributes.push(KeyValue::new(
                spans::ATTR_ROUND_TRIP,
                self.duration_nanos().saturating_add(opposite),
            ));
        }
        attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn transit_corrects_the_senders_clock() {
        let arrived = SystemTime::UNIX_EPOCH + Duration::from_nanos(10_000);
        // Sent at peer time 9_500 with the peer 500 ahead: local 9_000.
        assert_eq!(transit_nanos(arrived, 9_500, 500), Some(1_000));
        assert_eq!(transit_nanos(arrived, 9_500, 0), Some(500));
        assert_eq!(transit_nanos(arrived, 0, 0), None);
    }
}
