//! Rendering one trace from the local trace file as text: a header, a
//! waterfall of its spans in tree order, and a per-stage table
//! (`core-client trace show`).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::format::plural;
use crate::layout::{self, Row};
use crate::model::{Span, Trace};
use crate::names::Names;
use crate::table::{self, Align};
use crate::trace_file::{self as traces, InvalidSelector, Selector, TraceFileError};
use telemetry::spans::ClockSource as Source;
use telemetry::spans::{
    ATTR_CLOCK_MEASURED, ATTR_CLOCK_OFFSET, ATTR_OUTPUT_CREDIT_WAIT, ATTR_OUTPUT_WINDOW,
    ATTR_OUTPUT_WINDOW_FIRST, ATTR_SESSION_EARLY_RETRIES, ATTR_SESSION_FLIGHTS,
    ATTR_SESSION_ROUND_TRIPS, ATTR_STDIN_WINDOW, ATTR_STDIN_WINDOW_WAIT, LINK_TRANSIT,
    TERMINAL_DELIVERY, TERMINAL_PUSH,
};

/// The offset attribute trace files written before clock sources name.
const LEGACY_CLOCK_OFFSET: &str = "rex.clock_offset_ns";
/// The moved-from estimate in trace files written before clock sources.
const LEGACY_CLOCK_MEASURED: &str = "rex.clock_offset_measured_ns";

/// The narrowest timeline drawn, in cells.
pub(crate) const MIN_WIDTH: usize = 10;

/// The timeline width [`show`] uses, in cells.
pub const SHOW_WIDTH: usize = 40;

const FILLED: char = '█';
/// A `link.transit` leg whose share of its round trip is unknown.
const UNSPLIT: char = '░';
const EMPTY: char = '·';
/// A zero-duration span's instant on the timeline.
const INSTANT: char = '|';

