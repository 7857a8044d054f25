//! Typed errors of the client library. Every failure is told apart by a
//! code (a link failure's kind, a close reason the relay or exec-server
//! sent, a typed session error), never by message text; causes are kept as
//! sources.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use proto::keys::PublicKey;
use proto::noise::HandshakeError;
use proto::pb::tunnel::CloseReason;
use proto::session::{Closed, LinkFailure, LinkFailureKind, SessionError, Stage};

/// What a link goes to: the relay, or an exec-server reached directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A relay.
    Relay,
    /// An exec-server's own listener.
    ExecServer,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Relay => "the relay",
            Via::ExecServer => "the exec-server",
        })
    }
}

/// The cause of a failed connection: the transport's error, or how the
/// link failed (the far end's error status among them).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LinkCause {
    /// The connection could not be made.
    Transport(Arc<tonic::transport::Error>),
    /// The link failed (the far end answered with an error status, or the
    /// link broke).
    Link(LinkFailure),
}

impl fmt::Display for LinkCause {
    /// The innermost cause's text: the part a person can act on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkCause::Transport(e) => {
                let mut cur: &(dyn Error + 'static) = e.as_ref();
                while let Some(next) = cur.source() {
                    cur = next;
                }
                write!(f, "{cur}")
            }
            LinkCause::Link(failure) => write!(f, "{failure}"),
        }
    }
}

impl Error for LinkCause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LinkCause::Transport(e) => Some(e.as_ref()),
            LinkCause::Link(failure) => Some(failure),
        }
    }
}

/// The transport's own words on a TLS failure, when it has any worth
/// reading (a certificate error does; an HTTP/2 reset does not).
fn tls_detail(cause: &LinkCause) -> String {
    match cause {
        LinkCause::Transport(_) => format!(" ({cause})"),
        LinkCause::Link(_) => String::new(),
    }
}

/// Why the exec-server (or the relay on its behalf) had no room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Busy {
    /// What was dialled (the relay, or an exec-server reached directly)
    /// refused the session at one of its limits, which its words name.
    Link {
        /// The URL dialled.
        url: String,
        /// Its words (printable characters only, bounded).
        said: String,
    },
    /// The exec-server's own limit of sessions, after the handshake.
    ExecServer,
}

/// Most characters of a refusal's words kept.
const MAX_REFUSAL_WORDS: usize = 240;

impl Busy {
    /// A refusal by `url` with `message` (the far end's own words, kept
    /// printable and bounded: they are untrusted).
    fn link(url: &str, message: &str) -> Self {
        let said = message
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_REFUSAL_WORDS)
            .collect();
        Busy::Link {
            url: url.to_owned(),
            said,
        }
    }
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Busy::Link { url, said } if said.is_empty() => {
                write!(f, "{url} refused the session at one of its limits")
            }
            Busy::Link { url, said } => write!(f, "{url} refused the session: {said}"),
            Busy::ExecServer => f.write_str("the exec-server is busy: too many sessions"),
        }
    }
}

/// Why the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// Message 2 did not prove the pinned key: the exec-server is not the
    /// one named (or the message was altered on the way).
    WrongServerKey,
    /// The exec-server could not complete it.
    RefusedByServer,
    /// Another failure on this side.
    Local(HandshakeError),
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailure::WrongServerKey => f.write_str(
                "the exec-server's key is not the one given with --server (or the message was \
                 tampered with)",
            ),
            HandshakeFailure::RefusedByServer => f.write_str(
                "the exec-server could not complete it: its key is not the one given with \
                 --server, or the two clocks differ by more than two minutes",
            ),
            HandshakeFailure::Local(e) => write!(f, "{e}"),
        }
    }
}

/// Where setting up a session stopped for want of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Waiting {
    /// The relay (pairing the stream with the exec-server).
    Relay,
    /// The exec-server (handshake or hello).
    ExecServer,
    /// The whole set-up (its overall bound).
    Establishing,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Waiting::Relay => "waiting for the relay",
            Waiting::ExecServer => "waiting for the exec-server",
            Waiting::Establishing => "establishing the session",
        })
    }
}

