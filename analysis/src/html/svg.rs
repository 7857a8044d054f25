//! The page's charts, drawn as inline SVG: distributions on a logarithmic
//! time axis (a histogram with the percentiles over it), cold against
//! warm on one such axis, and waterfalls on a linear one.

use std::fmt::Write as _;

use super::escape::Esc;
use super::palette::Palette;
use crate::command::Warmth;
use crate::exemplars::{Bar, Waterfall};
use crate::format::duration;
use crate::histogram::Histogram;
use crate::stats::Summary;

/// A logarithmic time axis over whole decades, mapped to `x0..x1`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogAxis {
    lo: f64,
    hi: f64,
    x0: f64,
    x1: f64,
}

impl LogAxis {
    /// The decades around `min_ns..=max_ns` (at least one), drawn from
    /// `x0` to `x1`.
    pub(crate) fn around(min_ns: u64, max_ns: u64, x0: f64, x1: f64) -> LogAxis {
        let log = |ns: u64| (ns.max(1) as f64).log10();
        let lo = log(min_ns).floor().max(0.0);
        let hi = log(max_ns.max(min_ns)).ceil().max(lo + 1.0);
        // A value exactly on a decade sits at the edge: leave it room.
        let hi = if log(max_ns) >= hi { hi + 1.0 } else { hi };
        LogAxis { lo, hi, x0, x1 }
    }

    /// Where `ns` is drawn.
    pub(crate) fn x(&self, ns: u64) -> f64 {
        let v = (ns.max(1) as f64).log10().clamp(self.lo, self.hi);
        self.x0 + (v - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0)
    }

    /// Each decade's time and where it is drawn.
    fn decades(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        // At most 20 decades: u64 nanoseconds have fewer.
        (0..=20)
            .map(move |k| self.lo + f64::from(k))
            .take_while(move |e| *e <= self.hi)
            .map(move |e| {
                let ns = 10f64.powf(e).round() as u64;
                (ns, self.x(ns))
            })
    }
}

/// A power of ten of nanoseconds as a short label (`100µs`, `1s`).
fn decade_label(ns: u64) -> String {
    match ns {
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", n / 1_000),
        n if n < 1_000_000_000 => format!("{}ms", n / 1_000_000),
        n => format!("{}s", n / 1_000_000_000),
    }
}

/// Width of a distribution strip.
pub(crate) const STRIP_WIDTH: f64 = 640.0;
/// Height of a distribution strip.
const STRIP_HEIGHT: f64 = 34.0;

/// The decade labels above (or below) the distribution strips.
pub(crate) fn strip_axis(out: &mut String, axis: &LogAxis, id: &str) {
    let _ = write!(
        out,
        r#"<svg class="axis" id="{id}" width="{STRIP_WIDTH}" height="18" viewBox="0 0 {STRIP_WIDTH} 18" role="img" aria-label="time axis, logarithmic">"#
    );
    for (ns, x) in axis.decades() {
        let anchor = anchor_at(x, 0.0, STRIP_WIDTH);
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="13" x2="{x:.1}" y2="18" class="tick"/><text x="{x:.1}" y="10" text-anchor="{anchor}" class="axis-label">{}</text>"#,
            decade_label(ns)
        );
    }
    out.push_str("</svg>");
}

/// `start`, `middle` or `end`, so that a label at `x` stays inside
/// `lo..hi`.
fn anchor_at(x: f64, lo: f64, hi: f64) -> &'static str {
    if x - lo < 20.0 {
        "start"
    } else if hi - x < 20.0 {
        "end"
    } else {
        "middle"
    }
}

/// One distribution on `axis`: its histogram (bars scaled to its own
/// peak) over the decades' grid lines, then the median as a line across,
/// p50 to p90 as a box, p90 to p99 as a whisker, and the maximum as a dot.
pub(crate) fn strip(
    out: &mut String,
    id: &str,
    axis: &LogAxis,
    hist: &Histogram,
    s: &Summary,
    what: &str,
) {
    let _ = write!(
        out,
        r#"<svg class="dist" id="{id}" width="{STRIP_WIDTH}" height="{STRIP_HEIGHT}" viewBox="0 0 {STRIP_WIDTH} {STRIP_HEIGHT}" role="img" aria-label="distribution of {what}">"#,
        what = Esc(what)
    );
    let _ = write!(
        out,
        "<title>{}: p50 {}, p90 {}, p99 {}, max {} ({} commands)</title>",
        Esc(what),
        duration(s.p50_ns as f64),
        duration(s.p90_ns as f64),
        duration(s.p99_ns as f64),
        duration(s.max_ns as f64),
        s.count
    );
    grid(out, axis, 0.0, STRIP_HEIGHT);
    histogram(out, axis, hist, 3.0, 22.0, "hist");
    percentiles(out, axis, s, 27.5, "");
    out.push_str("</svg>");
}

