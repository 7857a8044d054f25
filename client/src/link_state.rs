//! A session's link as its callers may watch it: up, lost and being
//! reconnected (through which relay or address), or ended. A watch
//! channel: bounded by construction, only the latest state matters, and a
//! caller that does not look holds nothing up.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The state of a session's link ([`Execution::link`](crate::Execution::link)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// The link is up, to `via` (the URL dialled).
    Up {
        /// The relay's or exec-server's URL the link goes to.
        via: String,
        /// How long the link had been lost before this one came up and
        /// the session resumed on it (`None`: the session's first link).
        outage: Option<Duration>,
    },
    /// The link broke at `since`; the session is coming back, dialling
    /// `trying` now (it tries every way to the exec-server in turn).
    Reconnecting {
        /// When the loss was noticed.
        since: Instant,
        /// The URL being dialled (the one the link went to, until the
        /// first attempt).
        trying: String,
    },
    /// The session ended: closed, or it gave up coming back.
    Ended,
}

/// The sending side, held by the session's driver.
#[derive(Debug)]
pub(crate) struct LinkWatch(watch::Sender<LinkState>);

impl LinkWatch {
    /// A link up to `via`.
    pub(crate) fn new(via: &str) -> Self {
        Self(watch::Sender::new(LinkState::Up {
            via: via.to_owned(),
            outage: None,
        }))
    }

    /// A new receiver, seeing the current state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.0.subscribe()
    }

    /// The link broke (a second break before it came back is the same
    /// outage).
    pub(crate) fn lost(&self) {
        self.0.send_if_modified(|state| match state {
            LinkState::Up { via, .. } => {
                *state = LinkState::Reconnecting {
                    since: Instant::now(),
                    trying: std::mem::take(via),
                };
                true
            }
            LinkState::Reconnecting { .. } | LinkState::Ended => false,
        });
    }

    /// A new link to `url` is being tried.
    pub(crate) fn trying(&self, url: &str) {
        self.0.send_if_modified(|state| match state {
            LinkState::Reconnecting { trying, .. } if trying != url => {
                url.clone_into(trying);
                true
            }
            _ => false,
        });
    }

    /// The session resumed over the link last tried.
    pub(crate) fn resumed(&self) {
        self.0.send_if_modified(|state| match state {
            LinkState::Reconnecting { since, trying } => {
                *state = LinkState::Up {
                    via: std::mem::take(trying),
                    outage: Some(since.elapsed()),
                };
                true
            }
            LinkState::Up { .. } | LinkState::Ended => false,
        });
    }

    /// The session ended.
    pub(crate) fn ended(&self) {
        self.0.send_if_modified(|state| {
            let changed = *state != LinkState::Ended;
            *state = LinkState::Ended;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_seen_from_its_loss_to_its_resume() {
        let link = LinkWatch::new("http://a");
        let mut rx = link.subscribe();
        assert!(matches!(
            &*rx.borrow_and_update(),
            LinkState::Up { outage: None, .. }
        ));
        link.lost();
        link.lost();
        link.trying("http://b");
        let LinkState::Reconnecting { trying, .. } = rx.borrow_and_update().clone() else {
            panic!("not reconnecting");
        };
        assert_eq!(trying, "http://b");
        link.resumed();
        let LinkState::Up { via, outage } = rx.borrow_and_update().clone() else {
            panic!("not up");
        };
        assert_eq!(via, "http://b");
        assert!(outage.is_some());
        link.ended();
        assert_eq!(*rx.borrow_and_update(), LinkState::Ended);
        // Nothing comes back from the end.
        link.lost();
        link.resumed();
        assert!(!rx.has_changed().unwrap_or(true));
    }
}
