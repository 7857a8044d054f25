//! `path_bulk`: a large output, and a large stdin, across the link
//! emulator at several round trips, ours and ssh side by side in the same
//! rounds (their order rotating). Ours is the client library through an
//! emulator in front of the relay (the relay next to the exec-server, as
//! deployed); ssh (`-c aes128-gcm@openssh.com`) goes through an emulator
//! in front of the local sshd with the same settings. Then the same at
//! 50 ms behind a 100 Mbit/s bottleneck, ours against the cap. Every byte
//! is counted (and, for output, checked); a wrong count is an error.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use link_emulator::{Config, Direction, Emulator, PathSettings};
use rex_client::{Client, Event, ExecSpec, ExitStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bulk;
use super::rounds::throughputs;
use super::ssh::Ssh;
use super::{Comparison, Series, Target, Unit};
use crate::bench::{feed_zeros, median, min_max};

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct PathBulkOptions {
    /// Round trips to emulate, in milliseconds.
    pub rtts_ms: Vec<u64>,
    /// Rounds at each setting.
    pub rounds: usize,
    /// Output bytes per run up to a 50 ms round trip (fewer beyond, in
    /// proportion, so that a run takes about as long); stdin runs move an
    /// eighth of it.
    pub bytes: u64,
}

/// The round trip the targets are set at.
const TARGET_RTT_MS: u64 = 50;
/// The bottleneck of the capped runs: 100 Mbit/s.
const CAP_BYTES_PER_SEC: u64 = 100_000_000 / 8;
/// The bottleneck's buffer: under half the capped path's bandwidth-delay
/// product (625 kB), as a router's queue might be.
pub const CAP_BUFFER: usize = 256 * 1024;
/// Bytes of each warm-up run (or fewer, if a run is smaller).
const WARMUP_BYTES: u64 = 16 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    OursOut,
    SshOut,
    OursIn,
    SshIn,
}

/// Output bytes of a run at `rtt_ms`.
fn out_bytes(base: u64, rtt_ms: u64) -> u64 {
    base * TARGET_RTT_MS / rtt_ms.max(TARGET_RTT_MS)
}

/// Stdin bytes of a run at `rtt_ms`.
fn in_bytes(base: u64, rtt_ms: u64) -> u64 {
    out_bytes(base, rtt_ms) / 8
}

/// One round trip's outcome: each side's series (MiB/s per round).
struct AtRtt {
    rtt_ms: u64,
    /// Ours and ssh, output; ours and ssh, stdin.
    series: [Series; 4],
}

/// Runs the scenario against the relay at `relay` (with `client`'s
/// settings, dialling the emulator instead) and the local sshd. Returns
/// the targets judged and the section's table.
pub async fn run(
    options: &PathBulkOptions,
    relay: SocketAddr,
    client: &rex_client::ClientConfig,
    ssh: &Ssh,
) -> Result<(Vec<Comparison>, String), String> {
    let ours = Emulator::start(Config::new(relay)).map_err(|e| format!("emulator: {e}"))?;
    let sshd = SocketAddr::from(([127, 0, 0, 1], ssh.port));
    let theirs = Emulator::start(Config::new(sshd)).map_err(|e| format!("emulator: {e}"))?;
    let mut config = client.clone();
    config.target = rex_client::Target::Relay(ours.url());
    let client = Client::new(config);
    let ssh = Ssh {
        port: theirs.addr().port(),
        ..ssh.clone()
    };
    let outcome = measure(options, &ours, &theirs, &client, &ssh).await;
    client.close().await;
    let stats = (ours.shutdown(), theirs.shutdown());
    let (results, capped) = outcome?;
    let mut comparisons = Vec::new();
    let at = |ms: u64| results.iter().find(|r| r.rtt_ms == ms);
    let note = format!(
        "`head -c N /dev/zero` to the caller, N = {} MiB up to 50 ms (fewer beyond, in proportion), and an eighth of N into `wc -c`; one run of each side per round, {} rounds; the emulators carried {} bytes for ours and {} for ssh",
        options.bytes / (1024 * 1024),
        options.rounds,
        stats.0.up.delivered + stats.0.down.delivered,
        stats.1.up.delivered + stats.1.down.delivered,
    );
    if let Some(far) = at(TARGET_RTT_MS) {
        comparisons.push(Comparison {
            id: "path bulk 50ms",
            unit: Unit::MibPerSec,
            ours: far.series[0].clone(),
            peer: Some(far.series[1].clone()),
            target: Target::AtLeast(2.0),
            notes: vec![note.clone()],
        });
        if let Some(near) = at(0) {
            comparisons.push(Comparison {
                id: "path bulk 50ms/0ms",
                unit: Unit::MibPerSec,
                ours: Series {
                    label: "ours across a 50 ms round trip".into(),
                    ..far.series[0].clone()
                },
                peer: Some(Series {
                    label: "ours through the same emulator at 0 ms".into(),
                    ..near.series[0].clone()
                }),
                target: Target::AtLeast(0.8),
                notes: vec![note.clone()],
            });
        }
    }
    let cap = Series {
        label: "the bottleneck, 100 Mbit/s".into(),
        values: vec![CAP_BYTES_PER_SEC as f64 / MIB; options.rounds],
        p99: Vec::new(),
    };
    for (id, series) in [
        ("path 100Mbit out", &capped[0]),
        ("path 100Mbit stdin", &capped[1]),
    ] {
        comparisons.push(Comparison {
            id,
            unit: Unit::MibPerSec,
            ours: series.clone(),
            peer: Some(cap.clone()),
            target: Target::AtLeast(0.9),
            notes: vec![format!(
                "50 ms round trip behind a 100 Mbit/s bottleneck with a {} KiB buffer, each way; {}",
                CAP_BUFFER / 1024,
                note
            )],
        });
    }
    Ok((comparisons, table(&results, &capped)))
}

