//! The relay fleet on a real etcd: three relays of one fleet (in this
//! process) and one etcd (Debian's `etcd-server`, a single member started
//! by the bench), all on loopback.
//!
//! - **Registrations.** `--servers N` (1,000) exec-server registrations,
//!   round-robin across the three relays, each made by the exec-server's
//!   own registration code (`exec_server::registration::register`) with a key of
//!   its own over a connection of its own, and held to the end. The first
//!   `--paced N` (100) are made one at a time (each once the previous is
//!   seen everywhere); the rest `--at-once N` (16) at a time.
//! - **Visibility.** For each registration, from `register` returning (the
//!   relay accepted it) until both other relays' copies of the directory
//!   route it to its relay (`Directory::lookup`; the holding relay's own
//!   lookup is `None` by design: it serves the registration itself). A
//!   thread sweeps the pending ones about every quarter millisecond; the
//!   sweep interval it kept is printed with the figures.
//! - **Steady state.** With every registration in, over a quiet window
//!   (`--window S`, 15 s): what the relays wrote to etcd (their
//!   `DirectoryStats` writes and renewals) and what etcd counted (its
//!   `/metrics`: puts, deletes, transactions, proposals, keep-alives, WAL
//!   fsyncs), per second.
//! - **The forwarding hop.** A real exec-server registered at relay B; a
//!   warm client session through relay A (forwarded to B) and another
//!   through B (direct). Warm execs of `true`, A and B alternating
//!   (`--execs N` (300) each, after `--warmup N` (50) each): p50/p90 of
//!   each and the difference of the p50s. Then bulk: `head -c` of
//!   `--bulk-mib N` (64) MiB to the caller through A and through B,
//!   `--rounds N` (5) rounds, the order rotating: MiB/s of each, the ratio
//!   forwarded/direct (target ≥ 0.9), and this process's CPU per GiB.
//! - **Many sessions over one hop.** `--forwarded N` (1,000) client
//!   sessions through A to the same exec-server at B, opened 32 at a time,
//!   then one `true` on each, all at once: whether they all open and run,
//!   the time each step took, and how many connections B gained (A carries
//!   every forwarded session to B on its one link, as HTTP/2 streams; the
//!   relays set no HTTP/2 stream limit, their own session limits bound
//!   them).
//!
//! Run: `cargo bench -p integration-tests --bench fleet` (options after
//! `--` as above; `--quick` starts from small counts: a check that it runs,
//! not a measurement). It prints a Markdown table of the results. Timings
//! are reported, never asserted: it exits non-zero if etcd cannot be run,
//! or a registration, an entry, an exec or an output goes wrong.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use integration_tests::bench::{
    OPEN_AT_ONCE, median, min_max, open_all, percentile, print_machine, process_cpu_nanos, ratio,
};
use integration_tests::etcd::Etcd;
use integration_tests::stack::{TestRelay, TestServer};
use integration_tests::versus::rounds::{Plan, latencies, throughputs};
use proto::keys::StaticKeypair;
use relay::directory::Directory;
use rex_client::{Client, ClientConfig, Event, ExecSpec, ExitStatus, Target};

/// Bounds every wait (never a measure).
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the visibility thread sleeps between sweeps.
const SWEEP: Duration = Duration::from_micros(250);
const RELAYS: usize = 3;
const NAMES: [&str; RELAYS] = ["A", "B", "C"];
const FLEET: [u8; 32] = [7; 32];
const MIB: f64 = 1024.0 * 1024.0;

struct Options {
    servers: usize,
    paced: usize,
    at_once: usize,
    window: Duration,
    warmup: usize,
    execs: usize,
    bulk_bytes: u64,
    rounds: usize,
    forwarded: usize,
}

