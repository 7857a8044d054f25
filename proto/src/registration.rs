//! Proof that a registering exec-server holds its static key.
//!
//! A three-message Noise `XN` handshake ([`XN_PATTERN`]) with the prologue
//! [`prologue`]. The exec-server is the initiator, the relay the responder
//! (the relay has no static key, only a fresh ephemeral one per proof):
//!
//! ```text
//! exec-server -> relay   msg1: e
//! relay -> exec-server   msg2: e, ee
//! exec-server -> relay   msg3: s, se
//! ```
//!
//! After reading msg3 the relay knows the exec-server's static public key,
//! and that the sender holds its private half: `se` mixes in a DH between
//! that key and the relay's fresh ephemeral, so msg3 from any other run
//! fails to authenticate. Nothing else comes of the handshake; no transport
//! keys are used.
//!
//! Sans-IO: the caller carries the messages (in `RegisterUp.proof` and
//! `RegisterDown.proof`).

use std::fmt;

use snow::HandshakeState;

use crate::PROTOCOL_VERSION;
use crate::keys::{KEY_LEN, PublicKey, StaticKeypair};
use crate::limits::{MAX_NOISE_MESSAGE, NOISE_TAG};

/// The Noise protocol used for registration proofs.
pub(crate) const XN_PATTERN: &str = "Noise_XN_25519_ChaChaPoly_BLAKE2s";

/// Length of message 1 (`e`, empty unencrypted payload).
pub(crate) const MSG1_LEN: usize = KEY_LEN;
/// Length of message 2 (`e, ee`, empty encrypted payload).
pub(crate) const MSG2_LEN: usize = KEY_LEN + NOISE_TAG;
/// Length of message 3 (`s` encrypted, `se`, empty encrypted payload).
pub(crate) const MSG3_LEN: usize = KEY_LEN + NOISE_TAG + NOISE_TAG;

/// The registration prologue: `"{PROTOCOL_VERSION}\0register\0"`.
pub fn prologue() -> Vec<u8> {
    format!("{PROTOCOL_VERSION}\0register\0").into_bytes()
}

/// Errors in a registration proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// A proof message has the wrong length or shape.
    #[error("registration proof failed: malformed proof message")]
    Malformed,
    /// A proof message failed authentication (wrong key, tampered, or from
    /// another run).
    #[error(
        "registration proof failed: the exec-server did not prove possession of its key, \
         or the message was tampered with or replayed"
    )]
    Decrypt,
    /// A method was called out of order (e.g. `respond` twice).
    #[error("registration proof failed: message received out of order")]
    OutOfOrder,
    /// Another Noise error (snow's text; it contains no secrets).
    #[error("registration proof failed: noise error: {0}")]
    Noise(String),
}

fn noise_err(e: snow::Error) -> RegistrationError {
    match e {
        snow::Error::Decrypt => RegistrationError::Decrypt,
        snow::Error::Input => RegistrationError::Malformed,
        other => RegistrationError::Noise(other.to_string()),
    }
}

fn builder() -> Result<snow::Builder<'static>, RegistrationError> {
    let params: snow::params::NoiseParams = XN_PATTERN
        .parse()
        .map_err(|e: snow::Error| RegistrationError::Noise(e.to_string()))?;
    Ok(snow::Builder::new(params))
}

fn check_len(msg: &[u8], want: usize) -> Result<(), RegistrationError> {
    if msg.len() > MAX_NOISE_MESSAGE || msg.len() != want {
        return Err(RegistrationError::Malformed);
    }
    Ok(())
}

fn write(hs: &mut HandshakeState, len: usize) -> Result<Vec<u8>, RegistrationError> {
    // snow wants room for a tag even where the payload is not encrypted.
    let mut out = vec![0u8; len + NOISE_TAG];
    let n = hs.write_message(&[], &mut out).map_err(noise_err)?;
    out.truncate(n);
    if n != len {
        return Err(RegistrationError::Noise(format!(
            "unexpected handshake message length {n}"
        )));
    }
    Ok(out)
}

