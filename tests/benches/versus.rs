//! Side by side with the tools people use instead: OpenSSH, a plain TCP
//! relay (`socat`) and spawning locally, each scenario's two sides run
//! interleaved in the same rounds and reported as ratios against their
//! targets.
//!
//! Run it with `scripts/bench.sh`, which sets up what it needs (a local
//! sshd on 127.0.0.1 with a throwaway key and a `/bin/sh` user, socat, the
//! release `core-client`) and writes the results into `BENCHMARKS.md`.
//! Options (after `--`): `--rounds R` (default 5), `--only ID[,ID...]`
//! (`floor`, `warm`, `first_byte`, `cold`, `cli_warm`, `idle_first`, `bulk`
//! (also `relay_tax`),
//! `tracing`, `forwarding` (`cold_forwarded` and `tracing_forwarded`),
//! `pipe`, `scale`, `network`, `path_bulk`), `--write FILE`, `--ssh-port P --ssh-key
//! FILE --ssh-user NAME`, `--core-client PATH`, `--bulk-mib N` (2048),
//! `--pipe-mib N` (1024), `--sessions N` (1000), `--execs N` (200),
//! `--tracing-execs N` (150), `--rtts MS[,MS...]` (0,10,50,200: the
//! round trips `network` and `path_bulk` emulate), `--network-runs N`
//! (3), `--path-mib N` (128: `path_bulk`'s output per run). `--quick`
//! starts from small defaults instead (1 round, 256 MiB, 200 sessions,
//! 40 execs, 30 tracing execs, round trips 0,50, 1 network run, 16 MiB
//! across the path; options
//! given still apply): a check that every scenario runs to the end.
//!
//! Timings are only reported, never asserted: it exits non-zero only if a
//! scenario errors (an exec failed, an output was wrong, a span was lost).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use integration_tests::bench::{commit, machine, print_machine, run_text};
use integration_tests::otlp::OtlpReceiver;
use integration_tests::stack::Stack;
use integration_tests::versus::latency::{self, ColdClient};
use integration_tests::versus::ssh::Ssh;
use integration_tests::versus::tracing::{Mode, Providers};
use integration_tests::versus::{self, Comparison, bulk, network, pipe, scale};

const SCENARIOS: [&str; 14] = [
    "floor",
    "warm",
    "first_byte",
    "cold",
    "cli_warm",
    "idle_first",
    "bulk",
    "relay_tax",
    "tracing",
    "forwarding",
    "pipe",
    "scale",
    "network",
    "path_bulk",
];

#[derive(Default)]
struct Args {
    rounds: usize,
    only: Vec<String>,
    write: Option<PathBuf>,
    ssh_port: Option<u16>,
    ssh_key: Option<PathBuf>,
    ssh_user: Option<String>,
    core_client: Option<PathBuf>,
    bulk_mib: usize,
    pipe_mib: usize,
    sessions: usize,
    execs: usize,
    tracing_execs: usize,
    rtts_ms: Vec<u64>,
    network_runs: usize,
    path_mib: usize,
}

