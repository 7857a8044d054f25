//! The errors of a session: [`HandshakeError`], what the IK handshake
//! reports, and [`TransportError`], what the established session's
//! transport and each direction's cipher report.

use crate::envelope_stream::EnvelopeStreamError;
use crate::keys::PublicKey;

/// Errors in an established session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// This side has closed the session; nothing more can be sent.
    #[error("the session is closed: nothing more can be sent")]
    Closed,
    /// A received message has an impossible length or a malformed record.
    #[error("malformed session message from the peer")]
    Malformed,
    /// A received message failed authentication. The session is over.
    #[error("a session message failed authentication (tampered, reordered or not from the peer)")]
    Decrypt,
    /// A record of an unknown type was received.
    #[error("unknown session record type {0:#04x} from the peer")]
    UnknownRecord(u8),
    /// The peer sent a record after its authenticated close.
    #[error("the peer sent data after closing the session")]
    AfterClose,
    /// The envelope stream broke a size limit (sending: the envelope given;
    /// receiving: the length the peer declared).
    #[error("session stream: {0}")]
    EnvelopeStream(#[from] EnvelopeStreamError),
    /// An earlier error ended the session; every call now fails.
    #[error("the session already failed and cannot be used")]
    Dead,
    /// Another Noise error (snow's text; it contains no secrets).
    #[error("session noise error: {0}")]
    Noise(String),
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
