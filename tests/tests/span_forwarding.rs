//! A client with no collector of its own hands its spans through the
//! session to an exec-server that exports them: they reach the
//! exec-server's collector once, marked `rex.forwarded_for`; a client with
//! its own endpoint forwards nothing; an exec-server with forwarding off
//! takes none, and the CLI says so once under `-v`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use integration_tests::binaries::{self, ProcStack};
use integration_tests::otlp::{AttrValue, OtlpReceiver, RecordedSpan};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use telemetry::spans;

const WAIT: Duration = Duration::from_secs(60);

fn stack(extra: &[(&str, &str)], rx: &OtlpReceiver) -> ProcStack {
    let endpoint = rx.endpoint();
    let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    env.extend_from_slice(extra);
    ProcStack::start(&env).unwrap()
}

/// `core-client exec --print-trace-id FLAGS -- sh -c 'echo hi'` with `env`;
/// its stderr and trace id.
fn exec(stack: &ProcStack, flags: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut all = flags.to_vec();
    all.push("--print-trace-id");
    let mut cmd = stack.exec_with(&all, &["sh", "-c", "echo hi"]);
    cmd.env_remove("TRACEPARENT").env_remove("TRACESTATE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = binaries::run_with_stdin(cmd, b"").unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hi\n");
    let id = binaries::printed_trace_id(&out).unwrap();
    (String::from_utf8_lossy(&out.stderr).into_owned(), id)
}

/// Stops the relay and the exec-server (they flush on SIGTERM).
fn terminate(stack: &mut ProcStack) {
    for p in [&mut stack.relay, &mut stack.server] {
        kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM).unwrap();
    }
    for p in [&mut stack.relay, &mut stack.server] {
        let deadline = Instant::now() + WAIT;
        while p.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "a service ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The receiver's spans once nothing new has arrived for a while.
async fn settle(rx: &OtlpReceiver) -> Vec<RecordedSpan> {
    let deadline = Instant::now() + WAIT;
    let mut last = rx.spans().len();
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = rx.spans().len();
        if n != last {
            last = n;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(800) {
            return rx.spans();
        }
        assert!(Instant::now() < deadline, "spans never settled");
    }
}

fn of(spans: &[RecordedSpan], trace: &str, service: &str) -> Vec<RecordedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace && s.service == service)
        .cloned()
        .collect()
}

/// Every span id once.
fn assert_once(spans: &[RecordedSpan]) {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "a span arrived twice: {spans:#?}");
}

