//! What crosses the link: [`Transmit`] (a frame to send, and the marked
//! messages it completed), [`Mark`] (a message whose departure the caller
//! wants to hear about) and [`Received`] (where an incoming message came
//! from).

use std::time::SystemTime;

use crate::pb::tunnel::Frame;

/// A message whose departure the caller wants to hear about: when the
/// record holding its last byte leaves, `tag` comes back in
/// [`Transmit::done`]. A marked message ends its record, so its frame
/// carries `hop` (a traceparent in clear for the relay) and no other
/// message's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark<T> {
    /// Handed back once the message has left.
    pub tag: T,
    /// The hop header for the message's frame.
    pub hop: Option<String>,
}

impl<T> Mark<T> {
    /// A mark with a hop header.
    pub fn new(tag: T, hop: Option<String>) -> Self {
        Self { tag, hop }
    }
}

/// One frame to send, and what it completed.
#[derive(Debug)]
pub struct Transmit<T> {
    /// The frame.
    pub frame: Frame,
    /// Tags of the marked messages whose last byte is in this frame.
    pub done: Vec<T>,
    /// Envelope-stream bytes that have left so far, this frame included.
    pub sent: u64,
}

/// Where an incoming message came from: when the frame that completed it
/// was handed in, and that frame's hop header (empty if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The wall-clock time of the frame's [`handle_frame`](super::ClientSession::handle_frame).
    pub arrived: SystemTime,
    /// The frame's hop header (a traceparent, as the relay rewrote it).
    pub hop: String,
    /// The sender's wall clock when it sent the message (Unix nanoseconds;
    /// 0 if it did not say).
    pub sent_unix_nanos: u64,
    /// The relay's timings the frame carried (at most
    /// [`MAX_HOP_TIMINGS`](crate::limits::MAX_HOP_TIMINGS)), given with the
    /// first message the frame completed (they name their own calls).
    pub relay: Vec<crate::pb::tunnel::HopTiming>,
}
