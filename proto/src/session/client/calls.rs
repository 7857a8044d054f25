//! The client's call table: starting calls, their stdin (within the
//! exec-server's window), signals and cancels, and each call's terminal
//! events checked against its sequence.

use bytes::Bytes;

use super::{Call, ClientEvent, ClientSession, State, Stdin, check_request};
use crate::limits::terminal_size_ok;
use crate::pb::session::{
    Cancel, ExecRequest, OutputAck, Resize, Signal, StdinClose, StdinData, StdinMode,
    TerminalEvent, TraceContext, envelope::Body, terminal_event,
};
use crate::session::window::PATH_MEMORY;
use crate::session::{CallError, CallEvent, Mark, Now, Received, SessionError, Violation};
use crate::session::{output, stdin};

/// Stdin bytes that may wait in the link, ahead of whatever is sent next:
/// a few chunks, so that the link always has stdin to send while control
/// messages wait behind little.
pub(super) const STDIN_LANE: usize = 4 * crate::limits::MAX_CHUNK;

/// Stdin queued in calls waits for the link to drain below
/// [`STDIN_LANE`]; [`refill_stdin`](ClientSession::refill_stdin) moves it.
impl<T> ClientSession<T> {
    /// Whether queued stdin could move into the link now.
    pub(super) fn stdin_ready(&self) -> bool {
        self.stdin_queued > 0
            && !self.detached
            && self.shared.accepts()
            && self.shared.backlog() < STDIN_LANE
            && self.calls.values().any(|c| c.out.may_send())
    }

    /// The link drained: calls' queued stdin moves into it, up to the lane
    /// (a call at a time, while one has stdin its window lets go).
    pub(super) fn refill_stdin(&mut self, now: Now) {
        while self.stdin_queued > 0 && self.shared.backlog() < STDIN_LANE {
            let Some(id) = self
                .calls
                .iter()
                .find(|(_, c)| c.out.may_send())
                .map(|(id, _)| *id)
            else {
                return;
            };
            // A session that is ending sends nothing more.
            if self.flush_stdin(id, now).is_err() {
                return;
            }
        }
    }
}

impl<T> ClientSession<T> {
    pub(super) fn call_event(
        &mut self,
        call_id: u64,
        ev: TerminalEvent,
        trace: Option<TraceContext>,
        received: Received,
        now: Now,
    ) -> Result<(), SessionError> {
        let TerminalEvent { seq, kind, timings } = ev;
        let kind = kind.ok_or(SessionError::Protocol(Violation::EmptyMessage))?;
        let call = self
            .calls
            .get_mut(&call_id)
            .ok_or(SessionError::Protocol(Violation::UnknownCall(call_id)))?;
        if seq != call.next_seq {
            return Err(SessionError::Protocol(Violation::Sequence {
                call: call_id,
                expected: call.next_seq,
                got: seq,
            }));
        }
        let first = seq == 0;
        // The request arrived: it is never sent again.
        call.request = None;
        if first && self.first_call == Some(call_id) && self.counters.round_trips.is_none() {
            // The answer to the flight that carried the request: as many
            // round trips as flights up to that one.
            self.counters.round_trips = Some(self.first_flight.unwrap_or(self.counters.flights));
        }
        let ok = match &kind {
            terminal_event::Kind::Started(_) => first,
            terminal_event::Kind::Error(_) => true,
            _ => !first,
        };
        if !ok {
            return Err(SessionError::Protocol(Violation::UnexpectedMessage(
                if first {
                    "event before the start"
                } else {
                    "second start"
                },
            )));
        }
        let last = matches!(
            kind,
            terminal_event::Kind::Exited(_) | terminal_event::Kind::Error(_)
        );
        let cost = output::cost(&kind);
        let window = call.output.window();
        let grown = call
            .output
            .receive(call_id, cost, now.at, self.probe.least())
            .map_err(SessionError::Protocol)?;
        let widened = call.output.window() != window;
        if let Some(seq) = grown {
            // The window grew on what arrived: the exec-server hears of it
            // at once.
            let window = call.output.window();
            let ack = Body::OutputAck(OutputAck { seq, window });
            let _ = self.shared.send(call_id, None, ack, None, now);
        }
        let output = matches!(
            kind,
            terminal_event::Kind::Stdout(_) | terminal_event::Kind::Stderr(_)
        );
        call.next_seq += 1;
        match &kind {
            terminal_event::Kind::Stdout(d) => call.received.0 += d.len() as u64,
            terminal_event::Kind::Stderr(d) => call.received.1 += d.len() as u64,
            _ => {}
        }
        let forgotten = call.forgotten;
        if forgotten && !last {
            // Nobody takes it: taken at once, so the exec-server is never
            // held up by a caller that has gone.
            if let Some(ack) = call.output.taken(seq, cost) {
                let ack = Body::OutputAck(OutputAck {
                    seq: ack,
                    window: call.output.window(),
                });
                let _ = self.shared.send(call_id, None, ack, None, now);
            }
            self.watch_window(call_id);
        }
        let mut stdin = None;
        if last && let Some(call) = self.calls.remove(&call_id) {
            let ended = call.output.window();
            if ended > self.output_window {
                self.path_window = Some((ended, now.at));
            }
            self.stdin_queued -= call.out.queued();
            stdin = (call.stdin != Stdin::Null).then(|| call.out.flow(now.at));
            // The exec-server keeps the call (for a resume) until told,
            // whether or not this end would resume: told, it lets go of
            // what the call holds of its memory and its budget.
            self.final_acks.push((call_id, seq));
            // The call's own spans go after its final event.
            self.release_spans(call_id, now);
        }
        if widened && !last {
            self.watch_window(call_id);
        }
        if output && !last {
            self.measure(call_id, now);
        }
        if !forgotten {
            self.events.push(ClientEvent::Call(CallEvent {
                call_id,
                seq,
                kind,
                last,
                // Only a final event brings the call's remote timings.
                timings: timings
                    .filter(|_| last)
                    .map(crate::session::EncodedTimings::from_bytes),
                trace,
                received,
                stdin,
            }));
        }
        Ok(())
    }

