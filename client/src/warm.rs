//! The warm policy: while it is on, the client keeps its session
//! established — on each tick it pings a live session (measuring the round
//! trip) or re-establishes a dead one — so that the next call never pays a
//! cold start.
//!
//! [`Schedule`] decides when the next warm is due, without a clock of its
//! own (every input carries `now`). [`Warm`] holds it with its subscribers,
//! makes one warm at a time ([`Warm::warm`]: a timer's warm checks once its
//! turn comes that it is still due) and runs the timer ([`Warm::run`]);
//! what a warm does is the client's ([`Perform`]). The cycle:
//!
//! - enabling schedules a warm at once;
//! - a warm (automatic or [`Client::warm_now`](crate::Client::warm_now))
//!   schedules the next one a full interval after it ends, succeeded or
//!   failed (a failure is retried then);
//! - while calls run (from their dispatch to their last event) nothing is
//!   scheduled (`next_warm_at` is `None`: the calls keep the session warm),
//!   and the last call's end schedules the next warm a full interval later;
//! - disabling unschedules it.
//!
//! Subscribers are told of every change once, and of nothing that changed
//! nothing.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use proto::driver::sleep_until;
use proto::session::Now;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;

/// How a client keeps its session warm (off by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

/// What started a warm (`rex.warm.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The policy's timer.
    Timer,
    /// [`Client::warm_now`](crate::Client::warm_now).
    Manual,
}

impl Trigger {
    /// As the span names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Trigger::Timer => "timer",
            Trigger::Manual => "manual",
        }
    }
}

/// What a warm does (the client: a ping, or a new session).
pub(crate) trait Perform: Send + Sync {
    /// One warm: how it went and its latency; `None` when there is nothing
    /// to warm any more (the client is gone).
    fn perform(
        &self,
        trigger: Trigger,
    ) -> impl Future<Output = Option<(WarmOutcome, Duration)>> + Send;
}

/// What came of asking for a warm.
#[derive(Debug)]
pub(crate) enum Warmed {
    /// It was made: the state right after it.
    Done(WarmStatus),
    /// A timer's warm that was no longer due once its turn came (a manual
    /// warm, a call or a policy change moved the schedule meanwhile).
    NotDue,
    /// The client is gone.
    Gone,
}

/// Where a [`Warm`] reads the time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    /// The system's clocks.
    System,
    /// Tokio's clock (paused and moved on by tests), the wall clock moving
    /// with it from `anchor`.
    #[cfg(test)]
    Tokio(Now),
}

impl Clock {
    fn now(&self) -> Now {
        match self {
            Clock::System => Now::system(),
            #[cfg(test)]
            Clock::Tokio(anchor) => {
                let at = tokio::time::Instant::now().into_std();
                Now {
                    at,
                    wall: anchor.wall + at.saturating_duration_since(anchor.at),
                }
            }
        }
    }
}

/// A client's warm state: the schedule, its subscribers, and what its
/// timer waits on.
#[derive(Debug)]
pub(crate) struct Warm {
    schedule: Mutex<Schedule>,
    status: watch::Sender<WarmStatus>,
    /// Wakes the timer when the schedule changed.
    changed: Notify,
    /// One warm at a time.
    one_at_a_time: tokio::sync::Mutex<()>,
    /// Stops the timer (the client is gone).
    pub(crate) stop: CancellationToken,
    /// Whether the timer has been started.
    started: AtomicBool,
    clock: Clock,
    /// Changes announced to subscribers (for the tests' counts).
    #[cfg(test)]
    announced: std::sync::atomic::AtomicUsize,
}

impl Warm {
    pub(crate) fn new(policy: WarmPolicy) -> Self {
        Self::with_clock(policy, Clock::System)
    }

