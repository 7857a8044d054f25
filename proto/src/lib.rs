//! The wire between core-client, relay and exec-server.
//!
//! Layout:
//! - [`pb`]: the generated protobuf types and tonic services (`tunnel`: relay
//!   links; `session`: the plaintext session messages; `agent`: between
//!   the CLI and its local agent; `clock`: what a process tells its peers of
//!   its clock).
//! - [`keys`]: static X25519 keys, their text form, key files, authorized-keys
//!   files and the exec-server id derived from a public key.
//! - [`limits`]: every size bound on the wire, in one place.
//! - [`relay_link`]: the gRPC endpoint and HTTP/2 settings every relay link
//!   shares, and a link's sending half.
//! - `link_server` (feature `server`): serving the links' gRPC services over
//!   HTTP/2 (h2) with those settings, a small per-stream send buffer and
//!   a stream window a service may widen for its connection, every
//!   connection a tracked task, drained at shutdown.
//! - [`address`]: relay addresses as people type them (`HOST:PORT`,
//!   `http://…`, `https://…`), for every `--relay` flag.
//! - [`admission`]: admission of unauthenticated sessions (early drop as the
//!   table fills, a share per source), decided without IO.
//! - `listener` (feature `server`): accepting connections where anyone may
//!   connect (a cap, a share per source, a preface deadline, back-off).
//! - `tls` (features `channel` and `server`): TLS on relay links (the
//!   roots a dialling side trusts, a listener's certificate, what kind of
//!   TLS failure an error holds).
//! - [`health`]: the gRPC health protocol the relay answers, and its probe.
//! - [`program`]: a command's program name, the only part of it ever reported.
//! - [`noise`]: the sans-IO Noise IK session (handshake, replay guard, the
//!   transport's records carrying the envelope stream, rekey and
//!   authenticated close).
//! - [`frames`]: constructors for relay frames (handshake, data, close).
//! - `frame_wire` (features `channel` and `server`): tunnel frames read
//!   from and written to gRPC bodies without tonic's codec, so that a
//!   relay passes each payload on as the bytes it arrived as and an end
//!   reads each frame where it arrived; `frame_wire::call` (feature
//!   `channel`) makes a tunnel call so.
//! - [`envelope_stream`]: the length-prefixed envelope stream inside the
//!   session.
//! - [`envelope`]: envelope encode/decode with size limits.
//! - [`registration`]: the sans-IO proof that a registering exec-server holds
//!   its static key.
//! - [`routing`]: the routing headers on relay links (server and session ids).
//! - [`driver`]: the one async driver that runs a session machine over a
//!   link (either end).
//! - [`session`]: the session protocol as sans-IO state machines
//!   ([`session::ClientSession`], [`session::ServerSession`]).
//! - [`wall_time`]: wall-clock helpers shared by the codecs.
//!
//! Apart from [`health`]'s probe, [`relay_link`]'s settings, the listener,
//! the link server and the [`driver`], nothing here depends on an async
//! runtime: the protocol cores take bytes and time and return bytes and
//! events; the services drive them.

pub mod address;
pub mod admission;
pub mod driver;
pub mod envelope;
pub mod envelope_stream;
#[cfg(any(feature = "channel", feature = "server"))]
pub mod frame_wire;
pub mod frames;
#[cfg(feature = "health")]
pub mod health;
pub mod keys;
pub mod limits;
#[cfg(feature = "server")]
pub mod link_server;
#[cfg(feature = "server")]
pub mod listener;
pub mod noise;
pub mod program;
pub mod registration;
pub mod relay_link;
pub mod routing;
pub mod session;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wall_time;

mod generated {
    #![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]
    // The packages' own paths, which the generated code refers to.
    pub(crate) mod rex {
        pub(crate) mod clock {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/rex.clock.v1.rs"));
            }
        }
        pub(crate) mod tunnel {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/rex.tunnel.v1.rs"));
            }
        }
        pub(crate) mod session {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/rex.session.v1.rs"));
            }
        }
        pub(crate) mod agent {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/rex.agent.v1.rs"));
            }
        }
    }
}

/// Generated protobuf messages and tonic service stubs.
pub mod pb {
    pub use super::generated::rex::agent::v1 as agent;
    pub use super::generated::rex::clock::v1 as clock;
    pub use super::generated::rex::session::v1 as session;
    pub use super::generated::rex::tunnel::v1 as tunnel;
}

/// The protocol version bound into every Noise prologue (a peer of another
/// version fails the handshake). Version 2: the record type is a trailer,
/// stdin is flow-controlled. Version 3: output is flow-controlled per call
/// (an output window and acknowledgements).
pub(crate) const PROTOCOL_VERSION: &str = "rex/3";
