//! The HTTP client behind OTLP/HTTP export: hyper (already linked for
//! gRPC), plain `http://` only, its requests run on the service's Tokio
//! runtime.
//!
//! The SDK's batch processor exports from a thread of its own, blocking on
//! the export future there; hyper's connections need a Tokio runtime. So
//! each request is spawned onto the runtime the exporter was built in and
//! the batch thread waits for its outcome: the runtime's workers only do
//! the non-blocking I/O, and a slow or absent collector holds up the batch
//! thread alone (each request is bounded by the export timeout).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::Handle;

/// Why the HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpClientError {
    /// Built outside a Tokio runtime.
    #[error("OTLP/HTTP export must be set up inside a Tokio runtime")]
    NoRuntime,
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    /// The runtime dropped the request's task (it is shutting down).
    #[error("the runtime stopped before the OTLP/HTTP request finished: {0}")]
    Cancelled(#[from] tokio::task::JoinError),
}

/// An [`HttpClient`] that sends each request with hyper on a Tokio runtime.
#[derive(Debug, Clone)]
pub(super) struct RuntimeHyperClient {
    runtime: Handle,
    inner: HyperClient,
}

impl RuntimeHyperClient {
    /// A client on the current runtime whose requests (response included)
    /// give up after `timeout`.
    pub(super) fn new(timeout: Duration) -> Result<Self, HttpClientError> {
        let runtime = Handle::try_current().map_err(|_| HttpClientError::NoRuntime)?;
        // Creating the connector needs no runtime; using it does, and that
        // happens in the spawned task.
        let inner = HyperClient::with_default_connector(timeout, None);
        Ok(Self { runtime, inner })
    }
}

impl HttpClient for RuntimeHyperClient {
    fn send_bytes<'a, 'f>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        let inner = self.inner.clone();
        let task = self
            .runtime
            .spawn(async move { inner.send_bytes(request).await });
        Box::pin(async move {
            match task.await {
                Ok(answer) => answer,
                Err(e) => Err(Box::new(RequestError::from(e)) as HttpError),
            }
        })
    }
}
