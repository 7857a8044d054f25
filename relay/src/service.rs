//! The relay's gRPC services: `Tunnel` for clients, `Registry` for
//! exec-servers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use lifecycle::Tasks;
use proto::admission::{Gate, Source};
use proto::pb::tunnel::registry_server::Registry as RegistryService;
use proto::pb::tunnel::tunnel_server::Tunnel;
use proto::pb::tunnel::{CloseReason, FrameKind};
use proto::pb::tunnel::{
    Frame, Incoming, RegisterDown, RegisterUp, Registered, register_down, register_up,
};
use proto::registration::ProofResponder;
use proto::routing::{
    CREDIT_STREAM_HEADER, CREDIT_WINDOW_HEADER, SERVER_ID_HEADER, SESSION_ID_HEADER,
    SESSION_ID_LEN, SPARE_TOKEN_HEADER, format_session_id, is_server_id, parse_session_id,
};
use telemetry::w3c::Extracted;
use telemetry::{carriers, semconv};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::budget::{Budget, Queue};
use crate::config::RelayConfig;
use crate::directory::Directory;
use crate::fleet::{PROOF_HEADER, ProofError};
use crate::fleet_forward::Peers;
use crate::peer_credit::{self, Gates, PEER_CREDIT_HEADER};
use crate::registration::{AllowList, RateLimiter};
use crate::registry::{
    AcceptedHalf, Origin, Registry, RegistryError, SessionId, Shares, StreamCredit,
};
use crate::splice::{self, Buffers, Charged, Direction, Session, SpliceLimits};
use crate::wire::{self, FrameStream, Inbound};

type DownStream = Pin<Box<dyn Stream<Item = Result<RegisterDown, Status>> + Send + 'static>>;

/// Frames queued on an exec-server's control stream before announcements fail.
const CONTROL_QUEUE: usize = 64;

/// Registration attempts refused, since they were last taken (for
/// summaries).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegistrationRefusals {
    /// Over the source's attempt rate.
    pub(crate) rate: u64,
    /// Keys not on the allow-list.
    pub(crate) not_allowed: u64,
    /// Over a connection's, a source's or the relay's share.
    pub(crate) full: u64,
    /// Failed proofs.
    pub(crate) proof: u64,
    /// Forwarded sessions whose fleet proof was refused.
    pub(crate) forward: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rate: std::sync::atomic::AtomicU64,
    not_allowed: std::sync::atomic::AtomicU64,
    full: std::sync::atomic::AtomicU64,
    proof: std::sync::atomic::AtomicU64,
    forward: std::sync::atomic::AtomicU64,
}

