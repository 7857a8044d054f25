//! Process containment: a command's processes end with it, and with the
//! exec-server.
//!
//! - Every child is started ([`crate::spawn`]) from one thread that lives
//!   as long as the exec-server, and asks the kernel for SIGKILL when its
//!   parent dies (`PR_SET_PDEATHSIG`, which fires when the *thread* that
//!   made the child exits, hence the one long-lived thread rather than the
//!   runtime's workers). A child whose parent died before the request took
//!   effect (its parent pid is no longer the exec-server's) does not start.
//! - Every command runs in a process group of its own, which is killed
//!   when the command is cancelled or its session ends.
//! - By default (unless `--no-cgroups`), where cgroup v2 is mounted (on
//!   its own, or as the `unified` hierarchy beside v1's) and the
//!   exec-server's own cgroup is writable (root, or a delegated cgroup),
//!   each command gets a cgroup of its own (under `rex-exec.<pid>.<n>/`
//!   beside the exec-server's processes). The child is made in it by
//!   `clone3(CLONE_INTO_CGROUP)`, or, where that is refused, moves itself
//!   in before the program starts; so every descendant, including one that
//!   calls `setsid` or double-forks, stays inside. The cgroup is killed
//!   (`cgroup.kill`) when the command ends and removed once empty. A guard
//!   process (`sh`, in its own process group) holds a pipe from the
//!   exec-server and kills every command's cgroup when the pipe closes,
//!   that is when the exec-server exits or is killed.
//!
//! Without cgroups (turned off, no cgroup v2, no writable cgroup, or no
//! `cgroup.kill` before Linux 5.14), what is left
//! is the process group and the direct child's death signal: a descendant
//! that leaves the group (`setsid`, `setpgid`) survives the command's end,
//! and descendants other than the direct child survive the exec-server's
//! death. The exec-server says at start which of the two applies.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::spawn::{self, Child, Command};

/// Spawn requests waiting for the spawning thread.
const SPAWN_QUEUE: usize = 64;

