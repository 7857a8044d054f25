//! What a caller runs and what it gets back.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use bytes::Bytes;
use opentelemetry::Context;
use proto::pb::session::{EnvVar, ExecErrorKind, ExecRequest, StdinMode};

/// A command to run remotely.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// Program and arguments. No shell is involved unless argv runs one.
    pub argv: Vec<OsString>,
    /// Environment variables to set.
    pub env: Vec<(OsString, OsString)>,
    /// Start from an empty environment.
    pub clear_env: bool,
    /// Working directory (the exec-server's default if None).
    pub cwd: Option<PathBuf>,
    /// Whether stdin is a pipe the caller writes to (else /dev/null).
    pub stdin: bool,
    /// The caller's trace context; the dispatch span is its child. When
    /// None, the current context is used.
    pub parent: Option<Context>,
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

    /// The program name (argv[0]'s file name), for spans and messages.
    pub fn program(&self) -> String {
        self.argv
            .first()
            .map(|a| proto::program::program_name(a.as_bytes()))
            .unwrap_or_default()
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
        }
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

/// Why a call ended without an exit status.
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
    /// The session ended before the call finished.
    #[error("session lost: {0}")]
    SessionLost(#[source] crate::error::SessionLost),
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

/// A terminal event, in the order the exec-server pushed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The process started.
    Started {
        /// Its pid on the exec-server.
        pid: u32,
    },
    /// Bytes the process wrote to stdout.
    Stdout(Bytes),
    /// Bytes the process wrote to stderr.
    Stderr(Bytes),
    /// The process ended; this is the last event.
    Exited(ExitStatus),
    /// The call failed; this is the last event.
    Failed(ExecFailure),
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
