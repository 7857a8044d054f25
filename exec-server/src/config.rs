//! Exec-server settings. Every count and timeout is bounded here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::admission::{AdmissionLimits, Startups};
use proto::keys::{AuthorizedKeys, StaticKeypair};
use proto::listener::ConnLimits;

use crate::keys::LiveKeys;

/// Settings for one exec-server.
#[derive(Debug, Clone)]
pub struct ExecServerConfig {
    /// The exec-server's static key.
    pub key: StaticKeypair,
    /// Client keys allowed to open sessions (kept in step with their
    /// file, if they come from one).
    pub keys: Arc<LiveKeys>,
    /// Relay to register with (`http://host:port`), if any.
    pub relay: Option<String>,
    /// Address to accept clients on directly, if any.
    pub listen: Option<SocketAddr>,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Most concurrent processes per session.
    pub max_processes_per_session: usize,
    /// How long a client has to complete its handshake.
    pub handshake_timeout: Duration,
    /// After a process exits, how long to keep draining output that
    /// descendants still write to its pipes.
    pub exit_drain: Duration,
    /// Working directory for commands that do not name one.
    pub default_cwd: Option<PathBuf>,
    /// Grace period for in-flight commands at shutdown.
    pub shutdown_grace: Duration,
    /// Longest wait between relay reconnection attempts.
    pub max_backoff: Duration,
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
    /// Give each command a cgroup v2 of its own where possible (see
    /// [`crate::contain`]); off by default, as it costs a cgroup migration
    /// (often an RCU grace period, 5-20 ms) per command.
    pub cgroups: bool,
}

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
            relay: None,
            listen: None,
            max_sessions: 1024,
            max_processes_per_session: 256,
            handshake_timeout: Duration::from_secs(10),
            exit_drain: Duration::from_secs(2),
            default_cwd: None,
            shutdown_grace: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            metadata: None,
            listen_limits: ConnLimits {
                max_connections: 1024,
                per_source: 128,
                preface_timeout: Duration::from_secs(5),
            },
            startups: AdmissionLimits {
                startups: DEFAULT_STARTUPS,
                per_source: 16,
            },
            replaced_backoff: Duration::from_secs(60),
            cgroups: false,
        }
    }
}
