//! A call's output credit on the exec-server: the session's output window
//! (`proto::session::output`), as a semaphore the process reserves from
//! before it reads its output, and the session's acknowledgements give
//! back to. A caller that stops reading so stops its own process's reads,
//! and nothing else.
//!
//! While a session's link is down (`Retention`), what its processes may
//! still read is bounded twice more: per session and exec-server-wide.
//! Every reservation is then also charged to both, and a process whose
//! charge does not fit waits (it stops reading its pipes, so it blocks on
//! its output as it would with a slow reader): nothing is dropped.
//!
//! Whether the link is up or not, every reservation is also charged to
//! the exec-server's budget for unacknowledged output ([`Unacked`]) until
//! the client acknowledges it (or the call is over and gone).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use proto::keys::PublicKey;
use proto::limits::MAX_CHUNK;
use proto::session::output::EVENT_COST;
use tokio::sync::{Notify, Semaphore};

use crate::unacked::{Share, Unacked};

/// What one read of a pipe may cost: its largest chunk and the event.
pub const CHUNK_CREDIT: u64 = MAX_CHUNK as u64 + EVENT_COST;

/// The floor of a command whose client acknowledges when asked: two reads
/// (each a chunk and its event).
pub const ASKED_FLOOR: u64 = 2 * CHUNK_CREDIT;

/// The floor of a command whose output window is `window`: [`ASKED_FLOOR`]
/// if its client acknowledges when asked, else a quarter of the window and
/// one read.
pub(crate) fn floor(window: u32, acks_when_asked: bool) -> u64 {
    if acks_when_asked {
        ASKED_FLOOR
    } else {
        u64::from(window) / 4 + CHUNK_CREDIT
    }
}

/// Bytes of output retained for sessions whose link is down, against a
/// bound: the exec-server's total.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Notify,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: Mutex::new(0),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `n` if it fits.
    fn try_take(&self, n: u64) -> bool {
        let mut used = self.lock();
        if *used + n > self.limit {
            return false;
        }
        *used += n;
        true
    }

    /// Takes `n` whether it fits or not (what was already retained when a
    /// link broke): until it is given back, nothing more fits.
    fn force(&self, n: u64) {
        *self.lock() += n;
    }

    /// Gives `n` back.
    fn give(&self, n: u64) {
        {
            let mut used = self.lock();
            *used = used.saturating_sub(n);
        }
        self.freed.notify_waiters();
    }

    /// Bytes charged now.
    fn used(&self) -> u64 {
        *self.lock()
    }

    /// The bound.
    fn limit(&self) -> u64 {
        self.limit
    }
}

