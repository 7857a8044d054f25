//! What bringing the exec-server's stages home costs: a warm exec of `true`
//! through the relay with every span exported over OTLP (the `floor` and
//! `tracing` scenarios' command), with the exec-server sending each call's
//! stage summary (and the client placing it and recording the two
//! `link.transit` legs), against an exec-server that sends none.
//!
//! Two stacks (relay and exec-server each) run in this process, one per
//! side; each round runs both sides in turn, the order rotating, each on a
//! fresh warm session. It prints p50/p99 per side (median and min–max over
//! rounds), the ratios, and the CPU time per exec of the whole process
//! (client, relays, exec-servers, exporter, receiver; the child excluded),
//! the export of each side's spans included.
//!
//! Run: `cargo bench -p integration-tests --bench summary_overhead`
//! (options after `--`: `--rounds R` (default 15), `--execs N` (default
//! 150), `--only summaries|without` to run one side alone, e.g. under
//! `valgrind --tool=callgrind`, whose instruction counts do not depend on
//! what else the machine is doing). Timings are only reported, never
//! asserted: it exits non-zero only if an exec fails or spans were lost.

use std::process::ExitCode;

use integration_tests::bench::{median, min_max, percentile, print_machine, ratio, rotated};
use integration_tests::otlp::OtlpReceiver;
use integration_tests::stack::Stack;
use integration_tests::versus::tracing::{Mode, Providers, WARMUP, run_mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The exec-server sends each call's stage summary.
    Summaries,
    /// It sends none.
    Without,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Summaries => "summaries",
            Side::Without => "without",
        }
    }
}

async fn bench(rounds: usize, execs: usize, only: Option<Side>) -> Result<bool, String> {
    let receiver = OtlpReceiver::start_counting()
        .await
        .map_err(|e| e.to_string())?;
    let providers = Providers::new(&receiver)?;
    let with = Stack::start().await.map_err(|e| e.to_string())?;
    let without = Stack::start_with(|c| c.call_timings = false)
        .await
        .map_err(|e| e.to_string())?;
    let clients = [
        (Side::Summaries, with.client()),
        (Side::Without, without.client()),
    ];
    println!(
        "stage summaries: warm exec of `true` through the relay, every span exported over OTLP; \
         {rounds} rounds x {execs} timed execs per side ({WARMUP} warm-up execs on a new session each)"
    );
    print_machine();

    let mut p50 = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    let mut spans_per_trace = [0usize, 0usize];
    let mut complete = true;
    for round in 0..rounds {
        for i in rotated(&[0usize, 1], round) {
            if only.is_some_and(|o| o != clients[i].0) {
                continue;
            }
            let (side, client) = &clients[i];
            let (times, arrived, cpu_us) =
                run_mode(Mode::Full, client, &providers, &receiver, execs).await?;
            p50[i].push(percentile(&times, 0.50));
            p99[i].push(percentile(&times, 0.99));
            cpu[i].push(cpu_us);
            if let Some(a) = arrived {
                let per = a.histogram.keys().next_back().copied().unwrap_or(0);
                spans_per_trace[i] = per;
                if a.traces != execs || a.histogram.len() != 1 {
                    complete = false;
                    eprintln!(
                        "{}: expected {execs} whole traces, got {} traces ({:?})",
                        side.name(),
                        a.traces,
                        a.histogram
                    );
                }
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    for (_, client) in &clients {
        client.close().await;
    }
    providers.shutdown().await;

    if let Some(side) = only {
        let i = usize::from(side == Side::Without);
        println!(
            "only {}: p50 {:.1} us, CPU per exec {:.1} us, {} spans per trace",
            side.name(),
            median(&p50[i]),
            median(&cpu[i]),
            spans_per_trace[i]
        );
        return Ok(complete && receiver.rejected_requests() == 0);
    }
    println!();
    println!(
        "{:<10} {:>9} {:>19} {:>9} {:>14} {:>7}",
        "side", "p50 (us)", "p50 range (us)", "p99 (us)", "CPU/exec (us)", "spans"
    );
    for (i, side) in [Side::Summaries, Side::Without].into_iter().enumerate() {
        let (lo, hi) = min_max(&p50[i]);
        println!(
            "{:<10} {:>9.1} {:>19} {:>9.1} {:>14.1} {:>7}",
            side.name(),
            median(&p50[i]),
            format!("{lo:.1}-{hi:.1}"),
            median(&p99[i]),
            median(&cpu[i]),
            spans_per_trace[i]
        );
    }
    println!();
    for (label, of) in [("p50", &p50), ("p99", &p99), ("CPU", &cpu)] {
        let (r, lo, hi) = ratio(&of[0], &of[1]);
        println!("summaries/without {label} ratio {r:.3} (per round {lo:.3}-{hi:.3})");
    }
    Ok(complete && receiver.rejected_requests() == 0)
}

fn main() -> ExitCode {
    let mut rounds = 15;
    let mut execs = 150;
    let mut only = None;
    integration_tests::bench::parse_args(
        &mut [("--rounds", &mut rounds), ("--execs", &mut execs)],
        &["--only"],
        |_, side| {
            only = match side.as_deref() {
                Some("summaries") => Some(Side::Summaries),
                Some("without") => Some(Side::Without),
                _ => None,
            }
        },
    );
    integration_tests::bench::run(
        "summary_overhead",
        "spans were lost",
        bench(rounds, execs, only),
    )
}
