//! Settings shared by every relay link (client to relay, exec-server to
//! relay, client to a directly listening exec-server, relay to a peer relay
//! of its fleet), so that both ends of a link agree on them.

use std::time::Duration;

/// HTTP/2 keepalive interval (detects dead peers on idle links).
#[cfg(any(feature = "channel", feature = "server"))]
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a keepalive ping may go unanswered.
#[cfg(any(feature = "channel", feature = "server"))]
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-stream HTTP/2 window: bounds what one session has in flight on a
/// link, and what a relay holds unread of a session whose far side has
/// stopped reading.
#[cfg(any(feature = "channel", feature = "server"))]
pub(crate) const STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-stream HTTP/2 window of a client's link, the side that takes a
/// session's output. A client reads what arrives at once (each call's
/// output waits in its own queue, bounded by the call's output credit), so
/// a large window costs it nothing; this one is the widest a call's output
/// credit grows ([`crate::session::Limits::client`]'s `output_window_max`),
/// so that across a long path the credit, which follows the path, not
/// HTTP/2, is what limits a call (at the 1 MiB of the other links, a 50 ms
/// round trip held output to about 20 MiB/s).
pub const CLIENT_STREAM_WINDOW: u32 = 32 * 1024 * 1024;
/// Per-connection HTTP/2 window: the protocol's largest, so that it never
/// binds. Data a receiver has not yet read holds its connection's window
/// as well as its stream's; a relay that stops reading a session whose
/// client stopped reading (a frozen process, a laptop asleep) would
/// otherwise take from every other session on the same link (an
/// exec-server's, or a fleet peer's) until a few such sessions held it all
/// and the link carried nothing. Each stream's window is the bound.
#[cfg(any(feature = "channel", feature = "server"))]
pub(crate) const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// The largest HTTP/2 frame each end of a link accepts: a whole tunnel
/// message (a Noise message of up to 64 KiB and its envelope) travels as
/// one DATA frame instead of the protocol's default 16 KiB in five, so its
/// sender, the relay and its receiver handle one frame where they handled
/// five (bulk through the relay about a fifth faster: see BENCHMARKS.md).
#[cfg(any(feature = "channel", feature = "server"))]
pub(crate) const MAX_FRAME_SIZE: u32 = 128 * 1024;
/// What gRPC puts before each message on a stream (a flag and a length).
#[cfg(any(feature = "channel", feature = "server"))]
pub(crate) const GRPC_PREFIX: usize = 5;
// The largest tunnel message, with its prefix, fits one frame.
#[cfg(any(feature = "channel", feature = "server"))]
const _: () = assert!(crate::limits::MAX_GRPC_MESSAGE + GRPC_PREFIX <= MAX_FRAME_SIZE as usize);
/// Default TCP/HTTP2 connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a link's endpoint cannot be made.
#[cfg(feature = "channel")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The URL is not one.
    #[error("invalid URL: {0}")]
    Url(#[source] tonic::transport::Error),
    /// The URL is neither `http://` nor `https://`.
    #[error("unsupported scheme in {0:?} (use http:// or https://)")]
    Scheme(String),
    /// `https://`, and TLS cannot be set up (e.g. no CA certificates).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A gRPC endpoint for `url` with the link settings: no Nagle, keepalives
/// (also while idle, so a registration notices a dead relay), large windows.
/// An `https://` URL is dialled with TLS, checking the far end's
/// certificate against `tls` (its handshake bounded by `connect_timeout`);
/// an `http://` URL is plain HTTP/2. Nothing else is accepted, and an
/// `https://` link never falls back to plain.
#[cfg(feature = "channel")]
pub fn endpoint(
    url: &str,
    connect_timeout: Duration,
    tls: &crate::tls::TlsSettings,
) -> Result<tonic::transport::Endpoint, EndpointError> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let endpoint =
        tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(EndpointError::Url)?;
    let endpoint = match scheme.as_str() {
        "http" => endpoint,
        "https" => endpoint
            .tls_config(tls.client_config(connect_timeout)?)
            .map_err(|e| EndpointError::Tls(crate::tls::TlsError::Link(e)))?,
        _ => return Err(EndpointError::Scheme(url.to_owned())),
    };
    Ok(endpoint
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(MAX_FRAME_SIZE))
}

/// [`endpoint`] for a client's link: the same settings, with the larger
/// stream window of the side that takes output
/// ([`CLIENT_STREAM_WINDOW`]).
#[cfg(feature = "channel")]
pub fn client_endpoint(
    url: &str,
    connect_timeout: Duration,
    tls: &crate::tls::TlsSettings,
) -> Result<tonic::transport::Endpoint, EndpointError> {
    Ok(endpoint(url, connect_timeout, tls)?.initial_stream_window_size(Some(CLIENT_STREAM_WINDOW)))
}

