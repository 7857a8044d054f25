//! The session protocol as sans-IO state machines: everything a core-client
//! and an exec-server say to each other inside one Noise session.
//!
//! Layout:
//! - `now` (private): [`Now`], the time every input carries;
//! - `limits` (private): [`Limits`], the timers and bounds of a session;
//! - `frames` (private): [`Mark`] and [`Transmit`] (what leaves, and which
//!   marked messages it completed), [`Received`] (where an incoming message
//!   came from);
//! - [`ClientSession`]: the initiator. Handshake, hello, calls (exec, stdin,
//!   signal, resize, cancel), keepalive pings and the clock-offset estimate, terminal
//!   events checked against each call's sequence;
//! - [`ServerSession`]: the responder. Handshake with the authorized keys and
//!   the replay guard, hello answer, the call table and its cap (and the
//!   bounds of a terminal call), sequence numbers and the final event of
//!   each call, pong;
//! - `events` (private): a machine's events for its caller, with the one
//!   handed back and the end reported once, last;
//! - `shared` (private): what both share: the Noise transport, clear frames,
//!   marks and their hop headers, the backlog bound, close and linger;
//! - `stdin` (private): per-call stdin flow control (a window of bytes
//!   beyond the exec-server's acknowledgements), and [`StdinFlow`];
//! - [`window`]: windows that follow the path, at their receiver (the
//!   round trip measured by a ping, the window sized from what it carried,
//!   a shared budget); the exec-server's measurement is in
//!   `server::measure`;
//! - [`output`]: per-call output flow control (a window of output credit
//!   beyond the client's acknowledgements, so that a caller that stops
//!   reading holds up its own call only);
//! - [`peer_clock`]: the peer's clock offset, estimated from request/answer
//!   pairs;
//! - `timings` (private): [`EncodedTimings`], a call's stage timings as its
//!   final event carries them, decoded when they are placed;
//! - `error` (private): [`Closed`] (an end without an error) and the typed
//!   errors [`SessionError`], [`Violation`], [`CallError`].
//!
//! # Driving a machine
//!
//! Nothing here reads a clock, sleeps or does I/O. The caller hands in
//! frames from the link ([`handle_frame`](ClientSession::handle_frame)), the
//! end of the link, commands, and [`Now`]; it drains
//! [`poll_transmit`](ClientSession::poll_transmit) into the link and
//! [`poll_event`](ClientSession::poll_event) into its own routing; it calls
//! [`handle_timeout`](ClientSession::handle_timeout) once the instant from
//! [`poll_timeout`](ClientSession::poll_timeout) has passed. An event the
//! caller cannot take yet is handed back with `defer`; until it is taken the
//! machine reads nothing more.
//!
//! # Bounds
//!
//! While more than [`Limits::backlog`] bytes wait to be sent, a machine asks
//! for no more local input (`wants_input` is false), and an exec-server asks
//! for no more frames either (answers to pings and hellos are output too), so
//! a peer that never reads cannot grow the other side's memory beyond the
//! backlog and the answers to one frame. A machine that holds undelivered
//! events asks for no frames. Idle timers stand still while a machine is not
//! reading, so a slow reader is never mistaken for a dead peer.

mod client;
mod error;
mod events;
mod frames;
mod limits;
mod now;
pub mod output;
pub mod peer_clock;
pub(crate) mod resume;
mod server;
mod shared;
mod stdin;
mod timings;
pub mod window;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

pub use client::{
    Abandonment, CallEvent, ClientEvent, ClientSession, Counters, FirstCall, FirstCallError,
    ForwardError, Forwarded, Ready, ReattachError, SpanCounts, fits_early,
};
#[cfg(test)]
pub(crate) use client::{HELD_BATCHES, LINGER};
pub use error::{CallError, Closed, LinkFailure, LinkFailureKind, SessionError, Stage, Violation};
pub use frames::{Mark, Received, Transmit};
pub use limits::Limits;
pub use now::Now;
pub use server::{
    Acceptor, Account, Adopted, KeySource, STDIN_BUDGET, ServerEvent, ServerSession, SpanBatch,
    Tombstone,
};
pub use stdin::StdinFlow;
pub use timings::EncodedTimings;
