//! The soak: honest clients running mixed commands for a while against a
//! relay and an exec-server (the built binaries), while the relay is
//! killed and started again, the exec-server's link is cut and its path
//! changed, and another loopback address floods the relay. Every command's
//! output is checked; what it counts (commands, bytes checked, losses,
//! resumes) and each process's resident memory over time make the
//! [`Report`].
//!
//! The exec-server reaches the relay through a link emulator, so that its
//! link can be cut (every connection reset or closed) and its path
//! changed while it runs. The clients are this process (one
//! [`rex_client::Client`] each, so one session each, resumed when its link
//! breaks), so its own memory is the clients'.
//!
//! Every loop is bounded: the clients stop at the deadline, each command
//! has a time bound, the flood holds a bounded number of connections and
//! opens.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use link_emulator::{Config as LinkConfig, CutKind, Emulator};
use proto::keys::{PublicKey, StaticKeypair};
use proto::pb::tunnel::Frame;
use proto::pb::tunnel::tunnel_client::TunnelClient;
use proto::routing::SERVER_ID_HEADER;
use rex_client::{
    Client, ClientConfig, Event, ExecFailure, ExecSpec, ExitStatus, Target, Terminal,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::binaries::{Proc, ProcStack};
use crate::memory::rss_kib;

/// What a soak does.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the clients run.
    pub duration: Duration,
    /// Honest clients running at once.
    pub clients: usize,
    /// Bytes of a bulk command's output (checked against its SHA-256).
    pub bulk_bytes: usize,
    /// Bytes a stdin command sends through `cat` and back.
    pub stdin_bytes: usize,
    /// Each client's pause between its commands.
    pub pause: Duration,
    /// The relay is killed (SIGKILL) and started again this often.
    pub relay_every: Duration,
    /// How long the relay stays down.
    pub relay_down: Duration,
    /// The exec-server's link is cut this often.
    pub cut_every: Duration,
    /// Resident memory is sampled this often.
    pub sample_every: Duration,
    /// Whether another loopback address (127.0.0.2) floods the relay.
    pub flood: bool,
}

impl Options {
    /// The soak of `minutes` with the defaults: 50 clients, 256 KiB bulk
    /// and stdin commands, a second between a client's commands, the relay
    /// killed every 5 minutes and down for half a second, the exec-server's
    /// link cut every minute, memory sampled every 10 s, and the flood on.
    pub fn minutes(minutes: u64) -> Self {
        Self {
            duration: Duration::from_secs(minutes * 60),
            clients: 50,
            bulk_bytes: 256 * 1024,
            stdin_bytes: 256 * 1024,
            pause: Duration::from_secs(1),
            relay_every: Duration::from_secs(300),
            relay_down: Duration::from_millis(500),
            cut_every: Duration::from_secs(60),
            sample_every: Duration::from_secs(10),
            flood: true,
        }
    }
}

/// The bound on one command: past it, it counts as lost.
const COMMAND_BOUND: Duration = Duration::from_secs(300);

/// Kinds of command, in the order a client takes them.
const KINDS: [Kind; 4] = [Kind::Short, Kind::Bulk, Kind::Interactive, Kind::Stdin];

/// A kind of command the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `echo` of a token, checked exactly.
    Short,
    /// Random bytes, checked against the SHA-256 the command computed of
    /// them.
    Bulk,
    /// A shell on a terminal, two lines typed and their answers awaited.
    Interactive,
    /// Random bytes through `cat` and back, checked exactly.
    Stdin,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Short => 0,
            Kind::Bulk => 1,
            Kind::Interactive => 2,
            Kind::Stdin => 3,
        }
    }

    /// The kind's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Bulk => "bulk",
            Kind::Interactive => "interactive",
            Kind::Stdin => "stdin",
        }
    }
}

/// Counters the clients share.
#[derive(Debug, Default)]
struct Tally {
    completed: [AtomicU64; 4],
    bytes_checked: AtomicU64,
    /// Commands that never started: their session could not be opened
    /// (the relay was down, or the exec-server not yet registered again).
    /// Tried again; nothing ran, so nothing was lost.
    not_started: AtomicU64,
    /// Commands that started and did not finish with exactly their output
    /// and exit status.
    lost: AtomicU64,
    /// Times calls' sessions came back over a new link (per call).
    call_resumes: AtomicU64,
    /// The first few losses, said.
    losses: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn lose(&self, kind: Kind, why: String) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        let mut losses = self
            .losses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if losses.len() < 20 {
            losses.push(format!("{}: {why}", kind.name()));
        }
    }
}

