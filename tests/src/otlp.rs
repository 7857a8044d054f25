//! An in-process OTLP trace receiver (gRPC and HTTP) that records the
//! spans exported to it, for tests that check what the binaries or the SDK
//! really send.
//!
//! Start one with [`OtlpReceiver::start`], point an exporter at
//! [`OtlpReceiver::endpoint`] (OTLP/gRPC) or [`OtlpReceiver::http_endpoint`]
//! (OTLP/HTTP, protobuf or JSON), then wait for spans with
//! [`OtlpReceiver::wait_for`]. [`crate::trace_check`] has assertions over
//! the recorded spans.
//!
//! The gRPC and HTTP servers and [`flatten`] (OTLP spans to
//! [`RecordedSpan`]s) also serve [`crate::sink`]. OTLP JSON (a trace
//! file's lines, Jaeger's answers) is read by the project's one reader,
//! `analysis::read_spans`, into the same [`RecordedSpan`]s ([`read_json`]).

mod exports;
pub mod http;
mod light;

pub(crate) use exports::Exports;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use analysis::model;
use axum::http::HeaderMap;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, status::StatusCode};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::{FixtureError, Result};

/// An attribute value as exported over OTLP.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An array of values.
    Array(Vec<AttrValue>),
    /// A nested key/value list.
    Map(BTreeMap<String, AttrValue>),
    /// No value (absent, or a kind only the profiling signal uses).
    Empty,
}

impl AttrValue {
    fn from_any(value: Option<&AnyValue>) -> Self {
        use any_value::Value;
        match value.and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Self::Str(s.clone()),
            Some(Value::BoolValue(b)) => Self::Bool(*b),
            Some(Value::IntValue(i)) => Self::Int(*i),
            Some(Value::DoubleValue(d)) => Self::Double(*d),
            Some(Value::BytesValue(b)) => Self::Bytes(b.clone()),
            Some(Value::ArrayValue(a)) => {
                Self::Array(a.values.iter().map(|v| Self::from_any(Some(v))).collect())
            }
            Some(Value::KvlistValue(kv)) => Self::Map(attributes(&kv.values)),
            Some(Value::StringValueStrindex(_)) | None => Self::Empty,
        }
    }
}

impl From<&model::AttrValue> for AttrValue {
    fn from(value: &model::AttrValue) -> Self {
        match value {
            model::AttrValue::Str(s) => Self::Str(s.to_string()),
            model::AttrValue::Bool(b) => Self::Bool(*b),
            model::AttrValue::Int(i) => Self::Int(*i),
            model::AttrValue::Double(d) => Self::Double(*d),
            model::AttrValue::Bytes(b) => Self::Bytes(b.to_vec()),
            model::AttrValue::Array(a) => Self::Array(a.iter().map(Self::from).collect()),
            model::AttrValue::Map(kvs) => Self::Map(read_attributes(kvs)),
            model::AttrValue::Empty => Self::Empty,
        }
    }
}

/// Attributes as the reader read them, keyed (a key written twice: the
/// last value).
fn read_attributes(kvs: &[(Box<str>, model::AttrValue)]) -> BTreeMap<String, AttrValue> {
    kvs.iter()
        .map(|(k, v)| (k.to_string(), AttrValue::from(v)))
        .collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, AttrValue> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), AttrValue::from_any(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// One span as the receiver got it, flattened with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSpan {
    /// The resource's `service.name` (empty if it had none).
    pub service: String,
    /// The resource's attributes (`service.name`, `service.version`,
    /// `host.name`, ...).
    pub resource: BTreeMap<String, AttrValue>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The span's name.
    pub name: String,
    /// The trace id, lowercase hex (32 digits for a valid id).
    pub trace_id: String,
    /// The span id, lowercase hex (16 digits for a valid id).
    pub span_id: String,
    /// The parent's span id in hex; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span kind (`opentelemetry_proto::tonic::trace::v1::span::SpanKind`).
    pub kind: i32,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// The span's attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Links, as `(trace_id, span_id)` in hex.
    pub links: Vec<(String, String)>,
    /// The status message if the status is `Error`, else `None`.
    pub status_error: Option<String>,
    /// The span's events.
    pub events: Vec<RecordedEvent>,
}

