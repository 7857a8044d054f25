//! The one OTLP JSON reader: each line (or a whole document) is parsed
//! into borrowed pieces and only what is asked for is kept (a report's
//! attributes, or every one with [`Scanner::full`]), into the one model
//! ([`Span`], [`Trace`]). Spans are grouped into traces over a window of
//! lines: a trace not seen for [`WINDOW_LINES`] lines is handed on as
//! complete. A trace's lines lie close together in a trace file (one
//! command's exporters write within moments of each other), so nothing is
//! held for the whole file ([`Scanner::whole`] holds every trace to the
//! end, for a view that orders them all).
//!
//! Accepted: the trace file's lines (`{"resourceSpans": [...]}`), the same
//! as one pretty-printed document, and Jaeger's query answers
//! (`{"result": {"resourceSpans": [...]}}`). Ids are hex, as the OTLP JSON
//! mapping says (and as Jaeger v2 writes them), or base64 (protobuf's
//! generic JSON mapping, which some tools and Jaeger's older releases
//! write, and which `opentelemetry-proto`'s serde types refuse).
//!
//! [`read_spans`] reads one such document's spans whole, in the order
//! written (every attribute typed, the scope, the kind, the events:
//! [`Record`]), for a reader that checks what was exported rather than
//! reporting on it (the project's tests).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use crate::model::{AttrValue, Attrs, Detail, Event, Interner, Record, Span, Trace, Value};

/// A trace not seen for this many lines is complete.
pub(crate) const WINDOW_LINES: u64 = 4096;
/// At most this many traces are held open at once (the oldest is handed
/// on first).
const MAX_OPEN: usize = 16_384;
/// At most this many spans are kept per trace (more are counted, not kept).
pub(crate) const MAX_SPANS_PER_TRACE: usize = 4096;

/// What was read, beyond the traces themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScanStats {
    /// Lines (or documents) read.
    pub lines: u64,
    /// Lines that were not OTLP JSON, skipped.
    pub skipped: u64,
    /// The first few skipped lines' numbers (1-based, per input).
    pub skipped_at: Vec<u64>,
    /// Whether the last line had no newline and did not parse (a file
    /// being written, or cut short).
    pub truncated_tail: bool,
    /// Spans read.
    pub spans: u64,
}

/// Span, service and host names seen, each kept once.
type Names = Interner;

/// How many names are kept once.
const NAMES: usize = 10_000;

/// How much of each span is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// What a report reads ([`Attrs`]).
    Report,
    /// Every attribute as text, the host, the links, the status message
    /// ([`Detail`]).
    Detail,
    /// The detail and the span as written ([`Record`]).
    Record,
}

impl Keep {
    /// Whether the detail is kept.
    fn detail(self) -> bool {
        self != Keep::Report
    }
}

/// Every span of one OTLP JSON document (a trace-file line, a whole
/// document, or a Jaeger query answer), in the order written, each read
/// whole: its [`Detail`] with its [`Record`]. Spans without a trace id or
/// a span id are left out. An error if it is not JSON, or holds neither
/// `resourceSpans` nor `result.resourceSpans`.
pub fn read_spans(json: &[u8]) -> Result<Vec<Span>, serde_json::Error> {
    parse_document(json, &mut Names::new(NAMES), Keep::Record).map(|(spans, _)| spans)
}

/// What one line held.
#[derive(Debug)]
enum Parsed {
    /// Nothing but white space.
    Blank,
    /// OTLP JSON: its spans (those with a trace and span id), and how many
    /// spans it had in all.
    Spans(Vec<Span>, u64),
    /// Not OTLP JSON.
    Failed,
}

/// A line's outcome.
fn parse_line(line: &[u8], names: &mut Names, keep: Keep) -> Parsed {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Blank;
    }
    parse(line, names, keep).map_or(Parsed::Failed, |(spans, all)| Parsed::Spans(spans, all))
}

/// Parses one JSON value: its spans and how many it had in all, or `None`
/// when it is not OTLP JSON.
fn parse(json: &[u8], names: &mut Names, keep: Keep) -> Option<(Vec<Span>, u64)> {
    parse_document(json, names, keep).ok()
}

