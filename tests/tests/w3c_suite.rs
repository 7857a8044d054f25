//! Every case the W3C Trace Context validation suite checks, at level 1 and
//! level 2, through the whole stack.
//!
//! The W3C's validation service (the `test/` folder of `w3c/trace-context`)
//! sends a service requests with `traceparent`/`tracestate` headers and
//! checks the headers of the calls the service makes in turn. Here the
//! service is the stack run as separate processes: an adapter ([`cli_env`])
//! turns a request's headers into `TRACEPARENT`/`TRACESTATE` for
//! `core-client exec` (header names are case-insensitive; repeated fields are
//! combined with `,` as RFC 9110 §5.3 prescribes), and each outgoing call
//! carries what the remote child received. The child prints its
//! `TRACEPARENT` and `TRACESTATE`, and each case checks them as the suite
//! would, and more strictly where our output is fully determined (the exact
//! tracestate kept).
//!
//! Every value is also checked as the suite's receiving side reads it: one
//! version-00 traceparent with non-zero ids, and a tracestate whose members
//! all match the key and value grammars.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::process::Stdio;

use integration_tests::binaries::ProcStack;

/// The trace id the suite sends.
const TRACE_ID: &str = "12345678901234567890123456789012";
/// The parent id the suite sends.
const PARENT_ID: &str = "1234567890123456";
/// The suite's usual traceparent, sampled and not.
const TP_01: &str = "00-12345678901234567890123456789012-1234567890123456-01";
const TP_00: &str = "00-12345678901234567890123456789012-1234567890123456-00";

/// The child prints its traceparent, whether `TRACESTATE` is set, and its
/// tracestate, one per line.
const CHILD: &str = r#"printf '%s\n%s\n%s\n' "$TRACEPARENT" "${TRACESTATE+set}" "$TRACESTATE""#;

/// Both the CLI and the services sample parent-based (the SDK's default),
/// whatever the environment running the tests says.
const SAMPLER: (&str, &str) = ("OTEL_TRACES_SAMPLER", "parentbased_always_on");

/// What the remote child received.
#[derive(Debug, Clone)]
struct Seen {
    trace_id: String,
    parent_id: String,
    flags: u8,
    /// `TRACESTATE`, or `None` when it was not set.
    tracestate: Option<String>,
}

/// What a case expects of the trace id.
#[derive(Debug, Clone, Copy)]
enum Trace {
    /// Continued: the suite's trace id, a new parent id.
    Inherit,
    /// A new trace: none of these trace ids.
    Restart(&'static [&'static str]),
}

/// What a case expects of the tracestate.
#[derive(Debug, Clone)]
enum State {
    /// Exactly this list (our canonical form).
    Is(String),
    /// None at all (no `TRACESTATE`).
    Absent,
}

