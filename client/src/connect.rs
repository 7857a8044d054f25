//! Establishing a session: reach the relay (or the exec-server directly),
//! open the tunnel stream with handshake message 1 riding on it, start the
//! session's driver, and wait until the machine reports the session ready.
//!
//! Spans made here, under the caller's `session.acquire`: `relay.connect`
//! (the tunnel stream opened and paired), `noise.handshake` (until message 2
//! proved the exec-server's key) and `session.init` (until the hello was
//! answered).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use lifecycle::Tasks;
use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use proto::driver::{deliver_events, drive_link, first_flight};
use proto::noise::EarlyTicket;
use proto::session::{ClientSession, FirstCallError, LinkFailure, LinkFailureKind, Now};
use telemetry::{semconv, spans};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::abandon;
use crate::config::ClientConfig;
use crate::error::{ConnectError, Waiting};
use crate::exec::ExecFailure;
use crate::reconnect::Reconnect;
use crate::router::{FIRST_CALL, Router};
use crate::session::{NewCall, SessionHandle, Shared};
use crate::transport_tasks::TransportTasks;
use crate::tunnel;

/// Whether the relay refused a session it says it did not take (it does
/// not have the exec-server, is at a limit, or the exec-server did not
/// answer it), so that another relay may.
pub(crate) fn relay_refused(e: &ConnectError) -> bool {
    matches!(
        e,
        ConnectError::UnknownServer(_)
            | ConnectError::Busy(crate::error::Busy::Link { .. })
            | ConnectError::Timeout(Waiting::Relay)
    )
}

/// Whether what was dialled refused the session at one of its limits
/// (its table of sessions still in their handshake, its sessions per
/// exec-server): a refusal that a moment later, when others have finished,
/// may not come.
fn busy(e: &ConnectError) -> bool {
    matches!(e, ConnectError::Busy(crate::error::Busy::Link { .. }))
}

/// Most times a session refused as busy is tried again on the same link:
/// with [`busy_backoff`], 1.6 to 4.9 s of pauses in all, long enough for a
/// burst of sessions on a small machine to drain, short enough that a
/// limit that stays is said within seconds.
const BUSY_RETRIES: u32 = 8;
/// The pause before the first of those tries, doubling for each after it.
const BUSY_BACKOFF: Duration = Duration::from_millis(20);
/// The longest pause between two of them.
const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The pause before busy retry `n` (from 1): [`BUSY_BACKOFF`] doubled
/// `n - 1` times, at most [`BUSY_BACKOFF_MAX`], times a factor from a half
/// to one and a half by `roll` (uniform in `[0, 1)`), so that clients
/// refused together do not come back together.
fn busy_backoff(n: u32, roll: f64) -> Duration {
    BUSY_BACKOFF
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(BUSY_BACKOFF_MAX)
        .mul_f64(0.5 + roll.clamp(0.0, 1.0))
}

/// A session just opened.
pub(crate) struct Opened {
    pub(crate) handle: SessionHandle,
    /// When the call given to [`open`] was taken as call 1 (sent in
    /// handshake message 1, or ended there if it could not be sent): where
    /// its `session.acquire` ends and its `rpc.client.queue` starts.
    pub(crate) first_at: Option<SystemTime>,
    /// The exec-server run's ticket, from its hello answer.
    pub(crate) ticket: Option<EarlyTicket>,
}

