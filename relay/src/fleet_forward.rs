//! Forwarding a session to the relay of the fleet that holds its
//! exec-server's registration (one hop at most): the links to peer relays,
//! and opening the session there with this relay's proof of membership.
//!
//! The peer sees an ordinary `Open` with the proof ([`PROOF_HEADER`]) in
//! its metadata; it serves the session only from its own registrations,
//! never forwarding it again. What flows is the session's ciphertext, as
//! on any relay link: the directory and the peer are trusted for routing
//! only, never for identity. What the peer sends toward this relay's
//! client is under this relay's credit ([`crate::peer_credit`]), granted
//! on the link's grants stream as it is passed on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lifecycle::Tasks;
use proto::frame_wire::{self, FrameBody};
use proto::limits::MAX_GRPC_MESSAGE;
use proto::pb::tunnel::peer_credit_client::PeerCreditClient;
use proto::pb::tunnel::{CloseReason, Credit};
use proto::routing::{OPEN_PATH, SERVER_ID_HEADER};
use telemetry::carriers;
use telemetry::w3c::TraceContext;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::credit::CreditStats;
use crate::fleet::{Fleet, PROOF_HEADER};
use crate::peer_credit::{self, LinkCredit, PEER_CREDIT_HEADER, PEER_LINK_HEADER};
use crate::registry::AcceptedHalf;
use crate::splice::{self, Charged};
use crate::wire::Inbound;

/// Most peer relays this relay keeps a link to (beyond it, links are
/// dropped and made again as needed).
const MAX_PEERS: usize = 1024;

/// A link to a peer relay, and this relay's credit on it (`None`: the peer
/// takes no grants, an older relay; its sessions go without).
#[derive(Clone)]
struct PeerLink {
    channel: Channel,
    credit: Option<Arc<LinkCredit>>,
}

/// A link being made or made, shared by the sessions that wait for it.
type LinkCell = Arc<tokio::sync::OnceCell<PeerLink>>;

/// The fleet as this relay reaches into it.
pub(crate) struct Peers {
    fleet: Arc<Fleet>,
    tls: proto::tls::TlsSettings,
    links: Arc<Mutex<HashMap<String, LinkCell>>>,
    sessions: Arc<Semaphore>,
    connect_timeout: Duration,
    /// The relay's credit, whose pool lends the forwarded sessions their
    /// windows too.
    credit: Arc<CreditStats>,
    tasks: Tasks,
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
    /// most `max_sessions` forwarded sessions at once, under credit from
    /// `credit`'s pool; each link's grants stream runs in `tasks`.
    pub(crate) fn new(
        fleet: Arc<Fleet>,
        tls: proto::tls::TlsSettings,
        max_sessions: usize,
        credit: Arc<CreditStats>,
        tasks: Tasks,
    ) -> Self {
        Self {
            fleet,
            tls,
            links: Arc::new(Mutex::new(HashMap::new())),
            sessions: Arc::new(Semaphore::new(max_sessions)),
            connect_timeout: proto::relay_link::CONNECT_TIMEOUT,
            credit,
            tasks,
        }
    }

    /// This relay's fleet.
    pub(crate) fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The link to `url`, made (with its grants stream) if there is none
    /// or its grants stream has ended.
    async fn link(&self, url: &str) -> Result<PeerLink, Status> {
        let cell = {
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            let live = links.get(url).filter(|cell| {
                cell.get()
                    .is_none_or(|l| l.credit.as_ref().is_none_or(|c| !c.is_closed()))
            });
            match live {
                Some(cell) => Arc::clone(cell),
                None => {
                    if links.len() >= MAX_PEERS {
                        links.clear();
                    }
                    let cell = LinkCell::default();
                    links.insert(url.to_owned(), Arc::clone(&cell));
                    cell
                }
            }
        };
        cell.get_or_try_init(|| self.dial(url, &cell))
            .await
            .cloned()
    }

