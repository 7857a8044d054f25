//! The trace sink (Jaeger v2's stand-in) and the Jaeger query client,
//! together: spans exported by the SDK's OTLP exporter from two services
//! (over gRPC, and over HTTP as the binaries export them) come back through the api_v3 query API whole, with their parents and
//! services; searches, ids and parameters get Jaeger's status codes and
//! bodies; the store's bound evicts the oldest traces whole; the health
//! endpoint, its probe and the `trace-sink` binary work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use integration_tests::jaeger::{JaegerQuery, QueriedSpan, QueryError};
use integration_tests::otlp::AttrValue;
use integration_tests::sink::{SinkConfig, TraceSink, health};
use integration_tests::{rfc3339, trace_check};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Value, json};
use telemetry::otlp::Protocol;
use telemetry::setup::{Export, Options};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const MS: Duration = Duration::from_millis(1);

async fn start(max_spans: usize) -> (TraceSink, JaegerQuery) {
    let sink = TraceSink::start(SinkConfig::loopback(max_spans), CancellationToken::new())
        .await
        .unwrap();
    let query = JaegerQuery::new(&sink.query_url()).unwrap();
    (sink, query)
}

/// A provider for `service` exporting over OTLP/gRPC to `endpoint`, with
/// the SDK's exporter as is.
fn provider(service: &str, endpoint: &str) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .unwrap();
    telemetry::provider::base_builder(service.to_owned())
        .with_batch_exporter(exporter)
        .build()
}

/// A provider for `service` exporting over OTLP/HTTP (`protocol`) to the
/// base URL `endpoint`, built as the binaries build theirs.
fn http_provider(service: &str, endpoint: &str, protocol: Protocol) -> SdkTracerProvider {
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.name()),
    ];
    let export = Export::decide(
        |k| {
            vars.iter()
                .find(|(v, _)| *v == k)
                .map(|(_, x)| (*x).to_owned())
        },
        None,
    )
    .unwrap();
    let options = Options::new(export);
    telemetry::setup::build_provider(service.to_owned(), &options)
}

/// Exports what `provider` holds (the batch processor blocks; it runs
/// off the runtime's workers).
async fn flush(provider: &SdkTracerProvider) {
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush())
        .await
        .unwrap()
        .unwrap();
}

/// One trace across two services, starting at `base`:
/// `svc-a/client.call` → `svc-a/client.send` → `svc-b/server.handle` →
/// `svc-b/server.work`. Returns its trace id.
async fn two_service_trace(endpoint: &str, base: SystemTime) -> String {
    let (a, b) = (provider("svc-a", endpoint), provider("svc-b", endpoint));
    let (ta, tb) = (a.tracer("scope-a"), b.tracer("scope-b"));
    let root = ta
        .span_builder("client.call")
        .with_kind(SpanKind::Client)
        .with_start_time(base)
        .start(&ta);
    let root = Context::current_with_span(root);
    let send = ta
        .span_builder("client.send")
        .with_start_time(base + 10 * MS)
        .start_with_context(&ta, &root);
    let send = root.with_span(send);
    let handle = tb
        .span_builder("server.handle")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("rpc.method", "Exec"),
            KeyValue::new("exit.code", 0_i64),
            KeyValue::new("cached", false),
        ])
        .with_start_time(base + 20 * MS)
        .start_with_context(&tb, &send);
    let handle = send.with_span(handle);
    let mut work = tb
        .span_builder("server.work")
        .with_start_time(base + 30 * MS)
        .start_with_context(&tb, &handle);
    work.end_with_timestamp(base + 60 * MS);
    handle.span().end_with_timestamp(base + 80 * MS);
    send.span().end_with_timestamp(base + 90 * MS);
    root.span().end_with_timestamp(base + 100 * MS);
    flush(&a).await;
    flush(&b).await;
    root.span().span_context().trace_id().to_string()
}

/// One trace of `spans` spans (a root and children, 1 ms each) of
/// `service`, starting at `base`. Returns its trace id.
async fn flat_trace(endpoint: &str, service: &str, base: SystemTime, spans: usize) -> String {
    flat_trace_on(&provider(service, endpoint), base, spans).await
}

