//! Conversion between the strict W3C types and OpenTelemetry's span context.
//!
//! Carriers produce [`TraceContext`]s; spans are parented on an
//! [`opentelemetry::Context`]. [`context_from`] bridges the two, and the
//! outgoing conversions go back the other way to inject a span.
//!
//! Two things a received context holds do not survive OpenTelemetry's span
//! context, so [`context_from`] keeps them beside the remote parent, in the
//! [`opentelemetry::Context`] itself, for [`trace_context_of`] and
//! [`trace_context_for`] to use:
//!
//! - the tracestate: the SDK's `TraceState` rejects keys the spec allows
//!   (`foo@@bar`, `tenant@` followed by more than 14 characters), so the
//!   strict list received is what is propagated, member for member;
//! - the random trace-id flag (Trace Context Level 2): the SDK gives a span
//!   it does not sample no flags at all, and a root span no random flag. An
//!   inherited trace id is sent on with the random flag it came with; a trace
//!   id this process drew (its providers draw random ids) is sent with the
//!   flag set.
//!
//! Only the known flags (sampled, random) are ever sent; the reserved ones
//! are zero.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState as OtelTraceState,
};

use crate::w3c::{Extracted, FLAG_RANDOM, KNOWN_FLAGS, TraceContext, TraceParent, TraceState};

/// What [`context_from`] leaves in a context beside its parent span.
#[derive(Debug, Clone)]
enum Received {
    /// A trace continued from a carrier.
    Continued {
        /// The received trace id.
        trace_id: [u8; 16],
        /// Whether the received traceparent had the random flag.
        random: bool,
        /// The received tracestate, exactly as parsed.
        state: Option<TraceState>,
    },
    /// No usable context was received: a span started under this context
    /// begins a trace whose id this process draws at random.
    Started,
}

/// The remote span context for `cx` (`is_remote` set).
///
/// The tracestate is converted member by member; members the SDK's
/// `TraceState` rejects are left out of it (spans parented through
/// [`context_from`] still propagate them).
pub fn to_span_context(cx: &TraceContext) -> SpanContext {
    let state = cx.state().map_or(OtelTraceState::NONE, otel_state);
    SpanContext::new(
        TraceId::from_bytes(cx.parent.trace_id),
        SpanId::from_bytes(cx.parent.parent_id),
        TraceFlags::new(cx.parent.flags),
        true,
        state,
    )
}

/// The members of `state` the SDK's `TraceState` accepts, in order.
fn otel_state(state: &TraceState) -> OtelTraceState {
    let accepted = state
        .iter()
        .filter(|&member| OtelTraceState::from_key_value([member]).is_ok());
    OtelTraceState::from_key_value(accepted).unwrap_or(OtelTraceState::NONE)
}

/// The trace context to propagate for `sc`, with `sc`'s span as the parent,
/// when no [`opentelemetry::Context`] from [`context_from`] is at hand;
/// `None` if `sc` is invalid (a zero trace or span id).
///
/// The flags are `sc`'s known flags; the tracestate is `sc`'s, re-validated
/// by the strict parser (dropped if it fails). Prefer [`trace_context_of`]
/// or [`trace_context_for`], which also carry what the SDK cannot.
#[cfg(test)]
fn from_span_context(sc: &SpanContext) -> Option<TraceContext> {
    let parent = traceparent_of(sc)?;
    Some(TraceContext {
        parent,
        state: strict_state(sc),
    })
}

/// `sc`'s tracestate through the strict parser; `None` if invalid or empty.
fn strict_state(sc: &SpanContext) -> Option<TraceState> {
    TraceState::parse(&sc.trace_state().header())
        .ok()
        .filter(|s| !s.is_empty())
}

/// The traceparent naming `sc` as the parent, with `sc`'s known flags (no
/// tracestate: cheaper than `from_span_context` where only the
/// traceparent travels); `None` if `sc` is invalid.
pub(crate) fn traceparent_of(sc: &SpanContext) -> Option<TraceParent> {
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        parent_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8() & KNOWN_FLAGS,
    })
}

