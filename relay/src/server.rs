//! Binding, serving and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::health::pb::health_server::HealthServer;

use futures::StreamExt;
use lifecycle::Tasks;
use proto::admission::Gate;
use proto::limits::MAX_GRPC_MESSAGE;
use proto::listener::Connections;
use proto::pb::tunnel::peer_credit_server::PeerCreditServer;
use proto::pb::tunnel::registry_server::RegistryServer;
use proto::pb::tunnel::tunnel_server::TunnelServer;
use proto::routing::{ACCEPT_PATH, OPEN_PATH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::RelayConfig;
use crate::health::RelayHealth;
use crate::peer_grants::PeerGrants;
use crate::registration::{AllowList, Reload};
use crate::registry::Registry;
use crate::service::{RegistryServiceImpl, RelayState, TunnelService};
use crate::wire;

/// How often refusals are summarised in the log.
const SUMMARY_EVERY: Duration = telemetry::limited::SUMMARY_INTERVAL;
/// How often the allow-list file is looked at for changes.
const ALLOW_LIST_EVERY: Duration = Duration::from_secs(2);

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The allow-list of exec-server keys could not be read.
    #[error("--allowed-servers: {0}")]
    AllowList(#[from] proto::keys::KeyError),
}

/// A relay ready to serve, with its counters readable while it runs.
pub struct Relay {
    state: RelayState,
    connections: Arc<Connections>,
    tasks: Tasks,
}

/// What a running relay holds, for tests and operators.
#[derive(Clone)]
#[non_exhaustive]
pub struct RelayStats {
    /// Open connections and what the listener refused.
    pub connections: Arc<Connections>,
    /// Sessions not yet authenticated.
    pub startups: Arc<Gate>,
    /// Bytes queued in the relay.
    pub budget: Arc<Budget>,
    /// The routing table.
    pub registry: Arc<Registry>,
    /// The fleet's directory, if the relay is in one.
    pub directory: Option<crate::directory::Directory>,
}

impl Relay {
    /// A relay with `config` (reads the allow-list, if any).
    pub fn new(config: RelayConfig) -> Result<Self, RelayError> {
        let allowed = match &config.registrations.allowed_servers {
            Some(path) => Some(AllowList::open(path)?),
            None => None,
        };
        // Sessions get their own token (the tasks') so that they can
        // outlive the listener for the grace period.
        let tasks = Tasks::new();
        let state = RelayState::new(config, tasks.clone(), allowed);
        let connections = Arc::clone(&state.connections);
        Ok(Self {
            state,
            connections,
            tasks,
        })
    }

    /// Its counters.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            connections: Arc::clone(&self.connections),
            startups: Arc::clone(&self.state.startups),
            budget: Arc::clone(&self.state.budget),
            registry: Arc::clone(&self.state.registry),
            directory: self.state.directory.clone(),
        }
    }

    /// Serves on an already-bound listener until `shutdown` is cancelled,
    /// then gives in-flight sessions `config.shutdown_grace` to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), RelayError> {
        let Self {
            state,
            connections,
            tasks,
        } = self;
        let grace = state.config.shutdown_grace;
        let tls = state.config.tls.clone();
        let sessions = tasks.token().clone();
        tasks.spawn(
            tracing::info_span!("relay limits"),
            watch_limits(state.clone(), Arc::clone(&connections)),
        );
        // The directory stops with the listener: its entries go at once
        // (no new session should be sent here), sessions drain meanwhile.
        if let Some(directory) = state.directory.clone() {
            tasks.spawn(
                tracing::info_span!("relay directory"),
                directory.run(shutdown.clone()),
            );
        }
        let health = HealthServer::new(RelayHealth::new(
            Arc::clone(&state.registry),
            shutdown.clone(),
        ));
        // The tunnel streams are served without tonic's codec (`wire`);
        // registrations, and any other method, by tonic's services.
        let tunnel_service = TunnelService::new(state.clone());
        let tunnel = TunnelServer::new(tunnel_service.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let tunnel = wire::Raw::new(tunnel, OPEN_PATH, tunnel_service);
        // A fleet peer's credit for the sessions it forwards here.
        let grants = PeerCreditServer::new(PeerGrants::new(state.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let registry_service = RegistryServiceImpl::new(state);
        let registry = RegistryServer::new(registry_service.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let registry = wire::Raw::new(registry, ACCEPT_PATH, registry_service);
        // The listener goes first on shutdown (the port is free at once for
        // a relay started in this one's place); connections are then told
        // to drain (an HTTP/2 GOAWAY: no new sessions, in-flight ones go on).
        let incoming = proto::listener::incoming(listener, connections, tls)
            .take_until(shutdown.clone().cancelled_owned());
        let routes = tonic::service::Routes::new(tunnel)
            .add_service(registry)
            .add_service(grants)
            .add_service(health);
        let serving =
            proto::link_server::serve(routes, incoming, shutdown.clone().cancelled_owned());
        let drain = async {
            shutdown.cancelled().await;
            tracing::info!("relay shutting down");
            // Let in-flight sessions finish within the grace period.
            if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
                sessions.cancel();
            }
        };
        tokio::join!(serving, drain);
        tasks.shutdown().await;
        Ok(())
    }
}

/// Logs what was refused, as one summary line per interval (never a line
/// per refusal), and applies allow-list changes to live registrations.
async fn watch_limits(state: RelayState, connections: Arc<Connections>) {
    let stop = state.tasks.token().clone();
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    let mut allow = tokio::time::interval(ALLOW_LIST_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = summary.tick() => {
                telemetry::limited::warn_admission("", &connections, &state.startups);
                let r = state.take_registration_refusals();
                if r.rate + r.not_allowed + r.full + r.proof > 0 {
                    tracing::warn!(
                        registered = state.registry.registrations(),
                        over_rate = r.rate,
                        not_allowed = r.not_allowed,
                        over_share = r.full,
                        bad_proof = r.proof,
                        "registrations refused in the last {}s",
                        SUMMARY_EVERY.as_secs()
                    );
                }
                if r.forward > 0 {
                    tracing::warn!(
                        refused = r.forward,
                        "forwarded sessions refused (no valid fleet proof) in the last {}s",
                        SUMMARY_EVERY.as_secs()
                    );
                }
            }
            _ = allow.tick() => {
                let Some(list) = &state.allowed else { continue };
                match list.refresh(true) {
                    Reload::Unchanged => {}
                    Reload::Reloaded(n) => {
                        let ended = state
                            .registry
                            .retain(|o| o.key.is_none_or(|k| list.allows(&k)));
                        tracing::info!(keys = n, ended, path = %list.path().display(), "allow-list re-read");
                    }
                    Reload::Failed(e) => {
                        tracing::warn!(error = %e, "allow-list changed but cannot be read; keeping the previous one");
                    }
                }
            }
        }
    }
}