    pub(crate) fn with_clock(policy: WarmPolicy, clock: Clock) -> Self {
        let mut schedule = Schedule::new(WarmPolicy {
            enabled: false,
            ..policy
        });
        schedule.set_policy(policy, clock.now());
        let (status, _) = watch::channel(schedule.status());
        Self {
            schedule: Mutex::new(schedule),
            status,
            changed: Notify::new(),
            one_at_a_time: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
            started: AtomicBool::new(false),
            clock,
            #[cfg(test)]
            announced: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Changes the schedule as of now; if that changed anything, tells
    /// subscribers (in the order of the changes) and wakes the timer.
    fn update<R>(&self, change: impl FnOnce(&mut Schedule, Now) -> R) -> R {
        let mut s = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
        let before = s.changes;
        let result = change(&mut s, self.clock.now());
        if s.changes != before {
            self.status.send_replace(s.status());
            #[cfg(test)]
            self.announced.fetch_add(1, Ordering::Relaxed);
            drop(s);
            self.changed.notify_one();
        }
        result
    }

    /// The policy changes: enabling warms at once, disabling stops, a new
    /// interval counts from now.
    pub(crate) fn set_policy(&self, policy: WarmPolicy) {
        self.update(|s, now| s.set_policy(policy, now));
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
    fn due(&self) -> Option<Instant> {
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

    /// Marks the timer started; true the first time only.
    pub(crate) fn start_once(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    /// A call is dispatched; the guard ends it.
    pub(crate) fn call(self: &Arc<Self>) -> ActiveCall {
        self.update(|s, _| s.call_started());
        ActiveCall(Arc::clone(self))
    }

    /// One warm, after any in progress. A timer's warm is made only if it
    /// is still due once its turn comes: a manual warm just made, say,
    /// moved it a full interval on.
    pub(crate) async fn warm(&self, performer: &impl Perform, trigger: Trigger) -> Warmed {
        let _one = self.one_at_a_time.lock().await;
        if !self.update(|s, now| s.begin(trigger, now)) {
            return Warmed::NotDue;
        }
        // Should the caller give up on it midway, the schedule goes on.
        let mut warming = Warming {
            warm: self,
            over: false,
        };
        let result = performer.perform(trigger).await;
        warming.over = true;
        match result {
            Some((outcome, latency)) => Warmed::Done(self.update(|s, now| {
                s.finish(outcome, latency, now);
                s.status()
            })),
            None => {
                self.update(|s, now| s.abandon(now));
                Warmed::Gone
            }
        }
    }

    /// The timer: sleeps until the next warm is due and makes it, until
    /// stopped or the client is gone.
    pub(crate) async fn run(&self, performer: impl Perform) {
        loop {
            let due = self.due();
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.changed.notified() => continue,
                () = sleep_until(due) => {}
            }
            if let Warmed::Gone = self.warm(&performer, Trigger::Timer).await {
                return;
            }
        }
    }
}

/// A warm in progress: if it is given up on before it ends, the schedule
/// carries on as after a warm (without an outcome).
struct Warming<'a> {
    warm: &'a Warm,
    over: bool,
}

impl Drop for Warming<'_> {
    fn drop(&mut self) {
        if !self.over {
            self.warm.update(|s, now| s.abandon(now));
        }
    }
}

/// A running call, as the warm schedule counts it: ends when dropped.
#[derive(Debug)]
pub(crate) struct ActiveCall(Arc<Warm>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.update(|s, now| s.call_ended(now));
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
    /// How many changes so far (each one is announced).
    changes: u64,
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
            changes: 0,
        }
    }

    /// Whether warms are scheduled.
    pub(crate) fn enabled(&self) -> bool {
        self.policy.enabled
    }

    /// The policy changes: enabling warms at once, disabling stops, a new
    /// interval counts from now. The same policy again changes nothing.
    pub(crate) fn set_policy(&mut self, policy: WarmPolicy, now: Now) {
        let was = self.policy;
        if was == policy {
            return;
        }
        self.changes += 1;
        self.policy = policy;
        if !policy.enabled {
            self.due = None;
        } else if !was.enabled {
            self.rearm_after(Duration::ZERO, now);
        } else if was.interval() != policy.interval() {
            self.rearm_after(policy.interval(), now);
        }
    }

    /// A call started: nothing is scheduled while calls run.
    pub(crate) fn call_started(&mut self) {
        self.changes += 1;
        self.active += 1;
        self.due = None;
    }

    /// A call ended: the last one re-arms the timer a full interval later.
    pub(crate) fn call_ended(&mut self, now: Now) {
        self.changes += 1;
        self.active = self.active.saturating_sub(1);
        self.rearm_after(self.policy.interval(), now);
    }

    /// A warm may begin: a manual one always, the timer's only while it is
    /// due. True if it begins.
    pub(crate) fn begin(&mut self, trigger: Trigger, now: Now) -> bool {
        if trigger == Trigger::Timer && self.due.is_none_or(|(at, _)| at > now.at) {
            return false;
        }
        self.changes += 1;
        self.warming = true;
        self.due = None;
        true
    }

    /// A warm ended: the next is due a full interval later.
    pub(crate) fn finish(&mut self, outcome: WarmOutcome, latency: Duration, now: Now) {
        self.changes += 1;
        self.warming = false;
        self.last_at = Some(now.wall);
        self.last_outcome = Some(outcome);
        self.last_latency = Some(latency);
        self.rearm_after(self.policy.interval(), now);
    }

