//! `-v` / `-vv`: what `exec` does, one line a step on stderr, as ssh's
//! `-v` says it (`debug1: ...`): the config file and the known servers
//! read, where each setting came from, the agent, each relay tried, the
//! connection and handshake's outcome, the link lost and resumed, the
//! exit. `-vv` adds every setting's source and the trace id. Never a
//! secret (keys are named by their file or their server id) and never the
//! command, its arguments, environment values or output.

use std::fmt;

/// How much to say: 0 (nothing), 1 (`-v`) or 2 and more (`-vv`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Verbose(pub u8);

impl Verbose {
    /// Says `what` at `level` (1 or 2), if asked for.
    pub(super) fn say(self, level: u8, what: fmt::Arguments<'_>) {
        if self.0 >= level {
            eprintln!("debug{level}: {what}");
        }
    }

    /// Whether `level` is said.
    pub(super) fn at(self, level: u8) -> bool {
        self.0 >= level
    }
}
