//! The fleet's directory in etcd: which relay holds each exec-server's
//! registration, so that any relay of the fleet can reach any exec-server.
//!
//! Each relay writes `<prefix>/servers/<server id>` → [`Entry`] (its own
//! forwarding address, and when the registration was accepted) for every
//! exec-server registered with it, under one lease of its own that it keeps
//! alive; the key is deleted when the registration ends (only while it is
//! still this relay's: another relay may have written it since). A relay
//! that dies stops renewing its lease, and its entries vanish with it.
//!
//! Every relay keeps a copy of the whole prefix (`cache`), read once and
//! then followed with a watch, so a lookup never waits on the store. When
//! the store cannot be reached, the copy is kept as it was (routes already
//! known keep working) and local registrations are unaffected; when it
//! comes back, the relay takes a fresh lease, writes its entries again and
//! reads the prefix anew.
//!
//! The directory is never trusted for identity: it only says where to
//! forward; the session is end to end.
//!
//! Layout:
//! - [`entry`]: keys and values.
//! - `cache`: the local copy.
//! - `dirty`: the entries still to write, oldest first.
//! - `etcd`: the store's API, the part used here.

mod cache;
mod dirty;
pub mod entry;
mod etcd;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use cache::{Cache, Change};
use dirty::Dirty;
use entry::Entry;
pub(crate) use etcd::EtcdError;
use etcd::{Etcd, EventType};

/// The key prefix when none is set.
pub const DEFAULT_PREFIX: &str = "/rex";
/// The lease's time to live when none is set: a dead relay's entries are
/// gone within it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// Each call to the store is bounded by this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Waits between attempts to reach the store: from the first, doubling to
/// the second.
const RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Where the directory is and how this relay appears in it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DirectoryConfig {
    /// etcd v3 endpoints (`http://host:port` or `https://host:port`).
    endpoints: Vec<String>,
    /// Prefix of every key (entries are under `<prefix>/servers/`).
    pub prefix: String,
    /// Time to live of the relay's lease.
    pub ttl: Duration,
    /// The address other relays dial to reach this one.
    pub advertise: String,
    /// CA certificates for `https://` endpoints.
    pub tls: proto::tls::TlsSettings,
}

impl DirectoryConfig {
    /// The directory at the etcd `endpoints`, where other relays reach this
    /// one at `advertise`: keys under [`DEFAULT_PREFIX`], a lease of
    /// [`DEFAULT_TTL`], `https://` endpoints checked against the system's
    /// roots.
    pub fn new(endpoints: Vec<String>, advertise: String) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: DEFAULT_TTL,
            advertise,
            tls: proto::tls::TlsSettings::default(),
        }
    }
}

/// What the directory has done, for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectoryStats {
    /// Whether the store is reachable and the relay's lease alive.
    pub connected: bool,
    /// Entries in the local copy (every relay's, this one's included).
    pub entries: usize,
    /// Entries skipped because they did not parse or did not fit.
    pub skipped: u64,
    /// Writes to the store: leases granted, entries put and deleted.
    pub writes: u64,
    /// Keep-alives sent.
    pub renewals: u64,
    /// Times the local copy was read anew from the store.
    pub snapshots: u64,
    /// The store revision the local copy is current to.
    pub revision: i64,
}

/// A handle on the directory (clones share it).
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    config: DirectoryConfig,
    servers: String,
    local: Mutex<Local>,
    changed: Notify,
    cache: RwLock<Cache>,
    connected: AtomicBool,
    writes: AtomicU64,
    renewals: AtomicU64,
    snapshots: AtomicU64,
}

/// The registrations this relay holds, and those whose entry is not yet
/// what the store should say.
#[derive(Default)]
struct Local {
    next: u64,
    held: HashMap<String, Held>,
    dirty: Dirty,
}

#[derive(Clone, Copy)]
struct Held {
    generation: u64,
    at: jiff::Timestamp,
}

/// An entry this relay keeps in the directory while it lives: dropping it
/// deletes the entry (unless a newer registration of the same server took
/// its place meanwhile).
pub(crate) struct Published {
    inner: Arc<Inner>,
    server_id: String,
    generation: u64,
}

impl Drop for Published {
    fn drop(&mut self) {
        let mut local = self.inner.lock_local();
        if local
            .held
            .get(&self.server_id)
            .is_some_and(|h| h.generation == self.generation)
        {
            local.held.remove(&self.server_id);
            local.dirty.insert(self.server_id.clone());
            drop(local);
            self.inner.changed.notify_one();
        }
    }
}

