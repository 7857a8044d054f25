//! The local agent (`core-client agent`): a process of the user's that
//! holds warm sessions to exec-servers, so that each `core-client exec` (a
//! new process every time) finds its session established, as ssh's
//! ControlMaster and ControlPersist do.
//!
//! Layout:
//! - this module: [`Agent`] and [`run`]: the listener on the user's socket
//!   (connections from other users refused by their peer credentials, and
//!   beyond `--max-connections` answered busy), the first request of each
//!   connection (a call, `status`, `warm`, `flush` or `stop`), the
//!   barrier readers pass ([`flushed`]), the sessions held
//!   from the start (servers whose `warm` option is an interval), the
//!   command records it keeps for the CLIs whose data directory is its
//!   own ([`AgentRecords`]), and the idle timer (`--persist`);
//! - [`place`]: where the socket lives, and its private directory;
//! - [`pool`]: the sessions held (at most `--max-sessions`, each kept warm);
//! - `call`: one CLI's call through the agent.
//!
//! The CLI side is `rex_client::agent::AgentClient`; the protocol is
//! `proto::pb::agent`.

mod call;
pub mod place;
pub mod pool;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use lifecycle::Tasks;
use prost::Message;
use proto::pb::agent::{self as wire, reply, request};
use rex_client::agent::{codec, encode};
use rex_client::{Client, WarmPolicy};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use self::pool::Pool;
pub use self::pool::SpanForwarding;

type Reader = FramedRead<tokio::net::unix::OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<tokio::net::unix::OwnedWriteHalf, LengthDelimitedCodec>;

/// How long a new connection has to send its first request.
const FIRST_REQUEST: Duration = Duration::from_secs(5);
/// How long stopping waits for the sessions to close.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// Connections beyond the limit being told that the agent is busy, at
/// most (more are closed at once).
const REFUSING: usize = 16;

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Its socket.
    pub socket: PathBuf,
    /// With no call for this long it stops (`None`: never).
    pub persist: Option<Duration>,
    /// Most sessions held.
    pub max_sessions: usize,
    /// Most connections open at once (calls, status, warm and stop).
    pub max_connections: usize,
    /// The warm policy of a session held for a server whose settings give
    /// none.
    pub warm: WarmPolicy,
    /// Sessions held from the start, warmed as each says (the servers
    /// whose `warm` option is an interval).
    pub prewarm: Vec<wire::Route>,
    /// Writes the agent's spans now: given when they go to the local trace
    /// file, so that each call's are written just after its exit is handed
    /// on, and before a `flush` is answered.
    pub flusher: Option<telemetry::setup::Flusher>,
    /// Where the agent keeps the records of the calls that ask it to (a
    /// CLI whose data directory is this one), so that the CLI opens no
    /// database of its own.
    pub records: Option<AgentRecords>,
    /// How its sessions forward their calls' spans (and the spools').
    pub spans: SpanForwarding,
}

/// The command records the agent keeps for its callers.
#[derive(Debug, Clone)]
pub struct AgentRecords {
    /// The data directory (absolute) the store is in.
    pub dir: PathBuf,
    /// Its writer (started with the first record).
    pub store: metadata::Persister,
}

impl AgentRecords {
    /// Whether a CLI's data directory `dir` is this one.
    fn is_for(&self, dir: &Path) -> bool {
        match (std::fs::canonicalize(dir), std::fs::canonicalize(&self.dir)) {
            (Ok(a), Ok(b)) => a == b,
            _ => std::path::absolute(dir).is_ok_and(|a| a == self.dir),
        }
    }
}

