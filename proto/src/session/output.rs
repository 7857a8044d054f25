//! Output flow control, per call: the exec-server has at most a window of
//! output credit of a call unacknowledged, and the client acknowledges
//! (`OutputAck`, cumulative by sequence number) what its caller has taken.
//! So a caller that stops reading holds up its own call only: the
//! exec-server stops reading that process's output, while the session, its
//! other calls and their callers go on.
//!
//! Credit counts an event's stdout/stderr bytes plus [`EVENT_COST`] for
//! every event, so that many small events are bounded as well as a few
//! large ones. The client acknowledges once an eighth of the window has
//! been taken since its last acknowledgement ([`ACK_EVERY`]): a call that
//! prints little sends no acknowledgement at all.
//!
//! The window follows the path: the client widens it when a round trip
//! carries most of it ([`window`](super::window)), up to its
//! [`Limits::output_window_max`](super::Limits::output_window_max), and
//! every acknowledgement tells the window; the exec-server grants up to
//! its own ceiling. A call quiet for a while falls back to its first
//! window at both ends, with everything taken acknowledged.

use std::collections::VecDeque;

use super::Violation;
use super::window::Adaptive;
use crate::pb::session::{TerminalEvent, terminal_event};

/// The credit every event costs beyond its output bytes.
pub const EVENT_COST: u64 = 128;

/// The client acknowledges each time this fraction (1 / `ACK_EVERY`) of a
/// call's window has been taken: across a long path the exec-server then
/// waits for less of its window to come back (at a quarter it ran 1.5-4%
/// slower across 50 ms).
pub const ACK_EVERY: u64 = 8;

/// The smallest window a session uses: room for a few of the largest
/// events, so that an exec-server never waits for credit it cannot get.
pub const MIN_WINDOW: u32 = 4 * (crate::limits::MAX_CHUNK as u32 + EVENT_COST as u32);

/// The output credit of an event.
pub fn cost(kind: &terminal_event::Kind) -> u64 {
    let bytes = match kind {
        terminal_event::Kind::Stdout(d) | terminal_event::Kind::Stderr(d) => d.len() as u64,
        _ => 0,
    };
    bytes + EVENT_COST
}

/// The window both ends use: the smaller of two, where 0 means none, and
/// never below [`MIN_WINDOW`].
pub(super) fn negotiate(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, 0) => 0,
        (0, w) | (w, 0) => w.max(MIN_WINDOW),
        (a, b) => a.min(b).max(MIN_WINDOW),
    }
}

/// A call's output as the exec-server sends it: every event not yet
/// acknowledged, kept (so that a resumed session can send it again) and
/// counted against the window.
#[derive(Debug, Default)]
pub(super) struct Sent {
    in_flight: VecDeque<(u64, u64, TerminalEvent)>,
    credit: u64,
}

impl Sent {
    /// Output credit in flight.
    pub(super) fn in_flight(&self) -> u64 {
        self.credit
    }

    /// `event` (of `cost`) has been sent, or kept to be sent on resume.
    pub(super) fn sent(&mut self, event: TerminalEvent, cost: u64) {
        self.in_flight.push_back((event.seq, cost, event));
        self.credit += cost;
    }

    /// The events kept from sequence number `from` on, in order.
    pub(super) fn kept_since(&self, from: u64) -> impl Iterator<Item = &TerminalEvent> {
        self.in_flight
            .iter()
            .filter(move |(seq, ..)| *seq >= from)
            .map(|(.., e)| e)
    }

    /// The oldest sequence number kept, if any.
    #[cfg(test)]
    pub(super) fn oldest(&self) -> Option<u64> {
        self.in_flight.front().map(|(seq, ..)| *seq)
    }

