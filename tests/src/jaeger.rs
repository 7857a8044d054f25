//! Jaeger v2's HTTP query API (api_v3) for tests that check exported
//! traces against real Jaeger or against [`crate::sink`], its stand-in:
//! the report's client (`analysis::jaeger`), with its answers read by the
//! report's reader into [`RecordedSpan`]s ([`crate::otlp::read_json`]) so
//! that [`crate::trace_check`] applies to both.

use std::time::{Duration, SystemTime};

use analysis::jaeger::{Client, Search};

use crate::error::FixtureError;
use crate::otlp::{RecordedSpan, read_json};

pub use analysis::jaeger::JaegerError as QueryError;

/// One span as the query API returns it: the same shape as a span the
/// OTLP receiver records. `parent_span_id` is `None` for a root span.
pub type QueriedSpan = RecordedSpan;

/// The default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many traces a search asks for by default.
pub const DEFAULT_SEARCH_DEPTH: u32 = 100;

/// The largest answer read (larger ones are an error).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// `GET url` within `timeout`: `Ok` on 200, else why not.
pub async fn get_ok(url: &str, timeout: Duration) -> Result<(), QueryError> {
    Client::new(url)?
        .with_timeout(timeout)
        .with_max_body(MAX_BODY)
        .get_ok("")
        .await
        .map(drop)
}

/// A client for one Jaeger query endpoint (or the trace sink's).
#[derive(Debug, Clone)]
pub struct JaegerQuery {
    client: Client,
    search_depth: u32,
}

impl JaegerQuery {
    /// A client for the query API at `base_url`, e.g.
    /// `http://127.0.0.1:16686` (a base path such as
    /// `http://host:16686/jaeger` is kept). An error unless it is an
    /// `http://` URL with a host.
    pub fn new(base_url: &str) -> Result<Self, FixtureError> {
        let client = Client::new(base_url)
            .map_err(|e| FixtureError::start("the Jaeger query client", e))?
            .with_timeout(DEFAULT_TIMEOUT)
            .with_max_body(MAX_BODY);
        Ok(Self {
            client,
            search_depth: DEFAULT_SEARCH_DEPTH,
        })
    }

    /// The same client with `timeout` for each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.with_timeout(timeout);
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
        self.client.base_url()
    }

    /// The service names Jaeger knows, sorted.
    pub async fn services(&self) -> Result<Vec<String>, QueryError> {
        self.client.services().await
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
        let ns = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        let search = Search::new(service, ns(min), ns(max), self.search_depth).raw();
        let body = self.client.search(&search).await?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        self.spans(&body)
    }

    /// Every span of trace `trace_id` (hex), unadjusted; `None` if Jaeger
    /// does not know it (404). A malformed id is Jaeger's 400, an error.
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Vec<QueriedSpan>>, QueryError> {
        match self.client.trace(trace_id).await? {
            Some(body) => self.spans(&body).map(Some),
            None => Ok(None),
        }
    }

    /// `GET` of `path_and_query` (e.g. `/api/v3/services`) below the base
    /// URL, for requests the other methods do not make: the JSON body of a
    /// 200, else [`QueryError::Status`] with the status and body.
    pub async fn get_json(&self, path_and_query: &str) -> Result<serde_json::Value, QueryError> {
        let body = self.client.get_ok(path_and_query).await?;
        self.decode(&body)
    }

    /// The spans of a trace answer, `{"result":{"resourceSpans":[...]}}`.
    fn spans(&self, body: &[u8]) -> Result<Vec<QueriedSpan>, QueryError> {
        read_json(body).map_err(|source| self.json_error(source))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, QueryError> {
        serde_json::from_slice(body).map_err(|source| self.json_error(source))
    }

    fn json_error(&self, source: serde_json::Error) -> QueryError {
        QueryError::Json {
            url: self.client.base_url().to_owned(),
            source,
        }
    }
}
