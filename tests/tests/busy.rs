//! A session refused as busy (the relay at one of its limits: its table of
//! sessions still in their handshake, an exec-server's share of sessions)
//! is tried again on the same link with the same handshake message 1, so
//! that an honest burst of sessions, or one that meets a moment at a
//! limit, goes through; each try is a round trip more in the session's own
//! counters, and the command runs once. Assertions are counts, never
//! times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::stack::{TestRelay, TestServer};
use proto::admission::{AdmissionLimits, Startups};
use proto::keys::StaticKeypair;
use rex_client::{Client, ClientConfig, Event, ExecSpec, ExitStatus, Target};
use tokio::task::JoinSet;

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script])
}

/// A relay configured by `configure`, an exec-server registered at it, and
/// a client config for that exec-server.
async fn stack(
    configure: impl FnOnce(&mut relay::RelayConfig),
) -> (TestRelay, TestServer, ClientConfig) {
    let mut config = relay::RelayConfig::default();
    configure(&mut config);
    let relay = TestRelay::start_with(config).await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let config = ClientConfig::new(client_key, server.key.public(), Target::Relay(relay.url()));
    (relay, server, config)
}

/// Runs `spec` on a new client of `config` to its end: the round trips its
/// session waited on before the first event, and whether it exited 0.
async fn run(config: ClientConfig, spec: ExecSpec) -> (u32, bool) {
    let client = Client::new(config);
    let mut run = client.exec(spec).await.unwrap();
    let mut last = None;
    while let Some(event) = run.next().await {
        last = Some(event);
    }
    let round_trips = run
        .session_counters()
        .and_then(|c| c.round_trips)
        .expect("the call opened its session");
    (
        round_trips,
        last == Some(Event::Exited(ExitStatus::Code(0))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refused_at_the_exec_servers_share_is_tried_again_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    let (relay, _server, config) = stack(|c| c.max_sessions_per_server = 1).await;
    let spec = sh(&format!("echo ran >> {}", log.display()));
    let (alone, ok) = run(config.clone(), spec.clone()).await;
    assert!(ok);
    // One session holds the exec-server's whole share at the relay.
    let holder = Client::new(config.clone());
    holder.connect().await.unwrap();
    let refused = tokio::spawn(run(config.clone(), spec));
    // Refused while the share is held; let in once it is free (its tries
    // go on for at least 1.6 s after the first refusal).
    let registry = &relay.stats.registry;
    for _ in 0..600 {
        if registry.busy_refusals() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registry.busy_refusals() > 0, "never refused");
    holder.close().await;
    let (round_trips, ok) = refused.await.unwrap();
    assert!(ok);
    assert!(
        round_trips > alone,
        "{round_trips} round trips, as many as without a refusal ({alone})"
    );
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ran.lines().count(), 2, "each command ran once: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sessions_past_the_handshake_table_all_go_through() {
    const CLIENTS: usize = 32;
    // At most 4 sessions in their handshake at once: the others of the
    // burst are refused, and come back.
    let (_relay, _server, config) = stack(|c| {
        c.startups = AdmissionLimits::new("4".parse::<Startups>().unwrap(), 16);
    })
    .await;
    let (alone, ok) = run(config.clone(), sh("true")).await;
    assert!(ok);
    let mut burst = JoinSet::new();
    for _ in 0..CLIENTS {
        burst.spawn(run(config.clone(), sh("true")));
    }
    let mut more = 0;
    let mut ok = 0;
    while let Some(done) = burst.join_next().await {
        let (round_trips, exited) = done.unwrap();
        assert!(round_trips >= alone);
        more += round_trips - alone;
        ok += usize::from(exited);
    }
    assert_eq!(ok, CLIENTS, "every session of the burst ran its command");
    assert!(more > 0, "no session was refused: the burst tested nothing");
}
