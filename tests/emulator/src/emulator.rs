//! The emulator: a listener, a thread per accepted connection (which
//! dials the target and carries both directions), live settings, stalls,
//! cuts and stats.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Config, CutKind, Direction, PathSettings};
use crate::conn::Conn;
use crate::live::Live;
use crate::stats::LinkStats;

/// How long dialling the target may take before the client is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the emulator's thread")]
    Thread(#[source] std::io::Error),
}

/// What the emulator's threads share: what every connection reads
/// ([`Live`]) and the bookkeeping of the connections themselves.
struct Shared {
    live: Arc<Live>,
    conns: Mutex<Vec<Weak<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: AtomicBool,
    next_index: AtomicU64,
}

impl Shared {
    fn live_conns(&self) -> Vec<Arc<Conn>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns.iter().filter_map(Weak::upgrade).collect()
    }
}

/// A running link emulator; stopped (every connection closed) when
/// dropped.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds `config.listen` and starts forwarding to `config.target`.
    pub fn start(config: Config) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.listen).map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            live: Arc::new(Live::new(config)),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            next_index: AtomicU64::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("link-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .map_err(Error::Thread)?
        };
        Ok(Self {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for components that take a URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings `direction` has now.
    pub fn path(&self, direction: Direction) -> PathSettings {
        self.shared.live.path(direction)
    }

    /// Changes `direction`'s settings for every byte read from now on
    /// (bytes already in a delay line keep the instant they were given).
    pub fn set_path(&self, direction: Direction, path: PathSettings) {
        self.shared.live.set_path(direction, path);
    }

    /// Sets both directions to a round trip of `rtt`, half each way,
    /// keeping their other settings.
    pub fn set_rtt(&self, rtt: Duration) {
        self.shared.live.set_rtt(rtt);
    }

    /// Holds every byte in `direction` for `duration` from now (a stalled
    /// path: nothing is lost, it arrives late, all at once); the senders
    /// are held back once the delay lines are full.
    pub fn stall(&self, direction: Direction, duration: Duration) {
        self.shared.live.stall(direction, duration);
        for conn in self.shared.live_conns() {
            conn.nudge();
        }
    }

    /// Cuts every open connection now; returns how many were cut.
    pub fn cut_all(&self, kind: CutKind) -> usize {
        let conns = self.shared.live_conns();
        let mut cut = 0;
        for conn in conns {
            if !conn.is_cut() {
                conn.cut(kind);
                cut += 1;
            }
        }
        cut
    }

    /// What it carried so far.
    pub fn stats(&self) -> LinkStats {
        self.shared.live.counters.snapshot()
    }

    /// Stops accepting, closes every connection and waits for their
    /// threads; returns what was carried.
    pub fn shutdown(mut self) -> LinkStats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        for conn in self.shared.live_conns() {
            conn.close_at_stop();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("target", &self.shared.live.config.target)
            .finish_non_exhaustive()
    }
}

fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let client = match incoming {
            Ok(client) => client,
            Err(_) => {
                // Out of descriptors or a connection gone before it was
                // accepted: try again shortly, never spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let counters = &shared.live.counters;
        let mut threads = shared.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        if threads.len() >= shared.live.config.max_connections {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            reset(&client);
            continue;
        }
        let conn_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("link-conn".into())
            .spawn(move || carry(client, conn_shared));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(_) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Dials the target for `client` and carries the connection.
fn carry(client: TcpStream, shared: Arc<Shared>) {
    let counters = &shared.live.counters;
    let server = match TcpStream::connect_timeout(&shared.live.config.target, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(_) => {
            counters.failed_connects.fetch_add(1, Ordering::Relaxed);
            reset(&client);
            return;
        }
    };
    counters.accepted.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn::new(client, server, Arc::clone(&shared.live), index));
    shared
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(&conn));
    if shared.stop.load(Ordering::Acquire) {
        conn.cut(CutKind::Close);
    }
    conn.run();
    counters.active.fetch_sub(1, Ordering::Relaxed);
}
