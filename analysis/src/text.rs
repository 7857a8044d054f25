//! The report as a terminal table.

use std::fmt::Write as _;

use super::aggregate::{Numbers, StageRow};
use super::compare::Comparison;
use super::source::SourceInfo;
use super::stats::{Shares, Summary};
use crate::format::{
    cold_cost, comparison_cells, dominant, first_output_cells, ns as d, pct, server, stat,
    summary_figures, window_clauses,
};
use crate::names::Names;
use crate::report::Report;

/// The report as text; `names` names a server id as the user knows it.
pub fn render(report: &Report, names: &dyn Names) -> String {
    let mut out = String::new();
    header(&mut out, report);
    let n = &report.numbers;
    if n.commands > 0 {
        stages(&mut out, n);
        warmth(&mut out, n);
        first_output(&mut out, n);
        windows(&mut out, n);
        slowest(&mut out, n, names);
        cli(&mut out, n);
    }
    if let Some(c) = &report.comparison {
        comparison(&mut out, c);
    }
    if !report.gates.is_empty() {
        let _ = writeln!(out, "\ngates");
        for g in &report.gates {
            let _ = writeln!(out, "  {g}");
        }
    }
    out
}

fn header(out: &mut String, r: &Report) {
    let n = &r.numbers;
    let _ = write!(
        out,
        "{} command{} from {}",
        n.commands,
        if n.commands == 1 { "" } else { "s" },
        source(&r.source)
    );
    if let (Some(first), Some(last)) = (&n.first_start, &n.last_start) {
        let _ = write!(out, ", {first} to {last}");
    }
    let _ = writeln!(out);
    let notes = notes(r);
    if !notes.is_empty() {
        let _ = writeln!(out, "  {}", notes.join("; "));
    }
    if let Some(none) = no_commands(r) {
        let _ = writeln!(out, "  {none}");
    }
}

/// What was read, as the header says it (`the trace file X and 2 older
/// generations`, `Jaeger at URL`, the files).
pub(crate) fn source(i: &SourceInfo) -> String {
    match i.kind.as_str() {
        "jaeger" => format!("Jaeger at {}", i.read.join(", ")),
        "trace-file" => match i.read.len() {
            0 | 1 => format!(
                "the trace file {}",
                i.read.last().map_or("", String::as_str)
            ),
            k => format!(
                "the trace file {} and {} older generation{}",
                i.read.last().map_or("", String::as_str),
                k - 1,
                if k == 2 { "" } else { "s" }
            ),
        },
        _ => i.read.join(", "),
    }
}

/// The header's notes: failures, silent commands, what the filters left
/// out, skipped and cut lines, and what was rotated away.
pub(crate) fn notes(r: &Report) -> Vec<String> {
    let n = &r.numbers;
    let i = &r.source;
    let mut notes = Vec::new();
    if n.commands > 0 {
        notes.push(format!("{} failed", n.failed));
        notes.push(format!("{} printed nothing", n.without_output));
    }
    if i.commands_read > n.commands {
        notes.push(format!(
            "{} left out by the filters",
            i.commands_read - n.commands
        ));
    }
    if i.skipped_lines > 0 {
        notes.push(format!(
            "{} unreadable line{} skipped ({})",
            i.skipped_lines,
            if i.skipped_lines == 1 { "" } else { "s" },
            i.skipped_at.join(", ")
        ));
    }
    for file in &i.truncated {
        notes.push(format!(
            "the last line of {file} is cut short (not counted)"
        ));
    }
    if let Some(before) = &i.rotated_away_before {
        notes.push(format!("traces up to {before} were rotated away"));
    }
    notes
}

/// Why there are no numbers, when there are no commands.
pub(crate) fn no_commands(r: &Report) -> Option<String> {
    let i = &r.source;
    (r.numbers.commands == 0).then(|| {
        format!(
            "no commands: {} trace{} read, none with a tool.dispatch span{}",
            i.traces_without_commands,
            if i.traces_without_commands == 1 {
                ""
            } else {
                "s"
            },
            if i.commands_read > 0 {
                " that the filters keep"
            } else {
                ""
            }
        )
    })
}

const STAGE_WIDTH: usize = 34;

/// A table's heading after a blank line: its title, then each column's
/// name right-aligned in its width.
fn heading(out: &mut String, title: &str, columns: &[(&str, usize)]) {
    let _ = write!(out, "\n{title:<STAGE_WIDTH$}");
    for (name, width) in columns {
        let _ = write!(out, " {name:>width$}");
    }
    out.push('\n');
}

fn summary_cells(s: &Summary) -> String {
    let [count, p50, p90, p99, max] = summary_figures(s);
    format!("{count:>7} {p50:>9} {p90:>9} {p99:>9} {max:>9}")
}

fn share_cells(s: &Shares) -> String {
    format!("{:>8} {:>8}", pct(s.p50), pct(s.mean))
}

