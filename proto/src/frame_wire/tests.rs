use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use futures::stream;
use http_body::Frame as BodyFrame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tonic::{Code, Status};

use super::{FrameBody, FrameReader, Outgoing};
use crate::frames;
use crate::pb::tunnel::{CloseReason, Frame, HopDirection, HopTiming};

const MAX: usize = 70 * 1024;

fn traced(payload: &[u8]) -> Frame {
    let mut frame = frames::data(Bytes::copy_from_slice(payload));
    frame.hop_traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned();
    frame.hop_timings = vec![HopTiming {
        trace_id: Bytes::from_static(&[7; 16]),
        parent_span_id: 1,
        span_id: 2,
        direction: HopDirection::ToClient as i32,
        arrived_unix_nanos: 3,
        duration_ns: 4,
        frame_bytes: 5,
        host: "relay-1".to_owned(),
        clock: None,
        path_hop: 0,
    }];
    frame
}

fn sample() -> Vec<Frame> {
    vec![
        frames::handshake(Bytes::from_static(b"message 1")),
        traced(&[0xab; 65_535]),
        frames::data(Bytes::from_static(b"x")),
        frames::close(CloseReason::Timeout),
        traced(b""),
    ]
}

/// A body of `chunks`, each one DATA frame.
fn body(
    chunks: Vec<Bytes>,
) -> StreamBody<impl futures::Stream<Item = Result<BodyFrame<Bytes>, Infallible>>> {
    StreamBody::new(stream::iter(
        chunks.into_iter().map(|c| Ok(BodyFrame::data(c))),
    ))
}

/// What `FrameBody` writes for `frames`: its data chunks and its trailers.
async fn written(frames: Vec<Result<Frame, Status>>) -> (Vec<Bytes>, Status) {
    written_as(frames.into_iter().map(|r| r.map(Outgoing::from)).collect()).await
}

/// [`written`], of frames that may be passed on as they arrived.
async fn written_as(frames: Vec<Result<Outgoing, Status>>) -> (Vec<Bytes>, Status) {
    let mut out = FrameBody::new(stream::iter(frames), MAX);
    let mut chunks = Vec::new();
    while let Some(frame) = out.frame().await {
        let frame = frame.expect("the body itself never fails");
        match frame.into_data() {
            Ok(data) => chunks.push(data),
            Err(frame) => {
                let trailers = frame.into_trailers().expect("data or trailers");
                let status = Status::from_header_map(&trailers).expect("grpc-status");
                assert!(out.frame().await.is_none(), "nothing after the trailers");
                return (chunks, status);
            }
        }
    }
    panic!("no trailers");
}

/// Every frame `reader` yields, to its end.
async fn read_all<B>(mut reader: FrameReader<B>) -> Result<Vec<Frame>, Status>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut frames = Vec::new();
    while let Some(frame) = reader.message().await? {
        frames.push(frame);
    }
    Ok(frames)
}

/// gRPC's framing of `frame` as prost writes it (what a tonic peer sends).
fn grpc(frame: &Frame) -> Vec<u8> {
    let body = frame.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[tokio::test]
async fn what_it_writes_is_grpc_that_prost_reads_back_field_for_field() {
    let (chunks, status) = written(sample().into_iter().map(Ok).collect()).await;
    assert_eq!(status.code(), Code::Ok);
    let mut wire = BytesMut::new();
    for c in &chunks {
        wire.extend_from_slice(c);
    }
    let mut wire = wire.freeze();
    let mut decoded = Vec::new();
    while wire.has_remaining() {
        assert_eq!(wire.get_u8(), 0, "uncompressed");
        let len = wire.get_u32() as usize;
        decoded.push(Frame::decode(wire.split_to(len)).unwrap());
    }
    assert_eq!(decoded, sample());
    // The same length as prost's own encoding (the fields in another
    // order, none twice).
    let expected: usize = sample().iter().map(|f| grpc(f).len()).sum();
    assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), expected);
}

