//! The two IK handshake messages: [`ClientHandshake`] and [`accept`].

use std::fmt;
use std::time::{Instant, SystemTime};

use snow::HandshakeState;

use super::config::{SessionConfig, prologue};
use super::error::{HandshakeError, handshake_err};
use super::replay::ReplayGuard;
use super::replay::{Early, EarlyTicket, TICKET_LEN};
use super::timestamp::{TIMESTAMP_LEN, decode_timestamp, encode_timestamp};
use super::transport::Transport;
use crate::keys::{AuthorizedKeys, KEY_LEN, PublicKey, StaticKeypair};
use crate::limits::{MAX_NOISE_MESSAGE, NOISE_TAG};

/// Length of IK message 1: `e`, encrypted `s`, encrypted timestamp.
pub(crate) const MSG1_LEN: usize = KEY_LEN + (KEY_LEN + NOISE_TAG) + (TIMESTAMP_LEN + NOISE_TAG);
/// Shortest message 1 snow could parse (empty payload).
const MSG1_MIN: usize = KEY_LEN + (KEY_LEN + NOISE_TAG) + NOISE_TAG;
/// Length of IK message 2: `e`, empty encrypted payload.
pub(crate) const MSG2_LEN: usize = KEY_LEN + NOISE_TAG;

/// The most early data message 1 can carry: one Noise message (64 KiB)
/// less its keys, tags, timestamp and ticket.
pub const MAX_EARLY_DATA: usize = crate::limits::MAX_NOISE_MESSAGE - MSG1_LEN - TICKET_LEN;

/// Message 2's payload when message 1 carried early data: it ran.
const EARLY_ACCEPTED: u8 = 1;
/// Message 2's payload when message 1 carried early data: it did not run;
/// send it again over the session.
const EARLY_REFUSED: u8 = 0;

