//! Client settings.

use std::time::Duration;

use proto::keys::{PublicKey, StaticKeypair};

/// How the client reaches the exec-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Through a relay at this URL (`http://host:port`).
    Relay(String),
    /// Directly to an exec-server listening at this URL.
    Direct(String),
}

impl Target {
    /// The URL dialled.
    pub fn url(&self) -> &str {
        match self {
            Target::Relay(u) | Target::Direct(u) => u,
        }
    }
}

/// Settings for a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client's static key.
    pub key: StaticKeypair,
    /// The exec-server's public key (pinned).
    pub server: PublicKey,
    /// Where to connect.
    pub target: Target,
    /// Timeout for the TCP/HTTP2 connection.
    pub connect_timeout: Duration,
    /// Timeout for the relay pairing, Noise handshake and session init.
    pub handshake_timeout: Duration,
    /// Keepalive ping interval on an idle session.
    pub keepalive: Duration,
    /// Messages queued to the session before callers wait.
    pub outbound_queue: usize,
    /// Events buffered per call before the session stops reading.
    pub events_per_call: usize,
    /// Where command records go (off the hot path), if anywhere.
    pub metadata: Option<metadata::Persister>,
    /// Record the commands' arguments too (the program name always is).
    pub record_args: bool,
}

impl ClientConfig {
    /// Settings with defaults.
    pub fn new(key: StaticKeypair, server: PublicKey, target: Target) -> Self {
        Self {
            key,
            server,
            target,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(30),
            outbound_queue: 256,
            events_per_call: 64,
            metadata: None,
            record_args: false,
        }
    }
}
