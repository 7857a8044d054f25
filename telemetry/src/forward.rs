//! A client's own spans forwarded through its session to the exec-server,
//! which exports them with its exporter (docs/tracing.md, Forwarding).
//!
//! - [`SpanSource`]: where a client takes the finished spans of a call's
//!   trace from, encoded as OTLP `TracesData` batches; API only, so the
//!   client library names it without the SDK.
//! - `collect` (feature `forward`): [`SpanCollector`], a span processor
//!   that keeps the finished spans of each trace (bounded) until a call
//!   takes them.
//! - `spool` (feature `forward`): [`Spool`], what a client could not send
//!   before it exited, kept on disk (bounded) for the next session to the
//!   same exec-server.
//! - `export` (feature `export`): [`Forwarder`], the exec-server's side:
//!   batches decoded, checked, marked as forwarded for the client's key and
//!   exported, within its budget.
//! - `remark` (feature `export`): a forwarded batch passed on as it
//!   arrived, its resources re-marked, for an exporter that takes encoded
//!   requests.
//! - `budget` (feature `export`): what clients may forward: steady rates
//!   per key and in all, credited for each call a client runs.

#[cfg(feature = "export")]
mod budget;
#[cfg(feature = "forward")]
mod collect;
#[cfg(feature = "export")]
mod export;
#[cfg(feature = "export")]
mod remark;
#[cfg(feature = "forward")]
mod spool;

#[cfg(feature = "export")]
pub use budget::{ForwardLimits, Offered};
#[cfg(feature = "forward")]
pub use collect::{SpanCollector, SpanCollectorProcessor};
#[cfg(feature = "export")]
pub use export::{ForwardError, Forwarder};
#[cfg(feature = "forward")]
pub use spool::{Spool, SpoolLimits, Spooled, WithSpool};

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
