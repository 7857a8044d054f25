//! Signals for service binaries: SIGINT and SIGTERM cancel a token (a
//! graceful shutdown); SIGHUP never terminates a service (it reloads what
//! the service reloads, if anything).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::Tasks;

/// Cancels `tasks`' token on the first SIGINT or SIGTERM, and from then on
/// ignores SIGHUP instead of dying of it. Must be called inside a Tokio
/// runtime. If the handlers cannot be installed, says so once (the service
/// then stops only by SIGKILL).
pub fn stop_on_signals(tasks: &Tasks) -> CancellationToken {
    stop_and_reload_on_signals(tasks, || {
        tracing::info!("SIGHUP received; nothing to reload");
    })
}

/// [`stop_on_signals`], calling `reload` on each SIGHUP (until the
/// shutdown starts).
pub fn stop_and_reload_on_signals(
    tasks: &Tasks,
    reload: impl Fn() + Send + 'static,
) -> CancellationToken {
    let token = tasks.token().clone();
    let stop = token.clone();
    tasks.spawn(tracing::debug_span!("signals"), async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = int.recv() => {
                    tracing::info!("SIGINT received; shutting down");
                    break;
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM received; shutting down");
                    break;
                }
                _ = hup.recv() => reload(),
            }
        }
        stop.cancel();
    });
    token
}
