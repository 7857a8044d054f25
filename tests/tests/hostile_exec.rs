//! The exec-server and CLI under hostile or careless use, through the
//! built binaries on loopback: keys revoked live and reloaded on SIGHUP,
//! private key files open to others refused, a flood of refused
//! handshakes logged in a bounded number of lines, Ctrl-C with a stdout
//! nobody reads, a locked records database, history on a full disk, a
//! command's environment (never the exec-server's secrets), a command's processes
//! (even one that calls `setsid`) ending with the command and with the
//! exec-server, commands starting with every signal's default action
//! whatever the exec-server was started ignoring (as under `nohup`), a
//! command whose client gave up on a tampered link ending at once, one
//! whose client was killed outright, or whose path fell silent, ending
//! when its resume grace runs out, and Ctrl-C while the session is still
//! being opened reaching the command.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use integration_tests::binaries::{self, ProcStack, eventually};
use integration_tests::proxy::{self, Behaviour};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::keys::StaticKeypair;

/// A number no other process on the machine has in its arguments: used as
/// `sleep`'s duration, it marks the test's processes.
fn marker() -> String {
    format!("1000.{}{}", std::process::id(), rand::random::<u32>())
}

/// Pids of live (not zombie) `sleep` processes with `marker` in their
/// arguments.
fn with_marker(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        // `sleep MARKER` itself, not the CLI that asked for it.
        let mut args = cmdline.split(|b| *b == 0);
        let is_sleep = args
            .next()
            .is_some_and(|argv0| argv0 == b"sleep" || argv0.ends_with(b"/sleep"));
        if !zombie && is_sleep && args.any(|arg| arg == marker.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) for `child` to exit; its status if it did.
fn exits(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    eventually(within, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

fn public_of(key: &Path) -> String {
    StaticKeypair::read_file(key).unwrap().public().to_string()
}

fn write_keys(stack: &ProcStack, keys: &[&str]) {
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    std::fs::write(stack.dir.path().join("authorized_keys"), text).unwrap();
}

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn exec_as(stack: &ProcStack, key: &Path, argv: &[&str]) -> Command {
    binaries::exec_command(&stack.relay_url, &stack.server_pub, key, &[], argv).unwrap()
}

#[test]
fn a_removed_key_is_refused_and_its_sessions_end_and_sighup_reloads() {
    let stack = ProcStack::start(&[]).unwrap();
    let first = public_of(&stack.client_key);
    let second_pub = binaries::keygen("core-client", stack.dir.path(), "second.key").unwrap();
    let second = stack.dir.path().join("second.key");
    write_keys(&stack, &[&first, &second_pub]);

    // A long command of the first key.
    let mark = marker();
    let mut running = stack
        .exec(&["sleep", &mark])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || !with_marker(&mark).is_empty()),
        "the command started"
    );

    // The first key is removed: the next handshake (its own, here)
    // re-reads the file, with no restart.
    write_keys(&stack, &[&second_pub]);
    let refused = stack.exec(&["true"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(255), "{refused:?}");
    let text = stderr_lines(&refused).join("\n");
    assert!(
        text.contains("does not authorize this client key"),
        "{text}"
    );

    // Its running session ends with a clear one-line reason, and the
    // command's process with it.
    let status = exits(&mut running, Duration::from_secs(20)).expect("the session ended");
    assert!(!status.success());
    let out = running.wait_with_output().unwrap();
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no longer authorized"), "{lines:?}");
    assert!(
        eventually(Duration::from_secs(20), || with_marker(&mark).is_empty()),
        "the command's process ended with its session"
    );

    // The second key still works.
    let ok = exec_as(&stack, &second, &["echo", "ok"]).output().unwrap();
    assert!(ok.status.success(), "{ok:?}");

    // SIGHUP re-reads the file and never terminates the exec-server.
    write_keys(&stack, &[&first, &second_pub]);
    let pid = Pid::from_raw(i32::try_from(stack.server.child.id()).unwrap());
    kill(pid, Signal::SIGHUP).unwrap();
    stack
        .server
        .wait_for_line("re-reading the authorized keys", Duration::from_secs(20))
        .unwrap();
    stack
        .server
        .wait_for_line("2 key(s) in force", Duration::from_secs(20))
        .unwrap();
    let back = stack.exec(&["echo", "back"]).output().unwrap();
    assert!(back.status.success(), "{back:?}");
    assert_eq!(back.stdout, b"back\n");
    let mut server = stack;
    assert!(
        server.server.child.try_wait().unwrap().is_none(),
        "the exec-server is still running after SIGHUP"
    );
}

#[test]
fn private_key_files_others_can_read_are_refused() {
    let stack = ProcStack::start(&[]).unwrap();
    std::fs::set_permissions(&stack.client_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = stack.exec(&["true"]).output().unwrap();
    assert!(!out.status.success());
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("0644") && lines[0].contains("too open"),
        "{lines:?}"
    );

    let key = stack.dir.path().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = Command::new(binaries::path("exec-server").unwrap())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--key")
        .arg(&key)
        .arg("--authorized-keys")
        .arg(stack.dir.path().join("authorized_keys"))
        .arg("--no-records")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("0640") && lines[0].contains("too open"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_handshakes_takes_a_bounded_number_of_log_lines() {
    const ATTEMPTS: u64 = 200;
    let stack = ProcStack::start(&[]).unwrap();
    let server: proto::keys::PublicKey = stack.server_pub.parse().unwrap();
    for _ in 0..ATTEMPTS {
        let stranger = StaticKeypair::generate().unwrap();
        let client = rex_client::Client::new(rex_client::ClientConfig::new(
            stranger,
            server,
            rex_client::Target::Relay(stack.relay_url.clone()),
        ));
        let refused = client.exec(rex_client::ExecSpec::new(["true"])).await;
        assert!(refused.is_err());
        client.close().await;
    }
    // Every refusal is accounted for: one line each for the first few, the
    // rest in summary lines (one per interval).
    let mut lines = Vec::new();
    let mut individual = 0u64;
    let mut summarised = 0u64;
    let deadline = Instant::now() + Duration::from_secs(40);
    while individual + summarised < ATTEMPTS && Instant::now() < deadline {
        let Ok(line) = stack
            .server
            .stderr_lines
            .recv_timeout(Duration::from_secs(1))
        else {
            continue;
        };
        if !line.contains("WARN") {
            continue;
        }
        lines.push(line.clone());
        let field = |name: &str| {
            line.split(name)
                .nth(1)
                .and_then(|c| c.split_whitespace().next())
                .and_then(|c| c.parse::<u64>().ok())
        };
        if line.contains("refused a client key") {
            // Its own, and those held back since the last summary.
            individual += 1;
            summarised += field("held_back=").unwrap_or(0);
        } else if let Some(count) = field("count=") {
            summarised += count;
        }
    }
    assert_eq!(
        individual + summarised,
        ATTEMPTS,
        "{individual} + {summarised}: {lines:#?}"
    );
    assert!(
        lines.len() <= 8,
        "{} warning lines for {ATTEMPTS} refusals: {lines:#?}",
        lines.len()
    );
}

#[test]
fn ctrl_c_ends_the_cli_while_its_stdout_is_blocked() {
    let stack = ProcStack::start(&[]).unwrap();
    // Its stdout is a pipe nobody reads.
    let mut cli = stack
        .exec(&["yes", "a line of output"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let the pipe fill up (and the remote side stall behind it).
    std::thread::sleep(Duration::from_secs(2));
    assert!(cli.try_wait().unwrap().is_none(), "still running");
    let pid = Pid::from_raw(i32::try_from(cli.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let status = exits(&mut cli, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = cli.kill();
        panic!("the CLI ignored SIGINT while its stdout was blocked");
    });
    // The remote command died of SIGINT: 128 + 2.
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[test]
fn a_locked_records_database_neither_fails_nor_holds_up_a_command() {
    let stack = ProcStack::start(&[]).unwrap();
    let db = stack
        .client_key
        .parent()
        .unwrap()
        .join("client-data")
        .join(metadata::store::FILE_NAME);
    drop(metadata::Store::open(&db).unwrap());
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let out = stack.exec(&["echo", "done"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"done\n");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one line for the records: {lines:?}");
    assert!(
        lines[0].starts_with("core-client: warning: ") && lines[0].contains("locked"),
        "{lines:?}"
    );
    drop(holder);

    // `history` says locked, not unreadable.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let history = Command::new(binaries::path("core-client").unwrap())
        .arg("--data-dir")
        .arg(db.parent().unwrap())
        .arg("history")
        .env("XDG_CONFIG_HOME", stack.dir.path().join("config"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&history.stderr);
    assert!(!history.status.success());
    assert!(
        text.contains("locked") && !text.contains("unreadable"),
        "{text}"
    );
}

#[test]
fn history_on_a_full_disk_says_so_and_not_that_the_database_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(metadata::store::FILE_NAME);
    let mut store = metadata::Store::open(&db).unwrap();
    store
        .write(&[metadata::Record::Command(metadata::CommandRecord {
            id: metadata::record::new_id(),
            server_id: "0123456789abcdef".into(),
            program: "recorded-program".into(),
            args: None,
            trace: metadata::TraceRef {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            },
            started_unix_ms: 1_700_000_000_000,
            first_output_us: Some(10),
            total_us: Some(20),
            progress: metadata::Progress::Finished,
            exit: Some(metadata::Exit::Code(0)),
            stdout_bytes: 0,
            stderr_bytes: 0,
        })])
        .unwrap();
    // Closed: its write-ahead log and shared-memory index are gone, and
    // a reader must write the index again.
    drop(store);
    let history = |limit: bool| {
        // No room to write (the file size limit, 8 KiB, with SIGXFSZ
        // ignored: writes past it fail with EFBIG, as on a full disk with
        // ENOSPC), and room again.
        let ulimit = if limit { "ulimit -f 16; " } else { "" };
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; {ulimit}exec \"$0\" --data-dir \"$1\" history"
            ))
            .arg(binaries::path("core-client").unwrap())
            .arg(dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .output()
            .unwrap()
    };
    let full = history(true);
    let text = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success(), "{full:?}");
    assert!(
        text.contains("is full") && !text.contains("unreadable") && !text.contains("move it aside"),
        "{text}"
    );
    // The database was intact: with room, history shows its command.
    let ok = history(false);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("recorded-program"),
        "{ok:?}"
    );
}

/// Set (CI) to make a missing writable cgroup v2 a failure rather than a
/// skip.
const REQUIRE_CGROUPS: &str = "REX_REQUIRE_CGROUPS";

/// The exec-server's commands' cgroup directory, if it made one (cgroup v2
/// with delegation available here).
fn commands_cgroup(stack: &ProcStack) -> Option<std::path::PathBuf> {
    let pid = stack.server.child.id();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    });
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("0::")
                    .map(|p| p.trim_start_matches('/').to_owned())
            })
        });
    let made = match (mount, own) {
        (Some(mount), Some(own)) => {
            Some(mount.join(own).join(format!("rex-exec.{pid}.0"))).filter(|d| d.is_dir())
        }
        _ => None,
    };
    if made.is_none() {
        assert!(
            std::env::var_os(REQUIRE_CGROUPS).is_none(),
            "{REQUIRE_CGROUPS} is set but the exec-server made no cgroup for its commands"
        );
        eprintln!(
            "notice: cgroup v2 delegation is not available here; the parts of this test that \
             need it (setsid descendants) are skipped"
        );
    }
    made
}