/// How long a call's end waits for its record to be written (within the
/// CLI's wait for the agent's `flushed`).
const RECORD_FLUSH: Duration = Duration::from_millis(1500);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentRunError {
    /// Its directory is not private, or cannot be made.
    #[error(transparent)]
    Place(#[from] place::PlaceError),
    /// Another agent answers at the socket.
    #[error("an agent is already running at {}", .0.display())]
    Running(PathBuf),
    /// The socket could not be made.
    #[error("cannot listen at {}: {source}", path.display())]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The running agent's shared state.
#[derive(Debug)]
pub struct Agent {
    pool: Arc<Pool>,
    tasks: Tasks,
    options: Options,
    started: SystemTime,
    /// When a call last started or ended (for the idle timer).
    last_activity: Mutex<Instant>,
    /// Wall-clock twin of `last_activity` (for `status`).
    last_activity_unix_ms: AtomicU64,
    /// Calls whose spans and record are being written out after their
    /// end (at most `max_connections`; beyond, the background writers
    /// write them without a barrier).
    writing_out: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Agent {
    /// Notes a call starting or ending (or a warm asked for): the idle
    /// timer starts again.
    fn activity(&self) {
        *self
            .last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.last_activity_unix_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// How a call whose CLI asked `asked` is recorded: in the agent's
    /// store if it is the CLI's, else not at all (the CLI records it).
    fn recording(&self, asked: Option<&wire::RecordIn>) -> rex_client::Recording {
        match (asked, &self.options.records) {
            (Some(asked), Some(records)) if records.is_for(Path::new(&asked.data_dir)) => {
                rex_client::Recording::On { args: asked.args }
            }
            _ => rex_client::Recording::Off,
        }
    }

    /// Writes the records taken so far (bounded): why not, in one line.
    async fn flush_records(&self) -> Option<String> {
        let store = self.options.records.as_ref()?.store.clone();
        let flushed = tokio::task::spawn_blocking(move || store.flush_within(RECORD_FLUSH)).await;
        match flushed {
            Ok(Ok(())) => None,
            Ok(Err(e @ metadata::PersistError::Timeout { .. })) => Some(format!(
                "{e}; the agent keeps the command's record and goes on trying to save it"
            )),
            Ok(Err(e)) => Some(format!("{e}; this command's record is not saved")),
            Err(_) => {
                Some("the agent's record writer failed; this command's record is not saved".into())
            }
        }
    }

    /// Writes the spans ended so far and, with `records`, saves the records
    /// taken so far: the `flushed` reply that says so (with why a record
    /// could not be saved, if so).
    async fn write_out(&self, records: bool) -> wire::Reply {
        let (record_error, ()) = if records {
            tokio::join!(self.flush_records(), self.flush_spans())
        } else {
            (None, self.flush_spans().await)
        };
        wire::Reply {
            body: Some(reply::Body::Flushed(wire::Flushed {
                record_error: record_error.unwrap_or_default(),
            })),
            ..wire::Reply::default()
        }
    }

    /// Writes the spans ended so far, if they go to the local trace file.
    async fn flush_spans(&self) {
        if let Some(flusher) = self.options.flusher.clone() {
            let _ = tokio::task::spawn_blocking(move || flusher.flush()).await;
        }
    }

    fn idle_since(&self) -> Instant {
        *self
            .last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn status(&self) -> wire::Status {
        let running = self.pool.running();
        let idle_until = match self.options.persist {
            Some(p) if running == 0 => {
                self.last_activity_unix_ms.load(Ordering::Relaxed)
                    + u64::try_from(p.as_millis()).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        wire::Status {
            pid: std::process::id(),
            started_unix_ms: unix_ms(self.started),
            persist_ms: self
                .options
                .persist
                .map_or(0, |p| u64::try_from(p.as_millis()).unwrap_or(u64::MAX)),
            idle_until_unix_ms: idle_until,
            max_sessions: u32::try_from(self.pool.max()).unwrap_or(u32::MAX),
            calls_running: running,
            sessions: self.pool.status().into_iter().map(held_of).collect(),
        }
    }

    /// Holds `route`'s session (warmed as it says), or says why not.
    fn hold(&self, route: &wire::Route) -> Result<(pool::Route, Client), String> {
        let (route, key_file, warm) = call::route_of(route)?;
        let client = self
            .pool
            .hold(&route, &key_file, warm)
            .map_err(|e| e.to_string())?;
        Ok((route, client))
    }

    /// `agent warm`: each route's session (every one held, when none is
    /// named) warmed now, its cycle starting again.
    async fn warm_now(&self, routes: &[wire::Route]) -> wire::Warmed {
        let mut refused = Vec::new();
        let clients: Vec<(pool::Route, Client)> = if routes.is_empty() {
            self.pool.current()
        } else {
            routes
                .iter()
                .filter_map(|r| self.hold(r).map_err(|e| refused.push(e)).ok())
                .collect()
        };
        futures::future::join_all(clients.iter().map(|(_, c)| c.warm_now())).await;
        wire::Warmed {
            sessions: clients
                .iter()
                .filter_map(|(route, _)| self.pool.status_of(route))
                .map(held_of)
                .collect(),
            refused,
        }
    }
}

/// A held session as the agent protocol shows it.
fn held_of(h: pool::HeldStatus) -> wire::Held {
    let ms = |t: Option<SystemTime>| t.map_or(0, unix_ms);
    let warm = h.warm.as_ref();
    wire::Held {
        server_id: h.server_id,
        target: h.target,
        client_key: h.client.to_string(),
        warm_enabled: warm.is_some_and(|w| w.enabled),
        warm_interval_ms: warm.map_or(0, |w| {
            u64::try_from(w.interval.as_millis()).unwrap_or(u64::MAX)
        }),
        next_warm_unix_ms: ms(warm.and_then(|w| w.next_warm_at)),
        last_warm_unix_ms: ms(warm.and_then(|w| w.last_warm_at)),
        last_warm_failure: match warm.and_then(|w| w.last_outcome.as_ref()) {
            Some(rex_client::WarmOutcome::Failed(e)) => e.to_string(),
            _ => String::new(),
        },
        last_latency_us: warm
            .and_then(|w| w.last_latency)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        calls_running: h.running,
        calls_served: h.served,
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Makes the socket, refusing to take over a live agent's (a stale one is
/// removed).
pub async fn bind(socket: &Path) -> Result<UnixListener, AgentRunError> {
    place::prepare_dir(socket)?;
    let listen = |source| AgentRunError::Listen {
        path: socket.to_path_buf(),
        source,
    };
    if socket.exists() {
        use std::io::ErrorKind;
        match UnixStream::connect(socket).await {
            // Someone listens (if busy, still there).
            Ok(_) => return Err(AgentRunError::Running(socket.to_path_buf())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(AgentRunError::Running(socket.to_path_buf()));
            }
            // Nobody listens: a stale socket of an agent that died.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                let _ = std::fs::remove_file(socket);
            }
            Err(e) => return Err(listen(e)),
        }
    }
    let listener = UnixListener::bind(socket).map_err(listen)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(listen)?;
    Ok(listener)
}

/// Runs the agent on `listener` until it is stopped (`agent stop`, a
/// signal via `shutdown`, or `--persist` idle), then closes its sessions
/// and removes its socket.
pub async fn run(listener: UnixListener, options: Options, shutdown: CancellationToken) {
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let agent = Arc::new(Agent {
        pool: Pool::new(
            options.max_sessions,
            options.warm,
            options.records.as_ref().map(|r| r.store.clone()),
            options.spans.clone(),
        ),
        tasks: Tasks::new(),
        started: SystemTime::now(),
        last_activity: Mutex::new(Instant::now()),
        last_activity_unix_ms: AtomicU64::new(unix_ms(SystemTime::now())),
        writing_out: Arc::new(Semaphore::new(options.max_connections.max(1))),
        stop: shutdown.child_token(),
        options,
    });
    // The servers to keep warm from the start: each warms at once.
    for route in &agent.options.prewarm {
        if let Err(e) = agent.hold(route) {
            tracing::warn!(error = %e, "cannot keep a configured server warm");
        }
    }
    let uid = nix::unistd::getuid().as_raw();
    loop {
        let idle = idle_deadline(&agent);
        tokio::select! {
            () = agent.stop.cancelled() => break,
            () = sleep_until(idle) => {
                if idle_deadline(&agent).is_some_and(|d| d <= tokio::time::Instant::now()) {
                    tracing::info!("idle for the persist time: stopping");
                    break;
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, say: a pause, not a spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid => {
                        match Arc::clone(&connections).try_acquire_owned() {
                            Ok(open) => {
                                let agent2 = Arc::clone(&agent);
                                agent.tasks.spawn(
                                    tracing::debug_span!("agent connection"),
                                    connection(agent2, stream, open),
                                );
                            }
                            // At the limit: told it is busy (the CLI runs
                            // its command itself), while few are being
                            // told; else closed at once.
                            Err(_) => {
                                if let Ok(telling) = Arc::clone(&refusing).try_acquire_owned() {
                                    let limit = agent.options.max_connections;
                                    agent.tasks.spawn(
                                        tracing::debug_span!("agent refusal"),
                                        async move {
                                            refuse_busy(stream, limit).await;
                                            drop(telling);
                                        },
                                    );
                                }
                            }
                        }
                    }
                    Ok(cred) => {
                        tracing::warn!(uid = cred.uid(), "refused a connection from another user");
                    }
                    Err(e) => tracing::warn!(error = %e, "refused a connection: no peer credentials"),
                }
            }
        }
    }
    let _ = std::fs::remove_file(&agent.options.socket);
    agent.tasks.token().cancel();
    agent.pool.close_all(CLOSE_WITHIN).await;
    if let Some(records) = agent.options.records.clone() {
        let _ = tokio::task::spawn_blocking(move || records.store.shutdown(CLOSE_WITHIN)).await;
    }
}

/// When the agent stops for idleness, if it will.
fn idle_deadline(agent: &Agent) -> Option<tokio::time::Instant> {
    let persist = agent.options.persist?;
    if agent.pool.running() > 0 {
        return None;
    }
    Some(tokio::time::Instant::from_std(agent.idle_since() + persist))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        // A call running may end at any time: look again at least every
        // second.
        Some(d) => {
            tokio::time::sleep_until(d.min(tokio::time::Instant::now() + Duration::from_secs(1)))
                .await
        }
        None => tokio::time::sleep(Duration::from_secs(1)).await,
    }
}

/// One connection (holding `open`, its place within `--max-connections`):
/// its first request says what it is.
async fn connection(agent: Arc<Agent>, stream: UnixStream, open: OwnedSemaphorePermit) {
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec());
    let mut writer = FramedWrite::new(write, codec());
    let first = match tokio::time::timeout(FIRST_REQUEST, reader.next()).await {
        Ok(Some(Ok(bytes))) => wire::Request::decode(bytes.freeze()).ok(),
        _ => None,
    };
    let taken = SystemTime::now();
    match first.and_then(|r| r.body) {
        Some(request::Body::Exec(exec)) => {
            call::serve(agent, exec, taken, reader, writer, open).await;
        }
        Some(request::Body::Status(_)) => {
            let status = wire::Reply {
                body: Some(reply::Body::Status(agent.status())),
                ..wire::Reply::default()
            };
            let _ = writer.send(encode(&status)).await;
        }
        Some(request::Body::Warm(w)) => {
            // Asked to keep sessions warm: not idle.
            agent.activity();
            let warmed = agent.warm_now(&w.routes).await;
            // The warms' spans are written before the CLI hears of them.
            agent.flush_spans().await;
            let reply = wire::Reply {
                body: Some(reply::Body::Warmed(warmed)),
                ..wire::Reply::default()
            };
            let _ = writer.send(encode(&reply)).await;
        }
        Some(request::Body::Flush(_)) => {
            let flushed = agent.write_out(true).await;
            let _ = writer.send(encode(&flushed)).await;
        }
        Some(request::Body::Stop(_)) => {
            let stopping = wire::Reply {
                body: Some(reply::Body::Stopping(wire::Empty {})),
                ..wire::Reply::default()
            };
            let _ = writer.send(encode(&stopping)).await;
            tracing::info!("asked to stop");
            agent.stop.cancel();
        }
        // Nothing, or nothing it understands: the connection ends.
        _ => {}
    }
}

/// A connection beyond the limit: its first request is answered "busy"
/// (bounded in time), and it is closed.
async fn refuse_busy(stream: UnixStream, limit: usize) {
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec());
    let mut writer = FramedWrite::new(write, codec());
    let _ = tokio::time::timeout(FIRST_REQUEST, async {
        let _ = reader.next().await;
        let busy = wire::Reply {
            body: Some(reply::Body::Failure(wire::Failure {
                connection: false,
                busy: true,
                message: format!("it has {limit} connections open, its most"),
            })),
            ..wire::Reply::default()
        };
        let _ = writer.send(encode(&busy)).await;
    })
    .await;
}

/// Waits (at most `wait`) until the agent at `socket` has written the
/// spans and saved the records of every call that ended before now: `None`
/// when all is written, else why a record could not be saved. An error
/// when no agent answers.
pub async fn flushed(socket: &Path, wait: Duration) -> std::io::Result<Option<String>> {
    match ask(socket, request::Body::Flush(wire::Empty {}), wait)
        .await?
        .body
    {
        Some(reply::Body::Flushed(f)) => Ok((!f.record_error.is_empty()).then_some(f.record_error)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the agent answered something else",
        )),
    }
}

/// Asks the agent at `socket` for one reply to `request` (status, warm,
/// flush, stop); a busy agent's refusal is an error.
pub async fn ask(
    socket: &Path,
    request: request::Body,
    wait: Duration,
) -> std::io::Result<wire::Reply> {
    use std::io::{Error, ErrorKind};
    let did_not_answer = || Error::new(ErrorKind::TimedOut, "the agent did not answer");
    let stream = tokio::time::timeout(FIRST_REQUEST, UnixStream::connect(socket))
        .await
        .map_err(|_| did_not_answer())??;
    let mut framed = tokio_util::codec::Framed::new(stream, codec());
    framed
        .send(encode(&wire::Request {
            body: Some(request),
        }))
        .await?;
    let reply = match tokio::time::timeout(wait, framed.next()).await {
        Ok(Some(Ok(bytes))) => wire::Reply::decode(bytes.freeze())
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?,
        Ok(Some(Err(e))) => return Err(e),
        Ok(None) => {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the agent closed the connection",
            ));
        }
        Err(_) => return Err(did_not_answer()),
    };
    match reply.body {
        Some(reply::Body::Failure(f)) if f.busy => Err(Error::new(
            ErrorKind::ResourceBusy,
            format!("the agent is busy: {}", f.message),
        )),
        _ => Ok(reply),
    }
}
