//! Forwarding a session to the relay of the fleet that holds its
//! exec-server's registration (one hop at most): the links to peer relays,
//! and opening the session there with this relay's proof of membership.
//!
//! The peer sees an ordinary `Open` with the proof ([`PROOF_HEADER`]) in
//! its metadata; it serves the session only from its own registrations,
//! never forwarding it again. What flows is the session's ciphertext, as
//! on any relay link: the directory and the peer are trusted for routing
//! only, never for identity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use proto::frame_wire::{self, FrameBody};
use proto::limits::MAX_GRPC_MESSAGE;
use proto::pb::tunnel::CloseReason;
use proto::routing::{OPEN_PATH, SERVER_ID_HEADER};
use telemetry::carriers;
use telemetry::w3c::TraceContext;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::fleet::{Fleet, PROOF_HEADER};
use crate::registry::AcceptedHalf;
use crate::splice::{self, Charged};
use crate::wire::Inbound;

/// Most peer relays this relay keeps a link to (beyond it, links are
/// dropped and made again as needed).
const MAX_PEERS: usize = 1024;

/// The fleet as this relay reaches into it.
pub(crate) struct Peers {
    fleet: Arc<Fleet>,
    tls: proto::tls::TlsSettings,
    links: Mutex<HashMap<String, Channel>>,
    sessions: Arc<Semaphore>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

/// A session opened at a peer relay.
pub(crate) struct Opened {
    /// The peer's half of the session (message 1 already sent).
    pub(crate) half: AcceptedHalf,
    /// Its place among this relay's forwarded sessions.
    pub(crate) permit: OwnedSemaphorePermit,
}

impl Peers {
    /// Peers of `fleet`, dialled with `tls` for `https://` addresses, at
    /// most `max_sessions` forwarded sessions at once.
    pub(crate) fn new(
        fleet: Arc<Fleet>,
        tls: proto::tls::TlsSettings,
        max_sessions: usize,
    ) -> Self {
        Self {
            fleet,
            tls,
            links: Mutex::new(HashMap::new()),
            sessions: Arc::new(Semaphore::new(max_sessions)),
            connect_timeout: proto::relay_link::CONNECT_TIMEOUT,
        }
    }

    /// This relay's fleet.
    pub(crate) fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn link(&self, url: &str) -> Result<Channel, Status> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = links.get(url) {
            return Ok(channel.clone());
        }
        let endpoint =
            proto::relay_link::endpoint(url, self.connect_timeout, &self.tls).map_err(|e| {
                proto::routing::refuse(
                    Code::Unavailable,
                    format!("the exec-server's relay ({url}) cannot be dialled: {e}"),
                    CloseReason::PeerGone,
                )
            })?;
        if links.len() >= MAX_PEERS {
            links.clear();
        }
        let channel = endpoint.connect_lazy();
        links.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Opens `server_id`'s session at the peer relay `url` for `client`,
    /// sending `first` (handshake message 1) with the opening; waits (up to
    /// `within`) for the peer to answer, and gives its half. The client
    /// link's trace context (`trace`) goes on with the opening. The peer's
    /// refusal is passed on with its reason, naming the peer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        &self,
        url: &str,
        server_id: &str,
        client: IpAddr,
        trace: Option<&TraceContext>,
        first: Charged,
        queue: usize,
        within: Duration,
    ) -> Result<Opened, Status> {
        let permit = Arc::clone(&self.sessions)
            .try_acquire_owned()
            .map_err(|_| {
                proto::routing::refuse(
                    Code::ResourceExhausted,
                    "the relay is busy: too many sessions forwarded to other relays of the fleet",
                    CloseReason::Busy,
                )
            })?;
        let channel = self.link(url)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        // Message 1 goes with the opening: the peer waits for it before
        // telling its exec-server.
        let _ = tx.try_send(first);
        let mut metadata = MetadataMap::new();
        let proof = self.fleet.prove(server_id, client, SystemTime::now());
        for (key, value) in [
            (SERVER_ID_HEADER, server_id),
            (PROOF_HEADER, proof.as_str()),
        ] {
            if let Ok(value) = value.parse() {
                metadata.insert(key, value);
            }
        }
        if let Some(cx) = trace {
            carriers::metadata::inject(cx, &mut metadata);
        }
        // Frames the peer sends, and those sent to it, pass as they
        // arrived, as on the links this relay serves.
        let body = Body::new(FrameBody::request(
            Box::pin(splice::body_stream(rx)),
            MAX_GRPC_MESSAGE,
        ));
        let call = frame_wire::call(channel, OPEN_PATH, metadata, body, MAX_GRPC_MESSAGE);
        match tokio::time::timeout(within, call).await {
            Ok(Ok(inbound)) => Ok(Opened {
                half: AcceptedHalf {
                    inbound: Inbound::Wire(inbound),
                    outbound: tx,
                    // A peer relay's stream: HTTP/2's window bounds it.
                    credit: None,
                },
                permit,
            }),
            Ok(Err(status)) => Err(relayed(url, &status)),
            Err(_) => Err(proto::routing::refuse(
                Code::Unavailable,
                format!("the exec-server's relay ({url}) did not answer in time"),
                CloseReason::RouteUnreachable,
            )),
        }
    }
}

/// The peer's refusal, as this relay's: the same code and reason, naming
/// the peer.
fn relayed(url: &str, status: &Status) -> Status {
    match proto::routing::refusal(status) {
        Some(reason) => proto::routing::refuse(
            status.code(),
            format!("at the exec-server's relay ({url}): {}", status.message()),
            reason,
        ),
        // No refusal of ours: the link itself failed.
        None => proto::routing::refuse(
            Code::Unavailable,
            format!(
                "the exec-server's relay ({url}) cannot be reached: {}",
                status.message()
            ),
            CloseReason::RouteUnreachable,
        ),
    }
}
