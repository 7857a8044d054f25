//! One remote command is one trace across the three built binaries, each
//! exporting over OTLP (gRPC, or HTTP with protobuf bodies) to the receiver
//! fixture: every stage span
//! present, parented as `docs/spans.md` says, nested in time, and covering
//! the dispatch; the caller's TRACEPARENT continues in and the child's
//! TRACEPARENT names `process.run`; span count does not grow with output;
//! arguments, environment, stdin and output never reach a span; a collector
//! that is down costs nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::binaries::{self, ProcStack};
use integration_tests::otlp::{AttrValue, OtlpReceiver, RecordedSpan};
use integration_tests::trace_check::{self, assert_contained, by_name, one};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use telemetry::otlp::Protocol;
use telemetry::spans;

const WAIT: Duration = Duration::from_secs(30);

/// Service env: export to `endpoint`, batching so slowly that only the
/// SIGTERM flush can deliver the spans in time.
fn service_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
    ]
}

/// The variables that point an exporter at `rx` over `protocol`.
fn export_env(rx: &OtlpReceiver, protocol: Protocol) -> Vec<(&'static str, String)> {
    let endpoint = if protocol.is_http() {
        rx.http_endpoint()
    } else {
        rx.endpoint()
    };
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.name().to_owned()),
    ]
}

