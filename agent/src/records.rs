//! The command records the agent keeps for the CLIs whose data directory
//! is its own, so that such a CLI opens no database of its own: opened in
//! the background with the first record, written through at each call's
//! end, and flushed (bounded) before the call's `flushed` is answered.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a call's end waits for its record to be written (within the
/// CLI's wait for the agent's `flushed`).
const RECORD_FLUSH: Duration = Duration::from_millis(1500);

/// The command records the agent keeps for its callers.
#[derive(Debug, Clone)]
pub(crate) struct AgentRecords {
    /// The data directory (absolute) the store is in.
    dir: PathBuf,
    /// Its writer (started with the first record).
    pub(crate) store: metadata::Persister,
}

impl AgentRecords {
    /// The records kept in the data directory `data_dir` (none when it
    /// cannot be made absolute). The database is opened in the background
    /// with the first record; what goes wrong is logged (the calls' CLIs do
    /// not wait for their records), and told by `flush`.
    pub(crate) fn open(data_dir: &Path) -> Option<Self> {
        let dir = std::path::absolute(data_dir).ok()?;
        let mut writer = metadata::WriterConfig::default();
        writer.service = "core-client-agent";
        writer.log_failures = true;
        // As the CLI's own: written through to the OS at each call's end.
        writer.durability = metadata::Durability::ProcessCrash;
        let store = metadata::open_in_background(&dir, writer);
        Some(Self { dir, store })
    }

    /// Whether a CLI's data directory `dir` is this one.
    pub(crate) fn is_for(&self, dir: &Path) -> bool {
        match (std::fs::canonicalize(dir), std::fs::canonicalize(&self.dir)) {
            (Ok(a), Ok(b)) => a == b,
            _ => std::path::absolute(dir).is_ok_and(|a| a == self.dir),
        }
    }

    /// Writes the records taken so far (bounded): why not, in one line.
    pub(crate) async fn flush(&self) -> Option<String> {
        let store = self.store.clone();
        let flushed = tokio::task::spawn_blocking(move || store.flush_within(RECORD_FLUSH)).await;
        match flushed {
            Ok(Ok(())) => None,
            Ok(Err(e @ metadata::PersistError::Timeout { .. })) => Some(format!(
                "{e}; the agent keeps the command's record and goes on trying to save it"
            )),
            Ok(Err(e)) => Some(format!("{e}; this command's record is not saved")),
            Err(_) => {
                Some("the agent's record writer failed; this command's record is not saved".into())
            }
        }
    }

    /// Stops the writer, waiting at most `within` for what it holds.
    pub(crate) async fn shutdown(&self, within: Duration) {
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.shutdown(within)).await;
    }
}
