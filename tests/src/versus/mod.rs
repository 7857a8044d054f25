//! The side-by-side benchmarks against the tools people use instead (ssh,
//! a plain TCP relay, spawning locally): what a scenario measured, its
//! target, and the report (`BENCHMARKS.md`'s generated section).
//!
//! Layout:
//! - this module: [`Comparison`] (one scenario's per-round numbers, ours
//!   and the peer's, and its [`Target`]) and the report.
//! - [`rounds`]: running the sides of a scenario interleaved, round by
//!   round, and summarising each round.
//! - [`ssh`]: the OpenSSH peer (plain and `ControlMaster` connections to a
//!   local sshd set up by `scripts/bench.sh`).
//! - [`latency`]: `floor`, `warm`, `first byte` and `cold`.
//! - [`bulk`]: `bulk` and `relay tax`.
//! - [`tracing`]: `tracing` (full export against off), and the modes and
//!   providers the `tracing_overhead` benchmark shares.
//! - [`forwarding`]: the cold CLI and an embedder whose spans the
//!   exec-server takes through the session, against their spans kept
//!   locally and against tracing off.
//! - [`pipe`]: raw Noise-over-relay throughput against `socat`.
//! - [`network`]: the cold CLI, the CLI through the agent and ssh (fresh
//!   and `ControlMaster`) across the link emulator at several round trips.
//! - [`scale`]: many idle sessions and many concurrent execs through one
//!   relay process, and the relay's memory per session.
//!
//! A scenario returns `Err` only when something went wrong (an exec failed,
//! an output differed); a missed target is reported, never an error.

pub mod bulk;
pub mod forwarding;
pub mod latency;
pub mod network;
pub mod path_bulk;
pub mod pipe;
pub mod rounds;
pub mod scale;
pub mod ssh;
pub mod tracing;

use std::fmt::Write as _;

use crate::bench::{median, min_max};

/// What a number measures, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A latency in microseconds (lower is better).
    Micros,
    /// A throughput in MiB per second (higher is better).
    MibPerSec,
    /// Memory in KiB per session (lower is better).
    KibPerSession,
    /// A latency in round trips of the emulated path (lower is better).
    RoundTrips,
}

impl Unit {
    /// The unit's short name, for table headers.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::MibPerSec => "MiB/s",
            Unit::KibPerSession => "KiB/session",
            Unit::RoundTrips => "round trips",
        }
    }
}

/// A scenario's target: on the ratio ours/peer, or (with no peer) on our
/// median value itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Met when the value is at most this.
    AtMost(f64),
    /// Met when the value is at least this.
    AtLeast(f64),
}

impl Target {
    /// Whether `value` meets the target.
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(t) => value <= t,
            Target::AtLeast(t) => value >= t,
        }
    }

    fn text(self) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {t}"),
            Target::AtLeast(t) => format!("≥ {t}"),
        }
    }
}

/// One side of a scenario: a value per round (the round's p50 for a
/// latency, its throughput otherwise) and, for latencies, the round's p99.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// What ran, e.g. "ssh ControlMaster `true`".
    pub label: String,
    /// One value per round.
    pub values: Vec<f64>,
    /// One p99 per round (latencies only; empty otherwise).
    pub p99: Vec<f64>,
}

impl Series {
    /// An empty series named `label`.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Self::default()
        }
    }
}

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The scenario's id (`floor`, `warm`, ...).
    pub id: &'static str,
    /// The unit of both series.
    pub unit: Unit,
    /// Ours.
    pub ours: Series,
    /// The peer, run interleaved with ours in the same rounds; `None` when
    /// the target is on our value alone.
    pub peer: Option<Series>,
    /// The target.
    pub target: Target,
    /// Extra facts worth a line in the report (counts checked, spans
    /// dropped, ...).
    pub notes: Vec<String>,
}

impl Comparison {
    /// The value the target is judged on: median(ours)/median(peer), or
    /// median(ours) with no peer; and the min–max of the per-round values
    /// of the same.
    pub fn judged(&self) -> (f64, f64, f64) {
        match &self.peer {
            Some(peer) => {
                let (ratio, lo, hi) = crate::bench::ratio(&self.ours.values, &peer.values);
                (ratio, lo, hi)
            }
            None => {
                let (lo, hi) = min_max(&self.ours.values);
                (median(&self.ours.values), lo, hi)
            }
        }
    }

