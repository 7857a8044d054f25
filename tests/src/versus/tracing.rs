//! The `tracing` scenario: a warm exec of `true` with every span exported
//! over OTLP to a local receiver, against tracing off; and the modes and
//! providers the `tracing_overhead` benchmark shares with it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry::global;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use rex_client::Client;

use super::{Comparison, Series, Target, Unit};
use crate::bench::{exec_true, percentile, process_cpu_nanos, rotated};
use crate::otlp::OtlpReceiver;

/// Warm-up execs on a mode's new session.
pub const WARMUP: usize = 50;
/// Time for spans that end just after the exec returns (e.g. the relay's
/// last forward) to end before a flush.
const SETTLE: Duration = Duration::from_millis(250);
/// How long to wait for the receiver to hold every expected trace.
const ARRIVAL: Duration = Duration::from_secs(10);

/// How the process traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// A no-op tracer provider: no ids, no spans, nothing carried.
    Off,
    /// The SDK provider with its sampler off: ids made and carried,
    /// nothing recorded.
    Propagation,
    /// Every span recorded, batched and exported over OTLP/gRPC.
    Full,
}

/// Every mode.
pub const MODES: [Mode; 3] = [Mode::Off, Mode::Propagation, Mode::Full];

impl Mode {
    /// The mode's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Propagation => "propagation",
            Mode::Full => "full",
        }
    }
}

/// The providers for the traced modes, alive for the whole run.
pub struct Providers {
    /// For [`Mode::Propagation`].
    pub propagation: SdkTracerProvider,
    /// For [`Mode::Full`].
    pub full: SdkTracerProvider,
}

impl Providers {
    /// Makes `mode`'s provider the global one.
    pub fn install(&self, mode: Mode) {
        match mode {
            Mode::Off => global::set_tracer_provider(NoopTracerProvider::new()),
            Mode::Propagation => global::set_tracer_provider(self.propagation.clone()),
            Mode::Full => global::set_tracer_provider(self.full.clone()),
        }
    }
}

/// Exports everything the full provider has buffered (blocking, so off the
/// runtime's workers).
pub async fn flush(provider: &SdkTracerProvider) -> Result<(), String> {
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush())
        .await
        .map_err(|e| format!("flush task failed: {e}"))?
        .map_err(|e| format!("force_flush failed: {e}"))
}

/// What the receiver got for one full-mode batch of execs.
pub struct Arrival {
    /// Span count per trace -> number of traces with that count.
    pub histogram: BTreeMap<usize, usize>,
    /// Traces received.
    pub traces: usize,
    /// Spans received.
    pub spans: usize,
}