async fn measure(
    options: &PathBulkOptions,
    ours: &Emulator,
    theirs: &Emulator,
    client: &Client,
    ssh: &Ssh,
) -> Result<(Vec<AtRtt>, [Series; 2]), String> {
    let mut results = Vec::new();
    for &rtt_ms in &options.rtts_ms {
        let rtt = Duration::from_millis(rtt_ms);
        ours.set_rtt(rtt);
        theirs.set_rtt(rtt);
        let out = out_bytes(options.bytes, rtt_ms);
        let sides = [
            (Side::OursOut, "ours, output"),
            (Side::SshOut, "ssh, output"),
        ];
        let [a, b] = in_turn(options.rounds, out, &sides, client, ssh).await?;
        let input = in_bytes(options.bytes, rtt_ms);
        let sides = [(Side::OursIn, "ours, stdin"), (Side::SshIn, "ssh, stdin")];
        let [c, d] = in_turn(options.rounds, input, &sides, client, ssh).await?;
        eprintln!(
            "path_bulk {rtt_ms} ms: output ours {:.1} ssh {:.1}, stdin ours {:.1} ssh {:.1} MiB/s",
            median(&a.values),
            median(&b.values),
            median(&c.values),
            median(&d.values)
        );
        results.push(AtRtt {
            rtt_ms,
            series: [a, b, c, d],
        });
    }
    let capped = PathSettings::delay(Duration::from_millis(TARGET_RTT_MS / 2))
        .with_rate(CAP_BYTES_PER_SEC, CAP_BUFFER);
    for direction in Direction::BOTH {
        ours.set_path(direction, capped);
    }
    // Each run takes about as long as an uncapped one at 50 ms would.
    let sides = [(Side::OursOut, "ours, output, 100 Mbit/s")];
    let [a] = in_turn(options.rounds, options.bytes / 4, &sides, client, ssh).await?;
    let sides = [(Side::OursIn, "ours, stdin, 100 Mbit/s")];
    let [b] = in_turn(options.rounds, options.bytes / 8, &sides, client, ssh).await?;
    eprintln!(
        "path_bulk 50 ms at 100 Mbit/s: output {:.1}, stdin {:.1} MiB/s",
        median(&a.values),
        median(&b.values)
    );
    Ok((results, [a, b]))
}

/// `sides` in turn, `bytes` a run (fewer in the warm-up runs), for
/// `rounds` rounds: a series of MiB/s per side.
async fn in_turn<const N: usize>(
    rounds: usize,
    bytes: u64,
    sides: &[(Side, &str); N],
    client: &Client,
    ssh: &Ssh,
) -> Result<[Series; N], String> {
    let series = throughputs(rounds, bytes, sides, async |side, warm| {
        let n = if warm { WARMUP_BYTES.min(bytes) } else { bytes };
        one(side, client, ssh, n).await
    })
    .await?;
    <[Series; N]>::try_from(series).map_err(|_| format!("path_bulk: expected {N} series"))
}

async fn one(side: Side, client: &Client, ssh: &Ssh, bytes: u64) -> Result<Duration, String> {
    match side {
        Side::OursOut => bulk::ours(client, bytes).await,
        Side::SshOut => bulk::ssh_bulk(ssh, bytes).await,
        Side::OursIn => ours_stdin(client, bytes).await,
        Side::SshIn => ssh_stdin(ssh, bytes).await,
    }
}

/// The count `wc -c` printed, if it is one.
fn counted(output: &[u8]) -> Option<u64> {
    std::str::from_utf8(output).ok()?.trim().parse().ok()
}

