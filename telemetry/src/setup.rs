//! The one place where the binaries set up logging, tracer providers and
//! span export (DESIGN.md §3.4).
//!
//! Where spans go is decided once, from the standard variables:
//! - `OTEL_SDK_DISABLED=true`: nowhere (ids are still made and propagated);
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   set: OTLP over gRPC (the exporter reads the other `OTEL_EXPORTER_OTLP_*`
//!   variables itself);
//! - otherwise: the local trace file, when the caller passes one (the CLI
//!   does), else nowhere.
//!
//! `OTEL_SERVICE_NAME` overrides the service's default name and
//! `OTEL_TRACES_SAMPLER` picks the sampler (`always_off` keeps propagation
//! but records nothing). Spans are batched and exported off the hot path;
//! [`TelemetryGuard::shutdown`] flushes them within a bound, so a collector
//! that is down delays an exit by at most that bound and never fails it.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{RetryPolicy, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, TracerProviderBuilder};
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::spans;

use crate::ids::PresetIdGenerator;
use crate::trace_file::{RemoteSpans, TraceFile};

/// The `--help` text every service binary shows about span export.
pub const EXPORT_HELP: &str = "Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (or \
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), e.g. http://localhost:4317, to export spans over \
OTLP/gRPC; OTEL_SERVICE_NAME renames the service, OTEL_TRACES_SAMPLER=always_off keeps \
propagation only, OTEL_SDK_DISABLED=true exports nothing. Spans are flushed on exit and \
on SIGTERM. Logs go to stderr (RUST_LOG sets the filter); warnings and errors are also \
recorded as events on the exported spans.";

/// How long shutdown waits for the last spans to be exported.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// The log level used when `RUST_LOG` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDefault {
    /// Warnings and errors only (CLIs: keep stderr for the command).
    Warn,
    /// Informational messages too (services).
    Info,
}

/// Where this process's spans go.
#[derive(Debug, Clone)]
pub enum Export {
    /// Nowhere: `OTEL_SDK_DISABLED=true`, or no endpoint and no local file.
    Off,
    /// OTLP over gRPC to the configured endpoint.
    Otlp,
    /// The local trace file.
    File(TraceFile),
}

impl Export {
    /// The choice the environment makes, with `local` as the fallback when
    /// no OTLP endpoint is configured.
    pub fn from_env(local: Option<TraceFile>) -> Self {
        Self::decide(|k| std::env::var(k).ok(), local)
    }

    /// [`from_env`](Self::from_env) over an arbitrary variable lookup.
    pub fn decide(var: impl Fn(&str) -> Option<String>, local: Option<TraceFile>) -> Self {
        let set = |k: &str| var(k).is_some_and(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Self::Off;
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            return Self::Otlp;
        }
        local.map_or(Self::Off, Self::File)
    }
}

/// What a process exports and how patiently it flushes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where spans go.
    pub export: Export,
    /// Retry failed OTLP exports (services) or try once (short-lived CLIs,
    /// which must not linger at exit because a collector is down).
    pub retry: bool,
    /// Record the process's `tracing` warnings and errors as events on its
    /// exported session and link spans (services), through a
    /// `tracing-opentelemetry` layer.
    pub span_events: bool,
}

impl Options {
    /// The environment's choice for a long-running service (retries on,
    /// warnings and errors recorded on its spans).
    pub fn service() -> Self {
        Self {
            export: Export::from_env(None),
            retry: true,
            span_events: true,
        }
    }
}

/// Keeps telemetry alive; [`shutdown`](Self::shutdown) (or dropping it)
/// flushes and shuts the tracer providers down.
#[derive(Debug)]
pub struct TelemetryGuard {
    providers: Vec<SdkTracerProvider>,
    /// Where a client writes the exec-server's stages it brings home.
    remote: Option<Arc<RemoteSpans>>,
    export: Export,
    done: bool,
}

