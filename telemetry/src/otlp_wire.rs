//! OTLP protobuf written straight from the SDK's span data.
//!
//! The OTLP crates turn each span into a tree of owned protobuf structs
//! (every id, name, key and string value copied into an allocation of its
//! own), encode the tree and free it again: most of an export's CPU. Here a
//! batch is written in one pass into one buffer, each span through a
//! scratch buffer reused for the whole batch, and the resource, which is
//! the same for every batch of a process, is encoded once. The bytes are
//! those `opentelemetry-proto`'s conversion would give (the tests decode
//! both and compare): an `ExportTraceServiceRequest`, which is also a
//! `TracesData`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// OTLP's span flag: the flags say whether the parent was remote.
const HAS_IS_REMOTE: u32 = 0x100;
/// OTLP's span flag: the parent was remote.
const IS_REMOTE: u32 = 0x200;

/// A process's resource, encoded once: the `resource` and `schema_url`
/// fields of every `ResourceSpans` its batches carry.
#[derive(Debug, Clone, Default)]
pub(crate) struct EncodedResource {
    /// Field 1 (`resource`), whole (empty for an empty resource).
    resource: Vec<u8>,
    /// Field 3 (`schema_url`), whole (empty without one).
    schema_url: Vec<u8>,
}

impl EncodedResource {
    /// `resource`'s attributes and schema URL.
    pub(crate) fn new(resource: &Resource) -> Self {
        let mut attributes = Vec::new();
        for (key, value) in resource.iter() {
            key_value(1, key.as_str(), value, &mut attributes);
        }
        let mut out = Self::default();
        // An empty resource message is still sent (as the OTLP crates do).
        message(1, &attributes, &mut out.resource);
        if let Some(url) = resource.schema_url().filter(|u| !u.is_empty()) {
            string(3, url, &mut out.schema_url);
        }
        out
    }
}

/// `spans` as one `ExportTraceServiceRequest` (equally, `TracesData`):
/// one `ResourceSpans` for `resource`, one `ScopeSpans` per instrumentation
/// scope in the order the scopes first appear, each span where it was.
pub(crate) fn encode(resource: &EncodedResource, spans: &[SpanData]) -> Vec<u8> {
    // A process has a few scopes (one per tracer name): looked up in order.
    let mut scopes: Vec<(&InstrumentationScope, Vec<u8>)> = Vec::new();
    let mut scratch = Vec::with_capacity(512);
    let mut nested = Vec::with_capacity(128);
    for span in spans {
        let scope = &span.instrumentation_scope;
        let i = match scopes.iter().position(|(s, _)| *s == scope) {
            Some(i) => i,
            None => {
                scopes.push((scope, Vec::with_capacity(4096)));
                scopes.len() - 1
            }
        };
        scratch.clear();
        write_span(span, &mut scratch, &mut nested);
        if let Some((_, out)) = scopes.get_mut(i) {
            message(2, &scratch, out);
        }
    }
    let mut body = Vec::with_capacity(
        resource.resource.len()
            + resource.schema_url.len()
            + scopes.iter().map(|(_, s)| s.len() + 64).sum::<usize>(),
    );
    body.extend_from_slice(&resource.resource);
    for (scope, spans) in &scopes {
        scratch.clear();
        write_scope(scope, &mut scratch);
        let url = scope.schema_url().unwrap_or_default();
        // The scope (field 1), its spans (field 2), its schema URL (3).
        let len = 1 + len_delimited(scratch.len()) + spans.len() + string_len(url);
        encode_key(2, WireType::LengthDelimited, &mut body);
        encode_varint(len as u64, &mut body);
        message(1, &scratch, &mut body);
        body.extend_from_slice(spans);
        string(3, url, &mut body);
    }
    body.extend_from_slice(&resource.schema_url);
    let mut out = Vec::with_capacity(body.len() + 8);
    message(1, &body, &mut out);
    out
}

