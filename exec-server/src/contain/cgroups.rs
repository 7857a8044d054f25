//! The commands' cgroups: a directory each under the exec-server's base
//! cgroup, kept ready ahead of the commands and used again once empty, so
//! that neither a command's start nor its end makes or removes a cgroup on
//! its path (each is about 50 µs of the kernel's time here: BENCHMARKS.md).
//!
//! A command takes a ready cgroup (or makes one, when none is ready) and
//! gives it back when it ends. Empty, it is kept ready for a later command
//! (at most [`READY`] are); still holding the command's descendants, it is
//! killed, and the sweeper thread removes it once empty and makes the
//! ready stock whole again. A cgroup is handed out only empty and never
//! killed, and never to two commands at once. The guard, a process outside
//! the exec-server, kills and removes them all when the exec-server goes,
//! however it goes.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many empty cgroups an exec-server keeps ready for its next
/// commands (beyond them, a cgroup its command left empty is removed).
pub const READY: usize = 4;

/// Cgroups waiting to be removed (killed ones until they empty; beyond
/// it, one is removed where it is given back, or left to the guard).
const MAX_LEFTOVERS: usize = 1024;

/// How often the sweeper looks again while killed cgroups are not empty.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Rounds the sweeper looks for, once woken, before it waits to be woken
/// again.
const SWEEP_ROUNDS: u32 = 500;

/// Where the commands' cgroups go, when cgroup v2 can be used.
#[derive(Debug)]
pub(super) struct Cgroups {
    dirs: Arc<Dirs>,
    /// Wakes the sweeper; it ends when this is dropped.
    sweeper: Option<std::sync::mpsc::SyncSender<()>>,
    /// The guard's stdin: closed when the exec-server goes.
    _guard: Option<std::process::ChildStdin>,
}

/// The cgroups' directories, shared with the sweeper.
#[derive(Debug)]
struct Dirs {
    /// `rex-exec.<pid>.<n>` in the exec-server's own cgroup.
    base: PathBuf,
    next: AtomicU64,
    /// Empty cgroups, at most [`READY`].
    ready: Mutex<Vec<PathBuf>>,
    /// Cgroups to remove (killed ones once they empty).
    leftovers: Mutex<Vec<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the cgroup `dir` holds no process (its `cgroup.events` says
/// so; false when it cannot be read).
fn empty(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|events| events.lines().any(|l| l == "populated 0"))
}

/// Kills every process in the cgroup `dir` (and its descendants).
fn kill(dir: &Path) {
    if let Ok(mut f) = File::options().write(true).open(dir.join("cgroup.kill")) {
        let _ = f.write_all(b"1");
    }
}

impl Dirs {
    /// A new, empty cgroup.
    fn make(&self) -> Option<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.base.join(format!("cmd-{n}"));
        std::fs::create_dir(&dir).ok().map(|()| dir)
    }

    /// Removes the killed cgroups that have emptied, and makes the ready
    /// stock whole; true when no killed cgroup is left.
    fn tend(&self) -> bool {
        lock(&self.leftovers).retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
        while lock(&self.ready).len() < READY {
            let Some(dir) = self.make() else { break };
            lock(&self.ready).push(dir);
        }
        lock(&self.leftovers).is_empty()
    }
}

