//! What is recorded: one row per command dispatched by a client, one per
//! process run by an exec-server. A record is written again, whole, each
//! time its command progresses (dispatched → running → finished); the
//! latest state of a key wins.

use serde::Serialize;

/// How far a command or process has got. Exhaustive on purpose: each case
/// is a stored value, so a new one is a schema change every reader handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// Sent (client) or accepted (server), not yet started.
    Dispatched,
    /// The process is running.
    Running,
    /// It ended (see the exit).
    Finished,
}

impl Progress {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Finished => "finished",
        }
    }

    /// The value for stored text (unknown text reads as finished).
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "dispatched" => Self::Dispatched,
            "running" => Self::Running,
            _ => Self::Finished,
        }
    }
}

/// How a command ended. Exhaustive on purpose: each case is stored in its
/// own columns, so a new one is a schema change every reader handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It could not run or its session was lost (the message says which).
    Error(String),
}

impl Exit {
    /// One short word or number, as `history` shows it.
    pub fn short(&self) -> String {
        match self {
            Self::Code(c) => c.to_string(),
            Self::Signal(s) => format!("sig{s}"),
            Self::Error(_) => "error".into(),
        }
    }
}

/// The trace a record belongs to, so its persistence spans can link it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TraceRef {
    /// 32 lowercase hex digits (empty when untraced).
    pub trace_id: String,
    /// 16 lowercase hex digits: the dispatch (client) or exec (server) span.
    pub span_id: String,
}

/// One command dispatched by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandRecord {
    /// A local id, unique per client host (32 hex digits).
    pub id: String,
    /// The exec-server's id.
    pub server_id: String,
    /// The program name (`argv[0]`'s file name).
    pub program: String,
    /// The arguments, only when the user opted in.
    pub args: Option<Vec<String>>,
    /// Its trace.
    pub trace: TraceRef,
    /// When it was dispatched (Unix milliseconds).
    pub started_unix_ms: i64,
    /// Dispatch to first output byte, in microseconds.
    pub first_output_us: Option<i64>,
    /// Dispatch to the last event, in microseconds.
    pub total_us: Option<i64>,
    /// How far it got.
    pub progress: Progress,
    /// How it ended.
    pub exit: Option<Exit>,
    /// Output bytes delivered.
    pub stdout_bytes: u64,
    /// Error-output bytes delivered.
    pub stderr_bytes: u64,
}

/// One process run by an exec-server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessRecord {
    /// A local id, unique per exec-server host (32 hex digits).
    pub id: String,
    /// The session it ran in (a local id).
    pub session: String,
    /// The client's public key (base64).
    pub client_key: String,
    /// The program name (`argv[0]`'s file name).
    pub program: String,
    /// Its pid, once known.
    pub pid: Option<u32>,
    /// Its trace.
    pub trace: TraceRef,
    /// When the request was accepted (Unix milliseconds).
    pub started_unix_ms: i64,
    /// When its exit was observed (Unix milliseconds).
    pub exited_unix_ms: Option<i64>,
    /// How far it got.
    pub progress: Progress,
    /// How it ended.
    pub exit: Option<Exit>,
    /// Output bytes pushed.
    pub stdout_bytes: u64,
    /// Error-output bytes pushed.
    pub stderr_bytes: u64,
}

/// A record of either side. Exhaustive on purpose: each kind is a table of
/// the store, which writes every kind there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A client's command.
    Command(CommandRecord),
    /// An exec-server's process.
    Process(ProcessRecord),
}

/// What identifies a record: its latest state replaces earlier ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A command's id.
    Command(String),
    /// A process's id.
    Process(String),
}

impl Record {
    /// The record's key.
    pub(crate) fn key(&self) -> Key {
        match self {
            Self::Command(c) => Key::Command(c.id.clone()),
            Self::Process(p) => Key::Process(p.id.clone()),
        }
    }

    /// The record's trace.
    pub(crate) fn trace(&self) -> &TraceRef {
        match self {
            Self::Command(c) => &c.trace,
            Self::Process(p) => &p.trace,
        }
    }
}

/// A fresh local id (128 random bits, hex).
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Now, in Unix milliseconds.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_text() {
        for p in [Progress::Dispatched, Progress::Running, Progress::Finished] {
            assert_eq!(Progress::parse(p.as_str()), p);
        }
    }

    #[test]
    fn ids_are_unique_hex() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
