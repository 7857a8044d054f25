//! The local signals a command listens for, registered before its
//! dispatch: a signal that comes while the session is being opened is taken
//! like any other, never left to its default action (which would end the
//! CLI without a word and leave a request that already rode in handshake
//! message 1 running at the exec-server until its resume grace).

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::CliError;
use super::call::{Call, LocalSignal};

/// SIGINT, SIGTERM, SIGHUP (when the call listens for it) and SIGWINCH
/// (on a terminal).
pub(super) struct LocalSignals {
    pub(super) interrupt: Signal,
    pub(super) terminate: Signal,
    pub(super) hangup: Option<Signal>,
    pub(super) winch: Option<Signal>,
}

impl LocalSignals {
    /// Registers the signals `call` listens for.
    pub(super) fn new(call: &Call, terminal: bool) -> Result<Self, CliError> {
        let sig = |kind| signal(kind).map_err(|e| CliError::usage(e.to_string()));
        Ok(Self {
            interrupt: sig(SignalKind::interrupt())?,
            terminate: sig(SignalKind::terminate())?,
            hangup: call
                .listens(LocalSignal::HangUp)
                .then(|| sig(SignalKind::hangup()))
                .transpose()?,
            winch: terminal
                .then(|| sig(SignalKind::window_change()))
                .transpose()?,
        })
    }

    /// The next SIGINT, SIGTERM or SIGHUP (not SIGWINCH).
    pub(super) async fn next(&mut self) -> LocalSignal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => LocalSignal::Interrupt,
            Some(()) = self.terminate.recv() => LocalSignal::Terminate,
            Some(()) = delivered(&mut self.hangup) => LocalSignal::HangUp,
            else => std::future::pending().await,
        }
    }
}

/// The next delivery of a signal this mode listens for (never, for one it
/// does not).
pub(super) async fn delivered(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
