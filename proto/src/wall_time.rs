//! Wall-clock helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch for `t` (0 if before the epoch; saturates).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn now_unix_nanos() -> u64 {
    unix_nanos(SystemTime::now())
}
