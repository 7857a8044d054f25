//! Pieces the benchmarks in `tests/benches/` share: their command line,
//! the exec they time, CPU time from `/proc`, the statistics they print,
//! the machine line, and running the benchmark on a runtime.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use rex_client::{Client, ExecSpec, ExitStatus};

/// Reads a benchmark's options from `words` (the command line after the
/// program name). `--NAME N` for each `(NAME, slot)` of `counts` sets
/// `*slot` to N (left as it was if N is not a number); `--NAME VALUE` for
/// each NAME of `texts` calls `text(NAME, VALUE)` (`None` if the line ends
/// there). A named option always takes the next word as its value; any
/// other word is ignored (cargo bench passes `--bench`). Every count is at
/// least 1 afterwards.
pub fn parse_options(
    words: impl IntoIterator<Item = String>,
    counts: &mut [(&str, &mut usize)],
    texts: &[&str],
    mut text: impl FnMut(&str, Option<String>),
) {
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        if let Some(name) = texts.iter().find(|n| **n == word) {
            text(name, words.next());
            continue;
        }
        let Some((_, slot)) = counts.iter_mut().find(|(n, _)| *n == word) else {
            continue;
        };
        if let Some(n) = words.next().and_then(|v| v.parse().ok()) {
            **slot = n;
        }
    }
    for (_, slot) in counts.iter_mut() {
        **slot = (**slot).max(1);
    }
}

/// [`parse_options`] over this process's command line.
pub fn parse_args(
    counts: &mut [(&str, &mut usize)],
    texts: &[&str],
    text: impl FnMut(&str, Option<String>),
) {
    parse_options(std::env::args().skip(1), counts, texts, text);
}

/// One exec of `true`, checked (exit 0, no output); its wall time.
pub async fn exec_true(client: &Client) -> Result<Duration, String> {
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

/// Sessions a benchmark opens at once. The relay announces each opening
/// session on the exec-server's control stream, whose queue (64) refuses
/// when full.
pub const OPEN_AT_ONCE: usize = 32;

/// Opens a session for each of `clients`, [`OPEN_AT_ONCE`] at a time; an
/// error saying how many failed, and the first failure.
pub async fn open_all(clients: &[Client]) -> Result<(), String> {
    use futures::StreamExt as _;
    let failed: Vec<String> = futures::stream::iter(clients)
        .map(Client::connect)
        .buffer_unordered(OPEN_AT_ONCE)
        .filter_map(|r| async move { r.err().map(|e| e.to_string()) })
        .collect()
        .await;
    all_ok(&failed, clients.len(), "sessions failed to open")
}

/// `Ok` when nothing `failed`; else an error saying how many of `total`
/// `what` (e.g. "execs failed"), and the first failure.
pub fn all_ok(failed: &[String], total: usize, what: &str) -> Result<(), String> {
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {total} {what}; first: {first}",
            failed.len()
        )),
    }
}

/// Writes `bytes` zeros to a call's stdin through `control`, 256 KiB at a
/// time, then closes it: a bulk upload.
pub async fn feed_zeros(control: &rex_client::Controller, bytes: u64) -> Result<(), String> {
    let chunk = vec![0u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        control
            .write_stdin(&chunk[..n])
            .await
            .map_err(|e| format!("stdin: {e}"))?;
        left -= n as u64;
    }
    control
        .close_stdin()
        .await
        .map_err(|e| format!("stdin close: {e}"))
}

/// CPU time of every thread of this process so far, in nanoseconds,
/// summed over `/proc/self/task/*/schedstat`. Threads that have ended are
/// missing from the sum; commands the process spawned are not in it.
pub fn process_cpu_nanos() -> u64 {
    threads_cpu_nanos(None)
}

/// CPU time of every thread of process `pid` so far, in nanoseconds, as
/// [`process_cpu_nanos`] counts it for this one.
pub fn pid_cpu_nanos(pid: u32) -> u64 {
    tasks_cpu_nanos(&format!("/proc/{pid}/task"), None)
}

/// CPU time of this process's threads named `name` (all threads if
/// `None`), in nanoseconds, as [`process_cpu_nanos`] counts it.
pub fn threads_cpu_nanos(name: Option<&str>) -> u64 {
    tasks_cpu_nanos("/proc/self/task", name)
}

