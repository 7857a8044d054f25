//! The relay fleet's directory against a real etcd: entries follow
//! registrations, every relay's copy follows the store, and the store going
//! away degrades nothing that was already working.

use std::time::Duration;

use integration_tests::etcd::{self, Etcd};
use integration_tests::stack::{TestRelay, TestServer};
use proto::keys::StaticKeypair;
use relay::directory::Directory;

const TTL: Duration = Duration::from_secs(3);

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
    let store = Etcd::start().unwrap();
    let a = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL)
        .await
        .unwrap();
    let b = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL)
        .await
        .unwrap();
    let client = StaticKeypair::generate().unwrap();
    let server = TestServer::start(Some(a.url()), false, &[&client])
        .await
        .unwrap();
    let id = server.key.public().server_id();
    let seen_by_b = b.directory().unwrap().clone();
    assert!(
        eventually(Duration::from_secs(20), || holder(&seen_by_b, &id)
            == Some(a.url()))
        .await,
        "relay B never saw the registration at A: {:?}",
        seen_by_b.stats()
    );
    // A holds it itself: its own entry is not a route elsewhere.
    assert_eq!(holder(a.directory().unwrap(), &id), None);
    // What the store holds, read with etcd's own tool.
    let stored = store
        .ctl(&["get", "--print-value-only", &format!("/rex/servers/{id}")])
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(entry["relay"], a.url());
    assert!(entry["registered_at"].as_str().unwrap().ends_with('Z'));
    // The registration ends: the entry goes from the store and from B.
    server.shutdown.cancel();
    assert!(
        eventually(Duration::from_secs(20), || holder(&seen_by_b, &id)
            .is_none())
        .await,
        "the entry outlived the registration"
    );
    assert_eq!(
        store
            .ctl(&["get", "--prefix", "--keys-only", "/rex/servers/"])
            .unwrap()
            .trim(),
        ""
    );
    let stats = seen_by_b.stats();
    assert!(stats.connected && stats.skipped == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_do_not_parse_are_skipped_and_counted() {
    if !etcd::available("entries_that_do_not_parse_are_skipped_and_counted") {
        return;
    }
    let store = Etcd::start().unwrap();
    let a = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL)
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
    let a = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL)
        .await
        .unwrap();
    let b = TestRelay::start_in_fleet(relay::RelayConfig::default(), &store.url(), TTL)
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
    let second = TestServer::start(Some(b.url()), false, &[&client])
        .await
        .unwrap();
    let second_id = second.key.public().server_id();
    assert!(b.stats.registry.is_registered(&second_id));

    store.start_again().unwrap();
    // Both relays are back, and each has the other's entry.
    assert!(
        eventually(Duration::from_secs(30), || {
            holder(&da, &second_id) == Some(b.url()) && holder(&db, &first_id) == Some(a.url())
        })
        .await,
        "entries not back: A {:?}, B {:?}",
        da.stats(),
        db.stats()
    );
    assert!(da.stats().connected && db.stats().connected);
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

#[test]
fn a_killed_relays_entries_vanish_with_its_lease() {
    use integration_tests::binaries::{keygen, spawn};
    if !etcd::available("a_killed_relays_entries_vanish_with_its_lease") {
        return;
    }
    let store = Etcd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    keygen("exec-server", dir.path(), "server.key").unwrap();
    let client_pub = keygen("core-client", dir.path(), "client.key").unwrap();
    let ak = dir.path().join("authorized_keys");
    std::fs::write(&ak, format!("{client_pub}\n")).unwrap();
    let mut relay = spawn(
        "relay",
        &[
            "--listen",
            "127.0.0.1:0",
            "--directory",
            &store.url(),
            "--directory-ttl-secs",
            "2",
        ],
        &[],
    )
    .unwrap();
    let line = relay
        .wait_for_line("in the fleet's directory as", Duration::from_secs(30))
        .unwrap();
    let relay_url = line.rsplit(' ').next().unwrap().to_owned();
    let _server = spawn(
        "exec-server",
        &[
            "--relay",
            &relay_url,
            "--key",
            dir.path().join("server.key").to_str().unwrap(),
            "--authorized-keys",
            ak.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    _server
        .wait_for_line("registered with relay", Duration::from_secs(30))
        .unwrap();
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