/// Faint vertical lines at each decade from `y0` to `y1`.
fn grid(out: &mut String, axis: &LogAxis, y0: f64, y1: f64) {
    for (_, x) in axis.decades() {
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" class="grid"/>"#
        );
    }
}

/// The bars of `hist` between `top` and `base` (heights scaled to its
/// peak), classed `class`.
fn histogram(out: &mut String, axis: &LogAxis, hist: &Histogram, top: f64, base: f64, class: &str) {
    let peak = hist.peak().max(1) as f64;
    for (lo, hi, count) in hist.buckets() {
        let (x0, x1) = (axis.x(lo), axis.x(hi));
        let h = ((base - top) * count as f64 / peak).max(1.0);
        let _ = write!(
            out,
            r#"<rect class="{class}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{h:.1}"><title>{} to {}: {count}</title></rect>"#,
            base - h,
            (x1 - x0 - 0.6).max(0.8),
            duration(lo as f64),
            duration(hi as f64),
        );
    }
}

/// The percentile marks of `s` centred on `y`: a box from p50 to p90, a
/// whisker to p99, a dot at the maximum, and the median as a line across
/// the whole height; classes suffixed with `variant`.
fn percentiles(out: &mut String, axis: &LogAxis, s: &Summary, y: f64, variant: &str) {
    let (p50, p90, p99, max) = (
        axis.x(s.p50_ns),
        axis.x(s.p90_ns),
        axis.x(s.p99_ns),
        axis.x(s.max_ns),
    );
    let _ = write!(
        out,
        r#"<line class="whisker{variant}" x1="{p90:.1}" y1="{y}" x2="{p99:.1}" y2="{y}"/><line class="whisker{variant}" x1="{p99:.1}" y1="{:.1}" x2="{p99:.1}" y2="{:.1}"/><rect class="box{variant}" x="{p50:.1}" y="{:.1}" width="{:.1}" height="5"/><circle class="max{variant}" cx="{max:.1}" cy="{y}" r="2.5"/><line class="p50{variant}" x1="{p50:.1}" y1="{:.1}" x2="{p50:.1}" y2="{:.1}"/>"#,
        y - 3.0,
        y + 3.0,
        y - 2.5,
        (p90 - p50).max(1.5),
        y - 22.0,
        y + 4.0,
    );
}

/// Width of the cold/warm chart.
const WARMTH_WIDTH: f64 = 900.0;
/// Where its axis starts (its labels are to the left).
const WARMTH_X0: f64 = 90.0;
/// Each population's row.
const WARMTH_ROW: f64 = 56.0;

/// The dispatch of each population (cold, warm, ...) on one logarithmic
/// axis: histograms in the population's colour with their percentiles.
pub(crate) fn warmth(out: &mut String, rows: &[(Warmth, &Histogram, &Summary)]) {
    let min = rows
        .iter()
        .flat_map(|(_, h, _)| h.buckets().map(|(lo, _, _)| lo).next())
        .min()
        .unwrap_or(1_000);
    let max = rows.iter().map(|(_, _, s)| s.max_ns).max().unwrap_or(min);
    let axis = LogAxis::around(min, max, WARMTH_X0, WARMTH_WIDTH - 20.0);
    let height = 24.0 + WARMTH_ROW * rows.len() as f64;
    let _ = write!(
        out,
        r#"<svg id="warmth-chart" class="chart" width="{WARMTH_WIDTH}" height="{height}" viewBox="0 0 {WARMTH_WIDTH} {height}" role="img" aria-label="dispatch time, cold against warm">"#
    );
    grid(out, &axis, 16.0, height);
    for (ns, x) in axis.decades() {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="11" text-anchor="middle" class="axis-label">{}</text>"#,
            decade_label(ns)
        );
    }
    for (i, (w, hist, s)) in rows.iter().enumerate() {
        let top = 22.0 + WARMTH_ROW * i as f64;
        let name = w.name();
        let _ = write!(
            out,
            r#"<g class="warmth-row {name}"><text x="0" y="{:.1}" class="row-label">{name}</text><text x="0" y="{:.1}" class="row-sub">{} · p50 {}</text>"#,
            top + 22.0,
            top + 37.0,
            s.count,
            duration(s.p50_ns as f64)
        );
        histogram(
            out,
            &axis,
            hist,
            top + 2.0,
            top + 38.0,
            &format!("hist-{name}"),
        );
        percentiles(out, &axis, s, top + 43.0, &format!(" {name}"));
        out.push_str("</g>");
    }
    out.push_str("</svg>");
}

