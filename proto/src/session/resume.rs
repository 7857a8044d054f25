//! What lets a client take its session back over a new link: a resume
//! secret both ends derive from the session's Noise handshake, which never
//! travels, and the proof a resuming client gives with it.
//!
//! The exec-server names the session with a random token in its hello
//! answer. To resume, the client runs a fresh Noise handshake (with the
//! same static keys; the exec-server checks the key is the session's) and
//! sends the token with a proof: an HMAC, under the secret, of the new
//! handshake's hash. A proof so binds the secret to one new handshake: it
//! is worthless in any other session, so a resume message seen twice, or
//! sent by another key, is refused. Both ends then move to the next secret,
//! derived from the one proved and the new handshake hash: the client when
//! the answer arrives, the exec-server as it sends it. The answer may be
//! lost (the new link breaks first), leaving the client with the secret it
//! proved, so the exec-server takes that one too until the client proves
//! the next: a secret serves until its successor has.

use ring::{digest, hmac};

/// Length of a session's resume token.
pub(crate) const TOKEN_LEN: usize = 16;

/// A session's resume secret (never sent).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ResumeSecret([u8; 32]);

impl std::fmt::Debug for ResumeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeSecret(..)")
    }
}

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl ResumeSecret {
    /// The secret of a session whose handshake hash is `handshake_hash`.
    pub(crate) fn from_handshake(handshake_hash: &[u8]) -> Self {
        Self(hash(&[b"rex/resume/secret", handshake_hash]))
    }

    /// The secret after a resume over the handshake `new_hash`.
    pub(crate) fn next(&self, new_hash: &[u8]) -> Self {
        Self(hash(&[b"rex/resume/next", &self.0, new_hash]))
    }

    /// The proof a client gives to resume over the handshake `new_hash`.
    pub(crate) fn proof(&self, new_hash: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, &[b"rex/resume/proof".as_slice(), new_hash].concat());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `proof` is this secret's for the handshake `new_hash`
    /// (compared in constant time).
    pub(crate) fn verify(&self, new_hash: &[u8], proof: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        hmac::verify(
            &key,
            &[b"rex/resume/proof".as_slice(), new_hash].concat(),
            proof,
        )
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_own_handshake_only() {
        let secret = ResumeSecret::from_handshake(b"first handshake");
        let proof = secret.proof(b"second handshake");
        assert!(secret.verify(b"second handshake", &proof));
        // Replayed into another handshake, or under another secret: no.
        assert!(!secret.verify(b"third handshake", &proof));
        let other = ResumeSecret::from_handshake(b"another session");
        assert!(!other.verify(b"second handshake", &proof));
        assert!(!secret.verify(b"second handshake", &proof[..31]));
    }

    #[test]
    fn each_resume_moves_to_a_new_secret() {
        let secret = ResumeSecret::from_handshake(b"h0");
        let next = secret.next(b"h1");
        assert_ne!(next, secret);
        assert_eq!(next, secret.next(b"h1"), "both ends derive the same");
        // The old secret no longer proves anything to an end that moved on.
        let stale = secret.proof(b"h2");
        assert!(!next.verify(b"h2", &stale));
        assert_eq!(format!("{next:?}"), "ResumeSecret(..)");
    }
}
