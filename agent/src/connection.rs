//! One connection to the agent: its first request says what it is (a
//! call, `status`, `warm`, `flush` or `stop`); beyond the connection limit,
//! that request is answered busy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{SinkExt, StreamExt};
use prost::Message;
use proto::pb::agent::{self as wire, reply, request};
use rex_client::agent::{codec, encode};
use tokio::net::UnixStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::call;
use crate::state::Agent;

/// How long a new connection has to send its first request.
pub(crate) const FIRST_REQUEST: Duration = Duration::from_secs(5);

/// One connection (holding `open`, its place within the connection limit):
/// its first request says what it is.
pub(crate) async fn serve(agent: Arc<Agent>, stream: UnixStream, open: OwnedSemaphorePermit) {
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec());
    let mut writer = FramedWrite::new(write, codec());
    let first = match tokio::time::timeout(FIRST_REQUEST, reader.next()).await {
        Ok(Some(Ok(bytes))) => wire::Request::decode(bytes.freeze()).ok(),
        _ => None,
    };
    let taken = SystemTime::now();
    match first.and_then(|r| r.body) {
        Some(request::Body::Exec(exec)) => {
            call::serve(agent, exec, taken, reader, writer, open).await;
        }
        Some(request::Body::Status(_)) => {
            let status = wire::Reply {
                body: Some(reply::Body::Status(agent.status())),
                ..wire::Reply::default()
            };
            let _ = writer.send(encode(&status)).await;
        }
        Some(request::Body::Warm(w)) => {
            // Asked to keep sessions warm: not idle.
            agent.activity();
            let warmed = agent.warm_now(&w.routes).await;
            // The warms' spans are written before the CLI hears of them.
            agent.flush_spans().await;
            let reply = wire::Reply {
                body: Some(reply::Body::Warmed(warmed)),
                ..wire::Reply::default()
            };
            let _ = writer.send(encode(&reply)).await;
        }
        Some(request::Body::Flush(_)) => {
            let flushed = agent.write_out(true).await;
            let _ = writer.send(encode(&flushed)).await;
        }
        Some(request::Body::Stop(_)) => {
            let stopping = wire::Reply {
                body: Some(reply::Body::Stopping(wire::Empty {})),
                ..wire::Reply::default()
            };
            let _ = writer.send(encode(&stopping)).await;
            tracing::info!("asked to stop");
            agent.stop.cancel();
        }
        // Nothing, or nothing it understands: the connection ends.
        _ => {}
    }
}

/// A connection beyond the limit: its first request is answered "busy"
/// (bounded in time), and it is closed.
pub(crate) async fn refuse_busy(stream: UnixStream, limit: usize) {
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec());
    let mut writer = FramedWrite::new(write, codec());
    let _ = tokio::time::timeout(FIRST_REQUEST, async {
        let _ = reader.next().await;
        let busy = wire::Reply {
            body: Some(reply::Body::Failure(wire::Failure {
                connection: false,
                busy: true,
                message: format!("it has {limit} connections open, its most"),
            })),
            ..wire::Reply::default()
        };
        let _ = writer.send(encode(&busy)).await;
    })
    .await;
}
