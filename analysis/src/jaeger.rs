//! A client for Jaeger v2's HTTP query API (api_v3): a search for a
//! service's traces in a time window, one trace by id, the services, and
//! any other `GET`, each within a timeout and read to a bounded size.
//! Answers are OTLP JSON, which the reader (`scan`) reads.
//!
//! Requests name every parameter twice, by the snake_case names all v2
//! releases read (`query.service_name`, ...) and by the camelCase names
//! newer releases prefer (`query.serviceName`, ...), so one client works
//! with old and new Jaeger alike.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest answer read by default.
pub const DEFAULT_MAX_BODY: usize = 512 * 1024 * 1024;

/// How long one request may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Asking Jaeger failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JaegerError {
    /// The URL is not `http://HOST[:PORT][/PATH]`.
    #[error("{url}: give the query API's base URL, such as http://localhost:16686 ({reason})")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection, or no whole answer.
    #[error("cannot reach Jaeger at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why, with its causes.
        reason: String,
    },
    /// No whole answer in time.
    #[error("Jaeger at {url} did not answer within {}s", timeout.as_secs_f64())]
    Timeout {
        /// The URL asked.
        url: String,
        /// The time it had.
        timeout: Duration,
    },
    /// A status other than the ones the request expects.
    #[error("Jaeger at {url} answered HTTP {status}: {}", short(body))]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
        /// The body, as text (Jaeger's errors are
        /// `{"error":{"httpCode":N,"message":"..."}}`).
        body: String,
    },
    /// The answer is not the JSON expected.
    #[error("Jaeger at {url} answered with unexpected JSON: {source}")]
    Json {
        /// The URL asked.
        url: String,
        /// The decoding error.
        source: serde_json::Error,
    },
}

impl JaegerError {
    /// The HTTP status, for [`JaegerError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A [`JaegerError::Status`] for `url` answering `status` with `body`.
    pub fn status_error(url: &str, status: u16, body: &[u8]) -> JaegerError {
        JaegerError::Status {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(body).trim_end().to_owned(),
        }
    }
}

/// The start of an error body, on one line.
fn short(body: &str) -> String {
    let end = (0..=body.len().min(200))
        .rev()
        .find(|i| body.is_char_boundary(*i))
        .unwrap_or(0);
    body.get(..end)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One search: the traces with a span of `service` that started in a
/// window.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Search<'a> {
    /// The service whose traces are searched (`core-client`).
    pub service: &'a str,
    /// The window's start, nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// Its end.
    pub until_ns: u64,
    /// At most this many traces.
    pub limit: u32,
    /// Ask for the traces as stored (not adjusted by Jaeger).
    pub raw: bool,
}

impl<'a> Search<'a> {
    /// A search for at most `limit` traces of `service` in
    /// `[since_ns, until_ns]`.
    pub fn new(service: &'a str, since_ns: u64, until_ns: u64, limit: u32) -> Search<'a> {
        Search {
            service,
            since_ns,
            until_ns,
            limit,
            raw: false,
        }
    }

    /// The same search for the traces as stored.
    pub fn raw(self) -> Search<'a> {
        Search { raw: true, ..self }
    }

    /// The search's path and query below the base URL.
    fn path(&self) -> String {
        let min = crate::time::rfc3339(self.since_ns);
        // Microseconds: the end rounded up, so that the window holds it.
        let max = crate::time::rfc3339(self.until_ns.div_ceil(1_000).saturating_mul(1_000));
        let limit = self.limit.to_string();
        let mut params = vec![
            (["query.service_name", "query.serviceName"], self.service),
            (["query.start_time_min", "query.startTimeMin"], &min),
            (["query.start_time_max", "query.startTimeMax"], &max),
            (["query.num_traces", "query.searchDepth"], &limit),
        ];
        if self.raw {
            params.push((["query.raw_traces", "query.rawTraces"], "true"));
        }
        let query: Vec<String> = params
            .iter()
            .flat_map(|(names, value)| names.map(|n| format!("{n}={}", encode(value))))
            .collect();
        format!("/api/v3/traces?{}", query.join("&"))
    }
}

/// A client for one query API (real Jaeger, or a stand-in for it).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    max_body: usize,
}