#[tokio::test]
async fn a_payload_goes_out_as_the_bytes_it_came_in() {
    let frame = traced(&[1; 4096]);
    let payload = frame.payload.clone();
    let (chunks, _) = written(vec![Ok(frame)]).await;
    assert_eq!(chunks.len(), 2, "the head, then the payload");
    assert_eq!(
        chunks[1].as_ptr(),
        payload.as_ptr(),
        "the payload was copied"
    );
}

#[tokio::test]
async fn a_small_payload_goes_in_its_frames_head() {
    let small = traced(&[3; 1024]);
    let large = traced(&[4; 1025]);
    let (chunks, _) = written(vec![Ok(small.clone()), Ok(large.clone())]).await;
    assert_eq!(
        chunks.len(),
        3,
        "the small frame whole, the large one's head, its payload"
    );
    // One chunk (one DATA frame) holding the whole message.
    assert_eq!(chunks[0].len(), grpc(&small).len());
    assert_eq!(Frame::decode(&chunks[0][5..]).unwrap(), small);
    assert_eq!(chunks[2].as_ptr(), large.payload.as_ptr());
}

#[tokio::test]
async fn a_message_whole_in_one_data_frame_is_read_in_place() {
    let frame = traced(&[2; 60_000]);
    let wire = Bytes::from(grpc(&frame));
    let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    let read = read_all(FrameReader::new(body(vec![wire.clone()]), MAX))
        .await
        .unwrap();
    assert_eq!(read, vec![frame]);
    assert!(
        range.contains(&(read[0].payload.as_ptr() as usize)),
        "the payload was copied out of the DATA frame"
    );
}

#[tokio::test]
async fn frames_read_back_whatever_the_data_frames_cut() {
    let wire: Vec<u8> = sample().iter().flat_map(grpc).collect();
    // Whole; one byte at a time; and cuts of several sizes, so that
    // prefixes, messages and their starts straddle DATA frames.
    let mut cuttings: Vec<Vec<Bytes>> = vec![vec![Bytes::from(wire.clone())]];
    for size in [1, 3, 5, 7, 4096, 65_536, 65_541] {
        cuttings.push(wire.chunks(size).map(Bytes::copy_from_slice).collect());
    }
    for chunks in cuttings {
        let n = chunks.len();
        let read = read_all(FrameReader::new(body(chunks), MAX)).await.unwrap();
        assert_eq!(read, sample(), "cut into {n} DATA frames");
    }
}

#[tokio::test]
async fn trailers_end_the_frames() {
    let wire = Bytes::from(grpc(&frames::data(Bytes::from_static(b"x"))));
    let chunks = vec![
        Ok::<_, Infallible>(BodyFrame::data(wire)),
        Ok(BodyFrame::trailers(Default::default())),
    ];
    let mut reader = FrameReader::new(StreamBody::new(stream::iter(chunks)), MAX);
    assert!(reader.message().await.unwrap().is_some());
    assert!(reader.message().await.unwrap().is_none());
}

#[tokio::test]
async fn bad_messages_are_errors_of_their_kind() {
    let whole = grpc(&frames::data(Bytes::from_static(b"abc")));
    let mut compressed = whole.clone();
    compressed[0] = 1;
    let mut oversized = vec![0];
    oversized.extend_from_slice(&u32::try_from(MAX + 1).unwrap().to_be_bytes());
    let cut = whole[..whole.len() - 1].to_vec();
    // A field of wire type 7, which does not exist.
    let garbage = vec![0, 0, 0, 0, 1, 0x0f];
    for (wire, code) in [
        (compressed, Code::Unimplemented),
        (oversized, Code::OutOfRange),
        (cut, Code::Internal),
        (garbage, Code::Internal),
    ] {
        let err = read_all(FrameReader::new(body(vec![Bytes::from(wire)]), MAX))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
}

#[tokio::test]
async fn an_error_ends_the_body_with_its_status() {
    let (chunks, status) = written(vec![
        Ok(frames::data(Bytes::from_static(b"a"))),
        Err(Status::resource_exhausted("the relay is busy")),
        Ok(frames::data(Bytes::from_static(b"never"))),
    ])
    .await;
    assert_eq!(chunks.len(), 1, "the small frame, whole");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "the relay is busy");
}

