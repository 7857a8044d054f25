//! `relay`: forwards Noise ciphertext between core-clients and exec-servers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use relay::RelayConfig;

/// Pairs core-client sessions with registered exec-servers and forwards their
/// encrypted frames. Holds no keys and never sees a command or its output.
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
    let config = RelayConfig {
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
