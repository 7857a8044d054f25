//! The exec-server's one budget for output its clients have not
//! acknowledged: every read of a command's stdout or stderr is charged
//! here (to the command's client key and to the total) before it happens,
//! and given back as the client acknowledges the output (or the command's
//! session ends). A read that does not fit waits: the command's pipe
//! pump pauses and the command blocks on its output, as with a slow
//! reader. So clients that stop reading, however many, hold at most this
//! much of the exec-server's memory, and one key at most its own share.
//!
//! A command may always hold its *floor*, so that every command whose
//! client reads goes on, however full the budget. A client acknowledges
//! output once it has taken part of its window since its last
//! acknowledgement (an eighth, `proto::session::output::ACK_EVERY`), or at
//! once when asked (`AckWanted`, for a client whose hello says it answers
//! one). A read that finds no room asks (the session sends the ask), so
//! for such a client the floor is two reads (`credit::ASKED_FLOOR`: one held
//! until the ask is answered, one more to read meanwhile); for a client
//! that never answers an ask it is a quarter of its output window and one
//! read (the floor leaves room for a client that waits for a quarter).
//! Floors count against the budget while their commands run, and what a
//! command holds beyond its floor must fit beside them: what is held
//! exceeds the budget by at most the floors of the commands that started
//! while it was full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use proto::keys::PublicKey;
use tokio::sync::Notify;

/// Default total: 256 MiB.
pub const DEFAULT_TOTAL: u64 = 256 * 1024 * 1024;

/// Default per client key: 64 MiB (sixteen commands' output windows).
pub const DEFAULT_PER_KEY: u64 = 64 * 1024 * 1024;

/// The budget, shared by every session of one exec-server.
#[derive(Debug)]
pub struct Unacked {
    total: u64,
    per_key: u64,
    state: Mutex<State>,
    freed: Notify,
}

/// What is set aside and held, in all or for one key.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// Bytes charged (unacknowledged).
    used: u64,
    /// The floors of the commands running.
    floors: u64,
    /// What commands hold beyond their floors.
    excess: u64,
}

impl Held {
    /// What counts against the bound: floors set aside and what is held
    /// beyond them.
    fn committed(self) -> u64 {
        self.floors + self.excess
    }
}

#[derive(Debug, Default)]
struct State {
    all: Held,
    peak: u64,
    /// Per client key with a command running.
    keys: HashMap<PublicKey, Held>,
    /// Reads that had to wait.
    waits: u64,
    /// Whether the bound was logged since it was last left.
    told: bool,
}

impl State {
    /// Applies `f` to the total and to `key`'s share.
    fn each(&mut self, key: Option<PublicKey>, f: impl Fn(&mut Held)) {
        f(&mut self.all);
        if let Some(k) = key {
            let held = self.keys.entry(k).or_default();
            f(held);
            if held.floors == 0 && held.used == 0 && held.excess == 0 {
                self.keys.remove(&k);
            }
        }
    }
}

/// One command's share of the budget: its floor, set aside while it
/// runs, and what it holds. Given back whole when dropped.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<Unacked>,
    key: Option<PublicKey>,
    /// Its floor while the command runs; 0 once it has ended (changed
    /// only under the budget's lock).
    floor: AtomicU64,
    /// Charged and not yet given back (changed only under the budget's
    /// lock).
    outstanding: AtomicU64,
    /// A take found no room since [`take_asked`](Self::take_asked) last
    /// looked: the command's client should acknowledge what it has.
    asked: AtomicBool,
    /// Told when a take finds no room (the session then asks the client
    /// for an acknowledgement).
    wake: Option<Arc<Notify>>,
}

impl Share {
    /// Takes `n`, waiting while it does not fit. Cancel-safe: taken whole
    /// or not at all.
    pub(crate) async fn take(&self, n: u64) {
        let mut waited = false;
        loop {
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(n) {
                return;
            }
            if !waited {
                waited = true;
                self.budget.lock().waits += 1;
            }
            // What it holds comes back only as its client acknowledges it:
            // ask for that now, not once a window's eighth is taken; and
            // again after each answer that did not make room (the session
            // keeps one ask outstanding per call at most).
            self.asked.store(true, Ordering::Release);
            if let Some(wake) = &self.wake {
                wake.notify_one();
            }
            freed.await;
        }
    }

