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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use exec_server::ExecServerConfig;
use integration_tests::bench::{
    exec_true, median, min_max, percentile, print_machine, process_cpu_nanos, rotated, run_text,
    threads_cpu_nanos,
};
use integration_tests::stack::Stack;
use metadata::{Exit, Persister, Progress, Store, WriterConfig};
use rex_client::{Client, Event, ExecSpec, ExitStatus};
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
    let (mut rounds, mut execs, mut bulk) = (7, 200, 5);
    integration_tests::bench::parse_args(
        &mut [
            ("--rounds", &mut rounds),
            ("--execs", &mut execs),
            ("--bulk", &mut bulk),
        ],
        &[],
        |_, _| {},
    );
    Args {
        rounds,
        execs,
        bulk,
    }
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
        .await
        .map_err(|e| format!("{} mode: {e}", mode.name()))?;
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
            Some(Event::Started { .. } | Event::Reconnecting | Event::Resumed) => {}
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

/// CPU time of the metadata writer threads so far, in nanoseconds.
fn writer_cpu_nanos() -> u64 {
    threads_cpu_nanos(Some("metadata-writer"))
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
    integration_tests::bench::ratio(&series[&(scenario, mode)], &series[&(scenario, Mode::Off)])
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
    let indices: Vec<usize> = (0..MODES.len()).collect();
    for round in 0..args.rounds {
        let order = rotated(&indices, round);
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
    integration_tests::bench::run("persistence_overhead", "records are missing", bench(&args))
}
