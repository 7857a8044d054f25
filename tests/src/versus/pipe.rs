//! Raw Noise-over-relay byte throughput against `socat` relaying plain TCP
//! between two local sockets.
//!
//! Layout:
//! - this module: the rounds (a warm-up of each, then each round runs ours
//!   and the peer once, alternating which goes first) and the report.
//! - `ours`: a relay in this process and a client pushing full-size Noise
//!   records through it, the session opened as the client library opens
//!   one;
//!   `responder`: the far end, registered as an exec-server registers,
//!   which decrypts, checks and counts the plaintext;
//!   `pattern`: what ours sends, numbered envelopes of a fixed pattern.
//! - `socat`: the peer, a fresh `socat` per round between two loopback
//!   sockets, the bench writing into one and counting at the other.
//!
//! Each side is timed from its first byte sent to its last byte counted at
//! the far end (for ours: decrypted). A byte count (or, for ours, content)
//! that differs is an error; a slow run is only reported.

mod ours;
mod pattern;
mod responder;
mod socat;

use std::time::Duration;

use self::pattern::CHUNK;
use super::{Comparison, Series, Target, Unit};
use crate::bench::{median, process_cpu_nanos, rotated};

/// Settings of the `pipe` scenario.
#[derive(Debug, Clone)]
pub struct PipeOptions {
    /// Rounds (each runs ours and the peer once, alternating which goes first).
    pub rounds: usize,
    /// Bytes pushed through each pipe per round.
    pub bytes: u64,
}

/// Bytes of the warm-up run of each side (or fewer, if a round is smaller).
const WARM_UP: u64 = 64 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours,
    Peer,
}

/// The rounds' throughputs, and CPU seconds per GiB moved (everything in
/// this process; for the peer, socat's too).
#[derive(Default)]
struct Measured {
    ours: Vec<f64>,
    peer: Vec<f64>,
    ours_cpu: Vec<f64>,
    peer_cpu: Vec<f64>,
    /// Rounds in which socat's CPU time could not be read.
    socat_cpu_unread: usize,
    record: Option<ours::Pushed>,
}

/// Runs the `pipe` scenario.
pub async fn run(options: &PipeOptions) -> Result<Comparison, String> {
    if options.bytes == 0 {
        return Err("pipe: the bytes per round must be at least 1".into());
    }
    let socat_version = socat::version().await?;
    let mut pipe = ours::NoisePipe::start().await?;
    let measured = measure(&mut pipe, options).await;
    pipe.stop().await;
    let m = measured?;
    let mut notes = vec![format!(
        "each round pushes {:.0} MiB one way through each pipe (after a {:.0} MiB warm-up of each); \
         timed from the first byte sent to the last one counted at the far end",
        options.bytes as f64 / MIB,
        options.bytes.min(WARM_UP) as f64 / MIB
    )];
    if let Some(r) = m.record {
        notes.push(format!(
            "ours: {} (the default session config) from the project's Noise code, opened as the client library opens a session, over a relay \
             in the bench process (gRPC on 127.0.0.1); {} Noise messages per round, the largest \
             {} bytes ({} plaintext bytes per record); every byte checked at the responder",
            proto::noise::SessionConfig::default().suite.protocol_name(),
            r.messages,
            r.largest,
            CHUNK
        ));
    }
    notes.push(format!(
        "peer: {socat_version}, `TCP-LISTEN:…,bind=127.0.0.1,reuseaddr TCP:127.0.0.1:…`, \
         a fresh socat per round; {} KiB writes, bytes counted",
        socat::WRITE / 1024
    ));
    let mut cpu = format!(
        "CPU seconds per GiB (median; every thread of the bench process: for ours the client, \
         relay and responder; for the peer the writer and counter, plus socat): ours {:.2}, \
         peer {:.2}",
        median(&m.ours_cpu),
        median(&m.peer_cpu)
    );
    if m.socat_cpu_unread > 0 {
        cpu.push_str(&format!(
            " (socat's own CPU unreadable in {} rounds)",
            m.socat_cpu_unread
        ));
    }
    notes.push(cpu);
    Ok(Comparison {
        id: "pipe",
        unit: Unit::MibPerSec,
        ours: Series {
            label: "Noise over the relay".into(),
            values: m.ours,
            p99: Vec::new(),
        },
        peer: Some(Series {
            label: "socat TCP relay".into(),
            values: m.peer,
            p99: Vec::new(),
        }),
        target: Target::AtLeast(1.0),
        notes,
    })
}

async fn measure(pipe: &mut ours::NoisePipe, options: &PipeOptions) -> Result<Measured, String> {
    let warm = options.bytes.min(WARM_UP);
    pipe.push(warm).await?;
    socat::push(warm).await?;
    let mut m = Measured::default();
    let per_gib = |cpu: Duration| cpu.as_secs_f64() / (options.bytes as f64 / GIB);
    let rate = |took: Duration| options.bytes as f64 / MIB / took.as_secs_f64().max(1e-9);
    for round in 0..options.rounds {
        for side in rotated(&[Side::Ours, Side::Peer], round) {
            let cpu_before = process_cpu_nanos();
            let (took, extra_cpu) = match side {
                Side::Ours => {
                    let pushed = pipe.push(options.bytes).await?;
                    m.record.get_or_insert(pushed);
                    (pushed.took, Duration::ZERO)
                }
                Side::Peer => {
                    let pushed = socat::push(options.bytes).await?;
                    m.socat_cpu_unread += usize::from(pushed.socat_cpu.is_none());
                    (pushed.took, pushed.socat_cpu.unwrap_or_default())
                }
            };
            let cpu = Duration::from_nanos(process_cpu_nanos().saturating_sub(cpu_before));
            let (values, cpus) = match side {
                Side::Ours => (&mut m.ours, &mut m.ours_cpu),
                Side::Peer => (&mut m.peer, &mut m.peer_cpu),
            };
            values.push(rate(took));
            cpus.push(per_gib(cpu + extra_cpu));
        }
    }
    Ok(m)
}
