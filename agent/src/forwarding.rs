//! How the agent's sessions forward their calls' spans to an exec-server
//! that takes them (docs/tracing.md, Forwarding), with the spools under the
//! data directory: what the CLIs and earlier processes could not send
//! before they exited.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::keys::PublicKey;
use telemetry::forward::{SpanSource, Spool, SpoolLimits, WithSpool};

/// Where spans not yet forwarded at exit wait for the next session to
/// their exec-server, under the data directory `data_dir` (the CLI's and
/// the agent's).
pub fn spool_root(data_dir: &Path) -> PathBuf {
    data_dir.join("span_spool")
}

/// How the sessions forward their calls' spans.
#[derive(Debug, Clone)]
pub(crate) struct SpanForwarding {
    /// Where the spans are taken from: the agent's own collector, when it
    /// has no OTLP endpoint and forwarding is not turned off (`None`:
    /// nothing is forwarded).
    pub(crate) source: Option<Arc<dyn SpanSource>>,
    /// The spools (under the data directory) whose batches go with each
    /// session's calls: what the CLIs and earlier processes left.
    pub(crate) spool_root: Option<PathBuf>,
}

impl SpanForwarding {
    /// The agent forwards its calls' spans, with the spools under
    /// `data_dir`, when it keeps its spans in the local trace file (the
    /// process's span source is then installed) and `forwarding` is not
    /// turned off (as for `exec`).
    pub(crate) fn new(data_dir: Option<&Path>, forwarding: bool) -> Self {
        Self {
            source: forwarding.then(telemetry::forward::source).flatten(),
            spool_root: data_dir
                .and_then(|d| std::path::absolute(d).ok())
                .map(|d| spool_root(&d)),
        }
    }

    /// The span source of a session to `server`.
    pub(crate) fn for_server(&self, server: &PublicKey) -> Option<Arc<dyn SpanSource>> {
        let source = self.source.as_ref()?;
        Some(match &self.spool_root {
            Some(root) => Arc::new(WithSpool::new(
                Arc::clone(source),
                Spool::new(root, &server.server_id(), SpoolLimits::default()),
            )),
            None => Arc::clone(source),
        })
    }
}
