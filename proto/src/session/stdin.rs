//! Stdin flow control, per call: the client sends at most a window of
//! bytes beyond what the exec-server has acknowledged as taken by the
//! process (`StdinAck`), so stdin never has to wait inside the exec-server
//! and a process that does not read its stdin holds up nothing else on the
//! session (a signal, a cancel, another call).
//!
//! A chunk may start while any credit is left, so a call's stdin in flight
//! is at most the window plus one chunk ([`MAX_CHUNK`]).
//!
//! The window follows the path ([`window`](super::window)): the exec-server
//! grows it while the process keeps up and a round trip carries most of
//! it, and tells the client with its acknowledgements. What the client may
//! send is an offset that never moves back: the largest acknowledged
//! `consumed + window` so far.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::window::{Adaptive, Budget, Grant};
use super::{Mark, Violation};
use crate::limits::MAX_CHUNK;

/// A call's stdin as the client sends it.
#[derive(Debug)]
pub(super) struct Outgoing<T> {
    /// The exec-server's window; 0: none (an exec-server that does not
    /// acknowledge).
    window: u64,
    /// The offset up to which bytes may be sent (with `window` 0: any).
    limit: u64,
    /// The widest window the exec-server gave.
    widest: u64,
    /// Since when data has waited for the window, if it does.
    blocked: Option<Instant>,
    /// Time data waited for the window, in all.
    waited: Duration,
    sent: u64,
    acked: u64,
    queue: VecDeque<Bytes>,
    queued: usize,
    /// A close asked for while data was still queued (with its mark).
    close: Option<Option<Mark<T>>>,
    /// Whether the close has been sent.
    close_sent: bool,
    /// What was sent and not acknowledged, from offset `acked` on: kept to
    /// be sent again over a resumed session.
    retained: VecDeque<Bytes>,
}

impl<T> Outgoing<T> {
    pub(super) fn new(window: u32) -> Self {
        Self {
            window: u64::from(window),
            limit: u64::from(window),
            widest: u64::from(window),
            blocked: None,
            waited: Duration::ZERO,
            sent: 0,
            acked: 0,
            queue: VecDeque::new(),
            queued: 0,
            close: None,
            close_sent: false,
            retained: VecDeque::new(),
        }
    }

    /// Over a resumed session: the exec-server received `received` bytes
    /// in all (and the close if `closed`); what came after is sent again,
    /// first, in order. Returns the bytes put back in the queue.
    pub(super) fn rewind(&mut self, received: u64, closed: bool) -> usize {
        let received = received.clamp(self.acked, self.sent);
        let mut offset = self.acked;
        let mut again = VecDeque::new();
        let mut kept = VecDeque::new();
        for chunk in std::mem::take(&mut self.retained) {
            let end = offset + chunk.len() as u64;
            if end <= received {
                kept.push_back(chunk);
            } else {
                let have = usize::try_from(received.saturating_sub(offset))
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                if have > 0 {
                    kept.push_back(chunk.slice(..have));
                }
                again.push_back(chunk.slice(have..));
            }
            offset = end;
        }
        self.retained = kept;
        // What the exec-server has stays retained until acknowledged; the
        // rest goes back to the front of the queue.
        let n: usize = again.iter().map(Bytes::len).sum();
        for chunk in again.into_iter().rev() {
            self.queue.push_front(chunk);
        }
        self.queued += n;
        self.sent = received;
        if self.close_sent && !closed {
            self.close_sent = false;
            self.close = Some(None);
        }
        n
    }

