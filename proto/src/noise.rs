//! The sans-IO Noise IK session between a core-client and an exec-server.
//!
//! Layout:
//! - `config`: the [`Suite`], the [`SessionConfig`] and the [`prologue`];
//! - `timestamp` (private): the message-1 timestamp;
//! - [`ClientHandshake`] (initiator) and [`accept`] (responder): the two IK
//!   messages. The client pins the exec-server's static key; the exec-server
//!   checks the client's static key against its authorized keys, then the
//!   timestamp in message 1 against its [`ReplayGuard`], before it answers;
//! - [`Transport`]: the session after the handshake. Each Noise transport
//!   message carries one record (`DATA`, `REKEY` or `CLOSE`): its body, then
//!   its type as the last byte (a trailer, so that a received record is
//!   opened in place where its body belongs); `DATA` records carry the
//!   length-prefixed envelope stream ([`crate::envelope_stream`]);
//! - `cipher` (private): each direction's Noise `CipherState` over `ring`'s
//!   AEAD, sealing and opening in place (the handshake is `snow`'s; its
//!   split keys the two directions);
//! - `error` (private): [`HandshakeError`], what the handshake reports, and
//!   [`TransportError`], what the transport and its ciphers report.
//!
//! Nothing here does I/O or reads a clock: the caller passes bytes and the
//! current time in, and gets bytes and events out.
//!
//! # Prologue
//!
//! `"{PROTOCOL_VERSION}\0{protocol name}\0"` followed by the route (the
//! exec-server id as ASCII), so a handshake captured on one route, version or
//! suite cannot complete on another.
//!
//! # Message 1 payload
//!
//! A 12-byte timestamp: seconds since the Unix epoch (`u64` big-endian) then
//! nanoseconds (`u32` big-endian), then optionally *early data*: the
//! session's first messages (the hello and the first call), protected by
//! the exec-server's static key alone. Message 2's payload is empty when
//! message 1 carried none; otherwise one byte says whether the early data
//! runs (1) or must be sent again over the session (0, "retry after the
//! handshake"): see [`ReplayGuard::check_early`].

mod cipher;
mod config;
mod error;
mod handshake;
mod replay;
mod timestamp;
mod transport;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

pub use config::{SessionConfig, Suite, UnknownSuite, prologue};
pub use error::{HandshakeError, TransportError};
pub use handshake::{Accepted, ClientHandshake, MAX_EARLY_DATA, accept};
pub(crate) use handshake::{EarlyAnswer, accept_early};
pub use replay::{Early, EarlyRefusal, EarlyTicket, ReplayGuard, TICKET_LEN};
#[cfg(test)]
pub(crate) use transport::{RECORD_CLOSE, RECORD_DATA, RECORD_REKEY};
pub use transport::{Transport, TransportStats};
