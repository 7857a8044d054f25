//! Cost of command and process records on a warm exec through the relay
//! (relay, exec-server and client in this process, on loopback).
//!
//! Three modes, each with its own relay, exec-server and warm client, run
//! side by side, their order rotating every round:
//! - `off`: neither the client nor the exec-server keeps records;
//! - `on`: both keep them, each in its own SQLite file on the real disk
//!   (WAL, `synchronous=FULL`: every commit is fsynced by the writer thread);
//! - `stalled`: as `on`, but both writers are held (`faults().stall()`)
//!   while a scenario's timed execs run, so records only pile up in memory;
//!   they are resumed and flushed after those execs.
//!
//! Two scenarios per mode and round: `true` (nothing to stream) and
//! `head -c 52428800 /dev/zero` (50 MiB streamed and counted, never kept).
//! After each scenario's timed execs the mode's records are flushed (outside
//! the timings, inside the CPU measure). It prints p50/p99 per scenario and
//! mode (median and min–max over rounds), the ratios to `off`, the CPU per
//! exec, the machine and disk, and whether every exec of `on` and `stalled`
//! left a finished command record (client) and a finished process record
//! (exec-server).
//!
//! Run: `cargo bench -p integration-tests --bench persistence_overhead`
//! (options after `--`: `--rounds R` (default 7), `--execs N` execs of
//! `true` per mode and round (default 200), `--bulk M` 50 MiB execs per mode
//! and round (default 5)).
//! Timings are only reported, never asserted: it exits non-zero only if an
//! exec fails, an output is wrong, or records are missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use core_client::{Client, Event, ExecSpec, ExitStatus};
use exec_server::ExecServerConfig;
use integration_tests::stack::Stack;
use metadata::{Exit, Persister, Progress, Store, WriterConfig};
use tempfile::TempDir;

/// Warm-up execs of `true` per mode, once, before the first round.
const WARMUP: usize = 30;
/// Output of the bulk command, in bytes (50 MiB).
const BULK_BYTES: u64 = 52_428_800;
/// The longest a flush may take before the run is declared broken.
const FLUSH_LIMIT: Duration = Duration::from_secs(120);
/// The target: `on` costs at most this much over `off` at p50.
const TARGET: f64 = 1.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Off,
    On,
    Stalled,
}

const MODES: [Mode; 3] = [Mode::Off, Mode::On, Mode::Stalled];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Stalled => "stalled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    True,
    Bulk,
}

const SCENARIOS: [Scenario; 2] = [Scenario::True, Scenario::Bulk];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::True => "true",
            Scenario::Bulk => "bulk",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::True => "`true`",
            Scenario::Bulk => "`head -c 52428800 /dev/zero` (50 MiB)",
        }
    }

    /// The unit its times are printed in, and the factor from microseconds.
    fn unit(self) -> (&'static str, f64) {
        match self {
            Scenario::True => ("us", 1.0),
            Scenario::Bulk => ("ms", 1e-3),
        }
    }
}

struct Args {
    rounds: usize,
    execs: usize,
    bulk: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        rounds: 7,
        execs: 200,
        bulk: 5,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let slot = match word.as_str() {
            "--rounds" => &mut args.rounds,
            "--execs" => &mut args.execs,
            "--bulk" => &mut args.bulk,
            // cargo bench passes `--bench`; anything else unknown is ignored.
            _ => continue,
        };
        if let Some(n) = words.next().and_then(|v| v.parse().ok()) {
            *slot = n;
        }
    }
    args.rounds = args.rounds.max(1);
    args.execs = args.execs.max(1);
    args.bulk = args.bulk.max(1);
    args
}

/// The two persisters of a recording mode and the directories they write.
struct Records {
    client: Persister,
    server: Persister,
    _client_dir: TempDir,
    _server_dir: TempDir,
}

impl Records {
    fn open(base: &Path, mode: Mode) -> Result<Self, String> {
        let dir = |side: &str| {
            tempfile::Builder::new()
                .prefix(&format!("rex-persistence-{}-{side}-", mode.name()))
                .tempdir_in(base)
                .map_err(|e| format!("temporary directory under {}: {e}", base.display()))
        };
        let open = |dir: &TempDir| {
            metadata::open(dir.path(), WriterConfig::default()).map_err(|e| e.to_string())
        };
        let (client_dir, server_dir) = (dir("client")?, dir("server")?);
        Ok(Self {
            client: open(&client_dir)?,
            server: open(&server_dir)?,
            _client_dir: client_dir,
            _server_dir: server_dir,
        })
    }

