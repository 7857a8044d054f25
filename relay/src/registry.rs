//! Registered exec-servers and sessions waiting for their exec-server.
//!
//! Critical sections are short and never await, so a plain mutex is used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use proto::pb::tunnel::{Frame, RegisterDown};
use proto::routing::SESSION_ID_LEN;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::{Status, Streaming};

/// The sending half of a tunnel stream.
pub use proto::link::FrameSender;
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
    pub outbound: FrameSender,
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
}

struct ServerEntry {
    generation: u64,
    control: ControlSender,
    sessions: Arc<Semaphore>,
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
}

/// The relay's routing table.
pub struct Registry {
    inner: Mutex<Inner>,
    max_registrations: usize,
    max_sessions_per_server: usize,
}

/// A registration held by a live control stream; dropping it unregisters
/// (unless a newer registration for the same id replaced it).
pub struct RegistrationGuard {
    registry: Arc<Registry>,
    server_id: String,
    generation: u64,
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if inner
            .servers
            .get(&self.server_id)
            .is_some_and(|e| e.generation == self.generation)
        {
            inner.servers.remove(&self.server_id);
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
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            max_registrations,
            max_sessions_per_server,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain maps; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or re-registers, replacing the older stream) an exec-server.
    pub fn register(
        self: &Arc<Self>,
        server_id: &str,
        control: ControlSender,
    ) -> Result<RegistrationGuard, RegistryError> {
        let mut inner = self.lock();
        if !inner.servers.contains_key(server_id) && inner.servers.len() >= self.max_registrations {
            return Err(RegistryError::Full);
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let sessions = Arc::new(Semaphore::new(self.max_sessions_per_server));
        inner.servers.insert(
            server_id.to_owned(),
            ServerEntry {
                generation,
                control,
                sessions,
            },
        );
        Ok(RegistrationGuard {
            registry: Arc::clone(self),
            server_id: server_id.to_owned(),
            generation,
        })
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
        let g1 = r.register("s", c1).unwrap();
        let g2 = r.register("s", c2).unwrap();
        drop(g1);
        assert!(r.is_registered("s"));
        drop(g2);
        assert!(!r.is_registered("s"));
    }

    #[test]
    fn session_limit_is_enforced_and_released() {
        let r = Registry::new(10, 2);
        let (c, _rx) = control();
        let _g = r.register("s", c).unwrap();
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
        let _g = r.register("a", c1).unwrap();
        assert!(matches!(r.register("b", c2), Err(RegistryError::Full)));
    }

    #[test]
    fn pending_sessions_are_bound_to_their_server_and_cancellable() {
        let r = Registry::new(10, 10);
        let (c1, _r1) = control();
        let (c2, _r2) = control();
        let _g1 = r.register("s", c1).unwrap();
        let _g2 = r.register("t", c2).unwrap();
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
