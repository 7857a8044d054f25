//! One forwarded connection: a reader and a writer thread per direction
//! around each direction's [`Lane`], the bottleneck and delay applied as
//! bytes are read, and the cut that ends it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::{CutAt, CutKind, Direction, PathSettings};
use crate::lane::{Item, Lane};
use crate::live::Live;

/// The largest read that becomes one chunk.
const MAX_CHUNK: usize = 64 * 1024;
/// How long a write to a receiver that does not read blocks before the
/// writer looks at whether the connection was cut meanwhile.
const WRITE_POLL: Duration = Duration::from_millis(100);

/// A chunk's size on `path`: with a bottleneck, about a millisecond of
/// its rate (one packet at least, 16 KiB at most, never above its buffer),
/// so bytes leave it as a stream rather than in lumps.
fn chunk_size(path: &PathSettings) -> usize {
    match path.rate {
        Some(rate) => ((rate / 1000) as usize)
            .clamp(1460, 16 * 1024)
            .min(path.buffer.max(1460)),
        None => MAX_CHUNK,
    }
}

fn secs(bytes: usize, rate: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64)
}

/// A connection between a client (accepted) and the target (dialled).
pub(crate) struct Conn {
    client: TcpStream,
    server: TcpStream,
    lanes: [Lane; 2],
    cut: AtomicBool,
    /// Threads of this connection that have ended, for the timed cut.
    ended: Mutex<usize>,
    ended_changed: Condvar,
    live: Arc<Live>,
    index: u64,
}

impl Conn {
    pub(crate) fn new(client: TcpStream, server: TcpStream, live: Arc<Live>, index: u64) -> Self {
        for s in [&client, &server] {
            let _ = s.set_nodelay(true);
            let _ = s.set_write_timeout(Some(WRITE_POLL));
        }
        Self {
            client,
            server,
            lanes: [Lane::default(), Lane::default()],
            cut: AtomicBool::new(false),
            ended: Mutex::new(0),
            ended_changed: Condvar::new(),
            live,
            index,
        }
    }

    fn ends(&self, direction: Direction) -> (&TcpStream, &TcpStream) {
        match direction {
            Direction::Up => (&self.client, &self.server),
            Direction::Down => (&self.server, &self.client),
        }
    }

