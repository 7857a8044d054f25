//! The client's spans of a call, forwarded to an exec-server that takes them
//! (its hello answer's `span_batch_max`): sent after the call's final
//! event, never before it; held (bounded) while the call is still open;
//! dropped with a count when over a bound, never queued without one.

use std::collections::VecDeque;

use bytes::Bytes;

use super::ClientSession;
use crate::pb::session::{ForwardedSpans, envelope::Body};
use crate::session::Now;

/// Batches held for calls still open, at most.
pub const HELD_BATCHES: usize = 16;

/// Bytes of batches held for calls still open, at most.
pub const HELD_BYTES: usize = 512 * 1024;

/// What became of a batch handed to
/// [`ClientSession::forward_spans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// Queued to send now (the call's final event has arrived).
    Sent,
    /// Held until the call's final event arrives, then sent.
    Held,
    /// Not sent, and counted ([`SpanCounts::dropped`]): over the
    /// exec-server's batch limit, the held bound or the session's backlog.
    Dropped,
}

/// Why a batch was not taken at all: the caller keeps its spans (they stay
/// where its own exporter puts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The exec-server's hello answer does not take spans (or has not come
    /// yet).
    #[error("the exec-server does not take forwarded spans")]
    NotOffered,
    /// The session is over.
    #[error("the session is over")]
    Ended,
}

/// Spans forwarded and dropped on one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    /// Spans queued to send.
    pub sent: u64,
    /// Spans not forwarded because of a bound.
    pub dropped: u64,
}

/// A batch waiting for its call's final event.
#[derive(Debug)]
struct Held {
    call_id: u64,
    traces: Bytes,
    spans: u32,
}

/// The client machine's forwarding state.
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// The exec-server's batch limit (0: it takes none).
    pub(super) max: u32,
    held: VecDeque<Held>,
    held_bytes: usize,
    counts: SpanCounts,
    /// Dropped since the last batch sent (said in the next one).
    unreported: u32,
}

impl Forwarding {
    fn drop_spans(&mut self, spans: u32) -> Forwarded {
        self.counts.dropped += u64::from(spans);
        self.unreported = self.unreported.saturating_add(spans);
        Forwarded::Dropped
    }
}

impl<T> ClientSession<T> {
    /// The most bytes of one batch the exec-server takes, once its hello
    /// answer said it takes forwarded spans.
    pub fn span_batch_max(&self) -> Option<u32> {
        Some(self.forwarding.max).filter(|m| *m > 0 && self.is_ready())
    }

    /// Spans forwarded and dropped so far.
    pub fn span_counts(&self) -> SpanCounts {
        self.forwarding.counts
    }

    /// Counts `spans` the caller could not forward (its own bounds): the
    /// next batch sent says so.
    pub fn spans_dropped(&mut self, spans: u32) {
        if spans > 0 {
            self.forwarding.drop_spans(spans);
        }
    }

    /// Forwards `spans` finished spans of call `call_id` (`traces`: an
    /// encoded OTLP `TracesData`) to the exec-server, after the call's
    /// final event: at once if it has arrived (or the call is not open),
    /// else held until it does. A batch over the exec-server's limit, over
    /// what may be held, or that would take the session's backlog over its
    /// bound is dropped and counted.
    pub fn forward_spans(
        &mut self,
        call_id: u64,
        traces: Bytes,
        spans: u32,
        now: Now,
    ) -> Result<Forwarded, ForwardError> {
        if self.link.is_over() {
            return Err(ForwardError::Ended);
        }
        let max = self.span_batch_max().ok_or(ForwardError::NotOffered)?;
        if traces.len() > max as usize {
            return Ok(self.forwarding.drop_spans(spans));
        }
        if self.calls.contains_key(&call_id) {
            let f = &mut self.forwarding;
            if f.held.len() >= HELD_BATCHES || f.held_bytes + traces.len() > HELD_BYTES {
                return Ok(f.drop_spans(spans));
            }
            f.held_bytes += traces.len();
            f.held.push_back(Held {
                call_id,
                traces,
                spans,
            });
            return Ok(Forwarded::Held);
        }
        Ok(self.send_spans(call_id, traces, spans, now))
    }

    /// Sends the batches held for `call_id`, whose final event has just
    /// arrived, in the order they were given.
    pub(super) fn release_spans(&mut self, call_id: u64, now: Now) {
        if !self.forwarding.held.iter().any(|h| h.call_id == call_id) {
            return;
        }
        let (mine, rest): (VecDeque<Held>, VecDeque<Held>) =
            std::mem::take(&mut self.forwarding.held)
                .into_iter()
                .partition(|h| h.call_id == call_id);
        self.forwarding.held = rest;
        for h in mine {
            self.forwarding.held_bytes -= h.traces.len();
            self.send_spans(h.call_id, h.traces, h.spans, now);
        }
    }

    /// Forgets held batches: the session ended with their calls open.
    pub(super) fn drop_held_spans(&mut self) {
        let held: u32 = self.forwarding.held.drain(..).map(|h| h.spans).sum();
        self.forwarding.held_bytes = 0;
        if held > 0 {
            self.forwarding.drop_spans(held);
        }
    }

    fn send_spans(&mut self, call_id: u64, traces: Bytes, spans: u32, now: Now) -> Forwarded {
        if self.backlog() + traces.len() > self.link.limits.backlog {
            return self.forwarding.drop_spans(spans);
        }
        let body = Body::Spans(ForwardedSpans {
            traces,
            spans,
            dropped: self.forwarding.unreported,
        });
        match self.link.send(call_id, None, body, None, now) {
            Ok(_) => {
                self.forwarding.unreported = 0;
                self.forwarding.counts.sent += u64::from(spans);
                Forwarded::Sent
            }
            Err(_) => self.forwarding.drop_spans(spans),
        }
    }
}
