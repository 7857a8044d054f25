//! OTLP export: the protocol and endpoint the environment names, and the
//! exporter for them (gRPC, or HTTP with protobuf or JSON bodies on the
//! project's own hyper client), whose failures are said once
//! (`reported`). Over gRPC to a plain endpoint, batches are written
//! straight to protobuf (`grpc`).

mod grpc;
mod http;
pub(crate) mod reported;

use std::time::Duration;

use opentelemetry_otlp::{
    RetryPolicy, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// The variable naming the protocol for traces; wins over
/// [`PROTOCOL_VAR`].
pub(crate) const TRACES_PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// The variable naming the protocol for every signal.
pub(crate) const PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The full URL for traces; wins over [`ENDPOINT_VAR`].
pub(crate) const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The endpoint for every signal (over HTTP, a base URL).
pub(crate) const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The path appended to [`ENDPOINT_VAR`] for traces over HTTP.
pub(crate) const HTTP_TRACES_PATH: &str = "/v1/traces";

/// How spans travel to the OTLP endpoint. Exhaustive on purpose: these are
/// the three transports the OTLP specification defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`, the default).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies (`http/json`).
    HttpJson,
}

impl Protocol {
    /// Every protocol, in the order help texts list them.
    pub(crate) const ALL: [Self; 3] = [Self::Grpc, Self::HttpProtobuf, Self::HttpJson];

    /// The protocol's name in the `OTEL_EXPORTER_OTLP_*PROTOCOL` variables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        }
    }

    /// The protocol `value` names (surrounding blanks and ASCII case
    /// ignored), if any.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(value))
    }

    /// Whether it is one of the OTLP/HTTP encodings.
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Grpc)
    }
}

/// Where OTLP export sends spans, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    /// The protocol.
    pub(crate) protocol: Protocol,
    /// The URL the exporter sends to (over HTTP, the full URL of the traces
    /// endpoint).
    pub(crate) endpoint: String,
}

/// Why an OTLP exporter cannot be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExporterError {
    #[error(transparent)]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error(transparent)]
    Client(#[from] http::HttpClientError),
    #[error(transparent)]
    Grpc(#[from] tonic::transport::Error),
    #[error("{0} is an https endpoint, but this build has no TLS: use http://")]
    Https(String),
}

/// The export timeout the OTLP exporter also uses:
/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds), else 10 s.
fn export_timeout(var: impl Fn(&str) -> Option<String>) -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find_map(|k| var(k)?.trim().parse().ok())
    .map_or(
        opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT,
        Duration::from_millis,
    )
}

/// An OTLP span exporter: the project's own for gRPC to a plain endpoint,
/// else the OTLP crate's.
#[derive(Debug)]
pub(crate) enum Exporter {
    /// Batches written straight to protobuf ([`grpc::GrpcExporter`]).
    Grpc(grpc::GrpcExporter),
    /// The OTLP crate's exporter (HTTP, TLS, headers, compression).
    Otlp(opentelemetry_otlp::SpanExporter),
}

impl SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Self::Grpc(e) => e.export(batch).await,
            Self::Otlp(e) => e.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Self::Grpc(e) => e.shutdown_with_timeout(timeout),
            Self::Otlp(e) => e.shutdown_with_timeout(timeout),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self {
            Self::Grpc(e) => e.force_flush(),
            Self::Otlp(e) => e.force_flush(),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            Self::Grpc(e) => e.set_resource(resource),
            Self::Otlp(e) => e.set_resource(resource),
        }
    }
}

/// An exporter that may also take an export request already encoded (a
/// client's forwarded spans, passed on as they arrived).
pub(crate) trait EncodedExport: SpanExporter {
    /// Whether [`EncodedExport::export_request`] can be used.
    fn takes_requests(&self) -> bool {
        false
    }

    /// Exports one encoded `ExportTraceServiceRequest`.
    fn export_request(
        &self,
        _request: Vec<u8>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        std::future::ready(takes_spans())
    }
}

/// The answer of an exporter asked for a request it cannot take.
fn takes_spans() -> OTelSdkResult {
    Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
        "this exporter takes spans, not encoded requests".into(),
    ))
}

impl EncodedExport for Exporter {
    fn takes_requests(&self) -> bool {
        matches!(self, Self::Grpc(_))
    }

    async fn export_request(&self, request: Vec<u8>) -> OTelSdkResult {
        match self {
            Self::Grpc(e) => e.export_request(request.into()).await,
            Self::Otlp(_) => takes_spans(),
        }
    }
}

