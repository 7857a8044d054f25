//! One client session: the Noise handshake, then a single loop that reads
//! frames, dispatches session messages, and pushes terminal events back.
//!
//! The loop never blocks one direction on the other: stdin waiting for a
//! slow process does not stop output from flowing back, and output waiting
//! for a slow client does not stop signals or cancel from arriving.
//!
//! Spans made here: `relay.frame.recv` for the client's exec request and
//! control messages; `rpc.server.exec` per call, ending when its final
//! event has left in a record; `terminal.push` from the first event taken
//! to the last one sent, with byte, chunk and queue-time totals; and
//! `relay.frame.send` for the started and final events and the first and
//! last output chunk. Frames carrying those get the call's dispatch context
//! as their hop header, so the relay's `relay.forward` joins the trace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};
use proto::clock::now_unix_nanos;
use proto::envelope;
use proto::keys::PublicKey;
use proto::limits::MAX_CHUNK;
use proto::noise::{self, HandshakeError, ReplayGuard, SessionConfig, Transport};
use proto::pb::session::{Envelope, ExecError};
use proto::pb::session::{
    ExecErrorKind, ExecRequest, HelloAck, Pong, TerminalEvent, TraceContext as PbTrace,
    envelope::Body, exited, terminal_event,
};
use proto::pb::tunnel::{CloseReason, Frame, FrameKind};
use telemetry::framing::{self, SendTracker};
use telemetry::w3c::Extracted;
use telemetry::{carriers, otel, spans};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::config::ExecServerConfig;
use crate::process::{self, Control, Outgoing, ProcessIo, ProcessTrace, STDIN_QUEUE};

/// Terminal events queued from a session's processes before they wait.
pub const EVENT_QUEUE: usize = 64;
/// Plaintext buffered in the Noise transport before the loop stops taking
/// more events (the outbound gRPC queue is full).
const TRANSPORT_HIGH_WATER: usize = 256 * 1024;
/// Signals queued per process.
const CONTROL_QUEUE: usize = 16;

/// State shared by every session of one exec-server.
#[derive(Debug)]
pub struct ServerContext {
    /// Settings.
    pub config: ExecServerConfig,
    /// The route bound into the handshake prologue (this server's id).
    pub route: String,
    /// Replay protection for handshake message 1.
    pub replay: Mutex<ReplayGuard>,
    /// Limits concurrent sessions.
    pub sessions: Arc<tokio::sync::Semaphore>,
    /// Every process task.
    pub tasks: TaskTracker,
}

impl ServerContext {
    /// Shared state for an exec-server.
    pub fn new(config: ExecServerConfig, tasks: TaskTracker) -> Arc<Self> {
        let route = config.key.public().server_id();
        let sessions = Arc::new(tokio::sync::Semaphore::new(config.max_sessions));
        Arc::new(Self {
            config,
            route,
            replay: Mutex::new(ReplayGuard::default()),
            sessions,
            tasks,
        })
    }
}

/// The outbound half of a tunnel stream.
pub use proto::link::FrameSender;