/// [`flat_trace`] through `p`.
async fn flat_trace_on(p: &SdkTracerProvider, base: SystemTime, spans: usize) -> String {
    let t = p.tracer("flat");
    let root = t.span_builder("root").with_start_time(base).start(&t);
    let root = Context::current_with_span(root);
    for i in 1..spans {
        let mut child = t
            .span_builder(format!("child{i}"))
            .with_start_time(base + MS)
            .start_with_context(&t, &root);
        child.end_with_timestamp(base + 2 * MS);
    }
    root.span().end_with_timestamp(base + 3 * MS);
    flush(p).await;
    root.span().span_context().trace_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_over_otlp_http_come_back_whole_in_either_encoding() {
    let (sink, query) = start(1000).await;
    for (protocol, service) in [
        (Protocol::HttpProtobuf, "svc-proto"),
        (Protocol::HttpJson, "svc-json"),
    ] {
        let p = http_provider(service, &sink.otlp_http_endpoint(), protocol);
        let trace_id = flat_trace_on(&p, SystemTime::now(), 3).await;
        let spans = query.trace(&trace_id).await.unwrap().unwrap();
        let expected: Vec<String> = ["child1", "child2", "root"]
            .iter()
            .map(|n| format!("{service}/{n}"))
            .collect();
        assert_eq!(names(&spans), expected, "{protocol:?}");
        let roots: Vec<&QueriedSpan> = spans
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .collect();
        assert_eq!(roots.len(), 1, "{protocol:?}");
        assert!(
            spans
                .iter()
                .filter(|s| s.name != "root")
                .all(|s| s.parent_span_id.as_deref() == Some(roots[0].span_id.as_str())),
            "{protocol:?}"
        );
        p.shutdown().unwrap();
    }
    assert_eq!((sink.trace_count(), sink.span_count()), (2, 6));
    sink.shutdown().await.unwrap();
}

/// `find_traces(service, window)`, which must succeed.
async fn search(
    query: &JaegerQuery,
    service: &str,
    window: (SystemTime, SystemTime),
) -> Vec<QueriedSpan> {
    query
        .find_traces(service, window.0, window.1)
        .await
        .unwrap()
}

fn names(spans: &[QueriedSpan]) -> Vec<String> {
    let mut names: Vec<String> = spans
        .iter()
        .map(|s| format!("{}/{}", s.service, s.name))
        .collect();
    names.sort();
    names
}

/// The status and the JSON body of a failed request.
fn status_and_body(err: QueryError) -> (u16, Value) {
    match err {
        QueryError::Status { status, body, .. } => (status, serde_json::from_str(&body).unwrap()),
        other => panic!("expected an HTTP status error, got {other}"),
    }
}

/// `GET path` must fail with `status` and Jaeger's error body, whose
/// message contains `message`.
async fn assert_refused(query: &JaegerQuery, path: &str, status: u16, message: &str) {
    let err = query.get_json(path).await.unwrap_err();
    let (got, body) = status_and_body(err);
    assert_eq!(got, status, "GET {path}: {body}");
    assert_eq!(
        body["error"]["httpCode"],
        json!(status),
        "GET {path}: {body}"
    );
    let text = body["error"]["message"].as_str().unwrap();
    assert!(
        text.contains(message),
        "GET {path}: {text:?} lacks {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_of_two_services_comes_back_whole_by_service_window_and_id() {
    let (sink, query) = start(1000).await;
    assert!(query.services().await.unwrap().is_empty());
    assert_eq!(
        query.get_json("/api/v3/services").await.unwrap(),
        json!({ "services": [] })
    );

    let base = SystemTime::now();
    let trace_id = two_service_trace(&sink.otlp_endpoint(), base).await;
    assert_eq!(query.services().await.unwrap(), ["svc-a", "svc-b"]);

    let all = [
        "svc-a/client.call",
        "svc-a/client.send",
        "svc-b/server.handle",
        "svc-b/server.work",
    ];
    let window = (base - 5 * MS, base + 50 * MS);
    for service in ["svc-a", "svc-b"] {
        let spans = search(&query, service, window).await;
        assert_eq!(names(&spans), all, "searching {service}");
        assert!(spans.iter().all(|s| s.trace_id == trace_id));
    }
    // svc-b's first span starts 20 ms in: a window on it alone finds the
    // trace through svc-b but not through svc-a.
    let late = (base + 15 * MS, base + 25 * MS);
    assert_eq!(search(&query, "svc-b", late).await.len(), 4);
    assert!(search(&query, "svc-a", late).await.is_empty());
    let after = base + Duration::from_secs(1);
    assert!(
        search(&query, "svc-a", (after, after + Duration::from_secs(1)))
            .await
            .is_empty()
    );
    assert!(search(&query, "nobody", window).await.is_empty());

    let spans = query.trace(&trace_id).await.unwrap().unwrap();
    assert_eq!(names(&spans), all);
    // The queried spans go through the same checks as recorded ones.
    trace_check::assert_parent(&spans, "client.send", "client.call");
    trace_check::assert_parent(&spans, "server.handle", "client.send");
    trace_check::assert_parent(&spans, "server.work", "server.handle");
    trace_check::assert_contained(&spans, 0);
    assert_eq!(trace_check::roots(&spans).len(), 1);
    let root = trace_check::one(&spans, "client.call");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(root.scope, "scope-a");
    let since = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    assert_eq!(root.start_unix_nanos, since(base));
    assert_eq!(root.end_unix_nanos, since(base + 100 * MS));
    let handle = trace_check::one(&spans, "server.handle");
    assert_eq!(handle.service, "svc-b");
    assert_eq!(handle.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(handle.attr_str("rpc.method"), Some("Exec"));
    assert_eq!(handle.attr_i64("exit.code"), Some(0));
    assert_eq!(handle.attr("cached"), Some(&AttrValue::Bool(false)));

    // Ids are read as Jaeger reads them: either case, leading zeros optional.
    let upper = query
        .trace(&trace_id.to_uppercase())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(names(&upper), all);
    assert_eq!(query.trace("1").await.unwrap(), None);
    assert_eq!(query.trace(&"f".repeat(32)).await.unwrap(), None);
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_or_unparsable_parameters_are_400_and_nothing_found_is_404() {
    let (sink, query) = start(1000).await;
    let now = SystemTime::now();
    let t = rfc3339::format(now);
    let later = rfc3339::format(now + Duration::from_secs(60));
    let window = format!("query.start_time_min={t}&query.start_time_max={later}");

    for path in [
        "/api/v3/traces".to_owned(),
        "/api/v3/traces?query.service_name=svc".to_owned(),
        format!("/api/v3/traces?query.service_name=svc&query.start_time_min={t}"),
        format!("/api/v3/traces?query.start_time_max={t}&query.start_time_min="),
    ] {
        assert_refused(&query, &path, 400, "are required").await;
    }
    let bad = [
        (
            "query.start_time_min=NaN&query.start_time_max=x".to_owned(),
            "query.start_time_min",
        ),
        (
            format!("query.start_time_min={t}&query.start_time_max=2024-13-01T00:00:00Z"),
            "query.start_time_max",
        ),
        (format!("{window}&query.num_traces=ten"), "query.num_traces"),
        (format!("{window}&query.num_traces=0"), "query.num_traces"),
        (
            format!("{window}&query.duration_min=1x"),
            "query.duration_min",
        ),
        (
            format!("{window}&query.duration_max=5"),
            "query.duration_max",
        ),
        (
            format!("{window}&query.raw_traces=maybe"),
            "query.raw_traces",
        ),
    ];
    for (params, name) in bad {
        let path = format!("/api/v3/traces?{params}");
        assert_refused(&query, &path, 400, &format!("malformed parameter {name}")).await;
    }
    let reversed = format!("/api/v3/traces?query.start_time_min={later}&query.start_time_max={t}");
    assert_refused(&query, &reversed, 400, "must be before").await;

    // Well-formed searches that find nothing: Jaeger's 404, and the
    // client's empty answer.
    let found_nothing = [
        format!("/api/v3/traces?{window}"),
        format!(
            "/api/v3/traces?{window}&query.service_name=svc&query.num_traces=5&query.duration_min=1.5ms&query.raw_traces=true"
        ),
        format!(
            "/api/v3/traces?query.serviceName=svc&query.startTimeMin={t}&query.startTimeMax={later}&query.searchDepth=3"
        ),
    ];
    for path in found_nothing {
        let err = query.get_json(&path).await.unwrap_err();
        let (status, body) = status_and_body(err);
        assert_eq!(status, 404, "GET {path}");
        assert_eq!(
            body,
            json!({"error": {"httpCode": 404, "message": "No traces found"}})
        );
    }
    let empty = search(&query, "svc", (now, now + Duration::from_secs(60))).await;
    assert!(empty.is_empty());

    // Trace ids: malformed is 400, unknown is 404 (`None`).
    for bad_id in ["xyz", "0x12", &"a".repeat(33)] {
        let err = query.trace(bad_id).await.unwrap_err();
        let (status, body) = status_and_body(err);
        assert_eq!(status, 400, "trace id {bad_id:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("malformed parameter trace_id"),
            "{message}"
        );
    }
    assert_eq!(query.trace("abc").await.unwrap(), None);
    let id = "0123456789abcdef0123456789abcdef";
    assert_refused(
        &query,
        &format!("/api/v3/traces/{id}?start_time=yesterday"),
        400,
        "start_time",
    )
    .await;
    assert_refused(
        &query,
        &format!("/api/v3/traces/{id}?endTime={t}&raw_traces=2"),
        400,
        "raw_traces",
    )
    .await;
    assert_refused(
        &query,
        &format!("/api/v3/traces/{id}?start_time={t}"),
        404,
        "No traces found",
    )
    .await;
    sink.shutdown().await.unwrap();
}

/// The trace ids in the answer to `GET path`, in order, each once.
async fn found(query: &JaegerQuery, path: &str) -> Vec<String> {
    let body = query.get_json(path).await.unwrap();
    let mut ids: Vec<String> = body["result"]["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .map(|s| s["traceId"].as_str().unwrap().to_owned())
        .collect();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_filter_by_operation_duration_and_depth() {
    let (sink, query) = start(1000).await;
    let base = SystemTime::now();
    let older = flat_trace(&sink.otlp_endpoint(), "svc", base, 2).await;
    let newer = flat_trace(&sink.otlp_endpoint(), "svc", base + 10 * MS, 2).await;
    let window = format!(
        "query.service_name=svc&query.start_time_min={}&query.start_time_max={}",
        rfc3339::format(base - MS),
        rfc3339::format(base + Duration::from_secs(1))
    );
    let search = |extra: &str| format!("/api/v3/traces?{window}{extra}");
    let (both, one) = ([newer.as_str(), older.as_str()], [newer.as_str()]);

    assert_eq!(
        found(&query, &search("")).await,
        both,
        "the most recent first"
    );
    assert_eq!(found(&query, &search("&query.num_traces=1")).await, one);
    let camel = found(&query, &search("&query.searchDepth=1")).await;
    assert_eq!(camel, one, "the camelCase name too");
    let by_op = found(&query, &search("&query.operation_name=child1")).await;
    assert_eq!(by_op, both);
    // Roots last 3 ms, children 1 ms; one span must meet every condition.
    let long = found(&query, &search("&query.duration_min=2ms")).await;
    assert_eq!(long, both);
    let short_child = "&query.duration_max=1ms&query.operation_name=child1";
    assert_eq!(found(&query, &search(short_child)).await, both);
    for nothing in [
        "&query.operation_name=nothing",
        "&query.duration_min=3500us",
        "&query.operation_name=child1&query.duration_min=2ms",
    ] {
        assert_refused(&query, &search(nothing), 404, "No traces found").await;
    }
    // A window on the newer trace's start only.
    let newer_only = format!(
        "/api/v3/traces?query.start_time_min={}&query.start_time_max={}",
        rfc3339::format(base + 5 * MS),
        rfc3339::format(base + 20 * MS)
    );
    assert_eq!(found(&query, &newer_only).await, one);

    // The body is OTLP JSON as Jaeger writes it.
    let body = query
        .get_json(&search("&query.num_traces=1"))
        .await
        .unwrap();
    let rs = &body["result"]["resourceSpans"][0];
    let service_attr = json!({"key": "service.name", "value": {"stringValue": "svc"}});
    let resource_attrs = rs["resource"]["attributes"].as_array().unwrap();
    assert!(resource_attrs.contains(&service_attr), "{rs}");
    let span = &rs["scopeSpans"][0]["spans"][0];
    assert!(span["startTimeUnixNano"].is_string(), "{span}");
    assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
    assert!(span["status"].is_object(), "{span}");
    sink.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_bound_evicts_the_oldest_traces_whole() {
    let (sink, query) = start(7).await;
    let endpoint = sink.otlp_endpoint();
    let base = SystemTime::now();
    let first = flat_trace(&endpoint, "svc-old", base, 3).await;
    let second = flat_trace(&endpoint, "svc", base + MS, 3).await;
    assert_eq!((sink.trace_count(), sink.span_count()), (2, 6));
    assert_eq!(query.services().await.unwrap(), ["svc", "svc-old"]);

    let third = flat_trace(&endpoint, "svc", base + 2 * MS, 3).await;
    assert_eq!(
        (sink.trace_count(), sink.span_count()),
        (2, 6),
        "the first trace went, whole"
    );
    assert_eq!(query.trace(&first).await.unwrap(), None);
    for id in [&second, &third] {
        assert_eq!(query.trace(id).await.unwrap().unwrap().len(), 3);
    }
    assert_eq!(
        query.services().await.unwrap(),
        ["svc"],
        "its service went with it"
    );
    let window = (base - MS, base + Duration::from_secs(1));
    assert!(search(&query, "svc-old", window).await.is_empty());
    assert_eq!(search(&query, "svc", window).await.len(), 6);

    // A trace larger than the bound cannot be kept at all.
    let huge = flat_trace(&endpoint, "svc", base + 3 * MS, 8).await;
    assert_eq!(query.trace(&huge).await.unwrap(), None);
    assert!(sink.span_count() <= 7);
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_health_endpoint_answers_and_the_probe_tells_up_from_down() {
    let (sink, _query) = start(10).await;
    let timeout = Duration::from_secs(5);
    health::probe(&sink.health_url(), timeout).await.unwrap();

    // The query port has no /status: Jaeger serves health on its own port.
    let err = health::probe(&format!("{}/status", sink.query_url()), timeout)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let err = health::probe("not a url", timeout).await.unwrap_err();
    assert!(matches!(err, QueryError::Url { .. }), "{err}");
    assert!(JaegerQuery::new("ftp://example").is_err());

    let health_url = sink.health_url();
    sink.shutdown().await.unwrap();
    let err = health::probe(&health_url, timeout).await.unwrap_err();
    assert!(matches!(err, QueryError::Unreachable { .. }), "{err}");
}

/// The address after `label` in the binary's start-up line.
fn addr_after(line: &str, label: &str) -> String {
    let rest = &line[line.find(label).unwrap() + label.len()..];
    rest.split([',', ';']).next().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_reports_health_and_stops_on_sigterm() {
    let exe = env!("CARGO_BIN_EXE_trace-sink");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--otlp-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--health-listen", "127.0.0.1:0", "--max-spans", "50"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("stderr closed");
            if line.starts_with("trace-sink: OTLP/gRPC on ") {
                return line;
            }
        }
    })
    .await
    .expect("no start-up line");
    let otlp = format!("http://{}", addr_after(&started, "OTLP/gRPC on "));
    let otlp_http = format!("http://{}", addr_after(&started, "OTLP/HTTP on "));
    let http = format!("http://{}", addr_after(&started, "query API on "));
    let health = format!("http://{}/status", addr_after(&started, "health on "));

    let probe = |url: &str| {
        std::process::Command::new(exe)
            .args(["health", "--url", url])
            .output()
            .unwrap()
    };
    let up = probe(&health);
    assert!(up.status.success(), "{up:?}");
    assert!(up.stderr.is_empty());

    let trace_id = flat_trace(&otlp, "bin-svc", SystemTime::now(), 2).await;
    let query = JaegerQuery::new(&http).unwrap();
    assert_eq!(query.trace(&trace_id).await.unwrap().unwrap().len(), 2);
    let p = http_provider("bin-svc", &otlp_http, Protocol::HttpProtobuf);
    let trace_id = flat_trace_on(&p, SystemTime::now(), 3).await;
    assert_eq!(query.trace(&trace_id).await.unwrap().unwrap().len(), 3);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let down = probe(&health);
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8(down.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("trace-sink: not healthy: "), "{stderr}");
}

#[tokio::test]
async fn the_binary_reports_a_port_it_cannot_bind_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trace-sink"))
        .args([
            "--otlp-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .args(["--http-listen", &port])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "trace-sink: binding the trace sink's query listener to {port}: "
        )),
        "{stderr}"
    );
}
