//! A client for Jaeger v2's HTTP query API (api_v3), for tests that check
//! exported traces against real Jaeger or against [`crate::sink`], its
//! stand-in.
//!
//! Requests name every parameter twice, by the snake_case names all v2
//! releases read (`query.service_name`, ...) and by the camelCase names
//! newer releases prefer (`query.serviceName`, ...), so one client works
//! with old and new Jaeger alike. Every request has a timeout, and answers
//! are read to a bounded size.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Deserialize;

use crate::error::FixtureError;
use crate::otlp::{RecordedSpan, flatten};
use crate::rfc3339;

/// One span as the query API returns it: the same shape as a span the
/// OTLP receiver records, so [`crate::trace_check`] applies to both.
/// `parent_span_id` is `None` for a root span.
pub type QueriedSpan = RecordedSpan;

/// The default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many traces a search asks for by default.
pub const DEFAULT_SEARCH_DEPTH: u32 = 100;

/// The largest answer read (larger ones are an error).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The URL is not a valid `http://` URL.
    #[error("bad URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection, or the request could not be sent or answered.
    #[error("GET {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// The error and its causes.
        reason: String,
    },
    /// No whole answer within the timeout.
    #[error("GET {url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The answer's body could not be read (or was too large).
    #[error("GET {url}: reading the answer: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An HTTP status other than the ones the call expects.
    #[error("GET {url}: HTTP {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The body, as text (Jaeger's errors are
        /// `{"error":{"httpCode":N,"message":"..."}}`).
        body: String,
    },
    /// The answer is not the JSON expected.
    #[error("GET {url}: unexpected JSON: {source}")]
    Json {
        /// The URL.
        url: String,
        /// The decoding error.
        source: serde_json::Error,
    },
}

impl QueryError {
    /// The HTTP status, for [`QueryError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A [`QueryError::Status`] for `url` answering `status` with `body`.
    pub(crate) fn status_error(url: &str, status: u16, body: &[u8]) -> Self {
        Self::Status {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(body).trim_end().to_owned(),
        }
    }
}

pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// An HTTP/1 client (plain `http://` only).
pub(crate) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url`, the whole exchange within `timeout`: the status and the body
/// (at most [`MAX_BODY`] bytes).
pub(crate) async fn fetch(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), QueryError> {
    let uri = parse_url(url)?;
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| QueryError::Connect {
            url: url.to_owned(),
            reason: error_chain(&e),
        })?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| QueryError::Body {
                url: url.to_owned(),
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| QueryError::Timeout {
            url: url.to_owned(),
            timeout,
        })?
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `url` as an `http://` URI with a host.
fn parse_url(url: &str) -> Result<Uri, QueryError> {
    let bad = |reason: &str| QueryError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(bad("expected http://HOST[:PORT][/PATH]"));
    }
    Ok(uri)
}

