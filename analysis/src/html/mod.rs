//! `--html`: the report as one self-contained page, to keep or send. It
//! fetches nothing (no scripts, fonts, images or style sheets from
//! anywhere: the style is inline, the charts inline SVG, and a content
//! security policy forbids any fetch), and every text from the traces
//! (program, server, stage and service names, paths) is escaped.
//!
//! The page: what was read and the key figures; the gates and the A/B
//! comparison when asked for; the stage tree with its percentiles and
//! shares; each stage's distribution on one logarithmic axis; cold
//! against warm; the time to first output per program; the slowest
//! commands; the waterfalls of the median and the slowest command; the
//! CLI's own stages.

mod escape;
mod palette;
mod svg;

use std::collections::HashSet;
use std::fmt::Write as _;

use self::escape::Esc;
use self::palette::Palette;
use crate::aggregate::{Numbers, share};
use crate::compare::Comparison;
use crate::exemplars::{self, MAX_BARS, Pick, Waterfall};
use crate::format::{
    cold_cost, comparison_cells, dominant, duration, first_output_cells, ns as d, pct, plural,
    server, stat, summary_figures,
};
use crate::gate::GateResult;
use crate::histogram::Histogram;
use crate::names::Names;
use crate::report::Report;
use crate::source::{Input, Origin};
use crate::stats::{Shares, Summary};
use crate::text;

/// What the page shows beyond the report's numbers.
pub(crate) struct Extras<'a> {
    /// The waterfalls (the median command's, then the slowest's).
    pub waterfalls: &'a [Waterfall],
    /// Why there are none although there are commands (their spans could
    /// not be read again).
    pub waterfall_error: Option<&'a str>,
    /// Server ids as the user knows them (configured or known names).
    pub names: &'a dyn Names,
}

/// A page to write: the commands whose waterfalls it draws, picked from
/// the commands read, and where their spans are read again from.
#[derive(Debug, Clone)]
pub struct Page {
    picks: Vec<Pick>,
    origin: Origin,
}

impl Page {
    /// The page of `input`'s commands (pick before the report takes them).
    pub fn of(input: &Input) -> Page {
        Page {
            picks: exemplars::pick(&input.commands),
            origin: input.origin.clone(),
        }
    }

