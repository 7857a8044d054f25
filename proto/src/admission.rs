//! Admission of unauthenticated work, decided without IO.
//!
//! Anyone who can reach a relay or a listening exec-server can open
//! sessions and never finish their handshake. Such sessions are admitted
//! into a small table of their own, separate from the authenticated
//! sessions' limits:
//!
//! - [`Startups`] is OpenSSH's `MaxStartups` idea, `start:rate:full`:
//!   below `start` unauthenticated sessions every new one is admitted; from
//!   `start` on a new one is refused with probability `rate`% rising
//!   linearly to 100% at `full` (random early drop), so that a flood
//!   cannot make the table deterministically full for everyone else.
//! - A per-source share: one source address (an IPv4 address, or an IPv6
//!   /64) may hold at most `per_source` of the table's sessions that have
//!   not yet sent handshake message 1 (one that has counts against the
//!   table alone, until the exec-server answers it: an honest client's
//!   burst of sessions, each sending message 1 with its `Open`, is not
//!   held to one address's share).
//!
//! - Under pressure the least advanced goes first: a session that has
//!   not yet sent its handshake message 1 ([`Ticket::advanced`] not yet
//!   called) can be displaced. When a newcomer would be refused (dropped
//!   early, the table full, or its source over its share), the oldest such
//!   session (of that source, for a share) is ended instead
//!   ([`Ticket::displaced`] fires) and the newcomer takes its place. An
//!   honest client sends message 1 with its `Open`, so a flood of `Open`s
//!   that never send one displaces itself, not the honest client.
//!
//! [`Admission`] is the table itself (counts only; the caller hands in a
//! random roll). [`Gate`] is the thread-safe form the services share: it
//! hands out [`Ticket`]s that give their place back when dropped, and
//! counts what it refused so that the services can log summaries rather
//! than one line per refusal.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// `start:rate:full`: random early drop of unauthenticated sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startups {
    /// Below this many, every new session is admitted.
    pub start: usize,
    /// Percent refused at `start` (rising linearly to 100 at `full`).
    pub rate: u8,
    /// At this many, every new session is refused.
    pub full: usize,
}

/// Why a `start:rate:full` text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartupsError {
    /// Not three numbers separated by colons (or a single number).
    #[error("expected START:RATE:FULL (e.g. 10:30:100) or a single number")]
    Shape,
    /// The rate is over 100, `start` is over `full`, or `full` is zero.
    #[error("need 0 < START <= FULL and RATE <= 100")]
    Range,
}

impl Startups {
    /// The probability (0 to 1) that a new session is refused when
    /// `in_flight` are already admitted.
    pub(crate) fn drop_probability(&self, in_flight: usize) -> f64 {
        if in_flight < self.start {
            return 0.0;
        }
        if in_flight >= self.full {
            return 1.0;
        }
        let span = (self.full - self.start) as f64;
        let into = (in_flight - self.start) as f64;
        let rate = f64::from(self.rate) / 100.0;
        rate + (1.0 - rate) * into / span
    }
}

impl FromStr for Startups {
    type Err = StartupsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |p: &str| p.trim().parse::<usize>().map_err(|_| StartupsError::Shape);
        let parts: Vec<&str> = s.split(':').collect();
        let startups = match parts.as_slice() {
            // A single number is a hard limit, as in sshd.
            [full] => {
                let full = num(full)?;
                Self {
                    start: full,
                    rate: 100,
                    full,
                }
            }
            [start, rate, full] => Self {
                start: num(start)?,
                rate: u8::try_from(num(rate)?).map_err(|_| StartupsError::Range)?,
                full: num(full)?,
            },
            _ => return Err(StartupsError::Shape),
        };
        if startups.full == 0 || startups.start > startups.full || startups.rate > 100 {
            return Err(StartupsError::Range);
        }
        Ok(startups)
    }
}

impl std::fmt::Display for Startups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

/// The bounds of one admission table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionLimits {
    /// The table's size and its early drop.
    pub startups: Startups,
    /// Most entries one source may hold.
    pub per_source: usize,
}

