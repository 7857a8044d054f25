//! Registered exec-servers and sessions waiting for their exec-server.
//!
//! Only a registration that has proven its key enters the table (the
//! proof runs before, outside it), so an attempt that has not proven one
//! never takes room from one that has. The table cannot lock a real
//! exec-server out:
//! - a key on the relay's allow-list has room reserved: it is never
//!   refused for want of room, nor displaced to make room;
//! - otherwise, a newcomer whose source address holds its whole share
//!   displaces that address's least valuable entry, and a newcomer to a
//!   full table displaces the least valuable entry of the address holding
//!   the most; the least valuable is the oldest that has never carried a
//!   session, else the oldest. The displaced exec-server is told (a `BUSY`
//!   refusal) and registers again as after any lost link.
//!
//! Critical sections are short and never await, so a plain mutex is used.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use proto::admission::Source;
use proto::keys::PublicKey;
use proto::pb::tunnel::{CloseReason, RegisterDown};
use proto::routing::{SESSION_ID_LEN, SPARE_TOKEN_LEN};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::credit::{CreditStats, Outbox, SessionCredit};
use crate::splice::Outbound;
use crate::wire::Inbound;
/// The control stream to a registered exec-server.
type ControlSender = mpsc::Sender<Result<RegisterDown, Status>>;
/// A session id.
pub(crate) type SessionId = [u8; SESSION_ID_LEN];

/// The exec-server's half of a session, handed to the waiting client side.
#[derive(Debug)]
pub(crate) struct AcceptedHalf {
    /// Frames from the exec-server.
    pub(crate) inbound: Inbound,
    /// Frames to the exec-server.
    pub(crate) outbound: Outbound,
    /// The relay's credit for the frames from the exec-server, when it
    /// asked for it.
    pub(crate) credit: Option<Arc<SessionCredit>>,
}

/// An `Accept` stream that asked for the relay's credit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamCredit {
    /// Its name (`rex-credit-stream`).
    pub(crate) stream: u64,
    /// The window it asked for (`rex-credit-window`; 0: the least).
    pub(crate) asked: u32,
}

/// Why a lookup or registration failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RegistryError {
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
pub(crate) struct Origin {
    /// The connection (its peer address).
    pub(crate) connection: Option<SocketAddr>,
    /// The proven key.
    pub(crate) key: Option<PublicKey>,
}

impl Origin {
    fn source(&self) -> Option<Source> {
        self.connection.map(|a| Source::of(a.ip()))
    }
}

/// Registrations one connection and one source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shares {
    /// Per connection.
    pub(crate) per_connection: usize,
    /// Per source address.
    pub(crate) per_source: usize,
}

impl Default for Shares {
    fn default() -> Self {
        Self {
            per_connection: usize::MAX,
            per_source: usize::MAX,
        }
    }
}

