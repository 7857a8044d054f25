//! Establishing a session: reach the relay (or the exec-server directly),
//! complete the Noise IK handshake, and exchange the session hello.

use std::time::SystemTime;

use opentelemetry::trace::{Span, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::envelope;
use proto::limits::MAX_GRPC_MESSAGE;
use proto::noise::{ClientHandshake, HandshakeError, SessionConfig, Transport};
use proto::pb::session::{Hello, HelloAck, envelope::Body};
use proto::pb::tunnel::tunnel_client::TunnelClient;
use proto::pb::tunnel::{CloseReason, Frame, FrameKind};
use proto::routing::SERVER_ID_HEADER;
use telemetry::{carriers, otel, spans};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::config::ClientConfig;

/// Frames queued toward the relay per session.
pub const LINK_QUEUE: usize = 32;

/// Why a session could not be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not usable.
    #[error("invalid URL {0}")]
    BadUrl(String),
    /// The relay (or exec-server) could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The relay knows no exec-server with this key's id.
    #[error("no exec-server with this key is registered at the relay (id {0})")]
    UnknownServer(String),
    /// The exec-server or relay is at a limit.
    #[error("the exec-server is busy: {0}")]
    Busy(String),
    /// The exec-server did not answer in time.
    #[error("the exec-server did not answer: {0}")]
    Unavailable(String),
    /// The exec-server does not authorize this client's key.
    #[error("the exec-server does not authorize this client key ({0})")]
    Unauthorized(String),
    /// The handshake failed (wrong server key, tampering, clock skew).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// A step did not finish in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ConnectError {
    fn from_status(status: &Status, server_id: &str, url: &str) -> Self {
        let msg = status.message().to_owned();
        match status.code() {
            Code::NotFound => Self::UnknownServer(server_id.to_owned()),
            Code::ResourceExhausted => Self::Busy(msg),
            Code::Unavailable if msg.contains("exec-server") => Self::Unavailable(msg),
            Code::Unavailable | Code::Unknown | Code::Cancelled => Self::Unreachable {
                url: url.to_owned(),
                reason: if msg.is_empty() {
                    status.code().to_string()
                } else {
                    msg
                },
            },
            Code::DeadlineExceeded => Self::Timeout("waiting for the relay"),
            _ => Self::Protocol(format!("{}: {msg}", status.code())),
        }
    }

    fn from_close(reason: i32) -> Self {
        match CloseReason::try_from(reason) {
            Ok(CloseReason::Unauthorized) => {
                Self::Unauthorized("add its public key to the exec-server's authorized keys".into())
            }
            Ok(CloseReason::HandshakeFailed) => Self::Handshake(
                "the exec-server could not complete it: its key is not the one given with --server, or the two clocks differ by more than two minutes".into(),
            ),
            Ok(CloseReason::Busy) => Self::Busy("too many sessions".into()),
            Ok(CloseReason::Timeout) => Self::Timeout("waiting for the exec-server"),
            Ok(CloseReason::PeerGone) => {
                Self::Unavailable("the exec-server went away during the handshake".into())
            }
            _ => Self::Protocol("the session was closed during the handshake".into()),
        }
    }
}

