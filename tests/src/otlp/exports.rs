//! What an OTLP trace server (gRPC or HTTP) does with each export request
//! ([`Exports`]).

use axum::http::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::Status;

/// What an OTLP trace server (gRPC or HTTP) does with each export
/// request: the receiver here records or counts spans, the trace sink
/// stores them.
pub(crate) trait Exports: Send + Sync + 'static {
    /// Takes one export request, which came with `headers` (gRPC: its
    /// metadata); an error status rejects it.
    fn export(
        &self,
        request: ExportTraceServiceRequest,
        headers: &HeaderMap,
    ) -> std::result::Result<ExportTraceServiceResponse, Status>;
}