/// What `cx` received, if it applies to `sc`: a continued trace only for
/// its own trace id, a started one only for a span of this process under
/// no remote parent.
fn received_for<'a>(sc: &SpanContext, cx: &'a opentelemetry::Context) -> Option<&'a Received> {
    cx.get::<Received>().filter(|r| match r {
        Received::Continued { trace_id, .. } => *trace_id == sc.trace_id().to_bytes(),
        Received::Started => {
            let span = cx.span();
            let own = span.span_context();
            !sc.is_remote()
                && !own.is_remote()
                && (!own.is_valid() || own.trace_id() == sc.trace_id())
        }
    })
}

/// The traceparent naming `sc` (a span started under `cx`, or `cx`'s own
/// span) as the parent, with the random flag as `cx` received it (or set, for
/// a trace this process started); `None` if `sc` is invalid.
pub(crate) fn traceparent_for(
    sc: &SpanContext,
    cx: &opentelemetry::Context,
) -> Option<TraceParent> {
    let mut parent = traceparent_of(sc)?;
    let random = match received_for(sc, cx) {
        Some(Received::Continued { random, .. }) => *random,
        Some(Received::Started) => true,
        None => return Some(parent),
    };
    parent.flags = if random {
        parent.flags | FLAG_RANDOM
    } else {
        parent.flags & !FLAG_RANDOM
    };
    Some(parent)
}

/// The trace context to propagate for `sc`, a span started under `cx` (or
/// one about to be, with its id drawn in advance): `traceparent_for`, and
/// the tracestate `cx` received for that trace (else `sc`'s, through the
/// strict parser). `None` if `sc` is invalid.
pub fn trace_context_for(sc: &SpanContext, cx: &opentelemetry::Context) -> Option<TraceContext> {
    let parent = traceparent_for(sc, cx)?;
    let state = match received_for(sc, cx) {
        Some(Received::Continued { state, .. }) => state.clone(),
        Some(Received::Started) | None => strict_state(sc),
    };
    Some(TraceContext { parent, state })
}

/// The trace context to propagate for `cx`'s span ([`trace_context_for`]
/// with `cx`'s own span context); `None` if it has no valid span.
pub fn trace_context_of(cx: &opentelemetry::Context) -> Option<TraceContext> {
    let span = cx.span();
    trace_context_for(span.span_context(), cx)
}

