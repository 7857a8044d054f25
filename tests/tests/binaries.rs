//! The three built binaries as separate processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, ExitStatus, Stdio};

use integration_tests::binaries::{self, ProcStack, run_with_stdin};
use integration_tests::trace_check;

fn run(mut cmd: Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn exec_through_separate_processes() {
    let stack = ProcStack::start(&[]).unwrap();

    // The example: output and exit status.
    let out = run(stack.exec(&["sh", "-c", "echo hi; exit 3"]));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Several MiB of stdout and stderr, byte-exact.
    let out = run(stack.exec(&[
        "sh",
        "-c",
        "head -c 4194304 /dev/zero | tr '\\0' 'x'; yes err | head -c 3000000 >&2",
    ]));
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 4 * 1024 * 1024);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    let expected_err: Vec<u8> = b"err\n".iter().copied().cycle().take(3_000_000).collect();
    assert!(out.stderr == expected_err, "stderr differs");

    // Stdin round trip; EOF closes the remote stdin.
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = run_with_stdin(stack.exec(&["cat"]), &input).unwrap();
    assert!(out.status.success());
    assert!(out.stdout == input, "stdin did not round-trip");

    // Stdin the null device: the remote stdin is at its end at once.
    let out = run(stack.exec(&["sh", "-c", "cat; echo end"]));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"end\n");
    // Stdin a file: read to its end, byte-exact.
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, &input[..100_000]).unwrap();
    std::io::Seek::rewind(&mut file).unwrap();
    let mut cmd = stack.exec(&["cat"]);
    let out = cmd.stdin(file).output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == input[..100_000],
        "a file's stdin did not round-trip"
    );

    // Killed by a signal: 128 + N.
    let out = run(stack.exec(&["sh", "-c", "kill -9 $$"]));
    assert_eq!(out.status.code(), Some(137));

    // A program that does not exist: an error line, shell's 127.
    let out = run(stack.exec(&["no-such-program-xyz"]));
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("no-such-program-xyz"), "{err}");
}

#[test]
fn exec_without_a_command_runs_the_login_shell_with_pipes_when_stdin_is_no_terminal() {
    let stack = ProcStack::start(&[]).unwrap();
    let shell = exec_server::shell::LoginShell::of_this_user();
    // As `ssh HOST` with its stdin a pipe: the login shell reads it, with
    // no terminal (and none is asked for: -t would force one).
    let script = b"test -t 0 || echo no-terminal; echo \"zero=$0\"; exit 4\n";
    let out = run_with_stdin(stack.exec_with(&["--print-trace-id"], &[]), script).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"no-terminal"), "{stdout}");
    let zero = format!("zero={}", shell.argv0().into_string().unwrap());
    assert!(lines.contains(&zero.as_str()), "{stdout}");
    // Its trace names the shell by its file name.
    let id = binaries::printed_trace_id(&out).unwrap();
    let spans = trace_check::from_trace_file(&stack.dir.path().join("traces.jsonl"), &id);
    let dispatch = trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH);
    assert_eq!(
        dispatch.attr_str("process.executable.name"),
        Some(shell.program().as_str())
    );
    assert_eq!(dispatch.attr_bool("rex.login_shell"), Some(true));
    // And the record too.
    let out = run({
        let mut cmd = binaries::core_client(stack.dir.path()).unwrap();
        cmd.args(["history", "--json", "--limit", "1"]);
        cmd
    });
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        history[0]["program"].as_str(),
        Some(shell.program().as_str()),
        "{history}"
    );
}

