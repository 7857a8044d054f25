//! Spans a client could not send before it exited, kept on disk for the
//! next session to the same exec-server (docs/tracing.md, Forwarding).
//!
//! One directory per exec-server; one file per batch (an encoded OTLP
//! `TracesData`), named `NANOS-PID-N-SPANS.batch` so that the oldest sorts
//! first, written to a hidden temporary name and renamed into place (a
//! reader never sees half a batch). Spans let go (over a bound, too old)
//! are counted in empty `NANOS-PID-N-SPANS.dropped` markers, which the next
//! reader says to the exec-server with its batches.
//!
//! A file is handed out only by the process whose `remove_file` of it
//! succeeds, so two processes reading at once never send a batch twice.
//! The exec-server does not acknowledge forwarded spans: a batch is
//! deleted when it is handed to a session.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::source::{Batch, SpanSource, Taken};
use opentelemetry::trace::TraceId;

/// The spool's bounds, per exec-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes of batches kept, at most (the oldest go first).
    bytes: u64,
    /// Batches kept, at most (the oldest go first).
    batches: usize,
    /// A batch older than this is let go.
    age: Duration,
    /// Bytes handed out to one session's take, at most (the rest waits for
    /// the next).
    take_bytes: usize,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            bytes: 512 * 1024,
            batches: 64,
            age: Duration::from_secs(7 * 24 * 3600),
            take_bytes: 128 * 1024,
        }
    }
}

/// What [`Spool::write`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Spooled {
    /// Spans written.
    pub spans: u64,
    /// Spans let go: older ones over a bound, or ones the source had
    /// already dropped (counted for the exec-server).
    pub dropped: u64,
}

/// The spool of one exec-server's pending batches.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
}

/// Files named by this process, distinct.
static NEXT: AtomicU64 = AtomicU64::new(0);

const BATCH: &str = "batch";
const DROPPED: &str = "dropped";

/// One entry of the directory.
struct Entry {
    path: PathBuf,
    at: u128,
    spans: u32,
    batch: bool,
    bytes: u64,
}

