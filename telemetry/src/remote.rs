//! The remote side comes home (docs/spans.md, "The remote side comes home"): the exec-server's stage
//! spans for one call, summarised into the call's final event
//! ([`Timeline::to_wire`]), and placed on the client's clock
//! ([`place`]) so that a client with no collector can write them into its
//! local trace file (through the [`RemoteSink`] the binary installs).
//!
//! The summary is bounded (`MAX_STAGES` stages of at most
//! `MAX_ATTRIBUTES` attributes, texts of at most `MAX_TEXT` bytes) and
//! versioned (`VERSION`); a stage whose name is not in the vocabulary is
//! left out on receipt. Times are offsets from the envelope's send time on
//! the sender's clock, so one clock-offset estimate places them all.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanContext, SpanId, Status, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::pb::session::{CallTimings, StageAttribute, StageTiming, stage_attribute};
use proto::session::peer_clock::Offset;

use crate::spans;

/// The summary format this build writes and reads.
const VERSION: u32 = 1;
/// Most stages one call's summary carries.
const MAX_STAGES: usize = 32;
/// Most attributes per stage.
const MAX_ATTRIBUTES: usize = 8;
/// Longest attribute key or text value, in bytes.
const MAX_TEXT: usize = 64;

/// An attribute value: a counter, a short text or a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// A count, size, duration or code.
    Int(i64),
    /// A short text (e.g. the program name).
    Text(String),
    /// A yes or no (e.g. whether the call has a terminal).
    Flag(bool),
}

/// One finished (or finishing) stage span, as the exec-server made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Its vocabulary name.
    name: &'static str,
    /// Its span id (as exported by the exec-server itself).
    pub span_id: SpanId,
    /// Its parent's span id (`SpanId::INVALID`: none).
    parent: SpanId,
    /// When it started.
    start: SystemTime,
    /// When it ended; `None` for a span that ends with the summary's own
    /// message (the call's exec and push spans).
    pub end: Option<SystemTime>,
    /// It ended in error.
    error: bool,
    /// Counters and short texts (never arguments, environment or output).
    attributes: Vec<(&'static str, Value)>,
}

/// The stages of one call, bounded: stages beyond `MAX_STAGES` are
/// counted, not kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    stages: Vec<Stage>,
    dropped: u32,
}

impl Timeline {
    /// Adds a stage (counted as dropped once the timeline is full).
    pub fn push(&mut self, stage: Stage) {
        if self.stages.len() < MAX_STAGES {
            self.stages.push(stage);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Adds every stage of `other`.
    pub fn append(&mut self, other: Timeline) {
        self.dropped = self.dropped.saturating_add(other.dropped);
        for stage in other.stages {
            self.push(stage);
        }
    }

    /// The stages kept.
    #[cfg(test)]
    fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Stages left out.
    #[cfg(test)]
    fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The wire summary, with times relative to `sent` (the send time the
    /// carrying envelope states), made on `host`. Open stages end at
    /// `sent`.
    pub fn to_wire(&self, sent: SystemTime, host: Option<&str>) -> CallTimings {
        let stages = self
            .stages
            .iter()
            .filter(|s| s.span_id != SpanId::INVALID)
            .map(|s| {
                let end = s.end.unwrap_or(sent);
                StageTiming {
                    name: s.name.to_owned(),
                    span_id: u64::from_be_bytes(s.span_id.to_bytes()),
                    parent_span_id: u64::from_be_bytes(s.parent.to_bytes()),
                    start_ns: signed_nanos(s.start, sent),
                    duration_ns: end
                        .duration_since(s.start)
                        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                    error: s.error,
                    attributes: s
                        .attributes
                        .iter()
                        .take(MAX_ATTRIBUTES)
                        .map(|(k, v)| StageAttribute {
                            key: (*k).to_owned(),
                            value: Some(match v {
                                Value::Int(n) => stage_attribute::Value::Int(*n),
                                Value::Text(t) => {
                                    stage_attribute::Value::Text(truncate(t, MAX_TEXT).to_owned())
                                }
                                Value::Flag(b) => stage_attribute::Value::Flag(*b),
                            }),
                        })
                        .collect(),
                }
            })
            .collect();
        CallTimings {
            version: VERSION,
            stages,
            dropped: self.dropped,
            host: host
                .map(|h| truncate(h, MAX_TEXT).to_owned())
                .unwrap_or_default(),
        }
    }
}

/// A remote stage placed on this host's clock, ready to be written as a
/// span of the exec-server's.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSpan {
    /// The service that made it: [`EXEC_SERVER`] or [`RELAY`].
    pub(crate) service: &'static str,
    /// The call's trace.
    pub(crate) trace_id: TraceId,
    /// The exec-server's span id.
    pub(crate) span_id: SpanId,
    /// Its parent (`SpanId::INVALID`: none).
    pub(crate) parent: SpanId,
    /// Its vocabulary name.
    pub(crate) name: &'static str,
    /// Start, on this host's clock.
    pub(crate) start: SystemTime,
    /// End, on this host's clock.
    pub(crate) end: SystemTime,
    /// It ended in error.
    pub(crate) error: bool,
    /// Its attributes, and how it was placed (`rex.clock_offset_ns`,
    /// `rex.remote.placed`).
    pub(crate) attributes: Vec<KeyValue>,
}

/// A call's remote stages on this host's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The stages, as spans of the exec-server's.
    pub spans: Vec<RemoteSpan>,
    /// The summary's send time (where the exec-server's open stages end).
    pub sent: SystemTime,
    /// The offset used (the peer's clock minus ours) and its source.
    pub offset: Offset,
}

impl Placed {
    /// Where the remote work starts: its earliest stage, or the send time.
    pub fn first_start(&self) -> SystemTime {
        self.spans
            .iter()
            .map(|s| s.start)
            .min()
            .unwrap_or(self.sent)
            .min(self.sent)
    }
}

/// Why a summary could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unplaced {
    /// A format this build does not read.
    #[error("remote timings in format version {0}, this build reads version {VERSION}")]
    Version(u32),
    /// The carrying message states no send time.
    #[error("remote timings without a send time")]
    NoSendTime,
    /// The times cannot be on this host's clock (out of range).
    #[error("remote timings out of range")]
    OutOfRange,
}

