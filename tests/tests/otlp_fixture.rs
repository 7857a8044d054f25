//! Tests of the OTLP receiver fixture and the trace checks, over a real
//! OTLP/gRPC client and plain OTLP/HTTP requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::otlp::{AttrValue, OtlpReceiver, RecordedSpan};
use integration_tests::trace_check;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

const TRACE_A: [u8; 16] = [0xa1; 16];
const TRACE_B: [u8; 16] = [0xb2; 16];

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_owned()))
}

/// A span of `trace` with id `[id; 8]`, parent `[parent; 8]` (if any),
/// lasting `[start, end]`.
fn span(name: &str, trace: [u8; 16], id: u8, parent: Option<u8>, start: u64, end: u64) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.to_owned(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Span::default()
    }
}

/// A request with one resource per `(service, spans)`, under scope "test-scope".
fn request(resources: Vec<(&str, Vec<Span>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![str_kv("service.name", service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "test-scope".to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            })
            .collect(),
    }
}

async fn export(
    receiver: &OtlpReceiver,
    req: ExportTraceServiceRequest,
) -> Result<(), tonic::Status> {
    let mut client = TraceServiceClient::connect(receiver.endpoint())
        .await
        .unwrap();
    client.export(req).await.map(|_| ())
}

#[tokio::test]
async fn records_every_field_of_an_exported_span() {
    let receiver = OtlpReceiver::start().await.unwrap();
    assert!(receiver.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(
        receiver.endpoint(),
        format!("http://127.0.0.1:{}", receiver.addr().port())
    );

    let root = Span {
        kind: SpanKind::Server as i32,
        ..span("root", TRACE_A, 1, None, 1_000, 9_000)
    };
    let child = Span {
        kind: SpanKind::Client as i32,
        attributes: vec![
            str_kv("rpc.method", "Exec"),
            kv("exit.code", Value::IntValue(-3)),
            kv("cached", Value::BoolValue(true)),
            kv("ratio", Value::DoubleValue(0.25)),
        ],
        links: vec![Link {
            trace_id: TRACE_B.to_vec(),
            span_id: vec![0x0f; 8],
            ..Link::default()
        }],
        status: Some(Status {
            message: "boom".to_owned(),
            code: StatusCode::Error as i32,
        }),
        ..span("child", TRACE_A, 2, Some(1), 2_000, 5_500)
    };
    export(&receiver, request(vec![("svc-a", vec![root, child])]))
        .await
        .unwrap();

    let spans = receiver.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(receiver.export_requests(), 1);
    assert_eq!(receiver.rejected_requests(), 0);

    let root = &spans[0];
    assert_eq!(root.service, "svc-a");
    assert_eq!(root.scope, "test-scope");
    assert_eq!(root.name, "root");
    assert_eq!(root.trace_id, "a1".repeat(16));
    assert_eq!(root.span_id, "0101010101010101");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.status_error, None);
    assert!(root.attributes.is_empty());
    assert!(root.links.is_empty());

    let child = &spans[1];
    assert_eq!(child.name, "child");
    assert_eq!(child.span_id, "0202020202020202");
    assert_eq!(child.parent_span_id.as_deref(), Some("0101010101010101"));
    assert_eq!(child.kind, SpanKind::Client as i32);
    assert_eq!(
        (child.start_unix_nanos, child.end_unix_nanos),
        (2_000, 5_500)
    );
    assert_eq!(child.duration_nanos(), 3_500);
    assert_eq!(child.attr_str("rpc.method"), Some("Exec"));
    assert_eq!(child.attr_i64("exit.code"), Some(-3));
    assert_eq!(child.attr_bool("cached"), Some(true));
    assert_eq!(child.attr_f64("ratio"), Some(0.25));
    // Typed getters do not convert between kinds.
    assert_eq!(child.attr_str("exit.code"), None);
    assert_eq!(child.attr_i64("missing"), None);
    assert_eq!(child.attr("cached"), Some(&AttrValue::Bool(true)));
    assert_eq!(
        child.links,
        vec![("b2".repeat(16), "0f0f0f0f0f0f0f0f".to_owned())]
    );
    assert_eq!(child.status_error.as_deref(), Some("boom"));
}

