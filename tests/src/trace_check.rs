//! Assertions and measurements over the spans of one trace, as recorded
//! by [`crate::otlp::OtlpReceiver`].

use std::collections::HashSet;
use std::fmt::Write as _;

use telemetry::spans;

use crate::otlp::RecordedSpan;

/// One exec's tree as `docs/spans.md` draws it: (service, span, parent
/// span), for every stage span of a cold-start exec.
pub const EXEC_TREE: &[(&str, &str, &str)] = &[
    ("core-client", spans::DISPATCH_PREPARE, spans::TOOL_DISPATCH),
    ("core-client", spans::SESSION_ACQUIRE, spans::TOOL_DISPATCH),
    ("core-client", spans::RELAY_CONNECT, spans::SESSION_ACQUIRE),
    (
        "core-client",
        spans::NOISE_HANDSHAKE,
        spans::SESSION_ACQUIRE,
    ),
    ("core-client", spans::SESSION_INIT, spans::SESSION_ACQUIRE),
    ("core-client", spans::RPC_CLIENT_QUEUE, spans::TOOL_DISPATCH),
    ("core-client", spans::RELAY_FRAME_SEND, spans::TOOL_DISPATCH),
    ("core-client", spans::LINK_TRANSIT, spans::TOOL_DISPATCH),
    ("relay", spans::RELAY_FORWARD, spans::TOOL_DISPATCH),
    ("exec-server", spans::RELAY_FRAME_RECV, spans::TOOL_DISPATCH),
    ("exec-server", spans::RPC_SERVER_QUEUE, spans::TOOL_DISPATCH),
    ("exec-server", spans::RPC_SERVER_EXEC, spans::TOOL_DISPATCH),
    ("exec-server", spans::PROCESS_SPAWN, spans::RPC_SERVER_EXEC),
    ("exec-server", spans::PROCESS_RUN, spans::RPC_SERVER_EXEC),
    (
        "exec-server",
        spans::PROCESS_STDOUT_READER,
        spans::PROCESS_RUN,
    ),
    (
        "exec-server",
        spans::PROCESS_STDERR_READER,
        spans::PROCESS_RUN,
    ),
    (
        "exec-server",
        spans::PROCESS_EXIT_WATCHER,
        spans::PROCESS_RUN,
    ),
    ("exec-server", spans::TERMINAL_PUSH, spans::RPC_SERVER_EXEC),
    ("exec-server", spans::RELAY_FRAME_SEND, spans::TERMINAL_PUSH),
    ("core-client", spans::RELAY_FRAME_RECV, spans::TOOL_DISPATCH),
    ("core-client", spans::TERMINAL_HANDOFF, spans::TOOL_DISPATCH),
    (
        "core-client",
        spans::TERMINAL_DELIVERY,
        spans::TOOL_DISPATCH,
    ),
    (
        "core-client",
        spans::EXEC_FIRST_OUTPUT,
        spans::TOOL_DISPATCH,
    ),
];

/// The stages on one exec's path, in order: (service, span, its
/// `rex.message` or `rex.direction`). They tile `tool.dispatch`: each
/// starts where the previous one ended, the first where the dispatch
/// starts, the last where it ends (docs/spans.md).
pub const PATH: &[(&str, &str, Option<&str>)] = &[
    ("core-client", spans::DISPATCH_PREPARE, None),
    ("core-client", spans::SESSION_ACQUIRE, None),
    ("core-client", spans::RPC_CLIENT_QUEUE, Some("exec")),
    ("core-client", spans::RELAY_FRAME_SEND, Some("exec")),
    ("core-client", spans::LINK_TRANSIT, Some("to_server")),
    ("exec-server", spans::RELAY_FRAME_RECV, Some("exec")),
    ("exec-server", spans::RPC_SERVER_EXEC, None),
    ("core-client", spans::LINK_TRANSIT, Some("to_client")),
    ("core-client", spans::RELAY_FRAME_RECV, Some("exited")),
    ("core-client", spans::TERMINAL_HANDOFF, None),
];