impl TelemetryGuard {
    /// The first (or only) tracer provider.
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.providers.first()
    }

    /// Where spans go.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Exports what is buffered and stops, waiting at most
    /// [`FLUSH_TIMEOUT`] per provider. Blocking: call it outside async code
    /// (or through `spawn_blocking`) while the runtime is still alive.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        for p in &self.providers {
            if let Err(e) = p.shutdown_with_timeout(FLUSH_TIMEOUT) {
                tracing::debug!(error = %e, "span export at shutdown failed");
            }
        }
        if let Some(remote) = self.remote.take() {
            crate::remote::set_sink(None);
            if let Err(e) = remote.shutdown(FLUSH_TIMEOUT) {
                tracing::debug!(error = %e, "writing remote spans at shutdown failed");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the `tracing-opentelemetry` layer takes this span or event: the
/// spans named in the vocabulary ([`spans::ALL`]), and warnings and errors
/// (which become events on the nearest such span).
fn exported(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        spans::ALL.contains(&meta.name())
    } else {
        *meta.level() <= Level::WARN
    }
}

/// Installs the subscriber: logs to stderr (filter from `RUST_LOG`), and,
/// when spans are exported, a `tracing-opentelemetry` layer on `tracer`, so
/// that the service's warnings and errors land on its spans.
fn init_logs(default: LogDefault, tracer: Option<SdkTracer>) {
    let level = match default {
        LogDefault::Warn => "warn",
        LogDefault::Info => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colour only on a terminal: logs collected by a container runtime or
    // a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(filter);
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(exported))
    });
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
}

/// Sets up logs and the global tracer provider for one service, exporting
/// as `options` says. Must run inside a Tokio runtime when OTLP export may
/// be chosen (the gRPC client lives on the runtime).
pub fn init(service: &'static str, default: LogDefault, options: Options) -> TelemetryGuard {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    let provider = build_provider(name, &options);
    global::set_tracer_provider(provider.clone());
    init_logs(default, layer_tracer(&options, &provider, service));
    // With no collector, a client keeps the exec-server's stages it brings
    // home in its own file (with one, the exec-server exports its own).
    let remote = match &options.export {
        Export::File(file) => {
            let remote = Arc::new(RemoteSpans::new(file));
            let sink: Arc<dyn crate::remote::RemoteSink> = remote.clone();
            crate::remote::set_sink(Some(sink));
            Some(remote)
        }
        Export::Off | Export::Otlp => None,
    };
    TelemetryGuard {
        providers: vec![provider],
        remote,
        export: options.export,
        done: false,
    }
}

