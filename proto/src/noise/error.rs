//! The errors of an established session ([`TransportError`]): what the
//! transport and each direction's cipher report.

use crate::envelope_stream::EnvelopeStreamError;

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
