//! Windows that follow the path, over a simulated one: a one-way delay
//! each way and a bottleneck of a fixed rate in the direction of the bulk
//! (its queue unbounded, so a window too wide shows as a standing queue).
//! Stdin flows up (the exec-server sizes its window), output down (the
//! client sizes it).

use std::collections::VecDeque;
use std::time::Instant;

use prost::Message;

use super::*;
use crate::session::window::{IDLE_AFTER, PATH_MEMORY};

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
    /// The bottleneck is on the way down (output), not up (stdin).
    down_bulk: bool,
}

impl Path {
    /// When a frame that leaves at `now` arrives, through the bottleneck
    /// if `bulk`.
    fn arrival(&mut self, now: Instant, frame: &Frame, bulk: bool) -> Instant {
        if !bulk {
            return now + self.one_way;
        }
        let start = self.free_at.map_or(now, |f| f.max(now));
        let len = frame.encoded_len() as u64;
        let done = start + Duration::from_secs_f64(len as f64 / self.rate as f64);
        self.free_at = Some(done);
        done + self.one_way
    }
}

struct Sim {
    p: Pair,
    path: Path,
    call: u64,
    /// Stdin bytes the process took, in all.
    taken: u64,
    /// Whether the client keeps writing (stdin), or the process printing
    /// (output).
    writing: bool,
    /// Output bytes the caller took, in all.
    printed: u64,
}

impl Sim {
    fn new(server_limits: Limits, one_way: Duration, rate: u64, budget: u64) -> Self {
        Self::with(
            Limits::client(),
            server_limits,
            one_way,
            rate,
            budget,
            false,
        )
    }

    /// Output flows: the process prints as fast as its credit allows.
    fn output(client_limits: Limits, one_way: Duration, rate: u64) -> Self {
        let mut sim = Self::with(client_limits, Limits::server(), one_way, rate, 0, true);
        sim.p.push(sim.call, started());
        sim.p.client_events.clear();
        sim
    }