    /// Starts call `id`: the exec request goes out with `trace` (which every
    /// later message of the call carries too). Ids are the caller's to
    /// choose, from 1, and must increase from call to call (the exec-server
    /// refuses an id it has seen); [`next_call_id`](Self::next_call_id) is
    /// the smallest one allowed.
    pub fn start_call(
        &mut self,
        id: u64,
        mut request: ExecRequest,
        trace: Option<TraceContext>,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<(), CallError> {
        self.check_ready()?;
        self.send_final_acks(now);
        if id < self.next_call || id == 0 {
            return Err(CallError::StaleCallId(id));
        }
        if self.calls.len() >= self.max_calls {
            return Err(CallError::TooManyCalls(self.max_calls));
        }
        check_request(&request, self.login_shell)?;
        let start = self.first_output_window(now.at);
        request.output_window = if start > self.output_window { start } else { 0 };
        let terminal = request.terminal.is_some();
        let stdin = if request.stdin == StdinMode::Pipe as i32 {
            Stdin::Open
        } else {
            Stdin::Null
        };
        let kept = request.clone();
        let result = self
            .shared
            .send(id, trace.as_ref(), Body::Exec(request), mark, now);
        self.after(now);
        result?;
        self.next_call = id + 1;
        if self.first_call.is_none() {
            self.first_call = Some(id);
            self.first_flight = Some(self.next_flight());
        }
        self.calls.insert(
            id,
            Call {
                next_seq: 0,
                stdin,
                terminal,
                out: stdin::Outgoing::new(self.stdin_window),
                forgotten: false,
                output: output::Received::starting_at(
                    self.output_window,
                    self.shared.limits.output_window_max,
                    start,
                ),
                trace,
                received: (0, 0),
                request: Some(kept),
            },
        );
        Ok(())
    }

    /// The output window a call started at `now` begins with: where the
    /// latest call that ended with a wider one than the session's left it,
    /// if that was within [`PATH_MEMORY`], else the session's (never above
    /// this end's ceiling).
    fn first_output_window(&self, now: std::time::Instant) -> u32 {
        match self.path_window {
            Some((window, at))
                if self.output_window != 0 && now.saturating_duration_since(at) < PATH_MEMORY =>
            {
                window
                    .min(self.shared.limits.output_window_max)
                    .max(self.output_window)
            }
            _ => self.output_window,
        }
    }

    /// The smallest id the next [`start_call`](Self::start_call) may use.
    #[cfg(test)]
    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call
    }