#[tokio::test]
async fn groups_spans_by_trace_across_requests_and_resources() {
    let receiver = OtlpReceiver::start().await.unwrap();
    export(
        &receiver,
        request(vec![
            ("svc-a", vec![span("a-root", TRACE_A, 1, None, 0, 10)]),
            ("svc-b", vec![span("b-root", TRACE_B, 7, None, 0, 10)]),
        ]),
    )
    .await
    .unwrap();
    export(
        &receiver,
        request(vec![(
            "svc-b",
            vec![span("a-child", TRACE_A, 2, Some(1), 1, 9)],
        )]),
    )
    .await
    .unwrap();
    assert_eq!(receiver.export_requests(), 2);

    let traces = receiver.traces();
    let a = "a1".repeat(16);
    let b = "b2".repeat(16);
    assert_eq!(traces.keys().collect::<Vec<_>>(), vec![&a, &b]);
    let a_spans: Vec<(&str, &str)> = traces[&a]
        .iter()
        .map(|s| (s.service.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(a_spans, vec![("svc-a", "a-root"), ("svc-b", "a-child")]);
    assert_eq!(traces[&b].len(), 1);
    assert_eq!(traces[&b][0].service, "svc-b");
    assert_eq!(receiver.trace(&a), traces[&a]);
    assert!(receiver.trace(&"00".repeat(16)).is_empty());

    receiver.clear();
    assert!(receiver.spans().is_empty());
    assert!(receiver.traces().is_empty());
    assert_eq!(receiver.export_requests(), 2, "clear keeps the counters");
}

#[tokio::test]
async fn wait_for_returns_once_a_later_export_arrives() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let delay = Duration::from_millis(200);
    let sender = tokio::spawn(async move {
        let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
        client
            .export(request(vec![(
                "svc-a",
                vec![span("early", TRACE_A, 1, None, 0, 1)],
            )]))
            .await
            .unwrap();
        tokio::time::sleep(delay).await;
        client
            .export(request(vec![(
                "svc-a",
                vec![span("late", TRACE_A, 2, Some(1), 0, 1)],
            )]))
            .await
            .unwrap();
    });

    let started = Instant::now();
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.name == "late")
        })
        .await;
    assert!(
        started.elapsed() >= delay,
        "returned before the late export"
    );
    // Woken by the export, not by its timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not woken by the export"
    );
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["early", "late"]);
    sender.await.unwrap();
}

#[tokio::test]
async fn wait_for_panics_on_timeout_listing_what_it_saw() {
    let receiver = OtlpReceiver::start().await.unwrap();
    export(
        &receiver,
        request(vec![("svc-a", vec![span("only", TRACE_A, 1, None, 0, 1)])]),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        receiver
            .wait_for(Duration::from_millis(200), |spans| spans.len() >= 2)
            .await
    });
    let panic = waiting.await.unwrap_err().into_panic();
    assert!(started.elapsed() >= Duration::from_millis(200));
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("svc-a/only"), "{message}");
    assert!(message.contains("1 span(s)"), "{message}");
}

