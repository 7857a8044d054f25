//! The relay's credit for what an exec-server sends toward its clients:
//! a session whose client stops reading holds at most the credit window at
//! the relay, whatever HTTP/2's window; a session whose client reads gets
//! everything, byte-exact; sessions that stall together hold at most a
//! floor each and the relay's pool; and with the defaults, one session of
//! an exec-server far from the relay gets the widest window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::stack::{TestRelay, TestServer};
use proto::keys::StaticKeypair;
use rex_client::{Client, ClientConfig, Event, ExecSpec, ExitStatus, Target};

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script])
}

const WINDOW: u32 = 64 * 1024;

/// A relay granting `credit`, and an exec-server whose calls start with a
/// wide output window (16 MiB: more than the sockets of a stalled path
/// take, so that the rest reaches the relay).
async fn stack(credit: u32) -> (TestRelay, TestServer, ClientConfig) {
    let mut config = relay::RelayConfig::default();
    config.session_credit = credit;
    stack_with(config).await
}

/// [`stack`] with a relay configured as `config`.
async fn stack_with(config: relay::RelayConfig) -> (TestRelay, TestServer, ClientConfig) {
    let relay = TestRelay::start_with(config).await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start_configured(Some(relay.url()), false, &[&client_key], |c| {
        c.resume_buffer = 16 << 20;
    })
    .await
    .unwrap();
    let config = ClientConfig::new(client_key, server.key.public(), Target::Relay(relay.url()));
    (relay, server, config)
}

/// Output counted as it comes, and checked against `yes abcdefg`'s.
#[derive(Default)]
struct Tally {
    bytes: u64,
    digest: u64,
}

fn step(digest: u64, b: u8) -> u64 {
    digest.wrapping_mul(31).wrapping_add(u64::from(b))
}

impl Tally {
    fn add(&mut self, d: &[u8]) {
        self.digest = d.iter().fold(self.digest, |h, b| step(h, *b));
        self.bytes += d.len() as u64;
    }

    /// The bytes counted, once they are checked to be what `yes abcdefg`
    /// prints, in order.
    fn checked(&self) -> u64 {
        let len = usize::try_from(self.bytes).unwrap();
        let expected = b"abcdefg\n"
            .iter()
            .cycle()
            .take(len)
            .fold(0, |h, b| step(h, *b));
        assert_eq!(self.digest, expected, "{} bytes not as printed", self.bytes);
        self.bytes
    }
}

/// The rest of `run`'s output, counted into `tally`: its final event.
async fn read_rest(run: &mut rex_client::Execution, tally: &mut Tally) -> Option<Event> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(60), run.next()).await;
        let Ok(next) = next else {
            panic!("output stopped after {} bytes", tally.bytes);
        };
        match next {
            Some(Event::Stdout(d)) => tally.add(&d),
            Some(Event::Started { .. } | Event::Stderr(_)) => {}
            last => return last,
        }
    }
}

