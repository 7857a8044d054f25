//! The relay fleet's directory against a real etcd: entries follow
//! registrations, every relay's copy follows the store, and the store going
//! away degrades nothing that was already working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::etcd::{self, Etcd};
use integration_tests::stack::{TestRelay, TestServer};
use proto::keys::StaticKeypair;
use proto::pb::tunnel::tunnel_client::TunnelClient;
use proto::pb::tunnel::{CloseReason, Frame, FrameKind};
use relay::directory::Directory;
use rex_client::{Client, ClientConfig, ExecSpec, ExitStatus, Target};

const TTL: Duration = Duration::from_secs(3);
const FLEET: [u8; 32] = [42; 32];

/// Polls `ok` every 50 ms for up to `within`.
async fn eventually(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok()
}

fn holder(directory: &Directory, id: &str) -> Option<String> {
    directory.lookup(id).map(|e| e.relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_in_every_relays_copy_while_it_lasts() {
    if !etcd::available("a_registration_is_in_every_relays_copy_while_it_lasts") {
        return;
    }
    // The exec-server registers at B; A's copy has it (or this fails).
    let fleet = Fleet::start().await;
    let id = fleet.id();
    let seen_by_a = fleet.a.directory().unwrap().clone();
    // B holds it itself: its own entry is not a route elsewhere.
    assert_eq!(holder(fleet.b.directory().unwrap(), &id), None);
    // What the store holds, read with etcd's own tool.
    let stored = fleet
        .store
        .ctl(&["get", "--print-value-only", &format!("/rex/servers/{id}")])
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(entry["relay"], fleet.b.url());
    assert!(entry["registered_at"].as_str().unwrap().ends_with('Z'));
    // The registration ends: the entry goes from the store and from A.
    fleet.server.shutdown.cancel();
    assert!(
        eventually(Duration::from_secs(20), || holder(&seen_by_a, &id)
            .is_none())
        .await,
        "the entry outlived the registration"
    );
    assert_eq!(stored_keys(&fleet.store).unwrap(), Vec::<String>::new());
    let stats = seen_by_a.stats();
    assert!(stats.connected && stats.skipped == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_do_not_parse_are_skipped_and_counted() {
    if !etcd::available("entries_that_do_not_parse_are_skipped_and_counted") {
        return;
    }
    let store = Etcd::start().unwrap();
    let a = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL, &FLEET)
        .await
        .unwrap();
    let directory = a.directory().unwrap().clone();
    assert!(eventually(Duration::from_secs(20), || directory.stats().connected).await);
    let id = "0123456789abcdef0123456789abcdef";
    store
        .ctl(&["put", &format!("/rex/servers/{id}"), "not json"])
        .unwrap();
    store
        .ctl(&[
            "put",
            "/rex/servers/not-an-id",
            r#"{"relay":"http://127.0.0.1:1","registered_at":"2026-11-25T08:00:00Z"}"#,
        ])
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || directory.stats().skipped == 2).await);
    assert_eq!(directory.lookup(id), None);
    // A good entry afterwards is taken.
    store
        .ctl(&[
            "put",
            &format!("/rex/servers/{id}"),
            r#"{"relay":"http://127.0.0.1:1","registered_at":"2026-11-25T08:00:00Z"}"#,
        ])
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || holder(&directory, id)
            .as_deref()
            == Some("http://127.0.0.1:1"))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_store_known_routes_stay_and_entries_come_back_with_it() {
    if !etcd::available("without_the_store_known_routes_stay_and_entries_come_back_with_it") {
        return;
    }
    let mut store = Etcd::start().unwrap();
    let a = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL, &FLEET)
        .await
        .unwrap();
    let b = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL, &FLEET)
        .await
        .unwrap();
    let client = StaticKeypair::generate().unwrap();
    let first = TestServer::start(Some(a.url()), false, &[&client])
        .await
        .unwrap();
    let first_id = first.key.public().server_id();
    let (da, db) = (
        a.directory().unwrap().clone(),
        b.directory().unwrap().clone(),
    );
    assert!(
        eventually(Duration::from_secs(20), || holder(&db, &first_id)
            == Some(a.url()))
        .await
    );

    store.stop();
    assert!(
        eventually(Duration::from_secs(20), || !da.stats().connected
            && !db.stats().connected)
        .await,
        "the relays did not notice the store going away"
    );
    // The route B knew is still known; a registration at B while the
    // store is away is taken (and served locally, as without a fleet).
    assert_eq!(holder(&db, &first_id), Some(a.url()));
    let via_b = Client::new(ClientConfig::new(
        client.clone(),
        first.key.public(),
        Target::Relay(b.url()),
    ));
    let out = via_b
        .output(ExecSpec::new(["echo", "cached"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"cached\n", "the cached route did not work");
    via_b.close().await;
    let second = TestServer::start(Some(b.url()), false, &[&client])
        .await
        .unwrap();
    let second_id = second.key.public().server_id();
    assert!(b.stats.registry.is_registered(&second_id));

    store.start_again().unwrap();
    // Both relays are back, and each has the other's entry. (A relay
    // writes its entries before it reads the store's copy and counts itself
    // connected: the other may see them first.)
    assert!(
        eventually(Duration::from_secs(30), || {
            holder(&da, &second_id) == Some(b.url())
                && holder(&db, &first_id) == Some(a.url())
                && da.stats().connected
                && db.stats().connected
        })
        .await,
        "entries not back: A {:?}, B {:?}",
        da.stats(),
        db.stats()
    );
}

/// The keys under the servers prefix, as etcd's own tool lists them.
fn stored_keys(store: &Etcd) -> integration_tests::error::Result<Vec<String>> {
    Ok(store
        .ctl(&["get", "--prefix", "--keys-only", "/rex/servers/"])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

/// Key files for the binaries, in a scratch directory: an exec-server's,
/// an authorized client's, and a fleet key made by `relay fleet-key`.
struct Keys {
    dir: tempfile::TempDir,
    server_pub: String,
    client_key: std::path::PathBuf,
    fleet_key: std::path::PathBuf,
}

impl Keys {
    fn make() -> Self {
        use integration_tests::binaries::{self, keygen};
        let dir = tempfile::tempdir().unwrap();
        let server_pub = keygen("exec-server", dir.path(), "server.key").unwrap();
        let client_pub = keygen("core-client", dir.path(), "client.key").unwrap();
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{client_pub}\n"),
        )
        .unwrap();
        let fleet_key = dir.path().join("fleet.key");
        let made = std::process::Command::new(binaries::path("relay").unwrap())
            .args(["fleet-key", "--out", fleet_key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        Self {
            client_key: dir.path().join("client.key"),
            dir,
            server_pub,
            fleet_key,
        }
    }

    /// The fleet key's secret, for relays in this process.
    fn fleet_secret(&self) -> [u8; 32] {
        *StaticKeypair::read_file(&self.fleet_key)
            .unwrap()
            .private_bytes()
    }

    fn client(&self) -> StaticKeypair {
        StaticKeypair::read_file(&self.client_key).unwrap()
    }

    fn server_key(&self) -> proto::keys::PublicKey {
        self.server_pub.parse().unwrap()
    }

    /// A relay binary in the fleet with `extra` flags and `env`; its URL.
    fn relay(
        &self,
        store: &Etcd,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (integration_tests::binaries::Proc, String) {
        let store_url = store.url();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--fleet-key",
            self.fleet_key.to_str().unwrap(),
            "--directory",
            &store_url,
        ];
        args.extend_from_slice(extra);
        let relay = integration_tests::binaries::spawn("relay", &args, env).unwrap();
        let line = relay
            .wait_for_line("in the fleet's directory as", Duration::from_secs(30))
            .unwrap();
        let url = line.rsplit(' ').next().unwrap().to_owned();
        (relay, url)
    }

    /// The exec-server binary registered at `relay_url`.
    fn exec_server(
        &self,
        relay_url: &str,
        env: &[(&str, &str)],
    ) -> integration_tests::binaries::Proc {
        let server = self.exec_server_with(&["--relay", relay_url], env);
        server
            .wait_for_line("registered with relay", Duration::from_secs(30))
            .unwrap();
        server
    }

    /// The exec-server binary with `relays` (its `--relay` and `--fleet`
    /// flags), not yet registered.
    fn exec_server_with(
        &self,
        relays: &[&str],
        env: &[(&str, &str)],
    ) -> integration_tests::binaries::Proc {
        let path = |name: &str| self.dir.path().join(name).to_str().unwrap().to_owned();
        let mut args = relays.to_vec();
        let (key, authorized, data) = (path("server.key"), path("authorized_keys"), path("data"));
        args.extend_from_slice(&[
            "--key",
            &key,
            "--authorized-keys",
            &authorized,
            "--data-dir",
            &data,
        ]);
        integration_tests::binaries::spawn("exec-server", &args, env).unwrap()
    }
}

/// `relay fleet-key` never overwrites a key; with `--if-missing` it keeps
/// one that is there (for start-up scripts) and refuses a file that is not
/// one.
#[test]
fn fleet_key_is_made_once_and_kept() {
    use integration_tests::binaries;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fleet.key");
    let make = |extra: &[&str]| {
        let mut args = vec!["fleet-key", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        std::process::Command::new(binaries::path("relay").unwrap())
            .args(&args)
            .output()
            .unwrap()
    };
    assert!(make(&[]).status.success());
    let first = std::fs::read(&out).unwrap();
    let again = make(&[]);
    assert!(!again.status.success(), "overwrote a fleet key: {again:?}");
    let kept = make(&["--if-missing"]);
    assert!(kept.status.success(), "{kept:?}");
    assert_eq!(std::fs::read(&out).unwrap(), first, "the key changed");
    std::fs::write(&out, "not a key\n").unwrap();
    let refused = make(&["--if-missing"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("fleet.key"), "{stderr}");
}

#[test]
fn a_killed_relays_entries_vanish_with_its_lease() {
    if !etcd::available("a_killed_relays_entries_vanish_with_its_lease") {
        return;
    }
    let store = Etcd::start().unwrap();
    let keys = Keys::make();
    let (mut relay, relay_url) = keys.relay(&store, &["--directory-ttl-secs", "2"], &[]);
    let _server = keys.exec_server(&relay_url, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stored_keys(&store).unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        stored_keys(&store).unwrap().len(),
        1,
        "the registration's entry"
    );
    // Killed: nothing revokes the lease; it runs out.
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let killed = std::time::Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while !stored_keys(&store).unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        stored_keys(&store).unwrap(),
        Vec::<String>::new(),
        "entries outlived the relay"
    );
    eprintln!(
        "the killed relay's entry vanished {:?} after the kill (lease 2 s)",
        killed.elapsed()
    );
}

/// The home relay killed in the middle of a command: the exec-server
/// (`--fleet`) registers at the next relay of its list, the directory
/// follows (the killed relay's lease runs out, the entry stays, naming the
/// new home), and the command in flight comes back through the client's own
/// relay: stdin written during the outage reaches it, its output arrives
/// once, and it ends with its real exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_resumes_when_its_exec_server_moves_to_another_relay_of_the_fleet() {
    if !etcd::available(
        "a_command_resumes_when_its_exec_server_moves_to_another_relay_of_the_fleet",
    ) {
        return;
    }
    let store = Etcd::start().unwrap();
    let keys = Keys::make();
    let ttl = ["--directory-ttl-secs", "2"];
    let (_a, a_url) = keys.relay(&store, &ttl, &[]);
    let (mut b, b_url) = keys.relay(&store, &ttl, &[]);
    let fleet_list = format!("{b_url},{a_url}");
    let server = keys.exec_server_with(&["--fleet", "--relay", &fleet_list], &[]);
    let registered_at = |want: &str| {
        let line = server
            .wait_for_line("registered with relay", Duration::from_secs(30))
            .unwrap();
        assert!(line.contains(want), "registered elsewhere: {line}");
    };
    registered_at(&b_url);
    let id = keys.server_key().server_id();
    let entry_names = |relay: &str| {
        store
            .ctl(&["get", "--print-value-only", &format!("/rex/servers/{id}")])
            .unwrap()
            .contains(&format!("\"relay\":\"{relay}\""))
    };
    let names_within = |relay: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !entry_names(relay) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        entry_names(relay)
    };
    assert!(names_within(&b_url), "the first home is B");

    let mut config = ClientConfig::new(
        keys.client(),
        keys.server_key(),
        Target::Relay(a_url.clone()),
    );
    config.resume = Some(Duration::from_secs(60));
    config.resume_events = true;
    let client = Client::new(config);
    // A's copy of the directory learns the route (the first command waits
    // until it has).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.output(ExecSpec::new(["echo", "ok"])).await {
            Ok(Ok(out)) if out.stdout == b"ok\n" => break,
            other if std::time::Instant::now() > deadline => panic!("no route via A: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut spec = ExecSpec::new([
        "sh",
        "-c",
        "echo started; read line; echo \"got $line\"; exit 7",
    ]);
    spec.stdin = true;
    let mut exec = client.exec(spec).await.unwrap();
    let mut stdout = Vec::new();
    while !stdout.ends_with(b"started\n") {
        match tokio::time::timeout(Duration::from_secs(30), exec.next()).await {
            Ok(Some(rex_client::Event::Stdout(d))) => stdout.extend_from_slice(&d),
            Ok(Some(rex_client::Event::Started { .. })) => {}
            other => panic!("before the kill: {other:?}"),
        }
    }

    // B dies with no goodbye; the command's link (client → A → B) breaks.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let killed = std::time::Instant::now();
    registered_at(&a_url);
    eprintln!(
        "the exec-server registered at A {:?} after the kill",
        killed.elapsed()
    );
    exec.write_stdin(b"hello\n").await.unwrap();
    let mut status = None;
    let mut reconnecting = 0;
    let mut resumed = 0;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(90), exec.next())
        .await
        .expect("the command never came back")
    {
        match event {
            rex_client::Event::Stdout(d) => stdout.extend_from_slice(&d),
            rex_client::Event::Exited(s) => status = Some(s),
            rex_client::Event::Reconnecting => reconnecting += 1,
            rex_client::Event::Resumed => {
                resumed += 1;
                eprintln!(
                    "the command came back {:?} after the kill",
                    killed.elapsed()
                );
            }
            rex_client::Event::Failed(f) => panic!("the command failed: {f}"),
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&stdout), "started\ngot hello\n");
    assert_eq!(status, Some(ExitStatus::Code(7)));
    assert_eq!((reconnecting, resumed), (1, 1));
    assert_eq!(exec.resumes(), 1);

    // The killed relay's lease runs out; the entry is A's, and stays.
    assert!(names_within(&a_url), "the entry should name the new home");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(entry_names(&a_url), "B's expired lease took A's entry");
    let again = client
        .output(ExecSpec::new(["echo", "ok"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.stdout, b"ok\n");
}

/// What `yes {tag} | head -c {len}` prints.
fn yes_output(tag: &str, len: usize) -> Vec<u8> {
    format!("{tag}\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// Two relays of one fleet, an exec-server registered at the second,
/// and the first's copy of the directory knowing it.
struct Fleet {
    store: Etcd,
    a: TestRelay,
    b: TestRelay,
    server: TestServer,
    client: StaticKeypair,
    /// The link emulator in front of B that its peers dial, if any.
    front: Option<link_emulator::Emulator>,
}

impl Fleet {
    async fn start() -> Self {
        Self::start_behind(None).await
    }

    /// [`Fleet::start`], with B's peers dialling it through a link emulator
    /// of round trip `rtt`, if given.
    async fn start_behind(rtt: Option<Duration>) -> Self {
        let store = Etcd::start().unwrap();
        let a = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL, &FLEET)
            .await
            .unwrap();
        let mut front = None;
        let b = TestRelay::start_in_fleet_at(
            relay::RelayConfig::default(),
            &store.url(),
            TTL,
            &FLEET,
            |addr| match rtt {
                Some(rtt) => {
                    let link =
                        link_emulator::Emulator::start(link_emulator::Config::new(addr).rtt(rtt))
                            .unwrap();
                    let url = link.url();
                    front = Some(link);
                    url
                }
                None => format!("http://{addr}"),
            },
        )
        .await
        .unwrap();
        let client = StaticKeypair::generate().unwrap();
        let server = TestServer::start(Some(b.url()), false, &[&client])
            .await
            .unwrap();
        let id = server.key.public().server_id();
        let seen_by_a = a.directory().unwrap().clone();
        let advertised = front.as_ref().map_or_else(|| b.url(), |f| f.url());
        assert!(
            eventually(Duration::from_secs(20), || holder(&seen_by_a, &id)
                == Some(advertised.clone()))
            .await
        );
        Self {
            store,
            a,
            b,
            server,
            client,
            front,
        }
    }

    fn id(&self) -> String {
        self.server.key.public().server_id()
    }

    fn client_via(&self, relay: &TestRelay) -> Client {
        Client::new(ClientConfig::new(
            self.client.clone(),
            self.server.key.public(),
            Target::Relay(relay.url()),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_one_relay_reaches_an_exec_server_registered_at_another_byte_exact() {
    if !etcd::available(
        "a_client_of_one_relay_reaches_an_exec_server_registered_at_another_byte_exact",
    ) {
        return;
    }
    let fleet = Fleet::start().await;
    assert!(!fleet.a.stats.registry.is_registered(&fleet.id()));
    let client = fleet.client_via(&fleet.a);
    // Output, larger than any window or buffer on the way.
    const LEN: usize = 3 * 1024 * 1024 + 7;
    let out = client
        .output(ExecSpec::new([
            "sh",
            "-c",
            &format!("yes fleet | head -c {LEN}"),
        ]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(out.stdout == yes_output("fleet", LEN), "output differs");
    // Input, through both relays and back.
    let input: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut cat = ExecSpec::new(["cat"]);
    cat.stdin = true;
    let mut run = client.exec(cat).await.unwrap();
    let writer = {
        let input = input.clone();
        let controller = run.controller();
        tokio::spawn(async move {
            for chunk in input.chunks(64 * 1024) {
                controller.write_stdin(chunk).await.unwrap();
            }
            controller.close_stdin().await.unwrap();
        })
    };
    let mut echoed = Vec::new();
    let mut status = None;
    while let Some(ev) = run.next().await {
        match ev {
            rex_client::Event::Stdout(d) => echoed.extend_from_slice(&d),
            rex_client::Event::Exited(s) => status = Some(s),
            rex_client::Event::Failed(f) => panic!("cat failed: {f}"),
            _ => {}
        }
    }
    writer.await.unwrap();
    assert_eq!(status, Some(ExitStatus::Code(0)));
    assert_eq!(echoed.len(), input.len());
    assert!(echoed == input, "stdin came back different");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_sessions_output_crosses_a_long_hop_within_the_forwarding_relays_credit() {
    if !etcd::available(
        "a_forwarded_sessions_output_crosses_a_long_hop_within_the_forwarding_relays_credit",
    ) {
        return;
    }
    // Relay B, which holds the exec-server, is 100 ms from relay A, which
    // the client dials: A reaches B through the emulator.
    let mut fleet = Fleet::start_behind(Some(Duration::from_millis(100))).await;
    const LEN: usize = 24_000_000;
    let out = fleet
        .client_via(&fleet.a)
        .output(ExecSpec::new([
            "sh",
            "-c",
            &format!("yes hop | head -c {LEN}"),
        ]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(out.stdout == yes_output("hop", LEN), "output differs");
    // A lent the forwarded stream the widest window from its pool, and B
    // sent within it.
    let credit = fleet.a.stats.registry.credit();
    let widest = u64::from(proto::routing::MAX_CREDIT_WINDOW);
    assert!(
        credit.widest_window() >= widest,
        "widest window {} of {widest}",
        credit.widest_window()
    );
    assert!(credit.peak_held() <= credit.widest_window());
    assert_eq!(credit.overruns(), 0);
    let stats = fleet.front.take().unwrap().shutdown();
    // More than the relay-to-relay link's old 1 MiB window was on the hop
    // at once (which held a forwarded session to about 1 MiB per round
    // trip), and never more than the credit and what frames carry besides.
    let old_window = 1024 * 1024 + 64 * 1024;
    assert!(stats.down.peak_queued > old_window, "{stats}");
    assert!(
        stats.down.peak_queued <= widest + widest / 8 + 64 * 1024,
        "{stats}"
    );
}

/// Opens a session at `url` for `server_id` with `metadata` and message 1
/// (any bytes: the relay refuses or forwards before anything reads it);
/// the refusal's reason, or `None` if it was taken.
async fn open_with(
    url: &str,
    server_id: &str,
    metadata: &[(&'static str, String)],
) -> Result<(), (tonic::Code, Option<CloseReason>, String)> {
    let channel = proto::relay_link::endpoint(
        url,
        Duration::from_secs(5),
        &proto::tls::TlsSettings::default(),
    )
    .unwrap()
    .connect()
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Frame {
        kind: FrameKind::Handshake as i32,
        payload: vec![0u8; 96].into(),
        ..Frame::default()
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert(proto::routing::SERVER_ID_HEADER, server_id.parse().unwrap());
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        TunnelClient::new(channel).open(request),
    )
    .await
    .unwrap();
    drop(tx);
    match answer {
        Ok(_) => Ok(()),
        Err(status) => Err((
            status.code(),
            proto::routing::refusal(&status),
            status.message().to_owned(),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_session_needs_the_fleets_proof_and_is_never_forwarded_again() {
    if !etcd::available("a_forwarded_session_needs_the_fleets_proof_and_is_never_forwarded_again") {
        return;
    }
    let fleet = Fleet::start().await;
    let id = fleet.id();
    let client_ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let now = std::time::SystemTime::now();
    // At B, which holds the exec-server: a proof of another fleet, and
    // one for another server, are refused before the exec-server hears.
    let outsider = relay::fleet::Fleet::from_secret(&[1; 32]);
    let (code, reason, _) = open_with(
        &fleet.b.url(),
        &id,
        &[(
            relay::fleet::PROOF_HEADER,
            outsider.prove(&id, client_ip, now),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (code, reason),
        (tonic::Code::PermissionDenied, Some(CloseReason::NotAllowed))
    );
    let member = relay::fleet::Fleet::from_secret(&FLEET);
    let other_id = "0123456789abcdef0123456789abcdef";
    let (code, reason, _) = open_with(
        &fleet.b.url(),
        &id,
        &[(
            relay::fleet::PROOF_HEADER,
            member.prove(other_id, client_ip, now),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (code, reason),
        (tonic::Code::PermissionDenied, Some(CloseReason::NotAllowed))
    );
    // At A, which does not hold it: a session already forwarded (with a
    // member's proof) is not forwarded again, though A knows where to.
    assert_eq!(
        holder(fleet.a.directory().unwrap(), &id),
        Some(fleet.b.url())
    );
    let (code, reason, _) = open_with(
        &fleet.a.url(),
        &id,
        &[(
            relay::fleet::PROOF_HEADER,
            member.prove(&id, client_ip, now),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (code, reason),
        (tonic::Code::NotFound, Some(CloseReason::UnknownServer))
    );
    // A relay outside the fleet, reading the same directory, cannot use
    // B as a forwarder: its proof is refused, and its client told so.
    let outsider_relay = TestRelay::start_in_fleet(
        relay::RelayConfig::default(),
        &fleet.store.url(),
        TTL,
        &[1; 32],
    )
    .await
    .unwrap();
    let seen = outsider_relay.directory().unwrap().clone();
    assert!(
        eventually(Duration::from_secs(20), || holder(&seen, &id)
            == Some(fleet.b.url()))
        .await
    );
    let (code, reason, message) = open_with(&outsider_relay.url(), &id, &[])
        .await
        .unwrap_err();
    assert_eq!(
        (code, reason),
        (tonic::Code::PermissionDenied, Some(CloseReason::NotAllowed))
    );
    assert!(message.contains(&fleet.b.url()), "{message}");
    // The member's own client still gets through A.
    let client = fleet.client_via(&fleet.a);
    let out = client
        .output(ExecSpec::new(["echo", "ok"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
}

/// Both relays of a forwarded session export their spans of it: each its
/// `relay.session` (the first naming where it forwarded the session, the
/// second marked forwarded), and, in the command's trace, the second
/// relay's `relay.forward` of each frame a child of the first's, so the
/// waterfall shows both relays and the leg between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_relays_of_a_forwarded_session_are_in_its_trace() {
    use integration_tests::binaries;
    use integration_tests::otlp::OtlpReceiver;
    if !etcd::available("both_relays_of_a_forwarded_session_are_in_its_trace") {
        return;
    }
    let store = Etcd::start().unwrap();
    let rx = OtlpReceiver::start().await.unwrap();
    let keys = Keys::make();
    let endpoint = rx.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let (_a, a_url) = keys.relay(&store, &[], &env);
    let (_b, b_url) = keys.relay(&store, &[], &env);
    let _server = keys.exec_server(&b_url, &env);
    // Until A's copy of the directory has the entry: a client of A whose
    // Open is refused as unknown would be a race, not a failure.
    let key = format!("/rex/servers/{}", keys.server_key().server_id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store
        .ctl(&["get", "--keys-only", &key])
        .unwrap()
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no entry for the exec-server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut cmd = binaries::exec_command(
        &a_url,
        &keys.server_pub,
        &keys.client_key,
        &["--print-trace-id"],
        &["echo", "through two relays"],
    )
    .unwrap();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    let out = binaries::run_with_stdin(cmd, b"").unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"through two relays\n");
    let trace = binaries::printed_trace_id(&out).unwrap();
    let of_relays = |spans: &[integration_tests::otlp::RecordedSpan], name: &str| {
        spans
            .iter()
            .filter(|s| s.service == "relay" && s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    // `relay.session` is a root of its own (a relay's view of a session);
    // the frames' forwards are in the command's trace.
    let in_trace = |spans: &[integration_tests::otlp::RecordedSpan], name: &str| {
        let mut spans = of_relays(spans, name);
        spans.retain(|s| s.trace_id == trace);
        spans
    };
    let spans = rx
        .wait_for(Duration::from_secs(30), |spans| {
            of_relays(spans, telemetry::spans::RELAY_SESSION).len() == 2
        })
        .await;
    let sessions = of_relays(&spans, telemetry::spans::RELAY_SESSION);
    let first = sessions
        .iter()
        .find(|s| s.attr_str("rex.relay.forwarded_to") == Some(b_url.as_str()))
        .unwrap_or_else(|| panic!("no relay.session forwarded to B: {sessions:#?}"));
    let second = sessions
        .iter()
        .find(|s| s.attr_bool("rex.relay.forwarded") == Some(true))
        .unwrap_or_else(|| panic!("no forwarded relay.session: {sessions:#?}"));
    assert_ne!(first.span_id, second.span_id);
    // Each frame's forward at B is a child of its forward at A.
    let forwards = in_trace(&spans, telemetry::spans::RELAY_FORWARD);
    let ids: std::collections::HashSet<&str> =
        forwards.iter().map(|s| s.span_id.as_str()).collect();
    let chained = forwards
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_some_and(|p| ids.contains(p)))
        .count();
    assert!(
        chained >= 2,
        "no relay.forward child of another (one per direction at least): {forwards:#?}"
    );
}

/// A forwarded session its client closes ends cleanly at the exec-server:
/// the client's last frames and its close cross both relays before the
/// link between them is let go, so nothing is held there for a resume that
/// will never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_session_the_client_closes_ends_cleanly_at_the_exec_server() {
    if !etcd::available("a_forwarded_session_the_client_closes_ends_cleanly_at_the_exec_server") {
        return;
    }
    let fleet = Fleet::start().await;
    let mut config = ClientConfig::new(
        fleet.client.clone(),
        fleet.server.key.public(),
        Target::Relay(fleet.a.url()),
    );
    config.resume = Some(Duration::from_secs(60));
    let client = Client::new(config);
    let unacked = std::sync::Arc::clone(fleet.server.handle.unacked());
    for _ in 0..3 {
        let out = client
            .output(ExecSpec::new(["head", "-c", "300000", "/dev/zero"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout.len(), 300_000);
        client.close().await;
    }
    assert!(
        eventually(Duration::from_secs(20), || unacked.used() == 0).await,
        "the exec-server holds {} bytes for sessions that were closed",
        unacked.used()
    );
}

/// With no collector anywhere, the client's own trace file shows both
/// relays of a forwarded session: each relay's forwards of the exec request
/// and of the final event, placed on the client's clock (the second
/// relay's between the first's), with the leg between the two relays each
/// way, and the command's stages tile its dispatch exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_trace_shows_both_relays_of_a_forwarded_session() {
    use integration_tests::{binaries, trace_check};
    if !etcd::available("the_local_trace_shows_both_relays_of_a_forwarded_session") {
        return;
    }
    let store = Etcd::start().unwrap();
    let keys = Keys::make();
    let (_a, a_url) = keys.relay(&store, &[], &[]);
    let (_b, b_url) = keys.relay(&store, &[], &[]);
    let _server = keys.exec_server(&b_url, &[]);
    let run = || {
        let cmd = binaries::exec_command(
            &a_url,
            &keys.server_pub,
            &keys.client_key,
            &["--print-trace-id"],
            &["echo", "through two relays"],
        )
        .unwrap();
        binaries::run_with_stdin(cmd, b"").unwrap()
    };
    // Until A's copy of the directory has the route.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = run();
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"through two relays\n");
    let trace = binaries::printed_trace_id(&out).unwrap();
    let traces = keys.client_key.parent().unwrap().join("traces.jsonl");
    let spans = trace_check::from_trace_file(&traces, &trace);
    assert_eq!(
        trace_check::path_of(&spans, "core-client"),
        trace_check::FLEET_PATH
    );
    let dispatch = trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH);
    trace_check::assert_tiles(&spans, dispatch, trace_check::RemoteClock::Placed);
    let legs: Vec<&str> = trace_check::by_name(&spans, telemetry::spans::LINK_TRANSIT)
        .iter()
        .filter_map(|s| s.attr_str("rex.leg"))
        .collect();
    assert_eq!(
        legs.iter().filter(|l| **l == "relay_relay").count(),
        2,
        "{legs:?}"
    );
    // Each relay's forward of the request: the second's a child of the
    // first's, as the relays' own exports have it.
    let forwards = trace_check::by_name(&spans, telemetry::spans::RELAY_FORWARD);
    let ids: std::collections::HashSet<&str> =
        forwards.iter().map(|s| s.span_id.as_str()).collect();
    assert!(
        forwards
            .iter()
            .any(|s| s.parent_span_id.as_deref().is_some_and(|p| ids.contains(p))),
        "no relay.forward under the other relay's: {forwards:#?}"
    );
}

/// A route to a relay that died (its entry not yet expired) fails in one
/// clear error naming that relay, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_fails_clearly_and_promptly() {
    if !etcd::available("a_stale_entry_fails_clearly_and_promptly") {
        return;
    }
    let store = Etcd::start().unwrap();
    let keys = Keys::make();
    // B's lease outlives the test: its entry stays after it dies.
    let (mut b, b_url) = keys.relay(&store, &["--directory-ttl-secs", "300"], &[]);
    let _server = keys.exec_server(&b_url, &[]);
    let a = TestRelay::start_in_fleet(
        relay::RelayConfig::default(),
        &store.url(),
        TTL,
        &keys.fleet_secret(),
    )
    .await
    .unwrap();
    let server_key = keys.server_key();
    let client = keys.client();
    let id = server_key.server_id();
    let seen = a.directory().unwrap().clone();
    assert!(
        eventually(Duration::from_secs(20), || holder(&seen, &id)
            == Some(b_url.clone()))
        .await
    );
    let via_a = || {
        Client::new(ClientConfig::new(
            client.clone(),
            server_key,
            Target::Relay(a.url()),
        ))
    };
    let out = via_a()
        .output(ExecSpec::new(["echo", "ok"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    assert_eq!(
        holder(&seen, &id),
        Some(b_url.clone()),
        "the entry should still be there"
    );
    let asked = std::time::Instant::now();
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        via_a().output(ExecSpec::new(["echo", "ok"])),
    )
    .await
    .expect("the client waited on a dead relay");
    let message = match failed {
        Err(e) => e.to_string(),
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(out)) => panic!("a dead relay served the command: {out:?}"),
    };
    assert!(
        message.contains(&b_url) && message.contains("cannot be reached"),
        "{message}"
    );
    eprintln!(
        "the client was told, {:?} after asking: {message}",
        asked.elapsed()
    );
}

/// 10,000 `Open`s for exec-servers nobody holds, through a relay of the
/// fleet: each refused as unknown from the local copy, none reading the
/// store (no snapshot, no write), nothing left held, and a real client
/// served after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_for_unknown_servers_cost_no_store_reads_and_hold_nothing() {
    const OPENS: usize = 10_000;
    // Within one address's share of unauthenticated sessions (16): the
    // admission limits are not what is measured here.
    const AT_ONCE: usize = 8;
    if !etcd::available("opens_for_unknown_servers_cost_no_store_reads_and_hold_nothing") {
        return;
    }
    let fleet = Fleet::start().await;
    let directory = fleet.a.directory().unwrap().clone();
    let before = directory.stats();
    let channel = proto::relay_link::endpoint(
        &fleet.a.url(),
        Duration::from_secs(5),
        &proto::tls::TlsSettings::default(),
    )
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut unknown = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..OPENS {
        if tasks.len() >= AT_ONCE
            && let Some(done) = tasks.join_next().await
        {
            unknown += usize::from(done.unwrap());
        }
        let channel = channel.clone();
        tasks.spawn(async move {
            let id = format!("{:032x}", 0xdead_0000_0000_u128 + i as u128);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let _ = tx.try_send(Frame {
                kind: FrameKind::Handshake as i32,
                payload: vec![0u8; 96].into(),
                ..Frame::default()
            });
            let mut request =
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            request
                .metadata_mut()
                .insert(proto::routing::SERVER_ID_HEADER, id.parse().unwrap());
            let answer = tokio::time::timeout(
                Duration::from_secs(30),
                TunnelClient::new(channel).open(request),
            )
            .await;
            matches!(answer, Ok(Err(s)) if proto::routing::refusal(&s) == Some(CloseReason::UnknownServer))
        });
    }
    while let Some(done) = tasks.join_next().await {
        unknown += usize::from(done.unwrap());
    }
    let after = directory.stats();
    eprintln!(
        "{unknown} of {OPENS} opens refused as unknown; directory before {before:?}, after {after:?}"
    );
    assert_eq!(unknown, OPENS);
    assert_eq!(
        (after.snapshots, after.writes),
        (before.snapshots, before.writes)
    );
    assert_eq!(after.entries, before.entries);
    assert_eq!(fleet.a.stats.startups.in_flight(), 0);
    let client = fleet.client_via(&fleet.a);
    let out = client
        .output(ExecSpec::new(["echo", "ok"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
}
