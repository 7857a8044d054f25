//! The stage-span vocabulary (docs/spans.md). Every span the services make is
//! named by one of these constants; `docs/spans.md` lists the same names, and
//! a span is added or renamed in both at once.

/// The CLI's whole life for one `exec`: from the process's start to its
/// spans being flushed (core-client).
pub const CLI_RUN: &str = "cli.run";
/// The CLI from its process's start until it is ready to dispatch: loading,
/// arguments, configuration, keys, telemetry (core-client).
pub const CLI_STARTUP: &str = "cli.startup";
/// The CLI after the last event: the last output written and the session
/// closed (core-client).
pub const CLI_FINISH: &str = "cli.finish";
/// The CLI saving the command's record (the barrier at exit; core-client).
pub const CLI_RECORDS: &str = "cli.records";
/// The CLI flushing its spans to the trace file or the collector
/// (core-client).
pub const CLI_FLUSH: &str = "cli.flush";
/// The caller's exec, from the call to the last event handed back
/// (core-client).
pub const TOOL_DISPATCH: &str = "tool.dispatch";
/// A call a local agent makes on a CLI's behalf, from taking the CLI's
/// request to handing its last event on; the child of the CLI's
/// `tool.dispatch` (core-client-agent).
pub const AGENT_DISPATCH: &str = "agent.dispatch";
/// The CLI asking its local agent: from connecting to its socket until
/// the agent took the call (core-client).
pub const AGENT_REQUEST: &str = "agent.request";
/// The agent's last event on its way to the CLI: from the agent handing it
/// on until the CLI decoded it (core-client).
pub const AGENT_REPLY: &str = "agent.reply";
/// From the call to asking for a session: checking and encoding the
/// request, starting the trace (core-client).
pub const DISPATCH_PREPARE: &str = "dispatch.prepare";
/// Getting a ready session: reused, or connect + handshake + init
/// (core-client).
pub const SESSION_ACQUIRE: &str = "session.acquire";
/// One warm of a client's session: a ping of the live session or the
/// establishment of a new one; a root of its own, linked to the span that
/// established the session (core-client).
pub const SESSION_WARM: &str = "session.warm";
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
/// The exec-server's side of a call it reported no stages for (one from
/// before the summaries, or `exec-server --no-call-timings`): its wire legs
/// and its work as one stage, made by the client so the dispatch still
/// tiles (core-client).
pub const REMOTE_UNREPORTED: &str = "remote.unreported";
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
/// A session's link broke under a call and the session came back (or
/// gave up): from when the loss was noticed to the resume's answer
/// (core-client; one per call that waited).
pub const SESSION_REATTACH: &str = "session.reattach";
/// Coming back: the wait before an attempt (core-client).
pub const SESSION_REATTACH_WAIT: &str = "session.reattach.wait";
/// Coming back: the resume asked and answered over the new link
/// (core-client).
pub const SESSION_RESUME: &str = "session.resume";
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

/// `tool.dispatch` (and `agent.dispatch`) attribute, on the call that
/// opened its session: the flights the session's client sent until the
/// call's first event arrived.
pub const ATTR_SESSION_FLIGHTS: &str = "rex.session.flights";
/// `tool.dispatch` (and `agent.dispatch`) attribute, on the call that
/// opened its session: the round trips it waited on before its first event
/// (counted from the protocol's steps, not from time).
pub const ATTR_SESSION_ROUND_TRIPS: &str = "rex.session.round_trips";
/// `tool.dispatch` (and `agent.dispatch`) attribute, on the call that
/// opened its session: calls sent again after the exec-server refused to
/// run them from handshake message 1.
pub const ATTR_SESSION_EARLY_RETRIES: &str = "rex.session.early_retries";
/// `relay.connect` attribute: times the tunnel's opening was refused as
/// busy (what was dialled was at one of its limits) and tried again on the
/// same link, with the same handshake message 1; each is a round trip more
/// in [`ATTR_SESSION_ROUND_TRIPS`].
pub const ATTR_BUSY_RETRIES: &str = "rex.busy_retries";
/// `session.acquire` attribute: true when the call established its session
/// with itself in handshake message 1 (early data); the span then ends as
/// the call leaves, and the session's set-up spans (`relay.connect`,
/// `noise.handshake`, `session.init`) are the dispatch's children, beside
/// the call's path.
pub const ATTR_SESSION_EARLY_DATA: &str = "rex.session.early_data";
/// `process.run` attribute (exec-server): nanoseconds the command's output
/// readers waited for output credit (window-limited time, or the
/// exec-server's budget for unacknowledged output).
pub const ATTR_OUTPUT_CREDIT_WAIT: &str = "rex.output.credit_wait_ns";
/// `process.run` attribute (exec-server): the widest the command's output
/// window was (bytes; its client widens it with the path).
pub const ATTR_OUTPUT_WINDOW: &str = "rex.output.window";
/// `process.run` attribute (exec-server): the window the command's output
/// started with (bytes: the session's, or wider when the session had
/// measured its path on a call that ended moments before).
pub const ATTR_OUTPUT_WINDOW_FIRST: &str = "rex.output.window_first";
/// `tool.dispatch` attribute, on a call with stdin: the widest stdin
/// window its exec-server gave (bytes; the window grows with the path).
pub const ATTR_STDIN_WINDOW: &str = "rex.stdin.window";
/// `tool.dispatch` attribute, on a call with stdin: nanoseconds its stdin
/// was ready to go and waited for the window (window-limited time).
pub const ATTR_STDIN_WINDOW_WAIT: &str = "rex.stdin.window_wait_ns";

