//! The relay's own flow control of what an exec-server sends toward its
//! clients: a credit per session, told apart from the data.
//!
//! HTTP/2 bounds a stream by a window fixed for its whole connection, so
//! what a session whose client stopped reading leaves at the relay is that
//! window, whatever the session's path needs. An exec-server that asks for
//! it (naming its `Accept` stream with `rex-credit-stream`) instead sends a
//! session's frames only within what the relay grants it: a window at the
//! start (the one the stream asks for, `rex-credit-window`: a round trip of
//! its link, within the least the registration was told,
//! `Registered.credit_window`, and [`MAX_CREDIT_WINDOW`]), and as much
//! again as the relay has forwarded toward the client since, a payload
//! byte for a payload byte. So a stalled session holds at most the window
//! here, and the rest waits at the exec-server, under its own budget for
//! unacknowledged output.
//!
//! A grant travels on the exec-server's registration stream (`Credit`),
//! never behind the session's own frames the other way, which the
//! exec-server stops reading while that session's backlog is full: it
//! always reads its registration stream. Grants are cumulative, so the
//! [`Outbox`] keeps only each stream's latest until the registration's
//! writer takes them: it holds at most one entry per live stream.
//!
//! A stream that sends past its grant breaks the protocol: its session
//! ends (the exec-server's other sessions are untouched). When the
//! registration ends (its link lost, replaced), no grant can reach its
//! streams any more: the relay stops counting them, and the exec-server
//! stops waiting for grants on them, leaving them to HTTP/2's window as a
//! stream without credit is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proto::limits::MAX_FRAME_PAYLOAD;
use proto::pb::tunnel::{Credit, Grant as PbGrant};
use proto::routing::MAX_CREDIT_WINDOW;
use tokio::sync::Notify;

/// Most grants one `Credit` message carries.
const GRANTS_PER_MESSAGE: usize = 256;

/// What the relay's credit has done, relay-wide.
#[derive(Debug, Default)]
pub struct CreditStats {
    sessions: AtomicU64,
    peak_held: AtomicU64,
    overruns: AtomicU64,
    widest: AtomicU64,
}

impl CreditStats {
    /// `Accept` streams given credit: sessions, and the spares kept for
    /// the next ones.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// The most payload one session under credit had here at once
    /// (received from its exec-server and not yet taken toward its
    /// client).
    pub fn peak_held(&self) -> u64 {
        self.peak_held.load(Ordering::Relaxed)
    }

    /// The widest window a session was given.
    pub fn widest_window(&self) -> u64 {
        self.widest.load(Ordering::Relaxed)
    }

    /// Sessions ended for sending past their grant.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }
}

/// The grants of one registration waiting to be sent, each stream's
/// latest.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: Mutex<HashMap<u64, u64>>,
    posted: Notify,
    /// Its registration ended: nothing it holds will be sent.
    closed: AtomicBool,
    stats: Arc<CreditStats>,
    /// The least window of its streams, as its registration was told.
    window: u32,
}

impl Outbox {
    /// An empty outbox for a registration told `window`, counting in
    /// `stats`.
    pub(crate) fn new(stats: &Arc<CreditStats>, window: u32) -> Arc<Self> {
        Arc::new(Self {
            stats: Arc::clone(stats),
            window,
            ..Self::default()
        })
    }

    /// Its registration ended: its streams are no longer counted.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn post(&self, stream: u64, granted: u64) {
        if self.is_closed() {
            return;
        }
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let entry = pending.entry(stream).or_insert(granted);
            *entry = (*entry).max(granted);
        }
        self.posted.notify_one();
    }

    /// Waits until a grant is posted (one posted before the wait counts).
    pub(crate) async fn posted(&self) {
        self.posted.notified().await;
    }

    /// The grants waiting, at most [`GRANTS_PER_MESSAGE`] of them, as one
    /// message; `None` when none wait. Call again until `None`.
    pub(crate) fn take(&self) -> Option<Credit> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            return None;
        }
        let streams: Vec<u64> = pending.keys().take(GRANTS_PER_MESSAGE).copied().collect();
        let grants = streams
            .into_iter()
            .filter_map(|stream| {
                pending
                    .remove(&stream)
                    .map(|granted| PbGrant { stream, granted })
            })
            .collect();
        Some(Credit { grants })
    }
}