#[test]
fn connection_and_auth_failures_exit_255_with_one_line() {
    let stack = ProcStack::start(&[]).unwrap();

    // A client key the exec-server does not authorize.
    binaries::keygen("core-client", stack.dir.path(), "stranger.key").unwrap();
    let stranger = stack.dir.path().join("stranger.key");
    let cmd = binaries::exec_command(
        &stack.relay_url,
        &stack.server_pub,
        &stranger,
        &[],
        &["true"],
    )
    .unwrap();
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not authorize"), "{err}");

    // An exec-server key nobody registered.
    let other = binaries::keygen("exec-server", stack.dir.path(), "other.key").unwrap();
    let cmd = binaries::exec_command(&stack.relay_url, &other, &stack.client_key, &[], &["true"])
        .unwrap();
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no exec-server with this key"), "{err}");

    // A relay that is not there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let cmd = binaries::exec_command(
        &nowhere,
        &stack.server_pub,
        &stack.client_key,
        &[],
        &["true"],
    )
    .unwrap();
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn keygen_writes_a_private_file_and_prints_the_public_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for bin in ["exec-server", "core-client"] {
        let name = format!("{bin}.key");
        let public = binaries::keygen(bin, dir.path(), &name).unwrap();
        assert_eq!(public.len(), 44);
        assert!(public.parse::<proto::keys::PublicKey>().is_ok());
        let mode = std::fs::metadata(dir.path().join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The public half beside it, as ssh-keygen writes it: one line,
        // readable as a key file and as an authorized-keys line.
        let pub_path = dir.path().join(format!("{name}.pub"));
        assert_eq!(
            std::fs::read_to_string(&pub_path).unwrap(),
            format!("{public}\n")
        );
        assert_eq!(
            proto::keys::PublicKey::read_file(&pub_path).unwrap(),
            public.parse().unwrap()
        );
        let keys = proto::keys::AuthorizedKeys::read_file(&pub_path).unwrap();
        assert!(keys.contains(&public.parse().unwrap()));
        // A second keygen never overwrites a key.
        let again = Command::new(binaries::path(bin).unwrap())
            .args(["keygen", "--out"])
            .arg(dir.path().join(&name))
            .output()
            .unwrap();
        assert!(!again.status.success());
    }
}

