//! Starting, running and stopping an exec-server.

use std::net::SocketAddr;
use std::sync::Arc;

use lifecycle::Tasks;
use proto::admission::Gate;
use proto::limits::MAX_GRPC_MESSAGE;
use proto::listener::Connections;
use proto::pb::tunnel::tunnel_server::TunnelServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the exec-server reads its kernel's clock state anew.
const CLOCK_STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
use tokio_util::sync::CancellationToken;

use crate::config::{ExecServerConfig, RelayMode};
use crate::direct::DirectTunnel;
use crate::registration;
use crate::session::ServerContext;

/// Why the exec-server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecServerError {
    /// Neither a relay nor a listen address was given.
    #[error("nothing to do: give --relay URL, --listen ADDR, or both")]
    NoTransport,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running exec-server.
#[derive(Debug)]
pub struct ExecServerHandle {
    registered: watch::Receiver<bool>,
    local_addr: Option<SocketAddr>,
    server_id: String,
    direct: Option<JoinHandle<()>>,
    /// One link per relay.
    links: Vec<JoinHandle<()>>,
    /// Every task; its token ends the sessions (after the grace period).
    tasks: Tasks,
    shutdown: CancellationToken,
    grace: std::time::Duration,
    unacked: Arc<crate::unacked::Unacked>,
}

impl ExecServerHandle {
    /// The budget for output clients have not acknowledged: what it
    /// holds now and at most.
    pub fn unacked(&self) -> &Arc<crate::unacked::Unacked> {
        &self.unacked
    }

    /// The exec-server's id (derived from its public key).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The bound direct-listen address, if listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Waits until the relay registration is live (returns immediately
    /// when there is no relay). Returns false if the server stopped first.
    pub async fn wait_registered(&mut self) -> bool {
        if self.links.is_empty() {
            return true;
        }
        self.registered.wait_for(|r| *r).await.is_ok()
    }

    /// A watch of the registration state.
    pub fn registration(&self) -> watch::Receiver<bool> {
        self.registered.clone()
    }

    /// Waits for the server to stop (after its shutdown token is
    /// cancelled), giving in-flight commands the grace period.
    pub async fn join(mut self) -> Result<(), ExecServerError> {
        self.shutdown.cancelled().await;
        for link in std::mem::take(&mut self.links) {
            let _ = link.await;
        }
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; ending the remaining sessions");
        }
        self.tasks.shutdown().await;
        if let Some(direct) = self.direct.take() {
            let _ = direct.await;
        }
        Ok(())
    }
}