impl Spool {
    /// The spool under `root` (a data directory's `span_spool`) for the
    /// exec-server `server_id`.
    pub fn new(root: &Path, server_id: &str, limits: SpoolLimits) -> Self {
        let safe: String = server_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            dir: root.join(safe),
            limits,
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `taken` (each batch atomically), then lets the oldest go
    /// while over a bound; `taken.dropped` is counted for the exec-server.
    pub fn write(&self, taken: &Taken) -> std::io::Result<Spooled> {
        std::fs::create_dir_all(&self.dir)?;
        let mut done = Spooled::default();
        for b in &taken.batches {
            self.put(BATCH, b.spans, &b.traces)?;
            done.spans += u64::from(b.spans);
        }
        let pruned = self.prune(u64::from(taken.dropped));
        done.dropped = pruned;
        if pruned > 0 {
            self.put(DROPPED, u32::try_from(pruned).unwrap_or(u32::MAX), &[])?;
        }
        Ok(done)
    }

    /// Takes the pending batches of at most `max_bytes` each, oldest first,
    /// up to the take's byte bound; each is removed as it is taken (by one
    /// process only). A batch over `max_bytes` or too old is let go and
    /// counted in [`Taken::dropped`], with the markers' counts.
    fn take(&self, max_bytes: usize) -> Taken {
        let mut taken = Taken::default();
        let now = nanos(SystemTime::now());
        let mut budget = self.limits.take_bytes;
        for e in self.entries() {
            if !e.batch {
                if std::fs::remove_file(&e.path).is_ok() {
                    taken.dropped = taken.dropped.saturating_add(e.spans);
                }
                continue;
            }
            let old = now.saturating_sub(e.at) > self.limits.age.as_nanos();
            let fits = e.bytes as usize <= max_bytes;
            if !old && fits && e.bytes as usize > budget {
                // Left for the next take.
                continue;
            }
            let Ok(traces) = std::fs::read(&e.path) else {
                continue;
            };
            if std::fs::remove_file(&e.path).is_err() {
                // Another process took it.
                continue;
            }
            if old || !fits || traces.len() > max_bytes {
                taken.dropped = taken.dropped.saturating_add(e.spans);
                continue;
            }
            budget -= traces.len().min(budget);
            taken.batches.push(Batch {
                traces,
                spans: e.spans,
            });
        }
        taken
    }

    /// Removes the oldest batches while over a bound, and the markers and
    /// stale temporary files; the spans let go (with `more`) are returned.
    fn prune(&self, more: u64) -> u64 {
        let mut dropped = more;
        let now = nanos(SystemTime::now());
        let mut batches = Vec::new();
        for e in self.entries() {
            if e.batch {
                batches.push(e);
            } else if std::fs::remove_file(&e.path).is_ok() {
                dropped += u64::from(e.spans);
            }
        }
        let mut bytes: u64 = batches.iter().map(|e| e.bytes).sum();
        let mut count = batches.len();
        for e in batches {
            let old = now.saturating_sub(e.at) > self.limits.age.as_nanos();
            if !old && bytes <= self.limits.bytes && count <= self.limits.batches {
                break;
            }
            bytes -= e.bytes;
            count -= 1;
            if std::fs::remove_file(&e.path).is_ok() {
                dropped += u64::from(e.spans);
            }
        }
        // Temporary files of a writer that died mid-write.
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for f in dir.flatten() {
                let stale = f.file_name().to_string_lossy().starts_with(".tmp-")
                    && f.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(3600));
                if stale {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        dropped
    }

    /// Batches and markers, oldest first.
    fn entries(&self) -> Vec<Entry> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Entry> = dir
            .flatten()
            .filter_map(|f| {
                let name = f.file_name().into_string().ok()?;
                let (stem, kind) = name.rsplit_once('.')?;
                let batch = match kind {
                    BATCH => true,
                    DROPPED => false,
                    _ => return None,
                };
                let mut parts = stem.split('-');
                let at = parts.next()?.parse().ok()?;
                let spans = parts.nth(2)?.parse().ok()?;
                let bytes = f.metadata().ok()?.len();
                Some(Entry {
                    path: f.path(),
                    at,
                    spans,
                    batch,
                    bytes,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.at, &a.path).cmp(&(b.at, &b.path)));
        out
    }

    /// Writes one file atomically (renamed into place once written), not
    /// durably: no fsync on the command's way out. A batch that a crash
    /// leaves torn is refused by the exec-server as not OTLP and counted;
    /// its spans are in the local trace file either way.
    fn put(&self, kind: &str, spans: u32, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let at = nanos(SystemTime::now());
        let tmp = self.dir.join(format!(".tmp-{pid}-{n}"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        drop(f);
        let name = format!("{at:024}-{pid}-{n}-{spans}.{kind}");
        std::fs::rename(&tmp, self.dir.join(name)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A span source that hands out a spool's pending batches with the spans
/// of each trace taken: what an earlier process could not send goes with
/// the next session to the same exec-server.
#[derive(Debug)]
pub struct WithSpool {
    source: std::sync::Arc<dyn SpanSource>,
    spool: Spool,
}

impl WithSpool {
    /// `source`'s spans, and `spool`'s batches.
    pub fn new(source: std::sync::Arc<dyn SpanSource>, spool: Spool) -> Self {
        Self { source, spool }
    }
}

impl SpanSource for WithSpool {
    fn take(&self, trace_id: TraceId, max_bytes: usize) -> Taken {
        let mut taken = self.spool.take(max_bytes);
        let mine = self.source.take(trace_id, max_bytes);
        taken.batches.extend(mine.batches);
        taken.dropped = taken.dropped.saturating_add(mine.dropped);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8, len: usize) -> Batch {
        Batch {
            traces: vec![n; len],
            spans: u32::from(n),
        }
    }

    fn spool(dir: &Path, limits: SpoolLimits) -> Spool {
        Spool::new(dir, "ab12/../x", limits)
    }

    #[test]
    fn batches_are_taken_once_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spool(tmp.path(), SpoolLimits::default());
        assert!(s.dir().starts_with(tmp.path()));
        assert_eq!(s.dir().file_name().unwrap(), "ab12____x");
        let done = s
            .write(&Taken {
                batches: vec![batch(1, 10), batch(2, 20)],
                dropped: 3,
            })
            .unwrap();
        assert_eq!(
            done,
            Spooled {
                spans: 3,
                dropped: 3
            }
        );
        s.write(&Taken {
            batches: vec![batch(4, 5)],
            dropped: 0,
        })
        .unwrap();
        let taken = s.take(1 << 20);
        let spans: Vec<u32> = taken.batches.iter().map(|b| b.spans).collect();
        assert_eq!(spans, vec![1, 2, 4]);
        assert_eq!(taken.batches[1].traces, vec![2; 20]);
        assert_eq!(taken.dropped, 3);
        // Nothing twice.
        assert_eq!(s.take(1 << 20), Taken::default());
        assert_eq!(std::fs::read_dir(s.dir()).unwrap().count(), 0);
    }

    #[test]
    fn the_oldest_go_over_the_bounds_and_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            bytes: 100,
            batches: 3,
            ..SpoolLimits::default()
        };
        let s = spool(tmp.path(), limits);
        for n in 1..=5 {
            s.write(&Taken {
                batches: vec![batch(n, 30)],
                dropped: 0,
            })
            .unwrap();
        }
        let taken = s.take(1 << 20);
        let spans: Vec<u32> = taken.batches.iter().map(|b| b.spans).collect();
        assert_eq!(spans, vec![3, 4, 5]);
        assert_eq!(taken.dropped, 1 + 2);
    }

    #[test]
    fn too_large_or_too_old_is_counted_and_the_take_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spool(
            tmp.path(),
            SpoolLimits {
                take_bytes: 50,
                ..SpoolLimits::default()
            },
        );
        s.write(&Taken {
            batches: vec![batch(1, 40), batch(2, 40), batch(3, 200)],
            dropped: 0,
        })
        .unwrap();
        let first = s.take(100);
        assert_eq!(first.batches.len(), 1);
        assert_eq!(first.dropped, 3);
        let second = s.take(100);
        assert_eq!(second.batches[0].spans, 2);
        let old = spool(
            tmp.path(),
            SpoolLimits {
                age: Duration::ZERO,
                ..SpoolLimits::default()
            },
        );
        old.write(&Taken {
            batches: vec![batch(7, 1)],
            dropped: 0,
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let taken = old.take(100);
        assert!(taken.batches.is_empty());
        assert_eq!(taken.dropped, 7);
    }
}
