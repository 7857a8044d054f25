//! `forwarding`: the client's spans travel home through the session. Two
//! pairs of a relay and an exec-server run as their own processes, side by
//! side: one exports over OTLP (to a recording receiver here, which keeps
//! each export as its bytes and decodes them only for the checks after
//! the timed execs: a collector would not share the machine with what it
//! measures) and so takes its clients' spans; the other has no collector.
//! Against them:
//!
//! - `cold forwarded`: the cold CLI (no OTLP endpoint of its own, as by
//!   default) against the exporting pair, forwarding on against forwarding
//!   off. Target ≤ 1.03 (unchanged).
//! - `tracing forwarded`: an embedder (this process, the client library
//!   with a `SpanCollector` as its span source and no exporter) with every
//!   span of every call exported (its own through the exec-server),
//!   against tracing off everywhere. Target ≤ 1.02. A third side, the
//!   embedder exporting its spans itself, goes into the notes.
//!
//! Every exporting run is checked: each command's trace reaches the
//! receiver with every span the embedder ended in it, once, marked
//! `rex.forwarded_for` when forwarded; a span lost or doubled is an error.
//! (How many spans a call has may differ from call to call: the legs the
//! client places around the relay's forwards are two, or four when it can
//! place the relay's own timings.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::global;
use opentelemetry::trace::TraceId;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use proto::keys::{PublicKey, StaticKeypair};
use rex_client::{Client, ClientConfig, SpanCollector, Target as Route};
use telemetry::spans;

use super::latency::ColdClient;
use super::rounds::{Plan, latencies};
use super::{Comparison, Series, Target, Unit};
use crate::bench::{exec_true, percentile, pid_cpu_nanos, process_cpu_nanos, rotated};
use crate::binaries::ProcStack;
use crate::otlp::{OtlpReceiver, RecordedSpan};

/// The embedder's `service.name`.
const EMBEDDER: &str = "bench-embedder";
/// Warm-up execs on a mode's new session.
const WARMUP: usize = 50;
/// How long to wait for a batch of traces to reach the receiver.
const ARRIVAL: Duration = Duration::from_secs(60);
/// The exporting services' batch delay (ms): short, so a round's spans
/// arrive soon after it.
const BATCH_DELAY_MS: &str = "200";

/// The two pairs of services and the receiver the exporting one exports to.
pub struct Pairs {
    receiver: OtlpReceiver,
    exporting: ProcStack,
    quiet: ProcStack,
}

impl Pairs {
    /// Starts the receiver and both pairs.
    pub async fn start() -> Result<Self, String> {
        let receiver = OtlpReceiver::start_deferred()
            .await
            .map_err(|e| format!("OTLP receiver: {e}"))?;
        let endpoint = receiver.endpoint();
        let exporting = ProcStack::start(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", BATCH_DELAY_MS),
        ])
        .map_err(|e| format!("starting the exporting relay and exec-server: {e}"))?;
        let quiet = ProcStack::start(&[])
            .map_err(|e| format!("starting the relay and exec-server with no collector: {e}"))?;
        Ok(Self {
            receiver,
            exporting,
            quiet,
        })
    }

    /// Stops the receiver (the processes stop with `self`).
    pub async fn shutdown(self) {
        let Self { receiver, .. } = self;
        if let Err(e) = receiver.shutdown().await {
            eprintln!("note: stopping the OTLP receiver: {e}");
        }
    }
}

/// The cold CLI against `stack`, its records and spool under `data_dir`.
fn cold_client(
    binary: &Path,
    stack: &ProcStack,
    data_dir: &Path,
    env: Vec<(&'static str, &'static str)>,
) -> ColdClient {
    ColdClient {
        binary: binary.to_path_buf(),
        relay: stack.relay_url.clone(),
        server: stack.server_pub.clone(),
        key: stack.client_key.clone(),
        data_dir: data_dir.to_path_buf(),
        agent_socket: data_dir.join("no-agent").join("agent.sock"),
        through_agent: false,
        env,
    }
}