impl Counters {
    fn note(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn take(&self) -> RegistrationRefusals {
        use std::sync::atomic::Ordering::Relaxed;
        RegistrationRefusals {
            rate: self.rate.swap(0, Relaxed),
            not_allowed: self.not_allowed.swap(0, Relaxed),
            full: self.full.swap(0, Relaxed),
            proof: self.proof.swap(0, Relaxed),
            forward: self.forward.swap(0, Relaxed),
        }
    }
}

/// State shared by both services.
#[derive(Clone)]
pub(crate) struct RelayState {
    /// The routing table.
    pub(crate) registry: Arc<Registry>,
    /// Settings.
    pub(crate) config: Arc<RelayConfig>,
    /// Every session and registration task; its token is cancelled at
    /// shutdown.
    pub(crate) tasks: Tasks,
    /// Sessions not yet authenticated.
    pub(crate) startups: Arc<Gate>,
    /// Bytes queued in the relay.
    pub(crate) budget: Arc<Budget>,
    /// The exec-server keys allowed to register, if limited.
    pub(crate) allowed: Option<Arc<AllowList>>,
    /// The listener's connections: one that carries an authenticated
    /// session leaves its source's share.
    pub(crate) connections: Arc<proto::listener::Connections>,
    /// The fleet's directory, if the relay is in one.
    pub(crate) directory: Option<Directory>,
    /// The other relays of its fleet, if it has a fleet key.
    peers: Option<Arc<Peers>>,
    /// The credit of the relays that forward sessions here, by link.
    pub(crate) gates: Arc<Gates>,
    registration_rate: Arc<Mutex<RateLimiter>>,
    refused: Arc<Counters>,
}

impl RelayState {
    /// New state for a relay (`allowed`: the allow-list, already read).
    pub(crate) fn new(config: RelayConfig, tasks: Tasks, allowed: Option<AllowList>) -> Self {
        let shares = Shares {
            per_connection: config.registrations.per_connection,
            per_source: config.registrations.per_source,
        };
        let registry = Registry::with_shares(
            config.max_registrations,
            config.max_sessions_per_server,
            shares,
            config.credit_pool,
        );
        let rate = RateLimiter::new(
            config.registrations.rate_per_source,
            config.registrations.burst_per_source,
        );
        let credit = Arc::clone(registry.credit());
        Self {
            registry,
            connections: proto::listener::Connections::new(config.connections),
            startups: Gate::new(config.startups),
            budget: Budget::new(config.max_buffered),
            allowed: allowed.map(Arc::new),
            directory: config.directory.clone().map(Directory::new),
            peers: config.fleet.as_ref().map(|f| {
                Arc::new(Peers::new(
                    Arc::clone(&f.fleet),
                    f.peer_tls.clone(),
                    f.max_forwarded,
                    Arc::clone(&credit),
                    tasks.clone(),
                ))
            }),
            gates: Arc::default(),
            registration_rate: Arc::new(Mutex::new(rate)),
            refused: Arc::new(Counters::default()),
            config: Arc::new(config),
            tasks,
        }
    }

    /// Registration attempts refused since the last call (and resets).
    pub(crate) fn take_registration_refusals(&self) -> RegistrationRefusals {
        self.refused.take()
    }

    fn buffers(&self) -> Buffers {
        Buffers {
            budget: Arc::clone(&self.budget),
            session_buffer: self.config.session_buffer,
        }
    }

    fn limits(&self) -> SpliceLimits {
        SpliceLimits {
            idle_timeout: self.config.idle_timeout,
            handshake_timeout: self.config.handshake_timeout,
            hop_headers: self.config.hop_headers,
            from_peer: false,
            path_hop: 0,
        }
    }
}

pub(crate) fn header<'a, T>(req: &'a Request<T>, name: &str) -> Option<&'a str> {
    req.metadata().get(name).and_then(|v| v.to_str().ok())
}

/// The peer's address on the connection a request came over.
fn peer<T>(req: &Request<T>) -> Option<SocketAddr> {
    req.remote_addr()
}

/// The refusing status for a registry error, with its reason code.
fn status_for(e: RegistryError) -> Status {
    use proto::pb::tunnel::CloseReason;
    use tonic::Code;
    let (code, reason) = match e {
        RegistryError::UnknownServer(_) => (Code::NotFound, CloseReason::UnknownServer),
        RegistryError::ServerBusy(_)
        | RegistryError::Full
        | RegistryError::ConnectionFull
        | RegistryError::SourceFull => (Code::ResourceExhausted, CloseReason::Busy),
    };
    proto::routing::refuse(code, e.to_string(), reason)
}

/// The client-facing tunnel.
#[derive(Clone)]
pub(crate) struct TunnelService {
    state: RelayState,
}

impl TunnelService {
    /// A tunnel service over shared state.
    pub(crate) fn new(state: RelayState) -> Self {
        Self { state }
    }
}

/// The frames of a tunnel method reached through tonic's service.
type TonicFrames = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;

/// What tonic's codec writes: the frames alone.
fn through_tonic(response: Response<FrameStream>) -> Response<TonicFrames> {
    response.map(|frames| {
        Box::pin(futures::StreamExt::map(frames, |r| r.map(|o| o.frame))) as TonicFrames
    })
}

