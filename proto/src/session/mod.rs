//! The session protocol as sans-IO state machines: everything a core-client
//! and an exec-server say to each other inside one Noise session.
//!
//! Layout:
//! - this module: [`Now`] (the time every input carries), [`Limits`] (the
//!   timers and bounds of a session), [`Mark`] and [`Transmit`] (what leaves,
//!   and which marked messages it completed), [`Received`] (where an incoming
//!   message came from);
//! - [`ClientSession`]: the initiator. Handshake, hello, calls (exec, stdin,
//!   signal, resize, cancel), keepalive pings and the clock-offset estimate, terminal
//!   events checked against each call's sequence;
//! - [`ServerSession`]: the responder. Handshake with the authorized keys and
//!   the replay guard, hello answer, the call table and its cap (and the
//!   bounds of a terminal call), sequence numbers and the final event of
//!   each call, pong;
//! - `events` (private): a machine's events for its caller, with the one
//!   handed back and the end reported once, last;
//! - `link` (private): what both share: the Noise transport, clear frames,
//!   marks and their hop headers, the backlog bound, close and linger;
//! - `stdin` (private): per-call stdin flow control (a window of bytes
//!   beyond the exec-server's acknowledgements), and [`StdinFlow`];
//! - [`window`]: windows that follow the path, at their receiver (the
//!   round trip measured by a ping, the window sized from what it carried,
//!   a shared budget); the exec-server's measurement is in
//!   `server::measure`;
//! - [`output`]: per-call output flow control (a window of output credit
//!   beyond the client's acknowledgements, so that a caller that stops
//!   reading holds up its own call only);
//! - [`peer_clock`]: the peer's clock offset, estimated from request/answer
//!   pairs;
//! - [`SessionError`], [`Violation`], [`CallError`]: typed errors.
//!
//! # Driving a machine
//!
//! Nothing here reads a clock, sleeps or does I/O. The caller hands in
//! frames from the link ([`handle_frame`](ClientSession::handle_frame)), the
//! end of the link, commands, and [`Now`]; it drains
//! [`poll_transmit`](ClientSession::poll_transmit) into the link and
//! [`poll_event`](ClientSession::poll_event) into its own routing; it calls
//! [`handle_timeout`](ClientSession::handle_timeout) once the instant from
//! [`poll_timeout`](ClientSession::poll_timeout) has passed. An event the
//! caller cannot take yet is handed back with `defer`; until it is taken the
//! machine reads nothing more.
//!
//! # Bounds
//!
//! While more than [`Limits::backlog`] bytes wait to be sent, a machine asks
//! for no more local input (`wants_input` is false), and an exec-server asks
//! for no more frames either (answers to pings and hellos are output too), so
//! a peer that never reads cannot grow the other side's memory beyond the
//! backlog and the answers to one frame. A machine that holds undelivered
//! events asks for no frames. Idle timers stand still while a machine is not
//! reading, so a slow reader is never mistaken for a dead peer.

mod client;
mod error;
mod events;
pub mod output;
pub mod peer_clock;
pub(crate) mod resume;
mod server;
mod shared;
mod stdin;
pub mod window;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use std::time::{Duration, Instant, SystemTime};

pub use client::{
    Abandonment, CallEvent, ClientEvent, ClientSession, Counters, FirstCall, FirstCallError,
    ForwardError, Forwarded, Ready, ReattachError, SpanCounts, fits_early,
};
#[cfg(test)]
pub(crate) use client::{HELD_BATCHES, LINGER};
pub use error::{CallError, LinkFailure, LinkFailureKind, SessionError, Stage, Violation};
pub use server::{
    Acceptor, Account, Adopted, KeySource, STDIN_BUDGET, ServerEvent, ServerSession, SpanBatch,
    Tombstone,
};
pub use stdin::StdinFlow;

use crate::noise::SessionConfig;
use crate::pb::tunnel::Frame;

/// The time an input happens at: the monotonic clock for timers, and the
/// wall clock for what goes on the wire (send times, handshake timestamps)
/// and for span timestamps. Drivers take both at once with
/// [`Now::system`]; tests advance both by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For timers.
    pub at: Instant,
    /// For timestamps.
    pub wall: SystemTime,
}

impl Now {
    /// The system's clocks, read now.
    pub fn system() -> Self {
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Both clocks moved on by `d`.
    pub fn after(&self, d: Duration) -> Self {
        Self {
            at: self.at + d,
            wall: self.wall + d,
        }
    }

    /// The wall clock in nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> u64 {
        crate::wall_time::unix_nanos(self.wall)
    }
}

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
    /// ([`window`]) up to [`stdin_window_max`](Self::stdin_window_max).
    pub stdin_window: u32,
    /// Exec-server: the widest a call's stdin window grows (beyond
    /// [`stdin_window`](Self::stdin_window) it is taken from the
    /// [`Acceptor`]'s stdin budget).
    pub stdin_window_max: u32,
    /// Output credit of one call (its output bytes plus
    /// [`output::EVENT_COST`] per event) that may be unacknowledged:
    /// client, what it buffers per call; exec-server, what it keeps per
    /// call. The session uses the smaller. The window a call starts with:
    /// the client widens it with the path ([`window`]) up to
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
    /// client to resume it; then it ends ([`ServerEvent::Expired`], with
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

/// A message whose departure the caller wants to hear about: when the
/// record holding its last byte leaves, `tag` comes back in
/// [`Transmit::done`]. A marked message ends its record, so its frame
/// carries `hop` (a traceparent in clear for the relay) and no other
/// message's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark<T> {
    /// Handed back once the message has left.
    pub tag: T,
    /// The hop header for the message's frame.
    pub hop: Option<String>,
}

impl<T> Mark<T> {
    /// A mark with a hop header.
    pub fn new(tag: T, hop: Option<String>) -> Self {
        Self { tag, hop }
    }
}

/// One frame to send, and what it completed.
#[derive(Debug)]
pub struct Transmit<T> {
    /// The frame.
    pub frame: Frame,
    /// Tags of the marked messages whose last byte is in this frame.
    pub done: Vec<T>,
    /// Envelope-stream bytes that have left so far, this frame included.
    pub sent: u64,
}

/// Where an incoming message came from: when the frame that completed it
/// was handed in, and that frame's hop header (empty if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The wall-clock time of the frame's [`handle_frame`](ClientSession::handle_frame).
    pub arrived: SystemTime,
    /// The frame's hop header (a traceparent, as the relay rewrote it).
    pub hop: String,
    /// The sender's wall clock when it sent the message (Unix nanoseconds;
    /// 0 if it did not say).
    pub sent_unix_nanos: u64,
    /// The relay's timings the frame carried (at most
    /// [`MAX_HOP_TIMINGS`](crate::limits::MAX_HOP_TIMINGS)), given with the
    /// first message the frame completed (they name their own calls).
    pub relay: Vec<crate::pb::tunnel::HopTiming>,
}

/// How a session ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// This side closed it.
    Local,
    /// The peer closed it with an authenticated close, giving this reason.
    Peer(String),
}
