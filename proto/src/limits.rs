//! Size bounds on the wire. Every length read from a peer is checked against
//! one of these before anything is allocated.

/// Largest Noise message, including the 16-byte authentication tag.
pub(crate) const MAX_NOISE_MESSAGE: usize = 65_535;
/// Noise AEAD tag length.
pub(crate) const NOISE_TAG: usize = 16;
/// Largest plaintext in one Noise transport message.
pub const MAX_NOISE_PLAINTEXT: usize = MAX_NOISE_MESSAGE - NOISE_TAG;
/// Largest relay frame payload (one Noise message).
pub const MAX_FRAME_PAYLOAD: usize = MAX_NOISE_MESSAGE;
/// Largest encoded relay frame on the gRPC stream (payload plus headers).
pub const MAX_GRPC_MESSAGE: usize = MAX_FRAME_PAYLOAD + 1024;
/// Largest encoded session envelope (an exec request with a big environment).
pub const MAX_ENVELOPE: usize = 1024 * 1024;
/// Largest stdout/stderr/stdin chunk in one envelope; one chunk fits one record.
pub const MAX_CHUNK: usize = 32 * 1024;
/// Largest hop traceparent header the relay will look at.
pub const MAX_HOP_HEADER: usize = 128;
/// Most timings one relay tells on a frame (its forward of that frame and
/// its newest toward the exec-server).
pub const RELAY_HOP_TIMINGS: usize = 4;
/// Most relay timings on one frame (a client reads no more): two relays'
/// worth, as a session crosses at most two (one hop between relays of a
/// fleet).
pub const MAX_HOP_TIMINGS: usize = 2 * RELAY_HOP_TIMINGS;
/// Largest terminal window, in rows and in columns (the smallest is 1).
pub const MAX_TERMINAL_SIZE: u32 = 10_000;
/// Longest `TERM` value an exec request may carry.
pub(crate) const MAX_TERM: usize = 128;

/// Whether a terminal window of `rows` by `cols` is within bounds.
pub fn terminal_size_ok(rows: u32, cols: u32) -> bool {
    (1..=MAX_TERMINAL_SIZE).contains(&rows) && (1..=MAX_TERMINAL_SIZE).contains(&cols)
}

/// Whether `term` may be a `TERM` value: at most [`MAX_TERM`] bytes of
/// printable ASCII without spaces (terminfo names such as
/// `xterm-256color`).
pub fn term_ok(term: &str) -> bool {
    term.len() <= MAX_TERM && term.bytes().all(|b| b.is_ascii_graphic())
}