/// What this host saw of the call, on its own clock: the remote side's
/// work lies between the request leaving and the final event arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the exec request was taken for sending.
    pub request_sent: SystemTime,
    /// When the frame completing the final event arrived.
    pub final_arrived: SystemTime,
}

/// The exec-server's own times of a call's exchange, on its clock (Unix
/// nanoseconds): when its earliest stage began (the request's receipt)
/// and when the summary was sent (`sent_unix_nanos`, the carrying
/// envelope's send time). With the client's send and receive times they
/// make a four-timestamp clock sample (`Sample::exchange`).
pub fn peer_times(timings: &CallTimings, sent_unix_nanos: u64) -> Option<(u64, u64)> {
    if timings.version != VERSION || sent_unix_nanos == 0 {
        return None;
    }
    let earliest = timings
        .stages
        .iter()
        .take(MAX_STAGES)
        .map(|s| s.start_ns)
        .min()?
        .min(0);
    let received = i128::from(sent_unix_nanos) + i128::from(earliest);
    Some((u64::try_from(received).ok()?, sent_unix_nanos))
}

/// Places a call's remote timings on this host's clock: `sent_unix_nanos`
/// is the carrying envelope's send time (the peer's clock) and `offset`
/// the peer's clock minus ours, an interval from its best source. Where
/// the offset would put the remote work outside `window`, it is moved to
/// the nearest one within its bound that keeps cause before effect (a
/// two-way estimate, whose error is up to half a round trip, as far as
/// that takes: as a clock-skew adjuster does); the source, the offset
/// used, its bound (the source's, plus the move) and the estimate it was
/// moved from are attributes.
/// Stages with names outside the vocabulary, invalid ids, or beyond the
/// limits are left out.
pub fn place(
    timings: &CallTimings,
    trace_id: TraceId,
    sent_unix_nanos: u64,
    offset: Offset,
    window: Option<Window>,
) -> Result<Placed, Unplaced> {
    let offset_ns = offset.offset_nanos;
    if timings.version != VERSION {
        return Err(Unplaced::Version(timings.version));
    }
    if sent_unix_nanos == 0 {
        return Err(Unplaced::NoSendTime);
    }
    let sent = i128::from(sent_unix_nanos);
    let earliest = timings
        .stages
        .iter()
        .take(MAX_STAGES)
        .map(|s| i128::from(s.start_ns))
        .min()
        .unwrap_or(0)
        .min(0);
    let used = match window {
        Some(w) => causal_offset(offset, sent + earliest, sent, w),
        None => i128::from(offset_ns),
    };
    // The send time on our clock.
    let sent_here = sent - used;
    let used = i64::try_from(used).unwrap_or(offset_ns);
    // Moved from the source's value, the offset used is as far from the
    // truth as the source's bound plus the move, at worst.
    let placed_by = Offset {
        offset_nanos: used,
        bound: offset
            .bound
            .saturating_add(Duration::from_nanos(used.abs_diff(offset_ns))),
        ..offset
    };
    let at = |nanos: i128| -> Option<SystemTime> {
        let nanos = u64::try_from(nanos).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
    };
    let sent_at = at(sent_here).ok_or(Unplaced::OutOfRange)?;
    let host = truncate(&timings.host, MAX_TEXT);
    let spans = timings
        .stages
        .iter()
        .take(MAX_STAGES)
        .filter_map(|s| {
            let name = *spans::ALL.iter().find(|n| **n == s.name)?;
            let span_id = SpanId::from_bytes(s.span_id.to_be_bytes());
            if span_id == SpanId::INVALID {
                return None;
            }
            let start_nanos = sent_here + i128::from(s.start_ns);
            let start = at(start_nanos)?;
            let end = at(start_nanos + i128::from(s.duration_ns))?;
            let mut attributes: Vec<KeyValue> = s
                .attributes
                .iter()
                .take(MAX_ATTRIBUTES)
                .filter(|a| valid_key(&a.key))
                .filter_map(|a| {
                    let key = a.key.clone();
                    match a.value.as_ref()? {
                        stage_attribute::Value::Int(n) => Some(KeyValue::new(key, *n)),
                        stage_attribute::Value::Flag(b) => Some(KeyValue::new(key, *b)),
                        stage_attribute::Value::Text(t) => {
                            Some(KeyValue::new(key, truncate(t, MAX_TEXT).to_owned()))
                        }
                    }
                })
                .collect();
            attributes.push(KeyValue::new(
                spans::ATTR_CLOCK_SOURCE,
                offset.source.as_str(),
            ));
            attributes.push(KeyValue::new(spans::ATTR_CLOCK_OFFSET, used));
            attributes.push(KeyValue::new(
                spans::ATTR_CLOCK_BOUND,
                placed_by.bound_nanos(),
            ));
            if used != offset_ns {
                attributes.push(KeyValue::new(spans::ATTR_CLOCK_MEASURED, offset_ns));
            }
            attributes.push(KeyValue::new(PLACED, true));
            if !host.is_empty() {
                attributes.push(KeyValue::new(crate::host::HOST_NAME, host.to_owned()));
            }
            Some(RemoteSpan {
                service: EXEC_SERVER,
                trace_id,
                span_id,
                parent: SpanId::from_bytes(s.parent_span_id.to_be_bytes()),
                name,
                start,
                end,
                error: s.error,
                attributes,
            })
        })
        .collect();
    Ok(Placed {
        spans,
        sent: sent_at,
        offset: placed_by,
    })
}

