//! `network`: what a user tens to hundreds of milliseconds away waits for,
//! across the link emulator at several round trips, four sides run
//! interleaved in the same rounds: a cold `core-client exec -- true` (a new
//! process and session), the CLI through a running agent (its warm
//! session), `ssh` with a fresh connection, and `ssh` through a
//! `ControlMaster`. Both ends of each tool sit behind their own emulator
//! with the same settings: ours between the CLI (or agent) and the relay
//! (the relay next to the exec-server, as deployed), ssh's between `ssh`
//! and the local sshd. Each side is reported in milliseconds and in round
//! trips (its median over the round trip; the TCP handshake with the
//! emulator is on loopback, so it is not counted, for either tool). Then,
//! at 50 ms, Ctrl-C during a cold CLI's `yes`: the time from the signal to
//! the CLI's exit (130), in round trips, and the output that arrived after
//! the signal.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use link_emulator::{Config, Emulator};

use super::latency::{ColdClient, ssh_run};
use super::ssh::Ssh;
use super::{Comparison, Series, Target, Unit};
use crate::bench::{median, min_max, percentile, rotated};

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Round trips to emulate, in milliseconds.
    pub rtts_ms: Vec<u64>,
    /// Rounds at each round trip.
    pub rounds: usize,
    /// Timed runs of each side per round.
    pub runs: usize,
}

/// The round trip the targets are set at.
const TARGET_RTT_MS: u64 = 50;
/// Cold CLI at [`TARGET_RTT_MS`]: one round trip after TCP, and a little.
const COLD_TARGET: f64 = 1.2;
/// CLI through the agent at [`TARGET_RTT_MS`].
const AGENT_TARGET: f64 = 1.1;
/// Ctrl-C at [`TARGET_RTT_MS`]: two round trips and 50 ms, in round trips.
const CTRL_C_TARGET: f64 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Cold,
    Agent,
    SshFresh,
    SshMaster,
}

const SIDES: [(Side, &str); 4] = [
    (Side::Cold, "cold CLI"),
    (Side::Agent, "CLI through the agent"),
    (Side::SshFresh, "ssh (fresh connection)"),
    (Side::SshMaster, "ssh ControlMaster"),
];

/// One round trip's outcome: each side's per-round medians, in ms.
struct AtRtt {
    rtt_ms: u64,
    series: Vec<Series>,
}

/// Runs the scenario. `cold` is the CLI against the relay at `relay`
/// (its `relay` field is replaced by the emulator's), `agent_client` the
/// same through an agent it starts and stops; `ssh` the local sshd.
/// Returns the targets judged (at 50 ms, when measured) and the table.
pub async fn run(
    options: &NetworkOptions,
    relay: SocketAddr,
    cold: &ColdClient,
    agent_client: &ColdClient,
    ssh: &Ssh,
    scratch: &Path,
) -> Result<(Vec<Comparison>, String), String> {
    let ours = Emulator::start(Config::new(relay)).map_err(|e| format!("emulator: {e}"))?;
    let sshd = SocketAddr::from(([127, 0, 0, 1], ssh.port));
    let theirs = Emulator::start(Config::new(sshd)).map_err(|e| format!("emulator: {e}"))?;
    let cold = ColdClient {
        relay: ours.url(),
        ..cold.clone()
    };
    let agent_client = ColdClient {
        relay: ours.url(),
        through_agent: true,
        ..agent_client.clone()
    };
    let ssh = Ssh {
        port: theirs.addr().port(),
        ..ssh.clone()
    };
    agent_client.agent("start")?;
    let outcome = measure(options, &ours, &theirs, &cold, &agent_client, &ssh, scratch).await;
    let _ = agent_client.agent("stop");
    let results = outcome?;
    let ctrl_c = if options.rtts_ms.contains(&TARGET_RTT_MS) {
        ours.set_rtt(Duration::from_millis(TARGET_RTT_MS));
        Some(ctrl_c(options, &cold).await?)
    } else {
        None
    };
    let stats = (ours.shutdown(), theirs.shutdown());
    let mut comparisons = Vec::new();
    if let Some(at) = results.iter().find(|r| r.rtt_ms == TARGET_RTT_MS) {
        for (side, id, target) in [
            (0, "network cold 50ms", COLD_TARGET),
            (1, "network cli warm 50ms", AGENT_TARGET),
        ] {
            let series = &at.series[side];
            let trips = Series {
                label: format!("{} across a 50 ms round trip, in round trips", series.label),
                values: series
                    .values
                    .iter()
                    .map(|ms| ms / TARGET_RTT_MS as f64)
                    .collect(),
                p99: Vec::new(),
            };
            comparisons.push(Comparison {
                id,
                unit: Unit::RoundTrips,
                ours: trips,
                peer: None,
                target: Target::AtMost(target),
                notes: vec![format!(
                    "{} runs of each side per round, the four sides interleaved; the emulators carried {} bytes for ours and {} for ssh",
                    options.runs,
                    stats.0.up.delivered + stats.0.down.delivered,
                    stats.1.up.delivered + stats.1.down.delivered,
                )],
            });
        }
    }
    if let Some((trips, after)) = ctrl_c {
        comparisons.push(Comparison {
            id: "network ctrl-c 50ms",
            unit: Unit::RoundTrips,
            ours: trips,
            peer: None,
            target: Target::AtMost(CTRL_C_TARGET),
            notes: vec![format!(
                "Ctrl-C (SIGINT to the CLI) after 0.5 s of a cold CLI's `yes`, to the CLI's exit with 130; {} runs per round; output after the signal: median {:.0} KiB, at most {:.0} KiB",
                options.runs,
                median(&after) / 1024.0,
                min_max(&after).1 / 1024.0
            )],
        });
    }
    Ok((comparisons, table(&results)))
}

