//! The concurrent execs. Each prints a line naming the exec, then the
//! numbers 1, 2, ... one a line, cut at the byte count. The same bytes are
//! made here, once, to check every output byte-exact; the first line makes
//! each exec's output its own, so output delivered to the wrong session
//! fails the check too.

use std::io::Write as _;
use std::sync::Arc;

use rex_client::{Client, ExecSpec, ExitStatus};

/// The shared part of every exec's expected output.
pub(super) struct Numbers {
    /// "1\n2\n..." to at least `bytes` bytes.
    body: Vec<u8>,
    /// The last number `seq` must print.
    last: u64,
    /// Output bytes of each exec.
    bytes: usize,
}

impl Numbers {
    /// The expected output of execs printing `bytes` bytes each.
    pub(super) fn new(bytes: usize) -> Self {
        let mut body = Vec::with_capacity(bytes + 24);
        let mut last = 0u64;
        while body.len() < bytes {
            last += 1;
            let _ = writeln!(body, "{last}");
        }
        Self {
            body,
            last: last.max(1),
            bytes,
        }
    }

    /// The command exec number `index` runs.
    pub(super) fn argv(&self, index: usize) -> [String; 3] {
        [
            "sh".into(),
            "-c".into(),
            format!(
                "{{ echo 'exec {index}'; seq 1 {}; }} | head -c {}",
                self.last, self.bytes
            ),
        ]
    }

    /// Checks the stdout of exec number `index` byte for byte.
    pub(super) fn check(&self, index: usize, got: &[u8]) -> Result<(), String> {
        let first = format!("exec {index}\n");
        let head = first.len().min(self.bytes);
        let tail = &self.body[..self.bytes - head];
        if got.len() == self.bytes
            && got[..head] == first.as_bytes()[..head]
            && got[head..] == *tail
        {
            return Ok(());
        }
        let want = first.as_bytes()[..head].iter().chain(tail);
        let at = got
            .iter()
            .zip(want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(self.bytes));
        Err(format!(
            "exec {index}: {} bytes of stdout where {} were expected; they differ from byte {at}",
            got.len(),
            self.bytes
        ))
    }
}

/// Runs one exec on each of `clients` at once; every output must be
/// byte-exact and every exit 0.
pub(super) async fn run_execs(clients: &[Client], numbers: &Arc<Numbers>) -> Result<(), String> {
    let mut set = tokio::task::JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        let client = client.clone();
        let numbers = Arc::clone(numbers);
        set.spawn(async move {
            let out = client
                .output(ExecSpec::new(numbers.argv(index)))
                .await
                .map_err(|e| format!("exec {index}: {e}"))?
                .map_err(|e| format!("exec {index}: {e}"))?;
            if out.status != ExitStatus::Code(0) || !out.stderr.is_empty() {
                return Err(format!(
                    "exec {index}: {:?}, stderr {:?}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            numbers.check(index, &out.stdout)
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(e),
            Err(e) => failed.push(format!("an exec task failed: {e}")),
        }
    }
    crate::bench::all_ok(&failed, clients.len(), "execs failed")
}

#[cfg(test)]
mod tests {
    use super::Numbers;

    #[test]
    fn expected_output_and_its_check() {
        let n = Numbers::new(20);
        assert_eq!(n.last, 10, "1..9 make only 18 bytes");
        assert_eq!(n.argv(3)[2], "{ echo 'exec 3'; seq 1 10; } | head -c 20");
        assert!(n.check(3, b"exec 3\n1\n2\n3\n4\n5\n6\n7").is_ok());
        let wrong = n.check(4, b"exec 3\n1\n2\n3\n4\n5\n6\n7").unwrap_err();
        assert!(wrong.contains("from byte 5"), "{wrong}");
        let short = n.check(3, b"exec 3\n1\n2\n").unwrap_err();
        assert!(short.contains("11 bytes of stdout where 20"), "{short}");
        assert!(n.check(3, b"exec 3\n1\n2\n3\n4\n5\n6\n8").is_err());
        // Fewer bytes than the first line.
        let tiny = Numbers::new(4);
        assert!(tiny.check(12, b"exec").is_ok());
        assert!(tiny.check(12, b"exec 12\n").is_err());
        assert!(Numbers::new(0).check(1, b"").is_ok());
    }
}
