//! This process's stdout as the demo prints it: a reader that went away
//! (`rex-demo | head -3`) is remembered,
//! never a panic, and nothing more is written.

use std::io::Write;

/// The exit status of a process whose stdout's reader went away (killed
/// by SIGPIPE, as a shell reports it).
pub const EXIT_STDOUT_GONE: u8 = 141;

/// Stdout, written until a write fails. As a [`Write`] it never fails:
/// what cannot be written is dropped and the first failure kept, for the
/// exit status ([`Stdout::exit_code`]).
#[derive(Debug, Default)]
pub struct Stdout {
    failed: Option<std::io::Error>,
}

impl Stdout {
    /// Stdout, not yet failed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first write that failed, if one did.
    pub fn failure(&self) -> Option<&std::io::Error> {
        self.failed.as_ref()
    }

    /// How the command ends for its stdout: `None` while every write went
    /// through; the exit code of a process killed by SIGPIPE once the
    /// reader went away; `Err` with the reason for any other failure.
    pub fn exit_code(&self) -> Option<Result<u8, String>> {
        self.failed.as_ref().map(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(EXIT_STDOUT_GONE)
            } else {
                Err(format!("cannot write to stdout: {e}"))
            }
        })
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.failed.is_none() {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(buf).and_then(|()| out.flush()) {
                self.failed = Some(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_and_named_by_its_kind() {
        let mut out = Stdout::new();
        assert!(out.exit_code().is_none());
        out.failed = Some(std::io::ErrorKind::BrokenPipe.into());
        // Nothing fails for its writer once stdout has.
        assert_eq!(out.write(b"more").unwrap(), 4);
        assert_eq!(out.exit_code(), Some(Ok(141)));
        out.failed = Some(std::io::ErrorKind::StorageFull.into());
        assert!(matches!(out.exit_code(), Some(Err(m)) if m.starts_with("cannot write to stdout")));
    }
}
