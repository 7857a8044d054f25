//! Exec-server settings. Every count and timeout is bounded here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::admission::{AdmissionLimits, Startups};
use proto::keys::{AuthorizedKeys, StaticKeypair};
use proto::listener::ConnLimits;

use crate::keys::LiveKeys;

/// How an exec-server holds the relays it is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayMode {
    /// A registration with every relay, each kept alive on its own:
    /// clients reach the exec-server through any of them.
    #[default]
    Each,
    /// The relays are one fleet sharing a directory, any of which forwards
    /// to the others: one registration at a time, at the first relay of the
    /// list that accepts it, moving on down the list (and round to its
    /// start) when it is lost or refused.
    Fleet,
}

/// Settings for one exec-server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExecServerConfig {
    /// The exec-server's static key.
    pub key: StaticKeypair,
    /// Client keys allowed to open sessions (kept in step with their
    /// file, if they come from one).
    pub(crate) keys: Arc<LiveKeys>,
    /// Relays to register with (`http://host:port`, or `https://…` for
    /// TLS): with every one, each registration kept alive on its own, so
    /// that clients reach the exec-server through any of them.
    pub relays: Vec<String>,
    /// How the exec-server holds [`relays`](Self::relays): a registration
    /// with each, or one at a time with a fleet.
    pub relay_mode: RelayMode,
    /// The roots an `https://` relay's certificate is checked against.
    pub relay_tls: proto::tls::TlsSettings,
    /// Address to accept clients on directly, if any.
    pub listen: Option<SocketAddr>,
    /// Serve the direct listener over TLS with this certificate and key
    /// (then only TLS); plain HTTP/2 when `None`.
    pub listen_tls: Option<proto::tls::ServerTls>,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Most concurrent processes per session.
    pub max_processes_per_session: usize,
    /// How long a client has to complete its handshake.
    pub(crate) handshake_timeout: Duration,
    /// After a process exits, how long to keep draining output that
    /// descendants still write to its pipes.
    pub(crate) exit_drain: Duration,
    /// Working directory for commands that do not name one.
    pub default_cwd: Option<PathBuf>,
    /// Grace period for in-flight commands at shutdown.
    pub shutdown_grace: Duration,
    /// Longest wait between relay reconnection attempts.
    pub(crate) max_backoff: Duration,
    /// Where process records go (off the hot path), if anywhere.
    pub metadata: Option<metadata::Persister>,
    /// The direct listener's connections: how many, per source, and the
    /// HTTP/2 preface deadline.
    pub listen_limits: ConnLimits,
    /// Direct sessions whose handshake message 1 has not yet
    /// authenticated: early drop and a per-source share. A session slot
    /// ([`max_sessions`](Self::max_sessions)) is taken only once it has.
    pub startups: AdmissionLimits,
    /// How long to wait before registering again after the relay said a
    /// newer registration of this key took over.
    pub replaced_backoff: Duration,
    /// Give each command a cgroup v2 of its own where the exec-server can
    /// make one (see the `contain` module); on by default.
    pub cgroups: bool,
    /// Which of the exec-server's own variables its commands get (the
    /// default allow-list and `--pass-env`; never `REX_*` or `OTEL_*`).
    pub pass_env: crate::environment::PassEnv,
    /// Send each call's stage timings and this host's name home with its
    /// final event (of a sampled trace), so that a client with no
    /// collector sees this side's stages; on by default.
    pub call_timings: bool,
    /// Whether commands may ask for a pseudo-terminal (`--no-tty`: no;
    /// such a request is refused with a clear error).
    pub terminals: bool,
    /// Whether a call may ask for the login shell instead of a command
    /// (on by default). Off, the hello answer offers none and a request
    /// for one is refused: clients see an exec-server older than login
    /// shells.
    pub login_shells: bool,
    /// Where clients' own spans forwarded through their sessions are
    /// exported (the hello answer offers forwarding only with one): set by
    /// the binary when it exports over OTLP, unless `--no-span-forwarding`.
    pub span_forwarding: Option<telemetry::forward::Forwarder>,
    /// How long a session's client may be silent before its link is taken
    /// for broken (the client is asked after a quarter of it, and a live
    /// one answers); then the resume grace begins.
    pub idle_timeout: Duration,
    /// How long a session whose link broke keeps its processes running for
    /// its client to resume it (zero: sessions end with their link).
    pub resume_grace: Duration,
    /// The replay guard's window: how far a client's clock may be from
    /// ours (a handshake message 1 stamped further away is refused, or
    /// its early data not run), and how long after the exec-server starts
    /// a call riding in message 1 is sent again after the handshake
    /// instead (the guard remembers nothing from before the start).
    pub replay_window: Duration,
    /// Per process, the output kept until the client has acknowledged it
    /// (what a resume can send again); a process waits on its output once
    /// this much is unacknowledged, so nothing is ever dropped.
    pub resume_buffer: u32,
    /// While a session's link is down: the output kept for it in all (its
    /// processes wait once it is reached).
    pub resume_session_buffer: u64,
    /// While links are down: the output kept for all such sessions of the
    /// exec-server together.
    pub resume_total_buffer: u64,
    /// Output not yet acknowledged by its client, for all sessions
    /// together (a command whose read does not fit waits on its output).
    pub max_unacked_output: u64,
    /// The same, for the sessions of one client key.
    pub max_unacked_output_per_key: u64,
    /// The widest a command's output window grows when its client asks
    /// (it starts at `resume_buffer`; the client widens it with the path).
    /// What a command keeps unacknowledged is bounded by it, and by the
    /// budgets for unacknowledged output.
    pub output_window_max: u32,
    /// The widest a command's stdin window grows on a long path (it
    /// starts at 256 KiB and follows the measured round trip and delivery
    /// rate; at most this much of a command's stdin is ever in flight).
    pub stdin_window_max: u32,
    /// What stdin windows may hold beyond their first 256 KiB, for all
    /// commands together (a window that would pass it grows no further).
    pub max_stdin_buffer: u64,
}

