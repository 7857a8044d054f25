//! One CLI's call through the agent: the request decoded, its session
//! claimed, the call made on the CLI's behalf (`agent.dispatch`, a child of
//! the CLI's `tool.dispatch`), its events passed on as they come, and the
//! CLI's stdin, signals and cancel passed the other way.
//!
//! Three tasks serve a call, so that nothing one direction does holds up
//! the other: the reader (requests: signals and cancels go through at once,
//! stdin into a queue the window bounds in bytes), the stdin writer (into
//! the call, acknowledged back so the CLI may send more), and the pump
//! (events out to the CLI's socket; a CLI that stops reading stops its own
//! call only). A failure is passed on typed as the library types it, so
//! that the CLI prints the same line and exits with the same code as
//! without the agent.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use prost::Message;
use proto::keys::PublicKey;
use proto::pb::agent::{self as wire, reply, request};
use proto::pb::session::terminal_event::Kind;
use proto::pb::session::{
    ExecError, ExecErrorKind, ExecRequest, Exited, Started, StdinMode, TerminalEvent, exited,
};
use rex_client::agent::{STDIN_MESSAGE_COST, STDIN_WINDOW, encode, stdin_cost};
use rex_client::{
    Controller, Event, ExecFailure, ExecSpec, ExitStatus, Recording, Target, WarmPolicy,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::pool::{PoolError, Route};
use super::{Agent, Reader, Writer};

/// Serves one call whose request arrived at `taken` (the start of its
/// `agent.dispatch`) on a connection holding `open`, its place within
/// `--max-connections`, which is given back as soon as the call is over.
pub(super) async fn serve(
    agent: Arc<Agent>,
    exec: wire::Exec,
    taken: SystemTime,
    reader: Reader,
    mut writer: Writer,
    open: OwnedSemaphorePermit,
) {
    let (route, key_file, warm) = match exec.route.as_ref().map(route_of) {
        Some(Ok(r)) => r,
        Some(Err(message)) => {
            let _ = writer.send(encode(&failure(false, false, message))).await;
            return;
        }
        None => {
            let message = "the call names no route".to_owned();
            let _ = writer.send(encode(&failure(false, false, message))).await;
            return;
        }
    };
    let (claim, clients) = match agent.pool.claim(&route, &key_file, warm) {
        Ok(c) => c,
        Err(e @ PoolError::Busy(_)) => {
            let _ = writer
                .send(encode(&failure(false, true, e.to_string())))
                .await;
            return;
        }
        Err(e) => {
            let _ = writer
                .send(encode(&failure(false, false, e.to_string())))
                .await;
            return;
        }
    };
    let mut claim = Some(claim);
    agent.activity();
    let recording = agent.recording(exec.record.as_ref());
    let accepted = wire::Reply {
        body: Some(reply::Body::AcceptedUnixNanos(unix_nanos(taken))),
        recording: recording != Recording::Off,
        ..wire::Reply::default()
    };
    if writer.send(encode(&accepted)).await.is_err() {
        return;
    }
    let mut spec = spec_of(exec.request.unwrap_or_default(), exec.trace.as_ref(), taken);
    spec.recording = recording;
    // The targets in order; one that another relay may help with goes on
    // to the next.
    let mut started = None;
    let last = clients.len().saturating_sub(1);
    for (n, (i, client)) in clients.into_iter().enumerate() {
        match client.exec(spec.clone()).await {
            Ok(run) => {
                agent.pool.worked(&route, i);
                started = Some(run);
                break;
            }
            Err(e) if n < last && e.next_relay_may_help() => {}
            Err(e) => {
                let _ = writer
                    .send(encode(&failure(e.is_connection(), false, e.to_string())))
                    .await;
                return;
            }
        }
    }
    let Some(mut run) = started else {
        return;
    };
    let control = run.controller();
    let stdin = StdinQueue::new();
    let (taken_tx, mut taken_rx) = mpsc::channel::<u64>(64);
    let gone = CancellationToken::new();
    agent.tasks.spawn(
        tracing::debug_span!("agent stdin"),
        write_stdin(control.clone(), stdin.rx, taken_tx),
    );
    agent.tasks.spawn(
        tracing::debug_span!("agent requests"),
        read_requests(reader, control, stdin.tx, gone.clone()),
    );
    // The pump: events out, and stdin acknowledgements.
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            // The CLI went away: dropping the call cancels it.
            () = gone.cancelled() => break,
            Some(n) = taken_rx.recv() => {
                let ack = wire::Reply {
                    body: Some(reply::Body::StdinTaken(n)),
                    ..wire::Reply::default()
                };
                if writer.send(encode(&ack)).await.is_err() {
                    break;
                }
            }
            ev = run.next() => {
                let Some(ev) = ev else { break };
                let last = matches!(ev, Event::Exited(_) | Event::Failed(_));
                let ended = if last { run.ended_at().map_or(0, unix_nanos) } else { 0 };
                // The agent's calls see a resume only as a pause.
                let Some(body) = body_of(ev, seq) else { continue };
                seq += 1;
                // The CLI's own spans of the call may wait in the spool
                // for this agent's next session to the exec-server.
                let span_batch_max = if last && agent.pool.forwards_spans() {
                    run.span_batch_max().unwrap_or(0)
                } else {
                    0
                };
                let reply = wire::Reply {
                    body: Some(body),
                    ended_unix_nanos: ended,
                    recording: false,
                    span_batch_max,
                };
                if writer.send(encode(&reply)).await.is_err() {
                    break;
                }
                if last {
                    // The call is over: the next command may have its
                    // place at once, and the session counts it as ended
                    // (the CLI does not wait for what follows).
                    drop(run);
                    drop(open);
                    claim.take();
                    agent.activity();
                    // The call's spans (and record) are written at once,
                    // then `flushed` says so (for a client that waits for
                    // it). Beyond the bound, the background writers
                    // write them without this barrier.
                    let Ok(_writing) = Arc::clone(&agent.writing_out).try_acquire_owned() else {
                        break;
                    };
                    let flushed = agent.write_out(recording != Recording::Off).await;
                    let _ = writer.send(encode(&flushed)).await;
                    break;
                }
            }
        }
    }
    gone.cancel();
    drop(claim);
    agent.activity();
}