    /// A warm was given up on before it ended: the next is due a full
    /// interval later, and the last outcome stays as it was.
    pub(crate) fn abandon(&mut self, now: Now) {
        self.changes += 1;
        self.warming = false;
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
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Semaphore;

    fn at(t0: Now, secs: u64) -> Now {
        t0.after(Duration::from_secs(secs))
    }

    fn failure() -> ClientError {
        ClientError::Connect(crate::error::ConnectError::Timeout(
            crate::error::Waiting::Relay,
        ))
    }

    #[test]
    fn enabling_warms_at_once_then_every_interval_after_each_warm() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        assert_eq!(s.due(), None);
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        assert_eq!(s.due(), Some(t0.at));
        assert_eq!(s.status().next_warm_at, Some(t0.wall));
        assert!(s.begin(Trigger::Timer, t0));
        assert_eq!(s.status().next_warm_at, None, "not while warming");
        s.finish(WarmOutcome::Ok, Duration::from_millis(2), at(t0, 1));
        assert_eq!(s.due(), Some(at(t0, 11).at));
        let st = s.status();
        assert_eq!(st.next_warm_at, Some(at(t0, 11).wall));
        assert_eq!(st.last_warm_at, Some(at(t0, 1).wall));
        assert_eq!(st.last_latency, Some(Duration::from_millis(2)));
        assert!(st.last_outcome.unwrap().is_ok());
    }

