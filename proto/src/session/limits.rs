//! [`Limits`]: the timers and bounds of a session.

use std::time::Duration;

use crate::noise::SessionConfig;

/// Timers and bounds of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The Noise suite, rekey schedule and envelope limit.
    pub noise: SessionConfig,
    /// Client: from the first handshake message until the hello is
    /// answered. Exec-server: until the client's hello arrives.
    pub handshake_timeout: Duration,
    /// Client: a ping is sent when nothing has arrived for this long, and
    /// when nothing has left for this long (so the exec-server hears from
    /// a live client at least this often). Exec-server: a ping is sent
    /// when nothing has arrived for this long (once per quiet period), so
    /// a live client is heard from before the idle timeout however rarely
    /// it pings by itself.
    pub keepalive: Duration,
    /// The session ends when nothing has arrived for this long while the
    /// machine was reading.
    pub idle_timeout: Duration,
    /// After a close, how long to wait for the peer to end the link, so the
    /// close is delivered rather than cut off.
    pub linger: Duration,
    /// Bytes waiting to be sent above which no more input is taken.
    pub backlog: usize,
    /// Exec-server: most calls running at once on the session. Client: most
    /// calls it keeps open at once (the exec-server's own cap, from its
    /// hello answer, applies too).
    pub max_calls: usize,
    /// Exec-server: bytes of a call's stdin the client may send beyond what
    /// the process has taken (announced in the hello answer; more is a
    /// protocol violation). Stdin never has to wait in the exec-server, so
    /// a process that does not read its stdin holds up nothing else.
    /// The window a call starts with: it grows with the path
    /// ([`window`](super::window)) up to [`stdin_window_max`](Self::stdin_window_max).
    pub stdin_window: u32,
    /// Exec-server: the widest a call's stdin window grows (beyond
    /// [`stdin_window`](Self::stdin_window) it is taken from the
    /// [`Acceptor`](super::Acceptor)'s stdin budget).
    pub stdin_window_max: u32,
    /// Output credit of one call (its output bytes plus
    /// [`output::EVENT_COST`](super::output::EVENT_COST) per event) that may be unacknowledged:
    /// client, what it buffers per call; exec-server, what it keeps per
    /// call. The session uses the smaller. The window a call starts with:
    /// the client widens it with the path ([`window`](super::window)) up to
    /// [`output_window_max`](Self::output_window_max).
    pub output_window: u32,
    /// The widest a call's output window grows: client, what it asks for
    /// at most (what a caller's queue for a call must hold); exec-server,
    /// what it grants at most.
    pub output_window_max: u32,
    /// Exec-server: offer resumes (keep a session whose link broke, and
    /// its calls' unacknowledged events). Client: take a session back over
    /// a new link when its link breaks.
    pub resumable: bool,
    /// Exec-server: how long a session whose link broke waits for its
    /// client to resume it; then it ends ([`ServerEvent::Expired`](super::ServerEvent::Expired), with
    /// what a client that comes back late is told).
    pub resume_grace: Duration,
}

impl Limits {
    /// A client's defaults: 15 s handshake, a ping after 30 s of silence,
    /// dead after 90 s.
    pub fn client() -> Self {
        Self {
            noise: SessionConfig::default(),
            handshake_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            linger: Duration::from_secs(2),
            backlog: 256 * 1024,
            max_calls: 1024,
            stdin_window: 256 * 1024,
            stdin_window_max: 16 * 1024 * 1024,
            output_window: 4 * 1024 * 1024,
            output_window_max: 32 * 1024 * 1024,
            resumable: false,
            resume_grace: Duration::from_secs(60),
        }
    }

    /// An exec-server's defaults: 10 s handshake, idle after 120 s (four
    /// client keepalives), 256 calls per session.
    pub fn server() -> Self {
        Self::server_idle(Duration::from_secs(120))
    }

    /// An exec-server's defaults with the client declared gone after
    /// `idle` of silence: it is asked whether it is there after a quarter
    /// of that (at least 100 ms).
    pub fn server_idle(idle: Duration) -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            keepalive: (idle / 4).max(Duration::from_millis(100)),
            idle_timeout: idle,
            max_calls: 256,
            ..Self::client()
        }
    }
}
