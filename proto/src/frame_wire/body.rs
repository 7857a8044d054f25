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

/// The largest payload copied into its frame's head: below it a second
/// DATA frame costs more than the copy.
const INLINE_PAYLOAD: usize = 1024;

/// A frame going out: written from the frame, or as the message it
/// arrived in when that was kept.
#[derive(Debug)]
pub struct Outgoing {
    /// The frame.
    pub frame: Frame,
    /// The message it arrived in, passed on as it is.
    pub message: Option<Message>,
    /// Kept until the frame's bytes have left this process.
    pub until_sent: Option<UntilSent>,
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        Self {
            frame,
            message: None,
            until_sent: None,
        }
    }
}

/// A value kept with a frame's bytes until HTTP/2 has written them to the
/// connection (or dropped them with the stream), then dropped: so what
/// counts the bytes a relay holds (its budget, its credit) counts them in
/// HTTP/2's buffers too, not only in its own queue.
pub struct UntilSent {
    _value: Box<dyn Send + 'static>,
}

impl UntilSent {
    /// Keeps `value` until the bytes it goes with are sent.
    pub fn new(value: impl Send + 'static) -> Self {
        Self {
            _value: Box::new(value),
        }
    }
}

impl std::fmt::Debug for UntilSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UntilSent")
    }
}

/// Bytes that keep a value alive for as long as any of them is held.
struct Kept {
    bytes: Bytes,
    _until_sent: UntilSent,
}

impl AsRef<[u8]> for Kept {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// `bytes`, keeping `until_sent` (if any) until the last of them is dropped.
fn kept(bytes: Bytes, until_sent: Option<UntilSent>) -> Bytes {
    match until_sent {
        Some(until_sent) => Bytes::from_owner(Kept {
            bytes,
            _until_sent: until_sent,
        }),
        None => bytes,
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
                until_sent,
                ..
            })) => return Poll::Ready(Some(Ok(BodyFrame::data(kept(message, until_sent))))),
            Some(Ok(Outgoing {
                frame, until_sent, ..
            })) => match head(frame, self.max) {
                // What is kept goes with the last chunk of the frame.
                Ok((head, Some(payload))) => {
                    self.payload = Some(kept(payload, until_sent));
                    return Poll::Ready(Some(Ok(BodyFrame::data(head))));
                }
                Ok((head, None)) => {
                    return Poll::Ready(Some(Ok(BodyFrame::data(kept(head, until_sent)))));
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
/// payload (`None` when it is empty or small enough to go in the head:
/// one chunk, one DATA frame).
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
    let inline = payload.len() <= INLINE_PAYLOAD;
    let mut head =
        BytesMut::with_capacity(PREFIX + rest + 11 + if inline { payload.len() } else { 0 });
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
    if inline {
        head.extend_from_slice(&payload);
        return Ok((head.freeze(), None));
    }
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