fn options() -> Options {
    let quick = std::env::args().any(|a| a == "--quick");
    let (mut servers, mut paced, mut at_once, mut window) = if quick {
        (60, 15, 8, 4)
    } else {
        (1000, 100, 16, 15)
    };
    let (mut warmup, mut execs, mut bulk_mib, mut rounds) = if quick {
        (10, 40, 16, 2)
    } else {
        (50, 300, 64, 5)
    };
    let mut forwarded = if quick { 50 } else { 1000 };
    integration_tests::bench::parse_args(
        &mut [
            ("--servers", &mut servers),
            ("--paced", &mut paced),
            ("--at-once", &mut at_once),
            ("--window", &mut window),
            ("--warmup", &mut warmup),
            ("--execs", &mut execs),
            ("--bulk-mib", &mut bulk_mib),
            ("--rounds", &mut rounds),
            ("--forwarded", &mut forwarded),
        ],
        &[],
        |_, _| {},
    );
    Options {
        servers,
        paced: paced.min(servers),
        at_once,
        window: Duration::from_secs(window as u64),
        warmup,
        execs,
        bulk_bytes: bulk_mib as u64 * 1024 * 1024,
        rounds,
        forwarded,
    }
}

/// A relay's settings here: all registrations come from 127.0.0.1, so
/// the per-source shares and rates (meant for many hosts) are raised.
fn relay_config(servers: usize) -> relay::RelayConfig {
    let mut config = relay::RelayConfig::default();
    config.max_registrations = config.max_registrations.max(servers + 16);
    config.connections.per_source = config.connections.per_source.max(servers + 64);
    config.connections.max_connections = config.connections.max_connections.max(servers + 64);
    config.registrations.per_source = servers + 16;
    config.registrations.rate_per_source = 1e6;
    config.registrations.burst_per_source = 1e6;
    config
}

