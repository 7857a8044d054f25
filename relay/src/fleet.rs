//! Membership of a relay fleet: a shared secret (the fleet key) with which
//! a relay proves, on each session it forwards, that it is a member; and
//! what the receiving relay checks (the proof is fresh, not replayed, and
//! names this session's exec-server and client address).
//!
//! The proof travels in the forwarded `Open`'s metadata as
//! `v1.<unix seconds>.<nonce>.<client address>.<mac>`, the MAC an
//! HMAC-SHA256 under the fleet key of everything before it and the server
//! id. Only a member can make one, so nobody can use a relay as an open
//! forwarder or claim another client's address. It is not a secret:
//! without TLS on the relay links an observer may replay one within its
//! window to the same exec-server, which a member already could; the nonce
//! set refuses that within one relay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// The metadata key of a forwarded session's proof.
pub const PROOF_HEADER: &str = "rex-fleet-proof";
/// How far a proof's time may be from the receiving relay's clock.
const PROOF_WINDOW: Duration = Duration::from_secs(60);
/// Most proofs remembered (against replay) at once: forwarded sessions
/// opened within twice [`PROOF_WINDOW`]; past it, proofs are refused until
/// older ones age out.
const MAX_REMEMBERED: usize = 1 << 17;
/// Longest proof header accepted.
const MAX_PROOF: usize = 256;
const NONCE_LEN: usize = 16;
const CONTEXT: &[u8] = b"rex fleet forward v1";

/// Why a forwarded session's proof is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    /// This relay is in no fleet (it has no fleet key).
    #[error("this relay takes no forwarded sessions (no --fleet-key)")]
    NoFleet,
    /// The header is not a proof.
    #[error("malformed fleet proof")]
    Malformed,
    /// The proof's time is too far from this relay's clock.
    #[error("fleet proof outside the {}s window (clocks apart?)", PROOF_WINDOW.as_secs())]
    Stale,
    /// The MAC does not check: not made with this fleet's key, or for
    /// another server.
    #[error("fleet proof does not check: the forwarding relay is not in this relay's fleet")]
    Forged,
    /// The same proof was seen before.
    #[error("fleet proof replayed")]
    Replayed,
    /// Too many proofs to remember: refused until older ones age out.
    #[error("too many forwarded sessions opened in the last {}s", 2 * PROOF_WINDOW.as_secs())]
    Busy,
}

/// The fleet's shared secret, and the proofs this relay has seen.
pub struct Fleet {
    key: hmac::Key,
    seen: Mutex<HashMap<[u8; NONCE_LEN], u64>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn signed(time: u64, nonce: &str, client: &str, server_id: &str) -> String {
    format!("v1.{time}.{nonce}.{client}|{server_id}")
}

impl Fleet {
    /// The fleet of the secret in `path` (a key file as `relay fleet-key`
    /// writes it: mode 0600, refused if others may read it).
    pub fn from_file(path: &Path) -> Result<Self, proto::keys::KeyError> {
        let secret = proto::keys::StaticKeypair::read_file(path)?;
        Ok(Self::from_secret(secret.private_bytes()))
    }

