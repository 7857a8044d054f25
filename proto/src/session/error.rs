//! How a session machine ends: [`Closed`] without an error, and the typed
//! errors. None of them carries a byte of a command, its input or its
//! output.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::envelope::EnvelopeError;
use crate::noise::{HandshakeError, TransportError};
use crate::pb::tunnel::CloseReason;

/// Which part of a session a timeout cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Waiting for the peer's handshake message.
    Handshake,
    /// Waiting for the answer to the session hello.
    Hello,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A session whose link broke was not resumed in time.
    Resume,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Handshake => "waiting for the handshake",
            Stage::Hello => "waiting for the session hello answer",
            Stage::Idle => "waiting for the peer (nothing arrived for the idle timeout)",
            Stage::Resume => "waiting for the session to be resumed over a new link",
        })
    }
}

/// How a peer broke the session protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A frame of a kind that is not allowed at this point.
    UnexpectedFrame,
    /// A message that is not allowed at this point (its kind is named).
    UnexpectedMessage(&'static str),
    /// An envelope without a body.
    EmptyMessage,
    /// A message for a call that does not exist.
    UnknownCall(u64),
    /// A terminal event out of sequence.
    Sequence {
        /// The call.
        call: u64,
        /// The sequence number expected.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// An event for a call that had already ended.
    AfterFinal(u64),
    /// Stdin for a call whose stdin is not a pipe or is already closed.
    Stdin(u64),
    /// A second hello.
    RepeatedHello,
    /// More of a call's stdin than its window allows.
    StdinWindow(u64),
    /// An acknowledgement of more stdin than was sent.
    StdinAck(u64),
    /// More of a call's output than its window allows.
    OutputWindow(u64),
    /// An acknowledgement of output that was not sent.
    OutputAck(u64),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::UnexpectedFrame => f.write_str("a frame of an unexpected kind"),
            Violation::UnexpectedMessage(what) => write!(f, "an unexpected {what} message"),
            Violation::EmptyMessage => f.write_str("a message without a body"),
            Violation::UnknownCall(id) => write!(f, "a message for unknown call {id}"),
            Violation::Sequence {
                call,
                expected,
                got,
            } => write!(
                f,
                "event {got} of call {call} out of sequence (expected {expected})"
            ),
            Violation::AfterFinal(id) => write!(f, "an event after the end of call {id}"),
            Violation::Stdin(id) => write!(f, "stdin for call {id}, whose stdin is not open"),
            Violation::RepeatedHello => f.write_str("a second session hello"),
            Violation::StdinWindow(id) => {
                write!(f, "more stdin for call {id} than its window allows")
            }
            Violation::StdinAck(id) => {
                write!(f, "an acknowledgement of more stdin than call {id} sent")
            }
            Violation::OutputWindow(id) => {
                write!(f, "more output for call {id} than its window allows")
            }
            Violation::OutputAck(id) => {
                write!(f, "an acknowledgement of output call {id} never sent")
            }
        }
    }
}

