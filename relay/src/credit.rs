//! The relay's own flow control of what an exec-server sends toward its
//! clients: a credit per session, told apart from the data.
//!
//! HTTP/2 bounds a stream by a window set for its whole connection, so
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
//! unacknowledged output. (Once the registry takes such a stream, the
//! relay widens its connection's HTTP/2 stream window to match the
//! window, `proto::link_server::StreamWindow`: across a long path the
//! credit, not HTTP/2, is then what limits the session.)
//!
//! Of each window, only the floor ([`CREDIT_FLOOR`]: room for one frame of
//! the largest payload) is the session's own. The rest is drawn from one
//! relay-wide pool while the session holds it, and given back as its
//! frames leave: a grant is cut to what the pool has left. So a session
//! moving fast gets its whole window while few do, and however many
//! sessions stall, together they hold at most the floor each and the pool.
//!
//! A grant travels on the exec-server's registration stream (`Credit`),
//! never behind the session's own frames the other way, which the
//! exec-server stops reading once that session's backlog and the room
//! above it for replies are full: it always reads its registration
//! stream. Grants are cumulative, so the
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
use proto::routing::{CREDIT_FLOOR, MAX_CREDIT_WINDOW};
use tokio::sync::Notify;

/// Most grants one `Credit` message carries.
const GRANTS_PER_MESSAGE: usize = 256;

/// The relay's credit, relay-wide: its pool and what it has done.
#[derive(Debug)]
pub struct CreditStats {
    sessions: AtomicU64,
    peak_held: AtomicU64,
    overruns: AtomicU64,
    widest: AtomicU64,
    pool: u64,
    pooled: AtomicU64,
    peak_pooled: AtomicU64,
    cut: AtomicU64,
}

impl CreditStats {
    /// Nothing done yet, with a pool of `pool` bytes to share beyond each
    /// session's floor.
    pub(crate) fn new(pool: u64) -> Arc<Self> {
        Arc::new(Self {
            sessions: AtomicU64::new(0),
            peak_held: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            widest: AtomicU64::new(0),
            pool,
            pooled: AtomicU64::new(0),
            peak_pooled: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        })
    }

    /// `Accept` streams given credit: sessions, and the spares kept for
    /// the next ones.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// The most payload one session under credit had here at once
    /// (received from its exec-server and not yet sent toward its
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

    /// The pool's size: the credit all sessions together may hold beyond
    /// their floors.
    pub fn pool(&self) -> u64 {
        self.pool
    }

    /// Credit drawn from the pool now.
    pub fn pooled(&self) -> u64 {
        self.pooled.load(Ordering::Relaxed)
    }

    /// The most credit drawn from the pool at once.
    pub fn peak_pooled(&self) -> u64 {
        self.peak_pooled.load(Ordering::Relaxed)
    }

    /// Grants cut short of their session's window because the pool had
    /// too little left.
    pub fn cut_grants(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Draws up to `want` bytes from the pool: what it had left of them.
    fn draw(&self, want: u64) -> u64 {
        let mut got = 0;
        let drawn = self
            .pooled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                got = want.min(self.pool.saturating_sub(used));
                (got > 0).then_some(used + got)
            });
        if let Ok(used) = drawn {
            self.peak_pooled.fetch_max(used + got, Ordering::Relaxed);
        }
        got
    }

    /// Gives `bytes` drawn before back to the pool.
    fn give_back(&self, bytes: u64) {
        if bytes > 0 {
            self.pooled.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

/// The grants of one registration waiting to be sent, each stream's
/// latest.
#[derive(Debug)]
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
            pending: Mutex::default(),
            posted: Notify::new(),
            closed: AtomicBool::new(false),
            stats: Arc::clone(stats),
            window,
        })
    }

    /// Its registration ended: its streams are no longer counted.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // A writer waiting for grants finds it closed.
        self.posted.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
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
    /// The window it asked for, within its bounds.
    window: u64,
    /// Its own part of the window: the rest is drawn from the pool.
    floor: u64,
    /// Payload bytes received from the exec-server.
    received: AtomicU64,
    /// Payload bytes sent toward the client: written to its connection,
    /// out of the relay's queue and HTTP/2's buffers both.
    forwarded: AtomicU64,
    /// The latest grant posted (the window at the start).
    granted: AtomicU64,
    /// Credit drawn from the pool now: what is granted and not yet
    /// forwarded beyond the floor. Held while a grant is worked out.
    pooled: Mutex<u64>,
    outbox: Arc<Outbox>,
}

