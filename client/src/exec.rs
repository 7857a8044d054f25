//! What a caller runs and what it gets back.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use bytes::Bytes;
use opentelemetry::Context;
use proto::pb::session::{EnvVar, ExecErrorKind, ExecRequest, StdinMode, Terminal as PbTerminal};

/// A command to run remotely: a program and its arguments
/// ([`ExecSpec::new`]), or the remote user's login shell
/// ([`ExecSpec::login_shell`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExecSpec {
    /// Program and arguments. No shell is involved unless argv runs one.
    /// Empty for a login shell (anything else is refused).
    pub argv: Vec<OsString>,
    /// Instead of `argv`: the login shell of the user the exec-server runs
    /// as (from its password database, else `/bin/sh`), started as a login
    /// shell in that user's home directory (unless `cwd` names another), as
    /// `ssh HOST` does without a command. The exec-server names the shell
    /// in [`Event::Started`]; one too old to start login shells refuses
    /// the call ([`ExecFailure::Refused`]) and runs nothing.
    pub login_shell: bool,
    /// Environment variables to set.
    pub env: Vec<(OsString, OsString)>,
    /// Start from an empty environment.
    pub clear_env: bool,
    /// Working directory (the exec-server's default if None).
    pub cwd: Option<PathBuf>,
    /// Whether stdin is a pipe the caller writes to (else /dev/null; on a
    /// terminal, the terminal with nothing typed into it).
    pub stdin: bool,
    /// Run the program on a pseudo-terminal of this size instead of pipes
    /// (None: pipes). Its output then comes as [`Event::Stdout`] only.
    pub terminal: Option<Terminal>,
    /// The caller's trace context; the dispatch span is its child. When
    /// None, the current context is used.
    pub parent: Option<Context>,
    /// The call is forwarded on another process's behalf (a local agent's
    /// work): its span is `agent.dispatch`, a child of that process's
    /// dispatch (`parent`), instead of a `tool.dispatch` of its own.
    pub forwarded: bool,
    /// When the caller began dispatching, if it took that instant itself
    /// (so that its own span before the dispatch ends exactly where
    /// `tool.dispatch` starts); when None, or later than the call, the
    /// dispatch starts when [`Client::exec`](crate::Client::exec) is
    /// called.
    pub dispatched_at: Option<std::time::SystemTime>,
    /// Whether the call is recorded, when the client keeps records
    /// ([`ClientConfig::metadata`](crate::ClientConfig::metadata)).
    pub recording: Recording,
}

/// Whether a call is recorded, when its client keeps records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recording {
    /// As the client's configuration says (its `record_args` for the
    /// arguments).
    #[default]
    AsConfigured,
    /// Not recorded.
    Off,
    /// Recorded, with its arguments or without.
    On {
        /// Record the arguments too (the program name always is).
        args: bool,
    },
}

impl ExecSpec {
    /// A spec for argv with stdin closed.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A spec for the remote user's login shell (see
    /// [`login_shell`](Self::login_shell)), with stdin closed.
    pub fn login_shell() -> Self {
        Self {
            login_shell: true,
            ..Self::default()
        }
    }

    /// The program name (argv[0]'s file name), for spans and messages;
    /// None for a login shell, which the exec-server chooses.
    pub fn program(&self) -> Option<String> {
        if self.login_shell {
            return None;
        }
        Some(
            self.argv
                .first()
                .map(|a| proto::program::program_name(a.as_bytes()))
                .unwrap_or_default(),
        )
    }

    pub(crate) fn to_request(&self) -> ExecRequest {
        let b = |s: &OsString| Bytes::copy_from_slice(s.as_bytes());
        ExecRequest {
            argv: self.argv.iter().map(b).collect(),
            env: self
                .env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: b(k),
                    value: b(v),
                })
                .collect(),
            cwd: self
                .cwd
                .as_ref()
                .map(|p| Bytes::copy_from_slice(p.as_os_str().as_bytes()))
                .unwrap_or_default(),
            stdin: if self.stdin {
                StdinMode::Pipe as i32
            } else {
                StdinMode::Null as i32
            },
            clear_env: self.clear_env,
            terminal: self.terminal.as_ref().map(|t| PbTerminal {
                rows: u32::from(t.rows),
                cols: u32::from(t.cols),
                term: t.term.clone().unwrap_or_default(),
            }),
            login_shell: self.login_shell,
            // The session sets it from what it measured of its path.
            output_window: 0,
        }
    }
}

/// A pseudo-terminal for a remote command: the exec-server opens one of
/// this size, makes it the process's controlling terminal (stdin, stdout
/// and stderr) in a new session, and sends what it shows as stdout.
/// Resize it with [`Controller::resize`](crate::Controller::resize).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// Rows (1 to 10,000).
    pub rows: u16,
    /// Columns (1 to 10,000).
    pub cols: u16,
    /// The process's `TERM` (e.g. `xterm-256color`); None leaves `TERM` as
    /// the environment has it.
    pub term: Option<String>,
}

impl Terminal {
    /// A terminal of `rows` by `cols`, with no `TERM` of its own.
    pub fn new(rows: u16, cols: u16) -> Self {
        Self {
            rows,
            cols,
            term: None,
        }
    }

