//! Trace context for every hop, the stage-span vocabulary, and (soon)
//! subscriber/export setup.
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
//! - [`spans`]: the stage-span names (DESIGN.md §3.2).
//! - `setup` (subscriber and OTLP/file export): added by another engineer.
//!
//! Extraction never fails a call: an absent or invalid context means the next
//! span starts a new trace, and an invalid tracestate is dropped on its own.

// Tests may unwrap; the library may not (the workspace lints deny it).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod carriers;
pub mod otel;
pub mod spans;
pub mod w3c;
