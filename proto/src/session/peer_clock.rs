//! The peer's clock relative to ours, from request/answer pairs (the hello
//! and its answer, each ping and its pong).
//!
//! A sample is a request sent at our wall time `sent`, stamped by the peer
//! at its wall time `peer`, and answered back here at our wall time
//! `received`. Assuming the two legs take equally long, the peer's clock
//! minus ours is `peer - (sent + received) / 2`, give or take half the
//! round trip. The estimate keeps the sample with the smallest round trip
//! among the latest few, as NTP's clock filter does: the shortest round trip
//! bounds the error most tightly (plus the drift the clocks may have made
//! since it was taken).
//!
//! That estimate cannot see path asymmetry, so an offset is always an
//! interval ([`Offset`]): a value and a bound the truth lies within. Its
//! [`Source`] is the tightest one available ([`choose`]): the same kernel
//! (equal boot ids: exactly 0), both kernels synchronized (0, within the
//! sum of their stated maximum errors), else the two-way estimate (within
//! half its round trip, plus drift).

use std::time::Duration;

use crate::pb::clock::ClockStatus;

/// How fast two free-running clocks may drift apart, per second: NTP's
/// tolerance (PHI, 15 parts per million).
pub(crate) const DRIFT_PER_SECOND: Duration = Duration::from_micros(15);

/// Where an offset came from, tightest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// Both processes run on one kernel (equal boot ids): one clock.
    SameHost,
    /// Both kernels say their clocks are synchronized, each within a
    /// stated maximum error.
    Synchronized,
    /// The session's own request/answer exchanges: blind to asymmetry.
    TwoWay,
}

impl Source {
    /// The name written in traces (`rex.clock.source`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SameHost => "same-host",
            Self::Synchronized => "synchronized",
            Self::TwoWay => "two-way",
        }
    }

    /// The source a trace names, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::SameHost, Self::Synchronized, Self::TwoWay]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// Whether it tells how a round trip splits into its two legs (the
    /// two-way estimate cannot: it assumes equal legs).
    pub fn knows_split(self) -> bool {
        !matches!(self, Self::TwoWay)
    }
}

/// The peer's clock minus ours, as an interval: the truth lies within
/// `bound` of `offset_nanos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// Where it came from.
    pub source: Source,
    /// The peer's clock minus ours, in nanoseconds.
    pub offset_nanos: i64,
    /// How far the truth may be from it, either way.
    pub bound: Duration,
}