/// One process's resident memory over the run.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// The process's name.
    pub name: String,
    /// Samples: seconds since the start, the incarnation (a process
    /// started again begins a new one) and KiB resident.
    pub samples: Vec<(f64, u32, u64)>,
}

impl Memory {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            samples: Vec::new(),
        }
    }

    fn sample(&mut self, at: f64, incarnation: u32, pid: u32) {
        if let Some(kib) = rss_kib(pid) {
            self.samples.push((at, incarnation, kib));
        }
    }

    /// Samples taken `after` seconds or more into their incarnation's
    /// life (each start's warm-up left out).
    fn settled(&self, after: f64) -> Vec<(f64, u32, u64)> {
        let mut born = (u32::MAX, 0.0);
        let mut out = Vec::new();
        for &(t, inc, kib) in &self.samples {
            if inc != born.0 {
                born = (inc, if inc == 0 { 0.0 } else { t });
            }
            if t - born.1 >= after {
                out.push((t, inc, kib));
            }
        }
        out
    }

    /// The first and last settled samples' KiB (for a process started
    /// again, the first is from its first life, the last from its last).
    pub fn start_end(&self, after: f64) -> Option<(u64, u64)> {
        let s = self.settled(after);
        Some((s.first()?.2, s.last()?.2))
    }

    /// The highest sample, KiB.
    pub fn peak(&self) -> u64 {
        self.samples.iter().map(|s| s.2).max().unwrap_or(0)
    }

    /// Growth in KiB per hour: the least-squares slope of the settled
    /// samples, each incarnation about its own mean (a process started
    /// again starts afresh, so only growth within a settled life counts).
    pub fn growth_per_hour(&self, after: f64) -> Option<f64> {
        let s = self.settled(after);
        let mut incarnations: Vec<u32> = s.iter().map(|x| x.1).collect();
        incarnations.dedup();
        let (mut num, mut den) = (0.0, 0.0);
        for inc in incarnations {
            let life: Vec<(f64, f64)> = s
                .iter()
                .filter(|x| x.1 == inc)
                .map(|x| (x.0, x.2 as f64))
                .collect();
            if life.len() < 2 {
                continue;
            }
            let n = life.len() as f64;
            let (mt, mr) = (
                life.iter().map(|x| x.0).sum::<f64>() / n,
                life.iter().map(|x| x.1).sum::<f64>() / n,
            );
            for (t, r) in life {
                num += (t - mt) * (r - mr);
                den += (t - mt) * (t - mt);
            }
        }
        (den > 0.0).then(|| num / den * 3600.0)
    }
}

/// What a soak found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// How long the clients ran, seconds.
    pub seconds: f64,
    /// Commands completed and checked, per kind (in [`KINDS`] order).
    pub completed: [u64; 4],
    /// Output and stdin bytes checked.
    pub bytes_checked: u64,
    /// Commands that never started (no session: tried again).
    pub not_started: u64,
    /// Commands that started and did not end with exactly their output.
    pub lost: u64,
    /// The first losses, said.
    pub losses: Vec<String>,
    /// Sessions the exec-server resumed over a new link (its log).
    pub resumes: u64,
    /// Times a call's session came back while it ran (the calls' count).
    pub call_resumes: u64,
    /// Sessions the exec-server ended because their client did not come
    /// back within the grace (its log).
    pub expired: u64,
    /// Relay restarts.
    pub relay_restarts: u64,
    /// Cuts of the exec-server's link, and the connections they cut.
    pub cuts: u64,
    /// Connections those cuts cut.
    pub cut_connections: u64,
    /// The flood: connections opened and `Open`s sent from 127.0.0.2.
    pub flood_connections: u64,
    /// `Open`s the flood sent.
    pub flood_opens: u64,
    /// Memory of the relay, the exec-server and this process (the
    /// clients).
    pub memory: Vec<Memory>,
    /// Seconds of warm-up left out of the memory figures, at the start
    /// and after each restart.
    pub warm_up: f64,
}