fn parse_args() -> Args {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut a = if quick {
        // Every scenario once, with small counts: a check that the whole
        // benchmark runs, not a measurement.
        Args {
            rounds: 1,
            bulk_mib: 256,
            pipe_mib: 256,
            sessions: 200,
            execs: 40,
            tracing_execs: 30,
            rtts_ms: vec![0, 50],
            network_runs: 1,
            path_mib: 16,
            ..Args::default()
        }
    } else {
        Args {
            rounds: 5,
            bulk_mib: 2048,
            pipe_mib: 1024,
            sessions: 1000,
            execs: 200,
            tracing_execs: 150,
            rtts_ms: vec![0, 10, 50, 200],
            network_runs: 3,
            path_mib: 128,
            ..Args::default()
        }
    };
    let (mut only, mut write, mut port, mut key, mut user, mut cc) =
        (Vec::new(), None, None, None, None, None);
    let mut rtts: Option<Vec<u64>> = None;
    integration_tests::bench::parse_args(
        &mut [
            ("--rounds", &mut a.rounds),
            ("--bulk-mib", &mut a.bulk_mib),
            ("--pipe-mib", &mut a.pipe_mib),
            ("--sessions", &mut a.sessions),
            ("--execs", &mut a.execs),
            ("--tracing-execs", &mut a.tracing_execs),
            ("--network-runs", &mut a.network_runs),
            ("--path-mib", &mut a.path_mib),
        ],
        &[
            "--only",
            "--write",
            "--ssh-port",
            "--ssh-key",
            "--ssh-user",
            "--core-client",
            "--rtts",
        ],
        |name, value| match (name, value) {
            ("--only", Some(v)) => only.extend(v.split(',').map(str::to_owned)),
            ("--write", v) => write = v.map(PathBuf::from),
            ("--ssh-port", v) => port = v.and_then(|p| p.parse().ok()),
            ("--ssh-key", v) => key = v.map(PathBuf::from),
            ("--ssh-user", v) => user = v,
            ("--core-client", v) => cc = v.map(PathBuf::from),
            ("--rtts", Some(v)) => {
                rtts = v.split(',').map(|ms| ms.trim().parse().ok()).collect();
                if rtts.is_none() {
                    eprintln!("versus: --rtts takes round trips in milliseconds, e.g. 0,10,50,200");
                    std::process::exit(2);
                }
            }
            _ => {}
        },
    );
    a.only = only;
    a.write = write;
    a.ssh_port = port;
    a.ssh_key = key;
    a.ssh_user = user;
    a.core_client = cc;
    if let Some(rtts) = rtts {
        a.rtts_ms = rtts;
    }
    a
}

impl Args {
    fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == id)
    }

    fn ssh(&self) -> Result<Ssh, String> {
        match (&self.ssh_port, &self.ssh_key, &self.ssh_user) {
            (Some(port), Some(key), Some(user)) => Ok(Ssh {
                port: *port,
                key: key.clone(),
                user: user.clone(),
            }),
            _ => Err("the ssh scenarios need --ssh-port, --ssh-key and --ssh-user (scripts/bench.sh sets up an sshd and passes them)".into()),
        }
    }

    /// The release `core-client` beside this benchmark's own binary
    /// (`target/release/deps/versus-*` -> `target/release/core-client`).
    fn core_client(&self) -> Result<PathBuf, String> {
        if let Some(path) = &self.core_client {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let path = exe
            .parent()
            .and_then(|deps| deps.parent())
            .map(|dir| dir.join("core-client"))
            .filter(|p| p.is_file())
            .ok_or("no release core-client beside the benchmark: `cargo build --release -p core-client` or give --core-client PATH")?;
        Ok(path)
    }
}

fn versions() -> String {
    let first_line = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("?")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|| "not found".into())
    };
    let socat = std::process::Command::new("socat")
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.split_once("socat version ").map(|(_, v)| v.to_owned()))
        })
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "not found".into());
    format!(
        "{}; {}; socat {socat}",
        run_text("rustc", &["--version"]).unwrap_or_else(|| "rustc ?".into()),
        first_line("ssh", &["-V"]),
    )
}