/// `cold forwarded`: `core-client exec -- true` against the exporting pair
/// with forwarding on (its spans forwarded; its `cli.run` spooled and
/// carried by the next command) against the same with forwarding off
/// (`REX_NO_SPAN_FORWARDING`: its spans in its local trace file only).
/// Checks that every forwarded run's `cli.run` arrived once. A third side,
/// the CLI against the pair with no collector, goes into the notes.
pub async fn cold(
    rounds: usize,
    binary: &Path,
    pairs: &Pairs,
    scratch: &Path,
) -> Result<Comparison, String> {
    let plan = Plan {
        rounds,
        warmup: 3,
        iterations: 20,
    };
    let on = cold_client(
        binary,
        &pairs.exporting,
        &scratch.join("cold-forwarded"),
        Vec::new(),
    );
    let off = cold_client(
        binary,
        &pairs.exporting,
        &scratch.join("cold-not-forwarded"),
        vec![("REX_NO_SPAN_FORWARDING", "true")],
    );
    let quiet = cold_client(
        binary,
        &pairs.quiet,
        &scratch.join("cold-quiet"),
        Vec::new(),
    );
    pairs.receiver.clear();
    let mut forwarded = 0;
    let (ours, peer) = latencies(
        plan,
        (
            "`core-client exec -- true`, forwarding on",
            "the same, forwarding off (its spans in its local trace file only)",
        ),
        async || {
            forwarded += 1;
            on.run().await
        },
        async || off.run().await,
    )
    .await?;
    // The pair with no collector, for the notes (as many runs, after).
    let mut alone = Vec::with_capacity(plan.rounds * plan.iterations);
    for _ in 0..plan.rounds * plan.iterations {
        alone.push(quiet.run().await?);
    }
    // One more run carries the last timed run's spooled `cli.run`.
    on.run().await?;
    let roots = |s: &[RecordedSpan]| {
        s.iter()
            .filter(|x| x.name == spans::CLI_RUN && x.resource.contains_key(spans::FORWARDED_FOR))
            .count()
    };
    let got = settled(&pairs.receiver, |s| roots(s) >= forwarded).await;
    let arrived = roots(&got);
    let all_roots = got.iter().filter(|x| x.name == spans::CLI_RUN).count();
    if arrived != forwarded || all_roots != forwarded {
        return Err(format!(
            "cold forwarded: expected the {forwarded} forwarded runs' cli.run once each; got {arrived} forwarded of {all_roots}"
        ));
    }
    pairs.receiver.clear();
    Ok(Comparison {
        id: "cold_forwarded",
        unit: Unit::Micros,
        ours,
        peer: Some(peer),
        target: Target::AtMost(1.03),
        notes: vec![format!(
            "{} runs of each per round against a relay and an exec-server run as processes, exporting over OTLP; the CLI has no endpoint of its own; \
             every forwarded run's `cli.run` arrived once and no other; the same CLI against a pair with no collector, run after: p50 {:.1} µs",
            plan.iterations,
            percentile(&alone, 0.50)
        )],
    })
}

/// CPU time so far of this process and of `stack`'s relay and
/// exec-server, in nanoseconds.
fn cpu(stack: &ProcStack) -> [u64; 3] {
    [
        process_cpu_nanos(),
        pid_cpu_nanos(stack.relay.child.id()),
        pid_cpu_nanos(stack.server.child.id()),
    ]
}

/// How the embedder traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No tracer provider, services with no collector.
    Off,
    /// Its spans kept by a `SpanCollector` and forwarded.
    Forwarded,
    /// Its spans exported by itself over OTLP (nothing forwarded).
    Direct,
}

/// The embedder's clients and providers.
struct Embedder {
    off: Client,
    forwarded: Client,
    direct: Client,
    collecting: SdkTracerProvider,
    exporting: SdkTracerProvider,
    /// What each exporting provider ended, the receiver's due.
    ended: Ended,
}

/// Counts the spans the embedder ended in each trace: what must reach the
/// receiver, forwarded or exported.
#[derive(Debug, Default, Clone)]
struct Ended(Arc<Mutex<HashMap<TraceId, usize>>>);

impl Ended {
    fn count(&self, trace: &str) -> usize {
        let Ok(id) = TraceId::from_hex(trace) else {
            return 0;
        };
        let ended = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ended.get(&id).copied().unwrap_or(0)
    }
}

impl SpanProcessor for Ended {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let mut ended = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *ended.entry(span.span_context.trace_id()).or_default() += 1;
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Embedder {
    fn new(pairs: &Pairs) -> Result<Self, String> {
        let collector = SpanCollector::default();
        let resource = || {
            Resource::builder_empty()
                .with_service_name(EMBEDDER)
                .build()
        };
        let ended = Ended::default();
        let collecting = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_span_processor(ended.clone())
            .with_span_processor(collector.processor())
            .build();
        let batch = super::tracing::batch_to(&pairs.receiver)?;
        let exporting = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_span_processor(ended.clone())
            .with_span_processor(batch)
            .build();
        let mut forwarded = config(&pairs.exporting)?;
        forwarded.span_source = Some(Arc::new(collector));
        Ok(Self {
            off: Client::new(config(&pairs.quiet)?),
            forwarded: Client::new(forwarded),
            direct: Client::new(config(&pairs.exporting)?),
            collecting,
            exporting,
            ended,
        })
    }

    fn client(&self, mode: Mode) -> &Client {
        match mode {
            Mode::Off => &self.off,
            Mode::Forwarded => &self.forwarded,
            Mode::Direct => &self.direct,
        }
    }

    fn stack(mode: Mode, pairs: &Pairs) -> &ProcStack {
        if mode == Mode::Off {
            &pairs.quiet
        } else {
            &pairs.exporting
        }
    }

    fn install(&self, mode: Mode) {
        match mode {
            Mode::Off => global::set_tracer_provider(NoopTracerProvider::new()),
            Mode::Forwarded => global::set_tracer_provider(self.collecting.clone()),
            Mode::Direct => global::set_tracer_provider(self.exporting.clone()),
        }
    }

    async fn shutdown(self) {
        global::set_tracer_provider(NoopTracerProvider::new());
        for c in [&self.off, &self.forwarded, &self.direct] {
            c.close().await;
        }
        for p in [self.collecting, self.exporting] {
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.shutdown()).await {
                eprintln!("note: shutting a tracer provider down: {e}");
            }
        }
    }
}