/// Opens one session on `channel` (a connection being set up: started
/// first, awaited once message 1 is made) and waits until it is ready, recording
/// the set-up spans under `parent`; `first`, if given, rides in handshake
/// message 1 as call 1 with `ticket` (early data: see
/// [`ClientSession::with_call`]), and its events arrive as the session's
/// first; the set-up spans then go under the context given with it (the
/// call's dispatch), as they outlast `parent`, and `left` is set once
/// message 1 with it was handed to the link. A relay that refuses such a
/// session is passed over for the config's alternates, in order, with the
/// same message 1. The session's driver runs as a task of `tasks` until the
/// session ends.
pub(crate) async fn open(
    config: &ClientConfig,
    channel: impl Future<Output = Result<Channel, ConnectError>>,
    parent: &Context,
    (tasks, transport): (&Tasks, &TransportTasks),
    (first, ticket): (Option<(NewCall, Context)>, Option<EarlyTicket>),
    left: &AtomicBool,
) -> Result<Opened, ConnectError> {
    let tracer = opentelemetry::global::tracer("core-client");
    let origin = parent.span().span_context().clone();
    // With a first call, the set-up goes on after `parent` (its
    // `session.acquire`) has ended: its spans go under the call's dispatch.
    let (first, setup_parent) = match first {
        Some((call, dispatch)) => (Some(call), dispatch),
        None => (None, parent.clone()),
    };
    let parent = &setup_parent;
    let server_id = config.server.server_id();
    let url = config.target.url().to_owned();
    let failed = |e| ConnectError::from_session(e, config.key.public(), &url, &server_id);
    // The connection starts (its TCP handshake, or the name's look-up) and
    // goes on while message 1 is made; a refusal known at once is the
    // answer.
    let mut connecting = std::pin::pin!(channel);
    let connected = match std::future::poll_fn(|cx| Poll::Ready(connecting.as_mut().poll(cx))).await
    {
        Poll::Ready(c) => Some(c?),
        Poll::Pending => None,
    };

    // relay.connect: the tunnel stream is paired with the exec-server.
    let mut connect_span = tracer
        .span_builder(spans::RELAY_CONNECT)
        .with_kind(SpanKind::Client)
        .with_attributes(tunnel::connect_attributes(&url))
        .start_with_context(&tracer, parent);
    let link_cx = parent.with_remote_span_context(connect_span.span_context().clone());
    let shared = Shared::new(&config.target);
    let (commands, commands_rx) = mpsc::channel(config.outbound_queue);
    let (controls, controls_rx) = mpsc::channel(crate::session::CONTROL_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let mut router = Router::new((commands_rx, controls_rx), Arc::clone(&shared), ready_tx)
        .with_resume_events(config.resume_events)
        .with_span_source(config.span_source.clone());
    let now = Now::system();
    let (mut machine, first_at) = match first {
        // The first call rides in message 1 (early data).
        Some(mut call) => {
            call.traced.enqueued = now.wall;
            let first = router.first_call(call, ticket.unwrap_or(EarlyTicket::NONE), now);
            match ClientSession::with_call(&config.key, &config.server, config.limits(), now, first)
            {
                Ok(machine) => (machine, Some(now.wall)),
                Err(FirstCallError::Call(e)) => {
                    // Not a call that can be sent: it ends, the session
                    // opens without it.
                    router.fail_first_call(ExecFailure::Refused(e.to_string()));
                    let machine =
                        ClientSession::new(&config.key, &config.server, config.limits(), now)
                            .map_err(failed)?;
                    (machine, Some(now.wall))
                }
                Err(FirstCallError::Session(e)) => return Err(failed(e)),
            }
        }
        None => (
            ClientSession::new(&config.key, &config.server, config.limits(), now)
                .map_err(failed)?,
            None,
        ),
    };
    // Message 1 rides with the stream opening, saving a round trip.
    let first_frames = first_flight(&mut machine, &mut router, now);
    let mut alternates = config.alternates.iter();
    let mut channel = match connected {
        Some(c) => c,
        None => match connecting.await {
            Ok(c) => c,
            Err(e) => {
                connect_span.set_status(opentelemetry::trace::Status::error(
                    "the connection could not be set up",
                ));
                connect_span.end();
                return Err(e);
            }
        },
    };
    // Message 1 goes to a connection that was made: a relay that could not
    // be reached never had the call.
    if first_at.is_some() {
        left.store(true, Ordering::Release);
    }
    let mut busy_retries = 0;
    let (inbound, tx) = loop {
        let opened = tunnel::open(
            channel.clone(),
            &first_frames,
            &server_id,
            Arc::clone(&shared.drained),
            Some(&link_cx),
        )
        .await;
        // The span says why only when it is the end: a refusal tried
        // again, or passed over for another relay, is not its outcome.
        let opened = opened.map_err(|status| {
            let error = semconv::grpc_error_type(status.code());
            (error, ConnectError::from_status(status, &server_id, &url))
        });
        let give_up = |mut span: BoxedSpan, error: &'static str, e| {
            span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, error));
            span.set_status(opentelemetry::trace::Status::error(error));
            span.end();
            Err(e)
        };
        match opened {
            Ok(opened) => break opened,
            // At a limit that others' sessions finishing relieves (an
            // honest burst of sessions, or a flood, filling the table of
            // handshakes): the same message 1 again, on the same link, after
            // a pause. The exec-server runs it at most once, as below.
            Err((_, e)) if busy(&e) && busy_retries < BUSY_RETRIES => {
                busy_retries += 1;
                machine.first_flight_sent_again();
                connect_span.set_attribute(KeyValue::new(
                    spans::ATTR_BUSY_RETRIES,
                    i64::from(busy_retries),
                ));
                tokio::time::sleep(busy_backoff(busy_retries, proto::admission::roll())).await;
            }
            // The relay says it did not take the session; but its word is
            // no proof that message 1, with the call, did not reach the
            // exec-server. The same message 1 goes through the next relay:
            // the exec-server runs it at most once (it refuses a replay).
            Err((error, e)) if first_at.is_some() && relay_refused(&e) => {
                let next = loop {
                    let Some(target) = alternates.next() else {
                        return give_up(connect_span, error, e);
                    };
                    if let Ok(c) = tunnel::channel(config, target, transport).await {
                        break c;
                    }
                };
                channel = next;
            }
            Err((error, e)) => return give_up(connect_span, error, e),
        }
    };
    connect_span.end();
    let opened = SystemTime::now();

    // The driver runs the handshake and the hello from here on.
    let closing = shared.closing.clone();
    let stop = tasks.token().clone();
    // Closing the session or stopping the client also stops coming back.
    let giving_up = CancellationToken::new();
    let mut reconnect = Reconnect::new(config.clone(), giving_up.clone(), transport.clone());
    let let_go = shared.let_go.clone();
    let link = Arc::clone(&shared);
    let span = tracing::info_span!(parent: None, spans::SESSION_CLIENT, rex.server.short_id = %&server_id[..8]);
    let session = async move {
        let shutdown = move || {
            let (closing, stop, giving_up) = (closing.clone(), stop.clone(), giving_up.clone());
            async move {
                tokio::select! {
                    () = closing.cancelled() => {}
                    () = stop.cancelled() => {}
                }
                giving_up.cancel();
            }
        };
        let mut driven = drive_link(machine, router, inbound, tx, shutdown()).await;
        let mut resumes = 0;
        let (machine, mut router) = loop {
            if !driven.machine.is_detached() {
                break (driven.machine, driven.endpoint);
            }
            let (mut machine, mut router) = (driven.machine, driven.endpoint);
            let came_back = tokio::select! {
                r = reconnect.come_back(&mut machine, &mut router) => r,
                () = shutdown() => Err(proto::session::SessionError::LinkEnded),
            };
            match came_back {
                Ok((inbound, tx)) => {
                    driven = drive_link(machine, router, inbound, tx, shutdown()).await;
                    // It came back (and may have broken again since): a
                    // later outage has its own time to come back.
                    if driven.endpoint.resumes != resumes {
                        resumes = driven.endpoint.resumes;
                        reconnect.resumed();
                    }
                }
                Err(error) => {
                    let now = Now::system();
                    if !machine.is_detached() {
                        // Stopped mid-attempt: that link is gone too.
                        let stopped = LinkFailure::new(LinkFailureKind::Cancelled, "stopped");
                        machine.handle_link_end(Some(stopped), now);
                    }
                    machine.give_up(error, now);
                    deliver_events(&mut machine, &mut router, now);
                    break (machine, router);
                }
            }
        };
        // Calls lost with the session may still run at the exec-server:
        // it is told to end them before their callers hear of the end.
        if let Some((end, at)) = router.take_held_end() {
            let ended = match machine.abandonment() {
                Some(abandonment) => {
                    abandon::give_up(&reconnect.config, &reconnect.transport, abandonment).await
                }
                None => false,
            };
            router.end_session(end, ended, at);
        }
    };
    tasks.spawn(span, async move {
        tokio::select! {
            biased;
            () = session => {}
            // A close sent at exit, its answer not waited for: the driver
            // lets the link go (the transport then writes what it holds,
            // and closes the connection).
            () = let_go.cancelled() => {}
        }
        link.link.ended();
    });
    let established = match ready_rx.await {
        Ok(Ok(established)) => established,
        Ok(Err(e)) => return Err(failed(e)),
        Err(_) => return Err(ConnectError::Timeout(Waiting::Establishing)),
    };
    let next_call = if first_at.is_some() {
        FIRST_CALL + 1
    } else {
        1
    };
    let handle = SessionHandle::new(
        commands,
        controls,
        shared,
        (established.ready.output_window, next_call),
        origin,
    );

    // noise.handshake and session.init, from the times the driver saw: a
    // handshake whose message 1 carried the first call started as it left,
    // before the stream was paired.
    let hs_start = first_at.unwrap_or(opened);
    let mut hs = tracer
        .span_builder(spans::NOISE_HANDSHAKE)
        .with_start_time(hs_start)
        .start_with_context(&tracer, parent);
    hs.end_with_timestamp(established.secured_at.max(hs_start));
    let mut init = tracer
        .span_builder(spans::SESSION_INIT)
        .with_start_time(established.secured_at.max(hs_start))
        .start_with_context(&tracer, parent);
    if let Some(sample) = established.ready.clock {
        init.set_attribute(KeyValue::new("rex.clock_offset_ns", sample.offset_nanos));
        init.set_attribute(KeyValue::new(
            "rex.rtt_ns",
            i64::try_from(sample.rtt.as_nanos()).unwrap_or(i64::MAX),
        ));
    }
    init.end_with_timestamp(established.ready_at);
    Ok(Opened {
        handle,
        first_at,
        ticket: established.ready.early_ticket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_retries_back_off_doubling_to_a_bound_with_jitter() {
        let ms = |n, roll| busy_backoff(n, roll).as_secs_f64() * 1000.0;
        assert!((ms(1, 0.5) - 20.0).abs() < 1e-6);
        assert!((ms(2, 0.5) - 40.0).abs() < 1e-6);
        assert!((ms(1, 0.0) - 10.0).abs() < 1e-6);
        assert!((ms(1, 1.0) - 30.0).abs() < 1e-6);
        assert!((ms(7, 0.5) - 1000.0).abs() < 1e-6, "capped");
        assert!((ms(40, 0.5) - 1000.0).abs() < 1e-6);
        // All the pauses together, at the least and at the most.
        let total = |roll| {
            (1..=BUSY_RETRIES)
                .map(|n| busy_backoff(n, roll))
                .sum::<Duration>()
        };
        assert_eq!(total(0.0), Duration::from_millis(1630));
        assert!(total(1.0) <= Duration::from_millis(4890));
    }
}
