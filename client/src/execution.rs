//! A running remote command: its events as a stream ([`Execution`]), the
//! handle that sends its input ([`Controller`]), and the delivery spans
//! (`terminal.delivery`, `exec.first_output`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span, Status as SpanStatus, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::limits::MAX_CHUNK;
use proto::session::StdinFlow;
use telemetry::spans;
use tokio::sync::mpsc;

use crate::SessionCounters;
use crate::error::{ClientError, InvalidRequest};
#[cfg(feature = "records")]
use crate::exec::ExitStatus;
use crate::exec::{Event, ExecFailure, Output};
#[cfg(feature = "records")]
use crate::records::CallRecord;
use crate::session::{
    CallShared, Command, Control, Routed, SessionHandle, StartTaken, Taken, Traced,
};
use crate::warm::ActiveCall;

#[cfg(feature = "records")]
type Record = Option<CallRecord>;
#[cfg(not(feature = "records"))]
type Record = Option<std::convert::Infallible>;

/// A running remote command. Its events come from [`next`](Self::next) or
/// as a [`Stream`]; the last one is [`Event::Exited`] or
/// [`Event::Failed`]. Dropping it before then kills the remote process.
pub struct Execution {
    control: Controller,
    events: mpsc::Receiver<Routed>,
    finished: bool,
    /// When the last event was handed over.
    ended: Option<SystemTime>,
    /// The call, as the warm schedule counts it (ended with the last
    /// event, or when dropped).
    active: Option<ActiveCall>,
    span: Option<BoxedSpan>,
    delivery: Delivery,
    /// What the call shares with its session's driver (how it ended, when
    /// the driver ended it; its resumes).
    call: Arc<CallShared>,
}

impl Execution {
    pub(crate) fn new(
        control: Controller,
        (events, call): (mpsc::Receiver<Routed>, Arc<CallShared>),
        span: Option<BoxedSpan>,
        delivery: Delivery,
        active: Option<ActiveCall>,
    ) -> Self {
        Self {
            control,
            events,
            call,
            finished: false,
            ended: None,
            active,
            span,
            delivery,
        }
    }

    /// The call id on its session.
    pub fn call_id(&self) -> u64 {
        self.control.call_id
    }

    /// The call's trace id (32 hex digits), when it is traced.
    pub fn trace_id(&self) -> Option<String> {
        let sc = self.control.parent.span().span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    /// When the last event was handed over (the end of the call's
    /// `tool.dispatch`), once it has been.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.ended
    }

    /// How many times the call's session came back over a new link while
    /// the call ran (0: its link never broke, or the call went through a
    /// local agent, which resumes without telling). Each resume is also a
    /// `session.reattach` span in the call's trace.
    pub fn resumes(&self) -> u32 {
        self.call.resumes()
    }

    /// The call's output bytes (stdout and stderr) sent again after those
    /// resumes: what the broken links had not delivered. They are part of
    /// the events, each byte once.
    pub fn replayed_bytes(&self) -> u64 {
        self.call.replayed()
    }

    /// What opening its session cost the call (flights sent and round
    /// trips waited on before its first event, retries after early data
    /// was refused), once its first event has arrived; `None` for a call
    /// on a session that was already there, or through a local agent.
    pub fn session_counters(&self) -> Option<SessionCounters> {
        self.call.counters()
    }

    /// How the exec-server's stdin window treated the call (the widest
    /// window it gave, the time stdin waited for it), once its final event
    /// has arrived; `None` for a call without stdin, or through a local
    /// agent.
    pub fn stdin_flow(&self) -> Option<StdinFlow> {
        self.call.stdin_flow()
    }

    /// Whether the call's exec-server takes this client's forwarded spans
    /// ([`ClientConfig::span_source`](crate::ClientConfig::span_source));
    /// `None` for a call through a local agent, or before its session's
    /// hello was answered.
    pub fn spans_forwarded(&self) -> Option<bool> {
        self.span_batch_max().map(|max| max > 0)
    }

