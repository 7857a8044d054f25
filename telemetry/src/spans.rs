//! The stage-span vocabulary (DESIGN.md §3.2). Every span the services make is
//! named by one of these constants; `docs/spans.md` lists the same names, and
//! a span is added or renamed in both at once.

/// The caller's exec, from the call to the last event handed back
/// (core-client).
pub const TOOL_DISPATCH: &str = "tool.dispatch";
/// From the call to asking for a session: checking and encoding the
/// request, starting the trace (core-client).
pub const DISPATCH_PREPARE: &str = "dispatch.prepare";
/// Getting a ready session: reused, or connect + handshake + init
/// (core-client).
pub const SESSION_ACQUIRE: &str = "session.acquire";
/// Cold start: connecting to the relay (core-client).
pub const RELAY_CONNECT: &str = "relay.connect";
/// Cold start: the Noise handshake (core-client).
pub const NOISE_HANDSHAKE: &str = "noise.handshake";
/// Cold start: session initialisation (core-client).
pub const SESSION_INIT: &str = "session.init";
/// Residence in the client's outbound queue (core-client).
pub const RPC_CLIENT_QUEUE: &str = "rpc.client.queue";
/// Encode, encrypt, frame and write one traced message (both ends).
pub const RELAY_FRAME_SEND: &str = "relay.frame.send";
/// Time on the wire between the two ends of a session, one leg (the exec
/// request out, the final event back), computed by the client from the
/// sender's send time and the clock offset (core-client).
pub const LINK_TRANSIT: &str = "link.transit";
/// A traced frame from arrival to write on the other side (relay).
pub const RELAY_FORWARD: &str = "relay.forward";
/// Read, decrypt and decode one traced message (both ends).
pub const RELAY_FRAME_RECV: &str = "relay.frame.recv";
/// Residence in the exec-server's dispatch queue (exec-server).
pub const RPC_SERVER_QUEUE: &str = "rpc.server.queue";
/// The exec call, until its final event is pushed (exec-server).
pub const RPC_SERVER_EXEC: &str = "rpc.server.exec";
/// Spawn until the pid is known (exec-server).
pub const PROCESS_SPAWN: &str = "process.spawn";
/// Pid until exit observed (exec-server); parent of the reader and watcher
/// spans.
pub const PROCESS_RUN: &str = "process.run";
/// The child's stdout reader (exec-server).
pub const PROCESS_STDOUT_READER: &str = "process.stdout_reader";
/// The child's stderr reader (exec-server).
pub const PROCESS_STDERR_READER: &str = "process.stderr_reader";
/// The child's exit watcher (exec-server).
pub const PROCESS_EXIT_WATCHER: &str = "process.exit_watcher";
/// First to last terminal event written to the session (exec-server).
pub const TERMINAL_PUSH: &str = "terminal.push";
/// The final event from decoded to handed to the caller (core-client).
pub const TERMINAL_HANDOFF: &str = "terminal.handoff";
/// First to last terminal event handed to the caller (core-client).
pub const TERMINAL_DELIVERY: &str = "terminal.delivery";
/// Dispatch until the first output byte reaches the caller (core-client).
pub const EXEC_FIRST_OUTPUT: &str = "exec.first_output";
/// Background metadata persistence (both; linked, not on the hot path).
pub const METADATA_PERSIST: &str = "metadata.persist";
/// A metadata persistence barrier (both; linked, not on the hot path).
pub const METADATA_FLUSH: &str = "metadata.flush";
/// One session's life at the client, from opening the tunnel to its end; a
/// root of its own (`tracing` span; its warnings are its events).
pub const SESSION_CLIENT: &str = "session.client";
/// One session's life at the exec-server, from the link's opening to its
/// end; a root of its own (`tracing` span).
pub const SESSION_SERVER: &str = "session.server";
/// One session spliced by the relay; a root of its own (`tracing` span).
pub const RELAY_SESSION: &str = "relay.session";
/// One exec-server's registration stream at the relay; a root of its own
/// (`tracing` span).
pub const RELAY_REGISTRATION: &str = "relay.registration";
/// One attempt of the exec-server to register with a relay and stay
/// registered; a root of its own (`tracing` span).
pub const LINK_REGISTER: &str = "link.register";

/// The spans that are roots of their own, never part of a command's
/// trace: background persistence and the session- and link-level spans.
pub const BACKGROUND: &[&str] = &[
    METADATA_PERSIST,
    METADATA_FLUSH,
    SESSION_CLIENT,
    SESSION_SERVER,
    RELAY_SESSION,
    RELAY_REGISTRATION,
    LINK_REGISTER,
];

/// Whether `name` is one of the [`BACKGROUND`] spans.
pub fn is_background(name: &str) -> bool {
    BACKGROUND.contains(&name)
}

/// Every span name above, in table order.
pub const ALL: &[&str] = &[
    TOOL_DISPATCH,
    DISPATCH_PREPARE,
    SESSION_ACQUIRE,
    RELAY_CONNECT,
    NOISE_HANDSHAKE,
    SESSION_INIT,
    RPC_CLIENT_QUEUE,
    RELAY_FRAME_SEND,
    LINK_TRANSIT,
    RELAY_FORWARD,
    RELAY_FRAME_RECV,
    RPC_SERVER_QUEUE,
    RPC_SERVER_EXEC,
    PROCESS_SPAWN,
    PROCESS_RUN,
    PROCESS_STDOUT_READER,
    PROCESS_STDERR_READER,
    PROCESS_EXIT_WATCHER,
    TERMINAL_PUSH,
    TERMINAL_HANDOFF,
    TERMINAL_DELIVERY,
    EXEC_FIRST_OUTPUT,
    METADATA_PERSIST,
    METADATA_FLUSH,
    SESSION_CLIENT,
    SESSION_SERVER,
    RELAY_SESSION,
    RELAY_REGISTRATION,
    LINK_REGISTER,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// `^[a-z_]+(\.[a-z_]+)+$`
    fn well_formed(name: &str) -> bool {
        let parts: Vec<&str> = name.split('.').collect();
        parts.len() >= 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    }

    #[test]
    fn all_has_every_name_once() {
        assert_eq!(ALL.len(), 29);
        let unique: HashSet<&str> = ALL.iter().copied().collect();
        assert_eq!(unique.len(), ALL.len());
    }

    /// `docs/spans.md`'s table names exactly the spans of [`ALL`].
    #[test]
    fn the_documented_table_names_the_same_spans() {
        let doc = include_str!("../../docs/spans.md");
        let mut documented = HashSet::new();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let first = line.split('|').nth(1).unwrap_or_default();
            for name in first.split('`').skip(1).step_by(2) {
                documented.insert(name);
            }
        }
        let named: HashSet<&str> = ALL.iter().copied().collect();
        assert_eq!(
            documented, named,
            "docs/spans.md and telemetry::spans differ"
        );
    }

    #[test]
    fn names_are_well_formed() {
        for name in ALL {
            assert!(well_formed(name), "{name}");
        }
        for bad in [
            "tool",
            "tool.",
            ".tool",
            "Tool.dispatch",
            "a..b",
            "a.b-c",
            "a.b1",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