#[test]
fn trace_show_prints_the_last_command_as_a_waterfall() {
    let stack = ProcStack::start(&[]).unwrap();
    let traces = stack.dir.path().join("traces.jsonl");
    let cmd = stack.exec_with(&["--print-trace-id"], &["sh", "-c", "echo hi"]);
    let out = run(cmd);
    assert!(out.status.success());
    let id = binaries::printed_trace_id(&out).unwrap();
    // One trace per line, OTLP JSON: the command's (the client's spans and,
    // written apart, the exec-server's stages it brought home), and the
    // record writer's own (linked) traces.
    let text = std::fs::read_to_string(&traces).unwrap();
    let mut command_lines = std::collections::BTreeMap::new();
    for l in text.lines() {
        let line: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(line["resourceSpans"].is_array(), "{line}");
        let ids: std::collections::BTreeSet<String> = line["resourceSpans"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rs| rs["scopeSpans"].as_array().unwrap().iter())
            .flat_map(|ss| ss["spans"].as_array().unwrap().iter())
            .map(|s| s["traceId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1, "one trace per line: {l}");
        if ids.contains(&id) {
            let services: Vec<String> = line["resourceSpans"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|rs| rs["resource"]["attributes"].as_array().unwrap().iter())
                .filter(|kv| kv["key"] == "service.name")
                .map(|kv| kv["value"]["stringValue"].as_str().unwrap().to_owned())
                .collect();
            for service in services {
                *command_lines.entry(service).or_insert(0) += 1;
            }
        }
    }
    // The client's spans leave in two lines: everything until the flush
    // at exit, then `cli.run` and `cli.flush`, which end once it is done;
    // the exec-server's stages and the relay's forwards it brought home,
    // one line each.
    let expected: std::collections::BTreeMap<String, i32> = [
        ("core-client".to_owned(), 2),
        ("exec-server".to_owned(), 1),
        ("relay".to_owned(), 1),
    ]
    .into();
    assert_eq!(command_lines, expected);
    // Three processes, no collector: every service's stages are there and
    // tile the dispatch exactly, the wire split at the relay (the
    // exec-server's and the relay's placed on the client's clock), and the
    // CLI's own stages tile its whole run around the dispatch.
    let spans = trace_check::from_trace_file(&traces, &id);
    let dispatch = trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH);
    assert_eq!(
        trace_check::path_of(&spans, "core-client"),
        trace_check::RELAYED_PATH
    );
    assert_eq!(
        trace_check::by_name(&spans, telemetry::spans::LINK_TRANSIT).len(),
        4
    );
    trace_check::assert_tiles(&spans, dispatch, trace_check::RemoteClock::Placed);
    trace_check::assert_exec_tree(&spans);
    trace_check::assert_cli_run_tiles(&spans);
    let roots = trace_check::roots(&spans);
    assert_eq!(roots.len(), 1, "one root");
    assert_eq!(roots[0].name, telemetry::spans::CLI_RUN);
    // Each span says which host it was made on (the exec-server's, brought
    // home, name its own).
    for s in &spans {
        assert!(
            s.attributes.contains_key(telemetry::host::HOST_NAME) || s.service == "core-client",
            "{} from {} names no host",
            s.name,
            s.service
        );
    }

    let show = |selector: &str| {
        Command::new(binaries::path("core-client").unwrap())
            .args(["trace", "show", selector])
            .env("REX_TRACE_FILE", &traces)
            .env("XDG_CONFIG_HOME", stack.dir.path().join("config"))
            .output()
            .unwrap()
    };
    for selector in ["last", id.as_str()] {
        let out = show(selector);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&id), "{text}");
        for name in [
            "tool.dispatch",
            "session.acquire",
            "noise.handshake",
            "terminal.delivery",
            "exec.first_output",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        // The waterfall's indentation: the CLI's run, its dispatch, and a
        // cold start's set-up, beside the path under the dispatch (the
        // command rode in handshake message 1).
        assert!(text.contains("\ncli.run"), "{text}");
        assert!(text.contains("\n  cli.startup"), "{text}");
        assert!(text.contains("\n  tool.dispatch"), "{text}");
        assert!(text.contains("\n    relay.connect"), "{text}");
        assert!(text.contains("\n  cli.flush"), "{text}");
        // With no collector, the exec-server's stages came home inside the
        // session, and the relay's forwards on its frames: all three
        // services are shown with the client's, and how each was placed.
        assert!(
            text.lines().any(|l| l.contains("services: ")
                && l.contains("exec-server")
                && l.contains("relay")),
            "{text}"
        );
        assert!(
            text.contains("relay's forwards: told on its frames"),
            "{text}"
        );
        assert!(text.contains("relay.forward"), "{text}");
        for name in [
            "rpc.server.queue",
            "rpc.server.exec",
            "process.spawn",
            "process.run",
            "terminal.push",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        // The per-stage table.
        assert!(text.contains("share"), "{text}");
    }
    // Clear errors for a bad id, an unknown id, and no file.
    let out = show("not-a-trace");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 hex digits"));
    let out = show("00000000000000000000000000000001");
    assert!(!out.status.success());
    let out = Command::new(binaries::path("core-client").unwrap())
        .args(["trace", "show", "last"])
        .env("REX_TRACE_FILE", stack.dir.path().join("none.jsonl"))
        .env("XDG_CONFIG_HOME", stack.dir.path().join("config"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("none.jsonl"), "{err}");
}

/// An exec-server that sends no stage summaries (as one from before them
/// does, here `--no-call-timings`): the command runs, its trace still
/// tiles the dispatch (the exec-server's side one `remote.unreported`
/// stage between the relay's forwards), and the waterfall prints, saying
/// the remote side is not known.
#[test]
fn an_exec_server_that_sends_no_stages_still_gives_a_tiled_trace_and_a_waterfall() {
    let mut stack = ProcStack::start(&[]).unwrap();
    stack.restart_server(&["--no-call-timings"], 1).unwrap();
    let traces = stack.dir.path().join("traces.jsonl");
    let out = run(stack.exec_with(&["--print-trace-id"], &["sh", "-c", "echo hi"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hi\n");
    let id = binaries::printed_trace_id(&out).unwrap();
    let spans = trace_check::from_trace_file(&traces, &id);
    assert!(
        spans.iter().all(|s| s.service != "exec-server"),
        "no exec-server stages were sent"
    );
    let dispatch = trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH);
    assert_eq!(
        trace_check::path_of(&spans, "core-client"),
        trace_check::RELAYED_UNREPORTED_PATH
    );
    trace_check::assert_parent_in(
        &spans,
        "core-client",
        telemetry::spans::REMOTE_UNREPORTED,
        telemetry::spans::TOOL_DISPATCH,
    );
    trace_check::assert_tiles(&spans, dispatch, trace_check::RemoteClock::Placed);
    trace_check::assert_cli_run_tiles(&spans);

    let out = Command::new(binaries::path("core-client").unwrap())
        .args(["trace", "show", "last"])
        .env("REX_TRACE_FILE", &traces)
        .env("XDG_CONFIG_HOME", stack.dir.path().join("config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("exec-server's stages: not known"), "{text}");
    assert!(text.contains("remote.unreported"), "{text}");
    assert!(text.contains("terminal.delivery"), "{text}");
}

#[test]
fn demo_runs_a_command_and_prints_its_trace_from_all_three_services() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces.jsonl");
    let out = Command::new(binaries::path("rex-demo").unwrap())
        .env("REX_TRACE_FILE", &traces)
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("hello from"), "{text}");
    // The waterfall, with spans from each service, and the stage table.
    let header = text
        .lines()
        .find(|l| l.starts_with("trace "))
        .unwrap_or_default();
    let services: Vec<&str> = header
        .split_once("services: ")
        .map(|(_, list)| {
            list.split(", ")
                .filter_map(|s| s.split(" on ").next())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(services, ["core-client", "relay", "exec-server"], "{text}");
    for span in [
        "tool.dispatch",
        "relay.forward",
        "process.run",
        "terminal.delivery",
    ] {
        assert!(text.contains(span), "{span} missing:\n{text}");
    }
    assert!(text.contains("share"), "{text}");
    // The child saw the trace, naming a span that is in the waterfall.
    let tp = text
        .lines()
        .find_map(|l| l.strip_prefix("TRACEPARENT seen by the child: "))
        .unwrap();
    let tp = telemetry::w3c::TraceParent::parse(tp.trim()).unwrap();
    assert!(text.contains(&hex::encode(tp.trace_id)), "{text}");
    assert!(traces.exists());
}

#[test]
fn a_skewed_exec_server_clock_still_nests_and_tiles_in_the_local_trace() {
    let Some(lib) = binaries::libfaketime() else {
        return;
    };
    let lib = lib.to_str().unwrap().to_owned();
    for skew in ["+2s", "-0.5s"] {
        // The relay and the exec-server run on the skewed clock (timers on
        // the real monotonic clock); the client on the real one.
        let stack = ProcStack::start(&[
            ("LD_PRELOAD", &lib),
            ("FAKETIME", skew),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_DONT_RESET", "1"),
            // Their clocks are not their kernel's: they must not say so.
            ("REX_CLOCK_STATUS", "withheld"),
        ])
        .unwrap();
        let traces = stack.dir.path().join("traces.jsonl");
        let out = run(stack.exec_with(&["--print-trace-id"], &["sh", "-c", "echo hi"]));
        assert!(
            out.status.success(),
            "{skew}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = binaries::printed_trace_id(&out).unwrap();
        let spans = trace_check::from_trace_file(&traces, &id);
        let dispatch = trace_check::one(&spans, telemetry::spans::TOOL_DISPATCH);
        // The skew was seen: the estimate is off by no more than its own
        // uncertainty (half the round trip it was measured over, however
        // slow the machine), plus a millisecond of clock granularity...
        // (The offset the stages were placed with and its uncertainty come
        // from the same sample, the best one once the call's own exchange
        // was added; the dispatch's offset is the session's at dispatch.)
        assert!(dispatch.attr_i64("rex.clock_offset_ns").is_some());
        let transit = trace_check::by_name(&spans, telemetry::spans::LINK_TRANSIT)[0];
        let offset = transit.attr_i64("rex.clock.offset_ns").unwrap();
        let uncertainty = transit.attr_i64("rex.clock.bound_ns").unwrap();
        assert_eq!(transit.attr_str("rex.clock.source"), Some("two-way"));
        let expected: i64 = if skew.starts_with('+') {
            2_000_000_000
        } else {
            -500_000_000
        };
        assert!(
            (offset - expected).abs() <= uncertainty + 1_000_000,
            "{skew}: clock offset estimate {offset} ns, uncertainty {uncertainty} ns"
        );
        // ...and corrected: every exec-server stage nests in its parent on
        // the client's clock, and the stages tile the dispatch exactly.
        let remote: Vec<_> = spans
            .iter()
            .filter(|s| s.service == "exec-server")
            .collect();
        assert!(remote.len() >= 8, "{skew}: {} remote stages", remote.len());
        trace_check::assert_contained(&spans, 0);
        trace_check::assert_tiles(&spans, dispatch, trace_check::RemoteClock::Placed);
    }
}

/// Waits for `child` to exit, at most `within` (a failure bound only).
fn wait_within(child: &mut std::process::Child, within: std::time::Duration) -> ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{:?} did not exit within {within:?}", child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn exec_into_a_reader_that_goes_away_exits_141_and_ends_the_remote_command() {
    use std::io::BufRead;
    let stack = ProcStack::start(&[]).unwrap();
    let pid_file = stack.dir.path().join("remote.pid");
    // `exec … | head -1`: one line read, then the reader goes away, while
    // the remote command writes on for ever.
    let script = format!("echo $$ > {}; while :; do echo y; done", pid_file.display());
    let mut child = stack
        .exec(&["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "y\n");
    drop(reader);
    let status = wait_within(&mut child, std::time::Duration::from_secs(60));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The remote command was ended, not left writing to nobody.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while nix::sys::signal::kill(pid, None).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the remote command {pid} still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn demo_into_a_reader_that_went_away_exits_141_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // `rex-demo | head -0`: a stdout whose reader is gone.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(binaries::path("rex-demo").unwrap())
        .env("REX_TRACE_FILE", dir.path().join("traces.jsonl"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn exec_server_relay_takes_the_addresses_core_client_takes_and_refuses_bad_ones_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server_pub = binaries::keygen("exec-server", dir.path(), "server.key").unwrap();
    let client_pub = binaries::keygen("core-client", dir.path(), "client.key").unwrap();
    let ak = dir.path().join("authorized_keys");
    std::fs::write(&ak, format!("{client_pub}\n")).unwrap();
    let key = dir.path().join("server.key");
    let server_args = |relay: &str| {
        vec![
            "--relay".to_owned(),
            relay.to_owned(),
            "--key".to_owned(),
            key.to_str().unwrap().to_owned(),
            "--authorized-keys".to_owned(),
            ak.to_str().unwrap().to_owned(),
            "--no-records".to_owned(),
        ]
    };
    // Bad addresses: one line, exit 2, at once (never retried).
    for bad in ["htp://127.0.0.1:7600", "127.0.0.1:99999", "[::1]7600", ""] {
        let out = Command::new(binaries::path("exec-server").unwrap())
            .args(server_args(bad))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{bad}: {stderr}");
        assert!(
            stderr.starts_with("exec-server: --relay: relay address"),
            "{bad}: {stderr}"
        );
    }
    // `exec-server health` reads --relay the same way.
    let out = Command::new(binaries::path("exec-server").unwrap())
        .args(["health", "--relay", "htp://x", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // HOST:PORT, as core-client takes it: registers, and serves.
    let relay = binaries::spawn("relay", &["--listen", "127.0.0.1:0"], &[]).unwrap();
    let line = relay
        .wait_for_line("listening on", std::time::Duration::from_secs(30))
        .unwrap();
    let relay_addr = line.rsplit(' ').next().unwrap().trim().to_owned();
    let args = server_args(&relay_addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = binaries::spawn("exec-server", &args, &[]).unwrap();
    server
        .wait_for_line("registered with relay", std::time::Duration::from_secs(30))
        .unwrap();
    let out = run(binaries::exec_command(
        &relay_addr,
        &server_pub,
        &dir.path().join("client.key"),
        &[],
        &["sh", "-c", "echo via; exit 6"],
    )
    .unwrap());
    assert_eq!(out.stdout, b"via\n");
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_relay_restarted_on_its_port_right_after_sigterm_binds_at_once() {
    let mut stack = ProcStack::start(&[]).unwrap();
    // The relay has a live connection (the exec-server's registration) to
    // drain when it is told to stop, and accepted connections that leave
    // TIME_WAIT behind.
    let out = run(stack.exec(&["true"]));
    assert!(out.status.success());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(stack.relay.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // At once, while the old relay may still drain: the port is free.
    stack.start_relay_again().unwrap();
    // And the new relay serves: the exec-server registers again.
    stack
        .server
        .wait_for_line("registered with relay", std::time::Duration::from_secs(60))
        .unwrap();
    let out = run(stack.exec(&["sh", "-c", "echo again"]));
    assert_eq!(
        out.stdout,
        b"again\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
