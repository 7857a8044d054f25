//! The exec-server's guard against replayed message 1.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::HandshakeError;
use crate::keys::{KEY_LEN, PublicKey};

type Entry = [u8; 2 * KEY_LEN];

/// Remembers accepted initiations so that a replayed message 1 is refused.
///
/// Message 1 is accepted iff its timestamp is within ±`window` of the
/// exec-server's clock and its (client static key, ephemeral key) pair has
/// not been accepted before. Pairs are remembered until their timestamp is
/// older than `window`, after which the timestamp check alone refuses them.
/// Timestamps need not increase: one client may open several sessions at
/// once and their first messages may arrive in any order.
///
/// The guard also tracks the latest `now` it has seen and refuses
/// timestamps older than that minus `window`, so that a server clock that
/// steps backwards cannot revive initiations whose entries were expired.
///
/// Memory is bounded by `capacity` entries; when it is full of unexpired
/// entries new initiations are refused with [`HandshakeError::Busy`].
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    window: Duration,
    capacity: usize,
    seen: HashSet<Entry>,
    by_time: BTreeSet<(Duration, Entry)>,
    latest: Duration,
}

impl Default for ReplayGuard {
    /// A 120-second window and room for 65,536 entries.
    fn default() -> Self {
        Self::new(Duration::from_secs(120), 65_536)
    }
}

impl ReplayGuard {
    /// A guard accepting timestamps within ±`window` and remembering at most
    /// `capacity` initiations.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            seen: HashSet::new(),
            by_time: BTreeSet::new(),
            latest: Duration::ZERO,
        }
    }

    /// The accepted clock difference.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Number of remembered initiations.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks an initiation from `client` with ephemeral key `ephemeral` and
    /// message-1 `timestamp` (since the Unix epoch) at the server's `now`,
    /// and remembers it if accepted.
    pub fn check(
        &mut self,
        client: &PublicKey,
        ephemeral: &[u8; KEY_LEN],
        timestamp: Duration,
        now: SystemTime,
    ) -> Result<(), HandshakeError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        self.latest = self.latest.max(now);
        let floor = self.latest.saturating_sub(self.window);
        self.expire(floor);

        if timestamp.abs_diff(now) > self.window || timestamp < floor {
            return Err(HandshakeError::ClockSkew);
        }
        let mut entry = [0u8; 2 * KEY_LEN];
        let (s, e) = entry.split_at_mut(KEY_LEN);
        s.copy_from_slice(client.as_bytes());
        e.copy_from_slice(ephemeral);
        if self.seen.contains(&entry) {
            return Err(HandshakeError::Replay);
        }
        if self.seen.len() >= self.capacity {
            return Err(HandshakeError::Busy);
        }
        self.seen.insert(entry);
        self.by_time.insert((timestamp, entry));
        Ok(())
    }

    /// Forgets entries with timestamps before `floor`.
    fn expire(&mut self, floor: Duration) {
        while let Some(first) = self.by_time.first() {
            if first.0 >= floor {
                break;
            }
            if let Some((_, entry)) = self.by_time.pop_first() {
                self.seen.remove(&entry);
            }
        }
    }
}
