//! [`CliError`]: a command's one-line error and its exit code, and the
//! exit codes the CLI gives of its own.

use crate::config::ConfigError;
use crate::known::KnownError;
use crate::settings::SettingsError;

/// Exit code for connection and authentication failures (as ssh uses).
pub(crate) const EXIT_CONNECTION: u8 = 255;
/// Exit code for usage and configuration errors.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code once stdout is gone (`… | head -1`): that of a process
/// killed by SIGPIPE, 128 + 13.
pub(crate) const EXIT_STDOUT_GONE: u8 = 128 + 13;

/// An error at the CLI's edge: the message and the exit code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CliError {
    /// One clear line (a changed server key's warning is several, as
    /// ssh's is).
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl CliError {
    /// A connection or authentication failure ([`EXIT_CONNECTION`]).
    pub(super) fn connection(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_CONNECTION,
        }
    }

    /// A usage or configuration error ([`EXIT_USAGE`]).
    pub(super) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }

    /// A command that failed (exit code 1).
    pub(super) fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::usage(e.to_string())
    }
}

impl From<KnownError> for CliError {
    fn from(e: KnownError) -> Self {
        match e {
            KnownError::KeyChanged(_) => Self::connection(e.to_string()),
            _ => Self::usage(e.to_string()),
        }
    }
}

impl From<SettingsError> for CliError {
    fn from(e: SettingsError) -> Self {
        match e {
            // Refused as ssh refuses a changed host key.
            SettingsError::KeyChanged(_) => Self::connection(e.to_string()),
            _ => Self::usage(e.to_string()),
        }
    }
}