impl Cgroups {
    /// Finds the exec-server's cgroup v2 directory and makes the
    /// commands' base cgroup in it, with its guard and its first ready
    /// cgroups.
    pub(super) fn create() -> Result<Self, String> {
        let dir = own_cgroup_dir().ok_or("cgroup v2 is not mounted")?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let base = dir.join(format!(
            "rex-exec.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return Err("the kernel has no cgroup.kill (Linux 5.14 or later)".into());
        }
        let guard = start_guard(&base);
        if guard.is_none() {
            tracing::warn!(
                "cannot start the cgroup guard (sh): commands are killed when they end, but not \
                 if the exec-server is killed"
            );
        }
        let dirs = Arc::new(Dirs {
            base,
            next: AtomicU64::new(0),
            ready: Mutex::new(Vec::with_capacity(READY)),
            leftovers: Mutex::new(Vec::new()),
        });
        let cgroups = Self {
            sweeper: start_sweeper(Arc::clone(&dirs)),
            dirs,
            _guard: guard,
        };
        cgroups.wake();
        Ok(cgroups)
    }

    /// The base cgroup, which holds every command's.
    pub(super) fn base(&self) -> &Path {
        &self.dirs.base
    }

    /// An empty cgroup for one command: a ready one, or a new one when
    /// none is ready. The stock is made whole again when it runs out (a
    /// cgroup given back empty refills it otherwise).
    pub(super) fn take(&self) -> Option<PathBuf> {
        let (dir, left) = {
            let mut ready = lock(&self.dirs.ready);
            let dir = ready.pop();
            (dir, ready.len())
        };
        if left == 0 {
            self.wake();
        }
        dir.or_else(|| self.dirs.make())
    }

    /// Takes back a command's cgroup. One that holds no process is kept
    /// ready for a later command (or left to the sweeper to remove, when
    /// enough are ready); one that still holds processes (the command's
    /// descendants) is killed, and removed by the sweeper once empty. A
    /// killed cgroup is never used again: the kernel may kill a process
    /// cloned into a cgroup that was killed before (here, Linux 6.18, every
    /// one was).
    pub(super) fn give_back(&self, dir: PathBuf) {
        if empty(&dir) {
            let mut ready = lock(&self.dirs.ready);
            if ready.len() < READY {
                ready.push(dir);
                return;
            }
        } else {
            kill(&dir);
        }
        self.remove_later(dir);
    }

    /// Leaves `dir` to the sweeper, which removes it once empty; when too
    /// many wait, it is removed here if it can be (the guard removes it at
    /// the end if not).
    fn remove_later(&self, dir: PathBuf) {
        let mut left = lock(&self.dirs.leftovers);
        if left.len() >= MAX_LEFTOVERS {
            drop(left);
            let _ = std::fs::remove_dir(&dir);
            return;
        }
        left.push(dir);
        drop(left);
        self.wake();
    }

    fn wake(&self) {
        if let Some(wake) = &self.sweeper {
            // Full: the sweeper is already awake.
            let _ = wake.try_send(());
        }
    }

    /// The cgroups kept ready now.
    #[cfg(test)]
    pub(super) fn ready(&self) -> Vec<PathBuf> {
        lock(&self.dirs.ready).clone()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // The guard (its stdin now closing) kills what is left and removes
        // the directories.
        kill(&self.dirs.base);
    }
}

/// A thread that, when woken, looks after the cgroups ([`Dirs::tend`])
/// until the killed ones have emptied (their processes take a moment to
/// die after `cgroup.kill`).
fn start_sweeper(dirs: Arc<Dirs>) -> Option<std::sync::mpsc::SyncSender<()>> {
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("cgroup-sweeper".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                for _ in 0..SWEEP_ROUNDS {
                    if dirs.tend() {
                        break;
                    }
                    std::thread::sleep(SWEEP_EVERY);
                }
            }
        })
        .ok()
        .map(|_| wake)
}

/// The guard: waits for its stdin (a pipe from the exec-server) to close,
/// then kills every command's cgroup and removes the directories once
/// they are empty (for a few seconds at most).
const GUARD_SCRIPT: &str = r#"cat >/dev/null
echo 1 > "$1/cgroup.kill" 2>/dev/null
i=0
while [ $i -lt 50 ]; do
  for d in "$1"/cmd-*; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rmdir "$1" 2>/dev/null && exit 0
  i=$((i+1))
  sleep 0.1
done"#;

fn start_guard(base: &Path) -> Option<std::process::ChildStdin> {
    use std::os::unix::process::CommandExt;
    let mut guard = std::process::Command::new("sh")
        .arg("-c")
        .arg(GUARD_SCRIPT)
        .arg("rex-cgroup-guard")
        .arg(OsString::from(base.as_os_str()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Not in the exec-server's process group: a Ctrl-C meant for the
        // exec-server does not take the guard first.
        .process_group(0)
        .spawn()
        .ok()?;
    // The guard outlives the exec-server by design (it is not waited for).
    guard.stdin.take()
}

/// The exec-server's own cgroup v2 directory, from /proc/self/mountinfo
/// (where cgroup2 is mounted) and /proc/self/cgroup (the `0::` line).
fn own_cgroup_dir() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(own.trim_start_matches('/')))
}
