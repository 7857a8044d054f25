//! The sessions the agent holds: one client (kept warm) per route — the
//! same relays or direct address, exec-server key and client key — at
//! most a set number of them. A new route takes the place of the one used
//! least recently among those with no call running (its session closes);
//! when every one is in use, the call is refused as busy (the CLI then runs
//! it itself). Each route is warmed as the latest call or warm for it asked
//! (the server's `warm` option), else as the agent's own policy says
//! ([`Options::warm`](crate::Options::warm)).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proto::keys::{PublicKey, StaticKeypair};
use rex_client::{Client, ClientConfig, TlsSettings, WarmPolicy, WarmStatus};

use crate::forwarding::SpanForwarding;
use crate::route::Route;

/// A route's clients (one per target, made when first tried) and counts.
#[derive(Debug)]
struct Held {
    clients: Vec<Option<Client>>,
    /// The target that worked last (tried first, and the one kept warm).
    current: usize,
    /// Its warm policy.
    warm: WarmPolicy,
    running: u32,
    served: u64,
    last_used: Instant,
}

/// Why a route could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// Every session is in use.
    #[error("it holds {0} sessions, all of them running commands")]
    Busy(usize),
    /// The key file could not be read, or holds another key.
    #[error("{0}")]
    Key(String),
    /// The CA file could not be read.
    #[error(transparent)]
    Ca(#[from] proto::tls::TlsError),
}

/// The sessions held.
#[derive(Debug)]
pub(crate) struct Pool {
    held: Mutex<HashMap<Route, Held>>,
    max: usize,
    warm: WarmPolicy,
    /// Where the calls that ask for it are recorded (each call chooses:
    /// none is recorded unless it asks).
    records: Option<metadata::Persister>,
    /// How the sessions forward their calls' spans.
    spans: SpanForwarding,
}

/// A call's claim on its route's session: counted as running until dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    pool: Arc<Pool>,
    route: Route,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self
            .pool
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.get_mut(&self.route) {
            h.running = h.running.saturating_sub(1);
            h.last_used = Instant::now();
        }
    }
}

/// One held session as `agent status` shows it.
#[derive(Debug, Clone)]
pub(crate) struct HeldStatus {
    /// The exec-server's id.
    pub(crate) server_id: String,
    /// The target in use.
    pub(crate) target: String,
    /// The client's public key.
    pub(crate) client: PublicKey,
    /// Its warm policy's state.
    pub(crate) warm: Option<WarmStatus>,
    /// Calls running.
    pub(crate) running: u32,
    /// Calls served in all.
    pub(crate) served: u64,
}

