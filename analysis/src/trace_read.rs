//! Reading the local trace file's lines back (the file
//! `telemetry::trace_file` writes): each line one OTLP JSON `TracesData`,
//! merged into traces across the lines that hold their spans, ordered by
//! the line each trace was last seen on. Malformed lines are skipped and
//! counted, never fatal: the bytes may come from anywhere.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{TracesData, status};

/// One span read back from the trace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// The resource's `service.name`, or `"unknown"`.
    pub service: String,
    /// The host it was made on: the resource's `host.name`, else the
    /// span's own (the exec-server's stages a client brought home).
    pub host: Option<String>,
    /// The span name.
    pub name: String,
    /// The trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The span id, 16 lowercase hex digits.
    pub span_id: String,
    /// The parent span id (16 hex digits), if the span has a parent.
    pub parent_span_id: Option<String>,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Attributes, values rendered as text.
    pub attributes: Vec<(String, String)>,
    /// Links, as `(trace_id, span_id)` hex pairs.
    pub links: Vec<(String, String)>,
    /// The status message when the status is error (`"error"` if it has no
    /// message).
    pub error: Option<String>,
}

/// The spans of one trace, from every line that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The spans, in the order they were read.
    pub spans: Vec<SpanRecord>,
}

/// Everything read from a trace file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Traces {
    /// The traces, oldest to newest by their last written line.
    pub traces: Vec<Trace>,
    /// Lines that could not be parsed and were skipped.
    pub skipped_lines: usize,
}

/// The spans in one `TracesData` message, flattened, in message order.
pub fn spans_from_traces_data(data: &TracesData) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for resource_spans in &data.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| {
                resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
            })
            .map(|kv| value_text(kv.value.as_ref()))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        let resource_host = resource_spans.resource.as_ref().and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == telemetry::host::HOST_NAME)
                .map(|kv| value_text(kv.value.as_ref()))
                .filter(|name| !name.is_empty())
        });
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let error = span.status.as_ref().and_then(|status| {
                    (status.code == status::StatusCode::Error as i32).then(|| {
                        if status.message.is_empty() {
                            "error".to_owned()
                        } else {
                            status.message.clone()
                        }
                    })
                });
                let attributes = attributes_text(&span.attributes);
                let host = resource_host.clone().or_else(|| {
                    attributes
                        .iter()
                        .find(|(k, _)| k == telemetry::host::HOST_NAME)
                        .map(|(_, v)| v.clone())
                });
                out.push(SpanRecord {
                    service: service.clone(),
                    host,
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.iter().all(|b| *b == 0))
                        .then(|| hex::encode(&span.parent_span_id)),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    attributes,
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex::encode(&link.trace_id), hex::encode(&link.span_id)))
                        .collect(),
                    error,
                });
            }
        }
    }
    out
}

fn attributes_text(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

/// An attribute value as text: strings as they are, scalars as Rust prints
/// them, arrays as `[a, b]`, maps as `{k=v, …}`, bytes as hex.
fn value_text(value: Option<&AnyValue>) -> String {
    use any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(bytes)) => hex::encode(bytes),
        Some(Value::StringValueStrindex(i)) => format!("#{i}"),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(|v| value_text(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(list)) => {
            let items: Vec<String> = attributes_text(&list.values)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Merges lines into traces, remembering the line each trace was last seen on.
#[derive(Default)]
pub struct Merger {
    /// `(last line number, trace)`.
    traces: Vec<(usize, Trace)>,
    index: HashMap<String, usize>,
    lines: usize,
    skipped: usize,
}

impl Merger {
    /// Takes in one line (without its newline).
    pub fn line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.lines += 1;
        let data: TracesData = match serde_json::from_slice(line) {
            Ok(data) => data,
            Err(_) => {
                self.skipped += 1;
                return;
            }
        };
        for span in spans_from_traces_data(&data) {
            let slot = match self.index.get(&span.trace_id) {
                Some(slot) => *slot,
                None => {
                    self.traces.push((
                        self.lines,
                        Trace {
                            trace_id: span.trace_id.clone(),
                            spans: Vec::new(),
                        },
                    ));
                    self.index
                        .insert(span.trace_id.clone(), self.traces.len() - 1);
                    self.traces.len() - 1
                }
            };
            if let Some((last, trace)) = self.traces.get_mut(slot) {
                *last = self.lines;
                trace.spans.push(span);
            }
        }
    }

    /// Takes in every line of `bytes`.
    pub fn lines(&mut self, bytes: &[u8]) {
        for line in bytes.split(|b| *b == b'\n') {
            self.line(line);
        }
    }

    /// The traces read, oldest to newest by their last line.
    pub fn finish(mut self) -> Traces {
        self.traces.sort_by_key(|(last, _)| *last);
        for (_, trace) in &mut self.traces {
            drop_placed_copies(&mut trace.spans);
        }
        Traces {
            traces: self.traces.into_iter().map(|(_, trace)| trace).collect(),
            skipped_lines: self.skipped,
        }
    }
}

/// Whether the client wrote this span from the exec-server's summary (a
/// copy placed on the client's clock).
pub fn is_placed(span: &SpanRecord) -> bool {
    span.attributes
        .iter()
        .any(|(k, v)| k == telemetry::remote::PLACED && v == "true")
}

/// Where the exec-server wrote its own spans into the same file (both on
/// one host sharing the file), the client's placed copies of them go.
fn drop_placed_copies(spans: &mut Vec<SpanRecord>) {
    if !spans.iter().any(is_placed) {
        return;
    }
    let own: std::collections::HashSet<String> = spans
        .iter()
        .filter(|s| !is_placed(s))
        .map(|s| s.span_id.clone())
        .collect();
    spans.retain(|s| !is_placed(s) || !own.contains(&s.span_id));
}

/// The traces in the text of one trace file.
pub fn parse(bytes: &[u8]) -> Traces {
    let mut merger = Merger::default();
    merger.lines(bytes);
    merger.finish()
}
