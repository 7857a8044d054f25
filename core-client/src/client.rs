//! The embeddable client: one warm session per exec-server, reused across
//! calls and re-established when it is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span, SpanKind, Status as SpanStatus, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::envelope;
use proto::limits::MAX_CHUNK;
use proto::pb::session::{Cancel, Signal, StdinClose, StdinData, envelope::Body};
use telemetry::{carriers, otel, spans};
use tokio::sync::{Mutex, mpsc};
use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::connect::{self, ConnectError};
use crate::exec::{Event, ExecFailure, ExecSpec, ExitStatus, Output};
use crate::records::CallRecord;
use crate::session::{self, Command, Routed, SessionHandle, Traced};

/// Why a call could not be dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No session could be established.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request is not valid (e.g. empty argv).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The session ended while the request was being sent.
    #[error("session lost: {0}")]
    SessionLost(String),
}

impl ClientError {
    /// Whether this is a connection or authentication failure (ssh uses 255).
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::SessionLost(_))
    }
}

/// A client for one exec-server.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    channel: Mutex<Option<Channel>>,
    session: Mutex<Option<SessionHandle>>,
    sessions_opened: AtomicU64,
}

impl Client {
    /// A client; nothing is dialled until the first call (or [`Client::connect`]).
    pub fn new(config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                channel: Mutex::new(None),
                session: Mutex::new(None),
                sessions_opened: AtomicU64::new(0),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// How many sessions this client has established so far (1 while one
    /// warm session serves every call).
    pub fn sessions_opened(&self) -> u64 {
        self.inner.sessions_opened.load(Ordering::Relaxed)
    }

    /// Establishes the session now (a warm-up), if not already live.
    pub async fn connect(&self) -> Result<(), ClientError> {
        self.acquire(&Context::new()).await.map(|_| ())
    }

    /// Closes the session cleanly (authenticated close). The next call
    /// opens a new one.
    pub async fn close(&self) {
        let session = self.inner.session.lock().await.take();
        if let Some(s) = session {
            s.close().await;
        }
    }

    async fn acquire(&self, parent: &Context) -> Result<SessionHandle, ClientError> {
        let tracer = opentelemetry::global::tracer("core-client");
        let mut span = tracer.start_with_context(spans::SESSION_ACQUIRE, parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        let mut guard = self.inner.session.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            span.set_attribute(KeyValue::new("rex.session.reused", true));
            span.end();
            return Ok(s.clone());
        }
        span.set_attribute(KeyValue::new("rex.session.reused", false));
        let config = &self.inner.config;
        let result = async {
            let channel = {
                let mut ch = self.inner.channel.lock().await;
                match ch.as_ref() {
                    Some(c) => c.clone(),
                    None => {
                        let c = connect::channel(config).await?;
                        *ch = Some(c.clone());
                        c
                    }
                }
            };
            tokio::time::timeout(
                config.handshake_timeout,
                connect::establish(config, channel, &cx),
            )
            .await
            .map_err(|_| ConnectError::Timeout("establishing the session"))?
        }
        .await;
        let established = match result {
            Ok(e) => e,
            Err(e) => {
                span.set_status(SpanStatus::error(e.to_string()));
                span.end();
                return Err(e.into());
            }
        };
        let handle = session::spawn(established, config.keepalive, config.outbound_queue);
        self.inner.sessions_opened.fetch_add(1, Ordering::Relaxed);
        *guard = Some(handle.clone());
        span.end();
        Ok(handle)
    }

    /// Runs a command; its events arrive on the returned [`Execution`] as
    /// the exec-server pushes them.
    pub async fn exec(&self, spec: ExecSpec) -> Result<Execution, ClientError> {
        if spec.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(ClientError::InvalidRequest("no program given".into()));
        }
        let parent = spec.parent.clone().unwrap_or_else(Context::current);
        let tracer = opentelemetry::global::tracer("core-client");
        let dispatched = SystemTime::now();
        let span = tracer
            .span_builder(spans::TOOL_DISPATCH)
            .with_kind(SpanKind::Client)
            .with_start_time(dispatched)
            .with_attributes(vec![KeyValue::new(
                "process.executable.name",
                spec.program(),
            )])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        let mut record = self.inner.config.metadata.as_ref().map(|store| {
            let args = self.inner.config.record_args.then(|| {
                spec.argv
                    .iter()
                    .skip(1)
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            });
            CallRecord::dispatched(
                store,
                self.inner.config.server.server_id(),
                spec.program(),
                args,
                span.span_context(),
            )
        });
        let trace = otel::trace_context_of(&cx).map(|tc| carriers::envelope::inject(&tc));
        let request = spec.to_request();
        let mut span = Some(span);
        // A session found dead before anything was sent is replaced once.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let session = match self.acquire(&cx).await {
                Ok(s) => s,
                Err(e) => {
                    if let Some(mut s) = span.take() {
                        s.set_status(SpanStatus::error(e.to_string()));
                        s.end();
                    }
                    if let Some(r) = record.as_mut() {
                        r.failed(&e.to_string());
                    }
                    return Err(e);
                }
            };
            if let Some(s) = span.as_mut() {
                s.set_attribute(KeyValue::new(
                    "rex.clock_offset_ns",
                    session.clock_offset_nanos(),
                ));
            }
            let call_id = session.next_call_id();
            let bytes = envelope::encode_new(call_id, trace.clone(), Body::Exec(request.clone()))
                .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
            let (tx, rx) = mpsc::channel(self.inner.config.events_per_call);
            match session
                .send(Command::Start {
                    call_id,
                    envelope: bytes,
                    events: tx,
                    trace: Traced {
                        parent: cx.clone(),
                        what: "exec",
                        enqueued: SystemTime::now(),
                    },
                })
                .await
            {
                Ok(()) => {
                    return Ok(Execution {
                        control: Controller {
                            call_id,
                            session,
                            trace,
                            parent: cx,
                        },
                        events: rx,
                        finished: false,
                        span,
                        delivery: Delivery::new(dispatched, record),
                    });
                }
                Err(reason) if attempts >= 2 => {
                    if let Some(mut s) = span.take() {
                        s.set_status(SpanStatus::error(reason.clone()));
                        s.end();
                    }
                    if let Some(r) = record.as_mut() {
                        r.failed(&reason);
                    }
                    return Err(ClientError::SessionLost(reason));
                }
                Err(_) => continue,
            }
        }
    }

    /// Runs a command with stdin closed and collects its output.
    pub async fn output(&self, spec: ExecSpec) -> Result<Result<Output, ExecFailure>, ClientError> {
        let exec = self.exec(spec).await?;
        Ok(exec.output().await)
    }
}

