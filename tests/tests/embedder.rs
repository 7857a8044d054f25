//! An application that embeds the client library and instruments its own
//! code with `tracing` only (through a `tracing-opentelemetry` layer): a
//! remote exec called inside an `#[instrument]`ed function is one trace
//! whose `tool.dispatch` is a child of that function's span, and the app's
//! code makes no OpenTelemetry call. (Its own test binary: it installs the
//! global subscriber and tracer provider.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use integration_tests::stack::Stack;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rex_client::{Client, ExecSpec, ExitStatus};
use telemetry::spans;
use tracing_subscriber::layer::SubscriberExt as _;

/// The application's code: `tracing` only.
mod app {
    use super::*;

    #[tracing::instrument(skip(client))]
    pub async fn handle_request(client: &Client, request: u32) -> Vec<u8> {
        tracing::info!("running the remote step");
        let out = client
            .output(ExecSpec::new(["sh", "-c", "printf %s \"$TRACEPARENT\""]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status, ExitStatus::Code(0));
        out.stdout
    }
}

/// What the application's start-up does once: a tracer provider with an
/// exporter, the `tracing-opentelemetry` layer on it, and the same provider
/// as the global one (which the library's spans use).
fn install() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("app"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    (provider, exporter)
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "{name} among {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_exec_in_an_instrumented_function_is_a_child_of_its_span() {
    let (provider, exporter) = install();
    let stack = Stack::start().await.unwrap();
    let client = stack.client();

    let child_saw = app::handle_request(&client, 7).await;

    client.close().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let request = one(&spans, "handle_request");
    let dispatch = one(&spans, spans::TOOL_DISPATCH);
    let exec = one(&spans, spans::RPC_SERVER_EXEC);
    let trace_id = request.span_context.trace_id();
    assert_eq!(dispatch.span_context.trace_id(), trace_id, "one trace");
    assert_eq!(
        dispatch.parent_span_id,
        request.span_context.span_id(),
        "tool.dispatch is a child of the instrumented function's span"
    );
    assert_eq!(exec.span_context.trace_id(), trace_id, "across the relay");
    // The remote child continued the same trace.
    let child_saw = String::from_utf8(child_saw).unwrap();
    assert!(
        child_saw.contains(&trace_id.to_string()),
        "child's TRACEPARENT {child_saw:?} is not in trace {trace_id}"
    );
    // The app's own log line is an event on its span.
    assert!(
        request
            .events
            .iter()
            .any(|e| e.name == "running the remote step"),
        "{:?}",
        request.events
    );
}
