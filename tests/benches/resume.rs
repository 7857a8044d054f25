//! What resume costs, in two parts (`--part outages|acks|all`, default
//! all).
//!
//! **Outages.** A relay and an exec-server run as processes (the built
//! binaries); a `core-client exec` runs a command that prints a numbered
//! line every 5 ms. Each outage kills the relay (SIGKILL), starts it again
//! on its address after `--down` milliseconds (default 200) and measures
//! the time from the relay's restart (its process started) and from its
//! listening to the first new line reaching the client, over `--outages`
//! outages (default 20): p50 and p90 of each. The command's output is
//! checked to be exactly its lines, once each, in order.
//!
//! **Acknowledgements.** Two stacks side by side in the same run: one with
//! resume on (the client's `ClientConfig::resume`, the exec-server's
//! default grace), one with it off (no resume asked for or offered, so no
//! final acknowledgements and no session kept). Output acknowledgements
//! themselves are flow control (one per eighth of its window a caller takes, so
//! a caller that stops reading stops only its own command) and run in both:
//! their count per GiB is printed, and their cost is in both columns. Two
//! scenarios, each checked for its byte count and content: `bulk`
//! (`head -c N /dev/zero` to the caller) and `pipe` (N bytes of stdin
//! through `cat` and back, so stdin's acknowledgements and what the client
//! keeps until they come are counted too). Each round runs both stacks,
//! alternating which goes first; reported per scenario: throughput and
//! CPU-seconds per GiB (this process, which is the client, plus the relay
//! and the exec-server) of each, and on over off. (The `pipe` scenario of
//! the `versus` bench pushes raw Noise records through the relay, below
//! the session machine: no acknowledgement is involved there.)
//!
//! Run: `cargo bench -p integration-tests --bench resume` (options after
//! `--`: `--outages N`, `--down MS`, `--rounds N` (default 5), `--mib N`
//! (MiB per run, default 256), `--part PART`). Timings are reported, never
//! asserted: it exits non-zero only if a command's output is wrong or it
//! did not finish.

use std::io::BufRead;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration_tests::bench::{
    median, parse_args, percentile, pid_cpu_nanos, print_machine, process_cpu_nanos, ratio, rotated,
};
use integration_tests::binaries::ProcStack;
use proto::keys::{PublicKey, StaticKeypair};
use rex_client::{Client, ClientConfig, Event, ExecSpec, ExitStatus, Target};

/// Bounds every wait (never a measure).
const PATIENCE: Duration = Duration::from_secs(60);
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

struct Options {
    outages: usize,
    down: Duration,
    rounds: usize,
    bytes: u64,
    outage_part: bool,
    ack_part: bool,
}

fn options() -> Options {
    let (mut outages, mut down, mut rounds, mut mib) = (20, 200, 5, 256);
    let mut part = "all".to_owned();
    parse_args(
        &mut [
            ("--outages", &mut outages),
            ("--down", &mut down),
            ("--rounds", &mut rounds),
            ("--mib", &mut mib),
        ],
        &["--part"],
        |_, value| {
            if let Some(v) = value {
                part = v;
            }
        },
    );
    Options {
        outages,
        down: Duration::from_millis(down as u64),
        rounds,
        bytes: mib as u64 * 1024 * 1024,
        outage_part: part == "all" || part == "outages",
        ack_part: part == "all" || part == "acks",
    }
}

fn outages(opts: &Options) -> Result<(), String> {
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
        let (_, line) = lines.recv_timeout(PATIENCE).map_err(|e| e.to_string())?;
        check(&line)?;
    }
    let mut from_restart = Vec::with_capacity(opts.outages);
    let mut from_listening = Vec::with_capacity(opts.outages);
    for n in 0..opts.outages {
        stack.kill_relay();
        std::thread::sleep(opts.down);
        let restarted = Instant::now();
        stack.start_relay_again().map_err(|e| e.to_string())?;
        let up = Instant::now();
        // Lines already on their way before the kill may still come in:
        // the first one received after the relay listens marks the resume.
        let flowing = loop {
            let (at, line) = lines.recv_timeout(PATIENCE).map_err(|e| e.to_string())?;
            check(&line)?;
            if at >= up {
                break at;
            }
        };
        println!(
            "outage {n:2}: output again {:>7.1} ms after the relay restarted, {:>7.1} ms after it listened",
            flowing.duration_since(restarted).as_secs_f64() * 1e3,
            flowing.duration_since(up).as_secs_f64() * 1e3
        );
        from_restart.push(flowing.duration_since(restarted));
        from_listening.push(flowing.duration_since(up));
        // Flowing steadily again before the next outage.
        for _ in 0..20 {
            let (_, line) = lines.recv_timeout(PATIENCE).map_err(|e| e.to_string())?;
            check(&line)?;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let ms = |times: &[Duration], p| percentile(times, p) / 1e3;
    println!(
        "relay restart to output flowing again, {} outages ({} ms down each): from the restart p50 {:.1} ms, p90 {:.1} ms; from listening p50 {:.1} ms, p90 {:.1} ms; {expect} lines, each once and in order",
        opts.outages,
        opts.down.as_millis(),
        ms(&from_restart, 0.5),
        ms(&from_restart, 0.9),
        ms(&from_listening, 0.5),
        ms(&from_listening, 0.9),
    );
    Ok(())
}

/// A stack and a client of it, with resume on or off.
struct Side {
    label: &'static str,
    stack: ProcStack,
    client: Client,
}

impl Side {
    fn start(label: &'static str, resume: bool) -> Result<Self, String> {
        let mut stack = ProcStack::start(&[]).map_err(|e| e.to_string())?;
        if !resume {
            stack
                .restart_server(&["--resume-grace", "0"], 1)
                .map_err(|e| e.to_string())?;
        }
        let key = StaticKeypair::read_file(&stack.client_key).map_err(|e| e.to_string())?;
        let server: PublicKey = stack.server_pub.parse().map_err(|e| format!("{e}"))?;
        let mut config = ClientConfig::new(key, server, Target::Relay(stack.relay_url.clone()));
        config.resume = resume.then_some(rex_client::DEFAULT_RESUME);
        Ok(Self {
            label,
            client: Client::new(config),
            stack,
        })
    }

    /// CPU time so far of the client (this process), the relay and the
    /// exec-server.
    fn cpu_nanos(&self) -> u64 {
        process_cpu_nanos()
            + pid_cpu_nanos(self.stack.relay.child.id())
            + pid_cpu_nanos(self.stack.server.child.id())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Bulk,
    Pipe,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Bulk => "bulk",
            Scenario::Pipe => "pipe",
        }
    }
}