/// Why a session ended abnormally. A session that fails ends alone: other
/// sessions on the same link or exec-server are not affected.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The Noise handshake failed or was refused on this side.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The peer (or the relay) refused the session in the clear before it
    /// was established.
    #[error("the session was refused: {}", reason_text(*.0))]
    Refused(CloseReason),
    /// The relay closed the link in the clear after the session was
    /// established.
    #[error("the link was closed: {}", reason_text(*.0))]
    LinkClosed(CloseReason),
    /// A stage did not finish in time.
    #[error("timed out {0}")]
    Timeout(Stage),
    /// The Noise transport failed: a record failed authentication, or was
    /// malformed, or a limit was broken.
    #[error("the session was corrupted: {0}")]
    Transport(#[from] TransportError),
    /// A decrypted message could not be decoded.
    #[error("a session message could not be decoded: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The peer broke the session protocol.
    #[error("protocol violation: {0}")]
    Protocol(Violation),
    /// The link ended without a close.
    #[error("the link ended")]
    LinkEnded,
    /// The link failed.
    #[error("the link failed: {0}")]
    LinkFailed(#[source] LinkFailure),
}

/// Equal when the same thing went wrong: the same variant with equal
/// payloads (a failed link: the same kind, reason and words).
impl PartialEq for SessionError {
    fn eq(&self, other: &Self) -> bool {
        use SessionError as E;
        match (self, other) {
            (E::Handshake(a), E::Handshake(b)) => a == b,
            (E::Refused(a), E::Refused(b)) | (E::LinkClosed(a), E::LinkClosed(b)) => a == b,
            (E::Timeout(a), E::Timeout(b)) => a == b,
            (E::Transport(a), E::Transport(b)) => a == b,
            (E::Envelope(a), E::Envelope(b)) => a == b,
            (E::Protocol(a), E::Protocol(b)) => a == b,
            (E::LinkEnded, E::LinkEnded) => true,
            (E::LinkFailed(a), E::LinkFailed(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for SessionError {}

impl SessionError {
    /// The clear close reason to send the peer when this error ends the
    /// session before it is established (none once the peer can read an
    /// authenticated close).
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self {
            SessionError::Handshake(HandshakeError::Unauthorized { .. }) => {
                Some(CloseReason::Unauthorized)
            }
            SessionError::Handshake(HandshakeError::Busy) => Some(CloseReason::Busy),
            SessionError::Handshake(_) => Some(CloseReason::HandshakeFailed),
            SessionError::Timeout(_) => Some(CloseReason::Timeout),
            SessionError::Protocol(_) | SessionError::Envelope(_) | SessionError::Transport(_) => {
                Some(CloseReason::Protocol)
            }
            SessionError::Refused(_)
            | SessionError::LinkClosed(_)
            | SessionError::LinkEnded
            | SessionError::LinkFailed(_) => None,
        }
    }
}

/// What kind of failure ended a link, as the session's callers tell them
/// apart (the link's own error, kept as the source, says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkFailureKind {
    /// The link broke or was reset, or the far end could not be reached
    /// (or gave no reason).
    Broken,
    /// This end stopped using it.
    Cancelled,
    /// The far end knows nothing of what was asked for (no such
    /// exec-server is registered).
    NotFound,
    /// The far end is at one of its limits.
    Exhausted,
    /// No answer came in time.
    TimedOut,
    /// The session went on over another link: its client resumed it over a
    /// new one (the exec-server's side).
    Superseded,
    /// The far end refused for any other reason (a protocol error, a
    /// permission).
    Refused,
}

impl LinkFailureKind {
    /// A short phrase, for a failure whose far end gave no words.
    fn phrase(self) -> &'static str {
        match self {
            LinkFailureKind::Broken => "the link broke",
            LinkFailureKind::Cancelled => "the link was given up",
            LinkFailureKind::NotFound => "the far end does not know what was asked for",
            LinkFailureKind::Exhausted => "the far end is at a limit",
            LinkFailureKind::TimedOut => "no answer in time",
            LinkFailureKind::Superseded => "the session went on over another link",
            LinkFailureKind::Refused => "the far end refused",
        }
    }
}

/// Why a link failed, as the session core knows it: the kind of failure,
/// the reason a relay names when it refuses (typed, in the failure's
/// details, never in its words), the far end's words (untrusted: for
/// people only), and the link's own error as the source. Made from the
/// transport's error where the link is driven (`proto::driver`).
#[derive(Debug, Clone)]
pub struct LinkFailure {
    kind: LinkFailureKind,
    refusal: Option<CloseReason>,
    message: String,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl LinkFailure {
    /// A failure of `kind` this side tells of, in `message`.
    pub fn new(kind: LinkFailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            refusal: None,
            message: message.into(),
            source: None,
        }
    }

    /// The same, naming the reason the far end gave for refusing.
    pub fn with_refusal(mut self, reason: Option<CloseReason>) -> Self {
        self.refusal = reason;
        self
    }

    /// The same, caused by `source` (the link's own error).
    pub fn with_source(mut self, source: Arc<dyn Error + Send + Sync>) -> Self {
        self.source = Some(source);
        self
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> LinkFailureKind {
        self.kind
    }

    /// The reason a relay named for refusing, if it named one.
    pub fn refusal(&self) -> Option<CloseReason> {
        self.refusal
    }

    /// The far end's words, or this side's (empty if none were given).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Equal when the kind, the reason named and the words are (whatever the
/// source).
impl PartialEq for LinkFailure {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.refusal == other.refusal && self.message == other.message
    }
}

impl Eq for LinkFailure {}

/// The words given, or a phrase for the kind when there were none.
impl fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.kind.phrase())
        } else {
            f.write_str(&self.message)
        }
    }
}

