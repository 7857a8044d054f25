//! How much of the trace file is kept: the current file and up to
//! [`Retention::generations`] rotated predecessors (`<path>.1` the newest,
//! `<path>.N` the oldest), each rotated once it is over
//! [`Retention::file_bytes`]. Rotation happens under a lock file
//! (`<path>.lock`) so that processes sharing the path never lose a
//! generation to each other, and when the oldest generation is dropped
//! the time of its last write is kept in `<path>.dropped`, so a reader can
//! say what was rotated away instead of silently seeing less.
//!
//! The writer (`trace_file`, feature `export`) rotates; readers find the
//! generations here without linking the writer.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable giving the most disk the trace file and its
/// rotated generations may take, in MiB.
const MAX_MB_ENV: &str = "REX_TRACE_FILE_MAX_MB";

/// The default of [`MAX_MB_ENV`]: 256 MiB.
const DEFAULT_MAX_MB: u64 = 256;

/// How many files the budget is divided into (the current one and its
/// rotated generations).
const FILES: u64 = 16;

/// How much of the trace file is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// A file over this size is rotated before the next write.
    pub file_bytes: u64,
    /// How many rotated generations are kept besides the current file.
    pub generations: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::total(DEFAULT_MAX_MB * 1024 * 1024)
    }
}

/// A value of `REX_TRACE_FILE_MAX_MB` that is not a whole number of MiB from 1 to
/// 1,048,576.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_MB_ENV}={0:?} is not a size in MiB from 1 to 1048576")]
#[non_exhaustive]
pub struct InvalidRetention(pub String);

impl Retention {
    /// At most about `bytes` in all, in 16 files.
    pub(crate) fn total(bytes: u64) -> Retention {
        Retention {
            file_bytes: (bytes / FILES).max(1),
            generations: usize::try_from(FILES - 1).unwrap_or(1),
        }
    }

    /// The retention `REX_TRACE_FILE_MAX_MB` asks for, else the default.
    pub fn from_env() -> Result<Retention, InvalidRetention> {
        match std::env::var(MAX_MB_ENV) {
            Err(_) => Ok(Retention::default()),
            Ok(value) => Retention::parse_mb(&value),
        }
    }

    /// The retention a [`MAX_MB_ENV`] value asks for (empty: the default).
    fn parse_mb(value: &str) -> Result<Retention, InvalidRetention> {
        if value.trim().is_empty() {
            return Ok(Retention::default());
        }
        match value.trim().parse::<u64>() {
            Ok(mb @ 1..=1_048_576) => Ok(Retention::total(mb * 1024 * 1024)),
            _ => Err(InvalidRetention(value.to_owned())),
        }
    }

    /// The most disk the file and its generations take (a file may pass
    /// its bound by the lines written before it is next rotated).
    #[cfg(test)]
    fn budget(&self) -> u64 {
        self.file_bytes.saturating_mul(
            u64::try_from(self.generations)
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        )
    }
}

/// `<path>` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The rotated generation `n` of `path` (`<path>.n`; 1 is the newest).
pub fn generation_path(path: &Path, n: usize) -> PathBuf {
    with_suffix(path, &format!(".{n}"))
}

/// The newest rotated generation of `path`: `<path>.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    generation_path(path, 1)
}

/// Where the time of the newest write rotated away is kept.
fn dropped_path(path: &Path) -> PathBuf {
    with_suffix(path, ".dropped")
}

/// The files of the trace at `path` that exist, newest first: `<path>`,
/// then `<path>.1`, `<path>.2`, ... up to the first generation missing.
pub fn files_newest_first(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    for n in 1.. {
        let generation = generation_path(path, n);
        if !generation.exists() {
            break;
        }
        files.push(generation);
    }
    files
}