/// Connects a channel to the target.
pub async fn channel(config: &ClientConfig) -> Result<Channel, ConnectError> {
    let url = config.target.url();
    proto::link::endpoint(url, config.connect_timeout)
        .map_err(|_| ConnectError::BadUrl(url.into()))?
        .connect()
        .await
        .map_err(|e| ConnectError::Unreachable {
            url: url.to_owned(),
            reason: root_cause(&e),
        })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A session ready for the driver.
pub struct Established {
    /// The Noise transport.
    pub transport: Transport,
    /// Frames to the exec-server.
    pub outbound: mpsc::Sender<Result<Frame, Status>>,
    /// Frames from the exec-server.
    pub inbound: Streaming<Frame>,
    /// The exec-server's hello answer.
    pub hello: HelloAck,
    /// The exec-server's clock minus ours, estimated from the hello
    /// exchange (nanoseconds).
    pub clock_offset_nanos: i64,
    /// What the link goes to, for messages: "the relay" or "the
    /// exec-server".
    pub via: &'static str,
}

async fn first_frame(
    inbound: &mut Streaming<Frame>,
    url: &str,
    server_id: &str,
) -> Result<Frame, ConnectError> {
    match inbound.message().await {
        Ok(Some(f)) if f.kind == FrameKind::Close as i32 => {
            Err(ConnectError::from_close(f.close_reason))
        }
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(ConnectError::Unavailable(
            "the link closed during the handshake".into(),
        )),
        Err(s) => Err(ConnectError::from_status(&s, server_id, url)),
    }
}

/// Opens and establishes one session, recording `relay.connect`,
/// `noise.handshake` and `session.init` under `parent`.
pub async fn establish(
    config: &ClientConfig,
    channel: Channel,
    parent: &Context,
) -> Result<Established, ConnectError> {
    let tracer = opentelemetry::global::tracer("core-client");
    let server_id = config.server.server_id();
    let url = config.target.url().to_owned();

    // relay.connect: the tunnel stream is paired with the exec-server.
    let mut connect_span = tracer.start_with_context(spans::RELAY_CONNECT, parent);
    let link_cx = parent.with_remote_span_context(connect_span.span_context().clone());
    let (hs, msg1) = ClientHandshake::start(
        &config.key,
        &config.server,
        server_id.as_bytes(),
        SystemTime::now(),
        SessionConfig::default(),
    )
    .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    // Message 1 rides with the stream opening, saving a round trip.
    let first = proto::frames::handshake(msg1.into());
    tx.send(Ok(first))
        .await
        .map_err(|_| ConnectError::Protocol("link closed".into()))?;
    let frames = tokio_stream::StreamExt::filter_map(ReceiverStream::new(rx), Result::ok);
    let mut request = tonic::Request::new(frames);
    if let Ok(v) = MetadataValue::try_from(server_id.as_str()) {
        request.metadata_mut().insert(SERVER_ID_HEADER, v);
    }
    if let Some(tc) = otel::trace_context_of(&link_cx) {
        carriers::metadata::inject(&tc, request.metadata_mut());
    }
    let mut client = TunnelClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let response = client
        .open(request)
        .await
        .map_err(|s| ConnectError::from_status(&s, &server_id, &url));
    connect_span.end();
    let mut inbound = response?.into_inner();

    // noise.handshake: message 2 back.
    let mut hs_span = tracer.start_with_context(spans::NOISE_HANDSHAKE, parent);
    let f = first_frame(&mut inbound, &url, &server_id).await?;
    if f.kind != FrameKind::Handshake as i32 {
        return Err(ConnectError::Protocol(
            "expected handshake message 2".into(),
        ));
    }
    let mut transport = hs.finish(&f.payload, SystemTime::now()).map_err(|e| match e {
        HandshakeError::Decrypt => ConnectError::Handshake(
            "the exec-server's key is not the one given with --server (or the message was tampered with)".into(),
        ),
        other => ConnectError::Handshake(other.to_string()),
    })?;
    hs_span.end();

    // session.init: hello / hello-ack.
    let mut init_span = tracer.start_with_context(spans::SESSION_INIT, parent);
    let hello = Body::Hello(Hello {
        client_version: env!("CARGO_PKG_VERSION").into(),
    });
    let hello = envelope::new(0, None, hello);
    let hello_sent = hello.send_time_unix_nanos;
    let bytes = envelope::encode(&hello).map_err(|e| ConnectError::Protocol(e.to_string()))?;
    transport
        .send(&bytes)
        .map_err(|e| ConnectError::Protocol(e.to_string()))?;
    while let Some(msg) = transport
        .poll_transmit(SystemTime::now())
        .map_err(|e| ConnectError::Protocol(e.to_string()))?
    {
        tx.send(Ok(proto::frames::data(msg)))
            .await
            .map_err(|_| ConnectError::Protocol("link closed".into()))?;
    }
    let (ack, ack_sent) = loop {
        if let Some(env) = transport
            .poll_envelope()
            .map_err(|e| ConnectError::Protocol(e.to_string()))?
        {
            let env = envelope::decode(&env).map_err(|e| ConnectError::Protocol(e.to_string()))?;
            match env.body {
                Some(Body::HelloAck(ack)) => break (ack, env.send_time_unix_nanos),
                _ => {
                    return Err(ConnectError::Protocol(
                        "expected the session hello answer".into(),
                    ));
                }
            }
        }
        let f = first_frame(&mut inbound, &url, &server_id).await?;
        if f.kind != FrameKind::Data as i32 {
            return Err(ConnectError::Protocol(
                "unexpected frame during session init".into(),
            ));
        }
        transport
            .receive(&f.payload)
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
    };
    let received = proto::clock::now_unix_nanos();
    let offset = crate::session::clock_offset(hello_sent, ack_sent, received).unwrap_or(0);
    init_span.set_attribute(KeyValue::new("rex.clock_offset_ns", offset));
    init_span.set_attribute(KeyValue::new(
        "rex.rtt_ns",
        i64::try_from(received.saturating_sub(hello_sent)).unwrap_or(i64::MAX),
    ));
    init_span.end();
    Ok(Established {
        transport,
        outbound: tx,
        inbound,
        hello: ack,
        clock_offset_nanos: offset,
        via: match config.target {
            crate::Target::Relay(_) => "the relay",
            crate::Target::Direct(_) => "the exec-server",
        },
    })
}
