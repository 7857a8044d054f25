//! The one trace model: a span as every view reads it, and the spans of
//! one trace. The reader (`scan`) fills it from OTLP JSON; the
//! report keeps the few attributes it reads ([`Attrs`]), a view of one
//! trace (`trace show`, the page's waterfalls) every attribute too
//! ([`Detail`]), and a reader that checks spans whole
//! ([`crate::read_spans`], the tests') everything else the span was
//! written with ([`Record`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use telemetry::spans;

/// The attributes a report reads, typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs {
    /// `process.executable.name`.
    pub program: Option<Box<str>>,
    /// `rex.server.id`.
    pub server: Option<Box<str>>,
    /// `rex.session.warmth`.
    pub warmth: Option<Box<str>>,
    /// `rex.session.reused`.
    pub reused: Option<bool>,
    /// `rex.direction`.
    pub direction: Option<Box<str>>,
    /// `rex.remote.placed`.
    pub placed: bool,
    /// `rex.clock.source`: the clock source that placed a span.
    pub clock_source: Option<Box<str>>,
    /// `rex.clock.bound_ns`: how far off its placement may be.
    pub clock_bound_ns: Option<i64>,
    /// `rex.clock.split` is `unknown`: a `link.transit` leg whose share of
    /// its round trip is not known.
    pub split_unknown: bool,
    /// `rex.round_trip_ns`: the round trip such a leg is part of.
    pub round_trip_ns: Option<i64>,
    /// `rex.stdin.window_wait_ns`: how long a call's stdin waited for its
    /// window.
    pub stdin_window_wait_ns: Option<i64>,
    /// `rex.stdin.window`: the widest stdin window a call had.
    pub stdin_window: Option<i64>,
    /// `rex.output.credit_wait_ns`: how long a call's output waited for
    /// credit.
    pub output_credit_wait_ns: Option<i64>,
    /// `rex.output.window`: the output window a call ended with.
    pub output_window: Option<i64>,
}

/// An attribute value as the reader met it (what [`Attrs`] is filled from).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    /// A string.
    Str(&'a str),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// Anything else.
    Other,
}

impl Attrs {
    /// Takes in attribute `key` if a report reads it.
    pub(crate) fn take(&mut self, key: &str, value: Value<'_>) {
        let text = || match value {
            Value::Str(s) => Some(Box::from(s)),
            _ => None,
        };
        match key {
            "process.executable.name" => self.program = text(),
            "rex.server.id" => self.server = text(),
            "rex.session.warmth" => self.warmth = text(),
            "rex.direction" => self.direction = text(),
            "rex.session.reused" => {
                self.reused = match value {
                    Value::Bool(b) => Some(b),
                    _ => None,
                }
            }
            "rex.remote.placed" => self.placed = value == Value::Bool(true),
            "rex.clock.source" => self.clock_source = text(),
            "rex.clock.bound_ns" => self.clock_bound_ns = int(value),
            "rex.clock.split" => self.split_unknown = value == Value::Str("unknown"),
            "rex.round_trip_ns" => self.round_trip_ns = int(value),
            spans::ATTR_STDIN_WINDOW_WAIT => self.stdin_window_wait_ns = int(value),
            spans::ATTR_STDIN_WINDOW => self.stdin_window = int(value),
            spans::ATTR_OUTPUT_CREDIT_WAIT => self.output_credit_wait_ns = int(value),
            spans::ATTR_OUTPUT_WINDOW => self.output_window = int(value),
            _ => {}
        }
    }
}

fn int(value: Value<'_>) -> Option<i64> {
    match value {
        Value::Int(i) => Some(i),
        _ => None,
    }
}

/// What a view of one trace reads beyond [`Attrs`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    /// The host it was made on: the resource's `host.name`, else the
    /// span's own (the exec-server's stages a client brought home).
    pub host: Option<Arc<str>>,
    /// Every attribute, its value as text: strings as they are, scalars
    /// as Rust prints them, arrays as `[a, b]`, maps as `{k=v, …}`, bytes
    /// as hex.
    pub attributes: Vec<(Box<str>, Box<str>)>,
    /// Links, as (trace id, span id).
    pub links: Vec<(u128, u64)>,
    /// The status message when the status is error (`error` if it has
    /// none).
    pub error_message: Option<Box<str>>,
    /// The span as written, when it was read whole ([`crate::read_spans`]).
    pub record: Option<Box<Record>>,
}

/// A span as written, beyond what a view reads: its scope, its kind, its
/// resource's and its own attributes typed, and its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// The instrumentation scope's name (empty if it has none).
    pub scope: Box<str>,
    /// The span kind, as OTLP numbers it (0: unspecified, 1: internal,
    /// 2: server, 3: client, 4: producer, 5: consumer).
    pub kind: i32,
    /// The resource's attributes, in the order written.
    pub resource: Vec<(Box<str>, AttrValue)>,
    /// The span's attributes, in the order written.
    pub attributes: Vec<(Box<str>, AttrValue)>,
    /// The span's events, in the order written.
    pub events: Vec<Event>,
}

/// An event on a span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// Its name (for a `tracing` event, its message).
    pub name: Box<str>,
    /// Its attributes, in the order written.
    pub attributes: Vec<(Box<str>, AttrValue)>,
}

/// An attribute value as written, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Box<str>),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// Bytes (base64 in the JSON).
    Bytes(Box<[u8]>),
    /// An array.
    Array(Vec<AttrValue>),
    /// A list of keys and values, in the order written.
    Map(Vec<(Box<str>, AttrValue)>),
    /// No value, or one that could not be read.
    Empty,
}