impl AdmissionLimits {
    /// A table sized and dropping early as `startups` says, where one
    /// source holds at most `per_source` entries.
    pub const fn new(startups: Startups, per_source: usize) -> Self {
        Self {
            startups,
            per_source,
        }
    }
}

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Dropped early, at random, as the table fills.
    #[error("too many unauthenticated sessions (dropped early)")]
    Early,
    /// The table is full.
    #[error("too many unauthenticated sessions")]
    Full,
    /// The source holds its whole share.
    #[error("too many unauthenticated sessions from this address")]
    Source,
}

/// The part of an address that makes a source: an IPv4 address, or the
/// /64 of an IPv6 one (one host usually has a whole /64). A mapped IPv4
/// address counts as that IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u128);

impl Source {
    /// The source an address belongs to.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                // Tagged above every IPv4 value, /64 kept.
                None => Self((u128::from(v6) & !u128::from(u64::MAX)) | 1),
            },
        }
    }
}

/// An admission table: counts per source and in all.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    total: usize,
    by_source: HashMap<Source, usize>,
}

impl Admission {
    /// An empty table.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            total: 0,
            by_source: HashMap::new(),
        }
    }

    /// Admits one more session from `source` (`None`: no per-source share
    /// applies), or says why not. `roll` is uniform in `[0, 1)`.
    pub fn admit(&mut self, source: Option<Source>, roll: f64) -> Result<(), Refusal> {
        if self.total >= self.limits.startups.full {
            return Err(Refusal::Full);
        }
        if let Some(s) = source
            && self.by_source.get(&s).copied().unwrap_or(0) >= self.limits.per_source
        {
            return Err(Refusal::Source);
        }
        if roll < self.limits.startups.drop_probability(self.total) {
            return Err(Refusal::Early);
        }
        self.total += 1;
        if let Some(s) = source {
            *self.by_source.entry(s).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Gives back a place taken by [`admit`](Self::admit).
    pub fn release(&mut self, source: Option<Source>) {
        self.total = self.total.saturating_sub(1);
        self.settle(source);
    }

    /// The session from `source` has sent message 1: it leaves its
    /// source's share, and keeps its place in the table until
    /// [`release_settled`](Self::release_settled).
    pub fn settle(&mut self, source: Option<Source>) {
        if let Some(s) = source
            && let Some(n) = self.by_source.get_mut(&s)
        {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&s);
            }
        }
    }

    /// Gives back the place of a session [`settle`](Self::settle)d before.
    pub(crate) fn release_settled(&mut self) {
        self.total = self.total.saturating_sub(1);
    }

    /// Sessions admitted and not yet released.
    pub fn in_flight(&self) -> usize {
        self.total
    }

    /// Sessions admitted from `source`.
    pub(crate) fn held_by(&self, source: Source) -> usize {
        self.by_source.get(&source).copied().unwrap_or(0)
    }

    /// Whether `source` holds its whole share.
    pub fn over_share(&self, source: Source) -> bool {
        self.held_by(source) >= self.limits.per_source
    }
}

/// Refusals counted since they were last taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refusals {
    /// Dropped early.
    pub early: u64,
    /// The table was full.
    pub full: u64,
    /// Over the source's share.
    pub source: u64,
    /// Sessions that had not sent message 1, ended to make room.
    pub displaced: u64,
}

impl Refusals {
    /// Total refusals (displaced sessions included).
    pub fn total(&self) -> u64 {
        self.early + self.full + self.source + self.displaced
    }
}

/// A ticket's state, shared with the gate's queue of displaceable ones.
#[derive(Debug, Default)]
struct Standing {
    /// Sent message 1 (or gone): no longer displaceable.
    settled: AtomicBool,
    /// Displaced: its place was given to a newcomer.
    displaced: AtomicBool,
    wake: tokio::sync::Notify,
}

/// A ticket that can still be displaced.
#[derive(Debug)]
struct Waiting {
    source: Option<Source>,
    standing: Arc<Standing>,
}

#[derive(Debug)]
struct GateInner {
    table: Admission,
    /// Oldest first; settled ones are skipped (and compacted) lazily.
    waiting: VecDeque<Waiting>,
}

