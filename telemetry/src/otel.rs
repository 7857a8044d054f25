//! Conversion between the strict W3C types and OpenTelemetry's span context.
//!
//! Carriers produce [`TraceContext`]s; spans are parented on an
//! [`opentelemetry::Context`]. [`context_from`] bridges the two, and
//! [`from_span_context`] goes back the other way to inject the current span.

use std::str::FromStr;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState as OtelTraceState,
};

use crate::w3c::{Extracted, TraceContext, TraceParent, TraceState};

/// The remote span context for `cx` (`is_remote` set).
///
/// The tracestate is converted through the SDK's parser; if that rejects it,
/// it is dropped and the span context carries none.
pub fn to_span_context(cx: &TraceContext) -> SpanContext {
    let state = cx
        .state()
        .and_then(|s| OtelTraceState::from_str(&s.to_string()).ok())
        .unwrap_or(OtelTraceState::NONE);
    SpanContext::new(
        TraceId::from_bytes(cx.parent.trace_id),
        SpanId::from_bytes(cx.parent.parent_id),
        TraceFlags::new(cx.parent.flags),
        true,
        state,
    )
}

/// The trace context to propagate for `sc`, with `sc`'s span as the parent;
/// `None` if `sc` is invalid (a zero trace or span id).
///
/// The tracestate is re-validated by the strict parser; if it fails, it is
/// dropped.
pub fn from_span_context(sc: &SpanContext) -> Option<TraceContext> {
    let parent = traceparent_of(sc)?;
    let state = TraceState::parse(&sc.trace_state().header())
        .ok()
        .filter(|s| !s.is_empty());
    Some(TraceContext { parent, state })
}

/// The traceparent naming `sc` as the parent (no tracestate: cheaper than
/// [`from_span_context`] where only the traceparent travels); `None` if
/// `sc` is invalid.
pub fn traceparent_of(sc: &SpanContext) -> Option<TraceParent> {
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        parent_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// The parent context for the next span: the remote span context when
/// `extracted` is [`Extracted::Valid`], otherwise an empty
/// [`opentelemetry::Context`], so the next span starts a new trace.
pub fn context_from(extracted: &Extracted) -> opentelemetry::Context {
    match extracted {
        Extracted::Valid(cx) => {
            opentelemetry::Context::new().with_remote_span_context(to_span_context(cx))
        }
        Extracted::Absent | Extracted::Invalid(_) => opentelemetry::Context::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::w3c::{TraceParentError, extract};

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn cx(state: &[&str]) -> TraceContext {
        extract(&[VALID], state).into_context().unwrap()
    }

    #[test]
    fn to_span_context_is_remote_and_matches() {
        let sc = to_span_context(&cx(&["rojo=1,congo=2"]));
        assert!(sc.is_valid());
        assert!(sc.is_remote());
        assert!(sc.is_sampled());
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert_eq!(sc.trace_state().header(), "rojo=1,congo=2");
    }

    #[test]
    fn round_trip_through_span_context() {
        for state in [&["rojo=1,t@s=2"][..], &[]] {
            let original = cx(state);
            let back = from_span_context(&to_span_context(&original)).unwrap();
            assert_eq!(back, original);
        }
    }

    #[test]
    fn unsampled_flags_survive() {
        let original = extract(
            &["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"],
            &[],
        )
        .into_context()
        .unwrap();
        let sc = to_span_context(&original);
        assert!(!sc.is_sampled());
        assert_eq!(from_span_context(&sc).unwrap(), original);
    }

    #[test]
    fn invalid_span_context_is_none() {
        assert_eq!(from_span_context(&SpanContext::empty_context()), None);
        assert_eq!(from_span_context(&SpanContext::NONE), None);
    }

    #[test]
    fn otel_tracestate_rejected_by_strict_parser_is_dropped() {
        // The SDK accepts a tab inside a value; the spec does not.
        let state = OtelTraceState::from_key_value([("a", "x\ty")]).unwrap();
        let sc = SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([2; 8]),
            TraceFlags::SAMPLED,
            false,
            state,
        );
        let back = from_span_context(&sc).unwrap();
        assert_eq!(back.parent.trace_id, [1; 16]);
        assert_eq!(back.state, None);
    }

    #[test]
    fn context_from_valid_has_remote_parent() {
        let e = extract(&[VALID], &[]);
        let parent = context_from(&e);
        assert!(parent.has_active_span());
        let sc = parent.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(from_span_context(&sc).unwrap(), e.into_context().unwrap());
    }

    #[test]
    fn context_from_absent_or_invalid_is_root() {
        for e in [
            Extracted::Absent,
            Extracted::Invalid(TraceParentError::Repeated),
        ] {
            let parent = context_from(&e);
            assert!(!parent.has_active_span());
            assert!(!parent.span().span_context().is_valid());
        }
    }
}
