//! A link to the exec-server: a tunnel stream (`Tunnel/Open`) to a relay,
//! or to an exec-server that listens itself, opened with the session
//! machine's first flight riding on it (handshake message 1, with early
//! data when it carries a call: [`proto::driver::first_flight`]), so that
//! message 1 leaves with the stream's opening instead of a round trip
//! after it.
//!
//! Every link the client opens goes through here: a session's first
//! (`connect`), a new one for a session coming back (`reconnect`), and one
//! to give a session up at the exec-server (`abandon`).

use std::sync::Arc;

use opentelemetry::{Context, KeyValue};
use proto::frame_wire::{self, FrameReader};
use proto::limits::MAX_GRPC_MESSAGE;
use proto::pb::tunnel::Frame;
use proto::relay_link::FrameSender;
use proto::routing::{OPEN_PATH, SERVER_ID_HEADER};
use telemetry::{carriers, otel, semconv};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

use crate::config::{ClientConfig, Target};
use crate::error::ConnectError;
use crate::outbound::{Drained, Outbound};
use crate::transport_tasks::TransportTasks;

/// Frames queued toward the relay per session.
pub(crate) const LINK_QUEUE: usize = 32;

/// A link's two halves: what arrives (each frame read where it arrived),
/// and where frames to send go.
pub(crate) type Link = (FrameReader<Body>, FrameSender);

/// Connects a channel to `target` (the config's or one of its alternates)
/// with the link settings of a client, its tasks spawned through
/// `transport`.
pub(crate) async fn channel(
    config: &ClientConfig,
    target: &Target,
    transport: &TransportTasks,
) -> Result<Channel, ConnectError> {
    let url = target.url();
    proto::relay_link::client_endpoint(url, config.connect_timeout, &config.tls)
        .map_err(|e| ConnectError::BadUrl {
            url: url.into(),
            source: Arc::new(e),
        })?
        .executor(transport.clone())
        .connect()
        .await
        .map_err(|e| ConnectError::unreachable(url, e))
}

/// Opens the tunnel stream on `channel` to the exec-server `server_id`
/// with `first` (the machine's first flight) on it, carrying the trace
/// context of `trace` if given; `drained` learns when the transport has
/// taken the link's last frame. The link, or the far end's refusal.
pub(crate) async fn open(
    channel: Channel,
    first: &[Frame],
    server_id: &str,
    drained: Arc<Drained>,
    trace: Option<&Context>,
) -> Result<Link, tonic::Status> {
    // Room for the whole first flight, whatever its length: it is queued
    // before anything reads it.
    let (tx, rx) = mpsc::channel(LINK_QUEUE.max(first.len()));
    for frame in first {
        // Cannot fail: the queue has room and its receiver is below.
        let _ = tx.try_send(Ok(frame.clone()));
    }
    let mut metadata = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(server_id) {
        metadata.insert(SERVER_ID_HEADER, v);
    }
    if let Some(tc) = trace.and_then(otel::trace_context_of) {
        carriers::metadata::inject(&tc, &mut metadata);
    }
    let body = frame_wire::encoded(Outbound::new(rx, drained), MAX_GRPC_MESSAGE);
    let inbound = frame_wire::call(channel, OPEN_PATH, metadata, body, MAX_GRPC_MESSAGE).await?;
    Ok((inbound, tx))
}

/// `relay.connect`'s semantic-convention attributes: a gRPC call to
/// `Tunnel/Open` at the URL's host and port.
pub(crate) fn connect_attributes(url: &str) -> Vec<KeyValue> {
    let mut attributes = semconv::rpc(semconv::TUNNEL_SERVICE, semconv::METHOD_OPEN).to_vec();
    attributes.extend(semconv::server(url));
    attributes
}