impl Report {
    /// Commands completed, all kinds.
    pub fn total(&self) -> u64 {
        self.completed.iter().sum()
    }

    /// The report as lines of text.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            format!(
                "ran {:.0} s: {} commands completed and checked ({}), {} bytes checked",
                self.seconds,
                self.total(),
                KINDS
                    .iter()
                    .map(|k| format!("{} {}", self.completed[k.index()], k.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.bytes_checked
            ),
            format!(
                "lost: {} (commands that started and did not end with exactly their output); \
                 not started and tried again: {}",
                self.lost, self.not_started
            ),
            format!(
                "faults: {} relay restarts, {} cuts of the exec-server's link ({} connections), \
                 flood from 127.0.0.2: {} connections, {} opens",
                self.relay_restarts,
                self.cuts,
                self.cut_connections,
                self.flood_connections,
                self.flood_opens
            ),
            format!(
                "resumes: {} sessions resumed at the exec-server ({} call resumes seen by clients), \
                 {} sessions not resumed within the grace",
                self.resumes, self.call_resumes, self.expired
            ),
        ];
        for m in &self.memory {
            let (start, end) = m.start_end(self.warm_up).unwrap_or((0, 0));
            let growth = m
                .growth_per_hour(self.warm_up)
                .map_or("?".to_owned(), |g| format!("{:+.0} KiB/h", g));
            out.push(format!(
                "rss {}: {} KiB at {:.0} s, {} KiB at the end, peak {} KiB, growth {growth}",
                m.name,
                start,
                self.warm_up,
                end,
                m.peak()
            ));
        }
        for l in &self.losses {
            out.push(format!("loss: {l}"));
        }
        out
    }
}

/// Runs a soak; its report. Fails only when the processes cannot be set
/// up: what goes wrong with commands is counted in the report.
pub async fn run(options: Options) -> Result<Report, String> {
    let mut stack = ProcStack::start(&[]).map_err(|e| format!("starting the stack: {e}"))?;
    let relay_addr = stack.relay_addr().map_err(|e| e.to_string())?;
    let link = Emulator::start(LinkConfig::new(relay_addr))
        .map_err(|e| format!("starting the link emulator: {e}"))?;
    let via = link.url();
    stack
        .restart_server_via(&[&via], &[], 1)
        .map_err(|e| format!("the exec-server through the emulator: {e}"))?;
    let key = StaticKeypair::read_file(&stack.client_key).map_err(|e| e.to_string())?;
    let server: PublicKey = stack.server_pub.parse().map_err(|e| format!("{e}"))?;
    let mut config = ClientConfig::new(key, server, Target::Relay(stack.relay_url.clone()));
    config.resume = Some(rex_client::DEFAULT_RESUME);

    let stop = CancellationToken::new();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let deadline = started + options.duration;

    // The flood, until the clients are done.
    let flood_connections = Arc::new(AtomicU64::new(0));
    let flood_opens = Arc::new(AtomicU64::new(0));
    let mut flood = JoinSet::new();
    if options.flood {
        let attacker = IpAddr::from([127, 0, 0, 2]);
        flood.spawn(silent_connections(
            relay_addr,
            attacker,
            stop.clone(),
            Arc::clone(&flood_connections),
        ));
        flood.spawn(silent_opens(
            stack.relay_url.clone(),
            server.server_id(),
            attacker,
            stop.clone(),
            Arc::clone(&flood_opens),
        ));
    }

    let mut clients = JoinSet::new();
    for c in 0..options.clients {
        let client = Client::new(config.clone());
        clients.spawn(honest(
            c,
            client,
            options.clone(),
            deadline,
            Arc::clone(&tally),
        ));
    }

    // The faults and the samples, beside the clients (the stack's methods
    // block).
    let faults = {
        let options = options.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || faults(stack, link, &options, started, &stop))
    };
    while clients.join_next().await.is_some() {}
    stop.cancel();
    while flood.join_next().await.is_some() {}
    let mut report = faults.await.map_err(|e| e.to_string())??;
    report.seconds = started.elapsed().as_secs_f64();
    for (i, n) in report.completed.iter_mut().enumerate() {
        *n = tally.completed[i].load(Ordering::Relaxed);
    }
    report.bytes_checked = tally.bytes_checked.load(Ordering::Relaxed);
    report.not_started = tally.not_started.load(Ordering::Relaxed);
    report.lost = tally.lost.load(Ordering::Relaxed);
    report.call_resumes = tally.call_resumes.load(Ordering::Relaxed);
    report.losses = tally
        .losses
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    report.flood_connections = flood_connections.load(Ordering::Relaxed);
    report.flood_opens = flood_opens.load(Ordering::Relaxed);
    report.warm_up = (options.duration.as_secs_f64() * 0.2)
        .min(120.0)
        .min(options.relay_every.as_secs_f64() / 2.0);
    Ok(report)
}

