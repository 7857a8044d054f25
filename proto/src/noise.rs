//! The sans-IO Noise IK session between a core-client and an exec-server.
//!
//! Layout:
//! - this module: the suite, the session configuration, the prologue and the
//!   message-1 timestamp;
//! - [`ClientHandshake`] (initiator) and [`accept`] (responder): the two IK
//!   messages. The client pins the exec-server's static key; the exec-server
//!   checks the client's static key against its authorized keys, then the
//!   timestamp in message 1 against its [`ReplayGuard`], before it answers;
//! - [`Transport`]: the session after the handshake. Each Noise transport
//!   message carries one record (`DATA`, `REKEY` or `CLOSE`): its body, then
//!   its type as the last byte (a trailer, so that a received record is
//!   opened in place where its body belongs); `DATA` records carry the
//!   length-prefixed envelope stream ([`crate::envelope_stream`]);
//! - `cipher` (private): each direction's Noise `CipherState` over `ring`'s
//!   AEAD, sealing and opening in place (the handshake is `snow`'s; its
//!   split keys the two directions);
//! - `error` (private): [`TransportError`], what the transport and its
//!   ciphers report.
//!
//! Nothing here does I/O or reads a clock: the caller passes bytes and the
//! current time in, and gets bytes and events out.
//!
//! # Prologue
//!
//! `"{PROTOCOL_VERSION}\0{protocol name}\0"` followed by the route (the
//! exec-server id as ASCII), so a handshake captured on one route, version or
//! suite cannot complete on another.
//!
//! # Message 1 payload
//!
//! A 12-byte timestamp: seconds since the Unix epoch (`u64` big-endian) then
//! nanoseconds (`u32` big-endian), then optionally *early data*: the
//! session's first messages (the hello and the first call), protected by
//! the exec-server's static key alone. Message 2's payload is empty when
//! message 1 carried none; otherwise one byte says whether the early data
//! runs (1) or must be sent again over the session (0, "retry after the
//! handshake"): see [`ReplayGuard::check_early`].

mod cipher;
mod error;
mod handshake;
mod replay;
mod transport;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::TransportError;
pub use handshake::{Accepted, ClientHandshake, MAX_EARLY_DATA, accept};
pub(crate) use handshake::{EarlyAnswer, accept_early};
pub use replay::{Early, EarlyRefusal, EarlyTicket, ReplayGuard, TICKET_LEN};
#[cfg(test)]
pub(crate) use transport::{RECORD_CLOSE, RECORD_DATA, RECORD_REKEY};
pub use transport::{Transport, TransportStats};

use crate::PROTOCOL_VERSION;
use crate::keys::PublicKey;
use crate::limits::MAX_ENVELOPE;

/// The Noise protocol name for sessions with the ChaChaPoly suite.
pub(crate) const IK_PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// The Noise protocol name for sessions with the AES-GCM suite (the
/// default).
pub(crate) const IK_PATTERN_AESGCM: &str = "Noise_IK_25519_AESGCM_BLAKE2s";

/// Length of the message-1 timestamp payload.
pub(crate) const TIMESTAMP_LEN: usize = 12;

/// The cipher suite of a session. Both sides must use the same one: it is
/// part of the protocol name and the prologue, so a mismatch fails the
/// handshake.
///
/// AES-GCM is the default: with hardware AES (and ring's implementation,
/// which snow uses here) it costs about a quarter of ChaCha20-Poly1305's
/// CPU per byte, and bulk output is bound by that CPU (`BENCHMARKS.md`,
/// `pipe`). ChaChaPoly remains for peers without hardware AES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Suite {
    /// X25519, ChaCha20-Poly1305, BLAKE2s.
    ChaChaPoly,
    /// X25519, AES-256-GCM, BLAKE2s.
    #[default]
    AesGcm,
}

impl Suite {
    /// Both suites.
    pub const ALL: [Suite; 2] = [Suite::ChaChaPoly, Suite::AesGcm];

    /// The full Noise protocol name.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Suite::ChaChaPoly => IK_PATTERN,
            Suite::AesGcm => IK_PATTERN_AESGCM,
        }
    }

    /// The short name used in configuration: `chachapoly` or `aesgcm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::ChaChaPoly => "chachapoly",
            Suite::AesGcm => "aesgcm",
        }
    }

    pub(crate) fn params(self) -> Result<snow::params::NoiseParams, HandshakeError> {
        self.protocol_name()
            .parse()
            .map_err(|e: snow::Error| HandshakeError::Noise(e.to_string()))
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a known suite name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cipher suite {0:?}: expected \"chachapoly\" or \"aesgcm\"")]
pub struct UnknownSuite(pub String);

