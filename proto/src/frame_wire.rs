//! Tunnel frames on a gRPC stream without tonic's codec, for a relay that
//! passes them on: each frame is read out of the HTTP/2 data it arrived
//! in, and its payload written to the other side as the same bytes.
//!
//! tonic's codec copies every message twice on such a path: into its
//! decode buffer (growing it, and copying what it held, when a message is
//! larger than the buffer) and into its encode buffer. Here a message that
//! arrives whole in one DATA frame (a sender using [`crate::relay_link`]'s
//! frame size sends each tunnel message in one) is decoded from that
//! frame's bytes, its payload a slice of them; only a message split
//! across DATA frames is gathered into a buffer first. A frame going out
//! is two chunks of the response body: the gRPC prefix with every field
//! but the payload, then the payload itself, which HTTP/2 writes from
//! where it lies. The wire is gRPC's, unchanged: peers using tonic read
//! and write the same bytes.
//!
//! A frame the relay passes on unchanged (no hop header, no timings: a
//! bulk frame) goes further: the gRPC message it arrived in is written
//! out as it is, one chunk, one DATA frame ([`Arrived::unchanged`]).
//!
//! - [`FrameReader`]: the frames of a request (or response) body.
//! - [`Arrived`], [`Message`]: a frame as read, and the message it came in.
//! - [`Outgoing`], [`FrameBody`]: a response body of frames, ending with
//!   gRPC's trailers.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hyper::body::{Body, Frame as BodyFrame};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::codegen::http::HeaderMap;
use tonic::{Code, Status};

use crate::pb::tunnel::Frame;

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;
/// `Frame.payload`'s field number.
const PAYLOAD_FIELD: u32 = 2;

/// The frames of a gRPC body, each at most `max` bytes encoded.
pub struct FrameReader<B> {
    body: B,
    /// What is left of the last DATA frame, not yet a whole message.
    pending: Bytes,
    /// A message gathered across DATA frames (empty when none is).
    partial: BytesMut,
    max: usize,
    ended: bool,
}

impl<B> FrameReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    /// Reads frames of at most `max` encoded bytes from `body`.
    pub fn new(body: B, max: usize) -> Self {
        Self {
            body,
            pending: Bytes::new(),
            partial: BytesMut::new(),
            max,
            ended: false,
        }
    }

    /// The next frame; `None` once the body has ended between frames. A
    /// compressed or oversized message, one that does not decode, or a
    /// body that ends inside a message is an error, as is the body's own.
    pub async fn message(&mut self) -> Result<Option<Frame>, Status> {
        Ok(self.next().await?.map(|a| a.frame))
    }

    /// [`Self::message`], with the message the frame arrived in.
    pub async fn next(&mut self) -> Result<Option<Arrived>, Status> {
        loop {
            if let Some(message) = self.take()? {
                let frame = Frame::decode(message.slice(PREFIX..))
                    .map_err(|e| Status::internal(format!("a frame that does not decode: {e}")))?;
                return Ok(Some(Arrived { frame, message }));
            }
            if self.ended {
                return if self.partial.is_empty() && self.pending.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::internal("the stream ended inside a message"))
                };
            }
            match std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    // Trailers end a body; anything else but data is not
                    // ours to read.
                    if let Ok(data) = frame.into_data() {
                        self.add(data);
                    } else {
                        self.ended = true;
                    }
                }
                Some(Err(e)) => return Err(Status::from_error(e.into())),
                None => self.ended = true,
            }
        }
    }

    /// Adds one DATA frame's bytes: read in place when nothing is left
    /// of the last one, else gathered behind what is.
    fn add(&mut self, data: Bytes) {
        if self.partial.is_empty() && self.pending.is_empty() {
            self.pending = data;
            return;
        }
        if !self.pending.is_empty() {
            self.partial.extend_from_slice(&self.pending);
            self.pending = Bytes::new();
        }
        // Bounded: a message's length is checked once its prefix is in,
        // and a DATA frame by HTTP/2's frame size. Room for the whole
        // message is made once, not grown into.
        self.partial.extend_from_slice(&data);
        if let Ok(Some(len)) = self.length(&self.partial) {
            self.partial
                .reserve((PREFIX + len).saturating_sub(self.partial.len()));
        }
    }

    /// A whole message's bytes, its prefix included, if there is one.
    fn take(&mut self) -> Result<Option<Bytes>, Status> {
        if self.partial.is_empty() {
            if let Some(len) = self.length(&self.pending)?
                && self.pending.len() >= PREFIX + len
            {
                let message = self.pending.slice(..PREFIX + len);
                self.pending.advance(PREFIX + len);
                return Ok(Some(message));
            }
            // Not whole: gathered from here on (a copy only for a message
            // split across DATA frames).
            if !self.pending.is_empty() {
                let whole = match self.length(&self.pending)? {
                    Some(len) => PREFIX + len,
                    None => PREFIX,
                };
                self.partial.reserve(whole);
                self.partial.extend_from_slice(&self.pending);
                self.pending = Bytes::new();
            }
            return Ok(None);
        }
        match self.length(&self.partial)? {
            Some(len) if self.partial.len() >= PREFIX + len => {
                let message = self.partial.split_to(PREFIX + len);
                // What follows it (the start of the next) goes back to
                // being read in place.
                if !self.partial.is_empty() {
                    self.pending = self.partial.split().freeze();
                }
                self.partial = BytesMut::new();
                Ok(Some(message.freeze()))
            }
            _ => Ok(None),
        }
    }

    /// The length of the message `buf` starts with, once its prefix is
    /// there.
    fn length(&self, buf: &[u8]) -> Result<Option<usize>, Status> {
        let Some(prefix) = buf.get(..PREFIX) else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            return Err(Status::unimplemented(
                "compressed messages are not accepted on a tunnel",
            ));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max {
            return Err(Status::out_of_range(format!(
                "a message of {len} bytes, over the limit of {}",
                self.max
            )));
        }
        Ok(Some(len))
    }
}

