//! `core-client report --html` opened in a real browser: a trace file of
//! known commands (three services, cold and warm sessions, programs with
//! and without output, one whose name is markup) is reported as a page;
//! headless chromium takes its screenshot and dumps its DOM, which must
//! hold the stage table, a distribution chart per stage, the cold/warm
//! chart, the first-output and slowest tables, both waterfalls with a bar
//! per span, and the service legend; the markup in the data must stay
//! text. Every request chromium makes goes to a proxy the test owns: the
//! page must make none (a control page with one remote image must make
//! one, so the proxy is known to see them).
//!
//! Without chromium the test prints a skip notice and passes, unless
//! `REX_REQUIRE_CHROMIUM=1` (CI) makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use integration_tests::binaries;
use integration_tests::chromium::{self, Listener};
use serde_json::{Value, json};

const EVIL: &str = "<script>alert(1)</script>";

/// Every span of one command: its service, name, parent's name, start and
/// end (µs from the dispatch's start).
struct Planned {
    service: &'static str,
    name: &'static str,
    parent: Option<&'static str>,
    start: u64,
    end: u64,
}

/// One command of the generated file.
struct Generated {
    trace: String,
    dispatch_us: u64,
    /// The spans under its dispatch, the dispatch included.
    spans: usize,
}

fn plan(total: u64, cold: bool, prints: bool) -> Vec<Planned> {
    let p = |service, name, parent, start, end| Planned {
        service,
        name,
        parent,
        start,
        end,
    };
    let d = Some("tool.dispatch");
    let acquire = if cold { total / 3 } else { 40 };
    let exec_end = total - 400;
    let mut out = vec![
        p("core-client", "tool.dispatch", None, 0, total),
        p("core-client", "dispatch.prepare", d, 0, 20),
        p("core-client", "session.acquire", d, 20, 20 + acquire),
    ];
    if cold {
        let a = Some("session.acquire");
        out.push(p("core-client", "relay.connect", a, 20, 20 + acquire / 2));
        out.push(p(
            "core-client",
            "noise.handshake",
            a,
            20 + acquire / 2,
            20 + acquire,
        ));
    }
    let x = 20 + acquire;
    out.extend([
        p("core-client", "link.transit", d, x, x + 300),
        p("relay", "relay.forward", d, x + 100, x + 150),
        p("exec-server", "rpc.server.exec", d, x + 300, exec_end),
        p(
            "exec-server",
            "process.run",
            Some("rpc.server.exec"),
            x + 400,
            exec_end - 50,
        ),
        p(
            "core-client",
            "relay.frame.recv",
            d,
            exec_end,
            exec_end + 300,
        ),
        p("core-client", "terminal.handoff", d, exec_end + 300, total),
    ]);
    if prints {
        out.push(p("core-client", "exec.first_output", d, 0, x + 500));
    }
    out
}

/// Writes `n` commands to `path` as the trace file has them (one line per
/// service and trace) and returns them.
fn write_traces(path: &Path, n: u64) -> Vec<Generated> {
    let mut text = String::new();
    let mut made = Vec::new();
    for i in 0..n {
        let trace = format!("{:032x}", 0x5eed_0000_u128 + u128::from(i));
        let cold = i % 4 == 0;
        let program = match i % 3 {
            0 => "ls",
            1 => "make",
            _ => EVIL,
        };
        let prints = !(program == "make" && i % 2 == 1);
        let total = 4_000 + 700 * ((i * 7) % n) + if cold { 20_000 } else { 0 };
        let t0: u64 = 1_790_000_000_000_000_000 + i * 5_000_000_000;
        let planned = plan(total, cold, prints);
        let id = |name: &str| -> String {
            let k = planned.iter().position(|s| s.name == name).unwrap() as u64;
            format!("{:016x}", ((i + 1) << 16) | (k + 1))
        };
        for service in ["exec-server", "relay", "core-client"] {
            let spans: Vec<Value> = planned
                .iter()
                .filter(|s| s.service == service)
                .map(|s| {
                    let mut span = json!({
                        "traceId": trace,
                        "spanId": id(s.name),
                        "name": s.name,
                        "startTimeUnixNano": (t0 + s.start * 1_000).to_string(),
                        "endTimeUnixNano": (t0 + s.end * 1_000).to_string(),
                    });
                    if let Some(parent) = s.parent {
                        span["parentSpanId"] = json!(id(parent));
                    }
                    let attrs: Vec<Value> = match s.name {
                        "tool.dispatch" => vec![
                            json!({"key": "process.executable.name", "value": {"stringValue": program}}),
                            json!({"key": "rex.server.id", "value": {"stringValue": "0123456789abcdef"}}),
                        ],
                        "session.acquire" => vec![json!({
                            "key": "rex.session.warmth",
                            "value": {"stringValue": if cold { "cold" } else { "warm" }}
                        })],
                        _ => Vec::new(),
                    };
                    if !attrs.is_empty() {
                        span["attributes"] = json!(attrs);
                    }
                    span
                })
                .collect();
            let line = json!({"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": service}, "spans": spans}]
            }]});
            text.push_str(&line.to_string());
            text.push('\n');
        }
        made.push(Generated {
            trace,
            dispatch_us: total,
            spans: planned.len(),
        });
    }
    std::fs::write(path, text).unwrap();
    made
}

