//! The exec-server's call table: new calls (the id rules and the cap),
//! which calls messages may name, each call's stdin against its window, and
//! the sequence numbers and final event of what it pushes.

use super::{Call, Pushed, ServerEvent, ServerSession, Stdin};
use crate::limits::{term_ok, terminal_size_ok};
use crate::pb::session::{
    ExecError, ExecErrorKind, ExecRequest, StdinAck, StdinMode, TerminalEvent, TraceContext,
    envelope::Body, terminal_event,
};
use crate::session::{CallError, EncodedTimings, Mark, Now, Received, SessionError, Violation};
use crate::session::{output, stdin};

/// Why an exec request's terminal size was refused (the bounds are
/// [`MAX_TERMINAL_SIZE`](crate::limits::MAX_TERMINAL_SIZE)).
pub(crate) const TERMINAL_SIZE: &str =
    "the terminal size is out of bounds (1 to 10000 rows and columns)";
/// Why an exec request's TERM was refused (the bound is
/// [`MAX_TERM`](crate::limits::MAX_TERM)).
pub(crate) const TERM_VALUE: &str =
    "the TERM value is not a terminal type name (at most 128 printable characters, no spaces)";

/// Why a login shell was refused by an endpoint that starts none.
pub(crate) const NO_LOGIN_SHELL: &str = "this exec-server does not start login shells";
/// Why a login shell request with a command was refused.
pub(crate) const LOGIN_SHELL_WITH_COMMAND: &str = "a login shell request names no command";

impl<T> ServerSession<T> {
    /// Whether `call_id` is running; `false` for one that has ended (its
    /// messages may cross its final event), an error for one that never
    /// existed.
    pub(super) fn live(&self, call_id: u64) -> Result<bool, SessionError> {
        if self.calls.get(&call_id).is_some_and(|c| !c.finished) {
            Ok(true)
        } else if call_id > 0 && call_id <= self.highest_call {
            Ok(false)
        } else {
            Err(SessionError::Protocol(Violation::UnknownCall(call_id)))
        }
    }

    /// Like [`live`](Self::live), and the call's stdin must be open.
    pub(super) fn stdin_open(&self, call_id: u64) -> Result<bool, SessionError> {
        if !self.live(call_id)? {
            return Ok(false);
        }
        match self.calls.get(&call_id).map(|c| c.stdin) {
            Some(Stdin::Open) => Ok(true),
            _ => Err(SessionError::Protocol(Violation::Stdin(call_id))),
        }
    }

    /// The stdin window a call started at `now` begins with, if the latest
    /// call whose stdin widened its window ended within
    /// [`PATH_MEMORY`](crate::session::window::PATH_MEMORY).
    fn remembered_stdin_window(&self, now: std::time::Instant) -> Option<u32> {
        self.stdin_path
            .filter(|(_, at)| {
                now.saturating_duration_since(*at) < crate::session::window::PATH_MEMORY
            })
            .map(|(window, _)| window)
    }