/// Parses one JSON value: its spans and how many it had in all, or why it
/// is not OTLP JSON.
fn parse_document(
    json: &[u8],
    names: &mut Names,
    keep: Keep,
) -> Result<(Vec<Span>, u64), serde_json::Error> {
    let doc = serde_json::from_slice::<Document<'_>>(json)?;
    let resource_spans = doc
        .resource_spans
        .or(doc.result.map(|r| r.resource_spans))
        .ok_or_else(|| {
            <serde_json::Error as de::Error>::custom(
                "neither resourceSpans nor result.resourceSpans",
            )
        })?;
    let mut spans = Vec::new();
    let mut all = 0;
    for rs in resource_spans {
        let mut service = None;
        let mut host = None;
        for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
            let value = || kv.value.as_ref().map(value_text).filter(|v| !v.is_empty());
            match &*kv.key {
                "service.name" => service = value(),
                telemetry::host::HOST_NAME if keep.detail() => {
                    host = value().map(|h| names.intern(&h));
                }
                _ => {}
            }
        }
        let service = names.intern(service.as_deref().unwrap_or("unknown"));
        let resource = if keep == Keep::Record {
            rs.resource
                .as_ref()
                .map(|r| typed_attributes(&r.attributes))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for ss in rs.scope_spans {
            let written = (keep == Keep::Record).then(|| Written {
                scope: ss.scope.as_ref().map_or("", |s| &s.name),
                resource: &resource,
            });
            for raw in ss.spans {
                all += 1;
                if let Some(span) = span(raw, &service, host.as_ref(), names, keep, written) {
                    spans.push(span);
                }
            }
        }
    }
    Ok((spans, all))
}

/// What a span read whole takes from its resource and scope.
#[derive(Clone, Copy)]
struct Written<'s> {
    /// The scope's name.
    scope: &'s str,
    /// The resource's attributes.
    resource: &'s [(Box<str>, AttrValue)],
}

/// The span `raw` describes, if it has a trace and a span id; with its
/// [`Detail`] if `keep` says so (`host`: its resource's host), and its
/// [`Record`] (from `written`) when read whole.
fn span(
    raw: RawSpan<'_>,
    service: &Arc<str>,
    host: Option<&Arc<str>>,
    names: &mut Names,
    keep: Keep,
    written: Option<Written<'_>>,
) -> Option<Span> {
    let full = keep.detail();
    let trace = raw.trace_id.0?;
    let id = raw.span_id.0.and_then(|s| u64::try_from(s).ok())?;
    let mut attrs = Attrs::default();
    let mut texts = Vec::new();
    for kv in &raw.attributes {
        let Some(value) = &kv.value else {
            if full {
                texts.push((Box::from(&*kv.key), Box::from("")));
            }
            continue;
        };
        attrs.take(&kv.key, value.typed());
        if full {
            texts.push((Box::from(&*kv.key), value_text(value).into_boxed_str()));
        }
    }
    let error = raw
        .status
        .as_ref()
        .is_some_and(|s| s.code.as_ref().is_some_and(|c| c.0 == 2));
    let detail = full.then(|| {
        let span_host = || {
            texts
                .iter()
                .find(|(k, v)| &**k == telemetry::host::HOST_NAME && !v.is_empty())
                .map(|(_, v)| names.intern(v))
        };
        Box::new(Detail {
            host: host.cloned().or_else(span_host),
            links: raw
                .links
                .iter()
                .filter_map(|l| Some((l.trace_id.0?, u64::try_from(l.span_id.0?).ok()?)))
                .collect(),
            error_message: raw
                .status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .filter(|m| error && !m.is_empty())
                .map(Box::from),
            attributes: texts,
            record: written.map(|w| Box::new(record(&raw, w))),
        })
    });
    Some(Span {
        trace,
        id,
        parent: raw
            .parent_span_id
            .0
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(0),
        name: names.intern(&raw.name),
        service: service.clone(),
        start: raw.start.map_or(0, |t| t.0),
        end: raw.end.map_or(0, |t| t.0),
        error,
        attrs,
        detail,
    })
}

/// The span `raw` as written, with its resource and scope.
fn record(raw: &RawSpan<'_>, written: Written<'_>) -> Record {
    let events: Vec<RawEvent<'_>> = raw
        .events
        .and_then(|e| serde_json::from_str(e.get()).ok())
        .unwrap_or_default();
    Record {
        scope: Box::from(written.scope),
        kind: raw
            .kind
            .and_then(|k| k.int)
            .and_then(|k| i32::try_from(k).ok())
            .unwrap_or(0),
        resource: written.resource.to_vec(),
        attributes: typed_attributes(&raw.attributes),
        events: events
            .iter()
            .map(|e| Event {
                name: Box::from(&*e.name),
                attributes: typed_attributes(&e.attributes),
            })
            .collect(),
    }
}

