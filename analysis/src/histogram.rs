//! Durations counted in logarithmic buckets: a bounded picture of a whole
//! distribution (the report's charts draw them), the same buckets for
//! every stage so that histograms can be laid on one axis.
//!
//! Bucket `i` (0 ≤ i < [`BUCKETS`]) holds the durations from edge `i`
//! (inclusive) to edge `i + 1` (exclusive), where edge `i` is
//! 100 ns · 10^(i/5) rounded to the nanosecond: five buckets per decade
//! from 100 ns to 100 s. Bucket 0 also holds anything shorter, the last
//! anything longer.

use serde::Serialize;

/// How many buckets there are.
pub const BUCKETS: usize = 45;
/// Buckets per factor of ten.
pub const PER_DECADE: u32 = 5;
/// The lowest edge, nanoseconds.
pub const LOWEST_NS: u64 = 100;

/// Counts per bucket, from the first non-empty bucket to the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// The index of the first bucket in `counts` (the buckets before it
    /// are empty). Bucket `i` holds durations from 100 ns · 10^(i/5) to
    /// 100 ns · 10^((i+1)/5) (rounded to the ns); bucket 0 also holds
    /// anything shorter, bucket 44 anything longer.
    pub first: u32,
    /// The counts of consecutive buckets from `first`, ending with the
    /// last non-empty one.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The histogram of `values` (empty values give an empty histogram).
    pub fn of(values: &[u64]) -> Histogram {
        let mut all = [0u64; BUCKETS];
        for v in values {
            if let Some(slot) = all.get_mut(bucket(*v)) {
                *slot += 1;
            }
        }
        let first = all.iter().position(|c| *c > 0);
        let last = all.iter().rposition(|c| *c > 0);
        match (first, last) {
            (Some(a), Some(b)) => Histogram {
                first: u32::try_from(a).unwrap_or(0),
                counts: all.get(a..=b).map(<[u64]>::to_vec).unwrap_or_default(),
            },
            _ => Histogram {
                first: 0,
                counts: Vec::new(),
            },
        }
    }

    /// Each non-empty bucket as (its lower edge, its upper edge, count),
    /// in nanoseconds.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let first = usize::try_from(self.first).unwrap_or(0);
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(move |(i, c)| (edge(first + i), edge(first + i + 1), *c))
    }

    /// The largest count.
    pub fn peak(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }
}

/// Edge `i` in nanoseconds: 100 · 10^(i/5), rounded.
pub fn edge(i: usize) -> u64 {
    let exponent = i as f64 / f64::from(PER_DECADE);
    (LOWEST_NS as f64 * 10f64.powf(exponent)).round() as u64
}

/// The bucket `ns` falls in.
pub fn bucket(ns: u64) -> usize {
    // The largest i with edge(i) <= ns, clamped to the buckets.
    let mut i = 0;
    while i + 1 < BUCKETS && edge(i + 1) <= ns {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_five_per_decade_from_100ns() {
        assert_eq!(edge(0), 100);
        assert_eq!(edge(5), 1_000);
        assert_eq!(edge(1), 158);
        assert_eq!(edge(20), 1_000_000);
        assert_eq!(edge(BUCKETS), 100_000_000_000);
    }

    #[test]
    fn values_land_in_their_bucket_and_the_ends_are_open() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(157), 0);
        assert_eq!(bucket(158), 1);
        assert_eq!(bucket(999), 4);
        assert_eq!(bucket(1_000), 5);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_histogram_keeps_only_its_non_empty_range() {
        // 1 ms twice, 1.5 ms once, 10 ms once.
        let h = Histogram::of(&[1_000_000, 1_000_000, 1_500_000, 10_000_000]);
        assert_eq!(h.first, 20);
        assert_eq!(h.counts, [3, 0, 0, 0, 0, 1]);
        assert_eq!(h.peak(), 3);
        let buckets: Vec<_> = h.buckets().collect();
        assert_eq!(
            buckets,
            [(1_000_000, 1_584_893, 3), (10_000_000, 15_848_932, 1)]
        );
        assert_eq!(Histogram::of(&[]).counts, Vec::<u64>::new());
    }
}
