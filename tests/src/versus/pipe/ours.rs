//! Ours: Noise transport messages from a client, through a relay in this
//! process, to the [`responder`](super::responder).
//!
//! The client side opens the tunnel stream as the client library does (the
//! handshake message riding on the stream's opening, then the session
//! hello), with the project's own Noise code; the bytes then go out through
//! its [`Transport`] as envelopes of [`CHUNK`] bytes, one full-size record
//! each.

use std::time::{Duration, Instant, SystemTime};

use proto::envelope;
use proto::keys::{PublicKey, StaticKeypair};
use proto::limits::MAX_GRPC_MESSAGE;
use proto::noise::{ClientHandshake, SessionConfig, Transport, TransportError};
use proto::pb::session::{Hello, envelope::Body};
use proto::pb::tunnel::tunnel_client::TunnelClient;
use proto::pb::tunnel::{Frame, FrameKind};
use proto::relay_link::FrameSender;
use proto::routing::SERVER_ID_HEADER;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::pattern::{CHUNK, Pattern};
use super::responder::Responder;
use crate::stack::TestRelay;

/// How long the responder's count may take to arrive once everything is
/// sent (only what the queues hold is still in flight then).
const REPORT_WAIT: Duration = Duration::from_secs(60);

/// One pushed round of ours.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pushed {
    /// First byte handed to the transport until the responder had
    /// decrypted the last.
    pub took: Duration,
    /// Noise messages the responder received (the close included).
    pub messages: u64,
    /// The largest of them, in bytes.
    pub largest: usize,
}

/// The relay, the registered responder, and a client channel to the relay.
pub(super) struct NoisePipe {
    relay: TestRelay,
    responder: Responder,
    key: StaticKeypair,
    server: PublicKey,
    channel: Channel,
    pattern: Pattern,
}

/// An open session: the transport and the link's two halves.
struct Session {
    transport: Transport,
    outbound: FrameSender,
    inbound: Streaming<Frame>,
}

async fn next_frame(inbound: &mut Streaming<Frame>) -> Result<Frame, String> {
    match inbound.message().await {
        Ok(Some(f)) if f.kind == FrameKind::Close as i32 => {
            Err(format!("ours: closed in the clear ({})", f.close_reason))
        }
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err("ours: the link ended during set-up".into()),
        Err(status) => Err(format!("ours: link failed: {status}")),
    }
}

/// Opens a session as the client library does: message 1 rides on the
/// stream's opening, then message 2, then the session hello and its answer.
async fn open(
    channel: Channel,
    key: &StaticKeypair,
    server: &PublicKey,
) -> Result<Session, String> {
    let noise = |e: TransportError| format!("ours: {e}");
    let route = server.server_id();
    let (hs, msg1) = ClientHandshake::start(
        key,
        server,
        route.as_bytes(),
        SystemTime::now(),
        SessionConfig::default(),
    )
    .map_err(|e| format!("ours: {e}"))?;
    let (outbound, rx) = mpsc::channel(32);
    outbound
        .send(Ok(proto::frames::handshake(msg1.into())))
        .await
        .map_err(|_| "ours: link closed".to_owned())?;
    let frames = tokio_stream::StreamExt::filter_map(ReceiverStream::new(rx), Result::ok);
    let mut request = tonic::Request::new(frames);
    let header = route
        .parse()
        .map_err(|_| "ours: the route is not a header value".to_owned())?;
    request.metadata_mut().insert(SERVER_ID_HEADER, header);
    let mut inbound = TunnelClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
        .open(request)
        .await
        .map_err(|s| format!("ours: opening the tunnel: {s}"))?
        .into_inner();
    let msg2 = next_frame(&mut inbound).await?;
    let mut transport = hs
        .finish(&msg2.payload, Instant::now())
        .map_err(|e| format!("ours: {e}"))?;
    let hello = Body::Hello(Hello {
        client_version: env!("CARGO_PKG_VERSION").into(),
        output_window: 0,
        acks_when_asked: false,
    });
    let hello = envelope::encode_new(0, None, hello).map_err(|e| e.to_string())?;
    transport.send(&hello).map_err(noise)?;
    while let Some(msg) = transport.poll_transmit(Instant::now()).map_err(noise)? {
        outbound
            .send(Ok(proto::frames::data(msg)))
            .await
            .map_err(|_| "ours: link closed".to_owned())?;
    }
    loop {
        if let Some(env) = transport.poll_envelope().map_err(noise)? {
            match envelope::decode(&env).map(|e| e.body) {
                Ok(Some(Body::HelloAck(_))) => break,
                _ => return Err("ours: expected the hello answer".into()),
            }
        }
        let f = next_frame(&mut inbound).await?;
        transport.receive(&f.payload).map_err(noise)?;
    }
    Ok(Session {
        transport,
        outbound,
        inbound,
    })
}

