//! What the fuzz targets share: fixed keys (so that a run is repeatable
//! and seed inputs made with them stay valid) and a fixed clock.
//!
//! Layout: `fuzz_targets/` holds one target per decoder;
//! `examples/seeds.rs` writes the seed corpora, `corpus/<target>/`.

use std::time::{Duration, SystemTime};

use proto::keys::StaticKeypair;

/// The exec-server's fixed private key.
const SERVER_PRIVATE: [u8; 32] = [7; 32];
/// The authorized client's fixed private key.
const CLIENT_PRIVATE: [u8; 32] = [9; 32];

/// The fleet key of the relay targets.
pub const FLEET_SECRET: [u8; 32] = [5; 32];
/// The server id the fleet proofs name.
pub const FLEET_SERVER: &str = "0123456789abcdef0123456789abcdef";

/// The exec-server's fixed key pair.
pub fn server_key() -> StaticKeypair {
    keypair(SERVER_PRIVATE)
}

/// The authorized client's fixed key pair.
pub fn client_key() -> StaticKeypair {
    keypair(CLIENT_PRIVATE)
}

fn keypair(private: [u8; 32]) -> StaticKeypair {
    match StaticKeypair::from_private(private) {
        Ok(k) => k,
        Err(e) => panic!("a fixed key is not a key: {e}"),
    }
}

/// The wall clock the targets run at (seed handshakes are stamped with it).
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// `bytes` as text, if they are UTF-8 (headers and files are read as
/// text; other bytes never reach the parsers).
pub fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}