/// What the agent needs of a route: the route (the pool's key), checked,
/// the client's key file and the warm policy asked for, if any.
pub(super) fn route_of(
    route: &wire::Route,
) -> Result<(Route, PathBuf, Option<WarmPolicy>), String> {
    let key = |bytes: &Bytes, what: &str| -> Result<PublicKey, String> {
        let array: [u8; 32] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| format!("the {what} key is not 32 bytes"))?;
        Ok(PublicKey::from_bytes(array))
    };
    let targets: Vec<Target> = if route.direct.is_empty() {
        route.relays.iter().cloned().map(Target::Relay).collect()
    } else {
        vec![Target::Direct(route.direct.clone())]
    };
    if targets.is_empty() {
        return Err("no relay or direct address".into());
    }
    let key_file = PathBuf::from(&route.key_file);
    if !key_file.is_absolute() {
        return Err("the key file's path must be absolute".into());
    }
    let ca_file = (!route.ca_file.is_empty()).then(|| PathBuf::from(&route.ca_file));
    if ca_file.as_ref().is_some_and(|p| !p.is_absolute()) {
        return Err("the CA file's path must be absolute".into());
    }
    let warm = route.warm.as_ref().map(|w| {
        if w.off {
            WarmPolicy::off()
        } else {
            WarmPolicy::every(std::time::Duration::from_millis(w.interval_ms))
        }
    });
    Ok((
        Route {
            targets,
            server: key(&route.server_key, "exec-server's")?,
            client: key(&route.client_key, "client's")?,
            ca_file,
        },
        key_file,
        warm,
    ))
}

