//! Stdin flow control, per call: the client sends at most a window of
//! bytes beyond what the exec-server has acknowledged as taken by the
//! process (`StdinAck`), so stdin never has to wait inside the exec-server
//! and a process that does not read its stdin holds up nothing else on the
//! session (a signal, a cancel, another call).
//!
//! A chunk may start while any credit is left, so a call's stdin in flight
//! is at most the window plus one chunk ([`MAX_CHUNK`]).

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Mark, Violation};
use crate::limits::MAX_CHUNK;

/// A call's stdin as the client sends it.
#[derive(Debug)]
pub(super) struct Outgoing<T> {
    /// The exec-server's window; 0: none (an exec-server that does not
    /// acknowledge).
    window: u64,
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
    /// bytes in all. More than was sent is a violation.
    pub(super) fn ack(&mut self, call_id: u64, consumed: u64) -> Result<(), Violation> {
        if consumed > self.sent {
            return Err(Violation::StdinAck(call_id));
        }
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
    pub(super) fn next_chunk(&mut self) -> Option<Bytes> {
        let in_flight = self.sent - self.acked;
        if self.window != 0 && in_flight >= self.window {
            return None;
        }
        let chunk = self.queue.pop_front()?;
        self.queued -= chunk.len();
        self.sent += chunk.len() as u64;
        self.retained.push_back(chunk.clone());
        Some(chunk)
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
}

/// A call's stdin as the exec-server receives it.
#[derive(Debug, Default)]
pub(super) struct Incoming {
    received: u64,
    consumed: u64,
    acked: u64,
}

impl Incoming {
    /// Bytes that arrived in all.
    pub(super) fn received(&self) -> u64 {
        self.received
    }

    /// Bytes the process has taken in all.
    pub(super) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Stdin arrived: more than the window (and a chunk) beyond what the
    /// process has taken is a violation.
    pub(super) fn receive(
        &mut self,
        call_id: u64,
        len: usize,
        window: u32,
    ) -> Result<(), Violation> {
        self.received += len as u64;
        let limit = u64::from(window) + MAX_CHUNK as u64;
        if self.received - self.consumed > limit {
            return Err(Violation::StdinWindow(call_id));
        }
        Ok(())
    }

    /// The process took `n` more bytes. Returns what to acknowledge now, if
    /// anything: once a quarter window has been taken since the last
    /// acknowledgement, or everything received has been taken (so a client
    /// waiting at the window's edge never waits for long).
    pub(super) fn taken(&mut self, n: u64, window: u32) -> Option<u64> {
        self.consumed = (self.consumed + n).min(self.received);
        let since = self.consumed - self.acked;
        if since > 0 && (since >= u64::from(window) / 4 || self.consumed == self.received) {
            self.acked = self.consumed;
            return Some(self.consumed);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_sends_within_the_window_and_resumes_on_acknowledgement() {
        let mut out: Outgoing<()> = Outgoing::new(64 * 1024);
        out.push(Bytes::from(vec![1u8; 200 * 1024]));
        assert_eq!(out.queued(), 200 * 1024);
        let mut sent = 0;
        while let Some(c) = out.next_chunk() {
            assert!(c.len() <= MAX_CHUNK);
            sent += c.len();
        }
        // Two chunks fill the window.
        assert_eq!(sent, 64 * 1024);
        out.close(None);
        assert!(out.take_close().is_none(), "data is still queued");
        out.ack(1, 32 * 1024).unwrap();
        assert_eq!(out.next_chunk().map(|c| c.len()), Some(MAX_CHUNK));
        assert!(out.next_chunk().is_none());
        assert_eq!(out.ack(1, 500 * 1024), Err(Violation::StdinAck(1)));
        out.ack(1, 96 * 1024).unwrap();
        while out.next_chunk().is_some() {}
        out.ack(1, 160 * 1024).unwrap();
        while out.next_chunk().is_some() {}
        assert_eq!(out.queued(), 0);
        assert!(out.take_close().is_some());
    }

    #[test]
    fn stdin_not_received_goes_again_once_in_order() {
        let mut out: Outgoing<()> = Outgoing::new(64 * 1024);
        out.push(Bytes::from_static(b"0123456789"));
        out.close(None);
        let mut sent = Vec::new();
        while let Some(c) = out.next_chunk() {
            sent.extend_from_slice(&c);
        }
        assert!(out.take_close().is_some());
        out.ack(1, 3).unwrap();
        // The exec-server got 6 bytes and no close: the rest goes again,
        // then the close.
        assert_eq!(out.rewind(6, false), 4);
        let mut again = Vec::new();
        while let Some(c) = out.next_chunk() {
            again.extend_from_slice(&c);
        }
        assert_eq!(again, b"6789");
        assert!(out.take_close().is_some(), "the close goes again");
        // Everything arrived this time: nothing goes a third time.
        assert_eq!(out.rewind(10, true), 0);
        assert!(out.next_chunk().is_none());
        assert!(out.take_close().is_none());
    }

    #[test]
    fn no_window_means_no_limit() {
        let mut out: Outgoing<()> = Outgoing::new(0);
        out.push(Bytes::from(vec![1u8; 10 * MAX_CHUNK]));
        let mut n = 0;
        while out.next_chunk().is_some() {
            n += 1;
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn the_exec_server_acknowledges_in_quarters_and_when_drained() {
        let window = 64 * 1024;
        let mut inc = Incoming::default();
        inc.receive(1, 40 * 1024, window).unwrap();
        assert_eq!(inc.taken(1000, window), None, "less than a quarter");
        assert_eq!(inc.taken(16 * 1024, window), Some(17_384));
        assert_eq!(inc.taken(100 * 1024, window), Some(40 * 1024), "drained");
        assert_eq!(inc.taken(5, window), None, "nothing more to take");
        // A client that ignores the window is cut off.
        inc.receive(1, 64 * 1024 + MAX_CHUNK, window).unwrap();
        assert_eq!(inc.receive(1, 1, window), Err(Violation::StdinWindow(1)));
    }
}