    /// The most bytes of one batch of forwarded spans the call's
    /// exec-server takes: `Some(0)` when it takes none; `None` before its
    /// session's hello was answered. Through a local agent: `Some` once
    /// the last event said that the agent forwards its spans to an
    /// exec-server that takes them, else `None`.
    pub fn span_batch_max(&self) -> Option<u32> {
        match &self.control.carrier {
            Carrier::Session(s) => s.forwarding(),
            #[cfg(feature = "agent")]
            Carrier::Agent(a) => a.span_batch_max(),
        }
    }

    /// The state of the call's session link, as a watch (only the latest
    /// state is kept): lost and being reconnected (through which relay or
    /// address, since when), up again (after how long), ended. `None` for
    /// a call through a local agent, which holds the link. A caller that
    /// never looks holds nothing up.
    pub fn link(&self) -> Option<tokio::sync::watch::Receiver<crate::LinkState>> {
        match &self.control.carrier {
            Carrier::Session(s) => Some(s.link()),
            #[cfg(feature = "agent")]
            Carrier::Agent(_) => None,
        }
    }

    /// The next event, or None after the last one. If the session is lost
    /// mid-call, the last event is [`Event::Failed`].
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let routed = match self.events.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(routed)) => routed,
            // The driver ended the call (its word is in the shared state,
            // where a full queue cannot lose it), or the session ended
            // without a word for it.
            Poll::Ready(None) => Routed {
                event: Event::Failed(
                    self.call
                        .take_fate()
                        .unwrap_or_else(|| self.control.carrier.failure()),
                ),
                at: std::time::Instant::now(),
                decoded: SystemTime::now(),
                flow: None,
            },
        };
        if let Some((seq, cost)) = routed.flow {
            self.took(seq, cost);
        }
        let handed = self.delivery.handed(&routed, &self.control.parent);
        let ev = routed.event;
        // A login shell is named as the exec-server started it.
        if let Event::Started {
            program: Some(program),
            ..
        } = &ev
            && self.delivery.login_shell
            && let Some(span) = self.span.as_mut()
        {
            span.set_attribute(KeyValue::new("process.executable.name", program.clone()));
        }
        if matches!(ev, Event::Exited(_) | Event::Failed(_)) {
            self.finished = true;
            self.ended = Some(handed);
            self.active = None;
            if let Some(mut span) = self.span.take() {
                if let Some(c) = self.call.counters() {
                    counters_on(&mut span, c);
                }
                if let Some(f) = self.call.stdin_flow() {
                    stdin_flow_on(&mut span, f);
                }
                if let Event::Failed(f) = &ev {
                    span.set_status(SpanStatus::error(f.to_string()));
                }
                span.end_with_timestamp(handed);
                // The dispatch's spans ended since the final event go to
                // an exec-server that takes them (its driver decides).
                let sc = self.control.parent.span().span_context().clone();
                if sc.is_sampled()
                    && let Carrier::Session(s) = &self.control.carrier
                {
                    s.forward(self.control.call_id, sc.trace_id());
                }
            }
        }
        Poll::Ready(Some(ev))
    }

    /// Counts an event taken; once a quarter of the session's output
    /// window has been taken since the last report, or at once when the
    /// exec-server asked, the driver is told (it acknowledges, and the
    /// exec-server may send that much more).
    fn took(&mut self, seq: u64, cost: u64) {
        let window = u64::from(self.control.carrier.output_window());
        if window == 0 {
            return;
        }
        if let Some((seq, cost)) = self.call.took(seq, cost, window / 4) {
            self.control.carrier.report_taken(Taken {
                call_id: self.control.call_id,
                seq,
                cost,
            });
        }
    }

    /// Writes to the remote stdin (the call must have been started with
    /// `stdin: true`). Large writes are split into chunks.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        self.control.write_stdin(data).await
    }

    /// Closes the remote stdin (EOF).
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.control.close_stdin().await
    }

    /// Delivers a signal to the remote process group.
    pub async fn signal(&self, signal: i32) -> Result<(), ClientError> {
        self.control.signal(signal).await
    }

    /// Kills the remote process group; the call ends with its exit event.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.control.cancel().await
    }

    /// Tells the remote terminal its window is now `rows` by `cols` (see
    /// [`Controller::resize`]).
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.control.resize(rows, cols).await
    }

    /// A sender for stdin, signals, resizes and cancel usable while another
    /// task reads events.
    pub fn controller(&self) -> Controller {
        self.control.clone()
    }

    /// Collects all output until the call ends.
    pub async fn output(mut self) -> Result<Output, ExecFailure> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(ev) = self.next().await {
            match ev {
                Event::Started { .. } | Event::Reconnecting | Event::Resumed => {}
                Event::Stdout(d) => stdout.extend_from_slice(&d),
                Event::Stderr(d) => stderr.extend_from_slice(&d),
                Event::Exited(status) => {
                    return Ok(Output {
                        stdout,
                        stderr,
                        status,
                    });
                }
                Event::Failed(f) => return Err(f),
            }
        }
        Err(self.control.carrier.failure())
    }
}

