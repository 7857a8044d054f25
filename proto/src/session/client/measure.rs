//! The client's measurement of the round trip, for output windows that
//! follow the path ([`window`](crate::session::window)): a ping as output
//! arrives, and at its pong each call's window grows if one round trip
//! carried most of it (the exec-server is told at once).

use super::{ClientSession, State};
use crate::pb::session::{OutputAck, Ping, envelope::Body};
use crate::session::{Now, output};

impl<T> ClientSession<T> {
    /// Output of `call_id` arrived: begins a measurement if none is under
    /// way and that call's window is due one (only the arriving call is
    /// looked at; once begun, every call is measured).
    pub(super) fn measure(&mut self, call_id: u64, now: Now) {
        if !matches!(self.state, State::Ready) || self.detached || !self.probe.ready(now.at) {
            return;
        }
        if !self.calls.get(&call_id).is_some_and(|c| c.output.due()) {
            return;
        }
        for call in self.calls.values_mut() {
            call.output.begin();
        }
        let nonce = self.probe.begin(now.at);
        // A session that cannot send is ending anyway.
        let _ = self
            .shared
            .send(0, None, Body::Ping(Ping { nonce }), None, now);
    }

    /// A pong arrived: whether it ended the measurement (then each call's
    /// window is sized from what arrived meanwhile).
    pub(super) fn measured(&mut self, nonce: u64, now: Now) -> bool {
        let Some(rtt) = self.probe.end(nonce, now.at) else {
            return false;
        };
        self.tell_windows(now, |output| output.end(rtt));
        true
    }

    /// Calls whose output went quiet fall back to their first window (the
    /// exec-server is told at once), once the earliest may have.
    pub(super) fn idle_windows(&mut self, now: Now) {
        if self.window_check.is_none_or(|t| now.at < t) {
            return;
        }
        self.tell_windows(now, |output| output.idle(now.at));
        self.window_check = self.calls.values().filter_map(|c| c.output.idle_at()).min();
    }

    /// `call_id`'s output window may have widened: the fall-back's timer
    /// covers it.
    pub(super) fn watch_window(&mut self, call_id: u64) {
        if let Some(at) = self.calls.get(&call_id).and_then(|c| c.output.idle_at()) {
            self.window_check = Some(self.window_check.map_or(at, |t| t.min(at)));
        }
    }

    /// Applies `change` to each call's output window and tells the
    /// exec-server of each one it changed (the sequence number it returns
    /// is acknowledged again, with the new window).
    fn tell_windows(
        &mut self,
        now: Now,
        mut change: impl FnMut(&mut output::Received) -> Option<u64>,
    ) {
        let mut acks = Vec::new();
        for (id, call) in &mut self.calls {
            if let Some(seq) = change(&mut call.output) {
                let window = call.output.window();
                acks.push((*id, OutputAck { seq, window }));
            }
        }
        for (call_id, _) in &acks {
            self.watch_window(*call_id);
        }
        for (call_id, ack) in acks {
            if self
                .shared
                .send(call_id, None, Body::OutputAck(ack), None, now)
                .is_err()
            {
                break;
            }
        }
    }

    /// The link broke: a measurement under way is void.
    pub(super) fn unmeasure(&mut self) {
        self.probe.cancel();
    }

    /// A call's output window now (0 for a call it does not hold).
    #[cfg(test)]
    pub(crate) fn output_window_of(&self, call_id: u64) -> u32 {
        self.calls.get(&call_id).map_or(0, |c| c.output.window())
    }
}
