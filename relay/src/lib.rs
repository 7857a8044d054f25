//! The relay: a tonic gRPC service that exec-servers dial out to and clients
//! connect through. It pairs a client's tunnel stream with the exec-server's
//! matching stream and forwards frames. It sees frame kinds, sizes, timing and
//! an optional hop traceparent; it never sees a command, an output byte or a
//! session key.
//!
//! Layout:
//! - [`config`]: the relay's settings and their bounds.
//! - [`registry`]: registered exec-servers and sessions waiting to be
//!   accepted; shares of registrations per connection and per source.
//! - `registration`: the allow-list of exec-server keys and the rate of
//!   registration attempts.
//! - [`directory`]: the fleet's directory in etcd (which relay holds each
//!   exec-server) and its local copy.
//! - [`fleet`]: the fleet key, and the proof a forwarding relay gives.
//! - `fleet_forward`: forwarding a session to the relay that holds its
//!   exec-server.
//! - `peer_credit`: a forwarding relay's credit for what the holding relay
//!   sends it, and the gates that hold the holding relay to it.
//! - `peer_grants`: the `PeerCredit` gRPC service, on which a forwarding
//!   relay sends its grants.
//! - [`budget`]: the bytes queued in the relay, per session and relay-wide.
//! - `credit`: the relay's credit for what an exec-server sends toward a
//!   client, granted on its registration stream as frames are forwarded.
//! - `service`: the `Tunnel` (clients) and `Registry` (exec-servers) gRPC services.
//! - `splice`: forwarding frames between the two halves of a session.
//! - `wire`: the tunnel streams served without tonic's codec, so that each
//!   payload passes through as the bytes it arrived as.
//! - `health`: answers to the gRPC health protocol (the relay, and each
//!   registered exec-server).
//! - `server`: binding, serving and graceful shutdown ([`Relay`], [`run`]).
//! - [`certs`]: `relay tls-init`, a private CA and the relay's certificate.

pub mod budget;
pub mod certs;
pub mod config;
mod credit;
pub mod directory;
pub mod fleet;
mod fleet_forward;
mod health;
mod peer_credit;
mod peer_grants;
mod registration;
pub mod registry;
mod server;
mod service;
mod splice;
mod wire;

pub use config::RelayConfig;
pub use credit::CreditStats;
pub use server::{BIND_WAIT, Relay, RelayError, RelayStats, bind, run, serve};