/// Counts the exec-server's log lines that say what happened to sessions,
/// and drops the rest (the lines are read so that none pile up).
#[derive(Debug, Default)]
struct ServerLog {
    resumed: u64,
    expired: u64,
}

impl ServerLog {
    fn drain(&mut self, server: &Proc) {
        while let Ok(line) = server.stderr_lines.try_recv() {
            if line.contains("was resumed over a new link") {
                self.resumed += 1;
            } else if line.contains("not resumed within its grace") {
                self.expired += 1;
            }
        }
    }
}

/// Kills and restarts the relay, cuts the exec-server's link and changes
/// its path, and samples memory, until `stop`; the counts so far.
fn faults(
    mut stack: ProcStack,
    link: Emulator,
    options: &Options,
    started: Instant,
    stop: &CancellationToken,
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut log = ServerLog::default();
    let mut relay_memory = Memory::new("relay");
    let mut server_memory = Memory::new("exec-server");
    let mut client_memory = Memory::new("clients (the driver)");
    let mut relay_life = 0u32;
    let (mut next_sample, mut next_relay, mut next_cut) =
        (Duration::ZERO, options.relay_every, options.cut_every / 2);
    let mut cut_kind = CutKind::Reset;
    let mut slow = false;
    let mut last_said = Duration::ZERO;
    while !stop.is_cancelled() {
        let now = started.elapsed();
        log.drain(&stack.server);
        while stack.relay.stderr_lines.try_recv().is_ok() {}
        if now >= next_sample {
            let t = now.as_secs_f64();
            relay_memory.sample(t, relay_life, stack.relay.child.id());
            server_memory.sample(t, 0, stack.server.child.id());
            client_memory.sample(t, 0, std::process::id());
            next_sample = now + options.sample_every;
            if now >= last_said + Duration::from_secs(60) {
                last_said = now;
                eprintln!(
                    "soak: {:.0} s: rss relay {} KiB, exec-server {} KiB, clients {} KiB; \
                     {} resumes, {} relay restarts, {} cuts",
                    t,
                    relay_memory.samples.last().map_or(0, |s| s.2),
                    server_memory.samples.last().map_or(0, |s| s.2),
                    client_memory.samples.last().map_or(0, |s| s.2),
                    log.resumed,
                    report.relay_restarts,
                    report.cuts,
                );
            }
        }
        if now >= next_relay {
            stack.kill_relay();
            std::thread::sleep(options.relay_down);
            // Bounded tries: the address is the relay's own, free again at
            // once on loopback.
            let mut tries = 0;
            loop {
                match stack.start_relay_again() {
                    Ok(()) => break,
                    Err(e) if tries < 10 => {
                        tries += 1;
                        eprintln!("soak: the relay did not start again ({e}); trying again");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Err(e) => return Err(format!("the relay did not start again: {e}")),
                }
            }
            relay_life += 1;
            report.relay_restarts += 1;
            next_relay = started.elapsed() + options.relay_every;
        }
        if now >= next_cut {
            report.cut_connections += link.cut_all(cut_kind) as u64;
            report.cuts += 1;
            cut_kind = match cut_kind {
                CutKind::Reset => CutKind::Close,
                CutKind::Close => CutKind::Reset,
            };
            // The path changes too: 40 ms round trips, then loopback again.
            slow = !slow;
            link.set_rtt(if slow {
                Duration::from_millis(40)
            } else {
                Duration::ZERO
            });
            next_cut = now + options.cut_every;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    log.drain(&stack.server);
    report.resumes = log.resumed;
    report.expired = log.expired;
    report.memory = vec![relay_memory, server_memory, client_memory];
    drop(link);
    drop(stack);
    Ok(report)
}

/// One honest client: commands of each kind in turn, each checked, until
/// `deadline`.
async fn honest(
    index: usize,
    client: Client,
    options: Options,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let mut i = index;
    let mut n = 0u64;
    while Instant::now() < deadline {
        let kind = KINDS[i % KINDS.len()];
        i += 1;
        n += 1;
        let token = format!("c{index}-{n}");
        let outcome =
            tokio::time::timeout(COMMAND_BOUND, command(&client, kind, &token, &options)).await;
        match outcome {
            Ok(Outcome::Checked { bytes, resumes }) => {
                tally.completed[kind.index()].fetch_add(1, Ordering::Relaxed);
                tally.bytes_checked.fetch_add(bytes, Ordering::Relaxed);
                tally
                    .call_resumes
                    .fetch_add(u64::from(resumes), Ordering::Relaxed);
            }
            Ok(Outcome::NotStarted) => {
                tally.not_started.fetch_add(1, Ordering::Relaxed);
                // The relay is down or the exec-server not back yet.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(Outcome::Wrong(why)) => tally.lose(kind, why),
            Err(_) => tally.lose(kind, format!("not done within {COMMAND_BOUND:?}")),
        }
        tokio::time::sleep(options.pause).await;
    }
    client.close().await;
}

/// How one command went.
enum Outcome {
    /// Its output and exit were exactly right.
    Checked { bytes: u64, resumes: u32 },
    /// It never started (no session).
    NotStarted,
    /// It started and went wrong.
    Wrong(String),
}

/// Random bytes.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::Rng::fill(&mut rand::rng(), v.as_mut_slice());
    v
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Runs one command of `kind` on `client` and checks it.
async fn command(client: &Client, kind: Kind, token: &str, options: &Options) -> Outcome {
    let mut spec = match kind {
        Kind::Short => ExecSpec::new(["echo", token]),
        Kind::Bulk => ExecSpec::new([
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "{{ head -c {} /dev/urandom | tee /dev/fd/3 | sha256sum >&2; }} 3>&1",
                options.bulk_bytes
            ),
        ]),
        Kind::Interactive => ExecSpec::new([
            "sh",
            "-c",
            "stty -echo; echo ready; read a; echo \"got:$a\"; read b; echo \"got:$b\"",
        ]),
        Kind::Stdin => ExecSpec::new(["cat"]),
    };
    if kind == Kind::Interactive {
        spec.terminal = Some(Terminal::new(24, 80));
    }
    // On a terminal, stdin is what is typed into it.
    spec.stdin = matches!(kind, Kind::Stdin | Kind::Interactive);
    let mut run = match client.exec(spec).await {
        Ok(run) => run,
        Err(_) => return Outcome::NotStarted,
    };
    let control = run.controller();
    let sent = match kind {
        Kind::Stdin => {
            let data = random_bytes(options.stdin_bytes);
            let writer = data.clone();
            let control = control.clone();
            tokio::spawn(async move {
                for chunk in writer.chunks(16 * 1024) {
                    if control.write_stdin(chunk).await.is_err() {
                        return;
                    }
                }
                let _ = control.close_stdin().await;
            });
            data
        }
        _ => Vec::new(),
    };
    let lines = [format!("{token}-a"), format!("{token}-b")];
    let mut typed = 0;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut status = None;
    while let Some(event) = run.next().await {
        match event {
            Event::Stdout(b) => stdout.extend_from_slice(&b),
            Event::Stderr(b) => stderr.extend_from_slice(&b),
            Event::Exited(s) => status = Some(s),
            Event::Failed(ExecFailure::SessionLost(e)) => {
                return Outcome::Wrong(format!("session lost: {e}"));
            }
            Event::Failed(e) => return Outcome::Wrong(format!("failed: {e}")),
            _ => {}
        }
        // Types the next line once the shell has answered the one before.
        if kind == Kind::Interactive && typed < lines.len() {
            let shown = String::from_utf8_lossy(&stdout);
            let ready = if typed == 0 {
                shown.contains("ready")
            } else {
                shown.contains(&format!("got:{}", lines[typed - 1]))
            };
            if ready {
                let line = format!("{}\n", lines[typed]);
                if let Err(e) = control.write_stdin(line.as_bytes()).await {
                    return Outcome::Wrong(format!("typing: {e}"));
                }
                typed += 1;
            }
        }
    }
    let resumes = run.resumes();
    if status != Some(ExitStatus::Code(0)) {
        return Outcome::Wrong(format!("ended with {status:?}"));
    }
    let checked = match kind {
        Kind::Short => (stdout == format!("{token}\n").as_bytes()).then_some(stdout.len()),
        Kind::Bulk => {
            let said = String::from_utf8_lossy(&stderr);
            let said = said.split_whitespace().next().unwrap_or("");
            (stdout.len() == options.bulk_bytes && sha256_hex(&stdout) == said)
                .then_some(stdout.len())
        }
        Kind::Interactive => {
            let shown = String::from_utf8_lossy(&stdout);
            lines
                .iter()
                .all(|l| shown.contains(&format!("got:{l}")))
                .then_some(stdout.len())
        }
        Kind::Stdin => (stdout == sent).then_some(stdout.len() + sent.len()),
    };
    match checked {
        Some(bytes) => Outcome::Checked {
            bytes: bytes as u64,
            resumes,
        },
        None => Outcome::Wrong(format!(
            "output differs ({} bytes of stdout, {} of stderr)",
            stdout.len(),
            stderr.len()
        )),
    }
}

/// Silent TCP connections to the relay from `from`: at most 100 held at
/// once, a new one every 20 ms while fewer are, each dropped after 30 s
/// if the relay has not closed it.
async fn silent_connections(
    relay: SocketAddr,
    from: IpAddr,
    stop: CancellationToken,
    opened: Arc<AtomicU64>,
) {
    const HELD: usize = 100;
    let mut held: VecDeque<(Instant, tokio::net::TcpStream)> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Those the relay closed, and those held long enough, go.
        held.retain(|(at, s)| {
            let mut b = [0u8; 256];
            let open = match s.try_read(&mut b) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            };
            open && at.elapsed() < Duration::from_secs(30)
        });
        if held.len() >= HELD {
            continue;
        }
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            continue;
        };
        if socket.bind(SocketAddr::new(from, 0)).is_err() {
            continue;
        }
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(relay)).await
        {
            opened.fetch_add(1, Ordering::Relaxed);
            held.push_back((Instant::now(), s));
        }
    }
}