/// One span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The trace id.
    pub trace: u128,
    /// The span id.
    pub id: u64,
    /// The parent span id, 0 for a root.
    pub parent: u64,
    /// The span name (interned).
    pub name: Arc<str>,
    /// The resource's `service.name` (interned), or `unknown`.
    pub service: Arc<str>,
    /// Start, nanoseconds since the Unix epoch.
    pub start: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end: u64,
    /// Whether its status is error.
    pub error: bool,
    /// The attributes a report reads.
    pub attrs: Attrs,
    /// The rest, when the reader was asked for it (`Scanner::full`).
    pub detail: Option<Box<Detail>>,
}

impl Span {
    /// A span with no attributes.
    pub fn new(trace: u128, id: u64, parent: u64, name: &str, start: u64, end: u64) -> Span {
        Span {
            trace,
            id,
            parent,
            name: Arc::from(name),
            service: Arc::from("unknown"),
            start,
            end,
            error: false,
            attrs: Attrs::default(),
            detail: None,
        }
    }

    /// Its duration in nanoseconds (0 if it ends before it starts).
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Its end, never before its start.
    pub fn clamped_end(&self) -> u64 {
        self.end.max(self.start)
    }

    /// The host it was made on, if read.
    pub fn host(&self) -> Option<&str> {
        self.detail.as_ref().and_then(|d| d.host.as_deref())
    }

    /// Every attribute as text (none unless read in full).
    pub fn attributes(&self) -> &[(Box<str>, Box<str>)] {
        self.detail
            .as_ref()
            .map_or(&[], |d| d.attributes.as_slice())
    }

    /// Attribute `key` as text.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.attributes()
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// Attribute `key` as an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.text(key).and_then(|v| v.parse().ok())
    }

    /// The span as written, if it was read whole ([`crate::read_spans`]).
    pub fn record(&self) -> Option<&Record> {
        self.detail.as_ref().and_then(|d| d.record.as_deref())
    }

    /// The links, as (trace id, span id).
    pub fn links(&self) -> &[(u128, u64)] {
        self.detail.as_ref().map_or(&[], |d| d.links.as_slice())
    }

    /// The error status's message (`error` when it has none, or when it
    /// was not read in full); `None` unless the status is error.
    pub fn error_message(&self) -> Option<&str> {
        if !self.error {
            return None;
        }
        Some(
            self.detail
                .as_ref()
                .and_then(|d| d.error_message.as_deref())
                .unwrap_or("error"),
        )
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_hex(&self) -> String {
        trace_hex(self.trace)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn id_hex(&self) -> String {
        format!("{:016x}", self.id)
    }

    /// Whether the client wrote it from the exec-server's (or a relay's)
    /// summary: a copy placed on the client's clock.
    pub fn is_placed(&self) -> bool {
        self.attrs.placed
    }

    /// Its detail, added if it had none (for building spans by hand).
    pub fn detail_mut(&mut self) -> &mut Detail {
        self.detail.get_or_insert_with(Box::default)
    }

    /// Sets attribute `key` from its text, in both the typed attributes
    /// and the detail (for building spans by hand).
    #[cfg(test)]
    pub(crate) fn set_attribute(&mut self, key: &str, value: &str) {
        let typed = if let Ok(i) = value.parse::<i64>() {
            Value::Int(i)
        } else if let Ok(b) = value.parse::<bool>() {
            Value::Bool(b)
        } else {
            Value::Str(value)
        };
        self.attrs.take(key, typed);
        self.detail_mut()
            .attributes
            .push((Box::from(key), Box::from(value)));
    }
}

/// Text seen, each kept once and shared (bounded: a hostile file's
/// distinct texts are not all kept).
#[derive(Debug)]
pub(crate) struct Interner {
    map: HashMap<Box<str>, Arc<str>>,
    bound: usize,
}

impl Interner {
    /// An interner keeping at most `bound` texts.
    pub(crate) fn new(bound: usize) -> Interner {
        Interner {
            map: HashMap::new(),
            bound,
        }
    }

    /// `text`, shared with every earlier `text` kept.
    pub(crate) fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(found) = self.map.get(text) {
            return found.clone();
        }
        let interned: Arc<str> = Arc::from(text);
        if self.map.len() < self.bound {
            self.map.insert(text.into(), interned.clone());
        }
        interned
    }
}

/// A trace id as 32 lowercase hex digits.
pub fn trace_hex(trace: u128) -> String {
    format!("{trace:032x}")
}

/// The spans of one trace, from every line that held them.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The trace id.
    pub id: u128,
    /// Its spans, in the order read.
    pub spans: Vec<Span>,
    /// Spans beyond the reader's bound per trace, not kept.
    pub dropped: usize,
}

impl Trace {
    /// A trace of `spans`.
    pub fn new(id: u128, spans: Vec<Span>) -> Trace {
        Trace {
            id,
            spans,
            dropped: 0,
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn id_hex(&self) -> String {
        trace_hex(self.id)
    }
}

/// Where a span and the client's placed copy of it are both there (the
/// exec-server wrote its own into the same file), the copy goes.
pub fn without_placed_copies(spans: Vec<Span>) -> Vec<Span> {
    if !spans.iter().any(Span::is_placed) {
        return spans;
    }
    let own: HashSet<u64> = spans
        .iter()
        .filter(|s| !s.is_placed())
        .map(|s| s.id)
        .collect();
    spans
        .into_iter()
        .filter(|s| !s.is_placed() || !own.contains(&s.id))
        .collect()
}

/// A span of the client's, for tests.
#[cfg(test)]
pub(crate) fn client_span(
    trace: u128,
    id: u64,
    parent: u64,
    name: &str,
    start: u64,
    end: u64,
) -> Span {
    Span {
        service: Arc::from("core-client"),
        ..Span::new(trace, id, parent, name, start, end)
    }
}
