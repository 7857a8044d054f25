//! The embeddable client: one session per exec-server, reused across calls
//! and re-established when it is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use lifecycle::Tasks;
use opentelemetry::trace::{Span, Status as SpanStatus, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::noise::EarlyTicket;
use telemetry::spans;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::connect;
use crate::dispatch::{Dispatch, Records, request_for};
use crate::error::{ClientError, ConnectError, Waiting};
use crate::exec::{ExecFailure, ExecSpec, Output};
use crate::execution::{Carrier, Controller, Delivery, Execution, Sent};
use crate::router::FIRST_CALL;
use crate::session::{NewCall, SessionHandle, Traced};
use crate::transport_tasks::TransportTasks;
use crate::tunnel;
use crate::warm::{Perform, Trigger, Warm, WarmOutcome, WarmPolicy, WarmStatus, Warmed};

/// A client for one exec-server.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// The exec-server's id (derived from its key once, not per call).
    server_id: String,
    channel: Mutex<Option<Channel>>,
    /// The tasks of its connections (theirs, not its own: see
    /// [`TransportTasks`]).
    transport: TransportTasks,
    session: Mutex<Option<SessionHandle>>,
    /// Sessions established so far (counted under `session`'s lock, so
    /// that a dispatch that had to wait for the lock knows whether a
    /// session was established meanwhile).
    sessions_opened: AtomicU64,
    /// The exec-server run's ticket, for early data (from the latest
    /// hello answer, or the config).
    early_ticket: std::sync::Mutex<Option<EarlyTicket>>,
    /// The latest dispatch's request was handed to a link in handshake
    /// message 1 (see [`Client::request_left`]).
    early_left: std::sync::atomic::AtomicBool,
    /// The warm policy's schedule and its task's wake-ups.
    warm: Arc<Warm>,
    /// The sessions' driver tasks and the warm task. A session closes by
    /// itself once every handle on it (this client, its executions and
    /// controllers) is gone.
    tasks: Tasks,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The warm task holds no reference to the client: it is told.
        self.warm.stop.cancel();
    }
}

/// How a dispatch got its session (`rex.session.warmth` on its
/// `session.acquire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Warmth {
    /// A live session was there.
    Warm,
    /// One was being established (by a warm or another call) when it
    /// asked: it waited for it.
    Waited,
    /// It established one itself.
    Cold,
}

impl Warmth {
    fn name(self) -> &'static str {
        match self {
            Warmth::Warm => "warm",
            Warmth::Waited => "waited",
            Warmth::Cold => "cold",
        }
    }
}

