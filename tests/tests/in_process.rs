//! Relay, exec-server and client in one process on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::proxy::{self, Behaviour};
use integration_tests::stack::{Stack, TestRelay, TestServer};
use proto::keys::StaticKeypair;
use rex_client::{
    Client, ClientConfig, ClientError, ConnectError, Event, ExecFailure, ExecSpec, ExitStatus,
    Target,
};

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script])
}

#[tokio::test]
async fn several_mib_of_stdout_and_stderr_are_byte_exact() {
    let stack = Stack::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_data = random_bytes(6 * 1024 * 1024 + 17);
    let err_data = random_bytes(3 * 1024 * 1024 + 5);
    std::fs::write(dir.path().join("out"), &out_data).unwrap();
    std::fs::write(dir.path().join("err"), &err_data[..]).unwrap();
    let mut spec = sh("cat out; cat err >&2");
    spec.cwd = Some(dir.path().to_path_buf());
    let output = stack.client().output(spec).await.unwrap().unwrap();
    assert_eq!(output.status, ExitStatus::Code(0));
    assert!(output.stdout == out_data, "stdout differs");
    assert!(output.stderr == err_data, "stderr differs");
}

#[tokio::test]
async fn events_arrive_in_order_with_started_first() {
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    let mut run = client
        .exec(sh("echo one; echo two >&2; exit 0"))
        .await
        .unwrap();
    let first = run.next().await.unwrap();
    assert!(matches!(first, Event::Started { pid, program: None } if pid > 0));
    let mut rest = vec![];
    while let Some(ev) = run.next().await {
        rest.push(ev);
    }
    assert_eq!(rest.last(), Some(&Event::Exited(ExitStatus::Code(0))));
}

#[tokio::test]
async fn stdin_round_trip() {
    let stack = Stack::start().await.unwrap();
    let data = random_bytes(2 * 1024 * 1024 + 3);
    let mut spec = ExecSpec::new(["cat"]);
    spec.stdin = true;
    let run = stack.client().exec(spec).await.unwrap();
    let control = run.controller();
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            control.write_stdin(&data).await.unwrap();
            control.close_stdin().await.unwrap();
        })
    };
    let output = run.output().await.unwrap();
    writer.await.unwrap();
    assert_eq!(output.status, ExitStatus::Code(0));
    assert!(output.stdout == data, "stdin did not round-trip");
}

