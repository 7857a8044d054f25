//! The relay's gRPC health answers, the `relay health` and `exec-server
//! health` probes used as container healthchecks, and `--server-file`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::binaries::{self, ProcStack};
use integration_tests::stack::{Stack, TestRelay};
use proto::health::{self, HealthError, RELAY};

const PROBE: Duration = Duration::from_secs(5);

/// A probe of a plain (or, trusting the system, TLS) relay.
async fn check(url: &str, service: &str, timeout: Duration) -> Result<(), HealthError> {
    health::check(url, service, timeout, &proto::tls::TlsSettings::system()).await
}

#[tokio::test]
async fn relay_answers_for_itself_and_for_registered_exec_servers() {
    let stack = Stack::start().await.unwrap();
    let url = stack.relay.url();
    let id = stack.server.key.public().server_id();

    check(&url, RELAY, PROBE).await.unwrap();
    check(&url, &id, PROBE).await.unwrap();

    // An id nobody registered, and a name that is not an id at all.
    let other = proto::keys::StaticKeypair::generate()
        .unwrap()
        .public()
        .server_id();
    assert!(matches!(
        check(&url, &other, PROBE).await,
        Err(HealthError::NotFound)
    ));
    match check(&url, "not-an-id", PROBE).await {
        Err(HealthError::Rpc(s)) => assert_eq!(s.code(), tonic::Code::InvalidArgument),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    // The exec-server goes away: it is no longer reported.
    stack.server.shutdown.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check(&url, &id, PROBE).await {
            Err(HealthError::NotFound) => break,
            Ok(()) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected NotFound after the exec-server stopped, got {other:?}"),
        }
    }
    // The relay itself still serves.
    check(&url, RELAY, PROBE).await.unwrap();
}