    /// Bytes of stdout and stderr kept from `from` on.
    pub(super) fn bytes_from(&self, from: u64) -> (u64, u64) {
        let mut out = (0, 0);
        for e in self.kept_since(from) {
            match &e.kind {
                Some(terminal_event::Kind::Stdout(d)) => out.0 += d.len() as u64,
                Some(terminal_event::Kind::Stderr(d)) => out.1 += d.len() as u64,
                _ => {}
            }
        }
        out
    }

    /// Whether nothing is kept.
    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The client took every event through `seq`: the credit freed. An
    /// acknowledgement of an event not yet sent is a violation; one that
    /// acknowledges nothing new frees nothing.
    pub(super) fn ack(&mut self, call_id: u64, seq: u64, next_seq: u64) -> Result<u64, Violation> {
        if seq >= next_seq {
            return Err(Violation::OutputAck(call_id));
        }
        let mut freed = 0;
        while let Some(&(s, c, _)) = self.in_flight.front() {
            if s > seq {
                break;
            }
            self.in_flight.pop_front();
            freed += c;
        }
        self.credit -= freed;
        Ok(freed)
    }
}

/// A call's output as the client receives it. Its window follows the path
/// ([`window`](super::window)): the client measures what a round trip
/// carries and widens the window it grants, telling the exec-server in its
/// acknowledgements.
#[derive(Debug)]
pub(super) struct Received {
    received: u64,
    taken: u64,
    acked: u64,
    taken_seq: Option<u64>,
    /// The last sequence number acknowledged.
    acked_seq: Option<u64>,
    /// The window (0: none, and it never grows).
    flow: Adaptive,
    /// The widest window told: what the exec-server may have in flight
    /// while it hears of a narrower one.
    widest: u64,
    /// The exec-server asked for an acknowledgement ([`asked`](Self::asked))
    /// when nothing taken was left to acknowledge: the next take answers.
    asked: bool,
}

impl Received {
    /// A window of `window` that may grow to `ceiling` (0: no window).
    pub(super) fn new(window: u32, ceiling: u32) -> Self {
        let ceiling = if window == 0 { 0 } else { ceiling };
        Self {
            received: 0,
            taken: 0,
            acked: 0,
            taken_seq: None,
            acked_seq: None,
            flow: Adaptive::new(u64::from(window), u64::from(ceiling)),
            widest: u64::from(window),
            asked: false,
        }
    }

    /// A window of `window` that may grow to `ceiling`, starting at
    /// `start` (what an earlier call measured of the path).
    pub(super) fn starting_at(window: u32, ceiling: u32, start: u32) -> Self {
        let mut received = Self::new(window, ceiling);
        if window != 0 {
            received.flow =
                Adaptive::starting_at(u64::from(window), u64::from(ceiling), u64::from(start));
            received.widest = received.flow.window();
        }
        received
    }

    /// The window now (what every acknowledgement tells).
    pub(super) fn window(&self) -> u32 {
        u32::try_from(self.flow.window()).unwrap_or(u32::MAX)
    }

    /// An event of `cost` arrived at `now`: more than the widest window
    /// told beyond the acknowledgements is a violation. `rtt` is the
    /// session's least round trip, if it measured one: if the window grew
    /// on what arrived ([`Adaptive::arrived`]), the sequence number to
    /// acknowledge again so that the exec-server hears of it now (as for
    /// [`end`](Self::end)).
    pub(super) fn receive(
        &mut self,
        call_id: u64,
        cost: u64,
        now: std::time::Instant,
        rtt: Option<std::time::Duration>,
    ) -> Result<Option<u64>, Violation> {
        self.received += cost;
        let want = self.flow.arrived(now, self.received, rtt);
        if self.widest != 0 && self.received - self.acked > self.widest {
            return Err(Violation::OutputWindow(call_id));
        }
        let Some(want) = want else {
            return Ok(None);
        };
        self.settle(want);
        Ok(self.acked_seq)
    }

    /// Widens (or narrows) the window to `window`.
    fn settle(&mut self, window: u64) {
        self.flow.settle(window);
        self.widest = self.widest.max(self.flow.window());
    }