    #[test]
    fn a_timer_warm_begins_only_while_it_is_due_and_a_manual_one_always() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        assert!(!s.begin(Trigger::Timer, t0), "nothing is scheduled");
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        assert!(s.begin(Trigger::Manual, t0));
        s.finish(WarmOutcome::Ok, Duration::ZERO, t0);
        let changes = s.changes;
        assert!(!s.begin(Trigger::Timer, at(t0, 9)), "not due yet");
        assert_eq!(s.changes, changes, "a warm not begun changes nothing");
        assert!(s.begin(Trigger::Timer, at(t0, 10)));
    }

    #[test]
    fn calls_pause_the_timer_and_the_last_one_rearms_it_a_full_interval_later() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::every(Duration::from_secs(10)));
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        s.begin(Trigger::Manual, t0);
        s.finish(WarmOutcome::Ok, Duration::ZERO, t0);
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
    fn a_failed_warm_is_reported_and_due_again_a_full_interval_later() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        s.begin(Trigger::Timer, t0);
        s.finish(
            WarmOutcome::Failed(failure()),
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
    fn a_warm_given_up_on_keeps_the_schedule_going() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        s.set_policy(WarmPolicy::every(Duration::from_secs(10)), t0);
        s.begin(Trigger::Manual, t0);
        s.abandon(at(t0, 1));
        let st = s.status();
        assert!(!st.warming);
        assert!(st.last_outcome.is_none());
        assert_eq!(s.due(), Some(at(t0, 11).at));
    }

    #[test]
    fn too_short_an_interval_is_raised() {
        let t0 = Now::system();
        let mut s = Schedule::new(WarmPolicy::off());
        s.set_policy(WarmPolicy::every(Duration::ZERO), t0);
        assert_eq!(s.status().interval, WarmPolicy::MIN_INTERVAL);
    }

    // The warm state and its timer on tokio's paused clock: every instant
    // below is exact (the clock moves only when every task waits, straight
    // to the next timer).

    /// A stand-in for the client: notes when each warm was made; fails the
    /// first `fail` of them; with a gate, each waits for a permit first.
    #[derive(Clone, Default)]
    struct Fake {
        made: Arc<Mutex<Vec<(Trigger, tokio::time::Instant)>>>,
        fail: Arc<AtomicUsize>,
        gate: Option<Arc<Semaphore>>,
    }

    impl Fake {
        fn made(&self) -> Vec<(Trigger, tokio::time::Instant)> {
            self.made.lock().unwrap().clone()
        }
    }

    impl Perform for Fake {
        async fn perform(&self, trigger: Trigger) -> Option<(WarmOutcome, Duration)> {
            if let Some(gate) = &self.gate {
                gate.acquire().await.ok()?.forget();
            }
            self.made
                .lock()
                .unwrap()
                .push((trigger, tokio::time::Instant::now()));
            let failing = self
                .fail
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            let outcome = if failing {
                WarmOutcome::Failed(failure())
            } else {
                WarmOutcome::Ok
            };
            Some((outcome, Duration::from_millis(1)))
        }
    }

    const TEN: Duration = Duration::from_secs(10);

    /// A warm state on tokio's clock, its timer running with `fake`; and
    /// the start (the wall clock of an instant is the anchor's plus the
    /// time since).
    fn timed(policy: WarmPolicy, fake: &Fake) -> (Arc<Warm>, tokio::time::Instant, SystemTime) {
        let t0 = tokio::time::Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let anchor = Now {
            at: t0.into_std(),
            wall: wall0,
        };
        let warm = Arc::new(Warm::with_clock(policy, Clock::Tokio(anchor)));
        let timer = Arc::clone(&warm);
        let fake = fake.clone();
        tokio::spawn(async move { timer.run(fake).await });
        (warm, t0, wall0)
    }

    /// Lets every task run until all wait (the clock does not move).
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_exactly_when_next_warm_at_says() {
        let fake = Fake::default();
        let (warm, t0, wall0) = timed(WarmPolicy::every(TEN), &fake);
        settle().await;
        // Enabled at creation: a warm at once, then one every interval.
        assert_eq!(fake.made(), vec![(Trigger::Timer, t0)]);
        let mut expected = vec![(Trigger::Timer, t0)];
        for n in 1..=3u32 {
            let status = warm.status();
            let next = status.next_warm_at.expect("scheduled");
            assert_eq!(next, wall0 + TEN * n);
            tokio::time::sleep_until(t0 + TEN * n).await;
            settle().await;
            expected.push((Trigger::Timer, t0 + TEN * n));
            assert_eq!(fake.made(), expected, "warm {n} fired at next_warm_at");
            assert_eq!(warm.status().last_warm_at, Some(next));
        }
        warm.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_pauses_the_timer_and_its_end_rearms_it_a_full_interval_later() {
        let fake = Fake::default();
        let (warm, t0, wall0) = timed(WarmPolicy::every(TEN), &fake);
        settle().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let call = warm.call();
        let during = warm.status();
        assert_eq!(during.active, 1);
        assert_eq!(during.next_warm_at, None, "paused while the call runs");
        // Far past the warm that was due at t0 + 10: none is made.
        tokio::time::sleep(Duration::from_secs(60)).await;
        settle().await;
        assert_eq!(fake.made(), vec![(Trigger::Timer, t0)]);
        assert_eq!(warm.status().next_warm_at, None);
        // The call ends at t0 + 65: the next warm is at t0 + 75.
        drop(call);
        let after = warm.status();
        assert_eq!(after.active, 0);
        assert_eq!(after.next_warm_at, Some(wall0 + Duration::from_secs(75)));
        tokio::time::sleep(Duration::from_secs(20)).await;
        settle().await;
        assert_eq!(
            fake.made(),
            vec![
                (Trigger::Timer, t0),
                (Trigger::Timer, t0 + Duration::from_secs(75)),
                (Trigger::Timer, t0 + Duration::from_secs(85)),
            ]
        );
        warm.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_warm_starts_the_cycle_again() {
        let fake = Fake::default();
        let (warm, t0, wall0) = timed(WarmPolicy::every(TEN), &fake);
        settle().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Warmed::Done(status) = warm.warm(&fake, Trigger::Manual).await else {
            panic!("a manual warm is always made")
        };
        assert_eq!(status.last_warm_at, Some(wall0 + Duration::from_secs(5)));
        assert_eq!(status.next_warm_at, Some(wall0 + Duration::from_secs(15)));
        // No warm at t0 + 10 where the old cycle had one; the next at t0 + 15.
        tokio::time::sleep(Duration::from_secs(9)).await;
        settle().await;
        assert_eq!(fake.made().len(), 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(
            fake.made(),
            vec![
                (Trigger::Timer, t0),
                (Trigger::Manual, t0 + Duration::from_secs(5)),
                (Trigger::Timer, t0 + Duration::from_secs(15)),
            ]
        );
        warm.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_warm_queued_behind_a_manual_one_is_not_made_after_it() {
        // No timer task here: the test plays the timer, which found its
        // warm due and then had to wait for the manual warm in progress.
        let t0 = tokio::time::Instant::now();
        let anchor = Now {
            at: t0.into_std(),
            wall: SystemTime::UNIX_EPOCH,
        };
        let warm = Arc::new(Warm::with_clock(
            WarmPolicy::every(TEN),
            Clock::Tokio(anchor),
        ));
        let gate = Arc::new(Semaphore::new(0));
        let fake = Fake {
            gate: Some(Arc::clone(&gate)),
            ..Fake::default()
        };
        assert_eq!(warm.due(), Some(t0.into_std()), "due at once");
        let manual = tokio::spawn({
            let (warm, fake) = (Arc::clone(&warm), fake.clone());
            async move { warm.warm(&fake, Trigger::Manual).await }
        });
        while !warm.status().warming {
            tokio::task::yield_now().await;
        }
        let timer = tokio::spawn({
            let (warm, fake) = (Arc::clone(&warm), fake.clone());
            async move { warm.warm(&fake, Trigger::Timer).await }
        });
        settle().await;
        gate.add_permits(2);
        assert!(matches!(manual.await.unwrap(), Warmed::Done(_)));
        assert!(matches!(timer.await.unwrap(), Warmed::NotDue));
        assert_eq!(fake.made(), vec![(Trigger::Manual, t0)]);
        assert_eq!(warm.due(), Some((t0 + TEN).into_std()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_warm_says_why_and_is_made_again_on_the_next_tick() {
        let fake = Fake {
            fail: Arc::new(AtomicUsize::new(1)),
            ..Fake::default()
        };
        let (warm, t0, wall0) = timed(WarmPolicy::every(TEN), &fake);
        settle().await;
        let failed = warm.status();
        assert!(matches!(
            failed.last_outcome,
            Some(WarmOutcome::Failed(ClientError::Connect(
                crate::error::ConnectError::Timeout(crate::error::Waiting::Relay)
            )))
        ));
        assert_eq!(failed.next_warm_at, Some(wall0 + TEN));
        tokio::time::sleep(TEN).await;
        settle().await;
        assert_eq!(
            fake.made(),
            vec![(Trigger::Timer, t0), (Trigger::Timer, t0 + TEN)],
            "the retry is made on the next tick"
        );
        let retried = warm.status();
        assert!(retried.last_outcome.is_some_and(|o| o.is_ok()));
        assert_eq!(retried.last_warm_at, Some(wall0 + TEN));
        warm.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_hear_of_each_change_once() {
        let gate = Arc::new(Semaphore::new(0));
        let fake = Fake {
            gate: Some(Arc::clone(&gate)),
            ..Fake::default()
        };
        let (warm, _, wall0) = timed(WarmPolicy::off(), &fake);
        let mut rx = warm.subscribe();
        settle().await;
        // After each step exactly one announcement, which the receiver sees
        // once; a step that changes nothing announces nothing.
        let mut announced = warm.announced.load(Ordering::Relaxed);
        let mut step = |what: &str, changes: bool| {
            let now = warm.announced.load(Ordering::Relaxed);
            assert_eq!(now - announced, usize::from(changes), "{what}");
            announced = now;
            assert_eq!(rx.has_changed().unwrap(), changes, "{what}");
            let seen = rx.borrow_and_update().clone();
            assert!(!rx.has_changed().unwrap(), "{what}: once");
            seen
        };
        assert!(!step("nothing yet", false).enabled);

        warm.set_policy(WarmPolicy::every(TEN));
        let on = step("enabled", true);
        assert!(on.enabled && !on.warming);
        assert_eq!(on.next_warm_at, Some(wall0), "due at once");
        // The timer's warm begins and waits at the gate.
        settle().await;
        let began = step("warm began", true);
        assert!(began.warming && began.next_warm_at.is_none());
        gate.add_permits(1);
        settle().await;
        let done = step("warm done", true);
        assert!(!done.warming);
        assert_eq!(done.last_warm_at, Some(wall0));
        assert_eq!(done.next_warm_at, Some(wall0 + TEN));

        warm.set_policy(WarmPolicy::every(TEN * 2));
        let longer = step("interval changed", true);
        assert_eq!(longer.interval, TEN * 2);
        assert_eq!(longer.next_warm_at, Some(wall0 + TEN * 2));
        warm.set_policy(WarmPolicy::every(TEN * 2));
        settle().await;
        step("the same policy again", false);

        let call = warm.call();
        let started = step("call started", true);
        assert_eq!((started.active, started.next_warm_at), (1, None));
        drop(call);
        let ended = step("call ended", true);
        assert_eq!(ended.active, 0);
        assert_eq!(ended.next_warm_at, Some(wall0 + TEN * 2));
        settle().await;
        step("nothing more", false);

        warm.set_policy(WarmPolicy::off());
        let off = step("disabled", true);
        assert!(!off.enabled && off.next_warm_at.is_none());
        warm.stop.cancel();
    }
}