/// A running remote command.
pub struct Execution {
    control: Controller,
    events: mpsc::Receiver<Routed>,
    finished: bool,
    span: Option<BoxedSpan>,
    delivery: Delivery,
}

/// What `terminal.delivery` and `exec.first_output` need: per-event work
/// is counted here, never a span per chunk.
#[derive(Debug, Default)]
struct Delivery {
    record: Option<CallRecord>,
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
    fn new(dispatched: SystemTime, record: Option<CallRecord>) -> Self {
        Self {
            dispatched: Some(dispatched),
            record,
            ..Self::default()
        }
    }

    /// Counts an event handed to the caller; records `exec.first_output`
    /// at the first output byte and `terminal.delivery` at the last event.
    fn handed(&mut self, routed: &Routed, parent: &Context) {
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
                if let Some(r) = self.record.as_mut() {
                    let end = match &routed.event {
                        Event::Exited(status) => Ok(*status),
                        Event::Failed(f) => Err(f),
                        _ => Ok(ExitStatus::Code(-1)),
                    };
                    let n = |b: i64| u64::try_from(b).unwrap_or(0);
                    r.finished(end, n(self.stdout_bytes), n(self.stderr_bytes));
                }
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
            }
            Event::Started { .. } => {
                if let Some(r) = self.record.as_mut() {
                    r.running();
                }
            }
        }
        if matches!(routed.event, Event::Stdout(_) | Event::Stderr(_)) && !self.first_output {
            self.first_output = true;
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

impl Execution {
    /// The call id on its session.
    pub fn call_id(&self) -> u64 {
        self.control.call_id
    }

    /// The call's trace id (32 hex digits), when it is traced.
    pub fn trace_id(&self) -> Option<String> {
        let sc = self.control.parent.span().span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    /// The trace context the call was dispatched with.
    pub fn trace_context(&self) -> Option<&proto::pb::session::TraceContext> {
        self.control.trace.as_ref()
    }

    /// The next event, or None after the last one. If the session is lost
    /// mid-call, the last event is [`Event::Failed`].
    pub async fn next(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        let routed = match self.events.recv().await {
            Some(routed) => routed,
            None => Routed {
                event: Event::Failed(ExecFailure::SessionLost(
                    self.control.session.reason().await,
                )),
                at: std::time::Instant::now(),
            },
        };
        self.delivery.handed(&routed, &self.control.parent);
        let ev = routed.event;
        if matches!(ev, Event::Exited(_) | Event::Failed(_)) {
            self.finished = true;
            if let Some(mut span) = self.span.take() {
                if let Event::Failed(f) = &ev {
                    span.set_status(SpanStatus::error(f.to_string()));
                }
                span.end();
            }
        }
        Some(ev)
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
        Err(ExecFailure::SessionLost("no exit event".into()))
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(r) = self.delivery.record.as_mut() {
                r.failed("the caller stopped waiting for it (cancelled)");
            }
            // Nobody is listening any more: kill the remote process.
            if let Ok(bytes) = self.control.encode(Body::Cancel(Cancel {})) {
                let trace = self.control.traced("cancel");
                self.control
                    .session
                    .try_send(Command::Send(bytes, Some(trace)));
            }
            self.control
                .session
                .try_send(Command::Forget(self.control.call_id));
        }
    }
}

/// Sends stdin, signals and cancel for one call.
#[derive(Debug, Clone)]
pub struct Controller {
    call_id: u64,
    session: SessionHandle,
    trace: Option<proto::pb::session::TraceContext>,
    /// The call's `tool.dispatch` context.
    parent: Context,
}

impl Controller {
    fn encode(&self, body: Body) -> Result<Bytes, ClientError> {
        envelope::encode_new(self.call_id, self.trace.clone(), body)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))
    }

    fn traced(&self, what: &'static str) -> Traced {
        Traced {
            parent: self.parent.clone(),
            what,
            enqueued: SystemTime::now(),
        }
    }

    /// Sends a message; control messages (`what` given) are traced.
    async fn send(&self, body: Body, what: Option<&'static str>) -> Result<(), ClientError> {
        let bytes = self.encode(body)?;
        let trace = what.map(|w| self.traced(w));
        self.session
            .send(Command::Send(bytes, trace))
            .await
            .map_err(ClientError::SessionLost)
    }

    /// Writes to the remote stdin, in chunks.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_CHUNK) {
            self.send(
                Body::Stdin(StdinData {
                    data: Bytes::copy_from_slice(chunk),
                }),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Closes the remote stdin.
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.send(Body::StdinClose(StdinClose {}), Some("stdin_close"))
            .await
    }

    /// Delivers a signal to the remote process group.
    pub async fn signal(&self, signal: i32) -> Result<(), ClientError> {
        self.send(Body::Signal(Signal { signal }), Some("signal"))
            .await
    }

    /// Kills the remote process group.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.send(Body::Cancel(Cancel {}), Some("cancel")).await
    }
}