    fn with(
        client_limits: Limits,
        server_limits: Limits,
        one_way: Duration,
        rate: u64,
        budget: u64,
        down_bulk: bool,
    ) -> Self {
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
            client_limits,
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
                down_bulk,
            },
            call,
            taken: 0,
            writing: true,
            printed: 0,
        }
    }

    /// One millisecond of the path.
    fn tick(&mut self) {
        let now = self.p.now;
        let down_bulk = self.path.down_bulk;
        if self.writing && !down_bulk && self.p.client.backlog() < MIB as usize {
            self.p
                .client
                .write_stdin(self.call, Bytes::from_static(&ZEROS), now)
                .unwrap();
        }
        if self.writing && down_bulk {
            // The process prints in chunks while its call has credit.
            let chunk = crate::limits::MAX_CHUNK;
            let cost = chunk as u64 + crate::session::output::EVENT_COST;
            while self.p.server.retained_by(self.call) + cost
                <= u64::from(self.p.server.output_window_of(self.call))
                && self.p.server.backlog() < MIB as usize
            {
                let data = Bytes::from_static(&ZEROS[..chunk]);
                self.p
                    .server
                    .push(self.call, Kind::Stdout(data), None, None, now)
                    .unwrap();
            }
        }
        while let Some(t) = self.p.client.poll_transmit(now) {
            let at = self.path.arrival(now.at, &t.frame, !down_bulk);
            self.path.up.push_back((at, t.frame));
        }
        while let Some(t) = self.p.server.poll_transmit(now) {
            let at = self.path.arrival(now.at, &t.frame, down_bulk);
            self.path.down.push_back((at, t.frame));
        }
        while self.path.up.front().is_some_and(|(at, _)| *at <= now.at) {
            let Some((_, frame)) = self.path.up.pop_front() else {
                break;
            };
            self.p.server.handle_frame(frame, now);
            while let Some(ev) = self.p.server.poll_event() {
                if let ServerEvent::Ended(end) = &ev {
                    panic!("the exec-server's session ended: {end:?}");
                }
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
            while let Some(ev) = self.p.client.poll_event() {
                if let ClientEvent::Ended(end) = &ev {
                    panic!("the client's session ended: {end:?}");
                }
                if let ClientEvent::Call(c) = ev {
                    // The caller takes its output as it comes.
                    if let Kind::Stdout(d) = &c.kind {
                        self.printed += d.len() as u64;
                    }
                    let cost = crate::session::output::cost(&c.kind);
                    self.p.client.output_taken(c.call_id, c.seq, cost, now);
                }
            }
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

    /// Runs for `d`; returns the bulk bytes that crossed meanwhile (stdin
    /// the process took, or output the caller took).
    fn run_for(&mut self, d: Duration) -> u64 {
        let before = self.taken + self.printed;
        for _ in 0..d.as_millis() {
            self.tick();
        }
        assert!(!self.p.server.is_over(), "the session ended");
        assert!(!self.p.client.is_over(), "the session ended");
        self.taken + self.printed - before
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

#[test]
fn the_output_window_grows_to_the_path_and_fills_it() {
    let mut sim = Sim::output(Limits::client(), ONE_WAY, RATE);
    let first = u64::from(Limits::client().output_window);
    // 4 MiB a round trip already carries 80 MiB/s: a faster path.
    let rate = 4 * RATE;
    sim.path.rate = rate;
    let bdp = 4 * BDP;
    sim.run_for(Duration::from_secs(2));
    let carried = sim.run_for(Duration::from_secs(1));
    assert!(
        carried >= rate * 9 / 10,
        "{carried} bytes in a second, the path carries {rate}"
    );
    let window = u64::from(sim.p.client.output_window_of(sim.call));
    assert!(window > first && window >= bdp, "window {window}");
    assert!(window <= 3 * bdp, "window {window} beyond the path's need");
    // The exec-server granted what the client asked.
    assert_eq!(u64::from(sim.p.server.output_window_of(sim.call)), window);
}

/// A ready pair whose exec-server grants output windows up to `ceiling`.
fn pair_with_server_ceiling(ceiling: u32) -> Pair {
    let (client_key, server_key) = keys();
    let acceptor = Arc::new(Acceptor::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public()]),
    ));
    let server = Limits {
        output_window_max: ceiling,
        ..Limits::server()
    };
    let mut p = Pair::from_parts(
        &client_key,
        &server_key.public(),
        acceptor,
        Limits::client(),
        server,
    );
    p.run();
    p
}

#[test]
fn the_output_window_stops_at_the_clients_ceiling_and_the_exec_servers() {
    let ceiling = 6 * MIB as u32;
    let client = Limits {
        output_window_max: ceiling,
        ..Limits::client()
    };
    let mut sim = Sim::output(client, ONE_WAY, 4 * RATE);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.p.client.output_window_of(sim.call), ceiling);
    assert_eq!(sim.p.server.output_window_of(sim.call), ceiling);

    // An exec-server with a lower ceiling grants only that: the client's
    // check stays looser, the exec-server never sends beyond its own.
    let mut p = pair_with_server_ceiling(5 * MIB as u32);
    let id = p.exec(false);
    p.push(id, started());
    p.push(id, out("x"));
    p.client
        .output_taken(id, 1, crate::session::output::cost(&out("x")), p.now);
    // A client asking for far more than the exec-server's ceiling.
    p.client.ack_window_for_tests(id, 1, u32::MAX, p.now);
    p.run();
    assert_eq!(p.server.output_window_of(id), 5 * MIB as u32);
}