    pub(super) fn exec(
        &mut self,
        call_id: u64,
        request: ExecRequest,
        trace: Option<TraceContext>,
        received: Received,
        now: Now,
    ) -> Result<(), SessionError> {
        let refusal = if call_id == 0 || call_id <= self.highest_call {
            Some((ExecErrorKind::BadRequest, "call id is zero or already used"))
        } else if self.open_calls() >= self.shared.limits.max_calls {
            Some((
                ExecErrorKind::TooManyProcesses,
                "too many processes on this session",
            ))
        } else if request.login_shell && !self.acceptor.login_shell {
            Some((ExecErrorKind::BadRequest, NO_LOGIN_SHELL))
        } else if request.login_shell && !request.argv.is_empty() {
            Some((ExecErrorKind::BadRequest, LOGIN_SHELL_WITH_COMMAND))
        } else if let Some(t) = &request.terminal
            && !terminal_size_ok(t.rows, t.cols)
        {
            Some((ExecErrorKind::BadRequest, TERMINAL_SIZE))
        } else if let Some(t) = &request.terminal
            && !term_ok(&t.term)
        {
            Some((ExecErrorKind::BadRequest, TERM_VALUE))
        } else {
            None
        };
        self.highest_call = self.highest_call.max(call_id);
        if let Some((kind, message)) = refusal {
            let error = Body::Event(TerminalEvent {
                seq: 0,
                kind: Some(terminal_event::Kind::Error(ExecError {
                    kind: kind as i32,
                    message: message.into(),
                })),
                timings: None,
            });
            self.send(call_id, trace.as_ref(), error, now)?;
            self.events.push(ServerEvent::Refused {
                call_id,
                kind,
                message,
                trace,
                received,
            });
            return Ok(());
        }
        let stdin = if request.stdin == StdinMode::Pipe as i32 {
            Stdin::Open
        } else {
            Stdin::Null
        };
        // A client that measured its path asks for a wider first window:
        // granted up to our ceiling, never below the session's.
        let output_window = if self.output_window != 0 && request.output_window != 0 {
            self.granted_output_window(request.output_window)
        } else {
            self.output_window
        };
        // Stdin starts where the session's path left it, if a call's
        // stdin widened its window moments ago.
        let mut input = match (stdin, self.remembered_stdin_window(now.at)) {
            (Stdin::Open, Some(start)) => stdin::Incoming::starting_at(
                self.shared.limits.stdin_window,
                self.shared.limits.stdin_window_max,
                Some(self.acceptor.stdin_budget.clone()),
                start,
            ),
            _ => stdin::Incoming::new(
                self.shared.limits.stdin_window,
                self.shared.limits.stdin_window_max,
                Some(self.acceptor.stdin_budget.clone()),
            ),
        };
        let wider = (input.window() > self.shared.limits.stdin_window).then(|| input.ack());
        self.calls.insert(
            call_id,
            Call {
                next_seq: 0,
                stdin,
                terminal: request.terminal.is_some(),
                received: input,
                output: output::Sent::default(),
                output_window,
                output_widest: output_window,
                trace: trace.clone(),
                finished: false,
                produced: (0, 0),
                exit: None,
                ack: super::Ask::No,
            },
        );
        self.events.push(ServerEvent::Exec {
            call_id,
            request,
            trace,
            received,
        });
        // The client hears of the wider window at once (it sends within
        // the session's first window until then).
        if let Some((consumed, window)) = wider {
            let ack = Body::StdinAck(StdinAck { consumed, window });
            self.send(call_id, None, ack, now)?;
        }
        Ok(())
    }

    /// A resize of a call's terminal. One for a call that has ended (it
    /// crossed the final event), for a call without a terminal, or of a
    /// size out of bounds is refused: dropped, the call and the session
    /// going on as they were (the client machine never sends one; a peer
    /// that does harms only its own call's window). One for a call that
    /// never existed is a violation, as any message for it is.
    pub(super) fn resize(
        &mut self,
        call_id: u64,
        rows: u32,
        cols: u32,
    ) -> Result<(), SessionError> {
        if !self.live(call_id)? {
            return Ok(());
        }
        let terminal = self.calls.get(&call_id).is_some_and(|c| c.terminal);
        if let (true, Ok(rows), Ok(cols)) = (
            terminal && terminal_size_ok(rows, cols),
            u16::try_from(rows),
            u16::try_from(cols),
        ) {
            self.events.push(ServerEvent::Resize {
                call_id,
                rows,
                cols,
            });
        }
        Ok(())
    }