/// Sub-cgroups of killed commands waiting to be removed (they can be
/// removed only once their processes are gone).
const MAX_LEFTOVERS: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The spawning thread's queue; the thread never exits (its sender is
/// never dropped), so a child's parent thread lives as long as the process.
fn spawner() -> Option<&'static mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<Job>(SPAWN_QUEUE);
            std::thread::Builder::new()
                .name("spawner".into())
                .spawn(move || {
                    while let Some(job) = rx.blocking_recv() {
                        job();
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Why a command could not be started contained.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// The spawn itself failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The spawning thread is not running.
    #[error("the spawning thread is not running")]
    NoSpawner,
}

/// Where the commands' cgroups go, when cgroup v2 can be used.
#[derive(Debug)]
struct Cgroups {
    /// `rex-exec.<pid>.<n>` in the exec-server's own cgroup.
    base: PathBuf,
    next: AtomicU64,
    /// Killed commands' cgroups not removed yet.
    leftovers: Arc<Mutex<Vec<PathBuf>>>,
    /// Wakes the sweeper (which removes them once empty); it ends when
    /// this is dropped.
    sweeper: Option<std::sync::mpsc::SyncSender<()>>,
    /// The guard's stdin: closed when the exec-server goes.
    _guard: Option<std::process::ChildStdin>,
}

/// Containment for one exec-server's commands.
#[derive(Debug)]
pub(crate) struct Containment {
    cgroups: Option<Cgroups>,
}

impl Containment {
    /// Sets up containment: the commands' cgroup where cgroup v2 allows
    /// one, with its guard. Says (once, in the log) which containment
    /// applies.
    pub(crate) fn setup() -> Arc<Self> {
        let cgroups = match Cgroups::create() {
            Ok(c) => {
                tracing::info!(cgroup = %c.base.display(), "each command runs in a cgroup of its own, killed when it ends");
                Some(c)
            }
            Err(why) => {
                tracing::info!(
                    "no cgroup v2 for commands ({why}): a command's processes are contained by \
                     their process group only (a descendant that leaves it survives the command)"
                );
                None
            }
        };
        Arc::new(Self { cgroups })
    }

    /// No cgroups: the process group and the death signal only.
    pub(crate) fn without_cgroups() -> Arc<Self> {
        Arc::new(Self { cgroups: None })
    }

    /// Whether commands get a cgroup of their own.
    #[cfg(test)]
    fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Spawns `cmd` contained: from the spawning thread, with the death
    /// signal set and (where available) inside a new cgroup, which the
    /// returned [`CommandGroup`] kills when dropped. With `terminal` (the
    /// user side of a pseudo-terminal), the child starts a new session
    /// with it as its controlling terminal; `cmd` must then not ask for a
    /// process group of its own (the session's is one).
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        cmd: Command,
        terminal: Option<OwnedFd>,
    ) -> Result<(Child, CommandGroup), SpawnError> {
        let dir = self.cgroups.as_ref().and_then(Cgroups::new_group);
        let group = CommandGroup {
            dir,
            owner: Arc::clone(self),
        };
        let dir_path = group.dir.clone();
        // Listening before the child exists: its exit cannot be missed.
        let sigchld = spawn::listen_for_exits()?;
        let tx = spawner().ok_or(SpawnError::NoSpawner)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let dir = dir_path.and_then(|p| File::open(p).ok().map(OwnedFd::from));
            let placement = spawn::Placement {
                terminal: terminal.as_ref().map(AsFd::as_fd),
                cgroup: dir.as_ref().map(AsFd::as_fd),
            };
            let _ = reply_tx.send(spawn::start(cmd, placement));
        });
        tx.send(job).await.map_err(|_| SpawnError::NoSpawner)?;
        let started = reply_rx.await.map_err(|_| SpawnError::NoSpawner)??;
        if group.dir.is_some() && !spawn::born_in_cgroups() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    "clone3 into a cgroup is refused here (an old kernel or a seccomp filter): \
                     each command moves into its cgroup as it starts, a cgroup migration each"
                );
            });
        }
        Ok((started.into_child(sigchld)?, group))
    }
}

/// A command's cgroup (if it has one): killed and removed when dropped.
#[derive(Debug)]
pub(crate) struct CommandGroup {
    dir: Option<PathBuf>,
    owner: Arc<Containment>,
}

impl CommandGroup {
    /// The cgroup's directory, if the command has one.
    #[cfg(test)]
    fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

impl Drop for CommandGroup {
    fn drop(&mut self) {
        let (Some(dir), Some(cgroups)) = (self.dir.take(), self.owner.cgroups.as_ref()) else {
            return;
        };
        kill_cgroup(&dir);
        cgroups.remove_later(dir);
    }
}

/// Kills every process in the cgroup `dir` (and its descendants).
fn kill_cgroup(dir: &Path) {
    if let Ok(mut f) = File::options().write(true).open(dir.join("cgroup.kill")) {
        let _ = f.write_all(b"1");
    }
}

impl Cgroups {
    /// Finds the exec-server's cgroup v2 directory and makes the
    /// commands' base cgroup in it, with its guard.
    fn create() -> Result<Self, String> {
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
        let leftovers = Arc::new(Mutex::new(Vec::new()));
        Ok(Self {
            base,
            next: AtomicU64::new(0),
            sweeper: start_sweeper(Arc::clone(&leftovers)),
            leftovers,
            _guard: guard,
        })
    }

    /// A new, empty cgroup for one command.
    fn new_group(&self) -> Option<PathBuf> {
        self.sweep();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.base.join(format!("cmd-{n}"));
        std::fs::create_dir(&dir).ok().map(|()| dir)
    }

