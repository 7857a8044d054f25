//! OTLP/HTTP trace exports: `POST /v1/traces` with a protobuf
//! (`application/x-protobuf`) or JSON (`application/json`) body, answered
//! as the OTLP specification says: 200 with an `ExportTraceServiceResponse`
//! in the request's encoding, 400 for a body that does not decode, 415 for
//! another media type or a compressed body, 503 (retryable) when the
//! [`Exports`] refuses with `UNAVAILABLE`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::exports::Exports;

/// The path of the traces endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// The largest body taken (the SDK's batches are far smaller).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A request body's encoding.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Option<Self> {
        let media = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = media.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Self::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    fn decode(self, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
        match self {
            Self::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string()),
            Self::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
        }
    }

    fn encode(self, response: &ExportTraceServiceResponse) -> Result<Vec<u8>, String> {
        match self {
            Self::Protobuf => Ok(response.encode_to_vec()),
            Self::Json => serde_json::to_vec(response).map_err(|e| e.to_string()),
        }
    }
}

/// A plain-text error answer.
fn refuse(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

async fn export<E: Exports>(
    State(exports): State<Arc<E>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(encoding) = Encoding::of(&headers) else {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/x-protobuf or application/json".to_owned(),
        );
    };
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| e.as_bytes() != b"identity")
    {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "compressed bodies are not taken".to_owned(),
        );
    }
    let request = match encoding.decode(&body) {
        Ok(request) => request,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("undecodable body: {e}")),
    };
    match exports.export(request, &headers) {
        Ok(response) => match encoding.encode(&response) {
            Ok(body) => ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response(),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        Err(status) => {
            let code = match status.code() {
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(code, status.message().to_owned())
        }
    }
}

/// The OTLP/HTTP routes over `exports`.
fn router<E: Exports>(exports: Arc<E>) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export::<E>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(exports)
}

/// Serves OTLP/HTTP trace exports arriving on `listener` into `exports`
/// until `shutdown` is cancelled.
pub(crate) async fn serve<E: Exports>(
    listener: TcpListener,
    exports: Arc<E>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(exports))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
