//! `probe`: a command run many times against one exec-server (cold, warm,
//! or both interleaved), with a progress line, and the report of exactly
//! those commands at the end — `mtr` for remote commands.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use rex_client::{Client, ClientConfig, Event, ExecSpec};
use telemetry::setup::{Export, Flusher};
use tokio::sync::mpsc;

use super::context::Context;
use super::error::CliError;
use crate::settings::ServerArgs;
use analysis::format::duration;
use analysis::html::Page;
use analysis::report::Options;
use analysis::source::{Filter, Input};

/// Arguments of `probe`.
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// A server named in the config file or the known servers.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Where and how (as `exec` takes them).
    #[command(flatten)]
    pub server: ServerArgs,
    /// How many times to run the command.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Start one command at most every DURATION (e.g. 100ms) [default: as
    /// soon as the previous one ends]
    #[arg(long, value_name = "DURATION", value_parser = lifecycle::durations::parse)]
    pub interval: Option<Duration>,
    /// A new session for each command (a cold start each time). With
    /// --warm too, cold and warm commands alternate.
    #[arg(long)]
    pub cold: bool,
    /// One session for every command, established before the first (the
    /// default).
    #[arg(long)]
    pub warm: bool,
    /// How many commands run at once.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Print the report as JSON (the schema of `report --json`).
    #[arg(long)]
    pub json: bool,
    /// A gate over the probe's commands (as `report --gate`); exit 1 unless
    /// every gate holds.
    #[arg(long = "gate", value_name = "EXPR")]
    pub gates: Vec<String>,
    /// As `report --min-count`.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub min_count: u64,
    /// How many of the slowest commands to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Also write the report as one self-contained HTML page to FILE (as
    /// `report --html`).
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// How one run went.
struct Outcome {
    cold: bool,
    trace: Option<u128>,
    wall: Duration,
    result: Result<i32, String>,
}

/// Runs `probe`.
pub(crate) async fn probe(
    args: ProbeArgs,
    ctx: Context,
    export: Export,
    flusher: Flusher,
) -> Result<u8, CliError> {
    let gates = super::report::gates(&args.gates)?;
    let settings = super::exec::settings(&ctx, args.name.as_deref(), &args.server)?;
    let plan = super::exec::plan(&settings, ctx.config.as_ref().map(|c| c.path.as_path()))?;
    let Some(target) = plan.targets.first().cloned() else {
        return Err(CliError::usage("no relay to try"));
    };
    let mut config =
        ClientConfig::new(plan.key.clone(), plan.server, target).alternates_of(&plan.targets, 0);
    config.tls = plan.tls.clone();
    let mut spec = ExecSpec::new(args.command.clone());
    for (k, v) in &settings.env {
        spec.env.push((k.into(), v.value.clone().into()));
    }
    spec.cwd = settings.cwd.as_ref().map(|c| c.value.clone());
    spec.stdin = false;

    let warm_client = (args.warm || !args.cold).then(|| Client::new(config.clone()));
    if let Some(client) = &warm_client {
        // Every warm command finds the session there.
        let status = client.warm_now().await;
        if let Some(rex_client::WarmOutcome::Failed(reason)) = status.last_outcome {
            return Err(CliError::connection(format!(
                "cannot reach the exec-server: {reason}"
            )));
        }
    }
    let plan = Arc::new(Plan {
        count: args.count,
        interval: args.interval,
        alternate: args.cold && args.warm,
        cold_only: args.cold && !args.warm,
        config,
        spec,
        warm: warm_client.clone(),
    });
    let (outcomes, stopped) = run(plan, args.concurrency).await;
    if let Some(client) = &warm_client {
        client.close().await;
    }
    let failed_to_run: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    if failed_to_run.len() == outcomes.len() {
        let first = failed_to_run
            .first()
            .map_or("no command ran", |e| e.as_str());
        return Err(CliError::connection(first.to_owned()));
    }
    if let Some(first) = failed_to_run.first() {
        eprintln!(
            "core-client: {} of {} commands could not be run (the first: {first})",
            failed_to_run.len(),
            outcomes.len()
        );
    }
    if stopped {
        eprintln!(
            "core-client: interrupted: reporting the {} commands that ran",
            outcomes.len()
        );
    }
    // The spans of every command are written before they are read back.
    let _ = tokio::task::spawn_blocking(move || flusher.flush()).await;
    let Export::File(file) = export else {
        print_wall_times(&outcomes);
        eprintln!(
            "core-client: the spans went to the OTLP endpoint, not a local trace file: `report \
             --jaeger URL --service core-client` reads them from Jaeger"
        );
        return Ok(0);
    };
    let ids: HashSet<u128> = outcomes.iter().filter_map(|o| o.trace).collect();
    let mut filter = Filter::default();
    filter.traces = Some(ids.clone());
    let input =
        Input::recent(file.path(), &filter, &ids).map_err(|e| CliError::failed(e.to_string()))?;
    let page = args.html.as_deref().map(|path| (path, Page::of(&input)));
    let options = Options::new(args.top, args.min_count);
    let report = analysis::report::build(input, None, &gates, filter, options);
    super::report::emit(&report, args.json, page, &ctx.names())
}