/// Served by [`wire::Raw`]; tonic's path (the trait) reaches the same code.
#[tonic::async_trait]
impl Tunnel for TunnelService {
    type OpenStream = TonicFrames;

    async fn open(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        self.open_stream(request.map(Inbound::Tonic))
            .await
            .map(through_tonic)
    }
}

impl wire::Handler for TunnelService {
    fn call(
        &self,
        request: Request<Inbound>,
    ) -> impl std::future::Future<Output = Result<Response<FrameStream>, Status>> + Send {
        self.open_stream(request)
    }
}

impl TunnelService {
    /// A client's session: its handshake message 1, then its frames both
    /// ways.
    async fn open_stream(
        &self,
        request: Request<Inbound>,
    ) -> Result<Response<FrameStream>, Status> {
        let server_id = header(&request, SERVER_ID_HEADER)
            .filter(|s| is_server_id(s))
            .ok_or_else(|| {
                Status::invalid_argument(format!("missing or malformed {SERVER_ID_HEADER} header"))
            })?
            .to_owned();
        // The client link's trace context is validated as untrusted input and
        // passed on to the exec-server's announcement; invalid values are dropped.
        let trace = match carriers::metadata::extract(request.metadata()) {
            Extracted::Valid(ctx) => Some(ctx),
            Extracted::Absent | Extracted::Invalid(_) => None,
        };
        let traceparent = trace
            .as_ref()
            .map_or_else(String::new, |ctx| ctx.parent.to_string());
        let state = &self.state;
        let local = request.local_addr();
        // A session another relay of the fleet forwards: its proof names
        // the client's address, which this relay's shares then count.
        let forwarded_for = match header(&request, PROOF_HEADER) {
            None => None,
            Some(proof) => Some(verify_forward(state, proof, &server_id)?),
        };
        // Forwarded under the forwarding relay's credit: its frames toward
        // that relay wait for its grants.
        let gate = match header(&request, PEER_CREDIT_HEADER) {
            Some(value) if forwarded_for.is_some() => {
                let (link, stream) = peer_credit::parse_stream(value).ok_or_else(|| {
                    Status::invalid_argument(format!("malformed {PEER_CREDIT_HEADER}"))
                })?;
                state.gates.gate(link, stream)
            }
            _ => None,
        };
        let client = peer(&request);
        let source = forwarded_for.or(client.map(|a| a.ip()));
        // A place among the unauthenticated sessions, held until the
        // exec-server's handshake answer has passed through.
        let mut startup = state.startups.enter(source).map_err(|e| {
            proto::routing::refuse(
                Code::ResourceExhausted,
                format!("the relay is busy: {e} (--max-startups, --max-startups-per-source)"),
                CloseReason::Busy,
            )
        })?;
        // Once the session has authenticated, its connection is no
        // longer an unauthenticated one of its address, and its streams
        // get a wider window (`MAX_CLIENT_WINDOW`): what a client sends is
        // then held by the call's stdin window, which follows the path,
        // not by the links' 1 MiB (which held stdin across a 50 ms round
        // trip to about 15 MiB/s).
        let window = request
            .extensions()
            .get::<proto::link_server::StreamWindow>()
            .cloned();
        let connections = Arc::clone(&state.connections);
        startup = startup.on_authenticated(move || {
            if let Some(client) = client {
                connections.trust(client);
            }
            if let Some(window) = window {
                window.widen_for_authenticated_client();
            }
        });
        // Handshake message 1 rides with the stream's opening: the
        // exec-server hears of the session only once it has arrived.
        let mut inbound = request.into_inner();
        // Until message 1 has come, a newer session may take this one's
        // place when the table is under pressure.
        let waited = tokio::select! {
            () = startup.displaced() => {
                return Err(proto::routing::refuse(
                    Code::ResourceExhausted,
                    "the relay is busy: too many unauthenticated sessions, and this one had not \
                     sent handshake message 1 (--max-startups, --max-startups-per-source)",
                    CloseReason::Busy,
                ));
            }
            r = tokio::time::timeout(state.config.first_frame_timeout, inbound.message()) => r,
        };
        startup.advanced();
        let arrived = std::time::SystemTime::now();
        let first = match waited {
            Ok(Ok(Some(f))) if f.kind == FrameKind::Handshake as i32 => f,
            Ok(Ok(Some(_))) => {
                return Err(proto::routing::refuse(
                    Code::InvalidArgument,
                    "a session must begin with handshake message 1",
                    CloseReason::Protocol,
                ));
            }
            Ok(Ok(None) | Err(_)) => {
                return Err(Status::cancelled("the client ended the session"));
            }
            Err(_) => {
                return Err(proto::routing::refuse(
                    Code::DeadlineExceeded,
                    "no handshake message in time",
                    CloseReason::Timeout,
                ));
            }
        };
        if first.payload.len() > proto::limits::MAX_FRAME_PAYLOAD {
            return Err(proto::routing::refuse(
                Code::InvalidArgument,
                "oversized handshake message",
                CloseReason::Protocol,
            ));
        }
        let session = Session::new(state.tasks.token());
        let limits = SpliceLimits {
            path_hop: u32::from(forwarded_for.is_some()),
            ..state.limits()
        };
        let buffers = state.buffers();
        // An exec-server this relay does not hold, that the fleet's
        // directory places at another relay: the session goes there (one
        // hop: a forwarded session is only ever served locally).
        let elsewhere = match (&state.peers, &state.directory) {
            (Some(peers), Some(directory))
                if forwarded_for.is_none() && !state.registry.is_registered(&server_id) =>
            {
                directory.lookup(&server_id).map(|e| (peers, e.relay))
            }
            _ => None,
        };
        let forwarded_to = elsewhere.as_ref().map(|(_, url)| url.clone());
        let (half, permit, session_id) = if let Some((peers, url)) = elsewhere {
            let (first, forward) =
                charged_first(first, &session, &limits, &buffers, arrived).await?;
            let client_ip = source.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            let opened = peers
                .open(
                    &url,
                    &server_id,
                    client_ip,
                    trace.as_ref(),
                    first,
                    state.config.session_queue,
                    state.config.accept_timeout,
                )
                .await;
            forward.sent(opened.is_ok());
            let opened = opened?;
            tracing::debug!(server = %&server_id[..8], peer = %url, "session forwarded to the exec-server's relay");
            (opened.half, opened.permit, new_session_id())
        } else {
            // A spare stream the exec-server keeps here takes the session
            // at once; otherwise it is announced and waits for an `Accept`.
            let (half, permit, session_id) = match state.registry.take_spare(&server_id) {
                Ok(Some((permit, half))) => {
                    tracing::debug!(server = %&server_id[..8], "session spliced to a spare stream");
                    (half, permit, new_session_id())
                }
                Ok(None) => announce(state, &server_id, traceparent).await?,
                Err(e) => return Err(status_for(e)),
            };
            let (first, forward) =
                charged_first(first, &session, &limits, &buffers, arrived).await?;
            let delivered = half.outbound.send(first).await.is_ok();
            forward.sent(delivered);
            if !delivered {
                return Err(proto::routing::refuse(
                    Code::Unavailable,
                    "the exec-server went away",
                    CloseReason::PeerGone,
                ));
            }
            (half, permit, session_id)
        };
        let (client_tx, client_rx) = mpsc::channel(state.config.session_queue);
        let sid = format_session_id(&session_id);
        let up = splice::pump(
            inbound,
            half.outbound,
            Direction::ToServer,
            Arc::clone(&session),
            limits,
            buffers.clone(),
            None,
            None,
            None,
        );
        // From the relay it was forwarded to: read to its end when the
        // client's side ends, and its timings on the frames toward the
        // client kept, so that a client with no collector sees both relays.
        let down_limits = SpliceLimits {
            from_peer: forwarded_to.is_some(),
            ..limits
        };
        let down = splice::pump(
            half.inbound,
            client_tx,
            Direction::ToClient,
            session,
            down_limits,
            buffers,
            Some(startup),
            half.credit,
            gate,
        );
        let span = tracing::info_span!(
            parent: None,
            telemetry::spans::RELAY_SESSION,
            otel.kind = "server",
            rex.session.short_id = %&sid[..8],
            rex.relay.forwarded_to = tracing::field::Empty,
            rex.relay.forwarded = tracing::field::Empty,
        );
        // A hop of the fleet: where this relay sent the session, or that
        // another relay sent it here.
        if let Some(url) = &forwarded_to {
            span.record("rex.relay.forwarded_to", url.as_str());
        }
        if forwarded_for.is_some() {
            span.record("rex.relay.forwarded", true);
        }
        semconv::set_on(
            &span,
            semconv::rpc(semconv::TUNNEL_SERVICE, semconv::METHOD_OPEN),
        );
        semconv::set_on(&span, local.into_iter().flat_map(semconv::server_at));
        state.tasks.spawn(span, async move {
            let ((up_end, up_stats), (down_end, down_stats)) = tokio::join!(up, down);
            if let Some(error) = splice::error_type(up_end).or(splice::error_type(down_end)) {
                semconv::fail(&tracing::Span::current(), error);
            }
            tracing::debug!(
                session = %&sid[..8],
                ?up_end,
                ?down_end,
                up_frames = up_stats.frames + 1,
                up_bytes = up_stats.bytes,
                down_frames = down_stats.frames,
                down_bytes = down_stats.bytes,
                "session ended"
            );
            drop(permit);
        });
        Ok(Response::new(Box::pin(splice::body_stream(client_rx))))
    }
}