/// Default [`ExecServerConfig::output_window_max`]: 32 MiB.
pub const DEFAULT_OUTPUT_WINDOW_MAX: u32 = 32 * 1024 * 1024;

/// Default [`ExecServerConfig::stdin_window_max`]: 16 MiB.
pub const DEFAULT_STDIN_WINDOW_MAX: u32 = 16 * 1024 * 1024;

/// Default [`ExecServerConfig::replay_window`].
const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(120);

/// Default [`ExecServerConfig::idle_timeout`].
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default [`ExecServerConfig::resume_grace`].
const DEFAULT_RESUME_GRACE: Duration = Duration::from_secs(60);

/// Default [`ExecServerConfig::resume_buffer`]: 4 MiB.
pub const DEFAULT_RESUME_BUFFER: u32 = 4 * 1024 * 1024;

/// Default [`ExecServerConfig::resume_session_buffer`]: 32 MiB (eight
/// processes' windows).
pub const DEFAULT_RESUME_SESSION_BUFFER: u64 = 32 * 1024 * 1024;

/// Default [`ExecServerConfig::resume_total_buffer`]: 256 MiB.
pub const DEFAULT_RESUME_TOTAL_BUFFER: u64 = 256 * 1024 * 1024;

/// Default `start:rate:full` for direct sessions not yet authenticated.
pub const DEFAULT_STARTUPS: Startups = Startups {
    start: 32,
    rate: 30,
    full: 128,
};

impl ExecServerConfig {
    /// Settings with defaults for everything but the keys; the authorized
    /// keys never change.
    pub fn new(key: StaticKeypair, authorized: AuthorizedKeys) -> Self {
        Self::with_keys(key, LiveKeys::fixed(authorized))
    }

    /// Settings with defaults for everything but the keys.
    pub fn with_keys(key: StaticKeypair, keys: Arc<LiveKeys>) -> Self {
        Self {
            key,
            keys,
            relays: Vec::new(),
            relay_mode: RelayMode::Each,
            relay_tls: proto::tls::TlsSettings::system(),
            listen: None,
            listen_tls: None,
            max_sessions: 1024,
            max_processes_per_session: 256,
            handshake_timeout: Duration::from_secs(10),
            exit_drain: Duration::from_secs(2),
            default_cwd: None,
            shutdown_grace: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            metadata: None,
            listen_limits: ConnLimits::new(1024, 128, Duration::from_secs(5)),
            startups: AdmissionLimits::new(DEFAULT_STARTUPS, 16),
            replaced_backoff: Duration::from_secs(60),
            cgroups: true,
            pass_env: crate::environment::PassEnv::default(),
            call_timings: true,
            terminals: true,
            login_shells: true,
            span_forwarding: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            resume_grace: DEFAULT_RESUME_GRACE,
            replay_window: DEFAULT_REPLAY_WINDOW,
            resume_buffer: DEFAULT_RESUME_BUFFER,
            resume_session_buffer: DEFAULT_RESUME_SESSION_BUFFER,
            resume_total_buffer: DEFAULT_RESUME_TOTAL_BUFFER,
            max_unacked_output: crate::unacked::DEFAULT_TOTAL,
            max_unacked_output_per_key: crate::unacked::DEFAULT_PER_KEY,
            stdin_window_max: DEFAULT_STDIN_WINDOW_MAX,
            output_window_max: DEFAULT_OUTPUT_WINDOW_MAX,
            max_stdin_buffer: proto::session::STDIN_BUDGET,
        }
    }
}
