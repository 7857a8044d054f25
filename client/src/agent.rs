//! Calls through a local agent (`core-client agent`), which holds warm
//! sessions on behalf of short-lived processes (as ssh's ControlMaster
//! does): the caller gets the same [`Execution`] as through a session of
//! its own, while the agent runs the call on a session it keeps.
//!
//! One Unix-socket connection per call carries the agent protocol
//! (`proto::pb::agent`; each message a `u32` length and the message). Stdin
//! goes within a window the agent acknowledges (counted in bytes, each
//! message costing [`STDIN_MESSAGE_COST`] more, so that the agent's queue
//! is bounded in bytes), so a signal never waits behind it; replies are
//! read only while the caller has room, so a caller that stops reading
//! holds up its own call only.
//!
//! Records: when [`AgentConfig::records_dir`] is the agent's own data
//! directory, the agent keeps the call's record (this process writes
//! none); otherwise the record is kept here as for a session.
//!
//! Spans: the dispatch (`tool.dispatch`) starts as for a session; its
//! stages are `dispatch.prepare`, `agent.request` (until the agent took the
//! call, at the instant the agent's `agent.dispatch` starts), the agent's
//! `agent.dispatch` (made by the agent, with the session's stages inside),
//! `agent.reply` (from the agent handing the last event on until it is
//! decoded here) and `terminal.handoff`: one host, one clock, so they tile.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, Tracer};
use prost::Message;
use proto::keys::PublicKey;
use proto::pb::agent::{self as wire, reply, request};
use proto::pb::session::exited;
use telemetry::spans;
use tokio::net::UnixStream;
use tokio::sync::{Notify, mpsc};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::agent_call::AgentCall;
pub use crate::agent_call::{STDIN_MESSAGE_COST, STDIN_WINDOW, stdin_cost};
use crate::dispatch::{Dispatch, Records, request_for};
use crate::error::{AgentError, ClientError};
use crate::exec::{Event, ExecFailure, ExecSpec, ExitStatus, Recording};
use crate::execution::{Carrier, Controller, Delivery, Execution, Sent};
use crate::session::Routed;

/// The largest agent-protocol message (an exec request with a large
/// environment, or an output chunk).
pub const MAX_MESSAGE: usize = proto::limits::MAX_ENVELOPE + 64 * 1024;
/// Replies buffered per call before the connection stops being read.
const REPLY_QUEUE: usize = 64;
/// Stdin chunks and controls queued per call.
const COMMAND_QUEUE: usize = 16;
/// How long, after a call's last event, to wait for the agent to say it
/// has written the call's spans.
const FLUSHED_WITHIN: Duration = Duration::from_secs(2);

/// What a reply of the agent's means for the call: an event (a failure the
/// agent reported is one too, typed as the library types it), or `None`
/// for a reply that carries none.
pub fn event_of_reply(body: reply::Body) -> Option<Event> {
    Some(match body {
        reply::Body::Event(ev) => crate::router::to_event(ev.kind?),
        reply::Body::Failure(f) => Event::Failed(ExecFailure::Agent(f.message)),
        reply::Body::OutputLost(lost) => Event::Failed(ExecFailure::OutputLost {
            gap: (!lost.gap_unknown).then_some(crate::exec::Gap {
                stdout: lost.stdout,
                stderr: lost.stderr,
            }),
            session_expired: lost.session_expired,
            exit: lost.exit.and_then(|x| match x.status? {
                exited::Status::Code(c) => Some(ExitStatus::Code(c)),
                exited::Status::Signal(n) => Some(ExitStatus::Signal(n)),
            }),
        }),
        _ => Event::Failed(ExecFailure::Agent(
            "the agent sent something unexpected".into(),
        )),
    })
}

/// The agent protocol's framing on a Unix socket.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_MESSAGE)
        .new_codec()
}

/// Encodes one agent-protocol message.
pub fn encode(message: &impl Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.encoded_len());
    // Encoding into a buffer sized for the message cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// How to reach an agent and what the calls need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The agent's socket.
    pub socket: PathBuf,
    /// Relay URLs, tried in order by the agent (or none, with `direct`).
    pub relays: Vec<String>,
    /// An exec-server's own listener, instead of relays.
    pub direct: Option<String>,
    /// The exec-server's public key (pinned).
    pub server: PublicKey,
    /// The client's private key file, which the agent reads itself.
    pub key_file: PathBuf,
    /// The client's public key (the agent checks the file holds its pair).
    pub client: PublicKey,
    /// The CA certificates (PEM file) `https://` relays are checked
    /// against; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// The server's warm policy, when the settings give one (`None`: the
    /// agent's own).
    pub warm: Option<crate::WarmPolicy>,
    /// How long to wait for the agent to take a call.
    pub timeout: Duration,
    /// Where command records go (off the hot path), if anywhere.
    #[cfg(feature = "records")]
    pub metadata: Option<metadata::Persister>,
    /// Record the commands' arguments too (the program name always is).
    pub record_args: bool,
    /// Ask the agent to keep each call's record, if the agent keeps the
    /// records in this directory (absolute): then this process writes no
    /// record (and opens no database). When the agent does not, the record
    /// goes to `metadata` as usual.
    pub records_dir: Option<PathBuf>,
}