/// One session's output while its link is down: each reservation of its
/// processes is charged to the session's bound and to the exec-server's
/// [`Budget`], and waits while it does not fit. Everything is given back
/// when the session is resumed (its client acknowledges the output as
/// usual from then on) or ends.
#[derive(Debug)]
pub(crate) struct Retention {
    session_limit: u64,
    total: Arc<Budget>,
    state: Mutex<Held>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Held {
    detached: bool,
    /// Moves at every detach and attach: a charge made in an earlier
    /// period is never given back into a later one.
    epoch: u64,
    /// Charged to both bounds in this period.
    charged: u64,
    /// Whether a process has waited on a bound in this period (said once).
    told: bool,
}

/// What a reservation charged (nothing while the link is up).
#[derive(Debug, Default, Clone, Copy)]
struct Charge {
    epoch: u64,
    amount: u64,
}

impl Retention {
    /// A session's retention: `session_limit` bytes for the session, and
    /// the exec-server's `total`.
    pub(crate) fn new(session_limit: u64, total: Arc<Budget>) -> Arc<Self> {
        Arc::new(Self {
            session_limit,
            total,
            state: Mutex::new(Held::default()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's link broke with `retained` bytes of output already
    /// held (sent and unacknowledged, queued, or reserved): they are
    /// charged at once, and every reservation from now on too.
    pub(crate) fn detach(&self, retained: u64) {
        let mut held = self.lock();
        if held.detached {
            return;
        }
        held.detached = true;
        held.epoch += 1;
        held.charged = retained;
        held.told = false;
        self.total.force(retained);
    }

    /// The session has a link again (or is over): everything charged is
    /// given back and processes waiting on a bound go on.
    pub(crate) fn attach(&self) {
        {
            let mut held = self.lock();
            if held.detached {
                held.detached = false;
                held.epoch += 1;
                self.total.give(std::mem::take(&mut held.charged));
            }
        }
        self.changed.notify_waiters();
    }

    /// Bytes charged to the session now.
    #[cfg(test)]
    fn charged(&self) -> u64 {
        self.lock().charged
    }

    /// Charges `amount`, waiting while it does not fit (nothing while the
    /// link is up). Cancel-safe: a charge is taken whole or not at all.
    async fn charge(&self, amount: u64) -> Charge {
        loop {
            let changed = self.changed.notified();
            let freed = self.total.freed.notified();
            tokio::pin!(changed, freed);
            changed.as_mut().enable();
            freed.as_mut().enable();
            {
                let mut held = self.lock();
                if !held.detached {
                    return Charge::default();
                }
                if held.charged + amount <= self.session_limit && self.total.try_take(amount) {
                    held.charged += amount;
                    return Charge {
                        epoch: held.epoch,
                        amount,
                    };
                }
                if !held.told {
                    held.told = true;
                    let (session, total) = (held.charged, self.total.used());
                    tracing::info!(
                        session_bytes = session,
                        session_bound = self.session_limit,
                        total_bytes = total,
                        total_bound = self.total.limit(),
                        "the output kept for a parked session reached its bound: its commands wait \
                         for their client to come back (nothing is dropped)"
                    );
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = &mut freed => {}
            }
        }
    }

    /// Gives back what a charge did not spend.
    fn refund(&self, charge: Charge, spent: u64) {
        let unspent = charge.amount.saturating_sub(spent);
        if unspent == 0 {
            return;
        }
        {
            let mut held = self.lock();
            if !held.detached || held.epoch != charge.epoch {
                return;
            }
            held.charged = held.charged.saturating_sub(unspent);
            self.total.give(unspent);
        }
        self.changed.notify_waiters();
    }
}

/// One call's output credit; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Credit {
    /// `None`: no window (every reservation is granted at once).
    window: Option<Arc<Semaphore>>,
    /// The window's size (the client widens it with the path, and
    /// narrows it back when the call goes quiet).
    size: Arc<AtomicU64>,
    /// The widest it has been.
    widest: Arc<AtomicU64>,
    /// Credit a narrower window still owes: taken out of what comes back
    /// before it is free again.
    owed: Arc<AtomicU64>,
    /// Its session's bounds while the link is down.
    retention: Option<Arc<Retention>>,
    /// What the call holds of the exec-server's budget for unacknowledged
    /// output (given back when the last clone goes).
    unacked: Option<Arc<Share>>,
}

/// A charge to the budget taken while a reservation waits for the rest:
/// given back if the reservation is given up.
struct Pending<'a> {
    share: &'a Share,
    amount: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.share.give(self.amount);
    }
}

impl Credit {
    /// Credit of `window` (0: no limit), charged to `retention` while its
    /// session's link is down.
    pub(crate) fn new(window: u32, retention: Option<Arc<Retention>>) -> Self {
        Self {
            window: (window != 0).then(|| Arc::new(Semaphore::new(window as usize))),
            size: Arc::new(AtomicU64::new(u64::from(window))),
            widest: Arc::new(AtomicU64::new(u64::from(window))),
            owed: Arc::new(AtomicU64::new(0)),
            retention,
            unacked: None,
        }
    }

    /// The same credit, each reservation also charged to `budget` for
    /// `key` until acknowledged, with `floor` of it always the call's
    /// ([`floor`]); `wake` is told when a reservation
    /// waits for room in the budget ([`take_asked`](Self::take_asked)).
    #[must_use]
    pub(crate) fn charged_to(
        mut self,
        budget: Arc<Unacked>,
        key: Option<PublicKey>,
        floor: u64,
        wake: Option<Arc<Notify>>,
    ) -> Self {
        self.unacked = Some(Arc::new(budget.share(key, floor, wake)));
        self
    }

    /// Whether a reservation waited for room in the exec-server's budget
    /// since last asked: the session asks the client to acknowledge.
    pub(crate) fn take_asked(&self) -> bool {
        self.unacked.as_ref().is_some_and(|s| s.take_asked())
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self {
            window: None,
            size: Arc::new(AtomicU64::new(0)),
            widest: Arc::new(AtomicU64::new(0)),
            owed: Arc::new(AtomicU64::new(0)),
            retention: None,
            unacked: None,
        }
    }

    /// Waits until `amount` is free and takes it. Cancel-safe: nothing is
    /// taken unless it returns.
    pub(crate) async fn reserve(&self, amount: u64) -> Reserved {
        let n = u32::try_from(amount).unwrap_or(u32::MAX);
        // The semaphore is never closed: acquiring only waits.
        let permit = match &self.window {
            Some(window) => window.acquire_many(n).await.ok(),
            None => None,
        };
        let pending = match &self.unacked {
            Some(share) => {
                share.take(amount).await;
                Some(Pending {
                    share: share.as_ref(),
                    amount,
                })
            }
            None => None,
        };
        let charge = match &self.retention {
            Some(r) => r.charge(amount).await,
            None => Charge::default(),
        };
        if let Some(permit) = permit {
            permit.forget();
        }
        // Charged for good: held until acknowledged.
        std::mem::forget(pending);
        Reserved {
            credit: self.clone(),
            amount,
            charge,
        }
    }

    /// The call has ended: its floor of the exec-server's budget is no
    /// longer set aside (what it holds stays charged until acknowledged).
    pub(crate) fn finish(&self) {
        if let Some(share) = &self.unacked {
            share.finish();
        }
    }

    /// Gives back `amount` (acknowledged by the client, or reserved and
    /// not spent).
    pub(crate) fn release(&self, amount: u64) {
        if let Some(window) = &self.window {
            let free = amount - self.repay(amount);
            window.add_permits(usize::try_from(free).unwrap_or(usize::MAX));
        }
        if let Some(share) = &self.unacked {
            share.give(amount);
        }
    }

    /// The client changed the call's window to `window`: a wider one's
    /// difference is free at once (first paying what a narrower one still
    /// owed); a narrower one takes the difference out of the free credit,
    /// and what is not free now out of what the client acknowledges next.
    pub(crate) fn resize(&self, window: u32) {
        let Some(semaphore) = &self.window else {
            return;
        };
        let new = u64::from(window);
        let old = self.size.swap(new, Ordering::AcqRel);
        self.widest.fetch_max(new, Ordering::AcqRel);
        if new > old {
            let more = new - old;
            let free = more - self.repay(more);
            if free > 0 {
                semaphore.add_permits(usize::try_from(free).unwrap_or(usize::MAX));
            }
        } else if new < old {
            let less = old - new;
            let taken = semaphore.forget_permits(usize::try_from(less).unwrap_or(usize::MAX));
            let owed = less.saturating_sub(taken as u64);
            if owed > 0 {
                self.owed.fetch_add(owed, Ordering::AcqRel);
            }
        }
    }

    /// Pays up to `amount` of what a narrower window owes: returns how much.
    fn repay(&self, amount: u64) -> u64 {
        let mut paid = 0;
        let _ = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                paid = owed.min(amount);
                Some(owed - paid)
            });
        paid
    }

