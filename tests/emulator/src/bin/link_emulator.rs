//! `link-emulator`: forwards TCP from `--listen` to `--to` as a real
//! network path would carry it, until SIGINT or SIGTERM (or `--for`), then
//! prints what it carried.
//!
//! ```text
//! link-emulator --listen 127.0.0.1:7700 --to 127.0.0.1:7600 --rtt 50ms
//! link-emulator --to 127.0.0.1:22 --up-delay 5ms --down-delay 45ms --rate 100mbit
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use link_emulator::units::{parse_duration, parse_rate, parse_size};
use link_emulator::{Config, Cut, CutAt, CutKind, Direction, Emulator};
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A userspace network path between two TCP endpoints: delay, jitter, bandwidth, a bottleneck queue, cuts"
)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to forward each connection.
    #[arg(long)]
    to: SocketAddr,
    /// Round trip, half each way (e.g. 50ms).
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["up_delay", "down_delay"])]
    rtt: Option<Duration>,
    /// One-way delay client → server.
    #[arg(long, value_parser = parse_duration)]
    up_delay: Option<Duration>,
    /// One-way delay server → client.
    #[arg(long, value_parser = parse_duration)]
    down_delay: Option<Duration>,
    /// Each chunk's delay varies within ± this (order kept).
    #[arg(long, value_parser = parse_duration)]
    jitter: Option<Duration>,
    /// Bandwidth each way (e.g. 100mbit, 12MiB/s).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u64>,
    /// The bottleneck's buffer in front of --rate (e.g. 256KiB).
    #[arg(long, value_parser = parse_size, default_value = "256KiB")]
    buffer: usize,
    /// The most bytes one direction of a connection holds in flight.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    max_in_flight: usize,
    /// The most connections carried at once.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Cut every connection after this many bytes client → server.
    #[arg(long, conflicts_with = "cut_after")]
    cut_at_bytes: Option<u64>,
    /// Cut every connection this long after it was accepted.
    #[arg(long, value_parser = parse_duration)]
    cut_after: Option<Duration>,
    /// How a cut ends a connection.
    #[arg(long, value_enum, default_value = "close")]
    cut_with: CutWith,
    /// Stop after this long instead of waiting for a signal.
    #[arg(long = "for", value_parser = parse_duration)]
    run_for: Option<Duration>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CutWith {
    Close,
    Reset,
}

fn config(args: &Args) -> Config {
    let mut config = Config::new(args.to);
    config.listen = args.listen;
    if let Some(rtt) = args.rtt {
        config = config.rtt(rtt);
    }
    for (direction, delay) in [
        (Direction::Up, args.up_delay),
        (Direction::Down, args.down_delay),
    ] {
        let path = match direction {
            Direction::Up => &mut config.up,
            Direction::Down => &mut config.down,
        };
        if let Some(delay) = delay {
            path.delay = delay;
        }
        if let Some(jitter) = args.jitter {
            path.jitter = jitter;
        }
        path.rate = args.rate;
        path.buffer = args.buffer;
    }
    config.max_in_flight = args.max_in_flight;
    config.max_connections = args.max_connections;
    let kind = match args.cut_with {
        CutWith::Close => CutKind::Close,
        CutWith::Reset => CutKind::Reset,
    };
    let at = match (args.cut_at_bytes, args.cut_after) {
        (Some(bytes), _) => Some(CutAt::Bytes {
            direction: Direction::Up,
            bytes,
        }),
        (None, Some(after)) => Some(CutAt::After(after)),
        (None, None) => None,
    };
    if let Some(at) = at {
        config = config.with_cut(Cut { kind, at });
    }
    config
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Block the signals before any thread starts, so only sigwait sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("link-emulator: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let emulator = match Emulator::start(config(&args)) {
        Ok(e) => e,
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("link-emulator: {e}{cause}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {} -> {}", emulator.addr(), args.to);
    match args.run_for {
        Some(d) => std::thread::sleep(d),
        None => {
            let _ = signals.wait();
        }
    }
    println!("{}", emulator.shutdown());
    ExitCode::SUCCESS
}
