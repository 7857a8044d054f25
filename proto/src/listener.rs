//! Accepting connections for a gRPC server (the relay, `exec-server
//! --listen`) where anyone may connect:
//!
//! - a cap on open connections and a per-source share of it; the share
//!   bounds unauthenticated connections only: a connection that has
//!   carried an authenticated session ([`Connections::trust`]) counts
//!   against the cap alone, so one honest client with many sessions (or
//!   many clients behind one address) is never refused for its address;
//! - a deadline for the HTTP/2 preface and the first frame: a connection
//!   that has not sent them in time is closed (with TLS, the deadline
//!   covers the TLS handshake too: it runs from the accept until the
//!   preface has arrived through TLS);
//! - when the table is full, a new connection displaces the oldest one
//!   that has still not sent its preface (so silent connections cannot
//!   hold the table), and is refused only when every connection has
//!   spoken;
//! - back-off, never a spin, when `accept` fails for want of descriptors
//!   or memory (the pending connections wait in the kernel's queue).
//!
//! With TLS ([`crate::tls::ServerTls`]), each connection's handshake runs
//! inside the connection's own task as the server first reads or writes
//! it, never in the accept loop, so a slow or silent handshake holds up
//! nobody else; until the preface has arrived through TLS the connection
//! counts as silent (it can be displaced, and its deadline runs).
//!
//! What it refused is counted in [`Connections`], for summaries.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::admission::Source;
use crate::tls::ServerTls;

/// The HTTP/2 client preface (24 bytes) and one frame header (9): what a
/// connection must send before [`ConnLimits::preface_timeout`].
const PREFACE_AND_FRAME: usize = 24 + 9;
/// Longest pause between `accept` attempts while descriptors are short.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Bounds on a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one source.
    pub per_source: usize,
    /// How long a new connection has to send the HTTP/2 preface and its
    /// first frame.
    pub preface_timeout: Duration,
}

impl ConnLimits {
    /// At most `max_connections` open at once, `per_source` of them from
    /// one source, each given `preface_timeout` to send the HTTP/2 preface
    /// and its first frame.
    pub const fn new(max_connections: usize, per_source: usize, preface_timeout: Duration) -> Self {
        Self {
            max_connections,
            per_source,
            preface_timeout,
        }
    }
}

/// Counters of a listener, since the last [`Connections::take_summary`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnSummary {
    /// Connections accepted.
    pub accepted: u64,
    /// Refused: every connection had spoken and the table was full.
    pub refused_full: u64,
    /// Refused: the source held its whole share.
    pub refused_source: u64,
    /// Silent connections closed to make room for a new one.
    pub displaced: u64,
    /// Connections closed for not sending the preface in time.
    pub preface_timeouts: u64,
    /// `accept` failures (each followed by a pause when for want of
    /// descriptors or memory).
    pub accept_errors: u64,
}

impl ConnSummary {
    /// Whether anything was refused or closed early.
    pub fn any_refused(&self) -> bool {
        self.refused_full + self.refused_source + self.displaced + self.preface_timeouts > 0
            || self.accept_errors > 0
    }
}

#[derive(Debug)]
struct Evict {
    flag: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Debug)]
struct Member {
    source: Source,
    peer: SocketAddr,
    evict: Arc<Evict>,
    silent: bool,
    /// Has carried an authenticated session: out of its source's share.
    trusted: bool,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    members: HashMap<u64, Member>,
    /// Untrusted connections per source.
    by_source: HashMap<Source, usize>,
    by_peer: HashMap<SocketAddr, u64>,
    /// Ids in arrival order; ids that spoke or left are skipped lazily.
    silent: VecDeque<u64>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Member> {
        let m = self.members.remove(&id)?;
        if self.by_peer.get(&m.peer) == Some(&id) {
            self.by_peer.remove(&m.peer);
        }
        if !m.trusted {
            self.leave_source(m.source);
        }
        Some(m)
    }

    fn leave_source(&mut self, source: Source) {
        if let Some(n) = self.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }

    /// Closes the oldest silent connection; whether there was one.
    fn displace_oldest_silent(&mut self) -> bool {
        while let Some(id) = self.silent.pop_front() {
            if self.members.get(&id).is_some_and(|m| m.silent)
                && let Some(m) = self.remove(id)
            {
                m.evict.flag.store(true, Ordering::Release);
                m.evict.waker.wake();
                return true;
            }
        }
        false
    }
}

/// The open connections of a listener, and what it refused.
#[derive(Debug)]
pub struct Connections {
    limits: ConnLimits,
    table: Mutex<Table>,
    accepted: AtomicU64,
    refused_full: AtomicU64,
    refused_source: AtomicU64,
    displaced: AtomicU64,
    preface_timeouts: AtomicU64,
    accept_errors: AtomicU64,
}

impl Connections {
    /// An empty table with `limits`.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
            accepted: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_source: AtomicU64::new(0),
            displaced: AtomicU64::new(0),
            preface_timeouts: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bounds.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().members.len()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The counters since the last call (and resets them).
    pub fn take_summary(&self) -> ConnSummary {
        ConnSummary {
            accepted: self.accepted.swap(0, Ordering::Relaxed),
            refused_full: self.refused_full.swap(0, Ordering::Relaxed),
            refused_source: self.refused_source.swap(0, Ordering::Relaxed),
            displaced: self.displaced.swap(0, Ordering::Relaxed),
            preface_timeouts: self.preface_timeouts.swap(0, Ordering::Relaxed),
            accept_errors: self.accept_errors.swap(0, Ordering::Relaxed),
        }
    }

    /// Takes a place for a connection from `peer`, or refuses it.
    fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let source = Source::of(peer.ip());
        let mut t = self.lock();
        if t.by_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            self.refused_source.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if t.members.len() >= self.limits.max_connections {
            if !t.displace_oldest_silent() {
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.displaced.fetch_add(1, Ordering::Relaxed);
        }
        t.next_id += 1;
        let id = t.next_id;
        let evict = Arc::new(Evict {
            flag: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        t.members.insert(
            id,
            Member {
                source,
                peer,
                evict: Arc::clone(&evict),
                silent: true,
                trusted: false,
            },
        );
        t.by_peer.insert(peer, id);
        *t.by_source.entry(source).or_insert(0) += 1;
        t.silent.push_back(id);
        // Ids of connections that spoke pile up in the queue: compact it
        // now and then, so that it stays within a small multiple of the
        // table.
        if t.silent.len() > 2 * t.members.len() + 64 {
            let Table {
                silent, members, ..
            } = &mut *t;
            silent.retain(|id| members.get(id).is_some_and(|m| m.silent));
        }
        drop(t);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            conns: Arc::clone(self),
            id,
            evict,
        })
    }

    fn spoke(&self, id: u64) {
        if let Some(m) = self.lock().members.get_mut(&id) {
            m.silent = false;
        }
    }

    /// Marks the open connection from `peer` as one that has carried an
    /// authenticated session: from now on it counts against the cap on
    /// connections only, not against its source's share. Whether there
    /// was such a connection.
    pub fn trust(&self, peer: SocketAddr) -> bool {
        let mut t = self.lock();
        let Some(&id) = t.by_peer.get(&peer) else {
            return false;
        };
        let Some(m) = t.members.get_mut(&id) else {
            return false;
        };
        if m.trusted {
            return true;
        }
        m.trusted = true;
        m.silent = false;
        let source = m.source;
        t.leave_source(source);
        true
    }

    /// Connections open now that have carried an authenticated session.
    pub fn trusted(&self) -> usize {
        self.lock().members.values().filter(|m| m.trusted).count()
    }
}

/// A connection's place in the table; given back when dropped.
#[derive(Debug)]
struct Slot {
    conns: Arc<Connections>,
    id: u64,
    evict: Arc<Evict>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().remove(self.id);
    }
}

/// The server's HTTP/2 preface: an empty SETTINGS frame (length 0,
/// type 4, no flags, stream 0).
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
/// HTTP/2's INADEQUATE_SECURITY error code.
const INADEQUATE_SECURITY: u32 = 0xc;

