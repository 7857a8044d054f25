//! The stack in containers (`docker-compose.yml`), with faults: output and
//! exit status through the core-client container, the trace through the
//! Jaeger query API (the core-client has no route to Jaeger: its spans
//! travel through its sessions), a relay restart and a network cut that a command in
//! flight survives, a relay down for longer than the resume grace and an
//! exec-server killed that end it clearly, and the relay never holding a
//! command's plaintext; and, with
//! `docker-compose.tls.yml` added (`REX_COMPOSE_TLS=1`), a command and
//! its trace over TLS between the containers; and with
//! `docker-compose.fleet.yml` added (`REX_COMPOSE_FLEET=1`), a fleet of two
//! relays on etcd: a command forwarded from one to the other, byte-exact,
//! as one trace holding both; the home relay killed mid-command, the
//! command resuming through the other; etcd stopped and started again.
//!
//! These run from `scripts/compose-test.sh`, which builds the images,
//! brings the stack up, names it in the environment and tears it down.
//! Run any other way (plain `cargo test`), they print why they skip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use integration_tests::binaries;
use integration_tests::compose::{self, ComposeStack, client_lines, docker};
use integration_tests::jaeger::{JaegerQuery, QueriedSpan};
use integration_tests::{memory, trace_check};

/// How long the stack may take to become healthy again after a fault
/// (a bound on waiting, never a measure).
const RECOVER: Duration = Duration::from_secs(120);
/// How long a one-off core-client container may take to start and print.
const START: Duration = Duration::from_secs(60);
/// The services whose spans a command's trace holds.
const THREE: [&str; 3] = ["core-client", "exec-server", "relay"];

/// The stack is shared: one test at a time.
static STACK: Mutex<()> = Mutex::new(());

/// The stack, up and healthy, held for this test alone; `None` (with a
/// notice) when the compose tests were not asked for.
fn stack() -> Option<(ComposeStack, MutexGuard<'static, ()>)> {
    let stack = match ComposeStack::from_env() {
        Ok(s) => s,
        Err(why) => {
            // Written past the test harness's capture, once, so that a
            // plain `cargo test` shows why these tests did nothing.
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                let _ = writeln!(std::io::stderr(), "compose tests skipped: {why}");
            });
            return None;
        }
    };
    let guard = STACK.lock().unwrap_or_else(PoisonError::into_inner);
    stack.ensure_up(RECOVER).unwrap();
    Some((stack, guard))
}

fn marker(label: &str) -> String {
    format!("rex-{label}-{:032x}", rand::random::<u128>())
}

