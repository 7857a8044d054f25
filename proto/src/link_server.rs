//! Serving links: the gRPC services of the relay (or of an exec-server's
//! `--listen` port) over HTTP/2, served with the h2 crate directly so that
//! the connection's settings are chosen here and can change while it runs.
//!
//! Layout: `connection` serves one connection (its streams, keepalive,
//! drain and window); `stream` serves one stream (the request's body read
//! as HTTP/2 delivers it, the answer written within the send buffer);
//! `window` is the stream window a service may widen ([`StreamWindow`]).
//!
//! Two settings need this:
//! - The send buffer. A stream buffers at most [`SEND_BUFFER`] of its
//!   outgoing data while the socket cannot take it: what its peer cannot
//!   take waits in the relay's queue, which is counted and budgeted, and
//!   behind it in the sender's HTTP/2 window and session credit. The
//!   relay's count of a frame ends only when HTTP/2 has written it
//!   (`frame_wire::UntilSent`), so what this buffer holds is counted too.
//! - The stream window. Every connection starts with the links' 1 MiB
//!   window for each stream its peer opens: what a session whose reader
//!   stopped can leave unread here. A service that learns the connection
//!   is one whose streams are bounded otherwise (an exec-server's, whose
//!   sessions send only within the relay's credit) widens it
//!   ([`StreamWindow`]), so that across a long path the credit, which
//!   follows the path, is what limits a session, not HTTP/2. (hyper, which
//!   served the links before, sets one window for every connection it
//!   serves and never changes it.)
//!
//! Every connection is a task of this server, tracked, carrying the span
//! current when [`serve`] was called; so is every stream. At `stop` the
//! listener goes first, each connection is then told to drain (an HTTP/2
//! `GOAWAY`: no new streams, open ones go on), and [`serve`] returns once
//! they have all closed.

mod connection;
mod stream;
mod window;

pub use window::StreamWindow;

use std::future::Future;
use std::pin::pin;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::Instrument;

use crate::relay_link::{CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};

/// Most bytes of one stream's outgoing data the server buffers while the
/// socket cannot take them (hyper's default is 400 KiB): enough that a
/// stream always has data ready when the socket has room, not enough to
/// matter per stalled session. (A message is handed over whole, so a
/// stream may hold one tunnel message beyond it.)
pub const SEND_BUFFER: usize = 32 * 1024;

/// Most bytes of headers one request may carry.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Most streams a peer may have reset before the server took them (a
/// flood of opened-and-reset streams costs the server nothing beyond it).
const MAX_PENDING_RESETS: usize = 20;

/// Most streams the server may reset for a peer's errors before it closes
/// the connection.
const MAX_ERROR_RESETS: usize = 1024;

