//! Tracing overhead on a warm exec of `true` through the relay (relay,
//! exec-server and client in this process, on loopback).
//!
//! Three modes run side by side, their order rotating every round: `off`
//! (no-op tracer provider), `propagation` (SDK provider with the sampler
//! off: ids are made and carried, nothing is recorded) and `full` (every
//! span batched and exported over OTLP/gRPC to an in-process receiver that
//! counts spans per trace).
//! Each mode opens a fresh session, warms it up, then times execs one after
//! another. It prints p50/p99 per mode (median and min–max over rounds), the
//! ratios to `off`, the machine, and whether every span of the full-mode
//! execs reached the receiver.
//!
//! Run: `cargo bench -p integration-tests --bench tracing_overhead`
//! (options after `--`: `--rounds R` (default 15), `--execs N` (default 150),
//! `--only off|propagation|full` to run one mode alone, e.g. under a
//! profiler).
//! Timings are only reported, never asserted: it exits non-zero only if an
//! exec fails, an output is wrong, or full mode lost spans.

use std::collections::BTreeMap;
use std::process::ExitCode;

use integration_tests::bench::{median, min_max, percentile, print_machine, rotated};
use integration_tests::otlp::OtlpReceiver;
use integration_tests::stack::Stack;
use integration_tests::versus::tracing::{MODES, Mode, Providers, WARMUP, run_mode};

struct Args {
    rounds: usize,
    execs: usize,
    /// Run only this mode (for profiling one mode); no ratios then.
    only: Option<Mode>,
}

fn parse_args() -> Args {
    let (mut rounds, mut execs, mut only) = (15, 150, None);
    integration_tests::bench::parse_args(
        &mut [("--rounds", &mut rounds), ("--execs", &mut execs)],
        &["--only"],
        |_, mode| only = mode.and_then(|m| MODES.into_iter().find(|x| x.name() == m)),
    );
    Args {
        rounds,
        execs,
        only,
    }
}

async fn bench(args: &Args) -> Result<bool, String> {
    // A receiver that only counts spans per trace: it shares the 2 cores,
    // so it should cost as little as a receiver can.
    let receiver = OtlpReceiver::start_counting()
        .await
        .map_err(|e| e.to_string())?;
    let providers = Providers::new(&receiver)?;
    let stack = Stack::start().await.map_err(|e| e.to_string())?;
    let client = stack.client();

    println!(
        "tracing overhead: warm exec of `true` through the relay; {} rounds x {} timed execs per mode ({} warm-up execs on a new session each)",
        args.rounds, args.execs, WARMUP
    );
    print_machine();

    let mut p50: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
    let mut traces = 0;
    let mut spans = 0;
    for round in 0..args.rounds {
        let order: Vec<Mode> = match args.only {
            Some(m) => vec![m],
            None => rotated(&MODES, round),
        };
        for &mode in &order {
            let (times, arrived, cpu_us) =
                run_mode(mode, &client, &providers, &receiver, args.execs).await?;
            cpu.entry(mode).or_default().push(cpu_us);
            p50.entry(mode).or_default().push(percentile(&times, 0.50));
            p99.entry(mode).or_default().push(percentile(&times, 0.99));
            if let Some(a) = arrived {
                for (count, n) in a.histogram {
                    *histogram.entry(count).or_insert(0) += n;
                }
                traces += a.traces;
                spans += a.spans;
            }
        }
        let names: Vec<&str> = order.iter().map(|m| m.name()).collect();
        eprintln!(
            "round {}/{} done ({})",
            round + 1,
            args.rounds,
            names.join(", ")
        );
    }
    client.close().await;
    providers.shutdown().await;

    if let Some(mode) = args.only {
        println!(
            "only {}: p50 {:.1} us, CPU per exec {:.1} us",
            mode.name(),
            median(&p50[&mode]),
            median(&cpu[&mode])
        );
        return Ok(true);
    }
    println!();
    println!(
        "{:<12} {:>11} {:>21} {:>11} {:>21}",
        "mode", "p50 (us)", "p50 range (us)", "p99 (us)", "p99 range (us)"
    );
    for mode in MODES {
        let (a, b) = (&p50[&mode], &p99[&mode]);
        let ((alo, ahi), (blo, bhi)) = (min_max(a), min_max(b));
        println!(
            "{:<12} {:>11.1} {:>21} {:>11.1} {:>21}",
            mode.name(),
            median(a),
            format!("{alo:.1}-{ahi:.1}"),
            median(b),
            format!("{blo:.1}-{bhi:.1}")
        );
    }
    println!();
    let ratio = |of: &BTreeMap<Mode, Vec<f64>>, mode: Mode| {
        integration_tests::bench::ratio(&of[&mode], &of[&Mode::Off])
    };
    for (label, of) in [("p50", &p50), ("p99", &p99)] {
        for mode in [Mode::Propagation, Mode::Full] {
            let (r, lo, hi) = ratio(of, mode);
            println!(
                "{}/off {label} ratio {r:.3} (per round {lo:.3}-{hi:.3})",
                mode.name()
            );
        }
    }

    println!();
    println!(
        "CPU per exec (all threads: client, relay, exec-server, exporter, receiver; the child excluded)"
    );
    for mode in MODES {
        let (lo, hi) = min_max(&cpu[&mode]);
        println!(
            "{:<12} {:>8.1} us (per round {lo:.1}-{hi:.1})",
            mode.name(),
            median(&cpu[&mode])
        );
    }
    for mode in [Mode::Propagation, Mode::Full] {
        let (r, lo, hi) = ratio(&cpu, mode);
        println!(
            "{}/off CPU ratio {r:.3} (per round {lo:.3}-{hi:.3})",
            mode.name()
        );
    }
    println!();

    let (full_p50, _, _) = ratio(&p50, Mode::Full);
    let verdict = if full_p50 <= 1.03 { "met" } else { "missed" };
    println!("full/off p50 ratio {full_p50:.3} (target <= 1.03): {verdict}");

    let expected_traces = args.rounds * args.execs;
    let per_trace = histogram.keys().next_back().copied().unwrap_or(0);
    let dropped = (expected_traces * per_trace).saturating_sub(spans);
    let consistent = traces == expected_traces && histogram.len() == 1 && dropped == 0;
    let rejected = receiver.rejected_requests();
    if consistent && rejected == 0 {
        println!("spans dropped: 0 (target 0); {traces} traces of {per_trace} spans each");
        Ok(true)
    } else {
        println!(
            "spans dropped: {dropped} (target 0) -- SPANS LOST: expected {expected_traces} traces of {per_trace} spans, \
             got {traces} traces / {spans} spans; spans per trace -> traces: {histogram:?}; rejected exports: {rejected}"
        );
        Ok(false)
    }
}

fn main() -> ExitCode {
    let args = parse_args();
    integration_tests::bench::run(
        "tracing_overhead",
        "spans were dropped in full mode",
        bench(&args),
    )
}