/// Why the exec-server could not be reached although the relay could.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// It is registered but did not take the session in time.
    NotAccepted,
    /// It went away during the handshake.
    Gone,
    /// The link ended before the session was set up.
    LinkEnded,
    /// The relay forwards to the exec-server's relay in its fleet, which it
    /// cannot reach (the relay's account, which names it).
    RouteUnreachable(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unavailable::NotAccepted => "it did not take the session in time",
            Unavailable::Gone => "the exec-server went away during the handshake",
            Unavailable::LinkEnded => "the link closed during the handshake",
            Unavailable::RouteUnreachable(why) => return f.write_str(why),
        })
    }
}

/// Why a session could not be established.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not usable (not a URL, not http:// or https://, or
    /// TLS cannot be set up for it, e.g. no CA certificates).
    #[error("{url}: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: Arc<proto::relay_link::EndpointError>,
    },
    /// The TLS handshake with the relay (or exec-server) failed: its
    /// certificate is not trusted or not for this name, or it does not
    /// speak TLS. Never retried without TLS.
    #[error("TLS with {url} failed: {failure}{}", tls_detail(source))]
    Tls {
        /// Where.
        url: String,
        /// What kind of failure.
        failure: proto::tls::TlsFailure,
        /// The transport's error.
        #[source]
        source: LinkCause,
    },
    /// The relay (or exec-server) could not be reached.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: LinkCause,
    },
    /// The relay knows no exec-server with this key's id.
    #[error("no exec-server with this key is registered at the relay (id {0})")]
    UnknownServer(String),
    /// The exec-server or relay is at a limit (tried again a few times
    /// first, when what was dialled refused the session).
    #[error("{0}")]
    Busy(Busy),
    /// The exec-server did not answer.
    #[error("the exec-server did not answer: {0}")]
    Unavailable(Unavailable),
    /// The exec-server does not authorize this client's key.
    #[error(
        "the exec-server does not authorize this client key ({0}): add its public key to the \
         exec-server's authorized keys"
    )]
    Unauthorized(PublicKey),
    /// The handshake failed (wrong server key, tampering, clock skew).
    #[error("handshake failed: {0}")]
    Handshake(HandshakeFailure),
    /// A step did not finish in time.
    #[error("timed out {0}")]
    Timeout(Waiting),
    /// The peer or the relay broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[source] Arc<dyn Error + Send + Sync>),
}

impl ConnectError {
    /// The error for a connection to `url` that could not be made: a TLS
    /// failure (told apart by type) or an unreachable far end.
    pub(crate) fn unreachable(url: &str, e: tonic::transport::Error) -> Self {
        let failure = proto::tls::failure_in(&e);
        let source = LinkCause::Transport(Arc::new(e));
        match failure {
            Some(failure) => Self::Tls {
                url: url.to_owned(),
                failure,
                source,
            },
            None => Self::Unreachable {
                url: url.to_owned(),
                source,
            },
        }
    }

    /// The error for a refusing gRPC status from the relay (or a directly
    /// reached exec-server), as for the link failure it is.
    pub(crate) fn from_status(status: tonic::Status, server_id: &str, url: &str) -> Self {
        Self::from_link_failure(status.into(), server_id, url)
    }

