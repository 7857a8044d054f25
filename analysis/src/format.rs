//! How every renderer writes a number: durations with three significant
//! digits and a unit, signed changes, shares and counts of things, and the
//! cells the table and the page both show.

use crate::aggregate::{ColdCost, ProgramOutput, Slow, WindowLimited, share};
use crate::compare::CompareRow;
use crate::names::Names;
use crate::stats::Summary;

/// A duration in nanoseconds with three significant digits and a unit
/// (`452µs`, `6.00ms`, `1.25s`).
pub fn duration(ns: f64) -> String {
    let (value, unit) = match ns.abs() {
        a if a < 1e3 => return format!("{ns:.0}ns"),
        a if a < 1e6 => (ns / 1e3, "µs"),
        a if a < 1e9 => (ns / 1e6, "ms"),
        _ => (ns / 1e9, "s"),
    };
    let digits = match value.abs() {
        a if a < 10.0 => 2,
        a if a < 100.0 => 1,
        _ => 0,
    };
    format!("{value:.digits$}{unit}")
}

/// [`duration`] of whole nanoseconds.
pub(crate) fn ns(ns: u64) -> String {
    duration(ns as f64)
}

/// A change: [`duration`] with a `+` when it grew.
pub(crate) fn signed(ns: i64) -> String {
    if ns > 0 {
        format!("+{}", duration(ns as f64))
    } else {
        duration(ns as f64)
    }
}

/// A share as a percentage, one decimal.
pub(crate) fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A statistic of a distribution that may be absent (`missing` then).
pub(crate) fn stat(s: Option<&Summary>, f: fn(&Summary) -> u64, missing: &str) -> String {
    s.map_or_else(|| missing.to_owned(), |s| ns(f(s)))
}

/// A distribution's count, p50, p90, p99 and max.
pub(crate) fn summary_figures(s: &Summary) -> [String; 5] {
    [
        s.count.to_string(),
        ns(s.p50_ns),
        ns(s.p90_ns),
        ns(s.p99_ns),
        ns(s.max_ns),
    ]
}

/// A program's time to first output and after it: before p50, before
/// p90, after p50, after p90 (`missing` where it printed nothing).
pub(crate) fn first_output_cells(p: &ProgramOutput, missing: &str) -> [String; 4] {
    let (before, after) = (
        p.before_first_output.as_ref(),
        p.after_first_output.as_ref(),
    );
    [
        stat(before, |s| s.p50_ns, missing),
        stat(before, |s| s.p90_ns, missing),
        stat(after, |s| s.p50_ns, missing),
        stat(after, |s| s.p90_ns, missing),
    ]
}

/// An A/B row's figures: base p50, now p50, base p90, now p90, the p50
/// change, P(slower) and p (with `p_digits` after the point; `missing`
/// where there is none).
pub(crate) fn comparison_cells(r: &CompareRow, missing: &str, p_digits: usize) -> [String; 7] {
    let (base, now) = (r.baseline.as_ref(), r.current.as_ref());
    let or_missing = |v: Option<String>| v.unwrap_or_else(|| missing.to_owned());
    [
        stat(base, |s| s.p50_ns, missing),
        stat(now, |s| s.p50_ns, missing),
        stat(base, |s| s.p90_ns, missing),
        stat(now, |s| s.p90_ns, missing),
        or_missing(r.p50_change_ns.map(signed)),
        or_missing(r.prob_slower.map(|p| format!("{p:.2}"))),
        or_missing(r.p_value.map(|p| format!("{p:.p_digits$e}"))),
    ]
}

/// A command's server as every renderer shows it: its name (else its id's
/// first digits), `?` when the command did not say.
pub(crate) fn server(id: Option<&str>, names: &dyn Names) -> String {
    id.map_or_else(|| "?".to_owned(), |id| names.label(id))
}

/// A slow command's dominant stage: its name, its time and its share of
/// the command's dispatch (none when no stage was found).
pub(crate) fn dominant(s: &Slow) -> Option<(&str, String, String)> {
    match (&s.dominant, s.dominant_ns) {
        (Some(stage), Some(ns)) => {
            Some((stage.as_str(), self::ns(ns), pct(share(ns, s.dispatch_ns))))
        }
        _ => None,
    }
}

/// What a cold start costs at p50 and at p90 (the cold dispatch's
/// percentile minus the warm one's), as changes.
pub(crate) fn cold_cost(c: &ColdCost) -> [String; 2] {
    [signed(c.p50_ns), signed(c.p90_ns)]
}

/// `n` things: `1 command`, `2 commands`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What windows held up, as the table and the page both say it: one
/// clause for stdin and one for output, each when it waited (its
/// median and 90th percentile wait over the commands that waited, and the
/// widest window).
pub(crate) fn window_clauses(w: &WindowLimited) -> Vec<String> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = Vec::new();
    if let Some(s) = &w.stdin_wait {
        out.push(format!(
            "stdin waited for its window in {}: p50 {}, p90 {} (widest {:.1} MiB)",
            plural(s.count, "command", "commands"),
            ns(s.p50_ns),
            ns(s.p90_ns),
            mib(w.stdin_window_max)
        ));
    }
    if let Some(s) = &w.output_wait {
        out.push(format!(
            "output waited for credit in {}: p50 {}, p90 {} (window up to {:.1} MiB)",
            plural(s.count, "command", "commands"),
            ns(s.p50_ns),
            ns(s.p90_ns),
            mib(w.output_window_max)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_three_digits() {
        assert_eq!(duration(0.0), "0ns");
        assert_eq!(duration(999.0), "999ns");
        assert_eq!(duration(4_520.0), "4.52µs");
        assert_eq!(duration(452_000.0), "452µs");
        assert_eq!(duration(6_000_000.0), "6.00ms");
        assert_eq!(duration(45_200_000.0), "45.2ms");
        assert_eq!(duration(1_250_000_000.0), "1.25s");
        assert_eq!(duration(-5_000_000.0), "-5.00ms");
    }
}