/// Whether every byte of `data` is zero.
fn all_zero(data: &[u8]) -> bool {
    data.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// One run: `bytes` zeros to the caller (bulk), or through `cat` and back
/// (pipe), checked.
async fn one(client: &Client, scenario: Scenario, bytes: u64) -> Result<(), String> {
    let mut spec = match scenario {
        Scenario::Bulk => ExecSpec::new(["head", "-c", &bytes.to_string(), "/dev/zero"]),
        Scenario::Pipe => ExecSpec::new(["cat"]),
    };
    spec.stdin = scenario == Scenario::Pipe;
    let mut run = client.exec(spec).await.map_err(|e| format!("exec: {e}"))?;
    let writer = (scenario == Scenario::Pipe).then(|| {
        let control = run.controller();
        tokio::spawn(async move { integration_tests::bench::feed_zeros(&control, bytes).await })
    });
    let (mut got, mut zeros, mut status) = (0u64, true, None);
    while let Some(event) = run.next().await {
        match event {
            Event::Stdout(d) => {
                got += d.len() as u64;
                zeros &= all_zero(&d);
            }
            Event::Exited(s) => status = Some(s),
            Event::Failed(f) => return Err(format!("{} failed: {f}", scenario.name())),
            Event::Stderr(_) | Event::Started { .. } | Event::Reconnecting | Event::Resumed => {}
        }
    }
    if let Some(w) = writer {
        w.await.map_err(|e| e.to_string())??;
    }
    if got == bytes && zeros && status == Some(ExitStatus::Code(0)) {
        Ok(())
    } else {
        Err(format!(
            "{} went wrong: {got} of {bytes} bytes, all zero: {zeros}, {status:?}",
            scenario.name()
        ))
    }
}

async fn acks(opts: &Options) -> Result<(), String> {
    let sides = [Side::start("on", true)?, Side::start("off", false)?];
    let window = 4.0 * MIB;
    let every = proto::session::output::ACK_EVERY as f64;
    println!(
        "output acknowledgements: one per 1/{every} of the window taken (window {:.0} MiB): {:.0} per GiB, with resume on and off alike",
        window / MIB,
        GIB / (window / every)
    );
    for scenario in [Scenario::Bulk, Scenario::Pipe] {
        // Warm-up: each side once, unmeasured.
        for side in &sides {
            one(&side.client, scenario, opts.bytes.min(64 << 20)).await?;
        }
        let mut speed = [Vec::new(), Vec::new()];
        let mut cpu = [Vec::new(), Vec::new()];
        for round in 0..opts.rounds {
            for i in rotated(&[0usize, 1], round) {
                let side = &sides[i];
                let (cpu0, t0) = (side.cpu_nanos(), Instant::now());
                one(&side.client, scenario, opts.bytes).await?;
                let took = t0.elapsed().as_secs_f64();
                let spent = side.cpu_nanos().saturating_sub(cpu0) as f64 / 1e9;
                speed[i].push(opts.bytes as f64 / MIB / took);
                cpu[i].push(spent / (opts.bytes as f64 / GIB));
            }
        }
        let (s_ratio, s_lo, s_hi) = ratio(&speed[0], &speed[1]);
        let (c_ratio, c_lo, c_hi) = ratio(&cpu[0], &cpu[1]);
        println!(
            "{}: {} MiB per run, {} rounds: resume {} {:.1} MiB/s, {} {:.1} MiB/s (on/off {:.3}, rounds {:.3}..{:.3}); CPU {} {:.2} s/GiB, {} {:.2} s/GiB (on/off {:.3}, rounds {:.3}..{:.3})",
            scenario.name(),
            opts.bytes >> 20,
            opts.rounds,
            sides[0].label,
            median(&speed[0]),
            sides[1].label,
            median(&speed[1]),
            s_ratio,
            s_lo,
            s_hi,
            sides[0].label,
            median(&cpu[0]),
            sides[1].label,
            median(&cpu[1]),
            c_ratio,
            c_lo,
            c_hi,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let opts = options();
    print_machine();
    if opts.outage_part
        && let Err(e) = outages(&opts)
    {
        eprintln!("resume bench: {e}");
        return ExitCode::FAILURE;
    }
    if opts.ack_part {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("resume bench: tokio runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = runtime.block_on(acks(&opts)) {
            eprintln!("resume bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