/// Serves `routes` on each connection `incoming` yields until `stop`
/// resolves, then drains the open connections and returns when the last
/// has closed. An `incoming` error is skipped (the listener's own stream
/// counts and paces them).
pub async fn serve<I, IO, E>(routes: Routes, incoming: I, stop: impl Future<Output = ()>)
where
    I: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Connected<ConnectInfo = TcpConnectInfo> + Unpin + Send + 'static,
{
    let routes = routes.prepare();
    let tracker = TaskTracker::new();
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS));
    // The services bound their own sessions; HTTP/2 does not (no stream
    // limit is set).
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    {
        let mut incoming = pin!(incoming);
        let mut stop = pin!(stop);
        loop {
            let io = tokio::select! {
                () = &mut stop => break,
                io = incoming.next() => io,
            };
            let io = match io {
                Some(Ok(io)) => io,
                Some(Err(_)) => continue,
                None => break,
            };
            let info = io.connect_info();
            tracker.spawn(
                connection::serve(
                    io,
                    builder.clone(),
                    routes.clone(),
                    info,
                    tracker.clone(),
                    drain_rx.clone(),
                )
                .in_current_span(),
            );
        }
        // The listener is dropped here: the port closes before the drain.
    }
    let _ = drain_tx.send(true);
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::net::{TcpListener, TcpSocket};
    use tokio_util::sync::CancellationToken;
    use tonic::codegen::{Service, http};
    use tonic::server::NamedService;

    use super::*;

    const CHUNK: usize = 16 * 1024;

    /// A gRPC call's request head for `path` on the test server.
    fn call(path: &str) -> http::Request<()> {
        http::Request::post(format!("http://127.0.0.1{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    }

    /// Answers every call with endless output, counting what the server
    /// took of it, and notes the caller's address as the call saw it.
    #[derive(Clone)]
    struct Flood {
        taken: Arc<AtomicUsize>,
        peer: Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    }

    impl NamedService for Flood {
        const NAME: &'static str = "test.Flood";
    }

    impl Service<http::Request<tonic::body::Body>> for Flood {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            *self.peer.lock().unwrap() = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            let taken = Arc::clone(&self.taken);
            let chunks = futures::stream::repeat_with(move || {
                taken.fetch_add(CHUNK, Ordering::Relaxed);
                Ok::<_, tonic::Status>(http_body::Frame::data(Bytes::from(vec![0; CHUNK])))
            });
            let body = tonic::body::Body::new(http_body_util::StreamBody::new(chunks));
            std::future::ready(Ok(http::Response::new(body)))
        }
    }

    /// What the flood has taken once it stops taking more.
    async fn settled(taken: &AtomicUsize) -> usize {
        let mut last = usize::MAX;
        let mut same = 0;
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let now = taken.load(Ordering::Relaxed);
            // Settled only once something was taken (a slow machine may
            // not have polled the body at all yet).
            same = if now == last && now > 0 { same + 1 } else { 0 };
            if same == 8 {
                return now;
            }
            last = now;
        }
        panic!("the server never stopped taking output ({last} bytes)");
    }

    #[tokio::test]
    async fn a_stream_whose_reader_stopped_holds_at_most_the_send_buffer() {
        // Small socket buffers (an accepted socket takes its listener's),
        // so what the server takes beyond them is what it buffers itself.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = socket.listen(8).unwrap();
        let addr = listener.local_addr().unwrap();
        let taken = Arc::new(AtomicUsize::new(0));
        let peer = Arc::new(std::sync::Mutex::new(None));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            Routes::new(Flood {
                taken: Arc::clone(&taken),
                peer: Arc::clone(&peer),
            }),
            crate::relay_link::incoming(listener),
            stop.clone().cancelled_owned(),
        ));

        // A client with windows wide open that reads the answer's headers,
        // then nothing more: its connection is never polled again.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let client_addr = tcp.local_addr().unwrap();
        let (mut client, conn) = h2::client::Builder::new()
            .initial_window_size(64 << 20)
            .initial_connection_window_size(64 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        let mut conn = Box::pin(conn);
        let (answer, _) = client.send_request(call("/test.Flood/Go"), true).unwrap();
        let answer = tokio::select! {
            a = answer => a.unwrap(),
            r = &mut conn => panic!("connection ended: {r:?}"),
        };
        assert_eq!(answer.status(), 200);
        // The connection's address reaches the call (per-source limits
        // read it there).
        assert_eq!(*peer.lock().unwrap(), Some(client_addr));

        let held = settled(&taken).await;
        // With hyper's default send buffer the server took 432 KiB here;
        // with this one, 64 KiB: the buffer, the sockets', h2's frame being
        // written and the chunk in hand.
        assert!(
            held <= SEND_BUFFER + 4 * CHUNK,
            "the server took {held} bytes of a stream nobody reads"
        );
        assert!(held >= CHUNK, "nothing was sent ({held} bytes)");

        drop(conn);
        stop.cancel();
        server.await.unwrap();
    }

    /// Notes the size of each DATA frame of every call's request body,
    /// and answers once the body has ended; a call to `/test.Frames/Widen`
    /// first widens its connection's stream window to `.1` bytes.
    #[derive(Clone, Default)]
    struct Frames(Arc<std::sync::Mutex<Vec<usize>>>, u32);

    impl NamedService for Frames {
        const NAME: &'static str = "test.Frames";
    }

    impl Service<http::Request<tonic::body::Body>> for Frames {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            if req.uri().path() == "/test.Frames/Widen" {
                req.extensions()
                    .get::<StreamWindow>()
                    .unwrap()
                    .widen(self.1);
            }
            let sizes = Arc::clone(&self.0);
            Box::pin(async move {
                let mut body = req.into_body();
                while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                    if let Some(data) = frame.data_ref() {
                        sizes.lock().unwrap().push(data.len());
                    }
                }
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    #[tokio::test]
    async fn a_whole_tunnel_message_arrives_as_one_frame() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frames = Frames::default();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            Routes::new(frames.clone()),
            crate::relay_link::incoming(listener),
            stop.clone().cancelled_owned(),
        ));

        // The largest message a tunnel stream carries, with its gRPC
        // prefix.
        let message = crate::limits::MAX_GRPC_MESSAGE + crate::relay_link::GRPC_PREFIX;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(conn);
        // A first call, answered, so that the server's settings are in
        // force (before them a dialler sends at the protocol's defaults).
        let mut client = client.ready().await.unwrap();
        let (answer, _) = client.send_request(call("/test.Frames/Go"), true).unwrap();
        assert_eq!(answer.await.unwrap().status(), 200);
        let mut client = client.ready().await.unwrap();
        let (answer, mut send) = client.send_request(call("/test.Frames/Go"), false).unwrap();
        send.reserve_capacity(message);
        send.send_data(Bytes::from(vec![7; message]), true).unwrap();
        assert_eq!(answer.await.unwrap().status(), 200);

        // h2 splits what it sends at the frame size its peer allows (16 KiB
        // unless told more); the window (1 MiB) does not split it here.
        assert_eq!(*frames.0.lock().unwrap(), vec![message]);
        conn.abort();
        stop.cancel();
        server.await.unwrap();
    }

    /// The send window the server gives a new stream of `client`'s
    /// connection: what the stream may send of far more than any window,
    /// once it is at least `least` (a SETTINGS change may arrive after the
    /// stream opened; waited for as HTTP/2 assigns capacity, not by time).
    async fn window_of_a_new_stream(
        client: h2::client::SendRequest<Bytes>,
        path: &str,
        least: usize,
    ) -> usize {
        let mut client = client.ready().await.unwrap();
        let (_answer, mut send) = client.send_request(call(path), false).unwrap();
        send.reserve_capacity(64 << 20);
        while send.capacity() < least {
            let more = std::future::poll_fn(|cx| send.poll_capacity(cx));
            tokio::time::timeout(Duration::from_secs(30), more)
                .await
                .expect("no capacity assigned")
                .unwrap()
                .unwrap();
        }
        send.capacity()
    }

    #[tokio::test]
    async fn a_service_widens_the_stream_window_of_its_connection_only() {
        const WIDE: u32 = 8 << 20;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            Routes::new(Frames(Arc::default(), WIDE)),
            crate::relay_link::incoming(listener),
            stop.clone().cancelled_owned(),
        ));
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (client, conn) = h2::client::Builder::new()
                .initial_window_size(64 << 20)
                .initial_connection_window_size(1 << 30)
                .max_send_buffer_size(64 << 20)
                .handshake::<_, Bytes>(tcp)
                .await
                .unwrap();
            (client, tokio::spawn(conn))
        };
        let (widened, widened_conn) = connect().await;
        let (other, other_conn) = connect().await;

        // Before any widening: the links' window.
        let links = STREAM_WINDOW as usize;
        assert_eq!(
            window_of_a_new_stream(other.clone(), "/test.Frames/Other", links).await,
            links
        );
        // A call that widens: the streams of its connection get the wider
        // window.
        let mut ask = widened.clone().ready().await.unwrap();
        let (answer, _) = ask.send_request(call("/test.Frames/Widen"), true).unwrap();
        assert_eq!(answer.await.unwrap().status(), 200);
        assert_eq!(
            window_of_a_new_stream(widened.clone(), "/test.Frames/Other", WIDE as usize).await,
            WIDE as usize
        );
        // The other connection keeps the links' window (looked at after a
        // call it has answered since).
        let mut again = other.clone().ready().await.unwrap();
        let (answer, _) = again.send_request(call("/test.Frames/Go"), true).unwrap();
        assert_eq!(answer.await.unwrap().status(), 200);
        assert_eq!(
            window_of_a_new_stream(other, "/test.Frames/Other", links).await,
            links
        );

        widened_conn.abort();
        other_conn.abort();
        stop.cancel();
        server.await.unwrap();
    }
}
