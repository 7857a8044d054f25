//! The remote side comes home (docs/spans.md, "The remote side comes home"): the exec-server's stage
//! spans for one call, kept as a [`Timeline`] and summarised into the
//! call's final event (written by `timings_wire`), to be placed on the
//! client's clock
//! ([`crate::placement::stages`]) so that a client with no collector can
//! write them into its local trace file (as [`RemoteSpan`]s, through the
//! [`RemoteSink`] the binary installs).
//!
//! The summary is bounded (`MAX_STAGES` stages of at most
//! `MAX_ATTRIBUTES` attributes, texts of at most `MAX_TEXT` bytes) and
//! versioned (`VERSION`); a stage whose name is not in the vocabulary is
//! left out on receipt. Times are offsets from the envelope's send time on
//! the sender's clock, so one clock-offset estimate places them all.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanContext, SpanId, Status, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue};
#[cfg(test)]
use proto::pb::session::{CallTimings, StageAttribute, StageTiming, stage_attribute};

/// The summary format this build writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Most stages one call's summary carries.
pub(crate) const MAX_STAGES: usize = 32;
/// Most attributes per stage.
pub(crate) const MAX_ATTRIBUTES: usize = 8;
/// Longest attribute key or text value, in bytes.
pub(crate) const MAX_TEXT: usize = 64;

/// An attribute value: a counter, a short text or a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// A count, size, duration or code.
    Int(i64),
    /// A short text (e.g. the program name).
    Text(String),
    /// A yes or no (e.g. whether the call has a terminal).
    Flag(bool),
}

/// One finished (or finishing) stage span, as the exec-server made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Its vocabulary name.
    pub(crate) name: &'static str,
    /// Its span id (as exported by the exec-server itself).
    pub span_id: SpanId,
    /// Its parent's span id (`SpanId::INVALID`: none).
    pub(crate) parent: SpanId,
    /// When it started.
    pub(crate) start: SystemTime,
    /// When it ended; `None` for a span that ends with the summary's own
    /// message (the call's exec and push spans).
    pub end: Option<SystemTime>,
    /// It ended in error.
    pub(crate) error: bool,
    /// Counters and short texts (never arguments, environment or output).
    pub(crate) attributes: Vec<(&'static str, Value)>,
}

impl Stage {
    /// Its start relative to `sent` (negative: before it) and its length,
    /// in nanoseconds; open, it ends at `sent`.
    #[cfg(any(test, feature = "forward"))]
    pub(crate) fn relative_to(&self, sent: SystemTime) -> (i64, u64) {
        let end = self.end.unwrap_or(sent);
        let duration = end
            .duration_since(self.start)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        (signed_nanos(self.start, sent), duration)
    }
}

/// The stages of one call, bounded: stages beyond `MAX_STAGES` are
/// counted, not kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub(crate) stages: Vec<Stage>,
    pub(crate) dropped: u32,
}

impl Timeline {
    /// Adds a stage (counted as dropped once the timeline is full).
    pub fn push(&mut self, stage: Stage) {
        if self.stages.len() < MAX_STAGES {
            self.stages.push(stage);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Adds every stage of `other`.
    pub fn append(&mut self, other: Timeline) {
        self.dropped = self.dropped.saturating_add(other.dropped);
        for stage in other.stages {
            self.push(stage);
        }
    }

    /// The stages kept.
    #[cfg(test)]
    fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Stages left out.
    #[cfg(test)]
    fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The wire summary as a message, with times relative to `sent` (the
    /// send time the carrying envelope states), made on `host`; open stages
    /// end at `sent`. The tests' reference: an exec-server sends the same
    /// bytes written straight from the stages (`timings_wire`).
    #[cfg(test)]
    pub(crate) fn to_wire(&self, sent: SystemTime, host: Option<&str>) -> CallTimings {
        let stages = self
            .stages
            .iter()
            .filter(|s| s.span_id != SpanId::INVALID)
            .map(|s| {
                let (start_ns, duration_ns) = s.relative_to(sent);
                StageTiming {
                    name: s.name.to_owned(),
                    span_id: u64::from_be_bytes(s.span_id.to_bytes()),
                    parent_span_id: u64::from_be_bytes(s.parent.to_bytes()),
                    start_ns,
                    duration_ns,
                    error: s.error,
                    attributes: s
                        .attributes
                        .iter()
                        .take(MAX_ATTRIBUTES)
                        .map(|(k, v)| StageAttribute {
                            key: (*k).to_owned(),
                            value: Some(match v {
                                Value::Int(n) => stage_attribute::Value::Int(*n),
                                Value::Text(t) => {
                                    stage_attribute::Value::Text(truncate(t, MAX_TEXT).to_owned())
                                }
                                Value::Flag(b) => stage_attribute::Value::Flag(*b),
                            }),
                        })
                        .collect(),
                }
            })
            .collect();
        CallTimings {
            version: VERSION,
            stages,
            dropped: self.dropped,
            host: host
                .map(|h| truncate(h, MAX_TEXT).to_owned())
                .unwrap_or_default(),
        }
    }
}

/// A remote stage placed on this host's clock, ready to be written as a
/// span of the exec-server's.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSpan {
    /// The service that made it: [`EXEC_SERVER`] or [`RELAY`].
    pub(crate) service: &'static str,
    /// The call's trace.
    pub(crate) trace_id: TraceId,
    /// The exec-server's span id.
    pub(crate) span_id: SpanId,
    /// Its parent (`SpanId::INVALID`: none).
    pub(crate) parent: SpanId,
    /// Its vocabulary name.
    pub(crate) name: &'static str,
    /// Start, on this host's clock.
    pub(crate) start: SystemTime,
    /// End, on this host's clock.
    pub(crate) end: SystemTime,
    /// It ended in error.
    pub(crate) error: bool,
    /// Its attributes, and how it was placed (`rex.clock_offset_ns`,
    /// `rex.remote.placed`).
    pub(crate) attributes: Vec<KeyValue>,
}

/// The service name of placed exec-server stages.
pub const EXEC_SERVER: &str = "exec-server";
/// The service name of placed relay forwards.
pub const RELAY: &str = "relay";

/// Where placed remote spans go: the local trace file, in the binaries
/// that write one (installed by `telemetry::setup`).
pub trait RemoteSink: Send + Sync + 'static {
    /// Takes one call's remote spans; must not block.
    fn record(&self, spans: Vec<RemoteSpan>);
}

static SINK: RwLock<Option<Arc<dyn RemoteSink>>> = RwLock::new(None);

/// Installs (or, with `None`, removes) the process's remote-span sink.
#[cfg(any(test, feature = "export"))]
pub(crate) fn set_sink(sink: Option<Arc<dyn RemoteSink>>) {
    *SINK.write().unwrap_or_else(PoisonError::into_inner) = sink;
}

/// The installed sink, if any: without one, remote timings are not kept.
pub fn sink() -> Option<Arc<dyn RemoteSink>> {
    SINK.read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(Arc::clone)
}

/// A stage span being made: the OpenTelemetry span (exported by this host
/// as usual) and its [`Stage`] for the call's summary, kept from the same
/// timestamps.
pub struct StageSpan {
    span: BoxedSpan,
    stage: Stage,
}

impl std::fmt::Debug for StageSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageSpan")
            .field("stage", &self.stage)
            .finish()
    }
}