/// The call as the agent makes it: forwarded, under the CLI's dispatch,
/// starting when the request arrived.
fn spec_of(
    request: ExecRequest,
    trace: Option<&proto::pb::session::TraceContext>,
    taken: SystemTime,
) -> ExecSpec {
    let os = |b: &Bytes| OsStr::from_bytes(b.as_ref()).to_os_string();
    let mut spec = ExecSpec::new(request.argv.iter().map(os));
    spec.login_shell = request.login_shell;
    spec.env = request
        .env
        .iter()
        .map(|v| (os(&v.name), os(&v.value)))
        .collect();
    spec.clear_env = request.clear_env;
    spec.cwd = (!request.cwd.is_empty()).then(|| PathBuf::from(os(&request.cwd)));
    spec.stdin = request.stdin == StdinMode::Pipe as i32;
    spec.terminal = request.terminal.as_ref().map(|t| {
        let size = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        let terminal = rex_client::Terminal::new(size(t.rows), size(t.cols));
        if t.term.is_empty() {
            terminal
        } else {
            terminal.with_term(t.term.clone())
        }
    });
    spec.forwarded = true;
    spec.dispatched_at = Some(taken);
    let extracted = trace
        .map(telemetry::carriers::envelope::extract)
        .unwrap_or(telemetry::w3c::Extracted::Absent);
    spec.parent = Some(telemetry::otel::context_from(&extracted));
    spec
}

/// A call's stdin queue, bounded in bytes: each message costs
/// [`stdin_cost`] of [`STDIN_WINDOW`], given back once the call took it
/// (when the CLI is told it may send that much more).
struct StdinQueue {
    tx: StdinSender,
    rx: StdinReceiver,
}

struct StdinSender {
    queue: mpsc::Sender<Bytes>,
    room: Arc<Semaphore>,
}

struct StdinReceiver {
    queue: mpsc::Receiver<Bytes>,
    room: Arc<Semaphore>,
}

impl StdinQueue {
    fn new() -> Self {
        // Every message costs at least STDIN_MESSAGE_COST: the window holds
        // at most this many.
        let most = (STDIN_WINDOW / STDIN_MESSAGE_COST) as usize;
        let (tx, rx) = mpsc::channel(most);
        let room = Arc::new(Semaphore::new(STDIN_WINDOW as usize));
        Self {
            tx: StdinSender {
                queue: tx,
                room: Arc::clone(&room),
            },
            rx: StdinReceiver { queue: rx, room },
        }
    }
}

impl StdinSender {
    /// Queues `data` if the window has room for it; false if not (the CLI
    /// sent beyond its window).
    fn push(&self, data: Bytes) -> bool {
        let Ok(permit) = self.room.try_acquire_many(stdin_cost(data.len())) else {
            return false;
        };
        if self.queue.try_send(data).is_err() {
            return false;
        }
        permit.forget();
        true
    }
}

/// The requests after the first: stdin into the queue (the window bounds
/// it: more is the CLI breaking the protocol, which ends its call),
/// signals and cancels into the call at once.
async fn read_requests(
    mut reader: Reader,
    control: Controller,
    stdin: StdinSender,
    gone: CancellationToken,
) {
    let mut stdin = Some(stdin);
    loop {
        let next = tokio::select! {
            () = gone.cancelled() => return,
            next = reader.next() => next,
        };
        let Some(Ok(bytes)) = next else {
            // The CLI went away (or sent garbage): its call ends.
            gone.cancel();
            return;
        };
        let Ok(req) = wire::Request::decode(bytes.freeze()) else {
            gone.cancel();
            return;
        };
        match req.body {
            Some(request::Body::Stdin(data)) => {
                if !stdin.as_ref().is_some_and(|tx| tx.push(data)) {
                    gone.cancel();
                    return;
                }
            }
            Some(request::Body::StdinClose(_)) => {
                // The stdin writer closes it after what came before.
                stdin = None;
            }
            Some(request::Body::Signal(n)) => {
                let _ = control.signal(n).await;
            }
            Some(request::Body::Cancel(_)) => {
                let _ = control.cancel().await;
            }
            Some(request::Body::Resize(r)) => {
                // A size the call cannot take keeps the terminal's own.
                if let (Ok(rows), Ok(cols)) = (u16::try_from(r.rows), u16::try_from(r.cols)) {
                    let _ = control.resize(rows, cols).await;
                }
            }
            _ => {
                gone.cancel();
                return;
            }
        }
    }
}