/// A frame as read, with the gRPC message (prefix included) it arrived in.
#[derive(Debug)]
pub struct Arrived {
    /// The frame.
    pub frame: Frame,
    message: Bytes,
}

impl Arrived {
    /// The frame, and the message it arrived in when that can be passed on
    /// for it: when the frame has no hop header and no timings (nothing a
    /// relay rewrites) and the message holds nothing else (exactly the
    /// frame's own encoding length: no unknown or repeated fields).
    pub fn unchanged(self) -> (Frame, Option<Message>) {
        let passable = self.frame.hop_traceparent.is_empty()
            && self.frame.hop_timings.is_empty()
            && self.message.len() == PREFIX + self.frame.encoded_len();
        let message = passable.then_some(Message(self.message));
        (self.frame, message)
    }
}

/// A gRPC message as it arrived (prefix included), that encodes the frame
/// it was read as and nothing else; only [`Arrived::unchanged`] makes one.
#[derive(Debug, Clone)]
pub struct Message(Bytes);

impl Message {
    /// Its length on the wire.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a message has at least its prefix.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A frame going out: written from the frame, or as the message it
/// arrived in when that was kept.
#[derive(Debug)]
pub struct Outgoing {
    /// The frame.
    pub frame: Frame,
    /// The message it arrived in, passed on as it is.
    pub message: Option<Message>,
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        Self {
            frame,
            message: None,
        }
    }
}

/// A gRPC response body of the frames `frames` yields, ending with the
/// trailers of success, or of the first error it yields.
pub struct FrameBody<S> {
    frames: S,
    /// The payload of the frame whose head was the last chunk.
    payload: Option<Bytes>,
    max: usize,
    done: bool,
}

impl<S> FrameBody<S> {
    /// A body of `frames`, each at most `max` bytes encoded.
    pub fn new(frames: S, max: usize) -> Self {
        Self {
            frames,
            payload: None,
            max,
            done: false,
        }
    }
}

impl<S> Body for FrameBody<S>
where
    S: Stream<Item = Result<Outgoing, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Status>>> {
        if let Some(payload) = self.payload.take() {
            return Poll::Ready(Some(Ok(BodyFrame::data(payload))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let end = match ready!(self.frames.poll_next_unpin(cx)) {
            // Passed on as it came: one chunk, one DATA frame.
            Some(Ok(Outgoing {
                message: Some(Message(message)),
                ..
            })) => return Poll::Ready(Some(Ok(BodyFrame::data(message)))),
            Some(Ok(Outgoing { frame, .. })) => match head(frame, self.max) {
                Ok((head, payload)) => {
                    self.payload = payload;
                    return Poll::Ready(Some(Ok(BodyFrame::data(head))));
                }
                Err(status) => status,
            },
            Some(Err(status)) => status,
            None => Status::new(Code::Ok, ""),
        };
        self.done = true;
        Poll::Ready(Some(Ok(BodyFrame::trailers(trailers(&end)))))
    }
}

/// The gRPC prefix and every field of `frame` but its payload, then the
/// payload (`None` when empty).
fn head(mut frame: Frame, max: usize) -> Result<(Bytes, Option<Bytes>), Status> {
    let payload = std::mem::take(&mut frame.payload);
    let rest = frame.encoded_len();
    let payload_field = if payload.is_empty() {
        0
    } else {
        1 + encoded_len_varint(payload.len() as u64) + payload.len()
    };
    let len = rest + payload_field;
    if len > max {
        return Err(Status::out_of_range(format!(
            "a frame of {len} bytes, over the limit of {max}"
        )));
    }
    let mut head = BytesMut::with_capacity(PREFIX + rest + 11);
    head.put_u8(0);
    // Within `max`, itself a u32 message length.
    head.put_u32(u32::try_from(len).map_err(|_| Status::out_of_range("a frame too large"))?);
    frame
        .encode(&mut head)
        .map_err(|e| Status::internal(format!("a frame that does not encode: {e}")))?;
    if payload.is_empty() {
        return Ok((head.freeze(), None));
    }
    encode_key(PAYLOAD_FIELD, WireType::LengthDelimited, &mut head);
    encode_varint(payload.len() as u64, &mut head);
    Ok((head.freeze(), Some(payload)))
}

/// gRPC's trailers for `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // A message that cannot be a header: the code alone.
        map.clear();
        let _ = Status::new(status.code(), "").add_header(&mut map);
    }
    map
}

#[cfg(test)]
mod tests;