impl Inner {
    fn lock_local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_write(&self) {
        self.note_writes(1);
    }

    fn note_writes(&self, n: usize) {
        self.writes
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl Directory {
    /// A directory handle; nothing is read or written until [`Self::run`].
    pub(crate) fn new(config: DirectoryConfig) -> Self {
        let servers = entry::servers_prefix(&config.prefix);
        Self {
            inner: Arc::new(Inner {
                cache: RwLock::new(Cache::new(servers.clone())),
                servers,
                config,
                local: Mutex::new(Local::default()),
                changed: Notify::new(),
                connected: AtomicBool::new(false),
                writes: AtomicU64::new(0),
                renewals: AtomicU64::new(0),
                snapshots: AtomicU64::new(0),
            }),
        }
    }

    /// Says in the directory that `server_id` is registered here, until the
    /// returned guard is dropped.
    pub(crate) fn publish(&self, server_id: &str) -> Published {
        let mut local = self.inner.lock_local();
        local.next += 1;
        let generation = local.next;
        local.held.insert(
            server_id.to_owned(),
            Held {
                generation,
                at: jiff::Timestamp::now(),
            },
        );
        local.dirty.insert(server_id.to_owned());
        drop(local);
        self.inner.changed.notify_one();
        Published {
            inner: Arc::clone(&self.inner),
            server_id: server_id.to_owned(),
            generation,
        }
    }

    /// The relay that holds `server_id`'s registration, if the local copy
    /// names one other than this relay.
    pub fn lookup(&self, server_id: &str) -> Option<Entry> {
        let cache = self.inner.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .get(server_id)
            .filter(|e| e.relay != self.inner.config.advertise)
            .cloned()
    }

    /// Counters.
    pub fn stats(&self) -> DirectoryStats {
        let cache = self.inner.cache.read().unwrap_or_else(|e| e.into_inner());
        DirectoryStats {
            connected: self.inner.connected.load(Ordering::Relaxed),
            entries: cache.entries(),
            skipped: cache.skipped(),
            writes: self.inner.writes.load(Ordering::Relaxed),
            renewals: self.inner.renewals.load(Ordering::Relaxed),
            snapshots: self.inner.snapshots.load(Ordering::Relaxed),
            revision: cache.revision(),
        }
    }

    /// Keeps the directory in line with this relay's registrations and the
    /// local copy in line with the directory, reconnecting when the store
    /// goes away, until `stop` is cancelled; then revokes the lease (this
    /// relay's entries go at once).
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut wait = RETRY.0;
        let mut down_since: Option<String> = None;
        loop {
            let mut link = Link::default();
            let result = tokio::select! {
                () = stop.cancelled() => Ok(()),
                r = self.connected(&mut link, &mut down_since) => r,
            };
            self.inner.connected.store(false, Ordering::Relaxed);
            if let (Some(mut etcd), Some(lease)) = (link.etcd, link.lease)
                && stop.is_cancelled()
            {
                // Best effort: otherwise the entries expire with the lease.
                let _ = etcd.revoke(lease).await;
                return;
            }
            if stop.is_cancelled() {
                return;
            }
            if let Err(e) = result {
                if link.lease.is_some() {
                    wait = RETRY.0;
                }
                let why = e.to_string();
                if down_since.as_ref() != Some(&why) {
                    tracing::warn!(
                        error = %why,
                        "directory: lost the store; known routes and local registrations keep working, retrying"
                    );
                    down_since = Some(why);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY.1);
        }
    }

    /// One connection to the store, from the lease to its loss.
    async fn connected(&self, link: &mut Link, down: &mut Option<String>) -> Result<(), EtcdError> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut etcd = Etcd::connect(&config.endpoints, &config.tls, CALL_TIMEOUT).await?;
        link.etcd = Some(etcd.clone());
        let lease = etcd.grant(config.ttl).await?;
        inner.note_write();
        link.lease = Some(lease);
        let mut keep = etcd.keep_alive(lease).await?;
        // A fresh lease: every local registration is written again.
        {
            let mut local = inner.lock_local();
            let held: Vec<String> = local.held.keys().cloned().collect();
            for id in held {
                local.dirty.insert(id);
            }
        }
        self.write_dirty(&mut etcd, lease).await?;
        let mut watch = self.resync(&mut etcd).await?;
        inner.connected.store(true, Ordering::Relaxed);
        if down.take().is_some() {
            tracing::info!("directory: the store is back; entries written again");
        } else {
            tracing::info!(endpoints = %config.endpoints.join(","), "directory: connected");
        }
        let mut renew = tokio::time::interval((config.ttl / 3).max(Duration::from_millis(500)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    keep.renew().await?;
                    inner.renewals.fetch_add(1, Ordering::Relaxed);
                }
                r = keep.answer() => r?,
                () = inner.changed.notified() => self.write_dirty(&mut etcd, lease).await?,
                r = watch.next() => {
                    let r = r?;
                    if r.canceled {
                        if r.compact_revision == 0 {
                            return Err(EtcdError::Ended("watch"));
                        }
                        // Compacted past where the watch was: read anew.
                        watch = self.resync(&mut etcd).await?;
                        continue;
                    }
                    self.apply(r);
                    self.write_dirty(&mut etcd, lease).await?;
                }
            }
        }
    }