/// Sends a clear close frame (best effort).
pub fn send_clear_close(out: &FrameSender, reason: CloseReason) {
    let _ = out.try_send(Ok(proto::frames::close(reason)));
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The handshake failed or was refused.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The client did not complete the handshake in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The transport failed (decrypt failure, bad record).
    #[error("transport: {0}")]
    Transport(#[from] noise::TransportError),
    /// The client broke the session protocol.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The link to the client went away.
    #[error("client link lost")]
    LinkLost,
}

struct Call {
    control: mpsc::Sender<Control>,
    stdin: Option<mpsc::Sender<Bytes>>,
    cancel: CancellationToken,
    /// `rpc.server.exec`.
    span: BoxedSpan,
    /// Its context (parent of `terminal.push`).
    exec_cx: Context,
    /// What events carry: `process.run`'s context.
    trace: PbTrace,
    /// What errors carry: `rpc.server.exec`'s context (an error may come
    /// before `process.run` exists).
    error_trace: PbTrace,
    /// The hop header for the call's traced frames (its dispatch context).
    hop: Option<String>,
    program: String,
    push: Push,
    /// Its metadata record (latest state), when records are kept.
    record: Option<metadata::ProcessRecord>,
}

/// `terminal.push` and its totals (per-chunk work is counted, not spanned).
#[derive(Default)]
struct Push {
    span: Option<BoxedSpan>,
    /// `terminal.push`'s context (empty until the first event).
    cx: Context,
    events: i64,
    stdout_bytes: i64,
    stdout_chunks: i64,
    stderr_bytes: i64,
    stderr_chunks: i64,
    queued: Duration,
    /// The latest output chunk, made a span once the final event shows it
    /// was the last (for a one-chunk output, the first chunk again).
    last_chunk: Option<LastChunk>,
}

/// When the latest output chunk was taken, the stream offset just past it,
/// and when the record holding its last byte left.
#[derive(Clone, Copy)]
struct LastChunk {
    taken: SystemTime,
    mark: u64,
    sent: Option<SystemTime>,
}

impl Push {
    fn output_chunks(&self) -> i64 {
        self.stdout_chunks + self.stderr_chunks
    }

    fn attributes(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("rex.events", self.events),
            KeyValue::new("rex.stdout.bytes", self.stdout_bytes),
            KeyValue::new("rex.stdout.chunks", self.stdout_chunks),
            KeyValue::new("rex.stderr.bytes", self.stderr_bytes),
            KeyValue::new("rex.stderr.chunks", self.stderr_chunks),
            KeyValue::new(
                "rex.queue_ns",
                i64::try_from(self.queued.as_nanos()).unwrap_or(i64::MAX),
            ),
        ]
    }
}

/// Serves one session over a tunnel stream until it ends.
pub async fn serve<S>(
    mut inbound: S,
    outbound: FrameSender,
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
) -> Result<(), SessionError>
where
    S: Stream<Item = Result<Frame, Status>> + Unpin + Send,
{
    let Ok(_permit) = Arc::clone(&ctx.sessions).try_acquire_owned() else {
        send_clear_close(&outbound, CloseReason::Busy);
        return Err(SessionError::Protocol("too many sessions"));
    };
    let first = tokio::time::timeout(ctx.config.handshake_timeout, inbound.next()).await;
    let msg1 = match first {
        Err(_) => {
            send_clear_close(&outbound, CloseReason::Timeout);
            return Err(SessionError::HandshakeTimeout);
        }
        Ok(Some(Ok(f))) if f.kind == FrameKind::Handshake as i32 => f.payload,
        Ok(Some(Ok(_))) => {
            send_clear_close(&outbound, CloseReason::Protocol);
            linger(&mut inbound).await;
            return Err(SessionError::Protocol("expected a handshake frame"));
        }
        Ok(_) => return Err(SessionError::LinkLost),
    };
    let accepted = {
        let mut replay = ctx.replay.lock().unwrap_or_else(|e| e.into_inner());
        noise::accept(
            &ctx.config.key,
            ctx.route.as_bytes(),
            &msg1,
            SystemTime::now(),
            &ctx.config.authorized,
            &mut replay,
            SessionConfig::default(),
        )
    };
    let accepted = match accepted {
        Ok(a) => a,
        Err(e) => {
            let reason = match &e {
                HandshakeError::Unauthorized { client } => {
                    tracing::warn!(client = %client.short(), "refused a client key that is not authorized");
                    CloseReason::Unauthorized
                }
                HandshakeError::Busy => CloseReason::Busy,
                other => {
                    tracing::warn!(error = %other, "handshake failed");
                    CloseReason::HandshakeFailed
                }
            };
            send_clear_close(&outbound, reason);
            linger(&mut inbound).await;
            return Err(e.into());
        }
    };
    if outbound
        .send(Ok(proto::frames::handshake(accepted.msg2.into())))
        .await
        .is_err()
    {
        return Err(SessionError::LinkLost);
    }
    let client = accepted.client;
    tracing::debug!(client = %client.short(), "session established");
    let mut driver = Driver::new(accepted.transport, outbound, ctx, client, shutdown);
    let result = driver.run(&mut inbound).await;
    driver.finish();
    if result.is_ok() {
        linger(&mut inbound).await;
    }
    result
}

