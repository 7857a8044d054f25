//! The state every session of one exec-server shares: its settings, the
//! handshake's acceptor, the bounds on sessions and on output, the
//! containment of processes, and the sessions parked for resume.

use std::sync::Arc;

use lifecycle::Tasks;
use proto::noise::ReplayGuard;
use proto::session::{Acceptor, KeySource};
use telemetry::limited::Limiter;

use super::park::Parked;
use crate::config::ExecServerConfig;
use crate::contain::Containment;
use crate::credit::Budget;

/// State shared by every session of one exec-server.
#[derive(Debug)]
pub(crate) struct ServerContext {
    /// Settings.
    pub(crate) config: ExecServerConfig,
    /// Keys, authorized keys and the replay guard, for handshakes.
    pub(super) acceptor: Arc<Acceptor>,
    /// The route bound into the handshake prologue (this server's id).
    pub(crate) route: String,
    /// Limits concurrent sessions (authenticated ones: a slot is taken
    /// once message 1 has authenticated).
    pub(super) sessions: Arc<tokio::sync::Semaphore>,
    /// Direct sessions not yet authenticated.
    pub(crate) startups: Arc<proto::admission::Gate>,
    /// Every session and process task.
    pub(crate) tasks: Tasks,
    /// What keeps the commands' processes from outliving them.
    pub(super) containment: Arc<Containment>,
    /// The exec-server's variables every command gets (read at start).
    pub(crate) inherited: crate::environment::Inherited,
    /// Refusals anyone can cause, logged one line per kind per interval.
    pub(crate) refusals: Limiter,
    /// Sessions whose link broke, waiting to be resumed.
    pub(super) parked: Parked,
    /// Output kept for those sessions, against the exec-server's bound.
    pub(super) retained: Arc<Budget>,
    /// Output not yet acknowledged, per client key and in all.
    pub(crate) unacked: Arc<crate::unacked::Unacked>,
}

/// Handshakes the replay guard remembers within its window.
const REPLAY_CAPACITY: usize = 65_536;

impl ServerContext {
    /// Reads this host's clock state anew, for the next hello answers and
    /// pongs.
    pub(crate) fn refresh_clock(&self) {
        let status = Some(telemetry::clock_status::status().to_wire());
        *self
            .acceptor
            .clock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = status;
    }

    /// Shared state for an exec-server.
    pub(crate) fn new(config: ExecServerConfig, tasks: Tasks) -> Arc<Self> {
        let keys: Arc<dyn KeySource> = config.keys.clone();
        let mut acceptor = Acceptor::with_source(config.key.clone(), keys);
        acceptor.login_shell = config.login_shells;
        acceptor.span_batch_max = config
            .span_forwarding
            .as_ref()
            .map_or(0, |f| f.limits().batch_bytes);
        // It remembers nothing from before this start: its ticket is new,
        // so no early data made for an earlier run runs in this one.
        acceptor.replay =
            std::sync::Mutex::new(ReplayGuard::new(config.replay_window, REPLAY_CAPACITY));
        acceptor.clock = std::sync::RwLock::new(Some(telemetry::clock_status::status().to_wire()));
        acceptor.stdin_budget =
            Arc::new(proto::session::window::Budget::new(config.max_stdin_buffer));
        let acceptor = Arc::new(acceptor);
        let route = acceptor.route.clone();
        let sessions = Arc::new(tokio::sync::Semaphore::new(config.max_sessions));
        let startups = proto::admission::Gate::new(config.startups);
        let containment = if config.cgroups {
            Containment::setup()
        } else {
            tracing::info!(
                "cgroups are off (--no-cgroups): a command's processes are contained by their \
                 process group only (a descendant that leaves it survives the command)"
            );
            Containment::without_cgroups()
        };
        Arc::new(Self {
            acceptor,
            route,
            sessions,
            startups,
            tasks,
            containment,
            inherited: config.pass_env.inherited(),
            refusals: Limiter::default(),
            parked: Parked::default(),
            retained: Budget::new(config.resume_total_buffer),
            unacked: crate::unacked::Unacked::new(
                config.max_unacked_output,
                config.max_unacked_output_per_key,
            ),
            config,
        })
    }

    /// The session machine's timers and bounds.
    pub(super) fn limits(&self) -> proto::session::Limits {
        let config = &self.config;
        let mut limits = proto::session::Limits::server_idle(config.idle_timeout);
        limits.handshake_timeout = config.handshake_timeout;
        limits.max_calls = config.max_processes_per_session;
        limits.output_window = config.resume_buffer;
        limits.output_window_max = config.output_window_max.max(config.resume_buffer);
        limits.stdin_window_max = config.stdin_window_max;
        limits.resumable = !config.resume_grace.is_zero();
        limits.resume_grace = config.resume_grace;
        limits
    }
}
