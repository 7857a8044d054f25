//! The relay's gRPC services: `Tunnel` for clients, `Registry` for
//! exec-servers.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use lifecycle::Tasks;
use proto::pb::tunnel::registry_server::Registry as RegistryService;
use proto::pb::tunnel::tunnel_server::Tunnel;
use proto::pb::tunnel::{
    Frame, Incoming, RegisterDown, RegisterUp, Registered, register_down, register_up,
};
use proto::registration::ProofResponder;
use proto::routing::{
    SERVER_ID_HEADER, SESSION_ID_HEADER, format_session_id, is_server_id, parse_session_id,
};
use telemetry::carriers;
use telemetry::w3c::Extracted;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::RelayConfig;
use crate::registry::{AcceptedHalf, Registry, RegistryError};
use crate::splice::{self, Direction, Session, SpliceLimits};

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;
type DownStream = Pin<Box<dyn Stream<Item = Result<RegisterDown, Status>> + Send + 'static>>;

/// Frames queued on an exec-server's control stream before announcements fail.
const CONTROL_QUEUE: usize = 64;

/// State shared by both services.
#[derive(Clone)]
pub struct RelayState {
    /// The routing table.
    pub registry: Arc<Registry>,
    /// Settings.
    pub config: Arc<RelayConfig>,
    /// Every session and registration task; its token is cancelled at
    /// shutdown.
    pub tasks: Tasks,
}

impl RelayState {
    /// New state for a relay.
    pub fn new(config: RelayConfig, tasks: Tasks) -> Self {
        let registry = Registry::new(config.max_registrations, config.max_sessions_per_server);
        Self {
            registry,
            config: Arc::new(config),
            tasks,
        }
    }

    fn limits(&self) -> SpliceLimits {
        SpliceLimits {
            idle_timeout: self.config.idle_timeout,
            handshake_timeout: self.config.handshake_timeout,
            hop_headers: self.config.hop_headers,
        }
    }
}

fn header<'a, T>(req: &'a Request<T>, name: &str) -> Option<&'a str> {
    req.metadata().get(name).and_then(|v| v.to_str().ok())
}

/// The refusing status for a registry error, with its reason code.
fn status_for(e: RegistryError) -> Status {
    use proto::pb::tunnel::CloseReason;
    use tonic::Code;
    let (code, reason) = match e {
        RegistryError::UnknownServer(_) => (Code::NotFound, CloseReason::UnknownServer),
        RegistryError::ServerBusy(_) | RegistryError::Full => {
            (Code::ResourceExhausted, CloseReason::Busy)
        }
    };
    proto::routing::refuse(code, e.to_string(), reason)
}

/// The client-facing tunnel.
#[derive(Clone)]
pub struct TunnelService {
    state: RelayState,
}