/// Whether the exec-server made its commands' cgroup.
fn has_cgroups(stack: &ProcStack) -> bool {
    commands_cgroup(stack).is_some()
}

#[test]
fn a_setsid_descendant_ends_when_the_command_ends_and_its_cgroup_is_removed() {
    let stack = ProcStack::start(&[]).unwrap();
    let Some(cgroup) = commands_cgroup(&stack) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("escapee.pid");
    let sleeper = marker();
    // The command starts a sleeper in a session of its own (out of the
    // command's process group), which writes its pid; the command ends
    // (its leader exits) once the pid is written.
    // (It writes its cgroup first, for the test to find.)
    let script = format!(
        "setsid sh -c 'cat /proc/self/cgroup > \"$1.cgroup\"; echo $$ > \"$1\"; \
         exec sleep {sleeper}' sh \"$1\" </dev/null >/dev/null 2>&1 & \
         i=0; while [ ! -s \"$1\" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
    );
    let out = stack
        .exec(&["sh", "-c", &script, "sh", pidfile.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // It did leave the command's process group and session.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let gone = || !Path::new(&format!("/proc/{pid}")).exists() || with_marker(&sleeper).is_empty();
    let ended = eventually(Duration::from_secs(20), gone);
    if !ended {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert!(ended, "the setsid sleeper outlived its command: {stat}");
    // The command's cgroup (killed: it still held the sleeper) is removed
    // once empty; what is left is the exec-server's stock of empty ones
    // for later commands, no more.
    let own = std::fs::read_to_string(dir.path().join("escapee.pid.cgroup")).unwrap();
    let name = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| p.rsplit('/').next())
        .unwrap()
        .to_owned();
    assert!(name.starts_with("cmd-"), "{own}");
    let cmd_groups = || {
        std::fs::read_dir(&cgroup)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("cmd-"))
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(20), || !cgroup.join(&name).exists()),
        "the command's cgroup {name} is left in {}",
        cgroup.display()
    );
    let left = cmd_groups();
    assert!(left.len() <= exec_server::READY_CGROUPS, "{left:?}");
    for d in &left {
        let events = std::fs::read_to_string(d.join("cgroup.events")).unwrap_or_default();
        assert!(
            events.lines().any(|l| l == "populated 0"),
            "{} holds a process",
            d.display()
        );
    }
}