    /// The error for a link that failed before the session was set up. A
    /// relay names its reason for refusing (in the status details); the
    /// failure's kind decides otherwise.
    pub(crate) fn from_link_failure(failure: LinkFailure, server_id: &str, url: &str) -> Self {
        // A TLS listener refusing a plain client says so in HTTP/2.
        if let Some(tls) = proto::tls::failure_in(&failure) {
            return Self::Tls {
                url: url.to_owned(),
                failure: tls,
                source: LinkCause::Link(failure),
            };
        }
        if let Some(reason) = failure.refusal() {
            match reason {
                CloseReason::UnknownServer => return Self::UnknownServer(server_id.to_owned()),
                CloseReason::Busy => return Self::Busy(Busy::link(url, failure.message())),
                CloseReason::NotAccepted | CloseReason::PeerGone => {
                    return Self::Unavailable(Unavailable::NotAccepted);
                }
                CloseReason::RouteUnreachable => {
                    return Self::Unavailable(Unavailable::RouteUnreachable(
                        failure.message().to_owned(),
                    ));
                }
                _ => {}
            }
        }
        match failure.kind() {
            LinkFailureKind::NotFound => Self::UnknownServer(server_id.to_owned()),
            LinkFailureKind::Exhausted => Self::Busy(Busy::link(url, failure.message())),
            LinkFailureKind::TimedOut => Self::Timeout(Waiting::Relay),
            LinkFailureKind::Broken | LinkFailureKind::Cancelled => Self::Unreachable {
                url: url.to_owned(),
                source: LinkCause::Link(failure),
            },
            _ => Self::Protocol(Arc::new(failure)),
        }
    }

    /// The error for a session that ended while it was being set up.
    pub(crate) fn from_session(err: SessionError, key: PublicKey, url: &str, id: &str) -> Self {
        match err {
            SessionError::Refused(reason) => Self::from_close(reason, key),
            SessionError::Handshake(HandshakeError::Decrypt) => {
                Self::Handshake(HandshakeFailure::WrongServerKey)
            }
            SessionError::Handshake(e) => Self::Handshake(HandshakeFailure::Local(e)),
            SessionError::Timeout(Stage::Handshake | Stage::Hello | Stage::Idle) => {
                Self::Timeout(Waiting::ExecServer)
            }
            SessionError::LinkEnded => Self::Unavailable(Unavailable::LinkEnded),
            SessionError::LinkFailed(failure) => Self::from_link_failure(failure, id, url),
            other => Self::Protocol(Arc::new(other)),
        }
    }

    fn from_close(reason: CloseReason, key: PublicKey) -> Self {
        match reason {
            CloseReason::Unauthorized => Self::Unauthorized(key),
            CloseReason::HandshakeFailed => Self::Handshake(HandshakeFailure::RefusedByServer),
            CloseReason::Busy => Self::Busy(Busy::ExecServer),
            CloseReason::Timeout => Self::Timeout(Waiting::ExecServer),
            CloseReason::PeerGone => Self::Unavailable(Unavailable::Gone),
            CloseReason::NotAccepted => Self::Unavailable(Unavailable::NotAccepted),
            other => Self::Protocol(Arc::new(SessionError::Refused(other))),
        }
    }
}

/// Why a session ended under the calls it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLost {
    via: Via,
    end: Result<Closed, SessionError>,
    remote_ended: bool,
}

impl SessionLost {
    /// A session over a link to `via` that ended with `end`.
    pub(crate) fn new(via: Via, end: Result<Closed, SessionError>) -> Self {
        Self {
            via,
            end,
            remote_ended: false,
        }
    }

    /// The same, noting whether the exec-server was told to end the
    /// session's processes (this end gave the session up) and answered.
    pub(crate) fn with_remote_ended(mut self, remote_ended: bool) -> Self {
        self.remote_ended = remote_ended;
        self
    }

    /// Whether this end gave the session up at the exec-server, which
    /// answered: its commands there were ended rather than left running
    /// for the exec-server's resume grace.
    pub fn remote_ended(&self) -> bool {
        self.remote_ended
    }

    /// How it ended: cleanly (by whom), or the session error.
    pub fn end(&self) -> &Result<Closed, SessionError> {
        &self.end
    }
}

