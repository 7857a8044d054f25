//! A trace-file line written straight from the SDK's span data.
//!
//! The line is the OTLP JSON `TracesData` that `opentelemetry-proto`'s
//! serde mapping gives for the batch, with every field that holds its
//! default left out (see `compact`) and each object's keys in sorted order:
//! byte for byte what serializing the proto tree through a `serde_json`
//! value and compacting it gives (the tests compare the two), without
//! building either tree. Writing a cold command's two dozen spans that way
//! took most of a millisecond of the CLI's exit; this writes into one
//! buffer.

use std::time::SystemTime;

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use crate::otlp_wire::{flags, kind, nanos};

/// Appends `spans` (one trace's, from one process) as one `TracesData`
/// line, without its newline: one `ResourceSpans` for `resource`, one
/// `ScopeSpans` per instrumentation scope in the order the scopes first
/// appear, each span where it was.
pub(super) fn write_line(resource: &Resource, spans: &[SpanData], out: &mut Vec<u8>) {
    let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    for span in spans {
        let scope = &span.instrumentation_scope;
        match scopes.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, list)) => list.push(span),
            None => scopes.push((scope, vec![span])),
        }
    }
    out.extend_from_slice(b"{\"resourceSpans\":[");
    let mut fields = Fields::open(out);
    fields.name("resource");
    let mut attributes = Fields::open(fields.out);
    attributes.list("attributes", resource.iter(), |(key, value), out| {
        key_value(key.as_str(), value, out);
    });
    attributes.close();
    fields.text("schemaUrl", resource.schema_url().unwrap_or_default());
    fields.list("scopeSpans", &scopes, |(scope, spans), out| {
        let mut fields = Fields::open(out);
        fields.text("schemaUrl", scope.schema_url().unwrap_or_default());
        fields.name("scope");
        write_scope(scope, fields.out);
        fields.name("spans");
        items(spans, fields.out, |span, out| write_span(span, out));
        fields.close();
    });
    fields.close();
    out.extend_from_slice(b"]}");
}

/// An `InstrumentationScope` (its name is kept even when empty).
fn write_scope(scope: &InstrumentationScope, out: &mut Vec<u8>) {
    let mut fields = Fields::open(out);
    fields.list("attributes", scope.attributes(), attribute);
    fields.name("name");
    string(scope.name(), fields.out);
    if let Some(version) = scope.version().filter(|v| !v.is_empty()) {
        fields.name("version");
        string(version, fields.out);
    }
    fields.close();
}

/// A `Span`, its fields in sorted order, defaults left out.
fn write_span(span: &SpanData, out: &mut Vec<u8>) {
    let context = &span.span_context;
    let mut fields = Fields::open(out);
    fields.list("attributes", &span.attributes, attribute);
    fields.count("droppedAttributesCount", span.dropped_attributes_count);
    fields.count("droppedEventsCount", span.events.dropped_count);
    fields.count("droppedLinksCount", span.links.dropped_count);
    fields.name("endTimeUnixNano");
    time(span.end_time, fields.out);
    fields.list("events", &span.events.events, |event, out| {
        let mut fields = Fields::open(out);
        fields.list("attributes", &event.attributes, attribute);
        fields.count("droppedAttributesCount", event.dropped_attributes_count);
        fields.name("name");
        string(&event.name, fields.out);
        fields.name("timeUnixNano");
        time(event.timestamp, fields.out);
        fields.close();
    });
    fields.count(
        "flags",
        flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
    );
    fields.name("kind");
    number(kind(&span.span_kind), fields.out);
    fields.list("links", &span.links.links, |link, out| {
        let linked = &link.span_context;
        let mut fields = Fields::open(out);
        fields.list("attributes", &link.attributes, attribute);
        fields.count("droppedAttributesCount", link.dropped_attributes_count);
        fields.count(
            "flags",
            flags(linked.is_remote(), linked.trace_flags().to_u8()),
        );
        fields.name("spanId");
        hex(&linked.span_id().to_bytes(), fields.out);
        fields.name("traceId");
        hex(&linked.trace_id().to_bytes(), fields.out);
        fields.text("traceState", &linked.trace_state().header());
        fields.close();
    });
    fields.name("name");
    string(&span.name, fields.out);
    if span.parent_span_id != SpanId::INVALID {
        fields.name("parentSpanId");
        hex(&span.parent_span_id.to_bytes(), fields.out);
    }
    fields.name("spanId");
    hex(&context.span_id().to_bytes(), fields.out);
    fields.name("startTimeUnixNano");
    time(span.start_time, fields.out);
    let (code, message) = match &span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    if code != 0 || !message.is_empty() {
        fields.name("status");
        let mut status = Fields::open(fields.out);
        status.count("code", code);
        status.text("message", message);
        status.close();
    }
    fields.name("traceId");
    hex(&context.trace_id().to_bytes(), fields.out);
    fields.text("traceState", &context.trace_state().header());
    fields.close();
}