/// The fields of an `InstrumentationScope`.
fn write_scope(scope: &InstrumentationScope, out: &mut Vec<u8>) {
    string(1, scope.name(), out);
    string(2, scope.version().unwrap_or_default(), out);
    for kv in scope.attributes() {
        key_value(3, kv.key.as_str(), &kv.value, out);
    }
}

/// The fields of a `Span`, in field-number order (as prost writes them);
/// `nested` is scratch space for its events, links and status.
fn write_span(span: &SpanData, out: &mut Vec<u8>, nested: &mut Vec<u8>) {
    let context = &span.span_context;
    bytes(1, &context.trace_id().to_bytes(), out);
    bytes(2, &context.span_id().to_bytes(), out);
    string(3, &context.trace_state().header(), out);
    if span.parent_span_id != SpanId::INVALID {
        bytes(4, &span.parent_span_id.to_bytes(), out);
    }
    string(5, &span.name, out);
    uint(6, kind(&span.span_kind), out);
    fixed64(7, nanos(span.start_time), out);
    fixed64(8, nanos(span.end_time), out);
    for kv in &span.attributes {
        key_value(9, kv.key.as_str(), &kv.value, out);
    }
    uint(10, u64::from(span.dropped_attributes_count), out);
    for event in span.events.iter() {
        nested.clear();
        fixed64(1, nanos(event.timestamp), nested);
        string(2, &event.name, nested);
        for kv in &event.attributes {
            key_value(3, kv.key.as_str(), &kv.value, nested);
        }
        uint(4, u64::from(event.dropped_attributes_count), nested);
        message(11, nested, out);
    }
    uint(12, u64::from(span.events.dropped_count), out);
    for link in span.links.iter() {
        nested.clear();
        let linked = &link.span_context;
        bytes(1, &linked.trace_id().to_bytes(), nested);
        bytes(2, &linked.span_id().to_bytes(), nested);
        string(3, &linked.trace_state().header(), nested);
        for kv in &link.attributes {
            key_value(4, kv.key.as_str(), &kv.value, nested);
        }
        uint(5, u64::from(link.dropped_attributes_count), nested);
        fixed32(
            6,
            flags(linked.is_remote(), linked.trace_flags().to_u8()),
            nested,
        );
        message(13, nested, out);
    }
    uint(14, u64::from(span.links.dropped_count), out);
    nested.clear();
    let (code, description) = match &span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    string(2, description, nested);
    uint(3, code, nested);
    message(15, nested, out);
    fixed32(
        16,
        flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
        out,
    );
}

/// OTLP's number for a span kind.
pub(crate) fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// OTLP's span flags: the W3C trace flags, and whether the parent (or the
/// linked span) was remote.
pub(crate) fn flags(remote: bool, trace_flags: u8) -> u32 {
    let mut flags = u32::from(trace_flags) | HAS_IS_REMOTE;
    if remote {
        flags |= IS_REMOTE;
    }
    flags
}

/// Nanoseconds since the epoch (0 before it), as OTLP counts.
pub(crate) fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A `KeyValue` as field `tag`.
fn key_value(tag: u32, key: &str, value: &Value, out: &mut Vec<u8>) {
    let value_len = any_value_len(value);
    let len = string_len(key) + 1 + encoded_len_varint(value_len as u64) + value_len;
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    string(1, key, out);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(value_len as u64, out);
    any_value(value, out);
}

/// The encoded length of an `AnyValue`'s fields.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => 2,
        Value::I64(v) => 1 + encoded_len_varint(*v as u64),
        Value::F64(_) => 9,
        Value::String(s) => 1 + len_delimited(s.as_str().len()),
        Value::Array(array) => 1 + len_delimited(array_len(array)),
        _ => 0,
    }
}

