//! Denial of service without a key, on loopback: each attack a relay (or
//! a listening exec-server) must hold against, run while a legitimate
//! client keeps working. Assertions are counts and bounds, never times.
//!
//! The attacker speaks from 127.0.0.2 and up (another host, as far as the
//! relay can tell); the legitimate client from 127.0.0.1. Every legitimate
//! exec opens a session of its own (a new client), so each one passes the
//! relay's admission during the attack.
//!
//! The bound on legitimate failures is 10% (at least 90% of N succeed): the
//! legitimate source has its own share of every table, so the expected
//! rate is 100%; the margin is for a loaded 2-core machine, where an exec
//! can fail for reasons of its own (a client timeout while the attacker's
//! tasks hold the CPU).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::stack::{Stack, TestRelay, TestServer};
use proto::keys::StaticKeypair;
use proto::pb::tunnel::Frame;
use proto::pb::tunnel::tunnel_client::TunnelClient;
use proto::routing::SERVER_ID_HEADER;
use rex_client::{Client, ClientConfig, ExecSpec, ExitStatus, Target};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Legitimate execs per attack.
const EXECS: usize = 20;

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script])
}

fn attacker(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, 2 + n])
}

async fn channel_from(url: &str, from: std::net::IpAddr) -> Channel {
    proto::relay_link::endpoint(
        url,
        Duration::from_secs(5),
        &proto::tls::TlsSettings::system(),
    )
    .unwrap()
    .local_address(Some(from))
    .connect()
    .await
    .unwrap()
}

/// Runs `EXECS` execs, each on a fresh session; how many printed "ok".
async fn legit_execs(config: &ClientConfig) -> usize {
    let mut ok = 0;
    for _ in 0..EXECS {
        let client = Client::new(config.clone());
        if let Ok(Ok(out)) = client.output(sh("echo ok")).await
            && out.status == ExitStatus::Code(0)
            && out.stdout == b"ok\n"
        {
            ok += 1;
        }
        client.close().await;
    }
    ok
}

fn at_least_90_percent(ok: usize, what: &str) {
    eprintln!("{what}: {ok} of {EXECS} legitimate execs succeeded");
    assert!(
        ok * 10 >= EXECS * 9,
        "{what}: only {ok} of {EXECS} legitimate execs succeeded"
    );
}

/// Outcomes of the attacker's opens.
#[derive(Debug, Default)]
struct Opens {
    refused_busy: usize,
    other: usize,
}

impl Opens {
    /// Counts one finished open (an aborted one counts for nothing).
    fn count(&mut self, outcome: Result<Option<bool>, tokio::task::JoinError>) {
        match outcome {
            Ok(Some(true)) => self.refused_busy += 1,
            Ok(Some(false)) => self.other += 1,
            _ => {}
        }
    }
}

/// About 100 `Open`s a second to `server_id` at `url` from one attacker
/// address, none of which ever sends handshake message 1; each is held
/// (its request stream open) until refused or `stop`.
fn silent_opens(url: String, server_id: String, stop: CancellationToken) -> JoinSet<Opens> {
    silent_opens_from(url, server_id, stop, attacker(0))
}

