//! The relay as its own process, so that its memory can be read from
//! `/proc/PID/status`, and its own count of ended sessions (its debug
//! log's "session ended" lines).

use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use crate::binaries::{self, Proc};

/// How long the relay may take to start and say where it listens.
const START_WITHIN: Duration = Duration::from_secs(120);

/// A relay process (killed when dropped).
pub(super) struct RelayProc {
    proc: Proc,
    /// The URL clients and exec-servers dial.
    pub(super) url: String,
    /// "session ended" lines seen so far.
    ended: usize,
}

impl RelayProc {
    /// Starts the built relay on `127.0.0.1:0` with its debug log on (one
    /// line per ended session) and span export off.
    pub(super) async fn start() -> Result<Self, String> {
        tokio::task::spawn_blocking(|| {
            let proc = binaries::spawn(
                "relay",
                &["--listen", "127.0.0.1:0"],
                &[
                    ("RUST_LOG", "info,relay=debug"),
                    ("OTEL_SDK_DISABLED", "true"),
                ],
            )
            .map_err(|e| e.to_string())?;
            let line = proc
                .wait_for_line("listening on", START_WITHIN)
                .map_err(|e| format!("relay: {e}"))?;
            let addr = line.rsplit(' ').next().unwrap_or(&line).trim().to_owned();
            Ok(Self {
                proc,
                url: format!("http://{addr}"),
                ended: 0,
            })
        })
        .await
        .map_err(|e| format!("starting the relay: {e}"))?
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// A `kB` field of the relay's `/proc/PID/status` (`VmRSS`, `VmHWM`).
    pub(super) fn status_kib(&self, field: &str) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        status_field(&status, field).ok_or_else(|| format!("no {field} in {path}"))
    }

    /// Resets the relay's peak RSS (`VmHWM`) to its current RSS; false if
    /// the kernel refused (then `VmHWM` is the peak of its whole life).
    pub(super) fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// How many sessions the relay has logged as ended so far.
    fn sessions_ended(&mut self) -> Result<usize, String> {
        loop {
            match self.proc.stderr_lines.try_recv() {
                Ok(line) if line.contains("session ended") => self.ended += 1,
                Ok(_) => {}
                Err(TryRecvError::Empty) => return Ok(self.ended),
                Err(TryRecvError::Disconnected) => {
                    return Err("the relay's stderr closed (did it exit?)".into());
                }
            }
        }
    }

    /// Waits until the relay has logged `count` ended sessions in all;
    /// an error naming how many it had if that takes longer than `within`.
    pub(super) async fn wait_sessions_ended(
        &mut self,
        count: usize,
        within: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let ended = self.sessions_ended()?;
            if ended >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the relay ended {ended} of {count} sessions within {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The number of a `NAME:  N kB` line of a `/proc/PID/status` text.
fn status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::status_field;

    #[test]
    fn reads_status_fields() {
        let text = "Name:\trelay\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_field(text, "VmRSS"), Some(10240));
        assert_eq!(status_field(text, "VmHWM"), Some(20480));
        assert_eq!(status_field(text, "VmSwap"), None);
        assert_eq!(status_field("VmRSSx:\t1 kB\n", "VmRSS"), None);
    }
}
