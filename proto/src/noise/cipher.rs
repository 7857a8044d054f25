//! One direction of an established session: the Noise `CipherState` (key
//! and nonce counter, `REKEY`) over `ring`'s AEAD, sealing and opening in
//! place so that a record is never copied to be encrypted or decrypted.
//!
//! Exactly the Noise specification's transport phase (§5.1, §4.2): the
//! nonce is 32 zero bits then the 64-bit counter (big-endian for AES-GCM,
//! little-endian for ChaCha20-Poly1305), the associated data is empty, the
//! counter's last value (2^64-1) is never used for a message, and
//! `REKEY(k)` is the first 32 bytes of `ENCRYPT(k, 2^64-1, "", zeros)`
//! (the counter goes on). The handshake itself stays with `snow`; the tests
//! check these records against `snow`'s own transport.

use std::fmt;

use bytes::BytesMut;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::config::Suite;
use super::error::TransportError;
use crate::limits::NOISE_TAG;

/// Length of a cipher key.
pub(super) const KEY_LEN: usize = 32;

/// One direction's key and nonce counter.
pub(super) struct Cipher {
    suite: Suite,
    key: LessSafeKey,
    nonce: u64,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Cipher")
            .field("suite", &self.suite)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

fn algorithm(suite: Suite) -> &'static aead::Algorithm {
    match suite {
        Suite::AesGcm => &aead::AES_256_GCM,
        Suite::ChaChaPoly => &aead::CHACHA20_POLY1305,
    }
}

fn nonce(suite: Suite, n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    let counter = match suite {
        Suite::AesGcm => n.to_be_bytes(),
        Suite::ChaChaPoly => n.to_le_bytes(),
    };
    if let Some(tail) = bytes.get_mut(4..) {
        tail.copy_from_slice(&counter);
    }
    Nonce::assume_unique_for_key(bytes)
}

fn key_of(suite: Suite, key: &[u8; KEY_LEN]) -> Result<LessSafeKey, TransportError> {
    UnboundKey::new(algorithm(suite), key)
        .map(LessSafeKey::new)
        .map_err(|_| TransportError::Noise("the cipher key was refused".into()))
}

impl Cipher {
    /// A direction keyed with `key` (from the handshake's split).
    pub(super) fn new(suite: Suite, key: &[u8; KEY_LEN]) -> Result<Self, TransportError> {
        Ok(Self {
            suite,
            key: key_of(suite, key)?,
            nonce: 0,
        })
    }

    fn next_nonce(&mut self) -> Result<Nonce, TransportError> {
        // 2^64-1 is reserved (for REKEY).
        if self.nonce == u64::MAX {
            return Err(TransportError::Noise(
                "the nonce counter is exhausted".into(),
            ));
        }
        let n = nonce(self.suite, self.nonce);
        self.nonce += 1;
        Ok(n)
    }

    /// Encrypts `in_out` in place and appends the tag.
    pub(super) fn seal(&mut self, in_out: &mut BytesMut) -> Result<(), TransportError> {
        let nonce = self.next_nonce()?;
        self.key
            .seal_in_place_append_tag(nonce, Aad::empty(), in_out)
            .map_err(|_| TransportError::Noise("encryption failed".into()))
    }

    /// Decrypts `in_out` (ciphertext and tag) in place; returns the
    /// plaintext's length.
    pub(super) fn open(&mut self, in_out: &mut [u8]) -> Result<usize, TransportError> {
        if in_out.len() < NOISE_TAG {
            return Err(TransportError::Malformed);
        }
        let nonce = self.next_nonce()?;
        self.key
            .open_in_place(nonce, Aad::empty(), in_out)
            .map(|plain| plain.len())
            .map_err(|_| TransportError::Decrypt)
    }