/// The encoded length of an `ArrayValue`'s fields.
fn array_len(array: &Array) -> usize {
    fn each<T>(values: &[T], len: impl Fn(&T) -> usize) -> usize {
        values.iter().map(|v| 1 + len_delimited(len(v))).sum()
    }
    match array {
        Array::Bool(v) => each(v, |_| 2),
        Array::I64(v) => each(v, |i| 1 + encoded_len_varint(*i as u64)),
        Array::F64(v) => each(v, |_| 9),
        Array::String(v) => each(v, |s: &StringValue| 1 + len_delimited(s.as_str().len())),
        _ => 0,
    }
}

/// An `AnyValue`'s fields (`value`'s one-of).
fn any_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            encode_varint(u64::from(*b), out);
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => string_value(s.as_str(), out),
        Value::Array(array) => {
            encode_key(5, WireType::LengthDelimited, out);
            encode_varint(array_len(array) as u64, out);
            array_values(array, out);
        }
        // A kind of value newer than this code: sent as an empty value
        // rather than failing the batch.
        _ => {}
    }
}

/// An `ArrayValue`'s fields: each element an `AnyValue`.
fn array_values(array: &Array, out: &mut Vec<u8>) {
    fn each<T>(values: &[T], to: impl Fn(&T) -> Value, out: &mut Vec<u8>) {
        for v in values {
            let value = to(v);
            let len = any_value_len(&value);
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(len as u64, out);
            any_value(&value, out);
        }
    }
    match array {
        Array::Bool(v) => each(v, |b| Value::Bool(*b), out),
        Array::I64(v) => each(v, |i| Value::I64(*i), out),
        Array::F64(v) => each(v, |f| Value::F64(*f), out),
        Array::String(v) => {
            for s in v {
                let s = s.as_str();
                encode_key(1, WireType::LengthDelimited, out);
                encode_varint((1 + len_delimited(s.len())) as u64, out);
                string_value(s, out);
            }
        }
        _ => {}
    }
}

/// An `AnyValue`'s `string_value` (written even when empty: a one-of).
fn string_value(s: &str, out: &mut Vec<u8>) {
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// A length prefix and `len` bytes.
fn len_delimited(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// The encoded length of a string field with a one-byte key (nothing
/// when empty).
fn string_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        1 + len_delimited(s.len())
    }
}

/// A string field, left out when empty (proto3's default).
pub(crate) fn string(tag: u32, s: &str, out: &mut Vec<u8>) {
    bytes(tag, s.as_bytes(), out);
}

/// A bytes field, left out when empty (proto3's default).
fn bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    if !b.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
}