impl Pool {
    /// A pool of at most `max` sessions, each kept warm by `warm` unless
    /// its calls ask otherwise.
    pub(crate) fn new(
        max: usize,
        warm: WarmPolicy,
        records: Option<metadata::Persister>,
        spans: SpanForwarding,
    ) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(HashMap::new()),
            max: max.max(1),
            warm,
            records,
            spans,
        })
    }

    /// Whether the sessions forward their calls' spans.
    pub(crate) fn forwards_spans(&self) -> bool {
        self.spans.source.is_some()
    }

    /// Most sessions held.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Claims `route`'s session for a call (making room, and reading the
    /// key file, for a new route; warming it as `warm` says, if it says);
    /// the targets' clients in the order to try them.
    pub(crate) fn claim(
        self: &Arc<Self>,
        route: &Route,
        key_file: &Path,
        warm: Option<WarmPolicy>,
    ) -> Result<(Claim, Vec<(usize, Client)>), PoolError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let h = self.entry(&mut held, route, warm)?;
        let mut key = None;
        let n = route.targets.len();
        let mut order = Vec::with_capacity(n);
        let first = h.current;
        for i in (0..n).map(|k| (first + k) % n) {
            order.push((
                i,
                client_of(
                    h,
                    route,
                    i,
                    key_file,
                    &mut key,
                    (self.records.as_ref(), &self.spans),
                )?,
            ));
        }
        h.running += 1;
        h.served += 1;
        h.last_used = Instant::now();
        Ok((
            Claim {
                pool: Arc::clone(self),
                route: route.clone(),
            },
            order,
        ))
    }

    /// Holds `route`'s session (making room, and reading the key file, if
    /// it is new) without a call, warmed as `warm` says if it says: the
    /// client of the target tried first. Its session is established by its
    /// first warm (at once when warms are on) or call.
    pub(crate) fn hold(
        &self,
        route: &Route,
        key_file: &Path,
        warm: Option<WarmPolicy>,
    ) -> Result<Client, PoolError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let h = self.entry(&mut held, route, warm)?;
        let current = h.current;
        client_of(
            h,
            route,
            current,
            key_file,
            &mut None,
            (self.records.as_ref(), &self.spans),
        )
    }

    /// Every route held, with the client of the target tried first.
    pub(crate) fn current(&self) -> Vec<(Route, Client)> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter()
            .filter_map(|(r, h)| {
                let c = h.clients.get(h.current).cloned().flatten()?;
                Some((r.clone(), c))
            })
            .collect()
    }

    /// `route`'s entry, made (in the place of the idle one used least
    /// recently, when full) if it is new, with its warm policy as `warm`
    /// says if it says.
    fn entry<'a>(
        &self,
        held: &'a mut HashMap<Route, Held>,
        route: &Route,
        warm: Option<WarmPolicy>,
    ) -> Result<&'a mut Held, PoolError> {
        if !held.contains_key(route) {
            if held.len() >= self.max {
                let idle = held
                    .iter()
                    .filter(|(_, h)| h.running == 0)
                    .min_by_key(|(_, h)| h.last_used)
                    .map(|(r, _)| r.clone());
                match idle {
                    // Its clients close their sessions once dropped.
                    Some(r) => {
                        held.remove(&r);
                    }
                    None => return Err(PoolError::Busy(held.len())),
                }
            }
            held.insert(
                route.clone(),
                Held {
                    clients: vec![None; route.targets.len()],
                    current: 0,
                    warm: warm.unwrap_or(self.warm),
                    running: 0,
                    served: 0,
                    last_used: Instant::now(),
                },
            );
        }
        let Some(h) = held.get_mut(route) else {
            return Err(PoolError::Key("the route vanished".into()));
        };
        if let Some(w) = warm
            && w != h.warm
        {
            h.warm = w;
            if let Some(Some(c)) = h.clients.get(h.current) {
                c.set_warm_policy(w);
            }
        }
        Ok(h)
    }

    /// Target `i` of `route` worked: it is tried first from now on, and
    /// kept warm instead of the one before.
    pub(crate) fn worked(&self, route: &Route, i: usize) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.get_mut(route)
            && h.current != i
        {
            if let Some(Some(old)) = h.clients.get(h.current) {
                old.set_warm_policy(WarmPolicy::off());
            }
            if let Some(Some(new)) = h.clients.get(i) {
                new.set_warm_policy(h.warm);
            }
            h.current = i;
        }
    }

    /// Calls running on every session.
    pub(crate) fn running(&self) -> u32 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.values().map(|h| h.running).sum()
    }

    /// Every session held, for `agent status`.
    pub(crate) fn status(&self) -> Vec<HeldStatus> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<HeldStatus> = held.iter().map(|(r, h)| status_of(r, h)).collect();
        out.sort_by(|a, b| a.server_id.cmp(&b.server_id).then(a.target.cmp(&b.target)));
        out
    }

    /// `route`'s session, if it is held.
    pub(crate) fn status_of(&self, route: &Route) -> Option<HeldStatus> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(route).map(|h| status_of(route, h))
    }

    /// Closes every session cleanly (waiting, bounded by `within`).
    pub(crate) async fn close_all(&self, within: Duration) {
        let clients: Vec<Client> = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.drain()
                .flat_map(|(_, h)| h.clients.into_iter().flatten())
                .collect()
        };
        let closing = futures::future::join_all(clients.iter().map(Client::close));
        let _ = tokio::time::timeout(within, closing).await;
    }
}

fn status_of(route: &Route, h: &Held) -> HeldStatus {
    let current = h.clients.get(h.current).and_then(Option::as_ref);
    HeldStatus {
        server_id: route.server.server_id(),
        target: route
            .targets
            .get(h.current)
            .map(|t| t.url().to_owned())
            .unwrap_or_default(),
        client: route.client,
        warm: current.map(Client::warm_status),
        running: h.running,
        served: h.served,
    }
}

/// Target `i`'s client of `route`, made (reading the key file once into
/// `key`, recording into `records` the calls that ask) if it is not yet;
/// warmed if it is the target tried first.
fn client_of(
    h: &mut Held,
    route: &Route,
    i: usize,
    key_file: &Path,
    key: &mut Option<StaticKeypair>,
    (records, spans): (Option<&metadata::Persister>, &SpanForwarding),
) -> Result<Client, PoolError> {
    if let Some(Some(c)) = h.clients.get(i) {
        return Ok(c.clone());
    }
    let key = match key {
        Some(k) => k,
        None => key.insert(read_key(key_file, &route.client)?),
    };
    let mut config = ClientConfig::new(key.clone(), route.server, route.targets[i].clone())
        .alternates_of(&route.targets, i);
    config.resume = Some(rex_client::DEFAULT_RESUME);
    config.metadata = records.cloned();
    config.span_source = spans.for_server(&route.server);
    config.tls = match &route.ca_file {
        Some(ca) => TlsSettings::from_ca_file(ca)?,
        None => TlsSettings::system(),
    };
    config.warm = if i == h.current {
        h.warm
    } else {
        WarmPolicy::off()
    };
    let c = Client::new(config);
    if let Some(slot) = h.clients.get_mut(i) {
        *slot = Some(c.clone());
    }
    Ok(c)
}

/// Reads the client's key file (refused if others may read it), which must
/// hold the key pair of `public`.
fn read_key(path: &Path, public: &PublicKey) -> Result<StaticKeypair, PoolError> {
    let key = StaticKeypair::read_file(path).map_err(|e| PoolError::Key(e.to_string()))?;
    if key.public() != *public {
        return Err(PoolError::Key(format!(
            "{} does not hold the key the command named",
            path.display()
        )));
    }
    Ok(key)
}