fn tasks_cpu_nanos(tasks: &str, name: Option<&str>) -> u64 {
    let Ok(threads) = std::fs::read_dir(tasks) else {
        return 0;
    };
    let mut total = 0u64;
    for thread in threads.flatten() {
        let dir = thread.path();
        if let Some(name) = name {
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
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
pub fn percentile(times: &[Duration], p: f64) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e6
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// The smallest and the largest of `values`.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// `values`' median over `baseline`'s median, and the smallest and the
/// largest of the per-round ratios (`values[i] / baseline[i]`).
pub fn ratio(values: &[f64], baseline: &[f64]) -> (f64, f64, f64) {
    let per_round: Vec<f64> = values.iter().zip(baseline).map(|(v, b)| v / b).collect();
    let (lo, hi) = min_max(&per_round);
    (median(values) / median(baseline), lo, hi)
}

/// `items` rotated left by `round` places: the order a round runs its
/// modes in, so that every mode takes every place in turn.
pub fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    (0..items.len())
        .map(|i| items[(round + i) % items.len()])
        .collect()
}

/// A command's trimmed stdout, if it ran and succeeded.
pub fn run_text(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The machine: CPUs, CPU model and kernel, e.g. `nproc 2; cpu Intel(R)
/// Xeon(R) Processor; kernel 6.1.0`.
pub fn machine() -> String {
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
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = run_text("uname", &["-r"]).unwrap_or_else(|| "?".into());
    format!("nproc {nproc}; cpu {cpu}; kernel {kernel}")
}

/// The checked-out commit, marked when the work tree has uncommitted
/// changes to tracked files.
pub fn commit() -> String {
    let mut commit =
        run_text("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty = run_text("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        commit.push_str(" (with uncommitted changes)");
    }
    commit
}

/// Prints the `machine:` (CPUs, CPU model, kernel) and `toolchain:`
/// (rustc, commit) lines.
pub fn print_machine() {
    let rustc = run_text("rustc", &["--version"]).unwrap_or_else(|| "?".into());
    println!("machine: {}", machine());
    println!("toolchain: {rustc}; commit {}", commit());
}

/// Runs `bench` on a multi-threaded runtime and turns its outcome into
/// the exit code: success for `Ok(true)`; for `Ok(false)` it prints
/// `NAME: FAILED: {failed}`, for an error (or no runtime) `NAME: FAILED:
/// {error}`, and fails.
pub fn run(
    name: &str,
    failed: &str,
    bench: impl Future<Output = Result<bool, String>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: FAILED: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{name}: FAILED: {failed}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn failures_are_counted_and_the_first_one_told() {
        assert_eq!(all_ok(&[], 5, "execs failed"), Ok(()));
        let failed = ["refused".to_owned(), "reset".to_owned()];
        assert_eq!(
            all_ok(&failed, 5, "execs failed"),
            Err("2 of 5 execs failed; first: refused".to_owned())
        );
    }

    #[test]
    fn options_set_counts_and_pass_texts_and_skip_the_rest() {
        let (mut rounds, mut execs) = (15, 150);
        let mut only = Vec::new();
        parse_options(
            words("--bench --rounds 3 --only full --execs x --rounds 0 --only"),
            &mut [("--rounds", &mut rounds), ("--execs", &mut execs)],
            &["--only"],
            |name, value| only.push((name.to_owned(), value)),
        );
        assert_eq!((rounds, execs), (1, 150));
        assert_eq!(
            only,
            [
                ("--only".to_owned(), Some("full".to_owned())),
                ("--only".to_owned(), None)
            ]
        );
    }

    #[test]
    fn statistics() {
        let times: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let near = |got: f64, want: f64| (got - want).abs() < 1e-6;
        assert!(near(percentile(&times, 0.50), 50.0));
        assert!(near(percentile(&times, 0.99), 99.0));
        assert!(near(percentile(&times, 1.0), 100.0));
        assert!(near(percentile(&times, 0.0), 1.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
        assert_eq!(ratio(&[2.0, 9.0], &[1.0, 3.0]), (2.75, 2.0, 3.0));
        assert_eq!(rotated(&[1, 2, 3], 4), [2, 3, 1]);
    }
}
