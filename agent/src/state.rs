//! The running agent's shared state: its pool of sessions and tasks, when
//! a call last started or ended (the idle timer), the status answer, the
//! warms asked for, and what is written out after each call (its spans
//! and record) before `flushed` is answered.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use lifecycle::Tasks;
use proto::pb::agent::{self as wire, reply};
use rex_client::Client;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::forwarding::SpanForwarding;
use crate::pool::{self, Pool};
use crate::records::AgentRecords;
use crate::route::{self, Route};

/// The running agent's shared state.
#[derive(Debug)]
pub(crate) struct Agent {
    /// The sessions held.
    pub(crate) pool: Arc<Pool>,
    /// Every task of the agent's (connections, and each call's stdin and
    /// requests).
    pub(crate) tasks: Tasks,
    /// Most connections open at once.
    pub(crate) max_connections: usize,
    /// Calls whose spans and record are being written out after their
    /// end (at most `max_connections`; beyond, the background writers
    /// write them without a barrier).
    pub(crate) writing_out: Arc<Semaphore>,
    /// Cancelled to stop the agent (`agent stop`, or the shutdown it was
    /// given).
    pub(crate) stop: CancellationToken,
    started: SystemTime,
    /// With no call for this long it stops.
    persist: Option<Duration>,
    /// Writes the agent's spans now, when they go to the local trace file.
    flusher: Option<telemetry::setup::Flusher>,
    /// The records it keeps for its callers.
    records: Option<AgentRecords>,
    /// When a call last started or ended (for the idle timer).
    last_activity: Mutex<Instant>,
    /// Wall-clock twin of `last_activity` (for `status`).
    last_activity_unix_ms: AtomicU64,
}

impl Agent {
    /// The agent `options` describe (their `prewarm` aside), stopping when
    /// `shutdown` is cancelled.
    pub(crate) fn new(options: Options, shutdown: &CancellationToken) -> Arc<Self> {
        let records = options.data_dir.as_deref().and_then(AgentRecords::open);
        let spans = SpanForwarding::new(options.data_dir.as_deref(), options.forward_spans);
        let max_connections = options.max_connections.max(1);
        Arc::new(Self {
            pool: Pool::new(
                options.max_sessions,
                options.warm,
                records.as_ref().map(|r| r.store.clone()),
                spans,
            ),
            tasks: Tasks::new(),
            max_connections,
            writing_out: Arc::new(Semaphore::new(max_connections)),
            stop: shutdown.child_token(),
            started: SystemTime::now(),
            persist: options.persist,
            flusher: options.flusher,
            records,
            last_activity: Mutex::new(Instant::now()),
            last_activity_unix_ms: AtomicU64::new(unix_ms(SystemTime::now())),
        })
    }

    /// Notes a call starting or ending (or a warm asked for): the idle
    /// timer starts again.
    pub(crate) fn activity(&self) {
        *self
            .last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.last_activity_unix_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// When the agent stops for idleness, if it will.
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        let persist = self.persist?;
        if self.pool.running() > 0 {
            return None;
        }
        let since = *self
            .last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(since + persist)
    }

    /// How a call whose CLI asked `asked` is recorded: in the agent's
    /// store if it is the CLI's, else not at all (the CLI records it).
    pub(crate) fn recording(&self, asked: Option<&wire::RecordIn>) -> rex_client::Recording {
        match (asked, &self.records) {
            (Some(asked), Some(records)) if records.is_for(Path::new(&asked.data_dir)) => {
                rex_client::Recording::On { args: asked.args }
            }
            _ => rex_client::Recording::Off,
        }
    }

    /// Writes the spans ended so far and, with `records`, saves the records
    /// taken so far: the `flushed` reply that says so (with why a record
    /// could not be saved, if so).
    pub(crate) async fn write_out(&self, records: bool) -> wire::Reply {
        let flush_records = async {
            match &self.records {
                Some(r) if records => r.flush().await,
                _ => None,
            }
        };
        let (record_error, ()) = tokio::join!(flush_records, self.flush_spans());
        wire::Reply {
            body: Some(reply::Body::Flushed(wire::Flushed {
                record_error: record_error.unwrap_or_default(),
            })),
            ..wire::Reply::default()
        }
    }

