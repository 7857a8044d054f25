//! The exec-server's measurement of the round trip, for stdin windows
//! that follow the path ([`window`](crate::session::window)): a ping as
//! stdin arrives, and at its pong each call's window grows if one round
//! trip carried most of it.

use super::{ServerSession, State};
use crate::pb::session::{Ping, StdinAck, envelope::Body};
use crate::session::Now;

impl<T> ServerSession<T> {
    /// Stdin of `call_id` arrived: begins a measurement if none is under
    /// way and that call's window is due one (only the arriving call is
    /// looked at; once begun, every call is measured).
    pub(super) fn measure(&mut self, call_id: u64, now: Now) {
        if self.state != State::Ready || self.detached || !self.probe.ready(now.at) {
            return;
        }
        if !self.calls.get(&call_id).is_some_and(|c| c.received.due()) {
            return;
        }
        for call in self.calls.values_mut() {
            call.received.begin();
        }
        let nonce = self.probe.begin(now.at);
        // A session that cannot send is ending anyway.
        let _ = self
            .shared
            .send(0, None, Body::Ping(Ping { nonce }), None, now);
    }

    /// A pong arrived: if it ends the measurement, each call's window is
    /// sized from what arrived meanwhile (the client is told at once of a
    /// wider one), and idle ones fall back.
    pub(super) fn measured(&mut self, nonce: u64, now: Now) {
        let Some(rtt) = self.probe.end(nonce, now.at) else {
            return;
        };
        let mut acks = Vec::new();
        for (id, call) in &mut self.calls {
            if let Some(ack) = call.received.end(rtt) {
                acks.push((*id, ack));
            } else {
                call.received.idle(now.at);
            }
        }
        for (call_id, (consumed, window)) in acks {
            let ack = Body::StdinAck(StdinAck { consumed, window });
            if self.shared.send(call_id, None, ack, None, now).is_err() {
                return;
            }
        }
    }

    /// Idle calls' windows fall back (on the keepalive's timer).
    pub(super) fn idle_windows(&mut self, now: Now) {
        for call in self.calls.values_mut() {
            call.received.idle(now.at);
        }
    }

    /// Measurements begun so far.
    #[cfg(test)]
    pub(crate) fn measurements(&self) -> u64 {
        self.probe.sent()
    }

    /// A call's stdin window now (0 for a call it does not hold).
    pub fn stdin_window(&self, call_id: u64) -> u32 {
        self.calls.get(&call_id).map_or(0, |c| c.received.window())
    }
}
