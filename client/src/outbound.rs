//! The link's sending half as the transport takes it: the frames the
//! session driver hands over, as a stream that says when the transport is
//! done with it: it read to the end (the driver ended our half) and handed
//! the last frame to its HTTP/2 stream, then let go of it. A process that
//! closes its session and exits waits for that (and then for the transport
//! to write it), never for the exec-server's answer: closing costs no round
//! trip.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use proto::pb::tunnel::Frame;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Whether the transport is done with the current link's sending half.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    done: AtomicBool,
    notify: Notify,
}

impl Drained {
    fn set(&self, done: bool) {
        self.done.store(done, Ordering::Release);
        if done {
            self.notify.notify_waiters();
        }
    }

    /// Waits until the transport is done with the current link's sending
    /// half (its last frame handed to the stream, or the stream gone).
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The frames of one link, for the transport.
pub(crate) struct Outbound {
    frames: ReceiverStream<Result<Frame, tonic::Status>>,
    drained: Arc<Drained>,
}

impl Outbound {
    /// The stream of what `rx` receives; `drained` is marked once the
    /// transport lets go of it (and unmarked now: this is a new link).
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<Frame, tonic::Status>>,
        drained: Arc<Drained>,
    ) -> Self {
        drained.set(false);
        Self {
            frames: ReceiverStream::new(rx),
            drained,
        }
    }
}

impl Stream for Outbound {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        loop {
            match Pin::new(&mut self.frames).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(frame)),
                // Errors are never sent on a client's link; skip one.
                Poll::Ready(Some(Err(_))) => continue,
                // The end is not yet the transport being done: the last
                // frame it took may still be on its way to the stream.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // The transport let go of it: it handed the last frame to the
        // stream (or the stream ended or was reset), and nothing more of
        // this link will be sent.
        self.drained.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn drained_once_the_transport_lets_go() {
        let drained = Arc::new(Drained::default());
        let (tx, rx) = mpsc::channel(4);
        let mut out = Outbound::new(rx, Arc::clone(&drained));
        assert!(tx.send(Ok(Frame::default())).await.is_ok());
        drop(tx);
        let waiter = tokio::spawn({
            let drained = Arc::clone(&drained);
            async move { drained.wait().await }
        });
        assert!(out.next().await.is_some());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a frame was taken, the end not yet");
        assert!(out.next().await.is_none());
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "read to the end, but the transport still holds the stream"
        );
        drop(out);
        let marked = tokio::time::timeout(std::time::Duration::from_secs(30), waiter).await;
        assert!(marked.is_ok_and(|r| r.is_ok()), "drained was never marked");
        // A new link starts undrained; dropping it marks it.
        let (_tx2, rx2) = mpsc::channel(1);
        let second = Outbound::new(rx2, Arc::clone(&drained));
        assert!(!drained.done.load(Ordering::Acquire));
        drop(second);
        drained.wait().await;
    }
}
