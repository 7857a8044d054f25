//! Binding, serving and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use proto::health::pb::health_server::HealthServer;

use lifecycle::Tasks;
use proto::limits::MAX_GRPC_MESSAGE;
use proto::pb::tunnel::registry_server::RegistryServer;
use proto::pb::tunnel::tunnel_server::TunnelServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::health::RelayHealth;
use crate::service::{RegistryServiceImpl, RelayState, TunnelService};

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("relay server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Binds `config.listen` and serves until `shutdown` is cancelled.
pub async fn run(config: RelayConfig, shutdown: CancellationToken) -> Result<(), RelayError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Bind { addr, source })?;
    tracing::info!(%addr, "relay listening");
    serve(listener, config, shutdown).await
}

/// Serves on an already-bound listener until `shutdown` is cancelled, then
/// gives in-flight sessions `config.shutdown_grace` to finish.
pub async fn serve(
    listener: TcpListener,
    config: RelayConfig,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let grace = config.shutdown_grace;
    // Sessions get their own token (the tasks') so that they can outlive
    // the listener for the grace period.
    let tasks = Tasks::new();
    let sessions = tasks.token().clone();
    let state = RelayState::new(config, tasks.clone());
    let health = HealthServer::new(RelayHealth::new(
        Arc::clone(&state.registry),
        shutdown.clone(),
    ));
    let tunnel = TunnelServer::new(TunnelService::new(state.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let registry = RegistryServer::new(RegistryServiceImpl::new(state))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let incoming = proto::link::incoming(listener);
    let result = proto::link::server()
        .add_service(tunnel)
        .add_service(registry)
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, {
            let shutdown = shutdown.clone();
            let sessions = sessions.clone();
            let tasks = tasks.clone();
            async move {
                shutdown.cancelled().await;
                tracing::info!("relay shutting down");
                // Let in-flight sessions finish within the grace period.
                if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
                    sessions.cancel();
                }
            }
        })
        .await;
    tasks.shutdown().await;
    result.map_err(RelayError::from)
}
