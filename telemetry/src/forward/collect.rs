//! The client's side: finished spans kept per trace until a call takes
//! them for forwarding.
//!
//! When full, the oldest trace goes first, but a trace a call has already
//! taken from goes only once no other is left: its spans since are ones
//! that ended after the call's (the caller's own span around it) and will
//! be taken again, whereas a process's other traces (spans of code that
//! makes no call, an HTTP/2 library's own under a `tracing` layer that
//! records everything) may never be; without this, enough of those would
//! push a caller's span out before its call looked again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::source::{Batch, SpanSource, Taken};
use crate::otlp_wire::{self, EncodedResource};

/// Spans kept in all, by default, until their calls take them.
const DEFAULT_HELD: usize = 1024;

/// Traces remembered as taken from, at most (the latest).
const CLAIMED: usize = 256;

#[derive(Debug)]
struct Held {
    traces: HashMap<TraceId, Vec<SpanData>>,
    /// Held traces no call has taken from, oldest first (the first to go
    /// when full).
    order: VecDeque<TraceId>,
    /// Held traces a call has taken from, oldest first (to go only once
    /// `order` is empty).
    claimed_order: VecDeque<TraceId>,
    /// The traces calls have taken from, the latest [`CLAIMED`].
    claimed: HashSet<TraceId>,
    /// The same, oldest first, to forget the oldest.
    claimed_fifo: VecDeque<TraceId>,
    spans: usize,
    /// Spans let go unforwarded (evicted when full), not yet said.
    evicted: u32,
}

impl Held {
    /// Lets the oldest trace go, one no call took from first; false if
    /// none is held.
    fn evict(&mut self) -> bool {
        let Some(oldest) = self
            .order
            .pop_front()
            .or_else(|| self.claimed_order.pop_front())
        else {
            return false;
        };
        let gone = self.traces.remove(&oldest).map_or(0, |s| s.len());
        self.spans -= gone;
        self.evicted = self
            .evicted
            .saturating_add(u32::try_from(gone).unwrap_or(u32::MAX));
        true
    }

    /// Remembers that a call took from `trace_id`.
    fn claim(&mut self, trace_id: TraceId) {
        if !self.claimed.insert(trace_id) {
            return;
        }
        self.claimed_fifo.push_back(trace_id);
        if self.claimed_fifo.len() > CLAIMED
            && let Some(old) = self.claimed_fifo.pop_front()
        {
            self.claimed.remove(&old);
        }
    }
}

#[derive(Debug)]
struct Shared {
    held: Mutex<Held>,
    /// The provider's resource, encoded once.
    resource: Mutex<Arc<EncodedResource>>,
    max: usize,
}

/// The handle a client takes spans through ([`SpanSource`]); its
/// processor ([`SpanCollector::processor`]) goes to the tracer provider.
#[derive(Debug, Clone)]
pub struct SpanCollector {
    shared: Arc<Shared>,
}

/// The span processor that feeds a [`SpanCollector`].
#[derive(Debug)]
pub struct SpanCollectorProcessor {
    shared: Arc<Shared>,
}

impl Default for SpanCollector {
    fn default() -> Self {
        Self::new(DEFAULT_HELD)
    }
}