/// Whether the project's own gRPC exporter carries out everything the
/// environment asks for `target` (a plain `http://` endpoint; no headers,
/// compression or certificates, which only the OTLP crate's applies).
fn own_grpc(target: &OtlpTarget, var: impl Fn(&str) -> Option<String>) -> bool {
    target.protocol == Protocol::Grpc
        && target
            .endpoint
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        && grpc::ITS_OWN
            .iter()
            .all(|k| var(k).is_none_or(|v| v.trim().is_empty()))
}

/// The exporter for `target`. Headers, timeout and compression come from
/// the environment.
pub(crate) fn exporter(target: &OtlpTarget, retry: bool) -> Result<Exporter, ExporterError> {
    if own_grpc(target, |k| std::env::var(k).ok()) {
        let timeout = export_timeout(|k| std::env::var(k).ok());
        return Ok(Exporter::Grpc(grpc::GrpcExporter::new(
            &target.endpoint,
            timeout,
            retry,
        )?));
    }
    Ok(Exporter::Otlp(library_exporter(target, retry)?))
}

/// The OTLP crate's exporter for `target`, which reads headers, timeout
/// and compression from the environment itself.
fn library_exporter(
    target: &OtlpTarget,
    retry: bool,
) -> Result<opentelemetry_otlp::SpanExporter, ExporterError> {
    let policy = if retry {
        RetryPolicy::recommended()
    } else {
        RetryPolicy::disabled()
    };
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match target.protocol {
        Protocol::Grpc => builder
            .with_tonic()
            .with_endpoint(target.endpoint.clone())
            .with_retry_policy(policy)
            .build()?,
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            if target
                .endpoint
                .get(..8)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
            {
                return Err(ExporterError::Https(target.endpoint.clone()));
            }
            let protocol = if target.protocol == Protocol::HttpJson {
                opentelemetry_otlp::Protocol::HttpJson
            } else {
                opentelemetry_otlp::Protocol::HttpBinary
            };
            let timeout = export_timeout(|k| std::env::var(k).ok());
            builder
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(target.endpoint.clone())
                .with_http_client(http::RuntimeHyperClient::new(timeout)?)
                .with_retry_policy(policy)
                .build()?
        }
    };
    Ok(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| {
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_http_timeout_follows_the_exporter_variables() {
        let t = |vars: &[(&str, &str)]| export_timeout(lookup(vars));
        assert_eq!(t(&[]), Duration::from_secs(10));
        assert_eq!(
            t(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]),
            Duration::from_millis(2500)
        );
        assert_eq!(
            t(&[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700")
            ]),
            Duration::from_millis(700)
        );
        assert_eq!(
            t(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]),
            Duration::from_secs(10)
        );
    }

    fn http_target(endpoint: &str) -> OtlpTarget {
        OtlpTarget {
            protocol: Protocol::HttpProtobuf,
            endpoint: endpoint.to_owned(),
        }
    }

    #[test]
    fn grpc_to_a_plain_endpoint_is_exported_by_our_own_exporter() {
        let grpc = |endpoint: &str| OtlpTarget {
            protocol: Protocol::Grpc,
            endpoint: endpoint.to_owned(),
        };
        assert!(own_grpc(&grpc("http://127.0.0.1:4317"), lookup(&[])));
        assert!(own_grpc(
            &grpc("HTTP://c:4317"),
            lookup(&[("OTEL_EXPORTER_OTLP_HEADERS", " ")])
        ));
        assert!(!own_grpc(&grpc("https://c:4317"), lookup(&[])));
        assert!(!own_grpc(
            &http_target("http://c:4318/v1/traces"),
            lookup(&[])
        ));
        for var in grpc::ITS_OWN {
            assert!(
                !own_grpc(&grpc("http://c:4317"), lookup(&[(var, "x")])),
                "{var}"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        assert!(
            grpc::GrpcExporter::new("http://127.0.0.1:4317", Duration::from_secs(1), true).is_ok()
        );
        assert!(grpc::GrpcExporter::new("not a url", Duration::from_secs(1), true).is_err());
    }

    #[test]
    fn the_http_exporter_needs_a_runtime_and_plain_http() {
        let plain = http_target("http://127.0.0.1:4318/v1/traces");
        assert!(matches!(
            exporter(&plain, false),
            Err(ExporterError::Client(http::HttpClientError::NoRuntime))
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        assert!(exporter(&plain, true).is_ok());
        let json = OtlpTarget {
            protocol: Protocol::HttpJson,
            ..plain
        };
        assert!(exporter(&json, false).is_ok());
        let err = exporter(&http_target("HTTPS://c:4318/v1/traces"), false).unwrap_err();
        assert!(matches!(err, ExporterError::Https(_)), "{err:?}");
        assert!(err.to_string().contains("use http://"), "{err}");
    }
}