/// [`PATH`] with the wire split at the relay, when the relay told the
/// client its forwards: each `link.transit` leg (by `rex.leg`) and the
/// relay's `relay.forward` between them.
pub const RELAYED_PATH: &[(&str, &str, Option<&str>)] = &[
    ("core-client", spans::DISPATCH_PREPARE, None),
    ("core-client", spans::SESSION_ACQUIRE, None),
    ("core-client", spans::RPC_CLIENT_QUEUE, Some("exec")),
    ("core-client", spans::RELAY_FRAME_SEND, Some("exec")),
    ("core-client", spans::LINK_TRANSIT, Some("client_relay")),
    ("relay", spans::RELAY_FORWARD, Some("to_server")),
    ("core-client", spans::LINK_TRANSIT, Some("relay_server")),
    ("exec-server", spans::RELAY_FRAME_RECV, Some("exec")),
    ("exec-server", spans::RPC_SERVER_EXEC, None),
    ("core-client", spans::LINK_TRANSIT, Some("server_relay")),
    ("relay", spans::RELAY_FORWARD, Some("to_client")),
    ("core-client", spans::LINK_TRANSIT, Some("relay_client")),
    ("core-client", spans::RELAY_FRAME_RECV, Some("exited")),
    ("core-client", spans::TERMINAL_HANDOFF, None),
];

/// [`RELAYED_PATH`] through two relays of a fleet (the client's relay
/// forwarded the session to the exec-server's): the wire split at both,
/// with the leg between them each way.
pub const FLEET_PATH: &[(&str, &str, Option<&str>)] = &[
    ("core-client", spans::DISPATCH_PREPARE, None),
    ("core-client", spans::SESSION_ACQUIRE, None),
    ("core-client", spans::RPC_CLIENT_QUEUE, Some("exec")),
    ("core-client", spans::RELAY_FRAME_SEND, Some("exec")),
    ("core-client", spans::LINK_TRANSIT, Some("client_relay")),
    ("relay", spans::RELAY_FORWARD, Some("to_server")),
    ("core-client", spans::LINK_TRANSIT, Some("relay_relay")),
    ("relay", spans::RELAY_FORWARD, Some("to_server")),
    ("core-client", spans::LINK_TRANSIT, Some("relay_server")),
    ("exec-server", spans::RELAY_FRAME_RECV, Some("exec")),
    ("exec-server", spans::RPC_SERVER_EXEC, None),
    ("core-client", spans::LINK_TRANSIT, Some("server_relay")),
    ("relay", spans::RELAY_FORWARD, Some("to_client")),
    ("core-client", spans::LINK_TRANSIT, Some("relay_relay")),
    ("relay", spans::RELAY_FORWARD, Some("to_client")),
    ("core-client", spans::LINK_TRANSIT, Some("relay_client")),
    ("core-client", spans::RELAY_FRAME_RECV, Some("exited")),
    ("core-client", spans::TERMINAL_HANDOFF, None),
];

/// [`PATH`] for an exec-server that reported no stages: its side is the
/// client's one `remote.unreported` stage.
pub const UNREPORTED_PATH: &[(&str, &str, Option<&str>)] = &[
    ("core-client", spans::DISPATCH_PREPARE, None),
    ("core-client", spans::SESSION_ACQUIRE, None),
    ("core-client", spans::RPC_CLIENT_QUEUE, Some("exec")),
    ("core-client", spans::RELAY_FRAME_SEND, Some("exec")),
    ("core-client", spans::REMOTE_UNREPORTED, None),
    ("core-client", spans::RELAY_FRAME_RECV, Some("exited")),
    ("core-client", spans::TERMINAL_HANDOFF, None),
];

/// [`UNREPORTED_PATH`] with the relay's forwards around the exec-server's
/// side, when the relay told them.
pub const RELAYED_UNREPORTED_PATH: &[(&str, &str, Option<&str>)] = &[
    ("core-client", spans::DISPATCH_PREPARE, None),
    ("core-client", spans::SESSION_ACQUIRE, None),
    ("core-client", spans::RPC_CLIENT_QUEUE, Some("exec")),
    ("core-client", spans::RELAY_FRAME_SEND, Some("exec")),
    ("core-client", spans::LINK_TRANSIT, Some("client_relay")),
    ("relay", spans::RELAY_FORWARD, Some("to_server")),
    ("core-client", spans::REMOTE_UNREPORTED, None),
    ("relay", spans::RELAY_FORWARD, Some("to_client")),
    ("core-client", spans::LINK_TRANSIT, Some("relay_client")),
    ("core-client", spans::RELAY_FRAME_RECV, Some("exited")),
    ("core-client", spans::TERMINAL_HANDOFF, None),
];

/// Whose clock the exec-server's spans are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteClock {
    /// The client's: the copies it placed from the in-band summary (its
    /// local trace file).
    Placed,
    /// The exec-server's own (spans it exported itself): the boundaries
    /// between its stages and the client's are not compared.
    Own,
}