    pub(super) fn check_ready(&self) -> Result<(), CallError> {
        if self.shared.is_over() {
            return Err(CallError::Ended);
        }
        match self.state {
            State::Ready => Ok(()),
            _ => Err(CallError::NotReady),
        }
    }

    fn live_call(&mut self, call_id: u64) -> Result<&mut Call<T>, CallError> {
        if self.shared.is_over() {
            return Err(CallError::Ended);
        }
        match self.calls.get_mut(&call_id) {
            Some(c) if !c.forgotten => Ok(c),
            Some(_) => Err(CallError::Finished(call_id)),
            None if call_id < self.next_call && call_id > 0 => Err(CallError::Finished(call_id)),
            None => Err(CallError::UnknownCall(call_id)),
        }
    }

    fn send_for(
        &mut self,
        call_id: u64,
        body: Body,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<(), CallError> {
        let trace = self.calls.get(&call_id).and_then(|c| c.trace.clone());
        let result = self.shared.send(call_id, trace.as_ref(), body, mark, now);
        self.after(now);
        result.map(|_| ())
    }

    /// Writes to a call's stdin (in chunks of at most
    /// [`MAX_CHUNK`](crate::limits::MAX_CHUNK)). What the exec-server's
    /// window does not take yet waits here, counted in the backlog.
    pub fn write_stdin(&mut self, call_id: u64, data: Bytes, now: Now) -> Result<(), CallError> {
        let call = self.live_call(call_id)?;
        if call.stdin != Stdin::Open {
            return Err(CallError::StdinClosed(call_id));
        }
        let len = data.len();
        call.out.push(data);
        self.stdin_queued += len;
        self.flush_stdin(call_id, now)
    }

    /// Closes a call's stdin (after everything written before).
    pub fn close_stdin(
        &mut self,
        call_id: u64,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<(), CallError> {
        let call = self.live_call(call_id)?;
        if call.stdin != Stdin::Open {
            return Err(CallError::StdinClosed(call_id));
        }
        call.stdin = Stdin::Closed;
        call.out.close(mark);
        self.flush_stdin(call_id, now)
    }

    /// Sends what the call's stdin window allows, then a close that waited
    /// for it. Stdin goes into the link only while little waits there
    /// ([`STDIN_LANE`]): the rest waits in the call's queue and follows as
    /// the link drains, so a signal, a cancel or a resize sent meanwhile
    /// overtakes it.
    pub(super) fn flush_stdin(&mut self, call_id: u64, now: Now) -> Result<(), CallError> {
        loop {
            let Some(call) = self.calls.get_mut(&call_id) else {
                return Ok(());
            };
            if call.out.queued() > 0 && self.shared.backlog() >= STDIN_LANE {
                return Ok(());
            }
            if let Some(data) = call.out.next_chunk(now.at) {
                self.stdin_queued -= data.len();
                self.send_for(call_id, Body::Stdin(StdinData { data }), None, now)?;
            } else if let Some(mark) = call.out.take_close() {
                return self.send_for(call_id, Body::StdinClose(StdinClose {}), mark, now);
            } else {
                return Ok(());
            }
        }
    }

    pub(super) fn stdin_ack(
        &mut self,
        call_id: u64,
        consumed: u64,
        window: u32,
        now: Now,
    ) -> Result<(), SessionError> {
        let Some(call) = self.calls.get_mut(&call_id) else {
            // It crossed the call's final event.
            return if call_id > 0 && call_id < self.next_call {
                Ok(())
            } else {
                Err(SessionError::Protocol(Violation::UnknownCall(call_id)))
            };
        };
        call.out
            .ack(call_id, consumed, window)
            .map_err(SessionError::Protocol)?;
        // A session that is ending sends nothing more; that is not an error.
        let _ = self.flush_stdin(call_id, now);
        Ok(())
    }

    /// The caller has taken the call's events through `seq`, of `cost`
    /// output credit in all since it last said ([`output::cost`] of each):
    /// an acknowledgement goes out once an eighth of the window has been
    /// taken.
    /// Nothing happens for a call that is over.
    pub fn output_taken(&mut self, call_id: u64, seq: u64, cost: u64, now: Now) {
        if self.shared.is_over() {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if let Some(ack) = call.output.taken(seq, cost) {
            let ack = Body::OutputAck(OutputAck {
                seq: ack,
                window: call.output.window(),
            });
            // A session that is ending sends nothing more; that is not an
            // error.
            let _ = self.shared.send(call_id, None, ack, None, now);
            self.after(now);
        }
        self.watch_window(call_id);
    }

    /// The exec-server asked for the call's output to be acknowledged: the
    /// endpoint hears of it ([`ClientEvent::AckWanted`]), reports what its
    /// caller took, and answers ([`answer_ack_wanted`](Self::answer_ack_wanted)).
    /// Nothing happens for a call that is over (the ask crossed its end).
    pub(super) fn ack_wanted(&mut self, call_id: u64) {
        if self.calls.contains_key(&call_id) {
            self.events.push(ClientEvent::AckWanted { call_id });
        }
    }

    /// Answers the exec-server's ask for the call's output to be
    /// acknowledged ([`ClientEvent::AckWanted`]), once the endpoint has
    /// reported what its caller took: all of it is acknowledged now, or,
    /// if nothing was taken since the last acknowledgement, the next
    /// report is, however small.
    pub fn answer_ack_wanted(&mut self, call_id: u64, now: Now) {
        if self.shared.is_over() {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if let Some(seq) = call.output.asked() {
            let ack = Body::OutputAck(OutputAck {
                seq,
                window: call.output.window(),
            });
            let _ = self.shared.send(call_id, None, ack, None, now);
            self.after(now);
        }
    }

    /// Sends an output acknowledgement of `seq`, whatever was received (a
    /// peer that lies).
    #[cfg(test)]
    pub(crate) fn ack_for_tests(&mut self, call_id: u64, seq: u64, now: Now) {
        self.ack_window_for_tests(call_id, seq, 0, now);
    }

    /// Remembers `window` as measured of the path by a call that ended
    /// `at`.
    #[cfg(test)]
    pub(crate) fn remember_path_for_tests(&mut self, window: u32, at: std::time::Instant) {
        self.path_window = Some((window, at));
    }

    /// Sends an output acknowledgement of `seq` asking for `window`.
    #[cfg(test)]
    pub(crate) fn ack_window_for_tests(&mut self, call_id: u64, seq: u64, window: u32, now: Now) {
        let ack = Body::OutputAck(OutputAck { seq, window });
        let _ = self.shared.send(call_id, None, ack, None, now);
    }

    /// Delivers a signal to a call's process group.
    pub fn signal(
        &mut self,
        call_id: u64,
        signal: i32,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<(), CallError> {
        self.live_call(call_id)?;
        self.send_for(call_id, Body::Signal(Signal { signal }), mark, now)
    }

    /// Tells a terminal call that its window is now `rows` by `cols` (the
    /// exec-server resizes the terminal; the process gets `SIGWINCH`). Not
    /// traced: resizes are only counted.
    pub fn resize(
        &mut self,
        call_id: u64,
        rows: u16,
        cols: u16,
        now: Now,
    ) -> Result<(), CallError> {
        let call = self.live_call(call_id)?;
        if !call.terminal {
            return Err(CallError::NoTerminal(call_id));
        }
        let (rows, cols) = (u32::from(rows), u32::from(cols));
        if !terminal_size_ok(rows, cols) {
            return Err(CallError::TerminalSize { rows, cols });
        }
        self.send_for(call_id, Body::Resize(Resize { rows, cols }), None, now)
    }

    /// Kills a call's process group; the call ends with its exit event.
    pub fn cancel(
        &mut self,
        call_id: u64,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<(), CallError> {
        self.live_call(call_id)?;
        self.send_for(call_id, Body::Cancel(Cancel {}), mark, now)
    }

    /// The caller has gone: the call is cancelled, and its remaining events
    /// are checked and dropped. Nothing happens for a call already over.
    pub fn forget(&mut self, call_id: u64, mark: Option<Mark<T>>, now: Now) {
        if self.live_call(call_id).is_err() {
            return;
        }
        let _ = self.send_for(call_id, Body::Cancel(Cancel {}), mark, now);
        if let Some(call) = self.calls.get_mut(&call_id) {
            call.forgotten = true;
            // Its stdin is not worth sending any more.
            self.stdin_queued -= call.out.queued();
            call.out = stdin::Outgoing::new(0);
        }
    }
}
