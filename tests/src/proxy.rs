//! A tunnel proxy that plays a malicious relay: it forwards `Open` to an
//! upstream tunnel (a relay or an exec-server's direct listener), optionally
//! naming a different exec-server than the client asked for, and can flip a
//! bit in a chosen client-to-server data frame, or in the next
//! exec-server-to-client one once the test says so.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use proto::pb::tunnel::tunnel_client::TunnelClient;
use proto::pb::tunnel::tunnel_server::{Tunnel, TunnelServer};
use proto::pb::tunnel::{Frame, FrameKind};
use proto::routing::SERVER_ID_HEADER;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{FixtureError, Result};

type FrameStream = Pin<Box<dyn Stream<Item = std::result::Result<Frame, Status>> + Send + 'static>>;

/// What the proxy does to sessions.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Name this exec-server upstream instead of the one the client named.
    pub reroute_to: Option<String>,
    /// Flip a bit in the N-th (0-based) client data frame of the first
    /// session only.
    pub tamper_data_frame: Option<usize>,
    /// Hold each `Open` until the test lets it through.
    pub hold: Option<Arc<Hold>>,
    /// Once the test sets it, flip a bit in the next exec-server-to-client
    /// data frame of the first session (once): tampering mid-command.
    pub tamper_reply: Option<Arc<AtomicBool>>,
    /// Keep every client frame of every session, as an attacker on the
    /// path would, to [`replay`] later.
    pub record: Option<Arc<Recording>>,
}

/// The client frames of the sessions a proxy carried (at most
/// [`Recording::MAX_SESSIONS`], each at most [`Recording::MAX_FRAMES`]).
#[derive(Debug, Default)]
pub struct Recording {
    sessions: std::sync::Mutex<Vec<(String, Vec<Frame>)>>,
}

impl Recording {
    /// Sessions kept at most.
    pub const MAX_SESSIONS: usize = 64;
    /// Frames kept per session at most.
    pub const MAX_FRAMES: usize = 1024;

    /// Each session's exec-server id and client frames, in order.
    pub fn sessions(&self) -> Vec<(String, Vec<Frame>)> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts a session's record; its index.
    fn begin(&self, server_id: &str) -> Option<usize> {
        let mut all = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (all.len() < Self::MAX_SESSIONS).then(|| {
            all.push((server_id.to_owned(), Vec::new()));
            all.len() - 1
        })
    }

    fn keep(&self, session: usize, frame: &Frame) {
        let mut all = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, frames)) = all.get_mut(session)
            && frames.len() < Self::MAX_FRAMES
        {
            frames.push(frame.clone());
        }
    }
}

/// What a replayed session got back.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Handshake frames received (the exec-server's message 2).
    pub handshakes: usize,
    /// Data frames received.
    pub data: usize,
    /// Close frames received, and the last one's reason.
    pub closes: usize,
    /// The last close frame's reason (`CloseReason`).
    pub close_reason: Option<i32>,
    /// How the stream ended, if with an error.
    pub status: Option<Status>,
}

/// Opens a session to the relay at `relay` for `server_id` and sends
/// `frames` (a recorded client's) on it, reading what comes back until
/// the stream ends, `within` has passed, or (with `until_answer`) the
/// exec-server's handshake answer has come.
pub async fn replay(
    relay: &str,
    server_id: &str,
    frames: Vec<Frame>,
    (within, until_answer): (std::time::Duration, bool),
) -> Result<Replayed> {
    let channel = tonic::transport::Endpoint::from_shared(relay.to_owned())
        .map_err(|e| FixtureError::start("the replay's channel", e))?
        .connect()
        .await
        .map_err(|e| FixtureError::start("the replay's connection", e))?;
    let mut client = TunnelClient::new(channel);
    // The stream stays open after the frames, as a client's would: a relay
    // ends a session whose client has ended its half.
    let mut up = Request::new(futures::stream::iter(frames).chain(futures::stream::pending()));
    if let Ok(v) = MetadataValue::try_from(server_id) {
        up.metadata_mut().insert(SERVER_ID_HEADER, v);
    }
    let mut got = Replayed::default();
    let read = async {
        let mut inbound = match client.open(up).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                got.status = Some(status);
                return;
            }
        };
        loop {
            match inbound.message().await {
                Ok(Some(f)) => match FrameKind::try_from(f.kind) {
                    Ok(FrameKind::Handshake) => {
                        got.handshakes += 1;
                        if until_answer {
                            return;
                        }
                    }
                    Ok(FrameKind::Data) => got.data += 1,
                    Ok(FrameKind::Close) => {
                        got.closes += 1;
                        got.close_reason = Some(f.close_reason);
                    }
                    _ => {}
                },
                Ok(None) => return,
                Err(status) => {
                    got.status = Some(status);
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    Ok(got)
}

/// Holds `Open`s at the proxy: a test sees each arrive and lets it on.
#[derive(Debug)]
pub struct Hold {
    arrived: AtomicUsize,
    changed: Notify,
    pass: Semaphore,
}

impl Hold {
    /// A hold that lets nothing through yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            arrived: AtomicUsize::new(0),
            changed: Notify::new(),
            pass: Semaphore::new(0),
        })
    }

    /// Waits until `n` opens in all have arrived.
    pub async fn arrived(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.arrived.load(Ordering::SeqCst) >= n {
                return;
            }
            changed.await;
        }
    }

    /// Lets `n` more opens through.
    pub fn release(&self, n: usize) {
        self.pass.add_permits(n);
    }
}

