//! The exec-server's link to a relay: dial out, prove the static key,
//! stay registered (reconnecting with capped, jittered backoff), and accept
//! each session the relay announces on its own stream.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use proto::frame_wire::{self, FrameReader};
use proto::keys::Origin;
use proto::keys::StaticKeypair;
use proto::limits::MAX_GRPC_MESSAGE;
use proto::pb::tunnel::registry_client::RegistryClient;
use proto::pb::tunnel::{Incoming, RegisterDown, RegisterUp, register_down, register_up};
use proto::registration::ProofInitiator;
use proto::relay_link::FrameSender;
use proto::routing::{
    ACCEPT_PATH, CREDIT_STREAM_HEADER, CREDIT_WINDOW_HEADER, SERVER_ID_HEADER, SESSION_ID_HEADER,
    SESSION_ID_LEN, SPARE_TOKEN_HEADER, SPARE_TOKEN_LEN, format_session_id,
};
use telemetry::semconv;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::link_credit::{CloseOnDrop, Credits, Gated};
use crate::session::{self, ServerContext};

/// Frames queued toward the relay per session.
pub(crate) const SESSION_QUEUE: usize = 32;

/// One registration with a relay.
struct Registration {
    /// The up half: the registration lasts while it is held.
    up: mpsc::Sender<RegisterUp>,
    /// Announced sessions and credit grants.
    down: Streaming<RegisterDown>,
    /// The token for spare streams, if the relay keeps them.
    spare: Option<[u8; SPARE_TOKEN_LEN]>,
    /// The relay's least credit window (0: no credit).
    credit_window: u32,
}

/// How many times in a row a spare stream may fail to open (or be dropped
/// unused by the relay) before this registration stops keeping one; the
/// sessions are then announced, as to a relay that keeps none.
const SPARE_FAILURES: u32 = 5;