/// A fresh id for a session that was not announced (a spare stream took
/// it, or it was forwarded).
fn new_session_id() -> SessionId {
    let mut id = [0u8; SESSION_ID_LEN];
    rand::fill(&mut id);
    id
}

/// Message 1, ready to go on: checked, traced and counted like any frame
/// (its bytes charged to the session's first queue and the relay's
/// budget). Call [`splice::FirstForward::sent`] once it has been handed on.
async fn charged_first(
    first: Frame,
    session: &Session,
    limits: &SpliceLimits,
    buffers: &Buffers,
    arrived: std::time::SystemTime,
) -> Result<(Charged, splice::FirstForward), Status> {
    let Some((first, forward)) = splice::first_frame(first, session, limits, arrived) else {
        return Err(proto::routing::refuse(
            Code::InvalidArgument,
            "a malformed handshake message",
            CloseReason::Protocol,
        ));
    };
    let queue = Queue::new(buffers.session_buffer);
    let charge = buffers
        .budget
        .charge(&queue, splice::cost(&first), &session.cancel)
        .await;
    Ok((Charged::counted(first, charge), forward))
}

/// Checks the proof of a forwarded session: the client address it vouches
/// for, or the refusal.
pub(crate) fn verify_forward(
    state: &RelayState,
    proof: &str,
    server_id: &str,
) -> Result<std::net::IpAddr, Status> {
    let checked = match &state.peers {
        Some(peers) => peers
            .fleet()
            .verify(proof, server_id, std::time::SystemTime::now()),
        None => Err(ProofError::NoFleet),
    };
    checked.map_err(|e| {
        Counters::note(&state.refused.forward);
        let code = match e {
            ProofError::Busy => Code::ResourceExhausted,
            _ => Code::PermissionDenied,
        };
        proto::routing::refuse(
            code,
            format!("a forwarded session refused: {e}"),
            CloseReason::NotAllowed,
        )
    })
}