#[tokio::test]
async fn a_frame_over_the_limit_is_not_written() {
    let (chunks, status) = written(vec![Ok(frames::data(Bytes::from(vec![0; MAX])))]).await;
    assert!(chunks.is_empty());
    assert_eq!(status.code(), Code::OutOfRange);
}

/// What `FrameReader::next` reads from one body of `frames`, each frame
/// with the message it may be passed on as.
async fn arrived(frames: &[Frame], extra: &[u8]) -> Vec<Outgoing> {
    let mut wire = Vec::new();
    for f in frames {
        let mut message = f.encode_to_vec();
        message.extend_from_slice(extra);
        wire.push(0);
        wire.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(&message);
    }
    let mut reader = FrameReader::new(body(vec![Bytes::from(wire)]), MAX);
    let mut out = Vec::new();
    while let Some(a) = reader.next().await.unwrap() {
        let (frame, message) = a.unchanged();
        out.push(Outgoing {
            frame,
            message,
            until_sent: None,
        });
    }
    out
}

#[tokio::test]
async fn a_frame_with_nothing_to_rewrite_goes_on_as_the_message_it_came_in() {
    let bulk = frames::data(Bytes::from(vec![5; 50_000]));
    let read = arrived(std::slice::from_ref(&bulk), b"").await;
    let message = read[0].message.clone().expect("a bulk frame is passed on");
    assert_eq!(message.len(), grpc(&bulk).len());
    let (chunks, status) = written_as(read.into_iter().map(Ok).collect()).await;
    assert_eq!(status.code(), Code::Ok);
    assert_eq!(chunks.len(), 1, "one chunk: one DATA frame");
    assert_eq!(chunks[0], Bytes::from(grpc(&bulk)));
    assert_eq!(
        chunks[0].as_ptr(),
        message.0.as_ptr(),
        "the message was copied"
    );
}

#[tokio::test]
async fn a_frame_a_relay_may_rewrite_or_one_carrying_more_is_written_anew() {
    // A hop header, timings, or bytes beyond the frame's own encoding (an
    // unknown field, 99: varint 1) are never passed on as they came.
    let mut timed = frames::data(Bytes::from_static(b"t"));
    timed.hop_timings = traced(b"").hop_timings;
    for (frame, extra) in [
        (traced(b"x"), &b""[..]),
        (timed, &b""[..]),
        (frames::data(Bytes::from_static(b"y")), &[0x98, 0x06, 1][..]),
    ] {
        let read = arrived(std::slice::from_ref(&frame), extra).await;
        assert!(read[0].message.is_none(), "{frame:?} passed on as it came");
        assert_eq!(read[0].frame, frame);
    }
}

/// A response body of `frames` (gRPC-framed, one DATA frame each) and
/// then `trailers`, if any.
fn answer(
    frames: &[Frame],
    trailers: Option<Status>,
) -> StreamBody<impl futures::Stream<Item = Result<BodyFrame<Bytes>, Infallible>> + use<>> {
    let mut chunks: Vec<_> = frames
        .iter()
        .map(|f| Ok(BodyFrame::data(Bytes::from(grpc(f)))))
        .collect();
    if let Some(status) = trailers {
        let mut map = tonic::codegen::http::HeaderMap::new();
        status.add_header(&mut map).unwrap();
        chunks.push(Ok(BodyFrame::trailers(map)));
    }
    StreamBody::new(stream::iter(chunks))
}

#[tokio::test]
async fn a_response_ends_as_its_trailers_say_after_its_frames() {
    use tonic::codegen::http::StatusCode;
    let sent = sample();
    let ok = FrameReader::response(answer(&sent, Some(Status::ok(""))), StatusCode::OK, MAX);
    assert_eq!(read_all(ok).await.unwrap(), sent);

    let mut refused = FrameReader::response(
        answer(&sent[..2], Some(Status::resource_exhausted("busy"))),
        StatusCode::OK,
        MAX,
    );
    assert_eq!(refused.message().await.unwrap().as_ref(), Some(&sent[0]));
    assert_eq!(refused.message().await.unwrap().as_ref(), Some(&sent[1]));
    let err = refused.message().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::ResourceExhausted, "busy")
    );
}