    /// Whether a take found no room since last asked (and forgets it).
    pub(crate) fn take_asked(&self) -> bool {
        self.asked.swap(false, Ordering::AcqRel)
    }

    fn excess(&self, held: u64) -> u64 {
        held.saturating_sub(self.floor.load(Ordering::Acquire))
    }

    /// The command has ended: its floor is no longer set aside, and what
    /// it still holds (its last events, until acknowledged) counts in
    /// full. A finished command kept for its client's acknowledgement (or
    /// a resume) so holds only its unacknowledged bytes, not a floor it
    /// can no longer use.
    pub(crate) fn finish(&self) {
        {
            let mut state = self.budget.lock();
            let floor = self.floor.swap(0, Ordering::AcqRel);
            if floor == 0 {
                return;
            }
            let held = self.outstanding.load(Ordering::Acquire);
            // Its excess was what it held beyond the floor; now all of it.
            let more = held.min(floor);
            state.each(self.key, |h| {
                h.floors = h.floors.saturating_sub(floor);
                h.excess += more;
            });
        }
        self.budget.freed.notify_waiters();
    }

    fn try_take(&self, n: u64) -> bool {
        let budget = &self.budget;
        let mut state = budget.lock();
        let held = self.outstanding.load(Ordering::Acquire);
        let more = self.excess(held + n) - self.excess(held);
        if more > 0 {
            let key = self
                .key
                .and_then(|k| state.keys.get(&k).copied())
                .unwrap_or_default();
            let fits = state.all.committed() + more <= budget.total
                && key.committed() + more <= budget.per_key;
            if !fits {
                if !state.told {
                    state.told = true;
                    tracing::info!(
                        unacked_bytes = state.all.used,
                        total_bound = budget.total,
                        key_bytes = key.used,
                        key_bound = budget.per_key,
                        "output not yet acknowledged reached its bound: commands whose clients \
                         do not read wait on their output (nothing is dropped)"
                    );
                }
                return false;
            }
        }
        self.outstanding.store(held + n, Ordering::Release);
        state.each(self.key, |h| {
            h.used += n;
            h.excess += more;
        });
        state.peak = state.peak.max(state.all.used);
        true
    }

    /// Gives back `n` of what it holds (acknowledged, or not spent).
    pub(crate) fn give(&self, n: u64) {
        {
            let mut state = self.budget.lock();
            let held = self.outstanding.load(Ordering::Acquire);
            let n = n.min(held);
            if n == 0 {
                return;
            }
            let less = self.excess(held) - self.excess(held - n);
            self.outstanding.store(held - n, Ordering::Release);
            state.each(self.key, |h| {
                h.used = h.used.saturating_sub(n);
                h.excess = h.excess.saturating_sub(less);
            });
            if state.all.committed() < self.budget.total {
                state.told = false;
            }
        }
        self.budget.freed.notify_waiters();
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let held = *self.outstanding.get_mut();
        self.give(held);
        let floor = *self.floor.get_mut();
        self.budget.lock().each(self.key, |h| {
            h.floors = h.floors.saturating_sub(floor);
        });
        self.budget.freed.notify_waiters();
    }
}

