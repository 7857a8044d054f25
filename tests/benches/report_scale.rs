//! How `core-client report` scales: a trace file of N realistic commands
//! (100,000 by default, about 35 spans each, as the CLI writes them: one
//! cold start in ten, three programs), reported on R times; wall time,
//! CPU time, throughput and the peak resident memory of the report
//! process, beside the file's size. The report's numbers are checked (the
//! command count), never its speed.
//!
//! ```sh
//! cargo bench -p integration-tests --bench report_scale
//! # options after `--`: --commands N (default 100000) --rounds R (default 3)
//! #   --out PATH (write the file there and keep it)
//! ```
//!
//! Peak memory is the report process's own high-water mark (`VmHWM` in
//! `/proc/PID/status`, which only grows), read until it exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufWriter, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use integration_tests::bench::{self, parse_args};
use integration_tests::binaries;
use integration_tests::synthetic::{self, Rng};
use nix::sys::resource::{UsageWho, getrusage};

/// The peak resident set of process `pid` so far, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() -> ExitCode {
    let mut commands = 100_000usize;
    let mut rounds = 3usize;
    let mut keep: Option<std::path::PathBuf> = None;
    parse_args(
        &mut [("--commands", &mut commands), ("--rounds", &mut rounds)],
        &["--out"],
        |_, v| {
            keep = v.map(Into::into);
        },
    );
    bench::print_machine();
    let dir = tempfile::tempdir().unwrap();
    let path = keep.unwrap_or_else(|| dir.path().join("traces.jsonl"));
    let generated = Instant::now();
    {
        let mut out = BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut rng = Rng::new(42);
        let start = 1_795_000_000_000_000_000u64;
        for i in 0..commands as u64 {
            for line in synthetic::realistic(i, start, &mut rng).lines() {
                out.write_all(line.as_bytes()).unwrap();
                out.write_all(b"\n").unwrap();
            }
        }
        out.flush().unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "file: {commands} commands, {mb:.1} MiB ({:.0} bytes a command), written in {:.1}s",
        bytes as f64 / commands as f64,
        generated.elapsed().as_secs_f64()
    );
    let core_client = binaries::path("core-client").unwrap();
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut peak = 0u64;
    for round in 0..rounds {
        let before = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
        let started = Instant::now();
        let mut child = Command::new(&core_client)
            .args(["report", "--json", "--file"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut bytes).unwrap();
            bytes
        });
        // Sampled until it exits (the zombie's status no longer has it).
        while child.try_wait().unwrap().is_none() {
            if let Some(kib) = peak_kib(pid) {
                peak = peak.max(kib);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let status = child.wait().unwrap();
        let wall = started.elapsed().as_secs_f64();
        let out = std::process::Output {
            status,
            stdout: reader.join().unwrap(),
            stderr: Vec::new(),
        };
        let after = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
        if !out.status.success() {
            eprintln!("report_scale: FAILED: the report failed ({})", out.status);
            return ExitCode::FAILURE;
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if report["commands"].as_u64() != Some(commands as u64) {
            eprintln!(
                "report_scale: FAILED: counted {} commands of {commands}",
                report["commands"]
            );
            return ExitCode::FAILURE;
        }
        let cpu = |u: &nix::sys::resource::Usage| {
            let t = u.user_time();
            let s = u.system_time();
            t.tv_sec() as f64
                + t.tv_usec() as f64 / 1e6
                + s.tv_sec() as f64
                + s.tv_usec() as f64 / 1e6
        };
        let cpu = cpu(&after) - cpu(&before);
        println!(
            "round {round}: {wall:.2}s wall, {cpu:.2}s CPU, {:.0} MiB/s, {:.0} commands/s",
            mb / wall,
            commands as f64 / wall
        );
        walls.push(wall);
        cpus.push(cpu);
    }
    println!(
        "report over {commands} commands ({mb:.0} MiB): wall median {:.2}s (min {:.2}s, max {:.2}s), CPU median {:.2}s, peak RSS {:.0} MiB",
        bench::median(&walls),
        bench::min_max(&walls).0,
        bench::min_max(&walls).1,
        bench::median(&cpus),
        peak as f64 / 1024.0
    );
    ExitCode::SUCCESS
}
