//! The sink's span store: spans kept per trace, with their resource and
//! scope, up to a bound on the number of spans. When an export takes the
//! store past its bound, the oldest traces (by when their first span
//! arrived) are evicted whole until it is within the bound again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::otlp::service_name;

/// A 16-byte trace id.
pub type TraceId = [u8; 16];

/// What a search asks for, as Jaeger's `TraceQueryParams` does. A trace
/// matches if one of its spans satisfies every condition at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceQuery {
    /// The span's resource has this `service.name` (any service if `None`).
    pub service: Option<String>,
    /// The span has this name (any name if `None`).
    pub operation: Option<String>,
    /// The span starts at or after this time (Unix nanoseconds).
    pub start_min: i128,
    /// The span starts at or before this time (Unix nanoseconds).
    pub start_max: i128,
    /// The span lasts at least this long (nanoseconds), if set.
    pub duration_min: Option<i128>,
    /// The span lasts at most this long (nanoseconds), if set.
    pub duration_max: Option<i128>,
    /// At most this many traces, the most recent first.
    pub search_depth: usize,
}

impl TraceQuery {
    fn matches(&self, service: &str, span: &Span) -> bool {
        let start = i128::from(span.start_time_unix_nano);
        let duration = i128::from(span.end_time_unix_nano) - start;
        self.service.as_deref().is_none_or(|s| s == service)
            && self.operation.as_deref().is_none_or(|o| o == span.name)
            && (self.start_min..=self.start_max).contains(&start)
            && self.duration_min.is_none_or(|d| duration >= d)
            && self.duration_max.is_none_or(|d| duration <= d)
    }
}

/// The spans of one trace, grouped as they arrived (one `ResourceSpans`
/// per resource per export).
#[derive(Debug, Default)]
struct StoredTrace {
    resource_spans: Vec<ResourceSpans>,
    spans: usize,
}

impl StoredTrace {
    /// Every span with its resource's service name.
    fn spans(&self) -> impl Iterator<Item = (&str, &Span)> {
        self.resource_spans.iter().flat_map(|rs| {
            let service = service_name(rs.resource.as_ref());
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(move |span| (service, span))
        })
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inserted {
    /// Spans stored.
    pub accepted: usize,
    /// Spans dropped because their trace id is not 16 bytes or is all
    /// zeros.
    pub rejected: usize,
    /// Whole traces evicted to stay within the bound.
    pub evicted_traces: usize,
}

/// Spans per trace, at most `max_spans` of them.
#[derive(Debug)]
pub struct SpanStore {
    max_spans: usize,
    traces: HashMap<TraceId, StoredTrace>,
    /// Trace ids by the arrival of their first span, oldest first.
    order: VecDeque<TraceId>,
    spans: usize,
    /// Stored spans per service name (a name leaves with its last span).
    services: BTreeMap<String, usize>,
}

impl SpanStore {
    /// An empty store that keeps at most `max_spans` spans.
    pub fn new(max_spans: usize) -> Self {
        Self {
            max_spans,
            traces: HashMap::new(),
            order: VecDeque::new(),
            spans: 0,
            services: BTreeMap::new(),
        }
    }

    /// Stores the spans of an export request, split by trace, then evicts
    /// the oldest traces while the store holds more than its bound.
    pub fn insert(&mut self, request: ExportTraceServiceRequest) -> Inserted {
        let mut inserted = Inserted::default();
        for rs in request.resource_spans {
            let service = service_name(rs.resource.as_ref()).to_owned();
            let per_trace = split_by_trace(rs.scope_spans, &mut inserted.rejected);
            for (id, scope_spans) in per_trace {
                let count: usize = scope_spans.iter().map(|ss| ss.spans.len()).sum();
                let trace = self.traces.entry(id).or_insert_with(|| {
                    self.order.push_back(id);
                    StoredTrace::default()
                });
                trace.resource_spans.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans,
                    schema_url: rs.schema_url.clone(),
                });
                trace.spans += count;
                self.spans += count;
                *self.services.entry(service.clone()).or_default() += count;
                inserted.accepted += count;
            }
        }
        while self.spans > self.max_spans {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.evict(&oldest);
            inserted.evicted_traces += 1;
        }
        inserted
    }

    fn evict(&mut self, id: &TraceId) {
        let Some(trace) = self.traces.remove(id) else {
            return;
        };
        self.spans -= trace.spans;
        for (service, _) in trace.spans() {
            if let Some(n) = self.services.get_mut(service) {
                *n -= 1;
                if *n == 0 {
                    self.services.remove(service);
                }
            }
        }
    }

    /// The service names of the stored spans, sorted (as Jaeger, a
    /// resource without a `service.name` adds no name).
    pub fn services(&self) -> Vec<String> {
        self.services
            .keys()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }

    /// Every stored span of trace `id`, or `None` if no span of it is
    /// stored.
    pub fn trace(&self, id: &TraceId) -> Option<Vec<ResourceSpans>> {
        self.traces.get(id).map(|t| t.resource_spans.clone())
    }

    /// Every stored span of each trace `query` matches, the most recent
    /// traces first, at most `query.search_depth` traces.
    pub fn find(&self, query: &TraceQuery) -> Vec<ResourceSpans> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.traces.get(id))
            .filter(|t| {
                t.spans()
                    .any(|(service, span)| query.matches(service, span))
            })
            .take(query.search_depth)
            .flat_map(|t| t.resource_spans.iter().cloned())
            .collect()
    }

    /// How many spans are stored.
    pub fn span_count(&self) -> usize {
        self.spans
    }

    /// How many traces are stored.
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }
}

/// `bytes` as a trace id, unless it is not 16 bytes or is all zeros (both
/// invalid in OTLP).
fn valid_trace_id(bytes: &[u8]) -> Option<TraceId> {
    let id = TraceId::try_from(bytes).ok()?;
    (id != [0; 16]).then_some(id)
}

/// `scope_spans` split by trace id, each trace's spans under their own
/// scopes, in order. Spans with an invalid trace id are counted in
/// `rejected` and dropped.
fn split_by_trace(
    scope_spans: Vec<ScopeSpans>,
    rejected: &mut usize,
) -> Vec<(TraceId, Vec<ScopeSpans>)> {
    // Per trace: (index of the source scope, that scope's spans of the trace).
    let mut per_trace: Vec<(TraceId, Vec<(usize, ScopeSpans)>)> = Vec::new();
    for (index, ss) in scope_spans.into_iter().enumerate() {
        for span in ss.spans {
            let Some(id) = valid_trace_id(&span.trace_id) else {
                *rejected += 1;
                continue;
            };
            let at = match per_trace.iter().position(|(t, _)| *t == id) {
                Some(at) => at,
                None => {
                    per_trace.push((id, Vec::new()));
                    per_trace.len() - 1
                }
            };
            let scopes = &mut per_trace[at].1;
            match scopes.last_mut() {
                Some((i, scope)) if *i == index => scope.spans.push(span),
                _ => scopes.push((
                    index,
                    ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: vec![span],
                        schema_url: ss.schema_url.clone(),
                    },
                )),
            }
        }
    }
    per_trace
        .into_iter()
        .map(|(id, scopes)| (id, scopes.into_iter().map(|(_, s)| s).collect()))
        .collect()
}

/// The store, even if a panicking thread poisoned its lock (every
/// operation leaves it consistent before it can panic).
pub(crate) fn lock(store: &Mutex<SpanStore>) -> MutexGuard<'_, SpanStore> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}