/// Attributes as written, typed.
fn typed_attributes(kvs: &[KeyValue<'_>]) -> Vec<(Box<str>, AttrValue)> {
    kvs.iter()
        .map(|kv| {
            let value = kv.value.as_ref().map_or(AttrValue::Empty, typed_value);
            (Box::from(&*kv.key), value)
        })
        .collect()
}

/// An attribute value as written, typed (what does not read is
/// [`AttrValue::Empty`]).
fn typed_value(value: &AnyValue<'_>) -> AttrValue {
    if let Some(s) = &value.string_value {
        return AttrValue::Str(Box::from(&**s));
    }
    if let Some(b) = value.bool_value {
        return AttrValue::Bool(b);
    }
    if let Some(i) = value.int_value.and_then(|n| n.int) {
        return AttrValue::Int(i);
    }
    if let Some(d) = value.double_value.and_then(|n| n.double) {
        return AttrValue::Double(d);
    }
    if let Some(bytes) = &value.bytes_value {
        return base64::engine::general_purpose::STANDARD
            .decode(bytes.as_bytes())
            .map_or(AttrValue::Empty, |b| AttrValue::Bytes(b.into_boxed_slice()));
    }
    if let Some(array) = &value.array_value {
        return AttrValue::Array(array.values.iter().map(typed_value).collect());
    }
    if let Some(list) = &value.kvlist_value {
        return AttrValue::Map(typed_attributes(&list.values));
    }
    AttrValue::Empty
}

/// An attribute value as text: strings as they are, scalars as Rust
/// prints them, arrays as `[a, b]`, maps as `{k=v, …}`, bytes as hex.
fn value_text(value: &AnyValue<'_>) -> String {
    if let Some(s) = &value.string_value {
        return s.to_string();
    }
    if let Some(b) = value.bool_value {
        return b.to_string();
    }
    if let Some(i) = value.int_value.and_then(|n| n.int) {
        return i.to_string();
    }
    if let Some(d) = value.double_value.and_then(|n| n.double) {
        return d.to_string();
    }
    if let Some(bytes) = &value.bytes_value {
        return base64::engine::general_purpose::STANDARD
            .decode(bytes.as_bytes())
            .map(hex::encode)
            .unwrap_or_default();
    }
    if let Some(array) = &value.array_value {
        let items: Vec<String> = array.values.iter().map(value_text).collect();
        return format!("[{}]", items.join(", "));
    }
    if let Some(list) = &value.kvlist_value {
        let items: Vec<String> = list
            .values
            .iter()
            .map(|kv| {
                let v = kv.value.as_ref().map(value_text).unwrap_or_default();
                format!("{}={v}", kv.key)
            })
            .collect();
        return format!("{{{}}}", items.join(", "));
    }
    String::new()
}

/// Inputs at least this large are parsed on several threads.
const PARALLEL_FROM: usize = 1024 * 1024;

/// Groups spans into traces over a window of lines and hands each
/// complete trace to a sink.
pub(crate) struct Scanner<F: FnMut(Trace)> {
    sink: F,
    open: HashMap<u128, (u64, Trace)>,
    names: Names,
    threads: usize,
    /// Every attribute kept ([`Scanner::full`]).
    keep: Keep,
    /// Lines after which an unseen trace is complete; `None`: at the end.
    window: Option<u64>,
    /// Spans kept per trace.
    max_spans: usize,
    line: u64,
    parsed: u64,
    stats: ScanStats,
    only: Option<HashSet<u128>>,
}

impl<F: FnMut(Trace)> Scanner<F> {
    /// A scanner handing complete traces to `sink`, keeping what a report
    /// reads of each span.
    pub(crate) fn new(sink: F) -> Self {
        Scanner {
            sink,
            open: HashMap::new(),
            names: Names::new(NAMES),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            keep: Keep::Report,
            window: Some(WINDOW_LINES),
            max_spans: MAX_SPANS_PER_TRACE,
            line: 0,
            parsed: 0,
            stats: ScanStats::default(),
            only: None,
        }
    }

    /// A scanner that keeps only the spans of the traces `ids` (the others
    /// are counted, not kept).
    pub(crate) fn only(sink: F, ids: HashSet<u128>) -> Self {
        Scanner {
            only: Some(ids),
            ..Scanner::new(sink)
        }
    }

    /// The same scanner keeping every attribute, the host, the links and
    /// the status message of each span (a view of one trace).
    pub(crate) fn full(mut self) -> Self {
        self.keep = Keep::Detail;
        self
    }

    /// The same scanner holding every trace, whole, until
    /// [`Scanner::finish`] (a view that orders them all; memory grows with
    /// the input).
    pub(crate) fn whole(mut self) -> Self {
        self.window = None;
        self.max_spans = usize::MAX;
        self
    }

    /// The same scanner parsing on at most `threads` threads.
    #[cfg(test)]
    pub(crate) fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Reads the lines of `bytes`, numbered from `line_base + 1`, and
    /// returns the number of the last. With `at_end`, the last line may
    /// lack its newline; one that does not parse is a cut tail, not a
    /// skipped line. A large input is parsed on several threads and taken
    /// in in order.
    pub(crate) fn lines(&mut self, bytes: &[u8], line_base: u64, at_end: bool) -> u64 {
        let unterminated = at_end && !bytes.is_empty() && !bytes.ends_with(b"\n");
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if body.is_empty() {
            return line_base;
        }
        let chunks = split_at_newlines(
            body,
            if body.len() >= PARALLEL_FROM {
                self.threads
            } else {
                1
            },
        );
        let parsed: Vec<Vec<Parsed>> = if chunks.len() == 1 {
            vec![parse_chunk(body, &mut self.names, self.keep)]
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = chunks
                    .iter()
                    .map(|chunk| {
                        let keep = self.keep;
                        scope.spawn(move || parse_chunk(chunk, &mut Names::new(NAMES), keep))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_default())
                    .collect()
            })
        };
        let total: usize = parsed.iter().map(Vec::len).sum();
        let mut number = line_base;
        for (i, line) in parsed.into_iter().flatten().enumerate() {
            number += 1;
            self.take(line, number, unterminated && i + 1 == total);
        }
        number
    }

    /// Lines that parsed so far.
    pub(crate) fn parsed_lines(&self) -> u64 {
        self.parsed
    }

    /// What was read since the last call (one input's part), the traces
    /// still open kept open.
    pub(crate) fn take_stats(&mut self) -> ScanStats {
        std::mem::take(&mut self.stats)
    }

    /// Takes in one line's outcome, numbered `number` in its input;
    /// `unterminated` when it is the input's last and has no newline.
    fn take(&mut self, line: Parsed, number: u64, unterminated: bool) {
        let spans = match line {
            Parsed::Blank => return,
            Parsed::Failed => None,
            Parsed::Spans(spans, all) => Some((spans, all)),
        };
        self.stats.lines += 1;
        self.line += 1;
        match spans {
            Some((spans, all)) => {
                self.parsed += 1;
                self.stats.spans += all;
                for span in spans {
                    self.add(span);
                }
            }
            None if unterminated => self.stats.truncated_tail = true,
            None => {
                self.stats.skipped += 1;
                if self.stats.skipped_at.len() < 5 {
                    self.stats.skipped_at.push(number);
                }
            }
        }
        if self.line.is_multiple_of(1024) {
            self.expire();
        }
    }

    /// Reads `bytes` as one JSON document; whether it parsed.
    pub(crate) fn document(&mut self, bytes: &[u8]) -> bool {
        self.line += 1;
        self.stats.lines += 1;
        let Some((spans, all)) = parse(bytes, &mut self.names, self.keep) else {
            return false;
        };
        self.parsed += 1;
        self.stats.spans += all;
        for span in spans {
            self.add(span);
        }
        true
    }

    /// Adds `span` to its trace.
    fn add(&mut self, span: Span) {
        if self
            .only
            .as_ref()
            .is_some_and(|ids| !ids.contains(&span.trace))
        {
            return;
        }
        let line = self.line;
        let trace = span.trace;
        let entry = self.open.entry(trace).or_insert_with(|| {
            (
                line,
                Trace {
                    id: trace,
                    spans: Vec::new(),
                    dropped: 0,
                },
            )
        });
        entry.0 = line;
        if entry.1.spans.len() < self.max_spans {
            entry.1.spans.push(span);
        } else {
            entry.1.dropped += 1;
        }
        if self.window.is_some() && self.open.len() > MAX_OPEN {
            self.hand_on_oldest();
        }
    }

    /// Hands on every trace not seen for [`WINDOW_LINES`] lines.
    fn expire(&mut self) {
        let Some(window) = self.window else {
            return;
        };
        let horizon = self.line.saturating_sub(window);
        let done: Vec<u128> = self
            .open
            .iter()
            .filter(|(_, (last, _))| *last < horizon)
            .map(|(id, _)| *id)
            .collect();
        self.hand_on(done);
    }

    fn hand_on_oldest(&mut self) {
        if let Some(oldest) = self
            .open
            .iter()
            .min_by_key(|(_, (last, _))| *last)
            .map(|(id, _)| *id)
        {
            self.hand_on(vec![oldest]);
        }
    }

    /// Hands on the traces `ids`, oldest last line first.
    fn hand_on(&mut self, ids: Vec<u128>) {
        let mut done: Vec<(u64, Trace)> =
            ids.iter().filter_map(|id| self.open.remove(id)).collect();
        done.sort_by_key(|(last, _)| *last);
        for (_, trace) in done {
            (self.sink)(trace);
        }
    }

    /// Hands on every trace still open and returns what was read.
    pub(crate) fn finish(mut self) -> ScanStats {
        let all: Vec<u128> = self.open.keys().copied().collect();
        self.hand_on(all);
        self.stats
    }
}