impl Stream for Execution {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution")
            .field("call_id", &self.control.call_id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        #[cfg(feature = "records")]
        if let Some(r) = self.delivery.record.as_mut() {
            r.failed("the caller stopped waiting for it (cancelled)");
        }
        // Nobody is listening any more: kill the remote process. This goes
        // through state the driver owns, never a queue that may be full.
        let traced = Traced::now(&self.control.parent, "cancel");
        self.control
            .carrier
            .cancel_on_drop(self.control.call_id, traced);
    }
}

/// What carries a call: a session of this client's, or a local agent.
#[derive(Debug, Clone)]
pub(crate) enum Carrier {
    /// A session to the exec-server.
    Session(SessionHandle),
    /// A connection to a local agent, which holds the session.
    #[cfg(feature = "agent")]
    Agent(crate::agent_call::AgentCall),
}

impl Carrier {
    /// Why the call ended without its last event.
    pub(crate) fn failure(&self) -> ExecFailure {
        match self {
            Carrier::Session(s) => ExecFailure::SessionLost(s.lost()),
            #[cfg(feature = "agent")]
            Carrier::Agent(a) => a.failure(),
        }
    }

    /// The caller went away before the last event: the call is cancelled,
    /// never through a queue that may be full.
    fn cancel_on_drop(&self, call_id: u64, traced: Traced) {
        match self {
            Carrier::Session(s) => s.cancel_on_drop(call_id, traced),
            #[cfg(feature = "agent")]
            Carrier::Agent(a) => a.cancel_on_drop(),
        }
    }

    /// The output window the caller's taking gives back (0: none to give).
    fn output_window(&self) -> u32 {
        match self {
            Carrier::Session(s) => s.output_window(),
            #[cfg(feature = "agent")]
            Carrier::Agent(_) => 0,
        }
    }

    fn report_taken(&self, taken: Taken) {
        match self {
            Carrier::Session(s) => s.report_taken(taken),
            // The agent gives its session's credit back as it passes
            // events on.
            #[cfg(feature = "agent")]
            Carrier::Agent(_) => {}
        }
    }
}

/// What a call's callers sent, counted for its `terminal.delivery` span
/// (input is never traced per message).
#[derive(Debug, Default)]
pub(crate) struct Sent {
    stdin_bytes: AtomicI64,
    resizes: AtomicI64,
}

/// Sends stdin, signals, resizes and cancel for one call.
#[derive(Debug, Clone)]
pub struct Controller {
    call_id: u64,
    carrier: Carrier,
    /// The call's dispatch context.
    parent: Context,
    /// Whether the call runs on a terminal.
    terminal: bool,
    sent: Arc<Sent>,
    /// Whether the driver has taken the call's start (`None`: a carrier
    /// that keeps a call's messages in order by itself).
    taken: Option<StartTaken>,
}