/// Showing a trace failed; every message fits on one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShowError {
    /// The selector is neither `last` nor a trace id.
    #[error(transparent)]
    Selector(#[from] InvalidSelector),
    /// The trace file could not be read or does not hold the trace.
    #[error(transparent)]
    TraceFile(#[from] TraceFileError),
    /// Writing the rendered trace failed.
    #[error("writing the trace: {0}")]
    Write(#[from] io::Error),
}

/// The attribute naming the exec-server a dispatch went to.
pub(crate) const SERVER_ID_ATTRIBUTE: &str = "rex.server.id";

/// Finds the trace `selector` names (`last` or a trace id) in the trace file
/// at `path` and writes it, rendered with a [`SHOW_WIDTH`]-cell timeline
/// and the exec-server named as `names` name it.
pub fn show(
    path: &Path,
    selector: &str,
    names: &dyn Names,
    out: &mut impl io::Write,
) -> Result<(), ShowError> {
    let selector: Selector = selector.parse()?;
    let trace = traces::find(path, &selector)?;
    out.write_all(render_named(&trace, SHOW_WIDTH, names).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Renders `trace` as a header line, a waterfall whose timeline is `width`
/// cells wide (at least [`MIN_WIDTH`]), and a per-stage table.
#[cfg(test)]
pub(crate) fn render(trace: &Trace, width: usize) -> String {
    render_named(trace, width, &crate::names::NoNames)
}

/// [`render`], with a line naming the exec-server (as `names` name it,
/// else by its id) when the trace says which it was.
pub(crate) fn render_named(trace: &Trace, width: usize, names: &dyn Names) -> String {
    let width = width.max(MIN_WIDTH);
    let placed = layout::tree(&trace.spans);
    let t0 = placed.iter().map(|p| p.start).min().unwrap_or(0);
    let t1 = placed.iter().map(|p| p.end).max().unwrap_or(t0);
    let total = t1 - t0;

    // Each service once, with the hosts its spans were made on.
    let mut services: Vec<(&str, Vec<&str>)> = Vec::new();
    for p in &placed {
        let host = p.span.host();
        match services.iter_mut().find(|(s, _)| *s == &*p.span.service) {
            Some((_, hosts)) => {
                if let Some(h) = host.filter(|h| !hosts.contains(h)) {
                    hosts.push(h);
                }
            }
            None => services.push((&p.span.service, host.into_iter().collect())),
        }
    }
    let services: Vec<String> = services
        .iter()
        .map(|(service, hosts)| {
            if hosts.is_empty() {
                (*service).to_owned()
            } else {
                format!("{service} on {}", hosts.join(", "))
            }
        })
        .collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}: {} ms, {} span{}, services: {}",
        trace.id_hex(),
        ms(total),
        placed.len(),
        if placed.len() == 1 { "" } else { "s" },
        if services.is_empty() {
            "none".to_owned()
        } else {
            services.join(", ")
        },
    );
    let mut servers: Vec<&str> = Vec::new();
    for p in &placed {
        for (key, value) in p.span.attributes() {
            if &**key == SERVER_ID_ATTRIBUTE && !servers.contains(&&**value) {
                servers.push(value);
            }
        }
    }
    for id in servers {
        let _ = match names.name(id) {
            Some(name) => writeln!(out, "server {name} (id {id})"),
            None => writeln!(out, "server {id}"),
        };
    }
    if placed.is_empty() {
        out.push_str("(no spans)\n");
        return out;
    }
    session_line(&mut out, &trace.spans);
    window_line(&mut out, &trace.spans);
    remote_line(&mut out, &trace.spans);
    out.push('\n');
    waterfall(&mut out, &placed, t0, total, width);
    out.push('\n');
    stage_table(&mut out, &placed, placed.first().map(Row::duration));
    notes(&mut out, &placed);
    out
}

/// What opening its session cost the command, from the session's own
/// counters (only a command that opened its session has them).
fn session_line(out: &mut String, spans: &[Span]) {
    let value = |span: &Span, key: &str| span.text(key).and_then(|v| v.parse::<u64>().ok());
    let Some((span, round_trips)) = spans
        .iter()
        .find_map(|s| value(s, ATTR_SESSION_ROUND_TRIPS).map(|n| (s, n)))
    else {
        return;
    };
    let _ = write!(
        out,
        "session: {} before the first event",
        plural(round_trips, "round trip", "round trips")
    );
    if let Some(flights) = value(span, ATTR_SESSION_FLIGHTS) {
        let _ = write!(out, ", {}", plural(flights, "flight", "flights"));
    }
    if let Some(retries) = value(span, ATTR_SESSION_EARLY_RETRIES).filter(|n| *n > 0) {
        let _ = write!(
            out,
            ", {} after early data was refused",
            plural(retries, "retry", "retries")
        );
    }
    out.push('\n');
}

/// Whether a flow-control window held the command up: the time its stdin
/// waited for the exec-server's window and its output for credit, with
/// the widest windows (only when one of them waited).
fn window_line(out: &mut String, spans: &[Span]) {
    let value = |key: &str| {
        spans
            .iter()
            .find_map(|s| s.text(key).and_then(|v| v.parse::<u64>().ok()))
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut parts = Vec::new();
    if let Some(wait) = value(ATTR_STDIN_WINDOW_WAIT).filter(|n| *n > 0) {
        let window = value(ATTR_STDIN_WINDOW).unwrap_or(0);
        parts.push(format!(
            "stdin waited {:.1} ms for its window (widest {:.1} MiB)",
            ms(wait),
            mib(window)
        ));
    }
    if let Some(wait) = value(ATTR_OUTPUT_CREDIT_WAIT).filter(|n| *n > 0) {
        let window = value(ATTR_OUTPUT_WINDOW).unwrap_or(0);
        // Where it started, when it grew from there.
        let window = match value(ATTR_OUTPUT_WINDOW_FIRST).filter(|f| *f < window) {
            Some(first) => format!("{:.1} → {:.1} MiB", mib(first), mib(window)),
            None => format!("{:.1} MiB", mib(window)),
        };
        parts.push(format!(
            "output waited {:.1} ms for credit (window {window})",
            ms(wait),
        ));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "window-limited: {}", parts.join("; "));
    }
}

/// How the exec-server's side of a client's command got here: brought home
/// in the session and placed on our clock (from which clock source, within
/// what bound), or not known at all (an exec-server that sends no timings,
/// with no collector).
fn remote_line(out: &mut String, spans: &[Span]) {
    let client_dispatch = spans
        .iter()
        .any(|s| &*s.name == telemetry::spans::TOOL_DISPATCH && &*s.service == "core-client");
    if !client_dispatch {
        return;
    }
    let placed = |service: &str| {
        spans
            .iter()
            .find(|s| &*s.service == service && s.is_placed())
    };
    if let Some(copy) = placed(telemetry::remote::EXEC_SERVER) {
        let _ = writeln!(
            out,
            "exec-server's stages: brought home in the session, {}",
            placement(copy)
        );
    } else if !spans
        .iter()
        .any(|s| &*s.service == telemetry::remote::EXEC_SERVER)
    {
        out.push_str(
            "exec-server's stages: not known (it sent none; export its spans to a collector to see them)\n",
        );
    }
    if let Some(copy) = placed(telemetry::remote::RELAY) {
        let _ = writeln!(
            out,
            "relay's forwards: told on its frames, {}",
            placement(copy)
        );
    }
}

/// How a placed span was placed on our clock, in words: its clock source,
/// the offset and its bound.
fn placement(copy: &Span) -> String {
    let offset = copy
        .int(ATTR_CLOCK_OFFSET)
        .or_else(|| copy.int(LEGACY_CLOCK_OFFSET))
        .unwrap_or(0);
    let bound = copy.attrs.clock_bound_ns;
    let moved = copy
        .int(ATTR_CLOCK_MEASURED)
        .or_else(|| copy.int(LEGACY_CLOCK_MEASURED))
        .map(|measured| {
            format!(
                " (estimated {} ms, moved to keep cause before effect)",
                signed_ms(measured)
            )
        })
        .unwrap_or_default();
    match clock_source(copy) {
        Some(Source::SameHost) => {
            "placed on our clock as it is (same host: one kernel, one clock, exact)".to_owned()
        }
        Some(Source::Synchronized) => format!(
            "placed with its clock {} ms{} off ours{moved} (both kernels synchronized)",
            signed_ms(offset),
            plus_minus(bound)
        ),
        _ => format!(
            "placed with its clock {} ms{} off ours{moved} (estimated from round trips: how \
             each round trip splits between its two ways is unknown)",
            signed_ms(offset),
            plus_minus(bound)
        ),
    }
}

/// ` ± x.xxx` for a bound, or nothing when it is unknown.
fn plus_minus(bound: Option<i64>) -> String {
    bound
        .filter(|b| *b >= 0 && *b < i64::MAX)
        .map(|b| format!(" ± {} ms", ms(b.unsigned_abs())))
        .unwrap_or_default()
}

/// The clock source that placed a span (`None`: not placed, or by a
/// version that did not say).
fn clock_source(span: &Span) -> Option<Source> {
    span.attrs.clock_source.as_deref().and_then(Source::parse)
}

/// Nanoseconds as signed milliseconds, three decimals.
fn signed_ms(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "+" };
    let abs = nanos.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1_000_000, (abs % 1_000_000) / 1_000)
}