#[tokio::test]
async fn failing_receiver_answers_unavailable_and_records_nothing() {
    let receiver = OtlpReceiver::start().await.unwrap();
    receiver.set_failing(true);
    let err = export(
        &receiver,
        request(vec![("svc-a", vec![span("lost", TRACE_A, 1, None, 0, 1)])]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(receiver.spans().is_empty());
    assert_eq!(receiver.export_requests(), 1);
    assert_eq!(receiver.rejected_requests(), 1);

    receiver.set_failing(false);
    export(
        &receiver,
        request(vec![("svc-a", vec![span("kept", TRACE_A, 2, None, 0, 1)])]),
    )
    .await
    .unwrap();
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["kept"]);
    assert_eq!(receiver.export_requests(), 2);
    assert_eq!(receiver.rejected_requests(), 1);
}

/// `POST` to the receiver's traces endpoint: the status, the content type
/// and the body of the answer.
async fn post(
    receiver: &OtlpReceiver,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!(
        "{}{}",
        receiver.http_endpoint(),
        integration_tests::otlp::http::TRACES_PATH
    );
    let mut request = hyper::Request::post(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(bytes::Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let media = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, media, body.to_vec())
}

#[tokio::test]
async fn http_exports_are_answered_as_the_otlp_specification_says() {
    use prost::Message as _;
    let receiver = OtlpReceiver::start().await.unwrap();
    let proto = [
        ("content-type", "application/x-protobuf"),
        ("x-tenant", "a"),
    ];
    let one =
        |name: &str, id: u8| request(vec![("svc-h", vec![span(name, TRACE_A, id, None, 0, 1)])]);

    let (status, media, body) = post(&receiver, &proto, one("by-proto", 1).encode_to_vec()).await;
    assert_eq!((status, media.as_str()), (200, "application/x-protobuf"));
    ExportTraceServiceResponse::decode(body.as_slice()).unwrap();

    let json = [("content-type", "application/json; charset=utf-8")];
    let (status, media, body) = post(
        &receiver,
        &json,
        serde_json::to_vec(&one("by-json", 2)).unwrap(),
    )
    .await;
    assert_eq!((status, media.as_str()), (200, "application/json"));
    serde_json::from_slice::<ExportTraceServiceResponse>(&body).unwrap();

    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["by-proto", "by-json"]);
    assert_eq!(receiver.header_values("X-Tenant"), ["a"]);

    // Refused, and nothing recorded: another media type, a compressed body,
    // a body that does not decode.
    let text = [("content-type", "text/plain")];
    assert_eq!(post(&receiver, &text, b"spans".to_vec()).await.0, 415);
    let gzip = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "gzip"),
    ];
    assert_eq!(
        post(&receiver, &gzip, one("zipped", 3).encode_to_vec())
            .await
            .0,
        415
    );
    assert_eq!(post(&receiver, &proto, vec![0xff; 7]).await.0, 400);
    assert_eq!(
        post(&receiver, &json, b"{\"resourceSpans\": 7}".to_vec())
            .await
            .0,
        400
    );
    // A failing receiver answers 503, which exporters retry.
    receiver.set_failing(true);
    assert_eq!(
        post(&receiver, &proto, one("lost", 4).encode_to_vec())
            .await
            .0,
        503
    );
    assert_eq!(receiver.spans().len(), 2);
    assert_eq!(receiver.rejected_requests(), 1);
    receiver.shutdown().await.unwrap();
}

#[tokio::test]
async fn start_on_uses_the_given_address() {
    // Find a free port, release it, then ask for it explicitly.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let receiver = OtlpReceiver::start_on(addr).await.unwrap();
    assert_eq!(receiver.addr(), addr);
    assert_eq!(receiver.endpoint(), format!("http://{addr}"));
    export(
        &receiver,
        request(vec![("svc-a", vec![span("s", TRACE_A, 1, None, 0, 1)])]),
    )
    .await
    .unwrap();
    assert_eq!(receiver.spans().len(), 1);
}

async fn refuses_connections_soon(addr: std::net::SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let addr = receiver.addr();
    let mut client = TraceServiceClient::connect(endpoint.clone()).await.unwrap();
    client
        .export(request(vec![(
            "svc-a",
            vec![span("s", TRACE_A, 1, None, 0, 1)],
        )]))
        .await
        .unwrap();
    receiver.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(
        client
            .export(request(vec![(
                "svc-a",
                vec![span("t", TRACE_A, 2, None, 0, 1)]
            )]))
            .await
            .is_err()
    );

    let receiver = OtlpReceiver::start().await.unwrap();
    let addr = receiver.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(receiver);
    assert!(
        refuses_connections_soon(addr).await,
        "still listening after drop"
    );
}