impl Unacked {
    /// A budget of `total` bytes, `per_key` of them for one client key.
    pub(crate) fn new(total: u64, per_key: u64) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_key,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A share for a new command of `key` whose floor is `floor` (set
    /// aside until the share is dropped); `wake` is told when a take finds
    /// no room.
    pub(crate) fn share(
        self: &Arc<Self>,
        key: Option<PublicKey>,
        floor: u64,
        wake: Option<Arc<Notify>>,
    ) -> Share {
        self.lock().each(key, |h| h.floors += floor);
        Share {
            budget: Arc::clone(self),
            key,
            floor: AtomicU64::new(floor),
            outstanding: AtomicU64::new(0),
            asked: AtomicBool::new(false),
            wake,
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.lock().all.used
    }

    /// The most ever charged at once.
    pub fn peak(&self) -> u64 {
        self.lock().peak
    }

    /// Bytes charged now to `key`.
    pub fn used_by(&self, key: &PublicKey) -> u64 {
        self.lock().keys.get(key).map_or(0, |h| h.used)
    }

    /// The floors of the commands running now.
    pub fn floors(&self) -> u64 {
        self.lock().all.floors
    }

    /// Reads that had to wait for room, in all.
    pub fn waits(&self) -> u64 {
        self.lock().waits
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proto::keys::StaticKeypair;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn one_key_holds_at_most_its_share_and_all_at_most_the_total() {
        let budget = Unacked::new(1000, 600);
        let a = StaticKeypair::generate().unwrap().public();
        let b = StaticKeypair::generate().unwrap().public();
        let a1 = Arc::new(budget.share(Some(a), 100, None));
        let b1 = budget.share(Some(b), 100, None);
        a1.take(600).await;
        // Over a's share (its floor and 500 beyond): waits, while b still
        // gets in.
        let waiting = tokio::spawn({
            let a1 = Arc::clone(&a1);
            async move { a1.take(100).await }
        });
        settle().await;
        assert!(!waiting.is_finished());
        b1.take(300).await;
        assert_eq!(budget.used(), 900);
        assert_eq!((budget.used_by(&a), budget.used_by(&b)), (600, 300));
        // a acknowledges: its waiting read goes on.
        a1.give(300);
        waiting.await.unwrap();
        assert_eq!(budget.used_by(&a), 400);
        assert_eq!(budget.waits(), 1);
        assert_eq!(budget.peak(), 900);
        // Shares dropped give everything back, floors too.
        drop(b1);
        drop(a1);
        assert_eq!((budget.used(), budget.floors()), (0, 0));
    }

    #[tokio::test]
    async fn a_finished_command_gives_back_its_floor_and_holds_only_what_is_unacknowledged() {
        let budget = Unacked::new(1000, 1000);
        let a = StaticKeypair::generate().unwrap().public();
        let done = budget.share(Some(a), 400, None);
        done.take(50).await;
        assert_eq!(budget.floors(), 400);
        done.finish();
        done.finish();
        assert_eq!((budget.used(), budget.floors()), (50, 0));
        // Room for another's 950 beyond its own floor: the finished one
        // holds its 50, nothing set aside.
        let next = budget.share(Some(a), 0, None);
        let fits = tokio::time::timeout(std::time::Duration::from_millis(10), next.take(950)).await;
        assert!(fits.is_ok(), "a finished command's floor still set aside");
        let over = tokio::time::timeout(std::time::Duration::from_millis(10), next.take(1)).await;
        assert!(over.is_err(), "what it holds still counts");
        done.give(50);
        drop(done);
        drop(next);
        assert_eq!((budget.used(), budget.floors()), (0, 0));
    }

    #[tokio::test]
    async fn a_command_within_its_floor_always_reads_and_floors_are_set_aside() {
        let budget = Unacked::new(1000, 1000);
        let a = StaticKeypair::generate().unwrap().public();
        let big = budget.share(Some(a), 100, None);
        let small = budget.share(Some(a), 100, None);
        // 800 beyond the big one's floor fits beside both floors...
        big.take(900).await;
        // ...and nothing more beyond a floor does, but the small one's
        // floor was kept for it.
        small.take(100).await;
        assert_eq!(budget.used(), 1000);
        let over = tokio::time::timeout(std::time::Duration::from_millis(10), small.take(1)).await;
        assert!(over.is_err(), "beyond its floor, the budget is full");
        assert_eq!(budget.used(), 1000, "a wait given up takes nothing");
    }

    #[tokio::test]
    async fn more_floors_than_the_budget_hold_only_their_floors() {
        let budget = Unacked::new(1000, 1000);
        let shares: Vec<Share> = (0..20).map(|_| budget.share(None, 100, None)).collect();
        for s in &shares {
            s.take(100).await;
        }
        assert_eq!(budget.used(), 2000);
        let over =
            tokio::time::timeout(std::time::Duration::from_millis(10), shares[0].take(1)).await;
        assert!(over.is_err());
    }
}