/// Polls `ok` every millisecond for up to [`PATIENCE`].
async fn eventually(what: &str, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {PATIENCE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    OneAtATime,
    Burst,
}

/// A registration the visibility thread waits to see.
struct Pending {
    id: String,
    holder: usize,
    accepted: Instant,
    phase: Phase,
    seen: [Option<Instant>; RELAYS],
}

/// One registration's visibility: at the first other relay, and at both.
struct Visible {
    phase: Phase,
    accepted: Instant,
    first: Duration,
    everywhere: Duration,
}

/// What the visibility thread found, and how finely it looked.
struct Sweeps {
    visible: Vec<Visible>,
    count: u64,
    mean_gap: Duration,
    max_gap: Duration,
}

/// Sweeps the registrations sent on `track` until the channel closes and
/// each is seen routed to its relay by both other relays; counts each
/// one complete in `done`.
fn watch_visibility(
    directories: [Directory; RELAYS],
    urls: [String; RELAYS],
    track: mpsc::Receiver<Pending>,
    done: Arc<AtomicUsize>,
) -> Result<Sweeps, String> {
    let mut pending: Vec<Pending> = Vec::new();
    let mut visible = Vec::new();
    let mut open = true;
    let (mut count, mut gaps, mut max_gap) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut last: Option<Instant> = None;
    loop {
        loop {
            match track.try_recv() {
                Ok(p) => pending.push(p),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        if !pending.is_empty() {
            // Only sweeps with something to look for count toward the
            // granularity.
            if let Some(last) = last {
                let gap = now - last;
                gaps += gap;
                max_gap = max_gap.max(gap);
                count += 1;
            }
            last = Some(now);
        } else {
            last = None;
        }
        pending.retain_mut(|p| {
            for (r, directory) in directories.iter().enumerate() {
                if r != p.holder
                    && p.seen[r].is_none()
                    && directory
                        .lookup(&p.id)
                        .is_some_and(|e| e.relay == urls[p.holder])
                {
                    p.seen[r] = Some(now);
                }
            }
            let seen: Vec<Duration> = p
                .seen
                .iter()
                .enumerate()
                .filter(|(r, _)| *r != p.holder)
                .filter_map(|(_, s)| s.map(|at| at.saturating_duration_since(p.accepted)))
                .collect();
            if seen.len() < RELAYS - 1 {
                return true;
            }
            visible.push(Visible {
                phase: p.phase,
                accepted: p.accepted,
                first: seen.iter().copied().min().unwrap_or_default(),
                everywhere: seen.iter().copied().max().unwrap_or_default(),
            });
            done.fetch_add(1, Ordering::Relaxed);
            false
        });
        if let Some(late) = pending
            .iter()
            .find(|p| now.duration_since(p.accepted) > PATIENCE)
        {
            return Err(format!(
                "registration {}.. at relay {} not seen by every other relay within {PATIENCE:?}",
                &late.id[..8],
                NAMES[late.holder]
            ));
        }
        if !open && pending.is_empty() {
            break;
        }
        std::thread::sleep(SWEEP);
    }
    Ok(Sweeps {
        visible,
        count,
        mean_gap: gaps.checked_div(count.max(1) as u32).unwrap_or_default(),
        max_gap,
    })
}

/// A registration held: its halves (it lasts while the up half is held).
type Held = (
    tokio::sync::mpsc::Sender<proto::pb::tunnel::RegisterUp>,
    tonic::Streaming<proto::pb::tunnel::RegisterDown>,
);

/// Registers `key` at `url` as an exec-server does, over a connection of
/// its own; the halves and when the relay's acceptance arrived.
async fn register(url: String, key: StaticKeypair) -> Result<(Held, Instant), String> {
    let channel = proto::relay_link::endpoint(
        &url,
        proto::relay_link::CONNECT_TIMEOUT,
        &proto::tls::TlsSettings::default(),
    )
    .map_err(|e| format!("relay URL: {e}"))?
    .connect()
    .await
    .map_err(|e| format!("cannot reach the relay: {e}"))?;
    let route = key.public().server_id();
    let held = exec_server::registration::register(&channel, &key, &route, PATIENCE)
        .await
        .map_err(|e| format!("registration at {url}: {e}"))?;
    Ok((held, Instant::now()))
}

/// etcd's counters (`GET /metrics`), each series by its printed name.
struct Metrics(HashMap<String, f64>);

impl Metrics {
    async fn read(etcd_url: &str) -> Result<Self, String> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<bytes::Bytes>>();
        let uri: hyper::Uri = format!("{etcd_url}/metrics")
            .parse()
            .map_err(|e| format!("etcd metrics URL: {e}"))?;
        let body = tokio::time::timeout(PATIENCE, async {
            let answer = client
                .get(uri)
                .await
                .map_err(|e| format!("GET etcd /metrics: {e}"))?;
            if !answer.status().is_success() {
                return Err(format!("GET etcd /metrics: HTTP {}", answer.status()));
            }
            answer
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("GET etcd /metrics: {e}"))
        })
        .await
        .map_err(|_| "GET etcd /metrics: no answer".to_owned())??;
        let text = String::from_utf8_lossy(&body);
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(name, v)| Some((name.to_owned(), v.parse().ok()?)))
            .collect();
        Ok(Self(series))
    }

    /// The sum of the series named `name` whose labels contain `label`
    /// (all of them for `""`).
    fn sum(&self, name: &str, label: &str) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (n, labels) = series.split_once('{').unwrap_or((series, ""));
                n == name && labels.contains(label)
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// The etcd counters the steady-state window reports: (label, name, label
/// filter).
const COUNTERS: [(&str, &str, &str); 11] = [
    ("puts (mvcc)", "etcd_mvcc_put_total", ""),
    ("deletes (mvcc)", "etcd_mvcc_delete_total", ""),
    ("transactions (mvcc)", "etcd_mvcc_txn_total", ""),
    (
        "proposals committed (raft)",
        "etcd_server_proposals_committed_total",
        "",
    ),
    (
        "WAL fsyncs",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "",
    ),
    (
        "lease keep-alives received (gRPC)",
        "grpc_server_msg_received_total",
        "grpc_method=\"LeaseKeepAlive\"",
    ),
    ("leases renewed", "etcd_debugging_lease_renewed_total", ""),
    (
        "Put requests (gRPC)",
        "grpc_server_msg_received_total",
        "grpc_method=\"Put\"",
    ),
    (
        "Txn requests (gRPC)",
        "grpc_server_msg_received_total",
        "grpc_method=\"Txn\"",
    ),
    (
        "DeleteRange requests (gRPC)",
        "grpc_server_msg_received_total",
        "grpc_method=\"DeleteRange\"",
    ),
    (
        "Range requests (gRPC)",
        "grpc_server_msg_received_total",
        "grpc_method=\"Range\"",
    ),
];

fn delta(before: &Metrics, after: &Metrics, name: &str, label: &str) -> f64 {
    after.sum(name, label) - before.sum(name, label)
}

/// The table the bench prints at the end.
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, measure: impl Into<String>, value: impl Into<String>) {
        let (measure, value) = (measure.into(), value.into());
        println!("{measure}: {value}");
        self.0.push((measure, value));
    }

    fn markdown(&self) -> String {
        let mut text = String::from("| measure | value |\n| --- | --- |\n");
        for (m, v) in &self.0 {
            let _ = writeln!(text, "| {m} | {v} |");
        }
        text
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "p50 X ms, p99 Y ms, max Z ms" of `times`.
fn spread_ms(times: &[Duration]) -> String {
    let max = times.iter().copied().max().unwrap_or_default();
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(times, 0.50) / 1e3,
        percentile(times, 0.99) / 1e3,
        ms(max)
    )
}