impl FromStr for Suite {
    type Err = UnknownSuite;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "chachapoly" | "chacha20poly1305" | "chacha" => Ok(Suite::ChaChaPoly),
            "aesgcm" | "aes-gcm" | "aes256gcm" => Ok(Suite::AesGcm),
            _ => Err(UnknownSuite(s.to_string())),
        }
    }
}

/// Session parameters. Both sides must agree on `suite`; the rest is local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The cipher suite.
    pub suite: Suite,
    /// Rekey the sending direction after this many messages (default 2^16).
    pub rekey_after_messages: u64,
    /// Rekey the sending direction after this long (default 120 s).
    pub rekey_after: Duration,
    /// Largest envelope accepted from the peer, and sent (default
    /// [`MAX_ENVELOPE`]; values above it are capped).
    pub max_envelope: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            suite: Suite::default(),
            rekey_after_messages: 1 << 16,
            rekey_after: Duration::from_secs(120),
            max_envelope: MAX_ENVELOPE,
        }
    }
}

/// The prologue for a session on `route` with `suite`.
pub fn prologue(suite: Suite, route: &[u8]) -> Vec<u8> {
    let mut p = format!("{PROTOCOL_VERSION}\0{}\0", suite.protocol_name()).into_bytes();
    p.extend_from_slice(route);
    p
}

/// Encodes `t` as the 12-byte message-1 timestamp (times before the epoch
/// encode as zero).
pub(crate) fn encode_timestamp(t: SystemTime) -> [u8; TIMESTAMP_LEN] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut out = [0u8; TIMESTAMP_LEN];
    let (secs, nanos) = out.split_at_mut(8);
    secs.copy_from_slice(&d.as_secs().to_be_bytes());
    nanos.copy_from_slice(&d.subsec_nanos().to_be_bytes());
    out
}

/// Decodes a message-1 timestamp into a duration since the Unix epoch.
/// `None` unless `bytes` is exactly 12 bytes with nanoseconds below 10^9.
pub(crate) fn decode_timestamp(bytes: &[u8]) -> Option<Duration> {
    let raw: &[u8; TIMESTAMP_LEN] = bytes.try_into().ok()?;
    let (secs, nanos) = raw.split_at(8);
    let secs = u64::from_be_bytes(secs.try_into().ok()?);
    let nanos = u32::from_be_bytes(nanos.try_into().ok()?);
    if nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(secs, nanos))
}

/// Errors in the IK handshake. Display strings are one line, for users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A handshake message has the wrong length or shape.
    #[error("handshake failed: malformed handshake message")]
    Malformed,
    /// A handshake message failed authentication.
    #[error(
        "handshake failed: the peer's static key is not the expected one (or the route or \
         cipher suite differs), or the message was tampered with"
    )]
    Decrypt,
    /// The client's static key is not in the exec-server's authorized keys.
    #[error("handshake refused: client key {client} is not authorized on this exec-server")]
    Unauthorized {
        /// The client's (authenticated) static public key.
        client: PublicKey,
    },
    /// Message 1 was already accepted: a replay.
    #[error("handshake refused: this initiation was already used (replay)")]
    Replay,
    /// Message 1's timestamp is too far from the exec-server's clock.
    #[error(
        "handshake refused: the client's clock and the exec-server's clock differ by more \
         than the allowed window"
    )]
    ClockSkew,
    /// The early data does not fit in message 1.
    #[error(
        "early data too large: {len} bytes, message 1 carries at most {max} (one Noise message)"
    )]
    EarlyDataTooLarge {
        /// Its length.
        len: usize,
        /// The most message 1 carries.
        max: usize,
    },
    /// The replay guard is full of recent handshakes.
    #[error("handshake refused: the exec-server is busy (too many recent handshakes)")]
    Busy,
    /// Another Noise error (snow's text; it contains no secrets).
    #[error("handshake failed: noise error: {0}")]
    Noise(String),
}

pub(crate) fn handshake_err(e: snow::Error) -> HandshakeError {
    match e {
        snow::Error::Decrypt => HandshakeError::Decrypt,
        snow::Error::Input => HandshakeError::Malformed,
        other => HandshakeError::Noise(other.to_string()),
    }
}
