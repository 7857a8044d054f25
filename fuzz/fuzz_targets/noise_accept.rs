//! Handshake message 1 at the exec-server (`proto::noise::accept`), with a
//! fixed exec-server key, one authorized client key and a fixed clock: no
//! input panics, and an accepted one names the authorized client.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use proto::keys::{AuthorizedKeys, StaticKeypair};
use proto::noise::{ReplayGuard, SessionConfig, accept};

static KEYS: LazyLock<(StaticKeypair, AuthorizedKeys, String)> = LazyLock::new(|| {
    let server = rex_fuzz::server_key();
    let client = rex_fuzz::client_key();
    let route = server.public().server_id();
    (server, AuthorizedKeys::from_keys([client.public()]), route)
});

fuzz_target!(|data: &[u8]| {
    let (server, authorized, route) = &*KEYS;
    let mut replay = ReplayGuard::default();
    let result = accept(
        server,
        route.as_bytes(),
        data,
        rex_fuzz::now(),
        Instant::now(),
        authorized,
        &mut replay,
        SessionConfig::default(),
    );
    if let Ok(accepted) = result {
        assert!(authorized.contains(&accepted.client));
        // The same message again is a replay.
        assert!(
            accept(
                server,
                route.as_bytes(),
                data,
                rex_fuzz::now(),
                Instant::now(),
                authorized,
                &mut replay,
                SessionConfig::default(),
            )
            .is_err()
        );
    }
});