/// `Open`s to the exec-server's id at the relay from `from`, about 50 a
/// second, none of which ever sends handshake message 1; each is held
/// until the relay ends it, 30 s pass or `stop`, at most 500 at once.
async fn silent_opens(
    url: String,
    server_id: String,
    from: IpAddr,
    stop: CancellationToken,
    sent: Arc<AtomicU64>,
) {
    const IN_FLIGHT: usize = 500;
    let mut opens = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut channel = None;
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        while let Some(done) = opens.try_join_next() {
            // The channel broke (the relay was killed): a new one.
            if matches!(done, Ok(false)) {
                channel = None;
            }
        }
        if opens.len() >= IN_FLIGHT {
            continue;
        }
        if channel.is_none() {
            // The relay may be down: tried again on a later tick.
            let Ok(endpoint) = proto::relay_link::endpoint(
                &url,
                Duration::from_secs(5),
                &proto::tls::TlsSettings::system(),
            ) else {
                return;
            };
            channel = endpoint.local_address(Some(from)).connect().await.ok();
        }
        let Some(ch) = channel.clone() else {
            continue;
        };
        let mut client = TunnelClient::new(ch);
        let Ok(id) = server_id.parse() else {
            return;
        };
        sent.fetch_add(1, Ordering::Relaxed);
        let stop = stop.clone();
        opens.spawn(async move {
            let (tx, rx) = mpsc::channel::<Frame>(1);
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            request.metadata_mut().insert(SERVER_ID_HEADER, id);
            let answer = tokio::select! {
                () = stop.cancelled() => return false,
                r = tokio::time::timeout(Duration::from_secs(30), client.open(request)) => r,
            };
            match answer {
                Ok(Ok(response)) => {
                    let mut inbound = response.into_inner();
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::time::timeout(Duration::from_secs(30), inbound.message()) => {}
                    }
                    drop(tx);
                    true
                }
                Ok(Err(s)) => s.code() != tonic::Code::Unavailable,
                Err(_) => true,
            }
        });
    }
    opens.abort_all();
    while opens.join_next().await.is_some() {}
}
