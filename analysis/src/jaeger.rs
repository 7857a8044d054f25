//! Commands from Jaeger's query API (v2's `/api/v3/traces`): one search
//! for a service's traces in a time window, read as OTLP JSON.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest answer read.
const MAX_BODY: usize = 512 * 1024 * 1024;

/// How long the whole search may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Asking Jaeger failed.
#[derive(Debug, thiserror::Error)]
pub enum JaegerError {
    /// The URL is not `http://HOST[:PORT][/PATH]`.
    #[error("--jaeger {0}: give the query API's base URL, such as http://localhost:16686")]
    Url(String),
    /// No connection or no answer.
    #[error("cannot reach Jaeger at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// No whole answer in time.
    #[error("Jaeger at {url} did not answer within {}s", TIMEOUT.as_secs())]
    Timeout {
        /// The URL asked.
        url: String,
    },
    /// An error status.
    #[error("Jaeger at {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

/// One search.
#[derive(Debug, Clone)]
pub struct Search<'a> {
    /// The query API's base URL (`http://localhost:16686`).
    pub base: &'a str,
    /// The service whose traces are searched (`core-client`).
    pub service: &'a str,
    /// The window, nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// Its end.
    pub until_ns: u64,
    /// At most this many traces.
    pub limit: u32,
}

impl Search<'_> {
    /// The search's URL (parameters named as every Jaeger v2 release reads
    /// them, and as newer ones prefer).
    pub fn url(&self) -> Result<String, JaegerError> {
        let base = self.base.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|_| JaegerError::Url(base.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(JaegerError::Url(base.to_owned()));
        }
        let min = crate::aggregate::rfc3339(self.since_ns);
        let max = crate::aggregate::rfc3339(self.until_ns);
        let limit = self.limit.to_string();
        let params = [
            (["query.service_name", "query.serviceName"], self.service),
            (["query.start_time_min", "query.startTimeMin"], &min),
            (["query.start_time_max", "query.startTimeMax"], &max),
            (["query.num_traces", "query.searchDepth"], &limit),
        ];
        let query: Vec<String> = params
            .iter()
            .flat_map(|(names, value)| names.iter().map(move |n| format!("{n}={}", encode(value))))
            .collect();
        Ok(format!("{base}/api/v3/traces?{}", query.join("&")))
    }

    /// Runs the search: the answer's body (empty when nothing matched).
    pub async fn run(&self) -> Result<Bytes, JaegerError> {
        let url = self.url()?;
        let uri: Uri = url
            .parse()
            .map_err(|_| JaegerError::Url(self.base.to_owned()))?;
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let unreachable = |reason: String| JaegerError::Unreachable {
            url: self.base.to_owned(),
            reason,
        };
        let exchange = async {
            let response = client.get(uri).await.map_err(|e| unreachable(chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, JaegerError>((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| JaegerError::Timeout {
                url: self.base.to_owned(),
            })??;
        match status {
            200 => Ok(body),
            // Jaeger answers a search that found nothing with 404.
            404 => Ok(Bytes::new()),
            _ => Err(JaegerError::Status {
                url: self.base.to_owned(),
                status,
                body: String::from_utf8_lossy(body.get(..200.min(body.len())).unwrap_or_default())
                    .trim()
                    .to_owned(),
            }),
        }
    }
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

/// `s` percent-encoded for a query value.
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
        let search = Search {
            base: "http://localhost:16686/",
            service: "core-client",
            since_ns: 0,
            until_ns: 1_000_000_000,
            limit: 20,
        };
        let url = search.url().unwrap();
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
        for bad in ["https://x", "localhost:16686", "http://"] {
            let search = Search {
                base: bad,
                ..search.clone()
            };
            assert!(matches!(search.url(), Err(JaegerError::Url(_))), "{bad}");
        }
    }
}
