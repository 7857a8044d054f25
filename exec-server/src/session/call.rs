//! One call on the exec-server: what its process task is fed (stdin,
//! signals, cancel), its spans (`rpc.server.exec`, `terminal.push`) and its
//! record.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, Tracer};
use proto::keys::PublicKey;
use proto::pb::session::{ExecRequest, TraceContext as PbTrace, exited, terminal_event};
use telemetry::remote::{Stage, StageSpan, Timeline};
use telemetry::w3c::Extracted;
use telemetry::{carriers, otel, spans};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::context::ServerContext;
use crate::credit::{Credit, Retention};
use crate::process::{self, Control, Outgoing, ProcessIo, ProcessTrace};
use crate::stdin::StdinSender;

/// Signals queued per process.
const CONTROL_QUEUE: usize = 16;

/// How a new call's output is credited.
pub(super) struct OutputCredit<'a> {
    /// The call's output window.
    pub(super) window: u32,
    /// Its session's bounds while the link is down.
    pub(super) retention: &'a std::sync::Arc<Retention>,
    /// Its client acknowledges when asked (the call's floor of the
    /// exec-server's budget is then two reads).
    pub(super) acks_when_asked: bool,
    /// Told when the call's process waits for room in that budget.
    pub(super) ack_wake: &'a std::sync::Arc<tokio::sync::Notify>,
}

/// A running call.
pub(super) struct Call {
    pub(super) control: mpsc::Sender<Control>,
    /// Its output credit, given back as the client acknowledges output.
    pub(super) credit: Credit,
    /// The terminal's window size, for a call on a terminal.
    pub(super) resize: Option<watch::Sender<(u16, u16)>>,
    /// Stdin for the process; dropped at stdin close.
    pub(super) stdin: Option<StdinSender>,
    /// Stdin taken by the process, as last reported to the session.
    pub(super) stdin_reported: u64,
    pub(super) cancel: CancellationToken,
    /// `rpc.server.exec`.
    pub(super) span: StageSpan,
    /// The call's stages so far, for the summary its final event carries.
    pub(super) stages: Timeline,
    /// `relay.frame.send` stages whose messages have not left yet.
    pub(super) sending: Vec<Stage>,
    /// Its context (parent of `terminal.push`).
    pub(super) exec_cx: Context,
    /// What events carry: `process.run`'s context.
    pub(super) trace: PbTrace,
    /// What errors carry: `rpc.server.exec`'s context (an error may come
    /// before `process.run` exists).
    pub(super) error_trace: PbTrace,
    /// The hop header for the call's traced frames (its dispatch context).
    pub(super) hop: Option<String>,
    pub(super) program: String,
    /// Whether its final event carries the call's summary: its trace is
    /// sampled and the exec-server sends timings.
    pub(super) sampled: bool,
    pub(super) push: Push,
    /// Its metadata record (latest state), when records are kept.
    pub(super) record: Option<metadata::ProcessRecord>,
}

/// `terminal.push` and its totals (per-chunk work is counted, not spanned).
#[derive(Default)]
pub(super) struct Push {
    pub(super) span: Option<StageSpan>,
    /// `terminal.push`'s context (empty until the first event).
    pub(super) cx: Context,
    pub(super) events: i64,
    pub(super) stdout_bytes: i64,
    pub(super) stdout_chunks: i64,
    pub(super) stderr_bytes: i64,
    pub(super) stderr_chunks: i64,
    pub(super) queued: Duration,
    /// Stdin bytes received for the process.
    pub(super) stdin_bytes: i64,
    /// Resizes received, for a call on a terminal (`None`: no terminal).
    pub(super) resizes: Option<i64>,
    /// The latest output chunk, made a span once the final event shows it
    /// was the last (for a one-chunk output, the first chunk again).
    pub(super) last_chunk: Option<LastChunk>,
}

/// When the latest output chunk was taken, the stream offset just past it,
/// and when the frame holding its last byte left.
#[derive(Clone, Copy)]
pub(super) struct LastChunk {
    pub(super) taken: SystemTime,
    pub(super) mark: u64,
    pub(super) sent: Option<SystemTime>,
}

impl Push {
    pub(super) fn output_chunks(&self) -> i64 {
        self.stdout_chunks + self.stderr_chunks
    }

    /// Ends the push's totals into its span; the span, to end once the
    /// final event has left.
    pub(super) fn finish(&mut self) -> Option<StageSpan> {
        let mut span = self.span.take()?;
        span.set_int("rex.events", self.events);
        span.set_int("rex.stdout.bytes", self.stdout_bytes);
        span.set_int("rex.stdout.chunks", self.stdout_chunks);
        span.set_int("rex.stderr.bytes", self.stderr_bytes);
        span.set_int("rex.stderr.chunks", self.stderr_chunks);
        span.set_int(
            "rex.queue_ns",
            i64::try_from(self.queued.as_nanos()).unwrap_or(i64::MAX),
        );
        span.set_int("rex.stdin.bytes", self.stdin_bytes);
        if let Some(n) = self.resizes {
            span.set_int("rex.resizes", n);
        }
        Some(span)
    }