/// A nested message field (written even when empty: a present message).
pub(crate) fn message(tag: u32, body: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A varint field, left out when zero.
pub(crate) fn uint(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

/// A fixed64 field, left out when zero.
pub(crate) fn fixed64(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A fixed32 field, left out when zero.
fn fixed32(tag: u32, v: u32, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// What the batch would be through `opentelemetry-proto`'s conversion, for
/// the tests that compare.
#[cfg(test)]
pub(crate) fn reference(resource: &Resource, spans: Vec<SpanData>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use prost::Message as _;
    let resource: ResourceAttributesWithSchema = resource.into();
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, &resource),
    }
    .encode_to_vec()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Key, KeyValue, trace::Event, trace::Link};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    /// A sampled span context (`state`: the value of a trace state `k`).
    pub(crate) fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            TraceState::from_key_value([("k", state)].into_iter().filter(|_| !state.is_empty()))
                .unwrap(),
        )
    }

    /// Every kind of value the SDK has.
    pub(crate) fn every_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("s", "text"),
            KeyValue::new("empty", ""),
            KeyValue::new("b", true),
            KeyValue::new("f", false),
            KeyValue::new("i", -42_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("big", i64::MAX),
            KeyValue::new("d", 2.5_f64),
            KeyValue::new("neg.zero", -0.0_f64),
            KeyValue::new(
                Key::from_static_str("a.s"),
                Value::Array(Array::String(vec!["x".into(), "".into()])),
            ),
            KeyValue::new("a.b", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("a.i", Value::Array(Array::I64(vec![1, -1, 0]))),
            KeyValue::new("a.f", Value::Array(Array::F64(vec![0.5]))),
            KeyValue::new("a.empty", Value::Array(Array::I64(vec![]))),
            KeyValue::new("long", "y".repeat(300)),
        ]
    }

    /// A span with every field at its default (an empty name, and an end
    /// before its start).
    pub(crate) fn bare_span(scope: InstrumentationScope) -> SpanData {
        SpanData {
            span_context: context(1, 2, false, ""),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(""),
            start_time: UNIX_EPOCH,
            end_time: UNIX_EPOCH - Duration::from_secs(1),
            attributes: vec![],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope,
        }
    }

    /// A span with every field set: events, links, dropped counts.
    pub(crate) fn span(
        id: u64,
        parent: u64,
        scope: &InstrumentationScope,
        status: Status,
        kind: SpanKind,
    ) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + id);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "ev",
            start + Duration::from_micros(5),
            every_value(),
            3,
        ));
        events.events.push(Event::new("bare", start, vec![], 0));
        events.dropped_count = 2;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            context(7, 8, true, "v"),
            vec![KeyValue::new("l", 1_i64)],
            1,
        ));
        links
            .links
            .push(Link::new(context(9, 10, false, ""), vec![], 0));
        links.dropped_count = 4;
        SpanData {
            span_context: context(0x1234_5678_9abc_def0_1122_3344_5566_7788, id, false, "w"),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: id.is_multiple_of(2),
            span_kind: kind,
            name: Cow::Owned(format!("span {id}")),
            start_time: start,
            end_time: start + Duration::from_millis(id),
            attributes: every_value(),
            dropped_attributes_count: 5,
            events,
            links,
            status,
            instrumentation_scope: scope.clone(),
        }
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("svc")
            .with_attribute(KeyValue::new("host.name", "h"))
            .with_attribute(KeyValue::new("n", 3_i64))
            .with_schema_url([], "https://opentelemetry.io/schemas/1.36.0")
            .build()
    }

    /// The same message, and field for field the same bytes in the same
    /// order (said by where they first differ, not byte by byte).
    fn same(ours: &[u8], theirs: &[u8]) {
        let decoded = |b: &[u8]| ExportTraceServiceRequest::decode(b).unwrap();
        assert!(decoded(ours) == decoded(theirs), "the messages differ");
        if let Some(at) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
            let near = |b: &[u8]| b[at.saturating_sub(8)..(at + 8).min(b.len())].to_vec();
            panic!(
                "byte {at} differs: ours {:?}, theirs {:?}",
                near(ours),
                near(theirs)
            );
        }
        assert_eq!(ours.len(), theirs.len());
    }

    #[test]
    fn a_batch_is_what_the_otlp_crates_would_send() {
        let a = InstrumentationScope::builder("a").build();
        let b = InstrumentationScope::builder("b")
            .with_version("1.2")
            .with_schema_url("https://example.com/s")
            .with_attributes([KeyValue::new("scope.attr", "x")])
            .build();
        let spans = vec![
            span(1, 0, &a, Status::Unset, SpanKind::Internal),
            span(2, 1, &b, Status::Ok, SpanKind::Server),
            span(3, 1, &a, Status::error("it broke"), SpanKind::Client),
            span(4, 3, &b, Status::error(""), SpanKind::Producer),
            span(5, 3, &a, Status::Unset, SpanKind::Consumer),
        ];
        let resource = resource();
        let ours = encode(&EncodedResource::new(&resource), &spans);
        let theirs = reference(&resource, spans);
        same(&ours, &theirs);
    }

    #[test]
    fn an_empty_resource_and_a_bare_span_match_too() {
        let bare = bare_span(InstrumentationScope::builder("").build());
        let resource = Resource::builder_empty().build();
        let ours = encode(
            &EncodedResource::new(&resource),
            std::slice::from_ref(&bare),
        );
        same(&ours, &reference(&resource, vec![bare]));
        let none = encode(&EncodedResource::new(&resource), &[]);
        same(&none, &reference(&resource, vec![]));
    }
}