    /// The fleet of `secret`.
    pub fn from_secret(secret: &[u8]) -> Self {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), CONTEXT);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// A proof that this relay forwards `client`'s session to `server_id`.
    pub fn prove(&self, server_id: &str, client: IpAddr, now: SystemTime) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let nonce = hex::encode(nonce);
        let client = client.to_string();
        let body = signed(unix(now), &nonce, &client, server_id);
        let mac = hmac::sign(&self.key, body.as_bytes());
        format!(
            "v1.{}.{nonce}.{client}.{}",
            unix(now),
            hex::encode(mac.as_ref())
        )
    }

    /// Checks a proof for `server_id`; the client address it vouches for.
    pub fn verify(
        &self,
        proof: &str,
        server_id: &str,
        now: SystemTime,
    ) -> Result<IpAddr, ProofError> {
        if proof.len() > MAX_PROOF {
            return Err(ProofError::Malformed);
        }
        let mut parts = proof.splitn(3, '.');
        let (Some("v1"), Some(time), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed);
        };
        let (nonce, rest) = rest.split_once('.').ok_or(ProofError::Malformed)?;
        // The address may hold dots (IPv4): the MAC is after the last one.
        let (client, mac) = rest.rsplit_once('.').ok_or(ProofError::Malformed)?;
        let time: u64 = time.parse().map_err(|_| ProofError::Malformed)?;
        let nonce_bytes: [u8; NONCE_LEN] = hex::decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(ProofError::Malformed)?;
        let address: IpAddr = client.parse().map_err(|_| ProofError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| ProofError::Malformed)?;
        let body = signed(time, nonce, client, server_id);
        hmac::verify(&self.key, body.as_bytes(), &mac).map_err(|_| ProofError::Forged)?;
        let now = unix(now);
        if now.abs_diff(time) > PROOF_WINDOW.as_secs() {
            return Err(ProofError::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let expiry = time + PROOF_WINDOW.as_secs();
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, e| *e >= now);
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(ProofError::Busy);
        }
        if seen.insert(nonce_bytes, expiry).is_some() {
            return Err(ProofError::Replayed);
        }
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_members_proof_checks_once_and_names_the_client() {
        let fleet = Fleet::from_secret(&[7; 32]);
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let proof = fleet.prove(ID, client, at(1_000_000));
        assert_eq!(fleet.verify(&proof, ID, at(1_000_030)), Ok(client));
        assert_eq!(
            fleet.verify(&proof, ID, at(1_000_031)),
            Err(ProofError::Replayed)
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let proof = fleet.prove(ID, v6, at(1_000_000));
        assert_eq!(fleet.verify(&proof, ID, at(1_000_000)), Ok(v6));
    }

    #[test]
    fn another_fleet_another_server_a_changed_client_or_an_old_proof_is_refused() {
        let fleet = Fleet::from_secret(&[7; 32]);
        let other = Fleet::from_secret(&[8; 32]);
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let proof = other.prove(ID, client, at(1_000_000));
        assert_eq!(
            fleet.verify(&proof, ID, at(1_000_000)),
            Err(ProofError::Forged)
        );
        let proof = fleet.prove(ID, client, at(1_000_000));
        let elsewhere = "fedcba9876543210fedcba9876543210";
        assert_eq!(
            fleet.verify(&proof, elsewhere, at(1_000_000)),
            Err(ProofError::Forged)
        );
        let moved = proof.replace("10.1.2.3", "10.1.2.4");
        assert_eq!(
            fleet.verify(&moved, ID, at(1_000_000)),
            Err(ProofError::Forged)
        );
        assert_eq!(
            fleet.verify(&proof, ID, at(1_000_061)),
            Err(ProofError::Stale)
        );
        assert_eq!(
            fleet.verify(&proof, ID, at(999_939)),
            Err(ProofError::Stale)
        );
    }

    #[test]
    fn malformed_proofs_are_refused_without_panicking() {
        let fleet = Fleet::from_secret(&[7; 32]);
        for proof in [
            "",
            "v1",
            "v2.1.00.1.2.3.4.00",
            "v1.x.00112233445566778899aabbccddeeff.1.2.3.4.00",
            "v1.1.0011.1.2.3.4.00",
            "v1.1.00112233445566778899aabbccddeeff.notanip.00",
            "v1.1.00112233445566778899aabbccddeeff.1.2.3.4.zz",
            &"v".repeat(MAX_PROOF + 1),
        ] {
            let refused = fleet.verify(proof, ID, at(1));
            assert!(
                matches!(refused, Err(ProofError::Malformed | ProofError::Forged)),
                "{proof:?}: {refused:?}"
            );
        }
    }
}