    /// Counts an event taken for writing; starts `terminal.push` at the
    /// first. Returns the message name its framing span gets, if traced.
    pub(super) fn count(
        &mut self,
        out: &Outgoing,
        tracer: &BoxedTracer,
        exec_cx: &Context,
        now: SystemTime,
    ) -> Option<&'static str> {
        if self.span.is_none() {
            let span = StageSpan::start(tracer, spans::TERMINAL_PUSH, exec_cx, now);
            self.cx = exec_cx.with_remote_span_context(span.span_context().clone());
            self.span = Some(span);
        }
        self.events += 1;
        self.queued += out.queued_at.elapsed();
        let len = |d: &Bytes| i64::try_from(d.len()).unwrap_or(i64::MAX);
        match &out.kind {
            terminal_event::Kind::Started(_) => Some("started"),
            terminal_event::Kind::Stdout(d) => {
                self.stdout_bytes += len(d);
                self.stdout_chunks += 1;
                (self.output_chunks() == 1).then_some("output.first")
            }
            terminal_event::Kind::Stderr(d) => {
                self.stderr_bytes += len(d);
                self.stderr_chunks += 1;
                (self.output_chunks() == 1).then_some("output.first")
            }
            terminal_event::Kind::Exited(_) => Some("exited"),
            terminal_event::Kind::Error(_) => Some("error"),
        }
    }
}

/// What a new call starts from.
pub(super) struct Starting<'a> {
    pub(super) call_id: u64,
    pub(super) client: Option<PublicKey>,
    pub(super) session_id: &'a str,
    pub(super) request: ExecRequest,
    pub(super) trace: Option<PbTrace>,
    /// Its exec request's `relay.frame.recv`: the call's first stage, whose
    /// end is when the request is queued for its process.
    pub(super) received: Stage,
}

