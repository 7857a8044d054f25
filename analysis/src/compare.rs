//! A/B: two populations of commands compared stage by stage, with a rank
//! test telling a real difference from noise.
//!
//! The test is Mann–Whitney U (Wilcoxon rank-sum), two-sided, with the
//! normal approximation, continuity and tie corrections: it asks whether a
//! command of one population tends to take longer than one of the other,
//! assumes no distribution (latencies are skewed and heavy-tailed), and
//! costs O(n log n), so it scales to any number of commands. A difference
//! is called when p < [`ALPHA`]. Each row also gives the probability that a
//! command of the current population is slower than one of the baseline
//! (0.5: no tendency), the size of the effect next to its significance.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use statrs::function::erf::erfc;

use super::aggregate::by_name;
use super::command::{Command, StageTable, Warmth};
use super::stats::Summary;

/// The significance level.
pub const ALPHA: f64 = 0.01;

/// The method, as the report states it.
pub const METHOD: &str = "Mann-Whitney U rank test, two-sided (normal approximation with tie \
                          correction); a difference is called at p < 0.01";

/// One row: one quantity on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CompareRow {
    /// `tool.dispatch`, `cold`, `warm`, `first_output` or a stage name.
    pub what: String,
    /// The baseline's distribution.
    pub baseline: Option<Summary>,
    /// The current population's.
    pub current: Option<Summary>,
    /// Current p50 minus baseline p50, nanoseconds.
    pub p50_change_ns: Option<i64>,
    /// Current p90 minus baseline p90, nanoseconds.
    pub p90_change_ns: Option<i64>,
    /// The test's p-value.
    pub p_value: Option<f64>,
    /// The probability that a current command is slower than a baseline
    /// one (ties count half).
    pub prob_slower: Option<f64>,
    /// `slower`, `faster`, `no difference` (not told from noise) or `too
    /// little data`.
    pub verdict: &'static str,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Comparison {
    /// What the baseline is (a file, or a window).
    pub baseline: String,
    /// How many commands it has.
    pub baseline_commands: u64,
    /// How many the current population has.
    pub current_commands: u64,
    /// The test used.
    pub method: &'static str,
    /// The rows: the dispatch, cold, warm, first output, then each stage.
    pub rows: Vec<CompareRow>,
}

/// One side: its commands and their stage names.
pub(crate) struct Side<'a> {
    /// The commands.
    pub commands: &'a [Command],
    /// Their stage paths.
    pub table: &'a StageTable,
}

/// Compares `current` with `baseline`; rows with fewer than `min_count`
/// commands on a side say so instead of testing.
pub(crate) fn compare(
    baseline_name: &str,
    baseline: &Side<'_>,
    current: &Side<'_>,
    min_count: u64,
) -> Comparison {
    let mut rows = Vec::new();
    let dispatch = |side: &Side<'_>, w: Option<Warmth>| -> Vec<u64> {
        side.commands
            .iter()
            .filter(|c| w.is_none_or(|w| c.warmth == w))
            .map(|c| c.dispatch)
            .collect()
    };
    rows.push(row(
        "tool.dispatch",
        dispatch(baseline, None),
        dispatch(current, None),
        min_count,
    ));
    for w in [Warmth::Cold, Warmth::Warm] {
        rows.push(row(
            w.name(),
            dispatch(baseline, Some(w)),
            dispatch(current, Some(w)),
            min_count,
        ));
    }
    let first = |side: &Side<'_>| -> Vec<u64> {
        side.commands
            .iter()
            .filter_map(|c| c.first_output)
            .collect()
    };
    rows.push(row(
        "first_output",
        first(baseline),
        first(current),
        min_count,
    ));
    let (b, c) = (stage_values(baseline), stage_values(current));
    let names: HashSet<&String> = b.keys().chain(c.keys()).collect();
    let mut names: Vec<&String> = names.into_iter().collect();
    // The largest stages (by the current population's total) first.
    names.sort_by_key(|n| {
        std::cmp::Reverse(
            c.get(*n)
                .or(b.get(*n))
                .map_or(0u128, |v| v.iter().map(|x| u128::from(*x)).sum()),
        )
    });
    for name in names {
        rows.push(row(
            name,
            b.get(name).cloned().unwrap_or_default(),
            c.get(name).cloned().unwrap_or_default(),
            min_count,
        ));
    }
    Comparison {
        baseline: baseline_name.to_owned(),
        baseline_commands: baseline.commands.len() as u64,
        current_commands: current.commands.len() as u64,
        method: METHOD,
        rows,
    }
}

fn stage_values(side: &Side<'_>) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in side.commands {
        for (name, ns) in by_name(c, side.table) {
            out.entry(name.to_string()).or_default().push(ns);
        }
    }
    out
}