/// How long a closing side waits for the peer to end the link, so that
/// its last frame (a close) is delivered rather than reset with the stream.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (bounded) until the peer ends the link.
async fn linger<S>(inbound: &mut S)
where
    S: Stream<Item = Result<Frame, Status>> + Unpin + Send,
{
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(_)) = inbound.next().await {}
    })
    .await;
}

struct Driver {
    transport: Transport,
    outbound: FrameSender,
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
    session_cancel: CancellationToken,
    calls: HashMap<u64, Call>,
    events_tx: mpsc::Sender<Outgoing>,
    events_rx: Option<mpsc::Receiver<Outgoing>>,
    /// Stdin waiting for room in a process's queue; while set, no more
    /// frames are read (so stdin order is kept and nothing is dropped).
    pending_stdin: Option<(u64, Bytes)>,
    client: PublicKey,
    tracer: BoxedTracer,
    /// `relay.frame.send` (and finished calls') spans waiting for their
    /// bytes to leave.
    sends: SendTracker,
    /// The frame being decoded: its arrival and its hop context.
    frame: (SystemTime, Option<SpanContext>),
    /// Per call with output in flight, the stream offset its latest chunk
    /// ends at (at most one entry per call).
    unsent_chunks: Vec<(u64, u64)>,
    /// This session's local id (for process records).
    session_id: String,
}

impl Driver {
    fn new(
        transport: Transport,
        outbound: FrameSender,
        ctx: Arc<ServerContext>,
        client: PublicKey,
        shutdown: CancellationToken,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let session_cancel = shutdown.child_token();
        Self {
            transport,
            outbound,
            ctx,
            shutdown,
            session_cancel,
            calls: HashMap::new(),
            events_tx,
            events_rx: Some(events_rx),
            pending_stdin: None,
            client,
            tracer: opentelemetry::global::tracer("exec-server"),
            sends: SendTracker::default(),
            frame: (SystemTime::now(), None),
            unsent_chunks: Vec::new(),
            session_id: metadata::record::new_id(),
        }
    }