impl Controller {
    pub(crate) fn new(
        call_id: u64,
        carrier: Carrier,
        parent: Context,
        terminal: bool,
        taken: Option<StartTaken>,
        sent: Arc<Sent>,
    ) -> Self {
        Self {
            call_id,
            carrier,
            parent,
            terminal,
            sent,
            taken,
        }
    }

    /// Waits until a signal, cancel or resize cannot overtake the call's
    /// start.
    async fn started(&self) {
        if let Some(taken) = &self.taken {
            taken.wait().await;
        }
    }

    async fn send(&self, session: &SessionHandle, cmd: Command) -> Result<(), ClientError> {
        session.send(cmd).await.map_err(ClientError::SessionLost)
    }

    async fn control(&self, control: Control, what: &'static str) -> Result<(), ClientError> {
        // A signal or cancel must not overtake the call's start.
        self.started().await;
        match &self.carrier {
            Carrier::Session(s) => {
                let cmd = Command::Control {
                    call_id: self.call_id,
                    control,
                    traced: Traced::now(&self.parent, what),
                };
                self.send(s, cmd).await
            }
            #[cfg(feature = "agent")]
            Carrier::Agent(a) => a.control(control).await,
        }
    }

    /// Writes to the remote stdin, in chunks (each waits for room in the
    /// session's bounded queue).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_CHUNK) {
            match &self.carrier {
                Carrier::Session(s) => {
                    let cmd = Command::Stdin {
                        call_id: self.call_id,
                        data: Bytes::copy_from_slice(chunk),
                    };
                    self.send(s, cmd).await?;
                }
                #[cfg(feature = "agent")]
                Carrier::Agent(a) => a.write_stdin(Bytes::copy_from_slice(chunk)).await?,
            }
            let len = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            self.sent.stdin_bytes.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Tells the remote terminal its window is now `rows` by `cols`: the
    /// exec-server resizes it and the process gets `SIGWINCH`. A size out
    /// of bounds (1 to 10,000 of each), or a call without a terminal, is
    /// refused here ([`ClientError::InvalidRequest`]). Resizes are counted
    /// on the call's `terminal.delivery` span, never traced one by one.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        if !self.terminal {
            return Err(ClientError::InvalidRequest(InvalidRequest::NoTerminal));
        }
        InvalidRequest::check_size(rows, cols).map_err(ClientError::InvalidRequest)?;
        self.started().await;
        match &self.carrier {
            Carrier::Session(s) => {
                let cmd = Command::Resize {
                    call_id: self.call_id,
                    rows,
                    cols,
                };
                self.send(s, cmd).await?;
            }
            #[cfg(feature = "agent")]
            Carrier::Agent(a) => a.resize(rows, cols).await?,
        }
        self.sent.resizes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the remote stdin.
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.control(Control::CloseStdin, "stdin_close").await
    }

    /// Delivers a signal to the remote process group.
    pub async fn signal(&self, signal: i32) -> Result<(), ClientError> {
        self.control(Control::Signal(signal), "signal").await
    }

    /// Kills the remote process group.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.control(Control::Cancel, "cancel").await
    }
}

/// What `terminal.delivery` and `exec.first_output` need: per-event work
/// is counted here, never a span per chunk.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    #[cfg_attr(
        not(feature = "records"),
        allow(dead_code, reason = "read only when records are kept")
    )]
    record: Record,
    /// What the callers sent (`None`: nothing to count, in tests).
    sent: Option<Arc<Sent>>,
    /// Whether the call runs on a terminal (then its resizes are counted).
    terminal: bool,
    /// Whether the call is a login shell (named when it starts).
    login_shell: bool,
    dispatched: Option<SystemTime>,
    first: Option<SystemTime>,
    first_output: bool,
    events: i64,
    stdout_bytes: i64,
    stdout_chunks: i64,
    stderr_bytes: i64,
    stderr_chunks: i64,
    queue_nanos: i64,
}

impl Delivery {
    pub(crate) fn new(
        dispatched: SystemTime,
        record: Record,
        sent: Arc<Sent>,
        terminal: bool,
        login_shell: bool,
    ) -> Self {
        Self {
            dispatched: Some(dispatched),
            record,
            sent: Some(sent),
            terminal,
            login_shell,
            ..Self::default()
        }
    }