impl Client {
    /// A client for the query API at `base` (`http://localhost:16686`; a
    /// base path such as `http://host:16686/jaeger` is kept).
    pub fn new(base: &str) -> Result<Client, JaegerError> {
        let base = base.trim_end_matches('/');
        parse_url(base)?;
        Ok(Client {
            base: base.to_owned(),
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// The same client giving each request `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client reading answers up to `bytes` (a larger one is
    /// [`JaegerError::Unreachable`]).
    pub fn with_max_body(mut self, bytes: usize) -> Client {
        self.max_body = bytes;
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of a search.
    pub fn search_url(&self, search: &Search<'_>) -> String {
        format!("{}{}", self.base, search.path())
    }

    /// Runs a search: the answer's body (empty when nothing matched:
    /// Jaeger answers such a search with 404).
    pub async fn search(&self, search: &Search<'_>) -> Result<Bytes, JaegerError> {
        match self.get(&search.path()).await? {
            (200, body) => Ok(body),
            (404, _) => Ok(Bytes::new()),
            (status, body) => Err(JaegerError::status_error(&self.base, status, &body)),
        }
    }

    /// Every span of trace `id` (hex), as stored; `None` if Jaeger does
    /// not know it (404).
    pub async fn trace(&self, id: &str) -> Result<Option<Bytes>, JaegerError> {
        let path = format!(
            "/api/v3/traces/{}?raw_traces=true&rawTraces=true",
            encode(id)
        );
        match self.get(&path).await? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, body) => Err(JaegerError::status_error(&self.base, status, &body)),
        }
    }

    /// The service names Jaeger knows, sorted.
    pub async fn services(&self) -> Result<Vec<String>, JaegerError> {
        /// The answer (Jaeger may leave out an empty list).
        #[derive(serde::Deserialize)]
        struct Services {
            #[serde(default)]
            services: Vec<String>,
        }
        let body = self.get_ok("/api/v3/services").await?;
        let mut services = serde_json::from_slice::<Services>(&body)
            .map_err(|source| JaegerError::Json {
                url: self.base.clone(),
                source,
            })?
            .services;
        services.sort();
        Ok(services)
    }

    /// `GET` of `path_and_query` below the base URL: the body of a 200,
    /// else [`JaegerError::Status`].
    pub async fn get_ok(&self, path_and_query: &str) -> Result<Bytes, JaegerError> {
        match self.get(path_and_query).await? {
            (200, body) => Ok(body),
            (status, body) => Err(JaegerError::status_error(&self.base, status, &body)),
        }
    }

    /// `GET` of `path_and_query` below the base URL, the whole exchange
    /// within the timeout: the status and the body.
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Bytes), JaegerError> {
        let url = format!("{}{path_and_query}", self.base);
        let uri = parse_url(&url)?;
        let unreachable = |reason: String| JaegerError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let exchange = async {
            let response = self
                .http
                .get(uri)
                .await
                .map_err(|e| unreachable(chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| JaegerError::Timeout {
                url: self.base.clone(),
                timeout: self.timeout,
            })?
    }
}

/// `url` as an `http://` URI with a host.
fn parse_url(url: &str) -> Result<Uri, JaegerError> {
    let bad = |reason: String| JaegerError::Url {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(bad("expected http://HOST[:PORT][/PATH]".to_owned()));
    }
    Ok(uri)
}

/// `e` and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_url_names_each_parameter_both_ways() {
        let client = Client::new("http://localhost:16686/").unwrap();
        let search = Search::new("core-client", 0, 1_000_000_000, 20);
        let url = client.search_url(&search);
        assert!(
            url.starts_with("http://localhost:16686/api/v3/traces?"),
            "{url}"
        );
        for part in [
            "query.service_name=core-client",
            "query.serviceName=core-client",
            "query.start_time_min=1970-01-01T00%3A00%3A00.000000Z",
            "query.start_time_max=1970-01-01T00%3A00%3A01.000000Z",
            "query.num_traces=20",
        ] {
            assert!(url.contains(part), "{part} in {url}");
        }
        assert!(!url.contains("raw"), "{url}");
        assert!(
            client
                .search_url(&search.raw())
                .contains("query.rawTraces=true")
        );
        for bad in ["https://x", "localhost:16686", "http://"] {
            assert!(
                matches!(Client::new(bad), Err(JaegerError::Url { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_error_body_is_said_short_and_on_one_line() {
        let err = JaegerError::status_error("http://j", 500, "a\nb ".repeat(200).as_bytes());
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.len() < 260, "{text}");
        assert_eq!(err.status(), Some(500));
    }
}
