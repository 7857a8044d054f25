//! A call's output credit on the exec-server: the session's output window
//! (`proto::session::output`), as a semaphore the process reserves from
//! before it reads its output, and the session's acknowledgements give
//! back to. A caller that stops reading so stops its own process's reads,
//! and nothing else.

use std::sync::Arc;

use proto::limits::MAX_CHUNK;
use proto::session::output::EVENT_COST;
use tokio::sync::Semaphore;

/// What one read of a pipe may cost: its largest chunk and the event.
pub const CHUNK_CREDIT: u64 = MAX_CHUNK as u64 + EVENT_COST;

/// One call's output credit; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Credit {
    /// `None`: no window (every reservation is granted at once).
    window: Option<Arc<Semaphore>>,
}

impl Credit {
    /// Credit of `window` (0: no limit).
    pub fn new(window: u32) -> Self {
        Self {
            window: (window != 0).then(|| Arc::new(Semaphore::new(window as usize))),
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self { window: None }
    }

    /// Waits until `amount` is free and takes it.
    pub async fn reserve(&self, amount: u64) -> Reserved {
        if let Some(window) = &self.window {
            let n = u32::try_from(amount).unwrap_or(u32::MAX);
            // The semaphore is never closed: acquiring only waits.
            if let Ok(permit) = window.acquire_many(n).await {
                permit.forget();
            }
        }
        Reserved {
            credit: self.clone(),
            amount,
        }
    }

    /// Gives back `amount` (acknowledged by the client, or reserved and
    /// not spent).
    pub fn release(&self, amount: u64) {
        if let Some(window) = &self.window {
            window.add_permits(usize::try_from(amount).unwrap_or(usize::MAX));
        }
    }

    /// Credit free now (the window when nothing is in flight).
    pub fn available(&self) -> Option<u64> {
        self.window.as_ref().map(|w| w.available_permits() as u64)
    }
}

/// Credit taken for one event not yet sent.
#[derive(Debug)]
#[must_use = "reserved credit is spent on an event or given back"]
pub struct Reserved {
    credit: Credit,
    amount: u64,
}

impl Reserved {
    /// The event costs `cost`: the rest of the reservation goes back.
    pub fn spend(self, cost: u64) {
        self.credit.release(self.amount.saturating_sub(cost));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_waits_for_acknowledged_credit() {
        let credit = Credit::new(1000);
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
    async fn without_a_window_nothing_waits() {
        let credit = Credit::unlimited();
        credit.reserve(u64::MAX).await.spend(5);
        assert_eq!(credit.available(), None);
    }
}