    /// The widest the window has been (`None`: no window).
    pub(crate) fn widest(&self) -> Option<u64> {
        self.window
            .as_ref()
            .map(|_| self.widest.load(Ordering::Acquire))
    }

    /// Credit free now (the window when nothing is in flight).
    pub(crate) fn available(&self) -> Option<u64> {
        self.window.as_ref().map(|w| w.available_permits() as u64)
    }
}

/// Credit taken for one event not yet sent.
#[derive(Debug)]
#[must_use = "reserved credit is spent on an event or given back"]
pub(crate) struct Reserved {
    credit: Credit,
    amount: u64,
    charge: Charge,
}

impl Reserved {
    /// The event costs `cost`: the rest of the reservation goes back.
    pub(crate) fn spend(self, cost: u64) {
        self.credit.release(self.amount.saturating_sub(cost));
        if let Some(r) = &self.credit.retention {
            r.refund(self.charge, cost);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_waits_for_acknowledged_credit() {
        let credit = Credit::new(1000, None);
        credit.reserve(600).await.spend(600);
        assert_eq!(credit.available(), Some(400));
        // More than is free waits...
        let waiting = tokio::spawn({
            let credit = credit.clone();
            async move { credit.reserve(700).await.spend(100) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // ...until an acknowledgement gives some back.
        credit.release(600);
        waiting.await.unwrap();
        // 100 spent, 600 unspent returned.
        assert_eq!(credit.available(), Some(900));
    }

    #[tokio::test]
    async fn a_window_widens_at_once_and_narrows_as_credit_comes_back() {
        let credit = Credit::new(1000, None);
        credit.resize(3000);
        assert_eq!(credit.available(), Some(3000));
        credit.reserve(2500).await.spend(2500);
        // Narrowed to 1000 with 2500 out: the 500 free go at once, the
        // other 1500 from what the client acknowledges next.
        credit.resize(1000);
        assert_eq!(credit.available(), Some(0));
        credit.release(1200);
        assert_eq!(credit.available(), Some(0), "1200 of the 1500 owed");
        credit.release(1300);
        assert_eq!(credit.available(), Some(1000), "the narrower window, free");
        // Widened again: owing nothing, the difference is free at once.
        credit.resize(4000);
        assert_eq!(credit.available(), Some(4000));
        assert_eq!(credit.widest(), Some(4000));
        // Narrowed and widened again before anything came back: what was
        // owed is paid out of the widening first.
        credit.reserve(4000).await.spend(4000);
        credit.resize(1000);
        credit.resize(2000);
        credit.release(4000);
        assert_eq!(credit.available(), Some(2000));
    }

    #[tokio::test]
    async fn without_a_window_nothing_waits() {
        let credit = Credit::unlimited();
        credit.reserve(u64::MAX).await.spend(5);
        assert_eq!(credit.available(), None);
    }

    /// Lets every ready task run (the runtime is the current thread's).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_detached_session_reads_only_within_its_bound_and_goes_on_when_back() {
        let total = Budget::new(10_000);
        let retention = Retention::new(1000, Arc::clone(&total));
        // Two processes, windows far larger than the session's bound.
        let a = Credit::new(1 << 20, Some(Arc::clone(&retention)));
        let b = Credit::new(1 << 20, Some(Arc::clone(&retention)));
        // While the link is up, the bound does not apply.
        a.reserve(5000).await.spend(5000);
        assert_eq!(retention.charged(), 0);
        // It breaks with 300 already held.
        retention.detach(300);
        assert_eq!(total.used(), 300);
        a.reserve(400).await.spend(400);
        // Unspent charge goes back.
        b.reserve(300).await.spend(100);
        assert_eq!(retention.charged(), 800);
        assert_eq!(total.used(), 800);
        // More than the session's bound waits, for either process.
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(300).await.spend(300) }
        });
        settle().await;
        assert!(!waiting.is_finished(), "a process over the bound waits");
        assert_eq!(retention.charged(), 800, "nothing more was taken");
        // The session is back: everything charged goes back, and it goes
        // on (uncharged).
        retention.attach();
        waiting.await.unwrap();
        assert_eq!(retention.charged(), 0);
        assert_eq!(total.used(), 0);
    }

    #[tokio::test]
    async fn the_exec_server_wide_bound_holds_across_sessions() {
        let total = Budget::new(1000);
        let one = Retention::new(1000, Arc::clone(&total));
        let two = Retention::new(1000, Arc::clone(&total));
        let a = Credit::new(1 << 20, Some(Arc::clone(&one)));
        let b = Credit::new(1 << 20, Some(Arc::clone(&two)));
        one.detach(0);
        two.detach(0);
        a.reserve(700).await.spend(700);
        // Within its own session's bound, over the total: it waits.
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(500).await.spend(500) }
        });
        settle().await;
        assert!(!waiting.is_finished());
        assert_eq!(total.used(), 700);
        // The other session comes back (or ends): room again.
        one.attach();
        waiting.await.unwrap();
        assert_eq!(total.used(), 500);
        assert_eq!(two.charged(), 500);
        two.attach();
        assert_eq!(total.used(), 0);
    }

    #[tokio::test]
    async fn a_reservation_given_up_while_waiting_takes_nothing() {
        let total = Budget::new(1000);
        let retention = Retention::new(100, Arc::clone(&total));
        let credit = Credit::new(5000, Some(Arc::clone(&retention)));
        retention.detach(100);
        // Its window part was free, its charge was not: dropped while
        // waiting, it leaves the window whole.
        let given_up =
            tokio::time::timeout(std::time::Duration::from_millis(10), credit.reserve(200)).await;
        assert!(given_up.is_err());
        assert_eq!(credit.available(), Some(5000));
        assert_eq!(retention.charged(), 100);
        // A charge from before a resume is never given back into the next
        // outage.
        retention.attach();
        let before = credit.reserve(300).await;
        retention.detach(0);
        before.spend(0);
        assert_eq!(retention.charged(), 0);
        assert_eq!(total.used(), 0);
    }
}