/// Whether two tokens are equal, in time that does not depend on where
/// they differ.
fn same_token(a: &[u8; SPARE_TOKEN_LEN], b: &[u8; SPARE_TOKEN_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The most spare `Accept` streams one registration keeps at the relay.
const MAX_SPARES: usize = 2;

struct ServerEntry {
    generation: u64,
    spare_token: [u8; SPARE_TOKEN_LEN],
    spares: Vec<AcceptedHalf>,
    control: ControlSender,
    sessions: Arc<Semaphore>,
    origin: Origin,
    /// Cancelled when a newer registration of the same key replaces it.
    replaced: CancellationToken,
    /// On the allow-list: room reserved, never displaced.
    reserved: bool,
    /// Whether it has accepted a session (a client reached it).
    served: bool,
    /// Its sessions' credit grants, waiting for its control stream.
    outbox: Arc<Outbox>,
}

struct Pending {
    server_id: String,
    deliver: oneshot::Sender<AcceptedHalf>,
    /// The announcing registration's grants (its session's `Accept` is
    /// counted there, even if a newer registration of the key came since).
    outbox: Arc<Outbox>,
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

    /// The entry to displace (never a reserved one, nor `newcomer`'s own):
    /// from `source` if given, else from the source holding the most
    /// displaceable entries; the oldest that has never carried a session,
    /// else the oldest.
    fn victim(&self, source: Option<Option<Source>>, newcomer: &str) -> Option<String> {
        let displaceable = || {
            self.servers
                .iter()
                .filter(|(id, e)| !e.reserved && id.as_str() != newcomer)
        };
        let source = match source {
            Some(s) => s,
            None => {
                let mut held: HashMap<Option<Source>, usize> = HashMap::new();
                for (_, e) in displaceable() {
                    *held.entry(e.origin.source()).or_insert(0) += 1;
                }
                held.into_iter().max_by_key(|(_, n)| *n)?.0
            }
        };
        displaceable()
            .filter(|(_, e)| e.origin.source() == source)
            .min_by_key(|(_, e)| (e.served, e.generation))
            .map(|(id, _)| id.clone())
    }

    /// Removes `server_id` to make room, telling it why.
    fn displace(&mut self, server_id: &str, why: &'static str) {
        if let Some(entry) = self.remove_server(server_id) {
            let notice =
                proto::routing::refuse(tonic::Code::ResourceExhausted, why, CloseReason::Busy);
            let _ = entry.control.try_send(Err(notice));
            entry.replaced.cancel();
        }
    }
}

/// The relay's routing table.
pub struct Registry {
    inner: Mutex<Inner>,
    max_registrations: usize,
    max_sessions_per_server: usize,
    shares: Shares,
    credit: Arc<CreditStats>,
    /// Sessions refused because their exec-server had its whole share.
    busy: AtomicU64,
}

/// A registration held by a live control stream; dropping it unregisters
/// (unless a newer registration for the same id replaced it).
pub(crate) struct RegistrationGuard {
    registry: Arc<Registry>,
    server_id: String,
    generation: u64,
    /// Cancelled when a newer registration of the same key replaces this
    /// one (the older exec-server has then been told).
    pub(crate) replaced: CancellationToken,
    /// The token with which this registration keeps spare streams.
    pub(crate) spare_token: [u8; SPARE_TOKEN_LEN],
    /// Its sessions' credit grants, for its control stream to send.
    pub(crate) outbox: Arc<Outbox>,
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        self.outbox.close();
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
pub(crate) struct Announced {
    /// The session id.
    pub(crate) session_id: SessionId,
    /// Resolves when the exec-server accepts.
    pub(crate) accepted: oneshot::Receiver<AcceptedHalf>,
    /// The session slot, held for the session's life.
    pub(crate) permit: OwnedSemaphorePermit,
    /// The exec-server's control stream, to send the announcement on.
    pub(crate) control: ControlSender,
}

impl Registry {
    /// A new, empty table.
    #[cfg(test)]
    fn new(max_registrations: usize, max_sessions_per_server: usize) -> Arc<Self> {
        Self::with_shares(
            max_registrations,
            max_sessions_per_server,
            Shares::default(),
            0,
        )
    }

    /// A new, empty table whose registrations are shared out per
    /// connection and per source, and whose sessions share a pool of
    /// `credit_pool` bytes of credit beyond their floors.
    pub(crate) fn with_shares(
        max_registrations: usize,
        max_sessions_per_server: usize,
        shares: Shares,
        credit_pool: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            max_registrations,
            max_sessions_per_server,
            shares,
            credit: CreditStats::new(credit_pool),
            busy: AtomicU64::new(0),
        })
    }

    /// What the relay's credit for its registrations' sessions has done.
    pub fn credit(&self) -> &Arc<CreditStats> {
        &self.credit
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain maps; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Registry::register_with_credit`] with no credit.
    #[cfg(test)]
    pub(crate) fn register(
        self: &Arc<Self>,
        server_id: &str,
        control: ControlSender,
        origin: Origin,
        reserved: bool,
    ) -> Result<RegistrationGuard, RegistryError> {
        self.register_with_credit(server_id, control, (origin, reserved), 0)
    }

    /// Registers an exec-server (it has proven its key; `reserved`: the
    /// key is on the allow-list), told `credit_window` for its sessions (0:
    /// none). A registration
    /// of a key already registered replaces the older one, which is told
    /// why on its control stream (and its guard's `replaced` fires): the
    /// key holder that came last wins, so an exec-server that reconnects
    /// after a blip or a relay restart always gets its route back. Room is
    /// made as the module says; a connection over its share is refused.
    pub(crate) fn register_with_credit(
        self: &Arc<Self>,
        server_id: &str,
        control: ControlSender,
        (origin, reserved): (Origin, bool),
        credit_window: u32,
    ) -> Result<RegistrationGuard, RegistryError> {
        let mut inner = self.lock();
        let old = inner.servers.get(server_id).map(|e| e.origin);
        let held_by = |same: bool, n: Option<&usize>| n.copied().unwrap_or(0) - usize::from(same);
        if !reserved {
            if let Some(c) = origin.connection {
                // Its own connection: nobody else's registrations are at
                // stake.
                let same = old.is_some_and(|o| o.connection == Some(c));
                if held_by(same, inner.by_connection.get(&c)) >= self.shares.per_connection {
                    return Err(RegistryError::ConnectionFull);
                }
            }
            if let Some(s) = origin.source() {
                let same = old.is_some_and(|o| o.source() == Some(s));
                if held_by(same, inner.by_source.get(&s)) >= self.shares.per_source {
                    let victim = inner
                        .victim(Some(Some(s)), server_id)
                        .ok_or(RegistryError::SourceFull)?;
                    inner.displace(
                        &victim,
                        "displaced: its address holds its whole share of this relay's \
                         registrations (--max-registrations-per-source) and a newer one came",
                    );
                }
            }
            if old.is_none() && inner.servers.len() >= self.max_registrations {
                let victim = inner.victim(None, server_id).ok_or(RegistryError::Full)?;
                inner.displace(
                    &victim,
                    "displaced: this relay's registration table is full (--max-registrations) \
                     and its address holds the most",
                );
            }
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
        let mut spare_token = [0u8; SPARE_TOKEN_LEN];
        rand::fill(&mut spare_token);
        let sessions = Arc::new(Semaphore::new(self.max_sessions_per_server));
        let replaced = CancellationToken::new();
        let outbox = Outbox::new(&self.credit, credit_window);
        inner.servers.insert(
            server_id.to_owned(),
            ServerEntry {
                generation,
                spare_token,
                spares: Vec::new(),
                control,
                sessions,
                origin,
                replaced: replaced.clone(),
                reserved,
                served: false,
                outbox: Arc::clone(&outbox),
            },
        );
        inner.count(origin, true);
        Ok(RegistrationGuard {
            registry: Arc::clone(self),
            server_id: server_id.to_owned(),
            generation,
            replaced,
            spare_token,
            outbox,
        })
    }

    /// Ends the registrations `keep` no longer admits (the allow-list
    /// changed), telling each why. Returns how many ended.
    pub(crate) fn retain(&self, keep: impl Fn(&Origin) -> bool) -> usize {
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

    /// Sessions refused so far because their exec-server had its whole
    /// share of sessions here (`--max-sessions-per-server`).
    pub fn busy_refusals(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// The refusal of a session of `server_id`, which has its whole share
    /// of sessions, counted.
    fn server_busy(&self, server_id: &str) -> RegistryError {
        self.busy.fetch_add(1, Ordering::Relaxed);
        RegistryError::ServerBusy(server_id.to_owned())
    }

    /// Reserves a session slot on an exec-server and records a pending
    /// session for it to accept.
    pub(crate) fn announce(&self, server_id: &str) -> Result<Announced, RegistryError> {
        let mut inner = self.lock();
        let entry = inner
            .servers
            .get(server_id)
            .ok_or_else(|| RegistryError::UnknownServer(server_id.to_owned()))?;
        let permit = Arc::clone(&entry.sessions)
            .try_acquire_owned()
            .map_err(|_| self.server_busy(server_id))?;
        let control = entry.control.clone();
        let outbox = Arc::clone(&entry.outbox);
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
                outbox,
            },
        );
        Ok(Announced {
            session_id,
            accepted,
            permit,
            control,
        })
    }

    /// Keeps `half` as a spare of `server_id`'s registration, for the next
    /// `Open`: refused unless `token` is that registration's spare token
    /// (only the exec-server that proved its key was told it), and when it
    /// already keeps [`MAX_SPARES`] live ones. Returns the stream's credit
    /// window, if it has credit.
    pub(crate) fn add_spare(
        &self,
        server_id: &str,
        token: &[u8; SPARE_TOKEN_LEN],
        mut half: AcceptedHalf,
        credit: Option<StreamCredit>,
    ) -> Result<Option<u64>, Status> {
        let mut inner = self.lock();
        let entry = inner
            .servers
            .get_mut(server_id)
            .filter(|e| same_token(&e.spare_token, token))
            .ok_or_else(|| Status::permission_denied("unknown registration or spare token"))?;
        entry.spares.retain(|h| !h.outbound.is_closed());
        if entry.spares.len() >= MAX_SPARES {
            return Err(Status::resource_exhausted(
                "this registration already keeps its spare streams",
            ));
        }
        half.credit =
            credit.and_then(|c| SessionCredit::new(c.stream, c.asked, Arc::clone(&entry.outbox)));
        let window = half.credit.as_ref().map(|c| c.window());
        entry.spares.push(half);
        Ok(window)
    }

    /// A spare stream of `server_id` for a new session, with its session
    /// slot, if the registration keeps a live one; `None` when it keeps
    /// none (the session is then announced).
    pub(crate) fn take_spare(
        &self,
        server_id: &str,
    ) -> Result<Option<(OwnedSemaphorePermit, AcceptedHalf)>, RegistryError> {
        let mut inner = self.lock();
        let entry = inner
            .servers
            .get_mut(server_id)
            .ok_or_else(|| RegistryError::UnknownServer(server_id.to_owned()))?;
        entry.spares.retain(|h| !h.outbound.is_closed());
        if entry.spares.is_empty() {
            return Ok(None);
        }
        let permit = Arc::clone(&entry.sessions)
            .try_acquire_owned()
            .map_err(|_| self.server_busy(server_id))?;
        entry.served = true;
        Ok(entry.spares.pop().map(|half| (permit, half)))
    }

    /// Forgets a pending session (timed out or failed to announce).
    pub(crate) fn cancel(&self, session_id: &SessionId) {
        self.lock().pending.remove(session_id);
    }

    /// Takes a pending session for `server_id`. Fails if the session is
    /// unknown (or timed out), or belongs to another exec-server (then it
    /// stays pending for its own).
    fn claim(
        &self,
        session_id: &SessionId,
        server_id: &str,
    ) -> Result<(oneshot::Sender<AcceptedHalf>, Arc<Outbox>), Status> {
        let mut inner = self.lock();
        match inner.pending.get(session_id) {
            Some(p) if p.server_id != server_id => Err(Status::permission_denied(
                "session belongs to another exec-server",
            )),
            Some(_) => {
                if let Some(e) = inner.servers.get_mut(server_id) {
                    e.served = true;
                }
                inner
                    .pending
                    .remove(session_id)
                    .map(|p| (p.deliver, p.outbox))
                    .ok_or_else(|| Status::not_found("no such session is waiting"))
            }
            None => Err(Status::not_found("no such session is waiting (timed out?)")),
        }
    }

    /// Hands the exec-server's half to the waiting client side. Fails if the
    /// session is unknown or belongs to another exec-server. Returns the
    /// stream's credit window, if it has credit.
    pub(crate) fn accept(
        &self,
        session_id: &SessionId,
        server_id: &str,
        mut half: AcceptedHalf,
        credit: Option<StreamCredit>,
    ) -> Result<Option<u64>, Status> {
        let (deliver, outbox) = self.claim(session_id, server_id)?;
        half.credit = credit.and_then(|c| SessionCredit::new(c.stream, c.asked, outbox));
        let window = half.credit.as_ref().map(|c| c.window());
        deliver
            .send(half)
            .map_err(|_| Status::not_found("the client gave up on this session"))?;
        Ok(window)
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
            0,
        );
        let (c1, mut r1) = control();
        let (c2, _r2) = control();
        let g1 = r
            .register("s", c1, at([127, 0, 0, 1], 1000), false)
            .unwrap();
        // The same key again (a reconnect): the older one is told, and
        // its guard no longer unregisters.
        let g2 = r
            .register("s", c2, at([127, 0, 0, 1], 1001), false)
            .unwrap();
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
            .register("a", c.clone(), at([127, 0, 0, 1], 1001), false)
            .unwrap();
        assert!(matches!(
            r.register("b", c.clone(), at([127, 0, 0, 1], 1001), false),
            Err(RegistryError::ConnectionFull)
        ));
        // Per source: 3 (s, a, and one more from another connection).
        let _b = r
            .register("b", c.clone(), at([127, 0, 0, 1], 1002), false)
            .unwrap();
        // Replacing from a full source and connection is allowed.
        assert!(
            r.register("s", c.clone(), at([127, 0, 0, 1], 1001), false)
                .is_ok()
        );
        // Another source has its own share.
        assert!(r.register("d", c, at([127, 0, 0, 2], 1), false).is_ok());
        drop(g2);
    }

    #[test]
    fn a_full_source_makes_room_from_its_own_oldest_unserved_entry() {
        let r = Registry::with_shares(
            100,
            10,
            Shares {
                per_connection: 10,
                per_source: 3,
            },
            0,
        );
        let (c, mut seen) = control();
        let (other, _o) = control();
        let (real, _r) = control();
        let _a = r
            .register("a", c.clone(), at([10, 0, 0, 1], 1), false)
            .unwrap();
        let _b = r
            .register("b", c.clone(), at([10, 0, 0, 1], 2), false)
            .unwrap();
        let _x = r.register("x", other, at([10, 0, 0, 2], 1), false).unwrap();
        // "a" carries a session: it is kept while an unserved one is left.
        let a = r.announce("a").unwrap();
        assert!(r.claim(&a.session_id, "a").is_ok());
        let _c = r
            .register("c", c.clone(), at([10, 0, 0, 1], 3), false)
            .unwrap();
        let _d = r.register("d", real, at([10, 0, 0, 1], 4), false).unwrap();
        assert!(r.is_registered("a") && r.is_registered("c") && r.is_registered("d"));
        assert!(
            !r.is_registered("b"),
            "the oldest unserved entry makes room"
        );
        assert!(r.is_registered("x"), "another address is not touched");
        let notice = seen.try_recv().unwrap().unwrap_err();
        assert_eq!(proto::routing::refusal(&notice), Some(CloseReason::Busy));
        assert!(notice.message().contains("--max-registrations-per-source"));
    }

    #[test]
    fn a_full_table_makes_room_from_the_address_holding_the_most() {
        let r = Registry::with_shares(
            4,
            10,
            Shares {
                per_connection: 100,
                per_source: 100,
            },
            0,
        );
        let (c, _rx) = control();
        // The real exec-server registered first; then a flood from one
        // address fills the table.
        let _real = r
            .register("real", c.clone(), at([10, 0, 0, 9], 1), false)
            .unwrap();
        let mut flood = Vec::new();
        for i in 0..3u16 {
            flood.push(
                r.register(&format!("f{i}"), c.clone(), at([10, 0, 0, 1], i), false)
                    .unwrap(),
            );
        }
        // More of the flood displaces the flood's own oldest, never the
        // real one.
        for i in 3..50u16 {
            flood.push(
                r.register(&format!("f{i}"), c.clone(), at([10, 0, 0, 1], i), false)
                    .unwrap(),
            );
            assert!(r.is_registered("real"), "after {i}");
            assert_eq!(r.registrations(), 4);
        }
        // An exec-server from a third address gets in (making room from
        // the flood).
        let (late, _l) = control();
        let _late = r
            .register("late", late, at([10, 0, 0, 3], 1), false)
            .unwrap();
        assert!(r.is_registered("real") && r.is_registered("late"));
        assert_eq!(r.registrations(), 4);
    }

    #[test]
    fn allow_listed_keys_have_room_reserved_and_are_never_displaced() {
        let r = Registry::with_shares(
            2,
            10,
            Shares {
                per_connection: 1,
                per_source: 1,
            },
            0,
        );
        let (c, _rx) = control();
        let mut held = Vec::new();
        for i in 0..5u16 {
            held.push(
                r.register(&format!("k{i}"), c.clone(), at([10, 0, 0, 1], 1), true)
                    .unwrap(),
            );
        }
        assert_eq!(r.registrations(), 5);
        // Nothing reserved can be displaced: the table is full for others.
        assert!(matches!(
            r.register("other", c, at([10, 0, 0, 2], 1), false),
            Err(RegistryError::Full)
        ));
        assert_eq!(r.registrations(), 5);
    }

    #[test]
    fn retain_ends_registrations_no_longer_allowed() {
        let r = Registry::new(10, 10);
        let (c1, mut r1) = control();
        let (c2, _r2) = control();
        let g1 = r.register("a", c1, at([127, 0, 0, 1], 1), false).unwrap();
        let _g2 = r.register("b", c2, at([127, 0, 0, 2], 1), false).unwrap();
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
        let g1 = r.register("s", c1, Origin::default(), false).unwrap();
        let g2 = r.register("s", c2, Origin::default(), false).unwrap();
        drop(g1);
        assert!(r.is_registered("s"));
        drop(g2);
        assert!(!r.is_registered("s"));
    }

    #[test]
    fn session_limit_is_enforced_and_released() {
        let r = Registry::new(10, 2);
        let (c, _rx) = control();
        let _g = r.register("s", c, Origin::default(), false).unwrap();
        let a = r.announce("s").unwrap();
        let _b = r.announce("s").unwrap();
        assert!(matches!(r.announce("s"), Err(RegistryError::ServerBusy(_))));
        drop(a);
        assert!(r.announce("s").is_ok());
    }

    #[test]
    fn registration_limit() {
        let r = Registry::new(1, 2);
        let (c1, mut r1) = control();
        let (c2, _r2) = control();
        let g = r.register("a", c1, Origin::default(), false).unwrap();
        // Full: the newcomer takes the oldest entry's place, which is told.
        let _h = r.register("b", c2, Origin::default(), false).unwrap();
        assert_eq!(r.registrations(), 1);
        assert!(r.is_registered("b") && !r.is_registered("a"));
        assert!(g.replaced.is_cancelled());
        let notice = r1.try_recv().unwrap().unwrap_err();
        assert_eq!(proto::routing::refusal(&notice), Some(CloseReason::Busy));
        assert!(notice.message().contains("--max-registrations"));
    }

    #[test]
    fn pending_sessions_are_bound_to_their_server_and_cancellable() {
        let r = Registry::new(10, 10);
        let (c1, _r1) = control();
        let (c2, _r2) = control();
        let _g1 = r.register("s", c1, Origin::default(), false).unwrap();
        let _g2 = r.register("t", c2, Origin::default(), false).unwrap();
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