    /// Writes the spans ended so far, if they go to the local trace file.
    pub(crate) async fn flush_spans(&self) {
        if let Some(flusher) = self.flusher.clone() {
            let _ = tokio::task::spawn_blocking(move || flusher.flush()).await;
        }
    }

    /// The status answer: the agent, and each session it holds.
    pub(crate) fn status(&self) -> wire::Status {
        let running = self.pool.running();
        let idle_until = match self.persist {
            Some(p) if running == 0 => {
                self.last_activity_unix_ms.load(Ordering::Relaxed)
                    + u64::try_from(p.as_millis()).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        wire::Status {
            pid: std::process::id(),
            started_unix_ms: unix_ms(self.started),
            persist_ms: self
                .persist
                .map_or(0, |p| u64::try_from(p.as_millis()).unwrap_or(u64::MAX)),
            idle_until_unix_ms: idle_until,
            max_sessions: u32::try_from(self.pool.max()).unwrap_or(u32::MAX),
            calls_running: running,
            sessions: self.pool.status().into_iter().map(held_of).collect(),
        }
    }

    /// Holds `route`'s session (warmed as it says), or says why not.
    pub(crate) fn hold(&self, route: &wire::Route) -> Result<(Route, Client), String> {
        let asked = route::route_of(route)?;
        let client = self
            .pool
            .hold(&asked.route, &asked.key_file, asked.warm)
            .map_err(|e| e.to_string())?;
        Ok((asked.route, client))
    }

    /// `agent warm`: each route's session (every one held, when none is
    /// named) warmed now, its cycle starting again.
    pub(crate) async fn warm_now(&self, routes: &[wire::Route]) -> wire::Warmed {
        let mut refused = Vec::new();
        let clients: Vec<(Route, Client)> = if routes.is_empty() {
            self.pool.current()
        } else {
            routes
                .iter()
                .filter_map(|r| self.hold(r).map_err(|e| refused.push(e)).ok())
                .collect()
        };
        futures::future::join_all(clients.iter().map(|(_, c)| c.warm_now())).await;
        wire::Warmed {
            sessions: clients
                .iter()
                .filter_map(|(route, _)| self.pool.status_of(route))
                .map(held_of)
                .collect(),
            refused,
        }
    }

    /// Closes every session (waiting at most `within`) and stops the record
    /// writer (as long again, at most).
    pub(crate) async fn close(&self, within: Duration) {
        self.tasks.token().cancel();
        self.pool.close_all(within).await;
        if let Some(records) = &self.records {
            records.shutdown(within).await;
        }
    }
}

/// A held session as the agent protocol shows it.
fn held_of(h: pool::HeldStatus) -> wire::Held {
    let ms = |t: Option<SystemTime>| t.map_or(0, unix_ms);
    let warm = h.warm.as_ref();
    wire::Held {
        server_id: h.server_id,
        target: h.target,
        client_key: h.client.to_string(),
        warm_enabled: warm.is_some_and(|w| w.enabled),
        warm_interval_ms: warm.map_or(0, |w| {
            u64::try_from(w.interval.as_millis()).unwrap_or(u64::MAX)
        }),
        next_warm_unix_ms: ms(warm.and_then(|w| w.next_warm_at)),
        last_warm_unix_ms: ms(warm.and_then(|w| w.last_warm_at)),
        last_warm_failure: match warm.and_then(|w| w.last_outcome.as_ref()) {
            Some(rex_client::WarmOutcome::Failed(e)) => e.to_string(),
            _ => String::new(),
        },
        last_latency_us: warm
            .and_then(|w| w.last_latency)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        calls_running: h.running,
        calls_served: h.served,
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