    /// With `TERM` set to `term`.
    pub fn with_term(mut self, term: impl Into<String>) -> Self {
        self.term = Some(term.into());
        self
    }
}

/// How a remote process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

/// Why a call ended without an exit status. Exhaustive on purpose: the
/// agent carries each failure in its own protocol, and a new one must be
/// mapped there (and wherever a caller tells them apart) before it builds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecFailure {
    /// The program does not exist on the exec-server.
    #[error("{0}")]
    NotFound(String),
    /// The program could not be executed (permissions).
    #[error("{0}")]
    PermissionDenied(String),
    /// The working directory is not usable.
    #[error("{0}")]
    BadCwd(String),
    /// The exec-server refused the request (limits, bad request).
    #[error("{0}")]
    Refused(String),
    /// The exec-server failed to run it.
    #[error("{0}")]
    Remote(String),
    /// A terminal was asked for and none was given: the exec-server gives
    /// none (`--no-tty`), or has none left.
    #[error("{0}")]
    NoTerminal(String),
    /// The session ended before the call finished.
    #[error("session lost: {0}")]
    SessionLost(#[source] crate::error::SessionLost),
    /// A call through a local agent ended without its exit: the agent's
    /// session was lost, or the agent itself went away (as it says).
    #[error("{0}")]
    Agent(String),
    /// The command's output will not all arrive: its session came back
    /// too late (the exec-server had ended the call, or restarted), or the
    /// exec-server no longer kept the call's last events. Says exactly how
    /// much was lost when the exec-server still knew, and how the process
    /// ended when known.
    #[error("{}", lost_text(gap.as_ref(), exit.as_ref(), *session_expired))]
    OutputLost {
        /// The output that will never arrive; `None`: unknown (the
        /// exec-server kept no account of the call).
        gap: Option<Gap>,
        /// How the process ended, when known.
        exit: Option<ExitStatus>,
        /// Whether the whole session was gone (otherwise only this call).
        session_expired: bool,
    },
}

/// Output of a call that will never arrive, in bytes per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gap {
    /// Stdout bytes lost.
    pub stdout: u64,
    /// Stderr bytes lost.
    pub stderr: u64,
}

fn lost_text(gap: Option<&Gap>, exit: Option<&ExitStatus>, expired: bool) -> String {
    let why = if expired {
        "the session came back too late to resume the command (the exec-server had ended \
         it, or had restarted)"
    } else {
        "the exec-server no longer kept the command's last events (too many finished \
         commands were waiting for this client)"
    };
    let what = match gap {
        Some(g) => format!(
            "{} bytes of stdout and {} bytes of stderr were lost",
            g.stdout, g.stderr
        ),
        None => "how much of its output was lost is unknown".to_owned(),
    };
    let ended = match (exit, gap) {
        (Some(ExitStatus::Code(c)), _) => format!("the command exited with {c}"),
        (Some(ExitStatus::Signal(n)), _) => format!("the command was killed by signal {n}"),
        (None, Some(_)) if expired => {
            "the command was still running when the exec-server ended it".to_owned()
        }
        (None, _) => "how the command ended is unknown".to_owned(),
    };
    format!("{why}: {what}; {ended}")
}

impl ExecFailure {
    pub(crate) fn from_remote(kind: i32, message: String) -> Self {
        match ExecErrorKind::try_from(kind) {
            Ok(ExecErrorKind::NotFound) => Self::NotFound(message),
            Ok(ExecErrorKind::PermissionDenied) => Self::PermissionDenied(message),
            Ok(ExecErrorKind::BadCwd) => Self::BadCwd(message),
            Ok(ExecErrorKind::BadRequest | ExecErrorKind::TooManyProcesses) => {
                Self::Refused(message)
            }
            Ok(ExecErrorKind::TerminalRefused | ExecErrorKind::NoTerminal) => {
                Self::NoTerminal(message)
            }
            _ => Self::Remote(message),
        }
    }

    /// The exit code a CLI should use, shell style (127 not found, 126 not
    /// executable, 255 otherwise).
    pub fn shell_code(&self) -> i32 {
        match self {
            Self::NotFound(_) => 127,
            Self::PermissionDenied(_) | Self::BadCwd(_) => 126,
            _ => 255,
        }
    }
}

/// A terminal event, in the order the exec-server pushed it. Exhaustive on
/// purpose, as [`ExecFailure`]: the agent carries each event in its own
/// protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The process started.
    Started {
        /// Its pid on the exec-server.
        pid: u32,
        /// The program's file name, when the exec-server chose the program
        /// (a login shell, e.g. `bash`).
        program: Option<String>,
    },
    /// Bytes the process wrote to stdout.
    Stdout(Bytes),
    /// Bytes the process wrote to stderr.
    Stderr(Bytes),
    /// The process ended; this is the last event.
    Exited(ExitStatus),
    /// The call failed; this is the last event.
    Failed(ExecFailure),
    /// The session's link broke; the call waits while it comes back (only
    /// with [`ClientConfig::resume_events`](crate::ClientConfig)).
    Reconnecting,
    /// The session came back over a new link: what follows continues the
    /// output exactly where it stopped (only with
    /// [`ClientConfig::resume_events`](crate::ClientConfig)).
    Resumed,
}

/// Everything a finished call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// All stdout bytes.
    pub stdout: Vec<u8>,
    /// All stderr bytes.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}
