//! The two IK handshake messages: [`ClientHandshake`] and [`accept`].

use std::fmt;
use std::time::{Instant, SystemTime};

use snow::HandshakeState;

use super::transport::Transport;
use super::{
    HandshakeError, ReplayGuard, SessionConfig, TIMESTAMP_LEN, decode_timestamp, encode_timestamp,
    handshake_err, prologue,
};
use crate::keys::{AuthorizedKeys, KEY_LEN, PublicKey, StaticKeypair};
use crate::limits::{MAX_NOISE_MESSAGE, NOISE_TAG};

/// Length of IK message 1: `e`, encrypted `s`, encrypted timestamp.
pub(crate) const MSG1_LEN: usize = KEY_LEN + (KEY_LEN + NOISE_TAG) + (TIMESTAMP_LEN + NOISE_TAG);
/// Shortest message 1 snow could parse (empty payload).
const MSG1_MIN: usize = KEY_LEN + (KEY_LEN + NOISE_TAG) + NOISE_TAG;
/// Length of IK message 2: `e`, empty encrypted payload.
pub(crate) const MSG2_LEN: usize = KEY_LEN + NOISE_TAG;

/// The client's half-finished handshake, waiting for message 2.
pub struct ClientHandshake {
    hs: HandshakeState,
    server: PublicKey,
    cfg: SessionConfig,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("suite", &self.cfg.suite)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// Starts a session with the exec-server whose static key is `server`,
    /// on `route` (the exec-server id as ASCII), at wall-clock time `now`.
    /// Returns the handshake state and message 1.
    pub fn start(
        local: &StaticKeypair,
        server: &PublicKey,
        route: &[u8],
        now: SystemTime,
        cfg: SessionConfig,
    ) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
        let prologue = prologue(cfg.suite, route);
        let mut hs = snow::Builder::new(cfg.suite.params()?)
            .local_private_key(local.private_bytes())
            .map_err(handshake_err)?
            .remote_public_key(server.as_bytes())
            .map_err(handshake_err)?
            .prologue(&prologue)
            .map_err(handshake_err)?
            .build_initiator()
            .map_err(handshake_err)?;
        let mut msg1 = vec![0u8; MSG1_LEN];
        let n = hs
            .write_message(&encode_timestamp(now), &mut msg1)
            .map_err(handshake_err)?;
        msg1.truncate(n);
        Ok((
            ClientHandshake {
                hs,
                server: *server,
                cfg,
            },
            msg1,
        ))
    }

    /// The exec-server key this handshake pins.
    pub fn server(&self) -> PublicKey {
        self.server
    }

    /// Reads message 2 and enters transport mode. `now` starts the rekey
    /// timer. Fails with [`HandshakeError::Decrypt`] if the responder does
    /// not hold the pinned key (or the message was altered).
    pub fn finish(mut self, msg2: &[u8], now: Instant) -> Result<Transport, HandshakeError> {
        if msg2.len() > MAX_NOISE_MESSAGE || msg2.len() < MSG2_LEN {
            return Err(HandshakeError::Malformed);
        }
        let mut payload = vec![0u8; msg2.len()];
        let n = self
            .hs
            .read_message(msg2, &mut payload)
            .map_err(handshake_err)?;
        if n != 0 || !self.hs.is_handshake_finished() {
            return Err(HandshakeError::Malformed);
        }
        let hash = self.hs.get_handshake_hash().to_vec();
        // The initiator sends with the first key of the split.
        let (mut send, mut recv) = self.hs.dangerously_get_raw_split();
        let transport = Transport::new((&send, &recv), self.server, self.cfg, now)
            .map(|t| t.with_handshake_hash(&hash))
            .map_err(|e| HandshakeError::Noise(e.to_string()));
        send.fill(0);
        recv.fill(0);
        transport
    }
}

/// A handshake the exec-server accepted.
pub struct Accepted {
    /// The session.
    pub transport: Transport,
    /// Message 2, to send to the client.
    pub msg2: Vec<u8>,
    /// The client's authenticated static key.
    pub client: PublicKey,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("transport", &self.transport)
            .field("msg2_len", &self.msg2.len())
            .field("client", &self.client.short())
            .finish()
    }
}

/// Answers message 1 on the exec-server, bound to `route` (its own id as
/// ASCII) at wall-clock time `now` (for the replay guard); `at` starts the
/// rekey timer.
///
/// In order: the length is checked; message 1 is decrypted (which
/// authenticates the client's static key); a key not in `authorized` is
/// refused with [`HandshakeError::Unauthorized`]; the 12-byte timestamp is
/// checked against `replay` ([`HandshakeError::ClockSkew`],
/// [`HandshakeError::Replay`], [`HandshakeError::Busy`]); then message 2 is
/// written. On any error no reply exists.
#[allow(
    clippy::too_many_arguments,
    reason = "each input is distinct: keys, route, message, both clocks, admission, replay, suite"
)]
pub fn accept(
    local: &StaticKeypair,
    route: &[u8],
    msg1: &[u8],
    now: SystemTime,
    at: Instant,
    authorized: &AuthorizedKeys,
    replay: &mut ReplayGuard,
    cfg: SessionConfig,
) -> Result<Accepted, HandshakeError> {
    if msg1.len() > MAX_NOISE_MESSAGE || msg1.len() < MSG1_MIN {
        return Err(HandshakeError::Malformed);
    }
    let ephemeral: [u8; KEY_LEN] = msg1
        .get(..KEY_LEN)
        .and_then(|e| e.try_into().ok())
        .ok_or(HandshakeError::Malformed)?;

    let prologue = prologue(cfg.suite, route);
    let mut hs = snow::Builder::new(cfg.suite.params()?)
        .local_private_key(local.private_bytes())
        .map_err(handshake_err)?
        .prologue(&prologue)
        .map_err(handshake_err)?
        .build_responder()
        .map_err(handshake_err)?;

    let mut payload = vec![0u8; msg1.len()];
    let n = hs.read_message(msg1, &mut payload).map_err(handshake_err)?;
    payload.truncate(n);

    let client = hs
        .get_remote_static()
        .and_then(|rs| PublicKey::from_slice(rs).ok())
        .ok_or(HandshakeError::Malformed)?;
    if !authorized.contains(&client) {
        return Err(HandshakeError::Unauthorized { client });
    }

    let timestamp = decode_timestamp(&payload).ok_or(HandshakeError::Malformed)?;
    replay.check(&client, &ephemeral, timestamp, now)?;

    let mut msg2 = vec![0u8; MSG2_LEN];
    let n = hs.write_message(&[], &mut msg2).map_err(handshake_err)?;
    msg2.truncate(n);
    if !hs.is_handshake_finished() {
        return Err(HandshakeError::Malformed);
    }
    let hash = hs.get_handshake_hash().to_vec();
    // The responder receives with the first key of the split.
    let (mut recv, mut send) = hs.dangerously_get_raw_split();
    let transport = Transport::new((&send, &recv), client, cfg, at)
        .map(|t| t.with_handshake_hash(&hash))
        .map_err(|e| HandshakeError::Noise(e.to_string()));
    send.fill(0);
    recv.fill(0);
    let transport = transport?;
    Ok(Accepted {
        transport,
        msg2,
        client,
    })
}
