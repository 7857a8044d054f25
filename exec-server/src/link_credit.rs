//! The relay's credit for this exec-server's frames toward its clients.
//!
//! A relay that tells a credit window at registration
//! (`Registered.credit_window`) holds, of each session whose `Accept`
//! stream names itself (`rex-credit-stream`), at most the window the
//! stream asks for, in payload bytes: the stream sends a frame only when
//! everything it has sent, that frame included, is within what the relay
//! has granted (the floor, `CREDIT_FLOOR`, at the start, and the `Credit`
//! grants on the registration stream as the relay forwards, up to that
//! window as far as the relay's pool allows). What does not fit waits
//! here, in the session's bounded queue, and the session's own backlog
//! bound and the exec-server's budget for unacknowledged output take it
//! from there: a session whose client stopped reading holds at most its
//! window at the relay, not HTTP/2's window.
//!
//! When the registration ends, no grant can come: its streams stop
//! waiting for one (HTTP/2's window bounds them, as it does a stream
//! without credit).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use proto::pb::tunnel::{Credit, Frame};

/// The credit streams of one registration.
#[derive(Debug)]
pub(crate) struct Credits {
    /// The relay's least window.
    least: u32,
    /// The shortest round trip of the link seen, µs (health checks at
    /// registration, then each `Accept` answered); 0: none yet.
    rtt_us: AtomicU64,
    next: AtomicU64,
    streams: Mutex<HashMap<u64, Weak<StreamCredit>>>,
}

/// What one stream has been granted.
#[derive(Debug)]
pub(crate) struct StreamCredit {
    granted: AtomicU64,
    waker: AtomicWaker,
}

impl StreamCredit {
    fn raise(&self, granted: u64) {
        self.granted.fetch_max(granted, Ordering::AcqRel);
        self.waker.wake();
    }
}