#[tokio::test]
async fn exit_codes_and_signals() {
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    let ok = client
        .output(ExecSpec::new(["true"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.status, ExitStatus::Code(0));
    let three = client.output(sh("echo hi; exit 3")).await.unwrap().unwrap();
    assert_eq!(three.status, ExitStatus::Code(3));
    assert_eq!(three.stdout, b"hi\n");
    let killed = client.output(sh("kill -9 $$")).await.unwrap().unwrap();
    assert_eq!(killed.status, ExitStatus::Signal(9));
    assert_eq!(killed.status.shell_code(), 137);
}

#[tokio::test]
async fn signal_reaches_the_whole_process_group() {
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    // The shell prints its background child's pid, then waits.
    let mut run = client.exec(sh("sleep 1000 & echo $!; wait")).await.unwrap();
    let mut pid_line = Vec::new();
    while !pid_line.ends_with(b"\n") {
        match run.next().await.unwrap() {
            Event::Stdout(d) => pid_line.extend_from_slice(&d),
            Event::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let bg: i32 = String::from_utf8(pid_line).unwrap().trim().parse().unwrap();
    run.signal(15).await.unwrap();
    let mut status = None;
    while let Some(ev) = run.next().await {
        if let Event::Exited(s) = ev {
            status = Some(s);
        }
    }
    assert_eq!(status, Some(ExitStatus::Signal(15)));
    // The background sleep (same host in this test) got the signal too.
    let gone = (0..200).any(|_| {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(bg), None).is_ok();
        if alive {
            std::thread::sleep(Duration::from_millis(10));
        }
        !alive
            || std::fs::read_to_string(format!("/proc/{bg}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
    });
    assert!(gone, "background process survived the group signal");
}

#[tokio::test]
async fn cancel_ends_the_call_with_its_exit() {
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    let mut run = client.exec(ExecSpec::new(["sleep", "1000"])).await.unwrap();
    assert!(matches!(run.next().await, Some(Event::Started { .. })));
    run.cancel().await.unwrap();
    assert_eq!(run.next().await, Some(Event::Exited(ExitStatus::Signal(9))));
    // The session is still usable.
    let out = client.output(sh("echo after")).await.unwrap().unwrap();
    assert_eq!(out.stdout, b"after\n");
}

#[tokio::test]
async fn concurrent_commands_on_one_session_and_across_sessions() {
    let stack = Stack::start().await.unwrap();
    let shared = stack.client();
    let mut tasks = vec![];
    for i in 0..24 {
        // Even tasks share one client (one session); odd ones get their own.
        let client = if i % 2 == 0 {
            shared.clone()
        } else {
            stack.client()
        };
        tasks.push(tokio::spawn(async move {
            let out = client
                .output(sh(&format!("printf 'task {i}\\n'; exit {}", i % 7)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(out.stdout, format!("task {i}\n").into_bytes());
            assert_eq!(out.status, ExitStatus::Code(i % 7));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        shared.sessions_opened(),
        1,
        "the shared calls ran on one session"
    );
}

#[tokio::test]
async fn session_is_reused_across_calls() {
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    assert_eq!(
        client.sessions_opened(),
        0,
        "nothing is dialled before a call"
    );
    for i in 0..3 {
        let out = client
            .output(sh(&format!("echo {i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout, format!("{i}\n").into_bytes());
    }
    assert_eq!(
        client.sessions_opened(),
        1,
        "one warm session served every call"
    );
    // After a clean close the next call opens a new session.
    client.close().await;
    let again = client.output(sh("echo again")).await.unwrap().unwrap();
    assert_eq!(again.stdout, b"again\n");
    assert_eq!(client.sessions_opened(), 2);
}

#[tokio::test]
async fn direct_connection_uses_the_same_protocol() {
    let stack = Stack::start().await.unwrap();
    let out = stack
        .direct_client()
        .unwrap()
        .output(sh("echo direct"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"direct\n");
}

#[tokio::test]
async fn unauthorized_client_key_is_rejected() {
    let stack = Stack::start().await.unwrap();
    let stranger = StaticKeypair::generate().unwrap();
    let client = Client::new(ClientConfig::new(
        stranger,
        stack.server.key.public(),
        Target::Relay(stack.relay.url()),
    ));
    let err = client.exec(sh("echo no")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Connect(ConnectError::Unauthorized(_))),
        "{err:?}"
    );
    assert!(err.is_connection());
}

#[tokio::test]
async fn unknown_exec_server_is_a_clear_error_at_once() {
    let stack = Stack::start().await.unwrap();
    let nobody = StaticKeypair::generate().unwrap();
    let client = Client::new(ClientConfig::new(
        stack.client_key.clone(),
        nobody.public(),
        Target::Relay(stack.relay.url()),
    ));
    let err = client.exec(sh("echo no")).await.unwrap_err();
    match err {
        ClientError::Connect(ConnectError::UnknownServer(id)) => {
            assert_eq!(id, nobody.public().server_id());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn wrong_server_key_is_rejected_even_if_a_relay_reroutes() {
    // The client pins server A, but a malicious relay sends the session to
    // server B (which authorizes the client). Noise IK must fail.
    let relay = TestRelay::start().await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let a = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let b = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let evil = proxy::start(
        relay.url(),
        Behaviour {
            reroute_to: Some(b.handle.server_id().to_owned()),
            ..Behaviour::default()
        },
    )
    .await
    .unwrap();
    let client = Client::new(ClientConfig::new(
        client_key,
        a.key.public(),
        Target::Relay(evil),
    ));
    let err = client.exec(sh("echo no")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Connect(ConnectError::Handshake(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn tampered_frame_ends_that_session_only() {
    let stack = Stack::start().await.unwrap();
    // This client knows no ticket of the exec-server's run, so the exec
    // request in its handshake message 1 is not run from there: data frame
    // 0 carries the hello and the request again, after the handshake.
    let evil = proxy::start(
        stack.relay.url(),
        Behaviour {
            tamper_data_frame: Some(0),
            ..Behaviour::default()
        },
    )
    .await
    .unwrap();
    let healthy = stack.client();
    let mut long = healthy.exec(sh("sleep 0.2; echo survived")).await.unwrap();
    let victim = Client::new(ClientConfig::new(
        stack.client_key.clone(),
        stack.server.key.public(),
        Target::Relay(evil),
    ));
    // The tampered frame also carried the hello: the session ends before
    // it is ready, and the call with it (its request had left, in message
    // 1, so the client says so and tries no other way).
    let err = victim.exec(sh("echo never")).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Connect(ConnectError::Unavailable(_) | ConnectError::Protocol(_))
        ),
        "{err:?}"
    );
    assert!(victim.request_left());
    let mut out = vec![];
    while let Some(ev) = long.next().await {
        if let Event::Stdout(d) = ev {
            out.extend_from_slice(&d);
        }
    }
    assert_eq!(out, b"survived\n");
}

#[tokio::test]
async fn missing_program_is_an_error_event() {
    let stack = Stack::start().await.unwrap();
    let err = stack
        .client()
        .output(ExecSpec::new(["definitely-not-a-program-xyz"]))
        .await
        .unwrap()
        .unwrap_err();
    match err {
        ExecFailure::NotFound(msg) => assert!(msg.contains("definitely-not-a-program-xyz")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        ExecFailure::NotFound(String::new()).shell_code(),
        127,
        "shell convention"
    );
}

#[tokio::test]
async fn relay_unreachable_is_a_connection_error() {
    let key = StaticKeypair::generate().unwrap();
    let server = StaticKeypair::generate().unwrap();
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(ClientConfig::new(
        key,
        server.public(),
        Target::Relay(format!("http://127.0.0.1:{port}")),
    ));
    let err = client.exec(sh("true")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Connect(ConnectError::Unreachable { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn exec_server_reregisters_after_relay_restart() {
    let relay = TestRelay::start().await.unwrap();
    let addr = relay.addr;
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let mut registered = server.handle.registration();
    relay.shutdown.cancel();
    relay.task.await.unwrap().unwrap();
    registered.wait_for(|r| !*r).await.unwrap();
    // A new relay on the same address.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(relay::serve(
        listener,
        relay::RelayConfig::default(),
        shutdown,
    ));
    registered.wait_for(|r| *r).await.unwrap();
    let client = Client::new(ClientConfig::new(
        client_key,
        server.key.public(),
        Target::Relay(format!("http://{addr}")),
    ));
    let out = client.output(sh("echo back")).await.unwrap().unwrap();
    assert_eq!(out.stdout, b"back\n");
}

/// A process that never reads its stdin, fed far more than every queue on
/// the way holds: the caller's writes wait, yet a signal and a cancel still
/// get through at once.
async fn stuck_stdin(
    stack: &Stack,
    script: &str,
) -> (rex_client::Execution, tokio::task::JoinHandle<()>) {
    let mut config = stack.client_config();
    // The smallest command queue: the stuck writer fills it.
    config.outbound_queue = 1;
    let client = Client::new(config);
    let mut spec = sh(script);
    spec.stdin = true;
    let mut run = client.exec(spec).await.unwrap();
    assert!(matches!(run.next().await, Some(Event::Started { .. })));
    let control = run.controller();
    let writer = tokio::spawn(async move {
        // 64 MiB: the stdin window, the backlog and the queue hold far less.
        let _ = control.write_stdin(&vec![b'x'; 64 << 20]).await;
    });
    // Let the writer run into the full queue (if this machine is slow it
    // may not have yet; the test then checks the easier case).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "64 MiB cannot have been taken");
    (run, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_not_held_up_by_stdin_the_process_never_reads() {
    let stack = Stack::start().await.unwrap();
    let (mut run, writer) = stuck_stdin(&stack, "exec sleep 1000").await;
    let signalled = async {
        run.signal(15).await.unwrap();
        run.next().await
    };
    let ended = tokio::time::timeout(Duration::from_secs(30), signalled)
        .await
        .expect("the signal waited behind stdin");
    assert_eq!(ended, Some(Event::Exited(ExitStatus::Signal(15))));
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_is_cancelled_even_with_its_queues_full() {
    let stack = Stack::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let (run, writer) = stuck_stdin(&stack, &script).await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Nobody waits for the call any more: its process group is killed.
    drop(run);
    let gone = async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting to be reaped.
            if stat.is_empty() || stat.contains(") Z") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), gone)
        .await
        .expect("the dropped call's process is still running");
    writer.abort();
}

#[tokio::test]
async fn a_caller_that_stops_reading_holds_up_its_own_call_only() {
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    // 64 MiB that nobody reads for now: far more than the output window.
    let mut flood = client
        .exec(sh("head -c 67108864 /dev/zero; echo done >&2"))
        .await
        .unwrap();
    assert!(matches!(flood.next().await, Some(Event::Started { .. })));
    // Other calls on the same session run to their end meanwhile.
    for i in 0..3 {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            client.output(sh(&format!("echo other {i}"))),
        )
        .await
        .expect("another call was held up by the caller that does not read")
        .unwrap()
        .unwrap();
        assert_eq!(out.stdout, format!("other {i}\n").into_bytes());
    }
    assert_eq!(client.sessions_opened(), 1, "one session served them all");
    // The flood's output was held back, not lost: all of it arrives now.
    let (mut stdout, mut stderr) = (0usize, Vec::new());
    let status = loop {
        match flood.next().await.unwrap() {
            Event::Stdout(d) => {
                assert!(d.iter().all(|b| *b == 0));
                stdout += d.len();
            }
            Event::Stderr(d) => stderr.extend_from_slice(&d),
            Event::Exited(s) => break s,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(stdout, 64 * 1024 * 1024);
    assert_eq!(stderr, b"done\n");
}

#[tokio::test]
async fn a_signal_or_cancel_right_after_the_start_is_not_lost() {
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    // Signals and cancels travel on a queue the driver serves first: they
    // must still reach a call whose start was queued just before them.
    let mut run = client.exec(ExecSpec::new(["sleep", "1000"])).await.unwrap();
    run.cancel().await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(60), async {
        let mut last = None;
        while let Some(ev) = run.next().await {
            last = Some(ev);
        }
        last
    })
    .await
    .expect("the cancel was lost");
    assert_eq!(last, Some(Event::Exited(ExitStatus::Signal(9))));
    let mut run = client.exec(ExecSpec::new(["sleep", "1000"])).await.unwrap();
    run.signal(15).await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(60), async {
        let mut last = None;
        while let Some(ev) = run.next().await {
            last = Some(ev);
        }
        last
    })
    .await
    .expect("the signal was lost");
    assert_eq!(last, Some(Event::Exited(ExitStatus::Signal(15))));
}

/// `close_sent` returns only once the close has been written: a process
/// that exits right after (its runtime gone, no task of it ever runs
/// again) still ends its session cleanly, and the exec-server ends the
/// command the session was running, rather than holding the session for
/// a resume that will never come.
#[tokio::test]
async fn a_close_sent_at_exit_reaches_the_exec_server() {
    let stack = Stack::start().await.unwrap();
    for round in 0..5 {
        let config = stack.client_config();
        // The "process": a runtime of its own, shut down the moment
        // `close_sent` returns, as an exit would end it.
        let pid = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (pid, written) = runtime.block_on(async {
                let client = Client::new(config);
                let mut run = client.exec(ExecSpec::new(["sleep", "1000"])).await.unwrap();
                let Some(Event::Started { pid, .. }) = run.next().await else {
                    panic!("no start");
                };
                let written = client.close_sent(Duration::from_secs(30)).await;
                (pid, written)
            });
            runtime.shutdown_background();
            assert!(
                written,
                "round {round}: close_sent gave up before the close was written"
            );
            pid
        })
        .await
        .unwrap();
        // The exec-server read the close and ended the command: it does
        // not outlive the session by the resume grace (60 s).
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
        let gone = tokio::time::timeout(Duration::from_secs(30), async {
            while nix::sys::signal::kill(pid, None).is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            gone.is_ok(),
            "round {round}: the command still runs: the close was lost"
        );
    }
}
