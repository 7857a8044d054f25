//! The warm policy, driven for real (relay, exec-server and client in this
//! process): when warms fire, what pauses and re-arms them, what a manual
//! warm does, how a failure is reported, and how `session.acquire` says
//! whether a dispatch found its session warm, waited for one or went cold.
//! Every check is on what the status and the spans say, never on how long
//! anything took. (Its own test binary: it installs the global tracer
//! provider.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use integration_tests::proxy::{self, Behaviour, Hold};
use integration_tests::stack::Stack;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rex_client::{
    Client, ClientConfig, ClientError, ConnectError, ExecSpec, Target, WarmOutcome, WarmPolicy,
    WarmStatus,
};
use telemetry::spans;
use tokio::sync::watch;

/// Long enough that no automatic warm comes in the middle of a test.
const NEVER: Duration = Duration::from_secs(3600);
/// A bound on waits that only a broken build reaches.
const PATIENCE: Duration = Duration::from_secs(60);

fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider);
        exporter
    })
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn of_server<'a>(spans: &'a [SpanData], server: &str, name: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            s.name != spans::SESSION_WARM
                || attr(s, "rex.server.id") == Some(Value::from(server.to_owned()))
        })
        .collect()
}

/// Waits for a status that `wanted` accepts.
async fn until(
    rx: &mut watch::Receiver<WarmStatus>,
    wanted: impl Fn(&WarmStatus) -> bool,
) -> WarmStatus {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let now = rx.borrow_and_update().clone();
            if wanted(&now) {
                return now;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the warm status never got there")
}

fn warm_client(stack: &Stack, policy: WarmPolicy) -> Client {
    let mut config = stack.client_config();
    config.warm = policy;
    Client::new(config)
}

/// A client with `policy` on, once the warm it makes at creation (which
/// establishes its session) is over: nothing of the test races it.
async fn warmed_client(stack: &Stack, policy: WarmPolicy) -> (Client, WarmStatus) {
    let client = warm_client(stack, policy);
    let mut rx = client.subscribe();
    let first = until(&mut rx, |s| s.last_warm_at.is_some() && !s.warming).await;
    assert!(first.last_outcome.as_ref().is_some_and(WarmOutcome::is_ok));
    assert_eq!(client.sessions_opened(), 1);
    (client, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warms_keep_one_session_and_each_says_when_the_next_fires() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let interval = Duration::from_millis(300);
    let client = warm_client(&stack, WarmPolicy::every(interval));
    let mut rx = client.subscribe();
    // Enabled at creation: the first warm establishes the session.
    let first = until(&mut rx, |s| s.last_warm_at.is_some()).await;
    assert!(first.enabled);
    assert!(first.last_outcome.as_ref().is_some_and(WarmOutcome::is_ok));
    assert_eq!(client.sessions_opened(), 1);
    assert_eq!(
        first.next_warm_at,
        Some(first.last_warm_at.unwrap() + interval),
        "the next warm is a full interval after the last"
    );
    // Two more, on the timer: pings of the same session.
    let mut last = first.last_warm_at;
    for _ in 0..2 {
        let next = until(&mut rx, |s| s.last_warm_at != last && !s.warming).await;
        assert!(next.last_outcome.as_ref().is_some_and(WarmOutcome::is_ok));
        assert!(next.last_latency.is_some());
        assert_eq!(
            next.next_warm_at,
            Some(next.last_warm_at.unwrap() + interval)
        );
        last = next.last_warm_at;
    }
    assert_eq!(client.sessions_opened(), 1, "pings keep the one session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_pause_the_timer_and_the_last_to_end_rearms_it() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let (client, warmed) = warmed_client(&stack, WarmPolicy::every(NEVER)).await;
    assert!(warmed.next_warm_at.is_some());
    let mut spec = ExecSpec::new(["sh", "-c", "read x; echo $x"]);
    spec.stdin = true;
    let run = client.exec(spec).await.unwrap();
    let during = client.warm_status();
    assert_eq!(during.active, 1);
    assert_eq!(
        during.next_warm_at, None,
        "no warm is scheduled while a call runs"
    );
    run.write_stdin(b"bye\n").await.unwrap();
    run.close_stdin().await.unwrap();
    let before_end = SystemTime::now();
    let out = run.output().await.unwrap();
    let after_end = SystemTime::now();
    assert_eq!(out.stdout, b"bye\n");
    let after = client.warm_status();
    assert_eq!(after.active, 0);
    let next = after
        .next_warm_at
        .expect("re-armed when the last call ended");
    // A full interval from the call's end, which came between the two
    // readings of the clock.
    assert!(next >= before_end + NEVER && next <= after_end + NEVER);
    assert_eq!(
        after.last_warm_at, warmed.last_warm_at,
        "the call was no warm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_warm_starts_the_cycle_again() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let (client, initial) = warmed_client(&stack, WarmPolicy::every(NEVER)).await;
    let mut rx = client.subscribe();
    let first = client.warm_now().await;
    let second = client.warm_now().await;
    for s in [&first, &second] {
        assert!(s.last_outcome.as_ref().is_some_and(WarmOutcome::is_ok));
        assert_eq!(s.next_warm_at, Some(s.last_warm_at.unwrap() + NEVER));
    }
    assert!(first.last_warm_at > initial.last_warm_at);
    assert!(second.last_warm_at > first.last_warm_at);
    // Subscribers heard of it (once: nothing more is pending after).
    let seen = until(&mut rx, |s| s.last_warm_at == second.last_warm_at).await;
    assert_eq!(seen.next_warm_at, second.next_warm_at);
    assert!(!rx.has_changed().unwrap());
    assert_eq!(client.sessions_opened(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_establishes_a_session_that_is_gone() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let (client, _) = warmed_client(&stack, WarmPolicy::every(NEVER)).await;
    client.close().await;
    let again = client.warm_now().await;
    assert!(again.last_outcome.as_ref().is_some_and(WarmOutcome::is_ok));
    assert_eq!(client.sessions_opened(), 2);
    // The next call finds it warm.
    let out = client
        .output(ExecSpec::new(["echo", "warm"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"warm\n");
    assert_eq!(client.sessions_opened(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_warm_says_why_and_is_tried_again_next_tick() {
    let exporter = exporter();
    let stack = Stack::start().await.unwrap();
    // A relay address where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    // A server of this test's own, so that its warms' spans are told apart.
    let server = proto::keys::StaticKeypair::generate().unwrap().public();
    let mut config = ClientConfig::new(stack.client_key.clone(), server, Target::Relay(url));
    config.warm = WarmPolicy::every(Duration::from_millis(200));
    let client = Client::new(config);
    let mut rx = client.subscribe();
    let unreachable = |s: &WarmStatus| {
        matches!(
            s.last_outcome,
            Some(WarmOutcome::Failed(ClientError::Connect(
                ConnectError::Unreachable { .. }
            )))
        )
    };
    // The warm at creation fails and says why...
    let failed = until(&mut rx, |s| s.last_warm_at.is_some() && !s.warming).await;
    assert!(unreachable(&failed), "{:?}", failed.last_outcome);
    assert_eq!(
        failed.next_warm_at,
        Some(failed.last_warm_at.unwrap() + Duration::from_millis(200)),
        "due again on the next tick"
    );
    // ...and the timer makes it again on the next tick, with the same
    // result.
    let retried = until(&mut rx, |s| {
        s.last_warm_at > failed.last_warm_at && !s.warming
    })
    .await;
    assert!(unreachable(&retried), "{:?}", retried.last_outcome);
    client.set_warm_policy(WarmPolicy::off());
    let spans = exporter.get_finished_spans().unwrap();
    let warms = of_server(&spans, &server.server_id(), spans::SESSION_WARM);
    assert!(warms.len() >= 2, "{} warms", warms.len());
    for w in warms {
        assert_eq!(attr(w, "rex.warm.trigger"), Some(Value::from("timer")));
        assert!(matches!(
            w.status,
            opentelemetry::trace::Status::Error { .. }
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_the_policy_change() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let client = warm_client(&stack, WarmPolicy::off());
    assert!(!client.warm_status().enabled);
    assert_eq!(client.warm_status().next_warm_at, None);
    let mut rx = client.subscribe();
    client.set_warm_policy(WarmPolicy::every(NEVER));
    let on = until(&mut rx, |s| s.enabled).await;
    assert_eq!(on.interval, NEVER);
    client.set_warm_policy(WarmPolicy::off());
    let off = until(&mut rx, |s| !s.enabled).await;
    assert_eq!(off.next_warm_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_acquire_says_whether_the_session_was_warm_waited_for_or_cold() {
    let exporter = exporter();
    let stack = Stack::start().await.unwrap();
    let hold = Hold::new();
    let url = proxy::start(
        stack.relay.url(),
        Behaviour {
            hold: Some(hold.clone()),
            ..Behaviour::default()
        },
    )
    .await
    .unwrap();
    // Warms only when the test asks (a warm on a timer would race the
    // first call).
    let client = Client::new(ClientConfig::new(
        stack.client_key.clone(),
        stack.server.key.public(),
        Target::Relay(url),
    ));
    let warmth = |run: &rex_client::Execution| {
        let trace = run.trace_id().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let acquire: Vec<&SpanData> = spans
            .iter()
            .filter(|s| {
                s.name == spans::SESSION_ACQUIRE && s.span_context.trace_id().to_string() == trace
            })
            .collect();
        assert_eq!(acquire.len(), 1);
        attr(acquire[0], "rex.session.warmth")
    };
    let echo = || ExecSpec::new(["echo", "x"]);

    // Cold: the call established the session.
    hold.release(1);
    let run = client.exec(echo()).await.unwrap();
    assert_eq!(warmth(&run), Some(Value::from("cold")));
    run.output().await.unwrap();
    // Warm: it was there.
    let run = client.exec(echo()).await.unwrap();
    assert_eq!(warmth(&run), Some(Value::from("warm")));
    run.output().await.unwrap();
    // Waited: a warm was establishing a new session when the call came.
    client.close().await;
    let warming = tokio::spawn({
        let client = client.clone();
        async move { client.warm_now().await }
    });
    tokio::time::timeout(PATIENCE, hold.arrived(2))
        .await
        .unwrap();
    // Polled once, the call gets as far as waiting for the session the
    // warm is establishing (the proxy holds it meanwhile).
    let mut call = Box::pin(client.exec(echo()));
    assert!(futures::poll!(&mut call).is_pending());
    // It counts as running from its dispatch: no warm is scheduled.
    assert_eq!(client.warm_status().active, 1);
    hold.release(1);
    let warmed = warming.await.unwrap();
    assert!(warmed.last_outcome.unwrap().is_ok());
    let run = call.await.unwrap();
    assert_eq!(warmth(&run), Some(Value::from("waited")));
    run.output().await.unwrap();
    assert_eq!(client.sessions_opened(), 2);

    // The warms are traced: the one that established the session holds its
    // set-up spans; each names its kind.
    let spans = exporter.get_finished_spans().unwrap();
    let server = stack.server.key.public().server_id();
    let warms = of_server(&spans, &server, spans::SESSION_WARM);
    let establishing: Vec<&&SpanData> = warms
        .iter()
        .filter(|w| attr(w, "rex.warm.kind") == Some(Value::from("establish")))
        .collect();
    assert_eq!(establishing.len(), 1);
    let w = establishing[0];
    assert!(
        w.parent_span_id == opentelemetry::trace::SpanId::INVALID,
        "a root"
    );
    for stage in [
        spans::RELAY_CONNECT,
        spans::NOISE_HANDSHAKE,
        spans::SESSION_INIT,
    ] {
        assert!(
            spans
                .iter()
                .any(|s| s.name == stage && s.parent_span_id == w.span_context.span_id()),
            "{stage} under the establishing warm"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_that_finds_a_session_another_call_just_opened_pings_it() {
    let exporter = exporter();
    let stack = Stack::start().await.unwrap();
    let hold = Hold::new();
    let url = proxy::start(
        stack.relay.url(),
        Behaviour {
            hold: Some(hold.clone()),
            ..Behaviour::default()
        },
    )
    .await
    .unwrap();
    let client = Client::new(ClientConfig::new(
        stack.client_key.clone(),
        stack.server.key.public(),
        Target::Relay(url),
    ));
    // A call establishes the session; the proxy holds it meanwhile.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.output(ExecSpec::new(["echo", "x"])).await }
    });
    tokio::time::timeout(PATIENCE, hold.arrived(1))
        .await
        .unwrap();
    // A warm asked for now waits for that session...
    let mut warm = Box::pin(client.warm_now());
    assert!(futures::poll!(&mut warm).is_pending());
    hold.release(1);
    let out = call.await.unwrap().unwrap().unwrap();
    assert_eq!(out.stdout, b"x\n");
    // ...and pings it: no second session.
    let warmed = warm.await;
    assert!(warmed.last_outcome.unwrap().is_ok());
    assert_eq!(client.sessions_opened(), 1);
    let spans = exporter.get_finished_spans().unwrap();
    let trigger = Value::from("manual");
    let warms: Vec<&SpanData> = of_server(
        &spans,
        &stack.server.key.public().server_id(),
        spans::SESSION_WARM,
    )
    .into_iter()
    .filter(|w| attr(w, "rex.warm.trigger") == Some(trigger.clone()))
    .collect();
    assert_eq!(warms.len(), 1);
    assert_eq!(attr(warms[0], "rex.warm.kind"), Some(Value::from("ping")));
    assert_eq!(
        warms[0].links.links.len(),
        1,
        "linked to the span the session was established under"
    );
}
