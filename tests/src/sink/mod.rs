//! A trace sink that stands in for Jaeger v2 where its image cannot be
//! pulled: it takes OTLP trace exports over gRPC (port 4317) and over HTTP
//! (port 4318, `POST /v1/traces`, protobuf or JSON) into a bounded
//! store and answers the part of Jaeger's HTTP query API (api_v3, port
//! 16686) the tests use, with Jaeger's status codes and bodies, and a
//! health endpoint (port 13133). Tests speak to it only through
//! [`crate::jaeger::JaegerQuery`], so they pass against real Jaeger too.
//!
//! Layout:
//! - [`store`]: the bounded span store (oldest traces evicted whole) and
//!   its lock.
//! - `query`: the api_v3 HTTP routes.
//! - `otlp_json`: spans as OTLP JSON, shaped as Jaeger emits them.
//! - `params`: reading query parameters as Jaeger (Go) reads them.
//! - [`health`]: the health endpoint and its probe.
//!
//! [`TraceSink::start`] binds and serves all four; the `trace-sink`
//! binary is a thin wrapper around it.

pub mod health;
mod otlp_json;
mod params;
mod query;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use query::DEFAULT_SEARCH_DEPTH;
use store::lock;
pub use store::{SpanStore, TraceQuery};

use crate::error::{FixtureError, Result};
use crate::otlp::{Exports, bind};

/// The default bound on stored spans.
pub const DEFAULT_MAX_SPANS: usize = 100_000;

/// How long in-flight requests get to finish once the sink stops.
const GRACE: Duration = Duration::from_secs(5);

/// Where the sink listens and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// OTLP/gRPC trace exports.
    pub otlp_listen: SocketAddr,
    /// OTLP/HTTP trace exports.
    pub otlp_http_listen: SocketAddr,
    /// The query API.
    pub http_listen: SocketAddr,
    /// The health endpoint.
    pub health_listen: SocketAddr,
    /// Most spans stored; past it the oldest traces are evicted whole.
    pub max_spans: usize,
}

impl Default for SinkConfig {
    /// Jaeger's ports on every interface, [`DEFAULT_MAX_SPANS`].
    fn default() -> Self {
        Self {
            otlp_listen: SocketAddr::from(([0, 0, 0, 0], 4317)),
            otlp_http_listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 16686)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 13133)),
            max_spans: DEFAULT_MAX_SPANS,
        }
    }
}

impl SinkConfig {
    /// Every port `127.0.0.1:0`, keeping at most `max_spans` spans.
    pub fn loopback(max_spans: usize) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            otlp_listen: any,
            otlp_http_listen: any,
            http_listen: any,
            health_listen: any,
            max_spans,
        }
    }
}

impl Exports for Mutex<SpanStore> {
    fn export(
        &self,
        request: ExportTraceServiceRequest,
        _headers: &axum::http::HeaderMap,
    ) -> std::result::Result<ExportTraceServiceResponse, tonic::Status> {
        let inserted = lock(self).insert(request);
        let partial_success = (inserted.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(inserted.rejected).unwrap_or(i64::MAX),
            error_message: "spans without a valid 16-byte trace id were dropped".to_owned(),
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }
}

/// A running sink: four servers over one store. They stop when the
/// shutdown token is cancelled (or the sink is dropped).
#[derive(Debug)]
pub struct TraceSink {
    otlp_addr: SocketAddr,
    otlp_http_addr: SocketAddr,
    http_addr: SocketAddr,
    health_addr: SocketAddr,
    store: Arc<Mutex<SpanStore>>,
    shutdown: CancellationToken,
    servers: JoinSet<Result<()>>,
}

impl TraceSink {
    /// Binds the four listeners of `config` and serves them until
    /// `shutdown` is cancelled. An error if a listener cannot be bound.
    pub async fn start(config: SinkConfig, shutdown: CancellationToken) -> Result<Self> {
        let (otlp, otlp_addr) = bind(config.otlp_listen, "trace sink's OTLP listener").await?;
        let (otlp_http, otlp_http_addr) =
            bind(config.otlp_http_listen, "trace sink's OTLP/HTTP listener").await?;
        let (http, http_addr) = bind(config.http_listen, "trace sink's query listener").await?;
        let (health, health_addr) =
            bind(config.health_listen, "trace sink's health listener").await?;
        let store = Arc::new(Mutex::new(SpanStore::new(config.max_spans)));
        let mut servers = JoinSet::new();
        let token = shutdown.clone();
        let exports = store.clone();
        servers.spawn(async move {
            crate::otlp::serve(otlp, exports, token)
                .await
                .map_err(|e| FixtureError::output("the trace sink's OTLP server", e))
        });
        let token = shutdown.clone();
        let exports = store.clone();
        servers.spawn(async move {
            crate::otlp::http::serve(otlp_http, exports, token)
                .await
                .map_err(|e| FixtureError::io("the trace sink's OTLP/HTTP server", e))
        });
        for (listener, router, what) in [
            (http, query::router(store.clone()), "query"),
            (health, health::router(), "health"),
        ] {
            let token = shutdown.clone();
            servers.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .map_err(|e| FixtureError::io(format!("the trace sink's {what} server"), e))
            });
        }
        Ok(Self {
            otlp_addr,
            otlp_http_addr,
            http_addr,
            health_addr,
            store,
            shutdown,
            servers,
        })
    }

    /// The address taking OTLP/gRPC exports.
    pub fn otlp_addr(&self) -> SocketAddr {
        self.otlp_addr
    }

    /// The address taking OTLP/HTTP exports.
    pub fn otlp_http_addr(&self) -> SocketAddr {
        self.otlp_http_addr
    }

    /// The address of the query API.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address of the health endpoint.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The URL for an OTLP/gRPC exporter, `http://ADDR`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.otlp_addr)
    }

    /// The base URL for an OTLP/HTTP exporter, `http://ADDR`
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`: exporters append `/v1/traces`).
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://{}", self.otlp_http_addr)
    }

    /// The base URL of the query API, `http://ADDR`.
    pub fn query_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The health endpoint's URL, `http://ADDR/status`.
    pub fn health_url(&self) -> String {
        format!("http://{}{}", self.health_addr, health::PATH)
    }

    /// How many spans are stored.
    pub fn span_count(&self) -> usize {
        lock(&self.store).span_count()
    }

    /// How many traces are stored.
    pub fn trace_count(&self) -> usize {
        lock(&self.store).trace_count()
    }

    /// Serves until the shutdown token is cancelled or a server fails,
    /// then stops them all: in-flight requests get a few seconds, then
    /// are cut. The first server error, if any.
    pub async fn run(mut self) -> Result<()> {
        let stopped = tokio::select! {
            () = self.shutdown.cancelled() => None,
            Some(joined) = self.servers.join_next() => Some(joined),
        };
        self.shutdown.cancel();
        let mut result = stopped.map_or(Ok(()), outcome);
        let deadline = tokio::time::Instant::now() + GRACE;
        loop {
            match tokio::time::timeout_at(deadline, self.servers.join_next()).await {
                Ok(Some(joined)) => result = result.and(outcome(joined)),
                Ok(None) => break,
                Err(_) => {
                    self.servers.abort_all();
                    break;
                }
            }
        }
        result
    }

    /// Stops the sink ([`Self::run`] with the token cancelled).
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.cancel();
        self.run().await
    }
}

/// A server task's result, a panic or cancellation included.
fn outcome(joined: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    joined.map_err(|e| FixtureError::output("a trace sink server task", e))?
}

impl Drop for TraceSink {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
