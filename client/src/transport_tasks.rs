//! The transport's own tasks: the HTTP/2 connection, each stream's sending
//! half and the channel's request buffer, which hyper and tonic spawn. The
//! client spawns them through this executor, so they are tracked like its
//! own tasks, and so a process about to exit can know two things the
//! transport does not otherwise tell:
//! - when it has **settled**: no task of it has been woken and not yet run
//!   since. A frame handed to an HTTP/2 stream wakes the connection's
//!   task, which writes every frame it may before it waits again, so once
//!   the transport has settled after the close was handed over, the close
//!   has been written (unless the path holds it back: the peer's
//!   flow-control window spent, or the socket's buffer full);
//! - when it has **ended**: every connection closed once nothing holds it
//!   (its last frames and its `GOAWAY` written and flushed).
//!
//! They run outside any span, as tokio's own spawn would run them: a
//! connection outlives the call whose span was current when it was made,
//! and under that span hyper's and h2's own `tracing` spans would land in
//! the call's trace (and, forwarded, in the operator's collector).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Tracks every task the client's transport spawns. Clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransportTasks {
    tracker: TaskTracker,
    activity: Arc<Activity>,
}

/// How many tasks have been woken and not run since.
#[derive(Debug, Default)]
struct Activity {
    woken: AtomicUsize,
    settled: Notify,
}

impl Activity {
    fn ran(&self) {
        if self.woken.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }
}

impl TransportTasks {
    /// Waits until no transport task has been woken without having run
    /// since (each woken one has run and is waiting again, or has ended).
    pub(crate) async fn settled(&self) {
        loop {
            let notified = self.activity.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.activity.woken.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits until every transport task has ended: each connection closed
    /// (its frames written) once nothing holds it. The caller lets go of
    /// its connections first.
    pub(crate) async fn ended(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        // Later connections (a client used again) are tracked afresh.
        self.tracker.reopen();
    }

    /// Transport tasks still running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tracker.len()
    }
}

impl<F> hyper::rt::Executor<F> for TransportTasks
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        // A new task is due to run: it counts as woken until it has.
        self.activity.woken.fetch_add(1, Ordering::AcqRel);
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            activity: Arc::clone(&self.activity),
            waker: AtomicWaker::new(),
        });
        let watched = Watched {
            future: Box::pin(future),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        };
        self.tracker
            .spawn(watched.instrument(tracing::Span::none()));
    }
}

/// One task's wake-ups: set when it is woken, cleared when it runs.
#[derive(Debug)]
struct Flag {
    woken: AtomicBool,
    activity: Arc<Activity>,
    /// The runtime's waker for the task, as of its latest run.
    waker: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.activity.woken.fetch_add(1, Ordering::AcqRel);
        }
        // Every run registers the runtime's waker again, so one taken by
        // an earlier wake-up is back before the next can be missed.
        self.waker.wake();
    }
}

/// A transport task, polled with a waker that notes its wake-ups.
struct Watched {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl Future for Watched {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.flag.waker.register(cx.waker());
        // Cleared before the run: a wake-up during it counts again.
        let was_woken = self.flag.woken.swap(false, Ordering::AcqRel);
        let this = &mut *self;
        let polled = this
            .future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker));
        if was_woken {
            this.flag.activity.ran();
        }
        polled
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Ended (or dropped unrun): it will not run again.
        if self.flag.woken.swap(false, Ordering::AcqRel) {
            self.flag.activity.ran();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hyper::rt::Executor as _;
    use std::time::Duration;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn settled_waits_for_a_woken_task_to_run_and_ended_for_it_to_end() {
        let tasks = TransportTasks::default();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (ran_tx, mut ran_rx) = tokio::sync::mpsc::channel::<()>(4);
        tasks.execute(async move {
            let _ = ran_tx.send(()).await;
            let _ = go_rx.await;
            let _ = ran_tx.send(()).await;
        });
        assert_eq!(tasks.len(), 1);
        // It runs once, then waits: settled.
        ran_rx.recv().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), tasks.settled())
            .await
            .expect("a waiting task is settled");
        let ended = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.ended().await }
        });
        tokio::task::yield_now().await;
        assert!(!ended.is_finished(), "the task has not ended");
        // Woken: not settled until it has run.
        go_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), tasks.settled())
            .await
            .expect("the woken task ran");
        ran_rx.recv().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), ended)
            .await
            .expect("the task ended")
            .unwrap();
        assert_eq!(tasks.len(), 0);
        assert_eq!(tasks.activity.woken.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_woken_task_counts_until_it_has_run() {
        let tasks = TransportTasks::default();
        let notify = Arc::new(Notify::new());
        tasks.execute({
            let notify = Arc::clone(&notify);
            async move {
                loop {
                    notify.notified().await;
                }
            }
        });
        // Spawned, not yet run (this thread has not yielded): woken.
        assert_eq!(tasks.activity.woken.load(Ordering::Acquire), 1);
        tokio::task::yield_now().await;
        assert_eq!(tasks.activity.woken.load(Ordering::Acquire), 0);
        notify.notify_one();
        assert_eq!(tasks.activity.woken.load(Ordering::Acquire), 1);
        tasks.settled().await;
        assert_eq!(tasks.activity.woken.load(Ordering::Acquire), 0);
    }
}
