//! The light receivers' gRPC service, for benchmarks: a benchmark's
//! receiver shares the machine with what it measures; a collector would
//! not. Each request is taken as one of two [`Taken`] forms:
//!
//! - [`Ids`] (counting): each export request is decoded for its spans'
//!   trace ids only (every other field is skipped, not copied out), and
//!   the spans are counted per trace.
//! - [`Bytes`] (deferred): each request is kept as the bytes it came as,
//!   decoded only when someone asks for the spans (after the timed part of
//!   a benchmark, not during it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
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

/// The OTLP trace service, each request taken as a `T` and handed to `C`.
pub(crate) struct LightServer<C, T> {
    taker: Arc<C>,
    taken: PhantomData<fn() -> T>,
}

impl<C, T> LightServer<C, T> {
    /// A service handing each request, as a `T`, to `taker`.
    pub(crate) fn new(taker: Arc<C>) -> Self {
        Self {
            taker,
            taken: PhantomData,
        }
    }
}

impl<C, T> Clone for LightServer<C, T> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.taker))
    }
}

impl<C, T> NamedService for LightServer<C, T> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<C, T, B> Service<http::Request<B>> for LightServer<C, T>
where
    C: Takes<T>,
    T: Taken,
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
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(LightCodec::<T>(PhantomData))
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

/// What a request is taken as: decoded from its (decompressed) bytes.
pub(crate) trait Taken: Sized + Send + 'static {
    /// Takes the request in `src`.
    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl Taken for Ids {
    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        Ids::decode(src)
            .map_err(|e| Status::invalid_argument(format!("not an OTLP export request: {e}")))
    }
}

impl Taken for Bytes {
    fn take(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let len = src.remaining();
        Ok(src.copy_to_bytes(len))
    }
}

/// Takes each request as a `T`; encodes the (empty) answer.
struct LightCodec<T>(PhantomData<fn() -> T>);

impl<T: Taken> Codec for LightCodec<T> {
    type Encode = ExportTraceServiceResponse;
    type Decode = T;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        Self(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self(PhantomData)
    }
}

impl<T> Encoder for LightCodec<T> {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

impl<T: Taken> Decoder for LightCodec<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        T::take(src).map(Some)
    }
}
