//! The warm policy: while it is on, the client keeps its session
//! established — on each tick it pings a live session (measuring the round
//! trip) or re-establishes a dead one — so that the next call never pays a
//! cold start.
//!
//! [`Schedule`] decides when the next warm is due, without a clock of its
//! own (every input carries `now`); the client's warm task sleeps until then
//! and performs it. The cycle:
//!
//! - enabling schedules a warm at once;
//! - a warm (automatic or [`Client::warm_now`](crate::Client::warm_now))
//!   schedules the next one a full interval after it ends, succeeded or
//!   failed (a failure is retried then);
//! - while calls run nothing is scheduled (`next_warm_at` is `None`: the
//!   calls keep the session warm), and the last call's end schedules the
//!   next warm a full interval later;
//! - disabling unschedules it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use proto::session::Now;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;

/// How a client keeps its session warm (off by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmPolicy {
    /// Whether warms are scheduled.
    pub enabled: bool,
    /// From the end of a warm, or of the last call, to the next warm.
    pub interval: Duration,
}

impl WarmPolicy {
    /// The shortest interval taken (shorter ones are raised to it).
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

    /// Off (the library's default).
    pub fn off() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(30),
        }
    }

    /// On, every `interval`.
    pub fn every(interval: Duration) -> Self {
        Self {
            enabled: true,
            interval,
        }
    }

    fn interval(&self) -> Duration {
        self.interval.max(Self::MIN_INTERVAL)
    }
}

impl Default for WarmPolicy {
    fn default() -> Self {
        Self::off()
    }
}

/// How the last warm went.
#[derive(Debug, Clone)]
pub enum WarmOutcome {
    /// The session answered a ping, or a new one was established.
    Ok,
    /// It could not be done; the next tick tries again.
    Failed(ClientError),
}

impl WarmOutcome {
    /// Whether it went well.
    pub fn is_ok(&self) -> bool {
        matches!(self, WarmOutcome::Ok)
    }
}

/// The warm policy's state, as [`Client::warm_status`](crate::Client::warm_status)
/// gives it and [`Client::subscribe`](crate::Client::subscribe) announces it.
#[derive(Debug, Clone)]
pub struct WarmStatus {
    /// Whether warms are scheduled.
    pub enabled: bool,
    /// The interval between warms.
    pub interval: Duration,
    /// When the next automatic warm fires; `None` when none is scheduled
    /// (disabled, a warm in progress, or calls running).
    pub next_warm_at: Option<SystemTime>,
    /// When the last warm ended.
    pub last_warm_at: Option<SystemTime>,
    /// How it went.
    pub last_outcome: Option<WarmOutcome>,
    /// Its latency: the ping's round trip, or the time a new session took
    /// to establish.
    pub last_latency: Option<Duration>,
    /// Whether a warm is in progress.
    pub warming: bool,
    /// Calls running now.
    pub active: usize,
}

/// A client's warm state: the schedule, its subscribers, and what its
/// warm task waits on.
#[derive(Debug)]
pub(crate) struct Warm {
    schedule: Mutex<Schedule>,
    status: watch::Sender<WarmStatus>,
    /// Wakes the warm task when the schedule changed.
    pub(crate) changed: Notify,
    /// One warm at a time.
    pub(crate) one_at_a_time: tokio::sync::Mutex<()>,
    /// Stops the warm task (the client is gone).
    pub(crate) stop: CancellationToken,
    /// Whether the warm task has been started.
    started: AtomicBool,
}

impl Warm {
    pub(crate) fn new(policy: WarmPolicy) -> Self {
        let mut schedule = Schedule::new(WarmPolicy {
            enabled: false,
            ..policy
        });
        schedule.set_policy(policy, Now::system());
        let (status, _) = watch::channel(schedule.status());
        Self {
            schedule: Mutex::new(schedule),
            status,
            changed: Notify::new(),
            one_at_a_time: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
            started: AtomicBool::new(false),
        }
    }

    /// Changes the schedule, tells subscribers and wakes the warm task.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut Schedule) -> R) -> R {
        let (result, status) = {
            let mut s = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
            let result = change(&mut s);
            (result, s.status())
        };
        self.status.send_replace(status);
        self.changed.notify_one();
        result
    }

    /// The state now.
    pub(crate) fn status(&self) -> WarmStatus {
        self.status.borrow().clone()
    }

    /// A receiver of every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<WarmStatus> {
        self.status.subscribe()
    }

    /// When the next automatic warm is due.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due()
    }

    /// Whether warms are on.
    pub(crate) fn enabled(&self) -> bool {
        self.schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .enabled()
    }

    /// Marks the warm task started; true the first time only.
    pub(crate) fn start_once(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    /// A call starts; the guard ends it.
    pub(crate) fn call(self: &Arc<Self>) -> ActiveCall {
        self.update(Schedule::call_started);
        ActiveCall(Arc::clone(self))
    }
}

/// A running call, as the warm schedule counts it: ends when dropped.
#[derive(Debug)]
pub(crate) struct ActiveCall(Arc<Warm>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.update(|s| s.call_ended(Now::system()));
    }
}

/// When the next warm is due: the policy's state machine.
#[derive(Debug)]
pub(crate) struct Schedule {
    policy: WarmPolicy,
    /// When the next automatic warm is due.
    due: Option<(Instant, SystemTime)>,
    active: usize,
    warming: bool,
    last_at: Option<SystemTime>,
    last_outcome: Option<WarmOutcome>,
    last_latency: Option<Duration>,
}