#[tokio::test]
async fn probes_fail_clearly_when_nothing_answers() {
    // A port that was just bound and released: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = check(&format!("http://{addr}"), RELAY, PROBE)
        .await
        .unwrap_err();
    assert!(matches!(err, HealthError::Connect(_)), "{err:?}");
    let err = check("not a url", RELAY, PROBE).await.unwrap_err();
    assert!(matches!(err, HealthError::BadUrl(_)), "{err:?}");

    // A listener that accepts but never answers: bounded by the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let short = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let err = check(&format!("http://{silent_addr}"), RELAY, short)
        .await
        .unwrap_err();
    assert!(
        matches!(err, HealthError::Timeout(_) | HealthError::Connect(_)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}

#[tokio::test]
async fn relay_reports_not_serving_once_shutdown_starts() {
    let relay = TestRelay::start().await.unwrap();
    let url = relay.url();
    check(&url, RELAY, PROBE).await.unwrap();
    relay.shutdown.cancel();
    // Either it still answers (NOT_SERVING) or it has stopped listening:
    // never SERVING again.
    let err = check(&url, RELAY, PROBE).await.unwrap_err();
    assert!(
        matches!(
            err,
            HealthError::NotServing(_) | HealthError::Connect(_) | HealthError::Rpc(_)
        ),
        "{err:?}"
    );
}

fn probe(binary: &str, args: &[&str]) -> std::process::Output {
    probe_env(binary, args, &[])
}

fn probe_env(binary: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(binaries::path(binary).unwrap())
        .args(args)
        .env_remove("REX_RELAY")
        .env_remove("REX_KEY")
        .env_remove("REX_RELAY_LISTEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn health_subcommands_exit_by_state_with_one_line() {
    let stack = ProcStack::start(&[]).unwrap();
    let server_key = stack.dir.path().join("server.key");
    let server_key = server_key.to_str().unwrap();

    let out = probe("relay", &["health", "--url", &stack.relay_url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = probe(
        "exec-server",
        &["health", "--relay", &stack.relay_url, "--key", server_key],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The client's key names an exec-server that is not registered.
    let client_key = stack.client_key.to_str().unwrap();
    let out = probe(
        "exec-server",
        &["health", "--relay", &stack.relay_url, "--key", client_key],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("not registered"), "{err}");

    // `relay health` defaults to the listen address (REX_RELAY_LISTEN, as a
    // container sets it), an unspecified IP taken as loopback; nothing
    // listens on this one.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("0.0.0.0:{free}");
    let out = probe_env("relay", &["health"], &[("REX_RELAY_LISTEN", &listen)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("http://127.0.0.1:{free}")), "{err}");
}

#[test]
fn server_key_can_come_from_a_file() {
    let stack = ProcStack::start(&[]).unwrap();
    let pub_file = stack.dir.path().join("server.pub");
    std::fs::write(&pub_file, format!("# exec-server\n{}\n", stack.server_pub)).unwrap();
    let out = Command::new(binaries::path("core-client").unwrap())
        .args(["exec", "--relay", &stack.relay_url, "--key"])
        .arg(&stack.client_key)
        .arg("--server-file")
        .arg(&pub_file)
        .args([
            "--no-records",
            "-n",
            "--",
            "sh",
            "-c",
            "echo from-file; exit 4",
        ])
        .env("REX_TRACE_FILE", stack.dir.path().join("traces.jsonl"))
        .env("OTEL_SDK_DISABLED", "true")
        .env("XDG_CONFIG_HOME", stack.dir.path().join("config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"from-file\n");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A file without a key: a usage error in one line, nothing run.
    std::fs::write(&pub_file, "# nothing here\n").unwrap();
    let out = Command::new(binaries::path("core-client").unwrap())
        .args(["exec", "--relay", &stack.relay_url, "--key"])
        .arg(&stack.client_key)
        .arg("--server-file")
        .arg(&pub_file)
        .args(["--no-records", "-n", "--", "true"])
        .env("OTEL_SDK_DISABLED", "true")
        .env("XDG_CONFIG_HOME", stack.dir.path().join("config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("does not hold a public key"), "{err}");
}

#[test]
fn a_relay_takes_its_settings_from_a_config_file_and_its_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (from_file, from_flag) = (port(), port());
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{from_file}\"\nmax-connections = 64\nno-hop-headers = true\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let relay = binaries::spawn("relay", &["--config", file], &[]).unwrap();
    let line = relay
        .wait_for_line("listening on", Duration::from_secs(30))
        .unwrap();
    assert!(line.contains(&format!("127.0.0.1:{from_file}")), "{line}");
    // `relay health` checks the relay the file describes.
    let out = probe("relay", &["--config", file, "health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(relay);
    // A flag wins over the file.
    let flag = format!("127.0.0.1:{from_flag}");
    let relay = binaries::spawn("relay", &["--config", file, "--listen", &flag], &[]).unwrap();
    let line = relay
        .wait_for_line("listening on", Duration::from_secs(30))
        .unwrap();
    assert!(line.contains(&flag), "{line}");
    drop(relay);
    // A key that is no flag: one line naming the file and the key, and
    // nothing started.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_connections = 64\n").unwrap();
    let out = probe("relay", &["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("bad.toml") && err.contains("unknown key `max_connections`"),
        "{err}"
    );
}

#[test]
fn a_service_runs_on_the_workers_it_is_given_and_refuses_none() {
    let relay = binaries::spawn(
        "relay",
        &["--listen", "127.0.0.1:0", "--worker-threads", "1"],
        &[],
    )
    .unwrap();
    let line = relay
        .wait_for_line("relay starting", Duration::from_secs(30))
        .unwrap();
    assert!(line.contains("workers=1"), "{line}");
    drop(relay);
    for service in ["relay", "exec-server"] {
        let out = probe(service, &["--worker-threads", "0"]);
        assert_eq!(out.status.code(), Some(2), "{service}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--worker-threads"), "{service}: {err}");
    }
}