/// RST_STREAM for `stream` with INADEQUATE_SECURITY: what a TLS listener
/// answers each request of a plain HTTP/2 client, so that the client can
/// say what is wrong (its request fails with that reason) instead of
/// failing on bytes it cannot read.
fn tls_required(stream: u32) -> [u8; 13] {
    let id = stream.to_be_bytes();
    let code = INADEQUATE_SECURITY.to_be_bytes();
    [
        0, 0, 4, 3, 0, id[0], id[1], id[2], id[3], code[0], code[1], code[2], code[3],
    ]
}

/// A connection's bytes: plain TCP, or TLS over it (its handshake first).
enum Io {
    Plain(TcpStream),
    /// TLS is served: the first byte tells a TLS client (a handshake
    /// record) from a plain HTTP/2 one (its preface, "PRI * HTTP/2.0").
    Sniffing(Option<(TcpStream, tokio_rustls::TlsAcceptor)>),
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    /// A plain HTTP/2 client at a TLS listener: see [`Refusal`].
    Refusing(TcpStream, Refusal),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The TLS handshake failed, the client was refused or the deadline
    /// passed (reported once; then the connection is dead).
    Failed,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Io::Plain(_) => "Plain",
            Io::Sniffing(_) => "Sniffing",
            Io::Handshaking(_) => "Handshaking",
            Io::Refusing(..) => "Refusing",
            Io::Tls(_) => "Tls",
            Io::Failed => "Failed",
        })
    }
}

/// The first byte of the HTTP/2 client preface.
const PREFACE_FIRST: u8 = b'P';
/// The HTTP/2 client preface's length.
const PREFACE_LEN: usize = 24;
/// An HTTP/2 frame header's length.
const FRAME_HEADER_LEN: usize = 9;
/// The HTTP/2 HEADERS frame type.
const HEADERS: u8 = 1;

/// Refusing a plain HTTP/2 client at a TLS listener: its frames are read
/// and dropped; it gets the server's preface, and each of its requests
/// (a HEADERS frame) is reset with INADEQUATE_SECURITY ([`tls_required`]).
/// The connection stays open until the client closes it (closing with
/// unread bytes would reset the connection before the client reads the
/// answer) or the preface deadline ends it.
#[derive(Debug, Default)]
struct Refusal {
    /// Bytes of the preface read so far.
    preface: usize,
    /// The frame header being read, and how much of it.
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Payload bytes of the current frame still to drop.
    skip: usize,
    /// The answer not yet written, and how much of its head was.
    out: Vec<u8>,
    written: usize,
    /// Whether the preface (SETTINGS) was queued.
    greeted: bool,
}

/// Requests a refused client may have waiting for an answer at once.
const MAX_PENDING_RESETS: usize = 16;

impl Refusal {
    /// Takes in bytes the client sent; queues the answers they call for.
    fn feed(&mut self, mut bytes: &[u8]) {
        if !self.greeted {
            self.greeted = true;
            self.out.extend(EMPTY_SETTINGS);
        }
        while !bytes.is_empty() {
            if self.preface < PREFACE_LEN {
                let n = (PREFACE_LEN - self.preface).min(bytes.len());
                self.preface += n;
                bytes = &bytes[n..];
            } else if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
            } else {
                self.header[self.have] = bytes[0];
                self.have += 1;
                bytes = &bytes[1..];
                if self.have == FRAME_HEADER_LEN {
                    self.have = 0;
                    let [a, b, c, kind, _, s0, s1, s2, s3] = self.header;
                    self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                    let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
                    let pending = self.pending().len() / 13;
                    if kind == HEADERS && stream != 0 && pending < MAX_PENDING_RESETS {
                        self.out.extend(tls_required(stream));
                    }
                }
            }
        }
    }

    /// The answer still to write.
    fn pending(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// `n` bytes of the answer were written.
    fn wrote(&mut self, n: usize) {
        self.written += n;
        if self.written >= self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }
}