/// A client of `stack`'s exec-server through its relay.
fn config(stack: &ProcStack) -> Result<ClientConfig, String> {
    let key = StaticKeypair::read_file(&stack.client_key)
        .map_err(|e| format!("reading {}: {e}", stack.client_key.display()))?;
    let server: PublicKey = stack
        .server_pub
        .parse()
        .map_err(|e| format!("the exec-server's key: {e}"))?;
    Ok(ClientConfig::new(
        key,
        server,
        Route::Relay(stack.relay_url.clone()),
    ))
}

/// The receiver's spans once `enough` holds for them and no more have
/// come for half a second (a trace's last batches), or after [`ARRIVAL`].
async fn settled(
    receiver: &OtlpReceiver,
    enough: impl Fn(&[RecordedSpan]) -> bool,
) -> Vec<RecordedSpan> {
    let deadline = Instant::now() + ARRIVAL;
    let mut before = usize::MAX;
    loop {
        let all = receiver.spans();
        if enough(&all) && all.len() == before || Instant::now() >= deadline {
            return all;
        }
        before = all.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The embedder's traces at the receiver: trace id -> its client spans,
/// for the traces that hold the client's `tool.dispatch`.
fn embedder_traces(all: &[RecordedSpan]) -> HashMap<&str, Vec<&RecordedSpan>> {
    let mut traces: HashMap<&str, Vec<&RecordedSpan>> = HashMap::new();
    for s in all.iter().filter(|s| s.service == EMBEDDER) {
        traces.entry(s.trace_id.as_str()).or_default().push(s);
    }
    traces.retain(|_, spans| spans.iter().any(|s| s.name == spans::TOOL_DISPATCH));
    traces
}

/// Waits until the receiver holds `expected` of the embedder's traces
/// beyond those in `seen`, each with every span `ended` counted in it,
/// checks each span arrived once, forwarded or not as `mode` says, and
/// adds them to `seen`. Returns how many traces had how many client spans
/// (the first call of a session has the connection's spans too).
async fn check_arrival(
    receiver: &OtlpReceiver,
    mode: Mode,
    expected: usize,
    ended: &Ended,
    seen: &mut BTreeSet<String>,
) -> Result<BTreeMap<usize, usize>, String> {
    let fresh = |all: &[RecordedSpan]| {
        embedder_traces(all)
            .iter()
            .filter(|(t, spans)| !seen.contains(**t) && spans.len() >= ended.count(t))
            .count()
    };
    let all = settled(receiver, |all| fresh(all) >= expected).await;
    let traces = embedder_traces(&all);
    let mut per_trace: BTreeMap<usize, usize> = BTreeMap::new();
    let mut got = 0;
    for (id, spans) in &traces {
        if seen.contains(*id) {
            continue;
        }
        got += 1;
        *per_trace.entry(spans.len()).or_insert(0) += 1;
        let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        if ids.len() != spans.len() {
            return Err(format!(
                "tracing forwarded: a span arrived twice in trace {id}"
            ));
        }
        let due = ended.count(id);
        if spans.len() != due {
            return Err(format!(
                "tracing forwarded ({mode:?}): {} of the embedder's {due} spans arrived in trace {id}",
                spans.len()
            ));
        }
        let marked = spans
            .iter()
            .filter(|s| s.resource.contains_key(spans::FORWARDED_FOR))
            .count();
        let want = if mode == Mode::Forwarded {
            spans.len()
        } else {
            0
        };
        if marked != want {
            return Err(format!(
                "tracing forwarded ({mode:?}): {marked} of {} spans marked forwarded in trace {id}",
                spans.len()
            ));
        }
    }
    if got != expected {
        return Err(format!(
            "tracing forwarded ({mode:?}): traces were lost: expected {expected}, got {got} (client spans per trace -> traces: {per_trace:?})"
        ));
    }
    seen.extend(traces.keys().map(|t| (*t).to_owned()));
    Ok(per_trace)
}

fn cpu_cells(c: [f64; 3]) -> String {
    format!("{:.0} / {:.0} / {:.0}", c[0], c[1], c[2])
}

/// `tracing forwarded`: the embedder's modes in turn every round (the
/// order rotating), `execs` timed execs each on a new warm session.
pub async fn tracing(rounds: usize, execs: usize, pairs: &Pairs) -> Result<Comparison, String> {
    let embedder = Embedder::new(pairs)?;
    let result = tracing_with(rounds, execs, pairs, &embedder).await;
    embedder.shutdown().await;
    pairs.receiver.clear();
    result
}

async fn tracing_with(
    rounds: usize,
    execs: usize,
    pairs: &Pairs,
    embedder: &Embedder,
) -> Result<Comparison, String> {
    let modes = [Mode::Off, Mode::Forwarded, Mode::Direct];
    let mut series = [
        Series::new("tracing off (no provider, services with no collector)"),
        Series::new("every span exported, the embedder's forwarded through the session"),
        Series::new("every span exported, the embedder's by itself"),
    ];
    let mut seen = BTreeSet::new();
    // Client spans per trace -> traces, over the rounds of both exporting
    // modes (for the notes: each trace is checked against what the
    // embedder ended in it).
    let mut shapes: BTreeMap<usize, usize> = BTreeMap::new();
    let mut forwarded_traces = 0;
    // CPU µs per exec of this process, the relay and the exec-server, per
    // mode, summed over rounds (the export's and arrival's share included).
    let mut cpu_each = [[0.0f64; 3]; 3];
    pairs.receiver.clear();
    for round in 0..rounds {
        for (i, mode) in rotated(&[0, 1, 2], round)
            .into_iter()
            .map(|i| (i, modes[i]))
        {
            embedder.install(mode);
            let client = embedder.client(mode);
            client.close().await;
            for _ in 0..WARMUP {
                exec_true(client).await?;
            }
            let mut times = Vec::with_capacity(execs);
            let stack = Embedder::stack(mode, pairs);
            let before = cpu(stack);
            for _ in 0..execs {
                times.push(exec_true(client).await?);
            }
            // What is left of the session's spans goes before its close.
            client.close().await;
            if mode == Mode::Direct {
                let p = embedder.exporting.clone();
                let _ = tokio::task::spawn_blocking(move || p.force_flush()).await;
            }
            // This process's share now (the arrival check's polling is
            // the receiver's, not the embedder's); the services' once their
            // exports are done.
            let mine = process_cpu_nanos();
            if mode != Mode::Off {
                let shape = check_arrival(
                    &pairs.receiver,
                    mode,
                    WARMUP + execs,
                    &embedder.ended,
                    &mut seen,
                )
                .await?;
                for (spans, traces) in shape {
                    *shapes.entry(spans).or_insert(0) += traces;
                }
                if mode == Mode::Forwarded {
                    forwarded_traces += WARMUP + execs;
                }
            }
            let mut after = cpu(stack);
            after[0] = mine;
            for (k, (a, b)) in after.iter().zip(before).enumerate() {
                cpu_each[i][k] += a.saturating_sub(b) as f64 / 1e3 / (execs * rounds) as f64;
            }
            series[i].values.push(percentile(&times, 0.50));
            series[i].p99.push(percentile(&times, 0.99));
        }
    }
    global::set_tracer_provider(NoopTracerProvider::new());
    let [off, forwarded, direct] = series;
    let direct_ratio = crate::bench::ratio(&forwarded.values, &direct.values).0;
    Ok(Comparison {
        id: "tracing_forwarded",
        unit: Unit::Micros,
        ours: forwarded,
        peer: Some(off),
        target: Target::AtMost(1.02),
        notes: vec![format!(
            "{execs} execs per mode per round on a new warm session, this process embedding the client library against a relay and exec-server run as processes; \
             the embedder's spans forwarded: {} traces, each with every span the embedder ended in it, once, as exported directly (client spans -> traces, both modes, all rounds: {shapes:?}); \
             against the embedder exporting its spans itself (median p50 {:.1} µs): ratio {direct_ratio:.3}; \
             CPU µs per exec (this process, relay, exec-server: the timed execs and the session's close; the services' until their exports arrived): off {}, forwarded {}, direct {}",
            forwarded_traces,
            crate::bench::median(&direct.values),
            cpu_cells(cpu_each[0]),
            cpu_cells(cpu_each[1]),
            cpu_cells(cpu_each[2]),
        )],
    })
}