    /// Dials `url` and starts this relay's grants stream on the link
    /// (`cell`, forgotten when the stream ends).
    async fn dial(&self, url: &str, cell: &LinkCell) -> Result<PeerLink, Status> {
        let endpoint = proto::relay_link::peer_endpoint(url, self.connect_timeout, &self.tls)
            .map_err(|e| {
                proto::routing::refuse(
                    Code::Unavailable,
                    format!("the exec-server's relay ({url}) cannot be dialled: {e}"),
                    CloseReason::PeerGone,
                )
            })?;
        let channel = endpoint.connect_lazy();
        let credit = LinkCredit::new(&self.credit);
        let mut request = tonic::Request::new(credit.grants());
        let proof = self.fleet.prove(
            &peer_credit::proof_subject(credit.id()),
            std::net::Ipv4Addr::UNSPECIFIED.into(),
            SystemTime::now(),
        );
        for (key, value) in [
            (PEER_LINK_HEADER, credit.id().to_string()),
            (PROOF_HEADER, proof),
        ] {
            if let Ok(value) = value.parse() {
                request.metadata_mut().insert(key, value);
            }
        }
        let mut client = PeerCreditClient::new(channel.clone());
        let answered = tokio::time::timeout(self.connect_timeout, client.grants(request)).await;
        let credit = match answered {
            Ok(Ok(response)) => {
                self.follow(url, cell, &credit, response.into_inner());
                Some(credit)
            }
            // A peer of an earlier version: its sessions go without.
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                tracing::warn!(peer = %url, "the peer relay takes no grants: sessions forwarded there go without this relay's credit");
                credit.close();
                None
            }
            Ok(Err(status)) => return Err(relayed(url, &status)),
            Err(_) => {
                return Err(proto::routing::refuse(
                    Code::Unavailable,
                    format!("the exec-server's relay ({url}) did not answer in time"),
                    CloseReason::RouteUnreachable,
                ));
            }
        };
        Ok(PeerLink { channel, credit })
    }

    /// Waits in a task of its own for the end of `credit`'s grants stream
    /// (`answer`, on which the peer sends nothing): then nothing more is
    /// counted, and the link is made again for the next session.
    fn follow(
        &self,
        url: &str,
        cell: &LinkCell,
        credit: &Arc<LinkCredit>,
        mut answer: tonic::Streaming<Credit>,
    ) {
        let links = Arc::clone(&self.links);
        let (url, cell, credit) = (url.to_owned(), Arc::clone(cell), Arc::clone(credit));
        let cancel = self.tasks.token().clone();
        let span = tracing::info_span!("relay peer credit", peer = %url);
        self.tasks.spawn(span, async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    m = answer.message() => if !matches!(m, Ok(Some(_))) { break },
                }
            }
            credit.close();
            let mut links = links.lock().unwrap_or_else(|e| e.into_inner());
            if links.get(&url).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                links.remove(&url);
            }
        });
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
        let link = self.link(url).await?;
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
        // Under this relay's credit: the stream named for the peer's gate.
        let credit = link.credit.as_ref().and_then(|c| c.open());
        if let Some((name, _)) = &credit
            && let Ok(value) = name.parse()
        {
            metadata.insert(PEER_CREDIT_HEADER, value);
        }
        // Frames the peer sends, and those sent to it, pass as they
        // arrived, as on the links this relay serves.
        let body = Body::new(FrameBody::request(
            Box::pin(splice::body_stream(rx)),
            MAX_GRPC_MESSAGE,
        ));
        let call = frame_wire::call(link.channel, OPEN_PATH, metadata, body, MAX_GRPC_MESSAGE);
        match tokio::time::timeout(within, call).await {
            Ok(Ok(inbound)) => Ok(Opened {
                half: AcceptedHalf {
                    inbound: Inbound::Wire(inbound),
                    outbound: tx,
                    // What the peer sends on it, within this relay's
                    // credit (HTTP/2's window bounds it without).
                    credit: credit.map(|(_, c)| c),
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