// --- trace_check, over hand-made spans ------------------------------------

/// A recorded span of trace "t" with id `id`, parent `parent`, lasting
/// `[start, end]`.
fn rec(name: &str, id: &str, parent: Option<&str>, start: u64, end: u64) -> RecordedSpan {
    RecordedSpan {
        service: format!("svc-{name}"),
        resource: BTreeMap::new(),
        scope: "s".to_owned(),
        name: name.to_owned(),
        trace_id: "t".to_owned(),
        span_id: id.to_owned(),
        parent_span_id: parent.map(str::to_owned),
        kind: 0,
        start_unix_nanos: start,
        end_unix_nanos: end,
        attributes: BTreeMap::new(),
        links: Vec::new(),
        status_error: None,
        events: Vec::new(),
    }
}

fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(f).expect_err("expected a panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap()
}

#[test]
fn navigation_helpers() {
    let spans = vec![
        rec("root", "r", None, 0, 100),
        rec("stage", "a", Some("r"), 0, 50),
        rec("stage", "b", Some("r"), 50, 100),
        rec("leaf", "c", Some("a"), 10, 20),
        rec("orphan", "o", Some("gone"), 0, 1),
    ];
    assert_eq!(trace_check::by_name(&spans, "stage").len(), 2);
    assert!(trace_check::by_name(&spans, "nope").is_empty());
    let leaf = trace_check::one(&spans, "leaf");
    assert_eq!(leaf.span_id, "c");
    assert_eq!(trace_check::parent_of(&spans, leaf).unwrap().span_id, "a");
    let root = trace_check::one(&spans, "root");
    assert!(trace_check::parent_of(&spans, root).is_none());
    let roots: Vec<&str> = trace_check::roots(&spans)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(roots, vec!["root", "orphan"]);
    let mut below: Vec<&str> = trace_check::descendants(&spans, root)
        .iter()
        .map(|s| s.span_id.as_str())
        .collect();
    below.sort_unstable();
    assert_eq!(below, vec!["a", "b", "c"]);
    assert_eq!(trace_check::children(&spans, root).len(), 2);

    let msg = panic_message(|| {
        trace_check::one(&spans, "stage");
    });
    assert!(
        msg.contains("exactly one span named \"stage\", found 2"),
        "{msg}"
    );
    let msg = panic_message(|| {
        trace_check::one(&spans, "nope");
    });
    assert!(msg.contains("found 0"), "{msg}");
}

#[test]
fn assert_parent_accepts_the_right_parent_and_names_the_wrong_one() {
    let spans = vec![
        rec("root", "r", None, 0, 100),
        rec("stage", "a", Some("r"), 0, 50),
        rec("leaf", "c", Some("a"), 10, 20),
        rec("orphan", "o", Some("gone"), 0, 1),
    ];
    trace_check::assert_parent(&spans, "stage", "root");
    trace_check::assert_parent(&spans, "leaf", "stage");

    let msg = panic_message(|| trace_check::assert_parent(&spans, "leaf", "root"));
    assert!(msg.contains("\"leaf\""), "{msg}");
    assert!(msg.contains("should have parent \"root\""), "{msg}");
    assert!(
        msg.contains("its parent is \"stage\" (service \"svc-stage\")"),
        "{msg}"
    );

    let msg = panic_message(|| trace_check::assert_parent(&spans, "root", "stage"));
    assert!(msg.contains("root span"), "{msg}");
    let msg = panic_message(|| trace_check::assert_parent(&spans, "orphan", "root"));
    assert!(
        msg.contains("span gone, which is not among the spans"),
        "{msg}"
    );
    let msg = panic_message(|| trace_check::assert_parent(&spans, "nope", "root"));
    assert!(msg.contains("no span named \"nope\""), "{msg}");
}

