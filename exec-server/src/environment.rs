//! The environment a command starts with: built, never inherited whole.
//!
//! A command gets, in this order (later settings of a name replace
//! earlier ones):
//! 1. the exec-server's own variables whose names are on the allow-list
//!    (`DEFAULT_PASSED` plus the operator's additions, `--pass-env`),
//!    unless the request asks for an empty environment;
//! 2. what a login sets, for a call that asks for the login shell;
//! 3. the request's variables (as the client key's options allow);
//! 4. `TERM` from a terminal request, and the trace context
//!    (`TRACEPARENT`, `TRACESTATE`) the exec-server injects.
//!
//! The exec-server's own settings (`REX_*`) and telemetry settings
//! (`OTEL_*`, whose `OTEL_EXPORTER_OTLP_HEADERS` often holds a collector's
//! token) are never passed on, even when an addition names them.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// The exec-server's variables a command gets by default: where it runs
/// and as whom, the search path, the locale (`LC_*`: every `LC_`
/// variable), the terminal type, the time zone and the directory for
/// temporary files.
const DEFAULT_PASSED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TERM", "TZ", "TMPDIR",
];

/// Prefixes of names never passed on: the exec-server's own settings and
/// telemetry settings.
const NEVER_PASSED: &[&str] = &["REX_", "OTEL_"];

/// Most names and patterns on the allow-list.
const MAX_PATTERNS: usize = 256;

/// An allow-list addition that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PassEnvError {
    /// Empty, or holding `=`, a NUL or a `*` other than at its end.
    #[error("{0:?} is not a variable name (a name, or a prefix ending in *)")]
    Invalid(String),
    /// A name the exec-server never passes on.
    #[error("{0} is never passed to commands (REX_* and OTEL_* are the exec-server's own)")]
    Reserved(String),
    /// More names and prefixes than an allow-list may hold.
    #[error("more than {MAX_PATTERNS} variables to pass on")]
    TooMany,
}

/// Which of the exec-server's variables its commands get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassEnv {
    /// Names, or prefixes ending in `*`.
    patterns: Vec<String>,
}

impl Default for PassEnv {
    fn default() -> Self {
        Self {
            patterns: DEFAULT_PASSED.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

impl PassEnv {
    /// The default allow-list and `additions` (names, or prefixes ending
    /// in `*`).
    pub fn with_additions<S: AsRef<str>>(additions: &[S]) -> Result<Self, PassEnvError> {
        let mut pass = Self::default();
        for add in additions {
            let add = add.as_ref();
            let stem = add.strip_suffix('*').unwrap_or(add);
            if stem.is_empty() || stem.contains(['=', '\0', '*']) {
                return Err(PassEnvError::Invalid(add.to_owned()));
            }
            // A prefix that could cover a reserved name counts as naming it.
            if NEVER_PASSED
                .iter()
                .any(|r| add.starts_with(r) || (add.ends_with('*') && r.starts_with(stem)))
            {
                return Err(PassEnvError::Reserved(add.to_owned()));
            }
            if !pass.patterns.iter().any(|p| p == add) {
                pass.patterns.push(add.to_owned());
            }
        }
        if pass.patterns.len() > MAX_PATTERNS {
            return Err(PassEnvError::TooMany);
        }
        Ok(pass)
    }

    /// Whether a variable of this name is passed on.
    fn passes(&self, name: &OsStr) -> bool {
        let name = name.as_bytes();
        if NEVER_PASSED.iter().any(|r| name.starts_with(r.as_bytes())) {
            return false;
        }
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix.as_bytes()),
            None => name == p.as_bytes(),
        })
    }

    /// The variables of `vars` that are passed on, in their order.
    fn select(
        &self,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        vars.into_iter().filter(|(n, _)| self.passes(n)).collect()
    }

    /// The exec-server's own variables that its commands get (read now).
    pub(crate) fn inherited(&self) -> Inherited {
        Arc::from(self.select(std::env::vars_os()))
    }
}

/// The exec-server's variables passed to every command, read once.
pub(crate) type Inherited = Arc<[(OsString, OsString)]>;

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> Vec<(OsString, OsString)> {
        names
            .iter()
            .map(|n| (OsString::from(n), OsString::from("v")))
            .collect()
    }

    #[test]
    fn only_allow_listed_names_pass_and_never_our_own_or_telemetrys() {
        let pass = PassEnv::default();
        let all = vars(&[
            "PATH",
            "HOME",
            "LC_ALL",
            "LC_TIME",
            "LANG",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "REX_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "PATHX",
            "XPATH",
        ]);
        let names: Vec<_> = pass.select(all).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["PATH", "HOME", "LC_ALL", "LC_TIME", "LANG"]);
    }

    #[test]
    fn additions_are_names_or_prefixes_and_cannot_name_reserved_ones() {
        let pass = PassEnv::with_additions(&["JAVA_HOME", "CARGO_*"]).unwrap();
        assert!(pass.passes(OsStr::new("JAVA_HOME")));
        assert!(pass.passes(OsStr::new("CARGO_HOME")));
        assert!(!pass.passes(OsStr::new("JAVA_HOMEX")));
        assert!(!pass.passes(OsStr::new("SECRET")));
        for reserved in [
            "REX_KEY",
            "OTEL_*",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "R*",
            "REX*",
            "O*",
        ] {
            assert_eq!(
                PassEnv::with_additions(&[reserved]),
                Err(PassEnvError::Reserved(reserved.to_owned())),
                "{reserved}"
            );
        }
        for invalid in ["", "*", "A=B", "A*B", "A**"] {
            assert_eq!(
                PassEnv::with_additions(&[invalid]),
                Err(PassEnvError::Invalid(invalid.to_owned())),
                "{invalid}"
            );
        }
        let many: Vec<String> = (0..MAX_PATTERNS).map(|i| format!("V{i}")).collect();
        assert_eq!(PassEnv::with_additions(&many), Err(PassEnvError::TooMany));
    }
}