fn stages(out: &mut String, n: &Numbers) {
    heading(
        out,
        "stage",
        &[
            ("count", 7),
            ("p50", 9),
            ("p90", 9),
            ("p99", 9),
            ("max", 9),
            ("share50", 8),
            ("share", 8),
        ],
    );
    if let Some(dispatch) = &n.dispatch {
        let _ = writeln!(
            out,
            "{:<STAGE_WIDTH$} {} {:>8} {:>8}",
            "tool.dispatch",
            summary_cells(dispatch),
            "100%",
            "100%"
        );
    }
    for StageRow {
        name,
        depth,
        time,
        share,
        ..
    } in &n.stages
    {
        let label = format!(
            "{}{name}",
            "  ".repeat(usize::try_from(*depth).unwrap_or(0) + 1)
        );
        let _ = writeln!(
            out,
            "{label:<STAGE_WIDTH$} {} {}",
            summary_cells(time),
            share_cells(share)
        );
    }
    if let Some(u) = &n.unattributed {
        let _ = writeln!(
            out,
            "{:<STAGE_WIDTH$} {} {}",
            "  (unattributed)",
            summary_cells(&u.time),
            share_cells(&u.share)
        );
    }
    let _ = writeln!(
        out,
        "  (share50: the median command's share of its dispatch; share: the mean share)"
    );
}

fn warmth(out: &mut String, n: &Numbers) {
    if n.warmth.is_empty() {
        return;
    }
    heading(
        out,
        "cold vs warm (dispatch)",
        &[
            ("count", 7),
            ("p50", 9),
            ("p90", 9),
            ("max", 9),
            ("acquire p50", 12),
        ],
    );
    for w in &n.warmth {
        let _ = writeln!(
            out,
            "  {:<width$} {:>7} {:>9} {:>9} {:>9} {:>12}",
            w.warmth.name(),
            w.dispatch.count,
            d(w.dispatch.p50_ns),
            d(w.dispatch.p90_ns),
            d(w.dispatch.max_ns),
            stat(w.acquire.as_ref(), |a| a.p50_ns, "-"),
            width = STAGE_WIDTH - 2
        );
    }
    match n.cold_start_cost.as_ref().map(cold_cost) {
        Some([p50, p90]) => {
            let _ = writeln!(
                out,
                "  a cold start costs {p50} at p50 and {p90} at p90 (cold minus warm)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  (no cold start cost: it needs both cold and warm commands)"
            );
        }
    }
}

fn first_output(out: &mut String, n: &Numbers) {
    heading(
        out,
        "time to first output",
        &[
            ("count", 7),
            ("printed", 7),
            ("before p50", 10),
            ("before p90", 10),
            ("after p50", 10),
            ("after p90", 10),
        ],
    );
    for p in &n.first_output {
        let [b50, b90, a50, a90] = first_output_cells(p, "-");
        let _ = write!(
            out,
            "  {:<width$} {:>7} {:>7} {b50:>10} {b90:>10} {a50:>10} {a90:>10}",
            p.program,
            p.commands,
            p.commands - p.without_output,
            width = STAGE_WIDTH - 2
        );
        if p.without_output > 0 {
            let _ = write!(out, "  ({} printed nothing)", p.without_output);
        }
        let _ = writeln!(out);
    }
}

/// What flow-control windows held up, when they held any command up.
fn windows(out: &mut String, n: &Numbers) {
    let Some(w) = &n.window_limited else {
        return;
    };
    let _ = writeln!(
        out,
        "\nwindow-limited: {} of {} commands",
        w.commands, n.commands
    );
    for clause in window_clauses(w) {
        let _ = writeln!(out, "  {clause}");
    }
}

fn slowest(out: &mut String, n: &Numbers, names: &dyn Names) {
    if n.slowest.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nslowest commands (core-client trace show TRACE)");
    for s in &n.slowest {
        let dominant = dominant(s).map_or_else(
            || "-".to_owned(),
            |(stage, took, part)| format!("{stage} {took} ({part})"),
        );
        let _ = writeln!(
            out,
            "  {:>9}  {}  {:<12} {:<14} {:<6}  {}  dominant: {dominant}",
            d(s.dispatch_ns),
            s.trace_id,
            s.program.as_deref().unwrap_or("?"),
            server(s.server.as_deref(), names),
            s.warmth.name(),
            s.start,
        );
    }
}

fn cli(out: &mut String, n: &Numbers) {
    if n.cli.is_empty() {
        return;
    }
    heading(
        out,
        "the CLI's own time",
        &[("count", 7), ("p50", 9), ("p90", 9), ("p99", 9), ("max", 9)],
    );
    for row in &n.cli {
        let indent = "  ".repeat(usize::try_from(row.depth()).unwrap_or(0));
        let label = format!("{indent}{}", row.name);
        let _ = writeln!(out, "{label:<STAGE_WIDTH$} {}", summary_cells(&row.time));
    }
}

fn comparison(out: &mut String, c: &Comparison) {
    let _ = writeln!(
        out,
        "\ncompared with {} ({} commands; now {})",
        c.baseline, c.baseline_commands, c.current_commands
    );
    let _ = writeln!(
        out,
        "{:<STAGE_WIDTH$} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9}  verdict",
        "", "base p50", "now p50", "base p90", "now p90", "p50 change", "P(slower)", "p"
    );
    for r in &c.rows {
        let [b50, n50, b90, n90, change, slower, p] = comparison_cells(r, "-", 2);
        let _ = writeln!(
            out,
            "  {:<width$} {b50:>9} {n50:>9} {b90:>9} {n90:>9} {change:>10} {slower:>8} {p:>9}  {}",
            r.what,
            r.verdict,
            width = STAGE_WIDTH - 2
        );
    }
    let _ = writeln!(out, "  ({})", c.method);
}
