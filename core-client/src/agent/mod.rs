//! The local agent (`core-client agent`): a process of the user's that
//! holds warm sessions to exec-servers, so that each `core-client exec` (a
//! new process every time) finds its session established, as ssh's
//! ControlMaster and ControlPersist do.
//!
//! Layout:
//! - this module: [`Agent`] and [`run`]: the listener on the user's socket
//!   (connections from other users refused by their peer credentials), the
//!   first request of each connection (a call, `status` or `stop`), and
//!   the idle timer (`--persist`);
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
use rex_client::WarmPolicy;
use rex_client::agent::{codec, encode};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use self::pool::Pool;

type Reader = FramedRead<tokio::net::unix::OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<tokio::net::unix::OwnedWriteHalf, LengthDelimitedCodec>;

/// How long a new connection has to send its first request.
const FIRST_REQUEST: Duration = Duration::from_secs(5);
/// How long stopping waits for the sessions to close.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Its socket.
    pub socket: PathBuf,
    /// With no call for this long it stops (`None`: never).
    pub persist: Option<Duration>,
    /// Most sessions held.
    pub max_sessions: usize,
    /// The warm policy of every session held.
    pub warm: WarmPolicy,
    /// Writes the agent's spans now: given when they go to the local trace
    /// file, so that each call's are there before its CLI exits.
    pub flusher: Option<telemetry::setup::Flusher>,
}

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
    stop: CancellationToken,
}

impl Agent {
    /// Notes a call starting or ending: the idle timer starts again.
    fn activity(&self) {
        *self
            .last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.last_activity_unix_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
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
        let ms = |t: Option<SystemTime>| t.map_or(0, unix_ms);
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
            sessions: self
                .pool
                .status()
                .into_iter()
                .map(|h| {
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
                })
                .collect(),
        }
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
    if socket.exists() {
        if UnixStream::connect(socket).await.is_ok() {
            return Err(AgentRunError::Running(socket.to_path_buf()));
        }
        // Nobody listens: a stale socket of an agent that died.
        let _ = std::fs::remove_file(socket);
    }
    let listen = |source| AgentRunError::Listen {
        path: socket.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(socket).map_err(listen)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(listen)?;
    Ok(listener)
}

/// Runs the agent on `listener` until it is stopped (`agent stop`, a
/// signal via `shutdown`, or `--persist` idle), then closes its sessions
/// and removes its socket.
pub async fn run(listener: UnixListener, options: Options, shutdown: CancellationToken) {
    let agent = Arc::new(Agent {
        pool: Pool::new(options.max_sessions, options.warm),
        tasks: Tasks::new(),
        started: SystemTime::now(),
        last_activity: Mutex::new(Instant::now()),
        last_activity_unix_ms: AtomicU64::new(unix_ms(SystemTime::now())),
        stop: shutdown.child_token(),
        options,
    });
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
                        let agent2 = Arc::clone(&agent);
                        agent.tasks.spawn(
                            tracing::debug_span!("agent connection"),
                            connection(agent2, stream),
                        );
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

/// One connection: its first request says what it is.
async fn connection(agent: Arc<Agent>, stream: UnixStream) {
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
            call::serve(agent, exec, taken, reader, writer).await;
        }
        Some(request::Body::Status(_)) => {
            let status = wire::Reply {
                body: Some(reply::Body::Status(agent.status())),
                ended_unix_nanos: 0,
            };
            let _ = writer.send(encode(&status)).await;
        }
        Some(request::Body::Stop(_)) => {
            let stopping = wire::Reply {
                body: Some(reply::Body::Stopping(wire::Empty {})),
                ended_unix_nanos: 0,
            };
            let _ = writer.send(encode(&stopping)).await;
            tracing::info!("asked to stop");
            agent.stop.cancel();
        }
        // Nothing, or nothing it understands: the connection ends.
        _ => {}
    }
}

/// Asks the agent at `socket` for one reply to `request` (status, stop).
pub async fn ask(socket: &Path, request: request::Body) -> std::io::Result<wire::Reply> {
    let stream = tokio::time::timeout(FIRST_REQUEST, UnixStream::connect(socket))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the agent did not answer")
        })??;
    let mut framed = tokio_util::codec::Framed::new(stream, codec());
    framed
        .send(encode(&wire::Request {
            body: Some(request),
        }))
        .await?;
    match tokio::time::timeout(FIRST_REQUEST, framed.next()).await {
        Ok(Some(Ok(bytes))) => wire::Reply::decode(bytes.freeze())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Ok(Some(Err(e))) => Err(e),
        Ok(None) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the agent closed the connection",
        )),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the agent did not answer",
        )),
    }
}
