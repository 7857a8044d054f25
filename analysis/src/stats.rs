//! Order statistics. Percentiles use the nearest-rank method: the p-th
//! percentile of n sorted values is the value at rank ⌈p·n/100⌉ (1-based),
//! so every percentile is a value that occurred.

use serde::Serialize;

/// The distribution of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// How many values.
    pub count: u64,
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 90th percentile, nanoseconds.
    pub p90_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// Largest, nanoseconds.
    pub max_ns: u64,
    /// Arithmetic mean, nanoseconds (rounded down).
    pub mean_ns: u64,
}

impl Summary {
    /// The summary of `values` (sorted here), `None` when empty.
    pub fn of(values: &mut [u64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let sum: u128 = values.iter().map(|v| u128::from(*v)).sum();
        let count = values.len() as u64;
        Some(Summary {
            count,
            p50_ns: percentile(values, 50.0)?,
            p90_ns: percentile(values, 90.0)?,
            p99_ns: percentile(values, 99.0)?,
            max_ns: *values.last()?,
            mean_ns: u64::try_from(sum / u128::from(count)).unwrap_or(u64::MAX),
        })
    }
}

/// The `p`-th percentile (0 < p ≤ 100) of `sorted` by nearest rank.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    sorted.get(rank(p, sorted.len())? - 1).copied()
}

/// The nearest rank (1-based) of the `p`-th percentile of `n` values:
/// ⌈p·n/100⌉, computed so that an exact product is not pushed up by
/// rounding (p·n/100 = 9.000000000000002 is rank 9).
fn rank(p: f64, n: usize) -> Option<usize> {
    if n == 0 || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let exact = p * n as f64 / 100.0;
    let rounded = exact.round();
    let rank = if (exact - rounded).abs() < 1e-9 {
        rounded
    } else {
        exact.ceil()
    };
    // A float in 1..=n here: the conversion cannot truncate.
    Some((rank as usize).clamp(1, n))
}

/// The distribution of shares (fractions of a whole).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shares {
    /// Mean share.
    pub mean: f64,
    /// Median share.
    pub p50: f64,
    /// 90th percentile share.
    pub p90: f64,
    /// Largest share.
    pub max: f64,
}

impl Shares {
    /// The shares `present` plus `absent` zeros (commands without the
    /// stage count as a share of 0).
    pub fn of(present: &mut [f64], absent: usize) -> Option<Shares> {
        let n = present.len() + absent;
        if n == 0 {
            return None;
        }
        present.sort_unstable_by(f64::total_cmp);
        // The zeros sort first.
        let at = |p: f64| -> f64 {
            match rank(p, n) {
                Some(r) if r > absent => present.get(r - absent - 1).copied().unwrap_or(0.0),
                _ => 0.0,
            }
        };
        // An empty sum is -0.0; adding 0.0 makes it 0.0.
        let sum: f64 = present.iter().sum::<f64>() + 0.0;
        Some(Shares {
            mean: sum / n as f64,
            p50: at(50.0),
            p90: at(90.0),
            max: present.last().copied().unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=10).collect();
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.p50_ns, s.p90_ns, s.p99_ns, s.max_ns), (5, 9, 10, 10));
        assert_eq!((s.count, s.mean_ns), (10, 5));
        let mut one = vec![7];
        let s = Summary::of(&mut one).unwrap();
        assert_eq!((s.p50_ns, s.p99_ns), (7, 7));
        assert_eq!(Summary::of(&mut []), None);
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99));
        assert_eq!(percentile(&hundred, 0.0), None);
    }

    #[test]
    fn shares_count_absent_commands_as_zero() {
        let mut present = vec![0.5, 0.25];
        let s = Shares::of(&mut present, 2).unwrap();
        assert_eq!(s.p50, 0.0);
        assert_eq!(s.p90, 0.5);
        assert_eq!(s.max, 0.5);
        assert!((s.mean - 0.1875).abs() < 1e-12);
        assert_eq!(Shares::of(&mut [], 0), None);
    }
}
