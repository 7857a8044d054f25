//! The embeddable client: one session per exec-server, reused across calls
//! and re-established when it is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use lifecycle::Tasks;
use opentelemetry::trace::{Span, SpanKind, Status as SpanStatus, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use telemetry::{carriers, otel, spans};
use tokio::sync::{Mutex, mpsc};
use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::connect;
use crate::error::{ClientError, ConnectError, InvalidRequest, Waiting};
use crate::exec::{ExecFailure, ExecSpec, Output};
use crate::execution::{Controller, Delivery, Execution};
#[cfg(feature = "records")]
use crate::records::CallRecord;
use crate::session::{Command, SessionHandle, Traced};

/// Room an exec request's envelope needs around it: the call id, the trace
/// context, the send time and the field tags.
const ENVELOPE_ROOM: usize = 1024;

/// A client for one exec-server.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// The exec-server's id (derived from its key once, not per call).
    server_id: String,
    channel: Mutex<Option<Channel>>,
    session: Mutex<Option<SessionHandle>>,
    sessions_opened: AtomicU64,
    /// The sessions' driver tasks. A session closes by itself once every
    /// handle on it (this client, its executions and controllers) is gone.
    tasks: Tasks,
}

/// The record of a call, when records are kept.
#[cfg(feature = "records")]
type Record = Option<CallRecord>;
#[cfg(not(feature = "records"))]
type Record = Option<std::convert::Infallible>;

impl Client {
    /// A client; nothing is dialled until the first call (or [`Client::connect`]).
    pub fn new(config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                server_id: config.server.server_id(),
                config,
                channel: Mutex::new(None),
                session: Mutex::new(None),
                sessions_opened: AtomicU64::new(0),
                tasks: Tasks::new(),
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
        self.acquire(&Context::new(), SystemTime::now())
            .await
            .map(|_| ())
    }

    /// Closes the session cleanly (authenticated close) and waits until it
    /// has ended. The next call opens a new one.
    pub async fn close(&self) {
        let session = self.inner.session.lock().await.take();
        if let Some(s) = session {
            s.close().await;
        }
    }