/// One session's credit: what its exec-server may have sent toward the
/// client, and what it has.
#[derive(Debug)]
pub(crate) struct SessionCredit {
    stream: u64,
    window: u64,
    /// Payload bytes received from the exec-server.
    received: AtomicU64,
    /// Payload bytes taken from the queue toward the client.
    forwarded: AtomicU64,
    /// The latest grant posted (the window at the start).
    granted: AtomicU64,
    outbox: Arc<Outbox>,
}

impl SessionCredit {
    /// The credit of stream `stream` of the registration whose grants go
    /// through `outbox`, starting at the window the stream `asked` for
    /// (within the registration's least and [`MAX_CREDIT_WINDOW`]);
    /// `None` when its registration was told none.
    pub(crate) fn new(stream: u64, asked: u32, outbox: Arc<Outbox>) -> Option<Arc<Self>> {
        if outbox.window == 0 {
            return None;
        }
        let window = asked.clamp(outbox.window, MAX_CREDIT_WINDOW.max(outbox.window));
        outbox.stats.sessions.fetch_add(1, Ordering::Relaxed);
        outbox
            .stats
            .widest
            .fetch_max(u64::from(window), Ordering::Relaxed);
        Some(Arc::new(Self {
            stream,
            window: u64::from(window),
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            granted: AtomicU64::new(u64::from(window)),
            outbox,
        }))
    }

    /// Counts `bytes` of payload received; false if they go past the
    /// grant (the exec-server broke the protocol). Once the registration
    /// has ended, nothing is past it.
    pub(crate) fn received(&self, bytes: u64) -> bool {
        let total = self.received.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let held = total.saturating_sub(self.forwarded.load(Ordering::Acquire));
        let stats = &self.outbox.stats;
        stats.peak_held.fetch_max(held, Ordering::Relaxed);
        let within = total <= self.granted.load(Ordering::Acquire) || self.outbox.is_closed();
        if !within {
            stats.overruns.fetch_add(1, Ordering::Relaxed);
        }
        within
    }

    /// Counts `bytes` of payload forwarded toward the client, and grants
    /// as much more once a quarter of the window has gone, or whenever
    /// everything received has gone while what is left of the grant might
    /// not fit the largest frame (the exec-server may then be waiting for
    /// room for its next frame: without this grant nothing else would
    /// come).
    pub(crate) fn forwarded(&self, bytes: u64) {
        let forwarded = self.forwarded.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let target = forwarded + self.window;
        let received = self.received.load(Ordering::Acquire);
        let mut granted = self.granted.load(Ordering::Acquire);
        let may_wait =
            forwarded >= received && granted.saturating_sub(received) < MAX_FRAME_PAYLOAD as u64;
        let step = if may_wait {
            1
        } else {
            (self.window / 4).max(1)
        };
        while target >= granted + step {
            match self.granted.compare_exchange_weak(
                granted,
                target,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.outbox.post(self.stream, target);
                    return;
                }
                Err(now) => granted = now,
            }
        }
    }
}

/// A frame's payload on its way to the client: forwarded (and granted
/// again) when it is taken to be sent, or dropped with its session.
#[derive(Debug)]
pub(crate) struct Forwarding {
    credit: Arc<SessionCredit>,
    bytes: u64,
}