impl SessionCredit {
    /// The credit of stream `stream` of the registration whose grants go
    /// through `outbox`, wanting the window the stream `asked` for (within
    /// the registration's least and [`MAX_CREDIT_WINDOW`]); `None` when
    /// its registration was told none. It starts with its floor: the rest
    /// of its window is drawn from the pool once it moves (a spare stream,
    /// or a session that prints little, holds none of it).
    pub(crate) fn new(stream: u64, asked: u32, outbox: Arc<Outbox>) -> Option<Arc<Self>> {
        if outbox.window == 0 {
            return None;
        }
        let window = u64::from(asked.clamp(outbox.window, MAX_CREDIT_WINDOW.max(outbox.window)));
        let floor = window.min(u64::from(CREDIT_FLOOR));
        let stats = &outbox.stats;
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        stats.widest.fetch_max(floor, Ordering::Relaxed);
        Some(Arc::new(Self {
            stream,
            window,
            floor,
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            granted: AtomicU64::new(floor),
            pooled: Mutex::new(0),
            outbox,
        }))
    }

    /// The session's window: the most payload it may have here.
    pub(crate) fn window(&self) -> u64 {
        self.window
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

    /// Counts `bytes` of payload forwarded toward the client: what they
    /// held of the pool goes back to it. Once the session moves (it has
    /// sent half its floor), it is granted again up to its window, as far
    /// as the pool allows, whenever a quarter of what it may hold has gone;
    /// and at once whenever everything received has gone while what is
    /// left of the grant might not fit the largest frame (the exec-server
    /// may then be waiting for room for its next frame: without this grant
    /// nothing else would come).
    pub(crate) fn forwarded(&self, bytes: u64) {
        let stats = &self.outbox.stats;
        let mut pooled = self.pooled.lock().unwrap_or_else(|e| e.into_inner());
        let forwarded = self.forwarded.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if self.outbox.is_closed() {
            // No grant can reach it any more: it needs none of the pool.
            stats.give_back(std::mem::take(&mut *pooled));
            return;
        }
        let granted = self.granted.load(Ordering::Acquire);
        // What the grant still allows beyond the floor is all it needs of
        // the pool now.
        let still = granted.saturating_sub(forwarded).saturating_sub(self.floor);
        if *pooled > still {
            stats.give_back(*pooled - still);
            *pooled = still;
        }
        let received = self.received.load(Ordering::Acquire);
        let may_wait =
            forwarded >= received && granted.saturating_sub(received) < MAX_FRAME_PAYLOAD as u64;
        let moving = received >= self.floor / 2;
        if !moving && !may_wait {
            return;
        }
        let drawn = if moving {
            stats.draw(self.window - self.floor - *pooled)
        } else {
            0
        };
        let holds = self.floor + *pooled + drawn;
        let target = forwarded + holds;
        let step = if may_wait { 1 } else { (holds / 4).max(1) };
        if target >= granted + step {
            *pooled += drawn;
            self.granted.store(target, Ordering::Release);
            stats.widest.fetch_max(holds, Ordering::Relaxed);
            if moving && holds < self.window {
                stats.cut.fetch_add(1, Ordering::Relaxed);
            }
            drop(pooled);
            self.outbox.post(self.stream, target);
        } else {
            stats.give_back(drawn);
        }
    }
}

impl Drop for SessionCredit {
    fn drop(&mut self) {
        let pooled = self.pooled.get_mut().unwrap_or_else(|e| e.into_inner());
        self.outbox.stats.give_back(*pooled);
    }
}

/// A frame's payload on its way to the client: forwarded (and granted
/// again) once HTTP/2 has written it to the client's connection, or
/// dropped with its session.
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

