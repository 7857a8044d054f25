//! What a relay restart costs a running command: the time from the relay
//! being up again (its process started, listening) to the command's output
//! flowing again at the client, over many outages.
//!
//! A relay and an exec-server run as processes (the built binaries); a
//! `core-client exec` runs a command that prints a numbered line every
//! 5 ms. Each outage kills the relay (SIGKILL), starts it again on its
//! address after `--down` milliseconds (default 200) and measures from the
//! moment it listens to the first new line reaching the client. The
//! command's output is checked to be exactly its lines, once each, in
//! order, at the end.
//!
//! Run: `cargo bench -p integration-tests --bench resume` (options after
//! `--`: `--outages N` (default 20), `--down MS`). Timings are reported,
//! never asserted: it exits non-zero only if the command's output is
//! wrong or it did not finish.

use std::io::BufRead;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration_tests::bench::{percentile, print_machine};
use integration_tests::binaries::{self, ProcStack};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run() -> Result<(), String> {
    let outages = usize::try_from(arg("--outages", 20)).unwrap_or(20);
    let down = Duration::from_millis(arg("--down", 200));
    print_machine();
    let mut stack = ProcStack::start(&[]).map_err(|e| e.to_string())?;
    // Enough lines to outlast every outage; the command is killed (and its
    // output checked up to there) once they are measured.
    let script = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.005; done";
    let mut child = stack
        .exec_with(&["--no-agent"], &["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("core-client: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let patience = Duration::from_secs(60);
    let mut expect = 0u64;
    let mut check = |line: &str| -> Result<(), String> {
        if line != expect.to_string() {
            return Err(format!("expected line {expect}, got {line:?}"));
        }
        expect += 1;
        Ok(())
    };
    // Warm: output flowing.
    for _ in 0..50 {
        let (_, line) = lines.recv_timeout(patience).map_err(|e| e.to_string())?;
        check(&line)?;
    }
    let addr = stack.relay_url.trim_start_matches("http://").to_owned();
    let mut gaps = Vec::with_capacity(outages);
    for n in 0..outages {
        let _ = stack.relay.child.kill();
        let _ = stack.relay.child.wait();
        let killed = Instant::now();
        std::thread::sleep(down);
        stack.relay =
            binaries::spawn("relay", &["--listen", &addr], &[]).map_err(|e| e.to_string())?;
        stack
            .relay
            .wait_for_line("listening on", patience)
            .map_err(|e| e.to_string())?;
        let up = Instant::now();
        // Lines already on their way before the kill may still come in:
        // the first one received after the relay is up marks the resume.
        let flowing = loop {
            let (at, line) = lines.recv_timeout(patience).map_err(|e| e.to_string())?;
            check(&line)?;
            if at >= up {
                break at;
            }
        };
        let gap = flowing.duration_since(up);
        println!(
            "outage {n:2}: relay down {:>6.1} ms, output again {:>7.1} ms after it listened",
            up.duration_since(killed).as_secs_f64() * 1e3,
            gap.as_secs_f64() * 1e3
        );
        gaps.push(gap);
        // Flowing steadily again before the next outage.
        for _ in 0..20 {
            let (_, line) = lines.recv_timeout(patience).map_err(|e| e.to_string())?;
            check(&line)?;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    gaps.sort_unstable();
    println!(
        "relay restart to output flowing again, {outages} outages ({} ms down each): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; {expect} lines, each once and in order",
        down.as_millis(),
        percentile(&gaps, 0.5) / 1e3,
        percentile(&gaps, 0.9) / 1e3,
        gaps.last().map_or(0.0, |g| g.as_secs_f64() * 1e3)
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("resume bench: {e}");
            ExitCode::FAILURE
        }
    }
}