/// The part of `dom` from the element with `id` to the end of that
/// element (its closing `</tag>`; the elements checked do not nest in
/// themselves).
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<{tag} id=\"{id}\""))
        .or_else(|| {
            // Attributes may come in another order.
            let at = dom.find(&format!(" id=\"{id}\""))?;
            dom[..at].rfind(&format!("<{tag}"))
        })
        .unwrap_or_else(|| panic!("no <{tag} id={id}> in the DOM"));
    let rest = &dom[start..];
    let end = rest
        .find(&format!("</{tag}>"))
        .unwrap_or_else(|| panic!("<{tag} id={id}> is not closed"));
    &rest[..end]
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// PNG width and height from its header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn the_page_opens_in_a_browser_with_every_chart_and_fetches_nothing() {
    let test = "the_page_opens_in_a_browser_with_every_chart_and_fetches_nothing";
    if !chromium::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let commands = write_traces(&dir.path().join("traces.jsonl"), 24);
    let page = dir.path().join("page.html");
    let out = binaries::core_client(dir.path())
        .unwrap()
        .args(["report", "--top", "5", "--html"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tables are printed as well.
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("24 commands from the trace file"));
    let url = format!("file://{}", page.display());

    let proxy = Listener::start().unwrap();
    let shot = dir.path().join("out.png");
    let mut cmd = chromium::headless(dir.path(), &proxy);
    cmd.arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1400,3000")
        .arg(&url);
    chromium::run(cmd).unwrap();
    let mut cmd = chromium::headless(dir.path(), &proxy);
    cmd.arg("--dump-dom").arg(&url);
    let dom = String::from_utf8(chromium::run(cmd).unwrap().stdout).unwrap();
    assert_eq!(
        proxy.connections(),
        0,
        "the page (or the browser) made a request"
    );

    // The screenshot: a PNG of the window's size with something drawn.
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(png_size(&png), (1400, 3000));
    assert!(
        png.len() > 60_000,
        "a near-empty screenshot: {} bytes",
        png.len()
    );

    // The stage tree: the dispatch, the 11 stage paths, the unattributed.
    let stages = element(&dom, "table", "stage-table");
    assert_eq!(count(stages, "<tr class=\"root\">"), 1);
    assert_eq!(count(stages, "<tr class=\"stage\">"), 11);
    for name in [
        "session.acquire",
        "noise.handshake",
        "rpc.server.exec",
        "process.run",
    ] {
        assert!(stages.contains(&format!(">{name}</td>")), "{name}");
    }
    // A distribution chart per stage and the dispatch's, on one axis.
    let dists = element(&dom, "table", "dist-table");
    assert_eq!(count(dists, "<svg class=\"dist\""), 12);
    assert!(dists.contains("id=\"dist-dispatch\""));
    assert!(dists.contains("id=\"dist-axis\""));
    assert!(count(dists, "<rect class=\"hist\"") >= 12);
    // Cold against warm: both, drawn and in numbers, and the cost.
    let chart = element(&dom, "svg", "warmth-chart");
    assert_eq!(count(chart, "<g class=\"warmth-row"), 2);
    let warmth = element(&dom, "table", "warmth-table");
    assert!(warmth.contains("cold</td><td>6</td>"), "{warmth}");
    assert!(warmth.contains("warm</td><td>18</td>"), "{warmth}");
    assert!(dom.contains("A cold start costs <strong>+"));
    // First output: three programs, make's silent ones counted apart.
    let first = element(&dom, "table", "first-output-table");
    assert_eq!(count(first, "<tr>"), 1 + 3);
    // The slowest commands with their trace ids.
    let slowest = element(&dom, "table", "slowest-table");
    let mut by_time: Vec<&Generated> = commands.iter().collect();
    by_time.sort_by_key(|c| (std::cmp::Reverse(c.dispatch_us), c.trace.clone()));
    for c in by_time.iter().take(5) {
        assert!(slowest.contains(&c.trace), "{} among the slowest", c.trace);
    }
    // The waterfalls: a bar per span of the median and the slowest command.
    by_time.reverse();
    // The nearest rank of the median: ⌈n/2⌉.
    let median = by_time[by_time.len().div_ceil(2) - 1];
    let slowest = by_time.last().unwrap();
    for (id, c) in [
        ("waterfall-median", median),
        ("waterfall-slowest", *slowest),
    ] {
        let fall = element(&dom, "svg", id);
        assert_eq!(count(fall, "<rect class=\"span"), c.spans, "{id}");
        assert!(fall.contains(">tool.dispatch</text>"), "{id}");
    }
    assert!(element(&dom, "div", "fall-median").contains(&median.trace));
    assert!(element(&dom, "div", "fall-slowest").contains(&slowest.trace));
    let legend = element(&dom, "ul", "service-legend");
    for service in ["core-client", "relay", "exec-server"] {
        assert!(
            legend.contains(&format!("</span>{service}</li>")),
            "{service}"
        );
    }
    // The program named as markup stayed text.
    assert!(!dom.contains(EVIL));
    assert!(!dom.to_lowercase().contains("<script"));
    assert!(first.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn the_proxy_sees_a_page_that_fetches() {
    // The control for the test above: a page with one remote image is
    // seen by the proxy, so zero connections there means zero requests.
    let test = "the_proxy_sees_a_page_that_fetches";
    if !chromium::available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("fetching.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><img src=\"http://rex-report-test.invalid/x.png\"></body></html>",
    )
    .unwrap();
    let proxy = Listener::start().unwrap();
    let mut cmd = chromium::headless(dir.path(), &proxy);
    cmd.arg("--dump-dom")
        .arg(format!("file://{}", page.display()));
    chromium::run(cmd).unwrap();
    assert!(proxy.connections() > 0, "the proxy saw no request");
}