#[test]
fn a_quiet_calls_output_window_falls_back_and_the_exec_server_follows() {
    let first = Limits::client().output_window;
    let mut sim = Sim::output(Limits::client(), ONE_WAY, 4 * RATE);
    sim.run_for(Duration::from_secs(2));
    let wide = sim.p.client.output_window_of(sim.call);
    assert!(wide > first, "window {wide}");
    assert_eq!(sim.p.server.output_window_of(sim.call), wide);
    // The process stops printing: a second after its last output arrives
    // (what was in flight and queued at the bottleneck still comes) the
    // window is back at its first, and the exec-server hears of it one way
    // later.
    sim.writing = false;
    sim.run_for(IDLE_AFTER - Duration::from_millis(100));
    assert_eq!(sim.p.client.output_window_of(sim.call), wide, "not yet");
    let fell = (1..=40).find(|_| {
        sim.run_for(Duration::from_millis(10));
        sim.p.client.output_window_of(sim.call) == first
    });
    assert!(fell.is_some(), "the client's window did not fall back");
    sim.run_for(ONE_WAY + TICK);
    assert_eq!(sim.p.server.output_window_of(sim.call), first);
    // It prints again: the window ramps again, and the path fills.
    sim.writing = true;
    sim.run_for(Duration::from_secs(2));
    let carried = sim.run_for(Duration::from_secs(1));
    assert!(carried >= 4 * RATE * 9 / 10, "{carried} bytes in a second");
    let again = sim.p.client.output_window_of(sim.call);
    assert!(again > first, "window {again}");
    assert_eq!(sim.p.server.output_window_of(sim.call), again);
}

#[test]
fn the_output_window_reaches_the_path_at_its_first_measurement() {
    // 320 MiB/s across 50 ms: 16 MiB in flight, four times the first
    // window. Growing only as each measurement ends doubles the window at
    // best every second round trip (it reached one BDP after 375 ms and
    // carried 81 MiB in the first 500); growing by half of what is taken
    // in every round trip reached it after 225 ms (102 MiB). Timing the
    // first window's train tells the path's rate at once: the first
    // measurement ends a round trip after the output began.
    let rate = 8 * RATE;
    let bdp = 8 * BDP;
    let mut sim = Sim::output(Limits::client(), ONE_WAY, rate);
    let mut reached = None;
    let mut carried = 0;
    for ms in (25..=500).step_by(25) {
        carried += sim.run_for(Duration::from_millis(25));
        let window = u64::from(sim.p.client.output_window_of(sim.call));
        if reached.is_none() && window >= bdp {
            reached = Some(ms);
        }
    }
    assert!(
        reached.is_some_and(|ms| ms <= 125),
        "the window reached one BDP at {reached:?} ms"
    );
    // The path carries 148 MiB in the 475 ms after the first output
    // arrives.
    assert!(carried >= 115 * MIB, "{carried} bytes in the first 500 ms");
    let window = u64::from(sim.p.client.output_window_of(sim.call));
    assert!(window <= 3 * bdp, "window {window} beyond the path's need");
}

/// Milliseconds of `sim` until the client's output window is `bytes` or
/// more (at most 500).
fn reaches(sim: &mut Sim, bytes: u64) -> Option<u64> {
    (1..=500).find(|_| {
        sim.run_for(TICK);
        u64::from(sim.p.client.output_window_of(sim.call)) >= bytes
    })
}

/// Ends `sim`'s call (its process prints no more and exits) and lets the
/// last of it cross.
fn end_call(sim: &mut Sim) {
    sim.writing = false;
    sim.run_for(Duration::from_millis(200));
    sim.p
        .server
        .push(sim.call, exit(0), None, None, sim.p.now)
        .unwrap();
    sim.run_for(Duration::from_millis(200));
}

/// Starts a call on `sim` that prints as fast as its credit allows.
fn next_call(sim: &mut Sim) {
    let call = sim.p.exec(false);
    sim.p.push(call, started());
    sim.call = call;
    sim.writing = true;
}

