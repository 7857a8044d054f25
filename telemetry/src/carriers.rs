//! Where a trace context travels, one submodule per carrier. Each reads with
//! the strict parser in [`crate::w3c`] and writes the canonical form.
//!
//! - [`metadata`]: gRPC metadata on the relay links (`traceparent`,
//!   `tracestate`).
//! - [`envelope`]: the trace context inside every encrypted session message.
//! - [`env`](mod@env): `TRACEPARENT` / `TRACESTATE` in a process environment.
//! - [`hop`]: the relay frame's clear-text hop header (a traceparent only).

pub mod env;
pub mod envelope;
pub mod hop;
pub mod metadata;
