//! A tunnel call made by the dialling side of a link (a client's `Open`,
//! an exec-server's `Accept`, a relay's `Open` at a fleet peer): the
//! request written by the caller, the answer's frames read by a
//! [`FrameReader`] from the DATA frames they arrived in, where tonic's
//! `Streaming` would copy each into a buffer of its own first.

use std::error::Error;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::codec::{Codec, EncodeBody};
use tonic::codegen::http::{self, HeaderValue, Method, Uri, Version, header};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use super::reader::FrameReader;
use crate::pb::tunnel::Frame;

/// Calls the streaming method at `path` (`/package.Service/Method`) on
/// `service` with `metadata` and the request body `body`. The answer's
/// frames, each at most `max` bytes encoded, or the refusal the answer's
/// headers carry, or the link's failure.
pub async fn call<S>(
    mut service: S,
    path: &'static str,
    metadata: MetadataMap,
    body: Body,
    max: usize,
) -> Result<FrameReader<S::ResponseBody>, Status>
where
    S: GrpcService<Body>,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    S::ResponseBody: http_body::Body<Data = Bytes> + Unpin,
    <S::ResponseBody as http_body::Body>::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let mut request = http::Request::new(body);
    *request.method_mut() = Method::POST;
    // The link fills in the scheme and the authority.
    *request.uri_mut() = Uri::from_static(path);
    *request.version_mut() = Version::HTTP_2;
    let headers = request.headers_mut();
    *headers = metadata.into_headers();
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let response = service
        .call(request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let status = response.status();
    // An answer of headers only: a refusal, or a stream with no frames
    // whose status is already known.
    if let Some(answer) = Status::from_header_map(response.headers()) {
        if answer.code() != Code::Ok {
            return Err(answer);
        }
        return Ok(FrameReader::new(response.into_body(), max));
    }
    Ok(FrameReader::response(response.into_body(), status, max))
}

/// A request body of `frames`, each written as tonic's client writes it
/// (small frames that are ready together share a DATA frame), at most
/// `max` bytes encoded.
pub fn encoded<F>(frames: F, max: usize) -> Body
where
    F: Stream<Item = Frame> + Send + 'static,
{
    Body::new(EncodeBody::new_client(
        ProstCodec::<Frame, Frame>::default().encoder(),
        frames.map(Ok::<Frame, Status>),
        None,
        Some(max),
    ))
}