#[test]
#[should_panic(expected = "\"stage\" (service \"svc-stage\") ends after its parent \"root\"")]
fn assert_contained_panics_for_a_child_ending_too_late() {
    let spans = vec![
        rec("root", "r", None, 1_000, 2_000),
        rec("stage", "a", Some("r"), 1_000, 2_500),
    ];
    trace_check::assert_contained(&spans, 100);
}

#[test]
fn assert_contained_allows_nesting_and_the_tolerance_and_lists_violations() {
    let nested = vec![
        rec("root", "r", None, 1_000, 10_000),
        rec("stage", "a", Some("r"), 1_000, 6_000),
        rec("leaf", "c", Some("a"), 2_000, 5_000),
        // Its parent is not here: not checked.
        rec("orphan", "o", Some("gone"), 0, 99_999),
    ];
    trace_check::assert_contained(&nested, 0);

    let slightly_out = vec![
        rec("root", "r", None, 1_000, 10_000),
        rec("stage", "a", Some("r"), 900, 10_100),
    ];
    trace_check::assert_contained(&slightly_out, 100);
    panic_message(|| trace_check::assert_contained(&slightly_out, 99));

    let out = vec![
        rec("root", "r", None, 10_000, 20_000),
        rec("early", "a", Some("r"), 7_000, 15_000),
        rec("late", "b", Some("r"), 15_000, 25_000),
        rec("fine", "c", Some("r"), 10_000, 20_000),
    ];
    let msg = panic_message(|| trace_check::assert_contained(&out, 1_000));
    assert!(
        msg.contains(
            "\"early\" (service \"svc-early\") starts before its parent \"root\" (service \"svc-root\") by 3.000 µs"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("\"late\" (service \"svc-late\") ends after its parent \"root\""),
        "{msg}"
    );
    assert!(msg.contains("by 5.000 µs"), "{msg}");
    assert!(!msg.contains("fine"), "{msg}");
}

#[test]
fn coverage_measures_the_union_of_descendant_intervals() {
    let full = vec![
        rec("root", "r", None, 1_000, 2_000),
        rec("a", "a", Some("r"), 1_000, 1_400),
        rec("b", "b", Some("r"), 1_400, 2_000),
    ];
    assert_eq!(trace_check::coverage(&full, &full[0]), 1.0);

    let half = vec![
        rec("root", "r", None, 1_000, 2_000),
        rec("a", "a", Some("r"), 1_250, 1_750),
    ];
    assert_eq!(trace_check::coverage(&half, &half[0]), 0.5);

    // [0, 60] and [40, 100] overlap: their union is 100 of 200, not 120.
    let overlapping = vec![
        rec("root", "r", None, 0, 200),
        rec("a", "a", Some("r"), 0, 60),
        rec("b", "b", Some("r"), 40, 100),
        // A grandchild inside its parent adds nothing.
        rec("c", "c", Some("a"), 10, 50),
    ];
    assert_eq!(trace_check::coverage(&overlapping, &overlapping[0]), 0.5);

    // Grandchildren count; intervals are clipped to the root's; other
    // traces' spans and unrelated spans do not count.
    let mut other_trace = rec("x", "x", Some("r"), 0, 1_000);
    other_trace.trace_id = "other".to_owned();
    let deep = vec![
        rec("root", "r", None, 100, 200),
        rec("a", "a", Some("r"), 100, 110),
        rec("g", "g", Some("a"), 150, 175),
        rec("sticks-out", "s", Some("r"), 190, 500),
        rec("unrelated", "u", None, 110, 150),
        other_trace,
    ];
    assert_eq!(trace_check::coverage(&deep, &deep[0]), 0.45);

    let bare = vec![rec("root", "r", None, 0, 100)];
    assert_eq!(trace_check::coverage(&bare, &bare[0]), 0.0);
}

#[tokio::test]
async fn checks_work_on_spans_received_over_otlp() {
    let receiver = OtlpReceiver::start().await.unwrap();
    export(
        &receiver,
        request(vec![
            ("client", vec![span("call", TRACE_A, 1, None, 1_000, 2_000)]),
            (
                "server",
                vec![
                    span("handle", TRACE_A, 2, Some(1), 1_100, 1_900),
                    span("step", TRACE_A, 3, Some(2), 1_100, 1_500),
                ],
            ),
        ]),
    )
    .await
    .unwrap();
    let spans = receiver
        .wait_for(Duration::from_secs(5), |s| s.len() == 3)
        .await;
    let trace = receiver.trace(&spans[0].trace_id);
    trace_check::assert_parent(&trace, "handle", "call");
    trace_check::assert_parent(&trace, "step", "handle");
    trace_check::assert_contained(&trace, 0);
    let root = trace_check::one(&trace, "call");
    assert_eq!(trace_check::roots(&trace), vec![root]);
    assert_eq!(root.service, "client");
    assert_eq!(trace_check::coverage(&trace, root), 0.8);
}

#[tokio::test]
async fn counting_mode_counts_spans_per_trace_and_records_nothing() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let rx = OtlpReceiver::start_counting().await.unwrap();
    let mut client = TraceServiceClient::connect(rx.endpoint()).await.unwrap();
    let span = |trace: u8, id: u8| Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: "s".into(),
        ..Default::default()
    };
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let attr = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    // Every field around the trace ids is present, and skipped.
    let full = |trace: u8, id: u8| Span {
        parent_span_id: vec![9; 8],
        attributes: vec![attr("a", "b")],
        start_time_unix_nano: 5,
        ..span(trace, id)
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, 1), span(1, 2), span(2, 3)],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attr("service.name", "other")],
                    ..Default::default()
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "x".into(),
                            ..Default::default()
                        }),
                        spans: vec![full(2, 4)],
                        schema_url: "s".into(),
                    },
                    ScopeSpans {
                        spans: vec![full(3, 5), full(1, 6)],
                        ..Default::default()
                    },
                ],
                schema_url: "r".into(),
            },
        ],
    };
    client.export(request).await.unwrap();
    let counts = rx.span_counts();
    assert_eq!(counts.len(), 3);
    assert_eq!(counts[&vec![1u8; 16]], 3);
    assert_eq!(counts[&vec![2u8; 16]], 2);
    assert_eq!(counts[&vec![3u8; 16]], 1);
    assert_eq!(rx.export_requests(), 1);
    assert!(rx.spans().is_empty(), "counting mode keeps no spans");
    rx.clear();
    assert!(rx.span_counts().is_empty());
}

