//! Client settings.

use std::time::Duration;

use proto::keys::{PublicKey, StaticKeypair};
use proto::tls::TlsSettings;

/// How the client reaches the exec-server. An `https://` URL is dialled
/// with TLS (checked against [`ClientConfig::tls`], never downgraded to
/// plain), an `http://` URL with plain HTTP/2.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// Through a relay at this URL (`http://host:port` or `https://…`).
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

/// How long the CLI's sessions keep trying to come back after a broken
/// link: as long as an exec-server keeps them by default.
pub const DEFAULT_RESUME: Duration = Duration::from_secs(60);

/// Settings for a [`crate::Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The client's static key.
    pub key: StaticKeypair,
    /// The exec-server's public key (pinned).
    pub server: PublicKey,
    /// Where to connect.
    pub target: Target,
    /// For an `https://` target: the CA certificates its certificate is
    /// checked against (by default the system's).
    pub tls: TlsSettings,
    /// How long reaching the relay (or the exec-server's own listener)
    /// may take: the TCP connection and, for `https://`, its TLS
    /// handshake. Short (3 s by default) so that a caller with several
    /// relays (the CLI tries its `--relay` list in order, and a session
    /// that comes back tries [`alternates`](Self::alternates) in turn)
    /// soon goes on to the next.
    pub connect_timeout: Duration,
    /// Timeout for the relay pairing, Noise handshake and session init.
    pub handshake_timeout: Duration,
    /// Keepalive ping interval on an idle session.
    pub keepalive: Duration,
    /// Messages queued to the session before callers wait.
    pub outbound_queue: usize,
    /// Events buffered per call at least (the queue also holds a whole
    /// output window, so that a caller that does not read holds up its own
    /// call only).
    pub events_per_call: usize,
    /// Where command records go (off the hot path), if anywhere.
    #[cfg(feature = "records")]
    pub metadata: Option<metadata::Persister>,
    /// Record the commands' arguments too (the program name always is).
    pub record_args: bool,
    /// Whether and how often to keep the session warm (off by default;
    /// [`Client::set_warm_policy`](crate::Client::set_warm_policy) changes
    /// it later).
    pub warm: crate::WarmPolicy,
    /// Other ways to the same exec-server (further relays), tried in
    /// order after `target` when a session's link breaks and it comes
    /// back; a session may come back through another relay than it left.
    pub alternates: Vec<Target>,
    /// How long a session whose link broke keeps trying to come back and
    /// resume its calls with nothing lost (as long as the exec-server
    /// keeps them); `None`: calls end with their link. Off by default in
    /// the library, on (60 s) in the CLI.
    pub resume: Option<Duration>,
    /// Whether calls see [`Event::Reconnecting`](crate::Event) and
    /// [`Event::Resumed`](crate::Event) when their session's link breaks
    /// and comes back (otherwise a resume is seen only as a pause).
    pub resume_events: bool,
    /// Whether a call that has to establish its session sends itself in
    /// handshake message 1 (early data: one round trip for a cold call,
    /// not three). The exec-server runs it from there only when it can
    /// rule out a replay, otherwise the call is sent again after the
    /// handshake, once (see the project's `docs/session.md`). On by
    /// default; off, a cold call waits for the handshake and the hello.
    pub early_data: bool,
    /// The exec-server run's ticket an earlier client was given
    /// ([`Client::early_ticket`](crate::Client::early_ticket)), so that
    /// this client's first cold call runs from message 1 too (without one,
    /// the first is sent again after the handshake, and the hello answer
    /// gives the ticket for the next).
    pub early_ticket: Option<proto::noise::EarlyTicket>,
    /// Forward each call's own spans to an exec-server that takes them
    /// (its hello answer says so when it exports over OTLP), so that the
    /// whole trace reaches its collector although this process has no
    /// route to one: after the call's final event, the spans of its trace
    /// that have ended are taken from here and sent inside the session,
    /// and the rest when its dispatch ends. A
    /// `telemetry::forward::SpanCollector` (re-exported with the
    /// `forward-spans` feature) whose processor is on the embedder's
    /// tracer provider collects them, the embedder's own spans and its
    /// `tracing` spans (through `tracing-opentelemetry`) included. Set it
    /// only when this process exports no spans to a collector itself, or
    /// they reach it twice. `None` (the default): nothing is forwarded.
    pub span_source: Option<std::sync::Arc<dyn telemetry::forward::SpanSource>>,
}

impl ClientConfig {
    /// The session machine's timers and bounds for these settings: the
    /// handshake bound, a keepalive ping after `keepalive` of silence, and
    /// the exec-server declared dead after three unanswered keepalives.
    pub(crate) fn limits(&self) -> proto::session::Limits {
        let mut limits = proto::session::Limits::client();
        limits.handshake_timeout = self.handshake_timeout;
        limits.keepalive = self.keepalive;
        limits.idle_timeout = self.keepalive.saturating_mul(3);
        limits.resumable = self.resume.is_some();
        limits
    }

    /// Takes the others of several ways to the same exec-server (this
    /// config's target being the `i`th) as its alternates, those after it
    /// first.
    #[must_use]
    pub fn alternates_of(mut self, targets: &[Target], i: usize) -> Self {
        let n = targets.len();
        self.alternates = (1..n)
            .filter_map(|k| targets.get((i + k) % n))
            .cloned()
            .collect();
        self
    }

    /// Every way to the exec-server, in the order they are tried.
    pub(crate) fn targets(&self) -> impl Iterator<Item = &Target> {
        std::iter::once(&self.target).chain(&self.alternates)
    }

    /// Settings with defaults.
    pub fn new(key: StaticKeypair, server: PublicKey, target: Target) -> Self {
        Self {
            key,
            server,
            target,
            tls: TlsSettings::system(),
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(30),
            outbound_queue: 256,
            events_per_call: 64,
            #[cfg(feature = "records")]
            metadata: None,
            record_args: false,
            warm: crate::WarmPolicy::off(),
            alternates: Vec::new(),
            resume: None,
            resume_events: false,
            early_data: true,
            early_ticket: None,
            span_source: None,
        }
    }
}