impl GateInner {
    /// Displaces the oldest unsettled ticket (of `source`, if given),
    /// giving its place back; whether there was one.
    fn displace(&mut self, source: Option<Option<Source>>) -> bool {
        let pos = self.waiting.iter().position(|w| {
            !w.standing.settled.load(Ordering::Acquire) && source.is_none_or(|s| s == w.source)
        });
        let Some(w) = pos.and_then(|i| self.waiting.remove(i)) else {
            return false;
        };
        // Under the gate's lock, as every change of `settled` is.
        w.standing.settled.store(true, Ordering::Release);
        w.standing.displaced.store(true, Ordering::Release);
        w.standing.wake.notify_waiters();
        self.table.release(w.source);
        true
    }

    fn compact(&mut self) {
        if self.waiting.len() > 2 * self.table.in_flight() + 64 {
            self.waiting
                .retain(|w| !w.standing.settled.load(Ordering::Acquire));
        }
    }
}

/// A shared admission table that hands out tickets.
#[derive(Debug)]
pub struct Gate {
    inner: Mutex<GateInner>,
    early: AtomicU64,
    full: AtomicU64,
    source: AtomicU64,
    displaced: AtomicU64,
    admitted: AtomicU64,
}

/// What to do once a session has authenticated (e.g. trust its
/// connection: [`crate::listener::Connections::trust`]).
type OnAuthenticated = Box<dyn FnOnce() + Send + Sync>;

/// A place in a [`Gate`]'s table; given back when dropped.
pub struct Ticket {
    gate: Arc<Gate>,
    source: Option<Source>,
    standing: Arc<Standing>,
    on_authenticated: Option<OnAuthenticated>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("source", &self.source)
            .field("on_authenticated", &self.on_authenticated.is_some())
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// The session has sent its handshake message 1: it can no longer be
    /// displaced to make room.
    pub fn advanced(&self) {
        let mut inner = self.gate.lock();
        if !self.standing.settled.swap(true, Ordering::AcqRel) {
            inner.table.settle(self.source);
        }
    }