/// The offset (peer minus ours) nearest to `offset`'s value under which
/// the remote work, from `first` to `last` on the peer's clock, lies
/// within `window` on ours, searched within the offset's bound; for a
/// two-way estimate that contradicts its bound (drift beyond the stated
/// rate), anywhere that fits. The value itself when no offset can
/// (clocks running at different rates), or when an exact source (the
/// same host) has no room.
fn causal_offset(offset: Offset, first: i128, last: i128, window: Window) -> i128 {
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0))
    };
    // first - o >= request_sent, and last - o <= final_arrived.
    let high = first - nanos(window.request_sent);
    let low = last - nanos(window.final_arrived);
    let estimate = i128::from(offset.offset_nanos);
    if low > high {
        return estimate;
    }
    let bound = i128::from(offset.bound_nanos());
    let (lo, hi) = (low.max(estimate - bound), high.min(estimate + bound));
    if lo <= hi {
        estimate.clamp(lo, hi)
    } else if offset.source.knows_split() {
        estimate
    } else {
        estimate.clamp(low, high)
    }
}

/// The service name of placed exec-server stages.
pub const EXEC_SERVER: &str = "exec-server";
/// The service name of placed relay forwards.
pub const RELAY: &str = "relay";

/// The attribute that marks a span written by the client from the
/// exec-server's summary (a copy of a span the exec-server exports
/// itself): a reader that finds both keeps the exec-server's own.
pub(crate) const PLACED: &str = "rex.remote.placed";