impl StageSpan {
    /// Wraps `span`, started at `start` under `parent` as `name`.
    pub fn wrap(span: BoxedSpan, name: &'static str, parent: &Context, start: SystemTime) -> Self {
        let span_id = span.span_context().span_id();
        Self {
            span,
            stage: Stage {
                name,
                span_id,
                parent: parent.span().span_context().span_id(),
                start,
                end: None,
                error: false,
                attributes: Vec::new(),
            },
        }
    }

    /// Starts `name` under `parent` at `start`.
    pub fn start(
        tracer: &BoxedTracer,
        name: &'static str,
        parent: &Context,
        start: SystemTime,
    ) -> Self {
        let span = tracer
            .span_builder(name)
            .with_start_time(start)
            .start_with_context(tracer, parent);
        Self::wrap(span, name, parent, start)
    }

    /// The span's context.
    pub fn span_context(&self) -> &SpanContext {
        self.span.span_context()
    }

    /// Sets a counter on both.
    pub fn set_int(&mut self, key: &'static str, value: i64) {
        self.span.set_attribute(KeyValue::new(key, value));
        self.stage.attributes.push((key, Value::Int(value)));
    }

    /// Sets a short text on both.
    pub fn set_text(&mut self, key: &'static str, value: String) {
        self.span.set_attribute(KeyValue::new(key, value.clone()));
        self.stage.attributes.push((key, Value::Text(value)));
    }

    /// Sets a flag on both.
    pub fn set_flag(&mut self, key: &'static str, value: bool) {
        self.span.set_attribute(KeyValue::new(key, value));
        self.stage.attributes.push((key, Value::Flag(value)));
    }

    /// Notes an attribute in the stage only (the span was given it when it
    /// started).
    pub(crate) fn note_text(&mut self, key: &'static str, value: &str) {
        self.stage
            .attributes
            .push((key, Value::Text(value.to_owned())));
    }

    /// Marks both as failed (`message` goes on the exported span only).
    pub fn fail(&mut self, message: String) {
        self.span.set_status(Status::error(message));
        self.stage.error = true;
    }

    /// Ends the span at `at`; its stage.
    pub fn end_at(mut self, at: SystemTime) -> Stage {
        self.span.end_with_timestamp(at);
        self.stage.end = Some(at);
        self.stage
    }

    /// Leaves the span to be ended later (when its message has left); its
    /// stage, open (it ends with the summary's own message).
    pub fn into_parts(self) -> (BoxedSpan, Stage) {
        (self.span, self.stage)
    }
}

/// `b - a` in nanoseconds, signed, saturating.
#[cfg(any(test, feature = "forward"))]
fn signed_nanos(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// `s` cut to at most `max` bytes, at a character's boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spans;
    use std::time::Duration;

    pub(crate) fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    pub(crate) fn stage(
        name: &'static str,
        id: u64,
        parent: u64,
        start: u64,
        end: Option<u64>,
    ) -> Stage {
        Stage {
            name,
            span_id: SpanId::from(id),
            parent: SpanId::from(parent),
            start: t(start),
            end: end.map(t),
            error: false,
            attributes: vec![("rex.events", Value::Int(3))],
        }
    }

    #[test]
    fn the_timeline_is_bounded_and_counts_what_it_drops() {
        let mut tl = Timeline::default();
        for i in 0..(MAX_STAGES as u64 + 5) {
            tl.push(stage(spans::PROCESS_SPAWN, i + 1, 0, 0, Some(1)));
        }
        assert_eq!(tl.stages().len(), MAX_STAGES);
        assert_eq!(tl.dropped(), 5);
        let mut other = Timeline::default();
        other.push(stage(spans::PROCESS_RUN, 99, 0, 0, Some(1)));
        tl.append(other);
        assert_eq!(tl.dropped(), 6);
        assert_eq!(tl.to_wire(t(2), None).dropped, 6);
    }
}