impl AgentConfig {
    /// The agent at `socket`, for the exec-server whose key is `server`,
    /// with the client's key pair in `key_file` (`client` its public half),
    /// waiting `timeout` for the agent to take a call: no relays and no
    /// exec-server listener yet, the system's CA certificates, the agent's
    /// own warm policy, and no records.
    pub fn new(
        socket: PathBuf,
        server: PublicKey,
        key_file: PathBuf,
        client: PublicKey,
        timeout: Duration,
    ) -> Self {
        Self {
            socket,
            relays: Vec::new(),
            direct: None,
            server,
            key_file,
            client,
            ca_file: None,
            warm: None,
            timeout,
            #[cfg(feature = "records")]
            metadata: None,
            record_args: false,
            records_dir: None,
        }
    }

    /// The route as the agent protocol names it (the agent holds one
    /// session per route).
    pub fn route(&self) -> wire::Route {
        wire::Route {
            relays: self.relays.clone(),
            direct: self.direct.clone().unwrap_or_default(),
            server_key: Bytes::copy_from_slice(self.server.as_bytes()),
            key_file: self.key_file.to_string_lossy().into_owned(),
            client_key: Bytes::copy_from_slice(self.client.as_bytes()),
            ca_file: self
                .ca_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            warm: self.warm.map(|w| wire::WarmOption {
                off: !w.enabled,
                interval_ms: u64::try_from(w.interval.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}

/// Runs calls through a local agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    config: Arc<AgentConfig>,
    server_id: String,
    tasks: lifecycle::Tasks,
    /// Connections not yet over (the agent may still be writing their
    /// spans), and a wake-up when one ends.
    open: Arc<(AtomicUsize, Notify)>,
    /// Why a record the agent keeps was not saved (the last such).
    record_error: Arc<Mutex<Option<String>>>,
}

impl AgentClient {
    /// A client of the agent at `config.socket`; nothing is dialled until
    /// a call.
    pub fn new(config: AgentConfig) -> Self {
        Self {
            server_id: config.server.server_id(),
            config: Arc::new(config),
            tasks: lifecycle::Tasks::new(),
            open: Arc::new((AtomicUsize::new(0), Notify::new())),
            record_error: Arc::default(),
        }
    }

    /// Why the agent could not save (or did not confirm) the record of a
    /// call it kept, once the call is over ([`settle`](Self::settle)).
    pub fn record_error(&self) -> Option<String> {
        self.record_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (at most `within`) until the agent has written the spans of
    /// every call made through this client, so that the trace is whole
    /// when this process exits.
    pub async fn settle(&self, within: Duration) {
        let (open, ended) = &*self.open;
        let _ = tokio::time::timeout(within, async {
            loop {
                let wake = ended.notified();
                if open.load(Ordering::Acquire) == 0 {
                    return;
                }
                wake.await;
            }
        })
        .await;
    }

    /// Runs a command through the agent; its events arrive on the returned
    /// [`Execution`] as the agent passes them on. An agent that cannot be
    /// reached, or is busy, is an [`AgentError`] (the caller may run the
    /// call itself instead).
    pub async fn exec(&self, spec: ExecSpec) -> Result<Execution, ClientError> {
        let request = request_for(&spec)?;
        let config = &self.config;
        let records = Records {
            #[cfg(feature = "records")]
            store: config.metadata.as_ref(),
            #[cfg(not(feature = "records"))]
            store: None,
            args: config.record_args,
        }
        .chosen(spec.recording);
        // The agent is asked to keep the record; until it says it does,
        // none is started here.
        let record_in = match (&config.records_dir, spec.recording) {
            (Some(dir), Recording::AsConfigured | Recording::On { .. }) => Some(wire::RecordIn {
                data_dir: dir.to_string_lossy().into_owned(),
                args: records.args,
            }),
            _ => None,
        };
        let here = if record_in.is_some() {
            records.chosen(Recording::Off)
        } else {
            records
        };
        let mut dispatch = Dispatch::begin(&spec, &self.server_id, here);
        let tracer = opentelemetry::global::tracer("core-client");
        let mut asking = tracer
            .span_builder(spans::AGENT_REQUEST)
            .with_start_time(dispatch.prepared)
            .start_with_context(&tracer, &dispatch.cx);
        let asked = record_in.is_some();
        let exec = wire::Exec {
            route: Some(config.route()),
            request: Some(request),
            trace: dispatch.trace.clone(),
            record: record_in,
        };
        let taken = tokio::time::timeout(config.timeout, self.open(exec)).await;
        // A call the agent did not take is recorded here, as failed.
        let (framed, accepted, recording) = match taken {
            Ok(Ok(open)) => open,
            Ok(Err(e)) => {
                asking.set_status(opentelemetry::trace::Status::error(e.to_string()));
                asking.end();
                if asked {
                    dispatch.start_record(&spec, &self.server_id, records);
                }
                return Err(dispatch.fail(e.into()));
            }
            Err(_) => {
                asking.end();
                if asked {
                    dispatch.start_record(&spec, &self.server_id, records);
                }
                return Err(dispatch.fail(AgentError::Lost("did not take the call in time").into()));
            }
        };
        let accepted = accepted.max(dispatch.prepared);
        asking.end_with_timestamp(accepted);
        if asked && !recording {
            dispatch.start_record(&spec, &self.server_id, records);
        }

        let (events_tx, events_rx) = mpsc::channel(REPLY_QUEUE);
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (controls, controls_rx) = mpsc::channel(COMMAND_QUEUE);
        let call = AgentCall::new(commands, controls);
        let link = Connection {
            framed,
            events: events_tx,
            commands: commands_rx,
            controls: controls_rx,
            call: call.clone(),
            parent: dispatch.cx.clone(),
            recording,
            record_error: Arc::clone(&self.record_error),
        };
        let open = Arc::clone(&self.open);
        open.0.fetch_add(1, Ordering::AcqRel);
        self.tasks
            .spawn(tracing::debug_span!("agent call"), async move {
                link.run().await;
                open.0.fetch_sub(1, Ordering::AcqRel);
                open.1.notify_waiters();
            });
        let terminal = spec.terminal.is_some();
        let sent = Arc::new(Sent::default());
        let control = Controller::new(
            1,
            Carrier::Agent(call),
            dispatch.cx.clone(),
            terminal,
            None,
            Arc::clone(&sent),
        );
        Ok(Execution::new(
            control,
            (events_rx, Arc::default()),
            dispatch.span.take(),
            Delivery::new(
                dispatch.dispatched,
                dispatch.record.take(),
                sent,
                terminal,
                spec.login_shell,
            ),
            None,
        ))
    }

    /// Connects, sends the call, and waits for the agent to take it:
    /// the connection, when the agent's `agent.dispatch` began, and
    /// whether the agent keeps the call's record.
    async fn open(
        &self,
        exec: wire::Exec,
    ) -> Result<(Framed<UnixStream, LengthDelimitedCodec>, SystemTime, bool), AgentError> {
        let path = &self.config.socket;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| AgentError::Unavailable {
                path: path.clone(),
                source: Arc::new(e),
            })?;
        let mut framed = Framed::new(stream, codec());
        let first = wire::Request {
            body: Some(request::Body::Exec(exec)),
        };
        // An agent that takes the connection and closes it (at its limit,
        // say) is there: not an agent that has gone.
        framed
            .send(encode(&first))
            .await
            .map_err(|_| AgentError::Lost("closed the connection"))?;
        let reply = next_reply(&mut framed).await?;
        match reply.body {
            Some(reply::Body::AcceptedUnixNanos(n)) => Ok((
                framed,
                SystemTime::UNIX_EPOCH + Duration::from_nanos(n),
                reply.recording,
            )),
            Some(reply::Body::Failure(f)) if f.busy => Err(AgentError::Busy(f.message)),
            Some(reply::Body::Failure(f)) => Err(AgentError::Dispatch {
                connection: f.connection,
                message: f.message,
            }),
            _ => Err(AgentError::Lost("answered a call with something else")),
        }
    }
}

async fn next_reply(
    framed: &mut Framed<UnixStream, LengthDelimitedCodec>,
) -> Result<wire::Reply, AgentError> {
    match framed.next().await {
        Some(Ok(bytes)) => wire::Reply::decode(bytes.freeze())
            .map_err(|_| AgentError::Lost("sent an undecodable reply")),
        Some(Err(_)) => Err(AgentError::Lost("sent a malformed reply")),
        None => Err(AgentError::Lost("closed the connection")),
    }
}

/// One call's connection to the agent, driven by a task of its own.
struct Connection {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
    events: mpsc::Sender<Routed>,
    commands: mpsc::Receiver<wire::Request>,
    controls: mpsc::Receiver<wire::Request>,
    call: AgentCall,
    /// The call's dispatch context (parent of `agent.reply`).
    parent: opentelemetry::Context,
    /// The agent keeps the call's record.
    recording: bool,
    /// Why the agent could not save a record it keeps.
    record_error: Arc<Mutex<Option<String>>>,
}

impl Connection {
    async fn run(mut self) {
        let mut pending: Option<Routed> = None;
        let mut finished = false;
        let mut writing = true;
        loop {
            let room = self.events.clone();
            tokio::select! {
                biased;
                () = self.call.stopped() => return,
                Some(msg) = self.controls.recv(), if writing => {
                    if self.framed.send(encode(&msg)).await.is_err() {
                        writing = false;
                    }
                }
                permit = room.reserve(), if pending.is_some() => {
                    let Ok(permit) = permit else { return };
                    if let Some(r) = pending.take() {
                        permit.send(r);
                    }
                    if finished {
                        // The agent says when it has written the call's
                        // spans and record (bounded: a call's end never
                        // waits on it).
                        let flushed = tokio::time::timeout(FLUSHED_WITHIN, self.framed.next()).await;
                        self.note_flushed(flushed.ok().flatten().and_then(Result::ok));
                        return;
                    }
                }
                reply = self.framed.next(), if pending.is_none() => {
                    let reply = match reply {
                        Some(Ok(bytes)) => wire::Reply::decode(bytes.freeze()).ok(),
                        _ => None,
                    };
                    let Some(reply) = reply else {
                        self.lose("the agent went away during the command");
                        return;
                    };
                    match self.reply(reply) {
                        Some((routed, last)) => {
                            pending = Some(routed);
                            finished = last;
                        }
                        None => continue,
                    }
                }
                msg = self.commands.recv(), if writing => match msg {
                    Some(msg) => {
                        if self.framed.send(encode(&msg)).await.is_err() {
                            writing = false;
                        }
                    }
                    None => writing = false,
                },
            }
        }
    }

    /// What the agent said after the call's last event: a record it keeps
    /// that was not saved (or not confirmed) is kept for the caller.
    fn note_flushed(&self, reply: Option<BytesMut>) {
        if !self.recording {
            return;
        }
        let error = match reply.and_then(|b| wire::Reply::decode(b.freeze()).ok()) {
            Some(wire::Reply {
                body: Some(reply::Body::Flushed(f)),
                ..
            }) => (!f.record_error.is_empty()).then_some(f.record_error),
            _ => Some(
                "the agent did not confirm that it saved the command's record (it may yet)"
                    .to_owned(),
            ),
        };
        if let Some(e) = error {
            *self
                .record_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
    }

    /// The connection ended before the call: the caller is told.
    fn lose(&mut self, reason: &str) {
        self.call.lose(reason);
        let _ = self.events.try_send(Routed {
            event: Event::Failed(ExecFailure::Agent(reason.to_owned())),
            at: Instant::now(),
            decoded: SystemTime::now(),
            flow: None,
        });
    }

    /// What a reply means for the caller: an event (and whether it is the
    /// last), or nothing (credit given back).
    fn reply(&mut self, reply: wire::Reply) -> Option<(Routed, bool)> {
        let decoded = SystemTime::now();
        let event = match reply.body? {
            reply::Body::StdinTaken(n) => {
                self.call.stdin_taken(n);
                return None;
            }
            body => event_of_reply(body)?,
        };
        let last = matches!(event, Event::Exited(_) | Event::Failed(_));
        if last {
            self.call.set_span_batch_max(reply.span_batch_max);
        }
        if last && reply.ended_unix_nanos != 0 {
            // The last event's way from the agent's hand to ours.
            let handed = SystemTime::UNIX_EPOCH + Duration::from_nanos(reply.ended_unix_nanos);
            let tracer = opentelemetry::global::tracer("core-client");
            let mut span = tracer
                .span_builder(spans::AGENT_REPLY)
                .with_start_time(handed.min(decoded))
                .with_attributes(vec![KeyValue::new("rex.message", "last")])
                .start_with_context(&tracer, &self.parent);
            span.end_with_timestamp(decoded);
        }
        Some((
            Routed {
                event,
                at: Instant::now(),
                decoded,
                flow: None,
            },
            last,
        ))
    }
}
