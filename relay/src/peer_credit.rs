//! A forwarding relay's credit for what a fleet peer sends it on the
//! sessions it forwarded there.
//!
//! The holding relay's own credit ([`crate::credit`]) ends at the holding
//! relay: what it passes on toward the forwarding relay was bounded by
//! the relay-to-relay link's HTTP/2 window alone, 1 MiB, which held a
//! forwarded session to about one MiB per round trip between the relays.
//! So the forwarding relay gives credit of its own, as a relay gives an
//! exec-server: each forwarded stream is granted its floor at the start
//! and more, from the forwarding relay's pool, as it passes frames on
//! toward the client ([`SessionCredit`]); and it dials its peers with a
//! window as wide as the widest credit.
//!
//! - At the forwarding relay, [`LinkCredit`]: one per peer link, its
//!   grants sent on one `PeerCredit/Grants` stream of that link (never
//!   behind a session's own frames, which the holding relay stops reading
//!   when its exec-server does). A forwarded `Open` names its stream
//!   ([`PEER_CREDIT_HEADER`]).
//! - At the holding relay, [`Gates`]: a [`Gate`] per forwarded stream that
//!   named one, which its frames toward the forwarding relay wait for.
//!   When the grants stream ends, every gate of its link opens (HTTP/2's
//!   window then bounds those streams, as it does any stream without
//!   credit), and the forwarding relay stops counting them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::Stream;
use proto::pb::tunnel::Credit;
use proto::routing::{CREDIT_FLOOR, MAX_CREDIT_WINDOW};
use tokio::sync::Notify;

use crate::credit::{CreditStats, Outbox, SessionCredit};

/// Request header of a `PeerCredit/Grants` stream: its link's id
/// (decimal).
pub const PEER_LINK_HEADER: &str = "rex-peer-link";
/// Request header of a forwarded `Open` under the forwarding relay's
/// credit: `LINK.STREAM` (decimal), the link's id and the stream's number
/// on it.
pub const PEER_CREDIT_HEADER: &str = "rex-peer-credit";
/// Most links one relay takes grants from at once.
const MAX_LINKS: usize = 1024;
/// Most grants one `Credit` message from a peer may carry.
pub(crate) const MAX_GRANTS: usize = 1024;

/// What a fleet proof for a link's grants stream is made for (in place of
/// a server id).
pub(crate) fn proof_subject(link: u64) -> String {
    format!("peer-credit.{link}")
}

/// A forwarded `Open`'s [`PEER_CREDIT_HEADER`]: its link and stream.
pub(crate) fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (link, stream) = value.split_once('.')?;
    Some((link.parse().ok()?, stream.parse().ok()?))
}

/// What one forwarded stream may have sent toward the forwarding relay.
#[derive(Debug)]
pub(crate) struct Gate {
    granted: AtomicU64,
    raised: Notify,
}

impl Gate {
    fn new(granted: u64) -> Self {
        Self {
            granted: AtomicU64::new(granted),
            raised: Notify::new(),
        }
    }

    fn raise(&self, granted: u64) {
        self.granted.fetch_max(granted, Ordering::AcqRel);
        self.raised.notify_waiters();
    }

    /// Waits until `total` payload bytes, in all, are within the grant.
    pub(crate) async fn until(&self, total: u64) {
        loop {
            let raised = self.raised.notified();
            tokio::pin!(raised);
            // Registered before the check, so a grant in between wakes.
            raised.as_mut().enable();
            if self.granted.load(Ordering::Acquire) >= total {
                return;
            }
            raised.await;
        }
    }
}

/// The holding relay's gates, by the link whose grants open them.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    links: Mutex<HashMap<u64, HashMap<u64, Weak<Gate>>>>,
}

/// Why a grants stream is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AttachError {
    /// The link already has one.
    #[error("the link already sends its grants")]
    Taken,
    /// Too many links send grants here.
    #[error("too many relays send grants here")]
    Full,
}

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HashMap<u64, Weak<Gate>>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `link`'s grants stream has begun.
    pub(crate) fn attach(&self, link: u64) -> Result<(), AttachError> {
        let mut links = self.lock();
        if links.contains_key(&link) {
            return Err(AttachError::Taken);
        }
        if links.len() >= MAX_LINKS {
            return Err(AttachError::Full);
        }
        links.insert(link, HashMap::new());
        Ok(())
    }

    /// The gate of `link`'s stream `stream`, granted its floor; `None`
    /// when the link sends no grants (none can come: the stream goes
    /// without credit).
    pub(crate) fn gate(&self, link: u64, stream: u64) -> Option<Arc<Gate>> {
        let mut links = self.lock();
        let streams = links.get_mut(&link)?;
        // Streams that ended are forgotten as new ones come.
        streams.retain(|_, g| g.strong_count() > 0);
        let gate = Arc::new(Gate::new(u64::from(CREDIT_FLOOR)));
        streams.insert(stream, Arc::downgrade(&gate));
        Some(gate)
    }

    /// Applies `link`'s grants (streams it names that ended, or that it
    /// never had, are passed over).
    pub(crate) fn grant(&self, link: u64, credit: &Credit) {
        let links = self.lock();
        let Some(streams) = links.get(&link) else {
            return;
        };
        for g in &credit.grants {
            if let Some(gate) = streams.get(&g.stream).and_then(Weak::upgrade) {
                gate.raise(g.granted);
            }
        }
    }

    /// `link`'s grants stream ended: its gates open for good.
    pub(crate) fn detach(&self, link: u64) {
        let streams = self.lock().remove(&link).unwrap_or_default();
        for gate in streams.values().filter_map(Weak::upgrade) {
            gate.raise(u64::MAX);
        }
    }
}

