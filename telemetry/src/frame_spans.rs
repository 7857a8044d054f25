//! Framing spans (`relay.frame.send`, `relay.frame.recv`) shared by both
//! ends of a session: a message's `relay.frame.send` span with its stage
//! ([`send_stage`]), the `relay.frame.recv` span of a message received
//! ([`record_recv`]), and the hop header a frame carries to the relay
//! ([`hop_header_for`], read back by [`hop_context`]).

use std::time::SystemTime;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, SpanContext, Tracer};
use opentelemetry::{Context, KeyValue};

use crate::remote::{Stage, StageSpan};
use crate::{carriers, otel, spans};

/// Starts a `relay.frame.send` span for one message (`what`, e.g.
/// `"exec"` or `"stdout.first"`) at `at`, child of `parent`, with its stage
/// (for the exec-server's summary of a call).
pub fn send_stage(
    tracer: &BoxedTracer,
    parent: &Context,
    what: &'static str,
    at: SystemTime,
) -> StageSpan {
    let span = tracer
        .span_builder(spans::RELAY_FRAME_SEND)
        .with_start_time(at)
        .with_attributes(vec![KeyValue::new("rex.message", what)])
        .start_with_context(tracer, parent);
    let mut stage = StageSpan::wrap(span, spans::RELAY_FRAME_SEND, parent, at);
    stage.note_text("rex.message", what);
    stage
}

/// Records a finished `relay.frame.recv` span for one message, from the
/// arrival of the frame that completed it until now, child of `parent`,
/// linked to the message's own context and the frame's hop context when
/// they are valid and differ from the parent. Returns its stage (for the
/// exec-server's summary of a call).
pub fn record_recv(
    tracer: &BoxedTracer,
    parent: &Context,
    arrived: SystemTime,
    what: &'static str,
    links: &[Option<SpanContext>],
    attributes: Vec<KeyValue>,
) -> Stage {
    record_recv_until(
        tracer,
        parent,
        (arrived, SystemTime::now()),
        what,
        links,
        attributes,
    )
}

/// [`record_recv`] with an explicit end (for a message whose span is made
/// later, e.g. the last output chunk once it is known to be the last).
pub fn record_recv_until(
    tracer: &BoxedTracer,
    parent: &Context,
    (arrived, decoded): (SystemTime, SystemTime),
    what: &'static str,
    links: &[Option<SpanContext>],
    mut attributes: Vec<KeyValue>,
) -> Stage {
    attributes.push(KeyValue::new("rex.message", what));
    let links: Vec<Link> = links
        .iter()
        .flatten()
        .filter(|sc| sc.is_valid())
        .map(|sc| Link::with_context(sc.clone()))
        .collect();
    let span = tracer
        .span_builder(spans::RELAY_FRAME_RECV)
        .with_start_time(arrived)
        .with_links(links)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    let mut stage = StageSpan::wrap(span, spans::RELAY_FRAME_RECV, parent, arrived);
    stage.note_text("rex.message", what);
    stage.end_at(decoded.max(arrived))
}

/// The span context named by a frame's hop header (best effort).
pub fn hop_context(hop: &str) -> Option<SpanContext> {
    let parent = carriers::hop::extract(hop)?;
    Some(otel::to_span_context(&crate::w3c::TraceContext {
        parent,
        state: None,
    }))
}

/// The hop header naming `sc` (traceparent only).
#[cfg(test)]
fn hop_header(sc: &SpanContext) -> Option<String> {
    otel::traceparent_of(sc).map(|tp| carriers::hop::inject(&tp))
}

/// The hop header naming `sc`, a span under `cx`, with the flags
/// `otel::traceparent_for` gives it (the random flag as `cx` received it).
pub fn hop_header_for(sc: &SpanContext, cx: &Context) -> Option<String> {
    otel::traceparent_for(sc, cx).map(|tp| carriers::hop::inject(&tp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span, TracerProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    fn setup() -> (BoxedTracer, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer("t")));
        (tracer, exporter)
    }

    #[test]
    fn recv_span_links_valid_contexts_only() {
        let (tracer, exporter) = setup();
        let hop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let hop_cx = hop_context(hop);
        assert!(hop_cx.is_some());
        assert!(hop_context("garbage").is_none());
        let arrived = SystemTime::now();
        record_recv(
            &tracer,
            &Context::new(),
            arrived,
            "exec",
            &[hop_cx.clone(), Some(SpanContext::empty_context()), None],
            vec![],
        );
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, spans::RELAY_FRAME_RECV);
        assert_eq!(spans[0].links.len(), 1);
        assert_eq!(spans[0].start_time, arrived);
        assert!(
            spans[0]
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "rex.message" && kv.value.as_str() == "exec")
        );
        assert_eq!(
            hop_header(&hop_cx.unwrap()).as_deref(),
            Some(hop),
            "hop header round trip"
        );
    }

    #[test]
    fn hop_header_for_keeps_the_received_random_flag() {
        let (tracer, _exporter) = setup();
        let hop = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02";
        let parent = otel::context_from(&crate::w3c::Extracted::Valid(
            crate::w3c::TraceContext::new(carriers::hop::extract(hop).unwrap()),
        ));
        // Not sampled: the SDK gives the span no flags.
        let span = tracer.start_with_context("forward", &parent);
        let sc = span.span_context().clone();
        assert_eq!(sc.trace_flags().to_u8(), 0);
        let header = hop_header_for(&sc, &parent).unwrap();
        let rewritten = carriers::hop::extract(&header).unwrap();
        assert_eq!(rewritten.flags, crate::w3c::FLAG_RANDOM);
        assert_eq!(rewritten.parent_id, sc.span_id().to_bytes());
        assert_eq!(hop_header(&sc).as_deref().map(|h| &h[53..]), Some("00"));
    }
}
