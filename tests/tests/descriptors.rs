//! A relay out of file descriptors: flooded with connections after its
//! descriptor limit was lowered under it (`prlimit`), it must back off
//! rather than spin on `accept`, say so in summary lines rather than a
//! line per failure, and serve a legitimate client once the flood ends.
//!
//! Assertions are structural, never about speed: the count of failed
//! accepts is bounded by the pauses between them (each failure is
//! followed by a pause of at least 5 ms, so a slower machine only makes
//! fewer), and the log holds at most a few lines per summary interval.
//! The CPU time the relay used over the flood is printed, not asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::binaries::{self, Proc};

/// Descriptors left to the relay beyond those it holds when the limit is
/// lowered.
const SPARE: usize = 40;
/// Silent connections in the flood (several times the spare descriptors).
const FLOOD: usize = 300;
/// The shortest pause after a failed accept (`proto::listener`).
const MIN_PAUSE: Duration = Duration::from_millis(5);

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // /proc reports clock ticks of USER_HZ, 100 a second on Linux.
    ticks as f64 / 100.0
}

/// The `accept_errors=N` of a connection summary line.
fn accept_errors(line: &str) -> Option<u64> {
    let at = line.find("accept_errors=")? + "accept_errors=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `n` connections to `to` that never send a byte, from five loopback
/// addresses (each well under its per-source share).
fn silent_connections(n: usize, to: SocketAddr) -> Vec<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..n {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            let from = SocketAddr::from(([127, 0, 0, 2 + (i % 5) as u8], 0));
            s.bind(from).unwrap();
            // A full backlog may refuse some: those are not counted.
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), s.connect(to)).await
            {
                out.push(stream.into_std().unwrap());
            }
        }
        out
    })
}

fn relay_addr(relay: &Proc) -> SocketAddr {
    let line = relay
        .wait_for_line("listening on", Duration::from_secs(30))
        .unwrap();
    line.rsplit(' ').next().unwrap().trim().parse().unwrap()
}

#[test]
fn a_relay_out_of_descriptors_backs_off_and_serves_again() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("this test needs prlimit (util-linux)");
    }
    let dir = tempfile::tempdir().unwrap();
    let server_pub = binaries::keygen("exec-server", dir.path(), "server.key").unwrap();
    let client_pub = binaries::keygen("core-client", dir.path(), "client.key").unwrap();
    let ak = dir.path().join("authorized_keys");
    std::fs::write(&ak, format!("{client_pub}\n")).unwrap();
    let relay = binaries::spawn(
        "relay",
        &["--listen", "127.0.0.1:0", "--preface-timeout-secs", "2"],
        &[],
    )
    .unwrap();
    let addr = relay_addr(&relay);
    let url = format!("http://{addr}");
    let server = binaries::spawn(
        "exec-server",
        &[
            "--relay",
            &url,
            "--key",
            dir.path().join("server.key").to_str().unwrap(),
            "--authorized-keys",
            ak.to_str().unwrap(),
            "--no-records",
        ],
        &[],
    )
    .unwrap();
    server
        .wait_for_line("registered with relay", Duration::from_secs(30))
        .unwrap();
    let exec = || {
        binaries::exec_command(
            &url,
            &server_pub,
            &dir.path().join("client.key"),
            &[],
            &["echo", "ok"],
        )
        .unwrap()
        .output()
        .unwrap()
    };
    assert_eq!(exec().stdout, b"ok\n");

    // The relay's descriptors run short under it: its connection cap
    // (worked out at start from a high limit) no longer protects it.
    let pid = relay.child.id();
    let limit = open_descriptors(pid) + SPARE;
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(status.success(), "prlimit failed: {status}");

    // The flood: silent connections from five addresses (each well under
    // its per-source share), held until the relay has reported failed
    // accepts.
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let flood = silent_connections(FLOOD, addr);
    assert!(
        flood.len() > 2 * SPARE,
        "only {} connections made",
        flood.len()
    );
    let mut errors = 0u64;
    let mut summaries = 0usize;
    let mut lines = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while errors == 0 && Instant::now() < deadline {
        let Ok(line) = relay.stderr_lines.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        lines += 1;
        if let Some(n) = accept_errors(&line) {
            summaries += 1;
            errors += n;
        }
    }
    let window = started.elapsed();
    let cpu = cpu_seconds(pid) - cpu_before;
    drop(flood);
    eprintln!(
        "relay out of descriptors (limit {limit}): {errors} failed accepts reported in \
         {summaries} summary line(s), {lines} log line(s) in {:.1} s; the relay used {cpu:.2} CPU \
         seconds meanwhile",
        window.as_secs_f64()
    );
    assert!(errors > 0, "the relay never reported a failed accept");
    // Each failure is followed by a pause of at least MIN_PAUSE: the count
    // is bounded by the window (a spinning relay makes millions).
    let bound = window.as_millis() / MIN_PAUSE.as_millis() + 1;
    assert!(
        u128::from(errors) <= bound,
        "{errors} failed accepts in {window:?}: no back-off"
    );
    // Summaries, not a line per failure: at most a few lines per interval.
    let intervals = window.as_secs() / telemetry::limited::SUMMARY_INTERVAL.as_secs() + 1;
    assert!(
        lines as u64 <= 3 * intervals,
        "{lines} log lines in {intervals} interval(s)"
    );

    // The flood over, a legitimate client is served again, through the
    // exec-server's registration that survived it.
    let mut served = false;
    for _ in 0..20 {
        let out = exec();
        if out.stdout == b"ok\n" {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(served, "no legitimate exec succeeded after the flood");
    let health = Command::new(binaries::path("exec-server").unwrap())
        .args(["health", "--relay", &url, "--key"])
        .arg(dir.path().join("server.key"))
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
}
