//! Writing tunnel frames as a gRPC body.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::{Body, Frame as BodyFrame};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::codegen::http::HeaderMap;
use tonic::{Code, Status};

use super::reader::{Message, PREFIX};
use crate::pb::tunnel::Frame;

/// `Frame.payload`'s field number.
const PAYLOAD_FIELD: u32 = 2;

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