impl fmt::Display for SessionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = self.via;
        match &self.end {
            Ok(Closed::Local) => f.write_str("closed by the client"),
            Ok(Closed::Peer(reason)) => write!(f, "the exec-server closed the session: {reason}"),
            Err(SessionError::LinkEnded) => write!(f, "{via} ended the link"),
            Err(SessionError::LinkFailed(failure)) => {
                write!(f, "the connection to {via} broke: {failure}")
            }
            Err(SessionError::LinkClosed(reason)) => f.write_str(match reason {
                CloseReason::PeerGone => "the exec-server went away",
                CloseReason::Timeout => "the session timed out at the relay",
                CloseReason::Shutdown => "the relay is shutting down",
                CloseReason::Protocol => "the relay closed the session (protocol error)",
                _ => "the link was closed",
            }),
            Err(SessionError::Transport(e)) => {
                write!(f, "the session was corrupted ({e}); closed it")
            }
            Err(SessionError::Envelope(_)) => {
                f.write_str("the exec-server sent an undecodable message")
            }
            Err(SessionError::Protocol(v)) => {
                write!(f, "the exec-server broke the session protocol ({v})")
            }
            Err(SessionError::Timeout(stage)) => write!(f, "timed out {stage}"),
            Err(other) => write!(f, "{other}"),
        }?;
        if self.remote_ended {
            f.write_str("; its commands on the exec-server were ended (abandoned by the client)")?;
        }
        Ok(())
    }
}

impl Error for SessionLost {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.end {
            Ok(_) => None,
            Err(e) => Some(e),
        }
    }
}

/// Why a call could not be dispatched.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No session could be established.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request is not valid (e.g. empty argv, or too large).
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] InvalidRequest),
    /// The session ended while the request was being sent.
    #[error("session lost: {0}")]
    SessionLost(#[source] SessionLost),
    /// A call through a local agent could not be made.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Why a call through a local agent could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No agent answers at the socket (none runs, or the socket is stale).
    #[error("no agent answers at {}: {source}", path.display())]
    Unavailable {
        /// The socket.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The agent holds as many sessions as it may, all in use.
    #[error("the agent is busy: {0}")]
    Busy(String),
    /// The agent could not dispatch the call (its own error, in its words):
    /// a connection or authentication failure, or a request it refused.
    #[error("{message}")]
    Dispatch {
        /// A connection or authentication failure.
        connection: bool,
        /// What the agent said.
        message: String,
    },
    /// The agent went away or broke the agent protocol.
    #[error("the agent {0}")]
    Lost(&'static str),
}

impl AgentError {
    /// Whether no agent listens at the socket at all (it is stale, or gone),
    /// as against one that is there but could not take the call (busy, at
    /// its limit, not ours to use).
    pub fn agent_gone(&self) -> bool {
        use std::io::ErrorKind;
        matches!(
            self,
            AgentError::Unavailable { source, .. }
                if matches!(source.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound)
        )
    }
}

/// What is wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRequest {
    /// No program was named.
    #[error("no program given")]
    NoProgram,
    /// The request does not fit in a session message.
    #[error(transparent)]
    TooLarge(#[from] proto::envelope::EnvelopeError),
    /// A terminal size out of bounds (1 to 10,000 rows and columns).
    #[error("a terminal of {rows} rows and {cols} columns is out of bounds (1 to 10000 of each)")]
    TerminalSize {
        /// Rows asked for.
        rows: u16,
        /// Columns asked for.
        cols: u16,
    },
    /// A `TERM` value that is not a terminal type name.
    #[error(
        "the TERM value is not a terminal type name (at most 128 printable characters, no spaces)"
    )]
    TermValue,
    /// A resize of a command that runs without a terminal.
    #[error("the command has no terminal to resize")]
    NoTerminal,
    /// A login shell asked for with a program too.
    #[error("a login shell is asked for with no command")]
    LoginShellWithCommand,
}

impl InvalidRequest {
    /// Checks a terminal size against the bounds.
    pub(crate) fn check_size(rows: u16, cols: u16) -> Result<(), Self> {
        if proto::limits::terminal_size_ok(u32::from(rows), u32::from(cols)) {
            Ok(())
        } else {
            Err(Self::TerminalSize { rows, cols })
        }
    }
}