    fn stall(&self) {
        self.client.faults().stall();
        self.server.faults().stall();
    }

    fn resume(&self) {
        self.client.faults().resume();
        self.server.faults().resume();
    }

    /// Waits until both writers committed everything recorded so far
    /// (blocking, so off the runtime's workers).
    async fn flush(&self) -> Result<(), String> {
        let (client, server) = (self.client.clone(), self.server.clone());
        tokio::task::spawn_blocking(move || {
            client
                .flush_within(FLUSH_LIMIT)
                .and_then(|()| server.flush_within(FLUSH_LIMIT))
        })
        .await
        .map_err(|e| format!("flush task failed: {e}"))?
        .map_err(|e| format!("flush failed: {e}"))
    }
}

/// What one batch of timed execs measured.
struct Timed {
    times: Vec<Duration>,
    /// CPU per exec, all threads, microseconds.
    cpu_us: f64,
    /// CPU per exec of the metadata writer threads, microseconds.
    writer_us: f64,
}

/// One mode's relay, exec-server, warm client and records.
struct Side {
    mode: Mode,
    client: Client,
    records: Option<Records>,
    /// Execs done so far, warm-ups included, per scenario.
    done: BTreeMap<Scenario, usize>,
    _stack: Stack,
}

impl Side {
    async fn start(mode: Mode, base: &Path) -> Result<Self, String> {
        let records = match mode {
            Mode::Off => None,
            Mode::On | Mode::Stalled => Some(Records::open(base, mode)?),
        };
        let server_records = records.as_ref().map(|r| r.server.clone());
        let stack = Stack::start_with(move |cfg: &mut ExecServerConfig| {
            cfg.metadata = server_records;
        })
        .await;
        let mut config = stack.client_config();
        config.metadata = records.as_ref().map(|r| r.client.clone());
        Ok(Self {
            mode,
            client: Client::new(config),
            records,
            done: BTreeMap::new(),
            _stack: stack,
        })
    }

    async fn exec(&mut self, scenario: Scenario) -> Result<Duration, String> {
        let took = match scenario {
            Scenario::True => exec_true(&self.client).await,
            Scenario::Bulk => exec_bulk(&self.client).await,
        }
        .map_err(|e| format!("{} mode: {e}", self.mode.name()))?;
        *self.done.entry(scenario).or_insert(0) += 1;
        Ok(took)
    }

    /// Times `n` execs of `scenario` (the writers held meanwhile in
    /// `stalled` mode), then flushes. Returns the times and the CPU per
    /// exec in microseconds (all threads, and the metadata writers alone),
    /// the flush included.
    async fn run(&mut self, scenario: Scenario, n: usize) -> Result<Timed, String> {
        let stalled = self.mode == Mode::Stalled;
        if stalled && let Some(r) = &self.records {
            r.stall();
        }
        let (cpu_before, writer_before) = (process_cpu_nanos(), writer_cpu_nanos());
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            times.push(self.exec(scenario).await?);
        }
        if let Some(r) = &self.records {
            if stalled {
                r.resume();
            }
            r.flush().await?;
        }
        let per_exec = |now: u64, before: u64| now.saturating_sub(before) as f64 / n as f64 / 1e3;
        Ok(Timed {
            cpu_us: per_exec(process_cpu_nanos(), cpu_before),
            writer_us: per_exec(writer_cpu_nanos(), writer_before),
            times,
        })
    }

    fn execs_done(&self) -> usize {
        self.done.values().sum()
    }
}

/// One exec of `true`, checked; its wall time.
async fn exec_true(client: &Client) -> Result<Duration, String> {
    let started = Instant::now();
    let result = client.output(ExecSpec::new(["true"])).await;
    let took = started.elapsed();
    match result {
        Ok(Ok(out))
            if out.status == ExitStatus::Code(0)
                && out.stdout.is_empty()
                && out.stderr.is_empty() =>
        {
            Ok(took)
        }
        other => Err(format!("exec of `true` went wrong: {other:?}")),
    }
}