impl TunnelService {
    /// A tunnel service over shared state.
    pub fn new(state: RelayState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Tunnel for TunnelService {
    type OpenStream = FrameStream;

    async fn open(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let server_id = header(&request, SERVER_ID_HEADER)
            .filter(|s| is_server_id(s))
            .ok_or_else(|| {
                Status::invalid_argument(format!("missing or malformed {SERVER_ID_HEADER} header"))
            })?
            .to_owned();
        // The client link's trace context is validated as untrusted input and
        // passed on to the exec-server's announcement; invalid values are dropped.
        let traceparent = match carriers::metadata::extract(request.metadata()) {
            Extracted::Valid(ctx) => ctx.parent.to_string(),
            Extracted::Absent | Extracted::Invalid(_) => String::new(),
        };
        let state = &self.state;
        let announced = state.registry.announce(&server_id).map_err(status_for)?;
        let incoming = RegisterDown {
            msg: Some(register_down::Msg::Incoming(Incoming {
                session_id: announced.session_id.to_vec().into(),
                traceparent,
            })),
        };
        if announced.control.try_send(Ok(incoming)).is_err() {
            state.registry.cancel(&announced.session_id);
            return Err(proto::routing::refuse(
                tonic::Code::Unavailable,
                "the exec-server is not answering its relay link",
                proto::pb::tunnel::CloseReason::NotAccepted,
            ));
        }
        let half = match tokio::time::timeout(state.config.accept_timeout, announced.accepted).await
        {
            Ok(Ok(half)) => half,
            _ => {
                state.registry.cancel(&announced.session_id);
                return Err(proto::routing::refuse(
                    tonic::Code::Unavailable,
                    "the exec-server did not accept the session in time",
                    proto::pb::tunnel::CloseReason::NotAccepted,
                ));
            }
        };
        let (client_tx, client_rx) = mpsc::channel(state.config.session_queue);
        let session = Session::new(state.tasks.token());
        let limits = state.limits();
        let inbound = request.into_inner();
        let permit = announced.permit;
        let sid = format_session_id(&announced.session_id);
        let up = splice::pump(
            inbound,
            half.outbound,
            Direction::ToServer,
            Arc::clone(&session),
            limits,
        );
        let down = splice::pump(
            half.inbound,
            client_tx,
            Direction::ToClient,
            session,
            limits,
        );
        let span = tracing::info_span!(parent: None, telemetry::spans::RELAY_SESSION, session = %&sid[..8]);
        state.tasks.spawn(span, async move {
            let ((up_end, up_stats), (down_end, down_stats)) = tokio::join!(up, down);
            tracing::debug!(
                session = %&sid[..8],
                ?up_end,
                ?down_end,
                up_frames = up_stats.frames,
                up_bytes = up_stats.bytes,
                down_frames = down_stats.frames,
                down_bytes = down_stats.bytes,
                "session ended"
            );
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(client_rx))))
    }
}

/// The exec-server-facing registry.
#[derive(Clone)]
pub struct RegistryServiceImpl {
    state: RelayState,
}

impl RegistryServiceImpl {
    /// A registry service over shared state.
    pub fn new(state: RelayState) -> Self {
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

#[tonic::async_trait]
impl RegistryService for RegistryServiceImpl {
    type RegisterStream = DownStream;
    type AcceptStream = FrameStream;

    async fn register(
        &self,
        request: Request<Streaming<RegisterUp>>,
    ) -> Result<Response<Self::RegisterStream>, Status> {
        let state = self.state.clone();
        let claimed = header(&request, SERVER_ID_HEADER).map(str::to_owned);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);

        // Proof of possession: a Noise XN handshake in which the exec-server
        // reveals and proves its static key.
        let mut responder = ProofResponder::new().map_err(|e| Status::internal(e.to_string()))?;
        let msg1 = next_proof(&mut inbound, &state).await?;
        let msg2 = responder
            .respond(&msg1)
            .map_err(|e| Status::unauthenticated(format!("registration proof: {e}")))?;
        tx.send(Ok(RegisterDown {
            msg: Some(register_down::Msg::Proof(msg2.into())),
        }))
        .await
        .map_err(|_| Status::cancelled("exec-server went away"))?;
        // The reply must reach the exec-server before its third message can
        // arrive, so the response stream is returned now and the rest of the
        // proof completes in a task.
        let tasks = state.tasks.clone();
        tasks.spawn(
            tracing::debug_span!(parent: None, "registration"),
            async move {
                let msg3 = match next_proof(&mut inbound, &state).await {
                    Ok(m) => m,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let key = match responder.finish(&msg3) {
                    Ok(k) => k,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::unauthenticated(format!(
                                "registration proof: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                let server_id = key.server_id();
                if claimed.as_deref().is_some_and(|c| c != server_id) {
                    let _ = tx
                        .send(Err(Status::permission_denied(
                            "the claimed server id does not match the proven key",
                        )))
                        .await;
                    return;
                }
                let guard = match state.registry.register(&server_id, tx.clone()) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = tx.send(Err(status_for(e))).await;
                        return;
                    }
                };
                let registered = RegisterDown {
                    msg: Some(register_down::Msg::Registered(Registered {
                        server_id: server_id.clone(),
                    })),
                };
                if tx.send(Ok(registered)).await.is_err() {
                    return;
                }
                tracing::info!(server = %&server_id[..8], "exec-server registered");
                // Hold the registration while the control stream lives.
                loop {
                    tokio::select! {
                        () = state.tasks.token().cancelled() => break,
                        () = tx.closed() => break,
                        m = inbound.message() => match m {
                            Ok(Some(_)) => continue,
                            Ok(None) | Err(_) => break,
                        },
                    }
                }
                drop(guard);
                tracing::info!(server = %&server_id[..8], "exec-server unregistered");
            },
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn accept(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::AcceptStream>, Status> {
        let server_id = header(&request, SERVER_ID_HEADER)
            .filter(|s| is_server_id(s))
            .ok_or_else(|| Status::invalid_argument("missing or malformed server id"))?
            .to_owned();
        let session_id = header(&request, SESSION_ID_HEADER)
            .and_then(parse_session_id)
            .ok_or_else(|| Status::invalid_argument("missing or malformed session id"))?;
        let (tx, rx) = mpsc::channel(self.state.config.session_queue);
        let half = AcceptedHalf {
            inbound: request.into_inner(),
            outbound: tx,
        };
        self.state.registry.accept(&session_id, &server_id, half)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
