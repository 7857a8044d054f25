//! The program name of a command: the one piece of a command that may
//! appear in spans, logs and error messages (never its arguments).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest program name reported.
pub(crate) const MAX_PROGRAM_NAME: usize = 64;

/// The file name of `argv0`, lossily as UTF-8, cut to [`MAX_PROGRAM_NAME`]
/// characters; empty if there is none.
pub fn program_name(argv0: &[u8]) -> String {
    Path::new(OsStr::from_bytes(argv0))
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(MAX_PROGRAM_NAME).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basename_only() {
        assert_eq!(program_name(b"/usr/bin/env"), "env");
        assert_eq!(program_name(b"sh"), "sh");
        assert_eq!(program_name(b""), "");
        assert_eq!(
            program_name("x".repeat(100).as_bytes()).len(),
            MAX_PROGRAM_NAME
        );
    }
}