fn read(hs: &mut HandshakeState, msg: &[u8], want: usize) -> Result<(), RegistrationError> {
    check_len(msg, want)?;
    let mut payload = vec![0u8; msg.len()];
    let n = hs.read_message(msg, &mut payload).map_err(noise_err)?;
    if n != 0 {
        return Err(RegistrationError::Malformed);
    }
    Ok(())
}

/// The exec-server's side of a proof.
pub struct ProofInitiator {
    hs: HandshakeState,
}

impl fmt::Debug for ProofInitiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofInitiator").finish_non_exhaustive()
    }
}

impl ProofInitiator {
    /// Starts a proof for `local`; returns the state and message 1.
    pub fn start(local: &StaticKeypair) -> Result<(Self, Vec<u8>), RegistrationError> {
        let prologue = prologue();
        let mut hs = builder()?
            .local_private_key(local.private_bytes())
            .map_err(noise_err)?
            .prologue(&prologue)
            .map_err(noise_err)?
            .build_initiator()
            .map_err(noise_err)?;
        let msg1 = write(&mut hs, MSG1_LEN)?;
        Ok((Self { hs }, msg1))
    }

    /// Reads the relay's message 2 and returns message 3, which carries the
    /// proof.
    pub fn finish(mut self, msg2: &[u8]) -> Result<Vec<u8>, RegistrationError> {
        read(&mut self.hs, msg2, MSG2_LEN)?;
        write(&mut self.hs, MSG3_LEN)
    }
}

/// The relay's side of a proof. One per registration attempt: its
/// ephemeral key is fresh, which is what makes a recorded msg3 useless.
pub struct ProofResponder {
    hs: HandshakeState,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitMsg1,
    AwaitMsg3,
    Failed,
}