fn waterfall(out: &mut String, placed: &[Row<'_>], t0: u64, total: u64, width: usize) {
    let label = |p: &Row<'_>| match p.span.text("rex.leg") {
        Some(leg) if &*p.span.name == LINK_TRANSIT => {
            format!("{}{} ({leg})", "  ".repeat(p.depth as usize), p.span.name)
        }
        _ => format!("{}{}", "  ".repeat(p.depth as usize), p.span.name),
    };
    // A placed span's start carries its bound where the drawing can show
    // it: at least one timeline cell.
    let cell = total / width.max(1) as u64;
    let starts: Vec<String> = placed
        .iter()
        .map(|p| {
            let bound = p
                .span
                .attrs
                .clock_bound_ns
                .filter(|b| p.span.is_placed() && *b > 0 && b.unsigned_abs() >= cell);
            match bound {
                Some(b) => format!("{}±{}", ms(p.start - t0), ms(b.unsigned_abs())),
                None => ms(p.start - t0),
            }
        })
        .collect();
    // A leg whose split is unknown has no duration of its own to state.
    let durations: Vec<String> = placed
        .iter()
        .map(|p| {
            if p.span.attrs.split_unknown {
                "?".to_owned()
            } else {
                ms(p.duration())
            }
        })
        .collect();
    let rows: Vec<Vec<String>> = placed
        .iter()
        .zip(starts)
        .zip(durations)
        .map(|((p, start), duration)| {
            let unsplit = p.span.attrs.split_unknown;
            let mut drawn = bar(p.start - t0, p.end - t0, total, width);
            if unsplit {
                drawn = drawn.replace(FILLED, &UNSPLIT.to_string());
                drawn.push_str(&round_trip_note(p.span));
            }
            vec![label(p), p.span.service.to_string(), start, duration, drawn]
        })
        .collect();
    out.push_str(&table::render(
        &[
            ("span", Align::Left),
            ("service", Align::Left),
            ("start ms", Align::Right),
            ("dur ms", Align::Right),
            ("timeline", Align::Left),
        ],
        &rows,
    ));
}

/// What a leg of an unknown split stands for: the round trip it makes
/// with its opposite leg, stated on the outbound leg.
fn round_trip_note(span: &Span) -> String {
    match (span.attrs.direction.as_deref(), span.attrs.round_trip_ns) {
        (Some("to_server"), Some(rtt)) => format!(
            "  {} ms there and back, split unknown",
            ms(rtt.unsigned_abs())
        ),
        _ => "  (the way back of a round trip above)".to_owned(),
    }
}

/// The timeline cells for a span at `[start, end]` (offsets from the trace
/// start) in a trace lasting `total`: filled cells cover the interval, at
/// least one for a non-zero span; a zero-duration span marks its instant.
fn bar(start: u64, end: u64, total: u64, width: usize) -> String {
    let (first, last) = if total == 0 {
        (0, 1)
    } else {
        let cells = width as u128;
        let total = u128::from(total);
        let first = (u128::from(start) * cells / total).min(cells - 1);
        let last = (u128::from(end) * cells).div_ceil(total).min(cells);
        let last = last.max(first + 1);
        (
            usize::try_from(first).unwrap_or(width - 1),
            usize::try_from(last).unwrap_or(width),
        )
    };
    let mark = if end == start { INSTANT } else { FILLED };
    (0..width)
        .map(|cell| {
            if (first..last).contains(&cell) {
                mark
            } else {
                EMPTY
            }
        })
        .collect()
}

