//! What `exec` does with a running call, without I/O: the call's events
//! and this process's signals go in; what to write, what to send the
//! remote command and how `exec` ends come out. `exec`'s event loop
//! drives it (any other front of a call could, with the same outcome).
//!
//! Layout: [`Call`] is the machine; [`Input`] what it is told,
//! [`LocalSignal`] the signals to this process it hears, [`Step`] what it
//! asks for, [`Drain`] what is written out after the last event, and
//! [`Outcome`] how the call ends.
//!
//! The rules: without a terminal, the first SIGINT or SIGTERM
//! goes to the remote process group and the second gives up waiting (130
//! or 143); once a signal was forwarded, output that stdout cannot take at
//! once is dropped, so that the exit status can arrive. On a terminal,
//! Ctrl-C is a byte for the remote terminal, and SIGINT, SIGTERM or SIGHUP
//! sent to this process end the session (128 + the signal). A stdout that
//! is gone (`exec … | head -1`) cancels the remote command, once, and the
//! call then ends as a local command would, killed by SIGPIPE: exit 141
//! (128 + 13), whatever the cancelled command's status. After the last event,
//! everything received is written before the exit; once a signal was
//! forwarded, only if stdout and stderr can take it at once (a stdout
//! nobody reads never holds up the exit). A signal while it is written
//! gives up waiting.

use bytes::Bytes;
use rex_client::Event;

use super::error::{CliError, EXIT_CONNECTION, EXIT_STDOUT_GONE};

/// A signal to this process that the call listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LocalSignal {
    /// SIGINT.
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP (heard on a terminal only).
    HangUp,
}

impl LocalSignal {
    /// Its number.
    pub(super) fn number(self) -> u8 {
        match self {
            Self::Interrupt => 2,
            Self::Terminate => 15,
            Self::HangUp => 1,
        }
    }
}

/// What the machine is told.
#[derive(Debug)]
pub(super) enum Input {
    /// The call's next event; `None` when its events ended without one
    /// that ends it (the session went away).
    Event(Option<Event>),
    /// A signal to this process.
    Signal(LocalSignal),
    /// Stdout failed (a closed pipe, say).
    StdoutGone,
}

/// A piece of the command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Chunk {
    Out(Bytes),
    Err(Bytes),
}

/// What the machine asks the driver to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing.
    Nothing,
    /// Write this output. `hold`: take no further event until the output
    /// has room for it; else drop it if there is no room now.
    Write { chunk: Chunk, hold: bool },
    /// Send the remote command this signal (`None`: cancel it), without
    /// waiting for it to be sent; `drop_held`: drop the output held for
    /// room, if any.
    Forward {
        signal: Option<i32>,
        drop_held: bool,
    },
    /// The events are over: write out what the output holds, as
    /// [`Call::drain`] says, then end with this outcome. A signal
    /// meanwhile is told to the machine as before.
    Finish(Outcome),
    /// End at once: nothing more is written or waited for.
    End(Outcome),
}

/// How the call ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The command ended (or its session did): the exit code.
    Done(u8),
    /// The command could not run or was lost.
    Failed(CliError),
    /// A second signal: stop waiting (128 + the signal).
    GaveUp(u8),
    /// On a terminal, this signal to this process: the session is ended
    /// (the exit code is 128 + the signal).
    HungUp(u8),
}

/// What is written out after the last event, before the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drain {
    /// Everything received.
    All,
    /// Everything received if stdout and stderr can take more at once;
    /// else nothing more (once a signal was forwarded).
    IfWritable,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Events are coming.
    Running,
    /// The last event came; output is being written out.
    Finishing,
    /// Over.
    Ended,
}

/// One call's state.
#[derive(Debug)]
pub(super) struct Call {
    terminal: bool,
    /// `NAME: ` before a failure's line, when the server has a name.
    prefix: String,
    /// A signal was forwarded to the remote command.
    interrupted: bool,
    /// The remote command was cancelled because stdout is gone.
    cancelled: bool,
    phase: Phase,
}

impl Call {
    /// A call on a remote terminal or not; `prefix` goes before a failure.
    pub(super) fn new(terminal: bool, prefix: String) -> Self {
        Self {
            terminal,
            prefix,
            interrupted: false,
            cancelled: false,
            phase: Phase::Running,
        }
    }

    /// Whether the call listens for this signal to this process.
    pub(super) fn listens(&self, signal: LocalSignal) -> bool {
        signal != LocalSignal::HangUp || self.terminal
    }

    /// What is written out after the last event: everything, or (once a
    /// signal was forwarded) only what stdout and stderr can take, so that
    /// nobody waits for a stdout nobody reads.
    pub(super) fn drain(&self) -> Drain {
        if self.interrupted {
            Drain::IfWritable
        } else {
            Drain::All
        }
    }