/// Where placed remote spans go: the local trace file, in the binaries
/// that write one (installed by `telemetry::setup`).
pub trait RemoteSink: Send + Sync + 'static {
    /// Takes one call's remote spans; must not block.
    fn record(&self, spans: Vec<RemoteSpan>);
}

static SINK: RwLock<Option<Arc<dyn RemoteSink>>> = RwLock::new(None);

/// Installs (or, with `None`, removes) the process's remote-span sink.
#[cfg(any(test, feature = "export"))]
pub(crate) fn set_sink(sink: Option<Arc<dyn RemoteSink>>) {
    *SINK.write().unwrap_or_else(PoisonError::into_inner) = sink;
}

/// The installed sink, if any: without one, remote timings are not kept.
pub fn sink() -> Option<Arc<dyn RemoteSink>> {
    SINK.read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(Arc::clone)
}

/// A stage span being made: the OpenTelemetry span (exported by this host
/// as usual) and its [`Stage`] for the call's summary, kept from the same
/// timestamps.
pub struct StageSpan {
    span: BoxedSpan,
    stage: Stage,
}

impl std::fmt::Debug for StageSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageSpan")
            .field("stage", &self.stage)
            .finish()
    }
}

impl StageSpan {
    /// Wraps `span`, started at `start` under `parent` as `name`.
    pub fn wrap(span: BoxedSpan, name: &'static str, parent: &Context, start: SystemTime) -> Self {
        let span_id = span.span_context().span_id();
        Self {
            span,
            stage: Stage {
                name,
                span_id,
                parent: parent.span().span_context().span_id(),
                start,
                end: None,
                error: false,
                attributes: Vec::new(),
            },
        }
    }

    /// Starts `name` under `parent` at `start`.
    pub fn start(
        tracer: &BoxedTracer,
        name: &'static str,
        parent: &Context,
        start: SystemTime,
    ) -> Self {
        let span = tracer
            .span_builder(name)
            .with_start_time(start)
            .start_with_context(tracer, parent);
        Self::wrap(span, name, parent, start)
    }

    /// The span's context.
    pub fn span_context(&self) -> &SpanContext {
        self.span.span_context()
    }

    /// Sets a counter on both.
    pub fn set_int(&mut self, key: &'static str, value: i64) {
        self.span.set_attribute(KeyValue::new(key, value));
        self.stage.attributes.push((key, Value::Int(value)));
    }

    /// Sets a short text on both.
    pub fn set_text(&mut self, key: &'static str, value: String) {
        self.span.set_attribute(KeyValue::new(key, value.clone()));
        self.stage.attributes.push((key, Value::Text(value)));
    }

    /// Sets a flag on both.
    pub fn set_flag(&mut self, key: &'static str, value: bool) {
        self.span.set_attribute(KeyValue::new(key, value));
        self.stage.attributes.push((key, Value::Flag(value)));
    }

    /// Notes an attribute in the stage only (the span was given it when it
    /// started).
    pub(crate) fn note_text(&mut self, key: &'static str, value: &str) {
        self.stage
            .attributes
            .push((key, Value::Text(value.to_owned())));
    }

    /// Marks both as failed (`message` goes on the exported span only).
    pub fn fail(&mut self, message: String) {
        self.span.set_status(Status::error(message));
        self.stage.error = true;
    }

    /// Ends the span at `at`; its stage.
    pub fn end_at(mut self, at: SystemTime) -> Stage {
        self.span.end_with_timestamp(at);
        self.stage.end = Some(at);
        self.stage
    }

    /// Leaves the span to be ended later (when its message has left); its
    /// stage, open (it ends with the summary's own message).
    pub fn into_parts(self) -> (BoxedSpan, Stage) {
        (self.span, self.stage)
    }
}