/// Each line of `chunk` parsed, in order.
fn parse_chunk(chunk: &[u8], names: &mut Names, keep: Keep) -> Vec<Parsed> {
    chunk
        .split(|b| *b == b'\n')
        .map(|line| parse_line(line, names, keep))
        .collect()
}

/// `body` cut into at most `n` pieces of whole lines (the newline between
/// two pieces dropped, as between any two lines).
fn split_at_newlines(body: &[u8], n: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::with_capacity(n);
    let mut rest = body;
    for left in (1..=n.max(1)).rev() {
        if left == 1 || rest.is_empty() {
            pieces.push(rest);
            break;
        }
        let target = rest.len() / left;
        match rest
            .get(target..)
            .and_then(|tail| tail.iter().position(|b| *b == b'\n'))
        {
            Some(at) => {
                let cut = target + at;
                pieces.push(rest.get(..cut).unwrap_or_default());
                rest = rest.get(cut + 1..).unwrap_or_default();
            }
            None => {
                pieces.push(rest);
                break;
            }
        }
    }
    pieces
}

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(borrow, rename = "resourceSpans", default)]
    resource_spans: Option<Vec<ResourceSpans<'a>>>,
    #[serde(borrow, default)]
    result: Option<QueryResult<'a>>,
}

#[derive(Deserialize)]
struct QueryResult<'a> {
    #[serde(borrow, rename = "resourceSpans", default)]
    resource_spans: Vec<ResourceSpans<'a>>,
}