impl Offset {
    /// The bound in nanoseconds, saturated.
    pub fn bound_nanos(&self) -> i64 {
        i64::try_from(self.bound.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// What a process knows of its own clock: the kernel it runs on (a digest
/// of its boot id) and, when the kernel says the clock is synchronized,
/// its stated maximum error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// The boot id's digest; `None`: not known or not told.
    pub boot: Option<[u8; 16]>,
    /// The maximum error, when synchronized; `None`: not synchronized,
    /// or not told.
    pub max_error: Option<Duration>,
}

impl Status {
    /// A status as a peer told it (a malformed boot digest is no digest).
    pub fn from_wire(wire: &ClockStatus) -> Self {
        Self {
            boot: <[u8; 16]>::try_from(wire.boot.as_ref()).ok(),
            max_error: wire
                .synchronized
                .then(|| Duration::from_nanos(wire.max_error_ns)),
        }
    }

    /// The status to tell peers.
    pub fn to_wire(&self) -> ClockStatus {
        ClockStatus {
            boot: self
                .boot
                .map(|b| bytes::Bytes::copy_from_slice(&b))
                .unwrap_or_default(),
            synchronized: self.max_error.is_some(),
            max_error_ns: self
                .max_error
                .map_or(0, |e| u64::try_from(e.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

/// The tightest offset of a peer's clock minus ours: same host, else the
/// smaller bound of both kernels synchronized and the two-way `estimate`
/// (as of our wall time `now_unix_nanos`); `None` when there is none.
pub fn choose(
    ours: &Status,
    peer: &Status,
    estimate: &Estimate,
    now_unix_nanos: u64,
) -> Option<Offset> {
    let two_way = estimate.best_at(now_unix_nanos).map(|s| Offset {
        source: Source::TwoWay,
        offset_nanos: s.offset_nanos,
        bound: s.bound_at(now_unix_nanos),
    });
    choose_with(ours, peer, two_way)
}

/// [`choose`] with the two-way offset already estimated (`two_way`, if
/// any): a relay's, say, from the four timestamps of one call.
pub fn choose_with(ours: &Status, peer: &Status, two_way: Option<Offset>) -> Option<Offset> {
    if let (Some(a), Some(b)) = (ours.boot, peer.boot)
        && a == b
    {
        return Some(Offset {
            source: Source::SameHost,
            offset_nanos: 0,
            bound: Duration::ZERO,
        });
    }
    let synchronized = match (ours.max_error, peer.max_error) {
        (Some(a), Some(b)) => Some(Offset {
            source: Source::Synchronized,
            offset_nanos: 0,
            bound: a.saturating_add(b),
        }),
        _ => None,
    };
    match (synchronized, two_way) {
        (Some(s), Some(t)) if t.bound < s.bound => Some(t),
        (Some(s), _) => Some(s),
        (None, t) => t,
    }
}

/// The drift two free-running clocks may make over `elapsed`.
fn drift(elapsed: Duration) -> Duration {
    let nanos = elapsed
        .as_nanos()
        .saturating_mul(DRIFT_PER_SECOND.as_nanos())
        / 1_000_000_000;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many recent samples the estimate chooses from.
pub(crate) const SAMPLES: usize = 8;

/// One offset sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The peer's clock minus ours, in nanoseconds.
    pub offset_nanos: i64,
    /// The round trip it was measured over.
    pub rtt: Duration,
    /// When it was taken: our wall clock when the answer arrived (Unix
    /// nanoseconds).
    pub at_unix_nanos: u64,
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
            at_unix_nanos: received,
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
            at_unix_nanos: received,
        })
    }

    /// How far off the offset may be when taken: half the round trip.
    pub fn uncertainty(&self) -> Duration {
        self.rtt / 2
    }

    /// How far off the offset may be at our wall time `now_unix_nanos`:
    /// half the round trip, plus the drift since it was taken.
    pub(crate) fn bound_at(&self, now_unix_nanos: u64) -> Duration {
        let age = Duration::from_nanos(now_unix_nanos.saturating_sub(self.at_unix_nanos));
        self.uncertainty().saturating_add(drift(age))
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

    /// The sample with the smallest bound at our wall time
    /// `now_unix_nanos` (half its round trip plus the drift since it was
    /// taken; of equals, the newest), if any.
    pub(crate) fn best_at(&self, now_unix_nanos: u64) -> Option<Sample> {
        let n = self.recent.len();
        (1..=n)
            .filter_map(|back| self.recent.get((self.next + n - back) % n))
            .copied()
            .min_by_key(|s| s.bound_at(now_unix_nanos))
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
            at_unix_nanos: 1,
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

    fn sample(offset: i64, rtt_micros: u64, at: u64) -> Sample {
        Sample {
            offset_nanos: offset,
            rtt: Duration::from_micros(rtt_micros),
            at_unix_nanos: at,
        }
    }

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_samples_bound_is_half_its_round_trip_plus_drift_since() {
        let s = sample(0, 1000, 10 * SECOND);
        assert_eq!(s.bound_at(10 * SECOND), Duration::from_micros(500));
        // 100 s later: 15 ppm of 100 s is 1.5 ms more.
        assert_eq!(s.bound_at(110 * SECOND), Duration::from_micros(2000));
        // A time before the sample adds nothing.
        assert_eq!(s.bound_at(SECOND), Duration::from_micros(500));
    }

    #[test]
    fn the_filter_picks_the_tightest_bound_now_not_the_shortest_round_trip_ever() {
        let mut e = Estimate::default();
        // A 100 µs round trip 1000 s ago (bound 50 µs + 15 ms of drift)
        // loses to a 2 ms round trip taken now (bound 1 ms).
        e.add(sample(7, 100, SECOND));
        e.add(sample(9, 2000, 1001 * SECOND));
        assert_eq!(e.best().map(|s| s.offset_nanos), Some(7));
        assert_eq!(e.best_at(1001 * SECOND).map(|s| s.offset_nanos), Some(9));
        // Taken at the same time, the minimum-delay sample wins.
        e.add(sample(11, 400, 1001 * SECOND));
        assert_eq!(e.best_at(1001 * SECOND).map(|s| s.offset_nanos), Some(11));
    }

    fn boot(b: u8) -> Option<[u8; 16]> {
        Some([b; 16])
    }

    #[test]
    fn the_same_boot_id_is_the_same_clock() {
        let mut e = Estimate::default();
        e.add(sample(-20_060_000, 50_000, SECOND));
        let ours = Status {
            boot: boot(1),
            max_error: None,
        };
        let o = choose(&ours, &ours, &e, SECOND).unwrap();
        assert_eq!(o.source, Source::SameHost);
        assert_eq!((o.offset_nanos, o.bound), (0, Duration::ZERO));
    }

    #[test]
    fn synchronized_kernels_bound_the_offset_by_the_sum_of_their_errors() {
        let ours = Status {
            boot: boot(1),
            max_error: Some(Duration::from_micros(300)),
        };
        let peer = Status {
            boot: boot(2),
            max_error: Some(Duration::from_micros(200)),
        };
        // No two-way sample yet: synchronized.
        let mut e = Estimate::default();
        let o = choose(&ours, &peer, &e, SECOND).unwrap();
        assert_eq!(o.source, Source::Synchronized);
        assert_eq!(o.offset_nanos, 0);
        assert_eq!(o.bound, Duration::from_micros(500));
        // A two-way sample with a wider bound does not displace it.
        e.add(sample(40, 2000, SECOND));
        assert_eq!(
            choose(&ours, &peer, &e, SECOND).unwrap().source,
            Source::Synchronized
        );
        // A tighter one (a 400 µs round trip: ± 200 µs) does.
        e.add(sample(40, 400, SECOND));
        let o = choose(&ours, &peer, &e, SECOND).unwrap();
        assert_eq!(o.source, Source::TwoWay);
        assert_eq!((o.offset_nanos, o.bound), (40, Duration::from_micros(200)));
    }

    #[test]
    fn an_unsynchronized_side_falls_back_to_the_two_way_estimate() {
        let ours = Status {
            boot: boot(1),
            max_error: Some(Duration::from_micros(300)),
        };
        let peer = Status::from_wire(&ClockStatus {
            boot: bytes::Bytes::from_static(&[2; 16]),
            synchronized: false,
            max_error_ns: 16_000_000_000,
        });
        assert_eq!(peer.max_error, None);
        let mut e = Estimate::default();
        assert_eq!(choose(&ours, &peer, &e, SECOND), None);
        e.add(sample(-20_060_000, 50_000, SECOND));
        let o = choose(&ours, &peer, &e, 3 * SECOND).unwrap();
        assert_eq!(o.source, Source::TwoWay);
        assert_eq!(o.offset_nanos, -20_060_000);
        // Half the 50 ms round trip, plus 2 s of drift (30 µs).
        assert_eq!(o.bound, Duration::from_micros(25_030));
        assert!(!o.source.knows_split());
        // A peer that tells nothing is never the same host.
        let o = choose(&ours, &Status::default(), &e, SECOND).unwrap();
        assert_eq!(o.source, Source::TwoWay);
    }

    #[test]
    fn a_status_survives_the_wire_and_a_bad_digest_is_none() {
        let s = Status {
            boot: boot(3),
            max_error: Some(Duration::from_micros(1500)),
        };
        assert_eq!(Status::from_wire(&s.to_wire()), s);
        assert_eq!(
            Status::from_wire(&Status::default().to_wire()),
            Status::default()
        );
        let short = ClockStatus {
            boot: bytes::Bytes::from_static(&[1; 5]),
            ..ClockStatus::default()
        };
        assert_eq!(Status::from_wire(&short).boot, None);
        for s in [Source::SameHost, Source::Synchronized, Source::TwoWay] {
            assert_eq!(Source::parse(s.as_str()), Some(s));
        }
    }
}
