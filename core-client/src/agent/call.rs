//! One CLI's call through the agent: the request decoded, its session
//! claimed, the call made on the CLI's behalf (`agent.dispatch`, a child of
//! the CLI's `tool.dispatch`), its events passed on as they come, and the
//! CLI's stdin, signals and cancel passed the other way.
//!
//! Three tasks serve a call, so that nothing one direction does holds up
//! the other: the reader (requests: signals and cancels go through at once,
//! stdin into a queue the window bounds), the stdin writer (into the call,
//! acknowledged back so the CLI may send more), and the pump (events out to
//! the CLI's socket; a CLI that stops reading stops its own call only).

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
use rex_client::agent::{STDIN_WINDOW, encode};
use rex_client::{Controller, Event, ExecFailure, ExecSpec, ExitStatus, Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pool::{PoolError, Route};
use super::{Agent, Reader, Writer};

/// Serves one call whose request arrived at `taken` (the start of its
/// `agent.dispatch`).
pub(super) async fn serve(
    agent: Arc<Agent>,
    exec: wire::Exec,
    taken: SystemTime,
    reader: Reader,
    mut writer: Writer,
) {
    let route = match route_of(&exec) {
        Ok(r) => r,
        Err(message) => {
            let _ = writer.send(encode(&failure(false, false, message))).await;
            return;
        }
    };
    let (claim, clients) = match agent.pool.claim(&route, &PathBuf::from(&exec.key_file)) {
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
    agent.activity();
    let accepted = wire::Reply {
        body: Some(reply::Body::AcceptedUnixNanos(unix_nanos(taken))),
        ended_unix_nanos: 0,
    };
    if writer.send(encode(&accepted)).await.is_err() {
        return;
    }
    let spec = spec_of(exec.request.unwrap_or_default(), exec.trace.as_ref(), taken);
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
            Err(e) if n < last && crate::cli::next_relay_may_help(&e) => {}
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
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(STDIN_WINDOW as usize);
    let (taken_tx, mut taken_rx) = mpsc::channel::<u64>(64);
    let gone = CancellationToken::new();
    agent.tasks.spawn(
        tracing::debug_span!("agent stdin"),
        write_stdin(control.clone(), stdin_rx, taken_tx),
    );
    agent.tasks.spawn(
        tracing::debug_span!("agent requests"),
        read_requests(reader, control, stdin_tx, gone.clone()),
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
                    ended_unix_nanos: 0,
                };
                if writer.send(encode(&ack)).await.is_err() {
                    break;
                }
            }
            ev = run.next() => {
                let Some(ev) = ev else { break };
                let last = matches!(ev, Event::Exited(_) | Event::Failed(_));
                let ended = if last { run.ended_at().map_or(0, unix_nanos) } else { 0 };
                let body = match ev {
                    // The agent's calls see a resume only as a pause.
                    Event::Reconnecting | Event::Resumed => continue,
                    Event::Failed(ExecFailure::SessionLost(lost)) => {
                        reply::Body::Failure(wire::Failure {
                            connection: true,
                            busy: false,
                            message: format!("session lost: {lost}"),
                        })
                    }
                    other => reply::Body::Event(TerminalEvent {
                        seq,
                        kind: to_kind(other),
                        timings: None,
                    }),
                };
                seq += 1;
                let reply = wire::Reply {
                    body: Some(body),
                    ended_unix_nanos: ended,
                };
                if writer.send(encode(&reply)).await.is_err() {
                    break;
                }
                if last {
                    // The call's spans are written before its CLI exits.
                    drop(run);
                    agent.flush_spans().await;
                    let flushed = wire::Reply {
                        body: Some(reply::Body::Flushed(wire::Empty {})),
                        ended_unix_nanos: 0,
                    };
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

/// What the agent needs of the request: the route, checked.
fn route_of(exec: &wire::Exec) -> Result<Route, String> {
    let key = |bytes: &Bytes, what: &str| -> Result<PublicKey, String> {
        let array: [u8; 32] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| format!("the {what} key is not 32 bytes"))?;
        Ok(PublicKey::from_bytes(array))
    };
    let targets: Vec<Target> = if exec.direct.is_empty() {
        exec.relays.iter().cloned().map(Target::Relay).collect()
    } else {
        vec![Target::Direct(exec.direct.clone())]
    };
    if targets.is_empty() {
        return Err("no relay or direct address".into());
    }
    if !std::path::Path::new(&exec.key_file).is_absolute() {
        return Err("the key file's path must be absolute".into());
    }
    let ca_file = (!exec.ca_file.is_empty()).then(|| PathBuf::from(&exec.ca_file));
    if ca_file.as_ref().is_some_and(|p| !p.is_absolute()) {
        return Err("the CA file's path must be absolute".into());
    }
    Ok(Route {
        targets,
        server: key(&exec.server_key, "exec-server's")?,
        client: key(&exec.client_key, "client's")?,
        ca_file,
    })
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

/// The requests after the first: stdin into the queue (the window bounds
/// it: more is the CLI breaking the protocol, which ends its call),
/// signals and cancels into the call at once.
async fn read_requests(
    mut reader: Reader,
    control: Controller,
    stdin: mpsc::Sender<Bytes>,
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
                let fits = stdin.as_ref().is_some_and(|tx| tx.try_send(data).is_ok());
                if !fits {
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

/// Writes the CLI's stdin into the call, telling the CLI what was taken.
async fn write_stdin(control: Controller, mut rx: mpsc::Receiver<Bytes>, taken: mpsc::Sender<u64>) {
    while let Some(data) = rx.recv().await {
        let n = data.len() as u64;
        if control.write_stdin(&data).await.is_err() {
            return;
        }
        if taken.send(n).await.is_err() {
            return;
        }
    }
    // The queue's sender went: the CLI closed its stdin (or went away, when
    // the close does not matter any more).
    let _ = control.close_stdin().await;
}

/// An event as the agent protocol carries it.
fn to_kind(ev: Event) -> Option<Kind> {
    let error = |kind: ExecErrorKind, message: String| {
        Kind::Error(ExecError {
            kind: kind as i32,
            message,
        })
    };
    Some(match ev {
        Event::Reconnecting | Event::Resumed => return None,
        Event::Started { pid, program } => Kind::Started(Started {
            pid,
            program: program.unwrap_or_default(),
        }),
        Event::Stdout(d) => Kind::Stdout(d),
        Event::Stderr(d) => Kind::Stderr(d),
        Event::Exited(ExitStatus::Code(c)) => Kind::Exited(Exited {
            status: Some(exited::Status::Code(c)),
        }),
        Event::Exited(ExitStatus::Signal(s)) => Kind::Exited(Exited {
            status: Some(exited::Status::Signal(s)),
        }),
        Event::Failed(f) => {
            let kind = match &f {
                ExecFailure::NotFound(_) => ExecErrorKind::NotFound,
                ExecFailure::PermissionDenied(_) => ExecErrorKind::PermissionDenied,
                ExecFailure::BadCwd(_) => ExecErrorKind::BadCwd,
                ExecFailure::Refused(_) => ExecErrorKind::BadRequest,
                _ => ExecErrorKind::Internal,
            };
            error(kind, f.to_string())
        }
    })
}

fn failure(connection: bool, busy: bool, message: String) -> wire::Reply {
    wire::Reply {
        body: Some(reply::Body::Failure(wire::Failure {
            connection,
            busy,
            message,
        })),
        ended_unix_nanos: 0,
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
        let mut exec = wire::Exec {
            relays: vec!["http://a:1".into(), "http://b:2".into()],
            server_key: Bytes::copy_from_slice(key.as_bytes()),
            client_key: Bytes::copy_from_slice(key.as_bytes()),
            key_file: "/k".into(),
            ..Default::default()
        };
        let route = route_of(&exec).unwrap();
        assert_eq!(route.targets.len(), 2);
        assert_eq!(route.server, key);
        exec.direct = "http://d:3".into();
        assert_eq!(
            route_of(&exec).unwrap().targets,
            vec![Target::Direct("http://d:3".into())]
        );
        exec.key_file = "relative".into();
        assert!(route_of(&exec).unwrap_err().contains("absolute"));
        exec.key_file = "/k".into();
        exec.server_key = Bytes::from_static(b"short");
        assert!(route_of(&exec).unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn events_keep_their_exit_codes_through_the_agent() {
        let back = |ev| rex_client::agent::event_of(to_kind(ev).unwrap());
        assert_eq!(to_kind(Event::Resumed), None);
        assert_eq!(
            back(Event::Exited(ExitStatus::Code(3))),
            Event::Exited(ExitStatus::Code(3))
        );
        assert_eq!(
            back(Event::Exited(ExitStatus::Signal(9))),
            Event::Exited(ExitStatus::Signal(9))
        );
        let Event::Failed(f) = back(Event::Failed(ExecFailure::NotFound("x".into()))) else {
            panic!()
        };
        assert_eq!(f.shell_code(), 127);
        let Event::Failed(f) = back(Event::Failed(ExecFailure::BadCwd("x".into()))) else {
            panic!()
        };
        assert_eq!(f.shell_code(), 126);
    }

    #[test]
    fn the_time_is_in_unix_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_234);
        assert_eq!(unix_nanos(t), 1_234);
    }
}
