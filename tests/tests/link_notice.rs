//! A lost link is told on a terminal: through the built binaries, a
//! command runs across the link emulator, whose path is then cut (reset)
//! and held stalled for longer than the CLI waits before telling, so the
//! session is away for a while before it resumes. With stderr on a
//! terminal (a tmux pane) the CLI says "link lost; reconnecting through
//! URL" and then "link back after N s"; with stderr a pipe it says
//! nothing, and with `-v` its own debug lines. The command's output and
//! status are whole either way.
//!
//! Without tmux the terminal test prints a skip notice and passes, unless
//! `REX_REQUIRE_TMUX=1` (CI) makes that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::binaries::{self, ProcStack};
use integration_tests::tmux::{self, Tmux, lines};
use link_emulator::{Config, CutKind, Direction, Emulator};

/// Generous: the machine may be busy.
const WAIT: Duration = Duration::from_secs(60);

/// How long the path stays stalled after the cut: well past the CLI's
/// wait before it tells (1.5 s), so the outage is long enough whatever
/// the machine's speed.
const STALL: Duration = Duration::from_secs(5);

/// A command that prints `before`, waits for `flag` to exist, prints
/// `after` and exits 5, through `link`.
fn waiting_command(stack: &ProcStack, link: &Emulator, flag: &Path, flags: &[&str]) -> Command {
    let script = format!(
        "echo before; while [ ! -e '{}' ]; do sleep 0.05; done; echo after; exit 5",
        flag.display()
    );
    binaries::exec_command(
        &link.url(),
        &stack.server_pub,
        &stack.client_key,
        flags,
        &["sh", "-c", &script],
    )
    .unwrap()
}

/// Stalls the path both ways, then resets its connections: the session
/// notices at once, and its new connection carries nothing until the
/// stall is over.
fn lose_the_link(link: &Emulator) {
    for d in Direction::BOTH {
        link.stall(d, STALL);
    }
    assert_eq!(link.cut_all(CutKind::Reset), 1);
}

#[test]
fn on_a_terminal_a_lost_link_and_its_return_are_told() {
    if !tmux::available("on_a_terminal_a_lost_link_and_its_return_are_told") {
        return;
    }
    let stack = ProcStack::start(&[]).unwrap();
    let link =
        Emulator::start(Config::new(stack.relay_addr().unwrap()).rtt(Duration::from_millis(20)))
            .unwrap();
    let dir = stack.dir.path();
    let flag = dir.join("go-on");
    let cmd = waiting_command(&stack, &link, &flag, &[]);
    tmux::script_for(&cmd, &dir.join("rex-cmd")).unwrap();
    let tmux = Tmux::start(dir, 100, 30, "env 'PS1=local$ ' sh -i").unwrap();
    tmux.wait_for("the local prompt", WAIT, |s| {
        lines(s).last().is_some_and(|l| *l == "local$")
    })
    .unwrap();
    // stdout and stderr on the pane's terminal; stdin not (no remote
    // terminal is asked for with a command anyway).
    tmux.type_line("./rex-cmd </dev/null; echo \"rc=$?\"")
        .unwrap();
    tmux.wait_for("before", WAIT, |s| lines(s).contains(&"before"))
        .unwrap();
    lose_the_link(&link);
    let lost = format!(
        "core-client: link lost; reconnecting through {}",
        link.url()
    );
    tmux.wait_for("the link lost line", WAIT, |s| {
        lines(s).contains(&lost.as_str())
    })
    .unwrap();
    std::fs::write(&flag, b"").unwrap();
    let screen = tmux
        .wait_for("the command's end", WAIT, |s| lines(s).contains(&"rc=5"))
        .unwrap();
    let shown = lines(&screen);
    let back = shown
        .iter()
        .position(|l| l.starts_with("core-client: link back after ") && l.ends_with(" s"))
        .unwrap_or_else(|| panic!("no link back line:\n{screen}"));
    let at = |line: &str| shown.iter().position(|l| *l == line).unwrap();
    // In order: the output before, the loss, the return, the rest.
    assert!(at("before") < at(&lost), "{screen}");
    assert!(at(&lost) < back, "{screen}");
    assert!(back < at("after"), "{screen}");
    assert!(at("after") < at("rc=5"), "{screen}");
    // Each said once.
    assert_eq!(shown.iter().filter(|l| l.contains("link lost")).count(), 1);
    assert_eq!(shown.iter().filter(|l| l.contains("link back")).count(), 1);
    let stats = link.stats();
    assert_eq!(stats.resets, 1, "{stats}");
    assert!(
        stats.accepted >= 2,
        "it came back over a new connection: {stats}"
    );
}

/// Runs the waiting command with stderr a pipe, loses the link once the
/// output began and lets the command end; its stdout, status and stderr.
fn through_a_pipe(flags: &[&str]) -> (String, Option<i32>, String) {
    let stack = ProcStack::start(&[]).unwrap();
    let link =
        Emulator::start(Config::new(stack.relay_addr().unwrap()).rtt(Duration::from_millis(20)))
            .unwrap();
    let flag = stack.dir.path().join("go-on");
    let mut child = waiting_command(&stack, &link, &flag, flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    // stderr is read meanwhile, so -v's lines never fill the pipe.
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut out = String::new();
    stdout.read_line(&mut out).unwrap();
    assert_eq!(out, "before\n");
    lose_the_link(&link);
    // The whole stall passes before the command may end: the outage is
    // longer than the CLI's wait before it would tell a terminal.
    std::thread::sleep(STALL);
    std::fs::write(&flag, b"").unwrap();
    stdout.read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    let stats = link.stats();
    assert!(
        stats.accepted >= 2,
        "it came back over a new connection: {stats}"
    );
    (out, status.code(), err.join().unwrap())
}

#[test]
fn off_a_terminal_a_lost_link_is_not_told() {
    let (out, code, err) = through_a_pipe(&[]);
    assert_eq!(out, "before\nafter\n", "stderr: {err}");
    assert_eq!(code, Some(5), "stderr: {err}");
    assert!(!err.contains("link lost"), "{err}");
    assert!(!err.contains("link back"), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn off_a_terminal_verbose_says_the_loss_and_the_resume() {
    let (out, code, err) = through_a_pipe(&["-v"]);
    assert_eq!(out, "before\nafter\n", "stderr: {err}");
    assert_eq!(code, Some(5), "stderr: {err}");
    let said: Vec<&str> = err.lines().collect();
    let lost = said
        .iter()
        .filter(|l| l.starts_with("debug1: link lost: resuming the session through http://"))
        .count();
    let resumed = said
        .iter()
        .filter(|l| l.starts_with("debug1: session resumed through http://"))
        .count();
    assert_eq!((lost, resumed), (1, 1), "{err}");
    // -v's lines only: the terminal's notice is not said on a pipe.
    assert!(!err.contains("core-client: link"), "{err}");
}