/// What every run needs.
struct Plan {
    count: u32,
    interval: Option<Duration>,
    /// Cold and warm commands alternate (cold first).
    alternate: bool,
    /// Every command is cold.
    cold_only: bool,
    config: ClientConfig,
    spec: ExecSpec,
    /// The session the warm commands share.
    warm: Option<Client>,
}

/// Runs the commands `concurrency` at a time; the outcomes, and whether
/// Ctrl-C stopped it early.
async fn run(plan: Arc<Plan>, concurrency: u32) -> (Vec<Outcome>, bool) {
    let tasks = lifecycle::Tasks::new();
    let next = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::channel::<Outcome>(64);
    let started = tokio::time::Instant::now();
    for worker in 0..concurrency {
        let tx = tx.clone();
        let next = next.clone();
        let token = tasks.token().clone();
        let plan = plan.clone();
        tasks.spawn(tracing::debug_span!("probe", worker), async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.count || token.is_cancelled() {
                    break;
                }
                if let Some(interval) = plan.interval {
                    let due = started + interval.saturating_mul(i);
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = token.cancelled() => break,
                    }
                }
                let outcome = plan.one(i).await;
                if tx.send(outcome).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut outcomes = Vec::new();
    let mut progress = Progress::new(plan.count);
    let mut stopped = false;
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    loop {
        tokio::select! {
            outcome = rx.recv() => match outcome {
                Some(o) => {
                    progress.update(&o);
                    outcomes.push(o);
                }
                None => break,
            },
            Some(()) = async {
                match interrupt.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            }, if !stopped => {
                // Running commands finish; no new ones start.
                stopped = true;
                tasks.token().cancel();
            }
        }
    }
    tasks.wait().await;
    progress.done();
    (outcomes, stopped)
}

impl Plan {
    /// Runs command `i` (cold or warm as the plan says).
    async fn one(&self, i: u32) -> Outcome {
        let cold = self.cold_only || (self.alternate && i.is_multiple_of(2));
        let own;
        let client = match (&self.warm, cold) {
            (Some(warm), false) => warm,
            _ => {
                own = Client::new(self.config.clone());
                &own
            }
        };
        let begun = Instant::now();
        let result = client.exec(self.spec.clone()).await;
        let outcome = match result {
            Err(e) => Outcome {
                cold,
                trace: None,
                wall: begun.elapsed(),
                result: Err(e.to_string()),
            },
            Ok(mut run) => {
                let trace = run
                    .trace_id()
                    .and_then(|t| u128::from_str_radix(&t, 16).ok());
                let mut status = Err("the call ended without an exit status".to_owned());
                while let Some(event) = run.next().await {
                    match event {
                        Event::Exited(s) => status = Ok(s.shell_code()),
                        Event::Failed(f) => status = Err(f.to_string()),
                        _ => {}
                    }
                }
                Outcome {
                    cold,
                    trace,
                    wall: begun.elapsed(),
                    result: status,
                }
            }
        };
        if cold {
            client.close().await;
        }
        outcome
    }
}

/// The progress line on a terminal's stderr.
struct Progress {
    count: u32,
    done: u32,
    failed: u32,
    nonzero: u32,
    cold: u32,
    walls: Vec<Duration>,
    last: Option<Instant>,
    terminal: bool,
}

impl Progress {
    fn new(count: u32) -> Self {
        Progress {
            count,
            done: 0,
            failed: 0,
            nonzero: 0,
            cold: 0,
            walls: Vec::new(),
            last: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, o: &Outcome) {
        self.done += 1;
        self.cold += u32::from(o.cold);
        match &o.result {
            Ok(0) => {}
            Ok(_) => self.nonzero += 1,
            Err(_) => self.failed += 1,
        }
        self.walls.push(o.wall);
        // At most ten lines a second.
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if self.terminal && (due || self.done == self.count) {
            self.last = Some(Instant::now());
            let mut sorted = self.walls.clone();
            sorted.sort_unstable();
            let median = analysis::stats::percentile(&sorted, 50.0).unwrap_or_default();
            eprint!(
                "\r\x1b[Kprobe: {}/{}  cold {}  warm {}  last {}  median {}  exit≠0 {}  errors {}",
                self.done,
                self.count,
                self.cold,
                self.done - self.cold,
                duration(o.wall.as_nanos() as f64),
                duration(median.as_nanos() as f64),
                self.nonzero,
                self.failed
            );
        }
    }

    fn done(&self) {
        if self.terminal && self.done > 0 {
            eprintln!();
        }
    }
}

/// Without a trace file: the wall times measured here.
fn print_wall_times(outcomes: &[Outcome]) {
    let mut walls: Vec<u64> = outcomes
        .iter()
        .map(|o| u64::try_from(o.wall.as_nanos()).unwrap_or(u64::MAX))
        .collect();
    if let Some(s) = analysis::stats::Summary::of(&mut walls) {
        println!(
            "{} commands: p50 {}  p90 {}  p99 {}  max {} (wall time measured by the probe)",
            s.count,
            duration(s.p50_ns as f64),
            duration(s.p90_ns as f64),
            duration(s.p99_ns as f64),
            duration(s.max_ns as f64)
        );
    }
}
