//! The relay's hop spans: with hop headers on, each traced message's frame
//! gets a `relay.forward` in the command's trace; with them turned off the
//! relay makes no per-frame spans and the command is traced just the same
//! end to end. (Its own test binary: it installs the global provider.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use integration_tests::stack::{TestRelay, TestServer};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use proto::keys::StaticKeypair;
use rex_client::{Client, ClientConfig, ExecSpec, ExitStatus, Target};
use telemetry::spans;

async fn run_once(hop_headers: bool, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    exporter.reset();
    let mut config = relay::RelayConfig::default();
    config.hop_headers = hop_headers;
    let relay = TestRelay::start_with(config).await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let client = Client::new(ClientConfig::new(
        client_key,
        server.key.public(),
        Target::Relay(relay.url()),
    ));
    let out = client
        .output(ExecSpec::new(["echo", "x"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    assert_eq!(out.stdout, b"x\n");
    client.close().await;
    server.shutdown.cancel();
    relay.shutdown.cancel();
    // The exec-server's last spans end once the final frame has left.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    exporter.get_finished_spans().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_headers_give_relay_forward_spans_and_can_be_turned_off() {
    let exporter = InMemorySpanExporter::default();
    let provider = telemetry::provider::base_builder("test".into())
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider);

    let on = run_once(true, &exporter).await;
    let dispatch = on.iter().find(|s| s.name == spans::TOOL_DISPATCH).unwrap();
    let forwards: Vec<&SpanData> = on
        .iter()
        .filter(|s| s.name == spans::RELAY_FORWARD)
        .collect();
    // exec out (in handshake message 1, and again after the handshake:
    // this client knows no ticket of the exec-server's run); started, first
    // output, exit back.
    let resent = dispatch
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == spans::ATTR_SESSION_EARLY_RETRIES)
        .map(|kv| kv.value.clone());
    assert_eq!(resent, Some(opentelemetry::Value::I64(1)));
    assert_eq!(forwards.len(), 5, "one per traced message");
    for f in &forwards {
        assert_eq!(f.span_context.trace_id(), dispatch.span_context.trace_id());
        assert_eq!(f.parent_span_id, dispatch.span_context.span_id());
    }

    let off = run_once(false, &exporter).await;
    assert!(
        off.iter().all(|s| s.name != spans::RELAY_FORWARD),
        "no per-frame spans with hop headers off"
    );
    // Everything else is still one trace.
    let dispatch = off.iter().find(|s| s.name == spans::TOOL_DISPATCH).unwrap();
    for name in [
        spans::RPC_SERVER_EXEC,
        spans::PROCESS_RUN,
        spans::TERMINAL_DELIVERY,
    ] {
        let s = off.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            s.span_context.trace_id(),
            dispatch.span_context.trace_id(),
            "{name}"
        );
    }
    // The exec-server's frame spans link nothing then (they link only the
    // hop), while with hop headers on they link the relay's span.
    let server_recv = |spans: &[SpanData]| -> Vec<usize> {
        spans
            .iter()
            .filter(|s| {
                s.name == spans::RELAY_FRAME_RECV && s.instrumentation_scope.name() == "exec-server"
            })
            .map(|s| s.links.len())
            .collect()
    };
    assert_eq!(server_recv(&on), vec![1]);
    assert_eq!(server_recv(&off), vec![0]);
}
