//! `exec-server`: runs commands for authorized clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use exec_server::ExecServerConfig;
use exec_server::keys::LiveKeys;
use proto::keys::StaticKeypair;

/// Runs commands for authorized clients, reached through a relay (it dials
/// out, so it needs no open port) or directly.
#[derive(Debug, Parser)]
#[command(
    name = "exec-server",
    version,
    args_conflicts_with_subcommands = true,
    after_help = telemetry::setup::EXPORT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new static private key (mode 0600) and print its public key,
    /// which is also written beside it, to FILE.pub (as ssh-keygen does).
    Keygen {
        /// Where to write the private key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key and server id for a private key file.
    Pubkey {
        /// The private key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Ask each relay whether this exec-server is registered there: exit 0
    /// when it is at every one (with --fleet: at one of them), else exit 1
    /// with one line on stderr per relay it is not at. Made for container
    /// healthchecks: it reads the same --relay, --fleet and --key (or
    /// REX_RELAY, REX_RELAY_FLEET and REX_KEY) as the server.
    Health {
        /// The relays the exec-server registers with (repeat it, or a
        /// comma-separated list).
        #[arg(long, env = "REX_RELAY", value_delimiter = ',', required = true)]
        relay: Vec<String>,
        /// The relays are one fleet: healthy when registered at one.
        #[arg(long, env = "REX_RELAY_FLEET")]
        fleet: bool,
        /// For an https:// relay: trust only the CA certificates in FILE
        /// (PEM) [default: the system's].
        #[arg(long, env = "REX_CA", value_name = "FILE")]
        ca: Option<PathBuf>,
        /// The exec-server's private key file (only its public half is used,
        /// to name the exec-server).
        #[arg(long, env = "REX_KEY")]
        key: PathBuf,
        /// Seconds the whole probe may take.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
}

#[derive(Debug, ClapArgs)]
struct RunArgs {
    /// Relay to register with, written as core-client's --relay is:
    /// http://HOST:PORT (plain HTTP/2), https://HOST:PORT (TLS; never
    /// downgraded to plain), HOST:PORT, HOST (port 7600) or [IPV6]:PORT (a
    /// bare address means plain HTTP/2 on loopback and private addresses
    /// and TLS elsewhere). Repeat it (or give a comma-separated list) to
    /// register with several: each registration is kept alive on its own,
    /// and clients reach the exec-server through any of them. An address
    /// that cannot be one is refused at start (exit 2).
    #[arg(long, env = "REX_RELAY", value_delimiter = ',')]
    relay: Vec<String>,
    /// The --relay list is one fleet of relays sharing a directory (`relay
    /// --directory`), any of which reaches the others: hold one
    /// registration, at the first relay of the list that accepts it, and
    /// move on down the list when it is lost (a relay going down costs
    /// commands in flight a pause, not their run).
    #[arg(long, env = "REX_RELAY_FLEET")]
    fleet: bool,
    /// For an https:// relay: trust only the CA certificates in FILE (PEM,
    /// e.g. the ca.pem of `relay tls-init`) [default: the system's].
    #[arg(long, env = "REX_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The exec-server's private key file (from `exec-server keygen`).
    #[arg(long, env = "REX_KEY")]
    key: Option<PathBuf>,
    /// File listing the client public keys allowed in (one per line, #
    /// comments, optional options before the key: from="CIDR,...", no-env,
    /// env-allow="NAME,..."). Re-read when it changes (checked at each
    /// handshake) and on SIGHUP; sessions of a removed key are closed.
    #[arg(long, env = "REX_AUTHORIZED_KEYS")]
    authorized_keys: Option<PathBuf>,
    /// Also accept clients directly on this address (same tunnel protocol).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// With --listen: serve TLS with this certificate chain (PEM, its own
    /// certificate first; needs --tls-key). The listener then serves only
    /// TLS: clients dial it with --direct https://.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most concurrent sessions.
    #[arg(long, default_value_t = 1024)]
    max_sessions: usize,
    /// Most concurrent processes per session.
    #[arg(long, default_value_t = 256)]
    max_processes: usize,
    /// Working directory for commands that do not name one.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Keep a record of every process in DIR/metadata.sqlite3 [default:
    /// the user data dir's rex/]
    #[arg(long, env = "REX_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep no process records.
    #[arg(long, conflicts_with = "data_dir")]
    no_records: bool,
    /// With --listen: most open direct connections (lowered to fit the
    /// descriptor limit, which is raised to its hard limit at start).
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// With --listen: direct sessions whose handshake has not authenticated,
    /// START:RATE:FULL (refused at random from START, RATE% rising to 100%
    /// at FULL) or one hard number; a --max-sessions slot is taken only
    /// once message 1 has authenticated.
    #[arg(long, default_value_t = exec_server::config::DEFAULT_STARTUPS, value_name = "START:RATE:FULL")]
    max_startups: proto::admission::Startups,
    /// With --listen: most unauthenticated direct sessions from one source
    /// address (connections per source: 8 times as many, counting only
    /// connections that have not carried an authenticated session).
    #[arg(long, default_value_t = 16)]
    max_startups_per_source: usize,
    /// Do not run each command in a cgroup v2 of its own. By default, where
    /// the exec-server's cgroup is writable (root, or delegated), every
    /// command gets one, killed when the command ends and when the
    /// exec-server dies, so that even descendants that leave the process
    /// group (setsid) end with it; elsewhere the process group is the
    /// containment, as with this option.
    #[arg(long, env = "REX_NO_CGROUPS")]
    no_cgroups: bool,
    /// Also pass this variable of the exec-server's own environment to
    /// every command (a name, or a prefix ending in *; repeat it or give a
    /// comma-separated list). Commands get only PATH, HOME, USER, LOGNAME,
    /// SHELL, LANG, LANGUAGE, LC_*, TERM, TZ and TMPDIR of it by default,
    /// never REX_* or OTEL_*, plus what the request sets.
    #[arg(long, env = "REX_PASS_ENV", value_delimiter = ',', value_name = "NAME")]
    pass_env: Vec<String>,
    /// Do not send each command's stage timings and this host's name to
    /// the client with its final event (a client with no collector then
    /// sees only its own side of the command's trace).
    #[arg(long)]
    no_call_timings: bool,
    /// Do not take clients' own spans through their sessions to export
    /// them with this exec-server's (only offered when it exports over
    /// OTLP; clients with no collector of their own then keep their spans
    /// in their local trace files).
    #[arg(long, env = "REX_NO_SPAN_FORWARDING")]
    no_span_forwarding: bool,
    /// Run commands with pipes only: refuse every request for a
    /// pseudo-terminal (`core-client exec -t`) with a clear error.
    #[arg(long)]
    no_tty: bool,
    /// How long a client may be silent before its session's link is taken
    /// for broken (a vanished laptop, a black-holed path): it is asked
    /// after a quarter of this, and a live client answers; then the resume
    /// grace begins. At least 1s.
    #[arg(long, env = "REX_IDLE_TIMEOUT", default_value = "120s", value_parser = lifecycle::durations::parse, value_name = "DURATION")]
    idle_timeout: Duration,
    /// How long a session whose link broke (a relay restart, a network
    /// blip) keeps its commands running for its client to come back and
    /// resume it with nothing lost; 0: commands end with their link.
    #[arg(long, env = "REX_RESUME_GRACE", default_value = "60s", value_parser = lifecycle::durations::parse, value_name = "DURATION")]
    resume_grace: Duration,
    /// How far a client's clock may be from this host's (a handshake
    /// stamped further away is refused), and how long after this
    /// exec-server starts a client's first call is sent again after the
    /// handshake rather than run from its first message (replays of what
    /// an earlier run accepted are refused only once they are this old).
    #[arg(long, env = "REX_REPLAY_WINDOW", default_value = "120s", value_parser = lifecycle::durations::parse, value_name = "DURATION")]
    replay_window: Duration,
    /// Per command, the output kept until the client has it (what a
    /// resume sends again), in bytes; a command that writes more waits, as
    /// with a slow reader. Also each command's output window.
    #[arg(long, default_value_t = exec_server::config::DEFAULT_RESUME_BUFFER, value_parser = clap::value_parser!(u32).range(65536..), value_name = "BYTES")]
    resume_buffer: u32,
    /// While a session's link is down, the output kept for it in all, in
    /// bytes (what its commands wrote and its client has not had); once
    /// reached, its commands wait on their output until the client is
    /// back (nothing is dropped). 32 MiB: eight commands' --resume-buffer.
    #[arg(long, default_value_t = exec_server::config::DEFAULT_RESUME_SESSION_BUFFER, value_parser = clap::value_parser!(u64).range(65536..), value_name = "BYTES")]
    resume_session_buffer: u64,
    /// While links are down, the output kept for all such sessions
    /// together, in bytes; once reached, their commands wait likewise.
    #[arg(long, default_value_t = exec_server::config::DEFAULT_RESUME_TOTAL_BUFFER, value_parser = clap::value_parser!(u64).range(65536..), value_name = "BYTES")]
    resume_total_buffer: u64,
    /// Output the exec-server holds that its clients have not yet
    /// acknowledged, for all sessions together, in bytes; a command whose
    /// next read does not fit waits on its output (as with a slow reader),
    /// so clients that stop reading cannot grow the exec-server. A command
    /// may always hold a quarter of its output window and one 64 KiB read
    /// (what its client takes before it acknowledges). 256 MiB.
    #[arg(long, default_value_t = exec_server::unacked::DEFAULT_TOTAL, value_parser = clap::value_parser!(u64).range(65536..), value_name = "BYTES")]
    max_unacked_output: u64,
    /// The same, for the sessions of one client key. 64 MiB.
    #[arg(long, default_value_t = exec_server::unacked::DEFAULT_PER_KEY, value_parser = clap::value_parser!(u64).range(65536..), value_name = "BYTES")]
    max_unacked_output_per_key: u64,
    /// The widest a command's output window grows when its client asks,
    /// in bytes (it starts at --resume-buffer; a client far away widens it
    /// toward what its path carries in a round trip). 32 MiB.
    #[arg(long, default_value_t = exec_server::config::DEFAULT_OUTPUT_WINDOW_MAX, value_parser = clap::value_parser!(u32).range(65_536..=1_073_741_824), value_name = "BYTES")]
    output_window_max: u32,
    /// The widest a command's stdin window grows, in bytes. It starts at
    /// 256 KiB and grows toward what the path carries in a round trip
    /// (measured by the session), so uploads run at the path's speed far
    /// away; at most this much of a command's stdin is in flight. 16 MiB;
    /// 262144 keeps it fixed.
    #[arg(long, default_value_t = exec_server::config::DEFAULT_STDIN_WINDOW_MAX, value_parser = clap::value_parser!(u32).range(262_144..=1_073_741_824), value_name = "BYTES")]
    stdin_window_max: u32,
    /// What stdin windows may hold beyond their first 256 KiB, for all
    /// commands together, in bytes; a window that would pass it grows no
    /// further (the command's upload is slower, never refused). 256 MiB.
    #[arg(long, default_value_t = proto::session::STDIN_BUDGET, value_parser = clap::value_parser!(u64).range(0..), value_name = "BYTES")]
    max_stdin_buffer: u64,
    /// Worker threads of the exec-server's runtime (default: one per core).
    /// On a small machine, one worker moves a command's output for less CPU
    /// (fewer thread switches) but serves all sessions on at most one core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keygen { out }) => keygen(&out),
        Some(Command::Pubkey { key }) => match StaticKeypair::read_file(&key) {
            Ok(kp) => {
                println!("{}", kp.public());
                eprintln!("server id: {}", kp.public().server_id());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Some(Command::Health {
            relay,
            fleet,
            ca,
            key,
            timeout_secs,
        }) => health(
            &relay,
            fleet,
            ca.as_deref(),
            &key,
            Duration::from_secs(timeout_secs),
        ),
        None => serve(cli.run),
    }
}

/// The roots for an https:// relay: `--ca`'s, else the system's.
fn relay_tls(ca: Option<&std::path::Path>) -> Result<proto::tls::TlsSettings, String> {
    match ca {
        Some(path) => proto::tls::TlsSettings::from_ca_file(path).map_err(|e| format!("--ca: {e}")),
        None => Ok(proto::tls::TlsSettings::system()),
    }
}

fn health(
    relays: &[String],
    fleet: bool,
    ca: Option<&std::path::Path>,
    key: &std::path::Path,
    timeout: Duration,
) -> ExitCode {
    let relays = match relay_urls(relays) {
        Ok(urls) => urls,
        Err(e) => return usage(&e),
    };
    let id = match StaticKeypair::read_file(key) {
        Ok(kp) => kp.public().server_id(),
        Err(e) => return fail(&e.to_string()),
    };
    let tls = match relay_tls(ca) {
        Ok(tls) => tls,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start runtime: {e}")),
    };
    let mut missing = Vec::new();
    for relay in &relays {
        if let Err(e) = runtime.block_on(proto::health::check(relay, &id, timeout, &tls)) {
            missing.push(format!("exec-server: server id {id} at {relay}: {e}"));
        }
    }
    // A fleet's exec-server is registered at one relay of it at a time.
    let healthy = if fleet {
        missing.len() < relays.len()
    } else {
        missing.is_empty()
    };
    if !healthy {
        for line in &missing {
            eprintln!("{line}");
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("exec-server: {msg}");
    ExitCode::FAILURE
}

/// A usage error: one line, exit 2.
fn usage(msg: &str) -> ExitCode {
    eprintln!("exec-server: {msg}");
    ExitCode::from(2)
}

/// The relays' URLs, each address read as core-client reads its --relay.
fn relay_urls(typed: &[String]) -> Result<Vec<String>, String> {
    typed
        .iter()
        .map(|t| {
            proto::address::RelayAddress::parse(t)
                .map(|a| a.url().to_owned())
                .map_err(|e| format!("--relay: {e}"))
        })
        .collect()
}

fn keygen(out: &std::path::Path) -> ExitCode {
    match StaticKeypair::generate_to_file(out) {
        Ok(kp) => {
            println!("{}", kp.public());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn serve(args: RunArgs) -> ExitCode {
    // A misconfigured export is reported before anything else is done.
    let options = match telemetry::setup::Options::service() {
        Ok(options) => options,
        Err(e) => return fail(&e.to_string()),
    };
    let relays = match relay_urls(&args.relay) {
        Ok(urls) => urls,
        Err(e) => return usage(&e),
    };
    let Some(key_path) = args.key else {
        return fail("--key FILE is required (create one with `exec-server keygen --out FILE`)");
    };
    let Some(ak_path) = args.authorized_keys else {
        return fail("--authorized-keys FILE is required (one client public key per line)");
    };
    let key = match StaticKeypair::read_file(&key_path) {
        Ok(k) => k,
        Err(e) => return fail(&e.to_string()),
    };
    let keys = match LiveKeys::open(&ak_path) {
        Ok(a) => a,
        Err(e) => return fail(&e.to_string()),
    };
    if keys.snapshot().is_empty() {
        eprintln!(
            "exec-server: warning: {} lists no keys; every client will be refused",
            ak_path.display()
        );
    }
    let mut config = ExecServerConfig::with_keys(key, std::sync::Arc::clone(&keys));
    config.relay_tls = match relay_tls(args.ca.as_deref()) {
        Ok(tls) => tls,
        Err(e) => return fail(&e),
    };
    config.listen_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match proto::tls::ServerTls::from_files(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => return fail(&format!("--tls-cert/--tls-key: {e}")),
        },
        _ => None,
    };
    if config.listen_tls.is_some() && args.listen.is_none() {
        return fail("--tls-cert and --tls-key are for --listen: give --listen ADDR too");
    }
    config.relays = relays;
    if args.fleet {
        config.relay_mode = exec_server::config::RelayMode::Fleet;
    }
    config.listen = args.listen;
    config.max_sessions = args.max_sessions;
    config.max_processes_per_session = args.max_processes;
    config.default_cwd = args.cwd;
    let max_connections = match lifecycle::limits::raise_nofile() {
        Ok(nofile) => lifecycle::limits::connections_within(nofile).min(args.max_connections),
        Err(_) => args.max_connections,
    };
    config.listen_limits.max_connections = max_connections;
    config.listen_limits.per_source = args.max_startups_per_source.saturating_mul(8);
    config.startups.startups = args.max_startups;
    config.startups.per_source = args.max_startups_per_source;
    config.cgroups = !args.no_cgroups;
    config.pass_env = match exec_server::environment::PassEnv::with_additions(&args.pass_env) {
        Ok(p) => p,
        Err(e) => return fail(&format!("--pass-env: {e}")),
    };
    config.call_timings = !args.no_call_timings;
    config.terminals = !args.no_tty;
    if args.idle_timeout < Duration::from_secs(1) {
        return fail("--idle-timeout: at least 1s");
    }
    config.idle_timeout = args.idle_timeout;
    config.resume_grace = args.resume_grace;
    if args.replay_window < Duration::from_secs(1) {
        return fail("--replay-window: at least 1s");
    }
    config.replay_window = args.replay_window;
    config.resume_buffer = args.resume_buffer;
    config.resume_session_buffer = args.resume_session_buffer;
    config.resume_total_buffer = args.resume_total_buffer;
    config.max_unacked_output = args.max_unacked_output;
    config.max_unacked_output_per_key = args.max_unacked_output_per_key;
    config.stdin_window_max = args.stdin_window_max;
    config.output_window_max = args.output_window_max;
    config.max_stdin_buffer = args.max_stdin_buffer;
    config.shutdown_grace = Duration::from_secs(10);
    // Process records are kept off the hot path; a store that cannot be
    // opened is reported once and the server runs without it.
    let data_dir = args
        .data_dir
        .or_else(metadata::location::default_dir)
        .filter(|_| !args.no_records);
    config.metadata = data_dir.and_then(|dir| {
        let mut writer = metadata::WriterConfig::default();
        writer.service = "exec-server";
        metadata::open(&dir, writer)
            .map_err(|e| eprintln!("exec-server: warning: {e}; process records are not kept"))
            .ok()
    });
    let records = config.metadata.clone();
    let runtime = match lifecycle::runtime::build(args.worker_threads) {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start runtime: {e}")),
    };
    // The OTLP client lives on the runtime: set telemetry up inside it.
    let entered = runtime.enter();
    let telemetry =
        telemetry::setup::init("exec-server", telemetry::setup::LogDefault::Info, options);
    if let telemetry::setup::Export::Otlp(target) = telemetry.export()
        && !args.no_span_forwarding
    {
        // A client's resource may not claim to be this service or the relay.
        let own = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .into_iter()
            .chain(["exec-server".to_owned(), "relay".to_owned()])
            .collect();
        // Forwarded spans leave on the schedule of the service's own.
        let mut limits = telemetry::forward::ForwardLimits::default();
        limits.linger = telemetry::provider::batch_delay();
        match telemetry::forward::Forwarder::start(target, limits, own) {
            Ok(f) => config.span_forwarding = Some(f),
            Err(e) => tracing::warn!("{e}; clients' spans are not taken"),
        }
    }
    tracing::info!(
        server_id = %config.key.public().server_id(),
        public_key = %config.key.public(),
        workers = runtime.metrics().num_workers(),
        "exec-server starting"
    );
    let forwarder = config.span_forwarding.clone();
    let code = runtime.block_on(async move {
        let signals = lifecycle::Tasks::new();
        // SIGHUP re-reads the authorized keys (and never terminates).
        let shutdown = lifecycle::signals::stop_and_reload_on_signals(&signals, move || {
            tracing::info!("SIGHUP received; re-reading the authorized keys");
            keys.reload();
        });
        let code = match exec_server::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        };
        // The clients' spans still waiting go before the service's own.
        if let Some(f) = forwarder
            && !f.shutdown(Duration::from_secs(3)).await
        {
            eprintln!("exec-server: warning: forwarded client spans were still exporting at exit");
        }
        code
    });
    // Flush the last records and spans (bounded) while the runtime runs.
    if let Some(records) = records
        && let Err(e) = records.shutdown(Duration::from_secs(3))
    {
        eprintln!("exec-server: warning: {e}");
    }
    telemetry.shutdown();
    drop(entered);
    code
}
