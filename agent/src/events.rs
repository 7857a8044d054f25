//! A call's events as the agent protocol carries them to the CLI, each
//! with its sequence number. Failures keep their type: the exec-server's by
//! their kind, a lost output with its counts, a lost session as the
//! connection failure it is, so that the CLI prints the same line and exits
//! with the same code as without the agent.

use proto::pb::agent::{self as wire, reply};
use proto::pb::session::terminal_event::Kind;
use proto::pb::session::{ExecError, ExecErrorKind, Exited, Started, TerminalEvent, exited};
use rex_client::{Event, ExecFailure, ExitStatus};

/// An event as the agent protocol carries it, with its sequence number;
/// `None` for what the CLI is not told (a resume is only a pause).
/// Failures keep their type: the exec-server's by their kind, a lost
/// output with its counts, a lost session as the connection failure it is.
pub(crate) fn body_of(ev: Event, seq: u64) -> Option<reply::Body> {
    let event = |kind: Kind| {
        Some(reply::Body::Event(TerminalEvent {
            seq,
            kind: Some(kind),
            timings: None,
        }))
    };
    let error = |kind: ExecErrorKind, message: String| {
        event(Kind::Error(ExecError {
            kind: kind as i32,
            message,
        }))
    };
    let exited = |status: ExitStatus| Exited {
        status: Some(match status {
            ExitStatus::Code(c) => exited::Status::Code(c),
            ExitStatus::Signal(s) => exited::Status::Signal(s),
        }),
    };
    match ev {
        Event::Reconnecting | Event::Resumed => None,
        Event::Started { pid, program } => event(Kind::Started(Started {
            pid,
            program: program.unwrap_or_default(),
        })),
        Event::Stdout(d) => event(Kind::Stdout(d)),
        Event::Stderr(d) => event(Kind::Stderr(d)),
        Event::Exited(status) => event(Kind::Exited(exited(status))),
        Event::Failed(f) => match f {
            ExecFailure::NotFound(m) => error(ExecErrorKind::NotFound, m),
            ExecFailure::PermissionDenied(m) => error(ExecErrorKind::PermissionDenied, m),
            ExecFailure::BadCwd(m) => error(ExecErrorKind::BadCwd, m),
            ExecFailure::Refused(m) => error(ExecErrorKind::BadRequest, m),
            ExecFailure::Remote(m) => error(ExecErrorKind::Internal, m),
            ExecFailure::NoTerminal(m) => error(ExecErrorKind::NoTerminal, m),
            ExecFailure::OutputLost {
                gap,
                exit,
                session_expired,
            } => Some(reply::Body::OutputLost(wire::OutputLost {
                stdout: gap.map_or(0, |g| g.stdout),
                stderr: gap.map_or(0, |g| g.stderr),
                exit: exit.map(exited),
                gap_unknown: gap.is_none(),
                session_expired,
            })),
            lost @ (ExecFailure::SessionLost(_) | ExecFailure::Agent(_)) => {
                Some(reply::Body::Failure(wire::Failure {
                    connection: true,
                    busy: false,
                    message: lost.to_string(),
                }))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// An event through the agent protocol and back, as the CLI gets it.
    fn through(ev: Event) -> Event {
        let body = body_of(ev, 0).expect("passed on");
        rex_client::agent::event_of_reply(body).expect("an event")
    }

    #[test]
    fn events_keep_their_exit_codes_through_the_agent() {
        assert_eq!(body_of(Event::Resumed, 0), None);
        assert_eq!(body_of(Event::Reconnecting, 0), None);
        for ev in [
            Event::Started {
                pid: 7,
                program: Some("bash".into()),
            },
            Event::Started {
                pid: 8,
                program: None,
            },
            Event::Stdout(Bytes::from_static(b"out")),
            Event::Stderr(Bytes::from_static(b"err")),
            Event::Exited(ExitStatus::Code(3)),
            Event::Exited(ExitStatus::Signal(9)),
        ] {
            assert_eq!(through(ev.clone()), ev);
        }
    }

    #[test]
    fn failures_keep_their_type_line_and_exit_code_through_the_agent() {
        let m = || "why".to_owned();
        let lost = ExecFailure::OutputLost {
            gap: Some(rex_client::Gap {
                stdout: 10,
                stderr: 2,
            }),
            exit: Some(ExitStatus::Signal(15)),
            session_expired: true,
        };
        // The same failure as without the agent: same type, same line,
        // same code.
        for f in [
            ExecFailure::NotFound(m()),
            ExecFailure::PermissionDenied(m()),
            ExecFailure::BadCwd(m()),
            ExecFailure::Refused(m()),
            ExecFailure::Remote(m()),
            ExecFailure::NoTerminal(m()),
            lost.clone(),
            ExecFailure::OutputLost {
                gap: Some(rex_client::Gap::default()),
                exit: None,
                session_expired: false,
            },
            ExecFailure::OutputLost {
                gap: None,
                exit: Some(ExitStatus::Code(3)),
                session_expired: false,
            },
        ] {
            assert_eq!(through(Event::Failed(f.clone())), Event::Failed(f));
        }
        // A lost session is a connection failure in the agent's words,
        // printed and exiting as the library's would.
        let agent = ExecFailure::Agent("session lost: the relay ended the link".into());
        let Event::Failed(back) = through(Event::Failed(agent.clone())) else {
            panic!()
        };
        assert_eq!(back.to_string(), agent.to_string());
        assert_eq!(back.shell_code(), 255);
    }
}
