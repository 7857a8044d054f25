//! The client's spans of a call, forwarded to an exec-server that takes them
//! (its hello answer's `span_batch_max`): sent after the call's final
//! event, never before it; held (bounded) while the call is still open;
//! dropped with a count when over a bound, never queued without one.
//!
//! Batches ready to go are gathered into one message (encoded OTLP
//! `TracesData` messages joined end to end are one such message holding
//! them all) and sent when it would outgrow the exec-server's limit, when
//! the first has waited [`LINGER`], or at the session's close (in the same
//! flight as the close): a busy client sends a few messages a second, not
//! one or two per call.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::ClientSession;
use super::spans::{
    ForwardError, Forwarded, Gathered, HELD_BATCHES, HELD_BYTES, Held, LINGER, SpanCounts,
};
use crate::pb::session::{ForwardedSpans, envelope::Body};
use crate::session::Now;

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
        if self.shared.is_over() {
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
        Ok(self.gather_spans(call_id, traces, spans, now))
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
            self.gather_spans(h.call_id, h.traces, h.spans, now);
        }
    }

    /// Forgets held and gathered batches: the session ended with them
    /// unsent.
    pub(super) fn drop_held_spans(&mut self) {
        let mut lost: u32 = self.forwarding.held.drain(..).map(|h| h.spans).sum();
        self.forwarding.held_bytes = 0;
        if let Some(g) = self.forwarding.gathered.take() {
            lost = lost.saturating_add(g.spans);
        }
        if lost > 0 {
            self.forwarding.drop_spans(lost);
        }
    }

    /// When the gathered batches go, if any wait.
    pub(super) fn spans_due(&self) -> Option<Instant> {
        self.forwarding.gathered.as_ref().map(|g| g.since + LINGER)
    }

    /// Sends the gathered batches if they have waited long enough.
    pub(super) fn spans_timer(&mut self, now: Now) {
        if self.spans_due().is_some_and(|due| now.at >= due) {
            self.send_gathered(now);
        }
    }

    /// Adds a batch to those gathered: what was gathered goes first if
    /// this one would take it over the exec-server's limit, and all of it
    /// once half the limit is reached.
    fn gather_spans(&mut self, call_id: u64, traces: Bytes, spans: u32, now: Now) -> Forwarded {
        let max = self.forwarding.max as usize;
        if self
            .forwarding
            .gathered
            .as_ref()
            .is_some_and(|g| g.bytes + traces.len() > max)
        {
            self.send_gathered(now);
        }
        let g = self.forwarding.gathered.get_or_insert_with(|| Gathered {
            call_id,
            parts: Vec::new(),
            bytes: 0,
            spans: 0,
            since: now.at,
        });
        g.call_id = call_id;
        g.bytes += traces.len();
        g.spans = g.spans.saturating_add(spans);
        g.parts.push(traces);
        if g.bytes * 2 >= max {
            self.send_gathered(now);
        }
        Forwarded::Sent
    }

    /// Sends what is gathered as one message (at the close, before it).
    pub(super) fn send_gathered(&mut self, now: Now) {
        let Some(g) = self.forwarding.gathered.take() else {
            return;
        };
        // An exec-server that came back (a resume) taking no spans, or a
        // backlog with no room: counted, not sent.
        if self.forwarding.max == 0 || self.backlog() + g.bytes > self.shared.limits.backlog {
            self.forwarding.drop_spans(g.spans);
            return;
        }
        let traces = match <[Bytes; 1]>::try_from(g.parts) {
            Ok([one]) => one,
            Err(parts) => Bytes::from(parts.concat()),
        };
        let body = Body::Spans(ForwardedSpans {
            traces,
            spans: g.spans,
            dropped: self.forwarding.unreported,
        });
        match self.shared.send(g.call_id, None, body, None, now) {
            Ok(_) => {
                self.forwarding.unreported = 0;
                self.forwarding.counts.sent += u64::from(g.spans);
            }
            Err(_) => {
                self.forwarding.drop_spans(g.spans);
            }
        }
    }
}
