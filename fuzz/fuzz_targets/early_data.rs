//! Early data at the exec-server: handshake message 1 carrying the hello
//! and the first call (`proto::session::ServerSession` reading message 1).
//! Message 1 authenticates with Diffie-Hellman, so mutated messages stop at
//! decryption; here the input is the early data itself, sealed into a
//! valid message 1 from the authorized client at the targets' clock (as
//! only a key holder could make it), to an exec-server up for longer than
//! its replay window, so that every input reaches the decoder. No input
//! panics, and at most one call runs, only after the session has
//! authenticated.
#![no_main]

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proto::keys::{AuthorizedKeys, PublicKey, StaticKeypair};
use proto::noise::{ClientHandshake, MAX_EARLY_DATA, ReplayGuard};
use proto::pb::tunnel::{Frame, FrameKind};
use proto::session::{Acceptor, Limits, Now, ServerEvent, ServerSession};

const WINDOW: Duration = Duration::from_secs(120);

static KEYS: LazyLock<(StaticKeypair, StaticKeypair, PublicKey, String)> = LazyLock::new(|| {
    let server = rex_fuzz::server_key();
    let client = rex_fuzz::client_key();
    let public = server.public();
    let route = public.server_id();
    (server, client, public, route)
});

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_EARLY_DATA {
        return;
    }
    let (server, client, server_pub, route) = &*KEYS;
    let wall = rex_fuzz::now();
    // This run's ticket: the early data reaches the session machine.
    let guard = ReplayGuard::new(WINDOW, 16);
    let Some(ticket) = guard.ticket() else {
        return;
    };
    let Ok((_, msg1)) = ClientHandshake::start_early(
        client,
        server_pub,
        route.as_bytes(),
        wall,
        Limits::client().noise,
        ticket,
        data,
    ) else {
        return;
    };
    let mut acceptor = Acceptor::new(server.clone(), AuthorizedKeys::from_keys([client.public()]));
    acceptor.replay = Mutex::new(guard);
    let now = Now {
        at: Instant::now(),
        wall,
    };
    let mut session: ServerSession<()> =
        ServerSession::new(Arc::new(acceptor), Limits::server(), now);
    session.handle_frame(
        Frame {
            kind: FrameKind::Handshake as i32,
            payload: msg1.into(),
            ..Frame::default()
        },
        now,
    );
    let (mut authenticated, mut calls) = (false, 0);
    for _ in 0..64 {
        while session.poll_transmit(now).is_some() {}
        let Some(event) = session.poll_event() else {
            break;
        };
        match event {
            ServerEvent::Authenticated { client: who } => {
                assert_eq!(who, client.public());
                authenticated = true;
            }
            ServerEvent::Exec { .. } => {
                assert!(authenticated, "a call ran before the session authenticated");
                calls += 1;
            }
            _ => {}
        }
    }
    assert!(calls <= 1, "{calls} calls ran from one message 1");
});
