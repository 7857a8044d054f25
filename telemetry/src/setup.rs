//! The one place where the binaries set up logging, tracer providers and
//! span export (docs/tracing.md).
//!
//! Where spans go is decided once, from the standard variables
//! ([`Export::from_env`]):
//! - `OTEL_SDK_DISABLED=true`: nowhere (ids are still made and propagated);
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   set: OTLP, over the protocol `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (or
//!   else `OTEL_EXPORTER_OTLP_PROTOCOL`) names: `grpc` (the default),
//!   `http/protobuf` or `http/json`. Any other value is an error at
//!   start-up ([`ConfigError`]), never ignored. Over gRPC both endpoint
//!   variables are used as they are; over HTTP, as the OTLP exporter
//!   specification says, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is the full
//!   URL and `OTEL_EXPORTER_OTLP_ENDPOINT` is a base to which `/v1/traces`
//!   is appended. The exporter reads `OTEL_EXPORTER_OTLP_HEADERS` and
//!   `OTEL_EXPORTER_OTLP_TIMEOUT` itself, over either protocol, each
//!   replaced by its `..._TRACES_...` form when that is set, and
//!   `OTEL_EXPORTER_OTLP_COMPRESSION` (or `..._TRACES_COMPRESSION`):
//!   `gzip` compresses each export, over either protocol (`zstd` is not
//!   built in and makes the exporter unusable, which is said);
//!   spans that cannot be exported (a collector that refuses them or
//!   cannot be reached, an exporter that cannot be built) are dropped with
//!   one warning line, once per process, naming the endpoint and the
//!   reason (`otlp/reported.rs`);
//! - otherwise: the local trace file, when the caller passes one (the CLI
//!   does), else nowhere.
//!
//! Both transports are plain text (`http://`): no TLS stack is linked. The
//! HTTP client is hyper on the service's Tokio runtime (`http` module).
//!
//! `OTEL_SERVICE_NAME` overrides the service's default name and
//! `OTEL_TRACES_SAMPLER` picks the sampler (`always_off` keeps propagation
//! but records nothing). Spans are batched and exported off the hot path
//! (the SDK's batch processor runs on a thread of its own);
//! [`TelemetryGuard::shutdown`] flushes them within a bound, so a collector
//! that is down delays an exit by at most that bound and never fails it.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider;

use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::spans;

use crate::otlp::{
    self, ENDPOINT_VAR, HTTP_TRACES_PATH, OtlpTarget, PROTOCOL_VAR, Protocol, TRACES_ENDPOINT_VAR,
    TRACES_PROTOCOL_VAR, reported,
};
use crate::provider::{base_builder, batch_processor};
use crate::trace_file::{InlineProcessor, RemoteSpans, TraceFile};

/// The `--help` text every service binary shows about span export.
pub const EXPORT_HELP: &str = "Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (or \
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), e.g. http://localhost:4317, to export spans over \
OTLP/gRPC; OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (or http/json) exports over OTLP/HTTP \
instead (e.g. to http://localhost:4318; /v1/traces is appended to \
OTEL_EXPORTER_OTLP_ENDPOINT), OTEL_EXPORTER_OTLP_HEADERS adds request headers \
(key=value,...) and OTEL_EXPORTER_OTLP_COMPRESSION=gzip compresses exports; spans that \
cannot be exported are dropped with one warning naming the endpoint and why; OTEL_SERVICE_NAME renames the service, OTEL_TRACES_SAMPLER=always_off keeps \
propagation only, OTEL_SDK_DISABLED=true exports nothing. Spans are flushed on exit and \
on SIGTERM. Logs go to stderr (RUST_LOG sets the filter); warnings and errors are also \
recorded as events on the exported spans.";

/// How long shutdown waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a flush waits for calls whose stages are being placed
/// ([`crate::placement::pending`]; microseconds in practice).
const PLACING_WAIT: Duration = Duration::from_secs(1);

/// The log level used when `RUST_LOG` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogDefault {
    /// Warnings and errors only (CLIs: keep stderr for the command).
    Warn,
    /// Informational messages too (services).
    Info,
}

/// The environment asks for something this build cannot do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A protocol variable names no protocol.
    #[error(
        "{var}={value:?} is not a supported OTLP protocol; use grpc (the default), http/protobuf or http/json"
    )]
    UnknownProtocol {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

/// Where this process's spans go.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Export {
    /// Nowhere: `OTEL_SDK_DISABLED=true`, or no endpoint and no local file.
    Off,
    /// OTLP to the configured endpoint.
    Otlp(OtlpTarget),
    /// The local trace file.
    File(TraceFile),
}

impl Export {
    /// The choice the environment makes, with `local` as the fallback when
    /// no OTLP endpoint is configured. An error if a protocol variable
    /// names an unknown protocol.
    pub fn from_env(local: Option<TraceFile>) -> Result<Self, ConfigError> {
        Self::decide(|k| std::env::var(k).ok(), local)
    }

