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
use proto::pb::agent::{self as wire, reply, request};
use proto::pb::session::{ExecRequest, StdinMode};
use rex_client::agent::{encode, stdin_cost};
use rex_client::{Controller, Event, ExecSpec, Recording};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::events::body_of;
use crate::pool::PoolError;
use crate::route::{Asked, route_of};
use crate::state::Agent;
use crate::stdin::{StdinQueue, StdinReceiver, StdinSender};

/// The reading half of the CLI's connection, framed.
pub(crate) type Reader = FramedRead<tokio::net::unix::OwnedReadHalf, LengthDelimitedCodec>;
/// The writing half of the CLI's connection, framed.
pub(crate) type Writer = FramedWrite<tokio::net::unix::OwnedWriteHalf, LengthDelimitedCodec>;

/// Serves one call whose request arrived at `taken` (the start of its
/// `agent.dispatch`) on a connection holding `open`, its place within the
/// connection limit, which is given back as soon as the call is over.
pub(crate) async fn serve(
    agent: Arc<Agent>,
    exec: wire::Exec,
    taken: SystemTime,
    reader: Reader,
    mut writer: Writer,
    open: OwnedSemaphorePermit,
) {
    let Asked {
        route,
        key_file,
        warm,
    } = match exec.route.as_ref().map(route_of) {
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
    while let Some(data) = rx.recv().await {
        let cost = stdin_cost(data.len());
        if control.write_stdin(&data).await.is_err() {
            return;
        }
        rx.taken(cost);
        if taken.send(u64::from(cost)).await.is_err() {
            return;
        }
    }
    // The queue's sender went: the CLI closed its stdin (or went away, when
    // the close does not matter any more).
    let _ = control.close_stdin().await;
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
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_time_is_in_unix_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_234);
        assert_eq!(unix_nanos(t), 1_234);
    }
}