impl NoisePipe {
    /// Starts the relay, registers the responder and connects the client.
    pub(super) async fn start() -> Result<Self, String> {
        let relay = TestRelay::start().await.map_err(|e| e.to_string())?;
        let server_key = StaticKeypair::generate().map_err(|e| format!("server key: {e}"))?;
        let client_key = StaticKeypair::generate().map_err(|e| format!("client key: {e}"))?;
        let server = server_key.public();
        let responder = Responder::start(&relay.url(), server_key, client_key.public()).await?;
        let channel = proto::relay_link::endpoint(
            &relay.url(),
            proto::relay_link::CONNECT_TIMEOUT,
            &proto::tls::TlsSettings::system(),
        )
        .map_err(|e| format!("client: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("client: {e}"))?;
        Ok(Self {
            relay,
            responder,
            key: client_key,
            server,
            channel,
            pattern: Pattern::new(),
        })
    }

    /// Opens a session and pushes `bytes` of plaintext through it.
    pub(super) async fn push(&mut self, bytes: u64) -> Result<Pushed, String> {
        let Session {
            mut transport,
            outbound,
            inbound,
        } = open(self.channel.clone(), &self.key, &self.server)
            .await
            .map_err(|e| format!("ours: opening a session: {e}"))?;
        let started = Instant::now();
        let sent = send_all(&mut transport, outbound, &mut self.pattern, bytes).await;
        let report = self.responder.report(REPORT_WAIT).await;
        drop(inbound);
        // The responder's error (a mismatch) explains a failed send best.
        let report = report?;
        drop(sent?);
        if report.plaintext != bytes {
            return Err(format!(
                "ours: the responder decrypted {} bytes, {bytes} were sent",
                report.plaintext
            ));
        }
        Ok(Pushed {
            took: report.finished.saturating_duration_since(started),
            messages: report.messages,
            largest: report.largest,
        })
    }

    /// Stops the responder and the relay.
    pub(super) async fn stop(self) {
        self.responder.stop();
        self.relay.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.relay.task).await;
    }
}

/// Sends `bytes` of pattern as envelopes of [`CHUNK`] bytes (one record
/// each), then the authenticated close. Returns the link, still open (on
/// an error it is dropped, which ends the session at the responder too).
async fn send_all(
    transport: &mut Transport,
    outbound: FrameSender,
    pattern: &mut Pattern,
    bytes: u64,
) -> Result<FrameSender, String> {
    let noise = |e: TransportError| format!("ours: sending: {e}");
    let (mut left, mut seq) = (bytes, 0u64);
    while left > 0 {
        let len = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        transport.send(pattern.envelope(seq, len)).map_err(noise)?;
        (left, seq) = (left - len as u64, seq + 1);
        while let Some(msg) = transport.poll_transmit(Instant::now()).map_err(noise)? {
            if outbound.send(Ok(proto::frames::data(msg))).await.is_err() {
                return Err("ours: the link closed while sending".into());
            }
        }
    }
    proto::relay_link::close_session(transport, &outbound, "done").await;
    Ok(outbound)
}