    /// A ready session for a call, from `start`; the session and when it
    /// was in hand (where the call's next stage starts).
    async fn acquire(
        &self,
        parent: &Context,
        start: SystemTime,
    ) -> Result<(SessionHandle, SystemTime), ClientError> {
        let tracer = opentelemetry::global::tracer("core-client");
        let mut span = tracer
            .span_builder(spans::SESSION_ACQUIRE)
            .with_start_time(start)
            .start_with_context(&tracer, parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        let mut guard = self.inner.session.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            span.set_attribute(KeyValue::new("rex.session.reused", true));
            let ready = SystemTime::now();
            span.end_with_timestamp(ready);
            return Ok((s.clone(), ready));
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
                connect::open(config, channel, &cx, &self.inner.tasks),
            )
            .await
            .map_err(|_| ConnectError::Timeout(Waiting::Establishing))?
        }
        .await;
        let handle = match result {
            Ok((handle, _)) => handle,
            Err(e) => {
                span.set_status(SpanStatus::error(e.to_string()));
                span.end();
                return Err(e.into());
            }
        };
        self.inner.sessions_opened.fetch_add(1, Ordering::Relaxed);
        *guard = Some(handle.clone());
        let ready = SystemTime::now();
        span.end_with_timestamp(ready);
        Ok((handle, ready))
    }

    /// Runs a command; its events arrive on the returned [`Execution`] as
    /// the exec-server pushes them.
    pub async fn exec(&self, spec: ExecSpec) -> Result<Execution, ClientError> {
        if spec.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(ClientError::InvalidRequest(InvalidRequest::NoProgram));
        }
        let request = spec.to_request();
        // The request must fit in one session message (with room for the
        // envelope around it).
        let len = prost::Message::encoded_len(&request);
        if len + ENVELOPE_ROOM > proto::limits::MAX_ENVELOPE {
            return Err(ClientError::InvalidRequest(InvalidRequest::TooLarge(
                proto::envelope::EnvelopeError::TooLarge {
                    len: len + ENVELOPE_ROOM,
                    max: proto::limits::MAX_ENVELOPE,
                },
            )));
        }
        let parent = spec.parent.clone().unwrap_or_else(Context::current);
        let tracer = opentelemetry::global::tracer("core-client");
        let dispatched = SystemTime::now();
        let span = tracer
            .span_builder(spans::TOOL_DISPATCH)
            .with_kind(SpanKind::Client)
            .with_start_time(dispatched)
            .with_attributes(vec![
                KeyValue::new("process.executable.name", spec.program()),
                KeyValue::new("rex.server.id", self.inner.server_id.clone()),
            ])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        let record = self.record(&spec, span.span_context());
        let trace = otel::trace_context_of(&cx).map(|tc| carriers::envelope::inject(&tc));
        let mut dispatch = Dispatch {
            span: Some(span),
            record,
        };
        // A session found dead before anything was sent is replaced once.
        let mut attempts = 0;
        // The stages tile the dispatch: each starts where the previous one
        // ended, from the same timestamp.
        let asked = SystemTime::now();
        let mut prepare = tracer
            .span_builder(spans::DISPATCH_PREPARE)
            .with_start_time(dispatched)
            .start_with_context(&tracer, &cx);
        prepare.end_with_timestamp(asked);
        let mut from = asked;
        loop {
            attempts += 1;
            let (session, ready) = match self.acquire(&cx, from).await {
                Ok(s) => s,
                Err(e) => return Err(dispatch.fail(e)),
            };
            from = ready;
            if let Some(s) = dispatch.span.as_mut() {
                s.set_attribute(KeyValue::new(
                    "rex.clock_offset_ns",
                    session.clock_offset_nanos(),
                ));
            }
            let (tx, rx) = mpsc::channel(self.inner.config.events_per_call);
            let traced = Traced::at(&cx, "exec", ready);
            let started = session
                .start(|call_id| Command::Start {
                    call_id,
                    request: request.clone(),
                    trace: trace.clone(),
                    events: tx,
                    traced,
                })
                .await;
            match started {
                Ok(call_id) => {
                    let control = Controller::new(call_id, session, cx);
                    return Ok(Execution::new(
                        control,
                        rx,
                        dispatch.span.take(),
                        Delivery::new(dispatched, dispatch.record.take()),
                    ));
                }
                // The session ended before the request was queued: a new
                // one is opened, once.
                Err(_) if attempts < 2 => continue,
                Err(lost) => return Err(dispatch.fail(ClientError::SessionLost(lost))),
            }
        }
    }

    #[cfg(feature = "records")]
    fn record(&self, spec: &ExecSpec, sc: &opentelemetry::trace::SpanContext) -> Record {
        let config = &self.inner.config;
        config.metadata.as_ref().map(|store| {
            let args = config.record_args.then(|| {
                spec.argv
                    .iter()
                    .skip(1)
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            });
            CallRecord::dispatched(
                store,
                self.inner.server_id.clone(),
                spec.program(),
                args,
                sc,
            )
        })
    }

    #[cfg(not(feature = "records"))]
    fn record(&self, _spec: &ExecSpec, _sc: &opentelemetry::trace::SpanContext) -> Record {
        None
    }

    /// Runs a command with stdin closed and collects its output.
    pub async fn output(&self, spec: ExecSpec) -> Result<Result<Output, ExecFailure>, ClientError> {
        let exec = self.exec(spec).await?;
        Ok(exec.output().await)
    }
}

/// A call being dispatched: its `tool.dispatch` span and record, until an
/// [`Execution`] takes them over.
struct Dispatch {
    span: Option<opentelemetry::global::BoxedSpan>,
    record: Record,
}

impl Dispatch {
    /// The call could not be dispatched: the span and the record say why.
    fn fail(&mut self, err: ClientError) -> ClientError {
        if let Some(mut s) = self.span.take() {
            s.set_status(SpanStatus::error(err.to_string()));
            s.end();
        }
        #[cfg(feature = "records")]
        if let Some(r) = self.record.as_mut() {
            r.failed(&err.to_string());
        }
        err
    }
}