impl Schedule {
    pub(crate) fn new(policy: WarmPolicy) -> Self {
        Self {
            policy,
            due: None,
            active: 0,
            warming: false,
            last_at: None,
            last_outcome: None,
            last_latency: None,
        }
    }

    /// Whether warms are scheduled.
    pub(crate) fn enabled(&self) -> bool {
        self.policy.enabled
    }

    /// The policy changes: enabling warms at once, disabling stops, a new
    /// interval counts from now.
    pub(crate) fn set_policy(&mut self, policy: WarmPolicy, now: Now) {
        let was = self.policy;
        self.policy = policy;
        if !policy.enabled {
            self.due = None;
        } else if !was.enabled {
            self.rearm_after(Duration::ZERO, now);
        } else if was.interval != policy.interval {
            self.rearm_after(policy.interval(), now);
        }
    }

    /// A call started: nothing is scheduled while calls run.
    pub(crate) fn call_started(&mut self) {
        self.active += 1;
        self.due = None;
    }

    /// A call ended: the last one re-arms the timer a full interval later.
    pub(crate) fn call_ended(&mut self, now: Now) {
        self.active = self.active.saturating_sub(1);
        self.rearm_after(self.policy.interval(), now);
    }

    /// A warm begins (automatic or asked for).
    pub(crate) fn warm_started(&mut self) {
        self.warming = true;
        self.due = None;
    }

    /// A warm ended: the next is due a full interval later.
    pub(crate) fn warm_finished(&mut self, outcome: WarmOutcome, latency: Duration, now: Now) {
        self.warming = false;
        self.last_at = Some(now.wall);
        self.last_outcome = Some(outcome);
        self.last_latency = Some(latency);
        self.rearm_after(self.policy.interval(), now);
    }

    fn rearm_after(&mut self, after: Duration, now: Now) {
        self.due = (self.policy.enabled && self.active == 0 && !self.warming)
            .then(|| (now.at + after, now.wall + after));
    }

    /// When the next automatic warm is due.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due.map(|(at, _)| at)
    }

    /// The state, for callers.
    pub(crate) fn status(&self) -> WarmStatus {
        WarmStatus {
            enabled: self.policy.enabled,
            interval: self.policy.interval(),
            next_warm_at: self.due.map(|(_, wall)| wall),
            last_warm_at: self.last_at,
            last_outcome: self.last_outcome.clone(),
            last_latency: self.last_latency,
            warming: self.warming,
            active: self.active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Now, secs: u64) -> Now {
        t0.after(Duration::from_secs(secs))
    }

    #[test]
    fn enabling_warms_at_once_then_every_interval_after_each_warm() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        assert_eq!(s.due(), None);
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        assert_eq!(s.due(), Some(t0.at));
        assert_eq!(s.status().next_warm_at, Some(t0.wall));
        s.warm_started();
        assert_eq!(s.status().next_warm_at, None, "not while warming");
        s.warm_finished(WarmOutcome::Ok, Duration::from_millis(2), at(t0, 1));
        assert_eq!(s.due(), Some(at(t0, 11).at));
        let st = s.status();
        assert_eq!(st.next_warm_at, Some(at(t0, 11).wall));
        assert_eq!(st.last_warm_at, Some(at(t0, 1).wall));
        assert_eq!(st.last_latency, Some(Duration::from_millis(2)));
        assert!(st.last_outcome.unwrap().is_ok());
    }

    #[test]
    fn calls_pause_the_timer_and_the_last_one_rearms_it_a_full_interval_later() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::every(Duration::from_secs(10)));
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        s.warm_started();
        s.warm_finished(WarmOutcome::Ok, Duration::ZERO, t0);
        s.call_started();
        s.call_started();
        assert_eq!(s.status().next_warm_at, None);
        assert_eq!(s.status().active, 2);
        s.call_ended(at(t0, 5));
        assert_eq!(s.due(), None, "a call still runs");
        s.call_ended(at(t0, 7));
        assert_eq!(s.due(), Some(at(t0, 17).at));
        assert_eq!(s.status().active, 0);
    }

    #[test]
    fn a_failed_warm_is_reported_and_retried_next_tick() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        s.warm_started();
        let failure = ClientError::Connect(crate::error::ConnectError::Timeout(
            crate::error::Waiting::Relay,
        ));
        s.warm_finished(
            WarmOutcome::Failed(failure),
            Duration::from_secs(1),
            at(t0, 1),
        );
        assert!(matches!(
            s.status().last_outcome,
            Some(WarmOutcome::Failed(ClientError::Connect(_)))
        ));
        assert_eq!(s.due(), Some(at(t0, 11).at));
    }

    #[test]
    fn disabling_unschedules_and_a_new_interval_counts_from_now() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        s.set_policy(WarmPolicy::every(Duration::from_secs(30)), at(t0, 2));
        assert_eq!(s.due(), Some(at(t0, 32).at));
        s.set_policy(WarmPolicy::off(), at(t0, 3));
        assert_eq!(s.due(), None);
        assert!(!s.status().enabled);
        // Calls end with warms off: nothing is scheduled.
        s.call_started();
        s.call_ended(at(t0, 4));
        assert_eq!(s.due(), None);
    }

    #[test]
    fn too_short_an_interval_is_raised() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        s.set_policy(WarmPolicy::every(Duration::ZERO), t0);
        assert_eq!(s.status().interval, WarmPolicy::MIN_INTERVAL);
    }
}
