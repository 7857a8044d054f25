//! An OTLP exporter whose failures are said, once: spans that cannot reach
//! the collector (refused, unreachable, an `https://` endpoint this build
//! cannot dial, an exporter that cannot be built) are dropped, and the
//! process says so in one warning line naming the endpoint and the
//! reason, the first time only (the SDK itself says nothing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Whether this process has said its spans cannot be exported.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Says, once per process, that spans for `endpoint` are dropped and why.
pub(crate) fn warn_once(endpoint: &str, reason: &dyn std::fmt::Display) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!("spans cannot be exported to {endpoint} ({reason}); they are dropped");
    }
}

/// `inner`, with its first failure said ([`warn_once`]).
#[derive(Debug)]
pub(crate) struct Reported<E> {
    inner: E,
    endpoint: String,
}

impl<E> Reported<E> {
    /// `inner`, exporting to `endpoint`.
    pub(crate) fn new(inner: E, endpoint: String) -> Self {
        Self { inner, endpoint }
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            warn_once(&self.endpoint, e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: super::EncodedExport> super::EncodedExport for Reported<E> {
    fn takes_requests(&self) -> bool {
        self.inner.takes_requests()
    }

    async fn export_request(&self, request: Vec<u8>) -> OTelSdkResult {
        let result = self.inner.export_request(request).await;
        if let Err(e) = &result {
            warn_once(&self.endpoint, e);
        }
        result
    }
}
