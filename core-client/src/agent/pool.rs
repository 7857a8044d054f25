//! The sessions the agent holds: one client (kept warm) per route — the
//! same relays or direct address, exec-server key and client key — at
//! most a set number of them. A new route takes the place of the one used
//! least recently among those with no call running; when every one is in
//! use, the call is refused as busy (the CLI then runs it itself).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proto::keys::{PublicKey, StaticKeypair};
use rex_client::{Client, ClientConfig, Target, TlsSettings, WarmPolicy, WarmStatus};

/// What a session is held for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The targets, in the order they are tried.
    pub targets: Vec<Target>,
    /// The exec-server's key.
    pub server: PublicKey,
    /// The client's public key.
    pub client: PublicKey,
    /// The CA certificates `https://` relays are checked against (`None`:
    /// the system's).
    pub ca_file: Option<std::path::PathBuf>,
}

/// A route's clients (one per target, made when first tried) and counts.
#[derive(Debug)]
struct Held {
    clients: Vec<Option<Client>>,
    /// The target that worked last (tried first).
    current: usize,
    running: u32,
    served: u64,
    last_used: Instant,
}

/// Why a route could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
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
pub struct Pool {
    held: Mutex<HashMap<Route, Held>>,
    max: usize,
    warm: WarmPolicy,
}

/// A call's claim on its route's session: counted as running until dropped.
#[derive(Debug)]
pub struct Claim {
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
pub struct HeldStatus {
    /// The exec-server's id.
    pub server_id: String,
    /// The target in use.
    pub target: String,
    /// The client's public key.
    pub client: PublicKey,
    /// Its warm policy's state.
    pub warm: Option<WarmStatus>,
    /// Calls running.
    pub running: u32,
    /// Calls served in all.
    pub served: u64,
}

impl Pool {
    /// A pool of at most `max` sessions, each kept warm by `warm`.
    pub fn new(max: usize, warm: WarmPolicy) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(HashMap::new()),
            max: max.max(1),
            warm,
        })
    }

    /// Most sessions held.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Claims `route`'s session for a call (making room, and reading the
    /// key file, for a new route); the targets' clients in the order to
    /// try them.
    pub fn claim(
        self: &Arc<Self>,
        route: &Route,
        key_file: &Path,
    ) -> Result<(Claim, Vec<(usize, Client)>), PoolError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.contains_key(route) {
            if held.len() >= self.max {
                let idle = held
                    .iter()
                    .filter(|(_, h)| h.running == 0)
                    .min_by_key(|(_, h)| h.last_used)
                    .map(|(r, _)| r.clone());
                match idle {
                    // Its client closes its session once dropped.
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
                    running: 0,
                    served: 0,
                    last_used: Instant::now(),
                },
            );
        }
        let Some(h) = held.get_mut(route) else {
            return Err(PoolError::Key("the route vanished".into()));
        };
        let mut key = None;
        let n = route.targets.len();
        let mut order = Vec::with_capacity(n);
        for i in (0..n).map(|k| (h.current + k) % n) {
            let client = match &h.clients[i] {
                Some(c) => c.clone(),
                None => {
                    let key = match &key {
                        Some(k) => k,
                        None => key.insert(read_key(key_file, &route.client)?),
                    };
                    let mut config =
                        ClientConfig::new(key.clone(), route.server, route.targets[i].clone())
                            .alternates_of(&route.targets, i);
                    config.resume = Some(rex_client::DEFAULT_RESUME);
                    config.tls = match &route.ca_file {
                        Some(ca) => TlsSettings::from_ca_file(ca)?,
                        None => TlsSettings::system(),
                    };
                    config.warm = if i == h.current {
                        self.warm
                    } else {
                        WarmPolicy::off()
                    };
                    let c = Client::new(config);
                    h.clients[i] = Some(c.clone());
                    c
                }
            };
            order.push((i, client));
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

    /// Target `i` of `route` worked: it is tried first from now on, and
    /// kept warm instead of the one before.
    pub fn worked(&self, route: &Route, i: usize) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.get_mut(route)
            && h.current != i
        {
            if let Some(Some(old)) = h.clients.get(h.current) {
                old.set_warm_policy(WarmPolicy::off());
            }
            if let Some(Some(new)) = h.clients.get(i) {
                new.set_warm_policy(self.warm);
            }
            h.current = i;
        }
    }

    /// Calls running on every session.
    pub fn running(&self) -> u32 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.values().map(|h| h.running).sum()
    }

    /// Every session held, for `agent status`.
    pub fn status(&self) -> Vec<HeldStatus> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<HeldStatus> = held
            .iter()
            .map(|(route, h)| {
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
            })
            .collect();
        out.sort_by(|a, b| a.server_id.cmp(&b.server_id).then(a.target.cmp(&b.target)));
        out
    }

    /// Closes every session cleanly (waiting, bounded by `within`).
    pub async fn close_all(&self, within: Duration) {
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
