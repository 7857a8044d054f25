//! The one place where the binaries set up logging and the tracer provider.

use opentelemetry::global;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;

/// The log level used when `RUST_LOG` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDefault {
    /// Warnings and errors only (CLIs: keep stderr for the command).
    Warn,
    /// Informational messages too (services).
    Info,
}

/// Keeps telemetry alive; dropping it flushes and shuts the tracer down.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// The tracer provider (for tests and embedding).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

/// Installs a log subscriber writing to stderr (filter from `RUST_LOG`)
/// and a global tracer provider for `service`, so that every span has a
/// real trace and span id to propagate.
pub fn init(service: &'static str, default: LogDefault) -> TelemetryGuard {
    let level = match default {
        LogDefault::Warn => "warn",
        LogDefault::Info => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let provider = tracer_provider(service);
    global::set_tracer_provider(provider.clone());
    TelemetryGuard { provider }
}

/// A tracer provider for `service` with no exporter.
pub fn tracer_provider(service: &'static str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .build()
}
