//! Running two (or more) sides interleaved: every round runs each side in
//! turn, the order rotating from round to round, so that the machine's
//! drift and noise fall on all sides alike.

use std::time::Duration;

use super::Series;
use crate::bench::{percentile, rotated};

/// How many rounds, and how many timed runs of each side per round (after
/// `warmup` untimed runs of each before the first round).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds.
    pub rounds: usize,
    /// Untimed runs of each side before the first round.
    pub warmup: usize,
    /// Timed runs of each side per round.
    pub iterations: usize,
}

/// Runs latency sides A and B as A/B/A/B... (B/A/B/A... in odd rounds),
/// `plan.iterations` each per round; each run returns its own time.
/// The series hold each round's p50 and p99 in microseconds.
pub async fn latencies(
    plan: Plan,
    labels: (&str, &str),
    mut a: impl AsyncFnMut() -> Result<Duration, String>,
    mut b: impl AsyncFnMut() -> Result<Duration, String>,
) -> Result<(Series, Series), String> {
    for _ in 0..plan.warmup {
        a().await?;
        b().await?;
    }
    let (mut sa, mut sb) = (Series::new(labels.0), Series::new(labels.1));
    for round in 0..plan.rounds {
        let (mut ta, mut tb) = (
            Vec::with_capacity(plan.iterations),
            Vec::with_capacity(plan.iterations),
        );
        for _ in 0..plan.iterations {
            if round % 2 == 0 {
                ta.push(a().await?);
                tb.push(b().await?);
            } else {
                tb.push(b().await?);
                ta.push(a().await?);
            }
        }
        for (series, times) in [(&mut sa, &ta), (&mut sb, &tb)] {
            series.values.push(percentile(times, 0.50));
            series.p99.push(percentile(times, 0.99));
        }
    }
    Ok((sa, sb))
}

/// Runs `sides` (each moving `bytes` and returning the time it took) once
/// per round, in an order rotating every round, after one warm-up run of
/// each; each series holds one throughput (MiB/s) per round.
pub async fn throughputs<S: Copy>(
    rounds: usize,
    bytes: u64,
    sides: &[(S, &str)],
    mut run: impl AsyncFnMut(S, bool) -> Result<Duration, String>,
) -> Result<Vec<Series>, String> {
    for (side, _) in sides {
        run(*side, true).await?;
    }
    let mut series: Vec<Series> = sides.iter().map(|(_, l)| Series::new(*l)).collect();
    let order: Vec<usize> = (0..sides.len()).collect();
    for round in 0..rounds {
        for i in rotated(&order, round) {
            let took = run(sides[i].0, false).await?;
            series[i].values.push(mib_per_sec(bytes, took));
        }
    }
    Ok(series)
}

/// `bytes` over `took`, in MiB/s.
pub fn mib_per_sec(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn sides_alternate_and_rounds_are_summarised() {
        let log = std::cell::RefCell::new(Vec::new());
        let plan = Plan {
            rounds: 2,
            warmup: 1,
            iterations: 2,
        };
        let (a, b) = latencies(
            plan,
            ("a", "b"),
            async || {
                log.borrow_mut().push('a');
                Ok(Duration::from_micros(10))
            },
            async || {
                log.borrow_mut().push('b');
                Ok(Duration::from_micros(30))
            },
        )
        .await
        .unwrap();
        let order: String = log.borrow().iter().collect();
        assert_eq!(
            order,
            "ab" /* warm-up */
                .to_owned()
                + "abab"
                + "baba"
        );
        assert_eq!(a.values, [10.0, 10.0]);
        assert_eq!(b.p99, [30.0, 30.0]);

        let ran = std::cell::RefCell::new(Vec::new());
        let series = throughputs(
            3,
            1024 * 1024,
            &[(1u8, "x"), (2u8, "y")],
            async |s, warm| {
                ran.borrow_mut().push((s, warm));
                Ok(Duration::from_millis(if s == 1 { 500 } else { 250 }))
            },
        )
        .await
        .unwrap();
        assert_eq!(
            *ran.borrow(),
            [
                (1, true),
                (2, true),
                (1, false),
                (2, false),
                (2, false),
                (1, false),
                (1, false),
                (2, false)
            ]
        );
        assert_eq!(series[0].values, [2.0, 2.0, 2.0]);
        assert_eq!(series[1].values, [4.0, 4.0, 4.0]);
        assert!(
            latencies(
                plan,
                ("a", "b"),
                async || Err("boom".into()),
                async || Ok(Duration::ZERO)
            )
            .await
            .is_err()
        );
    }
}
