//! `relay`: forwards Noise ciphertext between core-clients and exec-servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use proto::admission::{AdmissionLimits, Startups};
use proto::listener::ConnLimits;
use relay::RelayConfig;
use relay::config::FleetConfig;
use relay::directory::DirectoryConfig;

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
///
/// TLS: with --tls-cert and --tls-key the listener serves only TLS
/// (clients and exec-servers dial https://); the --preface-timeout-secs
/// deadline then covers the TLS handshake as well. TLS hides the links'
/// metadata (server ids, hop headers, frame sizes); sessions are Noise
/// end to end either way. `relay tls-init` makes a private CA and a
/// certificate for the relay.
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
    /// Settings from a TOML file: each key is a flag's long name
    /// (`max-connections = 512`, `directory = ["http://etcd-1:2379"]`,
    /// `no-hop-headers = true`); a flag or its environment variable wins
    /// over the file, and the file over the default.
    #[arg(long, env = "REX_RELAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on for exec-servers and clients.
    #[arg(long, env = "REX_RELAY_LISTEN", default_value = "127.0.0.1:7600")]
    listen: SocketAddr,
    /// Most concurrent sessions per exec-server.
    #[arg(long, default_value_t = 1024)]
    max_sessions_per_server: usize,
    /// Most registered exec-servers. When full, a newcomer takes the place
    /// of the oldest registration (one that never carried a session first)
    /// of the source address holding the most; keys on --allowed-servers
    /// have room reserved and are never displaced.
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
    /// Worker threads of the relay's runtime (default: one per core). On a
    /// small machine shared with busy processes, one worker forwards a byte
    /// for about a quarter less CPU (it switches threads a third as often)
    /// but uses at most one core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// Most open connections (lowered to fit the descriptor limit).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Most open connections from one source address (an IPv6 /64) that
    /// have not carried an authenticated session (those count against
    /// --max-connections only).
    #[arg(long, default_value_t = 256)]
    max_connections_per_source: usize,
    /// Seconds a new connection has to send the HTTP/2 preface (with TLS:
    /// to finish the TLS handshake and send the preface through it).
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
    /// Most registrations from one source address; beyond it, a newcomer
    /// takes the place of that address's oldest registration (one that
    /// never carried a session first).
    #[arg(long, default_value_t = 64)]
    max_registrations_per_source: usize,
    /// Registration attempts per second one source address may start
    /// (sustained; bursts of 4 times as many).
    #[arg(long, default_value_t = 5.0)]
    registration_rate: f64,
    /// KiB one direction of a session may have queued in the relay.
    #[arg(long, default_value_t = 128)]
    session_buffer_kib: usize,
    /// KiB of credit each session gets at least for its frames toward the
    /// client, from an exec-server that asks for it (one farther away gets
    /// a round trip of its link at 400 MiB/s, up to 16 MiB), while the
    /// credit pool has room: the most such a session whose client stopped
    /// reading holds here. 0: no credit (sessions are bounded by HTTP/2's
    /// 1 MiB stream window instead); otherwise at least 64 (one frame of
    /// the largest payload).
    #[arg(long, default_value_t = relay::config::DEFAULT_SESSION_CREDIT / 1024,
          value_parser = credit_kib)]
    session_credit_kib: u32,
    /// KiB of credit all sessions together may hold beyond 64 KiB each:
    /// however many stall, the relay holds at most 64 KiB of each and this
    /// pool. A window is cut to what the pool has left (0: every session
    /// gets 64 KiB); an exec-server far from the relay moves a session's
    /// output at about its window per round trip, so give such a relay a
    /// pool of a few windows.
    #[arg(long, default_value_t = relay::config::DEFAULT_CREDIT_POOL / 1024,
          value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    credit_pool_kib: u64,
    /// MiB all sessions together may have queued in the relay (each
    /// direction may always hold one frame beyond it).
    #[arg(long, default_value_t = 256)]
    max_buffered_mib: usize,
    /// Serve TLS with this certificate chain (PEM, the relay's own
    /// certificate first); needs --tls-key. The listener then serves only
    /// TLS: dial it with https://.
    #[arg(long, env = "REX_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "REX_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Join a fleet of relays through its directory: etcd v3 endpoints
    /// (http:// or https://, comma-separated). The relay writes an entry
    /// for each exec-server registered with it (under a lease it keeps
    /// alive: its entries vanish within --directory-ttl-secs of its death)
    /// and keeps a watched copy of everyone's entries.
    #[arg(
        long,
        env = "REX_RELAY_DIRECTORY",
        value_name = "URL,...",
        value_delimiter = ','
    )]
    directory: Vec<String>,
    /// The prefix of the directory's keys (entries are under
    /// PREFIX/servers/).
    #[arg(long, env = "REX_RELAY_DIRECTORY_PREFIX", default_value = relay::directory::DEFAULT_PREFIX, requires = "directory")]
    directory_prefix: String,
    /// Seconds the relay's directory lease lives without a keep-alive
    /// (renewed every third of it).
    #[arg(long, env = "REX_RELAY_DIRECTORY_TTL_SECS", default_value_t = relay::directory::DEFAULT_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(2..=300), requires = "directory")]
    directory_ttl_secs: u64,
    /// For https:// directory endpoints: trust only the CA certificates in
    /// FILE (PEM) [default: the system's].
    #[arg(
        long,
        env = "REX_RELAY_DIRECTORY_CA",
        value_name = "FILE",
        requires = "directory"
    )]
    directory_ca: Option<PathBuf>,
    /// The fleet's shared key (a file `relay fleet-key` makes, mode 0600):
    /// the relay proves with it that it is a member when it forwards a
    /// session, and takes forwarded sessions only with a proof made with
    /// it. Needed with --directory.
    #[arg(long, env = "REX_RELAY_FLEET_KEY", value_name = "FILE")]
    fleet_key: Option<PathBuf>,
    /// For peer relays dialled with https://: trust only the CA
    /// certificates in FILE (PEM) [default: the system's].
    #[arg(
        long,
        env = "REX_RELAY_FLEET_CA",
        value_name = "FILE",
        requires = "fleet_key"
    )]
    fleet_ca: Option<PathBuf>,
    /// Most sessions forwarded to other relays of the fleet at once.
    #[arg(long, default_value_t = relay::config::DEFAULT_MAX_FORWARDED, requires = "fleet_key")]
    max_forwarded: usize,
    /// The URL other relays of the fleet dial to reach this one [default:
    /// http(s)://<--listen>, when that is not an unspecified address].
    #[arg(
        long,
        env = "REX_RELAY_ADVERTISE",
        value_name = "URL",
        requires = "directory"
    )]
    advertise: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running relay whether it is serving (exit 0) or not (exit 1,
    /// with one line on stderr). Made for container healthchecks.
    Health {
        /// The relay to ask [default: this host's --listen address, with an
        /// unspecified IP taken as loopback; https:// when --tls-cert (or
        /// REX_TLS_CERT) is set].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// For an https:// URL: trust only the CA certificates in FILE
        /// (PEM) [default: the system's].
        #[arg(long, env = "REX_CA", value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Seconds the whole probe may take.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Make a fleet key in FILE (mode 0600; never overwritten): give the
    /// same file to every relay of the fleet (--fleet-key).
    FleetKey {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// If FILE already holds a fleet key, keep it and succeed (for
        /// start-up scripts).
        #[arg(long)]
        if_missing: bool,
    },
    /// Make a private CA and a TLS certificate for the relay, signed by
    /// it, in DIR: ca.pem (give it to clients and exec-servers: --ca
    /// ca.pem), ca.key, relay.pem and relay.key (for --tls-cert and
    /// --tls-key). Keys are written mode 0600 and nothing is overwritten;
    /// a CA already in DIR signs the new certificate, so several relays,
    /// or a renewed certificate (relay.pem and relay.key moved away
    /// first), keep one CA file.
    TlsInit {
        /// The directory (made, mode 0700, if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A host name or IP address clients dial the relay by
        /// (repeatable; at least one).
        #[arg(long = "name", value_name = "HOST", required = true)]
        names: Vec<String>,
        /// Days the relay's certificate is valid (the CA's: 10 years).
        #[arg(long, default_value_t = relay::certs::DEFAULT_DAYS)]
        days: u32,
        /// If DIR already has relay.pem and relay.key, keep them and
        /// succeed (for start-up scripts).
        #[arg(long)]
        if_missing: bool,
    },
}

fn main() -> ExitCode {
    let args = match lifecycle::config_file::parse::<Args>("config") {
        Ok(args) => args,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Some(Command::Health {
            url,
            ca,
            timeout_secs,
        }) => {
            let url = url.unwrap_or_else(|| local_url(args.listen, args.tls_cert.is_some()));
            return health(&url, ca.as_deref(), Duration::from_secs(timeout_secs));
        }
        Some(Command::TlsInit {
            dir,
            names,
            days,
            if_missing,
        }) => {
            let mut options = relay::certs::InitOptions::new(dir, names);
            options.days = days;
            options.if_missing = if_missing;
            return tls_init(options);
        }
        Some(Command::FleetKey { out, if_missing }) => return fleet_key(&out, if_missing),
        None => {}
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match proto::tls::ServerTls::from_files(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("relay: --tls-cert/--tls-key: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let (directory, fleet) =
        match directory_config(&args).and_then(|d| Ok((d, fleet_config(&args)?))) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("relay: {e}");
                return ExitCode::FAILURE;
            }
        };
    if directory.is_some() && fleet.is_none() {
        eprintln!(
            "relay: --directory needs --fleet-key (make one with `relay fleet-key --out FILE`)"
        );
        return ExitCode::FAILURE;
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
    let mut config = RelayConfig::default();
    config.connections = ConnLimits::new(
        max_connections,
        args.max_connections_per_source,
        Duration::from_secs(args.preface_timeout_secs),
    );
    config.startups = AdmissionLimits::new(args.max_startups, args.max_startups_per_source);
    config.first_frame_timeout = Duration::from_secs(args.first_frame_timeout_secs);
    config.registrations.allowed_servers = args.allowed_servers;
    config.registrations.per_connection = args.max_registrations_per_connection;
    config.registrations.per_source = args.max_registrations_per_source;
    config.registrations.rate_per_source = args.registration_rate;
    config.registrations.burst_per_source = args.registration_rate * 4.0;
    config.session_buffer = args.session_buffer_kib.saturating_mul(1024);
    config.max_buffered = args.max_buffered_mib.saturating_mul(1024 * 1024);
    config.session_credit = args.session_credit_kib.saturating_mul(1024);
    config.credit_pool = args.credit_pool_kib.saturating_mul(1024);
    config.listen = args.listen;
    config.max_registrations = args.max_registrations;
    config.max_sessions_per_server = args.max_sessions_per_server;
    config.idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    config.handshake_timeout = Duration::from_secs(args.handshake_timeout_secs);
    config.accept_timeout = Duration::from_secs(args.handshake_timeout_secs);
    config.hop_headers = !args.no_hop_headers;
    config.tls = tls;
    config.directory = directory;
    config.fleet = fleet;
    let runtime = match lifecycle::runtime::build(args.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP client lives on the runtime: set telemetry up inside it.
    let entered = runtime.enter();
    let telemetry = telemetry::setup::init("relay", telemetry::setup::LogDefault::Info, options);
    tracing::info!(workers = runtime.metrics().num_workers(), "relay starting");
    let code = runtime.block_on(async move {
        let signals = lifecycle::Tasks::new();
        let shutdown = lifecycle::signals::stop_on_signals(&signals);
        let listener = match relay::bind(config.listen, relay::BIND_WAIT, &shutdown).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("relay: {e}");
                return ExitCode::FAILURE;
            }
        };
        if config.tls.is_some() {
            eprintln!("relay: serving TLS only (dial https://)");
        }
        let mut config = config;
        match listener.local_addr() {
            Ok(addr) => {
                eprintln!("relay: listening on {addr}");
                if let Some(d) = config.directory.as_mut()
                    && d.advertise.is_empty()
                {
                    d.advertise = local_url(addr, config.tls.is_some());
                }
            }
            Err(e) => eprintln!("relay: listening (address unknown: {e})"),
        }
        if let Some(d) = &config.directory {
            if d.advertise.is_empty() {
                eprintln!("relay: --directory: the address bound is unknown: set --advertise URL");
                return ExitCode::FAILURE;
            }
            eprintln!("relay: in the fleet's directory as {}", d.advertise);
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

/// `--session-credit-kib`: 0, or room for a frame of the largest payload
/// (64 KiB) up to 1 GiB.
fn credit_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{e}"))?;
    let min = proto::routing::MIN_CREDIT_WINDOW.div_ceil(1024);
    if kib == 0 || (min..=1 << 20).contains(&kib) {
        Ok(kib)
    } else {
        Err(format!("0 (no credit) or {min} to {} KiB", 1 << 20))
    }
}

/// The directory settings from the flags (`None` without --directory).
fn directory_config(args: &Args) -> Result<Option<DirectoryConfig>, String> {
    if args.directory.is_empty() {
        return Ok(None);
    }
    // Without --advertise: the address bound (known once bound, for a
    // port 0), filled in by `main`.
    let advertise = match &args.advertise {
        Some(url) if !relay::directory::entry::is_relay_url(url) => {
            return Err(format!(
                "--advertise: {url:?} is not an http:// or https:// URL"
            ));
        }
        Some(url) => url.clone(),
        None if args.listen.ip().is_unspecified() => {
            return Err(format!(
                "--directory: other relays cannot dial {} (an unspecified address): set --advertise URL",
                args.listen
            ));
        }
        None => String::new(),
    };
    let ca = match &args.directory_ca {
        Some(path) => proto::tls::TlsSettings::from_ca_file(path)
            .map_err(|e| format!("--directory-ca: {e}"))?,
        None => proto::tls::TlsSettings::default(),
    };
    let endpoints = args
        .directory
        .iter()
        .map(|e| {
            if e.contains("://") {
                e.clone()
            } else {
                format!("http://{e}")
            }
        })
        .collect();
    let mut config = DirectoryConfig::new(endpoints, advertise);
    config.prefix = args.directory_prefix.clone();
    config.ttl = Duration::from_secs(args.directory_ttl_secs);
    config.tls = ca;
    Ok(Some(config))
}

/// The fleet settings from the flags (`None` without --fleet-key).
fn fleet_config(args: &Args) -> Result<Option<FleetConfig>, String> {
    let Some(path) = &args.fleet_key else {
        return Ok(None);
    };
    let fleet = relay::fleet::Fleet::from_file(path).map_err(|e| format!("--fleet-key: {e}"))?;
    let peer_tls = match &args.fleet_ca {
        Some(path) => {
            proto::tls::TlsSettings::from_ca_file(path).map_err(|e| format!("--fleet-ca: {e}"))?
        }
        None => proto::tls::TlsSettings::default(),
    };
    let mut config = FleetConfig::new(std::sync::Arc::new(fleet));
    config.peer_tls = peer_tls;
    config.max_forwarded = args.max_forwarded;
    Ok(Some(config))
}

fn fleet_key(out: &std::path::Path, if_missing: bool) -> ExitCode {
    if if_missing && out.exists() {
        // Kept only if it is one: a file that is not fails here, not at
        // the relay's start.
        return match relay::fleet::Fleet::from_file(out) {
            Ok(_) => {
                println!("{}: a fleet key is already there; kept", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relay: fleet-key: {}: {e}", out.display());
                ExitCode::FAILURE
            }
        };
    }
    let written = proto::keys::StaticKeypair::generate().and_then(|k| k.write_file(out));
    match written {
        Ok(()) => {
            println!(
                "{}: a fleet key; give this file to every relay of the fleet (--fleet-key)",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relay: fleet-key: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The URL that reaches a relay listening on `listen` from the same host.
fn local_url(listen: SocketAddr, tls: bool) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

fn tls_init(options: relay::certs::InitOptions) -> ExitCode {
    let dir = options.dir.display().to_string();
    match relay::certs::init(&options) {
        Ok(relay::certs::Outcome::Kept) => {
            println!("{dir}: relay.pem and relay.key are there already; kept");
            ExitCode::SUCCESS
        }
        Ok(relay::certs::Outcome::Made { new_ca }) => {
            let ca = if new_ca {
                "a new CA (ca.pem, ca.key)"
            } else {
                "the CA already there"
            };
            println!(
                "{dir}: relay.pem and relay.key for {}, signed by {ca}",
                options.names.join(", ")
            );
            println!(
                "  relay:                    --tls-cert {dir}/relay.pem --tls-key {dir}/relay.key"
            );
            println!("  clients and exec-servers: --ca {dir}/ca.pem (and https:// relay URLs)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relay: tls-init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health(url: &str, ca: Option<&std::path::Path>, timeout: Duration) -> ExitCode {
    let tls = match ca.map(proto::tls::TlsSettings::from_ca_file).transpose() {
        Ok(tls) => tls.unwrap_or_default(),
        Err(e) => {
            eprintln!("relay: --ca: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    match runtime.block_on(proto::health::check(
        url,
        proto::health::RELAY,
        timeout,
        &tls,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {url} is not healthy: {e}");
            ExitCode::FAILURE
        }
    }
}