/// Sets up logs and one tracer provider per service for a process that runs
/// several services at once (the demo): a tracer asked for by a service's
/// name (`global::tracer("relay")`) reports as that service. Tracers with
/// other names report as the first service.
pub fn init_services(
    services: &[&'static str],
    default: LogDefault,
    options: Options,
) -> TelemetryGuard {
    let routes: Vec<(&'static str, SdkTracerProvider)> = services
        .iter()
        .map(|s| (*s, build_provider((*s).to_owned(), &options)))
        .collect();
    let providers: Vec<SdkTracerProvider> = routes.iter().map(|(_, p)| p.clone()).collect();
    // The layer reports as the first service.
    let tracer = routes
        .first()
        .and_then(|(name, p)| layer_tracer(&options, p, name));
    if let Some(router) = ScopeRouter::new(routes) {
        global::set_tracer_provider(router);
    }
    init_logs(default, tracer);
    // Every service here records its own spans: nothing is brought home.
    TelemetryGuard {
        providers,
        remote: None,
        export: options.export,
        done: false,
    }
}

/// The tracer for the `tracing-opentelemetry` layer: none when nothing is
/// exported (the layer would only cost).
fn layer_tracer(
    options: &Options,
    provider: &SdkTracerProvider,
    service: &'static str,
) -> Option<SdkTracer> {
    match options.export {
        Export::Off => None,
        Export::Otlp | Export::File(_) => Some(provider.tracer(service)),
    }
}

/// A provider for `service` that exports as `options` says (the one
/// builder every binary and test uses, so ids are always preset-capable).
pub fn build_provider(service: String, options: &Options) -> SdkTracerProvider {
    let builder = base_builder(service);
    let builder = match &options.export {
        Export::Off => builder,
        Export::File(file) => builder.with_batch_exporter(file.exporter()),
        Export::Otlp => match otlp_exporter(options.retry) {
            Ok(exporter) => builder.with_batch_exporter(exporter),
            Err(e) => {
                tracing::warn!(error = %e, "OTLP export is configured but unusable; spans are not exported");
                builder
            }
        },
    };
    builder.build()
}

/// A provider builder with the service's resource and the preset-capable id
/// generator, and no exporter (tests add their own).
pub fn base_builder(service: String) -> TracerProviderBuilder {
    SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_id_generator(PresetIdGenerator::default())
}

fn otlp_exporter(
    retry: bool,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let policy = if retry {
        RetryPolicy::recommended()
    } else {
        RetryPolicy::disabled()
    };
    opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_retry_policy(policy)
        .build()
}

/// A tracer provider that hands out each service's tracer by scope name.
#[derive(Debug, Clone)]
struct ScopeRouter {
    routes: Vec<(&'static str, SdkTracerProvider)>,
    default: SdkTracerProvider,
}

impl ScopeRouter {
    fn new(routes: Vec<(&'static str, SdkTracerProvider)>) -> Option<Self> {
        let default = routes.first()?.1.clone();
        Some(Self { routes, default })
    }
}

impl TracerProvider for ScopeRouter {
    type Tracer = SdkTracer;

    fn tracer_with_scope(&self, scope: InstrumentationScope) -> SdkTracer {
        let provider = self
            .routes
            .iter()
            .find(|(name, _)| *name == scope.name())
            .map_or(&self.default, |(_, p)| p);
        provider.tracer_with_scope(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn decide(vars: &[(&str, &str)]) -> Export {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = std::env::temp_dir().join("rex-setup-test.jsonl");
        Export::decide(|k| map.get(k).cloned(), Some(TraceFile::new(dir, 1024)))
    }

    #[test]
    fn export_choice_follows_the_standard_variables() {
        assert!(matches!(decide(&[]), Export::File(_)));
        assert!(matches!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]),
            Export::Otlp
        ));
        assert!(matches!(
            decide(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]),
            Export::Otlp
        ));
        assert!(matches!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]),
            Export::File(_)
        ));
        assert!(matches!(
            decide(&[
                ("OTEL_SDK_DISABLED", "TRUE"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
            ]),
            Export::Off
        ));
        assert!(matches!(
            decide(&[("OTEL_SDK_DISABLED", "false")]),
            Export::File(_)
        ));
        assert!(matches!(Export::decide(|_| None, None), Export::Off));
    }

    #[test]
    fn router_reports_each_service_under_its_own_provider() {
        use opentelemetry::trace::{Span, Tracer};
        use opentelemetry_sdk::trace::InMemorySpanExporter;
        let a = InMemorySpanExporter::default();
        let b = InMemorySpanExporter::default();
        let pa = base_builder("a".into())
            .with_simple_exporter(a.clone())
            .build();
        let pb = base_builder("b".into())
            .with_simple_exporter(b.clone())
            .build();
        let router = ScopeRouter::new(vec![("a", pa), ("b", pb)]).unwrap();
        router.tracer("b").start("in-b").end();
        router.tracer("a").start("in-a").end();
        router.tracer("other").start("in-default").end();
        let names = |e: &InMemorySpanExporter| -> Vec<String> {
            e.get_finished_spans()
                .unwrap()
                .iter()
                .map(|s| s.name.to_string())
                .collect()
        };
        assert_eq!(names(&a), vec!["in-a", "in-default"]);
        assert_eq!(names(&b), vec!["in-b"]);
    }
}
