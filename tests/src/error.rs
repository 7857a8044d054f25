//! The error every fallible fixture returns: which fixture step failed,
//! and why.

/// A fixture could not set something up or read what it ran.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// An I/O step failed (binding a socket, spawning a process, writing a
    /// file, ...).
    #[error("{what}: {source}")]
    Io {
        /// The step, e.g. "binding the relay's listener".
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something the fixture starts (a build, a server, a binary) did not
    /// start.
    #[error("{what} did not start: {reason}")]
    Start {
        /// What was being started.
        what: String,
        /// Why it did not start.
        reason: String,
    },
    /// Something the fixture waited for did not happen in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
    },
    /// A process or task finished, but not with the output expected.
    #[error("{what}: unexpected output: {reason}")]
    Output {
        /// What produced the output.
        what: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl FixtureError {
    /// A [`FixtureError::Io`] error for the step `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A [`FixtureError::Start`] error for `what`.
    pub fn start(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Start {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// A [`FixtureError::Output`] error for `what`.
    pub fn output(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Output {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// A fixture's result.
pub type Result<T> = std::result::Result<T, FixtureError>;
