//! The tunnel service served by the exec-server itself (`--listen`), so
//! clients on the same network can skip the relay with identical code.

use std::pin::Pin;
use std::sync::Arc;
use telemetry::semconv;

use futures::{Stream, StreamExt as _};
use proto::admission::Ticket;
use proto::keys::Origin;
use proto::listener::Connections;
use proto::pb::tunnel::CloseReason;
use proto::pb::tunnel::Frame;
use proto::pb::tunnel::tunnel_server::Tunnel;
use proto::routing::SERVER_ID_HEADER;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::registration::SESSION_QUEUE;
use crate::session::{self, FrameSender, ServerContext};

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;

/// Direct tunnel service.
#[derive(Clone)]
pub(crate) struct DirectTunnel {
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
    connections: Arc<Connections>,
}

impl DirectTunnel {
    /// A direct tunnel for this exec-server, whose listener holds
    /// `connections`.
    pub(crate) fn new(
        ctx: Arc<ServerContext>,
        shutdown: CancellationToken,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            ctx,
            shutdown,
            connections,
        }
    }
}

#[tonic::async_trait]
impl Tunnel for DirectTunnel {
    type OpenStream = FrameStream;

    async fn open(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let named = request
            .metadata()
            .get(SERVER_ID_HEADER)
            .and_then(|v| v.to_str().ok());
        if named != Some(self.ctx.route.as_str()) {
            return Err(Status::not_found(format!(
                "this exec-server's id is not the one named in {SERVER_ID_HEADER}"
            )));
        }
        // A place among the sessions not yet authenticated; the session
        // slot comes once message 1 has authenticated.
        let startup = match self
            .ctx
            .startups
            .enter(request.remote_addr().map(|a| a.ip()))
        {
            Ok(t) => t,
            Err(e) => {
                return Err(proto::routing::refuse(
                    tonic::Code::ResourceExhausted,
                    format!(
                        "the exec-server is busy: {e} (its --max-startups, --max-startups-per-source)"
                    ),
                    proto::pb::tunnel::CloseReason::Busy,
                ));
            }
        };
        // Once the session has authenticated, its connection is no
        // longer an unauthenticated one of its address, and its streams
        // get an authenticated client's window, as at a relay.
        let client = request.remote_addr();
        let window = request
            .extensions()
            .get::<proto::link_server::StreamWindow>()
            .cloned();
        let connections = Arc::clone(&self.connections);
        let startup = startup.on_authenticated(move || {
            if let Some(client) = client {
                connections.trust(client);
            }
            if let Some(window) = window {
                window.widen_for_authenticated_client();
            }
        });
        let local = request.local_addr();
        let origin = request
            .remote_addr()
            .map_or(Origin::Unknown, |a| Origin::Direct(a.ip()));
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let inbound = request.into_inner();
        let ctx = Arc::clone(&self.ctx);
        let shutdown = self.shutdown.clone();
        let span = tracing::info_span!(
            parent: None,
            telemetry::spans::SESSION_SERVER,
            otel.kind = "server",
        );
        semconv::set_on(
            &span,
            semconv::rpc(semconv::TUNNEL_SERVICE, semconv::METHOD_OPEN),
        );
        semconv::set_on(&span, local.into_iter().flat_map(semconv::server_at));
        self.ctx.tasks.spawn(span, async move {
            let Some(inbound) = first_message(inbound, &startup, &tx, &ctx).await else {
                return;
            };
            if let Err(e) = session::serve(inbound, tx, ctx, shutdown, Some(startup), origin).await
            {
                tracing::debug!(error = %e, "direct session ended");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A session's stream with its first message read: until it has come, the
/// session can be displaced by a newer one when the table of
/// unauthenticated sessions is under pressure (then, or when it does not
/// come in time, the client is told why and `None` returned).
async fn first_message(
    mut inbound: Streaming<Frame>,
    startup: &Ticket,
    tx: &FrameSender,
    ctx: &ServerContext,
) -> Option<impl Stream<Item = Result<Frame, Status>> + Unpin + Send + 'static> {
    let refuse = |code, why: &str, reason| proto::routing::refuse(code, why, reason);
    let waited = tokio::select! {
        () = startup.displaced() => Err(refuse(
            tonic::Code::ResourceExhausted,
            "the exec-server is busy: too many unauthenticated sessions, and this one had not \
             sent handshake message 1 (its --max-startups, --max-startups-per-source)",
            CloseReason::Busy,
        )),
        r = tokio::time::timeout(ctx.config.handshake_timeout, inbound.next()) => r.map_err(|_| {
            refuse(
                tonic::Code::DeadlineExceeded,
                "no handshake message in time",
                CloseReason::Timeout,
            )
        }),
    };
    startup.advanced();
    match waited {
        Ok(Some(first)) => Some(futures::stream::iter([first]).chain(inbound)),
        Ok(None) => None,
        Err(status) => {
            let _ = tx.send(Err(status)).await;
            None
        }
    }
}