/// `b - a` in nanoseconds, signed, saturating.
fn signed_nanos(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Attribute keys as the vocabulary writes them: lowercase letters,
/// digits, `.` and `_`, within `MAX_TEXT`.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_TEXT
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::session::peer_clock::Source;

    /// A two-way estimate of `nanos`, loose enough for any test's window.
    fn two_way(nanos: i64) -> Offset {
        Offset {
            source: Source::TwoWay,
            offset_nanos: nanos,
            bound: Duration::from_secs(3600),
        }
    }

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    /// Remote work from 10 to 20 (the peer's clock: a frame received,
    /// the exec running till the send at 20), its request sent at 4 and
    /// its answer back at 16 (ours): the wire, the send time, the window.
    fn work_10_to_20() -> (CallTimings, SystemTime, Window) {
        let mut tl = Timeline::default();
        tl.push(stage(spans::RELAY_FRAME_RECV, 1, 9, 10, Some(11)));
        tl.push(stage(spans::RPC_SERVER_EXEC, 2, 9, 11, None));
        let sent = t(20);
        let window = Window {
            request_sent: t(4),
            final_arrived: t(16),
        };
        (tl.to_wire(sent, None), sent, window)
    }

    fn stage(name: &'static str, id: u64, parent: u64, start: u64, end: Option<u64>) -> Stage {
        Stage {
            name,
            span_id: SpanId::from(id),
            parent: SpanId::from(parent),
            start: t(start),
            end: end.map(t),
            error: false,
            attributes: vec![("rex.events", Value::Int(3))],
        }
    }

    fn nanos(at: SystemTime) -> u64 {
        u64::try_from(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap()
    }

    #[test]
    fn stages_round_trip_onto_a_clock_with_an_offset() {
        let mut tl = Timeline::default();
        tl.push(stage(spans::RPC_SERVER_EXEC, 1, 9, 10, None));
        tl.push(stage(spans::PROCESS_RUN, 2, 1, 12, Some(15)));
        let sent = t(20);
        let wire = tl.to_wire(sent, None);
        assert_eq!(wire.version, VERSION);
        // The peer's clock is 2 s ahead of ours.
        let offset = 2_000_000_000i64;
        let placed = place(
            &wire,
            TraceId::from(7u128),
            nanos(sent),
            two_way(offset),
            None,
        )
        .unwrap()
        .spans;
        assert_eq!(placed.len(), 2);
        let back = |at: u64| t(at) - Duration::from_secs(2);
        assert_eq!(placed[0].name, spans::RPC_SERVER_EXEC);
        assert_eq!(placed[0].start, back(10));
        assert_eq!(
            placed[0].end,
            back(20),
            "an open stage ends at the send time"
        );
        assert_eq!(placed[1].parent, SpanId::from(1u64));
        assert_eq!((placed[1].start, placed[1].end), (back(12), back(15)));
        assert!(
            placed[1]
                .attributes
                .contains(&KeyValue::new("rex.events", 3i64))
        );
        assert!(
            placed[1]
                .attributes
                .contains(&KeyValue::new(spans::ATTR_CLOCK_OFFSET, offset))
        );
        assert_eq!(placed[1].trace_id, TraceId::from(7u128));
    }

    #[test]
    fn the_peer_times_are_its_earliest_stage_and_the_send_time() {
        let mut tl = Timeline::default();
        tl.push(stage(spans::RELAY_FRAME_RECV, 1, 9, 10, Some(11)));
        tl.push(stage(spans::RPC_SERVER_EXEC, 2, 9, 11, None));
        let sent = t(20);
        let wire = tl.to_wire(sent, None);
        assert_eq!(
            peer_times(&wire, nanos(sent)),
            Some((nanos(t(10)), nanos(sent)))
        );
        assert_eq!(peer_times(&wire, 0), None);
        assert_eq!(
            peer_times(&Timeline::default().to_wire(sent, None), 1),
            None
        );
    }

    #[test]
    fn the_host_travels_with_the_summary_and_names_each_placed_span() {
        let mut tl = Timeline::default();
        tl.push(stage(spans::RPC_SERVER_EXEC, 1, 9, 10, None));
        let sent = t(20);
        let long = "h".repeat(100);
        let wire = tl.to_wire(sent, Some(&long));
        assert_eq!(wire.host.len(), MAX_TEXT, "bounded");
        let wire = tl.to_wire(sent, Some("build-box"));
        let placed = place(&wire, TraceId::from(7u128), nanos(sent), two_way(0), None)
            .unwrap()
            .spans;
        assert!(
            placed[0]
                .attributes
                .contains(&KeyValue::new(crate::host::HOST_NAME, "build-box"))
        );
        let unnamed = tl.to_wire(sent, None);
        let placed = place(
            &unnamed,
            TraceId::from(7u128),
            nanos(sent),
            two_way(0),
            None,
        )
        .unwrap()
        .spans;
        assert!(
            !placed[0]
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == crate::host::HOST_NAME)
        );
    }

    #[test]
    fn a_wrong_estimate_is_moved_to_keep_cause_before_effect() {
        // The remote work runs 10..20 (its clock, 5 ms ahead of ours); the
        // client sent the request at 4 and got the answer at 16 (ours).
        let (wire, sent, window) = work_10_to_20();
        let ms = |n: i64| n * 1_000_000;
        let offset_of = |placed: &[RemoteSpan]| {
            placed[0]
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == spans::ATTR_CLOCK_OFFSET)
                .map(|kv| kv.value.clone())
                .unwrap()
        };
        // A good estimate is kept: the work lands at 5..15.
        let placed = place(
            &wire,
            TraceId::from(1u128),
            nanos(sent),
            two_way(ms(5)),
            Some(window),
        )
        .unwrap()
        .spans;
        assert_eq!(placed[0].start, t(5));
        assert_eq!(placed[1].end, t(15));
        assert_eq!(offset_of(&placed), opentelemetry::Value::I64(ms(5)));
        // An estimate 3 ms too small would end it after the answer came:
        // moved to the nearest possible (4 ms), the measured one kept.
        let placed = place(
            &wire,
            TraceId::from(1u128),
            nanos(sent),
            two_way(ms(2)),
            Some(window),
        )
        .unwrap()
        .spans;
        assert_eq!(placed[1].end, t(16));
        assert_eq!(offset_of(&placed), opentelemetry::Value::I64(ms(4)));
        assert!(
            placed[0]
                .attributes
                .contains(&KeyValue::new(spans::ATTR_CLOCK_MEASURED, ms(2)))
        );
        // Too large: it would start before the request was sent.
        let placed = place(
            &wire,
            TraceId::from(1u128),
            nanos(sent),
            two_way(ms(9)),
            Some(window),
        )
        .unwrap()
        .spans;
        assert_eq!(placed[0].start, t(4));
        // Seconds of skew are no different.
        let placed = place(
            &wire,
            TraceId::from(1u128),
            nanos(sent),
            two_way(-ms(2_000)),
            Some(window),
        )
        .unwrap()
        .spans;
        assert!(placed[0].start >= t(4) && placed[1].end <= t(16));
    }

    #[test]
    fn an_exact_source_is_moved_only_within_its_bound() {
        // The same work (10..20 on the peer's clock), the request sent at
        // 4 and the answer back at 16 on ours.
        let (wire, sent, window) = work_10_to_20();
        let ms = |n: u64| Duration::from_millis(n);
        let at = |source, offset: i64, bound| Offset {
            source,
            offset_nanos: offset * 1_000_000,
            bound,
        };
        let place_at = |o: Offset| {
            place(&wire, TraceId::from(1u128), nanos(sent), o, Some(window))
                .unwrap()
                .spans
        };
        // The same host, 0 ± 0, though the window cannot hold it: kept,
        // and said to be exact.
        let placed = place_at(at(Source::SameHost, 0, Duration::ZERO));
        assert_eq!((placed[0].start, placed[1].end), (t(10), t(20)));
        let attrs = &placed[0].attributes;
        assert!(attrs.contains(&KeyValue::new(spans::ATTR_CLOCK_SOURCE, "same-host")));
        assert!(attrs.contains(&KeyValue::new(spans::ATTR_CLOCK_BOUND, 0i64)));
        // Synchronized, 0 ± 5 ms: moved 4 ms, within its bound; the
        // truth may now be 5 + 4 ms from the offset used.
        let placed = place_at(at(Source::Synchronized, 0, ms(5)));
        assert_eq!(placed[1].end, t(16));
        assert!(placed[0].attributes.contains(&KeyValue::new(
            spans::ATTR_CLOCK_BOUND,
            i64::try_from(ms(9).as_nanos()).unwrap()
        )));
        // ± 1 ms cannot reach: kept where its source put it.
        let placed = place_at(at(Source::Synchronized, 0, ms(1)));
        assert_eq!(placed[1].end, t(20));
        // A two-way estimate whose bound cannot reach is moved anyway: its
        // bound assumed a drift rate the clocks exceeded.
        let placed = place_at(at(Source::TwoWay, 0, ms(1)));
        assert_eq!(placed[1].end, t(16));
        let attrs = &placed[0].attributes;
        assert!(attrs.contains(&KeyValue::new(spans::ATTR_CLOCK_SOURCE, "two-way")));
        assert!(attrs.contains(&KeyValue::new(spans::ATTR_CLOCK_MEASURED, 0i64)));
    }

    #[test]
    fn every_kind_of_attribute_comes_home_as_its_kind() {
        let mut tl = Timeline::default();
        let mut exec = stage(spans::RPC_SERVER_EXEC, 1, 9, 10, None);
        exec.attributes = vec![
            ("rex.terminal", Value::Flag(true)),
            ("rex.terminal.rows", Value::Int(30)),
            ("process.executable.name", Value::Text("sh".into())),
        ];
        tl.push(exec);
        let sent = t(20);
        let placed = place(
            &tl.to_wire(sent, None),
            TraceId::from(1u128),
            nanos(sent),
            two_way(0),
            None,
        )
        .unwrap()
        .spans;
        let attrs = &placed[0].attributes;
        for want in [
            KeyValue::new("rex.terminal", true),
            KeyValue::new("rex.terminal.rows", 30i64),
            KeyValue::new("process.executable.name", "sh"),
        ] {
            assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
        }
    }

    #[test]
    fn the_timeline_is_bounded_and_counts_what_it_drops() {
        let mut tl = Timeline::default();
        for i in 0..(MAX_STAGES as u64 + 5) {
            tl.push(stage(spans::PROCESS_SPAWN, i + 1, 0, 0, Some(1)));
        }
        assert_eq!(tl.stages().len(), MAX_STAGES);
        assert_eq!(tl.dropped(), 5);
        let mut other = Timeline::default();
        other.push(stage(spans::PROCESS_RUN, 99, 0, 0, Some(1)));
        tl.append(other);
        assert_eq!(tl.dropped(), 6);
        assert_eq!(tl.to_wire(t(2), None).dropped, 6);
    }

    #[test]
    fn what_a_peer_may_not_send_is_left_out() {
        let sent = t(100);
        let mut wire = Timeline::default().to_wire(sent, None);
        let good = StageTiming {
            name: spans::PROCESS_RUN.into(),
            span_id: 5,
            parent_span_id: 0,
            start_ns: -1_000,
            duration_ns: 500,
            error: true,
            attributes: vec![
                StageAttribute {
                    key: "Bad Key".into(),
                    value: Some(stage_attribute::Value::Int(1)),
                },
                StageAttribute {
                    key: "process.executable.name".into(),
                    value: Some(stage_attribute::Value::Text("x".repeat(500))),
                },
            ],
        };
        wire.stages.push(good.clone());
        wire.stages.push(StageTiming {
            name: "made.up".into(),
            ..good.clone()
        });
        wire.stages.push(StageTiming {
            span_id: 0,
            ..good.clone()
        });
        let placed = place(&wire, TraceId::from(1u128), nanos(sent), two_way(0), None)
            .unwrap()
            .spans;
        assert_eq!(placed.len(), 1, "unknown names and invalid ids are dropped");
        let only = &placed[0];
        assert!(only.error);
        assert!(
            !only
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "Bad Key")
        );
        let name = only
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "process.executable.name")
            .unwrap();
        assert_eq!(name.value.as_str().len(), MAX_TEXT);

        wire.version = 2;
        assert_eq!(
            place(&wire, TraceId::from(1u128), nanos(sent), two_way(0), None),
            Err(Unplaced::Version(2))
        );
        wire.version = VERSION;
        assert_eq!(
            place(&wire, TraceId::from(1u128), 0, two_way(0), None),
            Err(Unplaced::NoSendTime)
        );
    }

    #[test]
    fn a_sink_is_installed_and_removed() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl RemoteSink for Count {
            fn record(&self, spans: Vec<RemoteSpan>) {
                self.0
                    .fetch_add(spans.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        set_sink(Some(count.clone()));
        let mut tl = Timeline::default();
        tl.push(stage(spans::PROCESS_RUN, 3, 0, 0, Some(1)));
        let wire = tl.to_wire(t(1), None);
        let placed = place(&wire, TraceId::from(1u128), nanos(t(1)), two_way(0), None)
            .unwrap()
            .spans;
        sink().unwrap().record(placed);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        set_sink(None);
        assert!(sink().is_none());
    }
}
