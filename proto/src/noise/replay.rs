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
///
/// # Early data
///
/// [`check_early`](Self::check_early) decides whether the call a message 1
/// carries may run from it (in the manner of TLS 1.3's 0-RTT, RFC 8446
/// §8): only a message the guard can remember, so that any replay of it is
/// refused. Early data is refused (the handshake goes on, the call is sent
/// again over the session) for a message stamped before the window, and
/// for one stamped at or before the *early floor*: the guard's start plus
/// the window (a guard that starts empty cannot know what an earlier one,
/// before a restart, accepted within the window), raised to the timestamp
/// of any message that found the guard full (which it could not
/// remember). A guard that has not been told when it started
/// ([`started_at`](Self::started_at)) accepts no early data.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    window: Duration,
    capacity: usize,
    seen: HashSet<Entry>,
    by_time: BTreeSet<(Duration, Entry)>,
    latest: Duration,
    early_floor: Duration,
}

/// Whether the call a message 1 carries may run from it
/// ([`ReplayGuard::check_early`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// Fresh and remembered: it may run.
    Accepted,
    /// The handshake goes on; the call must be sent again over the session.
    Refused(EarlyRefusal),
}

/// Why early data was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyRefusal {
    /// Its timestamp is older than the window.
    Stale,
    /// The guard started (the exec-server restarted) within the window of
    /// its timestamp, or could not remember a message as recent.
    Restarted,
    /// The guard is full.
    Full,
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
            early_floor: Duration::MAX,
        }
    }

    /// The guard of an exec-server that started at `now`: early data is
    /// refused for messages stamped up to `now` plus the window.
    pub fn started_at(mut self, now: SystemTime) -> Self {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        self.early_floor = now.saturating_add(self.window);
        self
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
        let entry = entry(client, ephemeral);
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

    /// Checks a message 1 that carries early data (see the type's
    /// documentation). A replay of a message already seen is refused
    /// entirely ([`HandshakeError::Replay`]), as is a timestamp beyond the
    /// window ahead of the exec-server's clock
    /// ([`HandshakeError::ClockSkew`]); otherwise the handshake goes on, and
    /// the answer says whether the call may run from message 1.
    pub fn check_early(
        &mut self,
        client: &PublicKey,
        ephemeral: &[u8; KEY_LEN],
        timestamp: Duration,
        now: SystemTime,
    ) -> Result<Early, HandshakeError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        self.latest = self.latest.max(now);
        let floor = self.latest.saturating_sub(self.window);
        self.expire(floor);

        if timestamp > now.saturating_add(self.window) {
            return Err(HandshakeError::ClockSkew);
        }
        let entry = entry(client, ephemeral);
        if self.seen.contains(&entry) {
            return Err(HandshakeError::Replay);
        }
        if timestamp < floor || timestamp.abs_diff(now) > self.window {
            // Forgotten or never remembered: its replays are as old.
            return Ok(Early::Refused(EarlyRefusal::Stale));
        }
        if self.seen.len() >= self.capacity {
            // Not remembered: neither it nor anything stamped as early
            // may run from message 1 from now on.
            self.early_floor = self.early_floor.max(timestamp);
            return Ok(Early::Refused(EarlyRefusal::Full));
        }
        self.seen.insert(entry);
        self.by_time.insert((timestamp, entry));
        if timestamp <= self.early_floor {
            return Ok(Early::Refused(EarlyRefusal::Restarted));
        }
        Ok(Early::Accepted)
    }

    /// Forgets every initiation (as if they had expired), keeping the
    /// early floor.
    #[cfg(test)]
    pub(crate) fn clear_for_tests(&mut self) {
        self.seen.clear();
        self.by_time.clear();
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

/// The register's entry for an initiation.
fn entry(client: &PublicKey, ephemeral: &[u8; KEY_LEN]) -> Entry {
    let mut entry = [0u8; 2 * KEY_LEN];
    let (s, e) = entry.split_at_mut(KEY_LEN);
    s.copy_from_slice(client.as_bytes());
    e.copy_from_slice(ephemeral);
    entry
}
