//! A client's own spans forwarded through its session to the exec-server,
//! which exports them with its exporter (docs/tracing.md, Forwarding).
//!
//! - `source`: [`SpanSource`], where a client takes the finished spans of
//!   a call's trace from, encoded as OTLP `TracesData` batches; API only,
//!   so the client library names it without the SDK; the process's
//!   installed one ([`source()`]).
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
mod source;
#[cfg(feature = "forward")]
mod spool;

#[cfg(feature = "export")]
pub use budget::{ForwardLimits, Offered};
#[cfg(feature = "forward")]
pub use collect::{SpanCollector, SpanCollectorProcessor};
#[cfg(feature = "export")]
pub use export::{ForwardError, Forwarder};
#[cfg(feature = "export")]
pub(crate) use source::set_source;
pub use source::{Batch, SpanSource, Taken, source};
#[cfg(feature = "forward")]
pub use spool::{Spool, SpoolLimits, Spooled, WithSpool};
