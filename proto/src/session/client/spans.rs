//! What the client machine keeps and reports of the spans it forwards
//! (see `forward`): the batches held for calls still open and gathered to
//! go together ([`Forwarding`]), their bounds, and what becomes of a batch.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Batches held for calls still open, at most.
pub(crate) const HELD_BATCHES: usize = 16;

/// Bytes of batches held for calls still open, at most.
pub(crate) const HELD_BYTES: usize = 512 * 1024;

/// How long a batch ready to go waits for others to go with it, at most.
pub(crate) const LINGER: Duration = Duration::from_millis(50);

/// What became of a batch handed to
/// [`ClientSession::forward_spans`](super::ClientSession::forward_spans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// Queued to send (the call's final event has arrived): within
    /// [`LINGER`], or with the session's close.
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
#[non_exhaustive]
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
pub(super) struct Held {
    pub(super) call_id: u64,
    pub(super) traces: Bytes,
    pub(super) spans: u32,
}

/// Batches ready to go, gathered into one message.
#[derive(Debug)]
pub(super) struct Gathered {
    /// The call of the latest batch (the envelope's).
    pub(super) call_id: u64,
    pub(super) parts: Vec<Bytes>,
    pub(super) bytes: usize,
    pub(super) spans: u32,
    /// When the first was gathered.
    pub(super) since: Instant,
}

/// The client machine's forwarding state.
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// The exec-server's batch limit (0: it takes none).
    pub(super) max: u32,
    pub(super) held: VecDeque<Held>,
    pub(super) held_bytes: usize,
    pub(super) gathered: Option<Gathered>,
    pub(super) counts: SpanCounts,
    /// Dropped since the last batch sent (said in the next one).
    pub(super) unreported: u32,
}

impl Forwarding {
    pub(super) fn drop_spans(&mut self, spans: u32) -> Forwarded {
        self.counts.dropped += u64::from(spans);
        self.unreported = self.unreported.saturating_add(spans);
        Forwarded::Dropped
    }
}
