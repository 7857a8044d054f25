//! Coming back after a broken link: a session whose exec-server offered
//! resumes waits (its calls with it) while this tries, with backoff, every
//! way to the exec-server in order (the session may come back through
//! another relay than it left), runs a fresh Noise handshake with the same
//! keys and asks for the session back. It gives up once
//! [`ClientConfig::resume`] has passed since the loss was noticed.
//!
//! Each wait and connect is noted in the router's [`Outage`], from which
//! every waiting call gets its `session.reattach` span.

use std::time::{Duration, Instant, SystemTime};

use proto::driver::{deliver_events, first_flight};
use proto::session::{LinkFailure, LinkFailureKind, Now, SessionError, Stage};
use telemetry::spans;
use tokio_util::sync::CancellationToken;

use crate::config::{ClientConfig, Target};
use crate::router::{Machine, Router};
use crate::transport_tasks::TransportTasks;
use crate::tunnel::{self, Link};

/// The first retry waits this long; each further one twice as long, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two rounds of attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a session needs to come back.
pub(crate) struct Reconnect {
    pub(crate) config: ClientConfig,
    /// The session is closing, or the client is stopping: give up.
    pub(crate) stop: CancellationToken,
    /// Where its links' transport tasks are spawned.
    pub(crate) transport: TransportTasks,
    /// When the current outage must be over.
    deadline: Option<Instant>,
    /// Rounds of attempts in the current outage.
    rounds: u32,
}

impl Reconnect {
    pub(crate) fn new(
        config: ClientConfig,
        stop: CancellationToken,
        transport: TransportTasks,
    ) -> Self {
        Self {
            config,
            stop,
            transport,
            deadline: None,
            rounds: 0,
        }
    }

    /// The session came back: a later outage starts afresh.
    pub(crate) fn resumed(&mut self) {
        self.deadline = None;
        self.rounds = 0;
    }

    /// Tries until a new link is open with the resume under way, or gives
    /// up (the error the session then ends with).
    pub(crate) async fn come_back(
        &mut self,
        machine: &mut Machine,
        router: &mut Router,
    ) -> Result<Link, SessionError> {
        let within = self.config.resume.unwrap_or_default();
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + within);
        loop {
            let wait = backoff(self.rounds);
            self.rounds = self.rounds.saturating_add(1);
            let left = deadline.saturating_duration_since(Instant::now());
            // The next attempt would come too late: the rest of the time
            // passes (the calls wait as long as they were told to), then
            // the session gives up.
            let giving_up = wait >= left;
            let wait = wait.min(left);
            if !wait.is_zero() {
                tokio::select! {
                    () = self.stop.cancelled() => {
                        note(router, spans::SESSION_REATTACH_WAIT, false);
                        return Err(SessionError::LinkEnded);
                    }
                    () = tokio::time::sleep(wait) => {}
                }
                note(router, spans::SESSION_REATTACH_WAIT, !giving_up);
            }
            if giving_up {
                return Err(SessionError::Timeout(Stage::Resume));
            }
            for target in self.config.targets() {
                if self.stop.is_cancelled() {
                    return Err(SessionError::LinkEnded);
                }
                let tried = self.attempt(target, machine, router).await;
                let at = note(router, spans::RELAY_CONNECT, tried.is_some());
                if let Some(outage) = router.outage.as_mut() {
                    outage.attempts = outage.attempts.saturating_add(1);
                    outage.dialled(target.url());
                }
                if let Some(link) = tried {
                    if let Some(outage) = router.outage.as_mut() {
                        outage.via = Some(target.url().to_owned());
                        // The handshake starts where the connect ended.
                        outage.opened_at = Some(at);
                    }
                    return Ok(link);
                }
            }
        }
    }

    /// One attempt through `target`: the new link with the handshake's
    /// first message on it, or `None` (the machine is detached again).
    async fn attempt(
        &self,
        target: &Target,
        machine: &mut Machine,
        router: &mut Router,
    ) -> Option<Link> {
        let config = &self.config;
        router.link().trying(target.url());
        let channel = tokio::select! {
            () = self.stop.cancelled() => return None,
            c = tunnel::channel(config, target, &self.transport) => c.ok()?,
        };
        if !machine.is_detached() {
            return None;
        }
        let now = Now::system();
        machine.reattach(&config.key, &config.server, now).ok()?;
        let first = first_flight(machine, router, now);
        let server_id = config.server.server_id();
        let open = tunnel::open(channel, &first, &server_id, router.drained(), None);
        let opened = tokio::select! {
            () = self.stop.cancelled() => Err(LinkFailure::new(LinkFailureKind::Cancelled, "the client is stopping")),
            r = tokio::time::timeout(config.handshake_timeout, open) => match r {
                Ok(opened) => opened.map_err(LinkFailure::from),
                Err(_) => Err(LinkFailure::new(LinkFailureKind::TimedOut, "no answer")),
            },
        };
        match opened {
            Ok(link) => Some(link),
            Err(failure) => {
                // The new link did not come up: detached again.
                let now = Now::system();
                machine.handle_link_end(Some(failure), now);
                // Its `Detached` (an event the router cannot take yet
                // stays in the machine for the next drive).
                deliver_events(machine, router, now);
                None
            }
        }
    }
}

/// Notes a phase of the outage, from where the last one ended to now;
/// returns now.
fn note(router: &mut Router, name: &'static str, ok: bool) -> SystemTime {
    match router.outage.as_mut() {
        Some(outage) => outage.note(name, ok),
        None => SystemTime::now(),
    }
}

/// The wait before round `round` of attempts: none for the first.
fn backoff(round: u32) -> Duration {
    match round {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(1 << (n - 1).min(16))
            .min(MAX_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
