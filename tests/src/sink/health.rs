//! The health endpoint, where Jaeger v2's `healthcheckv2` extension serves
//! it (`GET /status`, port 13133 by default), and the probe that asks it
//! (`trace-sink health`, a container healthcheck).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::json;

use super::query::ok;
use crate::jaeger::QueryError;

/// The path of the health endpoint.
pub const PATH: &str = "/status";

/// The health routes: `GET /status` answers 200 while the sink serves.
pub(crate) fn router() -> Router {
    Router::new().route(
        PATH,
        get(|| async { ok(&json!({ "healthy": true, "status": "StatusOK" })) }),
    )
}

/// `Ok(())` if `GET url` answers 200 within `timeout`; otherwise why not.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), QueryError> {
    crate::jaeger::get_ok(url, timeout).await
}