/// Registers `opts.servers` exec-servers across `relays` and measures when
/// each is visible everywhere; returns what must be held.
async fn registrations(
    opts: &Options,
    relays: &[TestRelay; RELAYS],
    table: &mut Table,
) -> Result<Vec<Held>, String> {
    let directories = [0, 1, 2].map(|r| relays[r].directory().cloned());
    let [Some(a), Some(b), Some(c)] = directories else {
        return Err("a relay started in the fleet has no directory".into());
    };
    let urls = [0, 1, 2].map(|r| relays[r].url());
    let done = Arc::new(AtomicUsize::new(0));
    let (track, tracked) = mpsc::channel();
    let watcher = {
        let (urls, done) = (urls.clone(), Arc::clone(&done));
        std::thread::spawn(move || watch_visibility([a, b, c], urls, tracked, done))
    };
    let keys: Vec<StaticKeypair> = (0..opts.servers)
        .map(|_| StaticKeypair::generate().map_err(|e| format!("key: {e}")))
        .collect::<Result<_, _>>()?;
    let mut held = Vec::with_capacity(opts.servers);
    let mut result: Result<(), String> = Ok(());
    // One at a time: each once the previous is seen everywhere.
    for (i, key) in keys.iter().enumerate().take(opts.paced) {
        let holder = i % RELAYS;
        let id = key.public().server_id();
        match register(urls[holder].clone(), key.clone()).await {
            Ok((h, accepted)) => {
                held.push(h);
                let _ = track.send(Pending {
                    id,
                    holder,
                    accepted,
                    phase: Phase::OneAtATime,
                    seen: [None; RELAYS],
                });
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = eventually("the last registration seen everywhere", || {
            done.load(Ordering::Relaxed) == i + 1
        })
        .await
        {
            result = Err(e);
            break;
        }
    }
    // The rest, `at_once` at a time.
    let writes = || {
        relays
            .iter()
            .map(|r| r.directory().map_or(0, |d| d.stats().writes))
            .collect::<Vec<_>>()
    };
    let writes_before = writes();
    let burst_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = opts.paced;
    while result.is_ok() && (next < opts.servers || !tasks.is_empty()) {
        while next < opts.servers && tasks.len() < opts.at_once {
            let holder = next % RELAYS;
            let key = keys[next].clone();
            let (url, track) = (urls[holder].clone(), track.clone());
            tasks.spawn(async move {
                let id = key.public().server_id();
                let (h, accepted) = register(url, key).await?;
                let _ = track.send(Pending {
                    id,
                    holder,
                    accepted,
                    phase: Phase::Burst,
                    seen: [None; RELAYS],
                });
                Ok::<_, String>(h)
            });
            next += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(h))) => held.push(h),
            Some(Ok(Err(e))) => result = Err(e),
            Some(Err(e)) => result = Err(format!("registration task: {e}")),
            None => {}
        }
    }
    let burst_accepted = burst_started.elapsed();
    drop(track);
    let sweeps = tokio::task::spawn_blocking(move || watcher.join())
        .await
        .map_err(|e| format!("visibility thread: {e}"))?
        .map_err(|_| "the visibility thread panicked".to_owned())??;
    let burst_visible = burst_started.elapsed();
    let burst_writes: Vec<u64> = writes()
        .iter()
        .zip(&writes_before)
        .map(|(after, before)| after - before)
        .collect();
    result?;

    let burst = opts.servers - opts.paced;
    table.row(
        "registrations",
        format!(
            "{} across {RELAYS} relays (round-robin), each with its own key and connection; \
             {} one at a time, {burst} {} at a time: accepted in {:.2} s ({:.0}/s), \
             all seen everywhere {:.2} s after the first of those",
            opts.servers,
            opts.paced,
            opts.at_once,
            burst_accepted.as_secs_f64(),
            burst as f64 / burst_accepted.as_secs_f64().max(1e-9),
            burst_visible.as_secs_f64(),
        ),
    );
    let per_relay: Vec<String> = burst_writes.iter().map(u64::to_string).collect();
    table.row(
        "directory writes in the burst",
        format!(
            "{} by the {RELAYS} relays ({}): {:.0} entries/s per relay \
             over the {:.2} s until all were seen",
            burst_writes.iter().sum::<u64>(),
            per_relay.join(", "),
            burst_writes.iter().sum::<u64>() as f64
                / RELAYS as f64
                / burst_visible.as_secs_f64().max(1e-9),
            burst_visible.as_secs_f64(),
        ),
    );
    table.row(
        "visibility: polling",
        format!(
            "a sweep of the pending ones every {:.2} ms on average (max gap {:.1} ms), {} sweeps",
            ms(sweeps.mean_gap),
            ms(sweeps.max_gap),
            sweeps.count
        ),
    );
    for (label, phase) in [
        ("one at a time", Some(Phase::OneAtATime)),
        ("in the burst", Some(Phase::Burst)),
        ("all", None),
    ] {
        let of: Vec<&Visible> = sweeps
            .visible
            .iter()
            .filter(|v| phase.is_none_or(|p| v.phase == p))
            .collect();
        if of.is_empty() {
            continue;
        }
        let everywhere: Vec<Duration> = of.iter().map(|v| v.everywhere).collect();
        let first: Vec<Duration> = of.iter().map(|v| v.first).collect();
        table.row(
            format!("visibility at both other relays, {label} ({})", of.len()),
            format!(
                "{}; at the first other relay p50 {:.1} ms",
                spread_ms(&everywhere),
                percentile(&first, 0.5) / 1e3
            ),
        );
    }
    // Whether entries are written in the order accepted: the burst's
    // visibility by quarter of acceptance (first to last).
    let mut burst: Vec<&Visible> = sweeps
        .visible
        .iter()
        .filter(|v| v.phase == Phase::Burst)
        .collect();
    burst.sort_by_key(|v| v.accepted);
    let quarter = burst.len() / 4;
    if quarter > 0 {
        let p50s: Vec<String> = burst
            .chunks(quarter)
            .take(4)
            .map(|q| {
                let times: Vec<Duration> = q.iter().map(|v| v.everywhere).collect();
                format!("{:.1}", percentile(&times, 0.5) / 1e3)
            })
            .collect();
        table.row(
            "visibility in the burst by quarter of acceptance, first to last",
            format!("p50 {} ms", p50s.join(" / ")),
        );
    }
    Ok(held)
}