/// On the resource of a client's spans that its exec-server exported for
/// it (forwarded through the session): the client key's id. A client's own
/// value is replaced.
pub const FORWARDED_FOR: &str = "rex.forwarded_for";
/// Placed spans (the exec-server's stages and the relay's forwards a client
/// wrote from what they told) and `link.transit` legs: where the clock
/// offset that placed them came from (`same-host`, `synchronized`,
/// `two-way`; for a leg, the loosest of its two ends').
pub const ATTR_CLOCK_SOURCE: &str = "rex.clock.source";
/// The values of [`ATTR_CLOCK_SOURCE`], by name (`ClockSource::parse`,
/// `ClockSource::as_str`).
pub use proto::session::peer_clock::Source as ClockSource;
/// Placed spans and legs: the offset used, the peer's clock minus ours, in
/// nanoseconds (exported timestamps are never shifted by it).
pub const ATTR_CLOCK_OFFSET: &str = "rex.clock.offset_ns";
/// Placed spans and legs: how far the truth may be from the offset used,
/// either way, in nanoseconds (0 on the same host; for a leg, the sum of
/// its ends' bounds).
pub const ATTR_CLOCK_BOUND: &str = "rex.clock.bound_ns";
/// Placed exec-server stages: the two-way estimate, when keeping cause
/// before effect moved the offset used away from it.
pub const ATTR_CLOCK_MEASURED: &str = "rex.clock.measured_ns";
/// `link.transit` legs: `measured` when both ends' clocks are known
/// (same host, synchronized) so each leg is its own, `unknown` when the
/// two-way estimate placed them: only their round trip is measured.
pub const ATTR_CLOCK_SPLIT: &str = "rex.clock.split";
/// `link.transit` legs whose split is unknown: the round trip they make
/// with their opposite leg, in nanoseconds (measured on our clock and the
/// peer's, whatever the offset).
pub const ATTR_ROUND_TRIP: &str = "rex.round_trip_ns";

/// Every attribute name above.
#[cfg(test)]
const ATTRIBUTES: &[&str] = &[
    ATTR_SESSION_FLIGHTS,
    ATTR_SESSION_ROUND_TRIPS,
    ATTR_SESSION_EARLY_RETRIES,
    ATTR_SESSION_EARLY_DATA,
    ATTR_BUSY_RETRIES,
    ATTR_STDIN_WINDOW,
    ATTR_STDIN_WINDOW_WAIT,
    ATTR_OUTPUT_CREDIT_WAIT,
    ATTR_OUTPUT_WINDOW,
    ATTR_OUTPUT_WINDOW_FIRST,
    ATTR_CLOCK_SOURCE,
    ATTR_CLOCK_OFFSET,
    ATTR_CLOCK_BOUND,
    ATTR_CLOCK_MEASURED,
    ATTR_CLOCK_SPLIT,
    ATTR_ROUND_TRIP,
    FORWARDED_FOR,
];

/// The spans that are roots of their own, never part of a command's
/// trace: background persistence and the session- and link-level spans.
const BACKGROUND: &[&str] = &[
    SESSION_WARM,
    METADATA_PERSIST,
    METADATA_FLUSH,
    SESSION_CLIENT,
    SESSION_SERVER,
    RELAY_SESSION,
    RELAY_REGISTRATION,
    LINK_REGISTER,
];

/// The CLI's own spans (`core-client exec`): a library call makes none.
pub const CLI: &[&str] = &[CLI_RUN, CLI_STARTUP, CLI_FINISH, CLI_RECORDS, CLI_FLUSH];

/// The spans of a call through a local agent: a direct call makes none.
pub const AGENT: &[&str] = &[AGENT_DISPATCH, AGENT_REQUEST, AGENT_REPLY];

/// The spans of a call whose session's link broke: a call over a link
/// that held makes none.
pub const RESUME: &[&str] = &[SESSION_REATTACH, SESSION_REATTACH_WAIT, SESSION_RESUME];

/// The spans a call makes only when its exec-server reported no stages: a
/// call to one that did makes none.
pub const UNREPORTED: &[&str] = &[REMOTE_UNREPORTED];

/// Whether `name` is one of the `BACKGROUND` spans.
pub fn is_background(name: &str) -> bool {
    BACKGROUND.contains(&name)
}

/// Every span name above, in table order.
pub const ALL: &[&str] = &[
    CLI_RUN,
    CLI_STARTUP,
    CLI_FINISH,
    CLI_RECORDS,
    CLI_FLUSH,
    TOOL_DISPATCH,
    AGENT_DISPATCH,
    AGENT_REQUEST,
    AGENT_REPLY,
    DISPATCH_PREPARE,
    SESSION_ACQUIRE,
    SESSION_WARM,
    RELAY_CONNECT,
    NOISE_HANDSHAKE,
    SESSION_INIT,
    RPC_CLIENT_QUEUE,
    RELAY_FRAME_SEND,
    LINK_TRANSIT,
    REMOTE_UNREPORTED,
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
    SESSION_REATTACH,
    SESSION_REATTACH_WAIT,
    SESSION_RESUME,
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
        assert_eq!(ALL.len(), 42);
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

    /// `docs/spans.md` documents every attribute the vocabulary names.
    #[test]
    fn the_documented_attributes_are_the_vocabularys() {
        let doc = include_str!("../../docs/spans.md");
        for name in ATTRIBUTES {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/spans.md does not document {name}"
            );
        }
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