    /// Queues `data` in chunks of at most [`MAX_CHUNK`].
    pub(super) fn push(&mut self, mut data: Bytes) {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_CHUNK));
            self.queued += chunk.len();
            self.queue.push_back(chunk);
        }
    }

    /// Asks for the close once everything queued has gone.
    pub(super) fn close(&mut self, mark: Option<Mark<T>>) {
        self.close = Some(mark);
    }

    /// The exec-server's acknowledgement: the process has taken `consumed`
    /// bytes in all, and the window is now `window` (0: unchanged). More
    /// than was sent is a violation.
    pub(super) fn ack(
        &mut self,
        call_id: u64,
        consumed: u64,
        window: u32,
    ) -> Result<(), Violation> {
        if consumed > self.sent {
            return Err(Violation::StdinAck(call_id));
        }
        if window != 0 && self.window != 0 {
            self.window = u64::from(window);
            self.widest = self.widest.max(self.window);
        }
        self.limit = self.limit.max(consumed + self.window);
        // What the process took is never needed again.
        let mut drop = consumed.saturating_sub(self.acked);
        while drop > 0 {
            let Some(front) = self.retained.front_mut() else {
                break;
            };
            let len = front.len() as u64;
            if len <= drop {
                drop -= len;
                self.retained.pop_front();
            } else {
                let keep = usize::try_from(drop).unwrap_or(0);
                *front = front.slice(keep..);
                drop = 0;
            }
        }
        self.acked = self.acked.max(consumed);
        Ok(())
    }

    /// The next chunk that may go now.
    pub(super) fn next_chunk(&mut self, now: Instant) -> Option<Bytes> {
        if self.window != 0 && self.sent >= self.limit {
            if !self.queue.is_empty() && self.blocked.is_none() {
                self.blocked = Some(now);
            }
            return None;
        }
        if let Some(since) = self.blocked.take() {
            self.waited += now.saturating_duration_since(since);
        }
        let chunk = self.queue.pop_front()?;
        self.queued -= chunk.len();
        self.sent += chunk.len() as u64;
        self.retained.push_back(chunk.clone());
        Some(chunk)
    }

    /// Whether a queued chunk may go now.
    pub(super) fn may_send(&self) -> bool {
        !self.queue.is_empty() && (self.window == 0 || self.sent < self.limit)
    }

    /// The close, once nothing is queued before it.
    pub(super) fn take_close(&mut self) -> Option<Option<Mark<T>>> {
        if self.queue.is_empty() {
            let close = self.close.take();
            self.close_sent |= close.is_some();
            close
        } else {
            None
        }
    }

    /// Bytes waiting for credit.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    /// How the window treated this stdin: the widest it was, and the time
    /// data waited for it (until `now` if it still does).
    pub(super) fn flow(&self, now: Instant) -> StdinFlow {
        let waiting = self
            .blocked
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        StdinFlow {
            window: self.widest,
            waited: self.waited + waiting,
        }
    }
}

/// How a call's stdin window treated it, at the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StdinFlow {
    /// The widest window the exec-server gave (bytes; 0: none).
    pub window: u64,
    /// Time stdin was ready to go and waited for the window.
    pub waited: Duration,
}

/// A call's stdin as the exec-server receives it.
#[derive(Debug)]
pub(super) struct Incoming {
    received: u64,
    consumed: u64,
    acked: u64,
    /// The offset the client may send up to (and a chunk): the largest
    /// `consumed + window` acknowledged so far, the first window before.
    limit: u64,
    flow: Adaptive,
    /// What the window holds of the exec-server's stdin budget beyond the
    /// first window.
    grant: Grant,
    /// More may still arrive (not closed, the call not finished).
    open: bool,
}

/// An acknowledgement to send: bytes taken in all, and the window.
pub(super) type Ack = (u64, u32);

impl Incoming {
    /// A call's stdin with a window of `first` bytes that may grow to
    /// `ceiling`, beyond `first` from `budget`.
    pub(super) fn new(first: u32, ceiling: u32, budget: Option<Arc<Budget>>) -> Self {
        Self {
            received: 0,
            consumed: 0,
            acked: 0,
            limit: u64::from(first),
            flow: Adaptive::new(u64::from(first), u64::from(ceiling)),
            grant: Grant::new(budget),
            open: true,
        }
    }

    /// Like [`new`](Self::new), starting at a window of `start` bytes (a
    /// path measured before, as far as the ceiling and the budget allow):
    /// no ramp to find it again.
    pub(super) fn starting_at(
        first: u32,
        ceiling: u32,
        budget: Option<Arc<Budget>>,
        start: u32,
    ) -> Self {
        let mut incoming = Self::new(first, ceiling, budget);
        incoming.flow =
            Adaptive::starting_at(u64::from(first), u64::from(ceiling), u64::from(start));
        // Beyond the first window it is held from the budget, as any
        // growth is: from the first window, as far as the budget allows.
        let want = incoming.flow.window();
        incoming.flow.settle(u64::from(first));
        incoming.grow(want);
        incoming
    }

    /// Bytes that arrived in all.
    pub(super) fn received(&self) -> u64 {
        self.received
    }

    /// Bytes the process has taken in all.
    pub(super) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The window now.
    pub(super) fn window(&self) -> u32 {
        u32::try_from(self.flow.window()).unwrap_or(u32::MAX)
    }

    /// Stdin arrived at `now`: beyond the offset acknowledged (and a chunk)
    /// is a violation. `rtt` is the session's least round trip, if it
    /// measured one: the acknowledgement to send now if the window grew on
    /// what arrived ([`Adaptive::arrived`]).
    pub(super) fn receive(
        &mut self,
        call_id: u64,
        len: usize,
        now: Instant,
        rtt: Option<Duration>,
    ) -> Result<Option<Ack>, Violation> {
        self.received += len as u64;
        if self.received > self.limit + MAX_CHUNK as u64 {
            return Err(Violation::StdinWindow(call_id));
        }
        self.idle(now);
        Ok(self
            .flow
            .arrived(now, self.received, rtt)
            .and_then(|want| self.widen(want)))
    }