    /// The page of `report`, its waterfalls' spans read again (what could
    /// not be read is said on the page).
    pub fn render(self, report: &Report, names: &dyn Names) -> String {
        let ids: HashSet<u128> = self.picks.iter().map(|p| p.trace).collect();
        let (waterfalls, error) = match self.origin.traces(&ids) {
            Ok(traces) => (
                self.picks
                    .into_iter()
                    .map(|p| exemplars::lay_out(p, &traces))
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        render(
            report,
            &Extras {
                waterfalls: &waterfalls,
                waterfall_error: error.as_deref(),
                names,
            },
        )
    }
}

/// The page.
pub(crate) fn render(report: &Report, extras: &Extras<'_>) -> String {
    let n = &report.numbers;
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>rex report: {} command{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        n.commands,
        if n.commands == 1 { "" } else { "s" }
    );
    header(&mut out, report);
    nav(&mut out, report);
    if !report.gates.is_empty() {
        gates(&mut out, &report.gates);
    }
    if let Some(c) = &report.comparison {
        comparison(&mut out, c);
    }
    if n.commands > 0 {
        stages(&mut out, n);
        distributions(&mut out, n);
        warmth(&mut out, n);
        first_output(&mut out, n);
        windows(&mut out, n);
        slowest(&mut out, n, extras.names);
        waterfalls(&mut out, extras);
        cli(&mut out, n);
    }
    let _ = write!(
        out,
        "<footer>Made by <code>core-client report --html</code> ({}). The page is \
         self-contained: it fetches nothing and runs no script.</footer>\n</main>\n</body>\n</html>\n",
        Esc(report.schema)
    );
    out
}

/// The sections present, for the navigation line.
fn sections(report: &Report) -> Vec<(&'static str, &'static str)> {
    let n = &report.numbers;
    let mut out = Vec::new();
    if !report.gates.is_empty() {
        out.push(("gates", "Gates"));
    }
    if report.comparison.is_some() {
        out.push(("comparison", "A/B"));
    }
    if n.commands > 0 {
        out.extend([
            ("stages", "Stages"),
            ("distributions", "Distributions"),
            ("cold-warm", "Cold vs warm"),
            ("first-output", "First output"),
        ]);
        if n.window_limited.is_some() {
            out.push(("windows", "Windows"));
        }
        out.extend([("slowest", "Slowest"), ("waterfalls", "Waterfalls")]);
        if !n.cli.is_empty() {
            out.push(("cli", "CLI"));
        }
    }
    out
}

fn nav(out: &mut String, report: &Report) {
    let sections = sections(report);
    if sections.is_empty() {
        return;
    }
    out.push_str("<nav>");
    for (id, name) in sections {
        let _ = write!(out, r##"<a href="#{id}">{name}</a>"##);
    }
    out.push_str("</nav>\n");
}

fn header(out: &mut String, r: &Report) {
    let n = &r.numbers;
    let _ = write!(
        out,
        "<header id=\"summary\">\n<h1>Where the time goes</h1>\n<p class=\"lede\">{} from {}",
        plural(n.commands, "command", "commands"),
        Esc(&text::source(&r.source))
    );
    if let (Some(first), Some(last)) = (&n.first_start, &n.last_start) {
        let _ = write!(
            out,
            ", dispatched from <time>{}</time> to <time>{}</time>",
            Esc(first),
            Esc(last)
        );
    }
    out.push_str("</p>\n");
    let notes: Vec<String> = text::notes(r)
        .into_iter()
        .chain(text::no_commands(r))
        .map(|note| Esc(&note).to_string())
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"notes\" id=\"notes\">{}</p>",
            notes.join(" · ")
        );
    }
    if n.commands > 0 {
        tiles(out, n);
    }
    out.push_str("</header>\n");
}

/// The key figures.
fn tiles(out: &mut String, n: &Numbers) {
    let mut tiles: Vec<(&str, String, String)> = vec![(
        "Commands",
        n.commands.to_string(),
        format!("{} failed · {} printed nothing", n.failed, n.without_output),
    )];
    if let Some(s) = &n.dispatch {
        tiles.push((
            "Dispatch p50",
            d(s.p50_ns),
            format!(
                "p90 {} · p99 {} · max {}",
                d(s.p90_ns),
                d(s.p99_ns),
                d(s.max_ns)
            ),
        ));
    }
    tiles.push(match n.cold_start_cost.as_ref().map(cold_cost) {
        Some([p50, p90]) => ("Cold start costs", p50, format!("at p50; {p90} at p90")),
        None => (
            "Cold start costs",
            "–".to_owned(),
            "needs both cold and warm commands".to_owned(),
        ),
    });
    if let Some(s) = &n.time_to_first_output {
        tiles.push((
            "First output p50",
            d(s.p50_ns),
            format!(
                "p90 {} · over {}",
                d(s.p90_ns),
                plural(s.count, "command", "commands")
            ),
        ));
    }
    if let Some(u) = &n.unattributed {
        tiles.push((
            "Unattributed",
            pct(u.share.p50),
            format!("of the median dispatch · mean {}", pct(u.share.mean)),
        ));
    }
    out.push_str("<div class=\"tiles\">");
    for (label, value, sub) in tiles {
        let _ = write!(
            out,
            "<div class=\"tile\"><div class=\"tile-label\">{}</div><div class=\"tile-value\">{}</div><div class=\"tile-sub\">{}</div></div>",
            Esc(label),
            Esc(&value),
            Esc(&sub)
        );
    }
    out.push_str("</div>\n");
}

fn section_start(out: &mut String, id: &str, title: &str, lede: &str) {
    let _ = write!(
        out,
        "<section id=\"{id}\">\n<h2>{title}</h2>\n<p class=\"lede\">{lede}</p>\n"
    );
}

fn gates(out: &mut String, gates: &[GateResult]) {
    let passed = gates.iter().filter(|g| g.pass).count();
    section_start(
        out,
        "gates",
        "Gates",
        &format!(
            "{passed} of {} held{}",
            gates.len(),
            if passed == gates.len() {
                ": go"
            } else {
                ": no go"
            }
        ),
    );
    out.push_str("<ul class=\"gates\" id=\"gate-list\">");
    for g in gates {
        let (class, word) = if g.pass {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        let detail = match (&g.reason, &g.left, &g.right) {
            (Some(reason), _, _) => reason.clone(),
            (None, Some(l), Some(r)) => match g.commands {
                Some(c) => format!("{l} {} {r}; {}", g.op(), plural(c, "command", "commands")),
                None => format!("{l} {} {r}", g.op()),
            },
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<li class=\"{class}\"><span class=\"badge\">{word}</span><code>{}</code> <span class=\"muted\">{}</span></li>",
            Esc(&g.gate),
            Esc(&detail)
        );
    }
    out.push_str("</ul>\n</section>\n");
}

fn comparison(out: &mut String, c: &Comparison) {
    section_start(
        out,
        "comparison",
        "A/B: now against the baseline",
        &format!(
            "Against {} ({}; now {}). {}.",
            Esc(&c.baseline),
            plural(c.baseline_commands, "command", "commands"),
            c.current_commands,
            Esc(c.method)
        ),
    );
    out.push_str(
        "<table id=\"comparison-table\"><thead><tr><th class=\"l\"></th><th>base p50</th><th>now p50</th>\
         <th>base p90</th><th>now p90</th><th>p50 change</th><th>P(slower)</th><th>p</th><th class=\"l\">verdict</th></tr></thead><tbody>",
    );
    for r in &c.rows {
        let class = match r.verdict {
            "slower" => "v-slower",
            "faster" => "v-faster",
            "no difference" => "v-same",
            _ => "v-little",
        };
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\"><span class=\"verdict {class}\">{}</span></td></tr>",
            Esc(&r.what),
            comparison_cells(r, "–", 1).join("</td><td>"),
            Esc(r.verdict)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

/// A share with a small bar.
fn share_cell(share: f64) -> String {
    let width = (share * 100.0).clamp(0.0, 100.0);
    format!(
        "<td class=\"share\"><span class=\"meter\"><span style=\"width:{width:.1}%\"></span></span>{}</td>",
        pct(share)
    )
}

fn summary_cells(s: &Summary) -> String {
    format!("<td>{}</td>", summary_figures(s).join("</td><td>"))
}

fn shares_cells(s: &Shares) -> String {
    format!("{}{}", share_cell(s.p50), share_cell(s.mean))
}

/// The left padding of a stage at `depth` (0: `tool.dispatch` itself).
fn indent(depth: u32) -> String {
    format!("padding-left:{}px", 10 + 16 * depth.min(16))
}

fn stages(out: &mut String, n: &Numbers) {
    section_start(
        out,
        "stages",
        "Stages",
        "Each stage of <code>tool.dispatch</code>, nested as it runs: its time over the commands that have it, \
         and its share of each command's dispatch (share p50: the median command's share; share mean: the mean share, \
         commands without the stage counting 0).",
    );
    out.push_str(
        "<table id=\"stage-table\" class=\"tree\"><thead><tr><th class=\"l\">stage</th><th>count</th><th>p50</th><th>p90</th>\
         <th>p99</th><th>max</th><th>share p50</th><th>share mean</th></tr></thead><tbody>",
    );
    if let Some(s) = &n.dispatch {
        let _ = write!(
            out,
            "<tr class=\"root\"><td class=\"l\" style=\"{}\">tool.dispatch</td>{}{}{}</tr>",
            indent(0),
            summary_cells(s),
            share_cell(1.0),
            share_cell(1.0)
        );
    }
    for row in &n.stages {
        let _ = write!(
            out,
            "<tr class=\"stage\"><td class=\"l\" style=\"{}\" title=\"{}\">{}</td>{}{}</tr>",
            indent(row.depth + 1),
            Esc(&row.path),
            Esc(&row.name),
            summary_cells(&row.time),
            shares_cells(&row.share)
        );
    }
    if let Some(u) = &n.unattributed {
        let _ = write!(
            out,
            "<tr class=\"unattributed\"><td class=\"l\" style=\"{}\">(unattributed)</td>{}{}</tr>",
            indent(1),
            summary_cells(&u.time),
            shares_cells(&u.share)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn distributions(out: &mut String, n: &Numbers) {
    let rows: Vec<(String, u32, &Histogram, &Summary, String)> = n
        .dispatch
        .iter()
        .map(|s| {
            (
                "tool.dispatch".to_owned(),
                0,
                &n.dispatch_histogram,
                s,
                "dist-dispatch".to_owned(),
            )
        })
        .chain(n.stages.iter().enumerate().map(|(i, r)| {
            (
                r.name.clone(),
                r.depth + 1,
                &r.histogram,
                &r.time,
                format!("dist-{i}"),
            )
        }))
        .collect();
    let min = rows
        .iter()
        .filter_map(|(_, _, h, _, _)| h.buckets().next().map(|(lo, _, _)| lo))
        .min()
        .unwrap_or(1_000);
    let max = rows
        .iter()
        .map(|(_, _, _, s, _)| s.max_ns)
        .max()
        .unwrap_or(min);
    let axis = svg::LogAxis::around(min, max, 8.0, svg::STRIP_WIDTH - 8.0);
    section_start(
        out,
        "distributions",
        "Distributions",
        "Each stage's time on one logarithmic axis: how many commands took how long \
         (bars, scaled to each stage's busiest bucket), with the median and the tail over it.",
    );
    out.push_str(LEGEND);
    out.push_str(
        "<table id=\"dist-table\" class=\"dists\"><thead><tr><th class=\"l\">stage</th><th class=\"l\">",
    );
    svg::strip_axis(out, &axis, "dist-axis");
    out.push_str("</th><th>p50</th><th>p99</th></tr></thead><tbody>");
    for (name, depth, hist, s, id) in &rows {
        let _ = write!(
            out,
            "<tr><td class=\"l\" style=\"{}\">{}</td><td class=\"chart-cell\">",
            indent(*depth),
            Esc(name)
        );
        svg::strip(out, id, &axis, hist, s, name);
        let _ = write!(
            out,
            "</td><td>{}</td><td>{}</td></tr>",
            d(s.p50_ns),
            d(s.p99_ns)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn warmth(out: &mut String, n: &Numbers) {
    section_start(
        out,
        "cold-warm",
        "Cold vs warm",
        "The dispatch of the commands that established their session (cold) against those that found one \
         (warm), or waited for one being established.",
    );
    if let Some([p50, p90]) = n.cold_start_cost.as_ref().map(cold_cost) {
        let _ = write!(
            out,
            "<p class=\"callout\" id=\"cold-cost\">A cold start costs <strong>{p50}</strong> at p50 and <strong>{p90}</strong> at p90 \
             (the cold dispatch's percentile minus the warm one's).</p>"
        );
    } else {
        out.push_str(
            "<p class=\"callout muted\" id=\"cold-cost\">No cold start cost: it needs both cold and warm commands.</p>",
        );
    }
    let rows: Vec<_> = n
        .warmth
        .iter()
        .map(|w| (w.warmth, &w.histogram, &w.dispatch))
        .collect();
    if !rows.is_empty() {
        out.push_str("<div class=\"figure\">");
        svg::warmth(out, &rows);
        out.push_str("</div>");
    }
    out.push_str(
        "<table id=\"warmth-table\"><thead><tr><th class=\"l\">session</th><th>count</th><th>p50</th><th>p90</th>\
         <th>p99</th><th>max</th><th>acquire p50</th><th>acquire p90</th></tr></thead><tbody>",
    );
    for w in &n.warmth {
        let _ = write!(
            out,
            "<tr><td class=\"l\"><span class=\"dot {name}\"></span>{name}</td>{}<td>{}</td><td>{}</td></tr>",
            summary_cells(&w.dispatch),
            stat(w.acquire.as_ref(), |a| a.p50_ns, "–"),
            stat(w.acquire.as_ref(), |a| a.p90_ns, "–"),
            name = w.warmth.name()
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn first_output(out: &mut String, n: &Numbers) {
    section_start(
        out,
        "first-output",
        "Time to first output",
        "Each program's dispatch split at the first output byte: the part before it and the part after it. \
         Commands that printed nothing are counted apart and have no \"after\" part. \
         The bar splits the two medians in proportion.",
    );
    out.push_str(
        "<table id=\"first-output-table\"><thead><tr><th class=\"l\">program</th><th>commands</th><th>printed</th>\
         <th>before p50</th><th>before p90</th><th>after p50</th><th>after p90</th><th>printed nothing</th>\
         <th class=\"l\">p50s: before <span class=\"key before\"></span> after <span class=\"key after\"></span></th></tr></thead><tbody>",
    );
    for p in &n.first_output {
        let (b, a) = (
            p.before_first_output.map_or(0, |s| s.p50_ns),
            p.after_first_output.map_or(0, |s| s.p50_ns),
        );
        let before = share(b, a + b) * 100.0;
        let after = if a + b == 0 { 0.0 } else { 100.0 - before };
        let _ = write!(
            out,
            "<tr><td class=\"l\"><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"l\"><span class=\"split\"><span class=\"before\" style=\"width:{before:.1}%\"></span><span class=\"after\" style=\"width:{after:.1}%\"></span></span></td></tr>",
            Esc(&p.program),
            p.commands,
            p.commands - p.without_output,
            first_output_cells(p, "–").join("</td><td>"),
            p.without_output,
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

/// What flow-control windows held up, when they held any command up.
fn windows(out: &mut String, n: &Numbers) {
    let Some(w) = &n.window_limited else {
        return;
    };
    section_start(
        out,
        "windows",
        "Window-limited",
        &format!(
            "{} of {} commands waited for a flow-control window: their stdin for the \
             exec-server's window, or their output for credit.",
            w.commands, n.commands
        ),
    );
    out.push_str("<ul>");
    for clause in crate::format::window_clauses(w) {
        let _ = write!(out, "<li>{}</li>", Esc(&clause));
    }
    out.push_str("</ul>\n</section>\n");
}

fn slowest(out: &mut String, n: &Numbers, names: &dyn Names) {
    section_start(
        out,
        "slowest",
        "Slowest commands",
        "The slowest dispatches, with the stage that took most of each. \
         <code>core-client trace show TRACE</code> shows one whole.",
    );
    out.push_str(
        "<table id=\"slowest-table\"><thead><tr><th>dispatch</th><th class=\"l\">trace</th><th class=\"l\">program</th>\
         <th class=\"l\">server</th><th class=\"l\">session</th><th class=\"l\">dispatched (UTC)</th><th class=\"l\">dominant stage</th>\
         <th>its time</th><th>share</th></tr></thead><tbody>",
    );
    for s in &n.slowest {
        let (stage, took, part) =
            dominant(s).unwrap_or_else(|| ("–", "–".to_owned(), "–".to_owned()));
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"l\"><code class=\"trace\">{}</code></td><td class=\"l\"><code>{}</code></td>\
             <td class=\"l\">{}</td><td class=\"l\"><span class=\"dot {warmth}\"></span>{warmth}</td><td class=\"l\">{}</td>\
             <td class=\"l path\">{}</td><td>{}</td><td>{}</td></tr>",
            d(s.dispatch_ns),
            Esc(&s.trace_id),
            Esc(s.program.as_deref().unwrap_or("?")),
            Esc(&server(s.server.as_deref(), names)),
            Esc(&crate::time::short(&s.start)),
            breakable_path(stage),
            took,
            part,
            warmth = s.warmth.name()
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

/// A stage path, escaped, that may break after each `/`.
fn breakable_path(path: &str) -> String {
    path.split('/')
        .map(|part| Esc(part).to_string())
        .collect::<Vec<_>>()
        .join("/<wbr>")
}

fn waterfalls(out: &mut String, extras: &Extras<'_>) {
    section_start(
        out,
        "waterfalls",
        "Waterfalls",
        "The median command (its dispatch is the median) and the slowest, each span placed by its start and length \
         from the dispatch's start, nested under its parent and coloured by the service that made it.",
    );
    if let Some(e) = extras.waterfall_error {
        let _ = write!(
            out,
            "<p class=\"callout muted\">The spans could not be read again: {}</p>",
            Esc(e)
        );
    }
    let services: Vec<&str> = extras
        .waterfalls
        .iter()
        .flat_map(|w| w.bars.iter().map(|b| b.service.as_str()))
        .collect();
    let palette = Palette::new(services.iter().copied());
    if !services.is_empty() {
        out.push_str("<ul class=\"legend\" id=\"service-legend\">");
        for (service, colour) in palette.entries(&services) {
            let _ = write!(
                out,
                "<li><span class=\"swatch\" style=\"background:{colour}\"></span>{}</li>",
                Esc(service)
            );
        }
        out.push_str("<li><span class=\"swatch error\"></span>error status</li></ul>\n");
    }
    for w in extras.waterfalls {
        let p = &w.pick;
        let title = match p.role {
            super::exemplars::Role::Median => "The median command",
            super::exemplars::Role::Slowest => "The slowest command",
        };
        let server = server(p.server.as_deref(), extras.names);
        let _ = write!(
            out,
            "<div class=\"fall\" id=\"fall-{}\"><h3>{title}: {}</h3><p class=\"fall-meta\"><code>{}</code> on {} · {} session · \
             trace <code class=\"trace\">{}</code></p>",
            p.role.name(),
            d(p.dispatch),
            Esc(p.program.as_deref().unwrap_or("?")),
            Esc(&server),
            p.warmth.name(),
            Esc(&p.trace_hex())
        );
        clocks(out, &w.bars);
        if w.bars.is_empty() {
            out.push_str(
                "<p class=\"muted\">Its spans were not found again in the source (rotated away since?).</p>",
            );
        } else {
            out.push_str("<div class=\"figure\">");
            svg::waterfall(out, w, &palette);
            out.push_str("</div>");
        }
        if w.left_out > 0 {
            let _ = write!(
                out,
                "<p class=\"muted\">{} not drawn (at most {MAX_BARS} per waterfall, the shortest left out first).</p>",
                plural(w.left_out as u64, "shorter span is", "shorter spans are")
            );
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

/// Which clock source placed each other host's spans on the client's
/// clock, and within what bound: one line under a waterfall's title.
fn clocks(out: &mut String, bars: &[super::exemplars::Bar]) {
    let mut said: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for b in bars
        .iter()
        .filter(|b| b.name != telemetry::spans::LINK_TRANSIT)
    {
        let Some(source) = &b.clock_source else {
            continue;
        };
        if seen.contains(&b.service.as_str()) {
            continue;
        }
        seen.push(&b.service);
        let how = match (source.as_str(), b.clock_bound_ns) {
            ("same-host", _) | (_, 0) => format!("{source}, exact"),
            ("two-way", bound) => format!(
                "{source} ± {} (how a round trip splits between its two ways is unknown)",
                duration(bound as f64)
            ),
            (_, bound) => format!("{source} ± {}", duration(bound as f64)),
        };
        said.push(format!("{} placed by {how}", b.service));
    }
    if !said.is_empty() {
        let _ = write!(
            out,
            "<p class=\"fall-meta clocks\">Clocks: {}.</p>",
            Esc(&said.join("; "))
        );
    }
}

fn cli(out: &mut String, n: &Numbers) {
    if n.cli.is_empty() {
        return;
    }
    section_start(
        out,
        "cli",
        "The CLI's own time",
        "<code>cli.run</code> and its stages other than the dispatch, over the commands run by <code>core-client</code>.",
    );
    out.push_str(
        "<table id=\"cli-table\"><thead><tr><th class=\"l\">stage</th><th>count</th><th>p50</th><th>p90</th><th>p99</th>\
         <th>max</th></tr></thead><tbody>",
    );
    for row in &n.cli {
        let _ = write!(
            out,
            "<tr><td class=\"l\" style=\"{}\">{}</td>{}</tr>",
            indent(row.depth()),
            Esc(&row.name),
            summary_cells(&row.time)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

/// What the distribution charts' marks mean.
const LEGEND: &str = "<p class=\"marks\">\
<span><svg width=\"14\" height=\"12\"><rect class=\"hist\" x=\"1\" y=\"2\" width=\"5\" height=\"10\"/><rect class=\"hist\" x=\"7\" y=\"6\" width=\"5\" height=\"6\"/></svg> commands per bucket</span>\
<span><svg width=\"8\" height=\"12\"><line class=\"p50\" x1=\"4\" y1=\"0\" x2=\"4\" y2=\"12\"/></svg> p50</span>\
<span><svg width=\"18\" height=\"12\"><rect class=\"box\" x=\"1\" y=\"4\" width=\"16\" height=\"5\"/></svg> p50 to p90</span>\
<span><svg width=\"18\" height=\"12\"><line class=\"whisker\" x1=\"1\" y1=\"6.5\" x2=\"16\" y2=\"6.5\"/><line class=\"whisker\" x1=\"16\" y1=\"3.5\" x2=\"16\" y2=\"9.5\"/></svg> p90 to p99</span>\
<span><svg width=\"10\" height=\"12\"><circle class=\"max\" cx=\"5\" cy=\"6.5\" r=\"2.5\"/></svg> max</span></p>\n";

/// The page's style.
const CSS: &str = r#"
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #2f6db5; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 36px 56px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 40px 0 4px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 24px 0 2px; }
p { margin: 4px 0 10px; }
.lede { color: var(--muted); max-width: 920px; }
code, .trace, time { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
code.trace { user-select: all; }
td.path { white-space: normal; max-width: 400px; }
.muted { color: var(--muted); }
nav { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 16px 0 0; padding: 10px 0; border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); }
nav a { color: var(--accent); text-decoration: none; font-weight: 500; }
p.notes { margin: 2px 0 0; color: var(--muted); }
time { white-space: nowrap; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 6px; }
.tile { flex: 1 1 180px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--soft); }
.tile-label { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em; }
.tile-value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; margin: 2px 0; }
.tile-sub { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; margin: 8px 0 4px; }
th, td { padding: 4px 12px; text-align: right; white-space: nowrap; vertical-align: middle; }
th { font-weight: 600; color: var(--muted); border-bottom: 1px solid var(--line); font-size: 12px; }
.l { text-align: left; }
tbody tr:nth-child(even) { background: var(--soft); }
tbody tr:hover { background: #eef4fb; }
tr.root td { font-weight: 600; }
tr.unattributed td { color: var(--muted); font-style: italic; }
td.share { min-width: 118px; }
.meter { display: inline-block; width: 52px; height: 6px; margin-right: 8px; border-radius: 3px; background: #e3e8ee; vertical-align: middle; overflow: hidden; }
.meter > span { display: block; height: 100%; background: var(--accent); }
.dists td, .dists th { padding-top: 1px; padding-bottom: 1px; }
.dists td.chart-cell { padding: 0 12px; line-height: 0; }
.dists th svg { display: block; }
.marks { display: flex; flex-wrap: wrap; gap: 4px 20px; color: var(--muted); font-size: 12px; }
.marks svg { vertical-align: -1px; margin-right: 3px; }
.figure { overflow-x: auto; margin: 8px 0; }
.callout { border-left: 4px solid var(--accent); background: #f0f6fd; padding: 8px 14px; border-radius: 0 6px 6px 0; max-width: 920px; }
.callout.muted { border-left-color: var(--line); background: var(--soft); }
.dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 7px; background: #9aa4ae; }
.dot.cold { background: #d9640f; } .dot.warm { background: #1b9e77; } .dot.waited { background: #7570b3; }
.split { display: inline-block; width: 180px; height: 10px; background: #eef1f4; border-radius: 2px; overflow: hidden; vertical-align: middle; white-space: nowrap; line-height: 0; }
.split > span { display: inline-block; height: 100%; }
.before, .key.before { background: #4e79a7; } .after, .key.after { background: #a9c4e2; }
.key { display: inline-block; width: 10px; height: 10px; border-radius: 2px; vertical-align: -1px; margin-left: 2px; }
ul.gates { list-style: none; padding: 0; margin: 8px 0; }
ul.gates li { padding: 5px 0; }
.badge { display: inline-block; min-width: 46px; text-align: center; font-size: 11px; font-weight: 700; letter-spacing: 0.05em; border-radius: 4px; padding: 1px 6px; margin-right: 10px; color: #fff; }
li.pass .badge { background: #1a7f37; } li.fail .badge { background: #cf222e; }
.verdict { font-size: 12px; font-weight: 600; border-radius: 10px; padding: 1px 8px; }
.v-slower { background: #ffebe9; color: #a40e26; } .v-faster { background: #dafbe1; color: #116329; }
.v-same { background: #eef1f4; color: var(--muted); } .v-little { color: var(--muted); font-weight: 400; }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 6px 20px; padding: 0; margin: 10px 0 0; font-size: 13px; }
.swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
.swatch.error { background: #fff; border: 2px solid #cf222e; }
.fall-meta { color: var(--muted); margin: 0 0 4px; }
footer { margin-top: 48px; padding-top: 10px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12px; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", Arial, sans-serif; }
.axis-label { font-size: 11px; fill: var(--muted); }
.tick { stroke: #8c959f; stroke-width: 1; }
.grid { stroke: #e6eaef; stroke-width: 1; }
.hist { fill: #b9cfe8; }
.box { fill: var(--accent); }
.whisker { stroke: var(--accent); stroke-width: 1.5; }
.p50 { stroke: #0b2e59; stroke-width: 2; }
.max { fill: #fff; stroke: #0b2e59; stroke-width: 1.3; }
.hist-cold { fill: #f6c6a3; } .box.cold { fill: #d9640f; } .whisker.cold { stroke: #d9640f; } .p50.cold, .max.cold { stroke: #7a3306; }
.hist-warm { fill: #a8dcc9; } .box.warm { fill: #1b9e77; } .whisker.warm { stroke: #1b9e77; } .p50.warm, .max.warm { stroke: #0b5a42; }
.hist-waited { fill: #c9c6e3; } .box.waited { fill: #7570b3; } .whisker.waited { stroke: #7570b3; } .p50.waited, .max.waited { stroke: #3b3775; }
.hist-unknown { fill: #d5d9dd; } .box.unknown { fill: #8c959f; } .whisker.unknown { stroke: #8c959f; } .p50.unknown, .max.unknown { stroke: #424a53; }
.row-label { font-size: 13px; font-weight: 600; fill: var(--fg); }
.row-sub { font-size: 11px; fill: var(--muted); }
.band { fill: var(--soft); }
.span-name { font-size: 12px; fill: var(--fg); }
.span-dur { font-size: 11px; fill: var(--muted); }
.span.error { stroke: #cf222e; stroke-width: 2; }
.span.unsplit { fill-opacity: 0.35; stroke: var(--muted); stroke-dasharray: 3 2; }
.bound { stroke: var(--fg); stroke-width: 1.5; }
"#;

#[cfg(test)]
mod tests;
