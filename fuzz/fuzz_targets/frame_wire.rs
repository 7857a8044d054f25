//! The reading of tunnel streams without tonic's codec
//! (`proto::frame_wire`): the relay's, which takes a client's bytes before
//! any session is authenticated, and an end's, of the answer a relay (or
//! an exec-server listening itself) sends. gRPC messages cut into DATA
//! frames anywhere read the same as the whole body does (the same frames,
//! then the same end or error); read as an answer ending with trailers,
//! they read the same frames and end as the trailers say; and each frame
//! read writes back to bytes that read as the same frame.
#![no_main]

use std::convert::Infallible;

use bytes::Bytes;
use futures::executor::block_on;
use futures::stream;
use http_body::Frame as BodyFrame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use proto::frame_wire::{FrameBody, FrameReader, Outgoing};
use proto::pb::tunnel::Frame;

/// A small limit, so that oversized messages are reached.
const MAX: usize = 4096;

/// Every frame of `chunks`, and how the reading ended (`None`: cleanly;
/// else the error's code).
fn read(chunks: Vec<Bytes>) -> (Vec<Frame>, Option<i32>) {
    read_within(chunks, MAX)
}

/// [`read`] with messages of at most `max` bytes.
fn read_within(chunks: Vec<Bytes>, max: usize) -> (Vec<Frame>, Option<i32>) {
    let body = StreamBody::new(stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(BodyFrame::data(c))),
    ));
    drain(FrameReader::new(body, max))
}

/// [`read`] as an answer whose trailers give the gRPC status `code`.
fn read_answer(chunks: Vec<Bytes>, code: i32) -> (Vec<Frame>, Option<i32>) {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", code.into());
    let frames = chunks
        .into_iter()
        .map(BodyFrame::data)
        .chain([BodyFrame::trailers(trailers)]);
    let body = StreamBody::new(stream::iter(frames.map(Ok::<_, Infallible>)));
    drain(FrameReader::response(body, http::StatusCode::OK, MAX))
}

/// Every frame `reader` reads, and how the reading ended.
fn drain<B>(mut reader: FrameReader<B>) -> (Vec<Frame>, Option<i32>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut frames = Vec::new();
    loop {
        match block_on(reader.message()) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(status) => return (frames, Some(status.code() as i32)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let whole = read(vec![Bytes::copy_from_slice(rest)]);
    let size = usize::from(cut).max(1);
    let pieces = read(rest.chunks(size).map(Bytes::copy_from_slice).collect());
    assert_eq!(whole, pieces, "cut into pieces of {size}");
    // As an answer: the same frames, and the trailers' status at a clean
    // end (0 to 16 are gRPC's codes).
    let code = i32::from(cut % 17);
    let (frames, end) = read_answer(
        rest.chunks(size).map(Bytes::copy_from_slice).collect(),
        code,
    );
    assert_eq!(frames, whole.0, "as an answer");
    match whole.1 {
        Some(error) => assert_eq!(end, Some(error), "as an answer"),
        None => assert_eq!(end, (code != 0).then_some(code), "as an answer"),
    }
    // What was read writes back as the same frames, each passed on as it
    // came where the reader allows it.
    let (frames, _) = whole;
    let mut reader = FrameReader::new(
        StreamBody::new(stream::iter([Ok::<_, Infallible>(BodyFrame::data(
            Bytes::copy_from_slice(rest),
        ))])),
        MAX,
    );
    let mut outgoing = Vec::new();
    while let Ok(Some(arrived)) = block_on(reader.next()) {
        let (frame, message) = arrived.unchanged();
        outgoing.push(Ok(Outgoing {
            frame,
            message,
            until_sent: None,
        }));
    }
    assert_eq!(outgoing.len(), frames.len());
    // (A message may write back longer than it came, e.g. a varint sent
    // short: at most twice.)
    let mut body = FrameBody::new(stream::iter(outgoing), 2 * MAX);
    let mut written = Vec::new();
    while let Some(frame) = block_on(body.frame()) {
        if let Ok(data) = frame.expect("the body itself never fails").into_data() {
            written.push(data);
        }
    }
    assert_eq!(read_within(written, 2 * MAX), (frames, None));
});
