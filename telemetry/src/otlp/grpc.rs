//! OTLP/gRPC export of batches written straight to protobuf
//! ([`crate::otlp_wire`]): one buffer per batch, the resource encoded once,
//! nothing cloned per attempt. Used for a plain `http://` endpoint with no
//! headers, compression or certificates named in the environment; anything
//! else goes through the OTLP crate's exporter ([`super::exporter`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::otlp_wire::{self, EncodedResource};

/// The OTLP trace service's export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Attempts after the first, for an exporter that retries.
const RETRIES: u32 = 3;
/// The first wait before a retry; each later one doubles, up to
/// [`MAX_DELAY`], plus up to [`JITTER`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_millis(1600);
/// The most added at random to each wait.
const JITTER: Duration = Duration::from_millis(100);

/// The environment variables whose settings only the OTLP crate's
/// exporter carries out: with any of them set, it is used instead.
pub(super) const ITS_OWN: [&str; 10] = [
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];

/// An OTLP/gRPC span exporter for a plain `http://` collector.
#[derive(Debug)]
pub(crate) struct GrpcExporter {
    grpc: tonic::client::Grpc<Channel>,
    resource: EncodedResource,
    timeout: Duration,
    retry: bool,
    shut: AtomicBool,
}

impl GrpcExporter {
    /// An exporter to `endpoint` (an `http://` URL), each export bounded
    /// by `timeout` (its retries included), retrying failures the OTLP
    /// specification calls transient when `retry`. The connection is made
    /// at the first export; must be called within a Tokio runtime.
    pub(crate) fn new(
        endpoint: &str,
        timeout: Duration,
        retry: bool,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect_lazy();
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel),
            resource: EncodedResource::default(),
            timeout,
            retry,
            shut: AtomicBool::new(false),
        })
    }

    /// One attempt.
    async fn send(&self, body: bytes::Bytes) -> Result<ExportTraceServiceResponse, Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("the collector cannot be reached: {e}")))?;
        let response = grpc
            .unary(
                tonic::Request::new(body),
                PathAndQuery::from_static(EXPORT_PATH),
                RawCodec,
            )
            .await?;
        Ok(response.into_inner())
    }

    /// Exports one encoded `ExportTraceServiceRequest`; when the exporter
    /// retries, a transient failure is tried again, every attempt within
    /// the timeout.
    pub(crate) async fn export_request(&self, body: bytes::Bytes) -> OTelSdkResult {
        if self.shut.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let deadline = Instant::now() + self.timeout;
        let mut delay = FIRST_DELAY;
        let mut attempt = 0;
        loop {
            let status = match self.send(body.clone()).await {
                Ok(response) => return accepted(&response),
                Err(status) => status,
            };
            let wait = delay + JITTER.mul_f64(rand::random::<f64>());
            if !self.retry
                || attempt >= RETRIES
                || !transient(status.code())
                || Instant::now() + wait >= deadline
            {
                return Err(OTelSdkError::InternalFailure(format!(
                    "export failed with gRPC code {:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
            attempt += 1;
            sleep(wait).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    }
}

impl SpanExporter for GrpcExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = bytes::Bytes::from(otlp_wire::encode(&self.resource, &batch));
        drop(batch);
        self.export_request(body).await
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shut.store(true, Ordering::Release);
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// Whether the OTLP specification calls a failure with `code` transient
/// (worth another attempt). `RESOURCE_EXHAUSTED` is not: it is retried only
/// when the collector says when (a `RetryInfo`), which this exporter does
/// not read, so the batch is dropped and said rather than pressed on a
/// collector that is shedding load.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The collector's answer: spans it says it rejected are a failure (they
/// are lost), with its reason.
fn accepted(response: &ExportTraceServiceResponse) -> OTelSdkResult {
    match &response.partial_success {
        Some(p) if p.rejected_spans > 0 => Err(OTelSdkError::InternalFailure(format!(
            "the collector rejected {} spans: {}",
            p.rejected_spans, p.error_message
        ))),
        _ => Ok(()),
    }
}

/// Waits `wait`: on the runtime when there is one, else (the batch
/// processor's own thread) by blocking it.
async fn sleep(wait: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(wait).await;
    } else {
        std::thread::sleep(wait);
    }
}

/// Sends an already encoded request; decodes the answer.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("the collector's answer is not OTLP: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_transient_failures_are_tried_again() {
        assert!(transient(Code::Unavailable));
        assert!(transient(Code::DeadlineExceeded));
        assert!(!transient(Code::ResourceExhausted));
        assert!(!transient(Code::InvalidArgument));
        assert!(!transient(Code::Unauthenticated));
    }

    #[tokio::test]
    async fn a_collector_that_cannot_be_reached_fails_the_export_with_or_without_retries() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        for retry in [false, true] {
            let exporter = GrpcExporter::new(&endpoint, Duration::from_secs(2), retry).unwrap();
            let err = exporter.export(vec![]).await.unwrap_err().to_string();
            assert!(err.contains("Unavailable"), "{err}");
            exporter
                .shutdown_with_timeout(Duration::from_secs(1))
                .unwrap();
            assert!(matches!(
                exporter.export(vec![]).await,
                Err(OTelSdkError::AlreadyShutdown)
            ));
        }
    }

    #[test]
    fn rejected_spans_are_a_failure() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
        assert!(accepted(&ExportTraceServiceResponse::default()).is_ok());
        let partial = |rejected| ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "too old".into(),
            }),
        };
        assert!(accepted(&partial(0)).is_ok());
        let err = accepted(&partial(3)).unwrap_err().to_string();
        assert!(err.contains("rejected 3 spans: too old"), "{err}");
    }
}
