//! The one shutdown pattern: SIGINT and SIGTERM cancel a token that every
//! service loop watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM. Must be called from
/// within a tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
        t.cancel();
    });
    token
}
