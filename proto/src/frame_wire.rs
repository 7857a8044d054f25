//! Tunnel frames on a gRPC stream without tonic's codec: each frame is
//! read out of the HTTP/2 data it arrived in, and a relay writes each
//! payload to the other side as the same bytes.
//!
//! tonic's codec copies every message twice on a relay's path: into its
//! decode buffer (growing it, and copying what it held, when a message is
//! larger than the buffer) and into its encode buffer. Here a message that
//! arrives whole in one DATA frame (a sender using [`crate::relay_link`]'s
//! frame size sends each tunnel message in one) is decoded from that
//! frame's bytes, its payload a slice of them; only a message split
//! across DATA frames is gathered into a buffer first. A frame going out
//! is two chunks of the body: the gRPC prefix with every field but the
//! payload, then the payload itself, which HTTP/2 writes from where it
//! lies; a payload of at most 1 KiB is copied into the first chunk, so a
//! small frame is one DATA frame that its reader finds whole. The wire is
//! gRPC's, unchanged: peers using tonic read and write the same bytes.
//!
//! A frame the relay passes on unchanged (no hop header, no timings: a
//! bulk frame) goes further: the gRPC message it arrived in is written
//! out as it is, one chunk, one DATA frame ([`Arrived::unchanged`]).
//!
//! The dialling side of every tunnel stream (a client's `Open`, an
//! exec-server's `Accept`, a relay's `Open` at a fleet peer) makes its
//! call with `call` (feature `channel`): its answer's frames are read in
//! place too, and gRPC's end of a response (the trailers' status, or one
//! inferred when they are missing) is the reader's end.
//!
//! - [`FrameReader`]: the frames of a request or response body.
//! - [`Arrived`], [`Message`]: a frame as read, and the message it came in.
//! - [`Outgoing`], [`FrameBody`]: a body of frames; a response's ends
//!   with gRPC's trailers. [`UntilSent`]: kept with a frame's bytes until
//!   HTTP/2 has written them.
//! - `call`, `encoded` (feature `channel`): a tunnel call, and a request
//!   body written as tonic's client writes one.

mod body;
#[cfg(feature = "channel")]
mod call;
mod reader;

pub use body::{FrameBody, Outgoing, UntilSent};
#[cfg(feature = "channel")]
pub use call::{call, encoded};
pub use reader::{Arrived, FrameReader, Message};

#[cfg(test)]
mod tests;
