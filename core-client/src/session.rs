//! The client side of one established session: a single driver task that
//! writes queued messages, reads frames, and routes terminal events to
//! their calls. Callers talk to it through a bounded queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proto::envelope;
use proto::noise::Transport;
use proto::pb::session::{Ping, envelope::Body, exited, terminal_event};
use proto::pb::tunnel::{CloseReason, Frame, FrameKind};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::connect::Established;
use crate::exec::{Event, ExecFailure, ExitStatus};

/// Plaintext buffered in the transport before the driver stops taking
/// caller messages.
const TRANSPORT_HIGH_WATER: usize = 256 * 1024;

/// A message from a caller to the driver.
#[derive(Debug)]
pub enum Command {
    /// Start a call: register its event sink and send its exec request.
    Start {
        /// The call.
        call_id: u64,
        /// The encoded exec envelope.
        envelope: Bytes,
        /// Where its events go.
        events: mpsc::Sender<Event>,
    },
    /// Send an encoded envelope (stdin, signal, cancel).
    Send(Bytes),
    /// The caller dropped the call: stop routing its events.
    Forget(u64),
}

/// A handle on a live session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    commands: mpsc::Sender<Command>,
    next_call: Arc<AtomicU64>,
    closed: CancellationToken,
    /// Set when the driver ends, with why.
    end_reason: Arc<Mutex<Option<String>>>,
}

impl SessionHandle {
    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || self.commands.is_closed()
    }

    /// A fresh call id.
    pub fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a command, waiting for room. Fails if the session ended.
    pub async fn send(&self, cmd: Command) -> Result<(), String> {
        match self.commands.send(cmd).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.reason().await),
        }
    }

    /// Queues a command without waiting (used from `Drop`).
    pub fn try_send(&self, cmd: Command) {
        let _ = self.commands.try_send(cmd);
    }

    /// Why the session ended (or "session closed").
    pub async fn reason(&self) -> String {
        self.end_reason
            .lock()
            .await
            .clone()
            .unwrap_or_else(|| "session closed".into())
    }

    /// Asks the driver to close the session cleanly and waits until it has.
    pub async fn close(&self) {
        self.closed.cancel();
        self.commands.closed().await;
    }
}

/// Starts the driver for an established session.
pub fn spawn(established: Established, keepalive: Duration, queue: usize) -> SessionHandle {
    let (tx, rx) = mpsc::channel(queue);
    let closed = CancellationToken::new();
    let end_reason = Arc::new(Mutex::new(None));
    let handle = SessionHandle {
        commands: tx,
        next_call: Arc::new(AtomicU64::new(1)),
        closed: closed.clone(),
        end_reason: Arc::clone(&end_reason),
    };
    let driver = Driver {
        transport: established.transport,
        outbound: established.outbound,
        commands: rx,
        calls: HashMap::new(),
        pending_event: None,
        keepalive,
        closed,
    };
    let inbound = established.inbound;
    tokio::spawn(async move {
        let mut driver = driver;
        let mut inbound = inbound;
        let reason = driver.run(&mut inbound).await;
        if driver.closed.is_cancelled() || driver.commands.is_closed() {
            // Let the authenticated close reach the exec-server before the
            // stream is dropped (bounded).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while let Ok(Some(_)) = inbound.message().await {}
            })
            .await;
        }
        tracing::debug!(%reason, "session ended");
        *end_reason.lock().await = Some(reason.clone());
        driver.fail_all(&reason);
        // Dropping the driver closes the command queue.
    });
    handle
}

struct Driver {
    transport: Transport,
    outbound: mpsc::Sender<Result<Frame, Status>>,
    commands: mpsc::Receiver<Command>,
    calls: HashMap<u64, mpsc::Sender<Event>>,
    /// An event waiting for room in its call's queue; while set, no more
    /// frames are read.
    pending_event: Option<(u64, Event, bool)>,
    keepalive: Duration,
    closed: CancellationToken,
}

fn close_reason_text(reason: i32) -> String {
    match CloseReason::try_from(reason) {
        Ok(CloseReason::PeerGone) => "the exec-server went away".into(),
        Ok(CloseReason::Timeout) => "the session timed out at the relay".into(),
        Ok(CloseReason::Shutdown) => "the relay is shutting down".into(),
        Ok(CloseReason::Protocol) => "the relay closed the session (protocol error)".into(),
        _ => "the link was closed".into(),
    }
}

