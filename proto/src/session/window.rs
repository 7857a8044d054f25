//! Windows that follow the path, at their receiver.
//!
//! A fixed window carries at most one window per round trip: across a
//! long path that, not the path, is the limit. The receiver measures what
//! one round trip carries (a ping sent as data arrives, and the bytes that
//! arrived before its pong: a delivery rate over a measured round trip).
//! A flow that filled most of its window in a round trip gets twice what
//! the path carries (its delivery rate times the least round trip seen: a
//! longer one is a queue that a window too wide filled), up to a ceiling
//! and what a shared [`Budget`] has left; so at most about one round
//! trip's worth ever stands in a queue. A flow that goes idle falls back
//! to where it started.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A flow with nothing arriving for this long falls back to its first
/// window.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// The least time between the end of one measurement and the start of the
/// next (a flow on a short path is not measured at every chunk).
pub(crate) const PROBE_GAP: Duration = Duration::from_millis(10);

/// Bytes that windows may hold beyond their first window, shared by every
/// flow of an endpoint (for the exec-server: all its calls' stdin).
#[derive(Debug)]
pub struct Budget {
    max: u64,
    held: AtomicU64,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            held: AtomicU64::new(0),
        }
    }

    /// The budget's size.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes held by windows now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Takes up to `n` bytes; returns what was taken.
    fn take(&self, n: u64) -> u64 {
        let mut taken = 0;
        // A failed exchange means another flow took or gave back meanwhile.
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                taken = n.min(self.max.saturating_sub(held));
                Some(held + taken)
            });
        taken
    }

    fn give(&self, n: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(n))
            });
    }
}

/// What one flow holds of a [`Budget`]; given back when dropped.
#[derive(Debug, Default)]
pub(super) struct Grant {
    budget: Option<Arc<Budget>>,
    held: u64,
}

impl Grant {
    pub(super) fn new(budget: Option<Arc<Budget>>) -> Self {
        Self { budget, held: 0 }
    }

    /// Holds `target` bytes if the budget has them (less if not, never
    /// less than now unless `target` is); returns what is held.
    pub(super) fn set(&mut self, target: u64) -> u64 {
        let Some(budget) = &self.budget else {
            self.held = target;
            return target;
        };
        if target < self.held {
            budget.give(self.held - target);
            self.held = target;
        } else if target > self.held {
            self.held += budget.take(target - self.held);
        }
        self.held
    }

    /// Settles down to `target` if it is less than what is held.
    pub(super) fn lower(&mut self, target: u64) {
        if target < self.held {
            self.set(target);
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.held);
        }
    }
}

/// One flow's window as its receiver sizes it.
#[derive(Debug)]
pub(super) struct Adaptive {
    first: u64,
    ceiling: u64,
    window: u64,
    /// The least round trip measured (the path without its queues).
    least: Option<Duration>,
    /// Bytes arrived when the measurement under way began.
    from: Option<u64>,
    /// Bytes arrived when the last measurement began.
    measured: u64,
    last_data: Option<Instant>,
}

impl Adaptive {
    /// A window of `first` bytes that may grow up to `ceiling`.
    pub(super) fn new(first: u64, ceiling: u64) -> Self {
        Self {
            first,
            ceiling: ceiling.max(first),
            window: first,
            least: None,
            from: None,
            measured: 0,
            last_data: None,
        }
    }

    pub(super) fn window(&self) -> u64 {
        self.window
    }

    /// Where the window started (what needs no budget).
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// Whether a measurement could still grow the window.
    pub(super) fn may_grow(&self) -> bool {
        self.window < self.ceiling
    }

    /// Data arrived at `now`.
    pub(super) fn arrived(&mut self, now: Instant) {
        self.last_data = Some(now);
    }

    /// Whether a measurement is worth its ping with `received` bytes
    /// arrived in all: the window could grow, and a quarter of it arrived
    /// since the last one began (a trickle, such as typing, never is).
    pub(super) fn due(&self, received: u64) -> bool {
        self.may_grow() && received.saturating_sub(self.measured) >= self.window / 4
    }