/// Why one registration attempt ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The relay URL is not valid (or TLS cannot be set up for it).
    #[error("relay URL: {0}")]
    BadUrl(#[from] proto::relay_link::EndpointError),
    /// The relay could not be reached (TLS failures included).
    #[error("cannot reach the relay: {}", proto::relay_link::why(.0))]
    Connect(#[from] tonic::transport::Error),
    /// The relay refused or ended the registration.
    #[error("relay: {0}")]
    Status(#[from] tonic::Status),
    /// The proof of possession failed.
    #[error("registration proof: {0}")]
    Proof(#[from] proto::registration::RegistrationError),
    /// The relay broke the registration protocol.
    #[error("relay sent an unexpected message during registration")]
    Protocol,
    /// Another exec-server proved the same key at the relay and took over
    /// the registration.
    #[error("another exec-server with this key registered at the relay and took over its route")]
    Replaced,
    /// The relay serves TLS only and was dialled with `http://` (or
    /// another failure of TLS reported in HTTP/2).
    #[error("relay: TLS: {0}")]
    Tls(proto::tls::TlsFailure),
    /// The relay's allow-list does not (or no longer) admit this key.
    #[error("the relay does not admit this exec-server key (its --allowed-servers list)")]
    NotAllowed,
}

impl LinkError {
    /// The error for a status from the relay, telling apart the refusals
    /// that call for a long pause.
    fn from_relay(status: tonic::Status) -> Self {
        if let Some(failure) = proto::tls::failure_in(&status) {
            return Self::Tls(failure);
        }
        match proto::routing::refusal(&status) {
            Some(proto::pb::tunnel::CloseReason::Replaced) => Self::Replaced,
            Some(proto::pb::tunnel::CloseReason::NotAllowed) => Self::NotAllowed,
            _ => Self::Status(status),
        }
    }

    /// `error.type` on the attempt's `link.register` span: the gRPC status
    /// code's name when the relay answered with one, else the kind.
    fn error_type(&self) -> &'static str {
        match self {
            Self::BadUrl(_) => "bad_url",
            Self::Connect(_) => "connect",
            Self::Status(status) => semconv::grpc_error_type(status.code()),
            Self::Proof(_) => "proof",
            Self::Protocol => "protocol",
            Self::Replaced => "replaced",
            Self::Tls(_) => "tls",
            Self::NotAllowed => "not_allowed",
        }
    }

    /// Whether retrying soon is pointless (the relay said so).
    fn wants_long_pause(&self) -> bool {
        matches!(self, Self::Replaced | Self::NotAllowed)
    }
}

fn registry_client(channel: Channel) -> RegistryClient<Channel> {
    RegistryClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
}

/// Keeps the exec-server registered with one of `urls` until `shutdown`:
/// the first that accepts, moving on down the list (and round to its start)
/// each time a registration is lost or refused. With one URL, that relay
/// is retried with backoff. `registered` is set to true while a
/// registration is live.
pub(crate) async fn run(
    urls: Vec<String>,
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
    registered: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut turn = Turns::new(urls.len());
    while let Some(url) = urls.get(turn.current()) {
        // Each attempt is a span of its own; its outcome is an event on it.
        let attempt = tracing::info_span!(
            parent: None,
            telemetry::spans::LINK_REGISTER,
            otel.kind = "client",
            rex.relay.url = %url,
        );
        semconv::set_on(
            &attempt,
            semconv::rpc(semconv::REGISTRY_SERVICE, semconv::METHOD_REGISTER),
        );
        semconv::set_on(&attempt, semconv::server(url));
        let result = register_once(url, &ctx, &shutdown, &registered)
            .instrument(attempt.clone())
            .await;
        registered.send_replace(false);
        if shutdown.is_cancelled() {
            return;
        }
        let was_registered = matches!(result, Ok(true));
        if was_registered {
            backoff = Duration::from_millis(100);
        }
        let long_pause = matches!(&result, Err(e) if e.wants_long_pause());
        // Another relay of the fleet is tried at once; a pause comes only
        // after every one has been tried.
        let round_over = turn.advance(was_registered);
        let pause = if long_pause {
            jittered(ctx.config.replaced_backoff)
        } else if round_over {
            jittered(backoff)
        } else {
            Duration::ZERO
        };
        if let Err(e) = &result {
            semconv::fail(&attempt, e.error_type());
        }
        attempt.in_scope(|| match result {
            Ok(true) => tracing::warn!("relay link lost; reconnecting"),
            Ok(false) => {}
            Err(e) if long_pause => {
                tracing::warn!(error = %e, retry_in_s = pause.as_secs(), "relay registration ended");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "relay registration failed")
            }
        });
        drop(attempt);
        if !pause.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
        if round_over && !was_registered {
            backoff = (backoff * 2).min(ctx.config.max_backoff);
        }
    }
}

/// Whose turn it is among a link's relays: a round is over when every
/// relay has been tried since the last registration (with one relay, after
/// each attempt).
#[derive(Debug)]
struct Turns {
    len: usize,
    current: usize,
    tried: usize,
}

impl Turns {
    fn new(len: usize) -> Self {
        Self {
            len,
            current: 0,
            tried: 0,
        }
    }

    /// The relay to try now.
    fn current(&self) -> usize {
        self.current
    }

    /// Moves to the next relay after an attempt; `registered`: the attempt
    /// had been registered (a new round starts). Returns whether a round
    /// is over (time to pause before the next attempt).
    fn advance(&mut self, registered: bool) -> bool {
        self.current = (self.current + 1) % self.len.max(1);
        if registered {
            self.tried = 0;
        }
        self.tried += 1;
        if self.tried >= self.len {
            self.tried = 0;
            true
        } else {
            false
        }
    }
}

/// Adds up to 25% random jitter so that many exec-servers do not reconnect
/// in lockstep after a relay restart.
fn jittered(base: Duration) -> Duration {
    let max_extra = u64::try_from(base.as_millis() / 4).unwrap_or(0).max(1);
    base + Duration::from_millis(rand::random_range(0..max_extra))
}

/// The registration exchange on `channel`: proves possession of `key`
/// to the relay (a Noise `XN` exchange, each answer awaited at most
/// `timeout`) and waits until the relay confirms `route` (the key's server
/// id). Returns the registration stream's halves: announced sessions
/// arrive on the down half, and the registration lasts while the up half
/// is held.
pub async fn register(
    channel: &Channel,
    key: &StaticKeypair,
    route: &str,
    timeout: Duration,
) -> Result<(mpsc::Sender<RegisterUp>, Streaming<RegisterDown>), LinkError> {
    let r = register_with_spares(channel, key, route, timeout).await?;
    Ok((r.up, r.down))
}

/// [`register`], also returning the token with which this registration
/// may keep spare streams at the relay (`None` if the relay keeps none).
async fn register_with_spares(
    channel: &Channel,
    key: &StaticKeypair,
    route: &str,
    timeout: Duration,
) -> Result<Registration, LinkError> {
    let proof_up = |msg: Vec<u8>| RegisterUp {
        msg: Some(register_up::Msg::Proof(msg.into())),
    };
    let (proof, msg1) = ProofInitiator::start(key)?;
    let (up_tx, up_rx) = mpsc::channel(4);
    up_tx
        .send(proof_up(msg1))
        .await
        .map_err(|_| LinkError::Protocol)?;
    let mut request = tonic::Request::new(ReceiverStream::new(up_rx));
    if let Ok(v) = MetadataValue::try_from(route) {
        request.metadata_mut().insert(SERVER_ID_HEADER, v);
    }
    let mut down = registry_client(channel.clone())
        .register(request)
        .await
        .map_err(LinkError::from_relay)?
        .into_inner();
    let register_down::Msg::Proof(msg2) = next(&mut down, timeout).await? else {
        return Err(LinkError::Protocol);
    };
    let msg3 = proof.finish(&msg2)?;
    up_tx
        .send(proof_up(msg3))
        .await
        .map_err(|_| LinkError::Protocol)?;
    match next(&mut down, timeout).await? {
        register_down::Msg::Registered(r) if r.server_id == route => Ok(Registration {
            up: up_tx,
            down,
            spare: <[u8; SPARE_TOKEN_LEN]>::try_from(r.spare_token.as_ref()).ok(),
            credit_window: r.credit_window,
        }),
        _ => Err(LinkError::Protocol),
    }
}

/// One registration. Ok(true) if it was established and later lost,
/// Ok(false) if shut down before or during.
async fn register_once(
    url: &str,
    ctx: &Arc<ServerContext>,
    shutdown: &CancellationToken,
    registered: &watch::Sender<bool>,
) -> Result<bool, LinkError> {
    let ep = proto::relay_link::exec_server_endpoint(
        url,
        proto::relay_link::CONNECT_TIMEOUT,
        &ctx.config.relay_tls,
    )?;
    let channel = tokio::select! {
        () = shutdown.cancelled() => return Ok(false),
        c = ep.connect() => c?,
    };
    let Registration {
        up: _up,
        mut down,
        spare,
        credit_window,
    } = register_with_spares(
        &channel,
        &ctx.config.key,
        &ctx.route,
        ctx.config.handshake_timeout,
    )
    .await?;
    tracing::info!(server_id = %ctx.route, "registered with relay");
    registered.send_replace(true);
    // The relay's credit for this registration's sessions, if it grants
    // any; once it ends, they stop waiting for grants.
    let credits = match credit_window {
        0 => None,
        w => Credits::new(w, link_round_trip(&channel).await),
    };
    let _close_credits = CloseOnDrop(credits.clone());
    // A spare stream at the relay while this registration lasts.
    let spares = shutdown.child_token();
    let _stop_spares = spares.clone().drop_guard();
    if let Some(token) = spare {
        let span = tracing::debug_span!("link.spare");
        ctx.tasks.clone().spawn(
            span,
            keep_spare(
                channel.clone(),
                token,
                Arc::clone(ctx),
                (shutdown.clone(), spares),
                credits.clone(),
            ),
        );
    }
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            m = down.message() => m,
        };
        match msg {
            Ok(Some(m)) => match m.msg {
                Some(register_down::Msg::Incoming(incoming)) => {
                    let channel = channel.clone();
                    let ctx = Arc::clone(ctx);
                    let shutdown = shutdown.clone();
                    let span = tracing::info_span!(parent: None, telemetry::spans::SESSION_SERVER);
                    let credits = credits.clone();
                    ctx.tasks
                        .clone()
                        .spawn(span, accept(channel, incoming, ctx, shutdown, credits));
                }
                Some(register_down::Msg::Credit(credit)) => {
                    if let Some(credits) = &credits {
                        credits.grant(&credit);
                    }
                }
                _ => return Err(LinkError::Protocol),
            },
            Ok(None) => return Ok(true),
            Err(status) => {
                let e = LinkError::from_relay(status);
                if e.wants_long_pause() {
                    return Err(e);
                }
                tracing::debug!(error = %e, "registration stream ended");
                return Ok(true);
            }
        }
    }
}