/// Announces a new session to `server_id` on its registration stream and
/// waits (bounded) for its `Accept`: the exec-server's half, the session
/// slot and the session id.
async fn announce(
    state: &RelayState,
    server_id: &str,
    traceparent: String,
) -> Result<(AcceptedHalf, OwnedSemaphorePermit, SessionId), Status> {
    let announced = state.registry.announce(server_id).map_err(status_for)?;
    tracing::debug!(server = %&server_id[..8], "session announced to the exec-server");
    let incoming = RegisterDown {
        msg: Some(register_down::Msg::Incoming(Incoming {
            session_id: announced.session_id.to_vec().into(),
            traceparent,
        })),
    };
    if announced.control.try_send(Ok(incoming)).is_err() {
        state.registry.cancel(&announced.session_id);
        return Err(proto::routing::refuse(
            Code::Unavailable,
            "the exec-server is not answering its relay link",
            CloseReason::NotAccepted,
        ));
    }
    let half = match tokio::time::timeout(state.config.accept_timeout, announced.accepted).await {
        Ok(Ok(half)) => half,
        _ => {
            state.registry.cancel(&announced.session_id);
            return Err(proto::routing::refuse(
                Code::Unavailable,
                "the exec-server did not accept the session in time",
                CloseReason::NotAccepted,
            ));
        }
    };
    Ok((half, announced.permit, announced.session_id))
}

