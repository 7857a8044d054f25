//! Ours: Noise transport messages from a client, through a relay in this
//! process, to the [`responder`](super::responder).
//!
//! The client side is core-client's own [`connect::channel`] and
//! [`connect::establish`] (tunnel, IK handshake, session hello); the bytes
//! then go out through its [`Transport`] as envelopes of [`CHUNK`] bytes,
//! one full-size record each.

use std::time::{Duration, Instant};

use core_client::connect::{self, Established};
use core_client::{ClientConfig, Target};
use proto::keys::StaticKeypair;
use proto::link::FrameSender;
use proto::noise::{Transport, TransportError};
use tonic::transport::Channel;

use super::responder::Responder;
use super::{CHUNK, Pattern};
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
    config: ClientConfig,
    channel: Channel,
    pattern: Pattern,
}

impl NoisePipe {
    /// Starts the relay, registers the responder and connects the client.
    pub(super) async fn start() -> Result<Self, String> {
        let relay = TestRelay::start().await.map_err(|e| e.to_string())?;
        let server_key = StaticKeypair::generate().map_err(|e| format!("server key: {e}"))?;
        let client_key = StaticKeypair::generate().map_err(|e| format!("client key: {e}"))?;
        let server = server_key.public();
        let responder = Responder::start(&relay.url(), server_key, client_key.public()).await?;
        let config = ClientConfig::new(client_key, server, Target::Relay(relay.url()));
        let channel = connect::channel(&config)
            .await
            .map_err(|e| format!("client: {e}"))?;
        Ok(Self {
            relay,
            responder,
            config,
            channel,
            pattern: Pattern::new(),
        })
    }

    /// Opens a session and pushes `bytes` of plaintext through it.
    pub(super) async fn push(&mut self, bytes: u64) -> Result<Pushed, String> {
        let Established {
            mut transport,
            outbound,
            inbound,
            ..
        } = connect::establish(&self.config, self.channel.clone(), &Default::default())
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
    proto::link::close_session(transport, &outbound, "done").await;
    Ok(outbound)
}
