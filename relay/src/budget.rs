//! The relay's memory for frames in transit: each direction of a session
//! may queue at most its own share in bytes, and all sessions together at
//! most the relay-wide budget. A pump that cannot queue its next frame
//! waits before reading another: its sender is slowed by HTTP/2 flow
//! control, and the relay does not grow.
//!
//! So that one session (or many stalled ones) can never stop the others
//! for good, a direction with nothing queued may always queue one frame,
//! budget or not: the relay holds at most the budget plus one frame per
//! direction of each session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Bytes counted for a frame beyond its payload (headers, bookkeeping).
pub const FRAME_OVERHEAD: usize = 64;

/// The relay-wide budget of queued bytes.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    waits: AtomicU64,
    freed: Notify,
}

/// One direction of one session: its queued bytes and its bound.
#[derive(Debug)]
pub(crate) struct Queue {
    cap: usize,
    queued: AtomicUsize,
    freed: Notify,
}

impl Queue {
    /// An empty queue bounded at `cap` bytes.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            queued: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Bytes queued now.
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// Bytes of one queued frame, given back when it leaves (or is dropped).
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    queue: Arc<Queue>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.queue.queued.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.queue.freed.notify_waiters();
        self.budget.freed.notify_waiters();
    }
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waits: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    /// Bytes queued relay-wide now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The most bytes ever queued relay-wide at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// How many times a pump had to wait for room.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    /// Waits until `bytes` may be queued on `queue` (its own bound and the
    /// budget), then counts them until the returned charge is dropped.
    /// `None` if `cancel` fired first. One producer per queue.
    pub(crate) async fn charge(
        self: &Arc<Self>,
        queue: &Arc<Queue>,
        bytes: usize,
        cancel: &CancellationToken,
    ) -> Option<Charge> {
        let mut waited = false;
        loop {
            let budget_freed = self.freed.notified();
            let queue_freed = queue.freed.notified();
            tokio::pin!(budget_freed, queue_freed);
            budget_freed.as_mut().enable();
            queue_freed.as_mut().enable();
            let queued = queue.queued();
            let admitted = if queued == 0 {
                // Always one frame, so that no session is stopped for good.
                self.used.fetch_add(bytes, Ordering::AcqRel);
                true
            } else {
                queued + bytes <= queue.cap && self.try_take(bytes)
            };
            if admitted {
                queue.queued.fetch_add(bytes, Ordering::AcqRel);
                self.peak.fetch_max(self.used(), Ordering::AcqRel);
                return Some(Charge {
                    budget: Arc::clone(self),
                    queue: Arc::clone(queue),
                    bytes,
                });
            }
            if !waited {
                waited = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = budget_freed => {}
                () = queue_freed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_queue_is_bounded_by_its_share_and_the_budget() {
        let budget = Budget::new(250);
        let cancel = CancellationToken::new();
        let a = Queue::new(100);
        let b = Queue::new(1000);
        let a1 = budget.charge(&a, 60, &cancel).await.unwrap();
        // Over a's share: waits until a1 leaves.
        let wait = tokio::time::timeout(Duration::from_millis(50), budget.charge(&a, 60, &cancel));
        assert!(wait.await.is_err());
        let b1 = budget.charge(&b, 150, &cancel).await.unwrap();
        assert_eq!(budget.used(), 210);
        // b is within its share but the budget is spent.
        let pending = {
            let budget = Arc::clone(&budget);
            let b = Arc::clone(&b);
            let cancel = cancel.clone();
            tokio::spawn(async move { budget.charge(&b, 100, &cancel).await.map(|c| c.bytes) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pending.is_finished());
        drop(a1);
        // Freed bytes let it in.
        assert_eq!(pending.await.unwrap(), Some(100));
        drop(b1);
        assert_eq!(budget.used(), 0);
        assert!(budget.peak() <= 250);
        assert!(budget.waits() >= 2);
    }

    #[tokio::test]
    async fn an_empty_queue_always_takes_one_frame_and_cancel_ends_a_wait() {
        let budget = Budget::new(10);
        let cancel = CancellationToken::new();
        let q = Queue::new(10);
        let big = budget.charge(&q, 1000, &cancel).await.unwrap();
        assert_eq!(q.queued(), 1000);
        let other = Queue::new(10);
        let one = budget.charge(&other, 500, &cancel).await.unwrap();
        let waiting = budget.charge(&q, 1, &cancel);
        cancel.cancel();
        assert!(waiting.await.is_none());
        drop((big, one));
        assert_eq!(budget.used(), 0);
    }
}