#[tokio::test]
async fn a_response_without_a_final_status_was_cut_short() {
    use tonic::codegen::http::StatusCode;
    for (http, code) in [
        (StatusCode::OK, Code::Unknown),
        (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
        (StatusCode::NOT_FOUND, Code::Unimplemented),
        (StatusCode::IM_A_TEAPOT, Code::Unknown),
    ] {
        let reader = FrameReader::response(answer(&sample(), None), http, MAX);
        let err = read_all(reader).await.unwrap_err();
        assert_eq!(err.code(), code, "HTTP {http}: {err}");
    }
    // A request's body has no final status: its end is the end.
    let request = FrameReader::new(answer(&sample(), None), MAX);
    assert_eq!(read_all(request).await.unwrap(), sample());
}

#[tokio::test]
async fn as_a_stream_it_gives_the_frames_then_the_error_once_then_ends() {
    use futures::StreamExt;
    use tonic::codegen::http::StatusCode;
    let sent = sample();
    let reader = FrameReader::response(
        answer(&sent, Some(Status::unavailable("gone"))),
        StatusCode::OK,
        MAX,
    );
    let items: Vec<_> = reader.collect().await;
    assert_eq!(items.len(), sent.len() + 1);
    for (item, frame) in items.iter().zip(&sent) {
        assert_eq!(item.as_ref().unwrap(), frame);
    }
    assert_eq!(
        items[sent.len()].as_ref().unwrap_err().code(),
        Code::Unavailable
    );
}

#[tokio::test]
async fn a_request_body_ends_with_its_last_frame_or_fails_with_its_error() {
    let outgoing = |v: Vec<Result<Frame, Status>>| {
        stream::iter(
            v.into_iter()
                .map(|r| r.map(Outgoing::from))
                .collect::<Vec<_>>(),
        )
    };
    let mut ok = FrameBody::request(outgoing(sample().into_iter().map(Ok).collect()), MAX);
    let mut data = BytesMut::new();
    while let Some(frame) = ok.frame().await {
        let chunk = frame
            .unwrap()
            .into_data()
            .expect("a request body has no trailers");
        data.extend_from_slice(&chunk);
    }
    let read = read_all(FrameReader::new(body(vec![data.freeze()]), MAX)).await;
    assert_eq!(read.unwrap(), sample());

    let mut failed = FrameBody::request(
        outgoing(vec![
            Ok(frames::data(Bytes::from_static(b"a"))),
            Err(Status::cancelled("dropped")),
        ]),
        MAX,
    );
    assert!(failed.frame().await.unwrap().unwrap().is_data());
    let err = failed.frame().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Cancelled);
    assert!(failed.frame().await.is_none());
}

#[cfg(feature = "channel")]
mod calls {
    use std::future::Ready;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tonic::body::Body;
    use tonic::codegen::Service;
    use tonic::codegen::http;
    use tonic::metadata::{MetadataMap, MetadataValue};

    use super::*;
    use crate::frame_wire::{call, encoded};

    /// A link that records the request it is called with and answers
    /// with `answer`'s frames and trailers, or with headers only.
    #[derive(Clone)]
    struct Link {
        seen: Arc<Mutex<Option<http::Request<Body>>>>,
        frames: Vec<Frame>,
        headers_only: Option<Status>,
    }

