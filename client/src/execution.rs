//! A running remote command: its events as a stream ([`Execution`]), the
//! handle that sends its input ([`Controller`]), and the delivery spans
//! (`terminal.delivery`, `exec.first_output`).

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span, Status as SpanStatus, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::limits::MAX_CHUNK;
use telemetry::spans;
use tokio::sync::mpsc;

use crate::error::ClientError;
#[cfg(feature = "records")]
use crate::exec::ExitStatus;
use crate::exec::{Event, ExecFailure, Output};
#[cfg(feature = "records")]
use crate::records::CallRecord;
use crate::session::{Command, Control, Routed, SessionHandle, Traced};

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
    span: Option<BoxedSpan>,
    delivery: Delivery,
}

impl Execution {
    pub(crate) fn new(
        control: Controller,
        events: mpsc::Receiver<Routed>,
        span: Option<BoxedSpan>,
        delivery: Delivery,
    ) -> Self {
        Self {
            control,
            events,
            finished: false,
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
            // The session ended without a word for this call.
            Poll::Ready(None) => Routed {
                event: Event::Failed(ExecFailure::SessionLost(self.control.session.lost())),
                at: std::time::Instant::now(),
                decoded: SystemTime::now(),
            },
        };
        let handed = self.delivery.handed(&routed, &self.control.parent);
        let ev = routed.event;
        if matches!(ev, Event::Exited(_) | Event::Failed(_)) {
            self.finished = true;
            if let Some(mut span) = self.span.take() {
                if let Event::Failed(f) = &ev {
                    span.set_status(SpanStatus::error(f.to_string()));
                }
                span.end_with_timestamp(handed);
            }
        }
        Poll::Ready(Some(ev))
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

    /// A sender for stdin, signals and cancel usable while another task
    /// reads events.
    pub fn controller(&self) -> Controller {
        self.control.clone()
    }

    /// Collects all output until the call ends.
    pub async fn output(mut self) -> Result<Output, ExecFailure> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(ev) = self.next().await {
            match ev {
                Event::Started { .. } => {}
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
        Err(ExecFailure::SessionLost(self.control.session.lost()))
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
            .session
            .cancel_on_drop(self.control.call_id, traced);
    }
}

/// Sends stdin, signals and cancel for one call.
#[derive(Debug, Clone)]
pub struct Controller {
    call_id: u64,
    session: SessionHandle,
    /// The call's `tool.dispatch` context.
    parent: Context,
}

impl Controller {
    pub(crate) fn new(call_id: u64, session: SessionHandle, parent: Context) -> Self {
        Self {
            call_id,
            session,
            parent,
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), ClientError> {
        self.session
            .send(cmd)
            .await
            .map_err(ClientError::SessionLost)
    }

    async fn control(&self, control: Control, what: &'static str) -> Result<(), ClientError> {
        self.send(Command::Control {
            call_id: self.call_id,
            control,
            traced: Traced::now(&self.parent, what),
        })
        .await
    }

    /// Writes to the remote stdin, in chunks (each waits for room in the
    /// session's bounded queue).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_CHUNK) {
            self.send(Command::Stdin {
                call_id: self.call_id,
                data: Bytes::copy_from_slice(chunk),
            })
            .await?;
        }
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
    pub(crate) fn new(dispatched: SystemTime, record: Record) -> Self {
        Self {
            dispatched: Some(dispatched),
            record,
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
            Event::Exited(_) | Event::Failed(_) => {
                self.finish_record(&routed.event);
                let tracer = opentelemetry::global::tracer("core-client");
                let mut span = tracer
                    .span_builder(spans::TERMINAL_DELIVERY)
                    .with_start_time(self.first.unwrap_or(now))
                    .with_attributes(vec![
                        KeyValue::new("rex.events", self.events),
                        KeyValue::new("rex.stdout.bytes", self.stdout_bytes),
                        KeyValue::new("rex.stdout.chunks", self.stdout_chunks),
                        KeyValue::new("rex.stderr.bytes", self.stderr_bytes),
                        KeyValue::new("rex.stderr.chunks", self.stderr_chunks),
                        KeyValue::new("rex.queue_ns", self.queue_nanos),
                    ])
                    .start_with_context(&tracer, parent);
                span.end_with_timestamp(now);
                let mut handoff = tracer
                    .span_builder(spans::TERMINAL_HANDOFF)
                    .with_start_time(routed.decoded.min(now))
                    .start_with_context(&tracer, parent);
                handoff.end_with_timestamp(now);
            }
            Event::Started { .. } =>
            {
                #[cfg(feature = "records")]
                if let Some(r) = self.record.as_mut() {
                    r.running();
                }
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