/// The stages that tile a CLI's `tool.dispatch` when a local agent made
/// the call: the agent's `agent.dispatch` (which [`PATH`], made by the
/// agent, tiles in turn) between the CLI's asking and its reply.
pub const AGENT_PATH: &[(&str, &str, Option<&str>)] = &[
    ("core-client", spans::DISPATCH_PREPARE, None),
    ("core-client", spans::AGENT_REQUEST, None),
    ("core-client-agent", spans::AGENT_DISPATCH, None),
    ("core-client", spans::AGENT_REPLY, None),
    ("core-client", spans::TERMINAL_HANDOFF, None),
];

/// The path a client of service `client` (the CLI's `core-client`, or
/// the agent's `core-client-agent`) made in `spans`: [`RELAYED_PATH`] when
/// its wire time is split at the relay ([`FLEET_PATH`] at two relays of a
/// fleet), else [`PATH`] (or their `UNREPORTED` forms when the exec-server
/// reported no stages).
pub fn path_of(
    spans: &[RecordedSpan],
    client: &'static str,
) -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    let relayed = spans.iter().any(|s| {
        s.service == client
            && s.name == spans::LINK_TRANSIT
            && s.attr_str("rex.leg") == Some("client_relay")
    });
    let unreported = spans
        .iter()
        .any(|s| s.service == client && s.name == spans::REMOTE_UNREPORTED);
    let fleet = spans.iter().any(|s| {
        s.service == client
            && s.name == spans::LINK_TRANSIT
            && s.attr_str("rex.leg") == Some("relay_relay")
    });
    let path = match (relayed, unreported) {
        (true, false) if fleet => FLEET_PATH,
        (true, false) => RELAYED_PATH,
        (false, false) => PATH,
        (true, true) => RELAYED_UNREPORTED_PATH,
        (false, true) => UNREPORTED_PATH,
    };
    path.iter()
        .map(|&(service, name, label)| {
            let service = if service == "core-client" {
                client
            } else {
                service
            };
            (service, name, label)
        })
        .collect()
}

/// Panics unless the stages of [`PATH`] tile `dispatch` exactly (no gap,
/// no overlap, to the nanosecond: each is made from its neighbour's
/// timestamp). Structural: true on a loaded machine as on a quiet one.
pub fn assert_tiles(spans: &[RecordedSpan], dispatch: &RecordedSpan, remote: RemoteClock) {
    assert_path_tiles(spans, dispatch, remote, &path_of(spans, "core-client"));
}

/// Panics unless the stages of `path` tile `dispatch` exactly, as
/// [`assert_tiles`] does for [`PATH`].
pub fn assert_path_tiles(
    spans: &[RecordedSpan],
    dispatch: &RecordedSpan,
    remote: RemoteClock,
    path: &[(&str, &str, Option<&str>)],
) {
    let mut at = dispatch.start_unix_nanos;
    let mut walked = String::new();
    let mut previous_service = path.first().map_or("core-client", |p| p.0);
    for (service, name, label) in path {
        let matching: Vec<&RecordedSpan> = stage_spans(spans, service, name, *label).collect();
        let Some(span) = pick(&matching, at) else {
            panic!(
                "{service}/{name} {label:?}: expected one span, found {} (path so far: {walked})",
                matching.len()
            );
        };
        let across = previous_service != *service;
        previous_service = service;
        if remote == RemoteClock::Own && across {
            let _ = write!(walked, "{name} ");
            at = span.end_unix_nanos;
            continue;
        }
        assert_eq!(
            span.start_unix_nanos,
            at,
            "{service}/{name} {label:?} starts {} ns from where the previous stage ended \
             (path so far: {walked})",
            i128::from(span.start_unix_nanos) - i128::from(at)
        );
        let _ = write!(walked, "{name} ");
        at = span.end_unix_nanos;
    }
    assert_eq!(
        at,
        dispatch.end_unix_nanos,
        "the last stage ends {} ns from the end of tool.dispatch",
        i128::from(dispatch.end_unix_nanos) - i128::from(at)
    );
}

/// The one span of a path entry: the only candidate, or, where several
/// fit (a relay forwards several frames each way), the one starting
/// nearest to where the path has got (exactly there, on one clock).
fn pick<'a>(candidates: &[&'a RecordedSpan], at: u64) -> Option<&'a RecordedSpan> {
    match candidates {
        [] => None,
        [one] => Some(one),
        many => many
            .iter()
            .copied()
            .min_by_key(|s| (i128::from(s.start_unix_nanos) - i128::from(at)).unsigned_abs()),
    }
}

