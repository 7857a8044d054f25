//! The demo's run: a relay, an exec-server and a client in one process on
//! loopback, with ephemeral keys; runs a short command remotely.

use std::io::Write;
use std::net::SocketAddr;

use proto::keys::{AuthorizedKeys, StaticKeypair};
use tokio::net::TcpListener;

use rex_client::{Client, ClientConfig, Event, ExecSpec, Target};

use crate::stdout::Stdout;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up failed.
    #[error("demo setup: {0}")]
    Setup(String),
    /// The remote command failed.
    #[error("demo command: {0}")]
    Run(String),
}

/// The command the demo runs remotely.
pub const DEMO_SCRIPT: &str = "echo \"hello from $(uname -s) via the relay\"; \
for i in 1 2 3; do echo \"line $i\"; done; echo 'this line went to stderr' >&2; \
echo \"TRACEPARENT seen by the child: ${TRACEPARENT:-none}\"";

/// What the demo's command did.
#[derive(Debug)]
pub struct Outcome {
    /// The remote exit code.
    pub code: i32,
    /// The command's trace id, when it was traced.
    pub trace_id: Option<String>,
    /// Where the demo printed (and whether its reader went away).
    pub stdout: Stdout,
}

/// Runs the demo, printing progress and the command's output to stdout.
pub async fn run() -> Result<Outcome, DemoError> {
    let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
    let tasks = lifecycle::Tasks::new();
    let shutdown = tasks.token().clone();

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| setup(&e))?;
    let relay_addr = listener.local_addr().map_err(|e| setup(&e))?;
    let relay_task = tasks.spawn(
        tracing::info_span!("relay"),
        relay::serve(listener, relay::RelayConfig::default(), shutdown.clone()),
    );

    let server_key = StaticKeypair::generate().map_err(|e| setup(&e))?;
    let client_key = StaticKeypair::generate().map_err(|e| setup(&e))?;
    let url = format!("http://{relay_addr}");
    let mut server_config = exec_server::ExecServerConfig::new(
        server_key.clone(),
        AuthorizedKeys::from_keys([client_key.public()]),
    );
    server_config.relays = vec![url.clone()];
    let mut server = exec_server::start(server_config, shutdown.clone())
        .await
        .map_err(|e| setup(&e))?;
    if !server.wait_registered().await {
        return Err(DemoError::Setup("exec-server did not register".into()));
    }
    // Writes to `out` never fail (a reader that went away is kept in it).
    let mut out = Stdout::new();
    let _ = writeln!(out, "relay      listening on {relay_addr}");
    let _ = writeln!(out, "exec-server registered  (id {})", server.server_id());
    let _ = writeln!(out, "client     key {}", client_key.public());
    let _ = writeln!(
        out,
        "$ sh -c '<demo script>'   # through the relay, end-to-end encrypted\n"
    );

    let client = Client::new(ClientConfig::new(
        client_key,
        server_key.public(),
        Target::Relay(url),
    ));
    let mut run = client
        .exec(ExecSpec::new(["sh", "-c", DEMO_SCRIPT]))
        .await
        .map_err(|e| DemoError::Run(e.to_string()))?;
    let trace_id = run.trace_id();
    let mut code = 0;
    while let Some(ev) = run.next().await {
        match ev {
            Event::Started { .. } | Event::Reconnecting | Event::Resumed => {}
            Event::Stdout(d) => {
                let _ = out.write_all(&d);
            }
            Event::Stderr(d) => {
                let _ = out.write_all(b"[stderr] ");
                let _ = out.write_all(&d);
            }
            Event::Exited(status) => {
                let _ = writeln!(out, "\nexited with status {}", status.shell_code());
                code = status.shell_code();
            }
            Event::Failed(f) => return Err(DemoError::Run(f.to_string())),
        }
    }
    client.close().await;
    shutdown.cancel();
    let _ = server.join().await;
    let _ = relay_task.await;
    Ok(Outcome {
        code,
        trace_id,
        stdout: out,
    })
}