/// An event on a recorded span.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The event's name (for a `tracing` event, its message).
    pub name: String,
    /// Its attributes (a `tracing` event's `level` among them).
    pub attributes: BTreeMap<String, AttrValue>,
}

impl RecordedSpan {
    fn from_proto(
        service: &str,
        resource: &BTreeMap<String, AttrValue>,
        scope: &str,
        span: &Span,
    ) -> Self {
        let status_error = span
            .status
            .as_ref()
            .filter(|s| s.code == StatusCode::Error as i32)
            .map(|s| s.message.clone());
        Self {
            service: service.to_owned(),
            resource: resource.clone(),
            scope: scope.to_owned(),
            name: span.name.clone(),
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
            kind: span.kind,
            start_unix_nanos: span.start_time_unix_nano,
            end_unix_nanos: span.end_time_unix_nano,
            attributes: attributes(&span.attributes),
            links: span
                .links
                .iter()
                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                .collect(),
            status_error,
            events: span
                .events
                .iter()
                .map(|e| RecordedEvent {
                    name: e.name.clone(),
                    attributes: attributes(&e.attributes),
                })
                .collect(),
        }
    }

    /// The view of a span the project's reader read whole
    /// (`analysis::read_spans`): the fields the receiver
    /// takes from an export, from the same span written as OTLP JSON.
    pub fn from_read(span: &model::Span) -> Self {
        let record = span.record().cloned().unwrap_or_default();
        let service = record
            .resource
            .iter()
            .find(|(k, _)| &**k == "service.name")
            .map_or(String::new(), |(_, v)| match v {
                model::AttrValue::Str(s) => s.to_string(),
                _ => String::new(),
            });
        let status_message = span
            .detail
            .as_ref()
            .and_then(|d| d.error_message.as_deref())
            .unwrap_or("");
        Self {
            service,
            resource: read_attributes(&record.resource),
            scope: record.scope.to_string(),
            name: span.name.to_string(),
            trace_id: span.trace_hex(),
            span_id: span.id_hex(),
            parent_span_id: (span.parent != 0).then(|| format!("{:016x}", span.parent)),
            kind: record.kind,
            start_unix_nanos: span.start,
            end_unix_nanos: span.end,
            attributes: read_attributes(&record.attributes),
            links: span
                .links()
                .iter()
                .map(|(trace, id)| (model::trace_hex(*trace), format!("{id:016x}")))
                .collect(),
            status_error: span.error.then(|| status_message.to_owned()),
            events: record
                .events
                .iter()
                .map(|e| RecordedEvent {
                    name: e.name.to_string(),
                    attributes: read_attributes(&e.attributes),
                })
                .collect(),
        }
    }

    /// The span's duration (zero if it ends before it starts).
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }

    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    /// The attribute `key` if it is a string.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The attribute `key` if it is an integer.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The attribute `key` if it is a boolean.
    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        match self.attr(key)? {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The attribute `key` if it is a floating-point number.
    pub fn attr_f64(&self, key: &str) -> Option<f64> {
        match self.attr(key)? {
            AttrValue::Double(d) => Some(*d),
            _ => None,
        }
    }
}

/// What a receiver does with what it is sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Keeping {
    /// Every span decoded and recorded as it arrives.
    #[default]
    Recorded,
    /// Spans per trace id only, nothing flattened or kept.
    Counted,
    /// OTLP/gRPC requests kept as their bytes, decoded and recorded when
    /// the spans are asked for.
    Deferred,
}

