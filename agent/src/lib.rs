//! The local agent's server half: a process of the user's that holds warm
//! sessions to exec-servers, so that each `core-client exec` (a new process
//! every time) finds its session established.
//!
//! Layout:
//! - `options`: [`Options`], the agent's settings as plain values.
//! - [`place`]: where the socket lives, and its private directory.
//! - `listener`: [`bind`]: the socket made ([`Listener`]), a live agent's
//!   never taken over ([`BindError`]).
//! - `serve`: [`serve`]: the agent running until it is stopped (`stop`,
//!   SIGINT or SIGTERM, idle for `persist`): other users refused, the
//!   sessions held from the start, the idle timer.
//! - `connection`: one connection's first request (a call, status, warm,
//!   flush or stop), and the busy answer beyond the connection limit.
//! - `state`: the running agent's shared state: activity, the status
//!   answer, warms asked for, what is written out after each call.
//! - `pool`: the sessions held (at most `max_sessions`, each kept warm).
//! - `route`: what a session is held for, as a request names it.
//! - `call`: one CLI's call through the agent (`agent.dispatch`).
//! - `stdin`: a call's stdin queue, bounded in bytes by its window.
//! - `events`: a call's events as the agent protocol carries them.
//! - `records`: the command records it keeps for CLIs that share its data
//!   directory.
//! - `forwarding`: how its sessions forward their calls' spans, with the
//!   spools ([`spool_root`]).
//! - [`ask`]: a running agent asked for its status, a warm, its barrier
//!   ([`ask::flushed`]) or to stop.
//!
//! As ssh's ControlMaster and ControlPersist: the CLI's `agent start` maps
//! its flags onto [`Options`], [`bind`]s the socket and [`serve`]s; `exec`
//! finds the socket ([`place::socket_path`]) and runs its call through it
//! with the client library's `rex_client::agent::AgentClient`, the other
//! `agent` commands [`ask`]. The protocol is `proto::pb::agent`.
//!
//! Every task is spawned through the agent's `lifecycle::Tasks`, carrying
//! its span; stopping cancels them, closes the sessions (bounded) and stops
//! the record writer.

pub mod ask;
mod call;
mod connection;
mod events;
mod forwarding;
mod listener;
mod options;
pub mod place;
mod pool;
mod records;
mod route;
mod serve;
mod state;
mod stdin;

pub use forwarding::spool_root;
pub use listener::{BindError, Listener, bind};
pub use options::Options;
pub use serve::serve;
