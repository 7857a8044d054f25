//! The client library a remote-exec stack embeds: run commands on
//! exec-servers through an encrypted relay and get their terminal events as
//! they happen, each command one trace.
//!
//! ```no_run
//! # async fn f(config: rex_client::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use rex_client::{Client, Event, ExecSpec};
//! let client = Client::new(config);
//! let mut run = client.exec(ExecSpec::new(["sh", "-c", "echo hi; exit 3"])).await?;
//! while let Some(event) = run.next().await {
//!     if let Event::Stdout(bytes) = event {
//!         print!("{}", String::from_utf8_lossy(&bytes));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - `config`: [`ClientConfig`] and the [`Target`] (relay or direct).
//! - `client`: [`Client`]: one session, reused across calls, re-established
//!   when lost, kept warm by the warm policy; dispatch and its
//!   `tool.dispatch` span.
//! - `warm`: [`WarmPolicy`] and [`WarmStatus`]: when the next warm is due
//!   (pinging a live session or establishing one), none while calls run.
//! - `execution`: [`Execution`] (the call's events, also a `Stream`) and
//!   [`Controller`] (stdin, signals, resizes, cancel).
//! - `exec`: what a call is ([`ExecSpec`], with an optional [`Terminal`])
//!   and what comes back ([`Event`]).
//! - `error`: [`ClientError`], [`ConnectError`], [`SessionLost`].
//! - `connect`: establishing a session: its first link, the machine's
//!   first flight on it, and the session's driver.
//! - `tunnel`: opening a link (the tunnel stream to a relay, or to an
//!   exec-server directly) with a machine's first flight riding on it; every
//!   link the client opens goes through it.
//! - `transport_tasks`: the transport's own tasks (hyper's connection and
//!   stream tasks, tonic's buffer), spawned through the client's executor:
//!   tracked, with their wake-ups noted, so an exit can wait until what it
//!   handed over has been written and each connection has closed.
//! - `link_state`: [`LinkState`], a session's link as callers watch it (up,
//!   lost and being reconnected through which URL, ended).
//! - `outbound`: a link's sending half as the transport takes it, and
//!   when the transport is done with it (its last frame, a close sent at
//!   exit, handed to the stream).
//! - `reconnect`: a session whose link broke coming back (backoff, every
//!   relay in turn, the resume) within [`ClientConfig::resume`].
//! - `abandon`: giving a session up at the exec-server (a fresh link whose
//!   resume ends its calls there rather than leaving them for its grace).
//! - `session`: the handle callers hold on a session, and the state they
//!   share with its driver.
//! - `router`: the endpoint beside the session driver (the protocol itself
//!   is `proto::session::ClientSession`, run by `proto::driver`): callers'
//!   commands in, each call's events out, the client's framing spans.
//! - `dispatch`: what every dispatch starts with (the request checked,
//!   its span and `dispatch.prepare`, its record).
//! - [`agent`] (feature `agent`): calls through a local agent that holds
//!   the session ([`agent::AgentClient`]), with the same [`Execution`].
//! - `agent_call` (feature `agent`): a call's handle on its agent
//!   connection (stdin within the agent's window, controls, how it was
//!   lost), what its [`Controller`] sends through.
//! - `records` (feature `records`, on by default): each command's record.
//!
//! Tracing: the dispatch span is a child of [`ExecSpec::parent`], or of the
//! current OpenTelemetry context, which inside a `tracing` span is that
//! span's when the application installs a `tracing-opentelemetry` layer.

mod abandon;
#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "agent")]
mod agent_call;
mod client;
mod config;
mod connect;
mod dispatch;
mod error;
mod exec;
mod execution;
mod link_state;
mod outbound;
mod reconnect;
#[cfg(feature = "records")]
mod records;
mod router;
mod session;
mod transport_tasks;
mod tunnel;
mod warm;

pub use client::Client;
pub use config::{ClientConfig, DEFAULT_RESUME, Target};
pub use error::{
    AgentError, Busy, ClientError, ConnectError, HandshakeFailure, InvalidRequest, LinkCause,
    SessionLost, Unavailable, Via, Waiting,
};
pub use exec::{Event, ExecFailure, ExecSpec, ExitStatus, Gap, Output, Recording, Terminal};
pub use execution::{Controller, Execution};
pub use link_state::LinkState;
/// Keys: the client's own static key and the exec-server's public key.
pub use proto::keys::{KeyError, PublicKey, StaticKeypair};
/// Names an exec-server's run, for early data ([`Client::early_ticket`]).
pub use proto::noise::{EarlyTicket, TICKET_LEN};
/// What a session's start cost, counted from the protocol's steps.
pub use proto::session::Counters as SessionCounters;
pub use proto::session::StdinFlow;
/// TLS for `https://` targets: which CA certificates to trust, and the
/// kinds of TLS failure.
pub use proto::tls::{TlsError, TlsFailure, TlsSettings};
/// Collects an embedder's finished spans per trace for
/// [`ClientConfig::span_source`]: add its
/// [`processor`](SpanCollector::processor) to the tracer provider.
#[cfg(feature = "forward-spans")]
pub use telemetry::forward::SpanCollector;
/// Where [`ClientConfig::span_source`] takes a call's spans from.
pub use telemetry::forward::SpanSource;
pub use warm::{WarmOutcome, WarmPolicy, WarmStatus};