#[derive(Deserialize)]
struct ResourceSpans<'a> {
    #[serde(borrow, default)]
    resource: Option<Resource<'a>>,
    #[serde(borrow, rename = "scopeSpans", default)]
    scope_spans: Vec<ScopeSpans<'a>>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize)]
struct ScopeSpans<'a> {
    #[serde(borrow, default)]
    scope: Option<Scope<'a>>,
    #[serde(borrow, default)]
    spans: Vec<RawSpan<'a>>,
}

#[derive(Deserialize)]
struct Scope<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawSpan<'a> {
    #[serde(rename = "traceId", default)]
    trace_id: Id<16>,
    #[serde(rename = "spanId", default)]
    span_id: Id<8>,
    #[serde(rename = "parentSpanId", default)]
    parent_span_id: Id<8>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(rename = "startTimeUnixNano", default)]
    start: Option<Nanos>,
    #[serde(rename = "endTimeUnixNano", default)]
    end: Option<Nanos>,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
    #[serde(borrow, default)]
    status: Option<Status<'a>>,
    #[serde(default)]
    links: Vec<RawLink>,
    /// A number (or one as a string); read only for a [`Record`].
    #[serde(default)]
    kind: Option<Number>,
    /// Left unparsed unless the span is read whole (a report never reads
    /// them).
    #[serde(borrow, default)]
    events: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize)]
struct RawLink {
    #[serde(rename = "traceId", default)]
    trace_id: Id<16>,
    #[serde(rename = "spanId", default)]
    span_id: Id<8>,
}

#[derive(Deserialize)]
struct KeyValue<'a> {
    #[serde(borrow, default)]
    key: Cow<'a, str>,
    #[serde(borrow, default)]
    value: Option<AnyValue<'a>>,
}

#[derive(Deserialize)]
struct AnyValue<'a> {
    #[serde(borrow, rename = "stringValue", default)]
    string_value: Option<Cow<'a, str>>,
    #[serde(rename = "boolValue", default)]
    bool_value: Option<bool>,
    #[serde(rename = "intValue", default)]
    int_value: Option<Number>,
    #[serde(rename = "doubleValue", default)]
    double_value: Option<Number>,
    #[serde(borrow, rename = "bytesValue", default)]
    bytes_value: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "arrayValue", default)]
    array_value: Option<ArrayValue<'a>>,
    #[serde(borrow, rename = "kvlistValue", default)]
    kvlist_value: Option<KvList<'a>>,
}

impl AnyValue<'_> {
    /// The value as [`Attrs`] reads it.
    fn typed(&self) -> Value<'_> {
        if let Some(s) = &self.string_value {
            Value::Str(s)
        } else if let Some(b) = self.bool_value {
            Value::Bool(b)
        } else if let Some(i) = self.int_value.and_then(|n| n.int) {
            Value::Int(i)
        } else {
            Value::Other
        }
    }
}

#[derive(Deserialize)]
struct ArrayValue<'a> {
    #[serde(borrow, default)]
    values: Vec<AnyValue<'a>>,
}

#[derive(Deserialize)]
struct KvList<'a> {
    #[serde(borrow, default)]
    values: Vec<KeyValue<'a>>,
}