/// How many round trips of a new link are timed (the shortest counts).
const RTT_SAMPLES: usize = 2;

/// The shortest of [`RTT_SAMPLES`] round trips of `channel`'s link (health
/// checks of the relay), which sizes the credit its sessions ask for;
/// `None` if none was answered within a second.
async fn link_round_trip(channel: &Channel) -> Option<Duration> {
    let mut shortest = None;
    for _ in 0..RTT_SAMPLES {
        if let Some(rtt) = proto::health::round_trip(channel, Duration::from_secs(1)).await {
            shortest = Some(shortest.map_or(rtt, |s: Duration| s.min(rtt)));
        }
    }
    shortest
}

async fn next(
    down: &mut tonic::Streaming<proto::pb::tunnel::RegisterDown>,
    timeout: Duration,
) -> Result<register_down::Msg, LinkError> {
    match tokio::time::timeout(timeout, down.message()).await {
        Ok(Ok(Some(m))) => m.msg.ok_or(LinkError::Protocol),
        Ok(Ok(None)) => Err(LinkError::Protocol),
        Ok(Err(s)) => Err(LinkError::from_relay(s)),
        Err(_) => Err(LinkError::Status(tonic::Status::deadline_exceeded(
            "relay did not answer the registration",
        ))),
    }
}

