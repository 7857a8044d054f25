//! Serving links: the gRPC services of the relay (or of an exec-server's
//! `--listen` port) over HTTP/2, with hyper's connection settings chosen
//! here rather than left to a server builder that hides them.
//!
//! The setting that needs this is the send buffer. hyper buffers up to
//! 400 KiB of each stream's outgoing data by default whenever the socket
//! cannot take it, a copy nothing counts. Here a stream buffers at most
//! [`SEND_BUFFER`]: what its peer cannot take waits in the relay's queue,
//! which is counted and budgeted, and behind it in the sender's HTTP/2
//! window and session credit. The relay's count of a frame ends only when
//! HTTP/2 has written it (`frame_wire::UntilSent`), so what this buffer
//! holds is counted too. (Of what a session whose reader stopped
//! holds at a relay, most is now what its sender could still push into the
//! relay's receive window: see the security notes.)
//!
//! Every connection is a task of this server, tracked, carrying the span
//! current when [`serve`] was called; so is every stream task hyper
//! starts. At `stop` the listener goes first, each connection is then told
//! to drain (an HTTP/2 `GOAWAY`: no new streams, open ones go on), and
//! [`serve`] returns once they have all closed.

use std::future::Future;
use std::pin::pin;

use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::Instrument;

use crate::relay_link::{
    CONNECTION_WINDOW, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_FRAME_SIZE, STREAM_WINDOW,
};

/// Most bytes of one stream's outgoing data the server buffers while the
/// socket cannot take them (hyper's default is 400 KiB): enough that a
/// stream always has data ready when the socket has room, not enough to
/// matter per stalled session. (A message is handed over whole, so a
/// stream may hold one tunnel message beyond it.)
pub const SEND_BUFFER: usize = 32 * 1024;

/// Spawns hyper's stream tasks as tracked tasks in the current span.
#[derive(Clone)]
struct Tracked(TaskTracker);

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future.in_current_span());
    }
}

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
    let mut builder = hyper::server::conn::http2::Builder::new(Tracked(tracker.clone()));
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // The services bound their own sessions; HTTP/2 does not.
        .max_concurrent_streams(None)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_send_buf_size(SEND_BUFFER)
        .max_frame_size(MAX_FRAME_SIZE);
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
            let routes = routes.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                routes.clone().call(req)
            });
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let mut drain = drain_rx.clone();
            tracker.spawn(
                async move {
                    let mut conn = pin!(conn);
                    tokio::select! {
                        result = &mut conn => return log_end(result),
                        _ = drain.wait_for(|d| *d) => {}
                    }
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await);
                }
                .in_current_span(),
            );
        }
        // The listener is dropped here: the port closes before the drain.
    }
    let _ = drain_tx.send(true);
    tracker.close();
    tracker.wait().await;
}

/// A connection's error ends that connection only: it is logged at debug.
fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "link connection ended");
    }
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
    use tonic::server::NamedService;

    use super::*;

    const CHUNK: usize = 16 * 1024;

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

    impl Service<hyper::Request<tonic::body::Body>> for Flood {
        type Response = hyper::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: hyper::Request<tonic::body::Body>) -> Self::Future {
            *self.peer.lock().unwrap() = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            let taken = Arc::clone(&self.taken);
            let chunks = futures::stream::repeat_with(move || {
                taken.fetch_add(CHUNK, Ordering::Relaxed);
                Ok::<_, tonic::Status>(hyper::body::Frame::data(Bytes::from(vec![0; CHUNK])))
            });
            let body = tonic::body::Body::new(http_body_util::StreamBody::new(chunks));
            std::future::ready(Ok(hyper::Response::new(body)))
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
        let request = hyper::Request::post("http://127.0.0.1/test.Flood/Go")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (answer, _) = client.send_request(request, true).unwrap();
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

    /// Notes the size of each DATA frame of every call's request body.
    #[derive(Clone, Default)]
    struct Frames(Arc<std::sync::Mutex<Vec<usize>>>);

    impl NamedService for Frames {
        const NAME: &'static str = "test.Frames";
    }

    impl Service<hyper::Request<tonic::body::Body>> for Frames {
        type Response = hyper::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: hyper::Request<tonic::body::Body>) -> Self::Future {
            let sizes = Arc::clone(&self.0);
            Box::pin(async move {
                let mut body = req.into_body();
                while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                    if let Some(data) = frame.data_ref() {
                        sizes.lock().unwrap().push(data.len());
                    }
                }
                Ok(hyper::Response::new(tonic::body::Body::empty()))
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
        let request = || {
            hyper::Request::post("http://127.0.0.1/test.Frames/Go")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap()
        };
        // A first call, answered, so that the server's settings are in
        // force (before them a dialler sends at the protocol's defaults).
        let mut client = client.ready().await.unwrap();
        let (answer, _) = client.send_request(request(), true).unwrap();
        assert_eq!(answer.await.unwrap().status(), 200);
        let mut client = client.ready().await.unwrap();
        let (answer, mut send) = client.send_request(request(), false).unwrap();
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
}