impl Forwarding {
    /// `bytes` of payload of a frame under `credit`.
    pub(crate) fn new(credit: &Arc<SessionCredit>, bytes: u64) -> Self {
        Self {
            credit: Arc::clone(credit),
            bytes,
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.credit.forwarded(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(outbox: &Outbox) -> Vec<(u64, u64)> {
        let mut all = Vec::new();
        while let Some(c) = outbox.take() {
            all.extend(c.grants.iter().map(|g| (g.stream, g.granted)));
        }
        all.sort_unstable();
        all
    }

    #[test]
    fn a_stream_is_granted_what_it_forwarded_a_quarter_window_at_a_time() {
        let outbox = Outbox::new(&Arc::default(), 64 * 1024);
        let credit = SessionCredit::new(7, 0, Arc::clone(&outbox)).unwrap();
        // The whole window at once, nothing beyond it.
        assert!(credit.received(64 * 1024));
        assert!(!credit.received(1), "one byte past the window");
        let credit = SessionCredit::new(7, 0, Arc::clone(&outbox)).unwrap();
        assert!(credit.received(40_000));
        // Less than a quarter forwarded, more still here: no grant yet.
        drop(Forwarding::new(&credit, 10_000));
        assert!(grants(&outbox).is_empty());
        drop(Forwarding::new(&credit, 10_000));
        assert_eq!(grants(&outbox), vec![(7, 20_000 + 64 * 1024)]);
        // Granted room is room: the next 44 KiB fit, and no more.
        assert!(credit.received(20_000 + 64 * 1024 - 40_000));
        assert!(!credit.received(1));
    }

    #[test]
    fn a_stream_whose_frames_have_all_gone_is_granted_at_once() {
        // The exec-server's next frame (60 KB) needs more than the last
        // grant leaves, and everything it sent has been forwarded: a grant
        // must come even though less than a quarter window went since the
        // last one.
        let outbox = Outbox::new(&Arc::default(), 64 * 1024);
        let credit = SessionCredit::new(1, 0, Arc::clone(&outbox)).unwrap();
        assert!(credit.received(20_000));
        drop(Forwarding::new(&credit, 20_000));
        assert_eq!(grants(&outbox), vec![(1, 20_000 + 64 * 1024)]);
        assert!(credit.received(10_000));
        drop(Forwarding::new(&credit, 10_000));
        assert_eq!(grants(&outbox), vec![(1, 30_000 + 64 * 1024)]);
        assert!(credit.received(60_000));
        // With room for any frame still granted, nothing is sent early.
        let outbox = Outbox::new(&Arc::default(), 1 << 20);
        let credit = SessionCredit::new(2, 1 << 20, Arc::clone(&outbox)).unwrap();
        assert!(credit.received(20_000));
        drop(Forwarding::new(&credit, 20_000));
        assert!(grants(&outbox).is_empty());
    }

    #[test]
    fn the_outbox_keeps_each_streams_latest_grant_only() {
        let outbox = Outbox::new(&Arc::default(), 4096);
        let a = SessionCredit::new(1, 0, Arc::clone(&outbox)).unwrap();
        let b = SessionCredit::new(2, 0, Arc::clone(&outbox)).unwrap();
        for _ in 0..100 {
            a.forwarded(2048);
        }
        b.forwarded(4096);
        assert_eq!(outbox.pending.lock().unwrap().len(), 2);
        assert_eq!(grants(&outbox), vec![(1, 4096 + 204_800), (2, 8192)]);
        assert!(outbox.take().is_none());
    }

    #[test]
    fn a_registration_told_no_window_gives_no_credit() {
        let outbox = Outbox::new(&Arc::default(), 0);
        assert!(SessionCredit::new(1, 1 << 20, outbox).is_none());
    }

    #[test]
    fn a_stream_gets_the_window_it_asks_for_within_its_bounds() {
        let outbox = Outbox::new(&Arc::default(), 65_536);
        let window = |asked| {
            SessionCredit::new(1, asked, Arc::clone(&outbox))
                .unwrap()
                .window
        };
        assert_eq!(window(0), 65_536);
        assert_eq!(window(300_000), 300_000);
        assert_eq!(window(u32::MAX), u64::from(MAX_CREDIT_WINDOW));
    }

    #[test]
    fn a_closed_registration_neither_grants_nor_counts() {
        let outbox = Outbox::new(&Arc::default(), 1024);
        let credit = SessionCredit::new(3, 0, Arc::clone(&outbox)).unwrap();
        credit.forwarded(512);
        outbox.close();
        assert!(outbox.take().is_none(), "what waited is dropped");
        credit.forwarded(4096);
        assert!(outbox.take().is_none());
        assert!(
            credit.received(1 << 20),
            "no grant can come: none is needed"
        );
    }

    #[test]
    fn a_message_carries_a_bounded_number_of_grants() {
        let outbox = Outbox::new(&Arc::default(), 1024);
        for stream in 0..(GRANTS_PER_MESSAGE as u64 + 10) {
            let credit = SessionCredit::new(stream, 0, Arc::clone(&outbox)).unwrap();
            credit.forwarded(1024);
        }
        let first = outbox.take().unwrap();
        assert_eq!(first.grants.len(), GRANTS_PER_MESSAGE);
        assert_eq!(outbox.take().unwrap().grants.len(), 10);
        assert!(outbox.take().is_none());
    }
}
