//! An application that embeds the client library, instruments its code
//! with `tracing` (through `tracing-opentelemetry`) and has no collector
//! of its own: with a `SpanCollector` as the client's `span_source`, its
//! own span around a remote exec reaches the exec-server's collector
//! through the session, once, marked `rex.forwarded_for`, in one trace
//! with the library's and the services' spans. (Its own test binary: it
//! installs the global subscriber and tracer provider.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::bench::exec_true;
use integration_tests::binaries::ProcStack;
use integration_tests::otlp::{AttrValue, OtlpReceiver};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use proto::keys::{PublicKey, StaticKeypair};
use rex_client::{Client, ClientConfig, ExecSpec, ExitStatus, SpanCollector, Target};
use telemetry::spans;
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(60);

/// The application's code: `tracing` only.
mod app {
    use super::*;

    #[tracing::instrument(skip(client))]
    pub async fn handle_request(client: &Client, request: u32) {
        let out = client
            .output(ExecSpec::new(["sh", "-c", "echo hi"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status, ExitStatus::Code(0));
        assert_eq!(out.stdout, b"hi\n");
    }
}

/// The application's start-up: a tracer provider with no exporter, only
/// the collector's processor; the `tracing-opentelemetry` layer on it; the
/// same provider as the global one (which the library's spans use). Once
/// for the process (its tests share it).
fn install() -> (SdkTracerProvider, SpanCollector) {
    static INSTALLED: std::sync::OnceLock<(SdkTracerProvider, SpanCollector)> =
        std::sync::OnceLock::new();
    INSTALLED.get_or_init(install_once).clone()
}

fn install_once() -> (SdkTracerProvider, SpanCollector) {
    let collector = SpanCollector::default();
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder_empty()
                .with_service_name("embedding-app")
                .build(),
        )
        .with_span_processor(collector.processor())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("app"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    (provider, collector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_own_span_reaches_the_exec_servers_collector_once() {
    let (collector, rx, stack) = exporting().await;
    let client_key = StaticKeypair::read_file(&stack.client_key)
        .unwrap()
        .public()
        .to_string();
    let client = client_of(&stack, &collector);

    app::handle_request(&client, 7).await;
    // The app's span ended after the call: it goes before the close.
    client.close().await;

    let all = rx
        .wait_for(WAIT, |s| {
            s.iter()
                .any(|x| x.service == "embedding-app" && x.name == "handle_request")
                && s.iter().any(|x| x.name == spans::TOOL_DISPATCH)
                && s.iter().any(|x| x.name == spans::RPC_SERVER_EXEC)
        })
        .await;
    let request = all
        .iter()
        .find(|s| s.name == "handle_request")
        .unwrap()
        .clone();
    let trace = request.trace_id.clone();
    let app: Vec<_> = rx
        .spans()
        .into_iter()
        .filter(|s| s.service == "embedding-app")
        .collect();
    // Once each, all marked as forwarded for the client's key.
    let ids: BTreeSet<&str> = app.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), app.len(), "a span arrived twice: {app:#?}");
    assert_eq!(app.iter().filter(|s| s.name == "handle_request").count(), 1);
    for s in &app {
        assert_eq!(
            s.resource.get(spans::FORWARDED_FOR),
            Some(&AttrValue::Str(client_key.clone())),
            "{s:?}"
        );
        assert_eq!(s.trace_id, trace);
    }
    // The library's dispatch is the app span's child, and the
    // exec-server's side is in the same trace.
    let dispatch = app
        .iter()
        .find(|s| s.name == spans::TOOL_DISPATCH)
        .unwrap_or_else(|| panic!("{app:#?}"));
    assert_eq!(
        dispatch.parent_span_id.as_deref(),
        Some(request.span_id.as_str())
    );
    assert!(
        rx.spans()
            .iter()
            .any(|s| s.trace_id == trace && s.service == "exec-server")
    );
    rx.shutdown().await.unwrap();
}

/// The app's collector, a receiver, and a relay and an exec-server
/// exporting to it.
async fn exporting() -> (SpanCollector, OtlpReceiver, ProcStack) {
    let (_provider, collector) = install();
    let rx = OtlpReceiver::start().await.unwrap();
    let endpoint = rx.endpoint();
    let stack = ProcStack::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]).unwrap();
    (collector, rx, stack)
}

/// A client of `stack`'s exec-server whose spans come from `collector`.
fn client_of(stack: &ProcStack, collector: &SpanCollector) -> Client {
    let key = StaticKeypair::read_file(&stack.client_key).unwrap();
    let server: PublicKey = stack.server_pub.parse().unwrap();
    let mut config = ClientConfig::new(key, server, Target::Relay(stack.relay_url.clone()));
    config.span_source = Some(Arc::new(collector.clone()));
    Client::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_that_ends_long_after_its_call_still_goes_once() {
    // The session looks again at the traces of its last 64 calls when it
    // closes. A span of an older call's trace that ended after that call's
    // spans went (here the app's own, ended two calls later) goes when its
    // call leaves those 64, not never; and meanwhile the spans of traces no
    // call takes (HTTP/2's own, which this app's `tracing` layer records
    // too: more than the collector holds) do not push it out.
    use tracing::Instrument as _;
    let (collector, rx, stack) = exporting().await;
    let client = client_of(&stack, &collector);
    let run = || async {
        exec_true(&client).await.unwrap();
    };
    let first = tracing::info_span!("first_request");
    run().instrument(first.clone()).await;
    run().await;
    run().await;
    drop(first);
    for _ in 0..70 {
        run().await;
    }
    client.close().await;
    let all = rx
        .wait_for(WAIT, |s| s.iter().any(|x| x.name == "first_request"))
        .await;
    let first: Vec<_> = all.iter().filter(|s| s.name == "first_request").collect();
    assert_eq!(first.len(), 1, "{first:#?}");
    // In the trace of its call, with the library's dispatch as its child.
    assert!(
        all.iter().any(|s| s.name == spans::TOOL_DISPATCH
            && s.trace_id == first[0].trace_id
            && s.parent_span_id.as_deref() == Some(first[0].span_id.as_str())),
        "{all:#?}"
    );
    rx.shutdown().await.unwrap();
}
