//! The session's parameters: the cipher [`Suite`], the [`SessionConfig`]
//! and the [`prologue`] that binds a handshake to its version, suite and
//! route.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::HandshakeError;
use crate::PROTOCOL_VERSION;
use crate::limits::MAX_ENVELOPE;

/// The Noise protocol name for sessions with the ChaChaPoly suite.
pub(crate) const IK_PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// The Noise protocol name for sessions with the AES-GCM suite (the
/// default).
pub(crate) const IK_PATTERN_AESGCM: &str = "Noise_IK_25519_AESGCM_BLAKE2s";

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