/// Runs `argv` through the core-client container until it succeeds
/// (bounded); returns how long that took.
fn succeeds_within(stack: &ComposeStack, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let out = stack.exec(&[], &["echo", "ok"]).output().unwrap();
        if out.status.success() && out.stdout == b"ok\n" {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "no command succeeded within {within:?}; last: {:?} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A command in flight: it has printed and sleeps (it never ends by itself
/// within a test).
fn in_flight(stack: &ComposeStack) -> compose::Running {
    let running = stack
        .spawn_exec(&[], &["sh", "-c", "echo started; sleep 300"])
        .unwrap();
    running.wait_for_line("started", START).unwrap();
    running
}

/// Asserts a core-client that lost its command ended with exit 255 and one
/// clear line of its own.
fn assert_clear_failure(ended: &compose::Ended, what: &str) {
    let lines = client_lines(&ended.stderr);
    assert_eq!(
        ended.code,
        Some(255),
        "{what}: expected exit 255; stderr:\n{}",
        ended.stderr
    );
    assert_eq!(
        lines.len(),
        1,
        "{what}: one line from core-client; stderr:\n{}",
        ended.stderr
    );
    eprintln!("{what}: after {:?}: {}", ended.after, lines[0]);
}

#[test]
fn output_is_byte_exact_with_the_remote_exit_status() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    // Tabs, a NUL, a high byte, no final newline; stderr apart; status 7.
    let out = stack
        .exec(
            &[],
            &[
                "sh",
                "-c",
                "printf 'a\\tb\\000c\\377\\n'; printf 'no newline'; echo to-stderr >&2; exit 7",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"a\tb\0c\xff\nno newline");
    assert_eq!(out.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to-stderr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Enough output for many chunks and frames.
    let out = stack.exec(&[], &["seq", "1", "200000"]).output().unwrap();
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(out.status.success());
    assert!(out.stdout == expected.as_bytes(), "seq output differs");

    // A signal: 128 + N, as locally.
    let out = stack
        .exec(&[], &["sh", "-c", "kill -9 $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137));
}

/// Runs a command whose session carries the previous command's last
/// spans (`cli.run` ends after its session closed: the core-client has no
/// route to Jaeger and leaves them for the next session to the
/// exec-server, which exports them).
fn carry_the_last_spans(stack: &ComposeStack) {
    let out = stack.exec(&[], &["true"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the client's spans of the trace arrived once each (`cli.run`
/// once: the root, never sent twice).
fn assert_client_spans_once(spans: &[QueriedSpan]) {
    let client: Vec<&QueriedSpan> = spans
        .iter()
        .filter(|s| s.service == "core-client")
        .collect();
    let ids: BTreeSet<&str> = client.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), client.len(), "a client span arrived twice");
    assert_eq!(
        client
            .iter()
            .filter(|s| s.name == telemetry::spans::CLI_RUN)
            .count(),
        1
    );
}

/// The trace's spans once every stage from each of `services` is in
/// Jaeger and no more arrive (bounded).
async fn settled_trace(query: &JaegerQuery, trace_id: &str, services: &[&str]) -> Vec<QueriedSpan> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last: Option<usize> = None;
    loop {
        let spans = query.trace(trace_id).await.unwrap().unwrap_or_default();
        let seen: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        // The CLI's cli.run leaves in its last export, after the rest.
        let complete = trace_check::has_all_stages(&spans)
            && services.iter().all(|s| seen.contains(s))
            && spans.iter().any(|s| s.name == telemetry::spans::CLI_RUN);
        if complete && last == Some(spans.len()) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} incomplete in Jaeger after 60 s: {} spans from {seen:?}",
            spans.len()
        );
        last = complete.then_some(spans.len());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Command trace `trace_id` once it has settled in Jaeger with spans of
/// every one of `services` (the CLI's last spans carried by one more
/// command first): one trace, one root (`cli.run`), the client's spans
/// there once each, and the CLI's stages tiling its run.
fn one_trace(stack: &ComposeStack, trace_id: &str, services: &[&str]) -> Vec<QueriedSpan> {
    carry_the_last_spans(stack);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let query = JaegerQuery::new(&stack.jaeger_url).unwrap();
    let spans = runtime.block_on(settled_trace(&query, trace_id, services));
    assert!(spans.iter().all(|s| s.trace_id == trace_id));
    assert_client_spans_once(&spans);
    let roots = trace_check::roots(&spans);
    assert_eq!(roots.len(), 1, "one root: {roots:?}");
    assert_eq!(roots[0].name, telemetry::spans::CLI_RUN);
    trace_check::assert_cli_run_tiles(&spans);
    spans
}

#[test]
fn the_command_is_one_trace_in_jaeger_across_all_three_services() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    let before = SystemTime::now() - Duration::from_secs(5);
    let out = stack
        .exec(&["--print-trace-id"], &["sh", "-c", "echo traced"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.stdout, b"traced\n", "{stderr}");
    assert!(out.status.success(), "{stderr}");
    let trace_id = binaries::printed_trace_id(&out).unwrap();
    // One trace, one root, parented as docs/spans.md says; the client's
    // spans came through its sessions (it has no route to Jaeger), once.
    let spans = one_trace(&stack, &trace_id, &THREE);
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, BTreeSet::from(THREE));
    trace_check::assert_exec_tree(&spans);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let query = JaegerQuery::new(&stack.jaeger_url).unwrap();
        // Jaeger's search finds it too, and lists the three services.
        let after = SystemTime::now() + Duration::from_secs(5);
        let found = query
            .find_traces("core-client", before, after)
            .await
            .unwrap();
        assert!(
            found.iter().any(|s| s.trace_id == trace_id),
            "a search of core-client's traces does not find {trace_id}"
        );
        let listed = query.services().await.unwrap();
        for service in ["core-client", "exec-server", "relay"] {
            assert!(
                listed.iter().any(|s| s == service),
                "{service} not in {listed:?}"
            );
        }
    });
}

#[test]
fn relay_restart_costs_the_command_in_flight_a_pause_and_the_exec_server_re_registers() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    // A command writing a numbered line every quarter second, through the
    // restart: every line arrives once, in order, and its exit status too.
    let running = numbered_lines(&stack);

    stack.run(&["restart", "-t", "2", "relay"]).unwrap();
    every_line_once_then_exit_5(running);

    // The relay is back; the exec-server registers again on its own (how
    // long it took is printed, never judged).
    stack.wait_healthy(&["relay"], RECOVER).unwrap();
    let relay_up = Instant::now();
    let exec_server = stack.container("exec-server").unwrap();
    loop {
        let probe = docker(&["exec", &exec_server, "/exec-server", "health"]);
        if probe.is_ok() {
            break;
        }
        assert!(
            relay_up.elapsed() < RECOVER,
            "the exec-server did not re-register within {RECOVER:?}: {probe:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "exec-server re-registered {:?} after the relay was healthy",
        relay_up.elapsed()
    );

    // The next command gets a new session and succeeds.
    let out = stack
        .exec(&[], &["echo", "after-restart"])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        b"after-restart\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

/// The exec-server's resume grace in the stack (`REX_RESUME_GRACE`, which
/// scripts/compose-test.sh shortens).
fn resume_grace() -> Duration {
    std::env::var("REX_RESUME_GRACE")
        .ok()
        .and_then(|v| v.strip_suffix('s').and_then(|n| n.parse().ok()))
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

#[test]
fn a_relay_down_for_longer_than_the_grace_ends_the_command_clearly() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    // The command writes while nobody can hear it, then exits. It waits
    // for a file the test makes once the relay is stopped: a relay being
    // stopped still forwards for its shutdown grace, so a write timed by a
    // sleep could slip through on a slow machine.
    let go = format!("/tmp/relay-gone-{}", std::process::id());
    let script = format!(
        "echo started; while [ ! -e {go} ]; do sleep 0.1; done; echo written-while-away; exit 4"
    );
    // The client keeps trying to come back for longer than the relay is
    // down (its default, a minute, may be shorter than the grace).
    let patience = format!(
        "resume={}s",
        (resume_grace() + Duration::from_secs(60)).as_secs()
    );
    let running = stack
        .spawn_exec(&["-o", &patience], &["sh", "-c", &script])
        .unwrap();
    running.wait_for_line("started", START).unwrap();
    stack.run(&["stop", "-t", "2", "relay"]).unwrap();
    let exec_server = stack.container("exec-server").unwrap();
    docker(&["exec", &exec_server, "/bin/busybox", "touch", &go]).unwrap();
    std::thread::sleep(resume_grace() + Duration::from_secs(5));
    stack.run(&["start", "relay"]).unwrap();
    let ended = running.wait(RECOVER).unwrap();
    let lines = client_lines(&ended.stderr);
    assert_eq!(ended.code, Some(255), "{}", ended.stderr);
    assert_eq!(lines.len(), 1, "{}", ended.stderr);
    // What was lost, in bytes, and how the command had ended.
    assert!(lines[0].contains("too late"), "{}", lines[0]);
    assert!(lines[0].contains("19 bytes of stdout"), "{}", lines[0]);
    assert!(lines[0].contains("exited with 4"), "{}", lines[0]);
    stack.ensure_up(RECOVER).unwrap();
    succeeds_within(&stack, RECOVER);
}

#[test]
fn killed_exec_server_fails_the_command_in_flight_in_one_line() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    let running = in_flight(&stack);

    let exec_server = stack.container("exec-server").unwrap();
    docker(&["kill", "--signal", "KILL", &exec_server]).unwrap();
    // The client tries to resume; the exec-server that comes back does
    // not have the session, and says so.
    let ended = running.wait(RECOVER).unwrap();
    assert_clear_failure(&ended, "exec-server killed");

    // Back up (restarted by its policy, or by us), commands run again.
    stack.ensure_up(RECOVER).unwrap();
    succeeds_within(&stack, RECOVER);
}

#[test]
fn network_cut_pauses_the_command_in_flight_and_fails_new_commands_clearly() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    let exec_server = stack.container("exec-server").unwrap();
    // The exec-server is on Jaeger's network and the clients': cut from
    // both.
    let networks = stack.networks("exec-server").unwrap();
    assert_eq!(networks.len(), 2, "{networks:?}");

    // A command writing a numbered line every quarter second: the cut
    // (shorter than the exec-server's resume grace) costs it a pause, not
    // the command. Whether the exec-server's connections survive the cut
    // or are found dead (by the HTTP/2 keepalives, at most 40 s) and its
    // session resumed, every line arrives once, in order, and its exit
    // status too.
    let running = numbered_lines(&stack);

    for network in &networks {
        docker(&["network", "disconnect", network, &exec_server]).unwrap();
    }
    // A new command cannot reach the exec-server: it fails in one clear
    // line (how long that took is printed, never judged).
    let cut = std::panic::catch_unwind(|| {
        let started = Instant::now();
        let out = stack.exec(&[], &["echo", "unreachable"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(255), "while cut: {stderr}");
        assert!(out.stdout.is_empty());
        let lines = client_lines(&stderr);
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        eprintln!(
            "network cut: a new command failed after {:?}: {}",
            started.elapsed(),
            lines[0]
        );
    });
    // Restore before judging, so a failure leaves the stack whole.
    for network in &networks {
        docker(&["network", "connect", network, &exec_server]).unwrap();
    }
    let restored = Instant::now();
    if let Err(panic) = cut {
        std::panic::resume_unwind(panic);
    }

    every_line_once_then_exit_5(running);
    eprintln!(
        "network cut: the command in flight ended {:?} after the network was restored",
        restored.elapsed()
    );
    let took = succeeds_within(&stack, RECOVER);
    eprintln!("commands succeeded again {took:?} after the command in flight ended");
}

#[test]
fn relay_logs_and_memory_never_hold_a_command_plaintext() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    let secret = marker("plaintext");
    // The marker travels in the arguments, the environment, the output and
    // the error output; the command stays open while the relay is read.
    let script = "echo \"$0\"; echo \"$REX_SECRET\" >&2; echo started; sleep 300";
    let env = format!("REX_SECRET={secret}");
    let running = stack
        .spawn_exec(&["-e", &env], &["sh", "-c", script, &secret])
        .unwrap();
    running.wait_for_line(&secret, START).unwrap();
    running.wait_for_line("started", START).unwrap();

    let pid = stack.pid("relay").unwrap();
    let found = memory::scan(pid, secret.as_bytes()).unwrap();
    // The scan does see the relay's own data: the registered exec-server's
    // id is in its routing table.
    let server_id = {
        let exec_server = stack.container("exec-server").unwrap();
        let out = std::process::Command::new("docker")
            .args([
                "exec",
                &exec_server,
                "/exec-server",
                "pubkey",
                "--key",
                "/keys/server.key",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("server id: "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no server id in: {stderr}"))
    };
    let control = memory::scan(pid, server_id.as_bytes()).unwrap();
    drop(running);

    assert!(
        control.hits >= 1,
        "the scan cannot see the relay's data: {control:?}"
    );
    assert!(found.bytes > 1 << 20, "{found:?}");
    assert_eq!(
        found.hits, 0,
        "the relay's memory holds the command's plaintext ({} bytes read)",
        found.bytes
    );
    let logs = stack.logs("relay").unwrap();
    assert!(!logs.is_empty(), "no relay logs to check");
    assert!(
        !logs.contains(&secret),
        "the relay's logs hold the plaintext"
    );
}

#[test]
fn tls_between_the_containers_runs_a_command_as_one_trace() {
    let Some((stack, _guard)) = stack() else {
        return;
    };
    if !stack.tls {
        eprintln!(
            "the TLS compose test runs with docker-compose.tls.yml (REX_COMPOSE_TLS=1): skipped"
        );
        return;
    }
    // The relay serves TLS only; the exec-server registered over it (the
    // stack is healthy) and the core-client dials https://relay:7600.
    let logs = stack.logs("relay").unwrap();
    assert!(logs.contains("serving TLS only"), "relay logs:\n{logs}");
    let out = stack
        .exec(
            &["--print-trace-id"],
            &["sh", "-c", "printf 'over\\ttls\\000\\377'; exit 5"],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.stdout, b"over\ttls\0\xff", "{stderr}");
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    let trace_id = binaries::printed_trace_id(&out).unwrap();
    let spans = one_trace(&stack, &trace_id, &THREE);
    trace_check::assert_exec_tree(&spans);

    // Plain HTTP/2 to the TLS relay is refused in one line, never served.
    let out = stack
        .exec(&["--relay", "http://relay:7600"], &["echo", "plain"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(out.stdout.is_empty());
    let lines = client_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("serves TLS only"), "{stderr}");
}

/// The fleet's tests run with docker-compose.fleet.yml; elsewhere they say
/// so and skip.
fn fleet_stack() -> Option<(ComposeStack, MutexGuard<'static, ()>)> {
    let (stack, guard) = stack()?;
    if !stack.fleet {
        eprintln!(
            "the fleet's compose tests run with docker-compose.fleet.yml (REX_COMPOSE_FLEET=1): \
             skipped"
        );
        return None;
    }
    Some((stack, guard))
}

/// `etcdctl` in the etcd container; its output.
fn etcdctl(stack: &ComposeStack, args: &[&str]) -> String {
    let mut all = vec![
        "exec",
        "-T",
        "etcd",
        "/usr/bin/etcdctl",
        "--endpoints=http://127.0.0.1:2379",
    ];
    all.extend_from_slice(args);
    let out = stack.run(&all).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The relay the directory names for the exec-server (the stack's only
/// one), if any.
fn home(stack: &ComposeStack) -> Option<String> {
    let value = etcdctl(
        stack,
        &["get", "--prefix", "--print-value-only", "/rex/servers/"],
    );
    let entry: serde_json::Value = serde_json::from_str(value.trim()).ok()?;
    entry["relay"].as_str().map(str::to_owned)
}

/// The lease the exec-server's entry is under (none when there is no
/// entry).
fn entry_lease(stack: &ComposeStack) -> Option<i64> {
    let out = etcdctl(stack, &["get", "--prefix", "-w", "json", "/rex/servers/"]);
    let got: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    got["kvs"][0]["lease"].as_i64()
}

/// Waits (bounded) until the directory names `relay` as the exec-server's
/// home.
fn home_becomes(stack: &ComposeStack, relay: &str) {
    let deadline = Instant::now() + RECOVER;
    while home(stack).as_deref() != Some(relay) {
        assert!(
            Instant::now() < deadline,
            "the directory names {:?}, not {relay}",
            home(stack)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The exec-server at relay-b, where the stack puts it (a test that moved
/// it has it start again, so that it registers at the head of its list).
fn home_at_relay_b(stack: &ComposeStack) {
    if home(stack).as_deref() != Some("http://relay-b:7600") {
        stack.run(&["restart", "-t", "2", "exec-server"]).unwrap();
        stack.wait_healthy(&["exec-server"], RECOVER).unwrap();
    }
    home_becomes(stack, "http://relay-b:7600");
    // The client's relay has the route (its copy follows the store).
    succeeds_within(stack, RECOVER);
}

#[test]
fn fleet_a_command_through_one_relay_reaches_the_exec_server_at_the_other_as_one_trace() {
    let Some((stack, _guard)) = fleet_stack() else {
        return;
    };
    home_at_relay_b(&stack);
    // The client cannot reach relay-b: `relay` forwards its session.
    assert!(
        !stack.networks("relay-b").unwrap().iter().any(|n| stack
            .networks("core-client")
            .unwrap_or_default()
            .contains(n)),
        "relay-b shares a network with the clients"
    );
    let out = stack
        .exec(
            &["--print-trace-id"],
            &[
                "sh",
                "-c",
                "printf 'two\\trelays\\000\\377'; head -c 300000 /dev/zero; exit 6",
            ],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut expected = b"two\trelays\0\xff".to_vec();
    expected.extend(std::iter::repeat_n(0u8, 300_000));
    assert!(
        out.stdout == expected,
        "{} bytes; {stderr}",
        out.stdout.len()
    );
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let trace_id = binaries::printed_trace_id(&out).unwrap();
    let spans = one_trace(
        &stack,
        &trace_id,
        &["core-client", "exec-server", "relay", "relay-b"],
    );
    // The leg between the relays: toward the exec-server relay-b's
    // forward of a frame is a child of relay's, toward the client
    // relay's a child of relay-b's.
    let forwards = |service: &str, direction: &str| -> Vec<&QueriedSpan> {
        spans
            .iter()
            .filter(|s| {
                s.service == service
                    && s.name == telemetry::spans::RELAY_FORWARD
                    && s.attr_str("rex.direction") == Some(direction)
            })
            .collect()
    };
    let under = |child: &str, parent: &str, direction: &str| {
        let parents: BTreeSet<&str> = forwards(parent, direction)
            .iter()
            .map(|s| s.span_id.as_str())
            .collect();
        forwards(child, direction)
            .iter()
            .filter(|s| {
                s.parent_span_id
                    .as_deref()
                    .is_some_and(|p| parents.contains(p))
            })
            .count()
    };
    assert!(
        under("relay-b", "relay", "to_server") >= 1,
        "no relay-b forward toward the exec-server under relay's"
    );
    assert!(
        under("relay", "relay-b", "to_client") >= 1,
        "no relay forward toward the client under relay-b's"
    );
}

#[test]
fn fleet_the_home_relay_killed_mid_command_and_the_command_resumes_through_the_other() {
    let Some((stack, _guard)) = fleet_stack() else {
        return;
    };
    home_at_relay_b(&stack);
    let running = numbered_lines(&stack);

    // The home relay dies with no goodbye: the exec-server moves to the
    // next relay of its list, and the command comes back through the
    // client's relay, every line once, in order.
    stack.run(&["kill", "relay-b"]).unwrap();
    let killed = Instant::now();
    let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        every_line_once_then_exit_5(running);
        // The directory names the new home (relay-b's lease has run out
        // or been overwritten).
        home_becomes(&stack, "http://relay:7600");
        eprintln!(
            "fleet: the command in flight ended {:?} after the kill",
            killed.elapsed()
        );
    }));
    // relay-b back before judging, so that a failure leaves the stack whole.
    stack.run(&["start", "relay-b"]).unwrap();
    stack.wait_healthy(&["relay-b"], RECOVER).unwrap();
    if let Err(panic) = judged {
        std::panic::resume_unwind(panic);
    }
    // relay-b back, the exec-server stays where it is and is served.
    let out = stack.exec(&[], &["echo", "after"]).output().unwrap();
    assert_eq!(
        out.stdout,
        b"after\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fleet_without_etcd_routes_known_keep_working_and_the_directory_comes_back() {
    let Some((stack, _guard)) = fleet_stack() else {
        return;
    };
    home_at_relay_b(&stack);
    let lease = entry_lease(&stack).expect("the entry has a lease");
    stack.run(&["stop", "-t", "2", "etcd"]).unwrap();
    let judged = std::panic::catch_unwind(|| {
        // Both relays have lost the store; the route relay has is still
        // good, and the forwarded command runs.
        for i in 0..3 {
            let out = stack
                .exec(&[], &["sh", "-c", &format!("echo no-store-{i}")])
                .output()
                .unwrap();
            assert_eq!(
                out.stdout,
                format!("no-store-{i}\n").into_bytes(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    stack.run(&["start", "etcd"]).unwrap();
    stack.wait_healthy(&["etcd"], RECOVER).unwrap();
    if let Err(panic) = judged {
        std::panic::resume_unwind(panic);
    }
    // The store is back: relay-b writes its entry again under a fresh
    // lease, and commands still go through.
    let deadline = Instant::now() + RECOVER;
    while entry_lease(&stack).is_none_or(|l| l == lease) {
        assert!(
            Instant::now() < deadline,
            "the entry was not written again under a new lease"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    home_becomes(&stack, "http://relay-b:7600");
    let took = succeeds_within(&stack, RECOVER);
    eprintln!("fleet: commands through the fleet {took:?} after etcd was back");
}

/// A command writing 40 numbered lines, one every quarter second, then
/// exiting 5; returned once it has started.
fn numbered_lines(stack: &ComposeStack) -> compose::Running {
    let script = "echo started; i=0; while [ $i -lt 40 ]; do echo line-$i; i=$((i+1)); \
                  sleep 0.25; done; exit 5";
    let running = stack.spawn_exec(&[], &["sh", "-c", script]).unwrap();
    running.wait_for_line("started", START).unwrap();
    running
}

/// [`numbered_lines`]' whole output: every line once, in order, exit
/// status 5, and no line from the client itself.
fn every_line_once_then_exit_5(running: compose::Running) {
    for i in 0..40 {
        let line = running.next_line(RECOVER).unwrap();
        assert_eq!(line, format!("line-{i}"), "every line once, in order");
    }
    let ended = running.wait(RECOVER).unwrap();
    assert_eq!(ended.code, Some(5), "{}", ended.stderr);
    assert!(client_lines(&ended.stderr).is_empty(), "{}", ended.stderr);
}
