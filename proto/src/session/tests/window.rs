//! Stdin windows that follow the path, over a simulated one: a one-way
//! delay each way and a bottleneck of a fixed rate on the way up (its
//! queue unbounded, so a window too wide shows as a standing queue).

use std::collections::VecDeque;
use std::time::Instant;

use prost::Message;

use super::*;
use crate::session::window::IDLE_AFTER;

const MIB: u64 = 1024 * 1024;
const TICK: Duration = Duration::from_millis(1);

static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// A path: frames reach the other end `one_way` after they leave, the
/// upward ones also after the bottleneck has serialized them at `rate`.
struct Path {
    one_way: Duration,
    rate: u64,
    up: VecDeque<(Instant, Frame)>,
    down: VecDeque<(Instant, Frame)>,
    /// When the bottleneck is free again.
    free_at: Option<Instant>,
}

struct Sim {
    p: Pair,
    path: Path,
    call: u64,
    /// Stdin bytes the process took, in all.
    taken: u64,
    /// Whether the client keeps writing.
    writing: bool,
}

impl Sim {
    fn new(server_limits: Limits, one_way: Duration, rate: u64, budget: u64) -> Self {
        let (client_key, server_key) = keys();
        let mut acceptor = Acceptor::new(
            server_key.clone(),
            AuthorizedKeys::from_keys([client_key.public()]),
        );
        acceptor.stdin_budget = Arc::new(crate::session::window::Budget::new(budget));
        let mut p = Pair::from_parts(
            &client_key,
            &server_key.public(),
            Arc::new(acceptor),
            Limits::client(),
            server_limits,
        );
        p.run();
        assert!(p.client.is_ready());
        let call = p.exec(true);
        p.server_events.clear();
        Self {
            p,
            path: Path {
                one_way,
                rate,
                up: VecDeque::new(),
                down: VecDeque::new(),
                free_at: None,
            },
            call,
            taken: 0,
            writing: true,
        }
    }

    /// One millisecond of the path.
    fn tick(&mut self) {
        let now = self.p.now;
        if self.writing && self.p.client.backlog() < MIB as usize {
            self.p
                .client
                .write_stdin(self.call, Bytes::from_static(&ZEROS), now)
                .unwrap();
        }
        while let Some(t) = self.p.client.poll_transmit(now) {
            let start = self.path.free_at.map_or(now.at, |f| f.max(now.at));
            let len = t.frame.encoded_len() as u64;
            let done = start + Duration::from_secs_f64(len as f64 / self.path.rate as f64);
            self.path.free_at = Some(done);
            self.path.up.push_back((done + self.path.one_way, t.frame));
        }
        while let Some(t) = self.p.server.poll_transmit(now) {
            self.path
                .down
                .push_back((now.at + self.path.one_way, t.frame));
        }
        while self.path.up.front().is_some_and(|(at, _)| *at <= now.at) {
            let Some((_, frame)) = self.path.up.pop_front() else {
                break;
            };
            self.p.server.handle_frame(frame, now);
            while let Some(ev) = self.p.server.poll_event() {
                if let ServerEvent::Stdin { call_id, data } = &ev {
                    // The process takes its stdin as it comes.
                    self.taken += data.len() as u64;
                    self.p
                        .server
                        .stdin_taken(*call_id, data.len() as u64, now)
                        .unwrap();
                }
            }
        }
        while self.path.down.front().is_some_and(|(at, _)| *at <= now.at) {
            let Some((_, frame)) = self.path.down.pop_front() else {
                break;
            };
            self.p.client.handle_frame(frame, now);
            while self.p.client.poll_event().is_some() {}
        }
        self.p.now = now.after(TICK);
        if self
            .p
            .client
            .poll_timeout()
            .is_some_and(|t| t <= self.p.now.at)
        {
            self.p.client.handle_timeout(self.p.now);
        }
        if self
            .p
            .server
            .poll_timeout()
            .is_some_and(|t| t <= self.p.now.at)
        {
            self.p.server.handle_timeout(self.p.now);
        }
    }