#[tokio::test]
async fn deferred_mode_records_what_recording_mode_records_once_asked() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let request = |trace: u8, ids: &[u8]| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("svc".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: ids
                    .iter()
                    .map(|&id| Span {
                        trace_id: vec![trace; 16],
                        span_id: vec![id; 8],
                        name: format!("s{id}"),
                        start_time_unix_nano: 10,
                        end_time_unix_nano: 20 + u64::from(id),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let recorded = OtlpReceiver::start().await.unwrap();
    let deferred = OtlpReceiver::start_deferred().await.unwrap();
    for rx in [&recorded, &deferred] {
        let mut client = TraceServiceClient::connect(rx.endpoint()).await.unwrap();
        client.export(request(1, &[1, 2])).await.unwrap();
        // Asked for between exports: what came first stays first.
        assert_eq!(rx.spans().len(), 2);
        let gzip = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        gzip.clone().export(request(2, &[3])).await.unwrap();
        gzip.clone().export(request(1, &[4])).await.unwrap();
        assert_eq!(rx.export_requests(), 3);
    }
    let spans = deferred.spans();
    assert_eq!(spans, recorded.spans());
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s1", "s2", "s3", "s4"]);
    assert_eq!(spans[0].service, "svc");
    assert_eq!(deferred.trace(&"01".repeat(16)).len(), 3);
    // What is cleared is gone, asked for or not.
    let mut client = TraceServiceClient::connect(deferred.endpoint())
        .await
        .unwrap();
    client.export(request(3, &[5])).await.unwrap();
    deferred.clear();
    assert!(deferred.spans().is_empty());
}