/// A number attribute, as an integer and as a double: written as a number
/// or a string (OTLP JSON writes int64 as a string); anything else is no
/// value, never an error.
#[derive(Clone, Copy)]
struct Number {
    int: Option<i64>,
    double: Option<f64>,
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or one as a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number {
                    int: i64::try_from(v).ok(),
                    double: Some(v as f64),
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number {
                    int: Some(v),
                    double: Some(v as f64),
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number {
                    int: None,
                    double: Some(v),
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Number, E> {
                Ok(Number {
                    int: None,
                    double: None,
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
                Ok(Number {
                    int: v.parse().ok(),
                    double: v.parse().ok(),
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Status<'a> {
    #[serde(default)]
    code: Option<Code>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// A status code: a number, or its enum name.
struct Code(u8);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Code;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a status code")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Code, E> {
                Ok(Code(u8::try_from(v).unwrap_or(0)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Code, E> {
                Ok(Code(u8::try_from(v).unwrap_or(0)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Code, E> {
                Ok(Code(if v == "STATUS_CODE_ERROR" { 2 } else { 0 }))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `u64` written as a JSON string (the mapping's way) or a number.
struct Nanos(u64);

impl<'de> Deserialize<'de> for Nanos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Nanos;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("nanoseconds as a string or a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Nanos, E> {
                Ok(Nanos(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Nanos, E> {
                v.parse().map(Nanos).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An id of `N` bytes: hex (`2N` digits) or base64; missing, empty, all
/// zero or unreadable is no id. The value is the bytes read big-endian.
#[derive(Default)]
struct Id<const N: usize>(Option<u128>);

impl<'de, const N: usize> Deserialize<'de> for Id<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> Visitor<'_> for V<N> {
            type Value = Id<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an id of {N} bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Id(parse_id::<N>(v).filter(|id| *id != 0)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Id(None))
            }
        }
        d.deserialize_any(V::<N>)
    }
}

/// `text` as an id of `N` bytes.
fn parse_id<const N: usize>(text: &str) -> Option<u128> {
    if text.is_empty() {
        return Some(0);
    }
    if text.len() == 2 * N && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u128::from_str_radix(text, 16).ok();
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    (bytes.len() == N).then(|| {
        bytes
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<Trace>, ScanStats) {
        let mut traces = Vec::new();
        let mut scanner = Scanner::new(|t| traces.push(t));
        scanner.lines(text.as_bytes(), 0, true);
        let stats = scanner.finish();
        (traces, stats)
    }

    fn read_document(text: &str) -> (Vec<Trace>, bool) {
        let mut traces = Vec::new();
        let mut scanner = Scanner::new(|t| traces.push(t));
        let parsed = scanner.document(text.as_bytes());
        scanner.finish();
        (traces, parsed)
    }

    const LINE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"core-client"}}]},"scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"tool.dispatch","startTimeUnixNano":"1000","endTimeUnixNano":"5000","attributes":[{"key":"process.executable.name","value":{"stringValue":"ls"}},{"key":"rex.session.reused","value":{"boolValue":true}}],"status":{"code":2}}]}]}]}"#;

    #[test]
    fn a_line_gives_its_spans_with_what_a_report_reads() {
        let (traces, stats) = read(&format!("{LINE}\n"));
        assert_eq!(stats.lines, 1);
        assert_eq!(stats.skipped, 0);
        assert_eq!(traces.len(), 1);
        let span = &traces[0].spans[0];
        assert_eq!(span.trace, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(span.id, 0xb7ad6b7169203331);
        assert_eq!(span.parent, 0);
        assert_eq!(&*span.name, "tool.dispatch");
        assert_eq!(&*span.service, "core-client");
        assert_eq!((span.start, span.end, span.duration()), (1000, 5000, 4000));
        assert!(span.error);
        assert_eq!(span.attrs.program.as_deref(), Some("ls"));
        assert_eq!(span.attrs.reused, Some(true));
    }

    #[test]
    fn window_waits_are_read_as_numbers_in_either_form() {
        let line = LINE.replace(
            r#"{"key":"rex.session.reused","value":{"boolValue":true}}"#,
            r#"{"key":"rex.stdin.window_wait_ns","value":{"intValue":"120500000"}},{"key":"rex.stdin.window","value":{"intValue":4194304}}"#,
        );
        let (traces, _) = read(&format!("{line}\n"));
        let attrs = &traces[0].spans[0].attrs;
        assert_eq!(attrs.stdin_window_wait_ns, Some(120_500_000));
        assert_eq!(attrs.stdin_window, Some(4_194_304));
        assert_eq!(attrs.output_credit_wait_ns, None);
    }

    #[test]
    fn bad_lines_are_counted_a_cut_tail_is_told_apart_and_the_rest_read() {
        let text = format!("{LINE}\nnot json\n{{\"other\":1}}\n\n{}", &LINE[..60]);
        let (traces, stats) = read(&text);
        assert_eq!(traces.len(), 1);
        assert_eq!(stats.skipped, 2);
        assert_eq!(stats.skipped_at, [2, 3]);
        assert!(stats.truncated_tail);
    }

    #[test]
    fn a_pretty_printed_document_and_a_jaeger_answer_are_read_whole() {
        let value: serde_json::Value = serde_json::from_str(LINE).unwrap();
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let (_, stats) = read(&pretty);
        assert!(stats.skipped > 0, "line by line it does not parse");
        let (traces, parsed) = read_document(&pretty);
        assert!(parsed);
        assert_eq!(traces.len(), 1);
        let (traces, parsed) = read_document(&format!("{{\"result\":{LINE}}}"));
        assert!(parsed);
        assert_eq!(traces.len(), 1);
        assert!(!read_document("[1, 2]").1);
    }

    #[test]
    fn ids_may_be_base64_and_empty_parents_are_roots() {
        let line = LINE
            .replace(
                "0af7651916cd43dd8448eb211c80319c",
                "CvdlGRbNQ92ESOshHIAxnA==",
            )
            .replace(
                "\"spanId\":\"b7ad6b7169203331\"",
                "\"spanId\":\"t61rcWkgMzE=\",\"parentSpanId\":\"\"",
            );
        let (traces, _) = read(&line);
        assert_eq!(traces[0].id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(traces[0].spans[0].id, 0xb7ad6b7169203331);
        assert_eq!(traces[0].spans[0].parent, 0);
    }

    /// A span with everything OTLP JSON carries: a scope, a kind, typed
    /// resource and span attributes, events, a link, an error status.
    const WHOLE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}},{"key":"service.version","value":{"stringValue":"1.2"}},{"key":"host.name","value":{"stringValue":"h1"}}]},"scopeSpans":[{"scope":{"name":"scope-a"},"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"00000000000000aa","name":"call","kind":3,"startTimeUnixNano":"1000","endTimeUnixNano":"5000","attributes":[{"key":"s","value":{"stringValue":"x"}},{"key":"b","value":{"boolValue":false}},{"key":"i","value":{"intValue":"-7"}},{"key":"d","value":{"doubleValue":1.5}},{"key":"y","value":{"bytesValue":"AQI="}},{"key":"a","value":{"arrayValue":{"values":[{"intValue":1},{"stringValue":"two"}]}}},{"key":"m","value":{"kvlistValue":{"values":[{"key":"k","value":{"boolValue":true}}]}}},{"key":"e","value":{}}],"events":[{"timeUnixNano":"2000","name":"refused","attributes":[{"key":"level","value":{"stringValue":"WARN"}}]}],"links":[{"traceId":"000000000000000000000000000000bb","spanId":"00000000000000cc"}],"status":{"code":2,"message":"boom"}}]},{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00000000000000dd","name":"bare"}]}]}]}"#;

    #[test]
    fn spans_read_whole_carry_everything_written_in_order() {
        let spans = read_spans(WHOLE.as_bytes()).unwrap();
        assert_eq!(spans.len(), 2);
        let (call, bare) = (&spans[0], &spans[1]);
        assert_eq!(
            (call.parent, &*call.name, &*call.service),
            (0xaa, "call", "svc")
        );
        assert_eq!(call.host(), Some("h1"));
        assert_eq!(call.links(), [(0xbb, 0xcc)]);
        assert_eq!(call.error_message(), Some("boom"));
        assert_eq!(call.text("i"), Some("-7"));
        let record = call.record().unwrap();
        assert_eq!((&*record.scope, record.kind), ("scope-a", 3));
        let key = |k: &str, v: AttrValue| (Box::from(k), v);
        let text = |t: &str| AttrValue::Str(Box::from(t));
        assert_eq!(
            record.resource,
            [
                key("service.name", text("svc")),
                key("service.version", text("1.2")),
                key("host.name", text("h1")),
            ]
        );
        assert_eq!(
            record.attributes,
            [
                key("s", text("x")),
                key("b", AttrValue::Bool(false)),
                key("i", AttrValue::Int(-7)),
                key("d", AttrValue::Double(1.5)),
                key("y", AttrValue::Bytes(Box::from([1u8, 2].as_slice()))),
                key("a", AttrValue::Array(vec![AttrValue::Int(1), text("two")])),
                key("m", AttrValue::Map(vec![key("k", AttrValue::Bool(true))])),
                key("e", AttrValue::Empty),
            ]
        );
        assert_eq!(
            record.events,
            [Event {
                name: Box::from("refused"),
                attributes: vec![key("level", text("WARN"))],
            }]
        );
        let bare_record = bare.record().unwrap();
        assert_eq!((&*bare_record.scope, bare_record.kind), ("", 0));
        assert!(bare_record.attributes.is_empty() && bare_record.events.is_empty());
        assert_eq!(bare_record.resource, record.resource);
        assert!(!bare.error);
    }

    #[test]
    fn spans_read_whole_agree_with_the_reference_decoder() {
        use opentelemetry_proto::tonic::trace::v1::TracesData;
        let reference: TracesData = serde_json::from_str(WHOLE).unwrap();
        let spans = read_spans(WHOLE.as_bytes()).unwrap();
        let theirs: Vec<_> = reference.resource_spans[0]
            .scope_spans
            .iter()
            .flat_map(|ss| &ss.spans)
            .collect();
        assert_eq!(theirs.len(), spans.len());
        for (ours, theirs) in spans.iter().zip(theirs) {
            assert_eq!(ours.trace_hex(), hex::encode(&theirs.trace_id));
            assert_eq!(ours.id_hex(), hex::encode(&theirs.span_id));
            assert_eq!(&*ours.name, theirs.name);
            assert_eq!(ours.record().unwrap().kind, theirs.kind);
            assert_eq!(
                (ours.start, ours.end),
                (theirs.start_time_unix_nano, theirs.end_time_unix_nano)
            );
            assert_eq!(
                ours.record().unwrap().attributes.len(),
                theirs.attributes.len()
            );
            assert_eq!(ours.record().unwrap().events.len(), theirs.events.len());
        }
    }

    #[test]
    fn a_jaeger_answer_with_base64_ids_is_read_whole_and_other_json_is_an_error() {
        let answer = format!(
            "{{\"result\":{}}}",
            WHOLE.replace(
                "0af7651916cd43dd8448eb211c80319c",
                "CvdlGRbNQ92ESOshHIAxnA=="
            )
        );
        let spans = read_spans(answer.as_bytes()).unwrap();
        assert_eq!(spans.len(), 2);
        assert!(
            spans
                .iter()
                .all(|s| s.trace == 0x0af7651916cd43dd8448eb211c80319c)
        );
        assert!(read_spans(br#"{"result":{}}"#).unwrap().is_empty());
        assert!(read_spans(br#"{"other":1}"#).is_err());
        assert!(read_spans(b"not json").is_err());
    }

    #[test]
    fn a_report_keeps_no_detail_and_a_view_no_record() {
        let (traces, _) = read(&format!("{LINE}\n"));
        assert!(traces[0].spans[0].detail.is_none());
        let mut traces = Vec::new();
        let mut scanner = Scanner::new(|t| traces.push(t)).full();
        scanner.lines(WHOLE.as_bytes(), 0, true);
        scanner.finish();
        assert!(traces[0].spans[0].detail.is_some());
        assert!(traces[0].spans[0].record().is_none());
    }

    #[test]
    fn parallel_parsing_reads_what_one_thread_reads() {
        let mut text = String::new();
        for i in 0..6000u32 {
            match i % 1000 {
                7 => text.push_str("garbage\n"),
                8 => text.push('\n'),
                _ => {
                    let id = format!("{:032x}", i / 3 + 1);
                    text.push_str(&LINE.replace("0af7651916cd43dd8448eb211c80319c", &id));
                    text.push('\n');
                }
            }
        }
        text.push_str(&LINE[..50]);
        assert!(text.len() > PARALLEL_FROM);
        let run = |threads: usize| {
            let mut traces = Vec::new();
            let mut scanner =
                Scanner::new(|t: Trace| traces.push((t.id, t.spans.len()))).with_threads(threads);
            let last = scanner.lines(text.as_bytes(), 0, true);
            let stats = scanner.finish();
            traces.sort_unstable();
            (traces, stats, last)
        };
        let one = run(1);
        for threads in [2, 3, 8] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
        assert_eq!(one.1.skipped, 6);
        assert_eq!(one.1.skipped_at, [8, 1008, 2008, 3008, 4008]);
        assert!(one.1.truncated_tail);
        assert_eq!(one.2, 6001);
    }

    #[test]
    fn pieces_are_whole_lines() {
        let body = b"a\n\nbb\nccc\nd";
        for n in 1..6 {
            let pieces = split_at_newlines(body, n);
            assert!(pieces.len() <= n);
            assert_eq!(pieces.join(&b'\n'), body.to_vec(), "{n}");
        }
    }

    #[test]
    fn spans_of_one_trace_on_several_lines_are_one_trace() {
        let second = LINE.replace("b7ad6b7169203331", "00000000000000aa");
        let (traces, _) = read(&format!("{LINE}\n{second}\n"));
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].spans.len(), 2);
    }

    #[test]
    fn only_the_traces_asked_for_are_kept() {
        let other = LINE.replace(
            "0af7651916cd43dd8448eb211c80319c",
            "000000000000000000000000000000bb",
        );
        let mut traces = Vec::new();
        let mut scanner = Scanner::only(|t| traces.push(t), HashSet::from([0xbb]));
        scanner.lines(format!("{LINE}\n{other}\n{LINE}\n").as_bytes(), 0, true);
        let stats = scanner.finish();
        assert_eq!(stats.spans, 3);
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].id, 0xbb);
        assert_eq!(traces[0].spans.len(), 1);
    }

    #[test]
    fn a_trace_unseen_for_the_window_is_handed_on_before_the_end() {
        let handed = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = handed.clone();
        let mut scanner = Scanner::new(move |t: Trace| sink.borrow_mut().push(t.id));
        let mut base = scanner.lines(format!("{LINE}\n").as_bytes(), 0, false);
        let other = LINE.replace(
            "0af7651916cd43dd8448eb211c80319c",
            "000000000000000000000000000000bb",
        );
        let many = format!("{other}\n").repeat(usize::try_from(WINDOW_LINES).unwrap() + 1024);
        base = scanner.lines(many.as_bytes(), base, true);
        assert_eq!(base, WINDOW_LINES + 1025);
        assert_eq!(*handed.borrow(), [0x0af7651916cd43dd8448eb211c80319c]);
        let stats = scanner.finish();
        assert_eq!(*handed.borrow(), [0x0af7651916cd43dd8448eb211c80319c, 0xbb]);
        assert_eq!(stats.lines, WINDOW_LINES + 1025);
    }
}
