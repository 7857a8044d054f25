//! A call's handle on its connection to a local agent (feature `agent`):
//! what the call's [`Controller`](crate::Controller) sends through it
//! (stdin within the agent's window, signals and the rest on a queue of
//! their own) and how the call learns that the connection was lost. The
//! connection itself, and the calls' start, are [`crate::agent`]'s.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use proto::pb::agent::{self as wire, request};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{AgentError, ClientError};
use crate::exec::ExecFailure;
use crate::session::Control;

/// Stdin of a call the CLI may send beyond the agent's acknowledgements,
/// in [`stdin_cost`] units.
pub const STDIN_WINDOW: u32 = 256 * 1024;
/// What a stdin message costs in the window beyond its bytes (the room it
/// takes in the agent's queue).
pub const STDIN_MESSAGE_COST: u32 = 64;

/// What a stdin message of `len` bytes costs in the window.
pub fn stdin_cost(len: usize) -> u32 {
    u32::try_from(len)
        .unwrap_or(u32::MAX)
        .saturating_add(STDIN_MESSAGE_COST)
}

/// A call's handle on its agent connection: what its
/// [`Controller`](crate::Controller) sends and how it learns that the call
/// was lost.
#[derive(Debug, Clone)]
pub(crate) struct AgentCall {
    commands: mpsc::Sender<wire::Request>,
    /// Signals, cancels and the stdin close: never behind stdin.
    controls: mpsc::Sender<wire::Request>,
    /// Stdin credit (the agent's window).
    stdin: Arc<Semaphore>,
    /// Cancelled when the caller goes away: the connection closes, and
    /// the agent cancels the call.
    stop: CancellationToken,
    /// Why the connection ended before the call did.
    lost: Arc<Mutex<Option<String>>>,
    /// What the agent said with the last event: the call's exec-server
    /// takes the agent's forwarded spans in batches of at most this many
    /// bytes (0: no, or not said).
    span_batch_max: Arc<AtomicU32>,
}

impl AgentCall {
    /// A call whose stdin and other messages go to `commands` and
    /// `controls`, with a whole window of stdin credit.
    pub(crate) fn new(
        commands: mpsc::Sender<wire::Request>,
        controls: mpsc::Sender<wire::Request>,
    ) -> Self {
        Self {
            commands,
            controls,
            stdin: Arc::new(Semaphore::new(STDIN_WINDOW as usize)),
            stop: CancellationToken::new(),
            lost: Arc::new(Mutex::new(None)),
            span_batch_max: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The most bytes of a forwarded batch the call's exec-server takes
    /// from the agent, once the last event said so.
    pub(crate) fn span_batch_max(&self) -> Option<u32> {
        Some(self.span_batch_max.load(Ordering::Relaxed)).filter(|m| *m > 0)
    }

    /// What the last event said of the exec-server's forwarded batches.
    pub(crate) fn set_span_batch_max(&self, max: u32) {
        self.span_batch_max.store(max, Ordering::Relaxed);
    }

    /// The agent took `n` more of the call's stdin: that much credit comes
    /// back, never beyond the window (an agent that says more is not
    /// believed).
    pub(crate) fn stdin_taken(&self, n: u64) {
        let room = (STDIN_WINDOW as usize).saturating_sub(self.stdin.available_permits());
        self.stdin
            .add_permits(usize::try_from(n).unwrap_or(usize::MAX).min(room));
    }

    /// The connection ended before the call, for `reason`: stdin is
    /// refused from now on, and the call's failure says why.
    pub(crate) fn lose(&self, reason: &str) {
        *self.lost.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        self.stdin.close();
    }

    /// Done once the caller has gone away.
    pub(crate) async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    fn lost_reason(&self) -> String {
        self.lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "the agent went away during the command".to_owned())
    }

    /// Why the call ended without its last event.
    pub(crate) fn failure(&self) -> ExecFailure {
        ExecFailure::Agent(self.lost_reason())
    }

    fn lost_error(&self) -> ClientError {
        AgentError::Dispatch {
            connection: true,
            message: self.lost_reason(),
        }
        .into()
    }

    /// The caller went away: the connection closes.
    pub(crate) fn cancel_on_drop(&self) {
        self.stop.cancel();
    }

    /// Stdin, within the agent's window.
    pub(crate) async fn write_stdin(&self, data: Bytes) -> Result<(), ClientError> {
        match self.stdin.acquire_many(stdin_cost(data.len())).await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(self.lost_error()),
        }
        let msg = wire::Request {
            body: Some(request::Body::Stdin(data)),
        };
        self.commands.send(msg).await.map_err(|_| self.lost_error())
    }

    /// A terminal's new window size (on the control queue: never behind
    /// stdin).
    pub(crate) async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        let msg = wire::Request {
            body: Some(request::Body::Resize(proto::pb::session::Resize {
                rows: u32::from(rows),
                cols: u32::from(cols),
            })),
        };
        self.controls.send(msg).await.map_err(|_| self.lost_error())
    }

    /// A control message.
    pub(crate) async fn control(&self, control: Control) -> Result<(), ClientError> {
        let body = match control {
            Control::CloseStdin => request::Body::StdinClose(wire::Empty {}),
            Control::Signal(n) => request::Body::Signal(n),
            Control::Cancel => request::Body::Cancel(wire::Empty {}),
        };
        let msg = wire::Request { body: Some(body) };
        // The close follows the stdin before it, on the same queue.
        let queue = match control {
            Control::CloseStdin => &self.commands,
            _ => &self.controls,
        };
        queue.send(msg).await.map_err(|_| self.lost_error())
    }
}