/// The listen socket's backlog of connections not yet accepted.
const BACKLOG: u32 = 1024;

/// How long a relay waits for its port when another process still listens
/// on it (the relay it replaces, told to stop a moment ago).
pub const BIND_WAIT: Duration = Duration::from_secs(5);
/// How often the port is tried again while it is held.
const BIND_RETRY_EVERY: Duration = Duration::from_millis(50);

/// Binds `addr` for listening with SO_REUSEADDR, so that a relay started
/// right after another on the same port (a restart) takes it at once,
/// whatever connections of the last one are still in TIME_WAIT.
///
/// While another process still listens on the port (the relay being
/// replaced has been sent its stop signal but has not yet closed its listen
/// socket), the bind is tried again for up to `wait`; `shutdown` ends the
/// wait early. Any other error is returned at once.
pub async fn bind(
    addr: SocketAddr,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<TcpListener, RelayError> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut told = false;
    loop {
        match bind() {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                if !told {
                    told = true;
                    tracing::info!(
                        %addr,
                        wait_secs = wait.as_secs_f64(),
                        "the listen address is in use; waiting for it to be released"
                    );
                }
                tokio::select! {
                    () = shutdown.cancelled() => {
                        return Err(RelayError::Bind { addr, source: e });
                    }
                    () = tokio::time::sleep(BIND_RETRY_EVERY) => {}
                }
            }
            Err(source) => return Err(RelayError::Bind { addr, source }),
        }
    }
}

/// Binds `config.listen` and serves until `shutdown` is cancelled.
pub async fn run(config: RelayConfig, shutdown: CancellationToken) -> Result<(), RelayError> {
    let addr = config.listen;
    let listener = bind(addr, BIND_WAIT, &shutdown).await?;
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
    Relay::new(config)?.serve(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_served_without_tonic_are_its_services_methods() {
        use tonic::server::NamedService;
        assert_eq!(
            OPEN_PATH,
            format!("/{}/Open", TunnelServer::<TunnelService>::NAME)
        );
        assert_eq!(
            ACCEPT_PATH,
            format!("/{}/Accept", RegistryServer::<RegistryServiceImpl>::NAME)
        );
    }

    #[tokio::test]
    async fn a_port_still_held_is_waited_for_and_taken_when_released() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let binding = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { bind(addr, Duration::from_secs(60), &shutdown).await }
        });
        // Let the first attempts find the port held, then release it.
        tokio::time::sleep(BIND_RETRY_EVERY * 3).await;
        assert!(
            !binding.is_finished(),
            "bound a port another socket listens on"
        );
        drop(held);
        let listener = binding.await.unwrap().unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn a_port_held_past_the_wait_or_the_shutdown_is_an_error_naming_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let err = bind(addr, Duration::ZERO, &shutdown).await.unwrap_err();
        let RelayError::Bind {
            addr: named,
            source,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*named, addr);
        assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()));

        shutdown.cancel();
        let err = bind(addr, Duration::from_secs(3600), &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, RelayError::Bind { .. }), "{err:?}");
        drop(held);
    }
}