    /// Pushes a terminal event of a call, with the next sequence number. An
    /// exited or error event is the call's last; nothing more can be pushed
    /// for it.
    pub fn push(
        &mut self,
        call_id: u64,
        kind: terminal_event::Kind,
        trace: Option<&TraceContext>,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<Pushed, CallError> {
        self.push_event(call_id, kind, None, trace, mark, now)
    }

    /// Pushes a call's final event (exited or error) with the exec-server's
    /// stage timings for the call, whose times are relative to `now` (the
    /// envelope's send time). On any other event the timings are left out.
    pub fn push_final(
        &mut self,
        call_id: u64,
        kind: terminal_event::Kind,
        timings: EncodedTimings,
        trace: Option<&TraceContext>,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<Pushed, CallError> {
        self.push_event(call_id, kind, Some(timings), trace, mark, now)
    }

    fn push_event(
        &mut self,
        call_id: u64,
        kind: terminal_event::Kind,
        timings: Option<EncodedTimings>,
        trace: Option<&TraceContext>,
        mark: Option<Mark<T>>,
        now: Now,
    ) -> Result<Pushed, CallError> {
        if self.shared.is_over() && !self.detached {
            return Err(CallError::Ended);
        }
        let call = self
            .calls
            .get_mut(&call_id)
            .filter(|c| !c.finished)
            .ok_or(CallError::UnknownCall(call_id))?;
        let seq = call.next_seq;
        let last = matches!(
            kind,
            terminal_event::Kind::Exited(_) | terminal_event::Kind::Error(_)
        );
        let cost = output::cost(&kind);
        let bytes = match &kind {
            terminal_event::Kind::Stdout(d) => (d.len() as u64, 0),
            terminal_event::Kind::Stderr(d) => (0, d.len() as u64),
            _ => (0, 0),
        };
        let exit = match &kind {
            terminal_event::Kind::Exited(x) => Some(*x),
            _ => None,
        };
        let window = u64::from(call.output_widest);
        if window != 0 && call.output.in_flight() + cost > window {
            return Err(CallError::OutputWindow(call_id));
        }
        let event = TerminalEvent {
            seq,
            kind: Some(kind),
            timings: timings.filter(|_| last).map(EncodedTimings::into_wire),
        };
        // Detached, the event is only kept: a resume sends it.
        let (result, event) = if self.detached {
            drop(mark);
            (Ok(0), event)
        } else {
            self.shared.send_event(call_id, trace, event, mark, now)
        };
        if let Ok(offset) = result {
            let keep = self.keep_finished();
            let mut ask = false;
            if let Some(call) = self.calls.get_mut(&call_id) {
                ask = call.ack == super::Ask::Wanted;
                call.next_seq += 1;
                call.produced.0 += bytes.0;
                call.produced.1 += bytes.1;
                if exit.is_some() {
                    call.exit = exit;
                }
                call.output.sent(event, cost);
                if trace.is_some() {
                    call.trace = trace.cloned();
                }
                call.finished = last;
                if last {
                    let window = call.received.window();
                    call.received.close();
                    if window > self.shared.limits.stdin_window {
                        self.stdin_path = Some((window, now.at));
                    }
                }
            }
            // An ask that waited for output to reach the link goes now.
            if ask {
                self.send_ask(call_id, now);
            }
            if last {
                if keep {
                    self.bound_finished();
                } else {
                    self.calls.remove(&call_id);
                }
            }
            self.after(now);
            return Ok(Pushed { seq, offset, last });
        }
        self.after(now);
        result.map(|_| Pushed {
            seq,
            offset: 0,
            last,
        })
    }

    /// The call's process has taken `n` more bytes of its stdin; the client
    /// is told (in batches) so that it may send more.
    pub fn stdin_taken(&mut self, call_id: u64, n: u64, now: Now) -> Result<(), CallError> {
        let detached = self.detached;
        let call = self
            .calls
            .get_mut(&call_id)
            .filter(|c| !c.finished)
            .ok_or(CallError::UnknownCall(call_id))?;
        if let Some((consumed, window)) = call.received.taken(n)
            && !detached
        {
            let ack = Body::StdinAck(StdinAck { consumed, window });
            self.shared.send(call_id, None, ack, None, now)?;
            self.after(now);
        }
        Ok(())
    }
}
