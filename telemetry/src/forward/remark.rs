//! A client's forwarded batch re-marked where it lies: each resource
//! decoded, checked and marked as forwarded for the client's key, its
//! scopes and spans passed on as the bytes they arrived as (checked, not
//! converted). Written into an OTLP export request, for an exporter that
//! takes one as bytes.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use prost::bytes::Buf as _;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

use crate::spans;

/// What re-marking a batch came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Remarked {
    /// Spans written out.
    pub(super) spans: u64,
    /// Spans left out because their resource claims one of our services,
    /// and the first name claimed.
    pub(super) claimed: u64,
    pub(super) claimed_name: Option<String>,
}

/// Why a batch cannot be passed on as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotAsIs {
    /// It is not OTLP `TracesData`.
    NotOtlp,
    /// A span's ids are not an id's length: the batch is converted span by
    /// span instead (which leaves those spans out).
    BadIds,
}

/// `ScopeSpans`, its spans' ids only (checked, then passed on as bytes).
#[derive(Clone, PartialEq, prost::Message)]
struct ScopeIds {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<SpanIds>,
}

/// `Span`, its ids only.
#[derive(Clone, PartialEq, prost::Message)]
struct SpanIds {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
}

impl SpanIds {
    fn valid(&self) -> bool {
        self.trace_id.len() == 16
            && self.span_id.len() == 8
            && (self.parent_span_id.is_empty() || self.parent_span_id.len() == 8)
    }
}

/// One `ResourceSpans` as it arrived: its fields' bodies.
#[derive(Default)]
struct Parts<'a> {
    resource: &'a [u8],
    scopes: Vec<&'a [u8]>,
    schema_url: &'a [u8],
}

/// Appends `traces` (a client's `TracesData`) to `out` as the
/// `resource_spans` fields of an export request: each resource marked as
/// forwarded for `client` (an attribute of that name it carried itself is
/// dropped), a resource whose `service.name` is one of `own` left out and
/// counted, a resource without spans left out. Nothing is appended on an
/// error.
pub(super) fn remark(
    traces: &[u8],
    client: &str,
    own: &[String],
    out: &mut Vec<u8>,
) -> Result<Remarked, NotAsIs> {
    let mut resources = Vec::new();
    for (tag, body) in fields(traces)? {
        if tag == 1 {
            resources.push(parts(body.ok_or(NotAsIs::NotOtlp)?)?);
        }
    }
    let mut done = Remarked::default();
    let mut written = Vec::with_capacity(traces.len() + 64 * resources.len());
    for rs in resources {
        let mut spans = 0u64;
        for scope in &rs.scopes {
            let ids = ScopeIds::decode(*scope).map_err(|_| NotAsIs::NotOtlp)?;
            if !ids.spans.iter().all(SpanIds::valid) {
                return Err(NotAsIs::BadIds);
            }
            spans += ids.spans.len() as u64;
        }
        if spans == 0 {
            continue;
        }
        let mut resource = Resource::decode(rs.resource).map_err(|_| NotAsIs::NotOtlp)?;
        if let Some(name) = service_name(&resource).filter(|n| own.iter().any(|o| o == n)) {
            done.claimed += spans;
            done.claimed_name.get_or_insert_with(|| name.to_owned());
            continue;
        }
        resource
            .attributes
            .retain(|kv| !kv.key.starts_with(spans::FORWARDED_FOR));
        resource.attributes.push(KeyValue {
            key: spans::FORWARDED_FOR.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(client.to_owned())),
            }),
            ..Default::default()
        });
        let resource = resource.encode_to_vec();
        let mut body = Vec::with_capacity(
            resource.len() + rs.scopes.iter().map(|s| s.len() + 6).sum::<usize>() + 64,
        );
        field(1, &resource, &mut body);
        for scope in &rs.scopes {
            field(2, scope, &mut body);
        }
        if !rs.schema_url.is_empty() {
            field(3, rs.schema_url, &mut body);
        }
        field(1, &body, &mut written);
        done.spans += spans;
    }
    out.extend_from_slice(&written);
    Ok(done)
}

/// The `service.name` of `resource`, if it names one.
fn service_name(resource: &Resource) -> Option<&str> {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

/// A `ResourceSpans`' fields.
fn parts(body: &[u8]) -> Result<Parts<'_>, NotAsIs> {
    let mut parts = Parts::default();
    for (tag, value) in fields(body)? {
        match (tag, value) {
            (1, Some(v)) => parts.resource = v,
            (2, Some(v)) => parts.scopes.push(v),
            (3, Some(v)) => parts.schema_url = v,
            (1..=3, None) => return Err(NotAsIs::NotOtlp),
            _ => {}
        }
    }
    Ok(parts)
}

/// A field's tag, with its body when it is length-delimited (`None` for
/// any other wire type, whose value is skipped).
type Field<'a> = (u32, Option<&'a [u8]>);

/// A message's fields in order.
fn fields(mut buf: &[u8]) -> Result<Vec<Field<'_>>, NotAsIs> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|_| NotAsIs::NotOtlp)?;
        match wire {
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|_| NotAsIs::NotOtlp)?;
                let len = usize::try_from(len).map_err(|_| NotAsIs::NotOtlp)?;
                let body = buf.get(..len).ok_or(NotAsIs::NotOtlp)?;
                buf.advance(len);
                out.push((tag, Some(body)));
            }
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|_| NotAsIs::NotOtlp)?;
                out.push((tag, None));
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let len = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                if buf.len() < len {
                    return Err(NotAsIs::NotOtlp);
                }
                buf.advance(len);
                out.push((tag, None));
            }
            // Groups are not in OTLP.
            WireType::StartGroup | WireType::EndGroup => return Err(NotAsIs::NotOtlp),
        }
    }
    Ok(out)
}

/// A length-delimited field.
fn field(tag: u32, body: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}
