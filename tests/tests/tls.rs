//! TLS on relay links, with the built binaries on loopback: an exec-server
//! registering and a command running through a TLS relay, the health
//! probes over TLS, and every way a link must refuse rather than fall back
//! to plain (a wrong CA, `https://` to a plain relay, `http://` to a TLS
//! relay, a certificate for another name). Certificates come from
//! `relay tls-init`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration_tests::binaries::{self, LOOPBACK_NAMES, ProcStack, run_with_stdin};
use integration_tests::stack::{TestRelay, TestServer};
use proto::keys::StaticKeypair;
use rex_client::{Client, ClientConfig, ClientError, ConnectError, ExecSpec, Target, TlsFailure};

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A `core-client exec` of `argv` through `relay_url`, trusting `ca` (if
/// any), for the stack's server and key.
fn exec_via(stack: &ProcStack, relay_url: &str, ca: Option<&Path>, argv: &[&str]) -> Command {
    let ca = ca.map(|p| p.to_str().unwrap());
    let flags: Vec<&str> = ca.map(|ca| vec!["--ca", ca]).unwrap_or_default();
    binaries::exec_command(
        relay_url,
        &stack.server_pub,
        &stack.client_key,
        &flags,
        argv,
    )
    .unwrap()
}

#[test]
fn an_exec_server_registers_and_a_command_runs_through_a_tls_relay() {
    let stack = ProcStack::start_tls(&[]).unwrap();
    assert!(stack.relay_url.starts_with("https://127.0.0.1:"));
    // The exec-server registered over TLS (the fixture waited for it).
    let out = run(stack.exec(&["sh", "-c", "echo hi; echo oops >&2; exit 3"]));
    assert_eq!(out.status.code(), Some(3), "{:?}", stderr_lines(&out));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"oops\n");
    // Byte-exact both ways: stdin in, stdout out.
    let input: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let out = run_with_stdin(stack.exec(&["cat"]), &input).unwrap();
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    assert!(out.stdout == input, "stdin did not round-trip through TLS");
    // And by name: the certificate is for localhost too.
    let port = stack.relay_url.rsplit(':').next().unwrap();
    let ca = stack.certs.as_ref().unwrap().ca.clone();
    let by_name = format!("https://localhost:{port}");
    let out = run(exec_via(&stack, &by_name, Some(&ca), &["echo", "named"]));
    assert_eq!(out.stdout, b"named\n", "{:?}", stderr_lines(&out));
}

#[test]
fn a_certificate_from_another_ca_is_refused_with_one_line() {
    let stack = ProcStack::start_tls(&[]).unwrap();
    let other = binaries::tls_init(&stack.dir.path().join("other"), &LOOPBACK_NAMES).unwrap();
    let marker = stack.dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = run(exec_via(
        &stack,
        &stack.relay_url,
        Some(&other.ca),
        &["sh", "-c", &touch],
    ));
    assert_eq!(out.status.code(), Some(255));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("TLS") && lines[0].contains("not signed by a trusted CA"),
        "{lines:?}"
    );
    assert!(!marker.exists(), "the command ran over an untrusted link");

    // Trusting the system's roots only (no --ca): refused the same way.
    let out = run(exec_via(&stack, &stack.relay_url, None, &["true"]));
    assert_eq!(out.status.code(), Some(255));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("TLS"), "{lines:?}");
}

#[test]
fn https_to_a_plain_relay_is_refused_never_downgraded() {
    let stack = ProcStack::start(&[]).unwrap();
    let certs = binaries::tls_init(&stack.dir.path().join("tls"), &LOOPBACK_NAMES).unwrap();
    let https = stack.relay_url.replacen("http://", "https://", 1);
    let marker = stack.dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = run(exec_via(
        &stack,
        &https,
        Some(&certs.ca),
        &["sh", "-c", &touch],
    ));
    assert_eq!(out.status.code(), Some(255));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("TLS") && lines[0].contains("does not speak TLS"),
        "{lines:?}"
    );
    assert!(!marker.exists(), "the command ran over a plain link");
    // The plain relay still serves plain clients.
    let out = run(stack.exec(&["echo", "plain"]));
    assert_eq!(out.stdout, b"plain\n");
}

#[test]
fn plain_http_to_a_tls_relay_is_refused_with_one_line() {
    let stack = ProcStack::start_tls(&[]).unwrap();
    let http = stack.relay_url.replacen("https://", "http://", 1);
    let out = run(exec_via(&stack, &http, None, &["true"]));
    assert_eq!(out.status.code(), Some(255));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("TLS") && lines[0].contains("serves TLS only"),
        "{lines:?}"
    );
}

