//! One connection served over HTTP/2: its streams handed to the routes as
//! tracked tasks, its keepalive, its drain, and its stream window widened
//! when a service asks ([`StreamWindow`]).

use std::future::poll_fn;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use h2::server::Builder;
use h2::{Ping, PingPong, Reason};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;
use tracing::Instrument;

use super::window::StreamWindow;
use crate::relay_link::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, STREAM_WINDOW};

/// How soon a window the peer has not yet acknowledged the last change
/// of is tried again.
const WIDEN_RETRY: Duration = Duration::from_millis(20);

/// Serves `io` until its peer closes it, it fails, a keepalive ping goes
/// unanswered, or `drain` turns true (then no new streams are taken, and
/// the open ones go on to their end).
pub(super) async fn serve<IO>(
    io: IO,
    builder: Builder,
    routes: Routes,
    info: TcpConnectInfo,
    tracker: TaskTracker,
    mut drain: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        conn = handshake => match conn {
            Ok(conn) => conn,
            Err(e) => return tracing::debug!(error = %e, "link connection ended"),
        },
        _ = drain.wait_for(|d| *d) => return,
    };
    let window = StreamWindow::new(STREAM_WINDOW);
    let mut applied = STREAM_WINDOW;
    let mut retry = pin!(tokio::time::sleep(WIDEN_RETRY));
    let mut retrying = false;
    let mut keepalive = pin!(keepalive(conn.ping_pong()));
    let mut draining = false;
    let mut unanswered = false;
    loop {
        let wanted = window.wanted();
        if wanted != applied && !retrying {
            // Refused only while the peer has yet to acknowledge the last
            // change: tried again shortly.
            match conn.set_initial_window_size(wanted) {
                Ok(()) => applied = wanted,
                Err(_) => {
                    retrying = true;
                    retry
                        .as_mut()
                        .reset(tokio::time::Instant::now() + WIDEN_RETRY);
                }
            }
        }
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    tracker.spawn(
                        super::stream::serve(
                            request,
                            respond,
                            routes.clone(),
                            info.clone(),
                            window.clone(),
                        )
                        .in_current_span(),
                    );
                }
                Some(Err(e)) => return tracing::debug!(error = %e, "link connection ended"),
                None => break,
            },
            _ = drain.wait_for(|d| *d), if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
            () = window.changed() => {}
            () = &mut retry, if retrying => retrying = false,
            () = &mut keepalive, if !unanswered => {
                unanswered = true;
                tracing::debug!("link connection ended: a keepalive ping went unanswered");
                conn.abrupt_shutdown(Reason::NO_ERROR);
            }
        }
    }
    if let Err(e) = poll_fn(|cx| conn.poll_closed(cx)).await {
        tracing::debug!(error = %e, "link connection ended");
    }
}

/// Pings the peer every [`KEEPALIVE_INTERVAL`]; returns when one goes
/// unanswered for [`KEEPALIVE_TIMEOUT`]. (While the connection fails or
/// closes it waits: the connection's own end ends it.)
async fn keepalive(pings: Option<PingPong>) {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}