/// The exec-server-facing registry.
#[derive(Clone)]
pub(crate) struct RegistryServiceImpl {
    state: RelayState,
}

impl RegistryServiceImpl {
    /// A registry service over shared state.
    pub(crate) fn new(state: RelayState) -> Self {
        Self { state }
    }
}

async fn next_proof(
    inbound: &mut Streaming<RegisterUp>,
    state: &RelayState,
) -> Result<bytes::Bytes, Status> {
    let msg = tokio::time::timeout(state.config.handshake_timeout, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("registration proof timed out"))??;
    match msg {
        Some(RegisterUp {
            msg: Some(register_up::Msg::Proof(p)),
        }) => Ok(p),
        _ => Err(Status::invalid_argument(
            "expected a registration proof message",
        )),
    }
}

/// Refuses a registration on its stream: the status goes to the
/// exec-server and `error.type` on the registration's span.
async fn refuse_registration(tx: &mpsc::Sender<Result<RegisterDown, Status>>, status: Status) {
    semconv::fail(
        &tracing::Span::current(),
        semconv::grpc_error_type(status.code()),
    );
    let _ = tx.send(Err(status)).await;
}

#[tonic::async_trait]
impl RegistryService for RegistryServiceImpl {
    type RegisterStream = DownStream;
    type AcceptStream = TonicFrames;