/// One bulk run: `bytes` zeros to the caller; the time from the call to
/// the exit, after checking count, content and status.
async fn bulk(client: &Client, bytes: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut run = client
        .exec(ExecSpec::new([
            "head",
            "-c",
            &bytes.to_string(),
            "/dev/zero",
        ]))
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let (mut got, mut zeros, mut status) = (0u64, true, None);
    while let Some(event) = run.next().await {
        match event {
            Event::Stdout(d) => {
                got += d.len() as u64;
                zeros &= d.iter().fold(0u8, |acc, b| acc | b) == 0;
            }
            Event::Exited(s) => status = Some(s),
            Event::Failed(f) => return Err(format!("bulk failed: {f}")),
            Event::Stderr(_) | Event::Started { .. } | Event::Reconnecting | Event::Resumed => {}
        }
    }
    let took = started.elapsed();
    if got == bytes && zeros && status == Some(ExitStatus::Code(0)) {
        Ok(took)
    } else {
        Err(format!(
            "bulk went wrong: {got} of {bytes} bytes, all zero: {zeros}, {status:?}"
        ))
    }
}

/// Warm `true` and bulk through A (forwarded to B) and through B.
async fn forwarding(
    opts: &Options,
    relays: &[TestRelay; RELAYS],
    client_key: &StaticKeypair,
    server: &TestServer,
    table: &mut Table,
) -> Result<(), String> {
    let (a, b) = (&relays[0], &relays[1]);
    let id = server.key.public().server_id();
    if a.stats.registry.is_registered(&id) {
        return Err("the exec-server is registered at A: nothing would be forwarded".into());
    }
    let client = |relay: &TestRelay| {
        Client::new(ClientConfig::new(
            client_key.clone(),
            server.key.public(),
            Target::Relay(relay.url()),
        ))
    };
    let (via_a, via_b) = (client(a), client(b));
    let (times_a, times_b) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let rounds = opts.rounds.min(opts.execs);
    let plan = Plan {
        rounds,
        warmup: opts.warmup,
        iterations: opts.execs.div_ceil(rounds),
    };
    let (sa, sb) = latencies(
        plan,
        ("through A (forwarded)", "through B (direct)"),
        async || {
            let t = integration_tests::bench::exec_true(&via_a).await?;
            times_a.borrow_mut().push(t);
            Ok(t)
        },
        async || {
            let t = integration_tests::bench::exec_true(&via_b).await?;
            times_b.borrow_mut().push(t);
            Ok(t)
        },
    )
    .await?;
    // The closures ran the warm-up too: its runs come first.
    let timed = |times: RefCell<Vec<Duration>>| times.into_inner().split_off(opts.warmup);
    let (ta, tb) = (timed(times_a), timed(times_b));
    let (a50, b50) = (percentile(&ta, 0.5), percentile(&tb, 0.5));
    for (label, times, series) in [
        ("through A (forwarded to B)", &ta, &sa),
        ("through B (direct)", &tb, &sb),
    ] {
        let (lo, hi) = min_max(&series.values);
        table.row(
            format!("warm `true` {label}"),
            format!(
                "p50 {:.0} µs, p90 {:.0} µs ({} execs, {} rounds; round p50s {lo:.0}–{hi:.0} µs)",
                percentile(times, 0.5),
                percentile(times, 0.9),
                times.len(),
                rounds,
            ),
        );
    }
    table.row(
        "forwarding hop, warm `true`",
        format!(
            "+{:.0} µs at p50 (forwarded − direct), ×{:.2}",
            a50 - b50,
            a50 / b50
        ),
    );

    #[derive(Clone, Copy)]
    enum Via {
        A,
        B,
    }
    let cpu = [RefCell::new(Vec::new()), RefCell::new(Vec::new())];
    let series = throughputs(
        opts.rounds,
        opts.bulk_bytes,
        &[
            (Via::A, "through A (forwarded)"),
            (Via::B, "through B (direct)"),
        ],
        async |via, warm_up| {
            let (client, i) = match via {
                Via::A => (&via_a, 0),
                Via::B => (&via_b, 1),
            };
            let cpu0 = process_cpu_nanos();
            let took = bulk(client, opts.bulk_bytes).await?;
            if !warm_up {
                let spent = process_cpu_nanos().saturating_sub(cpu0) as f64 / 1e9;
                cpu[i]
                    .borrow_mut()
                    .push(spent / (opts.bulk_bytes as f64 / (1024.0 * MIB)));
            }
            Ok(took)
        },
    )
    .await?;
    let [cpu_a, cpu_b] = cpu.map(RefCell::into_inner);
    let mib = opts.bulk_bytes as f64 / MIB;
    for (label, s, c) in [
        ("through A (forwarded to B)", &series[0], &cpu_a),
        ("through B (direct)", &series[1], &cpu_b),
    ] {
        let (lo, hi) = min_max(&s.values);
        table.row(
            format!("bulk {mib:.0} MiB {label}"),
            format!(
                "{:.0} MiB/s (rounds {lo:.0}–{hi:.0}); this process's CPU {:.2} s/GiB, \
                 i.e. {:.2} cores busy",
                median(&s.values),
                median(c),
                median(&s.values) / 1024.0 * median(c)
            ),
        );
    }
    let (r, lo, hi) = ratio(&series[0].values, &series[1].values);
    let (cr, _, _) = ratio(&cpu_a, &cpu_b);
    table.row(
        "forwarding hop, bulk",
        format!(
            "forwarded/direct {r:.3} (rounds {lo:.3}–{hi:.3}; target ≥ 0.9: {}), CPU per GiB ×{cr:.2}",
            if r >= 0.9 { "met" } else { "missed" }
        ),
    );
    via_a.close().await;
    via_b.close().await;
    Ok(())
}