/// One request the suite sends and what it expects of every call made for
/// it.
struct Case {
    /// The suite's test (without `test_`) and which of its requests.
    name: String,
    headers: Vec<(&'static str, String)>,
    /// How many calls the request asks for.
    calls: usize,
    trace: Trace,
    state: State,
    /// Extra environment for the CLI (level-2 extras only).
    cli_env: Vec<(&'static str, &'static str)>,
    /// Level 2: the exact flags expected (our default sampler), checked by
    /// the level-2 run.
    flags: Option<u8>,
}

fn h(name: &'static str, value: impl Into<String>) -> (&'static str, String) {
    (name, value.into())
}

fn case(
    name: impl Into<String>,
    headers: Vec<(&'static str, String)>,
    trace: Trace,
    state: State,
) -> Case {
    Case {
        name: name.into(),
        headers,
        calls: 1,
        trace,
        state,
        cli_env: Vec::new(),
        flags: None,
    }
}

fn is(s: impl Into<String>) -> State {
    State::Is(s.into())
}

/// A fresh trace, whatever its id (never the suite's).
const NEW: Trace = Trace::Restart(&[TRACE_ID]);

/// The adapter: a request's header fields as the CLI's environment.
fn cli_env(headers: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let field = |name: &str| {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let mut env = Vec::new();
    if let Some(v) = field("traceparent") {
        env.push(("TRACEPARENT", v));
    }
    if let Some(v) = field("tracestate") {
        env.push(("TRACESTATE", v));
    }
    env
}

// ---- the suite's receiving side, in our own words ----

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One version-00 traceparent with non-zero ids: (trace id, parent id, flags).
fn read_traceparent(s: &str) -> Result<(String, String, u8), String> {
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        ["00", trace, parent, flags]
            if lower_hex(trace, 32) && lower_hex(parent, 16) && lower_hex(flags, 2) =>
        {
            if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
                return Err(format!("all-zero id in {s:?}"));
            }
            let flags = u8::from_str_radix(flags, 16).map_err(|e| e.to_string())?;
            Ok(((*trace).to_owned(), (*parent).to_owned(), flags))
        }
        _ => Err(format!("not a version-00 traceparent: {s:?}")),
    }
}

fn key_ok(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/@".contains(&c))
}

fn value_ok(v: &str) -> bool {
    let b = v.as_bytes();
    let nblk = |c: u8| (0x21..=0x7e).contains(&c) && c != b',' && c != b'=';
    (1..=256).contains(&b.len())
        && b.iter().all(|&c| c == b' ' || nblk(c))
        && b.last().is_some_and(|&c| nblk(c))
}

/// The members of a tracestate as the suite reads them (first of a key
/// kept); an error for a member it would reject.
fn read_tracestate(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for member in s.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if member.is_empty() {
            continue;
        }
        let (k, v) = member
            .split_once('=')
            .filter(|(k, v)| key_ok(k) && value_ok(v))
            .ok_or_else(|| format!("illegal member {member:?}"))?;
        if out.iter().all(|(seen, _)| seen != k) {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(out)
}

/// What we send, beyond what the suite reads: canonical form, no repeated
/// key, within the limits, never an empty header.
fn check_our_tracestate(s: &str) -> Result<(), String> {
    let members = read_tracestate(s)?;
    let canonical = members
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if canonical != s {
        return Err(format!("not canonical (or a repeated key): {s:?}"));
    }
    if members.is_empty() || members.len() > 32 || s.len() > 512 {
        return Err(format!("empty or over the limits: {s:?}"));
    }
    Ok(())
}

// ---- running a call ----

/// Runs `core-client exec` with the request's headers as its environment;
/// returns what the remote child received.
fn call(stack: &ProcStack, case: &Case) -> Result<Seen, String> {
    let mut cmd = stack.exec(&["sh", "-c", CHILD]);
    cmd.env_remove("TRACEPARENT")
        .env_remove("TRACESTATE")
        .env(SAMPLER.0, SAMPLER.1);
    for (k, v) in cli_env(&case.headers) {
        cmd.env(k, v);
    }
    for (k, v) in &case.cli_env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running core-client: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "core-client exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = stdout.split('\n').collect();
    let [traceparent, set, tracestate, ""] = lines.as_slice() else {
        return Err(format!("unexpected child output {stdout:?}"));
    };
    let (trace_id, parent_id, flags) = read_traceparent(traceparent)?;
    let tracestate = (*set == "set").then(|| (*tracestate).to_owned());
    if let Some(s) = &tracestate {
        check_our_tracestate(s)?;
    }
    Ok(Seen {
        trace_id,
        parent_id,
        flags,
        tracestate,
    })
}

/// The flags of the traceparent the CLI was given (a valid one: the case
/// inherits it).
fn incoming_flags(case: &Case) -> u8 {
    let env = cli_env(&case.headers);
    let tp = env
        .iter()
        .find(|(k, _)| *k == "TRACEPARENT")
        .map(|(_, v)| v.trim_matches([' ', '\t']))
        .unwrap();
    u8::from_str_radix(&tp[53..55], 16).unwrap()
}

/// Checks one call against the case (level 1), and with `level_2` the
/// random flag rules of level 2 and the exact flags.
fn check(case: &Case, seen: &Seen, level_2: bool) -> Result<(), String> {
    match case.trace {
        Trace::Inherit => {
            if seen.trace_id != TRACE_ID {
                return Err(format!("trace id not inherited: {seen:?}"));
            }
            if seen.parent_id == PARENT_ID {
                return Err(format!("parent id not replaced: {seen:?}"));
            }
        }
        Trace::Restart(not) => {
            if not.contains(&seen.trace_id.as_str()) {
                return Err(format!("trace not restarted: {seen:?}"));
            }
        }
    }
    match &case.state {
        State::Is(want) if seen.tracestate.as_deref() != Some(want.as_str()) => {
            return Err(format!(
                "tracestate {:?}, expected {want:?}",
                seen.tracestate
            ));
        }
        State::Absent if seen.tracestate.is_some() => {
            return Err(format!("tracestate {:?}, expected none", seen.tracestate));
        }
        _ => {}
    }
    if level_2 {
        if seen.flags & !0x03 != 0 {
            return Err(format!("reserved flags set: {:02x}", seen.flags));
        }
        let random = seen.flags & 0x02 != 0;
        match case.trace {
            Trace::Inherit if random != (incoming_flags(case) & 0x02 != 0) => {
                return Err(format!("random flag not as received: {:02x}", seen.flags));
            }
            Trace::Restart(_) if !random => {
                return Err(format!(
                    "new trace without the random flag: {:02x}",
                    seen.flags
                ));
            }
            _ => {}
        }
        let want = case.flags.unwrap_or(match case.trace {
            Trace::Inherit => incoming_flags(case) & 0x03,
            Trace::Restart(_) => 0x03,
        });
        if seen.flags != want {
            return Err(format!("flags {:02x}, expected {want:02x}", seen.flags));
        }
    }
    Ok(())
}

/// Runs every case; panics listing the ones that failed.
fn run(cases: &[Case], level_2: bool) {
    let stack = ProcStack::start(&[SAMPLER]).unwrap();
    let mut failed = Vec::new();
    let mut calls = 0;
    for case in cases {
        let mut seen = Vec::new();
        for _ in 0..case.calls {
            calls += 1;
            match call(&stack, case).and_then(|s| check(case, &s, level_2).map(|()| s)) {
                Ok(s) => seen.push(s),
                Err(e) => failed.push(format!("{}: {e}", case.name)),
            }
        }
        // Several calls for one request: one parent id each.
        let parents: HashSet<&str> = seen.iter().map(|s| s.parent_id.as_str()).collect();
        if seen.len() == case.calls && parents.len() != case.calls {
            failed.push(format!("{}: parent ids repeat: {seen:?}", case.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
    eprintln!(
        "{} cases, {calls} calls: all as the suite expects",
        cases.len()
    );
}

// ---- the cases ----

/// Every request of the suite's level-1 tests (`TraceContextTest`, strict
/// level 2, and `AdvancedTest`).
fn level_1_cases() -> Vec<Case> {
    let mut c = Vec::new();
    let tp = |v: &str| vec![h("traceparent", v)];
    let tp_ts = |states: &[&str]| {
        let mut headers = vec![h("traceparent", TP_00)];
        headers.extend(states.iter().map(|s| h("tracestate", *s)));
        headers
    };

    // Without traceparent: a new trace, and no tracestate.
    c.push(case(
        "both_traceparent_and_tracestate_missing",
        vec![],
        NEW,
        State::Absent,
    ));
    c.push(case(
        "traceparent_included_tracestate_missing",
        tp(TP_01),
        Trace::Inherit,
        State::Absent,
    ));
    c.push(case(
        "traceparent_duplicated",
        vec![
            h(
                "traceparent",
                "00-12345678901234567890123456789011-1234567890123456-01",
            ),
            h("traceparent", TP_01),
        ],
        Trace::Restart(&[TRACE_ID, "12345678901234567890123456789011"]),
        State::Absent,
    ));
    for (i, name) in ["trace-parent", "trace.parent"].into_iter().enumerate() {
        c.push(case(
            format!("traceparent_header_name#{i}"),
            vec![h(name, TP_01)],
            NEW,
            State::Absent,
        ));
    }
    for (i, name) in ["TraceParent", "TrAcEpArEnT", "TRACEPARENT"]
        .into_iter()
        .enumerate()
    {
        c.push(case(
            format!("traceparent_header_name_valid_casing#{i}"),
            vec![h(name, TP_01)],
            Trace::Inherit,
            State::Absent,
        ));
    }

    // Versions.
    let restarted = [
        ("traceparent_version_0x00#0", format!("{TP_01}.")),
        (
            "traceparent_version_0x00#1",
            format!("{TP_01}-what-the-future-will-be-like"),
        ),
        (
            "traceparent_version_0xcc#2",
            format!("cc-{TRACE_ID}-{PARENT_ID}-01.what-the-future-will-be-like"),
        ),
        (
            "traceparent_version_0xff",
            format!("ff-{TRACE_ID}-{PARENT_ID}-01"),
        ),
        (
            "traceparent_version_illegal_characters#0",
            format!(".0-{TRACE_ID}-{PARENT_ID}-01"),
        ),
        (
            "traceparent_version_illegal_characters#1",
            format!("0.-{TRACE_ID}-{PARENT_ID}-01"),
        ),
        (
            "traceparent_version_too_long#0",
            format!("000-{TRACE_ID}-{PARENT_ID}-01"),
        ),
        (
            "traceparent_version_too_long#1",
            format!("0000-{TRACE_ID}-{PARENT_ID}-01"),
        ),
        (
            "traceparent_version_too_short",
            format!("0-{TRACE_ID}-{PARENT_ID}-01"),
        ),
    ];
    for (name, value) in restarted {
        c.push(case(name, tp(&value), NEW, State::Absent));
    }
    for (i, value) in [
        format!("cc-{TRACE_ID}-{PARENT_ID}-01"),
        format!("cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like"),
    ]
    .into_iter()
    .enumerate()
    {
        c.push(case(
            format!("traceparent_version_0xcc#{i}"),
            tp(&value),
            Trace::Inherit,
            State::Absent,
        ));
    }

    // Trace ids.
    c.push(case(
        "traceparent_trace_id_all_zero",
        tp(&format!("00-{}-{PARENT_ID}-01", "0".repeat(32))),
        Trace::Restart(&["00000000000000000000000000000000"]),
        State::Absent,
    ));
    let trace_ids: [(&str, &str, &'static [&'static str]); 4] = [
        (
            "traceparent_trace_id_illegal_characters#0",
            "00-.2345678901234567890123456789012-1234567890123456-01",
            &[TRACE_ID],
        ),
        (
            "traceparent_trace_id_illegal_characters#1",
            "00-1234567890123456789012345678901.-1234567890123456-01",
            &[TRACE_ID],
        ),
        (
            "traceparent_trace_id_too_long",
            "00-123456789012345678901234567890123-1234567890123456-01",
            &[TRACE_ID, "23456789012345678901234567890123"],
        ),
        (
            "traceparent_trace_id_too_short",
            "00-1234567890123456789012345678901-1234567890123456-01",
            &[TRACE_ID],
        ),
    ];
    for (name, value, not) in trace_ids {
        c.push(case(name, tp(value), Trace::Restart(not), State::Absent));
    }

    // Parent ids and flags.
    for (name, value) in [
        (
            "traceparent_parent_id_all_zero",
            format!("00-{TRACE_ID}-0000000000000000-01"),
        ),
        (
            "traceparent_parent_id_illegal_characters#0",
            format!("00-{TRACE_ID}-.234567890123456-01"),
        ),
        (
            "traceparent_parent_id_illegal_characters#1",
            format!("00-{TRACE_ID}-123456789012345.-01"),
        ),
        (
            "traceparent_parent_id_too_long",
            format!("00-{TRACE_ID}-12345678901234567-01"),
        ),
        (
            "traceparent_parent_id_too_short",
            format!("00-{TRACE_ID}-123456789012345-01"),
        ),
        (
            "traceparent_trace_flags_illegal_characters#0",
            format!("00-{TRACE_ID}-{PARENT_ID}-.0"),
        ),
        (
            "traceparent_trace_flags_illegal_characters#1",
            format!("00-{TRACE_ID}-{PARENT_ID}-0."),
        ),
        (
            "traceparent_trace_flags_too_long",
            format!("00-{TRACE_ID}-{PARENT_ID}-001"),
        ),
        (
            "traceparent_trace_flags_too_short",
            format!("00-{TRACE_ID}-{PARENT_ID}-1"),
        ),
    ] {
        c.push(case(name, tp(&value), NEW, State::Absent));
    }

    // OWS around the traceparent.
    for (i, value) in [
        format!(" {TP_01}"),
        format!("\t{TP_01}"),
        format!("{TP_01} "),
        format!("{TP_01}\t"),
        format!("\t {TP_01} \t"),
    ]
    .into_iter()
    .enumerate()
    {
        c.push(case(
            format!("traceparent_ows_handling#{i}"),
            tp(&value),
            Trace::Inherit,
            State::Absent,
        ));
    }

    // Tracestate without a traceparent is discarded.
    for (i, state) in ["foo=1", "foo=1,bar=2"].into_iter().enumerate() {
        c.push(case(
            format!("tracestate_included_traceparent_missing#{i}"),
            vec![h("tracestate", state)],
            NEW,
            State::Absent,
        ));
    }
    c.push(case(
        "tracestate_included_traceparent_included",
        tp_ts(&["foo=1,bar=2"]),
        Trace::Inherit,
        is("foo=1,bar=2"),
    ));
    for (i, name) in ["trace-state", "trace.state"].into_iter().enumerate() {
        c.push(case(
            format!("tracestate_header_name#{i}"),
            vec![h("traceparent", TP_00), h(name, "foo=1")],
            Trace::Inherit,
            State::Absent,
        ));
    }
    for (i, name) in ["TraceState", "TrAcEsTaTe", "TRACESTATE"]
        .into_iter()
        .enumerate()
    {
        c.push(case(
            format!("tracestate_header_name_valid_casing#{i}"),
            vec![h("traceparent", TP_00), h(name, "foo=1")],
            Trace::Inherit,
            is("foo=1"),
        ));
    }
    c.push(case(
        "tracestate_empty_header#0",
        tp_ts(&[""]),
        Trace::Inherit,
        State::Absent,
    ));
    c.push(case(
        "tracestate_empty_header#1",
        tp_ts(&["foo=1", ""]),
        Trace::Inherit,
        is("foo=1"),
    ));
    c.push(case(
        "tracestate_empty_header#2",
        tp_ts(&["", "foo=1"]),
        Trace::Inherit,
        is("foo=1"),
    ));
    c.push(case(
        "tracestate_multiple_headers_different_keys",
        tp_ts(&["foo=1,bar=2", "rojo=1,congo=2", "baz=3"]),
        Trace::Inherit,
        is("foo=1,bar=2,rojo=1,congo=2,baz=3"),
    ));

    // Repeated keys: inherited, one of them kept.
    for (i, states) in [
        &["foo=1,foo=1"][..],
        &["foo=1,foo=2"],
        &["foo=1", "foo=1"],
        &["foo=1", "foo=2"],
    ]
    .into_iter()
    .enumerate()
    {
        c.push(case(
            format!("tracestate_duplicated_keys#{i}"),
            tp_ts(states),
            Trace::Inherit,
            is("foo=1"),
        ));
    }

    // Every allowed character.
    let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let value: String = (0x20u8..=0x7e)
        .filter(|b| *b != b',' && *b != b'=')
        .map(char::from)
        .collect();
    for (i, k) in [key.to_owned(), format!("{key}@a-z0-9_-*/")]
        .into_iter()
        .enumerate()
    {
        let member = format!("{k}={value}");
        c.push(case(
            format!("tracestate_all_allowed_characters#{i}"),
            tp_ts(&[&member]),
            Trace::Inherit,
            is(member.clone()),
        ));
    }

    // OWS around members.
    for (i, (state, want)) in [
        ("foo=1 \t , \t bar=2, \t baz=3", "foo=1,bar=2,baz=3"),
        ("foo=1\t \t,\t \tbar=2,\t \tbaz=3", "foo=1,bar=2,baz=3"),
        (" foo=1", "foo=1"),
        ("\tfoo=1", "foo=1"),
        ("foo=1 ", "foo=1"),
        ("foo=1\t", "foo=1"),
        ("\t foo=1 \t", "foo=1"),
    ]
    .into_iter()
    .enumerate()
    {
        c.push(case(
            format!("tracestate_ows_handling#{i}"),
            tp_ts(&[state]),
            Trace::Inherit,
            is(want),
        ));
    }

    // Illegal keys: discarded.
    for (i, state) in ["foo =1", "FOO=1", "foo.bar=1"].into_iter().enumerate() {
        c.push(case(
            format!("tracestate_key_illegal_characters#{i}"),
            tp_ts(&[state]),
            Trace::Inherit,
            State::Absent,
        ));
    }

    // At signs: kept where the key grammar allows them; a key starting with
    // one makes the header discarded (the suite: `bar` must not survive).
    for (i, (state, want)) in [
        ("foo@=1,bar=2", Some("foo@=1,bar=2")),
        ("@foo=1,bar=2", None),
        ("foo@@bar=1,bar=2", Some("foo@@bar=1,bar=2")),
        ("foo@bar@baz=1,bar=2", Some("foo@bar@baz=1,bar=2")),
    ]
    .into_iter()
    .enumerate()
    {
        c.push(case(
            format!("tracestate_key_illegal_vendor_format#{i}"),
            tp_ts(&[state]),
            Trace::Inherit,
            want.map_or(State::Absent, is),
        ));
    }

    // 32 members over four headers are kept; 33 are discarded.
    let members = |r: std::ops::RangeInclusive<usize>| {
        r.map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (a, b, d) = (members(1..=10), members(11..=20), members(21..=30));
    c.push(case(
        "tracestate_member_count_limit#0",
        tp_ts(&[&a, &b, &d, &members(31..=32)]),
        Trace::Inherit,
        is(members(1..=32)),
    ));
    c.push(case(
        "tracestate_member_count_limit#1",
        tp_ts(&[&a, &b, &d, &members(31..=33)]),
        Trace::Inherit,
        State::Absent,
    ));

    // Keys up to 256 characters in all, at signs or not.
    for (i, key) in [
        Some("z".repeat(256)),
        None,
        Some(format!("{}@{}", "t".repeat(241), "v".repeat(14))),
        Some(format!("{}@v", "t".repeat(242))),
        Some(format!("t@{}", "v".repeat(15))),
    ]
    .into_iter()
    .enumerate()
    {
        let (member, want) = match key {
            Some(k) => (format!("{k}=1"), is(format!("foo=1,{k}=1"))),
            // 257 characters: the header is discarded (`foo` must not
            // survive).
            None => (format!("{}=1", "z".repeat(257)), State::Absent),
        };
        c.push(case(
            format!("tracestate_key_length_limit#{i}"),
            tp_ts(&["foo=1", &member]),
            Trace::Inherit,
            want,
        ));
    }

    // Illegal values: discarded (both members for `foo=,bar=3`).
    for (i, state) in ["foo=bar=baz", "foo=,bar=3"].into_iter().enumerate() {
        c.push(case(
            format!("tracestate_value_illegal_characters#{i}"),
            tp_ts(&[state]),
            Trace::Inherit,
            State::Absent,
        ));
    }

    // AdvancedTest: three calls per request, one parent id each.
    let mut three = |name: &str, headers, trace| {
        let mut k = case(name, headers, trace, State::Absent);
        k.calls = 3;
        c.push(k);
    };
    three(
        "multiple_requests_with_valid_traceparent",
        tp(TP_01),
        Trace::Inherit,
    );
    three("multiple_requests_without_traceparent", vec![], NEW);
    three(
        "multiple_requests_with_illegal_traceparent",
        tp(&format!("00-{}-{PARENT_ID}-01", "0".repeat(32))),
        Trace::Restart(&["00000000000000000000000000000000"]),
    );
    c
}

/// The suite's level-2 test (`TraceContext2Test`), and further checks of
/// the random flag rules it stands for.
fn level_2_cases() -> Vec<Case> {
    let mut c = vec![case(
        "propagates_random_flag",
        vec![h("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-02"))],
        Trace::Inherit,
        State::Absent,
    )];
    let mut flags =
        |name: &str, tp: Option<String>, cli: Vec<(&'static str, &'static str)>, want: u8| {
            let headers = tp.map(|v| vec![h("traceparent", v)]).unwrap_or_default();
            let trace = if headers.is_empty() {
                NEW
            } else {
                Trace::Inherit
            };
            let mut k = case(format!("extra: {name}"), headers, trace, State::Absent);
            k.cli_env = cli;
            k.flags = Some(want);
            c.push(k);
        };
    let with = |f: &str| Some(format!("00-{TRACE_ID}-{PARENT_ID}-{f}"));
    flags("random unset stays unset", with("00"), vec![], 0x00);
    flags("sampled, random unset", with("01"), vec![], 0x01);
    flags("sampled and random", with("03"), vec![], 0x03);
    flags("reserved flags are sent as zero", with("ff"), vec![], 0x03);
    flags(
        "a future version's random flag",
        Some(format!("cc-{TRACE_ID}-{PARENT_ID}-02-future")),
        vec![],
        0x02,
    );
    let off = vec![("OTEL_TRACES_SAMPLER", "always_off")];
    flags(
        "random kept when the CLI samples nothing",
        with("03"),
        off.clone(),
        0x02,
    );
    flags(
        "a new trace is random when nothing is sampled",
        None,
        off,
        0x02,
    );
    flags("a new trace is random", None, vec![], 0x03);
    c
}

#[test]
fn level_1() {
    run(&level_1_cases(), false);
}

#[test]
fn level_2() {
    let mut cases = level_1_cases();
    cases.extend(level_2_cases());
    run(&cases, true);
}
