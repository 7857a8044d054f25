//! The authorized keys in force, kept in step with their file: the file's
//! identity (modification and change times, size, inode) is checked at
//! each handshake and the file re-read when it changed; SIGHUP re-reads it
//! unconditionally. Sessions watch the set and end when their key is no
//! longer admitted.
//!
//! A re-read applies what the file says now: a line that cannot be used is
//! skipped (and named in the log) while the others apply, and a file that
//! cannot be read admits nobody, so a removal always takes effect. (At
//! start-up a bad file is an error instead.)

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use proto::keys::{AuthorizedKeys, KeyError};
use proto::session::KeySource;
use tokio::sync::watch;

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
    inode: (u64, u64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        size: m.size(),
        inode: (m.dev(), m.ino()),
    })
}

/// The authorized keys in force.
#[derive(Debug)]
pub struct LiveKeys {
    file: Option<PathBuf>,
    /// The stamp of the version in force (`None`: none could be read).
    stamp: Mutex<Option<Stamp>>,
    current: watch::Sender<Arc<AuthorizedKeys>>,
}

impl LiveKeys {
    /// A set that never changes.
    pub(crate) fn fixed(keys: AuthorizedKeys) -> Arc<Self> {
        Arc::new(Self {
            file: None,
            stamp: Mutex::new(None),
            current: watch::Sender::new(Arc::new(keys)),
        })
    }

    /// Reads `path` (strictly: any bad line is an error) and keeps it in
    /// force from then on.
    pub fn open(path: &Path) -> Result<Arc<Self>, KeyError> {
        let before = stamp(path);
        let keys = AuthorizedKeys::read_file(path)?;
        Ok(Arc::new(Self {
            file: Some(path.to_path_buf()),
            stamp: Mutex::new(before),
            current: watch::Sender::new(Arc::new(keys)),
        }))
    }

    /// The keys in force now (without looking at the file).
    pub fn snapshot(&self) -> Arc<AuthorizedKeys> {
        self.current.borrow().clone()
    }

    /// A watch that sees every new set.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<AuthorizedKeys>> {
        self.current.subscribe()
    }

    /// Re-reads the file if it changed since it was last read. Returns
    /// whether it was re-read.
    fn refresh(&self) -> bool {
        self.reread(false)
    }

    /// Re-reads the file whether or not it looks changed (SIGHUP).
    pub fn reload(&self) {
        if self.file.is_some() {
            self.reread(true);
        } else {
            tracing::info!("SIGHUP received; the authorized keys were not read from a file");
        }
    }

    fn reread(&self, force: bool) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let mut held = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamp(path);
        if !force && now == *held && now.is_some() {
            return false;
        }
        *held = now;
        let keys = match std::fs::read_to_string(path) {
            Ok(text) => {
                let (keys, errors) = AuthorizedKeys::parse_lenient(&text, path);
                for e in errors {
                    tracing::warn!("{e}; the line is skipped");
                }
                keys
            }
            Err(e) => {
                tracing::error!(
                    "cannot read {}: {e}; no client key is admitted until it can be read",
                    path.display()
                );
                AuthorizedKeys::default()
            }
        };
        tracing::info!(
            keys = keys.len(),
            "re-read {} ({} key(s) in force)",
            path.display(),
            keys.len()
        );
        self.current.send_if_modified(|cur| {
            if **cur == keys {
                return false;
            }
            *cur = Arc::new(keys);
            true
        });
        true
    }
}

impl KeySource for LiveKeys {
    fn current(&self) -> Arc<AuthorizedKeys> {
        self.refresh();
        self.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::keys::StaticKeypair;

    #[test]
    fn a_changed_file_is_reread_and_watchers_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ak");
        let a = StaticKeypair::generate().unwrap().public();
        let b = StaticKeypair::generate().unwrap().public();
        std::fs::write(&path, format!("{a}\n{b}\n")).unwrap();
        let live = LiveKeys::open(&path).unwrap();
        let mut rx = live.subscribe();
        assert!(!live.refresh(), "unchanged");
        std::fs::write(&path, format!("{a}\n")).unwrap();
        let keys = live.current();
        assert!(keys.contains(&a) && !keys.contains(&b));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // A bad line is skipped; the rest applies.
        std::fs::write(&path, format!("garbage\n{b}\n")).unwrap();
        let keys = live.current();
        assert!(!keys.contains(&a) && keys.contains(&b));
        // A file that is gone admits nobody.
        std::fs::remove_file(&path).unwrap();
        assert!(live.current().is_empty());
        // SIGHUP re-reads even when nothing looks changed.
        std::fs::write(&path, format!("{a}\n")).unwrap();
        live.reload();
        assert!(live.snapshot().contains(&a));
    }
}