/// Width of a waterfall.
const FALL_WIDTH: f64 = 1160.0;
/// Where its timeline starts (span names are to the left).
const FALL_X0: f64 = 340.0;
/// Where its timeline ends (durations may be written past it).
const FALL_X1: f64 = FALL_WIDTH - 76.0;
/// Each span's row.
const FALL_ROW: f64 = 19.0;
/// Above the first row: the time labels.
const FALL_TOP: f64 = 24.0;
/// Indentation per level, in the names column.
const INDENT: f64 = 13.0;

/// `fall` as a waterfall: a row per span, indented by depth, its bar
/// placed by start and length on a linear axis from the dispatch's start,
/// coloured by service, with its duration beside it.
pub(crate) fn waterfall(out: &mut String, fall: &Waterfall, palette: &Palette) {
    let role = fall.pick.role.name();
    let lo = fall
        .bars
        .iter()
        .map(|b| b.offset_ns)
        .min()
        .unwrap_or(0)
        .min(0);
    let hi = fall
        .bars
        .iter()
        .map(|b| {
            b.offset_ns
                .saturating_add(i64::try_from(b.duration_ns).unwrap_or(i64::MAX))
        })
        .max()
        .unwrap_or(1)
        .max(lo + 1);
    let span = (hi - lo) as f64;
    let x = |ns: i64| FALL_X0 + (ns - lo) as f64 / span * (FALL_X1 - FALL_X0);
    let height = FALL_TOP + FALL_ROW * fall.bars.len() as f64 + 4.0;
    let _ = write!(
        out,
        r#"<svg id="waterfall-{role}" class="waterfall" width="{FALL_WIDTH}" height="{height}" viewBox="0 0 {FALL_WIDTH} {height}" role="img" aria-label="waterfall of the {role} command">"#
    );
    for (i, _) in fall.bars.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let _ = write!(
            out,
            r#"<rect class="band" x="0" y="{:.1}" width="{FALL_WIDTH}" height="{FALL_ROW}"/>"#,
            FALL_TOP + FALL_ROW * i as f64
        );
    }
    let step = nice_step(span / 8.0);
    let first = (lo as f64 / step).ceil() as i64;
    for k in first.. {
        let t = k as f64 * step;
        if t > hi as f64 {
            break;
        }
        let tx = x(t as i64);
        let _ = write!(
            out,
            r#"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{height:.1}" class="grid"/><text x="{tx:.1}" y="14" text-anchor="middle" class="axis-label">{}</text>"#,
            FALL_TOP - 4.0,
            tick_label(t, step)
        );
    }
    for (i, bar) in fall.bars.iter().enumerate() {
        row(out, bar, FALL_TOP + FALL_ROW * i as f64, &x, palette);
    }
    out.push_str("</svg>");
}

