//! Assertions and measurements over the spans of one trace, as recorded
//! by [`crate::otlp::OtlpReceiver`].

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::otlp::RecordedSpan;

/// The spans named `name`.
pub fn by_name<'a>(spans: &'a [RecordedSpan], name: &str) -> Vec<&'a RecordedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The one span named `name`; panics unless there is exactly one.
pub fn one<'a>(spans: &'a [RecordedSpan], name: &str) -> &'a RecordedSpan {
    match by_name(spans, name).as_slice() {
        [span] => span,
        found => panic!(
            "expected exactly one span named {name:?}, found {}; spans: [{}]",
            found.len(),
            names(spans)
        ),
    }
}

/// `span`'s parent, if it is among `spans`.
pub fn parent_of<'a>(spans: &'a [RecordedSpan], span: &RecordedSpan) -> Option<&'a RecordedSpan> {
    let parent_id = span.parent_span_id.as_deref()?;
    spans
        .iter()
        .find(|s| s.trace_id == span.trace_id && s.span_id == parent_id)
}

/// The direct children of `span` among `spans`.
pub fn children<'a>(spans: &'a [RecordedSpan], span: &RecordedSpan) -> Vec<&'a RecordedSpan> {
    spans
        .iter()
        .filter(|s| {
            s.trace_id == span.trace_id && s.parent_span_id.as_deref() == Some(&span.span_id)
        })
        .collect()
}

/// All descendants of `span` among `spans` (children, their children, ...).
pub fn descendants<'a>(spans: &'a [RecordedSpan], span: &RecordedSpan) -> Vec<&'a RecordedSpan> {
    let mut seen: HashSet<&str> = HashSet::from([span.span_id.as_str()]);
    let mut out = Vec::new();
    let mut queue = vec![span];
    while let Some(current) = queue.pop() {
        for child in children(spans, current) {
            // Guards against id cycles in malformed input.
            if seen.insert(child.span_id.as_str()) {
                out.push(child);
                queue.push(child);
            }
        }
    }
    out
}

/// The spans whose parent is not among `spans` (true roots, and spans
/// whose parent was not exported).
pub fn roots(spans: &[RecordedSpan]) -> Vec<&RecordedSpan> {
    spans
        .iter()
        .filter(|s| parent_of(spans, s).is_none())
        .collect()
}

/// Panics unless there is a span named `child_name` and every one of them
/// has a parent among `spans` named `parent_name`.
pub fn assert_parent(spans: &[RecordedSpan], child_name: &str, parent_name: &str) {
    let kids = by_name(spans, child_name);
    assert!(
        !kids.is_empty(),
        "no span named {child_name:?} (expected under {parent_name:?}); spans: [{}]",
        names(spans)
    );
    for child in kids {
        let actual = match (&child.parent_span_id, parent_of(spans, child)) {
            (_, Some(p)) if p.name == parent_name => continue,
            (_, Some(p)) => format!("{:?} (service {:?})", p.name, p.service),
            (None, None) => "none: it is a root span".to_owned(),
            (Some(id), None) => format!("span {id}, which is not among the spans"),
        };
        panic!(
            "span {:?} (service {:?}) should have parent {parent_name:?}, but its parent is {actual}",
            child.name, child.service
        );
    }
}

/// Panics unless every span whose parent is among `spans` lies within
/// the parent's `[start, end]`, give or take `tolerance_nanos` on each
/// side. The message lists every violation.
pub fn assert_contained(spans: &[RecordedSpan], tolerance_nanos: u64) {
    let mut violations = String::new();
    for child in spans {
        let Some(parent) = parent_of(spans, child) else {
            continue;
        };
        let early = parent
            .start_unix_nanos
            .saturating_sub(child.start_unix_nanos);
        let late = child.end_unix_nanos.saturating_sub(parent.end_unix_nanos);
        for (by, side) in [(early, "starts before"), (late, "ends after")] {
            if by > tolerance_nanos {
                let _ = writeln!(
                    violations,
                    "  {:?} (service {:?}) {side} its parent {:?} (service {:?}) by {:.3} µs",
                    child.name,
                    child.service,
                    parent.name,
                    parent.service,
                    by as f64 / 1e3
                );
            }
        }
    }
    assert!(
        violations.is_empty(),
        "spans not contained in their parents (tolerance {:.3} µs):\n{violations}",
        tolerance_nanos as f64 / 1e3
    );
}

/// The fraction (0.0 to 1.0) of `root`'s interval covered by the union of
/// its descendants' intervals, each clipped to `root`'s. A zero-length
/// root counts as fully covered.
pub fn coverage(spans: &[RecordedSpan], root: &RecordedSpan) -> f64 {
    let (lo, hi) = (root.start_unix_nanos, root.end_unix_nanos);
    if hi <= lo {
        return 1.0;
    }
    let mut intervals: Vec<(u64, u64)> = descendants(spans, root)
        .into_iter()
        .map(|s| {
            (
                s.start_unix_nanos.clamp(lo, hi),
                s.end_unix_nanos.clamp(lo, hi),
            )
        })
        .filter(|(start, end)| start < end)
        .collect();
    intervals.sort_unstable();
    let mut covered = 0u64;
    let mut reached = lo;
    for (start, end) in intervals {
        if end > reached {
            covered += end - start.max(reached);
            reached = end;
        }
    }
    covered as f64 / (hi - lo) as f64
}

fn names(spans: &[RecordedSpan]) -> String {
    spans
        .iter()
        .map(|s| format!("{}/{}", s.service, s.name))
        .collect::<Vec<_>>()
        .join(", ")
}
