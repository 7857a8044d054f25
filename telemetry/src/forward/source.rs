//! Where a client takes the finished spans of a call's trace from
//! ([`SpanSource`]), what it hands out ([`Taken`], [`Batch`]), and the
//! process's installed source.

use std::sync::{Arc, PoisonError, RwLock};

use opentelemetry::trace::TraceId;

/// The process's source, installed by its telemetry set-up.
static SOURCE: RwLock<Option<Arc<dyn SpanSource>>> = RwLock::new(None);

/// Installs (or, with `None`, removes) the process's span source: what a
/// client forwards from when it is asked to.
#[cfg(feature = "export")]
pub(crate) fn set_source(source: Option<Arc<dyn SpanSource>>) {
    *SOURCE.write().unwrap_or_else(PoisonError::into_inner) = source;
}

/// The process's span source, if its telemetry set-up installed one (a
/// binary that keeps its spans in the local trace file).
pub fn source() -> Option<Arc<dyn SpanSource>> {
    SOURCE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// One batch of spans to forward: an encoded OTLP `TracesData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The encoded message.
    pub traces: Vec<u8>,
    /// Spans in it.
    pub spans: u32,
}

/// What [`SpanSource::take`] found for a trace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Batches of at most the asked size, in the order the spans ended.
    pub batches: Vec<Batch>,
    /// Spans of the trace that fit no batch (one span alone over the size),
    /// or that the source could not keep: not forwarded.
    pub dropped: u32,
}

/// Where a client takes its finished spans of a call from.
pub trait SpanSource: Send + Sync + std::fmt::Debug {
    /// Takes the spans of `trace_id` that have ended so far (each is handed
    /// out once), as batches of at most `max_bytes` each.
    fn take(&self, trace_id: TraceId, max_bytes: usize) -> Taken;
}