fn client_key(stack: &ProcStack) -> String {
    proto::keys::StaticKeypair::read_file(&stack.client_key)
        .unwrap()
        .public()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_collector_reaches_the_exec_servers_once() {
    let rx = OtlpReceiver::start().await.unwrap();
    let mut stack = stack(&[], &rx);
    let (stderr, trace) = exec(&stack, &["-v"], &[]);
    assert_eq!(
        stderr.matches("spans: handed to the exec-server").count(),
        1,
        "{stderr}"
    );
    terminate(&mut stack);
    rx.wait_for(WAIT, |s| {
        let mine = of(s, &trace, "core-client");
        mine.iter().any(|x| x.name == spans::TOOL_DISPATCH)
            && mine.iter().any(|x| x.name == spans::RELAY_CONNECT)
    })
    .await;
    let all = settle(&rx).await;
    let client = of(&all, &trace, "core-client");
    assert_once(&client);
    let key = client_key(&stack);
    for s in &client {
        assert_eq!(
            s.resource.get(spans::FORWARDED_FOR),
            Some(&AttrValue::Str(key.clone())),
            "{s:?}"
        );
    }
    // The stages of the call's path, the client's own included, in one
    // trace with the relay's and the exec-server's.
    for name in [
        spans::TOOL_DISPATCH,
        spans::RELAY_CONNECT,
        spans::NOISE_HANDSHAKE,
        spans::RPC_CLIENT_QUEUE,
        spans::TERMINAL_HANDOFF,
    ] {
        assert!(client.iter().any(|s| s.name == name), "{name}: {client:#?}");
    }
    assert!(!of(&all, &trace, "exec-server").is_empty());
    assert!(!of(&all, &trace, "relay").is_empty());
    // Nothing of the services' own is marked as forwarded.
    assert!(
        all.iter()
            .filter(|s| s.service != "core-client")
            .all(|s| !s.resource.contains_key(spans::FORWARDED_FOR))
    );
    rx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_its_own_collector_forwards_nothing() {
    let rx = OtlpReceiver::start().await.unwrap();
    let mut stack = stack(&[], &rx);
    let endpoint = rx.endpoint();
    let (stderr, trace) = exec(
        &stack,
        &["-v"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    assert!(!stderr.contains("spans:"), "{stderr}");
    terminate(&mut stack);
    rx.wait_for(WAIT, |s| {
        of(s, &trace, "core-client")
            .iter()
            .any(|x| x.name == spans::CLI_RUN)
    })
    .await;
    let all = settle(&rx).await;
    let client = of(&all, &trace, "core-client");
    assert_once(&client);
    assert!(
        client
            .iter()
            .all(|s| !s.resource.contains_key(spans::FORWARDED_FOR)),
        "exported by the client itself only"
    );
    rx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_server_with_forwarding_off_takes_none_and_the_cli_says_so() {
    let rx = OtlpReceiver::start().await.unwrap();
    let mut stack = stack(&[("REX_NO_SPAN_FORWARDING", "true")], &rx);
    let (stderr, trace) = exec(&stack, &["-v"], &[]);
    assert_eq!(
        stderr
            .matches("the exec-server does not take forwarded spans")
            .count(),
        1,
        "{stderr}"
    );
    terminate(&mut stack);
    rx.wait_for(WAIT, |s| !of(s, &trace, "exec-server").is_empty())
        .await;
    let all = settle(&rx).await;
    assert!(of(&all, &trace, "core-client").is_empty());
    // They stay in the local trace file.
    let local = std::fs::read_to_string(stack.client_key.with_file_name("traces.jsonl")).unwrap();
    assert!(local.contains(&trace) && local.contains(spans::TOOL_DISPATCH));
    rx.shutdown().await.unwrap();
}

/// The spans of `trace` named `name` the receiver holds.
fn named(spans: &[RecordedSpan], trace: &str, name: &str) -> usize {
    of(spans, trace, "core-client")
        .iter()
        .filter(|s| s.name == name)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_last_spans_go_with_the_next_session_once() {
    let rx = OtlpReceiver::start().await.unwrap();
    let mut stack = stack(&[], &rx);
    let (stderr, first) = exec(&stack, &["-v"], &[]);
    // `cli.run` and its last stages end after the session closed: they
    // wait in the spool.
    assert_eq!(
        stderr.matches("left for the next session").count(),
        1,
        "{stderr}"
    );
    let spool = stack
        .client_key
        .with_file_name("client-data")
        .join("span_spool");
    let pending = |spool: &std::path::Path| {
        std::fs::read_dir(spool)
            .unwrap()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| f.file_name().to_string_lossy().ends_with(".batch"))
            .count()
    };
    assert!(pending(&spool) >= 1);
    // The second command's session takes them after its call's final
    // event; its own last spans wait in turn.
    let (_, second) = exec(&stack, &[], &[]);
    rx.wait_for(WAIT, |s| named(s, &first, spans::CLI_RUN) >= 1)
        .await;
    let (_, third) = exec(&stack, &[], &[]);
    rx.wait_for(WAIT, |s| named(s, &second, spans::CLI_RUN) >= 1)
        .await;
    terminate(&mut stack);
    let all = settle(&rx).await;
    let key = client_key(&stack);
    for trace in [&first, &second] {
        let client = of(&all, trace, "core-client");
        assert_once(&client);
        for name in [
            spans::CLI_RUN,
            spans::CLI_STARTUP,
            spans::TOOL_DISPATCH,
            spans::CLI_FINISH,
            spans::CLI_FLUSH,
        ] {
            assert_eq!(named(&all, trace, name), 1, "{name}: {client:#?}");
        }
        assert!(client.iter().all(|s| s.resource.get(spans::FORWARDED_FOR)
            == Some(&AttrValue::Str(key.clone()))));
        // The whole trace under the one root.
        let root = client.iter().find(|s| s.name == spans::CLI_RUN).unwrap();
        assert!(
            client
                .iter()
                .any(|s| s.parent_span_id.as_deref() == Some(root.span_id.as_str()))
        );
    }
    // The third's wait for a fourth session: in the spool, not sent.
    assert_eq!(named(&all, &third, spans::CLI_RUN), 0);
    assert!(named(&all, &third, spans::TOOL_DISPATCH) == 1);
    assert!(pending(&spool) >= 1);
    rx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_spooled_when_forwarding_is_off_on_either_side() {
    let rx = OtlpReceiver::start().await.unwrap();
    let spool = |stack: &ProcStack| {
        stack
            .client_key
            .with_file_name("client-data")
            .join("span_spool")
    };
    // The exec-server takes none.
    let mut off = stack(&[("REX_NO_SPAN_FORWARDING", "true")], &rx);
    let (stderr, _) = exec(&off, &["-v"], &[]);
    assert!(!stderr.contains("left for the next session"), "{stderr}");
    assert!(!spool(&off).exists());
    terminate(&mut off);
    // The client forwards none.
    let mut on = stack(&[], &rx);
    let (stderr, _) = exec(&on, &["-v", "--no-span-forwarding"], &[]);
    assert!(!stderr.contains("left for the next session"), "{stderr}");
    assert!(!spool(&on).exists());
    terminate(&mut on);
    rx.shutdown().await.unwrap();
}

/// `core-client agent ARGS` in the stack's sandbox (the socket, trace
/// file and data directory its `exec` commands use), no OTLP endpoint.
fn agent(stack: &ProcStack, args: &[&str]) -> std::process::Command {
    let dir = stack.client_key.parent().unwrap();
    let mut cmd = std::process::Command::new(binaries::path("core-client").unwrap());
    cmd.arg("agent")
        .args(args)
        .env("REX_AGENT_SOCKET", dir.join("agent").join("agent.sock"))
        .env("REX_TRACE_FILE", dir.join("traces.jsonl"))
        .env("REX_DATA_DIR", dir.join("client-data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("REX_NO_SPAN_FORWARDING")
        .stdin(std::process::Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_the_agent_forward_the_agents_and_the_clis_spans_once() {
    let rx = OtlpReceiver::start().await.unwrap();
    let mut stack = stack(&[], &rx);
    let out = agent(&stack, &["start", "--persist", "10m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (stderr, first) = exec(&stack, &["-v"], &[]);
    assert!(stderr.contains("through the agent"), "{stderr}");
    // The CLI's own spans (it has no session) wait in the spool for the
    // agent's next session to the exec-server.
    assert_eq!(
        stderr.matches("left for the next session").count(),
        1,
        "{stderr}"
    );
    // The agent's spans of the call went with its session.
    rx.wait_for(WAIT, |s| {
        s.iter()
            .any(|x| x.trace_id == first && x.name == spans::AGENT_DISPATCH)
    })
    .await;
    let (stderr, second) = exec(&stack, &["-v"], &[]);
    assert!(stderr.contains("through the agent"), "{stderr}");
    rx.wait_for(WAIT, |s| {
        s.iter()
            .any(|x| x.trace_id == first && x.name == spans::CLI_RUN)
    })
    .await;
    let _ = agent(&stack, &["stop"]).output();
    terminate(&mut stack);
    let all = settle(&rx).await;
    let key = client_key(&stack);
    let mine: Vec<RecordedSpan> = all
        .iter()
        .filter(|s| s.trace_id == first && s.service != "exec-server" && s.service != "relay")
        .cloned()
        .collect();
    assert_once(&mine);
    assert!(
        mine.iter()
            .all(|s| s.resource.get(spans::FORWARDED_FOR) == Some(&AttrValue::Str(key.clone())))
    );
    // The CLI's root and the agent's dispatch of the call, once each.
    for name in [spans::CLI_RUN, spans::AGENT_DISPATCH] {
        assert_eq!(
            mine.iter().filter(|s| s.name == name).count(),
            1,
            "{name}: {mine:#?}"
        );
    }
    // The second command's agent-side spans went with its own call.
    assert!(
        all.iter()
            .any(|s| s.trace_id == second && s.name == spans::AGENT_DISPATCH)
    );
    rx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_told_not_to_forward_keeps_its_spans_local() {
    let rx = OtlpReceiver::start().await.unwrap();
    // Told by its flag, then by the config file's `[defaults]`.
    for told in ["flag", "config"] {
        let mut stack = stack(&[], &rx);
        let dir = stack.client_key.parent().unwrap().to_path_buf();
        let mut start = vec!["start", "--persist", "10m"];
        if told == "flag" {
            start.push("--no-span-forwarding");
        } else {
            let config = dir.join("config").join("rex");
            std::fs::create_dir_all(&config).unwrap();
            std::fs::write(
                config.join("config.toml"),
                "[defaults]\nspan_forwarding = false\n",
            )
            .unwrap();
        }
        let out = agent(&stack, &start).output().unwrap();
        assert!(out.status.success(), "{told}: {out:?}");
        let (stderr, first) = exec(&stack, &["-v"], &[]);
        assert!(stderr.contains("through the agent"), "{told}: {stderr}");
        // The agent's session takes no spans from it: the CLI spools none.
        assert!(
            !stderr.contains("left for the next session"),
            "{told}: {stderr}"
        );
        let (_, second) = exec(&stack, &[], &[]);
        // The exec-server's side of each command arrives; nothing of the
        // agent's or the CLI's does.
        rx.wait_for(WAIT, |s| {
            [&first, &second].iter().all(|t| {
                s.iter()
                    .any(|x| &x.trace_id == *t && x.name == spans::RPC_SERVER_EXEC)
            })
        })
        .await;
        let _ = agent(&stack, &["stop"]).output();
        terminate(&mut stack);
        let all = settle(&rx).await;
        for t in [&first, &second] {
            let theirs: Vec<&RecordedSpan> = all
                .iter()
                .filter(|s| &s.trace_id == t && s.service != "exec-server" && s.service != "relay")
                .collect();
            assert!(theirs.is_empty(), "{told}: forwarded: {theirs:#?}");
        }
        // They stay in the local trace file.
        let local = std::fs::read_to_string(dir.join("traces.jsonl")).unwrap();
        assert!(local.contains(&first), "{told}");
        assert!(local.contains(spans::AGENT_DISPATCH), "{told}");
        assert!(
            !dir.join("client-data").join("span_spool").exists(),
            "{told}"
        );
        rx.clear();
    }
    rx.shutdown().await.unwrap();
}