    /// The process took `n` more bytes. Returns what to acknowledge now, if
    /// anything: once a quarter window has been taken since the last
    /// acknowledgement. A client waiting at the window's edge has sent a
    /// whole window since then, so it never waits for more than a quarter
    /// of it to be taken; a process that keeps up with its stdin costs no
    /// acknowledgement per read (nor a typed line one each).
    pub(super) fn taken(&mut self, n: u64) -> Option<Ack> {
        let before = self.consumed;
        self.consumed = (self.consumed + n).min(self.received);
        if let Some(want) = self.flow.delivered(self.consumed - before) {
            self.grow(want);
        }
        let since = self.consumed - self.acked;
        let ack = (since > 0 && since >= self.flow.window() / 4).then(|| self.ack());
        self.settle();
        ack
    }

    /// What to acknowledge now (what was taken, the window), whatever was
    /// acknowledged before.
    pub(super) fn ack(&mut self) -> Ack {
        self.acked = self.consumed;
        self.limit = self.limit.max(self.consumed + self.flow.window());
        (self.consumed, self.window())
    }

    /// No more stdin comes (it was closed, or the call finished): the
    /// budget keeps only what waits for the process.
    pub(super) fn close(&mut self) {
        self.open = false;
        self.settle();
    }

    /// Whether a measurement is worth its ping ([`Adaptive::due`]).
    pub(super) fn due(&self) -> bool {
        self.open && self.flow.due(self.received)
    }

    /// A measurement of the round trip begins.
    pub(super) fn begin(&mut self) {
        if self.open {
            self.flow.begin(self.received);
        }
    }

    /// The measurement ends after `rtt`: the acknowledgement to send now if
    /// the window grew.
    pub(super) fn end(&mut self, rtt: Duration) -> Option<Ack> {
        let want = self.flow.end(self.received, rtt)?;
        self.widen(want)
    }

    /// Grows the window toward `want`: the acknowledgement to send now if
    /// it grew.
    fn widen(&mut self, want: u64) -> Option<Ack> {
        let before = self.flow.window();
        self.grow(want);
        (self.flow.window() > before).then(|| self.ack())
    }

    /// Widens the window toward `want`, as far as the budget allows.
    fn grow(&mut self, want: u64) {
        let first = self.flow.first();
        let pending = self.limit.saturating_sub(self.consumed);
        let held = self.grant.set(want.max(pending).saturating_sub(first));
        self.flow.settle(want.min(first + held));
    }

    /// Falls back to the first window if nothing arrived for a while.
    pub(super) fn idle(&mut self, now: Instant) {
        if self.flow.idle(now) {
            self.settle();
        }
    }