#[test]
fn a_later_call_grows_its_output_window_before_its_first_pong() {
    // The first call's measurements tell the session the path's round
    // trip; a later call times its first window's train as it arrives and
    // grows the window once most of it has come, without waiting for the
    // pong of a measurement of its own.
    let rate = 8 * RATE;
    let bdp = 8 * BDP;
    let mut sim = Sim::output(Limits::client(), ONE_WAY, rate);
    let first = reaches(&mut sim, bdp).expect("the first call reaches the path");
    end_call(&mut sim);
    // Long enough that the later call starts from the session's first
    // window (not from the window the first ended with), with the path's
    // round trip still known.
    sim.run_for(PATH_MEMORY);

    next_call(&mut sim);
    let later = reaches(&mut sim, bdp).expect("the later call reaches the path");
    // Its output takes 25 ms to arrive, and 4 MiB at 320 MiB/s 13 ms more:
    // the window grows before the pong of a measurement begun as its output
    // arrived could have come back (75 ms).
    assert!(later < 75, "the later call reached one BDP at {later} ms");
    assert!(
        later + 25 <= first,
        "{later} ms, against {first} for the first call"
    );
    sim.run_for(Duration::from_secs(1));
    let window = u64::from(sim.p.client.output_window_of(sim.call));
    assert!(window <= 3 * bdp, "window {window} beyond the path's need");
    assert_eq!(u64::from(sim.p.server.output_window_of(sim.call)), window);
}

#[test]
fn a_call_soon_after_a_bulk_one_starts_where_its_window_ended() {
    // 320 MiB/s across 50 ms: 16 MiB in flight, four times the first
    // window. The first call finds the path; the next, started moments
    // after it ended, starts with the window it ended with, at both ends:
    // none of its round trips is spent finding the path again.
    let first = u64::from(Limits::client().output_window);
    let rate = 8 * RATE;
    let bdp = 8 * BDP;
    let mut sim = Sim::output(Limits::client(), ONE_WAY, rate);
    reaches(&mut sim, bdp).expect("the first call reaches the path");
    sim.run_for(Duration::from_millis(500));
    let ended = sim.p.client.output_window_of(sim.call);
    assert!(u64::from(ended) >= bdp, "window {ended}");
    end_call(&mut sim);

    // (The request reaches the exec-server at once here; the output then
    // crosses the path.)
    next_call(&mut sim);
    assert_eq!(sim.p.client.output_window_of(sim.call), ended);
    assert_eq!(sim.p.server.output_window_of(sim.call), ended);
    // The output comes at the path's rate from its first arrival: 100 ms
    // of it carry what the path does (ramping from the first window, even
    // with the round trip known, they carried 18 of its 32 MiB).
    let carried = sim.run_for(ONE_WAY + Duration::from_millis(100));
    let path = rate / 10;
    assert!(
        carried >= path * 95 / 100,
        "{carried} bytes in the first 100 ms of output, the path carries {path}"
    );
    let window = u64::from(sim.p.client.output_window_of(sim.call));
    assert!(window <= 3 * bdp, "window {window} beyond the path's need");

    // Quiet for longer than the session remembers its path: the next call
    // starts at the session's first window, and finds the path again.
    end_call(&mut sim);
    sim.run_for(PATH_MEMORY);
    next_call(&mut sim);
    assert_eq!(u64::from(sim.p.client.output_window_of(sim.call)), first);
    assert_eq!(u64::from(sim.p.server.output_window_of(sim.call)), first);
    reaches(&mut sim, bdp).expect("the call finds the path again");
}

#[test]
fn a_call_that_starts_wide_falls_back_when_it_goes_quiet() {
    // A ceiling the first call reaches: the later call starts there and
    // no measurement widens it again; its fall-back is armed as its
    // caller takes its output.
    let ceiling = 8 * MIB as u32;
    let client = Limits {
        output_window_max: ceiling,
        ..Limits::client()
    };
    let first = Limits::client().output_window;
    let mut sim = Sim::output(client, ONE_WAY, 8 * RATE);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.p.client.output_window_of(sim.call), ceiling);
    end_call(&mut sim);
    sim.run_for(2 * IDLE_AFTER);

    next_call(&mut sim);
    assert_eq!(sim.p.client.output_window_of(sim.call), ceiling);
    sim.run_for(Duration::from_millis(300));
    sim.writing = false;
    let fell = (1..=150).find(|_| {
        sim.run_for(Duration::from_millis(10));
        sim.p.client.output_window_of(sim.call) == first
    });
    assert!(
        fell.is_some(),
        "the window that started wide did not fall back"
    );
    sim.run_for(ONE_WAY + TICK);
    assert_eq!(sim.p.server.output_window_of(sim.call), first);
}