/// State shared between the receiver handle and the gRPC service.
#[derive(Debug, Default)]
struct Shared {
    spans: Mutex<Vec<RecordedSpan>>,
    keeping: Keeping,
    /// Deferred mode: the requests not yet decoded, in arrival order.
    pending: Mutex<Vec<Bytes>>,
    counts: Mutex<HashMap<Vec<u8>, usize>>,
    /// Woken (all waiters) after every recorded export.
    recorded: Notify,
    requests: AtomicUsize,
    rejected: AtomicUsize,
    failing: AtomicBool,
    /// Each export request's headers (gRPC metadata included), in arrival
    /// order.
    headers: Mutex<Vec<HeaderMap>>,
}

impl Shared {
    /// The spans, even if a panicking thread poisoned the lock (the data
    /// is only ever appended to or cleared, so it is still consistent),
    /// with every deferred request decoded into them first.
    fn spans(&self) -> MutexGuard<'_, Vec<RecordedSpan>> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = std::mem::take(&mut *self.pending());
        for raw in pending {
            match ExportTraceServiceRequest::decode(raw) {
                Ok(request) => spans.extend(flatten(&request.resource_spans)),
                // Its spans are missing from the record, which is what a
                // test or benchmark then sees; this says why.
                Err(e) => eprintln!(
                    "note: OTLP receiver: an export request kept undecoded is not OTLP: {e}"
                ),
            }
        }
        spans
    }

    fn pending(&self) -> MutexGuard<'_, Vec<Bytes>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `TraceService` implementation over an [`Exports`].
struct Collector<E>(Arc<E>);

#[tonic::async_trait]
impl<E: Exports> TraceService for Collector<E> {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<Response<ExportTraceServiceResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.0
            .export(request.into_inner(), &headers)
            .map(Response::new)
    }
}

/// Binds `addr` for the server named `what`; the listener and the address
/// it got.
pub(crate) async fn bind(addr: SocketAddr, what: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| FixtureError::io(format!("binding the {what} to {addr}"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| FixtureError::io(format!("reading the {what}'s address"), e))?;
    Ok((listener, addr))
}

/// Serves OTLP/gRPC trace exports arriving on `listener` into `exports`
/// until `shutdown` is cancelled.
pub(crate) async fn serve<E: Exports>(
    listener: TcpListener,
    exports: Arc<E>,
    shutdown: CancellationToken,
) -> std::result::Result<(), tonic::transport::Error> {
    // Compressed exports (OTEL_EXPORTER_OTLP_COMPRESSION=gzip) are taken,
    // as a collector takes them; `grpc-encoding` is recorded with the
    // other headers.
    let service = TraceServiceServer::new(Collector(exports))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}

/// The `service.name` attribute of `resource` (empty if it has none, or
/// if it is not a string).
pub(crate) fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map_or("", |v| match v {
            any_value::Value::StringValue(s) => s.as_str(),
            _ => "",
        })
}

/// The spans of one OTLP JSON document (a trace file's line, a whole
/// document, or a Jaeger query answer), in the order written, read by the
/// project's reader (`analysis::read_spans`; spans without a trace or span
/// id are left out). An error if it is not OTLP JSON.
pub fn read_json(json: &[u8]) -> std::result::Result<Vec<RecordedSpan>, serde_json::Error> {
    Ok(analysis::read_spans(json)?
        .iter()
        .map(RecordedSpan::from_read)
        .collect())
}

/// The spans of `resource_spans`, each flattened with its resource's
/// service name and its scope's name, in order.
pub fn flatten(resource_spans: &[ResourceSpans]) -> Vec<RecordedSpan> {
    let mut out = Vec::new();
    for rs in resource_spans {
        let service = service_name(rs.resource.as_ref());
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map_or("", |s| s.name.as_str());
            out.extend(
                ss.spans
                    .iter()
                    .map(|s| RecordedSpan::from_proto(service, &resource, scope, s)),
            );
        }
    }
    out
}