/// Ctrl-C during `yes` across the emulator as it is set: per round, the
/// median time to the CLI's exit in round trips of [`TARGET_RTT_MS`]; and
/// every run's bytes after the signal.
async fn ctrl_c(options: &NetworkOptions, cold: &ColdClient) -> Result<(Series, Vec<f64>), String> {
    let mut trips = Series {
        label: format!(
            "Ctrl-C during `yes` across a {TARGET_RTT_MS} ms round trip, to the CLI's exit, in round trips"
        ),
        values: Vec::new(),
        p99: Vec::new(),
    };
    let mut after = Vec::new();
    for _ in 0..options.rounds {
        let mut times = Vec::new();
        for _ in 0..options.runs {
            let (took, bytes) = cold.ctrl_c().await?;
            times.push(took);
            after.push(bytes as f64);
        }
        trips
            .values
            .push(percentile(&times, 0.5) / 1000.0 / TARGET_RTT_MS as f64);
    }
    eprintln!(
        "network ctrl-c {TARGET_RTT_MS} ms: {:.2} round trips",
        median(&trips.values)
    );
    Ok((trips, after))
}

async fn measure(
    options: &NetworkOptions,
    ours: &Emulator,
    theirs: &Emulator,
    cold: &ColdClient,
    agent_client: &ColdClient,
    ssh: &Ssh,
    scratch: &Path,
) -> Result<Vec<AtRtt>, String> {
    let master = ssh.master(&scratch.join("network-ssh-master")).await?;
    let served_before = agent_client.agent_served().await?;
    let mut through_agent = 0u64;
    let mut results = Vec::new();
    for &rtt_ms in &options.rtts_ms {
        let rtt = Duration::from_millis(rtt_ms);
        ours.set_rtt(rtt);
        theirs.set_rtt(rtt);
        let mut series: Vec<Series> = SIDES.iter().map(|(_, l)| Series::new(*l)).collect();
        let order: Vec<usize> = (0..SIDES.len()).collect();
        // One untimed run of each at this round trip (the agent's session
        // and the master's connection carry on at the new setting).
        for (side, _) in SIDES {
            one(side, cold, agent_client, ssh, master.socket()).await?;
            through_agent += u64::from(side == Side::Agent);
        }
        for round in 0..options.rounds {
            let mut times: Vec<Vec<Duration>> = vec![Vec::new(); SIDES.len()];
            for i in rotated(&order, round) {
                for _ in 0..options.runs {
                    let side = SIDES[i].0;
                    times[i].push(one(side, cold, agent_client, ssh, master.socket()).await?);
                    through_agent += u64::from(side == Side::Agent);
                }
            }
            for (s, t) in series.iter_mut().zip(&times) {
                s.values.push(percentile(t, 0.5) / 1000.0);
            }
        }
        eprintln!(
            "network {rtt_ms} ms: {}",
            series
                .iter()
                .map(|s| format!("{} {:.1} ms", s.label, median(&s.values)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        results.push(AtRtt { rtt_ms, series });
    }
    let served = agent_client.agent_served().await? - served_before;
    if served != through_agent {
        return Err(format!(
            "the agent served {served} of the {through_agent} runs through it: the others ran without it"
        ));
    }
    Ok(results)
}

async fn one(
    side: Side,
    cold: &ColdClient,
    agent_client: &ColdClient,
    ssh: &Ssh,
    master: &Path,
) -> Result<Duration, String> {
    match side {
        Side::Cold => cold.run().await,
        Side::Agent => agent_client.run().await,
        Side::SshFresh => ssh_run(ssh, None, "true", b"").await,
        Side::SshMaster => ssh_run(ssh, Some(master), "true", b"").await,
    }
}

/// The Markdown table: a row per round trip, a column per side, each cell
/// the median in ms (min–max across rounds) and, past 0 ms, in round
/// trips.
fn table(results: &[AtRtt]) -> String {
    let mut out = String::from("| round trip |");
    for (_, label) in SIDES {
        let _ = write!(out, " {label} |");
    }
    out.push_str("\n| --- |");
    out.push_str(&" --- |".repeat(SIDES.len()));
    out.push('\n');
    for r in results {
        let _ = write!(out, "| {} ms |", r.rtt_ms);
        for s in &r.series {
            let m = median(&s.values);
            let (lo, hi) = min_max(&s.values);
            let _ = write!(out, " {m:.1} ms ({lo:.1}–{hi:.1})");
            if r.rtt_ms > 0 {
                let _ = write!(out, "; {:.2} round trips", m / r.rtt_ms as f64);
            }
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_round_trip_and_counts_round_trips() {
        let series = |v: &[f64]| Series {
            label: "x".into(),
            values: v.to_vec(),
            p99: Vec::new(),
        };
        let results = [
            AtRtt {
                rtt_ms: 0,
                series: vec![series(&[2.0]); 4],
            },
            AtRtt {
                rtt_ms: 50,
                series: vec![
                    series(&[210.0, 214.0, 220.0]),
                    series(&[56.0]),
                    series(&[498.0]),
                    series(&[109.0]),
                ],
            },
        ];
        let t = table(&results);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("cold CLI") && lines[0].contains("ssh ControlMaster"));
        assert!(
            lines[2].starts_with("| 0 ms | 2.0 ms (2.0–2.0) |"),
            "{}",
            lines[2]
        );
        assert!(!lines[2].contains("round trips"));
        assert!(
            lines[3].contains("214.0 ms (210.0–220.0); 4.28 round trips"),
            "{}",
            lines[3]
        );
        assert!(lines[3].contains("9.96 round trips"), "{}", lines[3]);
    }
}