/// One span's row of a waterfall at `y`. A leg whose split is unknown is
/// drawn faint and dashed with the round trip it belongs to as its label
/// (never a duration of its own); a placed span whose bound spans at least
/// two pixels carries a whisker of ± its bound at its start.
fn row(out: &mut String, bar: &Bar, y: f64, x: &dyn Fn(i64) -> f64, palette: &Palette) {
    let indent = 6.0 + INDENT * f64::from(bar.depth.min(16));
    // About 6.6 px a character at the names' size.
    let room = ((FALL_X0 - 10.0 - indent) / 6.6).max(4.0) as usize;
    let name = ellipsis(&bar.name, room);
    let start = x(bar.offset_ns);
    let end = x(bar
        .offset_ns
        .saturating_add(i64::try_from(bar.duration_ns).unwrap_or(i64::MAX)));
    let width = (end - start).max(1.5);
    let colour = palette.colour(&bar.service);
    let mut class = String::from("span");
    if bar.error {
        class.push_str(" error");
    }
    let took = duration(bar.duration_ns as f64);
    let (label, took_said) = match bar.unsplit_round_trip_ns {
        Some(rtt) if bar.direction.as_deref() == Some("to_server") => {
            class.push_str(" unsplit");
            let rtt = duration(rtt as f64);
            (
                format!("{rtt} there and back, split unknown"),
                format!("one way of a {rtt} round trip whose split is unknown"),
            )
        }
        Some(_) => {
            class.push_str(" unsplit");
            (
                "? (the way back)".to_owned(),
                "the way back of the round trip above (split unknown)".to_owned(),
            )
        }
        None => (took.clone(), format!("takes {took}")),
    };
    let placed = match (&bar.clock_source, bar.clock_bound_ns) {
        (Some(source), 0) => format!("; placed by its clock source {source}, exactly"),
        (Some(source), b) => format!(
            "; placed by its clock source {source}, ± {}",
            duration(b as f64)
        ),
        (None, _) => String::new(),
    };
    let _ = write!(
        out,
        r#"<g class="span-row"><title>{name_full} ({service}): starts at {at} from the dispatch, {took_said}{failed}{placed}</title><text x="{indent:.1}" y="{ty:.1}" class="span-name">{name}</text><rect class="{class}" x="{start:.1}" y="{by:.1}" width="{width:.1}" height="12" rx="2" fill="{colour}"/><text x="{lx:.1}" y="{ty:.1}" class="span-dur">{label}</text>"#,
        name_full = Esc(&bar.name),
        service = Esc(&bar.service),
        at = duration(bar.offset_ns as f64),
        failed = if bar.error { " (error)" } else { "" },
        placed = Esc(&placed),
        ty = y + 13.5,
        name = Esc(&name),
        by = y + 3.5,
        lx = start + width + 4.0,
        label = Esc(&label),
    );
    if bar.clock_source.is_some() && bar.unsplit_round_trip_ns.is_none() && bar.clock_bound_ns > 0 {
        let (lo, hi) = (
            x(bar.offset_ns.saturating_sub(bar.clock_bound_ns)),
            x(bar.offset_ns.saturating_add(bar.clock_bound_ns)),
        );
        if hi - lo >= 2.0 {
            let _ = write!(
                out,
                r#"<line class="bound" x1="{lo:.1}" x2="{hi:.1}" y1="{my:.1}" y2="{my:.1}"/>"#,
                my = y + 9.5,
            );
        }
    }
    out.push_str("</g>");
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub(crate) fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A step of 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1.0);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

/// A tick at `t` ns, in the unit that suits `step` (`0`, `20ms`, `1.5s`).
fn tick_label(t: f64, step: f64) -> String {
    if t == 0.0 {
        return "0".to_owned();
    }
    // The largest unit of which the step is at least a quarter.
    let (unit, name) = match step {
        s if s < 250.0 => (1.0, "ns"),
        s if s < 250e3 => (1e3, "µs"),
        s if s < 250e6 => (1e6, "ms"),
        _ => (1e9, "s"),
    };
    let value = t / unit;
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_axis_spans_whole_decades() {
        let a = LogAxis::around(3_000, 45_000_000, 0.0, 700.0);
        assert_eq!(a.x(1_000), 0.0);
        assert_eq!(a.x(100_000_000), 700.0);
        assert!((a.x(1_000_000) - 420.0).abs() < 1e-9);
        let labels: Vec<String> = a.decades().map(|(ns, _)| decade_label(ns)).collect();
        assert_eq!(labels, ["1µs", "10µs", "100µs", "1ms", "10ms", "100ms"]);
        // A value on a decade is not drawn on the edge.
        let a = LogAxis::around(1_000, 1_000, 0.0, 100.0);
        assert!(a.x(1_000) < 100.0);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(13e6), 20e6);
        assert_eq!(nice_step(4e6), 5e6);
        assert_eq!(nice_step(1e6), 1e6);
        assert_eq!(tick_label(40e6, 20e6), "40ms");
        assert_eq!(tick_label(1.5e9, 5e8), "1.5s");
        assert_eq!(tick_label(2.5e6, 5e5), "2.5ms");
        assert_eq!(tick_label(400e3, 200e3), "400µs");
        assert_eq!(tick_label(0.0, 5e5), "0");
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis() {
        assert_eq!(ellipsis("session.acquire", 20), "session.acquire");
        assert_eq!(ellipsis("session.acquire", 8), "session…");
    }
}