/// Writes `bytes` zeros into `wc -c` through `client`; the time from the
/// call to its exit, after checking the count.
async fn ours_stdin(client: &Client, bytes: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut spec = ExecSpec::new(["wc", "-c"]);
    spec.stdin = true;
    let mut run = client.exec(spec).await.map_err(|e| format!("exec: {e}"))?;
    let control = run.controller();
    let writer = tokio::spawn(async move { feed_zeros(&control, bytes).await });
    let (mut out, mut status) = (Vec::new(), None);
    while let Some(event) = run.next().await {
        match event {
            Event::Stdout(d) => out.extend_from_slice(&d),
            Event::Exited(s) => status = Some(s),
            Event::Failed(f) => return Err(format!("stdin exec failed: {f}")),
            Event::Started { .. } | Event::Stderr(_) | Event::Reconnecting | Event::Resumed => {}
        }
    }
    let took = started.elapsed();
    writer.await.map_err(|e| format!("stdin writer: {e}"))??;
    if counted(&out) == Some(bytes) && status == Some(ExitStatus::Code(0)) {
        Ok(took)
    } else {
        Err(format!(
            "stdin exec went wrong: {:?} counted of {bytes} bytes, {status:?}",
            String::from_utf8_lossy(&out)
        ))
    }
}

/// The same through ssh with AES-128-GCM.
async fn ssh_stdin(ssh: &Ssh, bytes: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = ssh
        .command(None)
        .args(["-c", "aes128-gcm@openssh.com"])
        .arg(ssh.destination())
        .arg("wc -c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("ssh: no stdin pipe")?;
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            stdin
                .write_all(&chunk[..n])
                .await
                .map_err(|e| format!("ssh stdin: {e}"))?;
            left -= n as u64;
        }
        Ok::<(), String>(())
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .ok_or("ssh: no stdout pipe")?
        .read_to_end(&mut out)
        .await
        .map_err(|e| format!("ssh stdout: {e}"))?;
    let status = child.wait().await.map_err(|e| format!("ssh: {e}"))?;
    let took = started.elapsed();
    writer
        .await
        .map_err(|e| format!("ssh stdin writer: {e}"))??;
    if counted(&out) == Some(bytes) && status.success() {
        Ok(took)
    } else {
        Err(format!(
            "ssh stdin went wrong: {:?} counted of {bytes} bytes, {status}",
            String::from_utf8_lossy(&out)
        ))
    }
}

/// The Markdown table: a row per round trip (and one for the capped
/// path), a column per side, each cell the median MiB/s (min–max across
/// rounds).
fn table(results: &[AtRtt], capped: &[Series; 2]) -> String {
    let cell = |s: &Series| {
        let (lo, hi) = min_max(&s.values);
        format!(" {:.1} ({lo:.1}–{hi:.1}) |", median(&s.values))
    };
    let mut out = String::from(
        "| path | ours, output | ssh, output | ours, stdin | ssh, stdin |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        let _ = write!(out, "| {} ms |", r.rtt_ms);
        for s in &r.series {
            out.push_str(&cell(s));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| {TARGET_RTT_MS} ms, 100 Mbit/s ({:.1} MiB/s) |{} – |{} – |",
        CAP_BYTES_PER_SEC as f64 / MIB,
        cell(&capped[0]),
        cell(&capped[1]),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(v: &[f64]) -> Series {
        Series {
            label: "x".into(),
            values: v.to_vec(),
            p99: Vec::new(),
        }
    }

    #[test]
    fn runs_shrink_past_50ms_so_each_takes_about_as_long() {
        let base = 128 * 1024 * 1024;
        assert_eq!(out_bytes(base, 0), base);
        assert_eq!(out_bytes(base, 50), base);
        assert_eq!(out_bytes(base, 200), base / 4);
        assert_eq!(in_bytes(base, 50), base / 8);
    }

    #[test]
    fn the_table_has_a_row_per_path_and_the_capped_row_last() {
        let results = [AtRtt {
            rtt_ms: 50,
            series: [
                series(&[50.0, 52.0, 55.0]),
                series(&[33.0]),
                series(&[4.5]),
                series(&[30.0]),
            ],
        }];
        let t = table(&results, &[series(&[11.0]), series(&[4.0])]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(
            lines[2].starts_with("| 50 ms | 52.0 (50.0–55.0) | 33.0 (33.0–33.0) |"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].starts_with("| 50 ms, 100 Mbit/s (11.9 MiB/s) | 11.0"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn a_count_is_read_from_wc_only_when_it_is_one() {
        assert_eq!(counted(b"16777216\n"), Some(16_777_216));
        assert_eq!(counted(b"  42 \n"), Some(42));
        assert_eq!(counted(b"wc: error\n"), None);
    }
}
