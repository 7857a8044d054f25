//! Clients that freeze mid-output (a process stopped, a laptop asleep),
//! through the built binaries on loopback. The exec-server's one link to
//! the relay carries all its sessions, and the relay stops reading a
//! session whose client stopped reading: what such sessions leave unread
//! must never hold up the exec-server's other sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Stdio};
use std::time::Duration;

use integration_tests::binaries::{ProcStack, eventually};
use integration_tests::memory::rss_kib;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), sig).unwrap();
}

/// The `cat` processes `parent` started, with the bytes each has written.
fn cats_of(parent: u32) -> Vec<(u32, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if !comm.ends_with("(cat") || ppid != Some(parent) {
            continue;
        }
        let written = std::fs::read_to_string(entry.path().join("io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("wchar: ").map(str::to_owned))
            })
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        found.push((pid, written));
    }
    found
}

#[test]
fn clients_frozen_mid_output_do_not_hold_up_the_exec_servers_other_sessions() {
    // More frozen sessions than a link's old 8 MiB connection window had
    // room for at 1 MiB each: with 1 MiB client windows, 2 of 5 honest
    // execs got through. (A client's 4 MiB window now lets most of a
    // frozen session's output wait in the relay's socket buffers instead
    // of unread in its HTTP/2 streams, so this load alone no longer
    // exhausts that window; the connection window is still what keeps the
    // sessions apart wherever those buffers are small.)
    const FROZEN: usize = 16;
    const HONEST: usize = 5;
    let stack = ProcStack::start(&[]).unwrap();
    let server = stack.server.child.id();
    let relay = stack.relay.child.id();
    let relay_before = rss_kib(relay).unwrap();
    let mut frozen = Vec::new();
    for _ in 0..FROZEN {
        let cli = stack
            .exec(&["cat", "/dev/zero"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        frozen.push(cli);
    }
    assert!(
        eventually(Duration::from_secs(60), || cats_of(server).len() == FROZEN),
        "{} of {FROZEN} commands started",
        cats_of(server).len()
    );
    for cli in &frozen {
        signal(cli, Signal::SIGSTOP);
    }
    // Until every frozen command is held back: nothing it writes can go
    // anywhere (its client's socket, the relay and the exec-server are
    // full, as far as each lets them be).
    let mut before = cats_of(server);
    let held = eventually(Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_secs(1));
        let now = cats_of(server);
        let still = now.len() == FROZEN && now == before;
        before = now;
        still
    });
    assert!(
        held,
        "the frozen commands' output never stopped: {before:?}"
    );
    let written: u64 = before.iter().map(|(_, n)| n).sum();
    let relay_held = rss_kib(relay).unwrap().saturating_sub(relay_before);

    let mut ok = 0;
    for _ in 0..HONEST {
        let out = stack
            .exec(&["echo", "still here"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() && out.stdout == b"still here\n" {
            ok += 1;
        } else {
            eprintln!(
                "honest exec: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    for mut cli in frozen {
        signal(&cli, Signal::SIGCONT);
        let _ = cli.kill();
        let _ = cli.wait();
    }
    eprintln!(
        "{FROZEN} frozen sessions: their commands wrote {written} bytes; the relay grew by {relay_held} KiB \
         ({} KiB a session); {ok} of {HONEST} honest execs ok",
        relay_held / FROZEN as u64
    );
    assert_eq!(ok, HONEST, "honest execs while {FROZEN} clients are frozen");
}