/// One row per span name, in order of first appearance: count, summed
/// duration and its share of the root span's duration.
fn stage_table(out: &mut String, placed: &[Row<'_>], root_duration: Option<u64>) {
    let mut stages: Vec<(&str, usize, u64)> = Vec::new();
    for p in placed {
        match stages
            .iter_mut()
            .find(|(name, _, _)| *name == &*p.span.name)
        {
            Some((_, count, sum)) => {
                *count += 1;
                *sum = sum.saturating_add(p.duration());
            }
            None => stages.push((&p.span.name, 1, p.duration())),
        }
    }
    let rows: Vec<[String; 4]> = stages
        .iter()
        .map(|(name, count, sum)| {
            let share = match root_duration {
                Some(root) if root > 0 => format!("{:.1}%", *sum as f64 * 100.0 / root as f64),
                _ => "n/a".to_owned(),
            };
            [(*name).to_owned(), count.to_string(), ms(*sum), share]
        })
        .collect();
    out.push_str(&table::render(
        &[
            ("stage", Align::Left),
            ("count", Align::Right),
            ("total ms", Align::Right),
            ("share", Align::Right),
        ],
        &rows
            .into_iter()
            .map(Vec::from)
            .collect::<Vec<Vec<String>>>(),
    ));
}

/// The `rex.*` attributes of the terminal spans, and any errors, one line
/// per span.
fn notes(out: &mut String, placed: &[Row<'_>]) {
    let mut lines: Vec<String> = Vec::new();
    for p in placed {
        if &*p.span.name == TERMINAL_PUSH || &*p.span.name == TERMINAL_DELIVERY {
            let attributes: Vec<String> = p
                .span
                .attributes()
                .iter()
                .filter(|(key, _)| key.starts_with("rex."))
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            if !attributes.is_empty() {
                lines.push(format!("{}: {}", p.span.name, attributes.join(", ")));
            }
        }
    }
    for p in placed {
        if let Some(error) = p.span.error_message() {
            lines.push(format!(
                "error in {} ({}): {error}",
                p.span.name, p.span.service
            ));
        }
    }
    if !lines.is_empty() {
        out.push('\n');
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
}

/// Nanoseconds as milliseconds with three decimals (rounded to the
/// microsecond).
fn ms(nanos: u64) -> String {
    let micros = nanos.saturating_add(500) / 1_000;
    format!("{}.{:03}", micros / 1_000, micros % 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attrs;
    use crate::names::NoNames;
    use std::sync::Arc;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    fn span(
        name: &str,
        service: &str,
        id: &str,
        parent: Option<&str>,
        start: u64,
        end: u64,
    ) -> Span {
        let hex = |id: &str| u64::from_str_radix(id, 16).unwrap();
        let mut span = Span::new(
            u128::from_str_radix(TRACE_ID, 16).unwrap(),
            hex(id),
            parent.map_or(0, hex),
            name,
            T0 + start,
            T0 + end,
        );
        span.service = Arc::from(service);
        span.detail = Some(Box::default());
        span
    }

    fn trace(spans: Vec<Span>) -> Trace {
        Trace::new(u128::from_str_radix(TRACE_ID, 16).unwrap(), spans)
    }

    /// Sets `span`'s attributes to `attrs` (only).
    fn set_attrs(span: &mut Span, attrs: &[(&str, &str)]) {
        span.attrs = Attrs::default();
        span.detail_mut().attributes.clear();
        for (k, v) in attrs {
            span.set_attribute(k, v);
        }
    }

    /// The waterfall rows (after the column header), up to the blank line.
    fn rows(out: &str) -> Vec<&str> {
        out.lines()
            .skip_while(|l| !l.starts_with("span "))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect()
    }

    /// The columns of a row: label (with indentation), service, start,
    /// duration, bar.
    fn columns(row: &str) -> (String, Vec<&str>) {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let indent = row.len() - row.trim_start().len();
        (
            format!("{}{}", " ".repeat(indent), fields[0]),
            fields[1..].to_vec(),
        )
    }

    fn stage_rows(out: &str) -> Vec<Vec<&str>> {
        out.lines()
            .skip_while(|l| !l.starts_with("stage "))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect()
    }

    fn filled(bar: &str) -> Vec<usize> {
        bar.chars()
            .enumerate()
            .filter(|(_, c)| *c == FILLED)
            .map(|(i, _)| i)
            .collect()
    }

    /// A client root with out-of-order children, a grandchild, a repeated
    /// stage and a server span whose parent is in another trace.
    fn sample() -> Trace {
        trace(vec![
            span("tool.dispatch", "core-client", "a", None, 0, 10 * MS),
            span(
                "terminal.delivery",
                "core-client",
                "b",
                Some("a"),
                5 * MS,
                10 * MS,
            ),
            span("session.acquire", "core-client", "c", Some("a"), MS, 4 * MS),
            span(
                "relay.frame.send",
                "core-client",
                "d",
                Some("c"),
                2 * MS,
                2 * MS + 500_000,
            ),
            span(
                "relay.frame.send",
                "core-client",
                "e",
                Some("c"),
                3 * MS,
                3 * MS + 500_000,
            ),
            span(
                "rpc.server.exec",
                "exec-server",
                "f",
                Some("ffff"),
                6 * MS,
                8 * MS,
            ),
        ])
    }

    #[test]
    fn header_names_the_trace_duration_spans_and_services() {
        let out = render(&sample(), 40);
        let header = out.lines().next().unwrap();
        assert_eq!(
            header,
            format!("trace {TRACE_ID}: 10.000 ms, 6 spans, services: core-client, exec-server")
        );
    }

    #[test]
    fn the_session_line_says_the_round_trips_the_command_waited_on() {
        let mut t = sample();
        for (key, value) in [
            ("rex.session.round_trips", "1"),
            ("rex.session.flights", "1"),
            ("rex.session.early_retries", "0"),
        ] {
            t.spans[0].set_attribute(key, value);
        }
        let out = render(&t, 40);
        assert!(
            out.lines()
                .any(|l| l == "session: 1 round trip before the first event, 1 flight"),
            "{out}"
        );
        set_attrs(
            &mut t.spans[0],
            &[
                ("rex.session.round_trips", "4"),
                ("rex.session.flights", "4"),
                ("rex.session.early_retries", "1"),
            ],
        );
        let out = render(&t, 40);
        assert!(
            out.lines().any(|l| l
                == "session: 4 round trips before the first event, 4 flights, 1 retry after \
                    early data was refused"),
            "{out}"
        );
        // A command on a session that was already there says nothing.
        assert!(!render(&sample(), 40).contains("session:"));
    }

    #[test]
    fn the_window_line_says_how_long_stdin_and_output_waited_for_their_windows() {
        let mut t = sample();
        for (i, key, value) in [
            (0, "rex.stdin.window", "4194304"),
            (0, "rex.stdin.window_wait_ns", "120500000"),
            (1, "rex.output.window", "12582912"),
            (1, "rex.output.credit_wait_ns", "30000000"),
        ] {
            t.spans[i].set_attribute(key, value);
        }
        let out = render(&t, 40);
        assert!(
            out.lines().any(|l| l
                == "window-limited: stdin waited 120.5 ms for its window (widest 4.0 MiB); \
                    output waited 30.0 ms for credit (window 12.0 MiB)"),
            "{out}"
        );
        // A window that grew from where it started says both.
        t.spans[1].set_attribute("rex.output.window_first", "4194304");
        assert!(
            render(&t, 40)
                .lines()
                .any(|l| l.ends_with("output waited 30.0 ms for credit (window 4.0 → 12.0 MiB)")),
            "{}",
            render(&t, 40)
        );
        // No wait, no line.
        set_attrs(&mut t.spans[0], &[]);
        set_attrs(&mut t.spans[1], &[("rex.output.credit_wait_ns", "0")]);
        assert!(!render(&t, 40).contains("window-limited"));
    }

    #[test]
    fn the_header_names_the_hosts_each_service_ran_on() {
        let mut t = sample();
        for s in &mut t.spans {
            s.detail_mut().host = Some(Arc::from(if &*s.service == "core-client" {
                "laptop"
            } else {
                "build-box"
            }));
        }
        t.spans[1].detail_mut().host = None;
        let out = render(&t, 40);
        let header = out.lines().next().unwrap();
        assert!(
            header.ends_with("services: core-client on laptop, exec-server on build-box"),
            "{header}"
        );
    }

    #[test]
    fn the_remote_side_says_how_it_was_placed_or_that_it_is_unknown() {
        let dispatch = span("tool.dispatch", "core-client", "a", None, 0, 10 * MS);
        let copy = with_attrs(
            span("rpc.server.exec", "exec-server", "f", Some("a"), MS, 9 * MS),
            &[
                ("rex.clock.source", "two-way"),
                ("rex.clock.offset_ns", "2000123456"),
                ("rex.clock.bound_ns", "25650000"),
                ("rex.remote.placed", "true"),
            ],
        );
        let out = render(&trace(vec![dispatch.clone(), copy.clone()]), 40);
        assert_eq!(
            out.lines().nth(1),
            Some(
                "exec-server's stages: brought home in the session, placed with its clock \
                 +2000.123 ms ± 25.650 ms off ours (estimated from round trips: how each round \
                 trip splits between its two ways is unknown)"
            )
        );
        let moved = with_attrs(copy, &[("rex.clock.measured_ns", "-1500")]);
        let out = render(&trace(vec![dispatch.clone(), moved]), 40);
        assert!(
            out.contains("(estimated -0.001 ms, moved to keep cause before effect)"),
            "{out}"
        );
        // A trace file from before clock sources: an estimate, unbounded.
        let legacy = with_attrs(
            span("rpc.server.exec", "exec-server", "f", Some("a"), MS, 9 * MS),
            &[
                ("rex.clock_offset_ns", "-1500"),
                ("rex.remote.placed", "true"),
            ],
        );
        let out = render(&trace(vec![dispatch.clone(), legacy]), 40);
        assert!(
            out.contains("placed with its clock -0.001 ms off ours (estimated from round trips"),
            "{out}"
        );
        // The same host, and both kernels synchronized.
        let same = with_attrs(
            span("rpc.server.exec", "exec-server", "f", Some("a"), MS, 9 * MS),
            &[
                ("rex.clock.source", "same-host"),
                ("rex.clock.offset_ns", "0"),
                ("rex.clock.bound_ns", "0"),
                ("rex.remote.placed", "true"),
            ],
        );
        let out = render(&trace(vec![dispatch.clone(), same]), 40);
        assert!(
            out.contains("placed on our clock as it is (same host: one kernel, one clock, exact)"),
            "{out}"
        );
        let synced = with_attrs(
            span("relay.forward", "relay", "e", Some("a"), MS, 2 * MS),
            &[
                ("rex.clock.source", "synchronized"),
                ("rex.clock.offset_ns", "0"),
                ("rex.clock.bound_ns", "1250000"),
                ("rex.remote.placed", "true"),
            ],
        );
        let out = render(&trace(vec![dispatch.clone(), synced]), 40);
        assert!(
            out.contains(
                "relay's forwards: told on its frames, placed with its clock +0.000 ms ± 1.250 ms \
                 off ours (both kernels synchronized)"
            ),
            "{out}"
        );
        // An exec-server that sent nothing: said so, and the rest prints.
        let out = render(&trace(vec![dispatch]), 40);
        assert!(out.contains("exec-server's stages: not known"), "{out}");
        assert!(out.contains("tool.dispatch"), "{out}");
        // Its own spans (a shared file, the demo): nothing to say.
        let out = render(&sample(), 40);
        assert!(!out.contains("exec-server's stages"), "{out}");
    }

    fn with_attrs(mut s: Span, attrs: &[(&str, &str)]) -> Span {
        for (k, v) in attrs {
            s.set_attribute(k, v);
        }
        s
    }

    /// A dispatch of 0..100 ms with the exec-server's work at 40..60 and
    /// the legs to and from it, placed with `source`.
    fn legs(source: &str, split: &str, bound: &str) -> Trace {
        let placed = |s: Span| {
            with_attrs(
                s,
                &[
                    ("rex.clock.source", source),
                    ("rex.clock.offset_ns", "0"),
                    ("rex.clock.bound_ns", bound),
                    ("rex.remote.placed", "true"),
                ],
            )
        };
        let leg = |id: &str, direction: &str, start: u64, end: u64| {
            with_attrs(
                span("link.transit", "core-client", id, Some("a"), start, end),
                &[
                    ("rex.direction", direction),
                    ("rex.leg", "end_to_end"),
                    ("rex.clock.source", source),
                    ("rex.clock.bound_ns", bound),
                    ("rex.clock.split", split),
                    ("rex.round_trip_ns", "80000000"),
                ],
            )
        };
        trace(vec![
            span("tool.dispatch", "core-client", "a", None, 0, 100 * MS),
            leg("b", "to_server", 5 * MS, 40 * MS),
            placed(span(
                "rpc.server.exec",
                "exec-server",
                "f",
                Some("a"),
                40 * MS,
                60 * MS,
            )),
            leg("c", "to_client", 60 * MS, 100 * MS),
        ])
    }

    #[test]
    fn legs_of_an_unknown_split_are_one_round_trip_and_known_ones_their_own() {
        // Placed by the two-way estimate (± 20 ms): neither leg states a
        // duration; the outbound one states the round trip; the placed
        // work's start carries its bound.
        let out = render(&legs("two-way", "unknown", "20000000"), 40);
        let leg_rows: Vec<&str> = rows(&out)
            .into_iter()
            .filter(|r| r.contains("link.transit"))
            .collect();
        assert_eq!(leg_rows.len(), 2, "{out}");
        for row in &leg_rows {
            // The label is two words: "link.transit (end_to_end)".
            let (_, cols) = columns(row);
            assert_eq!(cols[3], "?", "{row}");
            assert!(row.contains('░') && !row.contains('█'), "{row}");
        }
        assert!(
            leg_rows[0].ends_with("80.000 ms there and back, split unknown"),
            "{out}"
        );
        assert!(
            leg_rows[1].ends_with("(the way back of a round trip above)"),
            "{out}"
        );
        assert!(out.contains("40.000±20.000"), "{out}");
        // The same host: each leg its own, drawn solid, no ±.
        let out = render(&legs("same-host", "measured", "0"), 40);
        let leg_rows: Vec<&str> = rows(&out)
            .into_iter()
            .filter(|r| r.contains("link.transit"))
            .collect();
        let durations: Vec<String> = leg_rows
            .iter()
            .map(|r| columns(r).1[3].to_owned())
            .collect();
        assert_eq!(durations, ["35.000", "40.000"], "{out}");
        assert!(!out.contains('░') && !out.contains('±'), "{out}");
        // A bound smaller than a timeline cell is not worth a ±.
        let out = render(&legs("synchronized", "measured", "100000"), 40);
        assert!(
            !out.contains('±') || out.contains("± 0.100 ms off ours"),
            "{out}"
        );
        assert!(!out.contains("40.000±"), "{out}");
    }

    #[test]
    fn the_server_is_named_as_the_user_named_it() {
        let id = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned();
        let mut t = sample();
        t.spans[0].set_attribute(SERVER_ID_ATTRIBUTE, &id);
        let unnamed = render(&t, 40);
        assert_eq!(
            unnamed.lines().nth(1),
            Some(format!("server {id}").as_str())
        );
        let names = std::collections::BTreeMap::from([(id.clone(), "build-box".to_owned())]);
        let named = render_named(&t, 40, &names);
        assert_eq!(
            named.lines().nth(1),
            Some(format!("server build-box (id {id})").as_str())
        );
        assert_eq!(rows(&named), rows(&unnamed));
        let plain = render(&sample(), 40);
        assert!(!plain.lines().any(|l| l.starts_with("server ")), "{plain}");
    }

    #[test]
    fn spans_are_in_tree_order_with_indentation() {
        let out = render(&sample(), 40);
        let labels: Vec<String> = rows(&out).into_iter().map(|r| columns(r).0).collect();
        assert_eq!(
            labels,
            [
                "tool.dispatch",
                "  session.acquire",
                "    relay.frame.send",
                "    relay.frame.send",
                "  terminal.delivery",
                // Its parent is not in the trace: a second root, by start.
                "rpc.server.exec",
            ]
        );
        // Columns line up: every bar starts at the same character column.
        let bar_columns: Vec<usize> = rows(&out).iter().map(|r| r.chars().count() - 40).collect();
        assert!(bar_columns.windows(2).all(|w| w[0] == w[1]), "{out}");
    }

    #[test]
    fn offsets_and_durations_are_milliseconds() {
        let out = render(&sample(), 40);
        let rows = rows(&out);
        let (_, session) = columns(rows[1]);
        assert_eq!(session[..3], ["core-client", "1.000", "3.000"]);
        let (_, frame) = columns(rows[2]);
        assert_eq!(frame[1..3], ["2.000", "0.500"]);
        let (_, server) = columns(rows[5]);
        assert_eq!(server[..3], ["exec-server", "6.000", "2.000"]);
    }

    #[test]
    fn bars_cover_each_span_interval() {
        let out = render(&sample(), 40);
        let rows = rows(&out);
        let bar = |i: usize| columns(rows[i]).1[3].to_owned();
        // The root covers the whole trace.
        assert_eq!(filled(&bar(0)), (0..40).collect::<Vec<_>>());
        // The delivery covers the second half of its parent's interval.
        assert_eq!(filled(&bar(4)), (20..40).collect::<Vec<_>>());
        assert_eq!(bar(4).chars().filter(|c| *c == EMPTY).count(), 20);
        // 1..4 ms of 10 ms: cells 4 to 15.
        assert_eq!(filled(&bar(1)), (4..16).collect::<Vec<_>>());
        // A 0.5 ms span is two cells of 0.25 ms.
        assert_eq!(filled(&bar(2)), [8, 9]);
        for i in 0..rows.len() {
            assert_eq!(bar(i).chars().count(), 40);
        }
    }

    #[test]
    fn milliseconds_round_to_the_microsecond() {
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(1_999_499), "1.999");
        assert_eq!(ms(1_999_500), "2.000");
        assert_eq!(ms(12_345_678_901), "12345.679");
        assert_eq!(ms(u64::MAX), "18446744073709.551");
    }

    #[test]
    fn a_short_span_gets_at_least_one_cell() {
        let t = trace(vec![
            span("root", "s", "a", None, 0, 1_000 * MS),
            span("blip", "s", "b", Some("a"), 500 * MS, 500 * MS + 1),
        ]);
        let out = render(&t, 40);
        let rows = rows(&out);
        assert_eq!(filled(columns(rows[1]).1[3]), [20]);
    }

    #[test]
    fn stage_table_counts_totals_and_shares() {
        let out = render(&sample(), 40);
        assert!(out.contains("\n\nstage "), "blank line before the table");
        let table = stage_rows(&out);
        assert_eq!(
            table,
            [
                vec!["tool.dispatch", "1", "10.000", "100.0%"],
                vec!["session.acquire", "1", "3.000", "30.0%"],
                vec!["relay.frame.send", "2", "1.000", "10.0%"],
                vec!["terminal.delivery", "1", "5.000", "50.0%"],
                vec!["rpc.server.exec", "1", "2.000", "20.0%"],
            ]
        );
    }

    #[test]
    fn share_is_of_the_earliest_root() {
        // The later root is longer; shares are still of the earliest one.
        let t = trace(vec![
            span("late", "s", "b", None, 2 * MS, 10 * MS),
            span("early", "s", "a", None, 0, 4 * MS),
        ]);
        let out = render(&t, 40);
        let table = stage_rows(&out);
        assert_eq!(table[0], ["early", "1", "4.000", "100.0%"]);
        assert_eq!(table[1], ["late", "1", "8.000", "200.0%"]);
    }

    #[test]
    fn terminal_attributes_and_errors_are_listed() {
        let mut t = sample();
        set_attrs(
            &mut t.spans[1],
            &[
                ("rex.stdout.bytes", "12"),
                ("thread.id", "7"),
                ("rex.events", "3"),
            ],
        );
        t.spans[5].error = true;
        t.spans[5].detail_mut().error_message = Some(Box::from("spawn failed"));
        let out = render(&t, 40);
        assert!(
            out.lines()
                .any(|l| l == "terminal.delivery: rex.stdout.bytes=12, rex.events=3"),
            "{out}"
        );
        assert!(!out.contains("thread.id"));
        assert!(
            out.lines()
                .any(|l| l == "error in rpc.server.exec (exec-server): spawn failed"),
            "{out}"
        );
        // Without such attributes or errors there is no notes section.
        let plain = render(&sample(), 40);
        assert!(!plain.contains("rex."));
        assert!(!plain.contains("error in"));
    }

    #[test]
    fn a_single_span() {
        let t = trace(vec![span("only", "s", "a", None, 0, 3 * MS)]);
        let out = render(&t, 20);
        assert!(out.starts_with(&format!(
            "trace {TRACE_ID}: 3.000 ms, 1 span, services: s\n"
        )));
        let rows = rows(&out);
        assert_eq!(rows.len(), 1);
        let (label, fields) = columns(rows[0]);
        assert_eq!(label, "only");
        assert_eq!(fields, ["s", "0.000", "3.000", &"█".repeat(20)]);
        assert_eq!(stage_rows(&out), [["only", "1", "3.000", "100.0%"]]);
    }

    #[test]
    fn zero_duration_trace() {
        let t = trace(vec![
            span("root", "s", "a", None, 0, 0),
            span("kid", "s", "b", Some("a"), 0, 0),
        ]);
        let out = render(&t, 40);
        assert!(out.contains(": 0.000 ms, 2 spans"), "{out}");
        for row in rows(&out) {
            let (_, fields) = columns(row);
            assert_eq!(fields[1..3], ["0.000", "0.000"]);
            let bar: Vec<char> = fields[3].chars().collect();
            assert_eq!(bar.len(), 40);
            assert_eq!(bar[0], INSTANT);
            assert!(bar[1..].iter().all(|c| *c == EMPTY));
        }
        assert_eq!(stage_rows(&out)[0], ["root", "1", "0.000", "n/a"]);
    }

    #[test]
    fn end_before_start_is_clamped() {
        let t = trace(vec![
            span("root", "s", "a", None, 0, 10 * MS),
            span("backwards", "s", "b", Some("a"), 6 * MS, 2 * MS),
        ]);
        let out = render(&t, 40);
        let rows = rows(&out);
        let (_, fields) = columns(rows[1]);
        assert_eq!(fields[1..3], ["6.000", "0.000"]);
        // Drawn as an instant at 6 ms, cell 24 of 40.
        assert_eq!(fields[3].chars().position(|c| c == INSTANT), Some(24));
        assert_eq!(stage_rows(&out)[1], ["backwards", "1", "0.000", "0.0%"]);
    }

    #[test]
    fn narrow_widths_use_ten_cells() {
        let t = trace(vec![
            span("root", "s", "a", None, 0, 10 * MS),
            span("kid", "s", "b", Some("a"), 5 * MS, 10 * MS),
        ]);
        for width in [0, 1, 9] {
            let out = render(&t, width);
            let rows = rows(&out);
            assert_eq!(columns(rows[0]).1[3].chars().count(), 10);
            assert_eq!(filled(columns(rows[1]).1[3]), [5, 6, 7, 8, 9]);
        }
    }

    #[test]
    fn parent_cycles_and_empty_traces_do_not_hang() {
        let t = trace(vec![
            span("x", "s", "a", Some("b"), MS, 2 * MS),
            span("y", "s", "b", Some("a"), 0, 3 * MS),
            span("z", "s", "c", Some("c"), 4 * MS, 5 * MS),
        ]);
        let out = render(&t, 40);
        let labels: Vec<String> = rows(&out).into_iter().map(|r| columns(r).0).collect();
        // `z` is its own parent, so a root; the cycle starts at its earliest.
        assert_eq!(labels, ["z", "y", "  x"]);

        let empty = render(&trace(Vec::new()), 40);
        assert_eq!(
            empty,
            format!("trace {TRACE_ID}: 0.000 ms, 0 spans, services: none\n(no spans)\n")
        );
    }

    /// One OTLP JSON line as the exporter writes it (one trace).
    fn otlp_line(trace_id: &str, name: &str) -> String {
        format!(
            concat!(
                r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","#,
                r#""value":{{"stringValue":"core-client"}}}}]}},"scopeSpans":[{{"scope":{{"name":"t"}},"#,
                r#""spans":[{{"traceId":"{}","spanId":"00f067aa0ba902b7","name":"{}","#,
                r#""kind":1,"startTimeUnixNano":"1700000000000000000","#,
                r#""endTimeUnixNano":"1700000000002500000","attributes":[],"#,
                r#""status":{{}}}}]}}]}}]}}"#,
                "\n"
            ),
            trace_id, name
        )
    }

    #[test]
    fn show_finds_and_renders_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.jsonl");
        let other = "0af7651916cd43dd8448eb211c80319c";
        std::fs::write(
            &path,
            otlp_line(TRACE_ID, "tool.dispatch") + &otlp_line(other, "session.acquire"),
        )
        .unwrap();

        let mut out = Vec::new();
        show(&path, "last", &NoNames, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!("trace {other}: 2.500 ms, 1 span")),
            "{text}"
        );
        assert!(text.contains(&"█".repeat(SHOW_WIDTH)));

        let mut out = Vec::new();
        show(&path, &TRACE_ID.to_ascii_uppercase(), &NoNames, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("trace {TRACE_ID}:")), "{text}");
        assert!(text.contains("tool.dispatch"));
    }

    #[test]
    fn show_errors_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.jsonl");
        let mut out = Vec::new();

        let err = show(&path, "last", &NoNames, &mut out).unwrap_err();
        assert!(matches!(
            err,
            ShowError::TraceFile(TraceFileError::NotFound(_))
        ));
        assert!(err.to_string().contains("no traces have been recorded"));

        std::fs::write(&path, otlp_line(TRACE_ID, "x")).unwrap();
        let err = show(&path, "latest", &NoNames, &mut out).unwrap_err();
        assert!(matches!(err, ShowError::Selector(_)));
        assert!(err.to_string().contains("32 hex digits"), "{err}");

        let missing = "0123456789abcdef0123456789abcdef";
        let err = show(&path, missing, &NoNames, &mut out).unwrap_err();
        assert!(matches!(
            err,
            ShowError::TraceFile(TraceFileError::NoSuchTrace(..))
        ));
        assert!(err.to_string().contains(missing));

        for err in [
            show(&path, "nope", &NoNames, &mut out).unwrap_err(),
            show(&dir.path().join("none"), "last", &NoNames, &mut out).unwrap_err(),
        ] {
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        assert!(out.is_empty(), "nothing is written on error");
    }
}
