//! The README's five-minute tour, run verbatim: every block fenced as
//! ```` ```sh tour ```` is taken from README.md exactly as written and run,
//! in order, by one `bash` (so the background relay and exec-server of one
//! block are there for the next, and `kill %1 %2` stops them), in an empty
//! directory with an empty temporary home, the freshly built binaries
//! first on `PATH` and nothing else of the test's environment. It must
//! succeed and print what the tour says it prints, so the README cannot
//! drift from what the programs do.
//!
//! Blocks fenced as ```` ```sh tour-docker ```` (Jaeger through Docker
//! Compose) are not run here: they need Docker and images built from the
//! tree; the compose tests (`tests/tests/compose.rs`,
//! `scripts/compose-test.sh`) run that stack. The test says how many it
//! left out.
//!
//! The tour's relay listens on 127.0.0.1:7600, as the README says; the
//! test fails with one clear line if that port is taken.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::binaries;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The whole tour may take this long on a busy machine.
const BOUND: Duration = Duration::from_secs(300);

/// The fenced blocks whose info string is exactly `info`, in order.
fn blocks(markdown: &str, info: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.strip_prefix("```") == Some(info) => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => out.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```{info} block");
    out
}

#[test]
fn the_blocks_are_found_exactly() {
    let md = "a\n```sh tour\necho 1\necho 2\n```\n```sh\nnot this\n```\n```sh tour-docker\ndocker\n```\n```sh tour\necho 3\n```\n";
    assert_eq!(blocks(md, "sh tour"), ["echo 1\necho 2\n", "echo 3\n"]);
    assert_eq!(blocks(md, "sh tour-docker"), ["docker\n"]);
}

/// Stops what is left of the tour (its background services, if a block
/// failed before `kill %1 %2`).
fn stop_group(pid: u32) {
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let _ = killpg(group, Signal::SIGKILL);
}

#[test]
fn the_readme_tour_runs_verbatim() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let tour = blocks(&text, "sh tour");
    assert!(
        tour.len() >= 5,
        "the README's tour has {} blocks",
        tour.len()
    );
    let docker = blocks(&text, "sh tour-docker");
    eprintln!(
        "readme_tour: running {} tour blocks; {} block(s) marked tour-docker are left out (they need Docker)",
        tour.len(),
        docker.len()
    );
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:7600") {
        panic!("the tour's relay needs 127.0.0.1:7600, which is taken: {e}");
    }

    let bin = binaries::path("core-client").unwrap();
    let bin = bin.parent().unwrap();
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let work = root.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let script = format!("set -euo pipefail\n{}", tour.concat());
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        // Never the user's running agent (its socket would otherwise be
        // the default, shared with the user's own commands).
        .env("REX_AGENT_SOCKET", home.join("agent.sock"))
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever is left (nothing, when the tour's own kill ran) goes.
    stop_group(pid);
    let _ = child.wait();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!("the tour did not end within {BOUND:?}\nstdout:\n{out}\nstderr:\n{err}");
    };
    assert!(
        status.success(),
        "the tour failed ({status})\nstdout:\n{out}\nstderr:\n{err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    // The keys, the first command and its exit status.
    assert!(work.join("server.key.pub").exists());
    assert!(work.join("client.key.pub").exists());
    assert!(
        lines.iter().any(|l| l.starts_with("hello from ")),
        "{out}\n{err}"
    );
    assert!(lines.contains(&"exit status 3"), "{out}\n{err}");
    // The named server, with its cwd.
    assert!(home.join(".config/rex/client.key").exists());
    assert!(lines.contains(&"/tmp"), "{out}\n{err}");
    // The waterfall of the last command, from the local trace file, and
    // the history.
    assert!(home.join(".local/share/rex/traces.jsonl").exists());
    assert!(out.contains("tool.dispatch"), "{out}\n{err}");
    assert!(out.contains("pwd"), "{out}\n{err}");
}
