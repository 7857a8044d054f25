//! The tunnel streams the relay serves (`Tunnel/Open`, `Registry/Accept`),
//! read and written without tonic's codec ([`proto::frame_wire`]): each
//! frame's payload passes from one HTTP/2 stream to the other as the bytes
//! it arrived as. The other methods (`Registry/Register`, unknown ones) go
//! to the tonic services as before.
//!
//! - [`Inbound`]: the frames one half of a session sends the relay, from a
//!   stream it serves or from a fleet peer it dialled (called with
//!   [`proto::frame_wire::call`], its frames passed on as they arrived
//!   too).
//! - [`Raw`]: a tonic service with its tunnel method served here.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use proto::frame_wire::{FrameBody, FrameReader, Message, Outgoing};
use proto::limits::MAX_GRPC_MESSAGE;
use proto::pb::tunnel::Frame;
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderValue, header};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

/// The frames the relay sends one half of a session, each written anew or
/// passed on as the message it arrived in.
pub(crate) type FrameStream =
    Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send + 'static>>;

/// The frames one half of a session sends the relay.
pub(crate) enum Inbound {
    /// Read where it arrived: a stream this relay serves (a client's
    /// `Open`, an exec-server's `Accept`), or the answer of a fleet peer
    /// this relay forwarded a session to.
    Wire(FrameReader<Body>),
    /// A stream read by tonic's codec: a tunnel method reached through
    /// tonic's service.
    Tonic(Streaming<Frame>),
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Wire(_) => "Inbound::Wire",
            Self::Tonic(_) => "Inbound::Tonic",
        })
    }
}

impl Inbound {
    /// The next frame; `None` once the stream has ended.
    pub(crate) async fn message(&mut self) -> Result<Option<Frame>, Status> {
        match self {
            Self::Wire(reader) => reader.message().await,
            Self::Tonic(stream) => stream.message().await,
        }
    }

    /// [`Self::message`], with the message it arrived in when that can be
    /// passed on for it ([`proto::frame_wire::Arrived::unchanged`]).
    pub(crate) async fn next(&mut self) -> Result<Option<(Frame, Option<Message>)>, Status> {
        match self {
            Self::Wire(reader) => Ok(reader.next().await?.map(|a| a.unchanged())),
            Self::Tonic(stream) => Ok(stream.message().await?.map(|f| (f, None))),
        }
    }
}

/// A tunnel method's handler: the request's frames in, the frames toward
/// its sender out.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    /// Serves one stream.
    fn call(
        &self,
        request: Request<Inbound>,
    ) -> impl Future<Output = Result<Response<FrameStream>, Status>> + Send;
}

/// The tonic service `S`, with its method at `path` served by `H` here.
#[derive(Clone)]
pub(crate) struct Raw<S, H> {
    tonic: S,
    path: &'static str,
    handler: H,
}

impl<S, H> Raw<S, H> {
    /// `tonic`, with `path` (`/package.Service/Method`) served by `handler`.
    pub(crate) fn new(tonic: S, path: &'static str, handler: H) -> Self {
        Self {
            tonic,
            path,
            handler,
        }
    }
}

impl<S: NamedService, H> NamedService for Raw<S, H> {
    const NAME: &'static str = S::NAME;
}

impl<S, H> Service<http::Request<Body>> for Raw<S, H>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    H: Handler,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != self.path {
            let mut tonic = self.tonic.clone();
            return Box::pin(async move {
                std::future::poll_fn(|cx| tonic.poll_ready(cx)).await?;
                tonic.call(req).await
            });
        }
        let handler = self.handler.clone();
        Box::pin(async move {
            let request = Request::from_http(
                req.map(|body| Inbound::Wire(FrameReader::new(body, MAX_GRPC_MESSAGE))),
            );
            Ok(match handler.call(request).await {
                Ok(response) => respond(response),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// The HTTP response of a served stream: its metadata, then its frames.
fn respond(response: Response<FrameStream>) -> http::Response<Body> {
    let (metadata, frames, _) = response.into_parts();
    let mut http = http::Response::new(Body::new(FrameBody::new(frames, MAX_GRPC_MESSAGE)));
    *http.headers_mut() = metadata.into_headers();
    http.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    http
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::stream;
    use proto::frames;
    use tonic::Code;

    use super::*;

    /// Answers each stream with the frames it read, in order, once it
    /// has ended; refuses one without `x-server`.
    #[derive(Clone)]
    struct Echo;

    impl Handler for Echo {
        async fn call(&self, request: Request<Inbound>) -> Result<Response<FrameStream>, Status> {
            let server = request
                .metadata()
                .get("x-server")
                .cloned()
                .ok_or_else(|| Status::invalid_argument("no server"))?;
            let mut inbound = request.into_inner();
            let mut frames = Vec::new();
            while let Some(frame) = inbound.message().await? {
                frames.push(Ok(Outgoing::from(frame)));
            }
            let mut response = Response::new(Box::pin(stream::iter(frames)) as FrameStream);
            response.metadata_mut().insert("x-server", server);
            Ok(response)
        }
    }

    /// Stands for tonic's service: marks what reached it.
    #[derive(Clone)]
    struct Tonic;

    impl Service<http::Request<Body>> for Tonic {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            Box::pin(async { Ok(Status::unimplemented("tonic's").into_http()) })
        }
    }

    fn request(
        path: &str,
        frames: Vec<Frame>,
        server: Option<&'static str>,
    ) -> http::Request<Body> {
        let frames = frames.into_iter().map(|f| Ok(Outgoing::from(f)));
        let body = FrameBody::new(stream::iter(frames), MAX_GRPC_MESSAGE);
        let mut req = http::Request::new(Body::new(body));
        *req.uri_mut() = path.parse().unwrap();
        if let Some(s) = server {
            req.headers_mut()
                .insert("x-server", HeaderValue::from_static(s));
        }
        req
    }

    fn frames() -> Vec<Frame> {
        vec![
            frames::handshake(Bytes::from_static(b"message 1")),
            frames::data(Bytes::from(vec![9; 65_000])),
            frames::data(Bytes::from_static(b"x")),
        ]
    }

    #[tokio::test]
    async fn its_path_is_served_here_with_metadata_and_frames_both_ways() {
        let mut raw = Raw::new(Tonic, "/p.S/Open", Echo);
        let response = raw
            .call(request("/p.S/Open", frames(), Some("abc")))
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers()["x-server"], "abc");
        let mut reader = FrameReader::new(response.into_body(), MAX_GRPC_MESSAGE);
        let mut echoed = Vec::new();
        while let Some(frame) = reader.message().await.unwrap() {
            echoed.push(frame);
        }
        assert_eq!(echoed, frames());
    }

    #[tokio::test]
    async fn a_refusal_is_a_grpc_status_and_other_paths_go_to_tonic() {
        let mut raw = Raw::new(Tonic, "/p.S/Open", Echo);
        let refused = raw
            .call(request("/p.S/Open", frames(), None))
            .await
            .unwrap();
        let status = Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "no server")
        );
        let other = raw
            .call(request("/p.S/Other", frames(), Some("abc")))
            .await
            .unwrap();
        let status = Status::from_header_map(other.headers()).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unimplemented, "tonic's")
        );
    }
}