    /// Resolves once the session has been displaced to make room (never,
    /// once [`Ticket::advanced`] was called).
    pub async fn displaced(&self) {
        loop {
            let notified = self.standing.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.standing.displaced.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Runs `f` when (and only if) the session authenticates
    /// ([`Ticket::authenticated`]).
    pub fn on_authenticated(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.on_authenticated = Some(Box::new(f));
        self
    }

    /// The session has authenticated: its place is given back, and what
    /// [`Ticket::on_authenticated`] asked for is done.
    pub fn authenticated(mut self) {
        if let Some(f) = self.on_authenticated.take() {
            f();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        let settled = self.standing.settled.swap(true, Ordering::AcqRel);
        // A displaced ticket's place was given back already.
        if self.standing.displaced.load(Ordering::Acquire) {
        } else if settled {
            inner.table.release_settled();
        } else {
            inner.table.release(self.source);
        }
        inner.compact();
    }
}

impl Gate {
    /// A gate over an empty table.
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(GateInner {
                table: Admission::new(limits),
                waiting: VecDeque::new(),
            }),
            early: AtomicU64::new(0),
            full: AtomicU64::new(0),
            source: AtomicU64::new(0),
            displaced: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateInner> {
        // Counts stay consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a session from `addr` (`None`: unknown, no per-source share).
    pub fn enter(self: &Arc<Self>, addr: Option<IpAddr>) -> Result<Ticket, Refusal> {
        let source = addr.map(Source::of);
        let mut inner = self.lock();
        let mut result = inner.table.admit(source, roll());
        if result.is_err() {
            // The least advanced goes first: the oldest session that has
            // not sent message 1 (of this source, when it holds its whole
            // share).
            let among = source.filter(|s| inner.table.over_share(*s)).map(Some);
            if inner.displace(among) {
                self.displaced.fetch_add(1, Ordering::Relaxed);
                // Its place, without another roll.
                result = inner.table.admit(source, 1.0);
            }
        }
        match result {
            Ok(()) => {
                let standing = Arc::new(Standing::default());
                inner.waiting.push_back(Waiting {
                    source,
                    standing: Arc::clone(&standing),
                });
                inner.compact();
                drop(inner);
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(Ticket {
                    gate: Arc::clone(self),
                    source,
                    standing,
                    on_authenticated: None,
                })
            }
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::Early => &self.early,
                    Refusal::Full => &self.full,
                    Refusal::Source => &self.source,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Err(refusal)
            }
        }
    }

    /// Sessions holding a ticket now.
    pub fn in_flight(&self) -> usize {
        self.lock().table.in_flight()
    }

    /// Tickets handed out so far.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// The refusals counted since the last call (and resets them).
    pub fn take_refusals(&self) -> Refusals {
        Refusals {
            early: self.early.swap(0, Ordering::Relaxed),
            full: self.full.swap(0, Ordering::Relaxed),
            source: self.source.swap(0, Ordering::Relaxed),
            displaced: self.displaced.swap(0, Ordering::Relaxed),
        }
    }
}

/// A uniform roll in `[0, 1)` from the system's random source (a roll
/// that cannot be made counts as 0: admitted unless the table is full;
/// a client's pause before trying a busy relay again is its shortest).
pub fn roll() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limits(s: &str, per_source: usize) -> AdmissionLimits {
        AdmissionLimits {
            startups: s.parse().unwrap(),
            per_source,
        }
    }

    fn v4(last: u8) -> Option<Source> {
        Some(Source::of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))))
    }

    #[test]
    fn startups_parse_and_probability() {
        let s: Startups = "10:30:100".parse().unwrap();
        assert_eq!(s.to_string(), "10:30:100");
        assert_eq!(s.drop_probability(9), 0.0);
        assert!((s.drop_probability(10) - 0.3).abs() < 1e-9);
        assert!((s.drop_probability(55) - 0.65).abs() < 1e-9);
        assert_eq!(s.drop_probability(100), 1.0);
        let hard: Startups = "8".parse().unwrap();
        assert_eq!(hard.drop_probability(7), 0.0);
        assert_eq!(hard.drop_probability(8), 1.0);
        for bad in ["", "1:2", "a:b:c", "1:2:3:4"] {
            assert_eq!(bad.parse::<Startups>(), Err(StartupsError::Shape), "{bad}");
        }
        for bad in ["0", "10:30:5", "1:101:5"] {
            assert_eq!(bad.parse::<Startups>(), Err(StartupsError::Range), "{bad}");
        }
    }

    #[test]
    fn early_drop_full_and_release() {
        let mut a = Admission::new(limits("2:50:4", 10));
        // Below start: admitted whatever the roll.
        a.admit(v4(1), 0.0).unwrap();
        a.admit(v4(1), 0.0).unwrap();
        // At start, 50%: a low roll is dropped, a high one admitted.
        assert_eq!(a.admit(v4(1), 0.2), Err(Refusal::Early));
        a.admit(v4(1), 0.9).unwrap();
        // 3 of 4: 75%.
        assert_eq!(a.admit(v4(1), 0.7), Err(Refusal::Early));
        a.admit(v4(1), 0.8).unwrap();
        assert_eq!(a.admit(v4(1), 0.999), Err(Refusal::Full));
        a.release(v4(1));
        assert_eq!(a.in_flight(), 3);
        a.admit(v4(1), 0.99).unwrap();
    }

    #[test]
    fn one_source_gets_its_share_only() {
        let mut a = Admission::new(limits("100:30:100", 2));
        a.admit(v4(2), 0.5).unwrap();
        a.admit(v4(2), 0.5).unwrap();
        assert_eq!(a.admit(v4(2), 0.5), Err(Refusal::Source));
        // Another source, and sources not known, are still admitted.
        a.admit(v4(1), 0.5).unwrap();
        a.admit(None, 0.5).unwrap();
        a.release(v4(2));
        assert_eq!(
            a.held_by(Source::of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))),
            1
        );
        a.admit(v4(2), 0.5).unwrap();
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_v4_is_v4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a.into()), Source::of(b.into()));
        assert_ne!(Source::of(a.into()), Source::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            Source::of(mapped.into()),
            Source::of(Ipv4Addr::LOCALHOST.into())
        );
        assert_ne!(
            Source::of(Ipv6Addr::UNSPECIFIED.into()),
            Source::of(Ipv4Addr::UNSPECIFIED.into())
        );
    }

    #[test]
    fn tickets_give_their_place_back_and_refusals_are_counted() {
        let gate = Gate::new(limits("1", 1));
        let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let t = gate.enter(local).unwrap();
        // It has sent message 1: it keeps its place.
        t.advanced();
        assert_eq!(gate.enter(local).unwrap_err(), Refusal::Full);
        assert_eq!(gate.in_flight(), 1);
        drop(t);
        assert_eq!(gate.in_flight(), 0);
        let _t = gate.enter(local).unwrap();
        let r = gate.take_refusals();
        assert_eq!(r.full, 1);
        assert_eq!(r.total(), 1);
        assert_eq!(gate.take_refusals().total(), 0);
        assert_eq!(gate.admitted(), 2);
    }

    #[tokio::test]
    async fn under_pressure_the_oldest_session_without_message_1_makes_room() {
        // A table of 4 (no random drop: the test is deterministic), 3
        // per source.
        let gate = Gate::new(limits("4", 3));
        let flood = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let honest = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // Two honest sessions that sent message 1, then silent ones.
        let h1 = gate.enter(honest).unwrap();
        h1.advanced();
        let h2 = gate.enter(honest).unwrap();
        h2.advanced();
        let s1 = gate.enter(flood).unwrap();
        let s2 = gate.enter(flood).unwrap();
        assert_eq!(gate.in_flight(), 4);
        // A flood of newcomers (bounded): each takes the place of the
        // oldest silent one, never an honest session's.
        let mut held = vec![s1, s2];
        for _ in 0..50 {
            held.push(gate.enter(flood).unwrap());
            assert_eq!(gate.in_flight(), 4);
        }
        let displaced = futures::future::join_all(held.iter().map(|t| async {
            tokio::time::timeout(std::time::Duration::from_millis(1), t.displaced())
                .await
                .is_ok()
        }))
        .await;
        assert_eq!(displaced.iter().filter(|d| **d).count(), 50);
        assert!(!displaced[50] && !displaced[51], "the newest two are in");
        assert_eq!(gate.take_refusals().displaced, 50);
        // An honest newcomer gets in the same way, and once it has sent
        // message 1 the flood cannot take its place.
        let h3 = gate.enter(honest).unwrap();
        h3.advanced();
        for _ in 0..10 {
            held.push(gate.enter(flood).unwrap());
        }
        assert_eq!(gate.in_flight(), 4);
        // Only settled sessions left: a newcomer is refused.
        for t in &held[held.len() - 1..] {
            t.advanced();
        }
        assert!(gate.enter(flood).is_err());
        drop(held);
        assert_eq!(gate.in_flight(), 3);
        drop((h1, h2, h3));
        assert_eq!(gate.in_flight(), 0);
    }

    #[test]
    fn a_source_over_its_share_displaces_its_own_oldest_silent_session() {
        let gate = Gate::new(limits("100:30:100", 2));
        let a = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let b = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        let other = gate.enter(b).unwrap();
        // Sent message 1: out of its source's share.
        let a1 = gate.enter(a).unwrap();
        a1.advanced();
        let a2 = gate.enter(a).unwrap();
        let a3 = gate.enter(a).unwrap();
        // Over its share (2 silent): its own oldest silent one goes, not
        // one that sent message 1, nor another source's.
        let a4 = gate.enter(a).unwrap();
        assert!(a2.standing.displaced.load(Ordering::Acquire));
        for kept in [&a1, &a3, &a4, &other] {
            assert!(!kept.standing.displaced.load(Ordering::Acquire));
        }
        assert_eq!(gate.in_flight(), 4);
        // Once they have sent message 1, a burst from the source (an
        // honest client's sessions) is not held to the share.
        a3.advanced();
        a4.advanced();
        let burst: Vec<Ticket> = (0..10)
            .map(|_| {
                let t = gate.enter(a).unwrap();
                t.advanced();
                t
            })
            .collect();
        assert_eq!(gate.in_flight(), 14);
        assert_eq!(gate.take_refusals().total(), 1);
        drop((a1, a2, a3, a4, other, burst));
        assert_eq!(gate.in_flight(), 0);
    }
}