/// Writes the CLI's stdin into the call, telling the CLI what was taken
/// (in window units: its room is given back).
async fn write_stdin(control: Controller, mut rx: StdinReceiver, taken: mpsc::Sender<u64>) {
    while let Some(data) = rx.queue.recv().await {
        let cost = stdin_cost(data.len());
        if control.write_stdin(&data).await.is_err() {
            return;
        }
        rx.room.add_permits(cost as usize);
        if taken.send(u64::from(cost)).await.is_err() {
            return;
        }
    }
    // The queue's sender went: the CLI closed its stdin (or went away, when
    // the close does not matter any more).
    let _ = control.close_stdin().await;
}

/// An event as the agent protocol carries it, with its sequence number;
/// `None` for what the CLI is not told (a resume is only a pause).
/// Failures keep their type: the exec-server's by their kind, a lost
/// output with its counts, a lost session as the connection failure it is.
fn body_of(ev: Event, seq: u64) -> Option<reply::Body> {
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

fn failure(connection: bool, busy: bool, message: String) -> wire::Reply {
    wire::Reply {
        body: Some(reply::Body::Failure(wire::Failure {
            connection,
            busy,
            message,
        })),
        ..wire::Reply::default()
    }
}

/// Unix nanoseconds of `t` (0 before the epoch).
pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_names_its_route_or_is_refused() {
        let key = proto::keys::StaticKeypair::generate().unwrap().public();
        let mut r = wire::Route {
            relays: vec!["http://a:1".into(), "http://b:2".into()],
            server_key: Bytes::copy_from_slice(key.as_bytes()),
            client_key: Bytes::copy_from_slice(key.as_bytes()),
            key_file: "/k".into(),
            ..Default::default()
        };
        let (route, key_file, warm) = route_of(&r).unwrap();
        assert_eq!(route.targets.len(), 2);
        assert_eq!(route.server, key);
        assert_eq!(key_file, PathBuf::from("/k"));
        assert_eq!(warm, None, "the agent's own policy");
        r.warm = Some(wire::WarmOption {
            off: false,
            interval_ms: 1500,
        });
        assert_eq!(
            route_of(&r).unwrap().2,
            Some(WarmPolicy::every(Duration::from_millis(1500)))
        );
        r.warm = Some(wire::WarmOption {
            off: true,
            interval_ms: 0,
        });
        assert_eq!(route_of(&r).unwrap().2, Some(WarmPolicy::off()));
        r.direct = "http://d:3".into();
        assert_eq!(
            route_of(&r).unwrap().0.targets,
            vec![Target::Direct("http://d:3".into())]
        );
        r.key_file = "relative".into();
        assert!(route_of(&r).unwrap_err().contains("absolute"));
        r.key_file = "/k".into();
        r.server_key = Bytes::from_static(b"short");
        assert!(route_of(&r).unwrap_err().contains("32 bytes"));
    }

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

    #[test]
    fn the_stdin_queue_is_bounded_in_bytes() {
        let queue = StdinQueue::new();
        let chunk = Bytes::from(vec![0u8; 32 * 1024]);
        let fits = (STDIN_WINDOW / stdin_cost(chunk.len())) as usize;
        for _ in 0..fits {
            assert!(queue.tx.push(chunk.clone()));
        }
        assert!(!queue.tx.push(chunk.clone()), "beyond the window");
        // Tiny messages count their cost too: the queue's count is bounded
        // by the same window.
        let small = StdinQueue::new();
        let most = (STDIN_WINDOW / STDIN_MESSAGE_COST) as usize;
        for _ in 0..most {
            assert!(small.tx.push(Bytes::new()));
        }
        assert!(!small.tx.push(Bytes::new()));
    }

    #[test]
    fn the_time_is_in_unix_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_234);
        assert_eq!(unix_nanos(t), 1_234);
    }
}
