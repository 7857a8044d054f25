//! The exec-server's side: a client's forwarded batches checked, marked as
//! forwarded for the client's key and exported with the exec-server's own
//! OTLP exporter, keeping the client's resource, scopes and timestamps.
//! With the project's own gRPC exporter a batch's spans are passed on as
//! the bytes they arrived as (`remark`: only each resource is decoded and
//! rewritten); with any other exporter they are converted to the SDK's.
//! Bounded: per-key and total rates of spans and bytes
//! (token buckets), a queue of batches waiting for export; what does not
//! fit is dropped and counted, with one warning per process. Batches leave
//! on the exporter's own schedule: the first one waits up to `linger` for
//! others to join it (so exports stay off the calls that carried them),
//! and [`Forwarder::shutdown`] sends what waits.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData, span, status};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::budget::{Budget, ForwardLimits, Offered};
use super::remark::{NotAsIs, remark};
use crate::otlp::{EncodedExport, OtlpTarget};
use crate::spans;

/// Spans forwarded and dropped since start.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ForwardCounts {
    /// Spans handed to the exporter.
    exported: u64,
    /// Spans dropped here (rates, queue, undecodable batches, resources
    /// that claim to be a service of ours, a failed export).
    dropped: u64,
    /// Spans the clients said they dropped themselves.
    dropped_by_clients: u64,
}

#[derive(Debug, Default)]
struct Counts {
    exported: AtomicU64,
    dropped: AtomicU64,
    dropped_by_clients: AtomicU64,
    warned: AtomicBool,
}

impl Counts {
    fn drop_spans(&self, n: u64, why: &str) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "forwarded client spans are dropped ({why}); later drops are counted, not said"
            );
        }
    }
}

/// A batch waiting for export.
#[derive(Debug)]
struct Job {
    traces: Vec<u8>,
    spans: u32,
    client: String,
}

/// The exec-server's forwarding of its clients' spans: [`offer`] from the
/// session, export on a task of the runtime it was started on.
///
/// [`offer`]: Forwarder::offer
#[derive(Debug, Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Job>,
    limits: ForwardLimits,
    budget: Arc<Mutex<Budget>>,
    counts: Arc<Counts>,
    /// Set by [`Forwarder::shutdown`]: what waits leaves now.
    closing: Arc<watch::Sender<bool>>,
    /// The export task, awaited by [`Forwarder::shutdown`].
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
#[error("forwarding client spans to {endpoint}: {reason}")]
pub struct ForwardError {
    endpoint: String,
    reason: String,
}

impl Forwarder {
    /// Starts exporting forwarded batches to `target` on the current Tokio
    /// runtime. `own` are the service names a client's resource may not
    /// claim (the exec-server's and the relay's).
    pub fn start(
        target: &OtlpTarget,
        limits: ForwardLimits,
        own: Vec<String>,
    ) -> Result<Self, ForwardError> {
        let exporter = crate::otlp::exporter(target, true).map_err(|e| ForwardError {
            endpoint: target.endpoint.clone(),
            reason: e.to_string(),
        })?;
        let exporter = crate::otlp::reported::Reported::new(exporter, target.endpoint.clone());
        Ok(Self::with_exporter(exporter, limits, own))
    }