    /// [`from_env`](Self::from_env) over an arbitrary variable lookup.
    pub fn decide(
        var: impl Fn(&str) -> Option<String>,
        local: Option<TraceFile>,
    ) -> Result<Self, ConfigError> {
        // A variable set to blanks counts as unset.
        let value = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if value("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self::Off);
        }
        // Checked even when no endpoint is set: a typo is reported the
        // first time, not when an endpoint is added.
        let protocol = match [TRACES_PROTOCOL_VAR, PROTOCOL_VAR]
            .into_iter()
            .find_map(|k| Some((k, value(k)?)))
        {
            None => Protocol::Grpc,
            Some((var, v)) => {
                Protocol::parse(&v).ok_or(ConfigError::UnknownProtocol { var, value: v })?
            }
        };
        let endpoint = if let Some(url) = value(TRACES_ENDPOINT_VAR) {
            url
        } else if let Some(base) = value(ENDPOINT_VAR) {
            if protocol.is_http() {
                signal_url(&base, HTTP_TRACES_PATH)
            } else {
                base
            }
        } else {
            return Ok(local.map_or(Self::Off, Self::File));
        };
        Ok(Self::Otlp(OtlpTarget { protocol, endpoint }))
    }
}

/// `path` appended to the base URL `base`, with one `/` between them.
fn signal_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// What a process exports and how patiently it flushes.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// How many finished spans wait for export (each exporter's queue)
    /// before more are dropped: [`SERVICE_SPAN_QUEUE`] or
    /// [`COMMAND_SPAN_QUEUE`]. `OTEL_BSP_MAX_QUEUE_SIZE` overrides it.
    pub span_queue: usize,
    /// Write spans to the local trace file in the thread that flushes,
    /// with no exporter thread (one command's process, which flushes as
    /// it exits); the buffer is written out whenever it is half full.
    /// OTLP export is batched whatever this says.
    pub inline: bool,
    /// With the local trace file only (no OTLP endpoint): also keep each
    /// trace's finished spans for forwarding through a session
    /// ([`crate::forward`]), installed as the process's
    /// [`forward::source`](crate::forward::source).
    pub collect: bool,
}

/// The span queue of a long-running process (a service, the agent, a
/// probe): the SDK's default.
pub const SERVICE_SPAN_QUEUE: usize = 2048;

/// The span queue of one command's process: it makes tens of spans, and
/// a queue's slots are allocated and written when it is made, which a
/// short-lived process pays at each start (2,048 slots are hundreds of
/// page faults).
pub const COMMAND_SPAN_QUEUE: usize = 256;

impl Options {
    /// Spans to `export`, and nothing more: each export tried once, no
    /// span events, a service's span queue, written by an exporter thread,
    /// nothing collected for forwarding.
    pub fn new(export: Export) -> Self {
        Self {
            export,
            retry: false,
            span_events: false,
            span_queue: SERVICE_SPAN_QUEUE,
            inline: false,
            collect: false,
        }
    }

    /// The environment's choice for a long-running service (retries on,
    /// warnings and errors recorded on its spans); an error if the
    /// environment names an unknown protocol.
    pub fn service() -> Result<Self, ConfigError> {
        Ok(Self {
            export: Export::from_env(None)?,
            retry: true,
            span_events: true,
            span_queue: SERVICE_SPAN_QUEUE,
            inline: false,
            collect: false,
        })
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
    /// Spans to the trace file are written by whoever flushes.
    inline: bool,
    done: bool,
}

impl TelemetryGuard {
    /// Where spans go.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// A handle that exports what has ended so far without stopping (for a
    /// process that times its own flush: the CLI's `cli.flush`).
    pub fn flusher(&self) -> Flusher {
        Flusher {
            providers: self.providers.clone(),
            remote: self.remote.clone(),
            in_place: self.inline && matches!(self.export, Export::File(_) | Export::Off),
        }
    }

