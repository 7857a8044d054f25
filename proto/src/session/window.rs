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
//!
//! A window that grows only when a measurement ends doubles at best every
//! second round trip: a wider window reaches the sender half a round trip
//! after it is granted, and what it lets through arrives a round trip
//! after that, so the measurement begun at the grant still sees the old
//! one. While a flow is still finding its path's rate (the *ramp*, from its
//! start or an idle fall-back), its window also grows by half of what the
//! receiver takes, so that it grows about half again in every round trip;
//! the ramp ends at the first measurement that shows a queue (a round trip
//! a quarter over the least), or after two in a row that carried less than
//! a quarter more than the best before.
//! The first measurement begins once a little has arrived (not a quarter
//! window), so that it sees most of the first window.
//!
//! A window narrower than its path arrives as a *train*: back to back at
//! the path's rate, then nothing until the next one is granted. Counting
//! its bytes over the whole round trip sees the window, not the path; so a
//! measurement also times the train (its bytes from the first arrival to
//! the last, over the time between them) and takes the higher of the two
//! rates. Trains reach a path's rate at the first measurement, where the
//! round trip alone would take several; one that does ends the ramp (the
//! rate is known, and growing on would only build a queue). When the
//! session knows the path's round trip already (from earlier
//! measurements), the train is timed as it arrives: the window grows as
//! soon as most of it has come, half a round trip or more before the
//! measurement's pong would. (A flow acknowledged as it is taken, such as
//! stdin, arrives paced by its acknowledgements, not as trains: its
//! window keeps to the ramp.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A flow with nothing arriving for this long falls back to its first
/// window.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// A call started within this of the end of a call whose output window
/// had grown starts with that window (the exec-server told in its request),
/// not the session's first, and likewise its stdin window (the client told
/// in a `StdinAck` with the call's start): the session has measured its path, as a TCP
/// stack keeps a destination's metrics for its next connection. Long
/// enough for the commands a user or a script runs one after another;
/// short enough that a path that changed is soon measured afresh.
pub(crate) const PATH_MEMORY: Duration = Duration::from_secs(30);

/// The least time between the start of one measurement and the start of
/// the next (a flow on a short path is not measured at every chunk; on a
/// path longer than this one follows the other at once).
pub(crate) const PROBE_GAP: Duration = Duration::from_millis(10);

/// Measurements in a row without a quarter more carried that end a ramp.
const RAMP_FLAT: u8 = 2;

/// What must arrive before a flow's first measurement: enough to tell
/// bulk from typing, little enough that the measurement sees most of the
/// first window.
const FIRST_PROBE: u64 = 16 * 1024;

/// A train shorter than this is not timed: arrivals batched by the
/// receiver's scheduling would look like a path faster than it is.
const TRAIN_SPAN: Duration = Duration::from_millis(2);

/// A train that carried less than this is not timed (a few frames say
/// little of a path's rate).
const TRAIN_BYTES: u64 = 256 * 1024;

/// The arrivals of the measurement under way.
#[derive(Debug, Clone, Copy)]
struct Train {
    /// The first arrival, and the bytes in all once it had arrived.
    first: (Instant, u64),
    /// The last arrival, and the bytes in all once it had arrived.
    last: (Instant, u64),
}

