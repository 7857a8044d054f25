//! The exec-server's guard against replayed message 1.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::HandshakeError;
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
/// refused. A guard starts empty, so it cannot know what an earlier one
/// (before the exec-server restarted) accepted: each guard has a
/// [ticket](EarlyTicket) of its own, which the hello answer hands to the
/// client, and it runs early data only from a message 1 carrying its own
/// ticket (like TLS 1.3's session tickets, whose keys a restarted server no
/// longer holds). Early data is refused (the handshake goes on, the call is
/// sent again over the session) for a message with another run's ticket or
/// none, for one stamped before the window, and for one stamped at or
/// before the *early floor*: the timestamp of any message that found the
/// guard full (which it could not remember).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    window: Duration,
    capacity: usize,
    seen: HashSet<Entry>,
    by_time: BTreeSet<(Duration, Entry)>,
    latest: Duration,
    early_floor: Duration,
    /// This run's ticket (none if the system's random source failed:
    /// then no early data runs).
    ticket: Option<EarlyTicket>,
}

/// The length of an [`EarlyTicket`].
pub const TICKET_LEN: usize = 16;

/// Names one run of an exec-server (one [`ReplayGuard`]): random, handed
/// to clients in the hello answer, and carried in a message 1 with early
/// data, which runs only under the run that issued it. Not a secret (a
/// replayed message 1 carries the ticket it was made with, sealed to the
/// exec-server's key): a name that is never used twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EarlyTicket([u8; TICKET_LEN]);

impl EarlyTicket {
    /// No ticket: what a client that knows none of the exec-server's runs
    /// sends (its early data is then sent again after the handshake).
    pub const NONE: Self = Self([0; TICKET_LEN]);

    /// The ticket of these bytes.
    pub const fn from_bytes(bytes: [u8; TICKET_LEN]) -> Self {
        Self(bytes)
    }

    /// Its bytes.
    pub const fn as_bytes(&self) -> &[u8; TICKET_LEN] {
        &self.0
    }

    /// The ticket of a message field, if it is one.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// A new random ticket.
    fn random() -> Option<Self> {
        use ring::rand::SecureRandom as _;
        let mut t = [0u8; TICKET_LEN];
        ring::rand::SystemRandom::new().fill(&mut t).ok()?;
        Some(Self(t)).filter(|t| *t != Self::NONE)
    }
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
    /// Its ticket is another run's (the exec-server restarted since the
    /// client was given it), or it carried none.
    Restarted,
    /// The guard is full, or could not remember a message as recent.
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
            early_floor: Duration::ZERO,
            ticket: EarlyTicket::random(),
        }
    }

    /// This run's ticket, for the hello answer (none: no early data runs).
    pub fn ticket(&self) -> Option<EarlyTicket> {
        self.ticket
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
        ticket: EarlyTicket,
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
        if self.ticket != Some(ticket) {
            // Made for another run, which may have run it.
            return Ok(Early::Refused(EarlyRefusal::Restarted));
        }
        if timestamp <= self.early_floor {
            return Ok(Early::Refused(EarlyRefusal::Full));
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
