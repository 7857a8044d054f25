//! Trace-file lines without default values. The OTLP JSON mapping (proto3's)
//! lets a writer leave out fields that hold their default and requires
//! readers to accept that; the SDK's serializer writes every field, which
//! doubles a span's size (`"events":[]`, `"droppedLinksCount":0`, an empty
//! status, ...). Attribute values are kept exactly as written: inside them
//! `false`, `0` and `""` are values, not defaults.

use serde_json::Value;

/// Object keys whose value is dropped when it is the default.
const DEFAULTED: &[&str] = &[
    "traceState",
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "events",
    "links",
    "attributes",
    "entityRefs",
    "schemaUrl",
    "version",
    "message",
    "code",
    "status",
    "scope",
    "parentSpanId",
    "flags",
];

/// `value` with the defaults of the keys above left out, recursively
/// (never inside an attribute's value).
pub(super) fn compact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key != "value" {
                    compact(child);
                }
            }
            map.retain(|key, child| !(DEFAULTED.contains(&key.as_str()) && is_default(child)));
        }
        Value::Array(items) => items.iter_mut().for_each(compact),
        _ => {}
    }
}

fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_u64() == Some(0) || n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_go_and_attribute_values_stay() {
        let mut line = serde_json::json!({
            "resourceSpans": [{
                "resource": {"attributes": [], "droppedAttributesCount": 0, "entityRefs": []},
                "scopeSpans": [{
                    "scope": {"name": "x", "version": "", "attributes": [], "droppedAttributesCount": 0},
                    "spans": [{
                        "traceId": "0af7651916cd43dd8448eb211c80319c",
                        "spanId": "b7ad6b7169203331",
                        "traceState": "",
                        "parentSpanId": "",
                        "flags": 257,
                        "name": "n",
                        "kind": 1,
                        "attributes": [
                            {"key": "b", "value": {"boolValue": false}},
                            {"key": "s", "value": {"stringValue": ""}},
                            {"key": "d", "value": {"doubleValue": 0}}
                        ],
                        "events": [], "droppedEventsCount": 0,
                        "links": [], "droppedLinksCount": 0,
                        "status": {"message": "", "code": 0}
                    }]
                }]
            }]
        });
        compact(&mut line);
        assert_eq!(
            line,
            serde_json::json!({
                "resourceSpans": [{
                    "resource": {},
                    "scopeSpans": [{
                        "scope": {"name": "x"},
                        "spans": [{
                            "traceId": "0af7651916cd43dd8448eb211c80319c",
                            "spanId": "b7ad6b7169203331",
                            "flags": 257,
                            "name": "n",
                            "kind": 1,
                            "attributes": [
                                {"key": "b", "value": {"boolValue": false}},
                                {"key": "s", "value": {"stringValue": ""}},
                                {"key": "d", "value": {"doubleValue": 0}}
                            ]
                        }]
                    }]
                }]
            })
        );
    }

    #[test]
    fn an_error_status_is_kept() {
        let mut status = serde_json::json!({"status": {"message": "", "code": 2}});
        compact(&mut status);
        assert_eq!(status, serde_json::json!({"status": {"code": 2}}));
    }
}