async fn bench(args: &Args) -> Result<bool, String> {
    if let Some(unknown) = args.only.iter().find(|o| !SCENARIOS.contains(&o.as_str())) {
        return Err(format!(
            "unknown scenario {unknown:?} (one of {})",
            SCENARIOS.join(", ")
        ));
    }
    print_machine();
    println!("versions: {}", versions());
    let rounds = args.rounds;

    // Tracing is on for our side of every in-process scenario: every span
    // is exported over OTLP to a local receiver.
    let receiver = OtlpReceiver::start_counting()
        .await
        .map_err(|e| e.to_string())?;
    let providers = Providers::new(&receiver)?;
    providers.install(Mode::Full);
    let stack = Stack::start().await.map_err(|e| e.to_string())?;
    let client = stack.client();
    let direct = stack.direct_client().map_err(|e| e.to_string())?;
    client.connect().await.map_err(|e| e.to_string())?;
    direct.connect().await.map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch dir: {e}"))?;

    let wants_ssh = [
        "warm",
        "first_byte",
        "cold",
        "cli_warm",
        "bulk",
        "relay_tax",
        "network",
        "path_bulk",
    ]
    .iter()
    .any(|id| args.wants(id));
    let ssh = if wants_ssh { Some(args.ssh()?) } else { None };
    let master = match &ssh {
        Some(ssh) if args.wants("warm") || args.wants("first_byte") || args.wants("cli_warm") => {
            Some(ssh.master(&scratch.path().join("ssh-master")).await?)
        }
        _ => None,
    };

    let mut done: Vec<Comparison> = Vec::new();
    let progress = |c: &Comparison, done: &mut Vec<Comparison>| {
        eprintln!("{}: ratio/value {:.3}", c.id, c.judged().0);
        done.push(c.clone());
    };
    if args.wants("floor") {
        progress(&latency::floor(rounds, &client).await?, &mut done);
    }
    if let (Some(ssh), Some(master)) = (&ssh, &master) {
        if args.wants("warm") {
            let c = latency::warm(rounds, &client, ssh, master.socket()).await?;
            progress(&c, &mut done);
        }
        if args.wants("first_byte") {
            let c = latency::first_byte(rounds, &client, ssh, master.socket()).await?;
            progress(&c, &mut done);
        }
    }
    let mut sections = String::new();
    if let Some(ssh) = &ssh
        && (args.wants("cold") || args.wants("cli_warm") || args.wants("network"))
    {
        // A CLI user's commands reach a relay and an exec-server running
        // as their own processes, as they are deployed (an exec-server
        // inside this process would spawn each command by forking all of
        // this benchmark's memory).
        let procs = integration_tests::binaries::ProcStack::start(&[])
            .map_err(|e| format!("starting the relay and exec-server processes: {e}"))?;
        let cold = ColdClient {
            binary: args.core_client()?,
            relay: procs.relay_url.clone(),
            server: procs.server_pub.clone(),
            key: procs.client_key.clone(),
            data_dir: scratch.path().join("cold"),
            // Where no agent runs.
            agent_socket: scratch.path().join("no-agent").join("agent.sock"),
            through_agent: false,
            env: Vec::new(),
        };
        if args.wants("cold") {
            progress(&latency::cold(rounds, &cold, ssh).await?, &mut done);
        }
        if let Some(master) = &master
            && args.wants("cli_warm")
        {
            let warm = ColdClient {
                agent_socket: scratch.path().join("agent").join("agent.sock"),
                data_dir: scratch.path().join("cli-warm"),
                through_agent: true,
                ..cold.clone()
            };
            warm.agent("start")?;
            let c = latency::cli_warm(rounds, &warm, ssh, master.socket()).await;
            let _ = warm.agent("stop");
            progress(&c?, &mut done);
        }
        if args.wants("network") {
            let options = network::NetworkOptions {
                rtts_ms: args.rtts_ms.clone(),
                rounds,
                runs: args.network_runs,
            };
            let agent_client = ColdClient {
                agent_socket: scratch.path().join("network-agent").join("agent.sock"),
                data_dir: scratch.path().join("network-agent"),
                ..cold.clone()
            };
            let relay = procs.relay_addr().map_err(|e| e.to_string())?;
            let (cs, table) =
                network::run(&options, relay, &cold, &agent_client, ssh, scratch.path()).await?;
            for c in &cs {
                progress(c, &mut done);
            }
            let _ = writeln!(
                sections,
                "\n### Across an emulated network (`network`)\n\n\
                 Each side's median over rounds ({} rounds of {} runs each, the four sides interleaved), in ms (min–max across rounds) and in round trips (median ÷ round trip). \
                 The link emulator (`tests/emulator`) sits between the CLI or agent and the relay (the relay next to the exec-server), and between `ssh` and the sshd, with the same settings: half the round trip each way, no rate limit.\n\n{table}",
                rounds, args.network_runs
            );
        }
    }
    if args.wants("idle_first") {
        let mut config = stack.client_config();
        config.warm = rex_client::WarmPolicy::every(std::time::Duration::from_millis(100));
        let on = rex_client::Client::new(config);
        let off = stack.client();
        let cs = latency::idle_first(rounds, &on, &off, &client).await?;
        on.close().await;
        off.close().await;
        for c in &cs {
            progress(c, &mut done);
        }
    }
    if let Some(ssh) = &ssh
        && (args.wants("bulk") || args.wants("relay_tax"))
    {
        let bytes = args.bulk_mib as u64 * 1024 * 1024;
        let (b, t) = bulk::bulk_and_relay_tax(rounds, bytes, &client, &direct, ssh).await?;
        progress(&b, &mut done);
        progress(&t, &mut done);
    }
    if let Some(ssh) = &ssh
        && args.wants("path_bulk")
    {
        let options = versus::path_bulk::PathBulkOptions {
            rtts_ms: args.rtts_ms.clone(),
            rounds,
            bytes: args.path_mib as u64 * 1024 * 1024,
        };
        let (cs, table) =
            versus::path_bulk::run(&options, stack.relay.addr, &stack.client_config(), ssh).await?;
        for c in &cs {
            progress(c, &mut done);
        }
        let _ = writeln!(
            sections,
            "\n### Bulk across an emulated network (`path_bulk`)\n\n\
             Each side's median MiB/s over {rounds} rounds (min–max across rounds), ours and ssh run in turn in each round. \
             The link emulator sits between the client and the relay (the relay next to the exec-server), and between `ssh` and the sshd, with the same settings: half the round trip each way; the last row adds a 100 Mbit/s bottleneck with a {} KiB buffer each way (ours only).\n\n{table}",
            versus::path_bulk::CAP_BUFFER / 1024
        );
    }
    if args.wants("tracing") {
        let c =
            versus::tracing::scenario(rounds, args.tracing_execs, &client, &providers, &receiver)
                .await?;
        progress(&c, &mut done);
    }
    drop(master);
    client.close().await;
    direct.close().await;
    providers.shutdown().await;

    if args.wants("forwarding") {
        let pairs = versus::forwarding::Pairs::start().await?;
        let run = async {
            let binary = args.core_client()?;
            let c = versus::forwarding::cold(rounds, &binary, &pairs, scratch.path()).await?;
            progress(&c, &mut done);
            let c = versus::forwarding::tracing(rounds, args.tracing_execs, &pairs).await?;
            progress(&c, &mut done);
            Ok::<(), String>(())
        };
        let ran = run.await;
        pairs.shutdown().await;
        ran?;
    }

    if args.wants("pipe") {
        let options = pipe::PipeOptions {
            rounds,
            bytes: args.pipe_mib as u64 * 1024 * 1024,
        };
        progress(&pipe::run(&options).await?, &mut done);
    }
    if args.wants("scale") {
        let options = scale::ScaleOptions {
            rounds,
            idle_sessions: args.sessions,
            concurrent_execs: args.execs,
            output_bytes: 1024 * 1024,
        };
        progress(&scale::run(&options).await?, &mut done);
    }

    let table = versus::table(&done);
    let notes = format!("{}{sections}", versus::notes(&done));
    println!("\n{table}\n{notes}");
    if let Some(path) = &args.write {
        write_report(path, args, &table, &notes)?;
        println!("results written to {}", path.display());
    }
    Ok(true)
}

/// Writes the generated section of `path` (the rest of the file is kept).
fn write_report(
    path: &std::path::Path,
    args: &Args,
    table: &str,
    notes: &str,
) -> Result<(), String> {
    let document = std::fs::read_to_string(path).unwrap_or_default();
    let mut section = String::new();
    let date = run_text("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "?".into());
    let _ = writeln!(
        section,
        "Generated by `scripts/bench.sh` on {date}: {}; {}; commit {}; {} rounds.\n",
        machine(),
        versions(),
        commit(),
        args.rounds
    );
    let _ = writeln!(
        section,
        "Each cell: median over rounds (min–max across rounds); latencies are each round's p50, with the median p99. \
         The ratio is ours over the peer (medians), with the min–max of the per-round ratios.\n"
    );
    section.push_str(table);
    section.push('\n');
    section.push_str(notes);
    std::fs::write(path, versus::splice_section(&document, &section))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = parse_args();
    integration_tests::bench::run("versus", "", bench(&args))
}
