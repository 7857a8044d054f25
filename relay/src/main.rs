//! `relay`: forwards Noise ciphertext between core-clients and exec-servers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use proto::admission::{AdmissionLimits, Startups};
use proto::listener::ConnLimits;
use relay::RelayConfig;
use relay::config::RegistrationLimits;

/// Pairs core-client sessions with registered exec-servers and forwards their
/// encrypted frames. Holds no keys and never sees a command or its output.
///
/// Limits (anyone who can reach the relay can try these; none needs a key):
/// connections are capped relay-wide and per source address, and one that
/// has not sent its HTTP/2 preface within --preface-timeout-secs is closed
/// (when the table is full, the oldest such silent one makes room).
/// Sessions that have not finished their handshake (until the exec-server's
/// answer has passed) are a small table of their own, --max-startups
/// START:RATE:FULL (refused at random from START, RATE% rising to 100% at
/// FULL) with a per-source share; message 1 must arrive within
/// --first-frame-timeout-secs, before the exec-server hears of the session.
/// Registrations are rate-limited and capped per connection and per source,
/// optionally limited to --allowed-servers; the same key registering again
/// replaces the older registration, which is told why. Bytes queued in the
/// relay are bounded per session direction and relay-wide; a session over
/// its share is slowed by HTTP/2 flow control. The soft descriptor limit is
/// raised to the hard limit at start, and --max-connections is lowered to
/// fit it. Refusals are logged as summaries every 10 s.
#[derive(Debug, Parser)]
#[command(
    name = "relay",
    version,
    args_conflicts_with_subcommands = true,
    after_help = telemetry::setup::EXPORT_HELP
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on for exec-servers and clients.
    #[arg(long, env = "REX_RELAY_LISTEN", default_value = "127.0.0.1:7600")]
    listen: SocketAddr,
    /// Most concurrent sessions per exec-server.
    #[arg(long, default_value_t = 1024)]
    max_sessions_per_server: usize,
    /// Most registered exec-servers.
    #[arg(long, default_value_t = 10_000)]
    max_registrations: usize,
    /// Seconds without a frame before a session is closed.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// Seconds an exec-server has to accept and answer a session.
    #[arg(long, default_value_t = 10)]
    handshake_timeout_secs: u64,
    /// Ignore and strip hop trace headers on frames (then no per-frame
    /// `relay.forward` spans are made).
    #[arg(long)]
    no_hop_headers: bool,
    /// Most open connections (lowered to fit the descriptor limit).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Most open connections from one source address (an IPv6 /64).
    #[arg(long, default_value_t = 256)]
    max_connections_per_source: usize,
    /// Seconds a new connection has to send the HTTP/2 preface.
    #[arg(long, default_value_t = 5)]
    preface_timeout_secs: u64,
    /// Sessions not yet authenticated: START:RATE:FULL (random early drop
    /// from START, RATE% rising to 100% at FULL), or one hard number.
    #[arg(long, default_value_t = relay::config::DEFAULT_STARTUPS, value_name = "START:RATE:FULL")]
    max_startups: Startups,
    /// Most sessions not yet authenticated from one source address.
    #[arg(long, default_value_t = 16)]
    max_startups_per_source: usize,
    /// Seconds a client has to send handshake message 1 after opening.
    #[arg(long, default_value_t = 5)]
    first_frame_timeout_secs: u64,
    /// Only the exec-server public keys in FILE may register (one per line,
    /// # comments); the file is re-read when it changes, and registrations
    /// of keys taken out of it end.
    #[arg(long, env = "REX_ALLOWED_SERVERS", value_name = "FILE")]
    allowed_servers: Option<std::path::PathBuf>,
    /// Most registrations over one connection.
    #[arg(long, default_value_t = 4)]
    max_registrations_per_connection: usize,
    /// Most registrations from one source address.
    #[arg(long, default_value_t = 64)]
    max_registrations_per_source: usize,
    /// Registration attempts per second one source address may start
    /// (sustained; bursts of 4 times as many).
    #[arg(long, default_value_t = 5.0)]
    registration_rate: f64,
    /// KiB one direction of a session may have queued in the relay.
    #[arg(long, default_value_t = 128)]
    session_buffer_kib: usize,
    /// MiB all sessions together may have queued in the relay (each
    /// direction may always hold one frame beyond it).
    #[arg(long, default_value_t = 256)]
    max_buffered_mib: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running relay whether it is serving (exit 0) or not (exit 1,
    /// with one line on stderr). Made for container healthchecks.
    Health {
        /// The relay to ask [default: this host's --listen address, with an
        /// unspecified IP taken as loopback].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Seconds the whole probe may take.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Health { url, timeout_secs }) = args.command {
        let url = url.unwrap_or_else(|| local_url(args.listen));
        return health(&url, Duration::from_secs(timeout_secs));
    }
    // A misconfigured export is reported before anything else is done.
    let options = match telemetry::setup::Options::service() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Descriptors: as many as allowed, and connections within them.
    let max_connections = match lifecycle::limits::raise_nofile() {
        Ok(nofile) => {
            let fit = lifecycle::limits::connections_within(nofile);
            if fit < args.max_connections {
                eprintln!(
                    "relay: the descriptor limit is {nofile}: at most {fit} connections (not {})",
                    args.max_connections
                );
            }
            fit.min(args.max_connections)
        }
        Err(e) => {
            eprintln!("relay: warning: cannot read the descriptor limit: {e}");
            args.max_connections
        }
    };
    let config = RelayConfig {
        connections: ConnLimits {
            max_connections,
            per_source: args.max_connections_per_source,
            preface_timeout: Duration::from_secs(args.preface_timeout_secs),
        },
        startups: AdmissionLimits {
            startups: args.max_startups,
            per_source: args.max_startups_per_source,
        },
        first_frame_timeout: Duration::from_secs(args.first_frame_timeout_secs),
        registrations: RegistrationLimits {
            allowed_servers: args.allowed_servers,
            per_connection: args.max_registrations_per_connection,
            per_source: args.max_registrations_per_source,
            rate_per_source: args.registration_rate,
            burst_per_source: args.registration_rate * 4.0,
        },
        session_buffer: args.session_buffer_kib.saturating_mul(1024),
        max_buffered: args.max_buffered_mib.saturating_mul(1024 * 1024),
        listen: args.listen,
        max_registrations: args.max_registrations,
        max_sessions_per_server: args.max_sessions_per_server,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
        accept_timeout: Duration::from_secs(args.handshake_timeout_secs),
        hop_headers: !args.no_hop_headers,
        ..RelayConfig::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP client lives on the runtime: set telemetry up inside it.
    let entered = runtime.enter();
    let telemetry = telemetry::setup::init("relay", telemetry::setup::LogDefault::Info, options);
    let code = runtime.block_on(async move {
        let signals = lifecycle::Tasks::new();
        let shutdown = lifecycle::signals::stop_on_signals(&signals);
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("relay: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(addr) => eprintln!("relay: listening on {addr}"),
            Err(e) => eprintln!("relay: listening (address unknown: {e})"),
        }
        match relay::serve(listener, config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relay: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // Flush the last spans (bounded) while the runtime still runs.
    telemetry.shutdown();
    drop(entered);
    code
}

/// The URL that reaches a relay listening on `listen` from the same host.
fn local_url(listen: SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

fn health(url: &str, timeout: Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proto::health::check(url, proto::health::RELAY, timeout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {url} is not healthy: {e}");
            ExitCode::FAILURE
        }
    }
}
