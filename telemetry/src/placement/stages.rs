//! The exec-server's stages of a call, brought home in the summary its
//! final event carries (`crate::remote`), placed on the client's clock
//! (the rule: [`crate::placement`]).

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanId, TraceId};
use proto::pb::session::{CallTimings, stage_attribute};
use proto::session::peer_clock::Offset;

use super::offset::{CausalBounds, at, push_placed_by};
use crate::remote::{
    EXEC_SERVER, MAX_ATTRIBUTES, MAX_STAGES, MAX_TEXT, RemoteSpan, VERSION, truncate,
};
use crate::spans;

/// A call's remote stages on this host's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The stages, as spans of the exec-server's.
    pub spans: Vec<RemoteSpan>,
    /// The summary's send time (where the exec-server's open stages end).
    pub sent: SystemTime,
    /// The offset used (the peer's clock minus ours) and its source.
    pub offset: Offset,
    /// The earliest start of the stages placed (made into spans or not).
    earliest: Option<SystemTime>,
}

impl Placed {
    /// Where the remote work starts: its earliest stage, or the send time.
    pub fn first_start(&self) -> SystemTime {
        self.earliest.unwrap_or(self.sent).min(self.sent)
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
    let earliest = earliest_start(timings)?;
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
    place_with(timings, trace_id, sent_unix_nanos, offset, window, true)
}

/// [`place`] without making the spans (`Placed::spans` is empty): the
/// times only, all a host that keeps no remote spans needs (one whose
/// exec-servers export their own) to place what lies around them.
pub fn locate(
    timings: &CallTimings,
    sent_unix_nanos: u64,
    offset: Offset,
    window: Option<Window>,
) -> Result<Placed, Unplaced> {
    place_with(
        timings,
        TraceId::INVALID,
        sent_unix_nanos,
        offset,
        window,
        false,
    )
}

fn place_with(
    timings: &CallTimings,
    trace_id: TraceId,
    sent_unix_nanos: u64,
    offset: Offset,
    window: Option<Window>,
    make_spans: bool,
) -> Result<Placed, Unplaced> {
    let offset_ns = offset.offset_nanos;
    if timings.version != VERSION {
        return Err(Unplaced::Version(timings.version));
    }
    if sent_unix_nanos == 0 {
        return Err(Unplaced::NoSendTime);
    }
    let sent = i128::from(sent_unix_nanos);
    let earliest = i128::from(earliest_start(timings).unwrap_or(0));
    let used = match window {
        Some(w) => CausalBounds::between(sent + earliest, sent, w.request_sent, w.final_arrived)
            .nearest(&offset),
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
    let sent_at = at(sent_here).ok_or(Unplaced::OutOfRange)?;
    let host = truncate(&timings.host, MAX_TEXT);
    let mut earliest: Option<SystemTime> = None;
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
            earliest = Some(earliest.map_or(start, |e| e.min(start)));
            if !make_spans {
                return None;
            }
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
            let measured = (used != offset_ns).then_some(offset_ns);
            push_placed_by(&mut attributes, &placed_by, measured);
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
        earliest,
    })
}

/// Where the remote work starts, relative to the send time (never after
/// it): its earliest stage's start; `None` without stages.
fn earliest_start(timings: &CallTimings) -> Option<i64> {
    timings
        .stages
        .iter()
        .take(MAX_STAGES)
        .map(|s| s.start_ns)
        .min()
        .map(|e| e.min(0))
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
    use crate::remote::tests::{stage, t};
    use crate::remote::{RemoteSink, Timeline, Value, set_sink, sink};
    use proto::pb::session::{StageAttribute, StageTiming};
    use proto::session::peer_clock::Source;
    use std::sync::Arc;

    /// A two-way estimate of `nanos`, loose enough for any test's window.
    fn two_way(nanos: i64) -> Offset {
        Offset {
            source: Source::TwoWay,
            offset_nanos: nanos,
            bound: Duration::from_secs(3600),
        }
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
    fn located_stages_have_the_times_of_placed_ones_and_no_spans() {
        let (wire, sent, window) = work_10_to_20();
        let placed = place(
            &wire,
            TraceId::from(1u128),
            nanos(sent),
            two_way(0),
            Some(window),
        )
        .unwrap();
        let located = locate(&wire, nanos(sent), two_way(0), Some(window)).unwrap();
        assert!(located.spans.is_empty());
        assert_eq!(placed.spans.len(), 2);
        assert_eq!(located.sent, placed.sent);
        assert_eq!(located.offset, placed.offset);
        // The earliest placed stage, not the send time: the work began
        // before the summary left.
        let earliest = placed.spans.iter().map(|s| s.start).min().unwrap();
        assert!(earliest < placed.sent);
        assert_eq!(placed.first_start(), earliest);
        assert_eq!(located.first_start(), earliest);
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
