//! The emulator between real sockets on loopback: what arrives, in what
//! order, no sooner than the path allows, within its bounds, and how
//! connections end. Timings are asserted only as lower bounds (a path can
//! never be faster than its delay), which a slow machine cannot break.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use link_emulator::{Config, Cut, CutAt, CutKind, Direction, Emulator, PathSettings};
use rand::{RngCore, SeedableRng};

/// A server that echoes every connection until its end of stream.
fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = s.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, handle)
}

/// A server that accepts and hands each connection to the test.
fn accepting_server() -> (SocketAddr, std::sync::mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            if tx.send(s).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Waits (up to a generous bound, for a busy machine) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Sends `data` through `addr` from one thread and reads the echo back.
fn echo_through(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut writer = s.try_clone().unwrap();
    let to_send = data.to_vec();
    let w = std::thread::spawn(move || {
        writer.write_all(&to_send).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    w.join().unwrap();
    back
}

#[test]
fn carries_every_byte_in_order_both_ways_with_jitter_and_a_rate() {
    let (server, _h) = echo_server();
    let mut config = Config::new(server);
    config.up = PathSettings::delay(Duration::from_millis(2))
        .with_jitter(Duration::from_millis(2))
        .with_rate(64 * 1024 * 1024, 128 * 1024);
    config.down =
        PathSettings::delay(Duration::from_millis(1)).with_jitter(Duration::from_millis(1));
    let link = Emulator::start(config).unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 17, 7);
    let back = echo_through(link.addr(), &data);
    assert!(
        back == data,
        "echo differs ({} of {} bytes back)",
        back.len(),
        data.len()
    );
    let stats = link.shutdown();
    assert_eq!(stats.up.received, data.len() as u64);
    assert_eq!(stats.up.delivered, data.len() as u64);
    assert_eq!(stats.down.delivered, data.len() as u64);
    assert_eq!(stats.accepted, 1);
    assert!(stats.up.chunks > 1 && stats.down.chunks > 1);
    assert_eq!((stats.closes, stats.resets, stats.active), (0, 0, 0));
}

#[test]
fn a_round_trip_takes_at_least_the_paths_delay_and_settings_change_live() {
    let (server, _h) = echo_server();
    let mut config = Config::new(server);
    config.up = PathSettings::delay(Duration::from_millis(15));
    config.down = PathSettings::delay(Duration::from_millis(25));
    let link = Emulator::start(config).unwrap();
    let mut s = TcpStream::connect(link.addr()).unwrap();
    s.set_nodelay(true).unwrap();
    let mut one = [0u8; 1];
    for _ in 0..3 {
        let t = Instant::now();
        s.write_all(b"x").unwrap();
        s.read_exact(&mut one).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t.elapsed()
        );
    }
    link.set_rtt(Duration::from_millis(120));
    assert_eq!(link.path(Direction::Up).delay, Duration::from_millis(60));
    let t = Instant::now();
    s.write_all(b"y").unwrap();
    s.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"y");
    assert!(
        t.elapsed() >= Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_bandwidth_cap_forms_a_queue_and_holds_the_sender_back() {
    let (server, accepted) = accepting_server();
    let mut config = Config::new(server);
    // 1 MiB/s with a 32 KiB bottleneck buffer.
    config.up = PathSettings::LOOPBACK.with_rate(1024 * 1024, 32 * 1024);
    let link = Emulator::start(config).unwrap();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    let mut server_side = accepted.recv().unwrap();
    let data = random_bytes(512 * 1024, 3);
    let sent = data.clone();
    let t = Instant::now();
    let w = std::thread::spawn(move || {
        client.write_all(&sent).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        client
    });
    let mut got = Vec::new();
    server_side.read_to_end(&mut got).unwrap();
    // 512 KiB at 1 MiB/s cannot take less than half a second.
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    assert!(got == data);
    drop(w.join().unwrap());
    let stats = link.stats();
    assert!(stats.up.bottleneck_waits > 0, "{stats}");
    // Behind the bottleneck nothing piles up: its output leaves at once.
    assert!(stats.up.peak_queued <= 64 * 1024, "{stats}");
}

#[test]
fn a_receiver_that_does_not_read_bounds_what_is_held() {
    let (server, accepted) = accepting_server();
    let mut config = Config::new(server);
    config.max_in_flight = 256 * 1024;
    let link = Emulator::start(config).unwrap();
    let client = TcpStream::connect(link.addr()).unwrap();
    let _server_side = accepted.recv().unwrap(); // never read
    client.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0usize;
    let mut idle_rounds = 0;
    // Write until the path stops taking bytes for a while (bounded loop).
    for _ in 0..20_000 {
        match (&client).write(&chunk) {
            Ok(n) => {
                written += n;
                idle_rounds = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                idle_rounds += 1;
                if idle_rounds > 50 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let stats = link.stats();
    // What the emulator holds is bounded by its in-flight limit (plus one
    // chunk being written); the rest waits in the kernel's socket buffers.
    assert!(stats.up.peak_queued <= 256 * 1024 + 64 * 1024, "{stats}");
    assert!(
        written < 64 * 1024 * 1024,
        "the sender was held back ({written} bytes taken)"
    );
}

#[test]
fn a_cut_at_a_byte_count_delivers_exactly_that_many_then_closes() {
    let (server, accepted) = accepting_server();
    let config = Config::new(server).with_cut(Cut {
        kind: CutKind::Close,
        at: CutAt::Bytes {
            direction: Direction::Up,
            bytes: 100_000,
        },
    });
    let link = Emulator::start(config).unwrap();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    let mut server_side = accepted.recv().unwrap();
    let data = random_bytes(300_000, 9);
    let _ = client.write_all(&data); // may fail once cut
    let mut got = Vec::new();
    server_side.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 100_000);
    assert!(got == data[..100_000]);
    // The client's side is closed too.
    let mut rest = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let n = client.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(link.stats().closes, 1);
}

#[test]
fn a_reset_cut_resets_both_ends() {
    let (server, accepted) = accepting_server();
    let link = Emulator::start(Config::new(server)).unwrap();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    let mut server_side = accepted.recv().unwrap();
    client.write_all(b"hello").unwrap();
    let mut five = [0u8; 5];
    server_side.read_exact(&mut five).unwrap();
    assert_eq!(link.cut_all(CutKind::Reset), 1);
    for end in [&mut client, &mut server_side] {
        end.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 16];
        let err = end
            .read(&mut buf)
            .expect_err("a reset, not an end of stream");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }
    assert_eq!(link.stats().resets, 1);
}

#[test]
fn a_timed_cut_ends_the_connection_after_its_time() {
    let (server, _h) = echo_server();
    let config = Config::new(server).with_cut(Cut {
        kind: CutKind::Close,
        at: CutAt::After(Duration::from_millis(200)),
    });
    let link = Emulator::start(config).unwrap();
    let t = Instant::now();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    client.write_all(b"ping").unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(got, b"ping");
    assert_eq!(link.stats().closes, 1);
}

#[test]
fn a_stall_delays_without_losing() {
    let (server, _h) = echo_server();
    let link = Emulator::start(Config::new(server)).unwrap();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    link.stall(Direction::Down, Duration::from_millis(400));
    let t = Instant::now();
    client.write_all(b"held").unwrap();
    let mut got = [0u8; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"held");
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn half_close_passes_through() {
    let (server, accepted) = accepting_server();
    let link = Emulator::start(Config::new(server).rtt(Duration::from_millis(4))).unwrap();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    let mut server_side = accepted.recv().unwrap();
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut req = Vec::new();
    server_side.read_to_end(&mut req).unwrap();
    assert_eq!(req, b"request");
    server_side
        .write_all(b"answer after the client's end")
        .unwrap();
    drop(server_side);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"answer after the client's end");
}

#[test]
fn connections_are_bounded_and_an_unreachable_target_resets() {
    let (server, accepted) = accepting_server();
    let mut config = Config::new(server);
    config.max_connections = 2;
    let link = Emulator::start(config).unwrap();
    let a = TcpStream::connect(link.addr()).unwrap();
    let _sa = accepted.recv().unwrap();
    let b = TcpStream::connect(link.addr()).unwrap();
    let _sb = accepted.recv().unwrap();
    let mut c = TcpStream::connect(link.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(c.read(&mut buf), Err(_) | Ok(0)));
    eventually("both counted", || link.stats().accepted == 2);
    let stats = link.stats();
    assert_eq!((stats.accepted, stats.refused, stats.active), (2, 1, 2));
    drop((a, b));

    // Nothing listens here.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = Emulator::start(Config::new(closed)).unwrap();
    let mut d = TcpStream::connect(dead.addr()).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(matches!(d.read(&mut buf), Err(_) | Ok(0)));
    eventually("the failed dial counted", || {
        dead.stats().failed_connects == 1
    });
}

#[test]
fn shutdown_closes_open_connections() {
    let (server, _h) = echo_server();
    let link = Emulator::start(Config::new(server)).unwrap();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    client.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    client.read_exact(&mut one).unwrap();
    let addr = link.addr();
    let stats = link.shutdown();
    assert_eq!(stats.accepted, 1);
    let mut rest = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(client.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn a_senders_reset_travels_behind_its_data() {
    let (server, accepted) = accepting_server();
    let link = Emulator::start(Config::new(server).rtt(Duration::from_millis(40))).unwrap();
    let mut client = TcpStream::connect(link.addr()).unwrap();
    let mut server_side = accepted.recv().unwrap();
    client.write_all(b"last words").unwrap();
    // The emulator has the bytes before the reset leaves (a reset that
    // overtook them in the kernel would discard them, as on any host).
    eventually("the bytes were read", || link.stats().up.received == 10);
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    server_side
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = [0u8; 10];
    server_side.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"last words");
    let mut more = [0u8; 1];
    let err = server_side.read(&mut more).expect_err("then the reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}