fn row(what: &str, mut baseline: Vec<u64>, mut current: Vec<u64>, min_count: u64) -> CompareRow {
    let (b, c) = (Summary::of(&mut baseline), Summary::of(&mut current));
    let change = |f: fn(&Summary) -> u64| -> Option<i64> {
        let (b, c) = (b.as_ref()?, c.as_ref()?);
        i64::try_from(i128::from(f(c)) - i128::from(f(b))).ok()
    };
    let enough =
        (baseline.len() as u64) >= min_count.max(2) && (current.len() as u64) >= min_count.max(2);
    let test = enough.then(|| rank_test(&baseline, &current));
    let verdict = match test {
        None => "too little data",
        Some((p, prob)) if p < ALPHA && prob > 0.5 => "slower",
        Some((p, _)) if p < ALPHA => "faster",
        Some(_) => "no difference",
    };
    CompareRow {
        what: what.to_owned(),
        baseline: b,
        current: c,
        p50_change_ns: change(|s| s.p50_ns),
        p90_change_ns: change(|s| s.p90_ns),
        p_value: test.map(|(p, _)| p),
        prob_slower: test.map(|(_, prob)| prob),
        verdict,
    }
}

/// The Mann–Whitney test of `current` against `baseline` (both sorted):
/// the two-sided p-value and P(current > baseline) + ½P(equal).
pub(crate) fn rank_test(baseline: &[u64], current: &[u64]) -> (f64, f64) {
    let (n1, n2) = (baseline.len() as f64, current.len() as f64);
    // Merge the two sorted lists, ranking ties by their average rank.
    let mut all: Vec<(u64, bool)> = baseline
        .iter()
        .map(|v| (*v, false))
        .chain(current.iter().map(|v| (*v, true)))
        .collect();
    all.sort_unstable_by_key(|(v, _)| *v);
    let n = all.len();
    let mut rank_sum_current = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while all
            .get(j + 1)
            .is_some_and(|(v, _)| Some(*v) == all.get(i).map(|(x, _)| *x))
        {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let average = (i + j + 2) as f64 / 2.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_sum_current += average
            * all
                .get(i..=j)
                .map_or(0, |g| g.iter().filter(|(_, c)| *c).count()) as f64;
        i = j + 1;
    }
    let u_current = rank_sum_current - n2 * (n2 + 1.0) / 2.0;
    let prob_slower = u_current / (n1 * n2);
    let total = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 {
        // Every value equal: nothing tells them apart.
        return (1.0, prob_slower);
    }
    let z = ((u_current - mean).abs() - 0.5).max(0.0) / variance.sqrt();
    (erfc(z / std::f64::consts::SQRT_2).min(1.0), prob_slower)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator of skewed latencies around `median` ns.
    fn population(seed: u64, n: usize, median: f64) -> Vec<u64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
                let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                // Log-normal-ish: median * exp(0.5 * (u - 0.5) * 4).
                (median * (2.0 * (u - 0.5)).exp()) as u64
            })
            .collect()
    }

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122),
            (1.0, 0.157_299_207),
            (2.0, 0.004_677_735),
            (-1.0, 1.842_700_793),
        ] {
            assert!((erfc(x) - want).abs() < 1e-6, "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn a_known_shift_is_told_apart_and_the_same_distribution_is_not() {
        let mut base = population(1, 200, 10e6);
        let mut shifted = population(2, 200, 13e6);
        let mut same = population(3, 200, 10e6);
        base.sort_unstable();
        shifted.sort_unstable();
        same.sort_unstable();
        let (p, prob) = rank_test(&base, &shifted);
        assert!(p < ALPHA, "p = {p}");
        assert!(prob > 0.6, "prob = {prob}");
        let (p, _) = rank_test(&shifted, &base);
        assert!(p < ALPHA);
        let (p, prob) = rank_test(&base, &same);
        assert!(p > 0.05, "p = {p}");
        assert!((prob - 0.5).abs() < 0.1, "prob = {prob}");
    }

    #[test]
    fn hand_computed_u_and_ties() {
        // baseline 1,2,3; current 4,5,6: every current value is larger.
        let (p, prob) = rank_test(&[1, 2, 3], &[4, 5, 6]);
        assert_eq!(prob, 1.0);
        assert!(p < 0.1 && p > 0.05, "p = {p}");
        // All equal: no difference, ties count half.
        let (p, prob) = rank_test(&[5, 5, 5], &[5, 5]);
        assert_eq!((p, prob), (1.0, 0.5));
    }

    #[test]
    fn rows_say_too_little_data_below_the_minimum() {
        let r = row("x", vec![1, 2, 3], vec![4, 5, 6], 10);
        assert_eq!(r.verdict, "too little data");
        assert_eq!(r.p50_change_ns, Some(3));
        let r = row("x", population(1, 50, 1e6), population(2, 50, 2e6), 10);
        assert_eq!(r.verdict, "slower");
        let r = row("x", population(1, 50, 2e6), population(2, 50, 1e6), 10);
        assert_eq!(r.verdict, "faster");
    }
}
