//! What an exec-server's session kept for a resume is checked against
//! ([`Resumable`]), what it leaves behind when its grace expires
//! ([`Tombstone`], [`Account`]) and what a resume gave back ([`Adopted`]);
//! the resume itself is in `resume`.

use std::collections::BTreeMap;

use crate::keys::PublicKey;
use crate::pb::session::{Exited, ResumedCall};
use crate::session::resume::{ResumeSecret, TOKEN_LEN};

/// What a resume of the session is checked against.
#[derive(Debug, Clone)]
pub(super) struct Resumable {
    pub(super) token: [u8; TOKEN_LEN],
    /// The secret a client holds once it has had the last resume's answer.
    pub(super) secret: ResumeSecret,
    /// The secret the client last proved, which it still holds if that
    /// answer was lost (the new link broke before it arrived): good until
    /// the client proves [`secret`](Self::secret).
    pub(super) proven: Option<ResumeSecret>,
}

impl Resumable {
    /// The secret `proof` was made with over the handshake `hash`: the
    /// current one, or the one last proved.
    pub(super) fn proved(&self, hash: &[u8], proof: &[u8]) -> Option<&ResumeSecret> {
        std::iter::once(&self.secret)
            .chain(&self.proven)
            .find(|s| s.verify(hash, proof))
    }
}

/// What a session whose grace expired leaves behind for a client that
/// comes back late: per call, how much output it produced and how it
/// ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tombstone {
    /// The client that held the session.
    pub client: Option<PublicKey>,
    /// Per call, its account.
    pub calls: BTreeMap<u64, Account>,
}

/// What the exec-server still knows of a call it no longer holds: every
/// stdout and stderr byte the call produced (the client, which knows what
/// it received, works out exactly what it lost), and how it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    /// Stdout bytes the call produced, in all.
    pub stdout_total: u64,
    /// Stderr bytes the call produced, in all.
    pub stderr_total: u64,
    /// How the process ended, when it did.
    pub exit: Option<Exited>,
}

impl Account {
    /// The answer for a resumed call of this account.
    pub(super) fn answer(self, call_id: u64) -> ResumedCall {
        ResumedCall {
            call_id,
            known: false,
            accounted: true,
            stdout_total: self.stdout_total,
            stderr_total: self.stderr_total,
            exit: self.exit,
            ..ResumedCall::default()
        }
    }
}

/// What a resume gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Adopted {
    /// Events sent again.
    pub events: u64,
    /// Their stdout and stderr bytes.
    pub bytes: u64,
    /// Calls the client no longer knew (cancelled).
    pub dropped: u64,
    /// The client gave the session up ([`Resume::abandon`]): every call
    /// was dropped, and the session closes.
    ///
    /// [`Resume::abandon`]: crate::pb::session::Resume::abandon
    pub abandoned: bool,
}