    /// Whether the target is met (on the medians).
    pub fn met(&self) -> bool {
        self.target.met(self.judged().0)
    }
}

fn side_cells(series: &Series, unit: Unit) -> String {
    let (lo, hi) = min_max(&series.values);
    let mut cell = format!("{:.1} ({:.1}–{:.1})", median(&series.values), lo, hi);
    if unit == Unit::Micros && !series.p99.is_empty() {
        let _ = write!(cell, "; p99 {:.1}", median(&series.p99));
    }
    cell
}

/// The report's results table (Markdown): each scenario's ours and peer
/// (median over rounds, min–max across rounds, p99 for latencies), the
/// ratio or value judged, its target and whether it is met.
pub fn table(comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "| id | ours | peer | unit | judged (min–max) | target | met |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in comparisons {
        let ours = format!("{}: {}", c.ours.label, side_cells(&c.ours, c.unit));
        let peer = c.peer.as_ref().map_or_else(
            || "—".to_owned(),
            |p| format!("{}: {}", p.label, side_cells(p, c.unit)),
        );
        let (value, lo, hi) = c.judged();
        let judged = if c.peer.is_some() {
            format!("ratio {value:.3} ({lo:.3}–{hi:.3})")
        } else {
            format!("{value:.1} ({lo:.1}–{hi:.1})")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.id,
            ours,
            peer,
            c.unit.label(),
            judged,
            c.target.text(),
            if c.met() { "yes" } else { "**no**" }
        );
    }
    out
}

/// The notes of every scenario, one bullet each.
pub fn notes(comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    for c in comparisons {
        for note in &c.notes {
            let _ = writeln!(out, "- `{}`: {note}", c.id);
        }
    }
    out
}

/// Where the generated section begins in `BENCHMARKS.md`.
pub const BEGIN: &str =
    "<!-- versus: generated by scripts/bench.sh; edits inside are overwritten -->";
/// Where it ends.
pub const END: &str = "<!-- versus: end -->";

/// `document` with the text between [`BEGIN`] and [`END`] replaced by
/// `section` (both markers kept); the section appended (with its markers)
/// when the markers are missing.
pub fn splice_section(document: &str, section: &str) -> String {
    let body = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    match (document.find(BEGIN), document.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &document[..b], body, &document[e + END.len()..])
        }
        _ => format!("{}\n\n{body}\n", document.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Series {
        Series {
            label: "x".into(),
            values: values.to_vec(),
            p99: Vec::new(),
        }
    }

    #[test]
    fn judged_on_ratio_or_value() {
        let with_peer = Comparison {
            id: "warm",
            unit: Unit::Micros,
            ours: series(&[1.0, 2.0, 3.0]),
            peer: Some(series(&[10.0, 10.0, 20.0])),
            target: Target::AtMost(0.15),
            notes: vec![],
        };
        let (r, lo, hi) = with_peer.judged();
        assert!((r - 0.2).abs() < 1e-9);
        assert!((lo - 0.1).abs() < 1e-9 && (hi - 0.2).abs() < 1e-9);
        assert!(!with_peer.met());
        let alone = Comparison {
            id: "scale",
            unit: Unit::KibPerSession,
            ours: series(&[40.0, 50.0, 70.0]),
            peer: None,
            target: Target::AtMost(64.0),
            notes: vec!["n".into()],
        };
        assert_eq!(alone.judged(), (50.0, 40.0, 70.0));
        assert!(alone.met());
        let t = table(&[with_peer, alone.clone()]);
        assert!(t.contains("| warm |") && t.contains("**no**") && t.contains("| yes |"));
        assert_eq!(notes(&[alone]), "- `scale`: n\n");
        assert!(Target::AtLeast(2.0).met(2.0) && !Target::AtLeast(2.0).met(1.9));
    }

    #[test]
    fn section_is_replaced_or_appended() {
        let doc = "# B\n\nintro\n";
        let once = splice_section(doc, "one");
        assert!(once.starts_with("# B\n\nintro\n\n"));
        assert!(once.contains(&format!("{BEGIN}\none\n{END}")));
        let twice = splice_section(&format!("{once}\n## After\n"), "two\n");
        assert!(twice.contains(&format!("{BEGIN}\ntwo\n{END}")));
        assert!(!twice.contains("one"));
        assert!(twice.ends_with("## After\n"));
    }
}