#[test]
fn a_calls_first_window_is_granted_up_to_the_exec_servers_ceiling() {
    let mut p = pair_with_server_ceiling(5 * MIB as u32);
    let first = Limits::client().output_window;
    let ceiling = Limits::client().output_window_max;
    // A path measured moments ago, wider than either ceiling: the client
    // asks for its own ceiling, the exec-server grants its own.
    p.client.remember_path_for_tests(u32::MAX, p.now.at);
    let id = p.exec(false);
    p.run();
    assert_eq!(p.client.output_window_of(id), ceiling);
    assert_eq!(p.server.output_window_of(id), 5 * MIB as u32);
    // Narrower than the session's window: the session's.
    p.client.remember_path_for_tests(first / 2, p.now.at);
    let id = p.exec(false);
    p.run();
    assert_eq!(p.client.output_window_of(id), first);
    assert_eq!(p.server.output_window_of(id), first);
}

/// Ends `sim`'s stdin call: the client stops writing and closes its stdin,
/// and the process exits ([`end_call`]).
fn end_stdin_call(sim: &mut Sim) {
    sim.writing = false;
    sim.run_for(Duration::from_millis(200));
    sim.p.client.close_stdin(sim.call, None, sim.p.now).unwrap();
    end_call(sim);
}

/// Starts a call on `sim` whose client writes its stdin as fast as its
/// window allows.
fn next_stdin_call(sim: &mut Sim) {
    sim.call = sim.p.exec(true);
    sim.p.push(sim.call, started());
    sim.writing = true;
}

#[test]
fn a_call_soon_after_an_upload_starts_where_its_stdin_window_ended() {
    // 40 MiB/s across 50 ms. The first call's stdin window finds the path;
    // the next, started moments after it ended, starts with the window it
    // ended with, and the exec-server tells the client at once: its stdin
    // crosses at the path's rate from the first round trip (from the
    // session's first window it carried about a third of that).
    let first = u64::from(Limits::server().stdin_window);
    let mut sim = Sim::new(Limits::server(), ONE_WAY, RATE, 256 * MIB);
    sim.p.push(sim.call, started());
    sim.run_for(Duration::from_secs(2));
    let ended = sim.window();
    assert!(ended >= BDP, "window {ended}");
    end_stdin_call(&mut sim);
    let budget = Arc::clone(&sim.p.acceptor.stdin_budget);
    assert_eq!(budget.held(), 0, "a finished call holds nothing");

    // (The request reaches the exec-server at once here; stdin then
    // crosses the path.)
    next_stdin_call(&mut sim);
    assert_eq!(sim.window(), ended);
    assert_eq!(budget.held(), ended - first);
    let carried = sim.run_for(ONE_WAY + Duration::from_millis(100));
    let path = RATE / 10;
    assert!(
        carried >= path * 9 / 10,
        "{carried} bytes in the first 100 ms of stdin, the path carries {path}"
    );
    let window = sim.window();
    assert!(window <= 3 * BDP, "window {window} beyond the path's need");

    // Quiet for longer than the session remembers its path: the next call
    // starts at the session's first window, and finds the path again.
    end_stdin_call(&mut sim);
    sim.run_for(PATH_MEMORY);
    next_stdin_call(&mut sim);
    assert_eq!(sim.window(), first);
    let carried = sim.run_for(ONE_WAY + Duration::from_millis(100));
    assert!(
        carried < path * 9 / 10,
        "{carried} bytes: the first window carried the path's rate"
    );
    sim.run_for(Duration::from_secs(2));
    assert!(sim.window() >= BDP, "the call finds the path again");
}