/// [`endpoint`] for an exec-server's link to its relay: the same settings,
/// with each stream's window as wide as what the relay lets an
/// authenticated client have in flight
/// ([`crate::routing::MAX_CLIENT_WINDOW`] and its margin), so that a
/// client's stdin toward an exec-server far from its relay is held by the
/// call's stdin window, which follows the path, not by HTTP/2's 1 MiB
/// (which held it to about 17 MiB/s across a 50 ms round trip). An
/// exec-server reads each session's frames as they come; what a stream can
/// leave unread there is what its client sent beyond the stdin window
/// while the session's backlog was full.
#[cfg(feature = "channel")]
pub fn exec_server_endpoint(
    url: &str,
    connect_timeout: Duration,
    tls: &crate::tls::TlsSettings,
) -> Result<tonic::transport::Endpoint, EndpointError> {
    let window = crate::routing::authenticated_client_stream_window();
    Ok(endpoint(url, connect_timeout, tls)?.initial_stream_window_size(Some(window)))
}

/// [`endpoint`] for a relay's link to a peer relay of its fleet: the same
/// settings, with each stream's window as wide as the widest credit
/// ([`crate::routing::MAX_CREDIT_WINDOW`] and its margin). The dialling
/// relay grants what each session it forwarded may have sent it, from its
/// own pool, so that credit, not HTTP/2's 1 MiB, is what limits a
/// forwarded session across a long path between relays (1 MiB held one to
/// about 15 MiB/s across 50 ms).
#[cfg(feature = "channel")]
pub fn peer_endpoint(
    url: &str,
    connect_timeout: Duration,
    tls: &crate::tls::TlsSettings,
) -> Result<tonic::transport::Endpoint, EndpointError> {
    Ok(endpoint(url, connect_timeout, tls)?.initial_stream_window_size(Some(peer_stream_window())))
}

/// The stream window of a link to a peer relay: room for the widest credit
/// a session's output can be given, and its framing.
#[cfg(feature = "channel")]
fn peer_stream_window() -> u32 {
    crate::routing::stream_window_for_credit(u64::from(crate::routing::MAX_CREDIT_WINDOW))
}

/// Why a connection failed, in words a person can act on: the innermost
/// cause, preceded by the kind of TLS failure when there is one.
pub fn why(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    #[cfg(feature = "tls")]
    if let Some(failure) = crate::tls::failure_in(err) {
        return format!("TLS: {failure} ({innermost})");
    }
    innermost.to_string()
}

/// The accepted connections of `listener`, with Nagle off on each (for a
/// server that takes any connection; the services use
/// `listener::incoming`, which bounds them).
#[cfg(feature = "server")]
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
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

#[cfg(all(test, feature = "channel"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// The settings a link's dialler sends first (HTTP/2 SETTINGS, after
    /// the connection preface), as (identifier, value) pairs.
    async fn first_settings(
        endpoint: tonic::transport::Endpoint,
        listener: tokio::net::TcpListener,
    ) -> Vec<(u16, u32)> {
        let dial = tokio::spawn(async move { endpoint.connect().await });
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut preface = [0; 24];
        tcp.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut head = [0; 9];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(head[3], 0x4, "the first frame is SETTINGS");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        tcp.read_exact(&mut payload).await.unwrap();
        dial.abort();
        payload
            .chunks_exact(6)
            .map(|s| {
                (
                    u16::from_be_bytes([s[0], s[1]]),
                    u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_link_takes_whole_tunnel_messages_and_its_windows() {
        const INITIAL_WINDOW_SIZE: u16 = 0x4;
        const MAX_FRAME: u16 = 0x5;
        let tls = crate::tls::TlsSettings::default();
        let exec_server = crate::routing::authenticated_client_stream_window();
        assert!(exec_server > crate::routing::MAX_CLIENT_WINDOW);
        type Make = fn(
            &str,
            Duration,
            &crate::tls::TlsSettings,
        ) -> Result<tonic::transport::Endpoint, EndpointError>;
        let peer = peer_stream_window();
        assert!(peer > crate::routing::MAX_CREDIT_WINDOW);
        let links: [(Make, u32); 4] = [
            (endpoint, STREAM_WINDOW),
            (client_endpoint, CLIENT_STREAM_WINDOW),
            (exec_server_endpoint, exec_server),
            (peer_endpoint, peer),
        ];
        for (make, stream_window) in links {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let endpoint = make(&url, CONNECT_TIMEOUT, &tls).unwrap();
            let settings = first_settings(endpoint, listener).await;
            assert!(
                settings.contains(&(MAX_FRAME, MAX_FRAME_SIZE)),
                "{settings:?}"
            );
            assert!(
                settings.contains(&(INITIAL_WINDOW_SIZE, stream_window)),
                "{settings:?}"
            );
        }
    }
}