/// The frames of a session's half at the relay, each read where it
/// arrived.
pub type Inbound = FrameReader<Body>;

/// Opens this exec-server's half of the announced session `incoming` on
/// `channel` (route `route`, the client link's trace context passed on):
/// the frames toward the relay (a bounded queue) and the
/// frames from it.
pub async fn open_session(
    channel: Channel,
    route: &str,
    incoming: &Incoming,
) -> Result<(FrameSender, Inbound), LinkError> {
    open_announced(channel, route, incoming, None).await
}

/// [`open_session`], under the relay's credit when `credits` is given.
async fn open_announced(
    channel: Channel,
    route: &str,
    incoming: &Incoming,
    credits: Option<&Credits>,
) -> Result<(FrameSender, Inbound), LinkError> {
    let session_id = <[u8; SESSION_ID_LEN]>::try_from(incoming.session_id.as_ref())
        .map_err(|_| LinkError::Protocol)?;
    // The relay passes on the client link's (validated) trace context.
    let traceparent = Some(incoming.traceparent.as_str()).filter(|t| !t.is_empty());
    open_half(
        channel,
        route,
        (SESSION_ID_HEADER, &session_id),
        traceparent,
        credits,
    )
    .await
}

/// Opens a spare half at the relay for the next client's `Open`
/// (`token` from the registration).
async fn open_spare(
    channel: Channel,
    route: &str,
    token: &[u8; SPARE_TOKEN_LEN],
    credits: Option<&Credits>,
) -> Result<(FrameSender, Inbound), LinkError> {
    open_half(channel, route, (SPARE_TOKEN_HEADER, token), None, credits).await
}

