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
//! lies. The wire is gRPC's, unchanged: peers using tonic read and write
//! the same bytes.
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
//!   with gRPC's trailers.
//! - `call`, `encoded` (feature `channel`): a tunnel call, and a request
//!   body written as tonic's client writes one.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::{Body, Frame as BodyFrame};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::codegen::http::{HeaderMap, StatusCode};
use tonic::{Code, Status};

use crate::pb::tunnel::Frame;

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;
/// `Frame.payload`'s field number.
const PAYLOAD_FIELD: u32 = 2;

/// The frames of a gRPC body, each at most `max` bytes encoded.
///
/// As a [`Stream`] it yields each frame, then the error that ended the
/// body if one did (once), then `None`.
pub struct FrameReader<B> {
    body: B,
    /// What is left of the last DATA frame, not yet a whole message.
    pending: Bytes,
    /// A message gathered across DATA frames (empty when none is).
    partial: BytesMut,
    max: usize,
    /// How the body ended, once it has: `Ok` cleanly, else the error
    /// given once the frames before it are read.
    end: Option<Result<(), Status>>,
    /// What the end of a response body means ([`Self::response`]).
    response: Option<StatusCode>,
    /// The error was given: the stream is over.
    finished: bool,
}

impl<B> FrameReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    /// Reads frames of at most `max` encoded bytes from `body` (a
    /// request's: it ends with the body, its trailers are not read).
    pub fn new(body: B, max: usize) -> Self {
        Self {
            body,
            pending: Bytes::new(),
            partial: BytesMut::new(),
            max,
            end: None,
            response: None,
            finished: false,
        }
    }

    /// Reads the frames of a response body that came with HTTP status
    /// `status`: as gRPC's, it ends in error unless its trailers say
    /// otherwise (a body that ends without a final status was cut short).
    pub fn response(body: B, status: StatusCode, max: usize) -> Self {
        Self {
            response: Some(status),
            ..Self::new(body, max)
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
        std::future::poll_fn(|cx| self.poll_arrived(cx)).await
    }

    /// Polls for [`Self::next`].
    pub fn poll_arrived(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Arrived>, Status>> {
        loop {
            if let Some(message) = self.take()? {
                let frame = Frame::decode(message.slice(PREFIX..))
                    .map_err(|e| Status::internal(format!("a frame that does not decode: {e}")))?;
                return Poll::Ready(Ok(Some(Arrived { frame, message })));
            }
            if let Some(end) = &self.end {
                if !(self.partial.is_empty() && self.pending.is_empty()) {
                    return Poll::Ready(Err(Status::internal("the stream ended inside a message")));
                }
                return Poll::Ready(end.clone().map(|()| None));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.add(data),
                    // Trailers end a body; anything else but data is not
                    // ours to read.
                    Err(frame) => {
                        self.end = Some(self.ended(frame.into_trailers().ok().as_ref()));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(Status::from_error(e.into()))),
                None => self.end = Some(self.ended(None)),
            }
        }
    }

    /// How the body ended, given its trailers if any.
    fn ended(&self, trailers: Option<&HeaderMap>) -> Result<(), Status> {
        match self.response {
            None => Ok(()),
            Some(status) => final_status(trailers, status),
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

impl<B> Stream for FrameReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Item = Result<Frame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match ready!(self.poll_arrived(cx)) {
            Ok(Some(arrived)) => Poll::Ready(Some(Ok(arrived.frame))),
            Ok(None) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Err(status) => {
                self.finished = true;
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}

/// What ended a gRPC response: the status its trailers (or, for a
/// response of headers only, its headers) give, else one inferred from
/// its HTTP status, as gRPC's mapping says. A body that ended with status
/// 200 and no final status was cut short.
pub(crate) fn final_status(trailers: Option<&HeaderMap>, status: StatusCode) -> Result<(), Status> {
    if let Some(status) = trailers.and_then(Status::from_header_map) {
        return if status.code() == Code::Ok {
            Ok(())
        } else {
            Err(status)
        };
    }
    let code = match status {
        StatusCode::OK => {
            return Err(Status::unknown(
                "the stream ended without a final status (cut short on the way)",
            ));
        }
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Err(Status::new(
        code,
        format!("no gRPC status, HTTP status {}", status.as_u16()),
    ))
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

/// A gRPC body of the frames `frames` yields: a response's ends with the
/// trailers of success, or of the first error it yields; a request's ends
/// with the last frame, or fails with that error.
pub struct FrameBody<S> {
    frames: S,
    /// The payload of the frame whose head was the last chunk.
    payload: Option<Bytes>,
    max: usize,
    /// A response's: it ends with trailers.
    trailers: bool,
    done: bool,
}

impl<S> FrameBody<S> {
    /// A response body of `frames`, each at most `max` bytes encoded.
    pub fn new(frames: S, max: usize) -> Self {
        Self {
            frames,
            payload: None,
            max,
            trailers: true,
            done: false,
        }
    }

    /// A request body of `frames`, each at most `max` bytes encoded.
    pub fn request(frames: S, max: usize) -> Self {
        Self {
            trailers: false,
            ..Self::new(frames, max)
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
        if self.trailers {
            Poll::Ready(Some(Ok(BodyFrame::trailers(trailers(&end)))))
        } else if end.code() == Code::Ok {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Err(end)))
        }
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

#[cfg(feature = "channel")]
mod call;
#[cfg(feature = "channel")]
pub use call::{call, encoded};

#[cfg(test)]
mod tests;