    /// [`start`](Self::start) with any exporter (tests).
    fn with_exporter<E: EncodedExport + 'static>(
        exporter: E,
        limits: ForwardLimits,
        own: Vec<String>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue.max(1));
        let counts = Arc::new(Counts::default());
        let (closing, closed) = watch::channel(false);
        let exports = Exports {
            exporter,
            own,
            counts: Arc::clone(&counts),
        };
        let task = tokio::spawn(run(exports, rx, limits.linger, closed));
        Self {
            tx,
            limits,
            budget: Arc::new(Mutex::new(Budget::new(limits, Instant::now()))),
            counts,
            closing: Arc::new(closing),
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Exports what waits and stops, within `within`; false if the export
    /// did not finish in time (what it held is lost). Batches offered
    /// after this are not exported.
    pub async fn shutdown(&self, within: Duration) -> bool {
        self.closing.send_replace(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match task {
            Some(task) => tokio::time::timeout(within, task).await.is_ok(),
            None => true,
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> ForwardLimits {
        self.limits
    }

    /// Spans exported and dropped so far.
    #[cfg(test)]
    fn counts(&self) -> ForwardCounts {
        ForwardCounts {
            exported: self.counts.exported.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
            dropped_by_clients: self.counts.dropped_by_clients.load(Ordering::Relaxed),
        }
    }

    /// A call of the client whose key id is `client` started at `now`:
    /// it may forward one call's worth more (`call_spans`).
    pub fn called(&self, client: &str, now: Instant) {
        self.budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .called(client, now);
    }

    /// Offers a batch from the client whose key id is `client`, at `now`:
    /// queued for export if within the rates and the queue, else dropped
    /// and counted. Never waits. `dropped` is what the client says it
    /// dropped itself.
    pub fn offer(
        &self,
        client: &str,
        traces: Vec<u8>,
        spans: u32,
        dropped: u32,
        now: Instant,
    ) -> Offered {
        let counts = &self.counts;
        counts
            .dropped_by_clients
            .fetch_add(u64::from(dropped), Ordering::Relaxed);
        let verdict = self
            .budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(client, f64::from(spans.max(1)), traces.len() as f64, now);
        let verdict = match verdict {
            Offered::Queued => {
                let job = Job {
                    traces,
                    spans,
                    client: client.to_owned(),
                };
                match self.tx.try_send(job) {
                    Ok(()) => Offered::Queued,
                    Err(_) => Offered::QueueFull,
                }
            }
            other => other,
        };
        match verdict {
            Offered::Queued => {}
            Offered::KeyRate => counts.drop_spans(u64::from(spans), "a client key over its rate"),
            Offered::TotalRate => counts.drop_spans(u64::from(spans), "over the total rate"),
            Offered::QueueFull => counts.drop_spans(u64::from(spans), "the export queue is full"),
        }
        verdict
    }
}

/// Batches taken together into one export, at most.
const GROUP_JOBS: usize = 32;
/// Encoded bytes taken together into one export, at most (well under a
/// collector's usual 4 MiB limit on a request).
const GROUP_BYTES: usize = 1024 * 1024;

/// What the export task exports with.
struct Exports<E> {
    exporter: E,
    /// Service names a client's resource may not claim.
    own: Vec<String>,
    counts: Arc<Counts>,
}

/// Exports batches until every sender has gone or the forwarder shuts
/// down: the first waiting batch waits up to `linger` for others (up to
/// [`GROUP_JOBS`] and [`GROUP_BYTES`]), then they go together, and
/// consecutive spans of one client and resource in one export request.
/// At the end, what is queued goes at once.
async fn run<E: EncodedExport>(
    mut exports: Exports<E>,
    mut rx: mpsc::Receiver<Job>,
    linger: Duration,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
            _ = closed.wait_for(|c| *c) => break,
        };
        let deadline = tokio::time::Instant::now() + linger;
        let mut group = Group::new(first);
        let mut closing = false;
        while !group.full() {
            tokio::select! {
                // What is queued joins before the deadline is looked at.
                biased;
                job = rx.recv() => match job {
                    Some(job) => group.push(job),
                    None => break,
                },
                _ = closed.wait_for(|c| *c) => {
                    closing = true;
                    break;
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        exports.send(group.jobs).await;
        if closing {
            break;
        }
    }
    // Shutting down: the queue as it stands, in full groups.
    while let Ok(first) = rx.try_recv() {
        let mut group = Group::new(first);
        while !group.full() {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        exports.send(group.jobs).await;
    }
}

/// Batches taken together into one export.
struct Group {
    jobs: Vec<Job>,
    bytes: usize,
}

impl Group {
    fn new(first: Job) -> Self {
        Self {
            bytes: first.traces.len(),
            jobs: vec![first],
        }
    }

    fn push(&mut self, job: Job) {
        self.bytes += job.traces.len();
        self.jobs.push(job);
    }

    fn full(&self) -> bool {
        self.jobs.len() >= GROUP_JOBS || self.bytes >= GROUP_BYTES
    }
}

impl<E: EncodedExport> Exports<E> {
    /// Checks and exports `jobs`: passed on as they are in one request
    /// when the exporter takes one, else (and for a batch with a span
    /// whose ids are not ids) converted.
    async fn send(&mut self, jobs: Vec<Job>) {
        let jobs = if self.exporter.takes_requests() {
            self.send_as_is(jobs).await
        } else {
            jobs
        };
        if !jobs.is_empty() {
            self.convert_and_send(jobs).await;
        }
    }

    /// Exports `jobs` in one request, each resource re-marked and its
    /// spans as they arrived; returns the jobs that must be converted.
    async fn send_as_is(&mut self, jobs: Vec<Job>) -> Vec<Job> {
        let counts = Arc::clone(&self.counts);
        let mut request = Vec::with_capacity(jobs.iter().map(|j| j.traces.len() + 128).sum());
        let mut spans = 0u64;
        let mut convert = Vec::new();
        for job in jobs {
            match remark(&job.traces, &job.client, &self.own, &mut request) {
                Ok(done) => {
                    spans += done.spans;
                    if done.claimed > 0 {
                        counts.drop_spans(
                            done.claimed,
                            "a resource that claims to be a service of ours",
                        );
                        tracing::debug!(service = ?done.claimed_name, "forwarded spans refused");
                    }
                }
                Err(NotAsIs::NotOtlp) => {
                    counts.drop_spans(u64::from(job.spans), "a batch that is not OTLP");
                }
                Err(NotAsIs::BadIds) => convert.push(job),
            }
        }
        if spans > 0 {
            match self.exporter.export_request(request).await {
                Ok(()) => {
                    counts.exported.fetch_add(spans, Ordering::Relaxed);
                }
                Err(_) => counts.drop_spans(spans, "the export failed"),
            }
        }
        convert
    }

    /// Decodes, checks and exports `jobs` as the SDK's spans, consecutive
    /// spans of one client and resource in one request.
    async fn convert_and_send(&mut self, jobs: Vec<Job>) {
        let counts = Arc::clone(&self.counts);
        let mut group: Option<(String, Resource, Vec<SpanData>)> = None;
        for job in jobs {
            let Ok(data) = TracesData::decode(job.traces.as_slice()) else {
                counts.drop_spans(u64::from(job.spans), "a batch that is not OTLP");
                continue;
            };
            for rs in data.resource_spans {
                let Some((resource, spans)) = convert(rs, &job.client, &self.own) else {
                    continue;
                };
                match resource {
                    Err(claimed) => {
                        counts.drop_spans(
                            spans.len() as u64,
                            "a resource that claims to be a service of ours",
                        );
                        tracing::debug!(service = %claimed, "forwarded spans refused");
                    }
                    Ok(resource) => match &mut group {
                        Some((client, r, held)) if *client == job.client && *r == resource => {
                            held.extend(spans);
                        }
                        _ => {
                            if let Some(done) = group.take() {
                                export(&mut self.exporter, done, &counts).await;
                            }
                            group = Some((job.client.clone(), resource, spans));
                        }
                    },
                }
            }
        }
        if let Some(done) = group {
            export(&mut self.exporter, done, &counts).await;
        }
    }
}

/// One export request: `spans` with their resource.
async fn export<E: SpanExporter>(
    exporter: &mut E,
    (_, resource, spans): (String, Resource, Vec<SpanData>),
    counts: &Counts,
) {
    let n = spans.len() as u64;
    exporter.set_resource(&resource);
    match exporter.export(spans).await {
        Ok(()) => {
            counts.exported.fetch_add(n, Ordering::Relaxed);
        }
        Err(_) => counts.drop_spans(n, "the export failed"),
    }
}

/// A resource's spans as the SDK's, with the resource marked as forwarded
/// for `client`; `Err` with the name if it claims one of `own`.
#[allow(clippy::type_complexity)]
fn convert(
    rs: ResourceSpans,
    client: &str,
    own: &[String],
) -> Option<(Result<Resource, String>, Vec<SpanData>)> {
    let mut attributes: Vec<KeyValue> = rs
        .resource
        .map(|r| r.attributes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(key_value)
        .filter(|kv| !kv.key.as_str().starts_with(spans::FORWARDED_FOR))
        .collect();
    let service = attributes
        .iter()
        .find(|kv| kv.key.as_str() == "service.name")
        .map(|kv| kv.value.as_str().into_owned());
    attributes.push(KeyValue::new(spans::FORWARDED_FOR, client.to_owned()));
    let mut builder = Resource::builder_empty().with_attributes(attributes);
    if !rs.schema_url.is_empty() {
        builder = builder.with_schema_url([], rs.schema_url);
    }
    let resource = match service {
        Some(name) if own.contains(&name) => Err(name),
        _ => Ok(builder.build()),
    };
    let mut out = Vec::new();
    for ss in rs.scope_spans {
        let scope = ss.scope.map_or_else(
            || InstrumentationScope::builder("").build(),
            |s| {
                let mut b = InstrumentationScope::builder(s.name);
                if !s.version.is_empty() {
                    b = b.with_version(s.version);
                }
                b.build()
            },
        );
        for s in ss.spans {
            if let Some(span) = span_data(s, &scope) {
                out.push(span);
            }
        }
    }
    if out.is_empty() {
        return None;
    }
    Some((resource, out))
}

fn trace_id(bytes: &[u8]) -> Option<TraceId> {
    Some(TraceId::from_bytes(bytes.try_into().ok()?))
}

fn span_id(bytes: &[u8]) -> Option<SpanId> {
    Some(SpanId::from_bytes(bytes.try_into().ok()?))
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn context(trace: &[u8], span: &[u8], state: &str) -> Option<SpanContext> {
    let state = TraceState::from_key_value(
        state
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())),
    )
    .unwrap_or_default();
    Some(SpanContext::new(
        trace_id(trace)?,
        span_id(span)?,
        TraceFlags::SAMPLED,
        true,
        state,
    ))
}

fn span_data(
    s: opentelemetry_proto::tonic::trace::v1::Span,
    scope: &InstrumentationScope,
) -> Option<SpanData> {
    let span_context = context(&s.trace_id, &s.span_id, &s.trace_state)?;
    let parent_span_id = if s.parent_span_id.is_empty() {
        SpanId::INVALID
    } else {
        span_id(&s.parent_span_id)?
    };
    let span_kind = match span::SpanKind::try_from(s.kind) {
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        _ => SpanKind::Internal,
    };
    let status = match s.status {
        Some(st) if st.code == status::StatusCode::Error as i32 => Status::error(st.message),
        Some(st) if st.code == status::StatusCode::Ok as i32 => Status::Ok,
        _ => Status::Unset,
    };
    let events = s
        .events
        .into_iter()
        .map(|e| {
            Event::new(
                e.name,
                time(e.time_unix_nano),
                e.attributes.into_iter().filter_map(key_value).collect(),
                e.dropped_attributes_count,
            )
        })
        .collect();
    let links = s
        .links
        .into_iter()
        .filter_map(|l| {
            Some(Link::new(
                context(&l.trace_id, &l.span_id, &l.trace_state)?,
                l.attributes.into_iter().filter_map(key_value).collect(),
                l.dropped_attributes_count,
            ))
        })
        .collect();
    let mut span_events = SpanEvents::default();
    span_events.events = events;
    span_events.dropped_count = s.dropped_events_count;
    let mut span_links = SpanLinks::default();
    span_links.links = links;
    span_links.dropped_count = s.dropped_links_count;
    Some(SpanData {
        span_context,
        parent_span_id,
        parent_span_is_remote: false,
        span_kind,
        name: Cow::Owned(s.name),
        start_time: time(s.start_time_unix_nano),
        end_time: time(s.end_time_unix_nano),
        attributes: s.attributes.into_iter().filter_map(key_value).collect(),
        dropped_attributes_count: s.dropped_attributes_count,
        events: span_events,
        links: span_links,
        status,
        instrumentation_scope: scope.clone(),
    })
}

fn key_value(kv: opentelemetry_proto::tonic::common::v1::KeyValue) -> Option<KeyValue> {
    Some(KeyValue::new(kv.key, value(kv.value?)?))
}

fn value(v: AnyValue) -> Option<Value> {
    use opentelemetry::{Array, StringValue};
    Some(match v.value? {
        any_value::Value::StringValue(s) => Value::String(s.into()),
        any_value::Value::BoolValue(b) => Value::Bool(b),
        any_value::Value::IntValue(i) => Value::I64(i),
        any_value::Value::DoubleValue(d) => Value::F64(d),
        any_value::Value::ArrayValue(a) => {
            let items: Vec<any_value::Value> =
                a.values.into_iter().filter_map(|v| v.value).collect();
            if items
                .iter()
                .all(|i| matches!(i, any_value::Value::StringValue(_)))
            {
                Value::Array(Array::String(
                    items
                        .into_iter()
                        .filter_map(|i| match i {
                            any_value::Value::StringValue(s) => Some(StringValue::from(s)),
                            _ => None,
                        })
                        .collect(),
                ))
            } else if items
                .iter()
                .all(|i| matches!(i, any_value::Value::IntValue(_)))
            {
                Value::Array(Array::I64(
                    items
                        .into_iter()
                        .filter_map(|i| match i {
                            any_value::Value::IntValue(n) => Some(n),
                            _ => None,
                        })
                        .collect(),
                ))
            } else {
                return None;
            }
        }
        // Maps and bytes: not made by the SDK's attributes.
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{SpanCollector, SpanSource as _};
    use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    /// An in-memory exporter that records each batch's resource too.
    #[derive(Debug, Clone, Default)]
    struct Recording {
        inner: InMemorySpanExporter,
        resources: Arc<Mutex<Vec<Resource>>>,
        current: Option<Resource>,
    }

    impl SpanExporter for Recording {
        async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
            if let Some(r) = &self.current {
                self.resources.lock().unwrap().push(r.clone());
            }
            self.inner.export(batch).await
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.current = Some(resource.clone());
        }
    }

    impl EncodedExport for Recording {}

    /// An exporter that takes encoded requests, recording each (and any
    /// spans converted as [`Recording`] does).
    #[derive(Debug, Clone, Default)]
    struct TakesRequests {
        spans: Recording,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl SpanExporter for TakesRequests {
        async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
            self.spans.export(batch).await
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.spans.set_resource(resource);
        }
    }

    impl EncodedExport for TakesRequests {
        fn takes_requests(&self) -> bool {
            true
        }

        async fn export_request(
            &self,
            request: Vec<u8>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.requests.lock().unwrap().push(request);
            Ok(())
        }
    }

    /// One client trace of `n` spans, encoded, as a client would send it.
    fn client_batch(service: &str, n: usize) -> (TraceId, Vec<u8>) {
        let collector = SpanCollector::default();
        let provider = crate::provider::base_builder(service.into())
            .with_span_processor(collector.processor())
            .build();
        let tracer = provider.tracer("core-client");
        let trace = tracer.in_span("cli.run", |cx| {
            for _ in 1..n {
                let mut s = tracer.start("tool.dispatch");
                use opentelemetry::trace::Span as _;
                s.set_attribute(KeyValue::new("rex.clock_offset_ns", 42i64));
            }
            cx.span().span_context().trace_id()
        });
        let taken = collector.take(trace, usize::MAX);
        (trace, taken.batches[0].traces.clone())
    }

    async fn settle(f: &Forwarder, want: u64) {
        for _ in 0..6000 {
            let c = f.counts();
            if c.exported + c.dropped >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn own() -> Vec<String> {
        vec!["exec-server".into(), "relay".into()]
    }

    /// The defaults, with batches waiting a short while.
    fn limits() -> ForwardLimits {
        ForwardLimits {
            linger: Duration::from_millis(100),
            ..ForwardLimits::default()
        }
    }

    #[tokio::test]
    async fn a_batch_is_exported_with_its_resource_marked_for_the_client() {
        let exporter = Recording::default();
        let f = Forwarder::with_exporter(exporter.clone(), limits(), own());
        let (trace, bytes) = client_batch("core-client", 3);
        assert_eq!(
            f.offer("key1", bytes, 3, 2, Instant::now()),
            Offered::Queued
        );
        settle(&f, 3).await;
        assert_eq!(
            f.counts(),
            ForwardCounts {
                exported: 3,
                dropped: 0,
                dropped_by_clients: 2
            }
        );
        let spans = exporter.inner.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 3);
        assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
        let dispatch = spans.iter().find(|s| s.name == "tool.dispatch").unwrap();
        assert!(
            dispatch
                .attributes
                .contains(&KeyValue::new("rex.clock_offset_ns", 42i64))
        );
        let root = spans.iter().find(|s| s.name == "cli.run").unwrap();
        assert!(root.start_time <= dispatch.start_time);
        let resources = exporter.resources.lock().unwrap();
        let r = &resources[0];
        assert_eq!(
            r.get(&opentelemetry::Key::new("service.name")),
            Some(Value::from("core-client"))
        );
        assert_eq!(
            r.get(&opentelemetry::Key::new(spans::FORWARDED_FOR)),
            Some(Value::from("key1"))
        );
    }

    fn decode_request(
        bytes: &[u8],
    ) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        prost::Message::decode(bytes).unwrap()
    }

    fn string_attr(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
        opentelemetry_proto::tonic::common::v1::KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn attr<'a>(
        attributes: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
        key: &str,
    ) -> Vec<&'a any_value::Value> {
        attributes
            .iter()
            .filter(|kv| kv.key == key)
            .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
            .collect()
    }

    #[tokio::test]
    async fn with_an_exporter_that_takes_requests_spans_pass_on_as_they_arrived() {
        let exporter = TakesRequests::default();
        let f = Forwarder::with_exporter(exporter.clone(), limits(), own());
        let (_, first) = client_batch("core-client", 3);
        // A client that marks its own resource as forwarded for another key.
        let (_, second) = client_batch("core-client", 2);
        let mut claims = TracesData::decode(second.as_slice()).unwrap();
        if let Some(r) = claims.resource_spans[0].resource.as_mut() {
            r.attributes
                .push(string_attr(spans::FORWARDED_FOR, "someone-else"));
        }
        let second = claims.encode_to_vec();
        let now = Instant::now();
        assert_eq!(f.offer("key1", first.clone(), 3, 0, now), Offered::Queued);
        assert_eq!(f.offer("key2", second.clone(), 2, 0, now), Offered::Queued);
        settle(&f, 5).await;
        assert_eq!(f.counts().exported, 5);
        assert_eq!(f.counts().dropped, 0);
        // One request for both, nothing converted.
        let requests = exporter.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert!(
            exporter
                .spans
                .inner
                .get_finished_spans()
                .unwrap()
                .is_empty()
        );
        let request = decode_request(&requests[0]);
        assert_eq!(request.resource_spans.len(), 2);
        for (rs, (sent, key)) in request
            .resource_spans
            .iter()
            .zip([(&first, "key1"), (&second, "key2")])
        {
            let sent = TracesData::decode(sent.as_slice()).unwrap();
            // Scopes and spans byte for byte as the client sent them.
            assert_eq!(rs.scope_spans, sent.resource_spans[0].scope_spans);
            assert_eq!(rs.schema_url, sent.resource_spans[0].schema_url);
            let attributes = &rs.resource.as_ref().unwrap().attributes;
            assert_eq!(
                attr(attributes, spans::FORWARDED_FOR),
                [&any_value::Value::StringValue(key.into())]
            );
            assert_eq!(
                attr(attributes, "service.name"),
                [&any_value::Value::StringValue("core-client".into())]
            );
        }
    }

    #[tokio::test]
    async fn as_they_arrived_claims_garbage_and_bad_ids_are_handled_as_before() {
        let exporter = TakesRequests::default();
        let f = Forwarder::with_exporter(exporter.clone(), limits(), own());
        let now = Instant::now();
        let (_, claims) = client_batch("relay", 2);
        assert_eq!(f.offer("k", claims, 2, 0, now), Offered::Queued);
        assert_eq!(f.offer("k", vec![0xff; 8], 1, 0, now), Offered::Queued);
        // One span whose trace id is three bytes: the batch is converted,
        // and the span with good ids alone goes.
        let (_, batch) = client_batch("core-client", 2);
        let mut bad = TracesData::decode(batch.as_slice()).unwrap();
        bad.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
        assert_eq!(
            f.offer("k", bad.encode_to_vec(), 2, 0, now),
            Offered::Queued
        );
        settle(&f, 4).await;
        assert_eq!(f.counts().dropped, 3);
        assert_eq!(f.counts().exported, 1);
        assert!(exporter.requests.lock().unwrap().is_empty());
        assert_eq!(exporter.spans.inner.get_finished_spans().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn waiting_batches_of_one_client_go_in_one_export_in_order() {
        let exporter = Recording::default();
        let f = Forwarder::with_exporter(exporter.clone(), limits(), own());
        let now = Instant::now();
        let mut sent = Vec::new();
        // All offered before the export task runs (one thread): a, a, b, a.
        for key in ["a", "a", "b", "a"] {
            let (trace, bytes) = client_batch("core-client", 3);
            assert_eq!(f.offer(key, bytes, 3, 0, now), Offered::Queued);
            sent.push(trace);
        }
        settle(&f, 12).await;
        assert_eq!(f.counts().exported, 12);
        let for_key: Vec<Value> = exporter
            .resources
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                r.get(&opentelemetry::Key::new(spans::FORWARDED_FOR))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            for_key,
            [Value::from("a"), Value::from("b"), Value::from("a")]
        );
        let mut traces: Vec<TraceId> = Vec::new();
        for s in exporter.inner.get_finished_spans().unwrap() {
            let t = s.span_context.trace_id();
            if traces.last() != Some(&t) {
                traces.push(t);
            }
        }
        assert_eq!(traces, sent);
    }

    #[tokio::test]
    async fn a_client_cannot_claim_to_be_the_exec_server_or_the_relay() {
        let exporter = Recording::default();
        let f = Forwarder::with_exporter(exporter.clone(), limits(), own());
        for service in ["exec-server", "relay"] {
            let (_, bytes) = client_batch(service, 2);
            assert_eq!(f.offer("k", bytes, 2, 0, Instant::now()), Offered::Queued);
        }
        assert_eq!(
            f.offer("k", vec![0xff; 8], 1, 0, Instant::now()),
            Offered::Queued
        );
        settle(&f, 5).await;
        assert_eq!(f.counts().exported, 0);
        assert_eq!(f.counts().dropped, 5);
        assert!(exporter.inner.get_finished_spans().unwrap().is_empty());
    }

    #[tokio::test]
    async fn rates_per_key_and_in_all_drop_with_a_count() {
        let exporter = Recording::default();
        let limits = ForwardLimits {
            key_spans_per_sec: 1,
            total_spans_per_sec: 2,
            ..limits()
        };
        let f = Forwarder::with_exporter(exporter.clone(), limits, own());
        let now = Instant::now();
        let (_, bytes) = client_batch("core-client", 3);
        // Each key holds 4 spans' worth, all keys 8.
        assert_eq!(f.offer("a", bytes.clone(), 3, 0, now), Offered::Queued);
        assert_eq!(f.offer("a", bytes.clone(), 3, 0, now), Offered::KeyRate);
        assert_eq!(f.offer("b", bytes.clone(), 3, 0, now), Offered::Queued);
        assert_eq!(f.offer("c", bytes.clone(), 3, 0, now), Offered::TotalRate);
        // Two seconds on, key a has two more and all keys four.
        let later = now + Duration::from_secs(2);
        assert_eq!(f.offer("a", bytes.clone(), 3, 0, later), Offered::Queued);
        settle(&f, 9 + 6).await;
        assert_eq!(f.counts().exported, 9);
        assert_eq!(f.counts().dropped, 6);
    }

    /// A forwarder whose batches would wait an hour, and its exporter.
    fn lingering() -> (Recording, Forwarder) {
        let exporter = Recording::default();
        let limits = ForwardLimits {
            linger: Duration::from_secs(3600),
            ..ForwardLimits::default()
        };
        let f = Forwarder::with_exporter(exporter.clone(), limits, own());
        (exporter, f)
    }

    #[tokio::test]
    async fn batches_wait_for_the_linger_and_shutdown_sends_them() {
        let (exporter, f) = lingering();
        for key in ["a", "b"] {
            let (_, bytes) = client_batch("core-client", 3);
            assert_eq!(f.offer(key, bytes, 3, 0, Instant::now()), Offered::Queued);
        }
        // The export task has run (it took the first batch) and waits.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(f.counts().exported, 0);
        assert!(exporter.inner.get_finished_spans().unwrap().is_empty());
        assert!(f.shutdown(Duration::from_secs(60)).await);
        assert_eq!(f.counts().exported, 6);
        assert_eq!(exporter.inner.get_finished_spans().unwrap().len(), 6);
        // After the shutdown nothing is exported.
        let (_, bytes) = client_batch("core-client", 3);
        f.offer("a", bytes, 3, 0, Instant::now());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.counts().exported, 6);
        assert!(f.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn a_full_group_leaves_without_waiting() {
        let (exporter, f) = lingering();
        let now = Instant::now();
        for _ in 0..GROUP_JOBS {
            let (_, bytes) = client_batch("core-client", 1);
            assert_eq!(f.offer("a", bytes, 1, 0, now), Offered::Queued);
        }
        settle(&f, GROUP_JOBS as u64).await;
        assert_eq!(f.counts().exported, GROUP_JOBS as u64);
        // One request for the one client and resource.
        assert_eq!(exporter.resources.lock().unwrap().len(), 1);
    }
}
