//! What the emulator does to the bytes it carries: each direction's path
//! (delay, jitter, bandwidth, bottleneck buffer), its bounds, and a cut
//! applied to every connection.

use std::net::SocketAddr;
use std::time::Duration;

/// A direction through the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the side that connects to the emulator towards the target
    /// (client → server).
    Up,
    /// From the target back to the side that connected (server → client).
    Down,
}

impl Direction {
    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Up => 0,
            Direction::Down => 1,
        }
    }

    /// Both directions, up first.
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];
}

/// One direction of the path, as a network would shape it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathSettings {
    /// One-way propagation delay added to every byte.
    pub delay: Duration,
    /// Each chunk's delay varies uniformly within `delay ± jitter`
    /// (never below zero); order is always kept, as TCP keeps it, so a
    /// chunk never overtakes the one before it.
    pub jitter: Duration,
    /// The bottleneck's bandwidth in bytes per second (`None`: as fast as
    /// loopback carries it).
    pub rate: Option<u64>,
    /// The bottleneck's buffer in bytes (with a `rate`): bytes that have
    /// arrived but not yet left the bottleneck. When it is full the
    /// emulator stops reading from the sender, so a queue forms in front
    /// of the bottleneck where a real one would, and the sender's TCP
    /// window closes instead of memory growing.
    pub buffer: usize,
}

impl PathSettings {
    /// Loopback as it is: no delay, no jitter, no rate limit.
    pub const LOOPBACK: PathSettings = PathSettings {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        rate: None,
        buffer: DEFAULT_BUFFER,
    };

    /// A path with this one-way `delay` and nothing else.
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::LOOPBACK
        }
    }

    /// This path with `jitter`.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// This path with a bottleneck of `bytes_per_sec` and a `buffer` in
    /// front of it.
    pub fn with_rate(mut self, bytes_per_sec: u64, buffer: usize) -> Self {
        self.rate = Some(bytes_per_sec.max(1));
        self.buffer = buffer;
        self
    }
}

impl Default for PathSettings {
    fn default() -> Self {
        Self::LOOPBACK
    }
}

/// The bottleneck buffer when none is given: 256 KiB, a typical router
/// queue for a link of tens of Mbit/s.
const DEFAULT_BUFFER: usize = 256 * 1024;

/// How a connection is cut. Exhaustive on purpose: a TCP connection ends
/// in one of these two ways, and the soak test alternates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutKind {
    /// Both ends get an orderly end of stream (FIN).
    Close,
    /// Both ends get a reset (RST): a crashed middlebox or a lost route.
    Reset,
}

/// When a connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CutAt {
    /// Once `bytes` have been delivered in `direction` (the receiver gets
    /// exactly that many, then the cut).
    Bytes {
        /// The direction whose bytes are counted.
        direction: Direction,
        /// How many bytes get through.
        bytes: u64,
    },
    /// This long after the connection was accepted.
    After(Duration),
}

/// A cut applied to every connection the emulator carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Close or reset.
    pub kind: CutKind,
    /// At a byte count or a time.
    pub at: CutAt,
}

/// Everything an emulator is started with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where it listens (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// Where it forwards each connection.
    pub(crate) target: SocketAddr,
    /// Client → server.
    pub up: PathSettings,
    /// Server → client.
    pub down: PathSettings,
    /// The most bytes one direction of one connection holds in its delay
    /// line (default 64 MiB). Without a rate this is the path's window:
    /// a flow gets at most `max_in_flight / delay`, as over a real path
    /// whose receiver advertises that window.
    pub max_in_flight: usize,
    /// The most connections carried at once (default 256); more are reset
    /// at once and counted as refused.
    pub max_connections: usize,
    /// A cut for every connection, if any.
    pub(crate) cut: Option<Cut>,
    /// Seeds the jitter, so a run can be repeated.
    pub(crate) seed: u64,
}

impl Config {
    /// Forwarding to `target` as loopback does (change the paths with
    /// [`Config::rtt`] or the fields).
    pub fn new(target: SocketAddr) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            up: PathSettings::LOOPBACK,
            down: PathSettings::LOOPBACK,
            max_in_flight: 64 * 1024 * 1024,
            max_connections: 256,
            cut: None,
            seed: 0x5eed,
        }
    }

    /// This config with a round trip of `rtt`, half of it each way.
    pub fn rtt(mut self, rtt: Duration) -> Self {
        self.up.delay = rtt / 2;
        self.down.delay = rtt - rtt / 2;
        self
    }

    /// This config with `cut` applied to every connection.
    pub fn with_cut(mut self, cut: Cut) -> Self {
        self.cut = Some(cut);
        self
    }
}