/// The spans of one path entry: `name` from `service`, with `label` as its
/// `rex.message`, `rex.direction` or `rex.leg` when given.
fn stage_spans<'a>(
    spans: &'a [RecordedSpan],
    service: &'a str,
    name: &'a str,
    label: Option<&'a str>,
) -> impl Iterator<Item = &'a RecordedSpan> {
    spans.iter().filter(move |s| {
        s.service == service
            && s.name == name
            && label.is_none_or(|l| {
                s.attr_str("rex.message") == Some(l)
                    || s.attr_str("rex.direction") == Some(l)
                    || s.attr_str("rex.leg") == Some(l)
            })
    })
}

/// The stage of the CLI's path (see [`path_of`]; its span name) during
/// which `outage` happened:
/// the one whose interval holds it whole. An outage (`session.reattach`)
/// is not one of the stages that tile the dispatch: the command goes on
/// meanwhile (it is usually running, inside `rpc.server.exec`). Panics
/// unless exactly one stage holds it.
pub fn stage_holding(spans: &[RecordedSpan], outage: &RecordedSpan) -> &'static str {
    let holding: Vec<&'static str> = path_of(spans, "core-client")
        .iter()
        .filter(|(service, name, label)| {
            stage_spans(spans, service, name, *label).any(|s| {
                s.start_unix_nanos <= outage.start_unix_nanos
                    && outage.end_unix_nanos <= s.end_unix_nanos
            })
        })
        .map(|(_, name, _)| *name)
        .collect();
    match holding.as_slice() {
        [one] => one,
        found => panic!(
            "{} [{}, {}] lies within {} stages of the path ({found:?}), not one",
            outage.name,
            outage.start_unix_nanos,
            outage.end_unix_nanos,
            found.len()
        ),
    }
}

/// Panics unless the direct children of `parent` tile it exactly: in
/// order of their start, each starts where the one before ended, the
/// first where `parent` starts, and the last ends where it ends.
pub fn assert_children_tile(spans: &[RecordedSpan], parent: &RecordedSpan) {
    let mut kids = children(spans, parent);
    kids.sort_by_key(|s| (s.start_unix_nanos, s.end_unix_nanos));
    assert!(!kids.is_empty(), "{} has no children", parent.name);
    let mut at = parent.start_unix_nanos;
    let mut walked = String::new();
    for kid in kids {
        assert_eq!(
            kid.start_unix_nanos,
            at,
            "{} starts {} ns from where the one before it ended under {} (so far: {walked})",
            kid.name,
            i128::from(kid.start_unix_nanos) - i128::from(at),
            parent.name
        );
        let _ = write!(walked, "{} ", kid.name);
        at = kid.end_unix_nanos;
    }
    assert_eq!(
        at,
        parent.end_unix_nanos,
        "the last child of {} ends {} ns from its end (children: {walked})",
        parent.name,
        i128::from(parent.end_unix_nanos) - i128::from(at)
    );
}

/// The spans of the CLI's path (see [`path_of`]) in `spans`, in order, if
/// each is there (where several fit, the one starting where the previous
/// ended).
pub fn path_spans(spans: &[RecordedSpan]) -> Option<Vec<RecordedSpan>> {
    let start = spans
        .iter()
        .find(|s| s.name == spans::TOOL_DISPATCH)
        .map_or(0, |d| d.start_unix_nanos);
    let mut at = start;
    path_of(spans, "core-client")
        .iter()
        .map(|(service, name, label)| {
            let matching: Vec<&RecordedSpan> = stage_spans(spans, service, name, *label).collect();
            let one = pick(&matching, at)?;
            at = one.end_unix_nanos;
            Some(one.clone())
        })
        .collect()
}

/// The spans of trace `trace_id` in a local trace file (OTLP JSON, one
/// `TracesData` per line, read by the project's reader).
pub fn from_trace_file(path: &std::path::Path, trace_id: &str) -> Vec<RecordedSpan> {
    all_from_trace_file(path)
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect()
}

/// Every span in a local trace file, in the order written (lines that are
/// not OTLP JSON skipped).
pub fn all_from_trace_file(path: &std::path::Path) -> Vec<RecordedSpan> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| crate::otlp::read_json(l.as_bytes()).ok())
        .flatten()
        .collect()
}

