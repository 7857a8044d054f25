//! What the emulator carried: counters shared by its threads, and the
//! snapshot a caller reads.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Direction;

#[derive(Debug, Default)]
pub(crate) struct LaneCounters {
    pub(crate) received: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) chunks: AtomicU64,
    pub(crate) peak_queued: AtomicU64,
    pub(crate) bottleneck_waits: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) lanes: [LaneCounters; 2],
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) failed_connects: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) closes: AtomicU64,
    pub(crate) resets: AtomicU64,
}

impl Counters {
    pub(crate) fn lane(&self, direction: Direction) -> &LaneCounters {
        &self.lanes[direction.index()]
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        let lane = |d: Direction| {
            let c = self.lane(d);
            DirectionStats {
                received: c.received.load(Ordering::Relaxed),
                delivered: c.delivered.load(Ordering::Relaxed),
                chunks: c.chunks.load(Ordering::Relaxed),
                peak_queued: c.peak_queued.load(Ordering::Relaxed),
                bottleneck_waits: c.bottleneck_waits.load(Ordering::Relaxed),
            }
        };
        LinkStats {
            up: lane(Direction::Up),
            down: lane(Direction::Down),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed_connects: self.failed_connects.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            closes: self.closes.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }
}

/// What one direction carried, over every connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectionStats {
    /// Bytes read from the sender.
    pub received: u64,
    /// Bytes written to the receiver.
    pub delivered: u64,
    /// Reads that became chunks in the delay line.
    pub chunks: u64,
    /// The most bytes one connection's delay line held at once.
    pub peak_queued: u64,
    /// Times the sender was held back because the bottleneck buffer was
    /// full (a queue formed).
    pub bottleneck_waits: u64,
}

/// What the emulator carried since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Client → server.
    pub up: DirectionStats,
    /// Server → client.
    pub down: DirectionStats,
    /// Connections accepted and forwarded.
    pub accepted: u64,
    /// Connections reset at once because `max_connections` were open.
    pub refused: u64,
    /// Connections whose target could not be reached (reset).
    pub failed_connects: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections cut with a close (asked for; not those the emulator
    /// closes as it stops).
    pub closes: u64,
    /// Connections cut with a reset (asked for, or passed on from an end
    /// that reset).
    pub resets: u64,
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, d) in [("up", self.up), ("down", self.down)] {
            writeln!(
                f,
                "{name}: {} bytes delivered of {} received, {} chunks, peak queue {} bytes, bottleneck full {} times",
                d.delivered, d.received, d.chunks, d.peak_queued, d.bottleneck_waits
            )?;
        }
        write!(
            f,
            "connections: {} accepted, {} refused, {} target unreachable, {} open; cuts: {} closes, {} resets",
            self.accepted,
            self.refused,
            self.failed_connects,
            self.active,
            self.closes,
            self.resets
        )
    }
}