/// One exec of the 50 MiB command, its output counted as it streams (never
/// kept) and checked; its wall time.
async fn exec_bulk(client: &Client) -> Result<Duration, String> {
    let count = BULK_BYTES.to_string();
    let started = Instant::now();
    let mut exec = client
        .exec(ExecSpec::new(["head", "-c", count.as_str(), "/dev/zero"]))
        .await
        .map_err(|e| format!("bulk exec not dispatched: {e}"))?;
    let (mut stdout, mut stderr) = (0u64, 0u64);
    let status = loop {
        match exec.next().await {
            Some(Event::Started { .. }) => {}
            Some(Event::Stdout(d)) => stdout += d.len() as u64,
            Some(Event::Stderr(d)) => stderr += d.len() as u64,
            Some(Event::Exited(status)) => break status,
            Some(Event::Failed(f)) => return Err(format!("bulk exec failed: {f}")),
            None => return Err("bulk exec ended without an exit event".into()),
        }
    };
    let took = started.elapsed();
    if status == ExitStatus::Code(0) && stdout == BULK_BYTES && stderr == 0 {
        Ok(took)
    } else {
        Err(format!(
            "bulk exec went wrong: {status:?}, {stdout} stdout bytes (expected {BULK_BYTES}), {stderr} stderr bytes"
        ))
    }
}

/// CPU time of every thread of this process so far (client, relays,
/// exec-servers and the metadata writers all live here; spawned commands
/// do not), in nanoseconds, summed over `/proc/self/task/*/schedstat`.
/// Threads that have ended are missing from the sum; the runtime's workers
/// and the writers live throughout.
fn process_cpu_nanos() -> u64 {
    threads_cpu_nanos(|_| true)
}

/// The same for the metadata writer threads alone.
fn writer_cpu_nanos() -> u64 {
    threads_cpu_nanos(|name| name == "metadata-writer")
}

