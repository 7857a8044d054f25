//! Relay settings. Every queue, count and timeout is bounded here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use proto::admission::{AdmissionLimits, Startups};
use proto::listener::ConnLimits;

/// Settings for one relay.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most exec-servers registered at once.
    pub max_registrations: usize,
    /// Most concurrent sessions per registered exec-server.
    pub max_sessions_per_server: usize,
    /// Frames buffered per direction of a session before backpressure
    /// (the byte bound, [`RelayConfig::session_buffer`], usually comes
    /// first).
    pub(crate) session_queue: usize,
    /// How long an exec-server has to accept an announced session.
    pub accept_timeout: Duration,
    /// How long a registration proof or a session's handshake may take.
    pub handshake_timeout: Duration,
    /// A session with no frame in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Whether to honour hop trace headers on frames.
    pub hop_headers: bool,
    /// Grace period for in-flight sessions at shutdown.
    pub(crate) shutdown_grace: Duration,
    /// Connections: how many, per source, and the HTTP/2 preface deadline.
    pub connections: ConnLimits,
    /// Sessions not yet authenticated (until the exec-server's handshake
    /// answer has passed through): early drop and a per-source share.
    pub startups: AdmissionLimits,
    /// How long a client has, after opening a session, to send handshake
    /// message 1 (the exec-server is not told of the session before).
    pub first_frame_timeout: Duration,
    /// Registration control.
    pub registrations: RegistrationLimits,
    /// Bytes one direction of a session may have queued in the relay.
    pub session_buffer: usize,
    /// Bytes all sessions together may have queued in the relay.
    pub max_buffered: usize,
    /// The credit window each session of an exec-server that asks for it
    /// gets at least for its frames toward the client, in payload bytes,
    /// while the pool ([`RelayConfig::credit_pool`]) has room: what such a
    /// session may have here, queued or not yet read, at most. 0: none
    /// (every session is bounded by HTTP/2's window alone); otherwise at
    /// least [`proto::routing::MIN_CREDIT_WINDOW`].
    pub session_credit: u32,
    /// Bytes of credit all sessions together may hold beyond each one's
    /// floor ([`proto::routing::CREDIT_FLOOR`], 64 KiB: room for one frame
    /// of the largest payload): however many sessions stall, the relay holds at
    /// most a floor for each and this pool.
    pub credit_pool: u64,
    /// Serve TLS with this certificate and key (then only TLS is served);
    /// plain HTTP/2 when `None`.
    pub tls: Option<proto::tls::ServerTls>,
    /// The fleet's directory in etcd (`None`: a relay on its own).
    pub directory: Option<crate::directory::DirectoryConfig>,
    /// Membership of a fleet (`None`: no session is forwarded to or taken
    /// from another relay).
    pub fleet: Option<FleetConfig>,
}

/// What a relay of a fleet needs to forward sessions and take forwarded
/// ones.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FleetConfig {
    /// The fleet's shared key.
    pub(crate) fleet: std::sync::Arc<crate::fleet::Fleet>,
    /// CA certificates for peers dialled with `https://`.
    pub peer_tls: proto::tls::TlsSettings,
    /// Most sessions forwarded to other relays at once.
    pub max_forwarded: usize,
}

/// Most sessions forwarded to other relays at once when none is set.
pub const DEFAULT_MAX_FORWARDED: usize = 4096;

/// The default [`RelayConfig::session_credit`]: 256 KiB. A narrower
/// window costs throughput next to the relay, where the grants' own round
/// trip (through three processes) is what a window must cover: 64 KiB took
/// about 40% off loopback bulk through the relay, 256 KiB about 5%
/// (BENCHMARKS.md). What stalled sessions hold is bounded by the pool.
pub const DEFAULT_SESSION_CREDIT: u32 = 256 * 1024;

/// The default [`RelayConfig::credit_pool`]: 16 MiB, the widest window
/// ([`proto::routing::MAX_CREDIT_WINDOW`]): the whole window of one session
/// whose exec-server is 40 ms or more away (a window is one round trip of
/// the exec-server's link at 400 MiB/s), or of 85 sessions moving at once
/// next to the relay. A far exec-server moves a session's output at about
/// its window per round trip: with 4 MiB, one 50 ms away was held to
/// about 55 MiB/s, under twice what ssh carries across the same link
/// (BENCHMARKS.md). However many sessions stall, together they hold at
/// most their floors and this.
pub const DEFAULT_CREDIT_POOL: u64 = proto::routing::MAX_CREDIT_WINDOW as u64;

impl FleetConfig {
    /// Membership of the fleet whose key is `fleet`: peers dialled with
    /// `https://` checked against the system's roots, at most
    /// [`DEFAULT_MAX_FORWARDED`] sessions forwarded at once.
    pub fn new(fleet: std::sync::Arc<crate::fleet::Fleet>) -> Self {
        Self {
            fleet,
            peer_tls: proto::tls::TlsSettings::default(),
            max_forwarded: DEFAULT_MAX_FORWARDED,
        }
    }
}

/// Who may register, and how often.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegistrationLimits {
    /// If set, only the exec-server public keys listed in this file may
    /// register (one per line, `#` comments); re-read when it changes.
    pub allowed_servers: Option<PathBuf>,
    /// Most registrations held over one connection.
    pub per_connection: usize,
    /// Most registrations held from one source address.
    pub per_source: usize,
    /// Registration attempts one source may start per second (sustained).
    pub rate_per_source: f64,
    /// Registration attempts one source may start in a burst.
    pub burst_per_source: f64,
}

impl Default for RegistrationLimits {
    fn default() -> Self {
        Self {
            allowed_servers: None,
            per_connection: 4,
            per_source: 64,
            rate_per_source: 5.0,
            burst_per_source: 20.0,
        }
    }
}

/// Default `start:rate:full` for unauthenticated sessions.
pub const DEFAULT_STARTUPS: Startups = Startups {
    start: 64,
    rate: 30,
    full: 256,
};

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
            connections: ConnLimits::new(4096, 256, Duration::from_secs(5)),
            startups: AdmissionLimits::new(DEFAULT_STARTUPS, 16),
            first_frame_timeout: Duration::from_secs(5),
            registrations: RegistrationLimits::default(),
            session_buffer: 128 * 1024,
            max_buffered: 256 * 1024 * 1024,
            session_credit: DEFAULT_SESSION_CREDIT,
            credit_pool: DEFAULT_CREDIT_POOL,
            tls: None,
            directory: None,
            fleet: None,
        }
    }
}