impl Client {
    /// A client; nothing is dialled until the first call (or [`Client::connect`]).
    pub fn new(config: ClientConfig) -> Self {
        let config_ticket = config.early_ticket;
        let client = Self {
            inner: Arc::new(Inner {
                server_id: config.server.server_id(),
                warm: Arc::new(Warm::new(config.warm)),
                config,
                channel: Mutex::new(None),
                transport: TransportTasks::default(),
                session: Mutex::new(None),
                sessions_opened: AtomicU64::new(0),
                early_ticket: std::sync::Mutex::new(config_ticket),
                early_left: std::sync::atomic::AtomicBool::new(false),
                tasks: Tasks::new(),
            }),
        };
        // Outside a runtime, the warm task starts with the first call.
        client.ensure_warm_task();
        client
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// How many sessions this client has established so far (1 while one
    /// warm session serves every call).
    pub fn sessions_opened(&self) -> u64 {
        self.inner.sessions_opened.load(Ordering::Relaxed)
    }

    /// The live session's counters (flights sent, round trips waited on
    /// before its first call's first event, retries after early data was
    /// refused), as of the last event it delivered; `None` without a
    /// session.
    pub async fn session_counters(&self) -> Option<crate::SessionCounters> {
        self.inner
            .session
            .lock()
            .await
            .as_ref()
            .map(SessionHandle::counters)
    }

    /// The ticket of the exec-server's run that the latest session was
    /// given (or the config's): kept by a caller that outlives this
    /// client (the CLI keeps it in a file) and given to the next one
    /// ([`ClientConfig::early_ticket`]), whose cold calls then run from
    /// handshake message 1.
    pub fn early_ticket(&self) -> Option<EarlyTicket> {
        *self
            .inner
            .early_ticket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the latest [`exec`](Self::exec) handed its request to a
    /// relay (in handshake message 1, establishing its session) before it
    /// failed. Then no other way must be tried with a new request: the
    /// relay's refusal is no proof that the exec-server did not get it.
    /// (This client already tried its alternates with the same message 1,
    /// which the exec-server runs at most once.)
    pub fn request_left(&self) -> bool {
        self.inner.early_left.load(Ordering::Acquire)
    }

    /// Establishes the session now (a warm-up), if not already live.
    pub async fn connect(&self) -> Result<(), ClientError> {
        self.ensure_warm_task();
        self.acquire(&Context::new(), SystemTime::now(), None)
            .await
            .map(|_| ())
    }

    /// Turns the warm policy on or off, or changes its interval (telling
    /// subscribers). Turning it on warms at once; it is off by default
    /// ([`ClientConfig::warm`]). Call it from within a Tokio runtime (the
    /// warm task runs on it).
    pub fn set_warm_policy(&self, policy: WarmPolicy) {
        self.inner.warm.set_policy(policy);
        self.ensure_warm_task();
    }

    /// The warm policy's state: whether it is on, when the next warm fires
    /// (none while calls run), when the last one happened, how it went and
    /// its latency, and the calls running.
    pub fn warm_status(&self) -> WarmStatus {
        self.inner.warm.status()
    }

    /// Every change of [`warm_status`](Self::warm_status) (a warm done,
    /// the policy changed, a call started or ended), as a watch channel: a
    /// UI can show an exact countdown without polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<WarmStatus> {
        self.inner.warm.subscribe()
    }

    /// Warms now: pings the live session (measuring the round trip) or
    /// establishes one, and starts the cycle again (the next automatic
    /// warm is a full interval after this one). Returns the status after
    /// it; a failure is in its `last_outcome`.
    pub async fn warm_now(&self) -> WarmStatus {
        self.ensure_warm_task();
        match self.inner.warm.warm(self, Trigger::Manual).await {
            Warmed::Done(status) => status,
            // A manual warm is always made, and this client is here.
            Warmed::NotDue | Warmed::Gone => self.inner.warm.status(),
        }
    }

    /// Starts the warm task, once, if warms are on and a runtime is here.
    fn ensure_warm_task(&self) {
        let warm = &self.inner.warm;
        if !warm.enabled() || tokio::runtime::Handle::try_current().is_err() || !warm.start_once() {
            return;
        }
        let performer = Warmer(Arc::downgrade(&self.inner));
        let warm = Arc::clone(warm);
        let span = tracing::debug_span!(parent: None, "warm", server = %&self.inner.server_id[..8]);
        self.inner
            .tasks
            .spawn(span, async move { warm.run(performer).await });
    }

    /// One warm in a `session.warm` span of its own: a ping of the live
    /// session (or of one another call or warm just established), or a new
    /// session if there is none or it does not answer.
    async fn warm_once(&self, trigger: Trigger) -> (WarmOutcome, Duration) {
        let tracer = opentelemetry::global::tracer("core-client");
        let mut span = tracer
            .span_builder(spans::SESSION_WARM)
            .with_attributes(vec![
                KeyValue::new("rex.server.id", self.inner.server_id.clone()),
                KeyValue::new("rex.warm.trigger", trigger.name()),
            ])
            .start_with_context(&tracer, &Context::new());
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        let (outcome, latency, kind, pinged) = self.ping_or_establish(&cx).await;
        if let Some(origin) = pinged
            .as_ref()
            .map(SessionHandle::origin)
            .filter(|o| o.is_valid())
        {
            span.add_link(origin.clone(), Vec::new());
        }
        if let WarmOutcome::Failed(e) = &outcome {
            span.set_status(SpanStatus::error(e.to_string()));
        }
        span.set_attribute(KeyValue::new("rex.warm.kind", kind));
        span.set_attribute(KeyValue::new(
            "rex.warm.latency_ns",
            i64::try_from(latency.as_nanos()).unwrap_or(i64::MAX),
        ));
        span.end();
        (outcome, latency)
    }

    /// Pings the session there is (the round trip), or establishes one
    /// (the time it took): the outcome, latency, kind (`ping`,
    /// `establish`) and the session pinged.
    async fn ping_or_establish(
        &self,
        cx: &Context,
    ) -> (WarmOutcome, Duration, &'static str, Option<SessionHandle>) {
        let started = Instant::now();
        let timeout = self.inner.config.handshake_timeout;
        // A session that does not answer is replaced, once.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let session = match self.session(cx).await {
                Ok((_, Warmth::Cold)) => {
                    return (WarmOutcome::Ok, started.elapsed(), "establish", None);
                }
                Ok((s, Warmth::Warm | Warmth::Waited)) => s,
                Err(e) => {
                    return (WarmOutcome::Failed(e), started.elapsed(), "establish", None);
                }
            };
            let failure = match tokio::time::timeout(timeout, session.ping()).await {
                Ok(Ok(rtt)) => return (WarmOutcome::Ok, rtt, "ping", Some(session)),
                // It has ended: the next look finds it closed.
                Ok(Err(lost)) => ClientError::SessionLost(lost),
                Err(_) => {
                    // It does not answer: a new session replaces it.
                    session.abandon();
                    ClientError::Connect(ConnectError::Timeout(Waiting::ExecServer))
                }
            };
            if attempts >= 2 {
                return (
                    WarmOutcome::Failed(failure),
                    started.elapsed(),
                    "ping",
                    Some(session),
                );
            }
        }
    }

    /// A ready session: the live one, or one established now with its
    /// set-up spans under `cx`; and how it was found.
    async fn session(&self, cx: &Context) -> Result<(SessionHandle, Warmth), ClientError> {
        let (handle, warmth, _) = self.session_with(cx, None).await?;
        Ok((handle, warmth))
    }

    /// [`session`](Self::session), with a call: if a session has to be
    /// established for it, the call rides in its handshake message 1 (as
    /// call 1); otherwise it is handed back, to be started on the session.
    async fn session_with(
        &self,
        cx: &Context,
        first: Option<(NewCall, Context)>,
    ) -> Result<(SessionHandle, Warmth, FirstCall), ClientError> {
        // Sessions are counted under the lock: one counted while this
        // dispatch waited for the lock was being established when it came.
        let opened = self.inner.sessions_opened.load(Ordering::Acquire);
        let (mut guard, waited) = match self.inner.session.try_lock() {
            Ok(guard) => (guard, false),
            Err(_) => (self.inner.session.lock().await, true),
        };
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            let established_meanwhile =
                waited && self.inner.sessions_opened.load(Ordering::Acquire) != opened;
            let warmth = if established_meanwhile {
                Warmth::Waited
            } else {
                Warmth::Warm
            };
            return Ok((
                s.clone(),
                warmth,
                FirstCall::Back(first.map(|(call, _)| Box::new(call))),
            ));
        }
        let config = &self.inner.config;
        let result = async {
            // The connection (the client's, kept for later sessions) is
            // set up while message 1 is made.
            let channel = async {
                let mut ch = self.inner.channel.lock().await;
                if let Some(c) = ch.as_ref() {
                    return Ok(c.clone());
                }
                let c = tunnel::channel(config, &config.target, &self.inner.transport).await?;
                *ch = Some(c.clone());
                Ok(c)
            };
            tokio::time::timeout(
                config.handshake_timeout,
                connect::open(
                    config,
                    channel,
                    cx,
                    (&self.inner.tasks, &self.inner.transport),
                    (first, self.early_ticket()),
                    &self.inner.early_left,
                ),
            )
            .await
            .map_err(|_| ConnectError::Timeout(Waiting::Establishing))?
        }
        .await;
        let opened = result?;
        if let Some(ticket) = opened.ticket {
            *self
                .inner
                .early_ticket
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(ticket);
        }
        self.inner.sessions_opened.fetch_add(1, Ordering::AcqRel);
        *guard = Some(opened.handle.clone());
        let first = match opened.first_at {
            Some(at) => FirstCall::Sent(at),
            None => FirstCall::Back(None),
        };
        Ok((opened.handle, Warmth::Cold, first))
    }

    /// Closes the session cleanly (authenticated close) and waits until it
    /// has ended. The next call opens a new one.
    pub async fn close(&self) {
        let session = self.inner.session.lock().await.take();
        if let Some(s) = session {
            s.close().await;
        }
    }

    /// Closes the session without waiting for the exec-server's answer:
    /// its authenticated close is sent (after anything queued), the link
    /// and the client's connections are let go, and this returns once each
    /// connection has written what it held and closed, so a process that
    /// exits next spends no round trip on closing and loses nothing it
    /// sent. The exec-server ends the session (and any command still
    /// running in it) when the close arrives. True once it was all
    /// written; false if `bound` passed first (a link that takes nothing).
    pub async fn close_sent(&self, bound: std::time::Duration) -> bool {
        let session = self.inner.session.lock().await.take();
        tokio::time::timeout(bound, async {
            if let Some(s) = session {
                s.close_handed().await;
                // The connection's task writes the close before the link
                // is let go: letting go resets the stream, and a reset
                // takes with it what the stream has not yet written.
                self.inner.transport.settled().await;
                s.let_go().await;
            }
            // Nothing holds a connection now: each writes out what it
            // holds, says goodbye, and its tasks end.
            drop(self.inner.channel.lock().await.take());
            self.inner.transport.ended().await;
        })
        .await
        .is_ok()
    }

    /// A ready session for a call, from `start`: the session, when it was
    /// in hand (where the call's next stage starts), and what became of
    /// `call`: sent as call 1 in the handshake of a session established
    /// for it, or handed back to be started on the session.
    async fn acquire(
        &self,
        parent: &Context,
        start: SystemTime,
        call: Option<NewCall>,
    ) -> Result<(SessionHandle, SystemTime, FirstCall), ClientError> {
        let tracer = opentelemetry::global::tracer("core-client");
        let mut span = tracer
            .span_builder(spans::SESSION_ACQUIRE)
            .with_start_time(start)
            .start_with_context(&tracer, parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        // A session set up while the call rides in its message 1 has its
        // set-up spans beside the call's path (children of the dispatch),
        // not within `session.acquire`, which ends as the call leaves.
        match self
            .session_with(&cx, call.map(|c| (c, parent.clone())))
            .await
        {
            Ok((handle, warmth, first)) => {
                span.set_attribute(KeyValue::new("rex.session.reused", warmth != Warmth::Cold));
                span.set_attribute(KeyValue::new("rex.session.warmth", warmth.name()));
                // A call sent in message 1 is on its way from there: the
                // session's set-up goes on beside it.
                let ready = match &first {
                    FirstCall::Sent(at) => {
                        span.set_attribute(KeyValue::new(spans::ATTR_SESSION_EARLY_DATA, true));
                        *at
                    }
                    FirstCall::Back(_) => SystemTime::now(),
                };
                span.end_with_timestamp(ready);
                Ok((handle, ready, first))
            }
            Err(e) => {
                span.set_attribute(KeyValue::new("rex.session.warmth", Warmth::Cold.name()));
                span.set_status(SpanStatus::error(e.to_string()));
                span.end();
                Err(e)
            }
        }
    }

    /// Runs a command; its events arrive on the returned [`Execution`] as
    /// the exec-server pushes them.
    pub async fn exec(&self, spec: ExecSpec) -> Result<Execution, ClientError> {
        self.ensure_warm_task();
        let request = request_for(&spec)?;
        let config = &self.inner.config;
        let records = Records {
            #[cfg(feature = "records")]
            store: config.metadata.as_ref(),
            #[cfg(not(feature = "records"))]
            store: None,
            args: config.record_args,
        }
        .chosen(spec.recording);
        // The call counts from its dispatch: no warm is scheduled until it
        // ends (or fails).
        let active = self.inner.warm.call();
        let mut dispatch = Dispatch::begin(&spec, &self.inner.server_id, records);
        self.inner.early_left.store(false, Ordering::Release);
        let cx = dispatch.cx.clone();
        // A session found dead before anything was sent is replaced once.
        let mut attempts = 0;
        let mut from = dispatch.prepared;
        let limits = config.limits();
        loop {
            attempts += 1;
            // A call that may have to establish its session is made ready
            // to ride in its message 1; its queue holds the largest window
            // the session can agree.
            let early = (config.early_data && limits.output_window != 0)
                .then(|| {
                    proto::session::fits_early(&limits, &request, dispatch.trace.as_ref()).then(
                        || {
                            NewCall::start(
                                request.clone(),
                                dispatch.trace.clone(),
                                &cx,
                                call_queue(
                                    config.events_per_call,
                                    limits.output_window.max(limits.output_window_max),
                                ),
                            )
                        },
                    )
                })
                .flatten();
            let (first, ours) = match early {
                Some((call, ours)) => (Some(call), Some(ours)),
                None => (None, None),
            };
            let (session, ready, first) = match self.acquire(&cx, from, first).await {
                Ok(s) => s,
                Err(e) => return Err(dispatch.fail(e)),
            };
            from = ready;
            if let Some(s) = dispatch.span.as_mut() {
                s.set_attribute(KeyValue::new(
                    "rex.clock_offset_ns",
                    session.clock_offset_nanos(),
                ));
            }
            let (call_id, (rx, call, taken)) = match (first, ours) {
                (FirstCall::Sent(_), Some(ours)) => (FIRST_CALL, ours),
                (FirstCall::Back(back), ours) => {
                    let (mut new, ours) = match (back, ours) {
                        (Some(new), Some(ours)) => (*new, ours),
                        _ => NewCall::start(
                            request.clone(),
                            dispatch.trace.clone(),
                            &cx,
                            call_queue(
                                config.events_per_call,
                                session.output_window().max(limits.output_window_max),
                            ),
                        ),
                    };
                    new.traced = Traced::at(&cx, "exec", ready);
                    match session.start(|call_id| new.into_command(call_id)).await {
                        Ok(call_id) => (call_id, ours),
                        // The session ended before the request was queued:
                        // a new one is opened, once.
                        Err(_) if attempts < 2 => continue,
                        Err(lost) => return Err(dispatch.fail(ClientError::SessionLost(lost))),
                    }
                }
                (FirstCall::Sent(_), None) => {
                    // Only a call given to the session's opening is sent in
                    // its message 1.
                    return Err(dispatch.fail(ClientError::SessionLost(session.lost())));
                }
            };
            let terminal = spec.terminal.is_some();
            let sent = Arc::new(Sent::default());
            let control = Controller::new(
                call_id,
                Carrier::Session(session),
                cx,
                terminal,
                Some(taken),
                Arc::clone(&sent),
            );
            return Ok(Execution::new(
                control,
                (rx, call),
                dispatch.span.take(),
                Delivery::new(
                    dispatch.dispatched,
                    dispatch.record.take(),
                    sent,
                    terminal,
                    spec.login_shell,
                ),
                Some(active),
            ));
        }
    }

    /// Runs a command with stdin closed and collects its output.
    pub async fn output(&self, spec: ExecSpec) -> Result<Result<Output, ExecFailure>, ClientError> {
        let exec = self.exec(spec).await?;
        Ok(exec.output().await)
    }
}