    /// When the window falls back if nothing arrives meanwhile (`None`:
    /// it is at its first already).
    pub(super) fn idle_at(&self) -> Option<std::time::Instant> {
        self.flow.idle_at()
    }

    /// Falls back to the first window if nothing arrived for a while:
    /// the sequence number to acknowledge so that the exec-server hears of
    /// it (`None` when it did not fall back, or nothing was taken yet: the
    /// next acknowledgement tells it). Everything taken is acknowledged
    /// with it: what was left for the wider window's next acknowledgement
    /// may be more than the narrower window, and an exec-server holding that much
    /// unacknowledged would never send the output that brings the next.
    pub(super) fn idle(&mut self, now: std::time::Instant) -> Option<u64> {
        if !self.flow.idle(now) {
            return None;
        }
        self.acked = self.taken;
        self.acked_seq = self.taken_seq;
        self.acked_seq
    }

    /// The caller took the events through `seq`, of `cost` in all since it
    /// last said. Returns the sequence number to acknowledge now, if any:
    /// once an eighth of the window has been taken since the last one.
    pub(super) fn taken(&mut self, seq: u64, cost: u64) -> Option<u64> {
        let before = self.taken;
        self.taken = (self.taken + cost).min(self.received);
        if let Some(want) = self.flow.delivered(self.taken - before) {
            self.settle(want);
        }
        self.taken_seq = Some(self.taken_seq.map_or(seq, |s| s.max(seq)));
        let window = self.flow.window();
        let due = self.asked || self.taken - self.acked >= (window / ACK_EVERY).max(1);
        if window == 0 || !due {
            return None;
        }
        self.asked = false;
        self.acked = self.taken;
        self.acked_seq = self.taken_seq;
        self.taken_seq
    }

    /// The exec-server asked for an acknowledgement (its memory for
    /// unacknowledged output is short): the sequence number to acknowledge
    /// now if the caller took anything since the last one; otherwise the
    /// next take is acknowledged at once, whatever its size.
    pub(super) fn asked(&mut self) -> Option<u64> {
        if self.flow.window() == 0 {
            return None;
        }
        if self.taken > self.acked {
            self.asked = false;
            self.acked = self.taken;
            self.acked_seq = self.taken_seq;
            return self.taken_seq;
        }
        self.asked = true;
        None
    }

    /// Whether a measurement is worth its ping ([`Adaptive::due`]).
    pub(super) fn due(&self) -> bool {
        self.flow.due(self.received)
    }

    /// A measurement of the round trip begins.
    pub(super) fn begin(&mut self) {
        self.flow.begin(self.received);
    }