    /// Counts an event handed to the caller; records `exec.first_output`
    /// at the first output byte, and `terminal.delivery` and
    /// `terminal.handoff` at the last event. Returns when it was handed.
    fn handed(&mut self, routed: &Routed, parent: &Context) -> SystemTime {
        let now = SystemTime::now();
        self.first.get_or_insert(now);
        self.events += 1;
        self.queue_nanos = self
            .queue_nanos
            .saturating_add(i64::try_from(routed.at.elapsed().as_nanos()).unwrap_or(i64::MAX));
        let len = |d: &Bytes| i64::try_from(d.len()).unwrap_or(i64::MAX);
        match &routed.event {
            Event::Stdout(d) => {
                self.stdout_bytes += len(d);
                self.stdout_chunks += 1;
            }
            Event::Stderr(d) => {
                self.stderr_bytes += len(d);
                self.stderr_chunks += 1;
            }
            Event::Reconnecting | Event::Resumed => {}
            Event::Exited(_) | Event::Failed(_) => {
                self.finish_record(&routed.event);
                let tracer = opentelemetry::global::tracer("core-client");
                let sent = |n: fn(&Sent) -> &AtomicI64| {
                    self.sent
                        .as_ref()
                        .map_or(0, |s| n(s).load(Ordering::Relaxed))
                };
                let mut attributes = vec![
                    KeyValue::new("rex.events", self.events),
                    KeyValue::new("rex.stdout.bytes", self.stdout_bytes),
                    KeyValue::new("rex.stdout.chunks", self.stdout_chunks),
                    KeyValue::new("rex.stderr.bytes", self.stderr_bytes),
                    KeyValue::new("rex.stderr.chunks", self.stderr_chunks),
                    KeyValue::new("rex.queue_ns", self.queue_nanos),
                    KeyValue::new("rex.stdin.bytes", sent(|s| &s.stdin_bytes)),
                ];
                if self.terminal {
                    attributes.push(KeyValue::new("rex.resizes", sent(|s| &s.resizes)));
                }
                let mut span = tracer
                    .span_builder(spans::TERMINAL_DELIVERY)
                    .with_start_time(self.first.unwrap_or(now))
                    .with_attributes(attributes)
                    .start_with_context(&tracer, parent);
                span.end_with_timestamp(now);
                let mut handoff = tracer
                    .span_builder(spans::TERMINAL_HANDOFF)
                    .with_start_time(routed.decoded.min(now))
                    .start_with_context(&tracer, parent);
                handoff.end_with_timestamp(now);
            }
            Event::Started { program, .. } => {
                #[cfg(feature = "records")]
                if let Some(r) = self.record.as_mut() {
                    r.running(program.as_deref().filter(|_| self.login_shell));
                }
                #[cfg(not(feature = "records"))]
                let _ = program;
            }
        }
        if matches!(routed.event, Event::Stdout(_) | Event::Stderr(_)) && !self.first_output {
            self.first_output = true;
            #[cfg(feature = "records")]
            if let Some(r) = self.record.as_mut() {
                r.first_output();
            }
            let tracer = opentelemetry::global::tracer("core-client");
            let mut span = tracer
                .span_builder(spans::EXEC_FIRST_OUTPUT)
                .with_start_time(self.dispatched.unwrap_or(now))
                .start_with_context(&tracer, parent);
            span.end_with_timestamp(now);
        }
        now
    }

    #[cfg(feature = "records")]
    fn finish_record(&mut self, event: &Event) {
        if let Some(r) = self.record.as_mut() {
            let end = match event {
                Event::Exited(status) => Ok(*status),
                Event::Failed(f) => Err(f),
                _ => Ok(ExitStatus::Code(-1)),
            };
            let n = |b: i64| u64::try_from(b).unwrap_or(0);
            r.finished(end, n(self.stdout_bytes), n(self.stderr_bytes));
        }
    }