    /// Gives back the budget no longer needed: the window (while open)
    /// or what the client may still send, whichever is more, or once
    /// closed only what waits for the process.
    fn settle(&mut self) {
        let waiting = self.received - self.consumed;
        let need = if self.open {
            self.flow
                .window()
                .max(self.limit.saturating_sub(self.consumed))
                .max(waiting)
        } else {
            waiting
        };
        self.grant.lower(need.saturating_sub(self.flow.first()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_sends_within_the_window_and_resumes_on_acknowledgement() {
        let now = Instant::now();
        let mut out: Outgoing<()> = Outgoing::new(64 * 1024);
        out.push(Bytes::from(vec![1u8; 200 * 1024]));
        assert_eq!(out.queued(), 200 * 1024);
        let mut sent = 0;
        while let Some(c) = out.next_chunk(now) {
            assert!(c.len() <= MAX_CHUNK);
            sent += c.len();
        }
        // Two chunks fill the window.
        assert_eq!(sent, 64 * 1024);
        out.close(None);
        assert!(out.take_close().is_none(), "data is still queued");
        out.ack(1, 32 * 1024, 0).unwrap();
        assert_eq!(out.next_chunk(now).map(|c| c.len()), Some(MAX_CHUNK));
        assert!(out.next_chunk(now).is_none());
        assert_eq!(out.ack(1, 500 * 1024, 0), Err(Violation::StdinAck(1)));
        out.ack(1, 96 * 1024, 0).unwrap();
        while out.next_chunk(now).is_some() {}
        out.ack(1, 160 * 1024, 0).unwrap();
        while out.next_chunk(now).is_some() {}
        assert_eq!(out.queued(), 0);
        assert!(out.take_close().is_some());
    }

    #[test]
    fn stdin_not_received_goes_again_once_in_order() {
        let now = Instant::now();
        let mut out: Outgoing<()> = Outgoing::new(64 * 1024);
        out.push(Bytes::from_static(b"0123456789"));
        out.close(None);
        let mut sent = Vec::new();
        while let Some(c) = out.next_chunk(now) {
            sent.extend_from_slice(&c);
        }
        assert!(out.take_close().is_some());
        out.ack(1, 3, 0).unwrap();
        // The exec-server got 6 bytes and no close: the rest goes again,
        // then the close.
        assert_eq!(out.rewind(6, false), 4);
        let mut again = Vec::new();
        while let Some(c) = out.next_chunk(now) {
            again.extend_from_slice(&c);
        }
        assert_eq!(again, b"6789");
        assert!(out.take_close().is_some(), "the close goes again");
        // Everything arrived this time: nothing goes a third time.
        assert_eq!(out.rewind(10, true), 0);
        assert!(out.next_chunk(now).is_none());
        assert!(out.take_close().is_none());
    }

    #[test]
    fn no_window_means_no_limit() {
        let now = Instant::now();
        let mut out: Outgoing<()> = Outgoing::new(0);
        out.push(Bytes::from(vec![1u8; 10 * MAX_CHUNK]));
        let mut n = 0;
        while out.next_chunk(now).is_some() {
            n += 1;
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn the_exec_server_acknowledges_each_quarter_window_taken() {
        let now = Instant::now();
        let window = 64 * 1024;
        let mut inc = Incoming::new(window, window, None);
        inc.receive(1, 40 * 1024, now, None).unwrap();
        assert_eq!(inc.taken(1000), None, "less than a quarter");
        assert_eq!(inc.taken(16 * 1024), Some((17_384, window)));
        assert_eq!(inc.taken(100 * 1024), Some((40 * 1024, window)));
        assert_eq!(inc.taken(5), None, "nothing more to take");
        // A process that keeps up, read by read: taking all that arrived
        // is no reason to acknowledge (it was one per read).
        for _ in 0..3 {
            inc.receive(1, 4096, now, None).unwrap();
            assert_eq!(inc.taken(4096), None);
        }
        inc.receive(1, 4096, now, None).unwrap();
        assert_eq!(inc.taken(4096), Some((56 * 1024, window)), "a quarter");
        // A client at the window's edge has a whole window unacknowledged:
        // its first quarter taken lets it go on.
        let edge = 56 * 1024 + u64::from(window) - 40 * 1024 - 16 * 1024;
        inc.receive(1, usize::try_from(edge).unwrap(), now, None)
            .unwrap();
        assert_eq!(inc.received(), 56 * 1024 + u64::from(window));
        assert_eq!(inc.taken(16 * 1024), Some((72 * 1024, window)));
        // A client that ignores the window is cut off: it may send up to
        // the last acknowledged offset plus the window, and a chunk.
        let room = 72 * 1024 + u64::from(window) - inc.received();
        let room = usize::try_from(room).unwrap() + MAX_CHUNK;
        inc.receive(1, room, now, None).unwrap();
        assert_eq!(inc.receive(1, 1, now, None), Err(Violation::StdinWindow(1)));
    }

    #[test]
    fn the_window_grows_on_a_long_path_and_the_client_follows_it() {
        let mut now = Instant::now();
        let first = 64 * 1024;
        let budget = Arc::new(Budget::new(1024 * 1024));
        let mut inc = Incoming::new(first, 16 * 1024 * 1024, Some(budget.clone()));
        let mut out: Outgoing<()> = Outgoing::new(first);
        out.push(Bytes::from(vec![7u8; 4 * 1024 * 1024]));
        let rtt = Duration::from_millis(50);
        let mut in_flight_max = 0;
        for _ in 0..20 {
            // One round trip: the client sends what its window allows, the
            // exec-server measures it, the process takes it all.
            inc.begin();
            while let Some(c) = out.next_chunk(now) {
                inc.receive(1, c.len(), now, None).unwrap();
            }
            in_flight_max = in_flight_max.max(inc.received() - inc.consumed());
            now += rtt;
            let grew = inc.end(rtt);
            let taken = inc.received() - inc.consumed();
            for (consumed, window) in grew.into_iter().chain(inc.taken(taken)) {
                out.ack(1, consumed, window).unwrap();
            }
        }
        assert_eq!(inc.window(), first + 1024 * 1024, "the budget bounds it");
        assert_eq!(budget.held(), 1024 * 1024);
        assert!(in_flight_max <= u64::from(inc.window()));
        let flow = out.flow(now);
        assert_eq!(flow.window, u64::from(inc.window()));
        assert!(flow.waited >= rtt, "it waited for the window at first");
        // Idle: back to the first window, and the budget is given back as
        // what the client may still send is taken.
        now += super::super::window::IDLE_AFTER;
        inc.idle(now);
        assert_eq!(inc.window(), first);
        inc.close();
        assert_eq!(budget.held(), 0);
        drop(inc);
        assert_eq!(budget.held(), 0);
    }
}