    /// Tells the machine what happened; returns what to do.
    pub(super) fn input(&mut self, input: Input) -> Step {
        match self.phase {
            Phase::Ended => Step::Nothing,
            Phase::Finishing => match input {
                // A signal while the output is written out: nobody waits
                // for a stdout nobody reads.
                Input::Signal(s) if self.listens(s) && s != LocalSignal::HangUp => {
                    self.end(Outcome::GaveUp(128 + s.number()))
                }
                _ => Step::Nothing,
            },
            Phase::Running => match input {
                Input::Event(event) => self.event(event),
                Input::Signal(s) => self.signal(s),
                Input::StdoutGone if !self.cancelled => {
                    self.cancelled = true;
                    Step::Forward {
                        signal: None,
                        drop_held: false,
                    }
                }
                Input::StdoutGone => Step::Nothing,
            },
        }
    }

    fn event(&mut self, event: Option<Event>) -> Step {
        let chunk = match event {
            Some(Event::Started { .. } | Event::Reconnecting | Event::Resumed) => {
                return Step::Nothing;
            }
            Some(Event::Stdout(d)) => Chunk::Out(d),
            Some(Event::Stderr(d)) => Chunk::Err(d),
            Some(Event::Exited(_)) | None if self.cancelled => {
                return self.finish(Outcome::Done(EXIT_STDOUT_GONE));
            }
            Some(Event::Exited(status)) => {
                return self.finish(Outcome::Done(exit_code(status.shell_code())));
            }
            Some(Event::Failed(f)) => {
                return self.finish(Outcome::Failed(CliError {
                    message: format!("{}{f}", self.prefix),
                    code: exit_code(f.shell_code()),
                }));
            }
            None => return self.finish(Outcome::Done(EXIT_CONNECTION)),
        };
        Step::Write {
            chunk,
            hold: !self.interrupted,
        }
    }

