//! [`Now`]: the time every input carries.

use std::time::{Duration, Instant, SystemTime};

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
