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
//!   (`cgroup.kill`) when the command ends and removed once empty; a
//!   cgroup its command left empty is kept for a later command instead
//!   ([`cgroups`]: a few are kept ready, so a command's path makes and
//!   removes none). A guard
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

mod cgroups;

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::spawn::{self, Child, Command};
use cgroups::Cgroups;
pub use cgroups::READY as READY_CGROUPS;

/// Spawn requests waiting for the spawning thread.
const SPAWN_QUEUE: usize = 64;

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
                tracing::info!(cgroup = %c.base().display(), "each command runs in a cgroup of its own, killed when it ends");
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

    /// Spawns `cmd` contained: from the spawning thread, with the death
    /// signal set and (where available) inside a cgroup of its own, which the
    /// returned [`CommandGroup`] gives back when dropped (killing what is
    /// left in it). With `terminal` (the
    /// user side of a pseudo-terminal), the child starts a new session
    /// with it as its controlling terminal; `cmd` must then not ask for a
    /// process group of its own (the session's is one).
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        cmd: Command,
        terminal: Option<OwnedFd>,
    ) -> Result<(Child, CommandGroup), SpawnError> {
        let dir = self.cgroups.as_ref().and_then(Cgroups::take);
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

/// A command's cgroup (if it has one): given back when dropped, kept for
/// a later command if the command left it empty, killed and removed if
/// not.
#[derive(Debug)]
pub(crate) struct CommandGroup {
    dir: Option<PathBuf>,
    owner: Arc<Containment>,
}

impl CommandGroup {
    /// The cgroup's directory, if the command has one.
    #[cfg(test)]
    fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }
}

impl Drop for CommandGroup {
    fn drop(&mut self) {
        let (Some(dir), Some(cgroups)) = (self.dir.take(), self.owner.cgroups.as_ref()) else {
            return;
        };
        cgroups.give_back(dir);
    }
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
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status:?}: {out}");
        (out, group)
    }

    /// Containment with cgroups, or `None` (with a notice) where this
    /// machine has no writable cgroup v2.
    fn contained() -> Option<Arc<Containment>> {
        let c = Containment::setup();
        if c.cgroups.is_none() {
            eprintln!("notice: no writable cgroup v2 here; skipped");
            return None;
        }
        Some(c)
    }

    /// Whether the cgroup `dir` holds no process.
    fn empty(dir: &std::path::Path) -> bool {
        std::fs::read_to_string(dir.join("cgroup.events"))
            .unwrap()
            .lines()
            .any(|l| l == "populated 0")
    }

    /// The commands' cgroups under the base now.
    fn commands_cgroups(c: &Cgroups) -> Vec<PathBuf> {
        std::fs::read_dir(c.base())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("cmd-"))
            .collect()
    }

    /// Waits (bounded) until `ok` holds.
    fn eventually(mut ok: impl FnMut() -> bool) -> bool {
        for _ in 0..1000 {
            if ok() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ok()
    }

    #[tokio::test]
    async fn a_command_starts_inside_a_cgroup_of_its_own_which_is_emptied_after() {
        let Some(c) = contained() else { return };
        let cgroups = c.cgroups.as_ref().unwrap();
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
        assert!(!empty(&third_dir));
        std::mem::forget(sleeper);
        drop(group);
        drop(other);
        drop(third);
        // Without another spawn: the cgroups their commands left empty are
        // kept ready for later commands or removed, the one left holding a
        // process is killed and removed once empty; every cgroup left is a
        // ready one, empty, and at most a few are kept.
        let dirs = [&dir, &other_dir, &third_dir];
        let settled = || {
            let ready = cgroups.ready();
            dirs.iter().all(|d| !d.exists() || ready.contains(d))
                && commands_cgroups(cgroups).len() == ready.len()
        };
        assert!(
            eventually(settled),
            "left behind: {:?} (ready: {:?})",
            commands_cgroups(cgroups),
            cgroups.ready()
        );
        let ready = cgroups.ready();
        assert!(ready.len() <= cgroups::READY, "{ready:?}");
        assert!(ready.iter().all(|d| empty(d)), "{ready:?}");
        // The cgroup that had to be killed is not used again.
        assert!(!third_dir.exists(), "{ready:?}");
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

    #[tokio::test]
    async fn an_emptied_cgroup_is_used_again_and_the_stock_stays_bounded() {
        let Some(c) = contained() else { return };
        let cgroups = c.cgroups.as_ref().unwrap();
        // The stock is made at the start.
        assert!(eventually(|| cgroups.ready().len() == cgroups::READY));
        let (_, group) = cat_own_cgroup(&c).await;
        let dir = group.dir().unwrap().to_path_buf();
        drop(group);
        // Given back empty, it goes back to the stock...
        assert!(eventually(|| cgroups.ready().last() == Some(&dir)));
        // ... and the next command runs in it, alone.
        let (cgroup, again) = cat_own_cgroup(&c).await;
        assert_eq!(again.dir(), Some(dir.as_path()));
        let line = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        assert!(dir.ends_with(line.trim_start_matches('/')), "{cgroup}");
        drop(again);
        // Many at once, then none: what is kept is the stock, no more.
        let mut groups = Vec::new();
        for _ in 0..3 * cgroups::READY {
            groups.push(cat_own_cgroup(&c).await.1);
        }
        let mut all: Vec<PathBuf> = groups
            .iter()
            .filter_map(|g| g.dir().map(PathBuf::from))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            3 * cgroups::READY,
            "two commands shared a cgroup"
        );
        drop(groups);
        assert!(
            eventually(|| commands_cgroups(cgroups).len() == cgroups::READY
                && cgroups.ready().len() == cgroups::READY),
            "{:?}",
            commands_cgroups(cgroups)
        );
    }
}
