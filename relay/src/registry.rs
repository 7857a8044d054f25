//! Registered exec-servers and sessions waiting for their exec-server.
//!
//! Critical sections are short and never await, so a plain mutex is used.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use proto::admission::Source;
use proto::keys::PublicKey;
use proto::pb::tunnel::{CloseReason, Frame, RegisterDown};
use proto::routing::SESSION_ID_LEN;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::splice::Outbound;
/// The control stream to a registered exec-server.
pub type ControlSender = mpsc::Sender<Result<RegisterDown, Status>>;
/// A session id.
pub type SessionId = [u8; SESSION_ID_LEN];

/// The exec-server's half of a session, handed to the waiting client side.
#[derive(Debug)]
pub struct AcceptedHalf {
    /// Frames from the exec-server.
    pub inbound: Streaming<Frame>,
    /// Frames to the exec-server.
    pub outbound: Outbound,
}

/// Why a lookup or registration failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// No exec-server is registered under the id.
    #[error("no exec-server with id {0} is registered at this relay")]
    UnknownServer(String),
    /// The exec-server is at its session limit.
    #[error("exec-server {0} has too many sessions")]
    ServerBusy(String),
    /// The relay is at its registration limit.
    #[error("the relay is at its limit of registered exec-servers")]
    Full,
    /// The connection holds its whole share of registrations.
    #[error("too many registrations over this connection")]
    ConnectionFull,
    /// The source address holds its whole share of registrations.
    #[error("too many registrations from this address")]
    SourceFull,
}

/// Where a registration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    /// The connection (its peer address).
    pub connection: Option<SocketAddr>,
    /// The proven key.
    pub key: Option<PublicKey>,
}

impl Origin {
    fn source(&self) -> Option<Source> {
        self.connection.map(|a| Source::of(a.ip()))
    }
}

/// Registrations one connection and one source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Per connection.
    pub per_connection: usize,
    /// Per source address.
    pub per_source: usize,
}

impl Default for Shares {
    fn default() -> Self {
        Self {
            per_connection: usize::MAX,
            per_source: usize::MAX,
        }
    }
}

struct ServerEntry {
    generation: u64,
    control: ControlSender,
    sessions: Arc<Semaphore>,
    origin: Origin,
    /// Cancelled when a newer registration of the same key replaces it.
    replaced: CancellationToken,
}

struct Pending {
    server_id: String,
    deliver: oneshot::Sender<AcceptedHalf>,
}

#[derive(Default)]
struct Inner {
    next_generation: u64,
    servers: HashMap<String, ServerEntry>,
    pending: HashMap<SessionId, Pending>,
    by_connection: HashMap<SocketAddr, usize>,
    by_source: HashMap<Source, usize>,
}

impl Inner {
    fn count(&mut self, origin: Origin, up: bool) {
        fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: K, up: bool) {
            if up {
                *map.entry(k).or_insert(0) += 1;
            } else if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        }
        if let Some(c) = origin.connection {
            bump(&mut self.by_connection, c, up);
        }
        if let Some(s) = origin.source() {
            bump(&mut self.by_source, s, up);
        }
    }

    fn remove_server(&mut self, server_id: &str) -> Option<ServerEntry> {
        let entry = self.servers.remove(server_id)?;
        self.count(entry.origin, false);
        Some(entry)
    }
}

/// The relay's routing table.
pub struct Registry {
    inner: Mutex<Inner>,
    max_registrations: usize,
    max_sessions_per_server: usize,
    shares: Shares,
}

/// A registration held by a live control stream; dropping it unregisters
/// (unless a newer registration for the same id replaced it).
pub struct RegistrationGuard {
    registry: Arc<Registry>,
    server_id: String,
    generation: u64,
    /// Cancelled when a newer registration of the same key replaces this
    /// one (the older exec-server has then been told).
    pub replaced: CancellationToken,
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if inner
            .servers
            .get(&self.server_id)
            .is_some_and(|e| e.generation == self.generation)
        {
            inner.remove_server(&self.server_id);
        }
    }
}

