//! A call's stdin queue in the agent, bounded in bytes by the window the
//! CLI sends within: each message costs [`stdin_cost`] of
//! [`STDIN_WINDOW`], given back once the call took it (when the CLI is
//! told it may send that much more).

use std::sync::Arc;

use bytes::Bytes;
use rex_client::agent::{STDIN_MESSAGE_COST, STDIN_WINDOW, stdin_cost};
use tokio::sync::{Semaphore, mpsc};

/// A call's stdin queue: its two ends.
pub(crate) struct StdinQueue {
    /// Where the CLI's stdin goes in.
    pub(crate) tx: StdinSender,
    /// Where the call takes it from.
    pub(crate) rx: StdinReceiver,
}

/// The queue's sending end (the reader of the CLI's requests).
pub(crate) struct StdinSender {
    queue: mpsc::Sender<Bytes>,
    room: Arc<Semaphore>,
}

/// The queue's receiving end (the writer into the call).
pub(crate) struct StdinReceiver {
    queue: mpsc::Receiver<Bytes>,
    room: Arc<Semaphore>,
}

impl StdinQueue {
    pub(crate) fn new() -> Self {
        // Every message costs at least STDIN_MESSAGE_COST: the window holds
        // at most this many.
        let most = (STDIN_WINDOW / STDIN_MESSAGE_COST) as usize;
        let (tx, rx) = mpsc::channel(most);
        let room = Arc::new(Semaphore::new(STDIN_WINDOW as usize));
        Self {
            tx: StdinSender {
                queue: tx,
                room: Arc::clone(&room),
            },
            rx: StdinReceiver { queue: rx, room },
        }
    }
}

impl StdinSender {
    /// Queues `data` if the window has room for it; false if not (the CLI
    /// sent beyond its window).
    pub(crate) fn push(&self, data: Bytes) -> bool {
        let Ok(permit) = self.room.try_acquire_many(stdin_cost(data.len())) else {
            return false;
        };
        if self.queue.try_send(data).is_err() {
            return false;
        }
        permit.forget();
        true
    }
}

impl StdinReceiver {
    /// The next message; `None` once the sender is gone and the queue is
    /// empty.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        self.queue.recv().await
    }

    /// A message costing `cost` was taken by the call: its room is given
    /// back.
    pub(crate) fn taken(&self, cost: u32) {
        self.room.add_permits(cost as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stdin_queue_is_bounded_in_bytes() {
        let queue = StdinQueue::new();
        let chunk = Bytes::from(vec![0u8; 32 * 1024]);
        let fits = (STDIN_WINDOW / stdin_cost(chunk.len())) as usize;
        for _ in 0..fits {
            assert!(queue.tx.push(chunk.clone()));
        }
        assert!(!queue.tx.push(chunk.clone()), "beyond the window");
        // Tiny messages count their cost too: the queue's count is bounded
        // by the same window.
        let small = StdinQueue::new();
        let most = (STDIN_WINDOW / STDIN_MESSAGE_COST) as usize;
        for _ in 0..most {
            assert!(small.tx.push(Bytes::new()));
        }
        assert!(!small.tx.push(Bytes::new()));
    }
}