    /// `REKEY`: the new key is the first 32 bytes of the encryption of 32
    /// zero bytes with the reserved nonce; the counter goes on.
    pub(super) fn rekey(&mut self) -> Result<(), TransportError> {
        let mut block = [0u8; KEY_LEN];
        // Only the ciphertext becomes the key; the tag is not used.
        let _tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.suite, u64::MAX), Aad::empty(), &mut block)
            .map_err(|_| TransportError::Noise("rekey failed".into()))?;
        self.key = key_of(self.suite, &block)?;
        block.fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::config::prologue;

    /// One IK handshake done with `snow` alone: its raw split for our
    /// ciphers, and `snow`'s own transports from the same handshake.
    fn keyed(
        suite: Suite,
    ) -> (
        ([u8; 32], [u8; 32]),
        snow::TransportState,
        snow::TransportState,
    ) {
        let params: snow::params::NoiseParams = suite.protocol_name().parse().unwrap();
        let i_key = snow::Builder::new(params.clone())
            .generate_keypair()
            .unwrap();
        let r_key = snow::Builder::new(params.clone())
            .generate_keypair()
            .unwrap();
        let p = prologue(suite, b"route");
        let mut i = snow::Builder::new(params.clone())
            .local_private_key(&i_key.private)
            .unwrap()
            .remote_public_key(&r_key.public)
            .unwrap()
            .prologue(&p)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params)
            .local_private_key(&r_key.private)
            .unwrap()
            .prologue(&p)
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut m1, mut m2, mut scratch) = ([0u8; 256], [0u8; 256], [0u8; 256]);
        let n = i.write_message(&[], &mut m1).unwrap();
        r.read_message(&m1[..n], &mut scratch).unwrap();
        let n = r.write_message(&[], &mut m2).unwrap();
        i.read_message(&m2[..n], &mut scratch).unwrap();
        let split = i.dangerously_get_raw_split();
        (
            split,
            i.into_transport_mode().unwrap(),
            r.into_transport_mode().unwrap(),
        )
    }

    #[test]
    fn records_are_exactly_snows_in_both_directions_and_across_rekeys() {
        for suite in Suite::ALL {
            let ((k1, k2), mut snow_i, mut snow_r) = keyed(suite);
            // Ours as the initiator: sends with k1, receives with k2.
            let mut send = Cipher::new(suite, &k1).unwrap();
            let mut recv = Cipher::new(suite, &k2).unwrap();
            for round in 0..5u8 {
                let plain = vec![round; 1000 + usize::from(round)];
                // Ours seals what snow's responder opens...
                let mut ours = BytesMut::from(&plain[..]);
                send.seal(&mut ours).unwrap();
                let mut theirs = vec![0u8; ours.len() + 16];
                let n = snow_i.write_message(&plain, &mut theirs).unwrap();
                assert_eq!(&ours[..], &theirs[..n], "{suite}: same bytes as snow");
                let mut out = vec![0u8; ours.len()];
                assert_eq!(snow_r.read_message(&ours, &mut out).unwrap(), plain.len());
                // ...and opens what snow's responder seals.
                let mut back = vec![0u8; plain.len() + 16];
                let n = snow_r.write_message(&plain, &mut back).unwrap();
                back.truncate(n);
                let len = recv.open(&mut back).unwrap();
                assert_eq!(&back[..len], &plain[..]);
                // Both rekey both directions the same way.
                send.rekey().unwrap();
                snow_i.rekey_outgoing();
                snow_r.rekey_incoming();
                recv.rekey().unwrap();
                snow_r.rekey_outgoing();
                snow_i.rekey_incoming();
            }
        }
    }

    #[test]
    fn a_tampered_or_replayed_record_does_not_open() {
        let ((k1, _), _, _) = keyed(Suite::AesGcm);
        let mut send = Cipher::new(Suite::AesGcm, &k1).unwrap();
        let mut recv = Cipher::new(Suite::AesGcm, &k1).unwrap();
        let mut a = BytesMut::from(&b"first"[..]);
        send.seal(&mut a).unwrap();
        let mut replay = a.clone();
        assert_eq!(recv.open(&mut a).unwrap(), 5);
        // The same record again: the nonce has moved on.
        assert_eq!(recv.open(&mut replay), Err(TransportError::Decrypt));
        let mut short = [0u8; 15];
        assert_eq!(recv.open(&mut short), Err(TransportError::Malformed));
    }
}