/// A session announced to an exec-server and not yet accepted.
pub struct Announced {
    /// The session id.
    pub session_id: SessionId,
    /// Resolves when the exec-server accepts.
    pub accepted: oneshot::Receiver<AcceptedHalf>,
    /// The session slot, held for the session's life.
    pub permit: OwnedSemaphorePermit,
    /// The exec-server's control stream, to send the announcement on.
    pub control: ControlSender,
}

impl Registry {
    /// A new, empty table.
    pub fn new(max_registrations: usize, max_sessions_per_server: usize) -> Arc<Self> {
        Self::with_shares(
            max_registrations,
            max_sessions_per_server,
            Shares::default(),
        )
    }

    /// A new, empty table whose registrations are shared out per
    /// connection and per source.
    pub fn with_shares(
        max_registrations: usize,
        max_sessions_per_server: usize,
        shares: Shares,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            max_registrations,
            max_sessions_per_server,
            shares,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain maps; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an exec-server (it has proven its key). A registration
    /// of a key already registered replaces the older one, which is told
    /// why on its control stream (and its guard's `replaced` fires): the
    /// key holder that came last wins, so an exec-server that reconnects
    /// after a blip or a relay restart always gets its route back.
    pub fn register(
        self: &Arc<Self>,
        server_id: &str,
        control: ControlSender,
        origin: Origin,
    ) -> Result<RegistrationGuard, RegistryError> {
        let mut inner = self.lock();
        let old = inner.servers.get(server_id).map(|e| e.origin);
        let held_by = |same: bool, n: Option<&usize>| n.copied().unwrap_or(0) - usize::from(same);
        if let Some(c) = origin.connection {
            let same = old.is_some_and(|o| o.connection == Some(c));
            if held_by(same, inner.by_connection.get(&c)) >= self.shares.per_connection {
                return Err(RegistryError::ConnectionFull);
            }
        }
        if let Some(s) = origin.source() {
            let same = old.is_some_and(|o| o.source() == Some(s));
            if held_by(same, inner.by_source.get(&s)) >= self.shares.per_source {
                return Err(RegistryError::SourceFull);
            }
        }
        if old.is_none() && inner.servers.len() >= self.max_registrations {
            return Err(RegistryError::Full);
        }
        if let Some(older) = inner.remove_server(server_id) {
            let notice = proto::routing::refuse(
                tonic::Code::AlreadyExists,
                "another exec-server proved the same key and took over its registration",
                CloseReason::Replaced,
            );
            let _ = older.control.try_send(Err(notice));
            older.replaced.cancel();
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let sessions = Arc::new(Semaphore::new(self.max_sessions_per_server));
        let replaced = CancellationToken::new();
        inner.servers.insert(
            server_id.to_owned(),
            ServerEntry {
                generation,
                control,
                sessions,
                origin,
                replaced: replaced.clone(),
            },
        );
        inner.count(origin, true);
        Ok(RegistrationGuard {
            registry: Arc::clone(self),
            server_id: server_id.to_owned(),
            generation,
            replaced,
        })
    }

    /// Ends the registrations `keep` no longer admits (the allow-list
    /// changed), telling each why. Returns how many ended.
    pub fn retain(&self, keep: impl Fn(&Origin) -> bool) -> usize {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .servers
            .iter()
            .filter(|(_, e)| !keep(&e.origin))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Some(entry) = inner.remove_server(id) {
                let notice = proto::routing::refuse(
                    tonic::Code::PermissionDenied,
                    "this exec-server key is no longer on the relay's allow-list",
                    CloseReason::NotAllowed,
                );
                let _ = entry.control.try_send(Err(notice));
                entry.replaced.cancel();
            }
        }
        gone.len()
    }

    /// Whether an exec-server is registered.
    pub fn is_registered(&self, server_id: &str) -> bool {
        self.lock().servers.contains_key(server_id)
    }

    /// Number of registered exec-servers.
    pub fn registrations(&self) -> usize {
        self.lock().servers.len()
    }

    /// Reserves a session slot on an exec-server and records a pending
    /// session for it to accept.
    pub fn announce(&self, server_id: &str) -> Result<Announced, RegistryError> {
        let mut inner = self.lock();
        let entry = inner
            .servers
            .get(server_id)
            .ok_or_else(|| RegistryError::UnknownServer(server_id.to_owned()))?;
        let permit = Arc::clone(&entry.sessions)
            .try_acquire_owned()
            .map_err(|_| RegistryError::ServerBusy(server_id.to_owned()))?;
        let control = entry.control.clone();
        let mut session_id = [0u8; SESSION_ID_LEN];
        loop {
            rand::fill(&mut session_id);
            if !inner.pending.contains_key(&session_id) {
                break;
            }
        }
        let (deliver, accepted) = oneshot::channel();
        inner.pending.insert(
            session_id,
            Pending {
                server_id: server_id.to_owned(),
                deliver,
            },
        );
        Ok(Announced {
            session_id,
            accepted,
            permit,
            control,
        })
    }

    /// Forgets a pending session (timed out or failed to announce).
    pub fn cancel(&self, session_id: &SessionId) {
        self.lock().pending.remove(session_id);
    }

    /// Takes a pending session for `server_id`. Fails if the session is
    /// unknown (or timed out), or belongs to another exec-server (then it
    /// stays pending for its own).
    fn claim(
        &self,
        session_id: &SessionId,
        server_id: &str,
    ) -> Result<oneshot::Sender<AcceptedHalf>, Status> {
        let mut inner = self.lock();
        match inner.pending.get(session_id) {
            Some(p) if p.server_id != server_id => Err(Status::permission_denied(
                "session belongs to another exec-server",
            )),
            Some(_) => inner
                .pending
                .remove(session_id)
                .map(|p| p.deliver)
                .ok_or_else(|| Status::not_found("no such session is waiting")),
            None => Err(Status::not_found("no such session is waiting (timed out?)")),
        }
    }

    /// Hands the exec-server's half to the waiting client side. Fails if the
    /// session is unknown or belongs to another exec-server.
    pub fn accept(
        &self,
        session_id: &SessionId,
        server_id: &str,
        half: AcceptedHalf,
    ) -> Result<(), Status> {
        self.claim(session_id, server_id)?
            .send(half)
            .map_err(|_| Status::not_found("the client gave up on this session"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> (ControlSender, mpsc::Receiver<Result<RegisterDown, Status>>) {
        mpsc::channel(4)
    }

    fn at(ip: [u8; 4], port: u16) -> Origin {
        Origin {
            connection: Some(SocketAddr::from((ip, port))),
            key: None,
        }
    }

    #[test]
    fn a_replaced_registration_is_told_and_shares_are_enforced() {
        let r = Registry::with_shares(
            100,
            10,
            Shares {
                per_connection: 2,
                per_source: 3,
            },
        );
        let (c1, mut r1) = control();
        let (c2, _r2) = control();
        let g1 = r.register("s", c1, at([127, 0, 0, 1], 1000)).unwrap();
        // The same key again (a reconnect): the older one is told, and
        // its guard no longer unregisters.
        let g2 = r.register("s", c2, at([127, 0, 0, 1], 1001)).unwrap();
        assert!(g1.replaced.is_cancelled());
        let notice = r1.try_recv().unwrap().unwrap_err();
        assert_eq!(
            proto::routing::refusal(&notice),
            Some(CloseReason::Replaced)
        );
        drop(g1);
        assert!(r.is_registered("s"));
        // Per connection: 2.
        let (c, _x) = control();
        let _a = r
            .register("a", c.clone(), at([127, 0, 0, 1], 1001))
            .unwrap();
        assert!(matches!(
            r.register("b", c.clone(), at([127, 0, 0, 1], 1001)),
            Err(RegistryError::ConnectionFull)
        ));
        // Per source: 3 (s, a, and one more from another connection).
        let _b = r
            .register("b", c.clone(), at([127, 0, 0, 1], 1002))
            .unwrap();
        assert!(matches!(
            r.register("d", c.clone(), at([127, 0, 0, 1], 1003)),
            Err(RegistryError::SourceFull)
        ));
        // Replacing from a full source and connection is still allowed.
        assert!(r.register("s", c.clone(), at([127, 0, 0, 1], 1001)).is_ok());
        // Another source has its own share.
        assert!(r.register("d", c, at([127, 0, 0, 2], 1)).is_ok());
        drop(g2);
    }

    #[test]
    fn retain_ends_registrations_no_longer_allowed() {
        let r = Registry::new(10, 10);
        let (c1, mut r1) = control();
        let (c2, _r2) = control();
        let g1 = r.register("a", c1, at([127, 0, 0, 1], 1)).unwrap();
        let _g2 = r.register("b", c2, at([127, 0, 0, 2], 1)).unwrap();
        assert_eq!(
            r.retain(|o| o
                .connection
                .is_some_and(|c| c.ip() != std::net::Ipv4Addr::LOCALHOST)),
            1
        );
        assert!(g1.replaced.is_cancelled());
        assert!(!r.is_registered("a"));
        let notice = r1.try_recv().unwrap().unwrap_err();
        assert_eq!(
            proto::routing::refusal(&notice),
            Some(CloseReason::NotAllowed)
        );
    }

    #[test]
    fn unknown_server_is_reported() {
        let r = Registry::new(10, 10);
        assert!(matches!(
            r.announce("x"),
            Err(RegistryError::UnknownServer(_))
        ));
    }

    #[test]
    fn newer_registration_survives_older_guard_drop() {
        let r = Registry::new(10, 10);
        let (c1, _r1) = control();
        let (c2, _r2) = control();
        let g1 = r.register("s", c1, Origin::default()).unwrap();
        let g2 = r.register("s", c2, Origin::default()).unwrap();
        drop(g1);
        assert!(r.is_registered("s"));
        drop(g2);
        assert!(!r.is_registered("s"));
    }

    #[test]
    fn session_limit_is_enforced_and_released() {
        let r = Registry::new(10, 2);
        let (c, _rx) = control();
        let _g = r.register("s", c, Origin::default()).unwrap();
        let a = r.announce("s").unwrap();
        let _b = r.announce("s").unwrap();
        assert!(matches!(r.announce("s"), Err(RegistryError::ServerBusy(_))));
        drop(a);
        assert!(r.announce("s").is_ok());
    }

    #[test]
    fn registration_limit() {
        let r = Registry::new(1, 2);
        let (c1, _r1) = control();
        let (c2, _r2) = control();
        let _g = r.register("a", c1, Origin::default()).unwrap();
        assert!(matches!(
            r.register("b", c2, Origin::default()),
            Err(RegistryError::Full)
        ));
    }

    #[test]
    fn pending_sessions_are_bound_to_their_server_and_cancellable() {
        let r = Registry::new(10, 10);
        let (c1, _r1) = control();
        let (c2, _r2) = control();
        let _g1 = r.register("s", c1, Origin::default()).unwrap();
        let _g2 = r.register("t", c2, Origin::default()).unwrap();
        let a = r.announce("s").unwrap();
        // Another exec-server cannot take it, and it stays pending for "s".
        let err = r.claim(&a.session_id, "t").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(r.claim(&a.session_id, "s").is_ok());
        // Claimed once: gone.
        let err = r.claim(&a.session_id, "s").unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        // A cancelled (timed-out) session cannot be claimed.
        let b = r.announce("s").unwrap();
        r.cancel(&b.session_id);
        let err = r.claim(&b.session_id, "s").unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
}
