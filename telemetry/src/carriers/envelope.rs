//! The trace context inside every encrypted session message
//! ([`pb::session::TraceContext`]).

use proto::pb;

use crate::w3c::{self, Extracted, TraceContext};

/// The envelope form of `cx`; `tracestate` is empty when `cx` has none.
pub fn inject(cx: &TraceContext) -> pb::session::TraceContext {
    pb::session::TraceContext {
        traceparent: cx.parent.to_string(),
        tracestate: cx.state().map(ToString::to_string).unwrap_or_default(),
    }
}

/// Reads the trace context from an envelope (see [`w3c::extract`]). An empty
/// `traceparent` (the protobuf default) is [`Extracted::Absent`]; an empty
/// `tracestate` is no tracestate.
pub fn extract(msg: &pb::session::TraceContext) -> Extracted {
    if msg.traceparent.is_empty() {
        return Extracted::Absent;
    }
    let states: &[&str] = if msg.tracestate.is_empty() {
        &[]
    } else {
        &[msg.tracestate.as_str()]
    };
    w3c::extract(&[msg.traceparent.as_str()], states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::w3c::TraceParentError;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn msg(traceparent: &str, tracestate: &str) -> pb::session::TraceContext {
        pb::session::TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.to_owned(),
        }
    }

    #[test]
    fn round_trip() {
        for state in ["", "rojo=1,t@s=2"] {
            let e = extract(&msg(VALID, state));
            let cx = e.context().unwrap();
            let out = inject(cx);
            assert_eq!(out, msg(VALID, state));
            assert_eq!(extract(&out), e);
        }
    }

    #[test]
    fn default_is_absent() {
        assert_eq!(
            extract(&pb::session::TraceContext::default()),
            Extracted::Absent
        );
        assert_eq!(extract(&msg("", "a=1")), Extracted::Absent);
    }

    #[test]
    fn invalid_traceparent() {
        assert_eq!(
            extract(&msg(&format!("{VALID}-x"), "a=1")),
            Extracted::Invalid(TraceParentError::TrailingData)
        );
        assert_eq!(
            extract(&msg(" ", "")),
            Extracted::Invalid(TraceParentError::Empty)
        );
    }

    #[test]
    fn invalid_tracestate_is_dropped() {
        let cx = extract(&msg(VALID, "a=1,A=2")).into_context().unwrap();
        assert_eq!(cx.state, None);
        assert_eq!(inject(&cx).tracestate, "");
    }

    #[test]
    fn tracestate_rules() {
        for (state, kept) in crate::carriers::tracestate_cases() {
            let cx = extract(&msg(VALID, &state)).into_context().unwrap();
            let out = inject(&cx);
            assert_eq!(out.traceparent, VALID);
            assert_eq!(out.tracestate, kept.unwrap_or_default(), "{state}");
        }
    }
}
