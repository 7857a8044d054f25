//! The receiving end of ours: a minimal responder that registers with the
//! relay and accepts each announced session with the exec-server's own link
//! code (`exec_server::registration::register`, `open_session`), answers the IK
//! handshake and the session hello with the project's own code, then
//! decrypts every record and checks and counts the plaintext until the
//! client's authenticated close.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use proto::envelope;
use proto::keys::{AuthorizedKeys, PublicKey, StaticKeypair};
use proto::noise::{ReplayGuard, SessionConfig, TransportError};
use proto::pb::session::{HelloAck, envelope::Body};
use proto::pb::tunnel::{Frame, FrameKind, Incoming, RegisterDown, RegisterUp, register_down};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

use super::pattern::{CHUNK, Pattern};

/// How long each registration answer from the relay may take.
const REGISTRATION_WAIT: Duration = Duration::from_secs(10);

/// What the responder counted in one session.
pub(super) struct Report {
    /// Plaintext bytes decrypted (and found as sent).
    pub plaintext: u64,
    /// Noise messages received after the hello (the close included).
    pub messages: u64,
    /// The largest of them, in bytes.
    pub largest: usize,
    /// When the client's close (right after its last data) was read.
    pub finished: Instant,
}

/// The keys and handshake state the responder's sessions share.
struct Shared {
    key: StaticKeypair,
    route: String,
    authorized: AuthorizedKeys,
    replay: Mutex<ReplayGuard>,
    pattern: Pattern,
}

/// A registered responder; each session's outcome arrives on `reports`.
pub(super) struct Responder {
    task: JoinHandle<()>,
    reports: mpsc::Receiver<Result<Report, String>>,
}

impl Responder {
    /// Registers `key` with the relay at `url`, admitting only `client`.
    pub(super) async fn start(
        url: &str,
        key: StaticKeypair,
        client: PublicKey,
    ) -> Result<Self, String> {
        let link = proto::relay_link::endpoint(
            url,
            proto::relay_link::CONNECT_TIMEOUT,
            &proto::tls::TlsSettings::system(),
        )
        .map_err(|e| format!("relay URL: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("responder cannot reach the relay: {e}"))?;
        let shared = Arc::new(Shared {
            route: key.public().server_id(),
            key,
            authorized: AuthorizedKeys::from_keys([client]),
            replay: Mutex::new(ReplayGuard::default()),
            pattern: Pattern::new(),
        });
        let (up, down) = exec_server::registration::register(
            &link,
            &shared.key,
            &shared.route,
            REGISTRATION_WAIT,
        )
        .await
        .map_err(|e| format!("responder registration: {e}"))?;
        let (reports_tx, reports) = mpsc::channel(4);
        let task = tokio::spawn(serve(link, down, up, shared, reports_tx));
        Ok(Self { task, reports })
    }

    /// The next session's outcome, waiting at most `wait`.
    pub(super) async fn report(&mut self, wait: Duration) -> Result<Report, String> {
        match tokio::time::timeout(wait, self.reports.recv()).await {
            Ok(Some(report)) => report,
            Ok(None) => Err("ours: the responder is gone".into()),
            Err(_) => Err(format!(
                "ours: no count from the responder {}s after the last byte was sent",
                wait.as_secs()
            )),
        }
    }

    /// Ends the registration (sessions end with their links).
    pub(super) fn stop(self) {
        self.task.abort();
    }
}

/// Accepts every session the relay announces, each on its own task;
/// sends each session's count (or failure) to `reports`.
async fn serve(
    link: Channel,
    mut down: Streaming<RegisterDown>,
    _up: mpsc::Sender<RegisterUp>,
    ctx: Arc<Shared>,
    reports: mpsc::Sender<Result<Report, String>>,
) {
    while let Ok(Some(m)) = down.message().await {
        if let Some(register_down::Msg::Incoming(incoming)) = m.msg {
            let (link, ctx, reports) = (link.clone(), Arc::clone(&ctx), reports.clone());
            tokio::spawn(async move {
                let report = respond(link, incoming, &ctx).await;
                let _ = reports.send(report).await;
            });
        }
    }
}

async fn next_frame(inbound: &mut exec_server::registration::Inbound) -> Result<Frame, String> {
    match inbound.message().await {
        Ok(Some(f)) if f.kind == FrameKind::Close as i32 => Err(format!(
            "responder: closed by the relay ({})",
            f.close_reason
        )),
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err("responder: the link ended before the client's close".into()),
        Err(status) => Err(format!("responder: link failed: {status}")),
    }
}

/// One session: accept it, answer the handshake and the hello, then
/// decrypt, check and count until the client's authenticated close.
async fn respond(link: Channel, incoming: Incoming, ctx: &Shared) -> Result<Report, String> {
    let (out, mut inbound) = exec_server::registration::open_session(link, &ctx.route, &incoming)
        .await
        .map_err(|e| format!("responder: accept: {e}"))?;
    let msg1 = next_frame(&mut inbound).await?;
    let accepted = {
        let mut replay = ctx.replay.lock().unwrap_or_else(|e| e.into_inner());
        proto::noise::accept(
            &ctx.key,
            ctx.route.as_bytes(),
            &msg1.payload,
            SystemTime::now(),
            Instant::now(),
            &ctx.authorized,
            &mut replay,
            SessionConfig::default(),
        )
    }
    .map_err(|e| format!("responder: {e}"))?;
    let closed = |_| "responder: the link closed".to_owned();
    let msg2 = proto::frames::handshake(accepted.msg2.into());
    out.send(Ok(msg2)).await.map_err(closed)?;
    let mut transport = accepted.transport;
    let noise = |e: TransportError| format!("responder: {e}");

    // The session hello, answered as an exec-server answers it.
    let hello = loop {
        if let Some(env) = transport.poll_envelope().map_err(noise)? {
            break env;
        }
        transport
            .receive(&next_frame(&mut inbound).await?.payload)
            .map_err(noise)?;
    };
    let Ok(Some(Body::Hello(_))) = envelope::decode(&hello).map(|e| e.body) else {
        return Err("responder: expected the session hello".into());
    };
    let ack = HelloAck {
        server_version: env!("CARGO_PKG_VERSION").into(),
        max_processes: 0,
        max_chunk: CHUNK as u32,
        stdin_window: 0,
        output_window: 0,
        resume_token: Default::default(),
        login_shell: false,
        ..HelloAck::default()
    };
    let ack = envelope::encode_new(0, None, Body::HelloAck(ack)).map_err(|e| e.to_string())?;
    transport.send(&ack).map_err(noise)?;
    while let Some(msg) = transport.poll_transmit(Instant::now()).map_err(noise)? {
        out.send(Ok(proto::frames::data(msg)))
            .await
            .map_err(closed)?;
    }

    let (mut plaintext, mut envelopes, mut messages, mut largest) = (0u64, 0u64, 0u64, 0usize);
    while transport.peer_closed().is_none() {
        let frame = next_frame(&mut inbound).await?;
        if frame.kind != FrameKind::Data as i32 {
            return Err("responder: a handshake frame inside the session".into());
        }
        messages += 1;
        largest = largest.max(frame.payload.len());
        transport.receive(&frame.payload).map_err(noise)?;
        while let Some(env) = transport.poll_envelope().map_err(noise)? {
            if !ctx.pattern.matches(envelopes, &env) {
                return Err(format!(
                    "ours: envelope {envelopes} (at byte {plaintext}) is not what was sent"
                ));
            }
            envelopes += 1;
            plaintext += env.len() as u64;
        }
    }
    Ok(Report {
        plaintext,
        messages,
        largest,
        finished: Instant::now(),
    })
}