    /// Stats with a pool no test here exhausts.
    fn roomy() -> Arc<CreditStats> {
        CreditStats::new(1 << 30)
    }

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
        let outbox = Outbox::new(&roomy(), 64 * 1024);
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
        let outbox = Outbox::new(&roomy(), 64 * 1024);
        let credit = SessionCredit::new(1, 0, Arc::clone(&outbox)).unwrap();
        assert!(credit.received(20_000));
        drop(Forwarding::new(&credit, 20_000));
        assert_eq!(grants(&outbox), vec![(1, 20_000 + 64 * 1024)]);
        assert!(credit.received(10_000));
        drop(Forwarding::new(&credit, 10_000));
        assert_eq!(grants(&outbox), vec![(1, 30_000 + 64 * 1024)]);
        assert!(credit.received(60_000));
        // With room for any frame still granted, nothing is sent early.
        let outbox = Outbox::new(&roomy(), 1 << 20);
        let credit = SessionCredit::new(2, 1 << 20, Arc::clone(&outbox)).unwrap();
        assert!(credit.received(40_000));
        drop(Forwarding::new(&credit, 40_000));
        assert_eq!(grants(&outbox), vec![(2, 40_000 + (1 << 20))]);
        assert!(credit.received(20_000));
        drop(Forwarding::new(&credit, 20_000));
        assert!(grants(&outbox).is_empty());
    }

    #[test]
    fn the_outbox_keeps_each_streams_latest_grant_only() {
        let outbox = Outbox::new(&roomy(), 4096);
        let a = SessionCredit::new(1, 0, Arc::clone(&outbox)).unwrap();
        let b = SessionCredit::new(2, 0, Arc::clone(&outbox)).unwrap();
        for _ in 0..100 {
            assert!(a.received(2048));
            a.forwarded(2048);
        }
        assert!(b.received(4096));
        b.forwarded(4096);
        assert_eq!(outbox.pending.lock().unwrap().len(), 2);
        assert_eq!(grants(&outbox), vec![(1, 4096 + 204_800), (2, 8192)]);
        assert!(outbox.take().is_none());
    }

    #[test]
    fn a_registration_told_no_window_gives_no_credit() {
        let outbox = Outbox::new(&roomy(), 0);
        assert!(SessionCredit::new(1, 1 << 20, outbox).is_none());
    }

    #[test]
    fn a_stream_gets_the_window_it_asks_for_within_its_bounds() {
        let outbox = Outbox::new(&roomy(), 65_536);
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
        let stats = roomy();
        let outbox = Outbox::new(&stats, 4 * CREDIT_FLOOR);
        let credit = SessionCredit::new(3, 0, Arc::clone(&outbox)).unwrap();
        assert!(credit.received(FLOOR));
        credit.forwarded(FLOOR / 2);
        assert_eq!(stats.pooled(), 3 * FLOOR);
        outbox.close();
        assert!(outbox.take().is_none(), "what waited is dropped");
        credit.forwarded(4096);
        assert!(outbox.take().is_none());
        assert_eq!(stats.pooled(), 0, "its share went back to the pool");
        assert!(
            credit.received(1 << 20),
            "no grant can come: none is needed"
        );
    }

    #[test]
    fn a_message_carries_a_bounded_number_of_grants() {
        let outbox = Outbox::new(&roomy(), 1024);
        for stream in 0..(GRANTS_PER_MESSAGE as u64 + 10) {
            let credit = SessionCredit::new(stream, 0, Arc::clone(&outbox)).unwrap();
            credit.forwarded(1024);
        }
        let first = outbox.take().unwrap();
        assert_eq!(first.grants.len(), GRANTS_PER_MESSAGE);
        assert_eq!(outbox.take().unwrap().grants.len(), 10);
        assert!(outbox.take().is_none());
    }

    const FLOOR: u64 = CREDIT_FLOOR as u64;

    #[test]
    fn a_window_beyond_the_floor_is_drawn_from_the_pool_once_it_moves() {
        const HALF: u64 = FLOOR / 2;
        let stats = CreditStats::new(3 * FLOOR);
        let outbox = Outbox::new(&stats, 4 * CREDIT_FLOOR);
        let a = SessionCredit::new(1, 0, Arc::clone(&outbox)).unwrap();
        assert!(a.received(FLOOR), "a floor to start with");
        assert!(!a.received(1), "and no more");
        let a = SessionCredit::new(1, 0, Arc::clone(&outbox)).unwrap();
        assert_eq!(stats.pooled(), 0, "nothing drawn before it moves");
        // It moves: its next grant is its whole window, the pool had room.
        assert!(a.received(FLOOR));
        drop(Forwarding::new(&a, HALF));
        assert_eq!(grants(&outbox), vec![(1, HALF + 4 * FLOOR)]);
        assert_eq!(stats.pooled(), 3 * FLOOR);
        // The pool is spent: the next session moves within its floor.
        let b = SessionCredit::new(2, 0, Arc::clone(&outbox)).unwrap();
        assert!(b.received(FLOOR));
        drop(Forwarding::new(&b, HALF));
        assert_eq!(grants(&outbox), vec![(2, HALF + FLOOR)]);
        assert_eq!(stats.cut_grants(), 1);
        // What `a` forwards goes back to the pool, and `a` draws it again
        // for its next grant: it keeps its window while it moves.
        assert!(a.received(2 * FLOOR));
        drop(Forwarding::new(&a, 2 * FLOOR));
        assert_eq!(grants(&outbox), vec![(1, HALF + 6 * FLOOR)]);
        assert_eq!(stats.pooled(), 3 * FLOOR);
        // Once `a` is gone, `b` grows into what it held.
        drop(a);
        assert_eq!(stats.pooled(), 0);
        drop(Forwarding::new(&b, HALF));
        assert_eq!(grants(&outbox), vec![(2, FLOOR + 4 * FLOOR)]);
        assert_eq!(stats.pooled(), 3 * FLOOR);
        assert_eq!(stats.peak_pooled(), stats.pool());
    }

    #[test]
    fn stalled_sessions_hold_at_most_their_floors_and_the_pool() {
        // Sessions that each sent a little, were granted again, then sent
        // their whole grant and never had another byte forwarded (their
        // clients stopped reading): whatever the order, together they may
        // have been sent no more than a floor each and the pool.
        const POOL: u64 = 5 * FLOOR;
        const SESSIONS: u64 = 20;
        let stats = CreditStats::new(POOL);
        let outbox = Outbox::new(&stats, 8 * CREDIT_FLOOR);
        let mut sessions = Vec::new();
        for stream in 0..SESSIONS {
            let credit = SessionCredit::new(stream, 0, Arc::clone(&outbox)).unwrap();
            if stream % 3 != 0 {
                assert!(credit.received(FLOOR));
                drop(Forwarding::new(&credit, FLOOR / 2));
            }
            sessions.push(credit);
        }
        let mut held = 0;
        for credit in &sessions {
            let granted = credit.granted.load(Ordering::Relaxed);
            let received = credit.received.load(Ordering::Relaxed);
            assert!(credit.received(granted - received));
            held += granted - credit.forwarded.load(Ordering::Relaxed);
        }
        assert!(held <= SESSIONS * FLOOR + POOL, "{held} held");
        assert_eq!(stats.pooled(), POOL, "the pool was used up");
        assert_eq!(held, SESSIONS * FLOOR + stats.pooled());
        drop(sessions);
        assert_eq!(stats.pooled(), 0, "every session gave its share back");
    }
}
