use std::sync::Arc;

use super::*;
use crate::aggregate::numbers;
use crate::command::{Command, Reducer};
use crate::compare::{Side, compare};
use crate::exemplars::{self as waterfall, Waterfall};
use crate::gate::Gate;
use crate::model::{Trace, client_span as span};
use crate::report::SCHEMA;
use crate::source::{Filter, SourceInfo};

const EVIL: &str = "<script>alert(1)</script>";
const EVIL_STAGE: &str = "x\"><img src=http://evil.example/x onerror=alert(1)>";

/// One command's trace: `cli.run` over `cli.startup` and a dispatch of
/// `total` µs whose session was `warmth`, with a remote stage and an odd
/// stage name, run by `program`.
fn trace(id: u128, total: u64, warmth: &str, program: &str) -> Trace {
    let us = 1_000;
    let t0 = 1_700_000_000_000_000_000 + u64::try_from(id).unwrap() * 1_000_000_000;
    let end = t0 + total * us;
    let acquire_end = t0 + total * us / 3;
    let mut dispatch = span(id, 2, 1, "tool.dispatch", t0, end);
    dispatch.attrs.program = Some(program.into());
    dispatch.attrs.server = Some("<b>box</b>".into());
    let mut acquire = span(id, 3, 2, "session.acquire", t0, acquire_end);
    acquire.attrs.warmth = Some(warmth.into());
    let mut run = span(id, 5, 4, "process.run", acquire_end + us, end - us);
    run.service = Arc::from("exec-server");
    let mut odd = span(
        id,
        7,
        4,
        EVIL_STAGE,
        acquire_end + 2 * us,
        acquire_end + 3 * us,
    );
    odd.service = Arc::from("<i>svc</i>");
    odd.error = true;
    Trace {
        id,
        spans: vec![
            span(id, 1, 0, "cli.run", t0 - 500 * us, end + 100 * us),
            span(id, 8, 1, "cli.startup", t0 - 500 * us, t0),
            dispatch,
            acquire,
            span(id, 4, 2, "rpc.server.exec", acquire_end, end),
            run,
            odd,
            span(id, 6, 2, "exec.first_output", t0, acquire_end + 2 * us),
        ],
        dropped: 0,
    }
}

struct Fixture {
    report: Report,
    waterfalls: Vec<Waterfall>,
}

fn fixture(gates: &[&str], with_baseline: bool) -> Fixture {
    let mut reducer = Reducer::default();
    let mut traces = Vec::new();
    let mut commands: Vec<Command> = Vec::new();
    for i in 1..=12u64 {
        let (warmth, program) = if i % 3 == 0 {
            ("cold", EVIL)
        } else {
            ("warm", "ls")
        };
        let t = trace(u128::from(i), 1_000 + 100 * i, warmth, program);
        commands.extend(reducer.commands(t.clone()));
        traces.push(t);
    }
    let n = numbers(&commands, &reducer.table, 5);
    let comparison = with_baseline.then(|| {
        let side = Side {
            commands: &commands,
            table: &reducer.table,
        };
        compare(EVIL, &side, &side, 10)
    });
    let gates = gates
        .iter()
        .map(|g| Gate::parse(g).unwrap().check(&n, 10))
        .collect();
    let source = SourceInfo {
        kind: "jaeger".into(),
        read: vec!["http://jaeger.example:16686".into()],
        skipped_lines: 1,
        skipped_at: vec![format!("{EVIL}:3")],
        commands_read: 12,
        ..SourceInfo::default()
    };
    let report = report_of(source, n, comparison, gates);
    let waterfalls = waterfall::pick(&commands)
        .into_iter()
        .map(|p| waterfall::lay_out(p, &traces))
        .collect();
    Fixture { report, waterfalls }
}

/// A report of `numbers` read from `source`.
fn report_of(
    source: SourceInfo,
    numbers: Numbers,
    comparison: Option<Comparison>,
    gates: Vec<GateResult>,
) -> Report {
    Report {
        schema: SCHEMA,
        source,
        filter: Filter::default(),
        numbers,
        comparison,
        gates,
    }
}

/// Names every server by its id and a `!`.
struct Bang;

impl crate::names::Names for Bang {
    fn name(&self, _id: &str) -> Option<&str> {
        None
    }

    fn label(&self, id: &str) -> String {
        format!("{id}!")
    }
}