/// [`silent_opens`] from the address `from`.
fn silent_opens_from(
    url: String,
    server_id: String,
    stop: CancellationToken,
    from: std::net::IpAddr,
) -> JoinSet<Opens> {
    let mut set = JoinSet::new();
    set.spawn(async move {
        // A few connections, as a client library would use.
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(channel_from(&url, from).await);
        }
        let mut opens = JoinSet::new();
        let mut tally = Opens::default();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0usize;
        while !stop.is_cancelled() {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            n += 1;
            let mut client = TunnelClient::new(channels[n % channels.len()].clone());
            let server_id = server_id.clone();
            let stop = stop.clone();
            opens.spawn(async move {
                let (tx, rx) = mpsc::channel::<Frame>(1);
                let mut request = tonic::Request::new(ReceiverStream::new(rx));
                request
                    .metadata_mut()
                    .insert(SERVER_ID_HEADER, server_id.parse().unwrap());
                let result = tokio::select! {
                    () = stop.cancelled() => return None,
                    r = client.open(request) => r,
                };
                match result {
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => Some(true),
                    Err(_) => Some(false),
                    // Accepted (a direct listener answers at once): hold it
                    // until it is ended (refused as busy, counted as such)
                    // or the attack stops.
                    Ok(response) => {
                        let mut inbound = response.into_inner();
                        let refused = tokio::select! {
                            () = stop.cancelled() => false,
                            r = inbound.message() => {
                                matches!(r, Err(s) if s.code() == tonic::Code::ResourceExhausted)
                            }
                        };
                        drop(tx);
                        Some(refused)
                    }
                }
            });
            // Count what has finished, so that the set stays small and no
            // outcome is lost.
            while let Some(r) = opens.try_join_next() {
                tally.count(r);
            }
        }
        opens.abort_all();
        while let Some(r) = opens.join_next().await {
            tally.count(r);
        }
        tally
    });
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_opens_at_the_relay_do_not_lock_clients_out() {
    let stack = Stack::start().await.unwrap();
    let server_id = stack.server.key.public().server_id();
    let stop = CancellationToken::new();
    let mut attack = silent_opens(stack.relay.url(), server_id.clone(), stop.clone());
    // Let the attack fill what it can first: until it is turned away
    // beyond its share, refused or its oldest silent sessions displaced (a
    // bounded wait for that event, however slow the machine).
    let startups = &stack.relay.stats.startups;
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while refused == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = startups.take_refusals();
        refused += r.source + r.displaced;
    }
    let ok = legit_execs(&stack.client_config()).await;
    let in_flight = startups.in_flight();
    stop.cancel();
    let _ = attack.join_next().await;
    at_least_90_percent(ok, "silent opens at the relay");
    // The attacker held at most its share of the table, and was refused
    // beyond it; the exec-server never heard of its sessions.
    assert!(in_flight <= 16 + 1, "{in_flight} unauthenticated sessions");
    assert!(
        refused > 0,
        "the attacker was never refused beyond its share"
    );
    assert!(stack.relay.stats.registry.is_registered(&server_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_opens_from_the_honest_clients_own_address_do_not_lock_it_out() {
    let stack = Stack::start().await.unwrap();
    let server_id = stack.server.key.public().server_id();
    let stop = CancellationToken::new();
    let honest = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
    let mut attack = silent_opens_from(stack.relay.url(), server_id.clone(), stop.clone(), honest);
    // Until the flood holds its address's whole share (bounded wait).
    let startups = &stack.relay.stats.startups;
    let mut displaced = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while displaced == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        displaced += startups.take_refusals().displaced;
    }
    let ok = legit_execs(&stack.client_config()).await;
    let in_flight = startups.in_flight();
    stop.cancel();
    let tally = attack.join_next().await.unwrap().unwrap();
    // Each honest session sends message 1 with its open: the flood's
    // silent sessions are the ones that make room, from the same address.
    eprintln!("silent opens from the honest address: {ok} of {EXECS}; {tally:?}");
    assert!(
        ok * 100 >= EXECS * 95,
        "only {ok} of {EXECS} honest execs succeeded"
    );
    assert!(displaced > 0, "the flood never filled its share");
    assert!(in_flight <= 16 + 1, "{in_flight} unauthenticated sessions");
    assert!(tally.refused_busy > 0, "{tally:?}");

    // The same at the exec-server's own listener (its share is 16 too;
    // the flood, at 100 a second, holds it well within half a second).
    let stop = CancellationToken::new();
    let url = stack.server.direct_url().unwrap();
    let mut attack = silent_opens_from(url.clone(), server_id, stop.clone(), honest);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let direct = ClientConfig::new(
        stack.client_key.clone(),
        stack.server.key.public(),
        Target::Direct(url),
    );
    let ok = legit_execs(&direct).await;
    stop.cancel();
    let tally = attack.join_next().await.unwrap().unwrap();
    eprintln!("silent opens from the honest address at --listen: {ok} of {EXECS}; {tally:?}");
    assert!(
        ok * 100 >= EXECS * 95,
        "only {ok} of {EXECS} honest direct execs succeeded"
    );
    assert!(tally.refused_busy > 0, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_opens_at_a_listening_exec_server_block_neither_path() {
    let stack = Stack::start().await.unwrap();
    let server_id = stack.server.key.public().server_id();
    let stop = CancellationToken::new();
    let mut attack = silent_opens(
        stack.server.direct_url().unwrap(),
        server_id.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let direct = ClientConfig::new(
        stack.client_key.clone(),
        stack.server.key.public(),
        Target::Direct(stack.server.direct_url().unwrap()),
    );
    let ok_direct = legit_execs(&direct).await;
    let ok_relay = legit_execs(&stack.client_config()).await;
    stop.cancel();
    let tally = attack.join_next().await.unwrap().unwrap();
    at_least_90_percent(ok_direct, "silent opens at --listen, direct execs");
    at_least_90_percent(
        ok_relay,
        "silent opens at --listen, execs through the relay",
    );
    assert!(
        tally.refused_busy > 0,
        "the attacker was never refused: {tally:?}"
    );
    assert!(stack.relay.stats.registry.is_registered(&server_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_leave_room() {
    // The connection cap a relay gets at a limit of 1,024 descriptors.
    let mut config = relay::RelayConfig::default();
    config.connections.max_connections = lifecycle_limit(1024);
    config.connections.preface_timeout = Duration::from_secs(2);
    let relay = TestRelay::start_with(config).await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let server_id = server.key.public().server_id();
    // 1,100 connections that never send the preface, from 5 addresses.
    let mut silent = Vec::new();
    for i in 0..1100u16 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(attacker((i % 5) as u8), 0)).unwrap();
        silent.push(s.connect(relay.addr).await.unwrap());
    }
    let config = ClientConfig::new(
        client_key.clone(),
        server.key.public(),
        Target::Relay(relay.url()),
    );
    let ok = legit_execs(&config).await;
    let conns = &relay.stats.connections;
    let open = conns.open();
    let summary = conns.take_summary();
    // Every silent connection is closed by the relay (displaced or timed
    // out); none is left hanging.
    let mut closed = 0;
    for mut s in silent {
        use tokio::io::AsyncReadExt as _;
        let mut b = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_secs(15), s.read(&mut b)).await {
                // The server's own HTTP/2 settings may arrive first.
                Ok(Ok(n)) if n > 0 => continue,
                Ok(_) => closed += 1,
                Err(_) => {}
            }
            break;
        }
    }
    eprintln!(
        "silent connections: {ok} of {EXECS} execs ok, {open} open at most {}, {summary:?}, {closed} of 1100 closed",
        conns.limits().max_connections
    );
    at_least_90_percent(ok, "1,100 silent connections");
    assert!(open <= conns.limits().max_connections);
    assert!(summary.displaced > 0, "{summary:?}");
    assert_eq!(closed, 1100);
    assert!(relay.stats.registry.is_registered(&server_id));
}

/// The connections a relay allows itself at `nofile` descriptors.
fn lifecycle_limit(nofile: u64) -> usize {
    usize::try_from(nofile - 64).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_neither_fills_the_relay_nor_keeps_a_real_exec_server_out() {
    let stack = Stack::start().await.unwrap();
    let server_id = stack.server.key.public().server_id();
    let url = stack.relay.url();
    // 8 connections, each registering throwaway keys as fast as it can.
    let mut floods = JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        floods.spawn(async move {
            let channel = channel_from(&url, attacker(0)).await;
            let mut held = Vec::new();
            let mut refused = 0;
            for _ in 0..40 {
                let key = StaticKeypair::generate().unwrap();
                let route = key.public().server_id();
                match exec_server::registration::register(
                    &channel,
                    &key,
                    &route,
                    Duration::from_secs(5),
                )
                .await
                {
                    Ok(registration) => held.push(registration),
                    Err(_) => refused += 1,
                }
            }
            (held, refused)
        });
    }
    let mut held = Vec::new();
    let mut refused = 0;
    while let Some(r) = floods.join_next().await {
        let (h, n) = r.unwrap();
        held.extend(h);
        refused += n;
    }
    let registrations = stack.relay.stats.registry.registrations();
    eprintln!(
        "registration flood: {} of 320 throwaway keys registered, {refused} refused; {registrations} registered in all",
        held.len()
    );
    // Per connection 4, per source 64: the flood holds at most 32.
    assert!(held.len() <= 32, "{} throwaway registrations", held.len());
    assert!(registrations <= 33);
    // The real exec-server stayed; a real one arriving now (as after a
    // relay restart) gets in; both serve clients.
    assert!(stack.relay.stats.registry.is_registered(&server_id));
    let late = TestServer::start(Some(url.clone()), false, &[&stack.client_key])
        .await
        .unwrap();
    let late_config = ClientConfig::new(
        stack.client_key.clone(),
        late.key.public(),
        Target::Relay(url),
    );
    let out = Client::new(late_config)
        .output(sh("echo ok"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
    at_least_90_percent(
        legit_execs(&stack.client_config()).await,
        "after a registration flood",
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_with_more_sessions_than_its_address_share_of_connections_opens_them_all() {
    use futures::StreamExt as _;
    // Shares of 8 connections per address, at the relay and at the
    // exec-server's listener; the client holds 24 sessions (a connection
    // each) from one address, through each.
    const SESSIONS: usize = 24;
    const SHARE: usize = 8;
    let mut config = relay::RelayConfig::default();
    config.connections.per_source = SHARE;
    let relay = TestRelay::start_with(config).await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start_configured(Some(relay.url()), true, &[&client_key], |c| {
        c.listen_limits.per_source = SHARE;
    })
    .await
    .unwrap();
    for target in [
        Target::Relay(relay.url()),
        Target::Direct(server.direct_url().unwrap()),
    ] {
        let what = format!("{target:?}");
        let config = ClientConfig::new(client_key.clone(), server.key.public(), target);
        let clients: Vec<Client> = (0..SESSIONS).map(|_| Client::new(config.clone())).collect();
        let failed: Vec<String> = futures::stream::iter(&clients)
            .map(Client::connect)
            .buffer_unordered(4)
            .filter_map(|r| async move { r.err().map(|e| e.to_string()) })
            .collect()
            .await;
        assert!(
            failed.is_empty(),
            "{what}: {} failed: {failed:?}",
            failed.len()
        );
        for c in &clients {
            let out = c.output(sh("echo ok")).await.unwrap().unwrap();
            assert_eq!(out.stdout, b"ok\n", "{what}");
        }
        for c in &clients {
            c.close().await;
        }
    }
    // Unauthenticated connections from that address are still held to
    // its share: of 2 x SHARE silent ones, at least SHARE are refused
    // (the exec-server's own registration link is one of the address's).
    let before = relay.stats.connections.take_summary().refused_source;
    assert_eq!(before, 0, "the honest client was refused a connection");
    let addr = relay.url().trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..2 * SHARE {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let mut refused = 0;
    for _ in 0..200 {
        refused += relay.stats.connections.take_summary().refused_source;
        if refused >= SHARE as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused >= SHARE as u64,
        "{refused} silent connections refused"
    );
    drop(silent);
}

/// Registers `n` throwaway keys from `from`, over connections of 4 (the
/// per-connection share); the registrations held.
async fn throwaway_registrations(
    url: &str,
    from: std::net::IpAddr,
    n: usize,
) -> Vec<(
    mpsc::Sender<proto::pb::tunnel::RegisterUp>,
    tonic::Streaming<proto::pb::tunnel::RegisterDown>,
)> {
    let mut held = Vec::new();
    for chunk in 0..n.div_ceil(4) {
        let channel = channel_from(url, from).await;
        for _ in 0..4.min(n - chunk * 4) {
            let key = StaticKeypair::generate().unwrap();
            let route = key.public().server_id();
            held.push(
                exec_server::registration::register(&channel, &key, &route, Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_registration_table_cannot_keep_a_real_exec_server_out() {
    // A small table, and room for the attacker to fill it fast: 20
    // registrations, from the real exec-server's own address.
    let mut config = relay::RelayConfig::default();
    config.max_registrations = 20;
    config.registrations.rate_per_source = 1000.0;
    config.registrations.burst_per_source = 1000.0;
    let relay = TestRelay::start_with(config).await.unwrap();
    let url = relay.url();
    let honest = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
    let flood = throwaway_registrations(&url, honest, 20).await;
    assert_eq!(relay.stats.registry.registrations(), 20);
    // The real exec-server registers all the same, and serves a command.
    let client_key = StaticKeypair::generate().unwrap();
    let real = tokio::time::timeout(
        Duration::from_secs(60),
        TestServer::start(Some(url.clone()), false, &[&client_key]),
    )
    .await
    .expect("the real exec-server registered")
    .unwrap();
    let route = real.key.public().server_id();
    assert!(relay.stats.registry.is_registered(&route));
    assert_eq!(relay.stats.registry.registrations(), 20);
    let config = ClientConfig::new(
        client_key.clone(),
        real.key.public(),
        Target::Relay(url.clone()),
    );
    let out = Client::new(config.clone())
        .output(sh("echo ok"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
    // More of the flood, from the same address and from another: the
    // exec-server that carried a session is not the one displaced.
    let more = throwaway_registrations(&url, honest, 24).await;
    let other = throwaway_registrations(&url, attacker(2), 8).await;
    assert!(relay.stats.registry.is_registered(&route));
    assert_eq!(relay.stats.registry.registrations(), 20);
    let out = Client::new(config)
        .output(sh("echo ok"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
    drop((flood, more, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_admits_only_its_keys_and_is_reread() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("allowed-servers");
    let real = StaticKeypair::generate().unwrap();
    std::fs::write(&list, format!("# the real one\n{}\n", real.public())).unwrap();
    let mut config = relay::RelayConfig::default();
    config.registrations.allowed_servers = Some(list.clone());
    let relay = TestRelay::start_with(config).await.unwrap();
    let channel = channel_from(&relay.url(), attacker(1)).await;
    let mut refused = 0;
    for _ in 0..10 {
        let key = StaticKeypair::generate().unwrap();
        let route = key.public().server_id();
        let r = exec_server::registration::register(&channel, &key, &route, Duration::from_secs(5))
            .await;
        if matches!(r, Err(exec_server::registration::LinkError::NotAllowed)) {
            refused += 1;
        }
    }
    assert_eq!(refused, 10);
    assert_eq!(relay.stats.registry.registrations(), 0);
    let route = real.public().server_id();
    let real_channel = channel_from(&relay.url(), std::net::Ipv4Addr::LOCALHOST.into()).await;
    let (_up, mut down) =
        exec_server::registration::register(&real_channel, &real, &route, Duration::from_secs(5))
            .await
            .unwrap();
    assert!(relay.stats.registry.is_registered(&route));
    // Taken out of the list: the registration ends, saying why.
    std::fs::write(&list, "# nobody\n").unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), down.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        proto::routing::refusal(&status),
        Some(proto::pb::tunnel::CloseReason::NotAllowed)
    );
    assert!(!relay.stats.registry.is_registered(&route));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_registration_of_a_key_replaces_the_first_which_is_told() {
    let relay = TestRelay::start().await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let first = TestServer::start_configured(Some(relay.url()), false, &[&client_key], |c| {
        c.replaced_backoff = Duration::from_secs(120);
    })
    .await
    .unwrap();
    let route = first.key.public().server_id();
    let mut registered = first.handle.registration();
    assert!(*registered.borrow());
    // The same key registers again (another exec-server with a copy).
    let channel = channel_from(&relay.url(), std::net::Ipv4Addr::LOCALHOST.into()).await;
    let (_up, _down) =
        exec_server::registration::register(&channel, &first.key, &route, Duration::from_secs(5))
            .await
            .unwrap();
    // The first is told, and stops: it is not registered, and does not
    // take the route back (its pause is two minutes).
    tokio::time::timeout(Duration::from_secs(10), registered.wait_for(|r| !*r))
        .await
        .unwrap()
        .unwrap();
    assert!(relay.stats.registry.is_registered(&route));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!*first.handle.registration().borrow());
    assert_eq!(relay.stats.registry.registrations(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_cannot_grow_the_relay() {
    const SESSION_BUFFER: usize = 64 * 1024;
    const BUDGET: usize = 256 * 1024;
    const STALLED: usize = 6;
    let mut config = relay::RelayConfig::default();
    config.session_buffer = SESSION_BUFFER;
    config.max_buffered = BUDGET;
    // No credit (as for an exec-server that does not ask for it, an older
    // or a rogue one): the queues and the budget are what bound it.
    config.session_credit = 0;
    let relay = TestRelay::start_with(config).await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let config = ClientConfig::new(
        client_key.clone(),
        server.key.public(),
        Target::Relay(relay.url()),
    );
    // Sessions whose command prints without end and whose client never
    // reads a byte.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let client = Client::new(config.clone());
        let run = client.exec(sh("cat /dev/zero")).await.unwrap();
        stalled.push((client, run));
    }
    let budget = &relay.stats.budget;
    // Until the relay has had to hold a sender back.
    for _ in 0..200 {
        if budget.waits() >= STALLED as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok = legit_execs(&config).await;
    let used = budget.used();
    let peak = budget.peak();
    // The budget, plus at most one frame per direction of each session.
    let frame = proto::limits::MAX_FRAME_PAYLOAD + relay::budget::FRAME_OVERHEAD + 128;
    let bound = BUDGET + 2 * (STALLED + 1) * frame;
    eprintln!(
        "stalled readers: {ok} of {EXECS} execs ok; relay queues {used} bytes now, {peak} at most (bound {bound}); {} waits",
        budget.waits()
    );
    assert!(budget.waits() >= STALLED as u64);
    assert!(peak <= bound, "peak {peak} over {bound}");
    at_least_90_percent(ok, "stalled readers");
    drop(stalled);
}

/// What `yes {tag} | head -c {len}` prints.
fn yes_output(tag: &str, len: usize) -> Vec<u8> {
    let line = format!("{tag}\n");
    line.as_bytes().iter().copied().cycle().take(len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_hold_at_most_the_exec_servers_budget_and_then_finish_byte_exact()
{
    const STALLED: usize = 8;
    // Each command's output window (the default): unbounded, eight
    // stalled readers would hold 32 MiB.
    const WINDOW: u32 = 4 * 1024 * 1024;
    const TOTAL: u64 = 3 * 1024 * 1024;
    const PER_KEY: u64 = 2 * 1024 * 1024;
    // What each command may always hold (two reads: its client
    // acknowledges when the exec-server asks): the budget is exceeded by
    // at most the floors of commands started while it was full. (Before
    // clients answered asks, a quarter of the window and a read: eight
    // stalled readers could hold 8 MiB beyond the budget.)
    const FLOOR: u64 = exec_server::credit::ASKED_FLOOR;
    // More than a command's whole window: each must wait on its output.
    const OUTPUT: usize = 6 * 1024 * 1024 + 17;
    let relay = TestRelay::start().await.unwrap();
    let keys = [
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    ];
    let server =
        TestServer::start_configured(Some(relay.url()), false, &[&keys[0], &keys[1]], |c| {
            c.max_unacked_output = TOTAL;
            c.max_unacked_output_per_key = PER_KEY;
        })
        .await
        .unwrap();
    // Half the readers with each key; none reads a byte yet.
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let key = keys[i % 2].clone();
        let client = Client::new(ClientConfig::new(
            key,
            server.key.public(),
            Target::Relay(relay.url()),
        ));
        let tag = format!("reader {i} abcdefgh");
        let run = client
            .exec(sh(&format!("yes '{tag}' | head -c {OUTPUT}")))
            .await
            .unwrap();
        stalled.push((client, run, tag));
    }
    let budget = server.handle.unacked();
    // Until the budget is full and nothing more moves.
    let mut last = u64::MAX;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let used = budget.used();
        if budget.waits() > 0 && used == last {
            break;
        }
        last = used;
    }
    let per_key = [
        budget.used_by(&keys[0].public()),
        budget.used_by(&keys[1].public()),
    ];
    let peak = budget.peak();
    eprintln!(
        "stalled readers: the exec-server holds {} bytes unacknowledged now ({per_key:?} per key, floors {}), \
         {peak} at most (budget {TOTAL}, {PER_KEY} per key, without it {}); {} reads waited",
        budget.used(),
        budget.floors(),
        STALLED as u64 * u64::from(WINDOW),
        budget.waits()
    );
    assert!(budget.waits() > 0, "no read had to wait");
    assert!(
        peak <= TOTAL + STALLED as u64 * FLOOR,
        "peak {peak} over the budget and the floors"
    );
    for held in per_key {
        assert!(
            held <= PER_KEY + (STALLED / 2) as u64 * FLOOR,
            "{held} over a key's share"
        );
    }
    // The readers read again: every command finishes, byte-exact.
    for (client, mut run, tag) in stalled {
        let mut out = Vec::new();
        let mut status = None;
        while let Some(ev) = run.next().await {
            match ev {
                rex_client::Event::Stdout(d) => out.extend_from_slice(&d),
                rex_client::Event::Exited(s) => status = Some(s),
                rex_client::Event::Failed(f) => panic!("{tag}: {f}"),
                _ => {}
            }
        }
        assert_eq!(status, Some(ExitStatus::Code(0)), "{tag}");
        assert_eq!(out.len(), OUTPUT, "{tag}");
        assert!(out == yes_output(&tag, OUTPUT), "{tag}: output differs");
        client.close().await;
    }
    // Everything acknowledged (or gone with its session) is given back.
    for _ in 0..200 {
        if budget.used() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(budget.used(), 0);
}