/// If generations of `path` have been rotated away: the time of the last
/// write to the newest of them (spans that ended before it may be gone).
pub fn rotated_away_before(path: &Path) -> Option<SystemTime> {
    let text = fs::read_to_string(dropped_path(path)).ok()?;
    let nanos: u64 = text.trim().parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Rotates `path` if it is still over `retention.file_bytes`, under the
/// rotation lock: each generation moves one up, the oldest beyond the
/// bound is removed (its last write time kept), and `<path>` becomes
/// `<path>.1`.
#[cfg_attr(not(feature = "export"), allow(dead_code))]
pub(crate) fn rotate(path: &Path, retention: Retention) -> io::Result<()> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(with_suffix(path, ".lock"))?;
    lock.lock()?;
    // Another process may have rotated while this one waited.
    match fs::metadata(path) {
        Ok(meta) if meta.len() > retention.file_bytes => {}
        Ok(_) => return Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    }
    let oldest = generation_path(path, retention.generations.max(1));
    if retention.generations == 0 {
        note_dropped(path, path)?;
        fs::remove_file(path)?;
        return Ok(());
    }
    if oldest.exists() {
        note_dropped(path, &oldest)?;
        fs::remove_file(&oldest)?;
    }
    for n in (1..retention.generations).rev() {
        let from = generation_path(path, n);
        match fs::rename(&from, generation_path(path, n + 1)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    fs::rename(path, rotated_path(path))?;
    // Dropping the handle releases the lock.
    drop(lock);
    Ok(())
}

/// Records that `gone` (a file of `path`'s) is being removed: the time of
/// its last write, if later than what was recorded.
fn note_dropped(path: &Path, gone: &Path) -> io::Result<()> {
    let modified = fs::metadata(gone)?.modified()?;
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let earlier = rotated_away_before(path)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut file = File::create(dropped_path(path))?;
    writeln!(file, "{}", nanos.max(earlier))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: usize) {
        fs::write(path, vec![b'x'; bytes]).unwrap();
    }

    #[test]
    fn the_budget_is_sixteen_files() {
        let r = Retention::total(256 * 1024 * 1024);
        assert_eq!(r.file_bytes, 16 * 1024 * 1024);
        assert_eq!(r.generations, 15);
        assert_eq!(r.budget(), 256 * 1024 * 1024);
        assert_eq!(Retention::default(), r);
    }

    #[test]
    fn generations_move_up_and_the_oldest_is_dropped_and_noted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let retention = Retention {
            file_bytes: 10,
            generations: 2,
        };
        assert_eq!(rotated_away_before(&path), None);
        for round in 0..4 {
            write(&path, 11 + round);
            rotate(&path, retention).unwrap();
            assert!(!path.exists());
        }
        // Rounds 2 and 3 are kept (sizes 13 and 14), 0 and 1 were dropped.
        assert_eq!(fs::metadata(generation_path(&path, 1)).unwrap().len(), 14);
        assert_eq!(fs::metadata(generation_path(&path, 2)).unwrap().len(), 13);
        assert!(!generation_path(&path, 3).exists());
        assert!(rotated_away_before(&path).is_some());
        write(&path, 1);
        assert_eq!(files_newest_first(&path).len(), 3);
    }

    #[test]
    fn a_file_under_its_bound_is_not_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        write(&path, 5);
        rotate(
            &path,
            Retention {
                file_bytes: 10,
                generations: 2,
            },
        )
        .unwrap();
        assert!(path.exists());
        assert!(!rotated_path(&path).exists());
    }

    #[test]
    fn sizes_are_whole_mib_within_bounds() {
        assert_eq!(Retention::parse_mb("").unwrap(), Retention::default());
        assert_eq!(
            Retention::parse_mb(" 32 ").unwrap().file_bytes,
            2 * 1024 * 1024
        );
        for bad in ["0", "-1", "1.5", "10MB", "1048577"] {
            assert!(Retention::parse_mb(bad).is_err(), "{bad}");
        }
        assert_eq!(Retention::total(0).file_bytes, 1);
    }
}
