//! A session remembers its path: across an emulated long path, a call
//! started moments after a bulk call whose output window grew starts with
//! that window, and the exec-server's process reader is given it from the
//! start (its `process.run` says the widest window it had). Structure and
//! counts only, never elapsed times. (Its own test binary: it installs the
//! global tracer provider.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::stack::Stack;
use link_emulator::{Config, Emulator};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rex_client::{Client, ExecSpec, ExitStatus, Target};
use telemetry::spans;

/// Output of each call: several times the first window, so that the
/// first call's window grows with the path.
const LEN: usize = 48 * 1024 * 1024;

/// The exec-server's `process.run` spans, oldest first, and what each says
/// of its reader's output window: `attribute`, in bytes.
fn reader_windows(spans: &[SpanData], attribute: &str) -> Vec<i64> {
    let mut runs: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == spans::PROCESS_RUN)
        .collect();
    runs.sort_by_key(|s| s.start_time);
    runs.iter()
        .map(|s| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == attribute)
                .map(|kv| match &kv.value {
                    Value::I64(w) => *w,
                    other => panic!("{other:?}"),
                })
                .unwrap_or_else(|| panic!("process.run without {attribute}: {runs:?}"))
        })
        .collect()
}

async fn bulk(client: &Client) {
    let out = client
        .output(ExecSpec::new(["head", "-c", &LEN.to_string(), "/dev/zero"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    assert_eq!(out.stdout.len(), LEN);
    assert!(out.stdout.iter().all(|&b| b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_a_bulk_one_starts_with_its_window_at_the_exec_servers_reader() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let stack = Stack::start().await.unwrap();
    // The client reaches the relay across 200 ms: a 4 MiB window carries
    // at most 20 MiB/s, so the first call's window grows.
    let link =
        Emulator::start(Config::new(stack.relay.addr).rtt(Duration::from_millis(200))).unwrap();
    let mut config = stack.client_config();
    config.target = Target::Relay(link.url());
    let client = Client::new(config);

    bulk(&client).await;
    bulk(&client).await;
    client.close().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let first = i64::from(proto::session::Limits::client().output_window);
    let widest = reader_windows(&spans, spans::ATTR_OUTPUT_WINDOW);
    let started = reader_windows(&spans, spans::ATTR_OUTPUT_WINDOW_FIRST);
    assert_eq!(widest.len(), 2, "one per call: {widest:?}");
    // The first call started at the session's window, and it grew.
    assert_eq!(started[0], first, "{started:?}");
    assert!(
        widest[0] > first,
        "the first call's window grew: {widest:?}"
    );
    // The second call's reader started with the window the first ended
    // with (the client remembered it, the exec-server granted it, and its
    // reader was given it, not the session's): at least what the first
    // call's reader had (the client may have widened it once more as the
    // first call ended, too late for that call).
    assert!(started[1] >= widest[0], "{started:?} {widest:?}");
    let stats = link.shutdown();
    assert!(stats.down.delivered >= 2 * LEN as u64, "{stats}");
}
