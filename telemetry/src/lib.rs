//! Trace context for every hop, the stage-span vocabulary, and the
//! subscriber and tracer setup shared by the binaries.
//!
//! Layout:
//! - [`w3c`]: the strict W3C Trace Context parser and formatter
//!   ([`TraceParent`](w3c::TraceParent), [`TraceState`](w3c::TraceState)) and
//!   the header-level [`extract`](w3c::extract) rules every carrier shares.
//! - [`carriers`]: one submodule per carrier, each with `inject` and
//!   `extract`: gRPC metadata, the session envelope, the process environment
//!   and the relay's hop header.
//! - [`otel`]: conversion to and from OpenTelemetry's `SpanContext`, and the
//!   parent `Context` for the next span.
//! - [`spans`]: the stage-span names (docs/spans.md).
//! - [`frame_spans`]: the `relay.frame.send`/`relay.frame.recv` spans both ends
//!   make for traced messages, and the hop header their frames carry.
//! - [`remote`]: the exec-server's stage timings for a call, summarised
//!   into its final event, and the sink that writes remote spans into the
//!   client's local trace file.
//! - [`placement`]: every remote timing placed on the client's clock: the
//!   exec-server's stages ([`placement::stages`]) and the relays' forwards
//!   ([`placement::hops`], the wire's legs split at each relay), from the
//!   tightest clock source there is and within the causal bounds.
//! - [`limited`]: rate-limited logging of refusals anyone can cause (one
//!   line per kind per interval, the rest counted and summarised).
//! - [`clock_status`]: what this process tells its peers of its clock (its
//!   kernel's boot id digest, whether the kernel says it is synchronized).
//! - [`host`]: this host's name (`host.name` on every span and in the
//!   stage summaries).
//! - [`semconv`]: the OpenTelemetry semantic-convention attribute names
//!   (`rpc.*`, `server.*`, `error.type`, `service.version`), pinned to one
//!   version.
//! - [`forward`]: a client's own spans forwarded through its session to
//!   the exec-server, which exports them (collected per trace on the
//!   client with feature `forward`; exported with feature `export`).
//! - [`ids`]: span ids drawn before their span starts (the child's
//!   `TRACEPARENT` names `process.run` before the process exists).
//! - `otlp_wire` (feature `forward`): OTLP protobuf written straight
//!   from the SDK's span data (for export and for forwarding).
//! - `timings_wire` (feature `forward`): a call's stage summary written
//!   straight from its timeline ([`remote::Timeline`]) into the bytes its
//!   final event carries.
//! - `otlp` (feature `export`): the OTLP protocol and endpoint the
//!   environment names, and the exporter for them.
//! - `provider` (feature `export`): the tracer providers every binary
//!   builds (the service's resource, preset-capable ids) and their batch
//!   processors.
//! - `setup` (feature `export`, for binaries): the one place logging, tracer
//!   providers and span export (OTLP over gRPC or HTTP, or the local trace
//!   file) are set up.
//! - `trace_file` (feature `export`): the local OTLP JSON trace file and its
//!   exporter.
//! - [`trace_files`]: the trace file's rotated generations (their names,
//!   rotation and retention), shared by its writer and its readers (the
//!   `analysis` crate reads the file back).
//!
//! Without the `export` feature everything here uses the OpenTelemetry API
//! only, which is all an embedder of the client library links.
//!
//! Extraction never fails a call: an absent or invalid context means the next
//! span starts a new trace, and an invalid tracestate is dropped on its own.

// Tests may unwrap; the library may not (the workspace lints deny it).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
pub mod carriers;
pub mod clock_status;
pub mod forward;
pub mod frame_spans;
pub mod host;
pub mod ids;
pub mod limited;
pub mod otel;
#[cfg(feature = "export")]
pub mod otlp;
#[cfg(feature = "forward")]
mod otlp_wire;
pub mod placement;
#[cfg(feature = "export")]
pub mod provider;
pub mod remote;
pub mod semconv;
#[cfg(feature = "export")]
pub mod setup;
pub mod spans;
#[cfg(feature = "forward")]
pub mod timings_wire;
#[cfg(feature = "export")]
pub mod trace_file;
pub mod trace_files;
pub mod w3c;