    /// A measurement begins with `received` bytes arrived in all.
    pub(super) fn begin(&mut self, received: u64) {
        self.measured = received;
        self.from = Some(received);
    }

    /// The measurement that began ends after `rtt` with `received` bytes
    /// arrived in all. Returns the window it asks for, if larger: the
    /// caller grants what the budget allows ([`settle`](Self::settle)).
    pub(super) fn end(&mut self, received: u64, rtt: Duration) -> Option<u64> {
        let from = self.from.take()?;
        let bytes = received.saturating_sub(from);
        if rtt.is_zero() {
            return None;
        }
        let least = self.least.map_or(rtt, |l| l.min(rtt));
        self.least = Some(least);
        if bytes == 0 || !self.may_grow() {
            return None;
        }
        // Most of the window crossed in one round trip: the window may be
        // the limit. What the path carries is the rate measured over the
        // least round trip seen (a longer one is a queue the window
        // filled); twice that keeps it full while acknowledgements trail.
        if bytes.saturating_mul(3) < self.window.saturating_mul(2) {
            return None;
        }
        let path = bytes as f64 * least.as_secs_f64() / rtt.as_secs_f64();
        let want = ((2.0 * path) as u64).min(self.ceiling);
        (want > self.window).then_some(want)
    }

    /// The window granted: at most what was asked, never below the first.
    pub(super) fn settle(&mut self, granted: u64) {
        self.window = granted.clamp(self.first, self.ceiling);
    }

    /// Falls back to the first window if nothing arrived for
    /// [`IDLE_AFTER`]; returns whether it did.
    pub(super) fn idle(&mut self, now: Instant) -> bool {
        let quiet = self
            .last_data
            .is_none_or(|t| now.saturating_duration_since(t) >= IDLE_AFTER);
        if quiet && self.window > self.first {
            self.window = self.first;
            self.least = None;
            self.from = None;
            return true;
        }
        false
    }
}

/// The receiver's measurement of one round trip: at most one under way.
#[derive(Debug, Default)]
pub(super) struct Probe {
    /// The ping's nonce and when it left.
    out: Option<(u64, Instant)>,
    /// No measurement begins before this.
    next: Option<Instant>,
    sent: u64,
}

/// Nonces of measuring pings carry this bit (keepalive probes do not).
const PROBE_NONCE: u64 = 1 << 63;

impl Probe {
    /// Whether a measurement may begin now.
    pub(super) fn ready(&self, now: Instant) -> bool {
        self.out.is_none() && self.next.is_none_or(|t| now >= t)
    }

    /// A measurement begins: the nonce of its ping.
    pub(super) fn begin(&mut self, now: Instant) -> u64 {
        self.sent += 1;
        let nonce = PROBE_NONCE | self.sent;
        self.out = Some((nonce, now));
        nonce
    }

    /// A pong arrived: the round trip, if it answers the measurement.
    pub(super) fn end(&mut self, nonce: u64, now: Instant) -> Option<Duration> {
        let (sent, at) = self.out?;
        if sent != nonce {
            return None;
        }
        self.out = None;
        self.next = Some(now + PROBE_GAP);
        Some(now.saturating_duration_since(at))
    }

    /// The measurement is dropped (the link broke under it).
    pub(super) fn cancel(&mut self) {
        self.out = None;
    }

    /// Measurements begun so far.
    #[cfg(test)]
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// A simulated path: `rate` bytes per second, `rtt` round trip; the
    /// sender keeps a window in flight, so one round trip carries the
    /// smaller of the window and the path's bandwidth-delay product.
    fn carried(window: u64, rate: u64, rtt: Duration) -> u64 {
        let bdp = (rate as f64 * rtt.as_secs_f64()) as u64;
        window.min(bdp)
    }

    fn run(flow: &mut Adaptive, budget: &mut Grant, rate: u64, rtt: Duration, rounds: usize) {
        let mut received = 0;
        for _ in 0..rounds {
            flow.begin(received);
            received += carried(flow.window(), rate, rtt);
            if let Some(want) = flow.end(received, rtt) {
                let held = budget.set(want - flow.first());
                flow.settle(flow.first() + held);
            }
        }
    }