    /// Runs for `d`; returns the stdin bytes the process took meanwhile.
    fn run_for(&mut self, d: Duration) -> u64 {
        let before = self.taken;
        for _ in 0..d.as_millis() {
            self.tick();
        }
        assert!(!self.p.server.is_over(), "the session ended");
        self.taken - before
    }

    fn window(&self) -> u64 {
        u64::from(self.p.server.stdin_window(self.call))
    }
}

/// 40 MiB/s across 50 ms: 2 MiB a round trip.
const RATE: u64 = 40 * MIB;
const ONE_WAY: Duration = Duration::from_millis(25);
const BDP: u64 = 2 * MIB;

#[test]
fn the_stdin_window_grows_to_the_path_and_fills_it() {
    let mut sim = Sim::new(Limits::server(), ONE_WAY, RATE, 256 * MIB);
    sim.run_for(Duration::from_secs(2));
    let carried = sim.run_for(Duration::from_secs(1));
    assert!(
        carried >= RATE * 9 / 10,
        "{carried} bytes in a second, the path carries {RATE}"
    );
    let window = sim.window();
    assert!(window >= BDP, "window {window} under one BDP");
    // A wider window would only stand in the bottleneck's queue.
    assert!(window <= 3 * BDP, "window {window} beyond the path's need");
    let measured = sim.p.server.measurements();
    assert!(
        measured > 0 && measured <= 3 * 1000 / 50,
        "{measured} pings"
    );
}

#[test]
fn a_fixed_window_carries_one_window_a_round_trip() {
    let first = Limits::server().stdin_window;
    let fixed = Limits {
        stdin_window_max: first,
        ..Limits::server()
    };
    let mut sim = Sim::new(fixed, ONE_WAY, RATE, 256 * MIB);
    sim.run_for(Duration::from_secs(1));
    let carried = sim.run_for(Duration::from_secs(1));
    // About 20 round trips of a 256 KiB window (and a chunk).
    let most = 21 * (u64::from(first) + crate::limits::MAX_CHUNK as u64);
    assert!(carried <= most, "{carried} > {most}");
    assert_eq!(sim.window(), u64::from(first));
    assert_eq!(sim.p.server.measurements(), 0, "nothing to measure");
}

#[test]
fn the_ceiling_and_the_budget_bound_the_window_and_give_back() {
    let first = u64::from(Limits::server().stdin_window);
    let capped = Limits {
        stdin_window_max: MIB as u32,
        ..Limits::server()
    };
    let mut sim = Sim::new(capped, ONE_WAY, RATE, 256 * MIB);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.window(), MIB, "the ceiling");
    let budget = Arc::clone(&sim.p.acceptor.stdin_budget);
    assert_eq!(budget.held(), MIB - first);
    // A finished call holds nothing.
    sim.p
        .server
        .push(sim.call, exit(0), None, None, sim.p.now)
        .unwrap();
    assert_eq!(budget.held(), 0);

    let mut sim = Sim::new(Limits::server(), ONE_WAY, RATE, 512 * 1024);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.window(), first + 512 * 1024, "the budget");
    let budget = Arc::clone(&sim.p.acceptor.stdin_budget);
    assert_eq!(budget.held(), 512 * 1024);
    // The client stops writing: once idle the window falls back. The budget
    // keeps what the client was told it may still send, until it is sent
    // or the stdin closes.
    sim.writing = false;
    sim.run_for(IDLE_AFTER + Duration::from_millis(200));
    sim.p
        .client
        .write_stdin(sim.call, Bytes::from_static(b"more"), sim.p.now)
        .unwrap();
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.window(), first);
    assert!(budget.held() <= 512 * 1024);
    sim.p.client.close_stdin(sim.call, None, sim.p.now).unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(budget.held(), 0);
}