impl Call {
    /// Starts a call: its spans and record, and its process task.
    pub(super) fn start(
        ctx: &ServerContext,
        tracer: &BoxedTracer,
        starting: Starting<'_>,
        events: mpsc::Sender<Outgoing>,
        session_cancel: &CancellationToken,
        stdin_wake: &std::sync::Arc<tokio::sync::Notify>,
        output: OutputCredit<'_>,
    ) -> Self {
        let OutputCredit {
            window: output_window,
            retention,
            acks_when_asked,
            ack_wake,
        } = output;
        let Starting {
            call_id,
            client,
            session_id,
            request,
            trace,
            received,
        } = starting;
        // A login shell is read from the password database now, so that
        // the spans and the record name it.
        let login_shell = request
            .login_shell
            .then(crate::shell::LoginShell::of_this_user);
        let program = match &login_shell {
            Some(shell) => shell.program(),
            None => request
                .argv
                .first()
                .map(|a| proto::program::program_name(a))
                .unwrap_or_default(),
        };
        let terminal = request.terminal.is_some();
        let enqueued = received.end.unwrap_or_else(SystemTime::now);
        let extracted = trace
            .as_ref()
            .map(carriers::envelope::extract)
            .unwrap_or(Extracted::Absent);
        let parent = otel::context_from(&extracted);
        let hop = match &extracted {
            Extracted::Valid(tc) => Some(carriers::hop::inject(&tc.parent)),
            _ => None,
        };
        // The exec span's id is preset too: whether the provider honoured
        // it says whether process.run's id can be fixed in advance (it can
        // with the providers `telemetry::setup` builds).
        let probe = telemetry::ids::new_span_id();
        let span = telemetry::ids::start_with_span_id(probe, || {
            tracer
                .span_builder(spans::RPC_SERVER_EXEC)
                .with_kind(SpanKind::Server)
                .with_start_time(enqueued)
                .start_with_context(tracer, &parent)
        });
        let mut span = StageSpan::wrap(span, spans::RPC_SERVER_EXEC, &parent, enqueued);
        span.set_text("process.executable.name", program.clone());
        span.set_int("rex.call_id", i64::try_from(call_id).unwrap_or(i64::MAX));
        // The terminal is described, never its content.
        if let Some(t) = &request.terminal {
            span.set_flag("rex.terminal", true);
            span.set_int("rex.terminal.rows", i64::from(t.rows));
            span.set_int("rex.terminal.cols", i64::from(t.cols));
        }
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

        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        // A terminal's window: only the latest size counts, so a burst of
        // resizes never fills a queue.
        let (resize_tx, resize_rx) = match &request.terminal {
            Some(t) => {
                let size = (
                    u16::try_from(t.rows).unwrap_or(u16::MAX),
                    u16::try_from(t.cols).unwrap_or(u16::MAX),
                );
                let (tx, rx) = watch::channel(size);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let (stdin_tx, stdin_rx) = crate::stdin::pipe(std::sync::Arc::clone(stdin_wake));
        let cancel = session_cancel.child_token();
        let credit = Credit::new(output_window, Some(std::sync::Arc::clone(retention))).charged_to(
            std::sync::Arc::clone(&ctx.unacked),
            client,
            crate::credit::floor(output_window, acks_when_asked),
            Some(std::sync::Arc::clone(ack_wake)),
        );
        let io = ProcessIo {
            call_id,
            events,
            control: control_rx,
            stdin: Some(stdin_rx),
            cancel: cancel.clone(),
            credit: credit.clone(),
            ended: session_cancel.clone(),
            resize: resize_rx,
        };
        let process_trace = ProcessTrace {
            dispatch: parent,
            exec: exec_cx.clone(),
            run_span_id,
            enqueued,
        };
        let config = &ctx.config;
        // The key's options as they are now (a key removed meanwhile may
        // set nothing; its session is closing).
        let env_policy = client
            .and_then(|c| {
                ctx.acceptor
                    .keys
                    .current()
                    .options(&c)
                    .map(|o| o.env.clone())
            })
            .unwrap_or(proto::keys::EnvPolicy::None);
        let launch = process::Launch {
            default_cwd: config.default_cwd.clone(),
            inherited: std::sync::Arc::clone(&ctx.inherited),
            extra_env: child_env,
            env_policy,
            exit_drain: config.exit_drain,
            containment: std::sync::Arc::clone(&ctx.containment),
            terminals: config.terminals,
            login_shell,
        };
        ctx.tasks.spawn(
            tracing::debug_span!("process", call = call_id, program = %program),
            process::run(request, io, launch, process_trace),
        );
        let record = config.metadata.as_ref().map(|store| {
            let sc = span.span_context();
            let record = metadata::ProcessRecord {
                id: metadata::record::new_id(),
                session: session_id.to_owned(),
                client_key: client.map(|c| c.to_string()).unwrap_or_default(),
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
        let sampled = span.span_context().is_sampled() && config.call_timings;
        Self {
            sampled,
            sending: Vec::new(),
            control: control_tx,
            credit,
            resize: resize_tx,
            stdin: Some(stdin_tx),
            stdin_reported: 0,
            cancel,
            span,
            stages: {
                let mut stages = Timeline::default();
                stages.push(received);
                stages
            },
            exec_cx,
            trace: event_trace,
            error_trace,
            hop,
            program,
            push: Push {
                resizes: terminal.then_some(0),
                ..Push::default()
            },
            record,
        }
    }

    /// A message of the call's has left at `at`: its sending stage ends.
    pub(super) fn left(&mut self, span_id: SpanId, at: SystemTime) {
        if let Some(i) = self.sending.iter().position(|s| s.span_id == span_id) {
            let mut stage = self.sending.swap_remove(i);
            stage.end = Some(at);
            self.stages.push(stage);
        }
    }

    /// Saves the record's state changes (never a write per chunk).
    pub(super) fn record_event(&mut self, ctx: &ServerContext, out: &Outgoing) {
        let (Some(store), Some(record)) = (ctx.config.metadata.as_ref(), self.record.as_mut())
        else {
            return;
        };
        let changed = match &out.kind {
            terminal_event::Kind::Started(st) => {
                record.pid = Some(st.pid);
                record.progress = metadata::Progress::Running;
                true
            }
            terminal_event::Kind::Exited(x) => {
                record.exit = Some(match x.status {
                    Some(exited::Status::Signal(sig)) => metadata::Exit::Signal(sig),
                    Some(exited::Status::Code(c)) => metadata::Exit::Code(c),
                    None => metadata::Exit::Code(-1),
                });
                true
            }
            terminal_event::Kind::Error(e) => {
                record.exit = Some(metadata::Exit::Error(e.message.clone()));
                true
            }
            _ => false,
        };
        if out.last {
            record.progress = metadata::Progress::Finished;
            record.exited_unix_ms = Some(metadata::record::now_unix_ms());
            record.stdout_bytes = u64::try_from(self.push.stdout_bytes).unwrap_or(0);
            record.stderr_bytes = u64::try_from(self.push.stderr_bytes).unwrap_or(0);
        }
        if changed {
            store.record(metadata::Record::Process(record.clone()));
        }
    }

    /// The session ended before the call did: its spans and record say so.
    pub(super) fn abandon(mut self, ctx: &ServerContext, why: &'static str) {
        self.span.fail(why.into());
        let _ = self.span.end_at(SystemTime::now());
        if let (Some(store), Some(mut record)) = (ctx.config.metadata.as_ref(), self.record) {
            record.progress = metadata::Progress::Finished;
            record.exit = Some(metadata::Exit::Error(why.into()));
            record.exited_unix_ms = Some(metadata::record::now_unix_ms());
            store.record(metadata::Record::Process(record));
        }
    }
}