    /// The measurement ends after `rtt`: if the window grew, the sequence
    /// number to acknowledge again so that the exec-server hears of it now
    /// (`None` before anything was acknowledged: the next acknowledgement
    /// tells it).
    pub(super) fn end(&mut self, rtt: std::time::Duration) -> Option<u64> {
        let want = self.flow.end(self.received, rtt)?;
        self.settle(want);
        self.acked_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    #[test]
    fn an_event_costs_its_output_and_a_fixed_part() {
        let out = terminal_event::Kind::Stdout(Bytes::from_static(b"hello"));
        assert_eq!(cost(&out), 5 + EVENT_COST);
        let started = terminal_event::Kind::Started(crate::pb::session::Started {
            pid: 1,
            program: String::new(),
        });
        assert_eq!(cost(&started), EVENT_COST);
    }

    #[test]
    fn the_smaller_window_wins_and_zero_means_none() {
        let (a, b) = (MIN_WINDOW * 2, MIN_WINDOW * 3);
        assert_eq!(negotiate(a, b), a);
        assert_eq!(negotiate(0, b), b);
        assert_eq!(negotiate(b, 0), b);
        assert_eq!(negotiate(0, 0), 0);
        assert_eq!(negotiate(10, b), MIN_WINDOW, "never below the floor");
    }

    fn event(seq: u64) -> TerminalEvent {
        TerminalEvent {
            seq,
            kind: Some(terminal_event::Kind::Stdout(Bytes::from_static(b"xy"))),
            timings: None,
        }
    }

    #[test]
    fn the_exec_server_keeps_what_was_not_acknowledged_and_frees_the_rest() {
        let mut sent = Sent::default();
        sent.sent(event(0), 100);
        sent.sent(event(1), 200);
        sent.sent(event(2), 300);
        assert_eq!(
            sent.kept_since(1).map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(sent.bytes_from(1), (4, 0));
        assert_eq!(sent.oldest(), Some(0));
        assert_eq!(sent.in_flight(), 600);
        assert_eq!(sent.ack(1, 1, 3), Ok(300));
        assert_eq!(sent.in_flight(), 300);
        assert_eq!(sent.ack(1, 0, 3), Ok(0), "nothing new");
        assert_eq!(sent.ack(1, 3, 3), Err(Violation::OutputAck(1)));
        assert_eq!(sent.ack(1, 2, 3), Ok(300));
        assert_eq!(sent.in_flight(), 0);
    }

    #[test]
    fn the_client_acknowledges_each_eighth_of_the_window_taken() {
        let mut rx = Received::new(1000, 1000);
        for _ in 0..4 {
            rx.receive(1, 100, Instant::now(), None).unwrap();
        }
        assert_eq!(rx.taken(0, 50), None);
        assert_eq!(rx.taken(1, 50), None);
        assert_eq!(rx.taken(2, 50), Some(2), "an eighth of the window taken");
        assert_eq!(rx.taken(3, 50), None);
        // Up to the window beyond the acknowledgement (150) may arrive;
        // more is a violation.
        for _ in 0..7 {
            rx.receive(1, 100, Instant::now(), None).unwrap();
        }
        assert_eq!(
            rx.receive(1, 100, Instant::now(), None),
            Err(Violation::OutputWindow(1))
        );
    }

    #[test]
    fn a_window_falling_back_acknowledges_all_that_was_taken() {
        let t0 = Instant::now();
        let mut rx = Received::new(1000, 16000);
        rx.settle(16000);
        // Under an eighth of the wide window taken, so not acknowledged
        // yet, and more than the first window: an exec-server told only of
        // the narrower window would hold it all and send nothing more.
        for seq in 0..15 {
            rx.receive(1, 100, t0, None).unwrap();
            assert_eq!(rx.taken(seq, 100), None);
        }
        assert_eq!(rx.idle(t0 + super::super::window::IDLE_AFTER), Some(14));
        assert_eq!(rx.window(), 1000);
    }

    #[test]
    fn asked_the_client_acknowledges_what_was_taken_at_once_or_with_the_next_take() {
        let mut rx = Received::new(8000, 8000);
        for _ in 0..3 {
            rx.receive(1, 100, Instant::now(), None).unwrap();
        }
        // Nothing taken yet: the next take answers, however small.
        assert_eq!(rx.asked(), None);
        assert_eq!(rx.taken(0, 100), Some(0));
        // Asked once, answered once: the eighth of the window applies again.
        assert_eq!(rx.taken(1, 100), None);
        // Taken and not acknowledged: acknowledged at once.
        assert_eq!(rx.asked(), Some(1));
        assert_eq!(rx.taken(2, 100), None);
        // Without a window nothing is ever acknowledged.
        let mut none = Received::new(0, 0);
        none.receive(1, 100, Instant::now(), None).unwrap();
        assert_eq!(none.asked(), None);
        assert_eq!(none.taken(0, 100), None);
    }

    #[test]
    fn without_a_window_nothing_is_acknowledged_or_refused() {
        let mut rx = Received::new(0, 0);
        for i in 0..100 {
            rx.receive(1, 1 << 20, Instant::now(), None).unwrap();
            assert_eq!(rx.taken(i, 1 << 20), None);
        }
    }
}
