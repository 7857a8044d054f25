//! Constructors for relay frames, shared by every side of a tunnel.

use bytes::Bytes;

use crate::pb::tunnel::{CloseReason, Frame, FrameKind};

/// A frame carrying a Noise handshake message.
pub fn handshake(payload: Bytes) -> Frame {
    Frame {
        kind: FrameKind::Handshake as i32,
        payload,
        hop_traceparent: String::new(),
        close_reason: 0,
        hop_timings: Vec::new(),
    }
}

/// A frame carrying a Noise transport message.
pub fn data(payload: Bytes) -> Frame {
    Frame {
        kind: FrameKind::Data as i32,
        payload,
        hop_traceparent: String::new(),
        close_reason: 0,
        hop_timings: Vec::new(),
    }
}

/// An unauthenticated close frame with its reason.
pub fn close(reason: CloseReason) -> Frame {
    Frame {
        kind: FrameKind::Close as i32,
        payload: Bytes::new(),
        hop_traceparent: String::new(),
        close_reason: reason as i32,
        hop_timings: Vec::new(),
    }
}
