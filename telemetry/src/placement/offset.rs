//! The arithmetic every placement shares: instants as Unix nanoseconds
//! and back, the causal bounds on an offset (the offsets under which
//! remote work lies between the request leaving and the final event
//! arriving), the four-timestamp estimate they give (their midpoint,
//! within half their spread), the move of an offset into them, and the
//! attributes that say how a span was placed.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use proto::session::peer_clock::{Offset, Source};

use crate::spans;

/// The attribute that marks a span written by the client from what a
/// remote service told it (a copy of a span that service exports itself):
/// a reader that finds both keeps the service's own.
pub(crate) const PLACED: &str = "rex.remote.placed";

/// `t` in Unix nanoseconds (0 before the epoch).
pub(crate) fn nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0))
}

/// The instant `n` Unix nanoseconds name, if this clock can hold it.
pub(crate) fn at(n: i128) -> Option<SystemTime> {
    let n = u64::try_from(n).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(n))
}

/// The offsets (the peer's clock minus ours, in nanoseconds) that keep
/// cause before effect: under any of them, remote work from `first` to
/// `last` on the peer's clock lies between the request leaving and the
/// final event arriving on ours. Empty (`low > high`) when no offset can
/// (the clocks ran at different rates, or the times are not the call's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CausalBounds {
    /// The smallest: `last - o <= final_arrived`.
    pub(crate) low: i128,
    /// The largest: `first - o >= request_left`.
    pub(crate) high: i128,
}

impl CausalBounds {
    /// The bounds for work from `first` to `last` (Unix nanoseconds on the
    /// peer's clock) between `request_left` and `final_arrived` (ours).
    pub(crate) fn between(
        first: i128,
        last: i128,
        request_left: SystemTime,
        final_arrived: SystemTime,
    ) -> Self {
        Self {
            low: last - nanos(final_arrived),
            high: first - nanos(request_left),
        }
    }

    /// No offset keeps cause before effect.
    pub(crate) fn is_empty(&self) -> bool {
        self.low > self.high
    }

    /// `offset_nanos` keeps cause before effect.
    pub(crate) fn contains(&self, offset_nanos: i128) -> bool {
        (self.low..=self.high).contains(&offset_nanos)
    }

    /// The call's own estimate, as NTP makes it from four timestamps
    /// (`((t2 - t1) + (t3 - t4)) / 2`): the midpoint of the bounds, within
    /// half their spread (how the round trip splits between the two ways
    /// is unknown to it). `None` when they are empty or out of range.
    pub(crate) fn two_way(&self) -> Option<Offset> {
        if self.is_empty() {
            return None;
        }
        Some(Offset {
            source: Source::TwoWay,
            offset_nanos: i64::try_from((self.high + self.low) / 2).ok()?,
            bound: Duration::from_nanos(u64::try_from((self.high - self.low) / 2).ok()?),
        })
    }

    /// The offset nearest to `offset`'s value within these bounds,
    /// searched within the offset's own bound; for a two-way estimate that
    /// contradicts its bound (drift beyond the stated rate), anywhere
    /// within these. The value itself when the bounds are empty, or when
    /// an exact source (the same host, synchronized kernels) has no room.
    pub(crate) fn nearest(&self, offset: &Offset) -> i128 {
        let (low, high) = (self.low, self.high);
        let estimate = i128::from(offset.offset_nanos);
        if self.is_empty() {
            return estimate;
        }
        let bound = i128::from(offset.bound_nanos());
        let (lo, hi) = (low.max(estimate - bound), high.min(estimate + bound));
        if lo <= hi {
            estimate.clamp(lo, hi)
        } else if offset.source.knows_split() {
            estimate
        } else {
            estimate.clamp(low, high)
        }
    }
}

/// What a span says of the offset that placed it (or that a peer's clock
/// is known by): its source, value and bound.
pub fn clock_attributes(offset: &Offset) -> [KeyValue; 3] {
    [
        KeyValue::new(spans::ATTR_CLOCK_SOURCE, offset.source.as_str()),
        KeyValue::new(spans::ATTR_CLOCK_OFFSET, offset.offset_nanos),
        KeyValue::new(spans::ATTR_CLOCK_BOUND, offset.bound_nanos()),
    ]
}

/// Appends how a span was placed: the source, the offset `used` and its
/// bound, the source's own offset (`measured`) when the one used was
/// moved from it, and the mark of a placed copy.
pub(crate) fn push_placed_by(attributes: &mut Vec<KeyValue>, used: &Offset, measured: Option<i64>) {
    attributes.extend(clock_attributes(used));
    if let Some(measured) = measured {
        attributes.push(KeyValue::new(spans::ATTR_CLOCK_MEASURED, measured));
    }
    attributes.push(KeyValue::new(PLACED, true));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: i128) -> SystemTime {
        at(ns).unwrap()
    }

    #[test]
    fn instants_and_nanoseconds_round_trip() {
        assert_eq!(nanos(t(1_234)), 1_234);
        assert_eq!(at(-1), None);
        assert_eq!(nanos(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn the_two_way_estimate_is_the_middle_of_the_bounds() {
        // Work from 1010 to 1405 (the peer's), between 1000 and 2000 (ours).
        let bounds = CausalBounds::between(1010, 1405, t(1000), t(2000));
        assert_eq!((bounds.low, bounds.high), (-595, 10));
        let two_way = bounds.two_way().unwrap();
        assert_eq!(two_way.offset_nanos, -292);
        assert_eq!(two_way.bound, Duration::from_nanos(302));
        assert!(bounds.contains(-292) && !bounds.contains(11));
        let empty = CausalBounds::between(1010, 3405, t(1000), t(2000));
        assert!(empty.is_empty());
        assert_eq!(empty.two_way(), None);
    }

    #[test]
    fn an_offset_is_moved_within_its_bound_into_the_bounds() {
        let bounds = CausalBounds { low: 0, high: 10 };
        let offset = |source, offset_nanos, bound| Offset {
            source,
            offset_nanos,
            bound: Duration::from_nanos(bound),
        };
        assert_eq!(bounds.nearest(&offset(Source::TwoWay, 5, 0)), 5);
        assert_eq!(bounds.nearest(&offset(Source::Synchronized, 14, 5)), 10);
        assert_eq!(bounds.nearest(&offset(Source::Synchronized, 20, 5)), 20);
        assert_eq!(bounds.nearest(&offset(Source::TwoWay, 20, 5)), 10);
        let empty = CausalBounds { low: 1, high: 0 };
        assert_eq!(empty.nearest(&offset(Source::TwoWay, 20, 5)), 20);
    }
}
