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

    /// What the link goes to.
    pub fn via(&self) -> crate::error::Via {
        match self {
            Target::Relay(_) => crate::error::Via::Relay,
            Target::Direct(_) => crate::error::Via::ExecServer,
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
    #[cfg(feature = "records")]
    pub metadata: Option<metadata::Persister>,
    /// Record the commands' arguments too (the program name always is).
    pub record_args: bool,
}

impl ClientConfig {
    /// The session machine's timers and bounds for these settings: the
    /// handshake bound, a keepalive ping after `keepalive` of silence, and
    /// the exec-server declared dead after three unanswered keepalives.
    pub(crate) fn limits(&self) -> proto::session::Limits {
        proto::session::Limits {
            handshake_timeout: self.handshake_timeout,
            keepalive: self.keepalive,
            idle_timeout: self.keepalive.saturating_mul(3),
            ..proto::session::Limits::client()
        }
    }

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
            #[cfg(feature = "records")]
            metadata: None,
            record_args: false,
        }
    }
}