/// The stage spans one exec through the library must produce (the
/// metadata spans belong to the persistence layer and are traces of their
/// own; the CLI's own spans are made by the CLI only, and the agent's by
/// calls through an agent).
pub fn stage_names() -> Vec<&'static str> {
    spans::ALL
        .iter()
        .copied()
        .filter(|n| {
            !spans::is_background(n)
                && !spans::CLI.contains(n)
                && !spans::AGENT.contains(n)
                && !spans::RESUME.contains(n)
                && !spans::UNREPORTED.contains(n)
        })
        .collect()
}

/// The stages that tile `cli.run`, in order (`tool.dispatch` is the
/// library's; `cli.records` only when records are kept).
pub const CLI_PATH: &[&str] = &[
    spans::CLI_STARTUP,
    spans::TOOL_DISPATCH,
    spans::CLI_FINISH,
    spans::CLI_RECORDS,
    spans::CLI_FLUSH,
];

/// Panics unless `cli.run` is the root of the CLI's spans and [`CLI_PATH`]
/// tiles it exactly: each stage a child of `cli.run` starting where the
/// previous one ended, the first at its start, the last at its end.
pub fn assert_cli_run_tiles(spans: &[RecordedSpan]) {
    let run = one(spans, spans::CLI_RUN);
    let mut at = run.start_unix_nanos;
    for name in CLI_PATH {
        let stage = one(spans, name);
        assert_eq!(
            stage.parent_span_id.as_deref(),
            Some(run.span_id.as_str()),
            "{name} is a child of cli.run"
        );
        assert_eq!(
            stage.start_unix_nanos,
            at,
            "{name} starts {} ns from where the previous stage ended",
            i128::from(stage.start_unix_nanos) - i128::from(at)
        );
        at = stage.end_unix_nanos;
    }
    assert_eq!(at, run.end_unix_nanos, "cli.flush ends where cli.run ends");
}

/// Whether `spans` hold every stage span of an exec.
pub fn has_all_stages(spans: &[RecordedSpan]) -> bool {
    let names: HashSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    stage_names().iter().all(|n| names.contains(n))
}

/// Panics unless every span of [`EXEC_TREE`] is present from its service
/// with the parent the tree gives it.
pub fn assert_exec_tree(spans: &[RecordedSpan]) {
    for (service, child, parent) in EXEC_TREE {
        assert_parent_in(spans, service, child, setup_parent(spans, child, parent));
    }
}

/// [`assert_exec_tree`] for a trace with no relay spans (a client's local
/// trace file: the relay's hop spans need a collector).
pub fn assert_exec_tree_without_relay(spans: &[RecordedSpan]) {
    for (service, child, parent) in EXEC_TREE.iter().filter(|(s, ..)| *s != "relay") {
        assert_parent_in(spans, service, child, setup_parent(spans, child, parent));
    }
}

/// The session set-up spans the client makes while establishing a session.
pub const SETUP: [&str; 3] = [
    spans::RELAY_CONNECT,
    spans::NOISE_HANDSHAKE,
    spans::SESSION_INIT,
];

/// The parent [`EXEC_TREE`] names for `child`, except for a session whose
/// first call rode in handshake message 1 (its `session.acquire` says
/// `rex.session.early_data`): its set-up went on beside the call's path,
/// under `tool.dispatch`, as `docs/spans.md` draws it.
fn setup_parent<'a>(spans: &[RecordedSpan], child: &str, parent: &'a str) -> &'a str {
    let early = spans.iter().any(|s| {
        s.name == spans::SESSION_ACQUIRE
            && s.attr_bool(spans::ATTR_SESSION_EARLY_DATA) == Some(true)
    });
    if early && parent == spans::SESSION_ACQUIRE && SETUP.contains(&child) {
        spans::TOOL_DISPATCH
    } else {
        parent
    }
}

/// Panics unless there is a span named `child` from `service` and each one
/// has a parent named `parent`.
pub fn assert_parent_in(spans: &[RecordedSpan], service: &str, child: &str, parent: &str) {
    let kids: Vec<&RecordedSpan> = spans
        .iter()
        .filter(|s| s.name == child && s.service == service)
        .collect();
    assert!(
        !kids.is_empty(),
        "no {child} from {service}; spans: [{}]",
        names(spans)
    );
    for k in kids {
        let p = parent_of(spans, k)
            .unwrap_or_else(|| panic!("{service}/{child} has no parent in the trace"));
        assert_eq!(p.name, parent, "{service}/{child}'s parent");
    }
}

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