    async fn run<S>(&mut self, inbound: &mut S) -> Result<(), SessionError>
    where
        S: Stream<Item = Result<Frame, Status>> + Unpin + Send,
    {
        let outbound = self.outbound.clone();
        let shutdown = self.shutdown.clone();
        let mut events_rx = self
            .events_rx
            .take()
            .ok_or(SessionError::Protocol("driver reused"))?;
        loop {
            let can_take_events = self.transport.pending_bytes() < TRANSPORT_HIGH_WATER;
            let has_output = self.transport.has_pending();
            let stdin_target = self
                .pending_stdin
                .as_ref()
                .and_then(|(id, _)| self.calls.get(id))
                .and_then(|c| c.stdin.clone());
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    proto::link::close_session(&mut self.transport, &self.outbound, "exec-server shutting down").await;
                    return Ok(());
                }
                permit = outbound.reserve(), if has_output => {
                    let Ok(permit) = permit else { return Err(SessionError::LinkLost) };
                    if let Some(msg) = self.transport.poll_transmit_until(SystemTime::now(), self.sends.next_boundary())? {
                        let mut frame = proto::frames::data(msg);
                        let sent = self.transport.sent_offset();
                        let done = self.sends.transmitted(sent);
                        if let Some(hop) = &done.hop {
                            frame.hop_traceparent.clone_from(hop);
                        }
                        permit.send(Ok(frame));
                        done.end();
                        self.chunks_sent(sent);
                    }
                }
                Some(out) = events_rx.recv(), if can_take_events => {
                    self.push_event(out)?;
                }
                permit = reserve_opt(stdin_target.as_ref()), if self.pending_stdin.is_some() => {
                    // If the process is gone, its stdin is dropped.
                    if let (Some(permit), Some((_, data))) = (permit, self.pending_stdin.take()) {
                        permit.send(data);
                    }
                    if self.drain_envelopes()? {
                        return Ok(());
                    }
                }
                f = inbound.next(), if self.pending_stdin.is_none() => {
                    match f {
                        None | Some(Err(_)) => return Err(SessionError::LinkLost),
                        Some(Ok(f)) => {
                            if self.handle_frame(f)? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Handles a frame; returns true when the session is over.
    fn handle_frame(&mut self, f: Frame) -> Result<bool, SessionError> {
        match FrameKind::try_from(f.kind) {
            Ok(FrameKind::Data) => {}
            Ok(FrameKind::Close) => return Ok(true),
            _ => return Err(SessionError::Protocol("unexpected frame kind")),
        }
        self.frame = (SystemTime::now(), framing::hop_context(&f.hop_traceparent));
        self.transport.receive(&f.payload)?;
        self.drain_envelopes()
    }

    /// Handles the envelopes decoded so far, stopping early when stdin has
    /// to wait for room; returns true when the client closed the session.
    fn drain_envelopes(&mut self) -> Result<bool, SessionError> {
        while self.pending_stdin.is_none() {
            let Some(bytes) = self.transport.poll_envelope()? else {
                break;
            };
            let env = envelope::decode(&bytes)
                .map_err(|_| SessionError::Protocol("undecodable session message"))?;
            self.handle_envelope(env)?;
        }
        Ok(self.pending_stdin.is_none() && self.transport.peer_closed().is_some())
    }

    /// Records `relay.frame.recv` for a traced client message.
    fn trace_recv(&self, env: &Envelope, what: &'static str) -> Context {
        let parent = env
            .trace
            .as_ref()
            .map(|t| otel::context_from(&carriers::envelope::extract(t)))
            .unwrap_or_default();
        framing::record_recv(
            &self.tracer,
            &parent,
            self.frame.0,
            what,
            std::slice::from_ref(&self.frame.1),
            vec![],
        );
        parent
    }

    fn handle_envelope(&mut self, env: Envelope) -> Result<(), SessionError> {
        let call_id = env.call_id;
        let what = match &env.body {
            Some(Body::Exec(_)) => Some("exec"),
            Some(Body::StdinClose(_)) => Some("stdin_close"),
            Some(Body::Signal(_)) => Some("signal"),
            Some(Body::Cancel(_)) => Some("cancel"),
            _ => None,
        };
        if let Some(what) = what {
            self.trace_recv(&env, what);
        }
        match env.body {
            Some(Body::Hello(_)) => {
                let ack = HelloAck {
                    server_version: env!("CARGO_PKG_VERSION").into(),
                    max_processes: u32::try_from(self.ctx.config.max_processes_per_session)
                        .unwrap_or(u32::MAX),
                    max_chunk: MAX_CHUNK as u32,
                };
                self.send_envelope(0, PbTrace::default(), Body::HelloAck(ack))?;
            }
            Some(Body::Ping(p)) => {
                let pong = Pong {
                    nonce: p.nonce,
                    recv_time_unix_nanos: now_unix_nanos(),
                };
                self.send_envelope(0, PbTrace::default(), Body::Pong(pong))?;
            }
            Some(Body::Exec(req)) => {
                self.start_call(call_id, env.trace.unwrap_or_default(), req)?
            }
            Some(Body::Stdin(data)) => {
                if self.calls.get(&call_id).is_some_and(|c| c.stdin.is_some()) {
                    self.pending_stdin = Some((call_id, data.data));
                }
            }
            Some(Body::StdinClose(_)) => {
                // Earlier stdin is already queued (reading stops while stdin
                // waits), so dropping the sender closes after the data.
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.stdin = None;
                }
            }
            Some(Body::Signal(s)) => {
                if let Some(call) = self.calls.get(&call_id) {
                    let _ = call.control.try_send(Control::Signal(s.signal));
                }
            }
            Some(Body::Cancel(_)) => {
                if let Some(call) = self.calls.get(&call_id) {
                    call.cancel.cancel();
                }
            }
            Some(Body::Pong(_)) => {}
            Some(Body::HelloAck(_) | Body::Event(_)) | None => {
                return Err(SessionError::Protocol("unexpected message from client"));
            }
        }
        Ok(())
    }

    fn start_call(
        &mut self,
        call_id: u64,
        trace: PbTrace,
        req: ExecRequest,
    ) -> Result<(), SessionError> {
        let program = req
            .argv
            .first()
            .map(|a| proto::program::program_name(a))
            .unwrap_or_default();
        let enqueued = SystemTime::now();
        let extracted = carriers::envelope::extract(&trace);
        let parent = otel::context_from(&extracted);
        let hop = match &extracted {
            Extracted::Valid(tc) => Some(carriers::hop::inject(&tc.parent)),
            _ => None,
        };
        // The exec span's id is preset too: whether the provider honoured
        // it says whether process.run's id can be fixed in advance (it can
        // with the providers `telemetry::setup` builds).
        let probe = telemetry::ids::new_span_id();
        let mut span = telemetry::ids::start_with_span_id(probe, || {
            self.tracer
                .span_builder(spans::RPC_SERVER_EXEC)
                .with_kind(SpanKind::Server)
                .with_attributes(vec![
                    KeyValue::new("process.executable.name", program.clone()),
                    KeyValue::new("rex.call_id", call_id as i64),
                ])
                .start_with_context(&self.tracer, &parent)
        });
        let presets = span.span_context().span_id() == probe;
        let exec_cx = parent.with_remote_span_context(span.span_context().clone());
        let error_trace = otel::trace_context_for(span.span_context(), &parent)
            .as_ref()
            .map(carriers::envelope::inject)
            .unwrap_or_default();
        // The process span's context, known before the process exists: the
        // child's TRACEPARENT and every event name it. (With a provider that
        // cannot preset ids they name rpc.server.exec instead.)
        let sc = span.span_context();
        let run_span_id = if presets {
            telemetry::ids::new_span_id()
        } else {
            SpanId::INVALID
        };
        let run_sc = if presets {
            SpanContext::new(
                sc.trace_id(),
                run_span_id,
                sc.trace_flags(),
                false,
                sc.trace_state().clone(),
            )
        } else {
            sc.clone()
        };
        let run_trace = otel::trace_context_for(&run_sc, &parent);
        let event_trace = run_trace
            .as_ref()
            .map(carriers::envelope::inject)
            .unwrap_or_default();
        let child_env = run_trace
            .as_ref()
            .map(carriers::env::child_env)
            .unwrap_or_default();

        let refuse = |kind: ExecErrorKind, message: &str| {
            Body::Event(TerminalEvent {
                seq: 0,
                kind: Some(terminal_event::Kind::Error(ExecError {
                    kind: kind as i32,
                    message: message.into(),
                })),
            })
        };
        if call_id == 0 || self.calls.contains_key(&call_id) {
            let message = "call id is zero or already in use";
            span.set_status(SpanStatus::error(message));
            return self.send_envelope(
                call_id,
                error_trace,
                refuse(ExecErrorKind::BadRequest, message),
            );
        }
        if self.calls.len() >= self.ctx.config.max_processes_per_session {
            let message = "too many processes on this session";
            span.set_status(SpanStatus::error(message));
            return self.send_envelope(
                call_id,
                error_trace,
                refuse(ExecErrorKind::TooManyProcesses, message),
            );
        }
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        let cancel = self.session_cancel.child_token();
        let io = ProcessIo {
            call_id,
            events: self.events_tx.clone(),
            control: control_rx,
            stdin: Some(stdin_rx),
            cancel: cancel.clone(),
        };
        let default_cwd = self.ctx.config.default_cwd.clone();
        let drain = self.ctx.config.exit_drain;
        let trace = ProcessTrace {
            dispatch: parent,
            exec: exec_cx.clone(),
            run_span_id,
            enqueued,
        };
        self.ctx
            .tasks
            .spawn(process::run(req, io, default_cwd, child_env, drain, trace));
        let record = self.ctx.config.metadata.as_ref().map(|store| {
            let sc = span.span_context();
            let record = metadata::ProcessRecord {
                id: metadata::record::new_id(),
                session: self.session_id.clone(),
                client_key: self.client.to_string(),
                program: program.clone(),
                pid: None,
                trace: metadata::TraceRef {
                    trace_id: sc.trace_id().to_string(),
                    span_id: sc.span_id().to_string(),
                },
                started_unix_ms: metadata::record::now_unix_ms(),
                exited_unix_ms: None,
                progress: metadata::Progress::Dispatched,
                exit: None,
                stdout_bytes: 0,
                stderr_bytes: 0,
            };
            store.record(metadata::Record::Process(record.clone()));
            record
        });
        self.calls.insert(
            call_id,
            Call {
                control: control_tx,
                stdin: Some(stdin_tx),
                cancel,
                span,
                exec_cx,
                trace: event_trace,
                error_trace,
                hop,
                program,
                push: Push::default(),
                record,
            },
        );
        Ok(())
    }

    fn push_event(&mut self, out: Outgoing) -> Result<(), SessionError> {
        let Some(call) = self.calls.get_mut(&out.call_id) else {
            // Refused calls are answered directly; nothing else can get here.
            return self.send_envelope(out.call_id, PbTrace::default(), Body::Event(out.event));
        };
        let now = SystemTime::now();
        let push = &mut call.push;
        if push.span.is_none() {
            let span = self
                .tracer
                .span_builder(spans::TERMINAL_PUSH)
                .with_start_time(now)
                .start_with_context(&self.tracer, &call.exec_cx);
            push.cx = call
                .exec_cx
                .with_remote_span_context(span.span_context().clone());
            push.span = Some(span);
        }
        push.events += 1;
        push.queued += out.queued_at.elapsed();
        let len = |d: &Bytes| i64::try_from(d.len()).unwrap_or(i64::MAX);
        let is_output = matches!(
            out.event.kind,
            Some(terminal_event::Kind::Stdout(_) | terminal_event::Kind::Stderr(_))
        );
        let what = match &out.event.kind {
            Some(terminal_event::Kind::Started(_)) => Some("started"),
            Some(terminal_event::Kind::Stdout(d)) => {
                push.stdout_bytes += len(d);
                push.stdout_chunks += 1;
                (push.output_chunks() == 1).then_some("output.first")
            }
            Some(terminal_event::Kind::Stderr(d)) => {
                push.stderr_bytes += len(d);
                push.stderr_chunks += 1;
                (push.output_chunks() == 1).then_some("output.first")
            }
            Some(terminal_event::Kind::Exited(_)) => Some("exited"),
            Some(terminal_event::Kind::Error(_)) => Some("error"),
            None => None,
        };
        let error = match &out.event.kind {
            Some(terminal_event::Kind::Error(e)) => Some(e.message.clone()),
            _ => None,
        };
        if let (Some(store), Some(record)) =
            (self.ctx.config.metadata.as_ref(), call.record.as_mut())
        {
            // Only state changes are recorded, never a write per chunk.
            let changed = match &out.event.kind {
                Some(terminal_event::Kind::Started(st)) => {
                    record.pid = Some(st.pid);
                    record.progress = metadata::Progress::Running;
                    true
                }
                Some(terminal_event::Kind::Exited(x)) => {
                    record.exit = Some(match x.status {
                        Some(exited::Status::Signal(sig)) => metadata::Exit::Signal(sig),
                        Some(exited::Status::Code(c)) => metadata::Exit::Code(c),
                        None => metadata::Exit::Code(-1),
                    });
                    true
                }
                Some(terminal_event::Kind::Error(e)) => {
                    record.exit = Some(metadata::Exit::Error(e.message.clone()));
                    true
                }
                _ => false,
            };
            if out.last {
                record.progress = metadata::Progress::Finished;
                record.exited_unix_ms = Some(metadata::record::now_unix_ms());
                record.stdout_bytes = u64::try_from(push.stdout_bytes).unwrap_or(0);
                record.stderr_bytes = u64::try_from(push.stderr_bytes).unwrap_or(0);
            }
            if changed {
                store.record(metadata::Record::Process(record.clone()));
            }
        }
        let trace = if error.is_some() {
            call.error_trace.clone()
        } else {
            call.trace.clone()
        };
        let send = what.map(|w| framing::send_span(&self.tracer, &push.cx, w));
        self.send_envelope(out.call_id, trace, Body::Event(out.event))?;
        let mark = self.transport.queued_offset();
        let Some(call) = self.calls.get_mut(&out.call_id) else {
            return Ok(());
        };
        if is_output {
            // Every chunk may be the last one: note when it leaves.
            call.push.last_chunk = Some(LastChunk {
                taken: now,
                mark,
                sent: None,
            });
            self.unsent_chunks.retain(|(id, _)| *id != out.call_id);
            self.unsent_chunks.push((out.call_id, mark));
        }
        let Some(send) = send else {
            return Ok(());
        };
        if !out.last {
            self.sends.track(mark, vec![send], call.hop.clone());
            return Ok(());
        }
        // The final event: the call's spans end once its bytes have left.
        let Some(mut call) = self.calls.remove(&out.call_id) else {
            return Ok(());
        };
        self.unsent_chunks.retain(|(id, _)| *id != out.call_id);
        if let Some(chunk) = call.push.last_chunk.take() {
            let mut last = self
                .tracer
                .span_builder(spans::RELAY_FRAME_SEND)
                .with_start_time(chunk.taken)
                .with_attributes(vec![
                    KeyValue::new("rex.message", "output.last"),
                    KeyValue::new("rex.output.chunks", call.push.output_chunks()),
                ])
                .start_with_context(&self.tracer, &call.push.cx);
            match chunk.sent {
                Some(at) => last.end_with_timestamp(at),
                None => self.sends.track(chunk.mark, vec![last], None),
            }
        }
        let mut finishing = vec![send];
        if let Some(mut push_span) = call.push.span.take() {
            push_span.set_attributes(call.push.attributes());
            finishing.push(push_span);
        }
        if let Some(message) = error {
            call.span.set_status(SpanStatus::error(message));
        }
        finishing.push(call.span);
        tracing::debug!(client = %self.client.short(), program = %call.program, "call finished");
        self.sends.track(mark, finishing, call.hop);
        Ok(())
    }

    /// Notes when each call's latest output chunk left.
    fn chunks_sent(&mut self, sent: u64) {
        if self.unsent_chunks.is_empty() {
            return;
        }
        let now = SystemTime::now();
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

    fn send_envelope(
        &mut self,
        call_id: u64,
        trace: PbTrace,
        body: Body,
    ) -> Result<(), SessionError> {
        let bytes = envelope::encode_new(call_id, Some(trace), body)
            .map_err(|_| SessionError::Protocol("session message too large"))?;
        self.transport.send(&bytes)?;
        Ok(())
    }

    /// Ends every process of the session.
    fn finish(&mut self) {
        self.session_cancel.cancel();
        self.sends.abandon("session ended");
        for (_, mut call) in self.calls.drain() {
            call.span.set_status(SpanStatus::error("session ended"));
            call.span.end();
            if let (Some(store), Some(mut record)) =
                (self.ctx.config.metadata.as_ref(), call.record)
            {
                record.progress = metadata::Progress::Finished;
                record.exit = Some(metadata::Exit::Error("session ended".into()));
                record.exited_unix_ms = Some(metadata::record::now_unix_ms());
                store.record(metadata::Record::Process(record));
            }
        }
    }
}

async fn reserve_opt(tx: Option<&mpsc::Sender<Bytes>>) -> Option<mpsc::OwnedPermit<Bytes>> {
    match tx {
        Some(tx) => tx.clone().reserve_owned().await.ok(),
        None => None,
    }
}