    async fn register(
        &self,
        request: Request<Streaming<RegisterUp>>,
    ) -> Result<Response<Self::RegisterStream>, Status> {
        let state = self.state.clone();
        let claimed = header(&request, SERVER_ID_HEADER).map(str::to_owned);
        let connection = peer(&request);
        let local = request.local_addr();
        // Each attempt costs a key exchange: a source gets so many a second.
        if let Some(addr) = connection {
            let mut rate = state
                .registration_rate
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !rate.allow(Source::of(addr.ip()), Instant::now()) {
                Counters::note(&state.refused.rate);
                return Err(proto::routing::refuse(
                    Code::ResourceExhausted,
                    "too many registration attempts from this address; retry later",
                    CloseReason::Busy,
                ));
            }
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);

        // Proof of possession: a Noise XN handshake in which the exec-server
        // reveals and proves its static key.
        let mut responder = ProofResponder::new().map_err(|e| Status::internal(e.to_string()))?;
        let msg1 = next_proof(&mut inbound, &state).await?;
        let msg2 = responder.respond(&msg1).map_err(|e| {
            Counters::note(&state.refused.proof);
            Status::unauthenticated(format!("registration proof: {e}"))
        })?;
        tx.send(Ok(RegisterDown {
            msg: Some(register_down::Msg::Proof(msg2.into())),
        }))
        .await
        .map_err(|_| Status::cancelled("exec-server went away"))?;
        // The reply must reach the exec-server before its third message can
        // arrive, so the response stream is returned now and the rest of the
        // proof completes in a task.
        let tasks = state.tasks.clone();
        let span = tracing::info_span!(
            parent: None,
            telemetry::spans::RELAY_REGISTRATION,
            otel.kind = "server",
        );
        semconv::set_on(
            &span,
            semconv::rpc(semconv::REGISTRY_SERVICE, semconv::METHOD_REGISTER),
        );
        semconv::set_on(&span, local.into_iter().flat_map(semconv::server_at));
        tasks.spawn(
            span,
            async move {
                let msg3 = match next_proof(&mut inbound, &state).await {
                    Ok(m) => m,
                    Err(status) => {
                        refuse_registration(&tx, status).await;
                        return;
                    }
                };
                let key = match responder.finish(&msg3) {
                    Ok(k) => k,
                    Err(e) => {
                        Counters::note(&state.refused.proof);
                        refuse_registration(
                            &tx,
                            Status::unauthenticated(format!(
                                "registration proof: {e}"
                            )),
                        )
                        .await;
                        return;
                    }
                };
                let server_id = key.server_id();
                if claimed.as_deref().is_some_and(|c| c != server_id) {
                    Counters::note(&state.refused.proof);
                    refuse_registration(
                        &tx,
                        Status::permission_denied(
                            "the claimed server id does not match the proven key",
                        ),
                    )
                    .await;
                    return;
                }
                if let Some(allowed) = &state.allowed {
                    let _ = allowed.refresh(false);
                    if !allowed.allows(&key) {
                        Counters::note(&state.refused.not_allowed);
                        refuse_registration(
                            &tx,
                            proto::routing::refuse(
                                Code::PermissionDenied,
                                "this exec-server key is not on the relay's allow-list",
                                CloseReason::NotAllowed,
                            ),
                        )
                        .await;
                        return;
                    }
                }
                let origin = Origin {
                    connection,
                    key: Some(key),
                };
                // Past the allow-list (if any): its keys have room reserved.
                let reserved = state.allowed.is_some();
                // The least window of its sessions (each asks for one
                // round trip of its link).
                let credit_window = state.config.session_credit;
                let guard = match state.registry.register_with_credit(
                    &server_id,
                    tx.clone(),
                    (origin, reserved),
                    credit_window,
                ) {
                    Ok(g) => g,
                    Err(e) => {
                        Counters::note(&state.refused.full);
                        refuse_registration(&tx, status_for(e)).await;
                        return;
                    }
                };
                let registered = RegisterDown {
                    msg: Some(register_down::Msg::Registered(Registered {
                        server_id: server_id.clone(),
                        spare_token: guard.spare_token.to_vec().into(),
                        credit_window,
                    })),
                };
                if tx.send(Ok(registered)).await.is_err() {
                    return;
                }
                tracing::info!(server = %&server_id[..8], "exec-server registered");
                // In the fleet's directory while it lasts.
                let published = state.directory.as_ref().map(|d| d.publish(&server_id));
                // Hold the registration while the control stream lives.
                let replaced = guard.replaced.clone();
                let outbox = Arc::clone(&guard.outbox);
                'held: loop {
                    // Grants, ahead of nothing: this stream carries no
                    // data, and the exec-server always reads it.
                    while let Some(credit) = outbox.take() {
                        let grant = RegisterDown {
                            msg: Some(register_down::Msg::Credit(credit)),
                        };
                        // An exec-server that stops reading holds up its
                        // own grants only, and never the relay's stop.
                        let sent = tokio::select! {
                            () = state.tasks.token().cancelled() => false,
                            () = replaced.cancelled() => false,
                            r = tx.send(Ok(grant)) => r.is_ok(),
                        };
                        if !sent {
                            break 'held;
                        }
                    }
                    tokio::select! {
                        () = state.tasks.token().cancelled() => break,
                        () = replaced.cancelled() => break,
                        () = tx.closed() => break,
                        () = outbox.posted() => {}
                        m = inbound.message() => match m {
                            Ok(Some(_)) => continue,
                            Ok(None) | Err(_) => break,
                        },
                    }
                }
                let was_replaced = replaced.is_cancelled();
                drop(published);
                drop(guard);
                if was_replaced {
                    // The notice is in the stream: give it a moment to go.
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.closed()).await;
                    tracing::info!(server = %&server_id[..8], "exec-server registration replaced or no longer allowed; the older one was told");
                } else {
                    tracing::info!(server = %&server_id[..8], "exec-server unregistered");
                }
            },
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn accept(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::AcceptStream>, Status> {
        self.accept_stream(request.map(Inbound::Tonic))
            .map(through_tonic)
    }
}

impl wire::Handler for RegistryServiceImpl {
    async fn call(&self, request: Request<Inbound>) -> Result<Response<FrameStream>, Status> {
        self.accept_stream(request)
    }
}

impl RegistryServiceImpl {
    /// The exec-server's half of one session (or a spare, kept for the
    /// next `Open`).
    fn accept_stream(&self, request: Request<Inbound>) -> Result<Response<FrameStream>, Status> {
        let server_id = header(&request, SERVER_ID_HEADER)
            .filter(|s| is_server_id(s))
            .ok_or_else(|| Status::invalid_argument("missing or malformed server id"))?
            .to_owned();
        // A spare, kept for the next `Open`: named by the registration's
        // spare token (same form as a session id).
        let spare = header(&request, SPARE_TOKEN_HEADER).map(parse_session_id);
        let session_id = match spare {
            Some(_) => None,
            None => Some(
                header(&request, SESSION_ID_HEADER)
                    .and_then(parse_session_id)
                    .ok_or_else(|| Status::invalid_argument("missing or malformed session id"))?,
            ),
        };
        // Credit, if the stream asks (and its registration was told a
        // window): its name, and the window it asks for.
        let number = |name: &str| {
            header(&request, name)
                .map(|s| {
                    s.parse::<u64>()
                        .map_err(|_| Status::invalid_argument(format!("malformed {name}")))
                })
                .transpose()
        };
        let credit = match (number(CREDIT_STREAM_HEADER)?, number(CREDIT_WINDOW_HEADER)?) {
            (Some(stream), asked) => Some(StreamCredit {
                stream,
                asked: asked.map_or(0, |a| u32::try_from(a).unwrap_or(u32::MAX)),
            }),
            (None, _) => None,
        };
        // The connection's stream window, widened below once a stream of
        // it is known to send within the relay's credit.
        let window = request
            .extensions()
            .get::<proto::link_server::StreamWindow>()
            .cloned();
        let (tx, rx) = mpsc::channel(self.state.config.session_queue);
        let half = AcceptedHalf {
            inbound: request.into_inner(),
            outbound: tx,
            credit: None,
        };
        let credited = match (spare, session_id) {
            (Some(token), _) => {
                let token =
                    token.ok_or_else(|| Status::invalid_argument("malformed spare token"))?;
                self.state
                    .registry
                    .add_spare(&server_id, &token, half, credit)?
            }
            (None, Some(session_id)) => {
                self.state
                    .registry
                    .accept(&session_id, &server_id, half, credit)?
            }
            (None, None) => return Err(Status::invalid_argument("missing session id")),
        };
        // A registered exec-server's stream under credit: the credit bounds
        // what it leaves here, so HTTP/2 must not bound it more tightly
        // (across a long path the credit grows past the links' 1 MiB).
        if let (Some(credit), Some(window)) = (credited, window) {
            window.widen(proto::routing::stream_window_for_credit(credit));
        }
        Ok(Response::new(Box::pin(splice::body_stream(rx))))
    }
}
