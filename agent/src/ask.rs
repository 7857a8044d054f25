//! A running agent asked, one request a connection: its status, a warm of
//! some sessions, its barrier ([`flushed`]: the spans and records of every
//! call that ended are written) or to stop. (Calls through the agent are
//! `rex_client::agent::AgentClient`'s.)

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prost::Message;
use proto::pb::agent::{self as wire, reply, request};
use rex_client::agent::{codec, encode};
use tokio::net::UnixStream;

use crate::connection::FIRST_REQUEST;

/// How long `status` and `stop` wait for an answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// How long a warm waits for the warms (each is bounded by the handshake
/// timeout).
const WARM_WAIT: Duration = Duration::from_secs(60);
/// How long the barrier waits for the agent's writes (its record writer
/// waits at most 1.5 s).
const FLUSH_WAIT: Duration = Duration::from_secs(3);
/// How long `stop` waits for the agent to be gone (its socket removed).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why the agent did not answer as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// Nobody could be reached at the socket (no agent runs, or its socket
    /// is stale).
    #[error(transparent)]
    Connect(std::io::Error),
    /// It did not answer in time.
    #[error("the agent did not answer")]
    NoAnswer,
    /// It closed the connection before answering.
    #[error("the agent closed the connection")]
    Closed,
    /// The connection failed.
    #[error(transparent)]
    Io(std::io::Error),
    /// Its answer is not an agent-protocol reply.
    #[error(transparent)]
    Decode(prost::DecodeError),
    /// It is there, but at its connection limit.
    #[error("the agent is busy: {0}")]
    Busy(String),
    /// It answered something other than what was asked (for `stop`: it
    /// did not agree to stop).
    #[error("the agent answered something else")]
    Unexpected,
}

/// The status of the agent at `socket`: the agent, and each session it
/// holds.
pub async fn status(socket: &Path) -> Result<wire::Status, AskError> {
    match ask(socket, request::Body::Status(wire::Empty {}), ANSWER_WAIT)
        .await?
        .body
    {
        Some(reply::Body::Status(s)) => Ok(s),
        _ => Err(AskError::Unexpected),
    }
}

/// Asks the agent at `socket` to warm each of `routes`' sessions now
/// (holding it from now on if it did not), or every session it holds when
/// `routes` is empty: how each went, and the routes it refused.
pub async fn warm(socket: &Path, routes: Vec<wire::Route>) -> Result<wire::Warmed, AskError> {
    match ask(
        socket,
        request::Body::Warm(wire::WarmNow { routes }),
        WARM_WAIT,
    )
    .await?
    .body
    {
        Some(reply::Body::Warmed(w)) => Ok(w),
        _ => Err(AskError::Unexpected),
    }
}

/// Waits (bounded) until the agent at `socket` has written the spans and
/// saved the records of every call that ended before now: `None` when all
/// is written, else why a record could not be saved. An error when no
/// agent answers.
pub async fn flushed(socket: &Path) -> Result<Option<String>, AskError> {
    match ask(socket, request::Body::Flush(wire::Empty {}), FLUSH_WAIT)
        .await?
        .body
    {
        Some(reply::Body::Flushed(f)) => Ok((!f.record_error.is_empty()).then_some(f.record_error)),
        _ => Err(AskError::Unexpected),
    }
}

/// Asks the agent at `socket` to stop (its sessions close), then waits
/// (bounded) until its socket is gone.
pub async fn stop(socket: &Path) -> Result<(), AskError> {
    let reply = ask(socket, request::Body::Stop(wire::Empty {}), ANSWER_WAIT).await?;
    if !matches!(reply.body, Some(reply::Body::Stopping(_))) {
        return Err(AskError::Unexpected);
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    while socket.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Asks the agent at `socket` for one reply to `request` (status, warm,
/// flush, stop), waiting at most `wait` for it; a busy agent's refusal is
/// an error.
pub(crate) async fn ask(
    socket: &Path,
    request: request::Body,
    wait: Duration,
) -> Result<wire::Reply, AskError> {
    let stream = tokio::time::timeout(FIRST_REQUEST, UnixStream::connect(socket))
        .await
        .map_err(|_| AskError::NoAnswer)?
        .map_err(AskError::Connect)?;
    let mut framed = tokio_util::codec::Framed::new(stream, codec());
    framed
        .send(encode(&wire::Request {
            body: Some(request),
        }))
        .await
        .map_err(AskError::Io)?;
    let reply = match tokio::time::timeout(wait, framed.next()).await {
        Ok(Some(Ok(bytes))) => wire::Reply::decode(bytes.freeze()).map_err(AskError::Decode)?,
        Ok(Some(Err(e))) => return Err(AskError::Io(e)),
        Ok(None) => return Err(AskError::Closed),
        Err(_) => return Err(AskError::NoAnswer),
    };
    match reply.body {
        Some(reply::Body::Failure(f)) if f.busy => Err(AskError::Busy(f.message)),
        _ => Ok(reply),
    }
}