#[test]
fn a_commands_processes_end_with_the_command_and_with_the_exec_server() {
    let mut stack = ProcStack::start(&[]).unwrap();
    let cgroups = has_cgroups(&stack);

    // The command ends (Ctrl-C): a child that called setsid ends too.
    let (escapee, member) = (marker(), marker());
    let script = format!("setsid sleep {escapee} & sleep {member}");
    let mut cli = stack
        .exec(&["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || {
        !with_marker(&escapee).is_empty() && !with_marker(&member).is_empty()
    }));
    let pid = Pid::from_raw(i32::try_from(cli.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    exits(&mut cli, Duration::from_secs(20)).expect("the CLI exited");
    assert!(eventually(Duration::from_secs(20), || with_marker(&member).is_empty()));
    if cgroups {
        assert!(
            eventually(Duration::from_secs(20), || with_marker(&escapee).is_empty()),
            "the setsid child survived the command"
        );
    }
    for pid in with_marker(&escapee) {
        let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
    }

    // The exec-server is killed: its silent direct child dies with it, and
    // (with cgroups) a setsid grandchild too.
    let (direct, escapee) = (marker(), marker());
    let mut quiet = stack
        .exec(&["sleep", &direct])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let script = format!("setsid sleep {escapee} & wait");
    let mut loud = stack
        .exec(&["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || {
        !with_marker(&direct).is_empty() && !with_marker(&escapee).is_empty()
    }));
    stack.server.child.kill().unwrap();
    stack.server.child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || with_marker(&direct).is_empty()),
        "the direct child survived the exec-server"
    );
    if cgroups {
        assert!(
            eventually(Duration::from_secs(20), || with_marker(&escapee).is_empty()),
            "the setsid grandchild survived the exec-server"
        );
    }
    for pid in with_marker(&escapee) {
        let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
    }
    let _ = quiet.kill();
    let _ = loud.kill();
    let _ = quiet.wait();
    let _ = loud.wait();
}

