//! The local signals a command listens for, registered before its
//! dispatch: a signal that comes while the session is being opened is taken
//! like any other, never left to its default action (which would end the
//! CLI without a word and leave a request that already rode in handshake
//! message 1 running at the exec-server until its resume grace).

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::call::{Call, LocalSignal};
use super::error::CliError;

/// SIGINT, SIGTERM and SIGHUP (when the call listens for it). SIGWINCH,
/// whose default action is to do nothing, is `exec`'s own.
pub(super) struct LocalSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Option<Signal>,
}

impl LocalSignals {
    /// Registers the signals `call` listens for.
    pub(super) fn new(call: &Call) -> Result<Self, CliError> {
        Ok(Self {
            interrupt: sig(SignalKind::interrupt())?,
            terminate: sig(SignalKind::terminate())?,
            hangup: call
                .listens(LocalSignal::HangUp)
                .then(|| sig(SignalKind::hangup()))
                .transpose()?,
        })
    }

    /// The next SIGINT, SIGTERM or SIGHUP (not SIGWINCH), in that order
    /// when more than one is waiting.
    pub(super) async fn next(&mut self) -> LocalSignal {
        tokio::select! {
            biased;
            Some(()) = self.interrupt.recv() => LocalSignal::Interrupt,
            Some(()) = self.terminate.recv() => LocalSignal::Terminate,
            Some(()) = delivered(&mut self.hangup) => LocalSignal::HangUp,
            else => std::future::pending().await,
        }
    }
}

/// Registers `kind`.
pub(super) fn sig(kind: SignalKind) -> Result<Signal, CliError> {
    signal(kind).map_err(|e| CliError::usage(e.to_string()))
}

/// The next delivery of a signal this mode listens for (never, for one it
/// does not).
pub(super) async fn delivered(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