fn page(f: &Fixture) -> String {
    render(
        &f.report,
        &Extras {
            waterfalls: &f.waterfalls,
            waterfall_error: None,
            names: &Bang,
        },
    )
}

/// Names every server by its whole id.
struct Ids;

impl crate::names::Names for Ids {
    fn name(&self, _id: &str) -> Option<&str> {
        None
    }

    fn label(&self, id: &str) -> String {
        id.to_owned()
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn every_section_is_there() {
    let f = fixture(
        &["p90(session.acquire) < 1s", "cold.p50 / warm.p50 < 1"],
        true,
    );
    let html = page(&f);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    for id in [
        "summary",
        "gates",
        "gate-list",
        "comparison",
        "comparison-table",
        "stages",
        "stage-table",
        "distributions",
        "dist-table",
        "dist-axis",
        "dist-dispatch",
        "cold-warm",
        "cold-cost",
        "warmth-chart",
        "warmth-table",
        "first-output",
        "first-output-table",
        "slowest",
        "slowest-table",
        "waterfalls",
        "service-legend",
        "waterfall-median",
        "waterfall-slowest",
        "cli",
        "cli-table",
    ] {
        assert_eq!(count(&html, &format!(" id=\"{id}\"")), 1, "#{id}");
    }
    let n = &f.report.numbers;
    // One distribution per stage path, and the dispatch's.
    assert_eq!(count(&html, "<svg class=\"dist\""), n.stages.len() + 1);
    for i in 0..n.stages.len() {
        assert!(html.contains(&format!("id=\"dist-{i}\"")), "dist-{i}");
    }
    // One stage-table row per stage, the dispatch and the unattributed.
    assert_eq!(count(&html, "<tr class=\"stage\">"), n.stages.len());
    assert_eq!(count(&html, "<tr class=\"root\">"), 1);
    // The slowest list and the gates.
    assert_eq!(count(&html, "<code class=\"trace\">"), 5 + 2);
    assert_eq!(count(&html, "<li class=\"pass\">"), 1);
    assert_eq!(count(&html, "<li class=\"fail\">"), 1);
    // Each waterfall draws every span of its dispatch: the dispatch,
    // acquire, exec, process.run, the odd one, first output.
    assert_eq!(f.waterfalls.len(), 2);
    for w in &f.waterfalls {
        assert_eq!(w.bars.len(), 6);
    }
    assert_eq!(count(&html, "<rect class=\"span"), 12);
    assert_eq!(count(&html, "<rect class=\"span error\""), 2);
    // Cold against warm: both rows, and the cost of a cold start.
    assert_eq!(count(&html, "<g class=\"warmth-row"), 2);
    assert!(html.contains("A cold start costs <strong>+"));
    // The server is named as the user knows it (escaped).
    assert!(html.contains("&lt;b&gt;box&lt;/b&gt;!"));
    // The legend: the three services, known ones first.
    let legend = &html[html.find("id=\"service-legend\"").unwrap()..];
    let legend = &legend[..legend.find("</ul>").unwrap()];
    let core = legend.find(">core-client<").unwrap();
    let server = legend.find(">exec-server<").unwrap();
    let odd = legend.find("&lt;i&gt;svc&lt;/i&gt;").unwrap();
    assert!(core < server && server < odd, "{legend}");
}

#[test]
fn text_from_the_data_is_escaped() {
    let html = page(&fixture(&["p50(session.acquire) < 1ms"], true));
    assert!(!html.contains(EVIL), "the program name came through raw");
    assert!(!html.contains(EVIL_STAGE));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b>box"));
    assert!(!html.contains("<i>svc"));
    assert!(!html.to_lowercase().contains("<script"));
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    // In the first-output table, the slowest list, the waterfalls' headers,
    // the skipped line's note and the A/B's baseline.
    assert!(count(&html, escaped) >= 5, "{}", count(&html, escaped));
    assert!(html.contains("x&quot;&gt;&lt;img src=http://evil.example/x onerror=alert(1)&gt;"));
}

/// Every attribute of every tag, as (lower-case name, value): a small
/// tokenizer for the page's own markup (whose attribute values never hold
/// a raw `<` or `>`).
fn attributes(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>').unwrap_or(after.len());
        let tag = &after[..close];
        rest = &after[close..];
        // Past the tag's name.
        let mut t = tag.trim_start_matches(|c: char| !c.is_whitespace());
        loop {
            t = t.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
            if t.is_empty() {
                break;
            }
            let name_end = t
                .find(|c: char| c == '=' || c.is_whitespace() || c == '/')
                .unwrap_or(t.len());
            let name = t[..name_end].to_ascii_lowercase();
            t = t[name_end..].trim_start();
            let value = if let Some(v) = t.strip_prefix('=') {
                let v = v.trim_start();
                match v.chars().next() {
                    Some(q @ ('"' | '\'')) => {
                        let end = v[1..].find(q).map_or(v.len(), |e| e + 1);
                        t = v.get(end + 1..).unwrap_or("");
                        v[1..end].to_owned()
                    }
                    _ => {
                        let end = v.find(char::is_whitespace).unwrap_or(v.len());
                        t = &v[end..];
                        v[..end].to_owned()
                    }
                }
            } else {
                String::new()
            };
            out.push((name, value));
        }
    }
    out
}

/// The values of the attributes named `name`.
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    attributes(html)
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn nothing_is_fetched() {
    let html = page(&fixture(&["p50(session.acquire) < 1ms"], true));
    // No element that fetches, and no style that does.
    for tag in [
        "<script", "<img", "<link", "<iframe", "<object", "<embed", "<image", "<use",
    ] {
        assert!(!html.to_lowercase().contains(tag), "{tag}");
    }
    let lower = html.to_lowercase();
    assert!(!lower.contains("url("));
    assert!(!lower.contains("@import"));
    let fetching: Vec<(String, String)> = attributes(&html)
        .into_iter()
        .filter(|(n, _)| {
            [
                "src",
                "srcset",
                "action",
                "formaction",
                "data",
                "poster",
                "background",
            ]
            .contains(&n.as_str())
                || (n.ends_with("href") && n != "href")
        })
        .collect();
    assert!(fetching.is_empty(), "{fetching:?}");
    let hrefs = attribute_values(&html, "href");
    assert!(!hrefs.is_empty(), "the navigation links");
    for href in hrefs {
        assert!(href.starts_with('#'), "href={href}");
        assert!(!href.contains("http://") && !href.contains("https://"));
    }
    // The Jaeger URL and the evil stage's URL are text, not links.
    assert!(html.contains("Jaeger at http://jaeger.example:16686"));
    // And the browser is told to fetch nothing.
    assert!(html.contains("content=\"default-src 'none'; style-src 'unsafe-inline'\""));
}

#[test]
fn the_attribute_scan_finds_urls() {
    // The helper above can fail.
    let html = r#"<p title="a src=x">src=text</p><img alt=x src="http://a/b"><a href=https://c>x</a><image  HREF = '//d' />"#;
    assert_eq!(attribute_values(html, "src"), ["http://a/b"]);
    assert_eq!(attribute_values(html, "href"), ["https://c", "//d"]);
    assert_eq!(attribute_values(html, "title"), ["a src=x"]);
}

#[test]
fn a_report_without_commands_says_why() {
    let source = SourceInfo {
        kind: "file".into(),
        read: vec!["empty.jsonl".into()],
        traces_without_commands: 3,
        ..SourceInfo::default()
    };
    let report = report_of(
        source,
        numbers(&[], &Default::default(), 10),
        None,
        Vec::new(),
    );
    let html = render(
        &report,
        &Extras {
            waterfalls: &[],
            waterfall_error: None,
            names: &Ids,
        },
    );
    assert!(html.contains("0 commands from empty.jsonl"));
    assert!(html.contains("no commands: 3 traces read, none with a tool.dispatch span"));
    assert!(!html.contains("id=\"stages\""));
    assert!(!html.contains("<nav>"));
}

#[test]
fn waterfalls_say_when_spans_are_missing_or_left_out() {
    let mut f = fixture(&[], false);
    f.waterfalls[0].bars.clear();
    f.waterfalls[1].left_out = 7;
    let html = render(
        &f.report,
        &Extras {
            waterfalls: &f.waterfalls,
            waterfall_error: Some("reading <x>: gone"),
            names: &Ids,
        },
    );
    assert!(html.contains("The spans could not be read again: reading &lt;x&gt;: gone"));
    assert!(html.contains("Its spans were not found again"));
    assert!(html.contains("7 shorter spans are not drawn (at most 300 per waterfall"));
    assert!(!html.contains("id=\"waterfall-median\""));
    assert!(html.contains("id=\"waterfall-slowest\""));
}

#[test]
fn legs_of_an_unknown_split_are_one_round_trip_and_bounds_are_whiskers() {
    let mut f = fixture(&[], false);
    let ms = 1_000_000i64;
    let bar = |name: &str, service: &str, at: i64, took: i64| waterfall::Bar {
        name: name.to_owned(),
        service: service.to_owned(),
        depth: 1,
        offset_ns: at,
        duration_ns: u64::try_from(took).unwrap(),
        error: false,
        clock_source: None,
        clock_bound_ns: 0,
        unsplit_round_trip_ns: None,
        direction: None,
    };
    let leg = |direction: &str, at: i64, took: i64| waterfall::Bar {
        clock_source: Some("two-way".into()),
        clock_bound_ns: 20 * ms,
        unsplit_round_trip_ns: Some(80 * ms),
        direction: Some(direction.into()),
        ..bar("link.transit", "core-client", at, took)
    };
    let placed = waterfall::Bar {
        clock_source: Some("two-way".into()),
        clock_bound_ns: 20 * ms,
        ..bar("rpc.server.exec", "exec-server", 40 * ms, 20 * ms)
    };
    let mut dispatch = bar("tool.dispatch", "core-client", 0, 100 * ms);
    dispatch.depth = 0;
    f.waterfalls[0].bars = vec![
        dispatch,
        leg("to_server", 5 * ms, 35 * ms),
        placed,
        leg("to_client", 60 * ms, 40 * ms),
    ];
    let html = page(&f);
    // Both legs faint, neither with a duration of its own: the round trip
    // is the measured interval, said once.
    assert_eq!(count(&html, "<rect class=\"span unsplit\""), 2);
    assert_eq!(
        count(&html, "80.0ms there and back, split unknown"),
        1,
        "{html}"
    );
    assert_eq!(count(&html, "? (the way back)"), 1);
    assert!(
        !html.contains(">35.0ms<") && !html.contains(">40.0ms<"),
        "{html}"
    );
    // The placed stage: a whisker of ± 20 ms at its start, and the
    // header says which source placed the exec-server.
    assert_eq!(count(&html, "<line class=\"bound\""), 1);
    assert!(
        html.contains("Clocks: exec-server placed by two-way ± 20.0ms (how a round trip splits"),
        "{html}"
    );
    // The same host: exact, no whisker.
    for b in &mut f.waterfalls[0].bars {
        if b.clock_source.is_some() {
            b.clock_source = Some("same-host".into());
            b.clock_bound_ns = 0;
            b.unsplit_round_trip_ns = None;
        }
    }
    let html = page(&f);
    assert_eq!(
        count(&html, "unsplit"),
        count(&page(&fixture(&[], false)), "unsplit")
    );
    assert_eq!(count(&html, "<line class=\"bound\""), 0);
    assert!(
        html.contains("Clocks: exec-server placed by same-host, exact."),
        "{html}"
    );
}

#[test]
fn window_limited_time_is_on_the_page_and_in_the_table_when_a_window_held_commands_up() {
    let mut f = fixture(&[], false);
    assert!(!page(&f).contains("id=\"windows\""), "nothing waited");
    f.report.numbers.window_limited = Some(crate::aggregate::WindowLimited {
        commands: 3,
        stdin_wait: Summary::of(&mut [1_000_000, 3_000_000, 5_000_000]),
        stdin_window_max: 4 << 20,
        output_wait: Summary::of(&mut [20_000_000]),
        output_window_max: 8 << 20,
    });
    let html = page(&f);
    assert!(
        html.contains(r##"<a href="#windows">Windows</a>"##),
        "{html}"
    );
    assert!(html.contains("<section id=\"windows\">"));
    assert!(html.contains("3 of 12 commands waited for a flow-control window"));
    assert!(html.contains(
        "<li>stdin waited for its window in 3 commands: p50 3.00ms, p90 5.00ms (widest 4.0 MiB)</li>"
    ));
    assert!(html.contains(
        "<li>output waited for credit in 1 command: p50 20.0ms, p90 20.0ms (window up to 8.0 MiB)</li>"
    ));
    let text = crate::text::render(&f.report, &Bang);
    assert!(
        text.contains(
            "\nwindow-limited: 3 of 12 commands\n  stdin waited for its window in 3 commands"
        ),
        "{text}"
    );
}
