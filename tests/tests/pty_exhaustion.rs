//! The system out of pseudo-terminals, for real: a relay, an exec-server
//! and a client (all in one process) run in a mount namespace of their own
//! whose `/dev/pts` is a new devpts instance with room for
//! [`MAX_PTYS`] terminals (and `/dev/ptmx` bound to its `ptmx`). Terminal
//! commands are started until the exec-server can open no more: exactly
//! that many run, the next ends with the `NO_TERMINAL` exec error
//! ([`ExecFailure::NoTerminal`]), the exec-server keeps serving (commands
//! with pipes run, and so does a terminal command once one of the
//! terminals is closed).
//!
//! The namespace and the mounts need root (CAP_SYS_ADMIN) and `unshare`
//! from util-linux: the test runs its own binary again under `unshare
//! --mount`, which mounts the devpts and runs [`in_a_devpts_with_room_for_two`]
//! there. CI runs as root, so it runs there; where namespaces or mounts are
//! not allowed it prints a skip notice and passes.
//! (`exec-server/tests/pty_exhaustion.rs` runs a process out of
//! descriptors instead, which needs nothing.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use integration_tests::stack::Stack;
use rex_client::{Event, ExecFailure, ExecSpec, ExitStatus, Terminal};

/// Terminals the devpts instance has room for.
const MAX_PTYS: usize = 2;

/// Set in the environment of the run inside the namespace.
const INSIDE: &str = "REX_TEST_PRIVATE_DEVPTS";

/// What the run inside prints once it has checked everything.
const CHECKED: &str = "private devpts: every check ran";

/// Bounds every wait (never a measure of speed).
const WAIT: Duration = Duration::from_secs(120);

/// The shell line that gives the namespace its own devpts, then runs
/// `"$0" "$@"`.
fn mounts() -> String {
    format!(
        "mount -t devpts -o newinstance,ptmxmode=0666,max={MAX_PTYS} devpts /dev/pts \
         && mount --bind /dev/pts/ptmx /dev/ptmx && exec \"$0\" \"$@\""
    )
}

/// `unshare --mount` (private propagation: nothing leaks out) running
/// `program` with `args` after the mounts.
fn in_namespace(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &mounts()])
        .arg(program)
        .args(args);
    cmd
}

#[test]
fn terminals_run_out_in_a_devpts_of_their_own_and_the_exec_server_keeps_serving() {
    // Can this machine do it at all? (Root and util-linux's unshare.)
    let probe = in_namespace("true", &[]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "skipped: no mount namespace with a devpts of its own here (needs root; CI \
                 runs as root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run unshare (util-linux) here: {e}");
            return;
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = in_namespace(
        exe.to_str().unwrap(),
        &[
            "--exact",
            "in_a_devpts_with_room_for_two",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
    )
    .env(INSIDE, "1")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // It ran, and to its end.
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(stdout.contains(CHECKED), "{stdout}\n{stderr}");
}

/// A terminal command that holds its terminal until cancelled.
fn holding() -> ExecSpec {
    let mut spec = ExecSpec::new(["sh", "-c", "echo ready; exec sleep 1000"]);
    spec.terminal = Some(Terminal::new(24, 80));
    spec
}

/// The next event, bounded.
async fn next(run: &mut rex_client::Execution) -> Event {
    tokio::time::timeout(WAIT, run.next())
        .await
        .unwrap()
        .unwrap()
}

/// Reads the call's events until its terminal shows `ready`; `Err` with
/// the failure if it ends first.
async fn ready(run: &mut rex_client::Execution) -> Result<(), ExecFailure> {
    let mut shown = Vec::new();
    while !shown.ends_with(b"ready\r\n") {
        match next(run).await {
            Event::Started { .. } => {}
            Event::Stdout(d) => shown.extend_from_slice(&d),
            Event::Failed(f) => return Err(f),
            other => panic!("{other:?} after {shown:?}"),
        }
    }
    Ok(())
}

/// The rest of a call: its output and how it ended.
async fn finish(run: &mut rex_client::Execution) -> (Vec<u8>, Event) {
    let mut out = Vec::new();
    loop {
        match next(run).await {
            Event::Started { .. } => {}
            Event::Stdout(d) | Event::Stderr(d) => out.extend_from_slice(&d),
            last => return (out, last),
        }
    }
}

#[test]
#[ignore = "run inside a mount namespace of its own by \
            terminals_run_out_in_a_devpts_of_their_own_and_the_exec_server_keeps_serving"]
fn in_a_devpts_with_room_for_two() {
    if std::env::var(INSIDE).as_deref() != Ok("1") {
        eprintln!("not inside the namespace: the test above runs this one there");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stack = Stack::start().await.unwrap();
        let client = stack.client();
        // Terminals until there are none left.
        let mut held = Vec::new();
        let refused = loop {
            assert!(held.len() <= MAX_PTYS, "more terminals than the devpts has");
            let mut run = client.exec(holding()).await.unwrap();
            match ready(&mut run).await {
                Ok(()) => held.push(run),
                Err(f) => break f,
            }
        };
        assert_eq!(held.len(), MAX_PTYS);
        let ExecFailure::NoTerminal(message) = &refused else {
            panic!("{refused:?}")
        };
        assert!(
            message.starts_with("sh: cannot open a pseudo-terminal: "),
            "{message}"
        );
        assert_eq!(refused.shell_code(), 255);

        // The exec-server keeps serving: commands with pipes run...
        let out = client
            .output(ExecSpec::new(["sh", "-c", "echo piped"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout, b"piped\n");
        // ...terminals are still refused while none is free...
        let mut again = client.exec(holding()).await.unwrap();
        assert!(matches!(
            ready(&mut again).await,
            Err(ExecFailure::NoTerminal(_))
        ));
        // ...and once one is closed, a terminal command runs again.
        let mut closed = held.pop().unwrap();
        closed.cancel().await.unwrap();
        assert_eq!(
            finish(&mut closed).await.1,
            Event::Exited(ExitStatus::Signal(9))
        );
        let mut spec = ExecSpec::new(["sh", "-c", "test -t 0 && test -t 1 && tty"]);
        spec.terminal = Some(Terminal::new(24, 80));
        let mut run = client.exec(spec).await.unwrap();
        let (out, last) = finish(&mut run).await;
        assert_eq!(last, Event::Exited(ExitStatus::Code(0)), "{out:?}");
        assert!(out.starts_with(b"/dev/pts/"), "{out:?}");
        // The one still held was never disturbed.
        let mut kept = held.pop().unwrap();
        kept.cancel().await.unwrap();
        assert_eq!(
            finish(&mut kept).await.1,
            Event::Exited(ExitStatus::Signal(9))
        );
        client.close().await;
    });
    println!("{CHECKED}");
}
