//! The span context on the client's side of an exec call is the parent
//! seen on the exec-server's side, and the child names `process.run`. (Its own test binary: it installs the
//! global tracer provider.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use integration_tests::stack::Stack;
use opentelemetry::trace::{SpanId, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use rex_client::{ExecSpec, ExitStatus};
use telemetry::spans;

#[tokio::test]
async fn client_span_is_the_exec_server_parent_and_the_child_sees_the_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = telemetry::provider::base_builder("test".into())
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    // A caller span, so the whole exec is a child of the caller's trace.
    let tracer = provider.tracer("test");
    let caller = tracer.start("caller");
    let caller_cx = opentelemetry::Context::current().with_span(caller);
    let mut spec = ExecSpec::new(["sh", "-c", "printf %s \"$TRACEPARENT\""]);
    spec.parent = Some(caller_cx.clone());
    let out = client.output(spec).await.unwrap().unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    caller_cx.span().end();
    provider.force_flush().unwrap();

    let spans_seen = exporter.get_finished_spans().unwrap();
    let find = |name: &str| {
        spans_seen
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span among {:?}",
                    spans_seen.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let caller = find("caller");
    let dispatch = find(spans::TOOL_DISPATCH);
    let exec = find(spans::RPC_SERVER_EXEC);
    let run = find(spans::PROCESS_RUN);
    let trace_id = caller.span_context.trace_id();
    assert_eq!(dispatch.span_context.trace_id(), trace_id);
    assert_eq!(dispatch.parent_span_id, caller.span_context.span_id());
    assert_eq!(
        exec.span_context.trace_id(),
        trace_id,
        "same trace across the relay"
    );
    assert_eq!(
        exec.parent_span_id,
        dispatch.span_context.span_id(),
        "the exec-server's span is a child of the client's"
    );
    assert_ne!(exec.parent_span_id, SpanId::INVALID);
    assert_eq!(run.parent_span_id, exec.span_context.span_id());
    // The remote child process continues the same trace, under process.run.
    let child_tp = String::from_utf8(out.stdout).unwrap();
    let parsed = telemetry::w3c::TraceParent::parse(&child_tp).unwrap();
    assert_eq!(parsed.trace_id, trace_id.to_bytes());
    assert_eq!(parsed.parent_id, run.span_context.span_id().to_bytes());
}
