//! Many idle sessions and many concurrent execs through one relay process,
//! and the relay's memory per session.
//!
//! Each round starts a fresh relay process (so its RSS is the round's
//! alone) and an exec-server in this process registered with it, opens one
//! warm-up session and closes it, and reads the relay's RSS: the baseline.
//! It then opens `idle_sessions` sessions (one [`Client`] each: at the
//! relay, one TCP connection and HTTP/2 stream from the client, and one
//! stream on the exec-server's shared connection), lets them settle and
//! reads the RSS again: the growth per session is the round's value. Then `concurrent_execs` of those sessions each run a
//! command printing `output_bytes` at once, every output checked byte for
//! byte, while the relay's peak RSS is taken; then every session is closed
//! and the relay must report each one ended.

mod execs;
mod relay_proc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::keys::StaticKeypair;
use rex_client::{Client, ClientConfig, Target as Via};
use tokio::time::timeout;

use self::execs::{Numbers, run_execs};
use self::relay_proc::RelayProc;
use super::{Comparison, Series, Target, Unit};
use crate::bench::{OPEN_AT_ONCE, median, min_max, open_all};
use crate::stack::TestServer;

/// How long the relay is left alone before its RSS is read.
const SETTLE: Duration = Duration::from_secs(1);
/// The bound on the warm-up, the exec-server's start and stop, and closing.
const STEP_WITHIN: Duration = Duration::from_secs(60);

/// Settings of the `scale` scenario.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Rounds.
    pub rounds: usize,
    /// Idle sessions held through the relay at once.
    pub idle_sessions: usize,
    /// Execs run at once.
    pub concurrent_execs: usize,
    /// Output bytes of each exec.
    pub output_bytes: usize,
}

/// What one round measured (memory in KiB, as `/proc` gives it).
struct Round {
    baseline: u64,
    with_sessions: u64,
    peak: u64,
    /// Whether `peak` is the execs' alone (the kernel let the peak be reset).
    peak_of_execs: bool,
    after_close: u64,
    open: Duration,
    execs: Duration,
    close: Duration,
}

/// Runs the `scale` scenario.
pub async fn run(options: &ScaleOptions) -> Result<Comparison, String> {
    let sessions = options.idle_sessions.max(1);
    let execs = options.concurrent_execs.min(sessions);
    let fds = raise_fd_limit(sessions + 4 * execs + 256)?;
    // Build (or find up to date) the binaries before anything is timed.
    tokio::task::spawn_blocking(|| crate::binaries::path("relay"))
        .await
        .map_err(|e| format!("scale: building the relay: {e}"))?
        .map_err(|e| format!("scale: {e}"))?;
    let numbers = Arc::new(Numbers::new(options.output_bytes));
    let mut rounds = Vec::new();
    for round in 1..=options.rounds.max(1) {
        let r = one_round(sessions, execs, &numbers)
            .await
            .map_err(|e| format!("scale round {round}: {e}"))?;
        rounds.push(r);
    }
    let per_session =
        |r: &Round| r.with_sessions.saturating_sub(r.baseline) as f64 / sessions as f64;
    let mut ours = Series::new(format!("relay RSS growth, {sessions} idle sessions"));
    ours.values = rounds.iter().map(per_session).collect();
    let mib = |f: fn(&Round) -> u64| spread(&rounds, |r| f(r) as f64 / 1024.0);
    let secs = |f: fn(&Round) -> Duration| spread(&rounds, |r| f(r).as_secs_f64());
    let exec_mib = (execs * options.output_bytes) as f64 / (1024.0 * 1024.0);
    let mut notes = vec![
        format!(
            "{sessions} idle sessions (one client, so one TCP connection, each) and {execs} concurrent \
             execs of {} bytes each, every output byte-exact; a fresh relay process per round, \
             {} rounds",
            options.output_bytes,
            rounds.len()
        ),
        format!(
            "relay RSS in MiB, median (min–max): baseline {}; with the sessions open {}; peak \
             during the execs {}; after closing every session {} (the allocator keeps freed memory)",
            mib(|r| r.baseline),
            mib(|r| r.with_sessions),
            mib(|r| r.peak),
            mib(|r| r.after_close),
        ),
        format!(
            "seconds to open all sessions ({OPEN_AT_ONCE} at a time) {}; for all execs {} \
             ({exec_mib:.0} MiB in all); to close all sessions (at once) until the relay ended \
             them {}",
            secs(|r| r.open),
            secs(|r| r.execs),
            secs(|r| r.close),
        ),
    ];
    if rounds.iter().any(|r| !r.peak_of_execs) {
        notes.push(
            "the kernel refused to reset the relay's peak RSS: the peak given is its whole life's"
                .into(),
        );
    }
    if let Some(fds) = fds {
        notes.push(fds);
    }
    if execs < options.concurrent_execs {
        notes.push(format!(
            "execs capped at the {sessions} sessions (asked for {})",
            options.concurrent_execs
        ));
    }
    Ok(Comparison {
        id: "scale",
        unit: Unit::KibPerSession,
        ours,
        peer: None,
        target: Target::AtMost(64.0),
        notes,
    })
}

