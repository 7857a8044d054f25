//! Settings shared by every relay link (client to relay, exec-server to
//! relay, client to a directly listening exec-server), so that both ends of
//! a link agree on them.

use std::time::Duration;

/// HTTP/2 keepalive interval (detects dead peers on idle links).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a keepalive ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-stream HTTP/2 window: bounds what one session has in flight.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-connection HTTP/2 window.
pub const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Default TCP/HTTP2 connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC endpoint for `url` with the link settings: no Nagle, keepalives
/// (also while idle, so a registration notices a dead relay), large windows.
#[cfg(feature = "channel")]
pub fn endpoint(
    url: &str,
    connect_timeout: Duration,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW)))
}

/// The accepted connections of `listener`, with Nagle off on each (the
/// server builder's own setting only applies to listeners it binds itself).
#[cfg(feature = "server")]
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A gRPC server builder with the link settings.
#[cfg(feature = "server")]
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
}

/// The sending half of a tunnel stream, as both ends hold it.
pub type FrameSender = tokio::sync::mpsc::Sender<Result<crate::pb::tunnel::Frame, tonic::Status>>;

/// Ends a session cleanly: sends what the transport still has pending,
/// then its authenticated close with `reason`. Best effort: a link that is
/// already gone (or a dead transport) ends it quietly.
pub async fn close_session(
    transport: &mut crate::noise::Transport,
    outbound: &FrameSender,
    reason: &str,
) {
    let Ok(messages) = transport.flush_and_close(reason, std::time::Instant::now()) else {
        return;
    };
    for msg in messages {
        if outbound.send(Ok(crate::frames::data(msg))).await.is_err() {
            return;
        }
    }
}
