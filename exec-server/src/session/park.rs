//! Sessions that can be resumed, by the token each was offered: where a
//! new link whose client asks to resume one is sent, whether the session
//! is parked (its link broke) or still holds a link this end has not yet
//! found broken (the client found it first: the session gives it up for
//! the new one). And what a session whose grace ran out leaves behind for
//! a client that comes back late (its calls' accounts and exits).
//!
//! A parked session keeps its driver's task: its processes go on pushing
//! events into its machine (each within its output window and the
//! session's bounds, so a process that writes more waits), until a new
//! link is handed to it or its grace runs out.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Mutex;

use futures::Stream;
use proto::pb::tunnel::Frame;
use proto::session::Tombstone;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::FrameSender;
use super::machine::Machine;

/// Tombstones kept for clients that come back late (oldest dropped first).
const TOMBSTONES: usize = 1024;

/// Most sessions registered: each holds a session slot too, so this only
/// bounds the registry.
const MAX_PARKED: usize = 65_536;

/// A link's inbound half, boxed so that any session can take it over.
pub(super) type Inbound = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

/// A new link whose client asked to resume a parked session: its machine
/// (handshake done, resume asked) and its two halves. Given back through
/// `refused` when the parked session finds the resume is not its client's.
pub(super) struct Handover {
    /// The new link's machine.
    pub(super) machine: Machine,
    /// Its inbound half.
    pub(super) inbound: Inbound,
    /// Its outbound half (gone if the machine ended it).
    pub(super) outbound: Option<FrameSender>,
    /// Where a refused hand-over goes back.
    pub(super) refused: oneshot::Sender<Handover>,
}

impl Handover {
    /// Gives the link back to the exec-server, which goes on with it as a
    /// new session (its client is told the session it asked for is gone).
    pub(super) fn refuse(self) {
        let refused = self.refused;
        let back = Handover {
            refused: oneshot::channel().0,
            ..self
        };
        let _ = refused.send(back);
    }
}

/// The parked sessions of one exec-server, and the tombstones of those
/// whose grace ran out.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Boxed: a queue allocates its slots in blocks, and a hand-over holds
    /// a whole machine.
    waiting: HashMap<Vec<u8>, mpsc::Sender<Box<Handover>>>,
    tombstones: VecDeque<(Vec<u8>, Tombstone)>,
}

impl Parked {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps half-updated.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers the session `token` names; what arrives on the receiver
    /// is a link that asks to resume it. `None` when too many are.
    pub(super) fn park(&self, token: &[u8]) -> Option<mpsc::Receiver<Box<Handover>>> {
        let mut inner = self.lock();
        if inner.waiting.len() >= MAX_PARKED {
            return None;
        }
        let (tx, rx) = mpsc::channel(1);
        inner.waiting.insert(token.to_vec(), tx);
        Some(rx)
    }

    /// The session can no longer be resumed (it is over).
    pub(super) fn unpark(&self, token: &[u8]) {
        self.lock().waiting.remove(token);
    }

    /// Where a resume of `token` goes, if that session can be resumed.
    pub(super) fn find(&self, token: &[u8]) -> Option<mpsc::Sender<Box<Handover>>> {
        self.lock().waiting.get(token).cloned()
    }

    /// The session `token` named is over: its tombstone is kept for a
    /// client that comes back late.
    pub(super) fn bury(&self, token: &[u8], tombstone: Tombstone) {
        let mut inner = self.lock();
        inner.waiting.remove(token);
        if inner.tombstones.len() >= TOMBSTONES {
            inner.tombstones.pop_front();
        }
        inner.tombstones.push_back((token.to_vec(), tombstone));
    }

    /// The tombstone of the session `token` named, taken (a late client
    /// is told once).
    pub(super) fn exhume(&self, token: &[u8]) -> Option<Tombstone> {
        let mut inner = self.lock();
        let at = inner.tombstones.iter().position(|(t, _)| t == token)?;
        inner.tombstones.remove(at).map(|(_, t)| t)
    }

    /// How many sessions can be resumed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Whether none is.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_token_until_it_is_unparked() {
        let parked = Parked::default();
        let _rx = parked.park(b"one").unwrap();
        assert!(parked.find(b"one").is_some());
        assert!(parked.find(b"two").is_none());
        parked.unpark(b"one");
        assert!(parked.find(b"one").is_none());
        assert!(parked.is_empty());
    }

    #[test]
    fn tombstones_are_told_once_and_bounded() {
        let parked = Parked::default();
        for i in 0..=TOMBSTONES {
            parked.bury(&i.to_be_bytes(), Tombstone::default());
        }
        // The oldest went first.
        assert!(parked.exhume(&0usize.to_be_bytes()).is_none());
        assert!(parked.exhume(&1usize.to_be_bytes()).is_some());
        assert!(parked.exhume(&1usize.to_be_bytes()).is_none());
    }
}