/// `--forwarded` sessions through A at once, all forwarded to B: opened
/// [`OPEN_AT_ONCE`] at a time, then one `true` on each, all at once.
async fn many_forwarded(
    opts: &Options,
    relays: &[TestRelay; RELAYS],
    client_key: &StaticKeypair,
    server: &TestServer,
    table: &mut Table,
) -> Result<(), String> {
    let (a, b) = (&relays[0], &relays[1]);
    let n = opts.forwarded;
    let config = ClientConfig::new(
        client_key.clone(),
        server.key.public(),
        Target::Relay(a.url()),
    );
    let clients: Vec<Client> = (0..n).map(|_| Client::new(config.clone())).collect();
    let b_connections = b.stats.connections.open();
    let started = Instant::now();
    open_all(&clients)
        .await
        .map_err(|e| format!("through A to B: {e}"))?;
    let opened = started.elapsed();
    let gained = b.stats.connections.open().saturating_sub(b_connections);
    let started = Instant::now();
    let ran =
        futures::future::join_all(clients.iter().map(integration_tests::bench::exec_true)).await;
    let execs = started.elapsed();
    if let Some(Err(first)) = ran.iter().find(|r| r.is_err()) {
        return Err(format!(
            "{} of {n} execs on forwarded sessions failed; first: {first}",
            ran.iter().filter(|r| r.is_err()).count()
        ));
    }
    futures::future::join_all(clients.iter().map(Client::close)).await;
    table.row(
        format!("{n} sessions forwarded at once"),
        format!(
            "all opened through A ({OPEN_AT_ONCE} at a time) in {:.2} s and ran `true` (all at \
             once) in {:.2} s; B's connections grew by {gained} (A's one link to B carries them)",
            opened.as_secs_f64(),
            execs.as_secs_f64(),
        ),
    );
    Ok(())
}

