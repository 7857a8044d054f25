//! What the client keeps to take its session back, or give it up
//! ([`Resumable`], [`Abandonment`]), and why a reattach fails (see
//! `resume`).

use crate::session::resume::ResumeSecret;

/// The session's resume token and secret.
#[derive(Debug, Clone)]
pub(in crate::session) struct Resumable {
    pub(super) token: bytes::Bytes,
    pub(super) secret: ResumeSecret,
}

/// What giving a session up takes: its token and secret, which prove to
/// the exec-server that the session is this client's
/// ([`ClientSession::abandonment`](super::ClientSession::abandonment),
/// [`ClientSession::abandon`](super::ClientSession::abandon)).
#[derive(Debug, Clone)]
pub struct Abandonment {
    pub(super) resumable: Resumable,
    pub(super) calls: usize,
}

impl Abandonment {
    /// The calls the session still had when it was lost.
    pub fn calls(&self) -> usize {
        self.calls
    }
}

/// Why a session cannot be taken back over a new link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReattachError {
    /// The session is not waiting for a resume.
    #[error("the session is not detached")]
    NotDetached,
    /// The new handshake could not start.
    #[error(transparent)]
    Handshake(#[from] crate::noise::HandshakeError),
}