/// "median (min–max)" of `value` over the rounds.
fn spread(rounds: &[Round], value: impl Fn(&Round) -> f64) -> String {
    let values: Vec<f64> = rounds.iter().map(value).collect();
    let (lo, hi) = min_max(&values);
    format!("{:.2} ({lo:.2}–{hi:.2})", median(&values))
}

/// Raises this process's open-file soft limit to the hard one when it is
/// below `needed` (the relay inherits it); a note saying so, or an error
/// when even the hard limit is too low.
fn raise_fd_limit(needed: usize) -> Result<Option<String>, String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = needed as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("scale: reading the open-file limit: {e}"))?;
    if soft >= needed {
        return Ok(None);
    }
    if hard < needed {
        return Err(format!(
            "scale: needs about {needed} open files, the hard limit is {hard} (raise it, or use fewer --sessions)"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| format!("scale: raising the open-file limit to {hard}: {e}"))?;
    Ok(Some(format!(
        "open-file limit raised from {soft} to {hard}"
    )))
}

/// `step` bounded by `within`; an error naming `what` when it takes longer.
async fn bounded<T>(
    what: &str,
    within: Duration,
    step: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    timeout(within, step)
        .await
        .map_err(|_| format!("{what} took longer than {within:?}"))?
}

async fn one_round(sessions: usize, execs: usize, numbers: &Arc<Numbers>) -> Result<Round, String> {
    let mut relay = RelayProc::start().await?;
    let client_key = StaticKeypair::generate().map_err(|e| format!("client key: {e}"))?;
    let server = bounded("starting the exec-server", STEP_WITHIN, async {
        TestServer::start(Some(relay.url.clone()), false, &[&client_key])
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let config = ClientConfig::new(
        client_key,
        server.key.public(),
        Via::Relay(relay.url.clone()),
    );
    let measured = measure(&mut relay, &config, sessions, execs, numbers).await;
    server.shutdown.cancel();
    let stopped = bounded("stopping the exec-server", STEP_WITHIN, async {
        server.handle.join().await.map_err(|e| e.to_string())
    })
    .await;
    let round = measured?;
    stopped?;
    Ok(round)
}

async fn measure(
    relay: &mut RelayProc,
    config: &ClientConfig,
    sessions: usize,
    execs: usize,
    numbers: &Arc<Numbers>,
) -> Result<Round, String> {
    // Warm-up: one session opened, used and closed, so that what the
    // relay allocates once (runtime, registry, first connection) is in
    // the baseline.
    bounded("the warm-up session", STEP_WITHIN, async {
        let client = Client::new(config.clone());
        crate::bench::exec_true(&client).await?;
        client.close().await;
        Ok(())
    })
    .await?;
    relay.wait_sessions_ended(1, STEP_WITHIN).await?;
    tokio::time::sleep(SETTLE).await;
    let baseline = relay.status_kib("VmRSS")?;

    let clients: Vec<Client> = (0..sessions).map(|_| Client::new(config.clone())).collect();
    let started = Instant::now();
    let within = Duration::from_secs(30) + Duration::from_millis(50) * sessions as u32;
    bounded("opening the sessions", within, open_all(&clients)).await?;
    let open = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let with_sessions = relay.status_kib("VmRSS")?;

    let peak_reset = relay.reset_peak();
    let within = Duration::from_secs(30) + Duration::from_millis(500) * execs as u32;
    let started = Instant::now();
    bounded(
        "the concurrent execs",
        within,
        run_execs(&clients[..execs], numbers),
    )
    .await?;
    let exec_time = started.elapsed();
    // Without the reset, the peak of the relay's whole life: still at
    // least the peak of the execs.
    let peak = relay.status_kib("VmHWM")?;

    // All at once: a close can wait up to 2 s for the peer's end of the
    // stream (the client's bounded drain).
    let started = Instant::now();
    bounded("closing the sessions", STEP_WITHIN, async {
        futures::future::join_all(clients.iter().map(Client::close)).await;
        Ok(())
    })
    .await?;
    relay.wait_sessions_ended(1 + sessions, STEP_WITHIN).await?;
    let close = started.elapsed();
    let after_close = relay.status_kib("VmRSS")?;
    Ok(Round {
        baseline,
        with_sessions,
        peak,
        peak_of_execs: peak_reset,
        after_close,
        open,
        execs: exec_time,
        close,
    })
}
