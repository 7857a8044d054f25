//! Reading tunnel frames out of the DATA frames of a gRPC body.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use http_body::Body;
use prost::Message as _;
use tonic::codegen::http::{HeaderMap, StatusCode};
use tonic::{Code, Status};

use crate::pb::tunnel::Frame;

/// gRPC's message prefix: a compression flag and a big-endian length.
pub(super) const PREFIX: usize = 5;

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
fn final_status(trailers: Option<&HeaderMap>, status: StatusCode) -> Result<(), Status> {
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
pub struct Message(pub(super) Bytes);

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