    /// Reads the whole prefix into the local copy and watches it from there.
    async fn resync(&self, etcd: &mut Etcd) -> Result<etcd::Watch, EtcdError> {
        let (revision, snapshot) = etcd.snapshot(&self.inner.servers).await?;
        self.inner
            .cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(revision, snapshot);
        self.inner.snapshots.fetch_add(1, Ordering::Relaxed);
        etcd.watch(&self.inner.servers, revision + 1).await
    }

    /// Applies a watch answer to the local copy; an entry of a server held
    /// here that someone else deleted is written again.
    fn apply(&self, answer: etcd::WatchResponse) {
        let revision = answer.header.map_or(0, |h| h.revision);
        let mut deleted = Vec::new();
        let changes: Vec<Change> = answer
            .events
            .into_iter()
            .filter_map(|e| {
                let kind = e.r#type();
                let kv = e.kv?;
                Some(match kind {
                    EventType::Put => Change::Put {
                        key: kv.key,
                        value: kv.value,
                    },
                    EventType::Delete => {
                        deleted.push(kv.key.clone());
                        Change::Delete { key: kv.key }
                    }
                })
            })
            .collect();
        self.inner
            .cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(revision, changes);
        if deleted.is_empty() {
            return;
        }
        let mut local = self.inner.lock_local();
        for key in deleted {
            if let Ok(id) = entry::server_of(&self.inner.servers, &key)
                && local.held.contains_key(id)
            {
                local.dirty.insert(id.to_owned());
            }
        }
    }

    /// Writes what changed locally, oldest first: entries of servers held
    /// here (many in one transaction), deletes of those no longer held.
    /// What fails stays to be written, first.
    async fn write_dirty(&self, etcd: &mut Etcd, lease: i64) -> Result<(), EtcdError> {
        let inner = &self.inner;
        loop {
            let (puts, deletes) = {
                let mut local = inner.lock_local();
                let mut puts = Vec::new();
                let mut deletes = Vec::new();
                while puts.len() < etcd::MAX_TXN_OPS {
                    let Some(id) = local.dirty.pop() else {
                        break;
                    };
                    match local.held.get(&id) {
                        Some(h) => puts.push((id, h.at)),
                        None => deletes.push(id),
                    }
                }
                (puts, deletes)
            };
            if puts.is_empty() && deletes.is_empty() {
                return Ok(());
            }
            let mut unwritten: Vec<String> = Vec::new();
            let mut failure = None;
            if !puts.is_empty() {
                let entries = puts
                    .iter()
                    .map(|(id, at)| {
                        let value = Entry {
                            relay: inner.config.advertise.clone(),
                            registered_at: *at,
                        }
                        .encode();
                        (entry::key(&inner.servers, id), value)
                    })
                    .collect();
                match etcd.put_all(entries, lease).await {
                    Ok(()) => inner.note_writes(puts.len()),
                    Err(e) => {
                        unwritten.extend(puts.into_iter().map(|(id, _)| id));
                        failure = Some(e);
                    }
                }
            }
            for id in deletes {
                if failure.is_some() {
                    unwritten.push(id);
                    continue;
                }
                let key = entry::key(&inner.servers, &id);
                match etcd.delete_if_leased(&key, lease).await {
                    Ok(_) => inner.note_writes(1),
                    Err(e) => {
                        unwritten.push(id);
                        failure = Some(e);
                    }
                }
            }
            if let Some(e) = failure {
                let mut local = inner.lock_local();
                // Back at the front, in their order.
                for id in unwritten.into_iter().rev() {
                    local.dirty.retry(id);
                }
                return Err(e);
            }
        }
    }
}

/// What one connection got as far as, for the revoke at shutdown.
#[derive(Default)]
struct Link {
    etcd: Option<Etcd>,
    lease: Option<i64>,
}