#[test]
fn health_probes_speak_tls() {
    let stack = ProcStack::start_tls(&[]).unwrap();
    let certs = stack.certs.clone().unwrap();
    let relay = binaries::path("relay").unwrap();
    let server = binaries::path("exec-server").unwrap();

    // relay health --url https://… --ca: serving.
    let out = run({
        let mut c = Command::new(&relay);
        c.args(["health", "--url", &stack.relay_url, "--ca"])
            .arg(&certs.ca);
        c
    });
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    // Without the CA: not trusted, one line, exit 1.
    let out = run({
        let mut c = Command::new(&relay);
        c.args(["health", "--url", &stack.relay_url])
            .env("SSL_CERT_FILE", &certs.cert);
        c
    });
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("TLS"), "{lines:?}");
    // Plain http:// to the TLS relay: not healthy.
    let out = run({
        let mut c = Command::new(&relay);
        c.args([
            "health",
            "--url",
            &stack.relay_url.replacen("https://", "http://", 1),
        ]);
        c
    });
    assert_eq!(out.status.code(), Some(1));

    // exec-server health over TLS: registered.
    let key = stack.dir.path().join("server.key");
    let out = run({
        let mut c = Command::new(&server);
        c.args(["health", "--relay", &stack.relay_url, "--ca"])
            .arg(&certs.ca)
            .arg("--key")
            .arg(&key);
        c
    });
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
}

/// Waits for the exec-server's line naming its direct address.
fn direct_addr(server: &binaries::Proc) -> String {
    let line = server
        .wait_for_line("accepting clients directly", Duration::from_secs(30))
        .unwrap();
    let at = line.find("addr=").unwrap() + "addr=".len();
    line[at..].split_whitespace().next().unwrap().to_owned()
}

#[test]
fn an_exec_server_listens_with_tls_for_direct_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server_pub = binaries::keygen("exec-server", dir.path(), "server.key").unwrap();
    let client_pub = binaries::keygen("core-client", dir.path(), "client.key").unwrap();
    let ak = dir.path().join("authorized_keys");
    std::fs::write(&ak, format!("{client_pub}\n")).unwrap();
    let certs = binaries::tls_init(&dir.path().join("tls"), &LOOPBACK_NAMES).unwrap();
    let server = binaries::spawn(
        "exec-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            certs.cert.to_str().unwrap(),
            "--tls-key",
            certs.key.to_str().unwrap(),
            "--key",
            dir.path().join("server.key").to_str().unwrap(),
            "--authorized-keys",
            ak.to_str().unwrap(),
            "--no-records",
        ],
        &[],
    )
    .unwrap();
    let addr = direct_addr(&server);
    let direct = |url: &str, ca: bool| {
        let mut cmd = binaries::core_client(dir.path()).unwrap();
        cmd.args(["exec", "--direct", url, "--server", &server_pub, "--key"])
            .arg(dir.path().join("client.key"));
        if ca {
            cmd.arg("--ca").arg(&certs.ca);
        }
        cmd.args(["--", "echo", "direct"]);
        run(cmd)
    };
    let out = direct(&format!("https://{addr}"), true);
    assert_eq!(out.stdout, b"direct\n", "{:?}", stderr_lines(&out));
    // Plain to the TLS listener: refused.
    let out = direct(&format!("http://{addr}"), false);
    assert_eq!(out.status.code(), Some(255), "{:?}", stderr_lines(&out));
}

/// The library's typed errors: each TLS failure told apart, never by text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_tells_tls_failures_apart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = binaries::tls_init(&dir.path().join("tls"), &["localhost"]).unwrap();
    let ca = rex_client::TlsSettings::from_ca_file(&certs.ca).unwrap();
    let mut config = relay::RelayConfig::default();
    config.tls = Some(proto::tls::ServerTls::from_files(&certs.cert, &certs.key).unwrap());
    let relay = TestRelay::start_with(config).await.unwrap();
    let port = relay.addr.port();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start_configured(
        Some(format!("https://localhost:{port}")),
        false,
        &[&client_key],
        |c| c.relay_tls = ca.clone(),
    )
    .await
    .unwrap();
    let attempt = |url: String, tls: rex_client::TlsSettings| {
        let mut config =
            ClientConfig::new(client_key.clone(), server.key.public(), Target::Relay(url));
        config.tls = tls;
        async move {
            let client = Client::new(config);
            let out = client.output(ExecSpec::new(["echo", "ok"])).await;
            client.close().await;
            out
        }
    };
    // Trusted, for its name: runs.
    let out = attempt(format!("https://localhost:{port}"), ca.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
    let failure = |r: Result<Result<rex_client::Output, _>, ClientError>| match r {
        Err(ClientError::Connect(ConnectError::Tls { failure, .. })) => failure,
        other => panic!("expected a TLS failure, got {other:?}"),
    };
    // The certificate is for localhost, not 127.0.0.1.
    let r = attempt(format!("https://127.0.0.1:{port}"), ca.clone()).await;
    assert_eq!(failure(r), TlsFailure::WrongName);
    // Another CA.
    let other = binaries::tls_init(&dir.path().join("other"), &["localhost"]).unwrap();
    let other = rex_client::TlsSettings::from_ca_file(&other.ca).unwrap();
    let r = attempt(format!("https://localhost:{port}"), other).await;
    assert_eq!(failure(r), TlsFailure::UntrustedCertificate);
    // A plain relay dialled with https://.
    let plain = TestRelay::start().await.unwrap();
    let r = attempt(
        format!("https://localhost:{}", plain.addr.port()),
        ca.clone(),
    )
    .await;
    assert_eq!(failure(r), TlsFailure::NotTls);
    // The TLS relay dialled with http://.
    let r = attempt(format!("http://localhost:{port}"), ca.clone()).await;
    assert_eq!(failure(r), TlsFailure::TlsRequired);
}
