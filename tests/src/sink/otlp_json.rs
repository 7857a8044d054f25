//! Spans as OTLP JSON, shaped as Jaeger's api_v3 emits them: lowerCamelCase
//! names, trace and span ids in hex, 64-bit integers (times, `intValue`)
//! as decimal strings, enums as numbers, and fields that hold their
//! default value left out, except that resource, scope, status and an
//! attribute's value are always written (`{}` when empty).

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value, json};

/// `{"resourceSpans": [...]}` for `resource_spans`.
pub(crate) fn traces_data(resource_spans: &[ResourceSpans]) -> Value {
    Obj::default()
        .list(
            "resourceSpans",
            resource_spans.iter().map(resource_spans_json),
        )
        .done()
}

/// A JSON object that leaves out default values.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_owned(), value);
        self
    }

    fn str(self, key: &str, value: &str) -> Self {
        if value.is_empty() {
            self
        } else {
            self.put(key, Value::from(value))
        }
    }

    fn hex(self, key: &str, bytes: &[u8]) -> Self {
        self.str(key, &hex::encode(bytes))
    }

    fn int(self, key: &str, value: impl Into<i64>) -> Self {
        match value.into() {
            0 => self,
            n => self.put(key, Value::from(n)),
        }
    }

    /// A 64-bit integer, as a decimal string.
    fn int64(self, key: &str, value: u64) -> Self {
        match value {
            0 => self,
            n => self.put(key, Value::from(n.to_string())),
        }
    }

    fn list(self, key: &str, items: impl Iterator<Item = Value>) -> Self {
        let items: Vec<Value> = items.collect();
        if items.is_empty() {
            self
        } else {
            self.put(key, Value::Array(items))
        }
    }

    fn attributes(self, attributes: &[KeyValue]) -> Self {
        self.list("attributes", attributes.iter().map(key_value))
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn resource_spans_json(rs: &ResourceSpans) -> Value {
    Obj::default()
        .put("resource", or_empty(rs.resource.as_ref(), resource))
        .list("scopeSpans", rs.scope_spans.iter().map(scope_spans_json))
        .str("schemaUrl", &rs.schema_url)
        .done()
}

/// `f(value)`, or `{}` if there is no value.
fn or_empty<T>(value: Option<&T>, f: impl Fn(&T) -> Value) -> Value {
    value.map_or_else(|| json!({}), f)
}

fn resource(r: &Resource) -> Value {
    Obj::default()
        .attributes(&r.attributes)
        .int("droppedAttributesCount", r.dropped_attributes_count)
        .done()
}

fn scope_spans_json(ss: &ScopeSpans) -> Value {
    Obj::default()
        .put("scope", or_empty(ss.scope.as_ref(), scope))
        .list("spans", ss.spans.iter().map(span))
        .str("schemaUrl", &ss.schema_url)
        .done()
}

fn scope(s: &InstrumentationScope) -> Value {
    Obj::default()
        .str("name", &s.name)
        .str("version", &s.version)
        .attributes(&s.attributes)
        .int("droppedAttributesCount", s.dropped_attributes_count)
        .done()
}

fn span(s: &Span) -> Value {
    Obj::default()
        .hex("traceId", &s.trace_id)
        .hex("spanId", &s.span_id)
        .str("traceState", &s.trace_state)
        .hex("parentSpanId", &s.parent_span_id)
        .int("flags", s.flags)
        .str("name", &s.name)
        .int("kind", s.kind)
        .int64("startTimeUnixNano", s.start_time_unix_nano)
        .int64("endTimeUnixNano", s.end_time_unix_nano)
        .attributes(&s.attributes)
        .int("droppedAttributesCount", s.dropped_attributes_count)
        .list("events", s.events.iter().map(event))
        .int("droppedEventsCount", s.dropped_events_count)
        .list("links", s.links.iter().map(link))
        .int("droppedLinksCount", s.dropped_links_count)
        .put("status", or_empty(s.status.as_ref(), status))
        .done()
}

fn event(e: &Event) -> Value {
    Obj::default()
        .int64("timeUnixNano", e.time_unix_nano)
        .str("name", &e.name)
        .attributes(&e.attributes)
        .int("droppedAttributesCount", e.dropped_attributes_count)
        .done()
}

fn link(l: &Link) -> Value {
    Obj::default()
        .hex("traceId", &l.trace_id)
        .hex("spanId", &l.span_id)
        .str("traceState", &l.trace_state)
        .attributes(&l.attributes)
        .int("droppedAttributesCount", l.dropped_attributes_count)
        .int("flags", l.flags)
        .done()
}

fn status(s: &Status) -> Value {
    Obj::default()
        .str("message", &s.message)
        .int("code", s.code)
        .done()
}

fn key_value(kv: &KeyValue) -> Value {
    json!({ "key": kv.key, "value": or_empty(kv.value.as_ref(), any) })
}

/// An attribute value: the one field that is set, written even when it
/// holds its type's default (`{"intValue":"0"}`).
fn any(value: &AnyValue) -> Value {
    use any_value::Value as V;
    match &value.value {
        Some(V::StringValue(s)) => json!({ "stringValue": s }),
        Some(V::BoolValue(b)) => json!({ "boolValue": b }),
        Some(V::IntValue(i)) => json!({ "intValue": i.to_string() }),
        Some(V::DoubleValue(d)) => json!({ "doubleValue": double(*d) }),
        Some(V::BytesValue(b)) => {
            json!({ "bytesValue": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        Some(V::ArrayValue(a)) => json!({
            "arrayValue": Obj::default().list("values", a.values.iter().map(any)).done()
        }),
        Some(V::KvlistValue(kv)) => json!({
            "kvlistValue": Obj::default().list("values", kv.values.iter().map(key_value)).done()
        }),
        Some(V::StringValueStrindex(_)) | None => json!({}),
    }
}

/// A double as a JSON number, or as the string protobuf's JSON mapping
/// uses for one that has no JSON number (`"NaN"`, `"Infinity"`).
fn double(d: f64) -> Value {
    if d.is_nan() {
        Value::from("NaN")
    } else if d.is_infinite() {
        Value::from(if d > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        Value::from(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::TracesData;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    /// Every field set (or left default) survives a trip through the JSON
    /// and back through the OTLP JSON decoder of opentelemetry-proto.
    #[test]
    fn round_trips_through_the_otlp_json_decoder() {
        use any_value::Value as V;
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            trace_state: "k=v".to_owned(),
            parent_span_id: vec![0x02; 8],
            flags: 0x101,
            name: "op".to_owned(),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_001,
            end_time_unix_nano: 1_700_000_000_000_000_009,
            attributes: vec![
                kv("s", V::StringValue(String::new())),
                kv("i", V::IntValue(0)),
                kv("neg", V::IntValue(-7)),
                kv("b", V::BoolValue(false)),
                kv("d", V::DoubleValue(0.5)),
                kv("bytes", V::BytesValue(vec![0, 1, 255])),
                kv(
                    "arr",
                    V::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![AnyValue {
                            value: Some(V::IntValue(5)),
                        }],
                    }),
                ),
            ],
            events: vec![Event {
                time_unix_nano: 5,
                name: "ev".to_owned(),
                ..Event::default()
            }],
            links: vec![Link {
                trace_id: vec![0xcd; 16],
                span_id: vec![0x03; 8],
                ..Link::default()
            }],
            status: Some(Status {
                message: "boom".to_owned(),
                code: 2,
            }),
            ..Span::default()
        };
        let root = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x02; 8],
            ..Span::default()
        };
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", V::StringValue("svc".to_owned()))],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "scope".to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans: vec![span, root],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let json = traces_data(&data.resource_spans);
        let back: TracesData = serde_json::from_value(json.clone()).unwrap();
        let mut expected = data;
        // Status `None` is written as `{}`, which reads back as the default.
        expected.resource_spans[0].scope_spans[0].spans[1].status = Some(Status::default());
        assert_eq!(back, expected, "{json:#}");

        let root = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
        assert_eq!(
            root,
            &json!({"traceId": "ab".repeat(16), "spanId": "0202020202020202", "status": {}}),
            "defaults are left out"
        );
        let first = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(first["startTimeUnixNano"], json!("1700000000000000001"));
        assert_eq!(
            first["attributes"][1],
            json!({"key": "i", "value": {"intValue": "0"}})
        );
    }
}
