//! Rate-limited logging for events an unauthenticated peer can cause at
//! will (bad handshakes, unauthorized keys, protocol violations): so that
//! nobody can fill the log, each kind gets at most one full line per
//! interval, and what was held back is summed up in one line per kind
//! with its count.
//!
//! ```text
//! let log = Limiter::new(Duration::from_secs(10));
//! if log.admit("handshake failed", Instant::now()).is_some() {
//!     tracing::warn!(error = %e, "handshake failed");
//! }
//! // every interval, from a ticking task:
//! log.log_summaries(Instant::now());
//! ```
//!
//! Kinds are `&'static str` named in code, so the table is bounded by
//! them; nothing about the peer (and no key material) becomes a kind.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The interval the services summarise refusals over.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Slot {
    /// When the last full line of this kind was let through.
    logged_at: Instant,
    /// Events held back since.
    held: u64,
}

/// Lets through one event of each kind per interval and counts the rest.
#[derive(Debug)]
pub struct Limiter {
    interval: Duration,
    slots: Mutex<HashMap<&'static str, Slot>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(SUMMARY_INTERVAL)
    }
}

impl Limiter {
    /// A limiter letting one event of each kind through per `interval`.
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The summary interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether an event of `kind` at `now` gets its own line: `Some(held)`
    /// (with how many of the kind were held back before it and not yet
    /// summarised) if so, `None` if it is only counted.
    pub fn admit(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get_mut(kind) {
            Some(slot) if now.saturating_duration_since(slot.logged_at) < self.interval => {
                slot.held += 1;
                None
            }
            Some(slot) => {
                slot.logged_at = now;
                Some(std::mem::take(&mut slot.held))
            }
            None => {
                slots.insert(
                    kind,
                    Slot {
                        logged_at: now,
                        held: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Takes the counts of the kinds with events held back: one
    /// `(kind, count)` per kind, each count reset.
    fn take_summaries(&self) -> Vec<(&'static str, u64)> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = slots
            .iter_mut()
            .filter(|(_, s)| s.held > 0)
            .map(|(k, s)| (*k, std::mem::take(&mut s.held)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Logs one warning per kind with events held back (their count over
    /// the interval); for a task that ticks every [`interval`](Self::interval).
    pub fn log_summaries(&self) {
        let secs = self.interval.as_secs();
        for (kind, count) in self.take_summaries() {
            tracing::warn!(
                kind,
                count,
                interval_s = secs,
                "{count} more of \"{kind}\" in the last {secs}s (not logged one by one)"
            );
        }
    }
}

/// Logs what a listener's admission refused since the last call, one
/// summary line each for its connections and its unauthenticated sessions
/// (nothing when nothing was refused); `scope` names the listener in the
/// lines (`""` for the relay, `"direct "` for an exec-server's own).
#[cfg(feature = "export")]
pub fn warn_admission(
    scope: &str,
    conns: &proto::listener::Connections,
    startups: &proto::admission::Gate,
) {
    let every = SUMMARY_INTERVAL.as_secs();
    let c = conns.take_summary();
    if c.any_refused() {
        tracing::warn!(
            open = conns.open(),
            accepted = c.accepted,
            refused_full = c.refused_full,
            refused_per_source = c.refused_source,
            displaced_silent = c.displaced,
            preface_timeouts = c.preface_timeouts,
            accept_errors = c.accept_errors,
            "{scope}connections refused or closed early in the last {every}s"
        );
    }
    let s = startups.take_refusals();
    if s.total() > 0 {
        tracing::warn!(
            in_flight = startups.in_flight(),
            dropped_early = s.early,
            refused_full = s.full,
            refused_per_source = s.source,
            displaced_without_message_1 = s.displaced,
            "unauthenticated {scope}sessions refused in the last {every}s"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_and_the_rest_counted() {
        let l = Limiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit("bad handshake", t0), Some(0));
        assert_eq!(l.admit("unauthorized key", t0), Some(0));
        for i in 0..1000 {
            assert_eq!(
                l.admit("bad handshake", t0 + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(
            l.admit("unauthorized key", t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            l.take_summaries(),
            vec![("bad handshake", 1000), ("unauthorized key", 1)]
        );
        assert!(l.take_summaries().is_empty(), "counts are reset");
        assert_eq!(l.admit("bad handshake", t0 + Duration::from_secs(3)), None);
        // The next interval's first event gets a line, with what was held
        // back since the last summary.
        assert_eq!(
            l.admit("bad handshake", t0 + Duration::from_secs(10)),
            Some(1)
        );
        assert_eq!(l.admit("bad handshake", t0 + Duration::from_secs(11)), None);
    }
}