    /// Notes a killed command's cgroup for removal (once its processes
    /// are gone).
    fn remove_later(&self, dir: PathBuf) {
        if std::fs::remove_dir(&dir).is_ok() {
            return;
        }
        {
            let mut left = self
                .leftovers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if left.len() < MAX_LEFTOVERS {
                left.push(dir);
            }
        }
        if let Some(wake) = &self.sweeper {
            // Full: the sweeper is already awake.
            let _ = wake.try_send(());
        }
    }

    /// Removes the killed commands' cgroups that have emptied.
    fn sweep(&self) {
        sweep(&self.leftovers);
    }
}

/// Removes the cgroups in `leftovers` that have emptied; true when none
/// is left.
fn sweep(leftovers: &Mutex<Vec<PathBuf>>) -> bool {
    let mut left = leftovers.lock().unwrap_or_else(PoisonError::into_inner);
    left.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
    left.is_empty()
}

/// How often the sweeper tries again while killed cgroups are not empty.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Rounds the sweeper tries for, once woken, before it waits to be woken
/// again (the next spawn sweeps too).
const SWEEP_ROUNDS: u32 = 500;

/// A thread that, when woken, removes killed commands' cgroups as they
/// empty (their processes take a moment to die after `cgroup.kill`).
fn start_sweeper(leftovers: Arc<Mutex<Vec<PathBuf>>>) -> Option<std::sync::mpsc::SyncSender<()>> {
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("cgroup-sweeper".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                for _ in 0..SWEEP_ROUNDS {
                    if sweep(&leftovers) {
                        break;
                    }
                    std::thread::sleep(SWEEP_EVERY);
                }
            }
        })
        .ok()
        .map(|_| wake)
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // The guard (its stdin now closing) kills what is left and removes
        // the directories.
        kill_cgroup(&self.base);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Runs `cat /proc/self/cgroup` contained; its output and its group.
    async fn cat_own_cgroup(c: &Arc<Containment>) -> (String, CommandGroup) {
        let mut cmd = Command::new("cat");
        cmd.args(["/proc/self/cgroup"])
            .stdout(spawn::Stdio::Piped)
            .process_group(true);
        let (mut child, group) = c.spawn(cmd, None).await.unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        (out, group)
    }

    #[tokio::test]
    async fn a_command_starts_inside_a_cgroup_of_its_own_which_is_removed_after() {
        let c = Containment::setup();
        if !c.has_cgroups() {
            eprintln!("notice: no writable cgroup v2 here; skipped");
            return;
        }
        let (first, group) = cat_own_cgroup(&c).await;
        let dir = group.dir().unwrap().to_path_buf();
        let line = first.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        // The path the process reads is its cgroup's, within the mount.
        assert!(dir.ends_with(line.trim_start_matches('/')), "{first}");
        let (second, other) = cat_own_cgroup(&c).await;
        assert_ne!(first, second, "two commands shared a cgroup");
        let other_dir = other.dir().unwrap().to_path_buf();
        // A process left in the cgroup (its command has ended) is killed
        // with it.
        let mut cmd = Command::new("sleep");
        cmd.args(["300"]).process_group(true);
        let (sleeper, third) = c.spawn(cmd, None).await.unwrap();
        let pid = sleeper.id().unwrap();
        let third_dir = third.dir().unwrap().to_path_buf();
        std::mem::forget(sleeper);
        drop(group);
        drop(other);
        drop(third);
        // Killed and removed, without another spawn (bounded wait).
        for _ in 0..1000 {
            if !dir.exists() && !other_dir.exists() && !third_dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!dir.exists(), "{} is left behind", dir.display());
        assert!(
            !third_dir.exists(),
            "{} is left behind",
            third_dir.display()
        );
        let status = rustix::process::waitpid(
            rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()),
            rustix::process::WaitOptions::empty(),
        )
        .unwrap()
        .unwrap()
        .1;
        assert_eq!(status.terminating_signal(), Some(9));
        eprintln!("born in the cgroup by clone3: {}", spawn::born_in_cgroups());
    }
}