/// `s` percent-encoded for a query value or a path segment (everything
/// but letters, digits and `-._~`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of a trace answer: `{"result":{"resourceSpans":[...]}}`.
#[derive(Deserialize)]
struct TracesAnswer {
    result: TracesResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TracesResult {
    #[serde(default)]
    resource_spans: Vec<ResourceSpans>,
}

/// The body of `GET /api/v3/services` (Jaeger may leave out an empty list).
#[derive(Deserialize)]
struct ServicesAnswer {
    #[serde(default)]
    services: Vec<String>,
}

/// A client for one Jaeger query endpoint (or the trace sink's).
#[derive(Debug, Clone)]
pub struct JaegerQuery {
    base: String,
    client: HttpClient,
    timeout: Duration,
    search_depth: u32,
}

impl JaegerQuery {
    /// A client for the query API at `base_url`, e.g.
    /// `http://127.0.0.1:16686` (a base path such as
    /// `http://host:16686/jaeger` is kept). An error unless it is an
    /// `http://` URL with a host.
    pub fn new(base_url: &str) -> Result<Self, FixtureError> {
        parse_url(base_url).map_err(|e| FixtureError::start("the Jaeger query client", e))?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            client: http_client(),
            timeout: DEFAULT_TIMEOUT,
            search_depth: DEFAULT_SEARCH_DEPTH,
        })
    }

    /// The same client with `timeout` for each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client asking searches for at most `depth` traces (at
    /// least 1; Jaeger's in-memory store also wants it at most its
    /// `max_traces`).
    pub fn with_search_depth(mut self, depth: u32) -> Self {
        self.search_depth = depth.max(1);
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The service names Jaeger knows, sorted.
    pub async fn services(&self) -> Result<Vec<String>, QueryError> {
        let (url, body) = self.get_ok("/api/v3/services").await?;
        let mut services = decode::<ServicesAnswer>(&url, &body)?.services;
        services.sort();
        Ok(services)
    }

    /// Every span of each trace that has a span of `service` starting
    /// within `[min, max]` (`min` must be before `max`), as Jaeger returns
    /// them (unadjusted: raw traces are asked for). Empty if there is no
    /// such trace (Jaeger's 404).
    pub async fn find_traces(
        &self,
        service: &str,
        min: SystemTime,
        max: SystemTime,
    ) -> Result<Vec<QueriedSpan>, QueryError> {
        let (min, max) = (rfc3339::format(min), rfc3339::format(max));
        let depth = self.search_depth.to_string();
        let params = [
            (["query.service_name", "query.serviceName"], service),
            (["query.start_time_min", "query.startTimeMin"], &min),
            (["query.start_time_max", "query.startTimeMax"], &max),
            (["query.num_traces", "query.searchDepth"], &depth),
            (["query.raw_traces", "query.rawTraces"], "true"),
        ];
        let query: Vec<String> = params
            .iter()
            .flat_map(|(names, value)| names.map(|name| format!("{name}={}", encode(value))))
            .collect();
        let path = format!("/api/v3/traces?{}", query.join("&"));
        Ok(self.traces(&path).await?.unwrap_or_default())
    }

    /// Every span of trace `trace_id` (hex), unadjusted; `None` if Jaeger
    /// does not know it (404). A malformed id is Jaeger's 400, an error.
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Vec<QueriedSpan>>, QueryError> {
        let path = format!(
            "/api/v3/traces/{}?raw_traces=true&rawTraces=true",
            encode(trace_id)
        );
        self.traces(&path).await
    }

    /// `GET` of `path_and_query` (e.g. `/api/v3/services`) below the base
    /// URL, for requests the other methods do not make: the JSON body of a
    /// 200, else [`QueryError::Status`] with the status and body.
    pub async fn get_json(&self, path_and_query: &str) -> Result<serde_json::Value, QueryError> {
        let (url, body) = self.get_ok(path_and_query).await?;
        decode(&url, &body)
    }

    /// The spans of a trace answer; `None` on 404.
    async fn traces(&self, path: &str) -> Result<Option<Vec<QueriedSpan>>, QueryError> {
        let (url, status, body) = self.get(path).await?;
        match status {
            200 => {
                let answer: TracesAnswer = decode(&url, &body)?;
                Ok(Some(flatten(&answer.result.resource_spans)))
            }
            404 => Ok(None),
            _ => Err(QueryError::status_error(&url, status, &body)),
        }
    }

    /// `GET` of `path`; the URL and body of a 200, an error otherwise.
    async fn get_ok(&self, path: &str) -> Result<(String, Bytes), QueryError> {
        match self.get(path).await? {
            (url, 200, body) => Ok((url, body)),
            (url, status, body) => Err(QueryError::status_error(&url, status, &body)),
        }
    }

    async fn get(&self, path: &str) -> Result<(String, u16, Bytes), QueryError> {
        let url = format!("{}{path}", self.base);
        let (status, body) = fetch(&self.client, &url, self.timeout).await?;
        Ok((url, status, body))
    }
}

fn decode<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, QueryError> {
    serde_json::from_slice(body).map_err(|source| QueryError::Json {
        url: url.to_owned(),
        source,
    })
}
