//! Handshake message 2 at the client (`ClientHandshake::finish`): what an
//! exec-server, or anyone on the path, answers to message 1. The client's
//! ephemeral key is fresh for each input, so no input can be a valid
//! answer: none may panic and none may be accepted.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use proto::keys::{PublicKey, StaticKeypair};
use proto::noise::{ClientHandshake, SessionConfig};

static KEYS: LazyLock<(StaticKeypair, PublicKey, String)> = LazyLock::new(|| {
    let server = rex_fuzz::server_key().public();
    (rex_fuzz::client_key(), server, server.server_id())
});

fuzz_target!(|data: &[u8]| {
    let (client, server, route) = &*KEYS;
    let Ok((handshake, _msg1)) = ClientHandshake::start(
        client,
        server,
        route.as_bytes(),
        rex_fuzz::now(),
        SessionConfig::default(),
    ) else {
        return;
    };
    assert!(handshake.finish(data, Instant::now()).is_err());
});
