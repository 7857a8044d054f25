//! The agent running: the listener on the user's socket (connections from
//! other users refused by their peer credentials, and beyond the
//! connection limit answered busy), the sessions held from the start
//! (servers whose `warm` option is an interval), and the idle timer
//! (`persist`), until it is stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::connection;
use crate::listener::Listener;
use crate::options::Options;
use crate::state::Agent;

/// How long stopping waits for the sessions to close.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// Connections beyond the limit being told that the agent is busy, at
/// most (more are closed at once).
const REFUSING: usize = 16;

/// Runs the agent on `listener` in the foreground until it is stopped
/// (`agent stop`, SIGINT or SIGTERM, or idle for `persist`), then closes
/// its sessions and removes its socket.
pub async fn serve(listener: Listener, options: Options) {
    let tasks = lifecycle::Tasks::new();
    let shutdown = lifecycle::signals::stop_on_signals(&tasks);
    tracing::info!(socket = %listener.socket.display(), "agent listening");
    run(listener, options, shutdown).await;
}

/// Runs the agent on `listener` until it is stopped (`agent stop`,
/// `shutdown`, or `persist` idle), then closes its sessions and removes its
/// socket.
pub(crate) async fn run(listener: Listener, mut options: Options, shutdown: CancellationToken) {
    let Listener { listener, socket } = listener;
    let prewarm = std::mem::take(&mut options.prewarm);
    let agent = Agent::new(options, &shutdown);
    let connections = Arc::new(Semaphore::new(agent.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    // The servers to keep warm from the start: each warms at once.
    for route in &prewarm {
        if let Err(e) = agent.hold(route) {
            tracing::warn!(error = %e, "cannot keep a configured server warm");
        }
    }
    let uid = nix::unistd::getuid().as_raw();
    loop {
        // A call running may end at any time: look again at least every
        // second.
        let look = Instant::now() + Duration::from_secs(1);
        let wake = agent.idle_deadline().map_or(look, |idle| idle.min(look));
        tokio::select! {
            () = agent.stop.cancelled() => break,
            () = proto::driver::sleep_until(Some(wake)) => {
                if agent.idle_deadline().is_some_and(|d| d <= Instant::now()) {
                    tracing::info!("idle for the persist time: stopping");
                    break;
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, say: a pause, not a spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid => {
                        match Arc::clone(&connections).try_acquire_owned() {
                            Ok(open) => {
                                let agent2 = Arc::clone(&agent);
                                agent.tasks.spawn(
                                    tracing::debug_span!("agent connection"),
                                    connection::serve(agent2, stream, open),
                                );
                            }
                            // At the limit: told it is busy (the CLI runs
                            // its command itself), while few are being
                            // told; else closed at once.
                            Err(_) => {
                                if let Ok(telling) = Arc::clone(&refusing).try_acquire_owned() {
                                    let limit = agent.max_connections;
                                    agent.tasks.spawn(
                                        tracing::debug_span!("agent refusal"),
                                        async move {
                                            connection::refuse_busy(stream, limit).await;
                                            drop(telling);
                                        },
                                    );
                                }
                            }
                        }
                    }
                    Ok(cred) => {
                        tracing::warn!(uid = cred.uid(), "refused a connection from another user");
                    }
                    Err(e) => tracing::warn!(error = %e, "refused a connection: no peer credentials"),
                }
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    agent.close(CLOSE_WITHIN).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ask::{self, AskError};
    use crate::listener::{BindError, bind};

    #[tokio::test]
    async fn an_agent_answers_its_user_and_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent").join("agent.sock");
        let listener = bind(&socket).await.unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(run(listener, Options::default(), shutdown.clone()));
        // One agent a socket: a second one is refused while the first runs.
        assert!(matches!(bind(&socket).await, Err(BindError::Running(_))));
        let status = ask::status(&socket).await.unwrap();
        assert_eq!(status.pid, std::process::id());
        assert_eq!(status.max_sessions, 16);
        assert_eq!(status.persist_ms, 600_000);
        assert!(status.sessions.is_empty());
        assert_eq!(ask::flushed(&socket).await.unwrap(), None);
        let warmed = ask::warm(&socket, Vec::new()).await.unwrap();
        assert!(warmed.sessions.is_empty() && warmed.refused.is_empty());
        ask::stop(&socket).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .unwrap()
            .unwrap();
        assert!(!socket.exists(), "its socket is removed");
        assert!(matches!(
            ask::status(&socket).await,
            Err(AskError::Connect(_))
        ));
        // A socket left by an agent that died is taken over.
        let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        drop(stale);
        let again = bind(&socket).await.unwrap();
        run(again, Options::default(), cancelled()).await;
    }

    fn cancelled() -> CancellationToken {
        let token = CancellationToken::new();
        token.cancel();
        token
    }
}
