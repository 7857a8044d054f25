//! The peer's clock relative to ours, from request/answer pairs (the hello
//! and its answer, each ping and its pong).
//!
//! A sample is a request sent at our wall time `sent`, stamped by the peer
//! at its wall time `peer`, and answered back here at our wall time
//! `received`. Assuming the two legs take equally long, the peer's clock
//! minus ours is `peer - (sent + received) / 2`, give or take half the
//! round trip. The estimate keeps the sample with the smallest round trip
//! among the latest few, as NTP does: the shortest round trip bounds the
//! error most tightly.

use std::time::Duration;

/// How many recent samples the estimate chooses from.
pub const SAMPLES: usize = 8;

/// One offset sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The peer's clock minus ours, in nanoseconds.
    pub offset_nanos: i64,
    /// The round trip it was measured over.
    pub rtt: Duration,
}

impl Sample {
    /// The sample for a request sent at `sent`, stamped by the peer at
    /// `peer` and answered at `received` (Unix nanoseconds, wall clocks), or
    /// `None` for an impossible sample (a zero time, or an answer before the
    /// request).
    pub fn new(sent: u64, peer: u64, received: u64) -> Option<Self> {
        if sent == 0 || peer == 0 || received < sent {
            return None;
        }
        let rtt_nanos = received - sent;
        let mid = i128::from(sent) + i128::from(rtt_nanos) / 2;
        let offset_nanos = i64::try_from(i128::from(peer) - mid).ok()?;
        Some(Self {
            offset_nanos,
            rtt: Duration::from_nanos(rtt_nanos),
        })
    }

    /// The sample of a whole exchange with the peer's own receive and send
    /// times (NTP's four timestamps): a request sent at our `sent`,
    /// received by the peer at its `peer_received`, answered at its
    /// `peer_sent` and received back at our `received`. The peer's time in
    /// between (running a command, say) is no part of the round trip.
    /// `None` for an impossible sample.
    pub fn exchange(sent: u64, peer_received: u64, peer_sent: u64, received: u64) -> Option<Self> {
        if sent == 0 || peer_received == 0 || received < sent || peer_sent < peer_received {
            return None;
        }
        let away = i128::from(peer_sent) - i128::from(peer_received);
        let rtt_nanos = i128::from(received - sent) - away;
        if rtt_nanos < 0 {
            return None;
        }
        let out = i128::from(peer_received) - i128::from(sent);
        let back = i128::from(peer_sent) - i128::from(received);
        let offset_nanos = i64::try_from((out + back) / 2).ok()?;
        Some(Self {
            offset_nanos,
            rtt: Duration::from_nanos(u64::try_from(rtt_nanos).ok()?),
        })
    }

    /// How far off the offset may be: half the round trip.
    pub fn uncertainty(&self) -> Duration {
        self.rtt / 2
    }
}

/// The current estimate: the best of the latest [`SAMPLES`] samples.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    recent: Vec<Sample>,
    next: usize,
}

impl Estimate {
    /// Adds a sample, replacing the oldest once [`SAMPLES`] are held.
    pub fn add(&mut self, sample: Sample) {
        if self.recent.len() < SAMPLES {
            self.recent.push(sample);
        } else if let Some(slot) = self.recent.get_mut(self.next) {
            *slot = sample;
        }
        self.next = (self.next + 1) % SAMPLES;
    }

    /// The sample with the smallest round trip, if any (of equals, the
    /// newest).
    pub fn best(&self) -> Option<Sample> {
        // Newest first (the slot before `next`, going back), so that the
        // first of equal round trips is the newest.
        let n = self.recent.len();
        (1..=n)
            .filter_map(|back| self.recent.get((self.next + n - back) % n))
            .copied()
            .min_by_key(|s| s.rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_the_peer_time_minus_the_midpoint() {
        // Sent at 1000, answered by a clock 500 ahead at (local 1100) 1600,
        // received at 1200.
        let s = Sample::new(1000, 1600, 1200).unwrap();
        assert_eq!(s.offset_nanos, 500);
        assert_eq!(s.rtt, Duration::from_nanos(200));
        assert_eq!(s.uncertainty(), Duration::from_nanos(100));
        assert_eq!(Sample::new(1000, 900, 1200).unwrap().offset_nanos, -200);
        // Impossible samples are ignored.
        assert_eq!(Sample::new(0, 1600, 1200), None);
        assert_eq!(Sample::new(1000, 0, 1200), None);
        assert_eq!(Sample::new(1000, 1600, 999), None);
    }

    #[test]
    fn an_exchange_leaves_the_peers_own_time_out_of_the_round_trip() {
        // Sent at 1000; the peer (500 ahead) got it at local 1100 (1600),
        // worked 5000, answered at local 6100 (6600); back here at 6200.
        let s = Sample::exchange(1000, 1600, 6600, 6200).unwrap();
        assert_eq!(s.offset_nanos, 500);
        assert_eq!(s.rtt, Duration::from_nanos(200));
        // Clocks that contradict each other give no sample.
        assert_eq!(Sample::exchange(1000, 1600, 6600, 1100), None);
        assert_eq!(Sample::exchange(1000, 1600, 1500, 6200), None);
        assert_eq!(Sample::exchange(0, 1600, 6600, 6200), None);
    }

    #[test]
    fn the_estimate_keeps_the_shortest_round_trip_of_the_recent_samples() {
        let mut e = Estimate::default();
        assert_eq!(e.best(), None);
        let sample = |offset, rtt| Sample {
            offset_nanos: offset,
            rtt: Duration::from_micros(rtt),
        };
        e.add(sample(10, 500));
        e.add(sample(20, 100));
        e.add(sample(30, 300));
        assert_eq!(e.best().unwrap().offset_nanos, 20);
        // The good sample ages out after SAMPLES newer ones.
        for i in 0..SAMPLES {
            e.add(sample(40 + i as i64, 200));
        }
        assert_eq!(e.best().unwrap().rtt, Duration::from_micros(200));
        // Of equal round trips, the newest.
        assert_eq!(e.best().unwrap().offset_nanos, 40 + SAMPLES as i64 - 1);
    }
}
