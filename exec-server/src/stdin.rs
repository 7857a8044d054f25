//! A call's stdin between its session and its process: what the client
//! sends waits here (never more than the session's stdin window: the
//! client keeps the rest), the process's writer takes it, and the session
//! learns how much was taken so it can let the client send more.
//!
//! Taking never waits on the session, and the session never waits on the
//! process: a process that does not read its stdin holds up nothing else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    closed: bool,
    /// The close came from the client (not from the session going away).
    by_client: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    ready: Notify,
    /// Bytes the writer has taken, in all.
    taken: AtomicU64,
    /// Wakes the session to report what was taken (shared by its calls).
    session: Arc<Notify>,
}

/// The session's end: it puts stdin in and reads back how much was taken.
#[derive(Debug)]
pub(crate) struct StdinSender {
    shared: Arc<Shared>,
}

/// The process's end: its writer takes the stdin out.
#[derive(Debug)]
pub struct StdinReceiver {
    shared: Arc<Shared>,
}

/// A new pipe; `session` is woken whenever the writer takes something.
pub(crate) fn pipe(session: Arc<Notify>) -> (StdinSender, StdinReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        ready: Notify::new(),
        taken: AtomicU64::new(0),
        session,
    });
    (
        StdinSender {
            shared: Arc::clone(&shared),
        },
        StdinReceiver { shared },
    )
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Plain data under a short lock: a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StdinSender {
    /// Queues stdin for the process.
    pub(crate) fn push(&self, data: Bytes) {
        self.shared.queue().chunks.push_back(data);
        self.shared.ready.notify_one();
    }

    /// Closes the stdin once everything queued has been written (the
    /// client closed it).
    pub(crate) fn close(&self) {
        {
            let mut q = self.shared.queue();
            q.closed = true;
            q.by_client = true;
        }
        self.shared.ready.notify_one();
    }

    /// Bytes the process has taken so far, in all.
    pub(crate) fn taken(&self) -> u64 {
        self.shared.taken.load(Ordering::Acquire)
    }
}

impl Drop for StdinSender {
    fn drop(&mut self) {
        // The session is gone: the process's stdin ends.
        self.shared.queue().closed = true;
        self.shared.ready.notify_one();
    }
}

impl StdinReceiver {
    /// Everything queued, waiting until there is some; `None` once the
    /// stdin is closed and drained.
    pub(crate) async fn next(&self) -> Option<Vec<Bytes>> {
        loop {
            let ready = self.shared.ready.notified();
            {
                let mut q = self.shared.queue();
                if !q.chunks.is_empty() {
                    return Some(q.chunks.drain(..).collect());
                }
                if q.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Whether the stdin ended because the client closed it (rather than
    /// because the session went away).
    pub(crate) fn closed_by_client(&self) -> bool {
        self.shared.queue().by_client
    }

    /// Reports `n` more bytes taken (written to the process, or dropped
    /// because it closed its stdin).
    pub(crate) fn taken(&self, n: usize) {
        self.shared.taken.fetch_add(n as u64, Ordering::Release);
        self.shared.session.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_arrive_in_order_and_taking_wakes_the_session() {
        let session = Arc::new(Notify::new());
        let (tx, rx) = pipe(Arc::clone(&session));
        tx.push(Bytes::from_static(b"ab"));
        tx.push(Bytes::from_static(b"c"));
        let got = rx.next().await.unwrap();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]
        );
        rx.taken(3);
        // The session was woken (a stored permit), and sees the count.
        session.notified().await;
        assert_eq!(tx.taken(), 3);
        tx.push(Bytes::from_static(b"d"));
        tx.close();
        assert_eq!(rx.next().await.unwrap(), vec![Bytes::from_static(b"d")]);
        assert_eq!(rx.next().await, None, "closed and drained");
        assert!(rx.closed_by_client());
    }

    #[tokio::test]
    async fn dropping_the_session_end_closes_the_stdin() {
        let (tx, rx) = pipe(Arc::new(Notify::new()));
        let writer = tokio::spawn(async move { (rx.next().await, rx.closed_by_client()) });
        drop(tx);
        assert_eq!(
            writer.await.unwrap(),
            (None, false),
            "ended, but not closed by the client"
        );
    }
}