impl ClientError {
    /// Whether this is a connection or authentication failure (ssh uses 255).
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Connect(_) | Self::SessionLost(_) => true,
            Self::Agent(AgentError::Dispatch { connection, .. }) => *connection,
            Self::Agent(_) => true,
            Self::InvalidRequest(_) => false,
        }
    }

    /// Whether a failure to start through one relay is worth trying the
    /// next relay for: the relay could not be reached, or it does not have
    /// the exec-server (another relay may). Told by the error's type, never
    /// its text.
    pub fn next_relay_may_help(&self) -> bool {
        matches!(
            self,
            Self::Connect(
                ConnectError::Unreachable { .. }
                    | ConnectError::Tls { .. }
                    | ConnectError::UnknownServer(_)
                    | ConnectError::Busy(Busy::Link { .. })
                    | ConnectError::Timeout(Waiting::Relay)
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn a_refusal_at_a_limit_says_where_and_which_limit() {
        let status = proto::routing::refuse(
            tonic::Code::ResourceExhausted,
            "the relay is busy: too many unauthenticated sessions \u{1b}[31m(--max-startups)",
            CloseReason::Busy,
        );
        let e = ConnectError::from_status(status, "abcd", "http://relay:7600");
        let text = e.to_string();
        assert_eq!(
            text,
            "http://relay:7600 refused the session: the relay is busy: \
             too many unauthenticated sessions [31m(--max-startups)"
        );
        // The far end's words are bounded.
        let long = "x".repeat(10_000);
        let status = tonic::Status::resource_exhausted(long);
        let e = ConnectError::from_status(status, "abcd", "http://exec:7601");
        assert!(e.to_string().len() < MAX_REFUSAL_WORDS + 100, "{e}");
    }

    #[test]
    fn a_link_that_failed_during_set_up_is_told_apart_by_its_kind_and_reason() {
        let key = proto::keys::StaticKeypair::generate().unwrap().public();
        let of = |failure: LinkFailure| {
            let err = SessionError::LinkFailed(failure);
            ConnectError::from_session(err, key, "http://relay:7600", "abcd")
        };
        // The relay's typed reason decides, whatever the words.
        let refused = LinkFailure::new(LinkFailureKind::Refused, "busy")
            .with_refusal(Some(CloseReason::UnknownServer));
        assert!(matches!(of(refused), ConnectError::UnknownServer(id) if id == "abcd"));
        let late = LinkFailure::new(LinkFailureKind::TimedOut, "");
        assert!(matches!(of(late), ConnectError::Timeout(Waiting::Relay)));
        let broken = LinkFailure::new(LinkFailureKind::Broken, "reset");
        let e = of(broken);
        assert!(matches!(
            &e,
            ConnectError::Unreachable { source: LinkCause::Link(f), .. } if f.message() == "reset"
        ));
        assert_eq!(e.to_string(), "cannot reach http://relay:7600: reset");
    }

    #[test]
    fn only_a_socket_nobody_listens_on_means_the_agent_is_gone() {
        let unavailable = |kind: ErrorKind| AgentError::Unavailable {
            path: "/run/rex/agent.sock".into(),
            source: Arc::new(std::io::Error::from(kind)),
        };
        assert!(unavailable(ErrorKind::ConnectionRefused).agent_gone());
        assert!(unavailable(ErrorKind::NotFound).agent_gone());
        // There, but busy (its backlog full) or not ours to use.
        assert!(!unavailable(ErrorKind::WouldBlock).agent_gone());
        assert!(!unavailable(ErrorKind::PermissionDenied).agent_gone());
        assert!(!AgentError::Busy("full".into()).agent_gone());
        assert!(!AgentError::Lost("closed the connection").agent_gone());
    }

    #[test]
    fn only_relay_trouble_tries_the_next_relay() {
        assert!(
            ClientError::Connect(ConnectError::UnknownServer("x".into())).next_relay_may_help()
        );
        assert!(ClientError::Connect(ConnectError::Timeout(Waiting::Relay)).next_relay_may_help());
        assert!(
            !ClientError::Connect(ConnectError::Timeout(Waiting::ExecServer)).next_relay_may_help()
        );
        let key = proto::keys::StaticKeypair::generate().unwrap().public();
        assert!(!ClientError::Connect(ConnectError::Unauthorized(key)).next_relay_may_help());
    }
}