/// Output read to the end: its bytes and the final event.
async fn read_all(mut run: rex_client::Execution) -> (u64, Option<Event>) {
    let mut tally = Tally::default();
    let last = read_rest(&mut run, &mut tally).await;
    (tally.checked(), last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_under_credit_carries_its_output_whole_and_holds_at_most_the_window() {
    let (relay, _server, config) = stack(WINDOW).await;
    let client = Client::new(config);
    let run = client
        .exec(sh("yes abcdefg | head -c 8000000"))
        .await
        .unwrap();
    let (bytes, last) = read_all(run).await;
    assert_eq!(bytes, 8_000_000);
    assert_eq!(last, Some(Event::Exited(ExitStatus::Code(0))));
    let credit = relay.stats.registry.credit();
    eprintln!(
        "credit: {} sessions, widest window {} bytes, peak held {} bytes, {} overruns",
        credit.sessions(),
        credit.widest_window(),
        credit.peak_held(),
        credit.overruns()
    );
    assert!(credit.sessions() >= 1);
    // Each stream asks for a round trip of the link (next to the relay:
    // the least); none held more than it was given.
    assert!(credit.widest_window() >= u64::from(WINDOW));
    assert!(credit.peak_held() <= credit.widest_window());
    assert_eq!(credit.overruns(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_defaults_a_far_exec_servers_session_gets_the_widest_window() {
    // An exec-server 100 ms from the relay asks for the widest window (one
    // round trip of its link at the rate credit is sized for); the relay's
    // default pool lends it all of it. (With the 4 MiB pool it once had, a
    // session 50 ms away was held to about 55 MiB/s.)
    let relay = TestRelay::start_with(relay::RelayConfig::default())
        .await
        .unwrap();
    let link = link_emulator::Emulator::start(
        link_emulator::Config::new(relay.addr).rtt(Duration::from_millis(100)),
    )
    .unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start_configured(Some(link.url()), false, &[&client_key], |_| {})
        .await
        .unwrap();
    let config = ClientConfig::new(client_key, server.key.public(), Target::Relay(relay.url()));
    let run = Client::new(config)
        .exec(sh("yes abcdefg | head -c 24000000"))
        .await
        .unwrap();
    let (bytes, last) = read_all(run).await;
    assert_eq!(bytes, 24_000_000);
    assert_eq!(last, Some(Event::Exited(ExitStatus::Code(0))));
    let credit = relay.stats.registry.credit();
    let widest = u64::from(proto::routing::MAX_CREDIT_WINDOW);
    assert!(
        credit.widest_window() >= widest,
        "widest window {} of {widest}; pool {}, at most {} drawn",
        credit.widest_window(),
        credit.pool(),
        credit.peak_pooled()
    );
    assert!(credit.peak_held() <= credit.widest_window());
    assert_eq!(credit.overruns(), 0);
    drop(server);
    link.shutdown();
}

/// A client on a thread of its own that runs `yes` for `len` bytes, reads
/// the first `first` of them, says so on `ready`, and then freezes (its
/// thread blocked: nothing reads its socket, as with a process stopped)
/// until `thaw` says, before reading the rest.
fn frozen_client(
    config: ClientConfig,
    len: u64,
    ready: std::sync::mpsc::Sender<()>,
    thaw: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<(u64, Option<Event>)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = Client::new(config);
        let mut run = rt
            .block_on(client.exec(sh(&format!("yes abcdefg | head -c {len}"))))
            .unwrap();
        let mut tally = Tally::default();
        rt.block_on(async {
            while tally.bytes < 1 << 20 {
                match run.next().await {
                    Some(Event::Stdout(d)) => tally.add(&d),
                    Some(Event::Started { .. }) => {}
                    other => panic!("{other:?} before the freeze"),
                }
            }
        });
        ready.send(()).unwrap();
        thaw.recv().unwrap();
        let last = rt.block_on(read_rest(&mut run, &mut tally));
        drop(client);
        (tally.checked(), last)
    })
}

/// Freezes `sessions` clients of `config` mid-output (each running `yes`
/// for `len` bytes), runs another client's command meanwhile, then thaws
/// them and checks that every byte of each arrives.
async fn freeze_and_thaw(config: &ClientConfig, relay: &TestRelay, sessions: usize, len: u64) {
    let mut frozen = Vec::new();
    for _ in 0..sessions {
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (thaw, thaw_rx) = std::sync::mpsc::channel();
        let client = frozen_client(config.clone(), len, ready_tx, thaw_rx);
        frozen.push((client, ready, thaw));
    }
    for (_, ready, _) in &frozen {
        ready.recv().unwrap();
    }
    // While they are frozen (what they would take waits in the sockets,
    // the relay and the exec-server, each as far as it lets it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A session of another client meanwhile.
    let honest = Client::new(config.clone());
    let run = honest
        .exec(sh("yes abcdefg | head -c 100000"))
        .await
        .unwrap();
    assert_eq!(
        read_all(run).await,
        (100_000, Some(Event::Exited(ExitStatus::Code(0))))
    );
    let credit = relay.stats.registry.credit();
    eprintln!(
        "{sessions} clients frozen: the relay queued at most {} bytes; credit: {} sessions, \
         widest window {} bytes, peak held {} bytes, pool {} bytes (at most {} drawn), \
         {} grants cut, {} overruns",
        relay.stats.budget.peak(),
        credit.sessions(),
        credit.widest_window(),
        credit.peak_held(),
        credit.pool(),
        credit.peak_pooled(),
        credit.cut_grants(),
        credit.overruns()
    );
    for (client, _, thaw) in frozen {
        thaw.send(()).unwrap();
        let got = tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
        assert_eq!(got, (len, Some(Event::Exited(ExitStatus::Code(0)))));
    }
}

/// What the relay counts for each queued frame beyond its payload, with
/// room for the frames' own headers.
const PER_FRAME: u64 = relay::budget::FRAME_OVERHEAD as u64 + 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_frozen_mid_output_hold_at_most_the_window_each_and_lose_nothing() {
    const SESSIONS: usize = 4;
    let (relay, _server, config) = stack(WINDOW).await;
    freeze_and_thaw(&config, &relay, SESSIONS, 64_000_000).await;
    // Each session's frames in the relay's queue toward its client (the
    // honest one's too), with what the relay counts for each frame beyond
    // its payload, were never more than the window's worth at once: without
    // credit each could queue its whole share (`--session-buffer-kib`, 128).
    let credit = relay.stats.registry.credit();
    let bound = (SESSIONS as u64 + 1) * (credit.widest_window() + 8 * PER_FRAME);
    let queued_most = relay.stats.budget.peak() as u64;
    assert!(queued_most <= bound, "{queued_most} queued, over {bound}");
    assert!(credit.peak_held() <= credit.widest_window());
    assert_eq!(credit.overruns(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_clients_share_the_relays_pool_and_hold_a_floor_each_beyond_it() {
    // Windows of 256 KiB, but a pool of only 128 KiB beyond each session's
    // 64 KiB floor; and a queue share wide enough to hold a whole window,
    // so that the queue shows all a session holds here.
    const SESSIONS: usize = 4;
    const POOL: u64 = 128 * 1024;
    let floor = u64::from(proto::routing::CREDIT_FLOOR);
    let mut config = relay::RelayConfig::default();
    config.session_credit = 256 * 1024;
    config.credit_pool = POOL;
    config.session_buffer = 1 << 20;
    let (relay, _server, config) = stack_with(config).await;
    freeze_and_thaw(&config, &relay, SESSIONS, 64_000_000).await;
    let credit = relay.stats.registry.credit();
    // Sessions moved beyond their floor while the pool had room, and the
    // pool ran short of what they asked for.
    assert!(credit.widest_window() > floor);
    assert!(credit.cut_grants() > 0);
    assert!(credit.peak_pooled() <= POOL);
    // Together, never more than a floor each and the pool: without the
    // pool each frozen session would hold its whole 256 KiB.
    let bound = POOL + (SESSIONS as u64 + 1) * (floor + 8 * PER_FRAME);
    let queued_most = relay.stats.budget.peak() as u64;
    assert!(queued_most <= bound, "{queued_most} queued, over {bound}");
    assert_eq!(credit.overruns(), 0);
    // The relay ends each session's halves a moment after its client has
    // gone: then every share is back.
    for _ in 0..600 {
        if credit.pooled() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(credit.pooled(), 0, "every session gave its share back");
}