/// The signals a `/proc/PID/status` says its process ignores (bit N-1 for
/// signal N).
fn ignored(status: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn commands_start_with_default_signal_actions_whatever_the_exec_server_ignores() {
    let mut stack = ProcStack::start(&[]).unwrap();
    // Its exec-server again, started as `nohup` starts a process (and some
    // service managers do): with these signals ignored, which an exec
    // keeps.
    stack.server.child.kill().unwrap();
    stack.server.child.wait().unwrap();
    let dir = stack.dir.path();
    let mut server = Command::new("sh")
        .arg("-c")
        .arg("trap '' HUP INT QUIT TERM USR1; exec \"$0\" \"$@\"")
        .arg(binaries::path("exec-server").unwrap())
        .args(["--relay", &stack.relay_url, "--key"])
        .arg(dir.join("server.key"))
        .arg("--authorized-keys")
        .arg(dir.join("authorized_keys"))
        .arg("--data-dir")
        .arg(dir.join("nohup-server-data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = None;
    assert!(
        eventually(Duration::from_secs(60), || {
            let o = stack.exec(&["cat", "/proc/self/status"]).output().unwrap();
            let ok = o.status.success();
            out = Some(o);
            ok
        }),
        "no command ran through the restarted exec-server: {}",
        String::from_utf8_lossy(&out.as_ref().unwrap().stderr)
    );
    // The exec-server handles SIGHUP, SIGINT and SIGTERM itself (which an
    // exec resets); the others it keeps ignored.
    let own = ignored(&std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap());
    for n in [3, 10] {
        assert_ne!(
            own & (1 << (n - 1)),
            0,
            "the exec-server ignores signal {n}"
        );
    }
    // The standard signals (1 to 31); real-time ones are as inherited.
    let theirs = ignored(&String::from_utf8(out.unwrap().stdout).unwrap()) & 0x7fff_ffff;
    assert_eq!(theirs, 0, "the command ignores signals {theirs:#x}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_commands_environment_is_built_from_the_allow_list_and_the_request_never_our_secrets() {
    let stack = ProcStack::start(&[
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer otel-secret",
        ),
        ("REX_TEST_SECRET", "rex-secret"),
        ("UNLISTED_SECRET", "unlisted-secret"),
        ("LC_TIME", "C"),
        ("REX_PASS_ENV", "EXTRA_PASSED,EXTRA_PREFIX_*"),
        ("EXTRA_PASSED", "extra"),
        ("EXTRA_PREFIX_ONE", "one"),
    ])
    .unwrap();
    let out = stack
        .exec_with(&["-e", "FROM_REQUEST=hello"], &["env"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let env = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    for secret in ["otel-secret", "rex-secret", "unlisted-secret"] {
        assert!(!env.contains(secret), "{secret} reached the command");
    }
    for name in &names {
        assert!(
            !name.starts_with("REX_") && !name.starts_with("OTEL_"),
            "{name} reached the command"
        );
    }
    for line in [
        "FROM_REQUEST=hello",
        "LC_TIME=C",
        "EXTRA_PASSED=extra",
        "EXTRA_PREFIX_ONE=one",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing");
    }
    // The search path, and the trace context the exec-server injects.
    assert!(names.contains(&"PATH"), "{names:?}");
    assert!(names.contains(&"TRACEPARENT"), "{names:?}");
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The latest records in a records directory's database, once it has one.
fn records_in(dir: &Path) -> Option<metadata::Store> {
    let db = dir.join(metadata::store::FILE_NAME);
    db.exists()
        .then(|| metadata::Store::open(&db).ok())
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_client_gave_up_on_a_tampered_link_ends_and_both_records_say_why() {
    let stack = ProcStack::start(&[]).unwrap();
    // A relay that flips a bit in a reply once the command runs: the
    // client cannot go on with the session (exit 255); the exec-server
    // sees only the link go, and would keep the command for its resume
    // grace (60 s) unless told.
    let armed = Arc::new(AtomicBool::new(false));
    let evil = proxy::start(
        stack.relay_url.clone(),
        Behaviour {
            tamper_reply: Some(Arc::clone(&armed)),
            ..Behaviour::default()
        },
    )
    .await
    .unwrap();
    let dir = stack.dir.path().to_owned();
    let pid_file = dir.join("command.pid");
    let script = format!(
        "echo $$ > '{}'; while sleep 0.2; do echo tick; done",
        pid_file.display()
    );
    let mut cli = binaries::exec_command(
        &evil,
        &stack.server_pub,
        &stack.client_key,
        &[],
        &["sh", "-c", &script],
    )
    .unwrap()
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The proxy runs on this runtime; the waiting is done beside it.
    let (pid, status, stderr) = tokio::task::spawn_blocking(move || {
        let mut pid = None;
        assert!(
            eventually(Duration::from_secs(30), || {
                pid = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                pid.is_some()
            }),
            "the command never started"
        );
        armed.store(true, Ordering::SeqCst);
        let status = exits(&mut cli, Duration::from_secs(30));
        if status.is_none() {
            let _ = cli.kill();
        }
        let mut stderr = String::new();
        if let Some(mut e) = cli.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        (pid.unwrap(), status, stderr)
    })
    .await
    .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(255), "{stderr}");
    assert!(
        stderr.contains("abandoned by the client"),
        "the CLI says its command was ended: {stderr}"
    );
    // The command is gone, long before the 60 s grace.
    let gone =
        tokio::task::spawn_blocking(move || eventually(Duration::from_secs(30), || ended(pid)))
            .await
            .unwrap();
    assert!(gone, "the remote command runs on after its client gave up");
    // Both records say why: the exec-server's process record, and the
    // command record the CLI's history shows.
    let server_data = dir.join("server-data");
    let client_data = dir.join("client-data");
    let (server_exit, client_exit) = tokio::task::spawn_blocking(move || {
        let mut found = (None, None);
        eventually(Duration::from_secs(30), || {
            found.0 = records_in(&server_data)
                .and_then(|s| s.processes(10).ok())
                .and_then(|r| r.into_iter().find(|p| p.pid == Some(pid)))
                .and_then(|p| p.exit);
            found.1 = records_in(&client_data)
                .and_then(|s| s.commands(10).ok())
                .and_then(|r| r.into_iter().next())
                .and_then(|c| c.exit);
            found.0.is_some() && found.1.is_some()
        });
        found
    })
    .await
    .unwrap();
    assert_eq!(
        server_exit,
        Some(metadata::Exit::Error("abandoned by its client".into()))
    );
    assert!(
        matches!(&client_exit, Some(metadata::Exit::Error(m)) if m.contains("abandoned by the client")),
        "{client_exit:?}"
    );
}

/// The exec-server's resume grace in the kill and silence tests: short,
/// so the tests wait seconds rather than the default minute.
const SHORT_GRACE: &str = "3s";

#[test]
fn a_command_whose_client_was_killed_ends_at_the_grace_and_its_record_says_why() {
    let stack = ProcStack::start(&[("REX_RESUME_GRACE", SHORT_GRACE)]).unwrap();
    abandoned_command_ends(&stack, None, |cli| {
        // The client is killed outright: it cannot abandon the session,
        // and nobody resumes it.
        kill(
            Pid::from_raw(i32::try_from(cli.id()).unwrap()),
            Signal::SIGKILL,
        )
        .unwrap();
        let _ = cli.wait();
    });
}

#[test]
fn a_command_whose_client_fell_silent_ends_at_the_idle_timeout_and_grace() {
    // The exec-server takes a client silent for 2 s for gone (it asks
    // after 0.5 s; a live client answers).
    let stack = ProcStack::start(&[
        ("REX_RESUME_GRACE", SHORT_GRACE),
        ("REX_IDLE_TIMEOUT", "2s"),
    ])
    .unwrap();
    // A live client that sends nothing for four times that long is kept:
    // it answers when asked.
    let quiet = stack
        .exec(&["sh", "-c", "sleep 8; exit 3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        quiet.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let link =
        link_emulator::Emulator::start(link_emulator::Config::new(stack.relay_addr().unwrap()))
            .unwrap();
    let mut cli = None;
    abandoned_command_ends(&stack, Some(&link.url()), |c| {
        // The path goes silent both ways, its connection left open (a
        // laptop closed, a path black-holed): no close, no reset, nothing
        // more arrives. The client still thinks it has a link.
        for d in link_emulator::Direction::BOTH {
            link.stall(d, Duration::from_secs(3600));
        }
        assert!(exits(c, Duration::from_secs(1)).is_none());
        cli = Some(c.id());
    });
    let _ = kill(
        Pid::from_raw(i32::try_from(cli.unwrap()).unwrap()),
        Signal::SIGKILL,
    );
}

/// Runs a command (and a child of its own) through `via` (the relay's own
/// address by default), lets `lose` take
/// its client away, and checks that both end once the exec-server's resume
/// grace has run out, with the record saying why.
fn abandoned_command_ends(stack: &ProcStack, via: Option<&str>, lose: impl FnOnce(&mut Child)) {
    let dir = stack.dir.path().to_owned();
    let pid_file = dir.join("command.pid");
    // The command and a child of its own (a pipeline member in the
    // background): both must go.
    let child_marker = marker();
    let script = format!(
        "sleep {child_marker} & echo $$ > '{}'; while sleep 0.2; do echo tick; done",
        pid_file.display()
    );
    let argv = ["sh", "-c", &script];
    let mut cli = match via {
        Some(url) => stack.exec_via(url, &[], &argv),
        None => stack.exec(&argv),
    }
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut pid = None;
    assert!(
        eventually(Duration::from_secs(60), || {
            pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            pid.is_some() && !with_marker(&child_marker).is_empty()
        }),
        "the command never started"
    );
    let pid = pid.unwrap();
    lose(&mut cli);
    stack
        .server
        .wait_for_line("a session's link broke", Duration::from_secs(60))
        .unwrap();
    stack
        .server
        .wait_for_line("not resumed within its grace", Duration::from_secs(60))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || ended(pid)
            && with_marker(&child_marker).is_empty()),
        "the command of a lost client runs on after the grace"
    );
    let server_data = dir.join("server-data");
    let mut exit = None;
    eventually(Duration::from_secs(60), || {
        exit = records_in(&server_data)
            .and_then(|s| s.processes(10).ok())
            .and_then(|r| r.into_iter().find(|p| p.pid == Some(pid)))
            .and_then(|p| p.exit);
        exit.is_some()
    });
    assert_eq!(
        exit,
        Some(metadata::Exit::Error(
            "its session was not resumed in time".into()
        ))
    );
}

/// A command run across a path slow enough (a second each way) that
/// Ctrl-C, sent once `ready` holds (polled), lands while the CLI still
/// waits for its handshake's answer. The CLI takes the signal (it is never
/// the default action, which would end the CLI and leave a request that
/// rode in message 1 running until the exec-server's 60 s resume grace):
/// what may have left is signalled once it has started, and the CLI exits
/// with the command's status; what has not left is never sent.
fn ctrl_c_during_the_dispatch(stack: &ProcStack, ready: impl Fn(&str) -> bool) {
    let path = link_emulator::Emulator::start(
        link_emulator::Config::new(stack.relay_addr().unwrap()).rtt(Duration::from_secs(2)),
    )
    .unwrap();
    let sleeper = marker();
    let mut cli = stack
        .exec_via(&path.url(), &["--no-agent", "-v"], &["sleep", &sleeper])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = binaries::pump_lines(cli.stderr.take().unwrap());
    binaries::recv_line(
        &lines,
        |l| l.contains("connecting to"),
        "the CLI's dispatch",
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(20), || ready(&sleeper)));
    let pid = Pid::from_raw(i32::try_from(cli.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let status = exits(&mut cli, Duration::from_secs(30)).expect("the CLI exited");
    let said: Vec<String> = lines.try_iter().collect();
    let ended = eventually(Duration::from_secs(20), || with_marker(&sleeper).is_empty());
    for pid in with_marker(&sleeper) {
        let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
    }
    assert_eq!(status.code(), Some(130), "{status:?}: {said:#?}");
    assert!(ended, "the command outlived the interrupted CLI: {said:#?}");
}

#[test]
fn ctrl_c_while_the_session_opens_is_taken_before_the_exec_server_ran_anything() {
    let stack = ProcStack::start(&[]).unwrap();
    // No ticket of the exec-server's run yet: the request in message 1 is
    // not run, and goes again after the handshake (two round trips).
    ctrl_c_during_the_dispatch(&stack, |_| true);
}

#[test]
fn ctrl_c_while_the_session_opens_reaches_a_command_that_rode_in_message_1() {
    let stack = ProcStack::start(&[]).unwrap();
    // A first command (directly) gives the CLI the exec-server run's
    // ticket: the next one runs from message 1, half a round trip after it
    // left, while the CLI still waits a second for message 2.
    assert!(
        stack
            .exec(&["true"])
            .stdin(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    ctrl_c_during_the_dispatch(&stack, |sleeper| !with_marker(sleeper).is_empty());
}