/// The forwarding relay's credit on one peer link.
#[derive(Debug)]
pub(crate) struct LinkCredit {
    id: u64,
    outbox: Arc<Outbox>,
    next: AtomicU64,
}

impl LinkCredit {
    /// A link's credit, drawn from the relay's pool (`stats`): each stream
    /// gets the widest window, as far as the pool lends it.
    pub(crate) fn new(stats: &Arc<CreditStats>) -> Arc<Self> {
        Arc::new(Self {
            id: rand::random(),
            outbox: Outbox::new(stats, MAX_CREDIT_WINDOW),
            next: AtomicU64::new(0),
        })
    }

    /// The link's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether its grants stream has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.outbox.is_closed()
    }

    /// Its grants stream ended: nothing more is counted or granted.
    pub(crate) fn close(&self) {
        self.outbox.close();
    }

    /// A new forwarded stream's [`PEER_CREDIT_HEADER`] and its credit.
    pub(crate) fn open(&self) -> Option<(String, Arc<SessionCredit>)> {
        let stream = self.next.fetch_add(1, Ordering::Relaxed);
        let credit = SessionCredit::new(stream, MAX_CREDIT_WINDOW, Arc::clone(&self.outbox))?;
        Some((format!("{}.{stream}", self.id), credit))
    }

    /// The grants to send, as they are posted; ends once the link's
    /// credit is closed.
    pub(crate) fn grants(self: &Arc<Self>) -> impl Stream<Item = Credit> + Send + 'static {
        futures::stream::unfold(Arc::clone(self), |link| async move {
            loop {
                if link.is_closed() {
                    return None;
                }
                if let Some(credit) = link.outbox.take() {
                    return Some((credit, link));
                }
                link.outbox.posted().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credit::Forwarding;
    use futures::StreamExt;
    use proto::pb::tunnel::Grant;
    use std::time::Duration;

    fn grant(stream: u64, granted: u64) -> Credit {
        Credit {
            grants: vec![Grant { stream, granted }],
        }
    }

    async fn waits(gate: &Gate, total: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(50), gate.until(total))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_stream_goes_within_its_floor_and_then_its_grants() {
        let gates = Gates::default();
        assert!(gates.gate(7, 0).is_none(), "no grants stream: no credit");
        gates.attach(7).unwrap();
        assert_eq!(gates.attach(7), Err(AttachError::Taken));
        let gate = gates.gate(7, 0).unwrap();
        let floor = u64::from(CREDIT_FLOOR);
        assert!(!waits(&gate, floor).await);
        assert!(waits(&gate, floor + 1).await, "past the floor");
        // Another stream's grant, or another link's, changes nothing.
        gates.grant(7, &grant(1, 1 << 30));
        gates.grant(8, &grant(0, 1 << 30));
        assert!(waits(&gate, floor + 1).await);
        let waiting = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.until(200_000).await })
        };
        tokio::task::yield_now().await;
        gates.grant(7, &grant(0, 199_999));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one byte short");
        gates.grant(7, &grant(0, 200_000));
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        // Grants only grow.
        gates.grant(7, &grant(0, 10));
        assert!(!waits(&gate, 200_000).await);
    }

    #[tokio::test]
    async fn the_end_of_a_links_grants_opens_its_gates() {
        let gates = Gates::default();
        gates.attach(1).unwrap();
        let gate = gates.gate(1, 3).unwrap();
        assert!(waits(&gate, 1 << 30).await);
        gates.detach(1);
        assert!(!waits(&gate, u64::MAX).await);
        assert!(gates.gate(1, 4).is_none(), "none can come any more");
        // The link may send grants again.
        gates.attach(1).unwrap();
    }

    #[test]
    fn links_are_bounded() {
        let gates = Gates::default();
        for link in 0..MAX_LINKS as u64 {
            gates.attach(link).unwrap();
        }
        assert_eq!(gates.attach(u64::MAX), Err(AttachError::Full));
        gates.detach(0);
        gates.attach(u64::MAX).unwrap();
    }

    #[test]
    fn a_stream_header_is_two_numbers() {
        assert_eq!(parse_stream("12.3"), Some((12, 3)));
        for bad in ["", "12", "12.", ".3", "a.3", "1.2.3", "-1.2"] {
            assert_eq!(parse_stream(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_forwarding_side_grants_what_it_passed_on_from_its_pool() {
        let stats = CreditStats::new(64 << 20);
        let link = LinkCredit::new(&stats);
        let (header, credit) = link.open().unwrap();
        assert_eq!(parse_stream(&header), Some((link.id(), 0)));
        let mut grants = Box::pin(link.grants());
        // The stream moves: once a quarter of what it holds has gone on,
        // it is granted its whole window.
        let floor = u64::from(CREDIT_FLOOR);
        assert!(credit.received(floor));
        drop(Forwarding::new(&credit, floor));
        let sent = tokio::time::timeout(Duration::from_secs(10), grants.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sent.grants.len(), 1);
        assert_eq!(sent.grants[0].stream, 0);
        assert_eq!(sent.grants[0].granted, floor + u64::from(MAX_CREDIT_WINDOW));
        assert!(
            !credit.received(u64::from(MAX_CREDIT_WINDOW) + 1),
            "past it"
        );
        // Closed, while the grants wait for more: they end, and nothing
        // is counted.
        let waiting = tokio::spawn(async move { grants.next().await });
        tokio::task::yield_now().await;
        link.close();
        assert!(link.is_closed());
        let ended = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(ended.unwrap().unwrap().is_none());
        assert!(credit.received(1 << 30), "nothing counted once closed");
    }
}