impl Shared {
    /// Takes a request's `headers`, counted; an error if the receiver is
    /// set to fail.
    fn arrived(&self, headers: &HeaderMap) -> std::result::Result<(), Status> {
        self.headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(headers.clone());
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unavailable("OTLP receiver set to fail"));
        }
        Ok(())
    }
}

impl light::Takes<light::Ids> for Shared {
    fn take(&self, request: light::Ids, headers: &HeaderMap) -> std::result::Result<(), Status> {
        self.arrived(headers)?;
        light::add(&self.counts, &request);
        self.recorded.notify_waiters();
        Ok(())
    }
}

impl light::Takes<Bytes> for Shared {
    fn take(&self, request: Bytes, headers: &HeaderMap) -> std::result::Result<(), Status> {
        self.arrived(headers)?;
        self.pending().push(request);
        self.recorded.notify_waiters();
        Ok(())
    }
}

impl Exports for Shared {
    fn export(
        &self,
        request: ExportTraceServiceRequest,
        headers: &HeaderMap,
    ) -> std::result::Result<ExportTraceServiceResponse, Status> {
        self.arrived(headers)?;
        if self.keeping == Keeping::Counted {
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            for span in request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
            {
                *counts.entry(span.trace_id.clone()).or_insert(0) += 1;
            }
        } else {
            let new = flatten(&request.resource_spans);
            self.spans().extend(new);
        }
        self.recorded.notify_waiters();
        Ok(ExportTraceServiceResponse::default())
    }
}

/// A running OTLP trace receiver on loopback, taking OTLP/gRPC on one
/// port and OTLP/HTTP on another into the same record. Stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    http_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<()>>>,
}