/// What became of the call a dispatch offered to its session's opening.
enum FirstCall {
    /// It rode in handshake message 1 as call 1, taken at this instant.
    Sent(SystemTime),
    /// No session was established for it (a live one was there): back to
    /// the dispatch, if it offered one.
    Back(Option<Box<NewCall>>),
}

/// The client as its warm timer sees it: held weakly, so that the timer
/// does not keep a client nobody else holds.
struct Warmer(Weak<Inner>);

impl Perform for Warmer {
    async fn perform(&self, trigger: Trigger) -> Option<(WarmOutcome, Duration)> {
        let inner = self.0.upgrade()?;
        Some(Client { inner }.warm_once(trigger).await)
    }
}

impl Perform for Client {
    async fn perform(&self, trigger: Trigger) -> Option<(WarmOutcome, Duration)> {
        Some(self.warm_once(trigger).await)
    }
}

/// The room a call's event queue needs: every event the exec-server may
/// send beyond what the caller has taken (the output window; every event
/// costs at least [`EVENT_COST`](proto::session::output::EVENT_COST)), and
/// the one this side may add (a failure), so that the session never has to
/// stop for one caller that does not read.
fn call_queue(events_per_call: usize, output_window: u32) -> usize {
    let window = usize::try_from(output_window).unwrap_or(usize::MAX);
    let cost = usize::try_from(proto::session::output::EVENT_COST).unwrap_or(1);
    events_per_call.max(window / cost + 2)
}