    #[test]
    fn the_window_grows_to_the_bandwidth_delay_product_and_stops() {
        // 100 MiB/s across 50 ms: 5 MiB per round trip.
        let rtt = Duration::from_millis(50);
        let mut flow = Adaptive::new(256 * 1024, 64 * MIB);
        let mut grant = Grant::new(None);
        run(&mut flow, &mut grant, 100 * MIB, rtt, 30);
        let bdp = 5 * MIB;
        assert!(flow.window() >= bdp, "{} < one BDP", flow.window());
        assert!(flow.window() <= 2 * bdp, "{} > two BDPs", flow.window());
    }

    #[test]
    fn the_window_never_passes_its_ceiling_or_the_budget() {
        let rtt = Duration::from_millis(200);
        let mut flow = Adaptive::new(256 * 1024, 8 * MIB);
        let mut grant = Grant::new(None);
        run(&mut flow, &mut grant, 1000 * MIB, rtt, 30);
        assert_eq!(flow.window(), 8 * MIB);

        let budget = Arc::new(Budget::new(3 * MIB));
        let mut a = Adaptive::new(256 * 1024, 64 * MIB);
        let mut b = Adaptive::new(256 * 1024, 64 * MIB);
        let mut ga = Grant::new(Some(budget.clone()));
        let mut gb = Grant::new(Some(budget.clone()));
        run(&mut a, &mut ga, 1000 * MIB, rtt, 30);
        run(&mut b, &mut gb, 1000 * MIB, rtt, 30);
        assert_eq!(budget.held(), 3 * MIB);
        assert_eq!(a.window() + b.window(), 3 * MIB + 512 * 1024);
        drop(ga);
        assert_eq!(budget.held(), gb.held);
        drop(gb);
        assert_eq!(budget.held(), 0, "every grant is given back");
    }

    #[test]
    fn a_short_path_keeps_its_first_window() {
        // Loopback: 300 MiB/s across 0.3 ms carries 92 KiB a round trip.
        let mut flow = Adaptive::new(256 * 1024, 64 * MIB);
        let mut grant = Grant::new(None);
        run(
            &mut flow,
            &mut grant,
            300 * MIB,
            Duration::from_micros(300),
            50,
        );
        assert_eq!(flow.window(), 256 * 1024);
    }

    #[test]
    fn an_idle_flow_falls_back_to_its_first_window() {
        let t0 = Instant::now();
        let mut flow = Adaptive::new(256 * 1024, 64 * MIB);
        let mut grant = Grant::new(None);
        flow.arrived(t0);
        run(
            &mut flow,
            &mut grant,
            100 * MIB,
            Duration::from_millis(50),
            10,
        );
        assert!(flow.window() > 256 * 1024);
        assert!(!flow.idle(t0 + IDLE_AFTER / 2), "not idle yet");
        assert!(flow.idle(t0 + IDLE_AFTER));
        assert_eq!(flow.window(), 256 * 1024);
        // And it grows again when data flows.
        run(
            &mut flow,
            &mut grant,
            100 * MIB,
            Duration::from_millis(50),
            10,
        );
        assert!(flow.window() >= 5 * MIB);
    }

    #[test]
    fn one_measurement_at_a_time_and_a_gap_between() {
        let t0 = Instant::now();
        let mut probe = Probe::default();
        assert!(probe.ready(t0));
        let n = probe.begin(t0);
        assert!(!probe.ready(t0));
        assert_eq!(probe.end(n ^ 1, t0), None, "another ping's pong");
        assert_eq!(probe.end(7, t0), None, "a keepalive's pong");
        let later = t0 + Duration::from_millis(50);
        assert_eq!(probe.end(n, later), Some(Duration::from_millis(50)));
        assert!(!probe.ready(later));
        assert!(probe.ready(later + PROBE_GAP));
        assert_eq!(probe.sent(), 1);
    }
}
