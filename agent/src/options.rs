//! The agent's settings: what the CLI's `agent start` flags (and the
//! config file) say, as plain values.

use std::path::PathBuf;
use std::time::Duration;

use proto::pb::agent as wire;
use rex_client::WarmPolicy;

/// The agent's settings. [`Default`] is `agent start`'s defaults; set the
/// fields that differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// With no call for this long it stops (`None`: never).
    pub persist: Option<Duration>,
    /// Most sessions held (at least one).
    pub max_sessions: usize,
    /// Most connections open at once (calls, status, warm and stop; at
    /// least one): beyond it, the agent answers busy.
    pub max_connections: usize,
    /// The warm policy of a session held for a server whose settings give
    /// none.
    pub warm: WarmPolicy,
    /// Sessions held from the start, warmed as each says (the servers
    /// whose `warm` option is an interval).
    pub prewarm: Vec<wire::Route>,
    /// Writes the agent's spans now: given when they go to the local trace
    /// file, so that each call's are written just after its exit is handed
    /// on, and before a `flush` is answered.
    pub flusher: Option<telemetry::setup::Flusher>,
    /// The data directory: the agent keeps the records of the calls that
    /// ask it to (a CLI whose data directory is this one, so that the CLI
    /// opens no database of its own), and its sessions forward the spools
    /// under it. `None`: no records, no spools.
    pub data_dir: Option<PathBuf>,
    /// Whether its sessions forward their calls' spans to an exec-server
    /// that takes them (when the agent keeps its spans in the local trace
    /// file).
    pub forward_spans: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            persist: Some(Duration::from_secs(600)),
            max_sessions: 16,
            max_connections: 256,
            warm: WarmPolicy::every(Duration::from_secs(30)),
            prewarm: Vec::new(),
            flusher: None,
            data_dir: None,
            forward_spans: true,
        }
    }
}