/// Waits until the receiver holds `expected` traces (or `ARRIVAL` passes)
/// and describes what it holds.
pub async fn arrival(
    receiver: &OtlpReceiver,
    provider: &SdkTracerProvider,
    expected: usize,
) -> Result<Arrival, String> {
    tokio::time::sleep(SETTLE).await;
    flush(provider).await?;
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let counts = receiver.span_counts();
        if counts.len() >= expected || Instant::now() >= deadline {
            let mut histogram = BTreeMap::new();
            for n in counts.values() {
                *histogram.entry(*n).or_insert(0) += 1;
            }
            return Ok(Arrival {
                histogram,
                traces: counts.len(),
                spans: counts.values().sum(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        flush(provider).await?;
    }
}

/// Runs one mode: install its provider, open a new session, warm up, then
/// time `execs` execs. In full mode, also returns what reached the receiver.
pub async fn run_mode(
    mode: Mode,
    client: &Client,
    providers: &Providers,
    receiver: &OtlpReceiver,
    execs: usize,
) -> Result<(Vec<Duration>, Option<Arrival>, f64), String> {
    providers.install(mode);
    client.close().await;
    for _ in 0..WARMUP {
        exec_true(client).await?;
    }
    // Every mode pauses as long between its warm-up and its timed execs:
    // the first execs after a pause are slower (caches, parked threads),
    // so a pause in one mode alone would be counted as that mode's cost.
    tokio::time::sleep(SETTLE).await;
    if mode == Mode::Full {
        // Drop the warm-up traces (and the previous session's close, if any)
        // so the receiver holds exactly the timed execs.
        flush(&providers.full).await?;
        receiver.clear();
    }
    let mut times = Vec::with_capacity(execs);
    let cpu_before = process_cpu_nanos();
    for _ in 0..execs {
        times.push(exec_true(client).await?);
    }
    let arrived = match mode {
        Mode::Full => {
            // The export (and the receiver's decoding) is part of the cost.
            let a = arrival(receiver, &providers.full, execs).await?;
            receiver.clear();
            Some(a)
        }
        _ => None,
    };
    let cpu = process_cpu_nanos().saturating_sub(cpu_before) as f64 / execs as f64 / 1e3;
    Ok((times, arrived, cpu))
}

/// A batch processor exporting over OTLP/gRPC to `receiver` every 200 ms,
/// with room for every span of a round.
pub fn batch_to(receiver: &OtlpReceiver) -> Result<BatchSpanProcessor, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(receiver.endpoint())
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    Ok(BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(65_536)
                .with_scheduled_delay(Duration::from_millis(200))
                .build(),
        )
        .build())
}

impl Providers {
    /// The providers, the full one exporting to `receiver` as a service
    /// does (the services' OTLP/gRPC exporter and batch processor), with
    /// room for every span of a round.
    pub fn new(receiver: &OtlpReceiver) -> Result<Self, String> {
        let endpoint = receiver.endpoint();
        let export = telemetry::setup::Export::decide(
            |k| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| endpoint.clone()),
            None,
        )
        .map_err(|e| format!("OTLP export to the receiver: {e}"))?;
        let mut options = telemetry::setup::Options::new(export);
        options.span_queue = 65_536;
        Ok(Self {
            propagation: telemetry::provider::base_builder("bench".into())
                .with_sampler(Sampler::AlwaysOff)
                .build(),
            full: telemetry::setup::build_provider("bench".into(), &options),
        })
    }

    /// Puts the no-op provider back and shuts the full one down (its last
    /// export included).
    pub async fn shutdown(self) {
        global::set_tracer_provider(NoopTracerProvider::new());
        let full = self.full.clone();
        drop(self);
        // Blocking (joins the batch worker), so off the runtime's workers.
        match tokio::task::spawn_blocking(move || full.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("note: shutting the full provider down: {e}"),
            Err(e) => eprintln!("note: shutting the full provider down: {e}"),
        }
    }
}

/// `tracing`: `off` and `full` in turn every round (the order rotating),
/// `execs` timed execs each on a fresh warm session. Target: full/off p50
/// ≤ 1.02; a dropped span is an error. Leaves the full provider installed.
pub async fn scenario(
    rounds: usize,
    execs: usize,
    client: &Client,
    providers: &Providers,
    receiver: &OtlpReceiver,
) -> Result<Comparison, String> {
    let modes = [Mode::Off, Mode::Full];
    let mut off = Series::new("tracing off");
    let mut full = Series::new("every span exported over OTLP");
    let (mut traces, mut spans, mut per_trace) = (0, 0, BTreeMap::new());
    for round in 0..rounds {
        for mode in rotated(&modes, round) {
            let (times, arrived, _) = run_mode(mode, client, providers, receiver, execs).await?;
            let series = if mode == Mode::Off {
                &mut off
            } else {
                &mut full
            };
            series.values.push(percentile(&times, 0.50));
            series.p99.push(percentile(&times, 0.99));
            if let Some(a) = arrived {
                traces += a.traces;
                spans += a.spans;
                for (count, n) in a.histogram {
                    *per_trace.entry(count).or_insert(0) += n;
                }
            }
        }
    }
    providers.install(Mode::Full);
    let expected = rounds * execs;
    let spans_each = per_trace.keys().next_back().copied().unwrap_or(0);
    let rejected = receiver.rejected_requests();
    if traces != expected || per_trace.len() != 1 || rejected != 0 {
        return Err(format!(
            "tracing: spans were dropped: expected {expected} traces of {spans_each} spans, got {traces} traces / {spans} spans \
             (spans per trace -> traces: {per_trace:?}; rejected exports: {rejected})"
        ));
    }
    Ok(Comparison {
        id: "tracing",
        unit: Unit::Micros,
        ours: full,
        peer: Some(off),
        target: Target::AtMost(1.02),
        notes: vec![format!(
            "{execs} execs per mode per round on a fresh warm session; spans dropped: 0 ({traces} traces of {spans_each} spans, all received)"
        )],
    })
}