/// What message 2 said of message 1's early data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EarlyAnswer {
    /// Message 1 carried none (message 2's payload is empty).
    None,
    /// It is being run.
    Accepted,
    /// "Early data refused: retry after the handshake".
    Refused,
}

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
        Self::begin(local, server, route, now, cfg, None)
    }

    /// [`start`](Self::start), with `early` (the session's first messages,
    /// protected by the exec-server's static key alone) after the
    /// timestamp and `ticket` (the exec-server run's that the client knows
    /// of, or [`EarlyTicket::NONE`]) in message 1. More than
    /// [`MAX_EARLY_DATA`] is refused with
    /// [`HandshakeError::EarlyDataTooLarge`].
    pub fn start_early(
        local: &StaticKeypair,
        server: &PublicKey,
        route: &[u8],
        now: SystemTime,
        cfg: SessionConfig,
        ticket: EarlyTicket,
        early: &[u8],
    ) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
        Self::begin(local, server, route, now, cfg, Some((ticket, early)))
    }

    fn begin(
        local: &StaticKeypair,
        server: &PublicKey,
        route: &[u8],
        now: SystemTime,
        cfg: SessionConfig,
        early: Option<(EarlyTicket, &[u8])>,
    ) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
        let (ticket, early): (&[u8], &[u8]) = match &early {
            Some((ticket, early)) => (ticket.as_bytes(), early),
            None => (&[], &[]),
        };
        if early.len() > MAX_EARLY_DATA {
            return Err(HandshakeError::EarlyDataTooLarge {
                len: early.len(),
                max: MAX_EARLY_DATA,
            });
        }
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
        let mut payload = Vec::with_capacity(TIMESTAMP_LEN + ticket.len() + early.len());
        payload.extend_from_slice(&encode_timestamp(now));
        payload.extend_from_slice(ticket);
        payload.extend_from_slice(early);
        let mut msg1 = vec![0u8; MSG1_LEN + ticket.len() + early.len()];
        let n = hs
            .write_message(&payload, &mut msg1)
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
    pub fn finish(self, msg2: &[u8], now: Instant) -> Result<Transport, HandshakeError> {
        match self.finish_early(msg2, now)? {
            (transport, EarlyAnswer::None) => Ok(transport),
            _ => Err(HandshakeError::Malformed),
        }
    }

    /// [`finish`](Self::finish), with what message 2 said of the early
    /// data message 1 carried.
    pub(crate) fn finish_early(
        mut self,
        msg2: &[u8],
        now: Instant,
    ) -> Result<(Transport, EarlyAnswer), HandshakeError> {
        if msg2.len() > MAX_NOISE_MESSAGE || msg2.len() < MSG2_LEN {
            return Err(HandshakeError::Malformed);
        }
        let mut payload = vec![0u8; msg2.len()];
        let n = self
            .hs
            .read_message(msg2, &mut payload)
            .map_err(handshake_err)?;
        let answer = match payload.get(..n) {
            Some([]) => EarlyAnswer::None,
            Some([EARLY_ACCEPTED]) => EarlyAnswer::Accepted,
            Some([EARLY_REFUSED]) => EarlyAnswer::Refused,
            _ => return Err(HandshakeError::Malformed),
        };
        if !self.hs.is_handshake_finished() {
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
        Ok((transport?, answer))
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

/// A handshake the exec-server accepted, and the early data message 1
/// carried when it may run ([`accept_early`]).
#[derive(Debug)]
pub(crate) struct AcceptedEarly {
    /// The session.
    pub accepted: Accepted,
    /// What the guard said of message 1's early data (`None`: it carried
    /// none).
    pub early: Option<Early>,
    /// The early data, when it may run.
    pub data: Option<Vec<u8>>,
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
/// written. On any error no reply exists. A message 1 with early data is
/// refused as malformed: see [`accept_early`].
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
    let (hs, client, ephemeral, payload) = read_msg1(local, route, msg1, authorized, cfg)?;
    let timestamp = decode_timestamp(&payload).ok_or(HandshakeError::Malformed)?;
    replay.check(&client, &ephemeral, timestamp, now)?;
    respond(hs, client, &[], at, cfg)
}

/// [`accept`] for a message 1 that may carry early data after its
/// timestamp (the session's first messages). Without early data it is
/// [`accept`]. With it, the replay guard decides
/// ([`ReplayGuard::check_early`]): a replay, or a timestamp beyond the
/// window ahead, is refused entirely; otherwise the handshake completes,
/// and message 2 says whether the early data runs
/// ([`AcceptedEarly::data`]) or must be sent again over the session.
#[allow(
    clippy::too_many_arguments,
    reason = "each input is distinct: keys, route, message, both clocks, admission, replay, suite"
)]
pub(crate) fn accept_early(
    local: &StaticKeypair,
    route: &[u8],
    msg1: &[u8],
    now: SystemTime,
    at: Instant,
    authorized: &AuthorizedKeys,
    replay: &mut ReplayGuard,
    cfg: SessionConfig,
) -> Result<AcceptedEarly, HandshakeError> {
    let (hs, client, ephemeral, mut payload) = read_msg1(local, route, msg1, authorized, cfg)?;
    let stamp = payload
        .get(..TIMESTAMP_LEN)
        .ok_or(HandshakeError::Malformed)?;
    let timestamp = decode_timestamp(stamp).ok_or(HandshakeError::Malformed)?;
    if payload.len() == TIMESTAMP_LEN {
        replay.check(&client, &ephemeral, timestamp, now)?;
        let accepted = respond(hs, client, &[], at, cfg)?;
        return Ok(AcceptedEarly {
            accepted,
            early: None,
            data: None,
        });
    }
    let ticket = payload
        .get(TIMESTAMP_LEN..TIMESTAMP_LEN + TICKET_LEN)
        .and_then(EarlyTicket::from_slice)
        .ok_or(HandshakeError::Malformed)?;
    let early = replay.check_early(&client, &ephemeral, timestamp, ticket, now)?;
    let answer = match early {
        Early::Accepted => EARLY_ACCEPTED,
        Early::Refused(_) => EARLY_REFUSED,
    };
    let accepted = respond(hs, client, &[answer], at, cfg)?;
    let data = (early == Early::Accepted).then(|| payload.split_off(TIMESTAMP_LEN + TICKET_LEN));
    Ok(AcceptedEarly {
        accepted,
        early: Some(early),
        data,
    })
}

/// Reads message 1: the length checked, decrypted (the client's static key
/// authenticated) and the key found in `authorized`. Returns the
/// handshake, the client's key, its ephemeral key and the payload.
fn read_msg1(
    local: &StaticKeypair,
    route: &[u8],
    msg1: &[u8],
    authorized: &AuthorizedKeys,
    cfg: SessionConfig,
) -> Result<(HandshakeState, PublicKey, [u8; KEY_LEN], Vec<u8>), HandshakeError> {
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
    Ok((hs, client, ephemeral, payload))
}

/// Writes message 2 (with `payload`) and enters transport mode.
fn respond(
    mut hs: HandshakeState,
    client: PublicKey,
    payload: &[u8],
    at: Instant,
    cfg: SessionConfig,
) -> Result<Accepted, HandshakeError> {
    let mut msg2 = vec![0u8; MSG2_LEN + payload.len()];
    let n = hs
        .write_message(payload, &mut msg2)
        .map_err(handshake_err)?;
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
