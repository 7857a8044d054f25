//! Relay settings. Every queue, count and timeout is bounded here.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings for one relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most exec-servers registered at once.
    pub max_registrations: usize,
    /// Most concurrent sessions per registered exec-server.
    pub max_sessions_per_server: usize,
    /// Frames buffered per direction of a session before backpressure.
    pub session_queue: usize,
    /// How long an exec-server has to accept an announced session.
    pub accept_timeout: Duration,
    /// How long a registration proof or a session's handshake may take.
    pub handshake_timeout: Duration,
    /// A session with no frame in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Whether to honour hop trace headers on frames.
    pub hop_headers: bool,
    /// Grace period for in-flight sessions at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7600)),
            max_registrations: 10_000,
            max_sessions_per_server: 1024,
            session_queue: 32,
            accept_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            hop_headers: true,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