/// `env` as the borrowed pairs [`exec`] takes.
fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn start_stack(env: &[(&'static str, String)]) -> ProcStack {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ProcStack::start(&env).unwrap()
}

/// Runs `core-client exec --print-trace-id` with `env` and `stdin`;
/// returns the output and the trace id it printed.
fn exec(stack: &ProcStack, argv: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (Output, String) {
    exec_with(stack, &[], argv, env, stdin)
}

/// [`exec`] with more `exec` flags.
fn exec_with(
    stack: &ProcStack,
    flags: &[&str],
    argv: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (Output, String) {
    let mut flags = flags.to_vec();
    flags.push("--print-trace-id");
    let mut cmd = stack.exec_with(&flags, argv);
    cmd.env_remove("TRACEPARENT").env_remove("TRACESTATE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = binaries::run_with_stdin(cmd, stdin).unwrap();
    let id = binaries::printed_trace_id(&out).unwrap();
    (out, id)
}

/// Stops the relay and the exec-server with SIGTERM (they flush their
/// spans on the way out) and waits for them to exit.
fn terminate(stack: &mut ProcStack) {
    for p in [&mut stack.relay, &mut stack.server] {
        kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM).unwrap();
    }
    for p in [&mut stack.relay, &mut stack.server] {
        let deadline = Instant::now() + WAIT;
        while p.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "a service ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn services(spans: &[RecordedSpan]) -> BTreeSet<String> {
    spans.iter().map(|s| s.service.clone()).collect()
}

/// Every value a span carries, as text (names, attributes, status).
fn all_text(spans: &[RecordedSpan]) -> String {
    fn value(v: &AttrValue, out: &mut String) {
        match v {
            AttrValue::Str(s) => out.push_str(s),
            AttrValue::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
            AttrValue::Array(a) => a.iter().for_each(|x| value(x, out)),
            AttrValue::Map(m) => m.iter().for_each(|(k, x)| {
                out.push_str(k);
                value(x, out);
            }),
            other => out.push_str(&format!("{other:?}")),
        }
        out.push('\n');
    }
    let mut out = String::new();
    for s in spans {
        out.push_str(&s.name);
        out.push('\n');
        for (k, v) in &s.attributes {
            out.push_str(k);
            out.push('=');
            value(v, &mut out);
        }
        if let Some(e) = &s.status_error {
            out.push_str(e);
        }
    }
    out
}

/// Waits until the receiver's spans stop changing for a while.
async fn settle(rx: &OtlpReceiver) -> Vec<RecordedSpan> {
    let deadline = Instant::now() + WAIT;
    let mut last = rx.spans().len();
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = rx.spans().len();
        if n != last {
            last = n;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(800) {
            return rx.spans();
        }
        assert!(Instant::now() < deadline, "spans never settled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_exec_is_one_trace_across_three_processes() {
    one_exec_is_one_trace(Protocol::Grpc).await;
}

/// The same trace, whole, when the three export over OTLP/HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_exec_is_one_trace_over_otlp_http() {
    one_exec_is_one_trace(Protocol::HttpProtobuf).await;
}

/// Runs one `exec` through the three binaries, all exporting to one
/// receiver over `protocol`, and checks its trace.
async fn one_exec_is_one_trace(protocol: Protocol) {
    let rx = OtlpReceiver::start().await.unwrap();
    let export = export_env(&rx, protocol);
    let mut service = export.clone();
    service.push(("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()));
    let mut stack = start_stack(&service);
    let client_env = pairs(&export);

    let (out, trace_id) = exec(&stack, &["sh", "-c", "echo hi"], &client_env, b"");
    assert_eq!(out.stdout, b"hi\n");
    assert!(out.status.success());
    // The client flushed at exit; the services flush on SIGTERM (their
    // batch delay is ten minutes, so nothing else could have sent them).
    terminate(&mut stack);
    let all = rx
        .wait_for(WAIT, |s| {
            let t: Vec<RecordedSpan> = s
                .iter()
                .filter(|x| x.trace_id == trace_id)
                .cloned()
                .collect();
            trace_check::has_all_stages(&t) && services(&t).len() == 3
        })
        .await;
    let all = {
        let _ = all;
        settle(&rx).await
    };

    // Exactly one trace, from all three services. The record writers'
    // spans are traces of their own, linked to the command (never on its
    // critical path), and so are the sessions' and links' own spans.
    let (background, spans): (Vec<RecordedSpan>, Vec<RecordedSpan>) =
        all.into_iter().partition(|s| spans::is_background(&s.name));
    let traces: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "one exec, one trace: {traces:?}");
    assert!(
        background.iter().any(|b| b.name == spans::METADATA_PERSIST),
        "the records were persisted"
    );
    for b in &background {
        assert_ne!(b.trace_id, trace_id);
        assert!(
            b.links.iter().all(|(t, _)| *t == trace_id),
            "{}/{} links another trace",
            b.service,
            b.name
        );
    }
    let persisted: BTreeSet<&str> = background
        .iter()
        .filter(|b| b.name == spans::METADATA_PERSIST)
        .flat_map(|b| b.links.iter().map(|(_, s)| s.as_str()))
        .collect();
    let dispatch_id = one(&spans, spans::TOOL_DISPATCH).span_id.clone();
    let exec_id = one(&spans, spans::RPC_SERVER_EXEC).span_id.clone();
    assert!(
        persisted.contains(dispatch_id.as_str()),
        "client record linked"
    );
    assert!(persisted.contains(exec_id.as_str()), "server record linked");
    assert_eq!(
        services(&spans),
        ["core-client", "exec-server", "relay"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    for name in trace_check::stage_names() {
        assert!(!by_name(&spans, name).is_empty(), "{name} missing");
    }
    for s in &spans {
        assert!(
            spans::ALL.contains(&s.name.as_str()),
            "{} is not in the vocabulary",
            s.name
        );
    }

    // One tree rooted at the CLI's cli.run, whose stages tile it around
    // tool.dispatch, parented as docs/spans.md says.
    let roots = trace_check::roots(&spans);
    assert_eq!(roots.len(), 1, "one root: {roots:?}");
    assert_eq!(roots[0].name, spans::CLI_RUN);
    let dispatch = one(&spans, spans::TOOL_DISPATCH);
    assert_eq!(
        dispatch.parent_span_id.as_deref(),
        Some(roots[0].span_id.as_str())
    );
    trace_check::assert_cli_run_tiles(&spans);
    trace_check::assert_exec_tree(&spans);
    // The framing spans: the exec request (and the stdin close the CLI
    // sends at its stdin's EOF) goes out and in; back come the started,
    // first-output, last-output (for one line, the same chunk) and exit
    // events.
    let messages = |service: &str, name: &str| -> Vec<String> {
        let mut m: Vec<String> = spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .map(|s| s.attr_str("rex.message").unwrap_or("?").to_owned())
            .collect();
        m.sort();
        m
    };
    let requests = messages("core-client", spans::RELAY_FRAME_SEND);
    assert!(
        requests == ["exec"] || requests == ["exec", "stdin_close"],
        "{requests:?}"
    );
    let received = messages("exec-server", spans::RELAY_FRAME_RECV);
    let sent_at = |service: &str, what: &str| {
        spans
            .iter()
            .find(|s| {
                s.service == service
                    && s.name == spans::RELAY_FRAME_SEND
                    && s.attr_str("rex.message") == Some(what)
            })
            .map(|s| s.start_unix_nanos)
    };
    if received != requests {
        // The request rode in handshake message 1, so the command may end
        // before the CLI has read its stdin's EOF: a close sent after the
        // exit event left (the CLI then exits at once) may not reach the
        // exec-server. Only such a one is missing.
        assert_eq!(
            (&received[..], &requests[..]),
            (
                &["exec".to_owned()][..],
                &["exec".to_owned(), "stdin_close".to_owned()][..]
            )
        );
        let (close, exit) = (
            sent_at("core-client", "stdin_close").unwrap(),
            sent_at("exec-server", "exited").unwrap(),
        );
        assert!(
            close >= exit,
            "a stdin close sent before the exit went missing"
        );
    }
    let events = ["exited", "output.first", "output.last", "started"];
    assert_eq!(messages("exec-server", spans::RELAY_FRAME_SEND), events);
    assert_eq!(messages("core-client", spans::RELAY_FRAME_RECV), events);
    // The last output chunk's spans are made once the exit shows it was
    // the last, so its frame carries no hop of its own (here it is the
    // first chunk's frame).
    let hops = events.len() - 1;
    // One relay.forward per traced message (each ends a frame of its own),
    // in both directions; the exec request twice when the exec-server did
    // not run it from handshake message 1 (this CLI knew no ticket of its
    // run) and it went again after the handshake.
    let resent = usize::try_from(
        dispatch
            .attr_i64(spans::ATTR_SESSION_EARLY_RETRIES)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        resent, 1,
        "a first exec to this exec-server knows no ticket"
    );
    // A stdin close that crossed the exit may have been forwarded by the
    // relay and still not read by the exec-server, whose session was
    // ending: toward the server, every message received, and at most
    // every message sent.
    let forwards = by_name(&spans, spans::RELAY_FORWARD);
    let toward = |dir: &str| {
        forwards
            .iter()
            .filter(|f| f.attr_str("rex.direction") == Some(dir))
            .count()
    };
    let to_server = toward("to_server");
    assert!(
        (received.len() + resent..=requests.len() + resent).contains(&to_server),
        "{to_server} relay.forward to_server for {received:?} received of {requests:?} sent"
    );
    assert_eq!(toward("to_client"), hops);
    assert_eq!(forwards.len(), to_server + hops);
    // Each receiver links the relay hop it came through.
    let forwards: BTreeSet<&str> = by_name(&spans, spans::RELAY_FORWARD)
        .iter()
        .map(|s| s.span_id.as_str())
        .collect();
    for recv in by_name(&spans, spans::RELAY_FRAME_RECV) {
        assert!(
            recv.links
                .iter()
                .any(|(_, id)| forwards.contains(id.as_str())),
            "{}/{} links no relay.forward",
            recv.service,
            recv.name
        );
    }

    // Nested in time. One host, so the clock-offset estimate only has to
    // absorb the measurement noise it reports.
    let offset = dispatch
        .attr_i64("rex.clock_offset_ns")
        .expect("tool.dispatch carries the clock offset estimate")
        .unsigned_abs();
    // Only a stdin close that crossed the exit event on the wire may be
    // received after the dispatch ended: the exec-server took it after
    // its exit had left (on its own clock), so the client had no reason to
    // wait for it. Every other span lies within its parent.
    let exited_sent = sent_at("exec-server", "exited").expect("the exit was sent");
    let crossed = |s: &RecordedSpan| {
        s.service == "exec-server"
            && s.name == spans::RELAY_FRAME_RECV
            && s.attr_str("rex.message") == Some("stdin_close")
            && s.start_unix_nanos >= exited_sent
    };
    let within: Vec<RecordedSpan> = spans.iter().filter(|s| !crossed(s)).cloned().collect();
    assert!(within.len() + 1 >= spans.len(), "one stdin close at most");
    assert_contained(&within, offset + 1_000_000);

    // The stages on the dispatch's path tile it: exactly on each host's
    // own clock (the exec-server's exported spans keep its clock; the
    // exact tiling across hosts is checked on the client's trace file,
    // where the exec-server's stages are placed on the client's clock).
    trace_check::assert_tiles(&spans, dispatch, trace_check::RemoteClock::Own);

    // Volume attributes.
    let push = one(&spans, spans::TERMINAL_PUSH);
    assert_eq!(push.attr_i64("rex.stdout.bytes"), Some(3));
    assert_eq!(push.attr_i64("rex.stdout.chunks"), Some(1));
    let delivery = one(&spans, spans::TERMINAL_DELIVERY);
    assert_eq!(delivery.attr_i64("rex.stdout.bytes"), Some(3));
    assert_eq!(delivery.attr_i64("rex.events"), Some(3));
    assert_eq!(dispatch.attr_str("process.executable.name"), Some("sh"));

    // Every export came over the protocol asked for.
    let types = rx.header_values("content-type");
    if protocol.is_http() {
        assert_eq!(types.len(), rx.export_requests());
        assert!(
            types.iter().all(|t| t == "application/x-protobuf"),
            "{types:?}"
        );
    } else {
        assert!(
            types.iter().all(|t| t.starts_with("application/grpc")),
            "{types:?}"
        );
    }
    rx.shutdown().await.unwrap();
}

/// Runs `rex-demo` (the three services in one process) exporting
/// to `rx` over `protocol`, with `env` added; it must succeed.
async fn demo(rx: &OtlpReceiver, protocol: Protocol, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(binaries::path("rex-demo").unwrap());
    cmd.env("REX_TRACE_FILE", dir.path().join("traces.jsonl"))
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .stdin(Stdio::null());
    for (k, v) in export_env(rx, protocol) {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A header from OTEL_EXPORTER_OTLP_HEADERS (its value percent-decoded)
/// comes with every export, over gRPC and over HTTP; the traces' own
/// OTEL_EXPORTER_OTLP_TRACES_HEADERS replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_headers_reach_the_collector_over_both_protocols() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let rx = OtlpReceiver::start().await.unwrap();
        let general = "x-rex-tenant=team%20a,x-rex-other=1";
        demo(&rx, protocol, &[("OTEL_EXPORTER_OTLP_HEADERS", general)]).await;
        // The demo flushed before it exited.
        let n = rx.export_requests();
        assert!(
            n > 0 && !rx.spans().is_empty(),
            "{protocol:?}: nothing exported"
        );
        assert_eq!(
            rx.header_values("x-rex-tenant"),
            vec!["team a"; n],
            "{protocol:?}"
        );
        assert_eq!(
            rx.header_values("x-rex-other"),
            vec!["1"; n],
            "{protocol:?}"
        );
        rx.shutdown().await.unwrap();

        let rx = OtlpReceiver::start().await.unwrap();
        demo(
            &rx,
            protocol,
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", general),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-rex-tenant=traces"),
            ],
        )
        .await;
        let n = rx.export_requests();
        assert!(n > 0, "{protocol:?}: nothing exported");
        assert_eq!(
            rx.header_values("x-rex-tenant"),
            vec!["traces"; n],
            "{protocol:?}"
        );
        assert!(rx.header_values("x-rex-other").is_empty(), "{protocol:?}");
        rx.shutdown().await.unwrap();
    }
}

/// An unknown protocol stops each binary at start-up with one line naming
/// the variable and the protocols it takes.
#[test]
fn an_unknown_protocol_stops_each_binary_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 4] = [
        ("relay", &["--listen", "127.0.0.1:0"]),
        (
            "exec-server",
            &["--relay", "http://127.0.0.1:9", "--no-records"],
        ),
        ("core-client", &["exec", "--no-agent", "nowhere", "true"]),
        ("rex-demo", &[]),
    ];
    for (binary, args) in cases {
        let out = std::process::Command::new(binaries::path(binary).unwrap())
            .args(args)
            .env("REX_TRACE_FILE", dir.path().join("traces.jsonl"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/xml")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{binary}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{binary}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "{binary}: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=\"http/xml\" is not a supported OTLP protocol; \
                 use grpc (the default), http/protobuf or http/json"
            )),
            "{binary}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_continues_in_and_out_and_output_volume_adds_no_spans() {
    let rx = OtlpReceiver::start().await.unwrap();
    let endpoint = rx.endpoint();
    let mut stack = start_stack(&service_env(&endpoint));
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];

    // In: a valid TRACEPARENT is continued.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let tp = format!("00-{caller_trace}-{caller_span}-01");
    let (out, id) = exec(
        &stack,
        &["sh", "-c", "printf %s \"$TRACEPARENT\""],
        &[env[0], ("TRACEPARENT", &tp), ("TRACESTATE", "vendor=x")],
        b"",
    );
    assert!(out.status.success());
    assert_eq!(id, caller_trace, "the caller's trace continues");
    let child_tp = String::from_utf8(out.stdout).unwrap();
    let child = telemetry::w3c::TraceParent::parse(&child_tp).unwrap();
    assert_eq!(hex::encode(child.trace_id), caller_trace);

    // In: every invalid kind starts a new trace, and the command's output
    // is unchanged.
    let invalid = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", // uppercase
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // trailing data
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",  // short parent id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",  // short flags
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // bad separator
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // not hex
        "",                                                        // empty
    ];
    let mut invalid_ids = Vec::new();
    for bad in invalid {
        let (out, id) = exec(
            &stack,
            &["echo", "unchanged"],
            &[env[0], ("TRACEPARENT", bad)],
            b"",
        );
        assert!(
            out.status.success(),
            "TRACEPARENT {bad:?} failed the command"
        );
        assert_eq!(out.stdout, b"unchanged\n", "TRACEPARENT {bad:?}");
        assert_ne!(id, caller_trace, "TRACEPARENT {bad:?} was continued");
        assert_eq!(id.len(), 32);
        invalid_ids.push(id);
    }
    let distinct: BTreeSet<&String> = invalid_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        invalid_ids.len(),
        "each starts its own trace"
    );

    // Volume: one line vs 50 MiB.
    // (-n: no stdin to close, whose close could cross the exit of a
    // command that ends at once.)
    let (small, small_id) = exec_with(&stack, &["-n"], &["echo", "x"], &env, b"");
    assert!(small.status.success());
    let (big, big_id) = exec_with(
        &stack,
        &["-n"],
        &["head", "-c", "52428800", "/dev/zero"],
        &env,
        b"",
    );
    assert!(big.status.success());
    assert_eq!(big.stdout.len(), 50 * 1024 * 1024);

    terminate(&mut stack);
    rx.wait_for(WAIT, |s| {
        [&small_id, &big_id, &id].iter().all(|t| {
            let t: Vec<RecordedSpan> = s.iter().filter(|x| &x.trace_id == *t).cloned().collect();
            trace_check::has_all_stages(&t)
        })
    })
    .await;
    let all = settle(&rx).await;
    let trace = |id: &str| -> Vec<RecordedSpan> {
        all.iter().filter(|s| s.trace_id == id).cloned().collect()
    };

    // Out: the child's TRACEPARENT names its process.run span, and the
    // dispatch hangs under the caller's span.
    let continued = trace(caller_trace);
    let run = one(&continued, spans::PROCESS_RUN);
    assert_eq!(hex::encode(child.parent_id), run.span_id);
    let cli_run = one(&continued, spans::CLI_RUN);
    assert_eq!(cli_run.parent_span_id.as_deref(), Some(caller_span));
    let dispatch = one(&continued, spans::TOOL_DISPATCH);
    assert_eq!(dispatch.parent_span_id.as_ref(), Some(&cli_run.span_id));
    // Invalid ones: a new root.
    for id in &invalid_ids {
        let t = trace(id);
        let r = one(&t, spans::CLI_RUN);
        assert_eq!(r.parent_span_id, None, "trace {id}: cli.run is a root");
    }

    let (small, big) = (trace(&small_id), trace(&big_id));
    let names = |t: &[RecordedSpan]| -> Vec<String> {
        let mut n: Vec<String> = t
            .iter()
            .map(|s| format!("{}/{}", s.service, s.name))
            .collect();
        n.sort();
        n
    };
    // 50 MiB is thousands of chunks; the spans are those of one line.
    let expected = names(&small);
    assert_eq!(
        names(&big),
        expected,
        "span count must not follow output size"
    );
    let push = one(&big, spans::TERMINAL_PUSH);
    assert_eq!(push.attr_i64("rex.stdout.bytes"), Some(50 * 1024 * 1024));
    assert!(push.attr_i64("rex.stdout.chunks").unwrap() > 100);
    let delivery = one(&big, spans::TERMINAL_DELIVERY);
    assert_eq!(
        delivery.attr_i64("rex.stdout.bytes"),
        Some(50 * 1024 * 1024)
    );
    rx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_never_carry_arguments_environment_stdin_or_output() {
    let rx = OtlpReceiver::start().await.unwrap();
    let endpoint = rx.endpoint();
    let mut stack = start_stack(&service_env(&endpoint));
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("TRACESTATE", "vendor=ok"),
    ];
    // The marker travels as an argument, an environment value and stdin,
    // and comes back as stdout and stderr.
    let (out, id) = exec_with(
        &stack,
        &["-e", "MARK_ENV=envmark-2718"],
        &[
            "sh",
            "-c",
            "read line; echo \"$line $MARK_ENV\"; echo argmark-3141 >&2",
        ],
        &env,
        b"stdinmark-1618\n",
    );
    assert!(out.status.success());
    assert_eq!(out.stdout, b"stdinmark-1618 envmark-2718\n");
    terminate(&mut stack);
    rx.wait_for(WAIT, |s| {
        let t: Vec<RecordedSpan> = s.iter().filter(|x| x.trace_id == id).cloned().collect();
        trace_check::has_all_stages(&t)
    })
    .await;
    let spans = settle(&rx).await;
    let text = all_text(&spans);
    for secret in ["stdinmark", "envmark", "argmark", "MARK_ENV", "read line"] {
        assert!(!text.contains(secret), "{secret:?} leaked into a span");
    }
    let server_key = std::fs::read(stack.dir.path().join("server.key")).unwrap();
    let client_key = std::fs::read(&stack.client_key).unwrap();
    for key in [server_key, client_key] {
        let key = String::from_utf8_lossy(&key).trim().to_owned();
        assert!(!text.contains(&key), "a private key leaked into a span");
    }
    // The program name is there.
    assert_eq!(
        one(&spans, spans::RPC_SERVER_EXEC).attr_str("process.executable.name"),
        Some("sh")
    );
    rx.shutdown().await.unwrap();
}

/// The median wall time of `runs` executions of `f`.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_the_command_nothing() {
    let rx = OtlpReceiver::start().await.unwrap();
    let up = rx.endpoint();
    // A port nobody listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let stack = start_stack(&service_env(&down));
    let (mut t_up, mut t_down) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (endpoint, times) in [(&up, &mut t_up), (&down, &mut t_down)] {
            let started = Instant::now();
            let (out, _) = exec(
                &stack,
                &["echo", "ok"],
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
                b"",
            );
            times.push(started.elapsed());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, b"ok\n");
        }
    }
    let (m_up, m_down) = (median(t_up), median(t_down));
    // Retrying, or waiting out an export timeout, would add 0.7 s to 10 s.
    assert!(
        m_down < m_up * 2 + Duration::from_millis(300),
        "collector down: median {m_down:?} vs {m_up:?} with it up"
    );
    rx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_stopped_by_sigterm_still_flushes_its_spans() {
    let rx = OtlpReceiver::start().await.unwrap();
    let endpoint = rx.endpoint();
    let stack = start_stack(&[]);
    let mut cmd = stack.exec(&["sleep", "30"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Wait until the remote process runs, then stop the CLI.
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "SIGTERM ended it"
    );
    // The signal was forwarded: the remote sleep died of it, and the CLI
    // exits with the remote status (128 + 15).
    assert_eq!(status.code(), Some(143));
    let spans = rx
        .wait_for(WAIT, |s| {
            s.iter()
                .any(|x| x.name == spans::TOOL_DISPATCH && x.service == "core-client")
        })
        .await;
    let dispatch = one(&spans, spans::TOOL_DISPATCH);
    assert!(dispatch.duration_nanos() > 1_000_000_000);
    drop(stack);
    rx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_name_and_sdk_disabled_follow_the_standard_variables() {
    let rx = OtlpReceiver::start().await.unwrap();
    let endpoint = rx.endpoint();
    let stack = start_stack(&[]);
    let env = ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str());

    let (out, named) = exec(
        &stack,
        &["true"],
        &[env, ("OTEL_SERVICE_NAME", "my-tool")],
        b"",
    );
    assert!(out.status.success());
    let (out, disabled) = exec(
        &stack,
        &["true"],
        &[env, ("OTEL_SDK_DISABLED", "true")],
        b"",
    );
    assert!(out.status.success());
    // The CLI exports at exit, so both runs are over: whatever was sent
    // has arrived once the named trace has.
    let spans = rx
        .wait_for(WAIT, |s| s.iter().any(|x| x.trace_id == named))
        .await;
    let named_spans: Vec<&RecordedSpan> = spans.iter().filter(|s| s.trace_id == named).collect();
    assert!(named_spans.iter().all(|s| s.service == "my-tool"));
    assert!(named_spans.iter().any(|s| s.name == spans::TOOL_DISPATCH));
    // Disabled: the command still ran and was still given a trace id (the
    // context propagates), but nothing was exported.
    assert_eq!(disabled.len(), 32);
    assert!(
        rx.spans().iter().all(|s| s.trace_id != disabled),
        "OTEL_SDK_DISABLED=true exported spans"
    );
    rx.shutdown().await.unwrap();
}

/// With the exec-server's clock 2 s ahead (libfaketime), what the services
/// export keeps their own raw clocks, as a collector (Jaeger) then shows
/// them, and the client's exported spans carry the offset it measured, so
/// the skew can be read off the trace. (The local trace file's placement
/// on the client's clock is checked in `binaries.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_spans_keep_a_skewed_clock_and_carry_the_offset() {
    let Some(lib) = binaries::libfaketime() else {
        return;
    };
    let lib = lib.to_str().unwrap().to_owned();
    const SKEW_NS: u64 = 2_000_000_000;
    let rx = OtlpReceiver::start().await.unwrap();
    let mut env = service_env(&rx.endpoint());
    env.extend([
        ("LD_PRELOAD", lib),
        ("FAKETIME", "+2s".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_DONT_RESET", "1".to_owned()),
        // Their clocks are not their kernel's: they must not say so.
        ("REX_CLOCK_STATUS", "withheld".to_owned()),
    ]);
    let mut stack = start_stack(&env);
    let client_env = service_env(&rx.endpoint());
    let (out, id) = exec(&stack, &["sh", "-c", "echo hi"], &pairs(&client_env), b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(&mut stack);
    let all = settle(&rx).await;
    let spans: Vec<RecordedSpan> = all.into_iter().filter(|s| s.trace_id == id).collect();
    let dispatch = one(&spans, spans::TOOL_DISPATCH);
    assert_eq!(dispatch.service, "core-client");

    // The client's spans carry the estimate, within its own uncertainty
    // (half the round trip it was measured over) and a millisecond.
    let estimate = dispatch
        .attr_i64("rex.clock_offset_ns")
        .expect("tool.dispatch carries the clock offset estimate");
    let transit = by_name(&spans, spans::LINK_TRANSIT)
        .into_iter()
        .find(|s| s.service == "core-client")
        .expect("the client exports its link.transit");
    let offset = transit.attr_i64("rex.clock.offset_ns").unwrap();
    let uncertainty = transit.attr_i64("rex.clock.bound_ns").unwrap();
    assert_eq!(transit.attr_str("rex.clock.source"), Some("two-way"));
    for value in [estimate, offset] {
        assert!(
            (value - SKEW_NS as i64).abs() <= uncertainty + 1_000_000,
            "clock offset estimate {value} ns, uncertainty {uncertainty} ns"
        );
    }

    // The exec-server's exported spans keep its raw clock: each lies in
    // the dispatch's window moved 2 s ahead (it ran within the dispatch),
    // not in the window itself.
    let remote: Vec<&RecordedSpan> = spans
        .iter()
        .filter(|s| s.service == "exec-server")
        .collect();
    assert!(remote.len() >= 8, "{} exec-server spans", remote.len());
    // Only a stdin close that crossed the exit event on the wire (taken
    // after the exit had left) may end after the dispatch did (as in
    // `one_exec_is_one_trace`); it too starts after the moved dispatch's
    // start.
    let exited_sent = remote
        .iter()
        .find(|s| s.name == spans::RELAY_FRAME_SEND && s.attr_str("rex.message") == Some("exited"))
        .expect("the exit was sent")
        .start_unix_nanos;
    let crossed = |s: &RecordedSpan| {
        s.name == spans::RELAY_FRAME_RECV
            && s.attr_str("rex.message") == Some("stdin_close")
            && s.start_unix_nanos >= exited_sent
    };
    let slack: i128 = 1_000_000;
    for s in &remote {
        let moved = |at: u64, of: u64| i128::from(at) - i128::from(of + SKEW_NS);
        let after_start = moved(s.start_unix_nanos, dispatch.start_unix_nanos);
        let after_end = moved(s.end_unix_nanos, dispatch.end_unix_nanos);
        assert!(
            after_start + slack >= 0 && (after_end <= slack || crossed(s)),
            "{} ({:?}) is not on the exec-server's own (skewed) clock: it starts {after_start} ns \
             after the moved dispatch starts and ends {after_end} ns after it ends",
            s.name,
            s.attr_str("rex.message"),
        );
    }
    rx.shutdown().await.unwrap();
}

/// An exec-server's registration is a span of the relay's own (a root),
/// exported when the registration ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_a_relay_span_of_its_own() {
    let rx = OtlpReceiver::start().await.unwrap();
    let mut stack = start_stack(&service_env(&rx.endpoint()));
    terminate(&mut stack);
    let spans = settle(&rx).await;
    let registrations: Vec<&RecordedSpan> = spans
        .iter()
        .filter(|s| s.service == "relay" && s.name == spans::RELAY_REGISTRATION)
        .collect();
    assert_eq!(registrations.len(), 1, "{spans:#?}");
    assert_eq!(registrations[0].parent_span_id, None);
    rx.shutdown().await.unwrap();
}

/// The services' own warnings (a refused key, a lost link) are events on
/// their spans, exported with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_warnings_are_events_on_their_spans() {
    let rx = OtlpReceiver::start().await.unwrap();
    let endpoint = rx.endpoint();
    let mut stack = start_stack(&service_env(&endpoint));
    // A key the exec-server does not authorize.
    binaries::keygen("core-client", stack.dir.path(), "stranger.key").unwrap();
    let stranger = stack.dir.path().join("stranger.key");
    let mut cmd = binaries::exec_command(
        &stack.relay_url,
        &stack.server_pub,
        &stranger,
        &[],
        &["true"],
    )
    .unwrap();
    cmd.env("OTEL_SDK_DISABLED", "true");
    let out = binaries::run_with_stdin(cmd, b"").unwrap();
    assert_eq!(out.status.code(), Some(255));
    // The relay goes away: the exec-server's registration is lost.
    stack.relay.child.kill().unwrap();
    stack.server.wait_for_line("relay link lost", WAIT).unwrap();
    terminate(&mut stack);
    let spans = settle(&rx).await;
    let warning = |span: &str, message: &str| {
        spans.iter().any(|s| {
            s.service == "exec-server" && s.name == span && s.events.iter().any(|e| {
                e.name.contains(message)
                    && matches!(e.attributes.get("level"), Some(AttrValue::Str(l)) if l == "WARN")
            })
        })
    };
    assert!(
        warning(
            spans::SESSION_SERVER,
            "refused a client key that is not authorized"
        ),
        "{:#?}",
        spans
            .iter()
            .filter(|s| s.service == "exec-server")
            .collect::<Vec<_>>()
    );
    assert!(
        warning(spans::LINK_REGISTER, "relay link lost"),
        "{:#?}",
        spans
            .iter()
            .filter(|s| s.name == spans::LINK_REGISTER)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_compression_gzip_is_honoured_by_either_variable() {
    let rx = OtlpReceiver::start().await.unwrap();
    let endpoint = rx.endpoint();
    let stack = start_stack(&[]);
    for var in [
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    ] {
        let zipped_before = rx.header_values("grpc-encoding").len();
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            (var, "gzip"),
        ];
        let (out, id) = exec(&stack, &["true"], &env, b"");
        assert!(
            out.status.success(),
            "{var}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
        let spans = rx
            .wait_for(WAIT, |s| {
                s.iter()
                    .any(|s| s.name == spans::TOOL_DISPATCH && s.trace_id == id)
            })
            .await;
        assert!(!spans.is_empty());
        // Every export so far was compressed, this one's too.
        let encodings = rx.header_values("grpc-encoding");
        assert!(
            encodings.len() > zipped_before && encodings.iter().all(|e| e == "gzip"),
            "{var}: {encodings:?}"
        );
    }
    // Without it, nothing is compressed.
    let zipped_before = rx.header_values("grpc-encoding").len();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let (out, id) = exec(&stack, &["true"], &env, b"");
    assert!(out.status.success());
    rx.wait_for(WAIT, |s| {
        s.iter()
            .any(|s| s.name == spans::TOOL_DISPATCH && s.trace_id == id)
    })
    .await;
    assert_eq!(rx.header_values("grpc-encoding").len(), zipped_before);
    rx.shutdown().await.unwrap();
}

#[test]
fn an_otlp_endpoint_that_cannot_be_reached_is_one_warning_naming_it_and_why() {
    let stack = start_stack(&[]);
    // A port nothing listens on, over each protocol; and an https://
    // endpoint, which this build cannot dial.
    let cases = [
        ("grpc", "http://127.0.0.1:1"),
        ("http/protobuf", "http://127.0.0.1:1/v1/traces"),
        ("grpc", "https://127.0.0.1:1"),
        ("http/protobuf", "https://127.0.0.1:1/v1/traces"),
    ];
    for (protocol, endpoint) in cases {
        let env = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ];
        // Several spans, several exports' worth: still one line.
        let (out, _) = exec(&stack, &["sh", "-c", "echo ran"], &env, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{protocol} {endpoint}: {stderr}");
        assert_eq!(out.stdout, b"ran\n");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("spans cannot be exported"))
            .collect();
        assert_eq!(warnings.len(), 1, "{protocol} {endpoint}: {stderr}");
        let line = warnings[0];
        assert!(
            line.contains(&format!("spans cannot be exported to {endpoint} (")),
            "{line}"
        );
        // The reason is given: something between the parentheses.
        let reason = line
            .split_once(&format!("{endpoint} ("))
            .and_then(|(_, rest)| rest.rsplit_once("); they are dropped"))
            .map(|(reason, _)| reason)
            .unwrap_or_default();
        assert!(!reason.trim().is_empty(), "{line}");
        // Besides it, only the trace id line.
        assert_eq!(stderr.lines().count(), 2, "{stderr}");
    }
}

/// The attributes a collector's user filters on (semantic conventions
/// 1.27.0, `docs/spans.md`): the relay's spans are SERVER spans of the
/// gRPC methods they serve, the client's and the exec-server's calls to it
/// CLIENT spans, with `rpc.*` and `server.*`; a failed call has
/// `error.type`; every resource has `service.version` and `host.name`;
/// and every other attribute is the project's own, under `rex.*`. Checked
/// in the OTLP export and in the CLI's local trace file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_the_semantic_conventions_in_the_export_and_the_trace_file() {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use telemetry::semconv;
    let rx = OtlpReceiver::start().await.unwrap();
    let mut stack = start_stack(&service_env(&rx.endpoint()));
    let port = i64::from(stack.relay_addr().unwrap().port());
    let client_env = [("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint())];
    let (out, trace_id) = exec(&stack, &["true"], &pairs(&client_env), b"");
    assert!(out.status.success());
    // An exec-server the relay does not know: the Open is refused.
    let other = binaries::keygen("exec-server", stack.dir.path(), "other.key").unwrap();
    let mut cmd = binaries::exec_command(
        &stack.relay_url,
        &other,
        &stack.client_key,
        &["--no-resume"],
        &["true"],
    )
    .unwrap();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint());
    let refused = binaries::run_with_stdin(cmd, b"").unwrap();
    assert_eq!(refused.status.code(), Some(255));
    // The same command with no collector: its spans go to the trace file.
    let (out, file_trace) = exec(&stack, &["true"], &[], b"");
    assert!(out.status.success());
    terminate(&mut stack);
    let spans = settle(&rx).await;

    let kind = |s: &RecordedSpan| s.kind;
    let rpc = |s: &RecordedSpan, service: &str, method: &str| {
        assert_eq!(s.attr_str(semconv::RPC_SYSTEM), Some("grpc"), "{s:#?}");
        assert_eq!(s.attr_str(semconv::RPC_SERVICE), Some(service), "{s:#?}");
        assert_eq!(s.attr_str(semconv::RPC_METHOD), Some(method), "{s:#?}");
    };
    let at_relay = |s: &RecordedSpan| {
        assert_eq!(
            s.attr_str(semconv::SERVER_ADDRESS),
            Some("127.0.0.1"),
            "{s:#?}"
        );
        assert_eq!(s.attr_i64(semconv::SERVER_PORT), Some(port), "{s:#?}");
    };
    let named = |service: &str, name: &str| -> Vec<&RecordedSpan> {
        spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect()
    };

    // The relay serves Tunnel/Open and Registry/Register.
    let sessions = named("relay", spans::RELAY_SESSION);
    assert!(!sessions.is_empty(), "{spans:#?}");
    for s in &sessions {
        assert_eq!(kind(s), SpanKind::Server as i32, "{s:#?}");
        rpc(s, semconv::TUNNEL_SERVICE, semconv::METHOD_OPEN);
        at_relay(s);
        assert_eq!(s.attr(semconv::ERROR_TYPE), None, "a clean session: {s:#?}");
        assert_eq!(s.attr_str("rex.session.short_id").map(str::len), Some(8));
    }
    let registrations = named("relay", spans::RELAY_REGISTRATION);
    assert_eq!(registrations.len(), 1, "{spans:#?}");
    assert_eq!(kind(registrations[0]), SpanKind::Server as i32);
    rpc(
        registrations[0],
        semconv::REGISTRY_SERVICE,
        semconv::METHOD_REGISTER,
    );
    at_relay(registrations[0]);
    // The exec-server calls Registry/Register.
    let registers = named("exec-server", spans::LINK_REGISTER);
    assert!(!registers.is_empty(), "{spans:#?}");
    for s in &registers {
        assert_eq!(kind(s), SpanKind::Client as i32, "{s:#?}");
        rpc(s, semconv::REGISTRY_SERVICE, semconv::METHOD_REGISTER);
        at_relay(s);
        assert_eq!(s.attr_str("rex.relay.url"), Some(stack.relay_url.as_str()));
    }
    // The CLI calls Tunnel/Open: once connected, once refused.
    let connects = named("core-client", spans::RELAY_CONNECT);
    let ok = connects
        .iter()
        .find(|s| s.trace_id == trace_id)
        .unwrap_or_else(|| panic!("{connects:#?}"));
    let failed = connects
        .iter()
        .find(|s| s.status_error.is_some())
        .unwrap_or_else(|| panic!("{connects:#?}"));
    for s in [ok, failed] {
        assert_eq!(kind(s), SpanKind::Client as i32, "{s:#?}");
        rpc(s, semconv::TUNNEL_SERVICE, semconv::METHOD_OPEN);
        at_relay(s);
    }
    assert_eq!(ok.attr(semconv::ERROR_TYPE), None);
    assert_eq!(failed.attr_str(semconv::ERROR_TYPE), Some("NOT_FOUND"));

    // Every resource says its version and its host.
    let version = env!("CARGO_PKG_VERSION");
    for service in ["core-client", "relay", "exec-server"] {
        let s = spans.iter().find(|s| s.service == service).unwrap();
        assert_eq!(
            s.resource.get(semconv::SERVICE_VERSION),
            Some(&AttrValue::Str(version.to_owned())),
            "{service}: {:?}",
            s.resource
        );
        assert!(
            matches!(s.resource.get(semconv::HOST_NAME), Some(AttrValue::Str(h)) if !h.is_empty()),
            "{service}: {:?}",
            s.resource
        );
    }
    // Our own attributes are all `rex.*`; the rest are the conventions'
    // (and the span-timing ones the tracing bridge adds).
    let conventions = [
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "server.address",
        "server.port",
        "error.type",
        "host.name",
        "process.executable.name",
        "process.pid",
        "process.exit.code",
    ];
    let bridge = ["code.", "thread.", "busy_ns", "idle_ns", "target"];
    for s in &spans {
        for key in s.attributes.keys() {
            assert!(
                key.starts_with("rex.")
                    || conventions.contains(&key.as_str())
                    || bridge.iter().any(|b| key.starts_with(b)),
                "{}/{}: {key} is neither rex.* nor a semantic convention",
                s.service,
                s.name
            );
        }
    }

    // The trace file has the CLI's side alike.
    let file = stack.client_key.parent().unwrap().join("traces.jsonl");
    let local = trace_check::from_trace_file(&file, &file_trace);
    let connect = one(&local, spans::RELAY_CONNECT);
    assert_eq!(connect.kind, SpanKind::Client as i32, "{connect:#?}");
    rpc(connect, semconv::TUNNEL_SERVICE, semconv::METHOD_OPEN);
    at_relay(connect);
    assert_eq!(
        connect.resource.get(semconv::SERVICE_VERSION),
        Some(&AttrValue::Str(version.to_owned()))
    );
    assert!(connect.resource.contains_key(semconv::HOST_NAME));
    rx.shutdown().await.unwrap();
}