/// The parent context for the next span: the remote span context when
/// `extracted` is [`Extracted::Valid`], otherwise a context with no span, so
/// the next span starts a new trace. Either way it records what was received
/// for the outgoing conversions ([`trace_context_for`]).
pub fn context_from(extracted: &Extracted) -> opentelemetry::Context {
    match extracted {
        Extracted::Valid(cx) => opentelemetry::Context::new()
            .with_remote_span_context(to_span_context(cx))
            .with_value(Received::Continued {
                trace_id: cx.parent.trace_id,
                random: cx.parent.random(),
                state: cx.state().cloned(),
            }),
        Extracted::Absent | Extracted::Invalid(_) => {
            opentelemetry::Context::new().with_value(Received::Started)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::w3c::{FLAG_SAMPLED, TraceParentError, extract};
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn cx(state: &[&str]) -> TraceContext {
        extract(&[VALID], state).into_context().unwrap()
    }

    fn with_flags(flags: &str) -> String {
        format!("00-{TRACE_ID}-00f067aa0ba902b7-{flags}")
    }

    /// A tracer with the SDK's default sampler (parent-based, always on),
    /// or `sampler`.
    fn tracer(sampler: Option<Sampler>) -> (SdkTracerProvider, SdkTracer) {
        let mut builder = SdkTracerProvider::builder();
        if let Some(sampler) = sampler {
            builder = builder.with_sampler(sampler);
        }
        let provider = builder.build();
        let tracer = provider.tracer("t");
        (provider, tracer)
    }

    /// The context of a span started under `parent`, and what it propagates.
    fn child_of(
        tracer: &SdkTracer,
        parent: &opentelemetry::Context,
    ) -> (opentelemetry::Context, TraceContext) {
        let span = tracer.start_with_context("child", parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        let out = trace_context_of(&cx).unwrap();
        (cx, out)
    }

    #[test]
    fn to_span_context_is_remote_and_matches() {
        let sc = to_span_context(&cx(&["rojo=1,congo=2"]));
        assert!(sc.is_valid());
        assert!(sc.is_remote());
        assert!(sc.is_sampled());
        assert_eq!(sc.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
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
        let original = extract(&[&with_flags("00")], &[]).into_context().unwrap();
        let sc = to_span_context(&original);
        assert!(!sc.is_sampled());
        assert_eq!(from_span_context(&sc).unwrap(), original);
    }

    #[test]
    fn invalid_span_context_is_none() {
        assert_eq!(from_span_context(&SpanContext::empty_context()), None);
        assert_eq!(from_span_context(&SpanContext::NONE), None);
        let cx = context_from(&Extracted::Absent);
        assert_eq!(trace_context_of(&cx), None);
        assert_eq!(traceparent_for(&SpanContext::NONE, &cx), None);
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
        assert_eq!(trace_context_of(&parent), from_span_context(&sc));
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

    // ---- tracestate the SDK cannot hold ----

    #[test]
    fn tracestate_the_sdk_rejects_is_propagated_whole() {
        let keys = [
            "z".repeat(256),
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
            "foo@@bar".to_owned(),
            "foo@bar@baz".to_owned(),
            "foo@".to_owned(),
            "tenant@system".to_owned(),
        ];
        let (_provider, tracer) = tracer(None);
        for key in keys {
            let header = format!("foo=1,{key}=2,bar=3");
            let received = extract(&[VALID], &[&header]).into_context().unwrap();
            assert_eq!(received.state().unwrap().to_string(), header);
            // The SDK's copy keeps what it can, member by member.
            let sc = to_span_context(&received);
            assert!(
                sc.trace_state().get("foo") == Some("1")
                    && sc.trace_state().get("bar") == Some("3")
            );
            // What is propagated is what was received.
            let parent = context_from(&Extracted::Valid(received.clone()));
            assert_eq!(trace_context_of(&parent).unwrap().state, received.state);
            let (child, out) = child_of(&tracer, &parent);
            assert_eq!(out.state, received.state, "{key}");
            // And one level further down, through a local parent.
            let (_, grandchild) = child_of(&tracer, &child);
            assert_eq!(grandchild.state, received.state, "{key}");
        }
    }

    #[test]
    fn otel_state_keeps_the_members_it_can() {
        let received = cx(&["a=1,foo@@bar=2,b=3"]);
        let sc = to_span_context(&received);
        assert_eq!(sc.trace_state().header(), "a=1,b=3");
        let only_rejected = cx(&["foo@@bar=2"]);
        assert_eq!(to_span_context(&only_rejected).trace_state().header(), "");
    }

    // ---- the random flag (Level 2) ----

    /// The flags a child span started under a context received with
    /// `incoming` propagates, with `sampler`.
    fn propagated_flags(incoming: &str, sampler: Option<Sampler>) -> u8 {
        let (_provider, tracer) = tracer(sampler);
        let parent = context_from(&extract(&[incoming], &[]));
        let (child, out) = child_of(&tracer, &parent);
        assert_eq!(
            out.parent.trace_id,
            TraceParent::parse(incoming).unwrap().trace_id
        );
        // The same through a hand-built context for a span not yet started.
        let span = child.span();
        let early = SpanContext::new(
            span.span_context().trace_id(),
            SpanId::from_bytes([7; 8]),
            span.span_context().trace_flags(),
            false,
            OtelTraceState::NONE,
        );
        assert_eq!(
            traceparent_for(&early, &parent).unwrap().flags,
            out.parent.flags
        );
        out.parent.flags
    }

    #[test]
    fn inherited_random_flag_is_propagated() {
        // Unsampled: the SDK drops the span and gives it no flags at all.
        assert_eq!(propagated_flags(&with_flags("02"), None), FLAG_RANDOM);
        assert_eq!(
            propagated_flags(&with_flags("03"), None),
            FLAG_SAMPLED | FLAG_RANDOM
        );
        // Sampled upstream but not here.
        assert_eq!(
            propagated_flags(&with_flags("03"), Some(Sampler::AlwaysOff)),
            FLAG_RANDOM
        );
        // A future version's random flag too.
        let future = format!("cc-{TRACE_ID}-00f067aa0ba902b7-02-more");
        assert_eq!(propagated_flags(&future, None), FLAG_RANDOM);
    }

    #[test]
    fn inherited_unset_random_flag_stays_unset() {
        assert_eq!(propagated_flags(&with_flags("00"), None), 0);
        assert_eq!(propagated_flags(&with_flags("01"), None), FLAG_SAMPLED);
        assert_eq!(
            propagated_flags(&with_flags("00"), Some(Sampler::AlwaysOn)),
            FLAG_SAMPLED
        );
    }

    #[test]
    fn reserved_flags_are_sent_as_zero() {
        // The SDK keeps a sampled parent's whole flags byte.
        assert_eq!(
            propagated_flags(&with_flags("ff"), None),
            FLAG_SAMPLED | FLAG_RANDOM
        );
        assert_eq!(propagated_flags(&with_flags("fd"), None), FLAG_SAMPLED);
        let sc = to_span_context(&extract(&[&with_flags("fe")], &[]).into_context().unwrap());
        assert_eq!(traceparent_of(&sc).unwrap().flags, FLAG_RANDOM);
    }

    #[test]
    fn traces_started_here_are_random() {
        for (sampler, flags) in [
            (None, FLAG_SAMPLED | FLAG_RANDOM),
            (Some(Sampler::AlwaysOff), FLAG_RANDOM),
        ] {
            let (_provider, tracer) = tracer(sampler);
            for e in [
                Extracted::Absent,
                Extracted::Invalid(TraceParentError::ZeroTraceId),
            ] {
                let root = context_from(&e);
                let (child, out) = child_of(&tracer, &root);
                assert_eq!(out.parent.flags, flags);
                assert_eq!(out.state, None);
                let (_, grandchild) = child_of(&tracer, &child);
                assert_eq!(grandchild.parent.flags, flags);
                assert_eq!(grandchild.parent.trace_id, out.parent.trace_id);
            }
        }
    }

    #[test]
    fn contexts_not_from_context_from_keep_the_sdk_flags() {
        let (_provider, tracer) = tracer(None);
        let root = tracer.start("root");
        let cx = opentelemetry::Context::new().with_span(root);
        let out = trace_context_of(&cx).unwrap();
        assert_eq!(out.parent.flags, FLAG_SAMPLED);
        // A remote parent put in by hand: its flags as they are.
        let remote = opentelemetry::Context::new().with_remote_span_context(to_span_context(
            &extract(&[&with_flags("02")], &[]).into_context().unwrap(),
        ));
        assert_eq!(trace_context_of(&remote).unwrap().parent.flags, FLAG_RANDOM);
    }

    #[test]
    fn received_context_applies_to_its_own_trace_only() {
        let (_provider, tracer) = tracer(None);
        let parent = context_from(&extract(&[&with_flags("00")], &["a=1"]));
        // A span of another trace under that context: its own flags and state.
        let other = tracer.start("other");
        let other_sc = other.span_context().clone();
        let out = trace_context_for(&other_sc, &parent).unwrap();
        assert_eq!(out.parent.flags, FLAG_SAMPLED);
        assert_eq!(out.state, None);
        // A started context whose span is a remote parent of another trace.
        let started =
            context_from(&Extracted::Absent).with_remote_span_context(to_span_context(&cx(&[])));
        assert_eq!(
            trace_context_of(&started).unwrap().parent.flags,
            FLAG_SAMPLED,
            "not a trace this process started"
        );
        let mut other = other;
        other.end();
    }
}
