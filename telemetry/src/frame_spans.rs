//! Framing spans (`relay.frame.send`, `relay.frame.recv`) shared by both
//! ends of a session.
//!
//! A traced message is encoded and queued to the Noise transport, whose
//! record layer may coalesce it with others or split it over several
//! records. Its `relay.frame.send` span therefore ends when the transport
//! has sent every byte of it: the sender notes the transport's queued
//! offset after queuing the message ([`SendTracker::track`]) and reports
//! the sent offset after each record ([`SendTracker::transmitted`]). The
//! first finished message that names a hop context gives the record's frame
//! its hop header.

use std::time::SystemTime;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Link, Span, SpanContext, Status, Tracer};
use opentelemetry::{Context, KeyValue};

use crate::remote::{Stage, StageSpan};
use crate::{carriers, otel, spans};

struct Pending {
    mark: u64,
    spans: Vec<BoxedSpan>,
    hop: Option<String>,
}

/// Spans waiting for their message to leave in a record.
#[derive(Default)]
pub struct SendTracker {
    pending: Vec<Pending>,
}

impl std::fmt::Debug for SendTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTracker")
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// What one transmitted record finished.
#[must_use = "end the spans once the frame is handed on"]
pub struct Transmitted {
    /// The hop header for the record's frame, if a finished message has one.
    pub hop: Option<String>,
    spans: Vec<BoxedSpan>,
}

impl Transmitted {
    /// Ends the finished spans (call once the frame has been handed on).
    pub fn end(self) {
        for mut span in self.spans {
            span.end();
        }
    }
}

impl SendTracker {
    /// Ends `spans` once the transport's sent offset reaches `mark` (its
    /// queued offset right after the message was queued). `hop` is the
    /// traceparent the message's frame should carry to the relay.
    pub fn track(&mut self, mark: u64, spans: Vec<BoxedSpan>, hop: Option<String>) {
        self.pending.push(Pending { mark, spans, hop });
    }

    /// The stream offset at which the earliest waiting message ends: the
    /// next record should end there, so each traced message completes in a
    /// record (and frame, with one hop header) of its own.
    pub fn next_boundary(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.mark).min()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes what a record has finished, now that `sent` bytes of the
    /// envelope stream have left.
    pub fn transmitted(&mut self, sent: u64) -> Transmitted {
        let mut done = Transmitted {
            hop: None,
            spans: Vec::new(),
        };
        if self.pending.is_empty() {
            return done;
        }
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].mark <= sent {
                let p = self.pending.swap_remove(i);
                if done.hop.is_none() {
                    done.hop = p.hop;
                }
                done.spans.extend(p.spans);
            } else {
                i += 1;
            }
        }
        done
    }

    /// Ends every waiting span with an error (the session ended first).
    pub fn abandon(&mut self, reason: &str) {
        for p in self.pending.drain(..) {
            for mut span in p.spans {
                span.set_status(Status::error(reason.to_owned()));
                span.end();
            }
        }
    }
}

/// Starts a `relay.frame.send` span for one message (`what`, e.g.
/// `"exec"` or `"stdout.first"`), child of `parent`.
pub fn send_span(tracer: &BoxedTracer, parent: &Context, what: &'static str) -> BoxedSpan {
    tracer
        .span_builder(spans::RELAY_FRAME_SEND)
        .with_attributes(vec![KeyValue::new("rex.message", what)])
        .start_with_context(tracer, parent)
}

/// [`send_span`] started at `at`, with its stage (for the exec-server's
/// summary of a call).
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
pub fn hop_header(sc: &SpanContext) -> Option<String> {
    otel::traceparent_of(sc).map(|tp| carriers::hop::inject(&tp))
}

/// The hop header naming `sc`, a span under `cx`, with the flags
/// [`otel::traceparent_for`] gives it (the random flag as `cx` received it).
pub fn hop_header_for(sc: &SpanContext, cx: &Context) -> Option<String> {
    otel::traceparent_for(sc, cx).map(|tp| carriers::hop::inject(&tp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    fn setup() -> (BoxedTracer, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer("t")));
        (tracer, exporter)
    }

    fn names(e: &InMemorySpanExporter) -> Vec<String> {
        e.get_finished_spans()
            .unwrap()
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }

    #[test]
    fn spans_end_when_their_bytes_have_left() {
        let (tracer, exporter) = setup();
        let root = tracer.start("root");
        let cx = Context::new().with_span(root);
        let mut t = SendTracker::default();
        t.track(10, vec![send_span(&tracer, &cx, "a")], Some("hop-a".into()));
        t.track(20, vec![send_span(&tracer, &cx, "b")], None);
        t.track(25, vec![send_span(&tracer, &cx, "c")], Some("hop-c".into()));
        assert_eq!(t.next_boundary(), Some(10));
        let first = t.transmitted(5);
        assert!(first.hop.is_none());
        first.end();
        assert!(names(&exporter).is_empty());
        let second = t.transmitted(20);
        assert_eq!(second.hop.as_deref(), Some("hop-a"));
        second.end();
        assert_eq!(names(&exporter).len(), 2);
        let third = t.transmitted(30);
        assert_eq!(third.hop.as_deref(), Some("hop-c"));
        third.end();
        assert!(t.is_empty());
        assert_eq!(names(&exporter), vec![spans::RELAY_FRAME_SEND; 3]);
    }

    #[test]
    fn abandoned_spans_end_with_an_error() {
        let (tracer, exporter) = setup();
        let mut t = SendTracker::default();
        t.track(10, vec![send_span(&tracer, &Context::new(), "a")], None);
        t.abandon("session lost");
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        assert!(matches!(spans[0].status, Status::Error { .. }));
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