impl Credits {
    /// The credit of a registration told `window` (the least), whose link
    /// took `rtt` for a round trip (`None`: not known yet, the least until
    /// a stream's answer tells); `None` when the relay grants none (0), or
    /// a window a frame of the largest payload would not fit.
    pub(crate) fn new(window: u32, rtt: Option<Duration>) -> Option<Arc<Self>> {
        (window >= proto::routing::MIN_CREDIT_WINDOW).then(|| {
            Arc::new(Self {
                least: window,
                rtt_us: AtomicU64::new(rtt.map_or(0, micros)),
                next: AtomicU64::new(0),
                streams: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Another round trip of the link: the window follows the shortest
    /// seen (the others waited on something besides the path).
    pub(crate) fn sample(&self, rtt: Duration) {
        let rtt = micros(rtt).max(1);
        let _ = self
            .rtt_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                (seen == 0 || rtt < seen).then_some(rtt)
            });
    }

    /// The window a new stream asks for: one round trip of the link at
    /// the credit rate, within the relay's bounds.
    fn window(&self) -> u32 {
        let rtt = Duration::from_micros(self.rtt_us.load(Ordering::Relaxed));
        proto::routing::credit_window_for(self.least, rtt)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<StreamCredit>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream's name (for `rex-credit-stream`), the window it asks
    /// for (`rex-credit-window`) and its credit, the floor to start with
    /// (the relay grants the rest of the window once the stream moves, as
    /// far as its pool allows).
    pub(crate) fn open(&self) -> (u64, u32, Arc<StreamCredit>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let window = self.window();
        let credit = Arc::new(StreamCredit {
            granted: AtomicU64::new(u64::from(window.min(proto::routing::CREDIT_FLOOR))),
            waker: AtomicWaker::new(),
        });
        let mut streams = self.lock();
        // Streams that ended are forgotten as new ones come: the map holds
        // at most the live ones and those that ended since the last open.
        streams.retain(|_, s| s.strong_count() > 0);
        streams.insert(id, Arc::downgrade(&credit));
        (id, window, credit)
    }

    /// Applies the relay's grants (streams it names that have ended, or
    /// that it never had, are passed over).
    pub(crate) fn grant(&self, credit: &Credit) {
        let streams = self.lock();
        for g in &credit.grants {
            if let Some(s) = streams.get(&g.stream).and_then(Weak::upgrade) {
                s.raise(g.granted);
            }
        }
    }

    /// The registration ended: every stream stops waiting for grants.
    pub(crate) fn close(&self) {
        for s in self.lock().drain().filter_map(|(_, s)| s.upgrade()) {
            s.raise(u64::MAX);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Closes a registration's credit when dropped (however the registration
/// ends).
pub(crate) struct CloseOnDrop(pub(crate) Option<Arc<Credits>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.close();
        }
    }
}

/// `frames`, each let through once it fits within `credit`.
pub(crate) struct Gated<S> {
    frames: S,
    credit: Arc<StreamCredit>,
    /// Payload bytes let through.
    sent: u64,
    /// The next frame, waiting for its grant.
    waiting: Option<Frame>,
}

impl<S> Gated<S> {
    /// Gates `frames` by `credit`.
    pub(crate) fn new(frames: S, credit: Arc<StreamCredit>) -> Self {
        Self {
            frames,
            credit,
            sent: 0,
            waiting: None,
        }
    }
}

impl<S: Stream<Item = Frame> + Unpin> Stream for Gated<S> {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = &mut *self;
        let frame = match this.waiting.take() {
            Some(f) => f,
            None => match Pin::new(&mut this.frames).poll_next(cx) {
                Poll::Ready(Some(f)) => f,
                other => return other,
            },
        };
        let after = this.sent + frame.payload.len() as u64;
        let fits = || after <= this.credit.granted.load(Ordering::Acquire);
        // Within the grant (as nearly every frame is): no waker to keep.
        // Otherwise registered, then checked again, so that a grant in
        // between wakes.
        if fits() || {
            this.credit.waker.register(cx.waker());
            fits()
        } {
            this.sent = after;
            Poll::Ready(Some(frame))
        } else {
            this.waiting = Some(frame);
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use proto::pb::tunnel::Grant;

    fn data(len: usize) -> Frame {
        Frame {
            kind: proto::pb::tunnel::FrameKind::Data as i32,
            payload: vec![0u8; len].into(),
            ..Frame::default()
        }
    }

    fn grant(stream: u64, granted: u64) -> Credit {
        Credit {
            grants: vec![Grant { stream, granted }],
        }
    }

    #[test]
    fn a_window_too_small_for_a_frame_is_no_credit() {
        assert!(Credits::new(0, None).is_none());
        assert!(Credits::new(proto::routing::MIN_CREDIT_WINDOW - 1, None).is_none());
        assert!(Credits::new(proto::routing::MIN_CREDIT_WINDOW, None).is_some());
    }

    #[tokio::test]
    async fn frames_go_within_the_grant_and_wait_for_the_next() {
        let credits = Credits::new(100_000, None).unwrap();
        let (id, window, credit) = credits.open();
        // It asks for its window and starts with the floor.
        assert_eq!(window, 100_000);
        assert_eq!(credit.granted.load(Ordering::Relaxed), 65_536);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut gated = Gated::new(tokio_stream::wrappers::ReceiverStream::new(rx), credit);
        for _ in 0..3 {
            tx.send(data(30_000)).await.unwrap();
        }
        // Two fit in the floor; the third waits.
        assert_eq!(gated.next().await.unwrap().payload.len(), 30_000);
        assert_eq!(gated.next().await.unwrap().payload.len(), 30_000);
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), gated.next());
        assert!(third.await.is_err(), "past the floor");
        // A grant for another stream changes nothing; one short of the
        // frame neither.
        credits.grant(&grant(id + 1, 1 << 30));
        credits.grant(&grant(id, 89_999));
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), gated.next());
        assert!(third.await.is_err(), "one byte short");
        let waiting = tokio::spawn(async move { gated.next().await.map(|f| f.payload.len()) });
        tokio::task::yield_now().await;
        credits.grant(&grant(id, 90_000));
        assert_eq!(waiting.await.unwrap(), Some(30_000));
    }

    #[tokio::test]
    async fn a_closed_registration_lets_its_streams_go() {
        let credits = Credits::new(65_536, None).unwrap();
        let (_, _, credit) = credits.open();
        let mut gated = Gated::new(
            futures::stream::iter([data(60_000), data(60_000), data(60_000)]),
            credit,
        );
        assert!(gated.next().await.is_some());
        let waiting = tokio::spawn(async move {
            let mut n = 0;
            while gated.next().await.is_some() {
                n += 1;
            }
            n
        });
        tokio::task::yield_now().await;
        drop(CloseOnDrop(Some(Arc::clone(&credits))));
        let done = tokio::time::timeout(std::time::Duration::from_secs(30), waiting);
        assert_eq!(
            done.await.expect("still waiting after the close").unwrap(),
            2
        );
    }

    #[test]
    fn a_stream_asks_for_a_round_trip_of_the_shortest_seen() {
        // Not known yet: the least.
        let credits = Credits::new(65_536, None).unwrap();
        assert_eq!(credits.open().1, 65_536);
        // A first sample of 50 ms: the widest window.
        credits.sample(Duration::from_millis(50));
        assert_eq!(credits.open().1, proto::routing::MAX_CREDIT_WINDOW);
        // An `Accept` answered in 1 ms: the link is no longer than that.
        credits.sample(Duration::from_millis(1));
        credits.sample(Duration::from_millis(9));
        assert_eq!(credits.open().1, 419_430);
        // Next to the relay: the least.
        credits.sample(Duration::from_micros(100));
        let (_, window, _) = credits.open();
        assert_eq!(window, 65_536);
    }

    #[test]
    fn ended_streams_are_forgotten() {
        let credits = Credits::new(65_536, None).unwrap();
        for _ in 0..100 {
            let (_, _, c) = credits.open();
            drop(c);
        }
        let (_, _, _live) = credits.open();
        assert_eq!(credits.lock().len(), 1);
    }
}
