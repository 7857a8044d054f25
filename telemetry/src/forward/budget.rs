//! What the exec-server lets its clients forward: token buckets of spans
//! per client key and of spans and bytes in all, refilled at a steady rate
//! and credited for each call a client runs, so that a client forwards in
//! proportion to the work it is authorized to do (a busy honest client is
//! not dropped), while spans with no calls behind them stay held to the
//! rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Bounds on what an exec-server takes of its clients' spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardLimits {
    /// The most bytes of one batch (announced in the hello answer).
    pub batch_bytes: u32,
    /// Spans per second one client key may forward (its bucket holds 4 s
    /// worth).
    pub(crate) key_spans_per_sec: u32,
    /// Spans per second all clients together may forward (4 s worth held).
    pub(crate) total_spans_per_sec: u32,
    /// Bytes per second all clients together may forward (4 s held).
    pub(crate) total_bytes_per_sec: u32,
    /// Batches waiting for export, at most.
    pub(crate) queue: usize,
    /// Client keys whose buckets are remembered, at most.
    pub(crate) keys: usize,
    /// Spans each call a client runs adds to its key's and the total
    /// budget, beyond the steady rates (up to 256 calls' worth held).
    pub(crate) call_spans: u32,
    /// Bytes each call adds to the total budget, likewise.
    pub(crate) call_bytes: u32,
    /// How long the first waiting batch waits for others before they are
    /// exported together (a full group leaves at once): the exec-server
    /// uses its batch processor's delay, `OTEL_BSP_SCHEDULE_DELAY`.
    pub linger: Duration,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        Self {
            batch_bytes: 256 * 1024,
            key_spans_per_sec: 500,
            total_spans_per_sec: 5_000,
            total_bytes_per_sec: 4 * 1024 * 1024,
            queue: 64,
            keys: 4096,
            call_spans: 64,
            call_bytes: 64 * 1024,
            linger: Duration::from_secs(5),
        }
    }
}

/// What became of an offered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Offered {
    /// Queued for export.
    Queued,
    /// Dropped: over the client key's rate.
    KeyRate,
    /// Dropped: over the total rate.
    TotalRate,
    /// Dropped: the export queue is full.
    QueueFull,
}

/// How long a bucket's worth of steady rate is.
pub(super) const BURST: Duration = Duration::from_secs(4);
/// How many calls' credit a bucket holds beyond its steady burst.
const CREDITED_CALLS: f64 = 256.0;

/// A token bucket on a caller's clock. The steady rate fills it up to
/// `rate × BURST`; credits for calls may take it above that, up to `cap`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Self {
        Self {
            tokens: steady(rate),
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let steady = steady(rate);
        if self.tokens < steady {
            self.tokens = (self.tokens + dt * f64::from(rate)).min(steady);
        }
        self.at = self.at.max(now);
    }

    fn credit(&mut self, rate: u32, per_call: u32) {
        let cap = steady(rate) + CREDITED_CALLS * f64::from(per_call);
        self.tokens = (self.tokens + f64::from(per_call)).min(cap.max(self.tokens));
    }

    fn has(&self, n: f64) -> bool {
        self.tokens >= n
    }

    fn is_full(&self, rate: u32) -> bool {
        self.tokens >= steady(rate)
    }
}

fn steady(rate: u32) -> f64 {
    f64::from(rate) * BURST.as_secs_f64()
}

/// The buckets of every client key seen (at most `limits.keys`) and of
/// all clients together.
#[derive(Debug)]
pub(super) struct Budget {
    limits: ForwardLimits,
    keys: HashMap<String, Bucket>,
    spans: Bucket,
    bytes: Bucket,
}

impl Budget {
    pub(super) fn new(limits: ForwardLimits, now: Instant) -> Self {
        Self {
            limits,
            keys: HashMap::new(),
            spans: Bucket::full(limits.total_spans_per_sec, now),
            bytes: Bucket::full(limits.total_bytes_per_sec, now),
        }
    }

    /// The key's bucket, refilled to `now`; `None` when the table is full
    /// of keys still spending.
    fn key(&mut self, client: &str, now: Instant) -> Option<&mut Bucket> {
        let rate = self.limits.key_spans_per_sec;
        if !self.keys.contains_key(client) {
            if self.keys.len() >= self.limits.keys {
                // Forget the keys whose buckets are full again: they are
                // where a new one would start.
                self.keys.retain(|_, k| {
                    k.refill(rate, now);
                    !k.is_full(rate)
                });
                if self.keys.len() >= self.limits.keys {
                    return None;
                }
            }
            self.keys.insert(client.to_owned(), Bucket::full(rate, now));
        }
        let key = self.keys.get_mut(client)?;
        key.refill(rate, now);
        Some(key)
    }