    #[cfg(not(feature = "records"))]
    fn finish_record(&mut self, _event: &Event) {}
}

/// What opening its session cost a call, on its `tool.dispatch`.
fn counters_on(span: &mut BoxedSpan, c: SessionCounters) {
    span.set_attribute(KeyValue::new(
        spans::ATTR_SESSION_FLIGHTS,
        i64::from(c.flights),
    ));
    if let Some(n) = c.round_trips {
        span.set_attribute(KeyValue::new(spans::ATTR_SESSION_ROUND_TRIPS, i64::from(n)));
    }
    span.set_attribute(KeyValue::new(
        spans::ATTR_SESSION_EARLY_RETRIES,
        i64::from(c.early_retries),
    ));
}

/// How the call's stdin window treated it: the widest window and the time
/// stdin waited for it.
fn stdin_flow_on(span: &mut BoxedSpan, f: StdinFlow) {
    let int = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
    span.set_attribute(KeyValue::new(
        spans::ATTR_STDIN_WINDOW,
        int(u128::from(f.window)),
    ));
    span.set_attribute(KeyValue::new(
        spans::ATTR_STDIN_WINDOW_WAIT,
        int(f.waited.as_nanos()),
    ));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::exec::{ExitStatus, Gap};
    use crate::session::Shared;
    use opentelemetry::trace::SpanContext;

    fn routed(event: Event) -> Routed {
        Routed {
            event,
            at: std::time::Instant::now(),
            decoded: SystemTime::now(),
            flow: None,
        }
    }

    #[tokio::test]
    async fn the_drivers_last_word_is_not_lost_to_a_full_queue() {
        let (commands, _commands_rx) = mpsc::channel(1);
        let (controls, _controls_rx) = mpsc::channel(1);
        let session = SessionHandle::new(
            commands,
            controls,
            Shared::new(&crate::Target::Relay("http://relay".into())),
            (0, 1),
            SpanContext::empty_context(),
        );
        let control = Controller::new(
            1,
            Carrier::Session(session),
            Context::new(),
            false,
            None,
            Arc::default(),
        );
        // A queue with no room left: the caller has not read.
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(routed(Event::Stdout(Bytes::from_static(b"before"))))
            .unwrap();
        assert!(
            tx.try_send(routed(Event::Started {
                pid: 1,
                program: None,
            }))
            .is_err()
        );
        let call = Arc::new(CallShared::default());
        let mut run = Execution::new(
            control,
            (rx, Arc::clone(&call)),
            None,
            Delivery::default(),
            None,
        );
        // The driver ends the call: its word goes to the shared state, and
        // the queue closes.
        let lost = ExecFailure::OutputLost {
            gap: Some(Gap {
                stdout: 10,
                stderr: 0,
            }),
            exit: Some(ExitStatus::Code(3)),
            session_expired: true,
        };
        call.end(lost.clone());
        drop(tx);
        // Everything queued first, then exactly that word.
        assert_eq!(
            run.next().await,
            Some(Event::Stdout(Bytes::from_static(b"before")))
        );
        assert_eq!(run.next().await, Some(Event::Failed(lost)));
        assert_eq!(run.next().await, None);
    }

    #[test]
    fn a_loss_says_how_much_only_when_it_is_known() {
        let known = ExecFailure::OutputLost {
            gap: Some(Gap {
                stdout: 0,
                stderr: 7,
            }),
            exit: None,
            session_expired: true,
        }
        .to_string();
        assert!(
            known.contains("0 bytes of stdout and 7 bytes of stderr"),
            "{known}"
        );
        assert!(known.contains("still running"), "{known}");
        let unknown = ExecFailure::OutputLost {
            gap: None,
            exit: None,
            session_expired: false,
        };
        let text = unknown.to_string();
        assert!(text.contains("unknown"), "{text}");
        assert!(!text.contains(" bytes"), "{text}");
        assert!(text.contains("no longer kept"), "{text}");
        assert_eq!(unknown.shell_code(), 255);
    }
}