#[derive(Clone)]
struct ProxyService {
    upstream: String,
    behaviour: Behaviour,
    sessions: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Tunnel for ProxyService {
    type OpenStream = FrameStream;

    async fn open(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> std::result::Result<Response<Self::OpenStream>, Status> {
        let session_no = self.sessions.fetch_add(1, Ordering::SeqCst);
        if let Some(hold) = &self.behaviour.hold {
            hold.arrived.fetch_add(1, Ordering::SeqCst);
            hold.changed.notify_waiters();
            if let Ok(permit) = hold.pass.acquire().await {
                permit.forget();
            }
        }
        let mut named = request
            .metadata()
            .get(SERVER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Some(other) = &self.behaviour.reroute_to {
            named = other.clone();
        }
        let tamper = if session_no == 0 {
            self.behaviour.tamper_data_frame
        } else {
            None
        };
        let mut data_seen = 0usize;
        let record = self
            .behaviour
            .record
            .clone()
            .and_then(|r| r.begin(&named).map(|i| (r, i)));
        let inbound = request.into_inner().map(move |f| {
            let mut f = f?;
            if let Some((r, i)) = &record {
                r.keep(*i, &f);
            }
            if f.kind == FrameKind::Data as i32 {
                if Some(data_seen) == tamper && !f.payload.is_empty() {
                    let mut bytes = f.payload.to_vec();
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0x01;
                    f.payload = bytes.into();
                }
                data_seen += 1;
            }
            Ok::<_, Status>(f)
        });
        // Forward only successfully read frames upstream.
        let inbound = inbound.take_while(|r| futures::future::ready(r.is_ok()));
        let inbound = inbound.filter_map(|r| futures::future::ready(r.ok()));
        let channel = tonic::transport::Endpoint::from_shared(self.upstream.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = TunnelClient::new(channel);
        let mut up = Request::new(inbound);
        if let Ok(v) = MetadataValue::try_from(named.as_str()) {
            up.metadata_mut().insert(SERVER_ID_HEADER, v);
        }
        let response = client.open(up).await?;
        let armed = self
            .behaviour
            .tamper_reply
            .clone()
            .filter(|_| session_no == 0);
        let replies = response.into_inner().map(move |f| {
            let mut f = f?;
            if f.kind == FrameKind::Data as i32
                && !f.payload.is_empty()
                && armed
                    .as_ref()
                    .is_some_and(|a| a.swap(false, Ordering::SeqCst))
            {
                let mut bytes = f.payload.to_vec();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                f.payload = bytes.into();
            }
            Ok::<_, Status>(f)
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// Starts a proxy on `127.0.0.1:0` in front of `upstream`; returns its URL.
pub async fn start(upstream: String, behaviour: Behaviour) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| FixtureError::io("binding the proxy's listener", e))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| FixtureError::io("reading the proxy listener's address", e))?;
    let svc = ProxyService {
        upstream,
        behaviour,
        sessions: Arc::new(AtomicUsize::new(0)),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TunnelServer::new(svc))
            .serve_with_incoming(proto::relay_link::incoming(listener)),
    );
    Ok(format!("http://{addr}"))
}

/// A TCP forwarder in front of an address (a relay, an exec-server's
/// listener): it passes bytes both ways, and a test can cut every
/// connection open through it at once, as a network blip would, or freeze
/// them (nothing passes any more, but the connections stay open, as when
/// a network drops packets); new connections go through as before. Its
/// tasks run on the runtime it was started on.
#[derive(Debug)]
pub struct Cutter {
    addr: SocketAddr,
    /// Cancelled to cut (or freeze) the connections open now (replaced at
    /// each cut).
    current: Arc<std::sync::Mutex<Fault>>,
    /// Cancelled when the cutter is dropped: it stops listening.
    stop: tokio_util::sync::CancellationToken,
    cuts: Arc<AtomicUsize>,
}

/// What ends the forwarding of the connections open now.
#[derive(Debug, Default, Clone)]
struct Fault {
    cut: tokio_util::sync::CancellationToken,
    freeze: tokio_util::sync::CancellationToken,
}

impl Cutter {
    /// Starts a forwarder on `127.0.0.1:0` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| FixtureError::io("binding the cutter's listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| FixtureError::io("reading the cutter's address", e))?;
        let current = Arc::new(std::sync::Mutex::new(Fault::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (conns, end) = (Arc::clone(&current), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = end.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut down, _)) = accepted else {
                    continue;
                };
                let fault = conns
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let gone = end.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    // Cut: both sockets are dropped, as a broken network
                    // leaves them (no goodbye). Frozen: they stay open
                    // until the forwarder goes, and nothing passes.
                    tokio::select! {
                        () = fault.cut.cancelled() => {}
                        () = fault.freeze.cancelled() => gone.cancelled().await,
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            current,
            stop,
            cuts: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to dial through it (plain HTTP/2).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection open through it now.
    pub fn cut(&self) {
        self.fault().cut.cancel();
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Freezes every connection open through it now: they stay open and
    /// nothing passes any more.
    pub fn freeze(&self) {
        self.fault().freeze.cancel();
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// The fault of the connections open now; new ones get a fresh one.
    fn fault(&self) -> Fault {
        std::mem::take(
            &mut *self
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// How many cuts and freezes so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