/// Starts the exec-server: binds the direct listener (if any) and starts
/// the relay link (if any). Stops when `shutdown` is cancelled.
pub async fn start(
    config: ExecServerConfig,
    shutdown: CancellationToken,
) -> Result<ExecServerHandle, ExecServerError> {
    if config.relays.is_empty() && config.listen.is_none() {
        return Err(ExecServerError::NoTransport);
    }
    // Sessions outlive the listeners by the grace period; the tasks' token
    // ends them after it.
    let tasks = Tasks::new();
    let sessions = tasks.token().clone();
    let grace = config.shutdown_grace;
    // One link per relay, or one for the whole fleet.
    let relays: Vec<Vec<String>> = match config.relay_mode {
        RelayMode::Each => config.relays.iter().map(|u| vec![u.clone()]).collect(),
        RelayMode::Fleet if config.relays.is_empty() => Vec::new(),
        RelayMode::Fleet => vec![config.relays.clone()],
    };
    let listen = config.listen;
    let ctx = ServerContext::new(config, tasks.clone());
    let server_id = ctx.route.clone();
    // Refusals held back from the log are summed up once per interval.
    {
        let ctx = Arc::clone(&ctx);
        let stop = shutdown.clone();
        tasks.spawn(tracing::debug_span!("refusal summaries"), async move {
            let mut tick = tokio::time::interval(ctx.refusals.interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => ctx.refusals.log_summaries(),
                }
            }
            ctx.refusals.log_summaries();
        });
    }

    // What the kernel says of its clock is told to clients in every hello
    // answer and pong; it may become synchronized (or lose it) while up.
    {
        let ctx = Arc::clone(&ctx);
        let stop = shutdown.clone();
        tasks.spawn(tracing::debug_span!("clock status"), async move {
            let mut tick = tokio::time::interval(CLOCK_STATUS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => ctx.refresh_clock(),
                }
            }
        });
    }

    let mut local_addr = None;
    let direct = match listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ExecServerError::Bind { addr, source })?;
            local_addr = listener.local_addr().ok();
            if let Some(bound) = local_addr {
                let tls = ctx.config.listen_tls.is_some();
                tracing::info!(addr = %bound, tls, "accepting clients directly");
            }
            let conns = Connections::new(ctx.config.listen_limits);
            tasks.spawn(
                tracing::info_span!("direct limits"),
                summarise(
                    Arc::clone(&conns),
                    Arc::clone(&ctx.startups),
                    shutdown.clone(),
                ),
            );
            let svc = TunnelServer::new(DirectTunnel::new(
                Arc::clone(&ctx),
                sessions.clone(),
                Arc::clone(&conns),
            ))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
            let shutdown = shutdown.clone();
            Some(tasks.spawn(
                tracing::info_span!("direct", %addr),
                proto::link_server::serve(
                    tonic::service::Routes::new(svc),
                    proto::listener::incoming(listener, conns, ctx.config.listen_tls.clone()),
                    async move { shutdown.cancelled().await },
                ),
            ))
        }
        None => None,
    };
    // Registered: with at least one relay (each link says its own).
    let (reg_tx, registered) = watch::channel(false);
    let reg_tx = Arc::new(reg_tx);
    let states: Arc<Vec<std::sync::atomic::AtomicBool>> = Arc::new(
        (0..relays.len())
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
    );
    let links = relays
        .into_iter()
        .enumerate()
        .map(|(i, urls)| {
            let ctx = Arc::clone(&ctx);
            // The link stops at shutdown; its sessions follow `sessions`.
            let link_shutdown = shutdown.clone();
            let sessions = sessions.clone();
            let (reg_tx, states) = (Arc::clone(&reg_tx), Arc::clone(&states));
            let span = match urls.as_slice() {
                [url] => tracing::info_span!("relay link", %url),
                fleet => tracing::info_span!("relay link", fleet = %fleet.join(",")),
            };
            tasks.spawn(span, async move {
                let (inner_tx, mut inner_rx) = watch::channel(false);
                let forward = async {
                    while inner_rx.changed().await.is_ok() {
                        let now = *inner_rx.borrow();
                        if let Some(state) = states.get(i) {
                            state.store(now, std::sync::atomic::Ordering::Relaxed);
                        }
                        let any = states
                            .iter()
                            .any(|s| s.load(std::sync::atomic::Ordering::Relaxed));
                        reg_tx.send_replace(any);
                    }
                };
                let run = async {
                    tokio::select! {
                        () = registration::run(urls, ctx, sessions, inner_tx) => {}
                        () = link_shutdown.cancelled() => {}
                    }
                };
                tokio::join!(forward, run);
            })
        })
        .collect();
    Ok(ExecServerHandle {
        registered,
        local_addr,
        server_id,
        direct,
        links,
        tasks,
        shutdown,
        grace,
        unacked: Arc::clone(&ctx.unacked),
    })
}

/// Logs what the direct listener refused, one summary line per interval
/// (never a line per refusal).
async fn summarise(conns: Arc<Connections>, startups: Arc<Gate>, stop: CancellationToken) {
    let mut every = tokio::time::interval(telemetry::limited::SUMMARY_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        telemetry::limited::warn_admission("direct ", &conns, &startups);
    }
}

/// Runs an exec-server until `shutdown` is cancelled.
pub async fn run(
    config: ExecServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ExecServerError> {
    let handle = start(config, shutdown).await?;
    handle.join().await
}