    /// A call of `client`'s started: its key, and all clients together,
    /// may forward one call's worth more.
    pub(super) fn called(&mut self, client: &str, now: Instant) {
        let l = self.limits;
        if let Some(key) = self.key(client, now) {
            key.credit(l.key_spans_per_sec, l.call_spans);
        }
        self.spans.refill(l.total_spans_per_sec, now);
        self.spans.credit(l.total_spans_per_sec, l.call_spans);
        self.bytes.refill(l.total_bytes_per_sec, now);
        self.bytes.credit(l.total_bytes_per_sec, l.call_bytes);
    }

    /// Takes `spans` spans of `bytes` bytes from `client`'s key and from
    /// the totals, or says which is short (taking nothing).
    pub(super) fn take(&mut self, client: &str, spans: f64, bytes: f64, now: Instant) -> Offered {
        let l = self.limits;
        self.spans.refill(l.total_spans_per_sec, now);
        self.bytes.refill(l.total_bytes_per_sec, now);
        let Some(key) = self.key(client, now) else {
            return Offered::KeyRate;
        };
        if !key.has(spans) {
            return Offered::KeyRate;
        }
        key.tokens -= spans;
        if !self.spans.has(spans) || !self.bytes.has(bytes) {
            if let Some(key) = self.keys.get_mut(client) {
                key.tokens += spans;
            }
            return Offered::TotalRate;
        }
        self.spans.tokens -= spans;
        self.bytes.tokens -= bytes;
        Offered::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ForwardLimits {
        ForwardLimits {
            key_spans_per_sec: 1,
            total_spans_per_sec: 2,
            call_spans: 10,
            call_bytes: 1000,
            ..ForwardLimits::default()
        }
    }

    #[test]
    fn the_steady_rate_refills_up_to_its_burst_only() {
        let now = Instant::now();
        let mut b = Budget::new(limits(), now);
        assert_eq!(b.take("a", 4.0, 1.0, now), Offered::Queued);
        assert_eq!(b.take("a", 1.0, 1.0, now), Offered::KeyRate);
        // An hour later: 4 spans' worth again, not 3,600.
        let later = now + Duration::from_secs(3600);
        assert_eq!(b.take("a", 5.0, 1.0, later), Offered::KeyRate);
        assert_eq!(b.take("a", 4.0, 1.0, later), Offered::Queued);
    }

    #[test]
    fn each_call_lets_its_client_forward_more() {
        let now = Instant::now();
        let mut b = Budget::new(limits(), now);
        assert_eq!(b.take("a", 4.0, 1.0, now), Offered::Queued);
        b.called("a", now);
        assert_eq!(b.take("a", 10.0, 1.0, now), Offered::Queued);
        assert_eq!(b.take("a", 1.0, 1.0, now), Offered::KeyRate);
        // Another key's calls are not this one's.
        b.called("b", now);
        assert_eq!(b.take("a", 1.0, 1.0, now), Offered::KeyRate);
    }

    #[test]
    fn credit_for_calls_is_bounded() {
        let now = Instant::now();
        let mut b = Budget::new(
            ForwardLimits {
                total_spans_per_sec: 1_000_000,
                total_bytes_per_sec: 1_000_000_000,
                ..limits()
            },
            now,
        );
        for _ in 0..10_000 {
            b.called("a", now);
        }
        // The steady 4 plus 256 calls' worth.
        assert_eq!(b.take("a", 4.0 + 2560.0 + 1.0, 1.0, now), Offered::KeyRate);
        assert_eq!(b.take("a", 4.0 + 2560.0, 1.0, now), Offered::Queued);
    }

    #[test]
    fn the_totals_hold_every_key_and_a_refusal_takes_nothing() {
        let now = Instant::now();
        let mut b = Budget::new(limits(), now);
        assert_eq!(b.take("a", 4.0, 1.0, now), Offered::Queued);
        assert_eq!(b.take("b", 4.0, 1.0, now), Offered::Queued);
        // All keys hold 8: c is refused by the total, its own 4 kept.
        assert_eq!(b.take("c", 1.0, 1.0, now), Offered::TotalRate);
        b.called("z", now);
        assert_eq!(b.take("c", 4.0, 1.0, now), Offered::Queued);
    }

    #[test]
    fn a_full_table_of_spending_keys_refuses_a_new_one() {
        let now = Instant::now();
        let mut b = Budget::new(
            ForwardLimits {
                keys: 1,
                ..limits()
            },
            now,
        );
        assert_eq!(b.take("a", 1.0, 1.0, now), Offered::Queued);
        assert_eq!(b.take("b", 1.0, 1.0, now), Offered::KeyRate);
        // Once a's bucket is full again, b takes its place.
        let later = now + Duration::from_secs(2);
        assert_eq!(b.take("b", 1.0, 1.0, later), Offered::Queued);
    }
}