impl Driver {
    async fn run(&mut self, inbound: &mut Streaming<Frame>) -> String {
        let mut ping = tokio::time::interval(self.keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let outbound = self.outbound.clone();
        let closed = self.closed.clone();
        loop {
            let can_take = self.transport.pending_bytes() < TRANSPORT_HIGH_WATER;
            let has_output = self.transport.has_pending();
            let target = self
                .pending_event
                .as_ref()
                .and_then(|(id, _, _)| self.calls.get(id).cloned());
            tokio::select! {
                biased;
                () = closed.cancelled() => {
                    self.close_authenticated().await;
                    return "closed by the client".into();
                }
                permit = outbound.reserve(), if has_output => {
                    let Ok(permit) = permit else { return "the link to the relay was lost".into() };
                    match self.transport.poll_transmit(SystemTime::now()) {
                        Ok(Some(msg)) => permit.send(Ok(proto::frames::data(msg))),
                        Ok(None) => {}
                        Err(e) => return format!("transport error: {e}"),
                    }
                }
                permit = reserve(target), if self.pending_event.is_some() => {
                    if let Some((call_id, ev, last)) = self.pending_event.take() {
                        if let Some(permit) = permit {
                            permit.send(ev);
                        }
                        if last {
                            self.calls.remove(&call_id);
                        }
                    }
                    if let Err(e) = self.drain() {
                        return e;
                    }
                }
                cmd = self.commands.recv(), if can_take => match cmd {
                    Some(cmd) => if let Err(e) = self.command(cmd) { return e },
                    None => {
                        self.close_authenticated().await;
                        return "closed by the client".into();
                    }
                },
                _ = ping.tick() => {
                    let ping = Body::Ping(Ping { nonce: proto::clock::now_unix_nanos() });
                    if let Ok(bytes) = envelope::encode_new(0, None, ping)
                        && let Err(e) = self.transport.send(&bytes)
                    {
                        return format!("transport error: {e}");
                    }
                }
                f = inbound.message(), if self.pending_event.is_none() => match f {
                    Ok(Some(f)) => {
                        match FrameKind::try_from(f.kind) {
                            Ok(FrameKind::Data) => {}
                            Ok(FrameKind::Close) => return close_reason_text(f.close_reason),
                            _ => return "the peer sent an unexpected frame".into(),
                        }
                        if let Err(e) = self.transport.receive(&f.payload) {
                            return format!("the session was corrupted ({e}); closed it");
                        }
                        if let Err(e) = self.drain() {
                            return e;
                        }
                        if let Some(reason) = self.transport.peer_closed() {
                            return format!("the exec-server closed the session: {reason}");
                        }
                    }
                    Ok(None) => return "the link to the exec-server ended".into(),
                    Err(s) => return format!("the link failed: {}", s.message()),
                },
            }
        }
    }

    fn command(&mut self, cmd: Command) -> Result<(), String> {
        let bytes = match cmd {
            Command::Start {
                call_id,
                envelope,
                events,
            } => {
                self.calls.insert(call_id, events);
                envelope
            }
            Command::Send(bytes) => bytes,
            Command::Forget(call_id) => {
                self.calls.remove(&call_id);
                return Ok(());
            }
        };
        self.transport
            .send(&bytes)
            .map_err(|e| format!("transport error: {e}"))
    }

    /// Routes decoded envelopes until none is left or an event must wait.
    fn drain(&mut self) -> Result<(), String> {
        while self.pending_event.is_none() {
            let bytes = match self.transport.poll_envelope() {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("the session was corrupted ({e}); closed it")),
            };
            let env = envelope::decode(&bytes)
                .map_err(|_| "the exec-server sent an undecodable message".to_string())?;
            match env.body {
                Some(Body::Event(ev)) => self.route(env.call_id, ev),
                Some(Body::Pong(_) | Body::HelloAck(_)) => {}
                Some(Body::Ping(_)) => {}
                _ => return Err("the exec-server sent an unexpected message".into()),
            }
        }
        Ok(())
    }

    fn route(&mut self, call_id: u64, ev: proto::pb::session::TerminalEvent) {
        let (event, last) = match ev.kind {
            Some(terminal_event::Kind::Started(s)) => (Event::Started { pid: s.pid }, false),
            Some(terminal_event::Kind::Stdout(d)) => (Event::Stdout(d), false),
            Some(terminal_event::Kind::Stderr(d)) => (Event::Stderr(d), false),
            Some(terminal_event::Kind::Exited(x)) => {
                let status = match x.status {
                    Some(exited::Status::Code(c)) => ExitStatus::Code(c),
                    Some(exited::Status::Signal(s)) => ExitStatus::Signal(s),
                    None => ExitStatus::Code(-1),
                };
                (Event::Exited(status), true)
            }
            Some(terminal_event::Kind::Error(e)) => (
                Event::Failed(ExecFailure::from_remote(e.kind, e.message)),
                true,
            ),
            None => return,
        };
        let Some(sink) = self.calls.get(&call_id) else {
            return;
        };
        match sink.try_send(event) {
            Ok(()) if last => {
                self.calls.remove(&call_id);
            }
            Ok(()) => {}
            // The sink stays registered until the pending event is delivered.
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.pending_event = Some((call_id, event, last));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.calls.remove(&call_id);
            }
        }
    }

    async fn close_authenticated(&mut self) {
        let Ok(messages) = self
            .transport
            .flush_and_close("client closed the session", SystemTime::now())
        else {
            return;
        };
        for msg in messages {
            if self
                .outbound
                .send(Ok(proto::frames::data(msg)))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn fail_all(&mut self, reason: &str) {
        for (_, sink) in self.calls.drain() {
            let _ = sink.try_send(Event::Failed(ExecFailure::SessionLost(reason.to_owned())));
        }
    }
}

async fn reserve(target: Option<mpsc::Sender<Event>>) -> Option<mpsc::OwnedPermit<Event>> {
    match target {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => None,
    }
}