/// CPU time of this process's threads whose name passes `keep`.
fn threads_cpu_nanos(keep: impl Fn(&str) -> bool) -> u64 {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0u64;
    for thread in threads.flatten() {
        let dir = thread.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !keep(name.trim_end()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    total
}

/// The `p` quantile of `times` (nearest rank), in microseconds.
fn percentile(times: &[Duration], p: f64) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e6
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// A command's trimmed stdout, if it ran and succeeded.
fn run_text(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn print_machine() {
    let nproc = run_text("nproc", &[])
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .filter(|l| l.starts_with("model name"))
                .find_map(|l| l.split_once(':').map(|(_, v)| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".into());
    let kernel = run_text("uname", &["-r"]).unwrap_or_else(|| "?".into());
    let rustc = run_text("rustc", &["--version"]).unwrap_or_else(|| "?".into());
    let mut commit =
        run_text("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty = run_text("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        commit.push_str(" (with uncommitted changes)");
    }
    println!("machine: nproc {nproc}; cpu {cpu}; kernel {kernel}");
    println!("toolchain: {rustc}; commit {commit}");
}

/// What `df` says holds `dir`.
struct Disk {
    device: String,
    fs_type: String,
    mount: String,
}

impl Disk {
    fn of(dir: &Path) -> Option<Self> {
        let dir = dir.to_str()?;
        let text = run_text("df", &["-PT", dir])?;
        let fields: Vec<&str> = text.lines().nth(1)?.split_whitespace().collect();
        if fields.len() < 7 {
            return None;
        }
        Some(Self {
            device: fields[0].to_owned(),
            fs_type: fields[1].to_owned(),
            mount: fields[fields.len() - 1].to_owned(),
        })
    }

    /// Whether writes reach a device (fsync means something).
    fn is_real(&self) -> bool {
        !matches!(self.fs_type.as_str(), "tmpfs" | "ramfs" | "devtmpfs")
    }

    fn describe(&self) -> String {
        let what = if self.is_real() {
            "a real disk, not tmpfs"
        } else {
            "NOT a real disk: fsync costs nothing here"
        };
        format!(
            "{} on {} (mounted at {}): {what}",
            self.fs_type, self.device, self.mount
        )
    }
}

/// Where the records go: the first candidate on a real disk (cargo's
/// per-target temporary directory, then the system's), else the first.
fn records_base() -> (PathBuf, String) {
    let candidates = [
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        std::env::temp_dir(),
    ];
    let mut first = None;
    for dir in candidates {
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        let disk = Disk::of(&dir);
        let description = disk
            .as_ref()
            .map_or_else(|| "unknown filesystem (df failed)".into(), Disk::describe);
        if disk.as_ref().is_some_and(Disk::is_real) {
            return (dir, description);
        }
        first.get_or_insert((dir, description));
    }
    first.unwrap_or_else(|| (std::env::temp_dir(), "unknown filesystem".into()))
}

/// What one persister's file holds.
struct Stored {
    rows: usize,
    /// Finished, exit code 0.
    finished_ok: usize,
    /// Finished with exactly the bulk command's output counted.
    bulk_bytes: usize,
}

fn stored(persister: &Persister, commands: bool) -> Result<Stored, String> {
    let path = persister.path();
    let store = Store::open(path).map_err(|e| e.to_string())?;
    let rows: Vec<(Progress, Option<Exit>, u64)> = if commands {
        store
            .commands(usize::MAX)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|c| (c.progress, c.exit, c.stdout_bytes))
            .collect()
    } else {
        store
            .processes(usize::MAX)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| (p.progress, p.exit, p.stdout_bytes))
            .collect()
    };
    let finished_ok = |(progress, exit, _): &&(Progress, Option<Exit>, u64)| {
        *progress == Progress::Finished && *exit == Some(Exit::Code(0))
    };
    Ok(Stored {
        rows: rows.len(),
        finished_ok: rows.iter().filter(finished_ok).count(),
        bulk_bytes: rows
            .iter()
            .filter(finished_ok)
            .filter(|(_, _, out)| *out == BULK_BYTES)
            .count(),
    })
}

/// Checks a recording mode's files against the execs it ran; prints the
/// outcome and returns whether nothing is missing.
async fn check_records(side: &Side) -> Result<bool, String> {
    let Some(records) = &side.records else {
        return Ok(true);
    };
    records.flush().await?;
    let execs = side.execs_done();
    let bulk = side.done.get(&Scenario::Bulk).copied().unwrap_or(0);
    let mut complete = true;
    for (label, persister, commands) in [
        ("client command", &records.client, true),
        ("exec-server process", &records.server, false),
    ] {
        let s = stored(persister, commands)?;
        let ok = s.rows == execs && s.finished_ok == execs && s.bulk_bytes == bulk;
        complete &= ok;
        println!(
            "{:<8} {label} records: {} finished with exit 0 of {execs} execs ({} rows; {} of {bulk} bulk rows with {BULK_BYTES} stdout bytes){}",
            side.mode.name(),
            s.finished_ok,
            s.rows,
            s.bulk_bytes,
            if ok { "" } else { " -- RECORDS MISSING" }
        );
    }
    Ok(complete)
}

type Series = BTreeMap<(Scenario, Mode), Vec<f64>>;

/// `mode`'s median over `off`'s median, and the range of the per-round
/// ratios.
fn ratio(series: &Series, scenario: Scenario, mode: Mode) -> (f64, f64, f64) {
    let of = &series[&(scenario, mode)];
    let off = &series[&(scenario, Mode::Off)];
    let per_round: Vec<f64> = of.iter().zip(off).map(|(m, o)| m / o).collect();
    let (lo, hi) = min_max(&per_round);
    (median(of) / median(off), lo, hi)
}

async fn bench(args: &Args) -> Result<bool, String> {
    let (base, disk) = records_base();
    println!(
        "persistence overhead: warm execs through the relay, records off / on (real fsync) / writers stalled; \
         {} rounds x ({} `true` + {} x 50 MiB) timed execs per mode ({WARMUP} warm-up `true` execs per mode first)",
        args.rounds, args.execs, args.bulk
    );
    print_machine();
    println!("records: under {}: {disk}", base.display());

    let mut sides = Vec::with_capacity(MODES.len());
    for mode in MODES {
        sides.push(Side::start(mode, &base).await?);
    }
    for side in &mut sides {
        for _ in 0..WARMUP {
            side.exec(Scenario::True).await?;
        }
        if let Some(r) = &side.records {
            r.flush().await?;
        }
    }

    let mut p50 = Series::new();
    let mut p99 = Series::new();
    let mut cpu = Series::new();
    let mut writer = Series::new();
    for round in 0..args.rounds {
        let order: Vec<usize> = (0..MODES.len())
            .map(|i| (round + i) % MODES.len())
            .collect();
        for &i in &order {
            let side = &mut sides[i];
            for scenario in SCENARIOS {
                let n = match scenario {
                    Scenario::True => args.execs,
                    Scenario::Bulk => args.bulk,
                };
                let timed = side.run(scenario, n).await?;
                let times = &timed.times;
                let key = (scenario, side.mode);
                p50.entry(key).or_default().push(percentile(times, 0.50));
                p99.entry(key).or_default().push(percentile(times, 0.99));
                cpu.entry(key).or_default().push(timed.cpu_us);
                writer.entry(key).or_default().push(timed.writer_us);
            }
        }
        let names: Vec<&str> = order.iter().map(|&i| MODES[i].name()).collect();
        eprintln!(
            "round {}/{} done ({})",
            round + 1,
            args.rounds,
            names.join(", ")
        );
    }

    for scenario in SCENARIOS {
        let (unit, scale) = scenario.unit();
        println!();
        println!("{}", scenario.title());
        println!(
            "{:<10} {:>10} {:>21} {:>10} {:>21}",
            "mode",
            format!("p50 ({unit})"),
            format!("p50 range ({unit})"),
            format!("p99 ({unit})"),
            format!("p99 range ({unit})")
        );
        for mode in MODES {
            let (a, b) = (&p50[&(scenario, mode)], &p99[&(scenario, mode)]);
            let ((alo, ahi), (blo, bhi)) = (min_max(a), min_max(b));
            println!(
                "{:<10} {:>10.1} {:>21} {:>10.1} {:>21}",
                mode.name(),
                median(a) * scale,
                format!("{:.1}-{:.1}", alo * scale, ahi * scale),
                median(b) * scale,
                format!("{:.1}-{:.1}", blo * scale, bhi * scale)
            );
        }
    }

    println!();
    for scenario in SCENARIOS {
        for (label, series) in [("p50", &p50), ("p99", &p99)] {
            for mode in [Mode::On, Mode::Stalled] {
                let (r, lo, hi) = ratio(series, scenario, mode);
                println!(
                    "{}/off {} {label} ratio {r:.3} (per round {lo:.3}-{hi:.3})",
                    mode.name(),
                    scenario.name()
                );
            }
        }
    }

    println!();
    println!(
        "CPU per exec (all threads: clients, relays, exec-servers, metadata writers, including the flush after each batch; the spawned command excluded)"
    );
    for scenario in SCENARIOS {
        for mode in MODES {
            let values = &cpu[&(scenario, mode)];
            let (lo, hi) = min_max(values);
            let writers = &writer[&(scenario, mode)];
            let (wlo, whi) = min_max(writers);
            println!(
                "{:<5} {:<10} {:>10.1} us (per round {lo:.1}-{hi:.1}); metadata writers {:.1} us (per round {wlo:.1}-{whi:.1})",
                scenario.name(),
                mode.name(),
                median(values),
                median(writers)
            );
        }
        for mode in [Mode::On, Mode::Stalled] {
            let (r, lo, hi) = ratio(&cpu, scenario, mode);
            println!(
                "{}/off {} CPU ratio {r:.3} (per round {lo:.3}-{hi:.3})",
                mode.name(),
                scenario.name()
            );
        }
    }

    println!();
    for scenario in SCENARIOS {
        let (r, _, _) = ratio(&p50, scenario, Mode::On);
        let verdict = if r <= TARGET { "met" } else { "missed" };
        println!(
            "on/off {} p50 ratio {r:.3} (target <= {TARGET:.2}): {verdict}",
            scenario.name()
        );
    }

    println!();
    let mut complete = true;
    for side in &sides {
        complete &= check_records(side).await?;
    }
    for side in &sides {
        if let Some(r) = &side.records {
            let (client, server) = (r.client.clone(), r.server.clone());
            let stopped = tokio::task::spawn_blocking(move || {
                client
                    .shutdown(FLUSH_LIMIT)
                    .and_then(|()| server.shutdown(FLUSH_LIMIT))
            })
            .await;
            if !matches!(stopped, Ok(Ok(()))) {
                eprintln!(
                    "note: stopping the {} writers: {stopped:?}",
                    side.mode.name()
                );
            }
        }
    }
    Ok(complete)
}

fn main() -> ExitCode {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(bench(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("persistence_overhead: FAILED: records are missing");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("persistence_overhead: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