    /// Exports what is buffered and stops, waiting at most
    /// `FLUSH_TIMEOUT` per provider. Blocking: call it outside async code
    /// (or through `spawn_blocking`) while the runtime is still alive.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        crate::placement::pending::wait_placed(PLACING_WAIT);
        for p in &self.providers {
            if let Err(e) = p.shutdown_with_timeout(FLUSH_TIMEOUT) {
                match &self.export {
                    Export::Otlp(target) => reported::warn_once(&target.endpoint, &e),
                    Export::Off | Export::File(_) => {
                        tracing::debug!(error = %e, "span export at shutdown failed");
                    }
                }
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

/// Exports the spans that have ended so far, leaving telemetry running
/// ([`TelemetryGuard::flusher`]).
#[derive(Debug, Clone)]
pub struct Flusher {
    providers: Vec<SdkTracerProvider>,
    remote: Option<Arc<RemoteSpans>>,
    in_place: bool,
}

impl Flusher {
    /// Whether a flush only writes the local trace file, in the calling
    /// thread (no network, no runtime and no other thread to wait for; the
    /// exec-server's stages a direct session brought home included): it
    /// may then be called from async code.
    pub fn in_place(&self) -> bool {
        self.in_place
    }

    /// Exports what has ended, waiting (bounded by the exporters' own
    /// timeouts) until it is written. Blocking, like
    /// [`TelemetryGuard::shutdown`].
    pub fn flush(&self) {
        // Calls whose final event was handed on just now are whole first.
        crate::placement::pending::wait_placed(PLACING_WAIT);
        for p in &self.providers {
            if let Err(e) = p.force_flush() {
                tracing::debug!(error = %e, "span export failed");
            }
        }
        if let Some(remote) = &self.remote
            && let Err(e) = remote.flush()
        {
            tracing::debug!(error = %e, "writing remote spans failed");
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
/// be chosen (the gRPC and HTTP clients live on the runtime).
pub fn init(service: &'static str, default: LogDefault, options: Options) -> TelemetryGuard {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    let collector = match &options.export {
        Export::File(_) if options.collect => Some(crate::forward::SpanCollector::default()),
        _ => None,
    };
    let (provider, unusable) = build_with(name, &options, collector.as_ref());
    if let Some(c) = collector {
        crate::forward::set_source(Some(Arc::new(c)));
    }
    global::set_tracer_provider(provider.clone());
    init_logs(default, layer_tracer(&options, &provider, service));
    if let Some((endpoint, e)) = unusable {
        reported::warn_once(&endpoint, &e);
    }
    // With no collector, a client keeps the exec-server's stages it brings
    // home in its own file (with one, the exec-server exports its own).
    let remote = match &options.export {
        Export::File(file) => {
            let remote = Arc::new(RemoteSpans::new(file, options.span_queue, options.inline));
            let sink: Arc<dyn crate::remote::RemoteSink> = remote.clone();
            crate::remote::set_sink(Some(sink));
            Some(remote)
        }
        Export::Off | Export::Otlp(_) => None,
    };
    TelemetryGuard {
        providers: vec![provider],
        remote,
        inline: options.inline,
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
    let mut unusable = None;
    let routes: Vec<(&'static str, SdkTracerProvider)> = services
        .iter()
        .map(|s| {
            let (provider, failed) = build((*s).to_owned(), &options);
            unusable = unusable.take().or(failed);
            (*s, provider)
        })
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
    if let Some((endpoint, e)) = unusable {
        reported::warn_once(&endpoint, &e);
    }
    // Every service here records its own spans: nothing is brought home.
    TelemetryGuard {
        providers,
        remote: None,
        inline: options.inline,
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
        Export::Otlp(_) | Export::File(_) => Some(provider.tracer(service)),
    }
}

/// A provider for `service` that exports as `options` says (the one
/// builder every binary and test uses, so ids are always preset-capable).
pub fn build_provider(service: String, options: &Options) -> SdkTracerProvider {
    let (provider, unusable) = build(service, options);
    if let Some((endpoint, e)) = unusable {
        reported::warn_once(&endpoint, &e);
    }
    provider
}

/// [`build_provider`], with the endpoint and error of an OTLP exporter
/// that cannot be built (said once logs are set up).
fn build(
    service: String,
    options: &Options,
) -> (SdkTracerProvider, Option<(String, otlp::ExporterError)>) {
    build_with(service, options, None)
}

/// [`build`], with `collector`'s processor too.
fn build_with(
    service: String,
    options: &Options,
    collector: Option<&crate::forward::SpanCollector>,
) -> (SdkTracerProvider, Option<(String, otlp::ExporterError)>) {
    let mut unusable = None;
    let mut builder = base_builder(service);
    if let Some(c) = collector {
        builder = builder.with_span_processor(c.processor());
    }
    let builder = match &options.export {
        Export::Off => builder,
        Export::File(file) if options.inline => {
            builder.with_span_processor(InlineProcessor::new(file, options.span_queue))
        }
        Export::File(file) => {
            builder.with_span_processor(batch_processor(file.exporter(), options.span_queue))
        }
        Export::Otlp(target) => match otlp::exporter(target, options.retry) {
            Ok(exporter) => builder.with_span_processor(batch_processor(
                reported::Reported::new(exporter, target.endpoint.clone()),
                options.span_queue,
            )),
            Err(e) => {
                unusable = Some((target.endpoint.clone(), e));
                builder
            }
        },
    };
    (builder.build(), unusable)
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

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn try_decide(vars: &[(&str, &str)]) -> Result<Export, ConfigError> {
        let dir = std::env::temp_dir().join("rex-setup-test.jsonl");
        Export::decide(
            lookup(vars),
            Some(TraceFile::new(dir, crate::trace_file::Retention::default())),
        )
    }

    fn decide(vars: &[(&str, &str)]) -> Export {
        try_decide(vars).unwrap()
    }

    /// The OTLP target `vars` choose (panics if they choose none).
    fn target(vars: &[(&str, &str)]) -> (Protocol, String) {
        match decide(vars) {
            Export::Otlp(t) => (t.protocol, t.endpoint),
            other => panic!("{vars:?} chose {other:?}, not OTLP"),
        }
    }

    #[test]
    fn export_choice_follows_the_standard_variables() {
        assert!(matches!(decide(&[]), Export::File(_)));
        assert!(matches!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]),
            Export::Otlp(_)
        ));
        assert!(matches!(
            decide(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]),
            Export::Otlp(_)
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
        assert!(matches!(
            Export::decide(|_| None, None).unwrap(),
            Export::Off
        ));
    }

    #[test]
    fn grpc_is_the_default_and_uses_either_endpoint_as_is() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        let grpc = |url: &str| (Protocol::Grpc, url.to_owned());
        assert_eq!(target(&[base]), grpc("http://c:4317"));
        assert_eq!(
            target(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            grpc("http://c:4317")
        );
        // A blank protocol is no protocol.
        assert_eq!(
            target(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", " ")]),
            grpc("http://c:4317")
        );
        assert_eq!(
            target(&[
                base,
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " http://t:4317/x ")
            ]),
            grpc("http://t:4317/x")
        );
    }

    #[test]
    fn http_appends_the_traces_path_to_the_base_endpoint_only() {
        let proto = ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        let http = |url: &str| (Protocol::HttpProtobuf, url.to_owned());
        for (base, url) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c/otlp", "http://c/otlp/v1/traces"),
            ("http://c/otlp/", "http://c/otlp/v1/traces"),
        ] {
            assert_eq!(
                target(&[proto, ("OTEL_EXPORTER_OTLP_ENDPOINT", base)]),
                http(url)
            );
        }
        // The per-signal endpoint is the full URL, whatever its path.
        for url in [
            "http://c:4318",
            "http://c:4318/custom",
            "http://c:4318/v1/traces",
        ] {
            assert_eq!(
                target(&[
                    proto,
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
                ]),
                http(url)
            );
        }
        assert_eq!(
            target(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
            ]),
            (Protocol::HttpJson, "http://c:4318/v1/traces".to_owned())
        );
    }

    #[test]
    fn the_traces_protocol_wins_over_the_general_one() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            target(&[
                base,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]),
            (Protocol::HttpProtobuf, "http://c:4318/v1/traces".to_owned())
        );
        assert_eq!(
            target(&[
                base,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ]),
            (Protocol::Grpc, "http://c:4318".to_owned())
        );
        // Names are matched without regard to ASCII case or blanks.
        assert_eq!(
            target(&[
                base,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", " HTTP/Protobuf ")
            ])
            .0,
            Protocol::HttpProtobuf
        );
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.name()), Some(p));
        }
    }

    #[test]
    fn an_unknown_protocol_is_an_error_naming_the_variable_and_the_choices() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let err = try_decide(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http")]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::UnknownProtocol {
                var: "OTEL_EXPORTER_OTLP_PROTOCOL",
                value: "http".to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http\" is not a supported OTLP protocol; \
             use grpc (the default), http/protobuf or http/json"
        );
        // The per-signal variable is the one named when it is the one used.
        let err = try_decide(&[
            base,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/proto"),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownProtocol { var: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value } if value == "http/proto"),
            "{err:?}"
        );
        // Reported with no endpoint set too, but not when the SDK is off.
        assert!(try_decide(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")]).is_err());
        assert!(matches!(
            decide(&[
                ("OTEL_SDK_DISABLED", "true"),
                base,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")
            ]),
            Export::Off
        ));
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

    #[test]
    fn the_resource_names_the_service_and_the_sdk() {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};
        let dir = tempfile::tempdir().unwrap();
        let file = TraceFile::new(
            dir.path().join("t.jsonl"),
            crate::trace_file::Retention::default(),
        );
        let provider = base_builder("svc".into())
            .with_simple_exporter(file.exporter())
            .build();
        drop(provider.tracer("t").start("s"));
        provider.force_flush().unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let attrs = &line["resourceSpans"][0]["resource"]["attributes"];
        let value = |key: &str| {
            attrs
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == key)
                .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
        };
        assert_eq!(value("service.name").as_deref(), Some("svc"));
        assert_eq!(value("telemetry.sdk.language").as_deref(), Some("rust"));
        assert_eq!(
            value("telemetry.sdk.name").as_deref(),
            Some("opentelemetry")
        );
    }
}