    fn lane(&self, direction: Direction) -> &Lane {
        &self.lanes[direction.index()]
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Cuts the connection (once): both ends get a FIN (`Close`) or, when
    /// the last handle goes, an RST (`Reset`); whatever is queued is
    /// dropped.
    pub(crate) fn cut(&self, kind: CutKind) {
        if self.cut.swap(true, Ordering::AcqRel) {
            return;
        }
        let counters = &self.live.counters;
        match kind {
            CutKind::Close => {
                counters.closes.fetch_add(1, Ordering::Relaxed);
                self.close_both();
            }
            CutKind::Reset => {
                counters.resets.fetch_add(1, Ordering::Relaxed);
                for s in [&self.client, &self.server] {
                    // A zero linger makes the close send RST; shutting the
                    // read side only wakes our readers, and sends nothing.
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                    let _ = s.shutdown(Shutdown::Read);
                }
            }
        }
        for lane in &self.lanes {
            lane.abort();
        }
    }

    /// Closes the connection because the emulator stops: not a cut (a
    /// connection that was ending by itself may still be listed), so not
    /// counted as one.
    pub(crate) fn close_at_stop(&self) {
        if self.cut.swap(true, Ordering::AcqRel) {
            return;
        }
        self.close_both();
        for lane in &self.lanes {
            lane.abort();
        }
    }

    fn close_both(&self) {
        for s in [&self.client, &self.server] {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Wakes every writer, so a changed stall is looked at again.
    pub(crate) fn nudge(&self) {
        for lane in &self.lanes {
            lane.nudge();
        }
    }

    /// Carries the connection until both directions have ended or it is
    /// cut.
    pub(crate) fn run(self: &Arc<Self>) {
        let timed_cut = match self.live.config.cut {
            Some(cut) => match cut.at {
                CutAt::After(after) => Some((cut.kind, Instant::now() + after)),
                CutAt::Bytes { .. } => None,
            },
            None => None,
        };
        std::thread::scope(|scope| {
            for direction in Direction::BOTH {
                let this = Arc::clone(self);
                scope.spawn(move || {
                    this.carry_in(direction);
                    this.thread_ended();
                });
                let this = Arc::clone(self);
                scope.spawn(move || {
                    this.deliver(direction);
                    this.thread_ended();
                });
            }
            if let Some((kind, at)) = timed_cut {
                let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let now = Instant::now();
                    if *ended == 4 || self.is_cut() {
                        break;
                    }
                    if now >= at {
                        drop(ended);
                        self.cut(kind);
                        break;
                    }
                    ended = self
                        .ended_changed
                        .wait_timeout(ended, at - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        });
    }

    fn thread_ended(&self) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.ended_changed.notify_all();
    }

    /// Reads from the sender of `direction` and queues each chunk with
    /// the instant it is due at the receiver.
    fn carry_in(&self, direction: Direction) {
        let (mut src, _) = self.ends(direction);
        let lane = self.lane(direction);
        let counters = self.live.counters.lane(direction);
        let seed = self.live.config.seed ^ (self.index << 1) ^ direction.index() as u64;
        let mut rng = SmallRng::seed_from_u64(seed);
        let cut_at = match self.live.config.cut {
            Some(c) => match c.at {
                CutAt::Bytes {
                    direction: d,
                    bytes,
                } if d == direction => Some((bytes, c.kind)),
                _ => None,
            },
            None => None,
        };
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut carried: u64 = 0;
        let start = Instant::now();
        let (mut last_departure, mut last_due) = (start, start);
        loop {
            let path = self.live.path(direction);
            let chunk = chunk_size(&path);
            if !lane.wait_for_room(chunk, self.live.config.max_in_flight) {
                return;
            }
            if let Some(rate) = path.rate {
                // The bottleneck's buffer holds what has arrived but not
                // yet left: full, the sender waits (its window closes).
                let drain = secs(path.buffer, rate);
                if last_departure > Instant::now() + drain {
                    counters.bottleneck_waits.fetch_add(1, Ordering::Relaxed);
                    if !lane.sleep_until(last_departure - drain) {
                        return;
                    }
                }
            }
            let want = match cut_at {
                Some((bytes, kind)) => {
                    let left = bytes.saturating_sub(carried);
                    if left == 0 {
                        lane.push(
                            Item::Cut {
                                kind,
                                due: last_due,
                            },
                            counters,
                        );
                        return;
                    }
                    chunk.min(usize::try_from(left).unwrap_or(usize::MAX))
                }
                None => chunk,
            };
            let n = match src.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The sender reset (or its socket failed): so does the
                    // path, after what it sent before (a reset travels
                    // behind the data, as on a wire).
                    let due = last_due.max(Instant::now() + self.live.path(direction).delay);
                    lane.push(
                        Item::Cut {
                            kind: CutKind::Reset,
                            due,
                        },
                        counters,
                    );
                    return;
                }
            };
            if self.is_cut() {
                return;
            }
            let now = Instant::now();
            // The path as it is when the bytes arrive.
            let path = self.live.path(direction);
            if n == 0 {
                lane.push(
                    Item::End {
                        due: last_due.max(now + path.delay),
                    },
                    counters,
                );
                return;
            }
            counters.received.fetch_add(n as u64, Ordering::Relaxed);
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            let departure = match path.rate {
                Some(rate) => last_departure.max(now) + secs(n, rate),
                None => now,
            };
            last_departure = departure;
            let delay = jittered(&path, &mut rng);
            let due = (departure + delay).max(last_due);
            last_due = due;
            lane.push(
                Item::Data {
                    bytes: buf[..n].to_vec(),
                    due,
                },
                counters,
            );
            carried += n as u64;
        }
    }

    /// Writes each chunk of `direction` to its receiver when it is due.
    fn deliver(&self, direction: Direction) {
        // A path's delay is its delay: the kernel may not round this
        // thread's timed waits up (by 50 µs by default) to batch wake-ups.
        // Best effort: where it cannot be set, waits are a little late.
        let _ = nix::sys::prctl::set_timerslack(1);
        let (_, dst) = self.ends(direction);
        let lane = self.lane(direction);
        let counters = self.live.counters.lane(direction);
        loop {
            match lane.next(|| self.live.stalled_until(direction)) {
                None => return,
                Some(Item::Data { bytes, .. }) => {
                    if !self.write_all(dst, &bytes) {
                        // The receiver is gone: nothing more goes its way.
                        // The other direction, reading from it, passes its
                        // reset on behind what was already in flight.
                        lane.abort();
                        return;
                    }
                    counters
                        .delivered
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Some(Item::End { .. }) => {
                    let _ = dst.shutdown(Shutdown::Write);
                    return;
                }
                Some(Item::Cut { kind, .. }) => {
                    self.cut(kind);
                    return;
                }
            }
        }
    }

    /// Writes all of `bytes`, however slowly the receiver reads; false if
    /// the connection was cut or the receiver is gone.
    fn write_all(&self, mut dst: &TcpStream, bytes: &[u8]) -> bool {
        let mut written = 0;
        while written < bytes.len() {
            if self.is_cut() {
                return false;
            }
            match dst.write(&bytes[written..]) {
                Ok(0) => return false,
                Ok(n) => written += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// The path's delay for one chunk: uniform within `delay ± jitter`,
/// never negative.
fn jittered(path: &PathSettings, rng: &mut SmallRng) -> Duration {
    if path.jitter.is_zero() {
        return path.delay;
    }
    let j = path.jitter.as_secs_f64();
    let d = path.delay.as_secs_f64() + rng.random_range(-j..=j);
    Duration::from_secs_f64(d.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_rate() {
        assert_eq!(chunk_size(&PathSettings::LOOPBACK), MAX_CHUNK);
        let slow = PathSettings::LOOPBACK.with_rate(100_000, 64 * 1024);
        assert_eq!(chunk_size(&slow), 1460);
        let fast = PathSettings::LOOPBACK.with_rate(1 << 30, 64 * 1024);
        assert_eq!(chunk_size(&fast), 16 * 1024);
        let tiny_buffer = PathSettings::LOOPBACK.with_rate(1 << 30, 4000);
        assert_eq!(chunk_size(&tiny_buffer), 4000);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let path =
            PathSettings::delay(Duration::from_millis(10)).with_jitter(Duration::from_millis(4));
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let d = jittered(&path, &mut rng);
            assert!(
                d >= Duration::from_millis(6) && d <= Duration::from_millis(14),
                "{d:?}"
            );
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 3, "jitter varies: {seen:?}");
        let none =
            PathSettings::delay(Duration::from_millis(3)).with_jitter(Duration::from_millis(9));
        for _ in 0..100 {
            assert!(jittered(&none, &mut rng) <= Duration::from_millis(12));
        }
    }
}