impl Io {
    /// Drives a TLS handshake on; ready once the stream can carry data.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self {
                Io::Plain(_) | Io::Tls(_) => return Poll::Ready(Ok(())),
                Io::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the connection has already failed",
                    )));
                }
                Io::Sniffing(inner) => {
                    let Some((tcp, _)) = inner.as_mut() else {
                        *self = Io::Failed;
                        continue;
                    };
                    let mut first = [0u8; 1];
                    let mut buf = ReadBuf::new(&mut first);
                    match tcp.poll_peek(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            *self = Io::Failed;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(0)) => {
                            *self = Io::Failed;
                            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        Poll::Ready(Ok(_)) => {}
                    }
                    let Some((tcp, acceptor)) = inner.take() else {
                        continue;
                    };
                    *self = if first[0] == PREFACE_FIRST {
                        Io::Refusing(tcp, Refusal::default())
                    } else {
                        Io::Handshaking(Box::new(acceptor.accept(tcp)))
                    };
                }
                Io::Refusing(tcp, refusal) => {
                    if !refusal.pending().is_empty() {
                        match Pin::new(&mut *tcp).poll_write(cx, refusal.pending()) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(n)) if n > 0 => refusal.wrote(n),
                            Poll::Ready(_) => *self = Io::Failed,
                        }
                        continue;
                    }
                    let mut scratch = [0u8; 1024];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut *tcp).poll_read(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            refusal.feed(buf.filled());
                            continue;
                        }
                        Poll::Ready(_) => {
                            *self = Io::Failed;
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "plain HTTP/2 at a TLS listener",
                            )));
                        }
                    }
                }
                Io::Handshaking(accept) => {
                    return match Pin::new(accept.as_mut()).poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(stream)) => {
                            *self = Io::Tls(Box::new(stream));
                            Poll::Ready(Ok(()))
                        }
                        Poll::Ready(Err(e)) => {
                            *self = Io::Failed;
                            Poll::Ready(Err(e))
                        }
                    };
                }
            }
        }
    }
}

/// One accepted connection, as the gRPC server reads it.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// Until the preface and first frame are in: the deadline and the
    /// bytes read so far.
    preface: Option<(Pin<Box<Sleep>>, usize)>,
    slot: Slot,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.peer),
        }
    }
}

impl Conn {
    /// Whether the connection uses TLS.
    #[cfg(test)]
    pub(crate) fn is_tls(&self) -> bool {
        !matches!(self.io, Io::Plain(_))
    }