impl Error for LinkFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// A short phrase for a clear close reason.
pub(crate) fn reason_text(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Unspecified => "no reason given",
        CloseReason::Unauthorized => "the client key is not authorized",
        CloseReason::HandshakeFailed => "the handshake failed",
        CloseReason::PeerGone => "the peer went away",
        CloseReason::Timeout => "a timeout expired",
        CloseReason::Protocol => "a protocol error",
        CloseReason::Busy => "the peer is at capacity",
        CloseReason::Shutdown => "shutting down",
        CloseReason::UnknownServer => "no such exec-server is registered",
        CloseReason::NotAccepted => "the exec-server did not take the session",
        CloseReason::Replaced => "another registration of the same exec-server key took over",
        CloseReason::NotAllowed => "the relay does not admit this exec-server key",
        CloseReason::RouteUnreachable => "the exec-server's relay in the fleet cannot be reached",
    }
}

/// Why a caller's command could not be queued. The session itself goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The session is not established yet.
    #[error("the session is not ready")]
    NotReady,
    /// The session is closing or has ended.
    #[error("the session has ended")]
    Ended,
    /// No such call (it ended, or never started).
    #[error("no call {0} on this session")]
    UnknownCall(u64),
    /// A call id that is zero or not above every earlier one.
    #[error("call id {0} is not above the ids already used on this session")]
    StaleCallId(u64),
    /// The call is over; nothing more can be sent for it.
    #[error("call {0} has ended")]
    Finished(u64),
    /// Too many calls are open on this session.
    #[error("too many calls on this session (at most {0})")]
    TooManyCalls(usize),
    /// The call's stdin is not a pipe, or was closed.
    #[error("the stdin of call {0} is not open")]
    StdinClosed(u64),
    /// The message is larger than the envelope limit.
    #[error(transparent)]
    TooLarge(#[from] EnvelopeError),
    /// The call's output window is full: the event waits for the client's
    /// acknowledgement.
    #[error("the output window of call {0} is full")]
    OutputWindow(u64),
    /// A resize for a call that runs without a terminal.
    #[error("call {0} has no terminal to resize")]
    NoTerminal(u64),
    /// A terminal size out of bounds.
    #[error("a terminal of {rows} rows and {cols} columns is out of bounds (1 to 10000 of each)")]
    TerminalSize {
        /// Rows asked for.
        rows: u32,
        /// Columns asked for.
        cols: u32,
    },
    /// A `TERM` value that is not a terminal type name.
    #[error(
        "the TERM value is not a terminal type name (at most 128 printable characters, no spaces)"
    )]
    TermValue,
    /// A login shell asked of an exec-server that does not start them (an
    /// older one: its hello answer does not offer them).
    #[error(
        "the exec-server does not start login shells (it is older than this client): name the \
         command to run"
    )]
    NoLoginShell,
    /// A login shell asked for with a command too.
    #[error("a login shell is asked for with no command")]
    LoginShellWithCommand,
}

/// How a session ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// This side closed it.
    Local,
    /// The peer closed it with an authenticated close, giving this reason.
    Peer(String),
}
