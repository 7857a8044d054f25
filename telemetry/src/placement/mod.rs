//! Where a remote service's timings land on this client's clock: the
//! exec-server's stages of a call ([`stages`], from the summary its final
//! event carries) and the relays' forwards of its frames ([`hops`], told
//! in clear on the frames they forward), placed so that a client with no
//! collector writes every service's stages into its local trace file,
//! tiling the command.
//!
//! A remote time is moved onto ours by an offset (the peer's clock minus
//! ours) that is an interval: a value and a bound the truth lies within.
//! Its sources of truth, tightest first:
//! 1. the same kernel: the peer's boot id digest equals ours, one clock,
//!    offset exactly 0;
//! 2. both kernels synchronized: 0, within the sum of their stated
//!    maximum errors (unless the call's own estimate is tighter);
//! 3. else estimated from timestamps, as NTP does from four: the request
//!    leaving here (t1), reaching the peer (t2, its clock), the answer
//!    leaving there (t3) and arriving here (t4), offset
//!    `((t2 − t1) + (t3 − t4)) / 2` within half their spread (how the
//!    round trip splits between the two ways is unknown to it). A relay's
//!    comes from the call's own four timestamps; the exec-server's from
//!    the session's exchanges, the call's own among them.
//!
//! Whatever the source, cause comes before effect: remote work lies
//! between the request leaving and the final event arriving here (the
//! causal bounds, `offset::CausalBounds`). The exec-server's offset, when
//! it would put the work outside them, is moved within its bound to the
//! nearest one that does not; a two-way estimate whose bound cannot reach
//! is moved anyway (its bound assumed less drift than there was), an
//! exact source is kept. A relay's exact source that the call's times
//! contradict (a clock stepped mid-call) gives way to the call's own
//! estimate. The relays' forwards are placed first, between the request
//! leaving and the final event arriving (a second relay of a fleet
//! between the first's); the exec-server's stages then between the
//! forwards of the relay next to it. Each placed span says how it was
//! placed: `rex.clock.source`, `rex.clock.offset_ns`, `rex.clock.bound_ns`,
//! `rex.clock.measured_ns` when the offset was moved, and
//! `rex.remote.placed`.
//!
//! Layout:
//! - `offset`: the arithmetic both share (instants as Unix nanoseconds
//!   and back, the causal bounds, the four-timestamp estimate, the move
//!   into the bounds, the attributes of a placed span; [`clock_attributes`]
//!   for any span that says how a peer's clock was known).
//! - [`stages`]: the exec-server's stage summary placed.
//! - [`hops`]: the relays' forwards placed.
//! - [`pending`]: the flush barrier for calls whose stages are being
//!   placed after their final event was handed on.

pub mod hops;
pub(crate) mod offset;
pub mod pending;
pub mod stages;

pub use offset::clock_attributes;