    impl Service<http::Request<Body>> for Link {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            *self.seen.lock().unwrap() = Some(request);
            let response = match &self.headers_only {
                Some(status) => status.clone().into_http(),
                None => http::Response::new(Body::new(answer(&self.frames, Some(Status::ok(""))))),
            };
            std::future::ready(Ok(response))
        }
    }

    fn link(frames: Vec<Frame>, headers_only: Option<Status>) -> Link {
        Link {
            seen: Arc::default(),
            frames,
            headers_only,
        }
    }

    #[tokio::test]
    async fn a_call_is_a_grpc_request_and_its_answer_reads_as_frames() {
        let link = link(sample(), None);
        let mut metadata = MetadataMap::new();
        metadata.insert("rex-server-id", MetadataValue::from_static("srv"));
        let sent = vec![frames::handshake(Bytes::from_static(b"message 1"))];
        let body = encoded(stream::iter(sent.clone()), MAX);
        let reader = call(link.clone(), crate::routing::OPEN_PATH, metadata, body, MAX)
            .await
            .unwrap();
        assert_eq!(read_all(reader).await.unwrap(), sample());

        let request = link.seen.lock().unwrap().take().unwrap();
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri().path(), crate::routing::OPEN_PATH);
        assert_eq!(request.version(), http::Version::HTTP_2);
        let headers = request.headers();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["rex-server-id"], "srv");
        // The request's frames as tonic's client writes them.
        let data = request.into_body().collect().await.unwrap().to_bytes();
        let read = read_all(FrameReader::new(body_of(data), MAX)).await;
        assert_eq!(read.unwrap(), sent);
    }

    fn body_of(
        data: Bytes,
    ) -> StreamBody<impl futures::Stream<Item = Result<BodyFrame<Bytes>, Infallible>>> {
        body(vec![data])
    }

    #[tokio::test]
    async fn a_refusal_in_the_answers_headers_is_the_calls_error_with_its_metadata() {
        let refusal = crate::routing::refuse(
            Code::ResourceExhausted,
            "the exec-server is busy",
            CloseReason::Busy,
        );
        let refusing = link(sample(), Some(refusal));
        let body = encoded(stream::iter(Vec::new()), MAX);
        let Err(err) = call(
            refusing,
            crate::routing::OPEN_PATH,
            MetadataMap::new(),
            body,
            MAX,
        )
        .await
        else {
            panic!("a refusal is an error");
        };
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(err.message(), "the exec-server is busy");
        assert_eq!(crate::routing::refusal(&err), Some(CloseReason::Busy));

        // Headers only, with success: a stream with no frames.
        let empty = link(Vec::new(), Some(Status::ok("")));
        let body = encoded(stream::iter(Vec::new()), MAX);
        let reader = call(
            empty,
            crate::routing::OPEN_PATH,
            MetadataMap::new(),
            body,
            MAX,
        );
        assert!(read_all(reader.await.unwrap()).await.unwrap().is_empty());
    }
}

/// Counts its drops.
struct Dropped(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn what_is_kept_until_sent_lives_as_long_as_the_frames_bytes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dropped = Arc::new(AtomicUsize::new(0));
    let kept = |frame: Frame, message| {
        Ok(Outgoing {
            frame,
            message,
            until_sent: Some(super::UntilSent::new(Dropped(Arc::clone(&dropped)))),
        })
    };
    let bulk = frames::data(Bytes::from(vec![5; 50_000]));
    let passed_on = arrived(std::slice::from_ref(&bulk), b"").await.remove(0);
    let frames = vec![
        // Passed on as it arrived: one chunk.
        kept(passed_on.frame, passed_on.message),
        // Written anew: its head, then its payload.
        kept(traced(&[1; 2000]), None),
        // Written anew with no payload: its head only.
        kept(frames::close(CloseReason::Timeout), None),
    ];
    let (chunks, status) = written_as(frames).await;
    assert_eq!(status.code(), Code::Ok);
    assert_eq!(chunks.len(), 4);
    // The body has let go of every frame, but not of what their bytes keep.
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    let mut chunks = chunks.into_iter();
    // A slice of the bytes (as HTTP/2 takes them) keeps it too.
    let first = chunks.next().unwrap().slice(10..20);
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    drop(first);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    // The rewritten frame's head keeps nothing; its payload does.
    drop(chunks.next());
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    drop(chunks.next());
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    drop(chunks.next());
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
}