impl Train {
    /// Bytes per second between the first arrival and the last, when long
    /// enough to tell ([`TRAIN_SPAN`], [`TRAIN_BYTES`]).
    fn rate(&self) -> Option<f64> {
        let span = self.last.0.saturating_duration_since(self.first.0);
        let bytes = self.last.1.saturating_sub(self.first.1);
        (span >= TRAIN_SPAN && bytes >= TRAIN_BYTES).then(|| bytes as f64 / span.as_secs_f64())
    }
}

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
    /// Its arrivals since.
    train: Option<Train>,
    /// Bytes arrived when the last measurement began.
    measured: u64,
    /// Whether a measurement ever began (since the start or the last fall-back).
    begun: bool,
    /// Still finding the path's rate: the window also grows with what is
    /// taken ([`delivered`](Self::delivered)).
    ramp: bool,
    /// What the path carried in the last measurement's round trip (scaled
    /// to the least round trip) that grew it, for the ramp's end.
    carried: u64,
    /// Measurements in a row that carried little more than `carried`.
    flat: u8,
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
            train: None,
            measured: 0,
            begun: false,
            ramp: true,
            carried: 0,
            flat: 0,
            last_data: None,
        }
    }

    /// A window of `first` bytes that may grow up to `ceiling`, starting
    /// at `window` (a path measured before: no ramp to find it again; a
    /// measurement still widens it if the path carries more).
    pub(super) fn starting_at(first: u64, ceiling: u64, window: u64) -> Self {
        let mut flow = Self::new(first, ceiling);
        if window > flow.first {
            flow.window = window.min(flow.ceiling);
            flow.ramp = false;
            flow.carried = flow.window / 2;
        }
        flow
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

    /// Data arrived at `now`, `received` bytes in all with it. When a
    /// round trip of the path is known already (`rtt`: the least the
    /// session measured), a ramp's train that brought most of the window
    /// in less than that round trip tells the path's rate at once, without
    /// waiting for the measurement's pong: returns the window it asks for,
    /// if larger (the caller grants what the budget allows, as for
    /// [`end`](Self::end)), and ends the ramp.
    pub(super) fn arrived(
        &mut self,
        now: Instant,
        received: u64,
        rtt: Option<Duration>,
    ) -> Option<u64> {
        self.last_data = Some(now);
        let from = self.from?;
        let first = self.train.map_or((now, received), |t| t.first);
        let train = Train {
            first,
            last: (now, received),
        };
        self.train = Some(train);
        if !self.ramp || !self.may_grow() || !self.fills(received.saturating_sub(from)) {
            return None;
        }
        let rtt = self.least.into_iter().chain(rtt).min()?;
        if now.saturating_duration_since(first.0) >= rtt {
            return None;
        }
        self.found((train.rate()? * rtt.as_secs_f64()) as u64);
        self.wants(self.carried)
    }

    /// Whether `bytes` in a round trip is most of the window (two thirds):
    /// the window may be the limit.
    fn fills(&self, bytes: u64) -> bool {
        bytes.saturating_mul(3) >= self.window.saturating_mul(2)
    }

    /// A train told what the path carries in a round trip: the ramp is
    /// over.
    fn found(&mut self, path: u64) {
        self.ramp = false;
        self.carried = path;
    }

    /// The window asked for when the path carries `path` a round trip:
    /// twice that (to keep the window full while acknowledgements trail),
    /// up to the ceiling, if wider than now.
    fn wants(&self, path: u64) -> Option<u64> {
        let want = path.saturating_mul(2).min(self.ceiling);
        (want > self.window).then_some(want)
    }

    /// Whether a measurement is worth its ping with `received` bytes
    /// arrived in all: the window could grow, and a quarter of it arrived
    /// since the last one began, or for the flow's first one
    /// [`FIRST_PROBE`] (a trickle, such as typing, seldom is).
    pub(super) fn due(&self, received: u64) -> bool {
        let since = received.saturating_sub(self.measured);
        let enough = if self.begun {
            self.window / 4
        } else {
            FIRST_PROBE.min(self.window / 4)
        };
        self.may_grow() && since >= enough
    }

    /// A measurement begins with `received` bytes arrived in all.
    pub(super) fn begin(&mut self, received: u64) {
        self.measured = received;
        self.from = Some(received);
        self.train = None;
        self.begun = true;
    }

    /// The receiver took `n` more bytes: during the ramp, once a
    /// measurement showed the window in use, the window it asks for
    /// (half of `n` wider; the caller grants it, [`settle`](Self::settle)).
    pub(super) fn delivered(&mut self, n: u64) -> Option<u64> {
        if !self.ramp || self.carried == 0 || !self.may_grow() || n == 0 {
            return None;
        }
        Some(self.window.saturating_add(n / 2).min(self.ceiling))
    }

    /// The measurement that began ends after `rtt` with `received` bytes
    /// arrived in all. Returns the window it asks for, if larger: the
    /// caller grants what the budget allows ([`settle`](Self::settle)).
    pub(super) fn end(&mut self, received: u64, rtt: Duration) -> Option<u64> {
        let from = self.from.take()?;
        let train = self.train.take().and_then(|t| t.rate());
        let bytes = received.saturating_sub(from);
        if rtt.is_zero() {
            return None;
        }
        let queued = self.least.is_some_and(|l| rtt > l + l / 4);
        let least = self.least.map_or(rtt, |l| l.min(rtt));
        self.least = Some(least);
        // What the path carries is the rate measured over the least round
        // trip seen (a longer one is a queue the window filled), or the
        // train's, if higher (a window narrower than the path).
        let rate = (bytes as f64 / rtt.as_secs_f64()).max(train.unwrap_or(0.0));
        let path = (rate * least.as_secs_f64()) as u64;
        let filled = self.fills(bytes);
        if self.ramp && filled && train.is_some() {
            // The train ran at the path's rate: nothing left to find.
            self.found(path);
        } else if self.ramp {
            if self.carried == 0 {
                // The first window was not in use: nothing to ramp.
                self.ramp = filled;
                self.carried = path;
            } else if path >= self.carried + self.carried / 4 {
                self.carried = path;
                self.flat = 0;
            } else {
                self.flat += 1;
            }
            // The ramp ends at a queue, or after two round trips in a row
            // that carried less than a quarter more (one may be noise).
            if queued || self.flat >= RAMP_FLAT {
                self.ramp = false;
            }
        }
        if bytes == 0 || !self.may_grow() {
            return None;
        }
        // Most of the window crossed in one round trip: the window may be
        // the limit.
        if !filled {
            return None;
        }
        self.wants(path)
    }

    /// The window granted: at most what was asked, never below the first.
    pub(super) fn settle(&mut self, granted: u64) {
        self.window = granted.clamp(self.first, self.ceiling);
    }

    /// When the window falls back if nothing arrives meanwhile (`None`:
    /// it is at its first).
    pub(super) fn idle_at(&self) -> Option<Instant> {
        (self.window > self.first)
            .then_some(self.last_data)
            .flatten()
            .map(|t| t + IDLE_AFTER)
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
            self.train = None;
            self.begun = false;
            self.ramp = true;
            self.carried = 0;
            self.flat = 0;
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
    /// The least round trip seen on this link.
    least: Option<Duration>,
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
        let rtt = now.saturating_duration_since(at);
        self.next = Some(now + PROBE_GAP.saturating_sub(rtt));
        self.seen(rtt);
        Some(rtt)
    }

    /// A round trip measured otherwise on the same link (another ping's).
    pub(super) fn seen(&mut self, rtt: Duration) {
        if !rtt.is_zero() {
            self.least = Some(self.least.map_or(rtt, |l| l.min(rtt)));
        }
    }

    /// The least round trip seen on this link, if any.
    pub(super) fn least(&self) -> Option<Duration> {
        self.least
    }

    /// The measurement is dropped (the link broke under it), and what was
    /// seen of the link with it (the next may take another path).
    pub(super) fn cancel(&mut self) {
        self.out = None;
        self.least = None;
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
        flow.arrived(t0, 0, None);
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

    /// One measurement across `rtt` whose bytes arrive as a train: `n`
    /// frames of `frame` bytes, `gap` apart, from its start.
    fn train(
        flow: &mut Adaptive,
        t0: Instant,
        n: u64,
        frame: u64,
        gap: Duration,
        rtt: Duration,
    ) -> Option<u64> {
        flow.begin(0);
        let mut received = 0;
        for i in 0..n {
            received += frame;
            flow.arrived(t0 + gap * i as u32, received, None);
        }
        flow.end(received, rtt)
    }

    #[test]
    fn a_train_tells_the_paths_rate_at_the_first_measurement() {
        // A 4 MiB window across a path of 320 MiB/s and 50 ms: it arrives
        // in 12.5 ms, then nothing. Over the round trip that is 80 MiB/s
        // (the window's); the train says 320 (one BDP is 16 MiB).
        let rtt = Duration::from_millis(50);
        let mut flow = Adaptive::new(4 * MIB, 64 * MIB);
        let t0 = Instant::now();
        let gap = Duration::from_micros(195);
        let want = train(&mut flow, t0, 64, 64 * 1024, gap, rtt).expect("it grows");
        flow.settle(want);
        assert!(want >= 16 * MIB, "{want} under one BDP");
        assert!(want <= 2 * 16 * MIB + MIB, "{want} over two BDPs");
        // The rate is known: no ramp on top of it.
        assert_eq!(flow.delivered(4 * MIB), None);

        // Without the train (the same bytes, no arrivals told) the window
        // only doubles.
        let mut flow = Adaptive::new(4 * MIB, 64 * MIB);
        flow.begin(0);
        assert_eq!(flow.end(4 * MIB, rtt), Some(8 * MIB));
    }

    #[test]
    fn with_the_round_trip_known_a_train_grows_the_window_as_it_arrives() {
        let rtt = Duration::from_millis(50);
        let t0 = Instant::now();
        let gap = Duration::from_micros(195);
        let mut flow = Adaptive::new(4 * MIB, 64 * MIB);
        flow.begin(0);
        let mut received = 0;
        let mut grown = None;
        for i in 0..64 {
            received += 64 * 1024;
            if let Some(want) = flow.arrived(t0 + gap * i, received, Some(rtt)) {
                grown = Some((i, want));
                break;
            }
        }
        // Once two thirds of the window has come (in 8 ms): 320 MiB/s.
        let (i, want) = grown.expect("it grows before the pong");
        assert_eq!(i, 42);
        assert!((30 * MIB..=33 * MIB).contains(&want), "{want}");
        flow.settle(want);
        assert_eq!(flow.delivered(MIB), None, "the ramp is over");
        assert_eq!(flow.end(received, rtt), None, "the pong asks no more");

        // Unknown round trip: nothing before the pong.
        let mut flow = Adaptive::new(4 * MIB, 64 * MIB);
        flow.begin(0);
        for i in 0..64 {
            let at = t0 + gap * i;
            assert_eq!(flow.arrived(at, (u64::from(i) + 1) * 64 * 1024, None), None);
        }
        // A window that took longer than the round trip to come is the
        // path's, not a train: nothing before the pong either.
        let mut flow = Adaptive::new(4 * MIB, 64 * MIB);
        flow.begin(0);
        let slow = Duration::from_millis(2);
        for i in 0..64 {
            let at = t0 + slow * i;
            assert_eq!(
                flow.arrived(at, (u64::from(i) + 1) * 64 * 1024, Some(rtt)),
                None
            );
        }
    }

    #[test]
    fn a_short_or_small_train_is_not_timed() {
        let rtt = Duration::from_millis(50);
        let t0 = Instant::now();
        // 4 MiB processed at once (a receiver that was not scheduled
        // meanwhile): under the least span, so only the round trip counts.
        let mut flow = Adaptive::new(4 * MIB, 64 * MIB);
        let want = train(&mut flow, t0, 64, 64 * 1024, Duration::from_micros(10), rtt);
        assert_eq!(want, Some(8 * MIB));
        // A few frames over a long span: too few bytes to tell.
        let mut flow = Adaptive::new(128 * 1024, 64 * MIB);
        let want = train(&mut flow, t0, 3, 64 * 1024, Duration::from_millis(5), rtt);
        assert_eq!(want, Some(384 * 1024));
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
        // A short path: the next one waits until the gap has passed since
        // this one began.
        let rtt = Duration::from_millis(2);
        assert_eq!(probe.end(n, t0 + rtt), Some(rtt));
        assert!(!probe.ready(t0 + rtt));
        assert!(!probe.ready(t0 + PROBE_GAP - Duration::from_millis(1)));
        assert!(probe.ready(t0 + PROBE_GAP));
        // A long one: the next may begin at once.
        let t1 = t0 + PROBE_GAP;
        let n = probe.begin(t1);
        let later = t1 + Duration::from_millis(50);
        assert_eq!(probe.end(n, later), Some(Duration::from_millis(50)));
        assert!(probe.ready(later));
        assert_eq!(probe.sent(), 2);
    }
}