impl SpanCollector {
    /// A collector keeping at most `max` spans in all; when full, the
    /// oldest trace's spans go first (they stay wherever the provider's
    /// other processors put them).
    fn new(max: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                held: Mutex::new(Held {
                    traces: HashMap::new(),
                    order: VecDeque::new(),
                    claimed_order: VecDeque::new(),
                    claimed: HashSet::new(),
                    claimed_fifo: VecDeque::new(),
                    spans: 0,
                    evicted: 0,
                }),
                resource: Mutex::new(Arc::new(EncodedResource::new(
                    &Resource::builder_empty().build(),
                ))),
                max: max.max(1),
            }),
        }
    }

    /// The processor to add to the tracer provider whose spans are
    /// forwarded.
    pub fn processor(&self) -> SpanCollectorProcessor {
        SpanCollectorProcessor {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Spans held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.shared.lock().spans
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SpanProcessor for SpanCollectorProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let trace_id = span.span_context.trace_id();
        let mut held = self.shared.lock();
        while held.spans >= self.shared.max && held.evict() {}
        let spans = held.traces.entry(trace_id).or_default();
        let new = spans.is_empty();
        spans.push(span);
        held.spans += 1;
        if new {
            if held.claimed.contains(&trace_id) {
                held.claimed_order.push_back(trace_id);
            } else {
                held.order.push_back(trace_id);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self
            .shared
            .resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(EncodedResource::new(resource));
    }
}

impl SpanSource for SpanCollector {
    fn take(&self, trace_id: TraceId, max_bytes: usize) -> Taken {
        let (spans, evicted) = {
            let mut held = self.shared.lock();
            let spans = held.traces.remove(&trace_id).unwrap_or_default();
            held.spans -= spans.len();
            if !spans.is_empty() {
                held.order.retain(|t| *t != trace_id);
                held.claimed_order.retain(|t| *t != trace_id);
            }
            held.claim(trace_id);
            (spans, std::mem::take(&mut held.evicted))
        };
        let resource = Arc::clone(
            &self
                .shared
                .resource
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut taken = Taken {
            batches: Vec::new(),
            dropped: evicted,
        };
        if !spans.is_empty() {
            split(&spans, &resource, max_bytes, &mut taken);
        }
        taken
    }
}

/// `spans` encoded as batches of at most `max` bytes: the whole, else
/// each half in turn; a span alone over `max` is dropped and counted.
fn split(spans: &[SpanData], resource: &EncodedResource, max: usize, taken: &mut Taken) {
    let count = u32::try_from(spans.len()).unwrap_or(u32::MAX);
    let data = otlp_wire::encode(resource, spans);
    if data.len() <= max {
        taken.batches.push(Batch {
            traces: data,
            spans: count,
        });
    } else if spans.len() > 1 {
        let (first, second) = spans.split_at(spans.len() / 2);
        split(first, resource, max, taken);
        split(second, resource, max, taken);
    } else {
        taken.dropped = taken.dropped.saturating_add(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_proto::tonic::trace::v1::TracesData;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use prost::Message as _;

    fn provider(collector: &SpanCollector) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("core-client")
                    .build(),
            )
            .with_span_processor(collector.processor())
            .build()
    }

    fn decode(batch: &Batch) -> TracesData {
        TracesData::decode(batch.traces.as_slice()).unwrap()
    }

    #[test]
    fn a_traces_spans_are_taken_once_with_the_resource() {
        let collector = SpanCollector::default();
        let provider = provider(&collector);
        let tracer = provider.tracer("t");
        let a = tracer.in_span("root-a", |cx| {
            use opentelemetry::trace::TraceContextExt as _;
            tracer.start("child-a");
            tracer.in_span("other", |_| ());
            cx.span().span_context().trace_id()
        });
        let other = {
            let span = tracer.start_with_context("root-b", &Context::new());
            use opentelemetry::trace::Span as _;
            let id = span.span_context().trace_id();
            drop(span);
            id
        };
        let taken = collector.take(a, 64 * 1024);
        assert_eq!(taken.dropped, 0);
        assert_eq!(taken.batches.len(), 1);
        assert_eq!(taken.batches[0].spans, 3);
        let data = decode(&taken.batches[0]);
        let resource = data.resource_spans[0].resource.as_ref().unwrap();
        assert!(resource.attributes.iter().any(
            |kv| kv.key == "service.name" && format!("{:?}", kv.value).contains("core-client")
        ));
        let names: Vec<_> = data.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, vec!["child-a", "other", "root-a"]);
        // Handed out once; the other trace is still there.
        assert_eq!(collector.take(a, 64 * 1024), Taken::default());
        assert_eq!(collector.held(), 1);
        assert_eq!(collector.take(other, 64 * 1024).batches[0].spans, 1);
        assert_eq!(collector.held(), 0);
    }

    #[test]
    fn batches_are_split_to_the_size_and_a_span_too_large_is_counted() {
        use opentelemetry::trace::TraceContextExt as _;
        let collector = SpanCollector::default();
        let provider = provider(&collector);
        let tracer = provider.tracer("t");
        let trace = tracer.in_span("root", |cx| {
            for _ in 0..20 {
                tracer.start("child");
            }
            cx.span().span_context().trace_id()
        });
        let whole = collector.take(trace, usize::MAX);
        let size = whole.batches[0].traces.len();
        // Put them back by making the same again.
        let trace = tracer.in_span("root", |cx| {
            for _ in 0..20 {
                tracer.start("child");
            }
            cx.span().span_context().trace_id()
        });
        let taken = collector.take(trace, size / 3);
        assert!(taken.batches.len() >= 3, "{}", taken.batches.len());
        assert!(taken.batches.iter().all(|b| b.traces.len() <= size / 3));
        assert_eq!(taken.batches.iter().map(|b| b.spans).sum::<u32>(), 21);
        assert_eq!(taken.dropped, 0);
        let trace = tracer.in_span("root", |cx| cx.span().span_context().trace_id());
        let taken = collector.take(trace, 10);
        assert!(taken.batches.is_empty());
        assert_eq!(taken.dropped, 1);
    }

    #[test]
    fn the_oldest_trace_goes_when_full_and_is_counted() {
        use opentelemetry::trace::TraceContextExt as _;
        let collector = SpanCollector::new(4);
        let provider = provider(&collector);
        let tracer = provider.tracer("t");
        let root = |n: usize| {
            tracer.in_span("root", |cx| {
                for _ in 1..n {
                    tracer.start("child");
                }
                cx.span().span_context().trace_id()
            })
        };
        let first = root(3);
        let second = root(3);
        assert!(collector.held() <= 4);
        // The evicted spans are said with the next take, once.
        let taken = collector.take(first, 1 << 20);
        assert!(taken.batches.is_empty());
        assert_eq!(taken.dropped, 3);
        let taken = collector.take(second, 1 << 20);
        assert_eq!(taken.batches[0].spans, 3);
        assert_eq!(taken.dropped, 0);
    }

    #[test]
    fn a_trace_a_call_took_from_outlasts_traces_none_did() {
        use opentelemetry::trace::{Span as _, TraceContextExt as _};
        let collector = SpanCollector::new(4);
        let provider = provider(&collector);
        let tracer = provider.tracer("t");
        // A caller's span around its call, and the call's own span.
        let caller = tracer.start("request");
        let cx = Context::current_with_span(caller);
        let trace = cx.span().span_context().trace_id();
        tracer.start_with_context("call", &cx).end();
        assert_eq!(collector.take(trace, 1 << 20).batches[0].spans, 1);
        // The caller's span ends after the call's were taken; then more
        // than the collector holds of traces no call takes.
        cx.span().end();
        for _ in 0..10 {
            tracer.start_with_context("noise", &Context::new()).end();
        }
        assert_eq!(collector.held(), 4);
        let taken = collector.take(trace, 1 << 20);
        assert_eq!(taken.batches.len(), 1, "the caller's span was let go");
        assert_eq!(taken.batches[0].spans, 1);
        assert_eq!(taken.dropped, 7, "the noise let go is counted");
    }
}
