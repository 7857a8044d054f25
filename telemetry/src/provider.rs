//! The tracer providers every binary and test builds: the service's
//! resource with the preset-capable id generator, and batch processors
//! sized for the process.

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanExporter, TracerProviderBuilder,
};

use crate::ids::PresetIdGenerator;
use crate::semconv;

/// The batch processor's delay between exports: `OTEL_BSP_SCHEDULE_DELAY`
/// (milliseconds) when it is a number, else the SDK's 5 s.
pub fn batch_delay() -> Duration {
    std::env::var("OTEL_BSP_SCHEDULE_DELAY")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// A batch processor for `exporter` whose queue holds `queue` spans
/// (unless `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise) and which exports
/// when half of it is filled, so that spans keep arriving while a batch
/// is written.
pub(crate) fn batch_processor<E: SpanExporter + 'static>(
    exporter: E,
    queue: usize,
) -> BatchSpanProcessor {
    let mut config = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        let queue = queue.max(2);
        config = config
            .with_max_queue_size(queue)
            .with_max_export_batch_size((queue / 2).min(512));
    }
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build()
}

/// A provider builder with the service's resource and the preset-capable id
/// generator, and no exporter (tests add their own).
pub fn base_builder(service: String) -> TracerProviderBuilder {
    // The SDK's own detector is left out: the service name it would give
    // (`unknown_service:` and the executable's name, read from /proc) is
    // always replaced by ours, and reading it costs every process's start.
    let mut resource = Resource::builder_empty()
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ])
        .with_service_name(service);
    // OTEL_RESOURCE_ATTRIBUTES may name the host and the version itself.
    let named = |key: &str| {
        std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        })
    };
    if let Some(host) = crate::host::name().filter(|_| !named(semconv::HOST_NAME)) {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            semconv::HOST_NAME,
            host.to_owned(),
        ));
    }
    if !named(semconv::SERVICE_VERSION) {
        // The workspace's one version: every binary's.
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            semconv::SERVICE_VERSION,
            env!("CARGO_PKG_VERSION"),
        ));
    }
    let resource = resource.with_schema_url([], semconv::SCHEMA_URL);
    SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_id_generator(PresetIdGenerator::default())
}