/// What the relays and etcd did over a quiet window.
async fn steady_state(
    opts: &Options,
    relays: &[TestRelay; RELAYS],
    etcd_url: &str,
    table: &mut Table,
) -> Result<(), String> {
    let stats = || {
        relays
            .iter()
            .map(|r| r.directory().map(Directory::stats).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let (s0, m0, t0) = (stats(), Metrics::read(etcd_url).await?, Instant::now());
    tokio::time::sleep(opts.window).await;
    let (s1, m1, secs) = (
        stats(),
        Metrics::read(etcd_url).await?,
        t0.elapsed().as_secs_f64(),
    );
    let per_s = |n: f64| n / secs;
    let writes: u64 = s0.iter().zip(&s1).map(|(a, b)| b.writes - a.writes).sum();
    let renewals: u64 = s0
        .iter()
        .zip(&s1)
        .map(|(a, b)| b.renewals - a.renewals)
        .sum();
    let entries: Vec<String> = s1.iter().map(|s| s.entries.to_string()).collect();
    table.row(
        format!("steady state ({secs:.1} s quiet window), relays"),
        format!(
            "writes {:.2}/s ({writes}), keep-alives sent {:.2}/s ({renewals}) by {RELAYS} relays \
             (lease {} s, renewed every {:.2} s); entries in each copy: {}",
            per_s(writes as f64),
            per_s(renewals as f64),
            relay::directory::DEFAULT_TTL.as_secs(),
            (relay::directory::DEFAULT_TTL / 3)
                .max(Duration::from_millis(500))
                .as_secs_f64(),
            entries.join(", ")
        ),
    );
    let mut counted = Vec::new();
    for (label, name, filter) in COUNTERS {
        let d = delta(&m0, &m1, name, filter);
        counted.push(format!("{label} {:.2}/s ({d:.0})", per_s(d)));
    }
    table.row(
        "steady state, etcd's counters",
        format!(
            "{}; store revision +{}",
            counted.join(", "),
            s1[0].revision - s0[0].revision
        ),
    );
    let cpu = delta(&m0, &m1, "process_cpu_seconds_total", "");
    table.row(
        "steady state, etcd's process",
        format!(
            "CPU {:.2}% of a core; resident {:.1} MiB; database {:.2} MiB ({:.2} MiB in use)",
            per_s(cpu) * 100.0,
            m1.sum("process_resident_memory_bytes", "") / MIB,
            m1.sum("etcd_mvcc_db_total_size_in_bytes", "") / MIB,
            m1.sum("etcd_mvcc_db_total_size_in_use_in_bytes", "") / MIB,
        ),
    );
    Ok(())
}

async fn bench(opts: Options, etcd_url: String) -> Result<bool, String> {
    let mut relays = Vec::with_capacity(RELAYS);
    for _ in 0..RELAYS {
        relays.push(
            TestRelay::start_in_fleet(
                relay_config(opts.servers),
                &etcd_url,
                relay::directory::DEFAULT_TTL,
                &FLEET,
            )
            .await
            .map_err(|e| e.to_string())?,
        );
    }
    let relays: [TestRelay; RELAYS] = relays.try_into().map_err(|_| "three relays".to_owned())?;
    eventually("every relay connected to etcd", || {
        relays
            .iter()
            .all(|r| r.directory().is_some_and(|d| d.stats().connected))
    })
    .await?;
    let empty = Metrics::read(&etcd_url).await?;
    let mut table = Table::default();

    let held = registrations(&opts, &relays, &mut table).await?;
    let full = Metrics::read(&etcd_url).await?;
    let puts = delta(&empty, &full, "etcd_mvcc_put_total", "");
    let fsyncs = delta(
        &empty,
        &full,
        "etcd_disk_wal_fsync_duration_seconds_count",
        "",
    );
    let fsync_secs = delta(
        &empty,
        &full,
        "etcd_disk_wal_fsync_duration_seconds_sum",
        "",
    );
    let db = |m: &Metrics| m.sum("etcd_mvcc_db_total_size_in_use_in_bytes", "");
    table.row(
        "etcd, registering",
        format!(
            "{puts:.0} puts in {fsyncs:.0} WAL fsyncs (mean fsync {:.2} ms); database in use \
             {:.2} → {:.2} MiB, resident {:.1} → {:.1} MiB",
            fsync_secs * 1e3 / fsyncs.max(1.0),
            db(&empty) / MIB,
            db(&full) / MIB,
            empty.sum("process_resident_memory_bytes", "") / MIB,
            full.sum("process_resident_memory_bytes", "") / MIB,
        ),
    );

    // A real exec-server at B, known to A.
    let client_key = StaticKeypair::generate().map_err(|e| format!("key: {e}"))?;
    let server = TestServer::start(Some(relays[1].url()), false, &[&client_key])
        .await
        .map_err(|e| e.to_string())?;
    let id = server.key.public().server_id();
    let b_url = relays[1].url();
    eventually("the exec-server's entry at A", || {
        relays[0]
            .directory()
            .and_then(|d| d.lookup(&id))
            .is_some_and(|e| e.relay == b_url)
    })
    .await?;

    steady_state(&opts, &relays, &etcd_url, &mut table).await?;
    forwarding(&opts, &relays, &client_key, &server, &mut table).await?;
    many_forwarded(&opts, &relays, &client_key, &server, &mut table).await?;
    drop(held);
    println!();
    println!("{}", table.markdown());
    Ok(true)
}

fn main() -> ExitCode {
    let opts = options();
    print_machine();
    let etcd = match Etcd::start() {
        Ok(etcd) => etcd,
        Err(e) => {
            eprintln!(
                "fleet: FAILED: this benchmark needs etcd (Debian: etcd-server) and cannot run it: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let url = etcd.url();
    integration_tests::bench::run("fleet", "", bench(opts, url))
}
