//! One stream of a served connection: its request handed to the routes
//! with a body read straight from HTTP/2, and the answer written back
//! within the stream's send buffer.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http_body::{Body, Frame};
use tonic::codegen::{Service, http};
use tonic::transport::server::TcpConnectInfo;

use super::window::StreamWindow;

/// The body of a request as HTTP/2 delivers it: each DATA frame as it
/// arrived, its room in the stream's window given back as it is taken,
/// then the trailers.
struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Taken: its sender may fill the room again. (Only an
                    // error of a stream already gone can come of it.)
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// Serves one stream: the call, then its answer, until either is done or
/// the peer resets the stream. The request carries the connection's
/// address and its [`StreamWindow`].
pub(super) async fn serve<S>(
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    mut routes: S,
    info: TcpConnectInfo,
    window: StreamWindow,
) where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
{
    let (mut parts, recv) = request.into_parts();
    parts.extensions.insert(info);
    parts.extensions.insert(window);
    let body = tonic::body::Body::new(RecvBody {
        recv,
        data_done: false,
    });
    let call = routes.call(http::Request::from_parts(parts, body));
    // A call the peer gives up on before it is answered is dropped.
    let response = tokio::select! {
        answer = call => match answer {
            Ok(answer) => answer,
            Err(never) => match never {},
        },
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let (parts, body) = response.into_parts();
    let end = body.is_end_stream();
    match respond.send_response(http::Response::from_parts(parts, ()), end) {
        Ok(send) if !end => pipe(body, send).await,
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "a link stream's answer could not be sent"),
    }
}

/// What comes next while an answer is written.
enum Next {
    Frame(Option<Result<Frame<Bytes>, tonic::Status>>),
    Reset,
}

/// Writes `body` to `send`, taking a frame from it only once the stream
/// has room to send (so that what waits in HTTP/2 is at most its send
/// buffer and the frame in hand).
async fn pipe(mut body: tonic::body::Body, mut send: SendStream<Bytes>) {
    loop {
        send.reserve_capacity(1);
        while send.capacity() == 0 {
            match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                // Reset, or no longer sending.
                Some(Err(_)) | None => return,
            }
        }
        let next = poll_fn(|cx| {
            if send.poll_reset(cx).is_ready() {
                return Poll::Ready(Next::Reset);
            }
            Pin::new(&mut body).poll_frame(cx).map(Next::Frame)
        })
        .await;
        let frame = match next {
            Next::Reset => return,
            Next::Frame(None) => {
                // Ended without trailers: an empty last frame ends it.
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Next::Frame(Some(Err(e))) => {
                tracing::debug!(code = ?e.code(), "a link stream's answer failed");
                send.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
            Next::Frame(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if send.send_data(data, end).is_err() || end {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    let _ = send.send_trailers(trailers);
                    return;
                }
            }
        }
    }
}