    fn signal(&mut self, signal: LocalSignal) -> Step {
        if !self.listens(signal) {
            return Step::Nothing;
        }
        let n = signal.number();
        if self.terminal {
            return self.end(Outcome::HungUp(n));
        }
        if self.interrupted {
            return self.end(Outcome::GaveUp(128 + n));
        }
        self.interrupted = true;
        Step::Forward {
            signal: Some(i32::from(n)),
            drop_held: true,
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Step {
        self.phase = Phase::Finishing;
        Step::Finish(outcome)
    }

    fn end(&mut self, outcome: Outcome) -> Step {
        self.phase = Phase::Ended;
        Step::End(outcome)
    }
}

/// The shell's exit code for a status.
fn exit_code(code: i32) -> u8 {
    u8::try_from(code & 0xff).unwrap_or(EXIT_CONNECTION)
}

#[cfg(test)]
mod tests {
    use rex_client::{ExecFailure, ExitStatus};

    use super::*;

    #[test]
    fn shell_exit_codes() {
        assert_eq!(exit_code(3), 3);
        assert_eq!(exit_code(128 + 9), 137);
        assert_eq!(exit_code(256 + 1), 1);
    }

    fn out(s: &'static str) -> Input {
        Input::Event(Some(Event::Stdout(Bytes::from_static(s.as_bytes()))))
    }

    fn write(s: &'static str, hold: bool) -> Step {
        Step::Write {
            chunk: Chunk::Out(Bytes::from_static(s.as_bytes())),
            hold,
        }
    }

    fn exited(code: i32) -> Input {
        Input::Event(Some(Event::Exited(ExitStatus::Code(code))))
    }

    #[test]
    fn output_is_held_for_room_then_the_exit_finishes_with_its_code() {
        let mut call = Call::new(false, String::new());
        let started = Event::Started {
            pid: 1,
            program: None,
        };
        assert_eq!(call.input(Input::Event(Some(started))), Step::Nothing);
        assert_eq!(call.input(out("a")), write("a", true));
        assert_eq!(
            call.input(Input::Event(Some(Event::Stderr(Bytes::from_static(b"e"))))),
            Step::Write {
                chunk: Chunk::Err(Bytes::from_static(b"e")),
                hold: true
            }
        );
        assert_eq!(call.input(exited(3)), Step::Finish(Outcome::Done(3)));
        assert_eq!(call.drain(), Drain::All);
        // Nothing after the last event is taken for an event.
        assert_eq!(call.input(out("late")), Step::Nothing);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        for (event, code) in [
            (Some(Event::Exited(ExitStatus::Signal(9))), 137),
            (Some(Event::Exited(ExitStatus::Code(256 + 1))), 1),
            (None, EXIT_CONNECTION),
        ] {
            let mut call = Call::new(false, String::new());
            assert_eq!(
                call.input(Input::Event(event)),
                Step::Finish(Outcome::Done(code))
            );
        }
    }

    #[test]
    fn a_failure_is_one_line_naming_the_server_with_the_shell_code() {
        for (failure, code) in [
            (ExecFailure::NotFound("no such program".into()), 127),
            (ExecFailure::PermissionDenied("not executable".into()), 126),
            (ExecFailure::Remote("broke".into()), 255),
        ] {
            let mut call = Call::new(false, "box: ".into());
            let line = format!("box: {failure}");
            assert_eq!(
                call.input(Input::Event(Some(Event::Failed(failure)))),
                Step::Finish(Outcome::Failed(CliError {
                    message: line,
                    code
                }))
            );
        }
    }

    #[test]
    fn the_first_signal_is_forwarded_and_the_second_gives_up() {
        for (first, second, number, code) in [
            (LocalSignal::Interrupt, LocalSignal::Interrupt, 2, 130),
            (LocalSignal::Terminate, LocalSignal::Terminate, 15, 143),
            (LocalSignal::Interrupt, LocalSignal::Terminate, 2, 143),
        ] {
            let mut call = Call::new(false, String::new());
            assert_eq!(call.input(out("a")), write("a", true));
            assert_eq!(
                call.input(Input::Signal(first)),
                Step::Forward {
                    signal: Some(number),
                    drop_held: true
                }
            );
            // Output is no longer waited for...
            assert_eq!(call.input(out("b")), write("b", false));
            // ...and the second signal stops waiting for anything.
            assert_eq!(
                call.input(Input::Signal(second)),
                Step::End(Outcome::GaveUp(code))
            );
            assert_eq!(call.input(exited(0)), Step::Nothing);
        }
    }

    #[test]
    fn after_a_forwarded_signal_output_is_written_out_only_if_it_can_be() {
        let mut call = Call::new(false, String::new());
        call.input(Input::Signal(LocalSignal::Terminate));
        // The command's own handler answers: its output and its status.
        assert_eq!(call.input(out("caught")), write("caught", false));
        assert_eq!(call.input(exited(7)), Step::Finish(Outcome::Done(7)));
        assert_eq!(call.drain(), Drain::IfWritable);
    }

    #[test]
    fn a_signal_while_output_is_written_out_gives_up() {
        for (signal, code) in [(LocalSignal::Interrupt, 130), (LocalSignal::Terminate, 143)] {
            let mut call = Call::new(false, String::new());
            assert_eq!(call.input(exited(0)), Step::Finish(Outcome::Done(0)));
            assert_eq!(
                call.input(Input::Signal(signal)),
                Step::End(Outcome::GaveUp(code))
            );
        }
    }

    #[test]
    fn without_a_terminal_sighup_is_not_heard() {
        let mut call = Call::new(false, String::new());
        assert!(!call.listens(LocalSignal::HangUp));
        assert!(call.listens(LocalSignal::Interrupt));
        assert_eq!(
            call.input(Input::Signal(LocalSignal::HangUp)),
            Step::Nothing
        );
        assert_eq!(call.input(out("a")), write("a", true));
    }

    #[test]
    fn on_a_terminal_a_signal_to_this_process_hangs_up() {
        for (signal, number) in [
            (LocalSignal::Interrupt, 2),
            (LocalSignal::Terminate, 15),
            (LocalSignal::HangUp, 1),
        ] {
            let mut call = Call::new(true, String::new());
            assert!(call.listens(signal));
            assert_eq!(
                call.input(Input::Signal(signal)),
                Step::End(Outcome::HungUp(number))
            );
            assert_eq!(call.input(out("a")), Step::Nothing);
        }
    }

    #[test]
    fn a_stdout_that_is_gone_cancels_the_command_once() {
        let mut call = Call::new(false, String::new());
        let cancel = Step::Forward {
            signal: None,
            drop_held: false,
        };
        assert_eq!(call.input(Input::StdoutGone), cancel);
        assert_eq!(call.input(Input::StdoutGone), Step::Nothing);
        // Output is still taken in order (the writer drops stdout's).
        assert_eq!(call.input(out("a")), write("a", true));
        // The cancelled command's status is not this call's: it ends as
        // one killed by SIGPIPE.
        let killed = Input::Event(Some(Event::Exited(ExitStatus::Signal(9))));
        assert_eq!(call.input(killed), Step::Finish(Outcome::Done(141)));
        let mut call = Call::new(false, String::new());
        assert_eq!(call.input(Input::StdoutGone), cancel);
        assert_eq!(call.input(exited(0)), Step::Finish(Outcome::Done(141)));
        let mut call = Call::new(false, String::new());
        assert_eq!(call.input(Input::StdoutGone), cancel);
        assert_eq!(
            call.input(Input::Event(None)),
            Step::Finish(Outcome::Done(141))
        );
        // Without it, a command's own 141 is its own.
        let mut call = Call::new(false, String::new());
        assert_eq!(call.input(exited(141)), Step::Finish(Outcome::Done(141)));
        let mut call = Call::new(false, String::new());
        assert_eq!(call.input(exited(0)), Step::Finish(Outcome::Done(0)));
    }
}