impl fmt::Debug for ProofResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofResponder")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl ProofResponder {
    /// A fresh responder.
    pub fn new() -> Result<Self, RegistrationError> {
        let prologue = prologue();
        let hs = builder()?
            .prologue(&prologue)
            .map_err(noise_err)?
            .build_responder()
            .map_err(noise_err)?;
        Ok(Self {
            hs,
            stage: Stage::AwaitMsg1,
        })
    }

    /// Reads message 1 and returns message 2. May be called once; after a
    /// failure the responder is spent.
    pub fn respond(&mut self, msg1: &[u8]) -> Result<Vec<u8>, RegistrationError> {
        if self.stage != Stage::AwaitMsg1 {
            return Err(RegistrationError::OutOfOrder);
        }
        self.stage = Stage::Failed;
        read(&mut self.hs, msg1, MSG1_LEN)?;
        let msg2 = write(&mut self.hs, MSG2_LEN)?;
        self.stage = Stage::AwaitMsg3;
        Ok(msg2)
    }

    /// Reads message 3 and returns the exec-server's proven static key.
    pub fn finish(mut self, msg3: &[u8]) -> Result<PublicKey, RegistrationError> {
        if self.stage != Stage::AwaitMsg3 {
            return Err(RegistrationError::OutOfOrder);
        }
        read(&mut self.hs, msg3, MSG3_LEN)?;
        if !self.hs.is_handshake_finished() {
            return Err(RegistrationError::OutOfOrder);
        }
        let rs = self
            .hs
            .get_remote_static()
            .ok_or(RegistrationError::Malformed)?;
        PublicKey::from_slice(rs).map_err(|_| RegistrationError::Malformed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run(kp: &StaticKeypair) -> (ProofResponder, Vec<u8>) {
        let (init, m1) = ProofInitiator::start(kp).unwrap();
        assert_eq!(m1.len(), MSG1_LEN);
        let mut resp = ProofResponder::new().unwrap();
        let m2 = resp.respond(&m1).unwrap();
        assert_eq!(m2.len(), MSG2_LEN);
        let m3 = init.finish(&m2).unwrap();
        assert_eq!(m3.len(), MSG3_LEN);
        (resp, m3)
    }

    #[test]
    fn honest_run_yields_the_servers_key() {
        let kp = StaticKeypair::generate().unwrap();
        let (resp, m3) = run(&kp);
        assert_eq!(resp.finish(&m3).unwrap(), kp.public());
    }

    #[test]
    fn tampered_msg3_fails() {
        let kp = StaticKeypair::generate().unwrap();
        for i in 0..MSG3_LEN {
            let (resp, mut m3) = run(&kp);
            m3[i] ^= 0x01;
            assert_eq!(
                resp.finish(&m3),
                Err(RegistrationError::Decrypt),
                "byte {i}"
            );
        }
    }

    #[test]
    fn tampered_msg2_fails_at_initiator() {
        let kp = StaticKeypair::generate().unwrap();
        let (init, m1) = ProofInitiator::start(&kp).unwrap();
        let mut resp = ProofResponder::new().unwrap();
        let mut m2 = resp.respond(&m1).unwrap();
        m2[40] ^= 0x80;
        assert_eq!(init.finish(&m2), Err(RegistrationError::Decrypt));
    }

    #[test]
    fn msg3_replayed_to_another_responder_fails() {
        let kp = StaticKeypair::generate().unwrap();
        let (_first, m3) = run(&kp);
        // An attacker who recorded msg1 and msg3 starts a new run with the
        // relay, replaying the recorded messages.
        let (init, m1) = ProofInitiator::start(&kp).unwrap();
        let mut relay = ProofResponder::new().unwrap();
        let _m2 = relay.respond(&m1).unwrap();
        drop(init);
        assert_eq!(relay.finish(&m3), Err(RegistrationError::Decrypt));

        // Same msg1 replayed to a fresh responder, old msg3.
        let (init, m1) = ProofInitiator::start(&kp).unwrap();
        let mut r1 = ProofResponder::new().unwrap();
        let m2 = r1.respond(&m1).unwrap();
        let m3 = init.finish(&m2).unwrap();
        let mut r2 = ProofResponder::new().unwrap();
        r2.respond(&m1).unwrap();
        assert_eq!(r2.finish(&m3), Err(RegistrationError::Decrypt));
        assert_eq!(r1.finish(&m3).unwrap(), kp.public());
    }

    #[test]
    fn garbage_and_wrong_lengths_fail() {
        for bad in [
            &[][..],
            &[1u8; 31],
            &[1u8; 33],
            &vec![0u8; MAX_NOISE_MESSAGE + 1],
        ] {
            let mut resp = ProofResponder::new().unwrap();
            assert_eq!(resp.respond(bad), Err(RegistrationError::Malformed));
            // A failed responder is spent.
            assert_eq!(resp.respond(&[7u8; 32]), Err(RegistrationError::OutOfOrder));
        }
        // 32 bytes of garbage is a syntactically valid ephemeral key.
        let mut resp = ProofResponder::new().unwrap();
        resp.respond(&[7u8; 32]).unwrap();
        assert_eq!(resp.respond(&[7u8; 32]), Err(RegistrationError::OutOfOrder));
        assert_eq!(
            resp.finish(&[0u8; MSG3_LEN]),
            Err(RegistrationError::Decrypt)
        );

        let resp = ProofResponder::new().unwrap();
        assert_eq!(
            resp.finish(&[0u8; MSG3_LEN]),
            Err(RegistrationError::OutOfOrder)
        );

        let kp = StaticKeypair::generate().unwrap();
        let (init, _) = ProofInitiator::start(&kp).unwrap();
        assert_eq!(init.finish(&[0u8; 3]), Err(RegistrationError::Malformed));
        let (init, _) = ProofInitiator::start(&kp).unwrap();
        assert_eq!(
            init.finish(&[0u8; MSG2_LEN]),
            Err(RegistrationError::Decrypt)
        );

        let (resp, _) = run(&kp);
        assert_eq!(resp.finish(&[0u8; 10]), Err(RegistrationError::Malformed));
    }

    #[test]
    fn debug_shows_no_keys() {
        let kp = StaticKeypair::generate().unwrap();
        let (init, _) = ProofInitiator::start(&kp).unwrap();
        let s = format!("{init:?}");
        assert!(!s.contains(&kp.public().to_string()));
    }
}