    /// Runs `op` on the connection's bytes once a TLS handshake is done.
    /// While the preface is awaited, a displaced connection fails first,
    /// and one that can make no progress fails once its deadline has
    /// passed (registering for both, so the task is woken when either
    /// comes).
    fn guarded<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut Io, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.preface.is_some() {
            self.slot.evict.waker.register(cx.waker());
            if self.slot.evict.flag.load(Ordering::Acquire) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closed to make room: no HTTP/2 preface yet",
                )));
            }
        }
        let polled = match self.io.poll_ready(cx) {
            Poll::Ready(Ok(())) => op(&mut self.io, cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        };
        if polled.is_pending()
            && let Some((deadline, _)) = self.preface.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.slot
                .conns
                .preface_timeouts
                .fetch_add(1, Ordering::Relaxed);
            // Counted once: the connection is over.
            self.preface = None;
            self.io = Io::Failed;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface in time",
            )));
        }
        polled
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = this.guarded(cx, |io, cx| match io {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
            _ => Poll::Pending,
        });
        if let Some((_, seen)) = this.preface.as_mut()
            && let Poll::Ready(Ok(())) = &polled
        {
            *seen += buf.filled().len() - before;
            if *seen >= PREFACE_AND_FRAME {
                this.preface = None;
                this.slot.conns.spoke(this.slot.id);
            }
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().guarded(cx, |io, cx| match io {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
            _ => Poll::Pending,
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guarded(cx, |io, cx| match io {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
            _ => Poll::Pending,
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
            // Nothing was said over TLS yet: there is nothing to close
            // cleanly; dropping the connection closes the socket.
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().guarded(cx, |io, cx| match io {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
            _ => Poll::Pending,
        })
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
            _ => false,
        }
    }
}

/// Whether an `accept` error is about one connection (go on at once)
/// rather than the process (descriptors, memory: pause first).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The accepted connections of `listener` within `conns`' limits, with
/// Nagle off, over TLS when `tls` is given (then only TLS is served). The
/// stream never ends and never yields an error.
pub fn incoming(
    listener: TcpListener,
    conns: Arc<Connections>,
    tls: Option<ServerTls>,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send {
    let acceptor = tls.map(|t| t.acceptor());
    futures::stream::unfold(
        (listener, conns, acceptor, Duration::ZERO),
        |(listener, conns, acceptor, mut backoff)| async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        backoff = Duration::ZERO;
                        // A refused connection is closed here, at once.
                        let Some(slot) = conns.admit(peer) else {
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        let local = tcp.local_addr().ok();
                        let deadline = Box::pin(tokio::time::sleep(conns.limits.preface_timeout));
                        // The handshake itself runs when the server first
                        // polls the connection, in that connection's task.
                        let io = match &acceptor {
                            Some(a) => Io::Sniffing(Some((tcp, a.clone()))),
                            None => Io::Plain(tcp),
                        };
                        let conn = Conn {
                            io,
                            peer,
                            local,
                            preface: Some((deadline, 0)),
                            slot,
                        };
                        return Some((Ok(conn), (listener, conns, acceptor, backoff)));
                    }
                    Err(e) => {
                        conns.accept_errors.fetch_add(1, Ordering::Relaxed);
                        if is_per_connection(&e) {
                            continue;
                        }
                        backoff = (backoff * 2)
                            .max(Duration::from_millis(5))
                            .min(MAX_ACCEPT_BACKOFF);
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn limits(max: usize, per_source: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            per_source,
            preface_timeout: Duration::from_millis(300),
        }
    }

    async fn pair(max: usize, per_source: usize) -> (SocketAddr, Arc<Connections>, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (addr, Connections::new(limits(max, per_source)), l)
    }

    /// Reads until EOF or error; true if the server side closed.
    async fn closed(mut c: TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[test]
    fn a_trusted_connection_leaves_its_sources_share_but_not_the_cap() {
        let conns = Connections::new(limits(5, 2));
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let a = conns.admit(at(1)).unwrap();
        let _b = conns.admit(at(2)).unwrap();
        assert!(conns.admit(at(3)).is_none(), "the source's share is 2");
        // The first carries an authenticated session: room for one more
        // unauthenticated one from the address.
        assert!(conns.trust(at(1)));
        assert!(conns.trust(at(1)), "trusting twice changes nothing");
        assert!(!conns.trust(at(9)), "no such connection");
        let c = conns.admit(at(3)).unwrap();
        assert!(conns.admit(at(4)).is_none());
        assert_eq!(conns.trusted(), 1);
        // More trusted ones, up to the cap on all connections.
        assert!(conns.trust(at(3)));
        let _d = conns.admit(at(4)).unwrap();
        assert!(conns.trust(at(4)));
        let _e = conns.admit(at(5)).unwrap();
        assert_eq!(conns.open(), 5);
        assert!(conns.admit(at(6)).is_none(), "the cap is 5");
        // A trusted connection gone gives its place in the cap back,
        // and the source's count of untrusted ones is unchanged.
        drop((a, c));
        assert_eq!(conns.open(), 3);
        assert_eq!(conns.trusted(), 1);
        assert!(
            conns.admit(at(6)).is_none(),
            "still two untrusted from the address"
        );
        let other = SocketAddr::from(([127, 0, 0, 2], 1));
        assert!(conns.admit(other).is_some(), "room in the cap");
    }

    #[tokio::test]
    async fn silent_connections_time_out_and_speakers_stay() {
        let (addr, conns, l) = pair(10, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), None));
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut speaker = TcpStream::connect(addr).await.unwrap();
        let mut a = inc.next().await.unwrap().unwrap();
        let mut b = inc.next().await.unwrap().unwrap();
        speaker.write_all(&[7u8; PREFACE_AND_FRAME]).await.unwrap();
        let mut buf = vec![0u8; 64];
        // The silent one errs at its deadline; the speaker's bytes arrive.
        let ra = a.read(&mut buf).await;
        let rb = b.read(&mut buf).await;
        let (silent_end, spoke) = if ra.is_err() { (ra, rb) } else { (rb, ra) };
        assert_eq!(silent_end.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(spoke.unwrap(), PREFACE_AND_FRAME);
        drop(silent);
        assert_eq!(conns.take_summary().preface_timeouts, 1);
        drop((a, b));
        assert_eq!(conns.open(), 0);
    }

    async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((ip, 0))).unwrap();
        s.connect(to).await.unwrap()
    }

    #[tokio::test]
    async fn per_source_share_and_displacement_of_the_oldest_silent() {
        let (addr, conns, l) = pair(10, 2).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), None));
        let _c1 = connect_from([127, 0, 0, 1], addr).await;
        let _a1 = inc.next().await.unwrap().unwrap();
        let _c2 = connect_from([127, 0, 0, 1], addr).await;
        let _a2 = inc.next().await.unwrap().unwrap();
        // A third from the same source is over its share: closed at once;
        // another source still gets in.
        let c3 = connect_from([127, 0, 0, 1], addr).await;
        let _c4 = connect_from([127, 0, 0, 2], addr).await;
        let a4 = inc.next().await.unwrap().unwrap();
        assert_eq!(a4.peer.ip(), std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert!(closed(c3).await, "over the share: closed");
        assert_eq!(conns.take_summary().refused_source, 1);
        assert_eq!(conns.open(), 3);

        // From another source, a full table displaces the oldest silent one.
        let (addr, conns, l) = pair(1, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), None));
        let _old = TcpStream::connect(addr).await.unwrap();
        let mut old_conn = inc.next().await.unwrap().unwrap();
        let _new = TcpStream::connect(addr).await.unwrap();
        let _new_conn = inc.next().await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        let err = old_conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(conns.take_summary().displaced, 1);
        assert_eq!(conns.open(), 1);
    }

    #[tokio::test]
    async fn a_full_table_of_speakers_refuses() {
        let (addr, conns, l) = pair(1, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), None));
        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let mut a1 = inc.next().await.unwrap().unwrap();
        c1.write_all(&[1u8; PREFACE_AND_FRAME]).await.unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < PREFACE_AND_FRAME {
            got += a1.read(&mut buf).await.unwrap();
        }
        let c2 = TcpStream::connect(addr).await.unwrap();
        // Nothing to yield: c2 is refused; the stream waits for more.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), inc.next())
                .await
                .is_err()
        );
        assert!(closed(c2).await);
        assert_eq!(conns.take_summary().refused_full, 1);
    }

    /// A listener's TLS for "localhost", and a client config trusting it.
    fn tls_pair() -> (ServerTls, Arc<tokio_rustls::rustls::ClientConfig>) {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let server = ServerTls::from_pem(
            crate::tls::pem("CERTIFICATE", cert.der()).as_bytes(),
            "cert",
            crate::tls::pem("PRIVATE KEY", &key.serialize_der()).as_bytes(),
            "key",
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    #[tokio::test]
    async fn over_tls_the_preface_counts_after_the_handshake() {
        let (server_tls, client_tls) = tls_pair();
        let (addr, conns, l) = pair(10, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), Some(server_tls)));
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client_tls)
                .connect(name, tcp)
                .await
                .unwrap();
            tls.write_all(&[7u8; PREFACE_AND_FRAME]).await.unwrap();
            tls.flush().await.unwrap();
            tls
        });
        let mut conn = inc.next().await.unwrap().unwrap();
        assert!(conn.is_tls());
        // The handshake runs as the connection is read; the plaintext
        // arrives whole, and the connection has spoken.
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < PREFACE_AND_FRAME {
            got += conn.read(&mut buf[got..]).await.unwrap();
        }
        assert_eq!(&buf[..got], &[7u8; PREFACE_AND_FRAME][..]);
        let _tls = client.await.unwrap();
        assert!(conn.preface.is_none());
        assert_eq!(conns.take_summary().preface_timeouts, 0);
    }

    #[tokio::test]
    async fn over_tls_silent_and_stalled_handshakes_meet_the_deadline() {
        let (server_tls, _) = tls_pair();
        let (addr, conns, l) = pair(10, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), Some(server_tls)));
        // One says nothing; one starts a ClientHello and stops half-way
        // (a record header promising 512 bytes, then 40 of them).
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        hello.extend([0u8; 40]);
        stalled.write_all(&hello).await.unwrap();
        let mut a = inc.next().await.unwrap().unwrap();
        let mut b = inc.next().await.unwrap().unwrap();
        // The server writes first on a new connection (its settings): the
        // handshake is driven from the write side too.
        let ra = a.write(b"settings").await;
        let rb = b.read(&mut [0u8; 16]).await;
        assert_eq!(ra.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(rb.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(conns.take_summary().preface_timeouts, 2);
        drop((a, b));
        assert!(closed(silent).await);
        assert!(closed(stalled).await);
        assert_eq!(conns.open(), 0);
    }

    #[tokio::test]
    async fn over_tls_a_handshaking_connection_can_be_displaced() {
        let (server_tls, _) = tls_pair();
        let (addr, conns, l) = pair(1, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), Some(server_tls)));
        let _old = TcpStream::connect(addr).await.unwrap();
        let mut old_conn = inc.next().await.unwrap().unwrap();
        let _new = TcpStream::connect(addr).await.unwrap();
        let _new_conn = inc.next().await.unwrap().unwrap();
        let err = old_conn.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(conns.take_summary().displaced, 1);
    }

    #[test]
    fn a_refusal_resets_each_request_however_the_bytes_are_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]); // SETTINGS
        bytes.extend([0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // WINDOW_UPDATE
        bytes.extend([0, 0, 2, HEADERS, 4, 0, 0, 0, 1, 0x82, 0x86]); // stream 1
        bytes.extend([0, 0, 1, 0, 0, 0, 0, 0, 1, 7]); // DATA on stream 1
        bytes.extend([0, 0, 1, HEADERS, 4, 0, 0, 0, 3, 0x82]); // stream 3
        let mut expected = EMPTY_SETTINGS.to_vec();
        expected.extend(tls_required(1));
        expected.extend(tls_required(3));
        for split in 1..bytes.len() {
            let mut r = Refusal::default();
            for chunk in bytes.chunks(split) {
                r.feed(chunk);
            }
            assert_eq!(r.pending(), &expected[..], "split {split}");
        }
        // Answers are bounded however many requests come.
        let mut r = Refusal::default();
        r.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        for id in 0..1000u32 {
            let s = (2 * id + 1).to_be_bytes();
            r.feed(&[0, 0, 0, HEADERS, 4, s[0], s[1], s[2], s[3]]);
        }
        assert!(r.pending().len() <= EMPTY_SETTINGS.len() + 13 * MAX_PENDING_RESETS);
        r.wrote(r.pending().len());
        assert!(r.pending().is_empty());
    }

    #[tokio::test]
    async fn a_plain_client_at_a_tls_listener_is_told_in_http2() {
        let (server_tls, _) = tls_pair();
        let (addr, conns, l) = pair(10, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns), Some(server_tls)));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut conn = inc.next().await.unwrap().unwrap();
        let server = tokio::spawn(async move {
            let err = conn.read(&mut [0u8; 8]).await.unwrap_err();
            // Never delivered as plaintext, and dead from then on.
            let again = conn.read(&mut [0u8; 8]).await.is_err();
            (err, again)
        });
        let mut settings = [0u8; 9];
        c.read_exact(&mut settings).await.unwrap();
        assert_eq!(settings, EMPTY_SETTINGS);
        // A request (HEADERS, 3 bytes of block, in two writes): reset.
        c.write_all(&[0, 0, 3, HEADERS, 4, 0, 0]).await.unwrap();
        c.write_all(&[0, 1, 0x82, 0x86, 0x84]).await.unwrap();
        let mut reset = [0u8; 13];
        c.read_exact(&mut reset).await.unwrap();
        assert_eq!(reset, tls_required(1));
        assert_eq!(reset[3], 3, "an RST_STREAM frame");
        assert_eq!(&reset[9..], &[0, 0, 0, 0x0c]);
        drop(c);
        let (err, again) = server.await.unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(again);
        assert_eq!(conns.take_summary().preface_timeouts, 0);
    }
}
