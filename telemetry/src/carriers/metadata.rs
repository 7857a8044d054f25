//! gRPC metadata (`traceparent`, `tracestate`) on the relay links.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::w3c::{self, Extracted, TraceContext, TraceParentError};

/// The metadata key of the traceparent.
const TRACEPARENT_KEY: &str = "traceparent";
/// The metadata key of the tracestate.
const TRACESTATE_KEY: &str = "tracestate";

/// Sets `traceparent` (and `tracestate` when `cx` has a non-empty one) in
/// `map`, replacing any values already there; a stale `tracestate` is removed
/// when `cx` has none.
pub fn inject(cx: &TraceContext, map: &mut MetadataMap) {
    map.remove(TRACESTATE_KEY);
    match AsciiMetadataValue::try_from(cx.parent.to_string()) {
        Ok(value) => {
            map.insert(TRACEPARENT_KEY, value);
        }
        // Unreachable: the formatted traceparent is lowercase hex and dashes.
        Err(_) => {
            map.remove(TRACEPARENT_KEY);
            return;
        }
    }
    if let Some(state) = cx.state()
        && let Ok(value) = AsciiMetadataValue::try_from(state.to_string())
    {
        map.insert(TRACESTATE_KEY, value);
    }
}

/// Reads the trace context from `map` (see [`w3c::extract`]).
///
/// Every value of each key is looked at, so a repeated `traceparent` is
/// [`TraceParentError::Repeated`]. A `traceparent` that is not visible ASCII
/// is [`TraceParentError::NotText`]; a `tracestate` value that is not drops
/// the tracestate.
pub fn extract(map: &MetadataMap) -> Extracted {
    let parents: Vec<&AsciiMetadataValue> = map.get_all(TRACEPARENT_KEY).iter().collect();
    let parent = match parents.as_slice() {
        [] => return Extracted::Absent,
        [one] => match one.to_str() {
            Ok(text) => text,
            Err(_) => return Extracted::Invalid(TraceParentError::NotText),
        },
        _ => return Extracted::Invalid(TraceParentError::Repeated),
    };
    let states: Vec<&str> = map
        .get_all(TRACESTATE_KEY)
        .iter()
        .map(|v| v.to_str())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    w3c::extract(&[parent], &states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const OTHER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    fn cx(parent: &str, state: &[&str]) -> TraceContext {
        w3c::extract(&[parent], state).into_context().unwrap()
    }

    #[test]
    fn round_trip() {
        let original = cx(VALID, &["rojo=1,congo=2"]);
        let mut map = MetadataMap::new();
        inject(&original, &mut map);
        assert_eq!(map.get(TRACEPARENT_KEY).unwrap(), VALID);
        assert_eq!(map.get(TRACESTATE_KEY).unwrap(), "rojo=1,congo=2");
        assert_eq!(extract(&map), Extracted::Valid(original));
    }

    #[test]
    fn inject_replaces_and_clears_stale_state() {
        let mut map = MetadataMap::new();
        map.append(TRACEPARENT_KEY, MetadataValue::from_static(OTHER));
        map.append(TRACEPARENT_KEY, MetadataValue::from_static(OTHER));
        map.insert(TRACESTATE_KEY, MetadataValue::from_static("old=1"));
        let fresh = cx(VALID, &[]);
        inject(&fresh, &mut map);
        assert_eq!(map.get_all(TRACEPARENT_KEY).iter().count(), 1);
        assert!(map.get(TRACESTATE_KEY).is_none());
        assert_eq!(extract(&map), Extracted::Valid(fresh));
    }

    #[test]
    fn absent() {
        assert_eq!(extract(&MetadataMap::new()), Extracted::Absent);
        let mut map = MetadataMap::new();
        map.insert(TRACESTATE_KEY, MetadataValue::from_static("a=1"));
        assert_eq!(extract(&map), Extracted::Absent);
    }

    #[test]
    fn repeated_traceparent_is_invalid() {
        let mut map = MetadataMap::new();
        map.append(TRACEPARENT_KEY, MetadataValue::from_static(VALID));
        map.append(TRACEPARENT_KEY, MetadataValue::from_static(VALID));
        assert_eq!(
            extract(&map),
            Extracted::Invalid(TraceParentError::Repeated)
        );
    }

    #[test]
    fn repeated_tracestate_is_combined() {
        let mut map = MetadataMap::new();
        map.insert(TRACEPARENT_KEY, MetadataValue::from_static(VALID));
        map.append(TRACESTATE_KEY, MetadataValue::from_static("a=1"));
        map.append(TRACESTATE_KEY, MetadataValue::from_static("b=2"));
        let got = extract(&map).into_context().unwrap();
        assert_eq!(got.state.unwrap().to_string(), "a=1,b=2");
    }

    #[test]
    fn tracestate_rules() {
        for (state, kept) in crate::carriers::tracestate_cases() {
            let mut map = MetadataMap::new();
            map.insert(TRACEPARENT_KEY, MetadataValue::from_static(VALID));
            map.insert(
                TRACESTATE_KEY,
                AsciiMetadataValue::try_from(state.as_str()).unwrap(),
            );
            let cx = extract(&map).into_context().unwrap();
            let mut out = MetadataMap::new();
            inject(&cx, &mut out);
            let got = out
                .get(TRACESTATE_KEY)
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(got, kept, "{state}");
        }
    }

    #[test]
    fn repeated_tracestate_keeps_the_first_of_a_key() {
        let mut map = MetadataMap::new();
        map.insert(TRACEPARENT_KEY, MetadataValue::from_static(VALID));
        map.append(TRACESTATE_KEY, MetadataValue::from_static("foo=1"));
        map.append(TRACESTATE_KEY, MetadataValue::from_static("foo=2,bar=3"));
        let got = extract(&map).into_context().unwrap();
        assert_eq!(got.state.unwrap().to_string(), "foo=1,bar=3");
        // An invalid member in any value drops them all.
        map.append(TRACESTATE_KEY, MetadataValue::from_static("@baz=4"));
        assert_eq!(extract(&map), Extracted::Valid(cx(VALID, &[])));
    }

    #[test]
    fn invalid_values() {
        let mut map = MetadataMap::new();
        map.insert(
            TRACEPARENT_KEY,
            MetadataValue::from_static("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            extract(&map),
            Extracted::Invalid(TraceParentError::UppercaseHex)
        );

        let mut bytes = VALID.as_bytes().to_vec();
        bytes[10] = 0xff;
        map.insert(
            TRACEPARENT_KEY,
            AsciiMetadataValue::try_from(bytes.as_slice()).unwrap(),
        );
        assert_eq!(extract(&map), Extracted::Invalid(TraceParentError::NotText));
    }

    #[test]
    fn non_text_or_invalid_tracestate_is_dropped() {
        let mut map = MetadataMap::new();
        map.insert(TRACEPARENT_KEY, MetadataValue::from_static(VALID));
        map.append(TRACESTATE_KEY, MetadataValue::from_static("a=1"));
        map.append(
            TRACESTATE_KEY,
            AsciiMetadataValue::try_from(&b"b=\xff"[..]).unwrap(),
        );
        assert_eq!(extract(&map), Extracted::Valid(cx(VALID, &[])));

        map.insert(TRACESTATE_KEY, MetadataValue::from_static("B=1"));
        assert_eq!(extract(&map), Extracted::Valid(cx(VALID, &[])));
    }
}