/// An object being written: its fields, each after a comma but the first.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Fields<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Fields { out, first: true }
    }

    /// The next field's name; its value follows.
    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A count, left out when zero.
    fn count(&mut self, name: &str, n: u32) {
        if n != 0 {
            self.name(name);
            number(n, self.out);
        }
    }

    /// A string, left out when empty.
    fn text(&mut self, name: &str, s: &str) {
        if !s.is_empty() {
            self.name(name);
            string(s, self.out);
        }
    }

    /// A list, left out when empty.
    fn list<I: IntoIterator>(&mut self, name: &str, list: I, each: impl Fn(I::Item, &mut Vec<u8>)) {
        let mut list = list.into_iter().peekable();
        if list.peek().is_some() {
            self.name(name);
            items(list, self.out, each);
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON array of `list`, each written by `each`.
fn items<I: IntoIterator>(list: I, out: &mut Vec<u8>, each: impl Fn(I::Item, &mut Vec<u8>)) {
    out.push(b'[');
    for (i, item) in list.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(item, out);
    }
    out.push(b']');
}

/// An attribute: `{"key":...,"value":{...}}`.
fn attribute(kv: &KeyValue, out: &mut Vec<u8>) {
    key_value(kv.key.as_str(), &kv.value, out);
}

/// Nanoseconds since the epoch (0 before it), as a JSON string.
fn time(at: SystemTime, out: &mut Vec<u8>) {
    out.push(b'"');
    number(nanos(at), out);
    out.push(b'"');
}

fn number(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A trace or span id as a lowercase hex string.
fn hex<const N: usize>(id: &[u8; N], out: &mut Vec<u8>) {
    let mut digits = [0u8; 32];
    out.push(b'"');
    if let Some(digits) = digits.get_mut(..2 * N)
        && hex::encode_to_slice(id, digits).is_ok()
    {
        out.extend_from_slice(digits);
    }
    out.push(b'"');
}

/// A JSON string, escaped as `serde_json` escapes it: quote, backslash and
/// control characters; everything else as it is.
fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(DIGITS[usize::from(b >> 4)]);
            out.push(DIGITS[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A `KeyValue` from its parts.
fn key_value(key: &str, value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"key\":");
    string(key, out);
    out.extend_from_slice(b",\"value\":");
    any_value(value, out);
    out.push(b'}');
}

/// An `AnyValue`: its one-of as the only key (an integer as a string, as
/// OTLP JSON writes 64-bit integers; a double that is not finite as null,
/// as `serde_json` writes it).
fn any_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(b) => {
            out.extend_from_slice(b"{\"boolValue\":");
            out.extend_from_slice(if *b { b"true" } else { b"false" });
        }
        Value::I64(i) => {
            out.extend_from_slice(b"{\"intValue\":\"");
            number(*i, out);
            out.push(b'"');
        }
        Value::F64(f) => {
            out.extend_from_slice(b"{\"doubleValue\":");
            double(*f, out);
        }
        Value::String(s) => {
            out.extend_from_slice(b"{\"stringValue\":");
            string(s.as_str(), out);
        }
        Value::Array(array) => {
            out.extend_from_slice(b"{\"arrayValue\":{\"values\":");
            array_values(array, out);
            out.push(b'}');
        }
        // A kind of value newer than this code: written as an empty value
        // rather than failing the line.
        _ => {}
    }
    out.push(b'}');
}

fn double(f: f64, out: &mut Vec<u8>) {
    match serde_json::Number::from_f64(f) {
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// An `ArrayValue`'s values, a JSON array of `AnyValue`s.
fn array_values(array: &Array, out: &mut Vec<u8>) {
    match array {
        Array::Bool(v) => items(v, out, |b, out| any_value(&Value::Bool(*b), out)),
        Array::I64(v) => items(v, out, |i, out| any_value(&Value::I64(*i), out)),
        Array::F64(v) => items(v, out, |f, out| any_value(&Value::F64(*f), out)),
        Array::String(v) => items(v, out, |s, out| {
            out.extend_from_slice(b"{\"stringValue\":");
            string(s.as_str(), out);
            out.push(b'}');
        }),
        // A kind of array newer than this code: written empty.
        _ => out.extend_from_slice(b"[]"),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use opentelemetry::trace::SpanKind;
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::TracesData;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use proptest::prelude::*;

    use super::*;
    use crate::otlp_wire::tests::{bare_span, context, every_value};

    /// The line as the proto tree, serialized through a `serde_json` value
    /// and compacted, gives it.
    fn through_the_tree(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
        let with_schema: ResourceAttributesWithSchema = resource.into();
        let data = TracesData {
            resource_spans: group_spans_by_resource_and_scope(spans.to_vec(), &with_schema),
        };
        let mut value = serde_json::to_value(&data).unwrap();
        super::super::compact::compact(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    fn direct(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
        let mut out = Vec::new();
        write_line(resource, spans, &mut out);
        out
    }

    fn span(name: impl Into<Cow<'static, str>>, scope: InstrumentationScope) -> SpanData {
        let mut span = bare_span(scope);
        span.span_context = context(
            0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
            0xb7ad_6b71_6920_3331,
            false,
            "",
        );
        span.name = name.into();
        span.start_time = UNIX_EPOCH + Duration::from_nanos(1_795_773_616_023_341_253);
        span.end_time = UNIX_EPOCH + Duration::from_nanos(1_795_773_616_821_979_675);
        span
    }

    /// Every kind of value the SDK has, and values JSON writes its own way.
    fn json_values() -> Vec<KeyValue> {
        let mut values = every_value();
        values.extend([
            KeyValue::new("whole", 1.0),
            KeyValue::new("huge", 1e300),
            KeyValue::new("tiny", -2.5e-12),
            KeyValue::new("nan", f64::NAN),
            KeyValue::new("inf", f64::INFINITY),
            KeyValue::new("doubles", Value::Array(Array::F64(vec![0.5, f64::NAN]))),
            KeyValue::new(
                "quote\"back\\slash",
                "tab\tnl\nnul\u{0}bell\u{7}del\u{7f} é ✓ \u{1f600}",
            ),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec!["\"b\"".into(), "\u{1b}[0m".into()])),
            ),
        ]);
        values
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("core-client")
            .with_attributes([
                KeyValue::new("host.name", "vm"),
                KeyValue::new("process.pid", 7_i64),
            ])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.27.0")
            .build()
    }

    #[test]
    fn a_command_like_trace_is_written_as_the_tree_gives_it() {
        let scope = InstrumentationScope::builder("core-client").build();
        let mut root = span("cli.run", scope.clone());
        root.attributes = vec![KeyValue::new("process.pid", 19305_i64)];
        let mut child = span("cli.flush", scope.clone());
        child.parent_span_id = root.span_context.span_id();
        let mut remote = span("process.spawn", scope);
        remote.parent_span_id = SpanId::from(7);
        remote.parent_span_is_remote = true;
        remote.span_kind = SpanKind::Server;
        let spans = [child, root, remote];
        let resource = resource();
        assert_eq!(
            String::from_utf8(direct(&resource, &spans)).unwrap(),
            String::from_utf8(through_the_tree(&resource, &spans)).unwrap()
        );
    }

    #[test]
    fn every_field_and_value_is_written_as_the_tree_gives_it() {
        let versioned = InstrumentationScope::builder("relay")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
            .with_attributes([KeyValue::new("scope.attr", "x")])
            .build();
        let unnamed = InstrumentationScope::builder("").build();
        let kinds = [
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ];
        let statuses = [
            Status::Unset,
            Status::Ok,
            Status::error(""),
            Status::error("went \"wrong\"\n"),
        ];
        let mut spans = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let scope = if i % 2 == 0 {
                versioned.clone()
            } else {
                unnamed.clone()
            };
            let mut s = span(format!("span.{i}"), scope);
            s.span_context = context(
                u128::from(i as u64 + 1) << 64 | 0xff,
                i as u64 + 1,
                i % 2 == 1,
                if i == 0 { "x" } else { "" },
            );
            s.span_kind = kind.clone();
            s.status = statuses[i % statuses.len()].clone();
            s.attributes = if i == 0 { json_values() } else { vec![] };
            s.dropped_attributes_count = (i as u32) % 2 * 3;
            if i != 4 {
                s.parent_span_id = SpanId::from(0x1234);
                s.parent_span_is_remote = i == 2;
            }
            if i < 2 {
                s.events.events.push(opentelemetry::trace::Event::new(
                    "exception",
                    UNIX_EPOCH + Duration::from_nanos(5),
                    json_values(),
                    2,
                ));
                s.events
                    .events
                    .push(opentelemetry::trace::Event::new("", UNIX_EPOCH, vec![], 0));
                s.events.dropped_count = 1;
                s.links.links.push(opentelemetry::trace::Link::new(
                    context(9, 10, true, "v"),
                    json_values(),
                    4,
                ));
                s.links.links.push(opentelemetry::trace::Link::new(
                    context(11, 12, false, ""),
                    vec![],
                    0,
                ));
                s.links.dropped_count = 5;
            }
            s.start_time = UNIX_EPOCH - Duration::from_secs(1);
            spans.push(s);
        }
        spans.push(crate::otlp_wire::tests::span(
            3,
            1,
            &versioned,
            Status::error("e"),
            SpanKind::Client,
        ));
        statuses.iter().for_each(|st| {
            let mut s = span("status", versioned.clone());
            s.status = st.clone();
            spans.push(s);
        });
        for resource in [resource(), Resource::builder_empty().build()] {
            assert_eq!(
                String::from_utf8(direct(&resource, &spans)).unwrap(),
                String::from_utf8(through_the_tree(&resource, &spans)).unwrap()
            );
        }
    }

    proptest! {
        #[test]
        fn any_name_and_string_value_is_escaped_as_serde_json_escapes_it(
            name in "\\PC*|[\\x00-\\x7f]{0,40}",
            value in "\\PC*|[\\x00-\\x7f]{0,40}",
        ) {
            let mut s = span(name, InstrumentationScope::builder("x").build());
            s.attributes = vec![KeyValue::new(value.clone(), value)];
            let spans = [s];
            let resource = resource();
            prop_assert_eq!(direct(&resource, &spans), through_the_tree(&resource, &spans));
        }
    }
}
