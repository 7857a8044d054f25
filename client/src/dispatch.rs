//! What every dispatch starts with, whatever carries it (a session, or a
//! local agent): the request checked, its span (`tool.dispatch`, or
//! `agent.dispatch` for a call forwarded on another process's behalf) and
//! `dispatch.prepare`, the trace context the request carries, and the
//! command's record. Until an [`Execution`](crate::Execution) takes them
//! over, a failure ends them here.

use std::time::SystemTime;

use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span, SpanKind, Status as SpanStatus, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::pb::session::{ExecRequest, TraceContext as PbTrace};
use telemetry::{carriers, otel, spans};

use crate::error::{ClientError, InvalidRequest};
use crate::exec::ExecSpec;
#[cfg(feature = "records")]
use crate::records::CallRecord;

/// Room an exec request's envelope needs around it: the call id, the trace
/// context, the send time and the field tags.
const ENVELOPE_ROOM: usize = 1024;

/// The record of a call, when records are kept.
#[cfg(feature = "records")]
pub(crate) type Record = Option<CallRecord>;
#[cfg(not(feature = "records"))]
pub(crate) type Record = Option<std::convert::Infallible>;

/// Where a call's record goes, if anywhere.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(feature = "records"),
    allow(dead_code, reason = "read only when records are kept")
)]
pub(crate) struct Records<'a> {
    #[cfg(feature = "records")]
    pub(crate) store: Option<&'a metadata::Persister>,
    #[cfg(not(feature = "records"))]
    pub(crate) store: Option<&'a std::convert::Infallible>,
    pub(crate) args: bool,
}

impl Records<'_> {
    /// Where the record goes as the call chose (`recording`) over the
    /// client's settings.
    pub(crate) fn chosen(self, recording: crate::exec::Recording) -> Self {
        use crate::exec::Recording;
        match recording {
            Recording::AsConfigured => self,
            Recording::Off => Self {
                store: None,
                args: false,
            },
            Recording::On { args } => Self { args, ..self },
        }
    }
}

/// The request for `spec`, if it is one: a program, and small enough for
/// one session message.
pub(crate) fn request_for(spec: &ExecSpec) -> Result<ExecRequest, ClientError> {
    if spec.login_shell {
        if !spec.argv.is_empty() {
            return Err(ClientError::InvalidRequest(
                InvalidRequest::LoginShellWithCommand,
            ));
        }
    } else if spec.argv.first().is_none_or(|a| a.is_empty()) {
        return Err(ClientError::InvalidRequest(InvalidRequest::NoProgram));
    }
    if let Some(t) = &spec.terminal {
        InvalidRequest::check_size(t.rows, t.cols).map_err(ClientError::InvalidRequest)?;
        if t.term
            .as_deref()
            .is_some_and(|term| !proto::limits::term_ok(term))
        {
            return Err(ClientError::InvalidRequest(InvalidRequest::TermValue));
        }
    }
    let request = spec.to_request();
    let len = prost::Message::encoded_len(&request);
    if len + ENVELOPE_ROOM > proto::limits::MAX_ENVELOPE {
        return Err(ClientError::InvalidRequest(InvalidRequest::TooLarge(
            proto::envelope::EnvelopeError::TooLarge {
                len: len + ENVELOPE_ROOM,
                max: proto::limits::MAX_ENVELOPE,
            },
        )));
    }
    Ok(request)
}

/// A call being dispatched.
pub(crate) struct Dispatch {
    pub(crate) span: Option<BoxedSpan>,
    pub(crate) record: Record,
    /// The dispatch span's context: the parent of every stage.
    pub(crate) cx: Context,
    /// What the request carries (the dispatch's trace context).
    pub(crate) trace: Option<PbTrace>,
    /// Where the dispatch started.
    pub(crate) dispatched: SystemTime,
    /// Where `dispatch.prepare` ended: the next stage starts here.
    pub(crate) prepared: SystemTime,
}

impl Dispatch {
    /// Starts the dispatch of `spec` to the exec-server `server_id`.
    pub(crate) fn begin(spec: &ExecSpec, server_id: &str, records: Records<'_>) -> Self {
        let parent = spec.parent.clone().unwrap_or_else(Context::current);
        let tracer = opentelemetry::global::tracer("core-client");
        let called = SystemTime::now();
        let dispatched = spec.dispatched_at.map_or(called, |at| at.min(called));
        let (name, kind) = if spec.forwarded {
            (spans::AGENT_DISPATCH, SpanKind::Server)
        } else {
            (spans::TOOL_DISPATCH, SpanKind::Client)
        };
        let mut attributes = vec![KeyValue::new("rex.server.id", server_id.to_owned())];
        // A login shell is named once the exec-server says which it started.
        match spec.program() {
            Some(program) => attributes.push(KeyValue::new("process.executable.name", program)),
            None => attributes.push(KeyValue::new("rex.login_shell", true)),
        }
        // The terminal is described, never its content.
        if let Some(t) = &spec.terminal {
            attributes.push(KeyValue::new("rex.terminal", true));
            attributes.push(KeyValue::new("rex.terminal.rows", i64::from(t.rows)));
            attributes.push(KeyValue::new("rex.terminal.cols", i64::from(t.cols)));
        }
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(dispatched)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        let record = record(spec, server_id, records, span.span_context());
        let trace = otel::trace_context_of(&cx).map(|tc| carriers::envelope::inject(&tc));
        // The stages tile the dispatch: each starts where the previous one
        // ended, from the same timestamp.
        let prepared = SystemTime::now();
        let mut prepare = tracer
            .span_builder(spans::DISPATCH_PREPARE)
            .with_start_time(dispatched)
            .start_with_context(&tracer, &cx);
        prepare.end_with_timestamp(prepared);
        Self {
            span: Some(span),
            record,
            cx,
            trace,
            dispatched,
            prepared,
        }
    }

    /// Starts the call's record now, in `records` (for a call whose record
    /// was left to another process that declined it).
    #[cfg(feature = "agent")]
    pub(crate) fn start_record(&mut self, spec: &ExecSpec, server_id: &str, records: Records<'_>) {
        if let Some(span) = &self.span {
            self.record = record(spec, server_id, records, span.span_context());
        }
    }

    /// The call could not be dispatched: the span and the record say why.
    pub(crate) fn fail(&mut self, err: ClientError) -> ClientError {
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

#[cfg(feature = "records")]
fn record(
    spec: &ExecSpec,
    server_id: &str,
    records: Records<'_>,
    sc: &opentelemetry::trace::SpanContext,
) -> Record {
    records.store.map(|store| {
        let args = records.args.then(|| {
            spec.argv
                .iter()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        });
        let program = spec
            .program()
            .unwrap_or_else(|| crate::records::LOGIN_SHELL.to_owned());
        CallRecord::dispatched(store, server_id.to_owned(), program, args, sc)
    })
}

#[cfg(not(feature = "records"))]
fn record(
    _spec: &ExecSpec,
    _server_id: &str,
    _records: Records<'_>,
    _sc: &opentelemetry::trace::SpanContext,
) -> Record {
    None
}
