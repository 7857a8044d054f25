//! Accepting connections for a gRPC server (the relay, `exec-server
//! --listen`) where anyone may connect:
//!
//! - a cap on open connections and a per-source share of it;
//! - a deadline for the HTTP/2 preface and the first frame: a connection
//!   that has not sent them in time is closed;
//! - when the table is full, a new connection displaces the oldest one
//!   that has still not sent its preface (so silent connections cannot
//!   hold the table), and is refused only when every connection has
//!   spoken;
//! - back-off, never a spin, when `accept` fails for want of descriptors
//!   or memory (the pending connections wait in the kernel's queue).
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

/// The HTTP/2 client preface (24 bytes) and one frame header (9): what a
/// connection must send before [`ConnLimits::preface_timeout`].
const PREFACE_AND_FRAME: usize = 24 + 9;
/// Longest pause between `accept` attempts while descriptors are short.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Bounds on a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one source.
    pub per_source: usize,
    /// How long a new connection has to send the HTTP/2 preface and its
    /// first frame.
    pub preface_timeout: Duration,
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
    evict: Arc<Evict>,
    silent: bool,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    members: HashMap<u64, Member>,
    by_source: HashMap<Source, usize>,
    /// Ids in arrival order; ids that spoke or left are skipped lazily.
    silent: VecDeque<u64>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Member> {
        let m = self.members.remove(&id)?;
        if let Some(n) = self.by_source.get_mut(&m.source) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&m.source);
            }
        }
        Some(m)
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
                evict: Arc::clone(&evict),
                silent: true,
            },
        );
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

/// One accepted connection, as the gRPC server reads it.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    peer: SocketAddr,
    /// Until the preface and first frame are in: the deadline and the
    /// bytes read so far.
    preface: Option<(Pin<Box<Sleep>>, usize)>,
    slot: Slot,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.io.local_addr().ok(),
            remote_addr: Some(self.peer),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.preface.is_some() {
            this.slot.evict.waker.register(cx.waker());
            if this.slot.evict.flag.load(Ordering::Acquire) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closed to make room: no HTTP/2 preface yet",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some((deadline, seen)) = this.preface.as_mut() {
            match &polled {
                Poll::Ready(Ok(())) => {
                    *seen += buf.filled().len() - before;
                    if *seen >= PREFACE_AND_FRAME {
                        this.preface = None;
                        this.slot.conns.spoke(this.slot.id);
                    }
                }
                Poll::Ready(Err(_)) => {}
                Poll::Pending => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.slot
                            .conns
                            .preface_timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no HTTP/2 preface in time",
                        )));
                    }
                }
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
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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
/// Nagle off. The stream never ends and never yields an error.
pub fn incoming(
    listener: TcpListener,
    conns: Arc<Connections>,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send {
    futures::stream::unfold(
        (listener, conns, Duration::ZERO),
        |(listener, conns, mut backoff)| async move {
            loop {
                match listener.accept().await {
                    Ok((io, peer)) => {
                        backoff = Duration::ZERO;
                        // A refused connection is closed here, at once.
                        let Some(slot) = conns.admit(peer) else {
                            continue;
                        };
                        let _ = io.set_nodelay(true);
                        let deadline = Box::pin(tokio::time::sleep(conns.limits.preface_timeout));
                        let conn = Conn {
                            io,
                            peer,
                            preface: Some((deadline, 0)),
                            slot,
                        };
                        return Some((Ok(conn), (listener, conns, backoff)));
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

    #[tokio::test]
    async fn silent_connections_time_out_and_speakers_stay() {
        let (addr, conns, l) = pair(10, 10).await;
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns)));
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
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns)));
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
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns)));
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
        let mut inc = Box::pin(incoming(l, Arc::clone(&conns)));
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
}
