//! The light receivers' gRPC service, for benchmarks: a benchmark's
//! receiver shares the machine with what it measures; a collector would
//! not. Two codecs:
//!
//! - [`IdsCodec`] (counting): each export request is decoded for its
//!   spans' trace ids only (every other field is skipped, not copied out),
//!   and the spans are counted per trace.
//! - [`RawCodec`] (deferred): each request is kept as the bytes it came
//!   as, decoded only when someone asks for the spans (after the timed
//!   part of a benchmark, not during it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body as HttpBody, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// The export method's path.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `ExportTraceServiceRequest`, its spans' trace ids only.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Ids {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<IdsResource>,
}

/// `ResourceSpans`, its scopes only.
#[derive(Clone, PartialEq, Message)]
struct IdsResource {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<IdsScope>,
}

/// `ScopeSpans`, its spans only.
#[derive(Clone, PartialEq, Message)]
struct IdsScope {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<IdsSpan>,
}

/// `Span`, its trace id only.
#[derive(Clone, PartialEq, Message)]
struct IdsSpan {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
}

impl Ids {
    /// Each span's trace id, in order.
    pub(crate) fn trace_ids(&self) -> impl Iterator<Item = &[u8]> {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.trace_id.as_slice())
    }
}

/// What the service does with each request, as its codec decoded it into
/// a `T` (an error status rejects it).
pub(crate) trait Takes<T>: Send + Sync + 'static {
    /// Takes one request, which came with `headers`.
    fn take(&self, request: T, headers: &http::HeaderMap) -> Result<(), Status>;
}

/// Adds `ids` to `counts`.
pub(crate) fn add(counts: &Mutex<HashMap<Vec<u8>, usize>>, ids: &Ids) {
    let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
    for id in ids.trace_ids() {
        match counts.get_mut(id) {
            Some(n) => *n += 1,
            None => {
                counts.insert(id.to_vec(), 1);
            }
        }
    }
}

/// The OTLP trace service, each request decoded by the codec `K` and
/// handed to `C`.
pub(crate) struct LightServer<C, K> {
    taker: Arc<C>,
    codec: K,
}

impl<C, K> LightServer<C, K> {
    /// A service handing what `codec` decodes to `taker`.
    pub(crate) fn new(taker: Arc<C>, codec: K) -> Self {
        Self { taker, codec }
    }
}

impl<C, K: Clone> Clone for LightServer<C, K> {
    fn clone(&self) -> Self {
        Self {
            taker: Arc::clone(&self.taker),
            codec: self.codec.clone(),
        }
    }
}

impl<C, K> NamedService for LightServer<C, K> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<C, K, B> Service<http::Request<B>> for LightServer<C, K>
where
    C: Takes<K::Decode>,
    K: Codec<Encode = ExportTraceServiceResponse> + Clone + Send + 'static,
    K::Decode: Send + 'static,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT {
            return Box::pin(async {
                Ok(Status::unimplemented("not an OTLP trace export").into_http())
            });
        }
        let service = Export(Arc::clone(&self.taker));
        let codec = self.codec.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(codec)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
            Ok(grpc.unary(service, req).await)
        })
    }
}

/// One export, taken.
struct Export<C>(Arc<C>);

impl<T: Send + 'static, C: Takes<T>> UnaryService<T> for Export<C> {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<T>) -> Self::Future {
        let taker = Arc::clone(&self.0);
        Box::pin(async move {
            let headers = request.metadata().clone().into_headers();
            taker.take(request.into_inner(), &headers)?;
            Ok(Response::new(ExportTraceServiceResponse::default()))
        })
    }
}

/// Decodes [`Ids`]; encodes the (empty) answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdsCodec;

impl Codec for IdsCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Ids;
    type Encoder = IdsCodec;
    type Decoder = IdsCodec;

    fn encoder(&mut self) -> Self::Encoder {
        IdsCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        IdsCodec
    }
}

impl Encoder for IdsCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        encode_answer(item, dst)
    }
}

/// Encodes the (empty) answer to an export.
fn encode_answer(item: ExportTraceServiceResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
    item.encode(dst)
        .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
}

impl Decoder for IdsCodec {
    type Item = Ids;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ids::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not an OTLP export request: {e}")))
    }
}

/// Keeps each request as its bytes; encodes the (empty) answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        encode_answer(item, dst)
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