/// An `Accept` call for route `route`, named by `name` (a session id or a
/// spare token, in hex), with the client link's `traceparent` if known,
/// its frames sent within the relay's credit when `credits` is given.
async fn open_half(
    channel: Channel,
    route: &str,
    (header, name): (&'static str, &[u8; SESSION_ID_LEN]),
    traceparent: Option<&str>,
    credits: Option<&Credits>,
) -> Result<(FrameSender, Inbound), LinkError> {
    let (out_tx, out_rx) = mpsc::channel(SESSION_QUEUE);
    // The session writes `Result` frames (shared with the server-side
    // streams); a request stream carries plain frames.
    let frames = tokio_stream::StreamExt::filter_map(ReceiverStream::new(out_rx), Result::ok);
    let mut md = MetadataMap::new();
    let frames = match credits.map(Credits::open) {
        Some((stream, window, credit)) => {
            md.insert(CREDIT_STREAM_HEADER, MetadataValue::from(stream));
            md.insert(CREDIT_WINDOW_HEADER, MetadataValue::from(window));
            Gated::new(frames, credit).left_stream()
        }
        None => frames.right_stream(),
    };
    if let Ok(v) = MetadataValue::try_from(route) {
        md.insert(SERVER_ID_HEADER, v);
    }
    if let Ok(v) = MetadataValue::try_from(format_session_id(name)) {
        md.insert(header, v);
    }
    if let Some(Ok(v)) = traceparent.map(MetadataValue::try_from) {
        md.insert("traceparent", v);
    }
    let body = frame_wire::encoded(frames, MAX_GRPC_MESSAGE);
    let asked = std::time::Instant::now();
    let inbound = frame_wire::call(channel, ACCEPT_PATH, md, body, MAX_GRPC_MESSAGE).await?;
    // The relay answers an `Accept` at once: a round trip of the link.
    if let Some(credits) = credits {
        credits.sample(asked.elapsed());
    }
    Ok((out_tx, inbound))
}

/// Keeps one spare stream at the relay while the registration lasts
/// (until `spares` is cancelled): a client's `Open` is spliced to it at
/// once, with no announcement and no round trip to this exec-server.
/// When a client's first frame arrives on it, it becomes that client's
/// session and the next spare is opened.
async fn keep_spare(
    channel: Channel,
    token: [u8; SPARE_TOKEN_LEN],
    ctx: Arc<ServerContext>,
    (shutdown, spares): (CancellationToken, CancellationToken),
    credits: Option<Arc<Credits>>,
) {
    let mut failures = 0;
    while failures < SPARE_FAILURES {
        let opened = tokio::select! {
            () = spares.cancelled() => return,
            o = open_spare(channel.clone(), &ctx.route, &token, credits.as_deref()) => o,
        };
        let first = match opened {
            Ok((out_tx, mut inbound)) => {
                let first = tokio::select! {
                    () = spares.cancelled() => return,
                    f = inbound.message() => f,
                };
                match first {
                    Ok(Some(frame)) => Some((frame, out_tx, inbound)),
                    Ok(None) | Err(_) => None,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not open a spare stream");
                None
            }
        };
        let Some((frame, out_tx, inbound)) = first else {
            failures += 1;
            tokio::select! {
                () = spares.cancelled() => return,
                () = tokio::time::sleep(jittered(Duration::from_millis(200) * failures)) => {}
            }
            continue;
        };
        failures = 0;
        let inbound = futures::StreamExt::chain(futures::stream::iter([Ok(frame)]), inbound);
        let span = tracing::info_span!(parent: None, telemetry::spans::SESSION_SERVER);
        let (ctx, shutdown) = (Arc::clone(&ctx), shutdown.clone());
        ctx.tasks.clone().spawn(span, async move {
            if let Err(e) =
                session::serve(inbound, out_tx, ctx, shutdown, None, Origin::Unknown).await
            {
                tracing::debug!(error = %e, "session ended");
            }
        });
    }
    tracing::debug!("stopped keeping a spare stream at the relay: sessions are announced");
}

async fn accept(
    channel: Channel,
    incoming: Incoming,
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
    credits: Option<Arc<Credits>>,
) {
    let opened = open_announced(channel, &ctx.route, &incoming, credits.as_deref()).await;
    let (out_tx, inbound) = match opened {
        Ok(halves) => halves,
        Err(e) => {
            tracing::debug!(error = %e, "could not accept announced session");
            return;
        }
    };
    if let Err(e) = session::serve(inbound, out_tx, ctx, shutdown, None, Origin::Unknown).await {
        tracing::debug!(error = %e, "session ended");
    }
}

#[cfg(test)]
mod tests {
    use super::Turns;

    #[test]
    fn one_relay_ends_a_round_with_every_attempt() {
        let mut turns = Turns::new(1);
        assert_eq!(turns.current(), 0);
        assert!(turns.advance(false));
        assert!(turns.advance(true));
        assert_eq!(turns.current(), 0);
    }

    #[test]
    fn a_fleet_tries_each_relay_in_turn_before_pausing() {
        let mut turns = Turns::new(3);
        let mut seen = vec![turns.current()];
        let mut rounds = Vec::new();
        for _ in 0..6 {
            rounds.push(turns.advance(false));
            seen.push(turns.current());
        }
        assert_eq!(seen, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(rounds, [false, false, true, false, false, true]);
    }

    #[test]
    fn a_lost_registration_moves_on_at_once_and_starts_a_new_round() {
        let mut turns = Turns::new(3);
        assert!(!turns.advance(false)); // 0 refused: 1 next
        assert!(!turns.advance(true)); // registered at 1, then lost: 2 at once
        assert_eq!(turns.current(), 2);
        assert!(!turns.advance(false)); // 2 refused: 0, still in the round
        assert!(turns.advance(false)); // 0 refused too: every relay tried
        assert_eq!(turns.current(), 1);
    }
}