impl OtlpReceiver {
    /// Starts a receiver on `127.0.0.1:0` (both ports).
    pub async fn start() -> Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a receiver taking OTLP/gRPC on `addr` (and OTLP/HTTP on
    /// another port of the same host); an error if it cannot bind.
    pub async fn start_on(addr: SocketAddr) -> Result<Self> {
        Self::start_with(addr, Keeping::Recorded).await
    }

    /// Starts a receiver on `127.0.0.1:0` that only counts spans per trace
    /// ([`Self::span_counts`]) instead of recording them: as cheap as a
    /// receiver can be, for benchmarks that share the machine with it.
    pub async fn start_counting() -> Result<Self> {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), Keeping::Counted).await
    }

    /// Starts a receiver on `127.0.0.1:0` that records every span, as
    /// [`Self::start`] does, but keeps each OTLP/gRPC request as its bytes
    /// until the spans are asked for ([`Self::spans`], [`Self::traces`],
    /// [`Self::wait_for`]…): for benchmarks that check every span but
    /// whose timed part should not share the machine with a receiver
    /// decoding what it is sent.
    pub async fn start_deferred() -> Result<Self> {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), Keeping::Deferred).await
    }

    async fn start_with(addr: SocketAddr, keeping: Keeping) -> Result<Self> {
        let (listener, addr) = bind(addr, "OTLP receiver").await?;
        let (http_listener, http_addr) = bind(
            SocketAddr::new(addr.ip(), 0),
            "OTLP receiver's HTTP listener",
        )
        .await?;
        let shared = Arc::new(Shared {
            keeping,
            ..Shared::default()
        });
        let shutdown = CancellationToken::new();
        // Counting over gRPC decodes the trace ids alone and deferring
        // decodes nothing (the benchmarks' exporters use gRPC); over HTTP
        // both decode whole requests.
        let grpc = {
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            async move {
                let mut server = tonic::transport::Server::builder();
                let stop = shutdown.clone().cancelled_owned();
                match keeping {
                    Keeping::Recorded => serve(listener, shared, shutdown).await,
                    Keeping::Counted => {
                        server
                            .add_service(light::LightServer::<_, light::Ids>::new(shared))
                            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                            .await
                    }
                    Keeping::Deferred => {
                        server
                            .add_service(light::LightServer::<_, Bytes>::new(shared))
                            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                            .await
                    }
                }
            }
        };
        let http = http::serve(http_listener, shared.clone(), shutdown.clone());
        // Both run until the token is cancelled; the first failure stops
        // the other.
        let token = shutdown.clone();
        let server = async move {
            let (grpc, http) = tokio::join!(
                async {
                    let served = grpc.await.map_err(|e| {
                        FixtureError::output(
                            "the OTLP receiver's server",
                            format!("it failed: {e}"),
                        )
                    });
                    token.cancel();
                    served
                },
                async {
                    let served = http
                        .await
                        .map_err(|e| FixtureError::io("the OTLP receiver's HTTP server", e));
                    token.cancel();
                    served
                }
            );
            grpc.and(http)
        };
        Ok(Self {
            addr,
            http_addr,
            shared,
            shutdown,
            task: Some(tokio::spawn(server)),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL for an OTLP/gRPC exporter, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address taking OTLP/HTTP.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The base URL for an OTLP/HTTP exporter, `http://127.0.0.1:PORT`
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`; the traces endpoint is this plus
    /// [`http::TRACES_PATH`]).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The values of header `name` (case-insensitive) on every export
    /// request so far, gRPC metadata included, in arrival order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.shared
            .headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|h| h.get_all(name))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// When `true`, every export is answered with `UNAVAILABLE` and its
    /// spans are dropped; when `false` (the default), exports are recorded.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// How many export requests arrived, rejected ones included.
    pub fn export_requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// How many export requests were rejected because of [`Self::set_failing`].
    pub fn rejected_requests(&self) -> usize {
        self.shared.rejected.load(Ordering::SeqCst)
    }

    /// All spans recorded so far, in arrival order.
    pub fn spans(&self) -> Vec<RecordedSpan> {
        self.shared.spans().clone()
    }

    /// The recorded spans grouped by trace id, each in arrival order.
    pub fn traces(&self) -> BTreeMap<String, Vec<RecordedSpan>> {
        let mut traces: BTreeMap<String, Vec<RecordedSpan>> = BTreeMap::new();
        for span in self.shared.spans().iter() {
            traces
                .entry(span.trace_id.clone())
                .or_default()
                .push(span.clone());
        }
        traces
    }

    /// The recorded spans of trace `trace_id` (hex), in arrival order.
    pub fn trace(&self, trace_id: &str) -> Vec<RecordedSpan> {
        self.shared
            .spans()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// In counting mode, the number of spans received per trace id.
    pub fn span_counts(&self) -> HashMap<Vec<u8>, usize> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the recorded spans and counts (the request counters keep
    /// counting).
    pub fn clear(&self) {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shared.pending().clear();
        self.shared.spans().clear();
    }

    /// Waits until `pred` holds for the recorded spans and returns them.
    /// Panics after `timeout`, listing the spans seen so far.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[RecordedSpan]) -> bool,
    ) -> Vec<RecordedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before looking, so an export recorded in between
            // still wakes it (`notify_waiters` reaches unpolled futures).
            let recorded = self.shared.recorded.notified();
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                let spans = self.spans();
                if pred(&spans) {
                    return spans;
                }
                let seen: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}/{}", s.service, s.name))
                    .collect();
                panic!(
                    "OTLP receiver: condition not met after {timeout:?}; \
                     {} export request(s), {} span(s) seen (service/name): [{}]",
                    self.export_requests(),
                    seen.len(),
                    seen.join(", ")
                );
            }
        }
    }

    /// Stops the server gracefully and waits (up to 5 s, then aborts it).
    /// An error if the server task panicked or the server failed.
    pub async fn shutdown(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                Ok(Ok(served)) => served?,
                Ok(Err(e)) => {
                    return Err(FixtureError::output(
                        "the OTLP receiver's server task",
                        format!("it did not finish: {e}"),
                    ));
                }
                Err(_) => task.abort(),
            }
        }
        Ok(())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
