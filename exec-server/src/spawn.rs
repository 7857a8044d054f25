//! Starting a command's process without copying the exec-server.
//!
//! Layout: [`Command`] says what to run (program, arguments, environment,
//! directory, standard streams, process group); [`start`] starts it on the
//! calling thread (the spawning thread of [`crate::contain`]) with the
//! containment steps run in the child; [`Child`] is the running process:
//! its pid, the exec-server's ends of its pipes, and its exit.
//!
//! A `fork` copies the exec-server's page tables and then pays a
//! copy-on-write fault for each page either side writes before the child's
//! `exec`: its cost grows with the exec-server's memory. The child here is
//! made with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` makes its
//! children: it runs in the exec-server's memory, on a stack of its own,
//! while the spawning thread waits, until it has called `execve` (a cost
//! that does not grow with the memory). In
//! that memory the child may only make system calls on what was prepared
//! before (no allocation, no lock): it resets the signal actions (with
//! every signal blocked until then, so that no handler of the exec-server
//! runs in it), asks for its death signal, joins its cgroup, starts its
//! session or process group, puts its standard streams in place, changes
//! directory and calls `execve`. A failure is left in the shared memory
//! for the spawning thread to report. A child given a cgroup is made in it
//! by `clone3` ([`clone3`]) where the kernel allows, else it moves itself
//! in before anything else runs.
//!
//! The exit is waited for on SIGCHLD (each [`Child`] listens from before
//! its process existed) with a non-blocking `waitpid` for its own pid only.
//! A child dropped before its exit was seen is killed, and reaped at once
//! or at a later spawn.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::libc::{self, c_char, c_int, c_void};
use tokio::net::unix::pipe;
use tokio::signal::unix::{Signal, SignalKind, signal};

mod clone3;

/// The child's stack (it makes a dozen system calls through libc).
const STACK: usize = 64 * 1024;

/// Killed children not reaped yet, kept for a later spawn to reap.
const MAX_ORPHANS: usize = 4096;

/// The search path when the environment has no `PATH` (as `execvp`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What one of the child's standard streams is.
#[derive(Debug)]
pub(crate) enum Stdio {
    /// `/dev/null`.
    Null,
    /// A new pipe, whose other end the exec-server keeps.
    Piped,
    /// This descriptor (the child gets its own copy).
    Fd(OwnedFd),
}

/// A program to start, with its arguments, environment, directory and
/// standard streams.
#[derive(Debug)]
pub(crate) struct Command {
    program: OsString,
    arg0: Option<OsString>,
    args: Vec<OsString>,
    clear_env: bool,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    stdio: [Stdio; 3],
    group: bool,
}

impl Command {
    /// Runs `program` (found on the child's `PATH` unless it has a `/`),
    /// with the exec-server's environment, standard streams `/dev/null`.
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            arg0: None,
            args: Vec::new(),
            clear_env: false,
            env: Vec::new(),
            cwd: None,
            stdio: [Stdio::Null, Stdio::Null, Stdio::Null],
            group: false,
        }
    }

    /// The name the program sees as its `argv[0]` (the program's by
    /// default).
    pub(crate) fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Self {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub(crate) fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Starts from an empty environment instead of the exec-server's.
    pub(crate) fn env_clear(&mut self) -> &mut Self {
        self.clear_env = true;
        self.env.clear();
        self
    }

    /// Sets a variable (a later setting of the same name wins).
    pub(crate) fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The directory the program starts in.
    pub(crate) fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// The standard input.
    pub(crate) fn stdin(&mut self, s: Stdio) -> &mut Self {
        self.stdio[0] = s;
        self
    }

    /// The standard output.
    pub(crate) fn stdout(&mut self, s: Stdio) -> &mut Self {
        self.stdio[1] = s;
        self
    }

    /// The standard error.
    pub(crate) fn stderr(&mut self, s: Stdio) -> &mut Self {
        self.stdio[2] = s;
        self
    }

    /// Whether the child starts a process group of its own (its pid is
    /// the group's id). A child given a terminal starts a session instead.
    pub(crate) fn process_group(&mut self, own: bool) -> &mut Self {
        self.group = own;
        self
    }

    /// The environment the child gets, in order, later settings replacing
    /// earlier ones in place.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut all: Vec<(OsString, OsString)> = if self.clear_env {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (name, value) in &self.env {
            match all.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1.clone_from(value),
                None => all.push((name.clone(), value.clone())),
            }
        }
        all
    }
}

/// Whether children given a cgroup are made in it by `clone3` (rather
/// than moving themselves in, at the cost of a migration): true until the
/// kernel has refused `clone3`.
pub(crate) fn born_in_cgroups() -> bool {
    clone3::available()
}

/// How the child is contained, beyond its [`Command`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement<'a> {
    /// Its terminal: the child starts a new session with it as its
    /// controlling terminal.
    pub(crate) terminal: Option<BorrowedFd<'a>>,
    /// The directory of the cgroup it starts in (best effort: where it
    /// can be neither made there nor moved there, it runs outside).
    pub(crate) cgroup: Option<BorrowedFd<'a>>,
}

/// A started process, before the runtime takes its pipes.
#[derive(Debug)]
pub(crate) struct Started {
    pid: libc::pid_t,
    pipes: [Option<OwnedFd>; 3],
}

impl Started {
    /// Hands the pipes to the runtime (must be called within one);
    /// `sigchld` must have been listening since before the start.
    pub(crate) fn into_child(mut self, sigchld: Signal) -> io::Result<Child> {
        let [stdin, stdout, stderr] = std::mem::take(&mut self.pipes);
        let pid = self.pid;
        // From here on the child's exit is `Child`'s to see.
        std::mem::forget(self);
        let mut child = Child {
            pid,
            status: None,
            sigchld,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        child.stdin = stdin.map(pipe::Sender::from_owned_fd).transpose()?;
        child.stdout = stdout.map(pipe::Receiver::from_owned_fd).transpose()?;
        child.stderr = stderr.map(pipe::Receiver::from_owned_fd).transpose()?;
        Ok(child)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        kill_and_reap(self.pid);
    }
}

/// A running (or exited) child.
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
    sigchld: Signal,
    /// The exec-server's end of the child's stdin, if piped.
    pub(crate) stdin: Option<pipe::Sender>,
    /// The exec-server's end of the child's stdout, if piped.
    pub(crate) stdout: Option<pipe::Receiver>,
    /// The exec-server's end of the child's stderr, if piped.
    pub(crate) stderr: Option<pipe::Receiver>,
}

/// Listens for SIGCHLD: before a child starts, so that its exit is seen.
pub(crate) fn listen_for_exits() -> io::Result<Signal> {
    signal(SignalKind::child())
}

impl Child {
    /// The process's id, until its exit has been seen.
    pub(crate) fn id(&self) -> Option<u32> {
        self.status.is_none().then(|| self.pid.unsigned_abs())
    }

    /// Waits for the process to exit (cancel-safe).
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.status {
                return Ok(s);
            }
            if let Some(s) = reap(self.pid)? {
                self.status = Some(s);
                continue;
            }
            if self.sigchld.recv().await.is_none() {
                return Err(io::Error::other(
                    "the runtime stopped listening for SIGCHLD",
                ));
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            kill_and_reap(self.pid);
        }
    }
}

/// The child's exit status if it has exited (reaping it).
fn reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Ok(Some(ExitStatus::from_raw(status.as_raw()))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Kills a child nobody will wait for, and reaps it now or later.
fn kill_and_reap(pid: libc::pid_t) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
    if !matches!(reap(pid), Ok(None)) {
        return;
    }
    let mut orphans = ORPHANS.lock().unwrap_or_else(PoisonError::into_inner);
    if orphans.len() < MAX_ORPHANS {
        orphans.push(pid);
    }
}

/// Killed children whose exit was not there yet when they were dropped.
static ORPHANS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// Reaps the killed children that have exited since.
fn reap_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(PoisonError::into_inner);
    orphans.retain(|pid| matches!(reap(*pid), Ok(None)));
}

/// What the child needs, prepared before it exists (it cannot allocate).
struct Plan {
    path: CString,
    argv: Vec<CString>,
    /// `/bin/sh path args…`, for a program the kernel cannot run (a
    /// script without `#!`), as `execvp` does.
    sh_argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
}

/// The pointers the child reads, and where it leaves its failure.
#[repr(C)]
struct Shared {
    path: *const c_char,
    argv: *const *const c_char,
    sh_argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    stdio: [c_int; 3],
    terminal: c_int,
    procs: c_int,
    group: bool,
    parent: libc::pid_t,
    /// The child's `errno` when it could not start the program.
    error: AtomicI32,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument, variable or path holds a NUL byte",
        )
    })
}

fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Finds `program` as `execvp` would: as given when it has a `/`, else in
/// the directories of `path` (relative ones from `cwd`), the first that
/// holds an executable file of that name.
fn resolve(program: &OsStr, path: Option<&OsStr>, cwd: Option<&Path>) -> io::Result<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    if program.is_empty() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = false;
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = match cwd {
            Some(cwd) if dir.is_relative() => cwd.join(dir).join(program),
            _ => dir.join(program),
        };
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() => {
                if rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok() {
                    return Ok(candidate);
                }
                denied = true;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    Err(if denied {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::NotFound
    }
    .into())
}

impl Plan {
    fn of(cmd: &Command) -> io::Result<Self> {
        let env = cmd.environment();
        let search = env
            .iter()
            .find(|(n, _)| n == "PATH")
            .map(|(_, v)| v.as_os_str());
        let path = resolve(&cmd.program, search, cmd.cwd.as_deref())?;
        let path = cstring(path.as_os_str())?;
        let arg0 = cstring(cmd.arg0.as_deref().unwrap_or(&cmd.program))?;
        let args = cmd
            .args
            .iter()
            .map(|a| cstring(a.as_os_str()))
            .collect::<io::Result<Vec<_>>>()?;
        let argv: Vec<CString> = std::iter::once(arg0).chain(args.clone()).collect();
        let sh_argv: Vec<CString> = [c"/bin/sh".to_owned(), path.clone()]
            .into_iter()
            .chain(args)
            .collect();
        let envp = env
            .iter()
            .map(|(n, v)| {
                let mut kv = n.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "an argument, variable or path holds a NUL byte",
                    )
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let cwd = cmd
            .cwd
            .as_deref()
            .map(|d| cstring(d.as_os_str()))
            .transpose()?;
        Ok(Self {
            path,
            argv,
            sh_argv,
            envp,
            cwd,
        })
    }
}

/// A descriptor at 3 or above (close-on-exec): the child's `dup2` onto
/// 0, 1 and 2 must not overwrite a source it has yet to copy.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// The child's end and the exec-server's end (if any) of each stream.
fn streams(stdio: [Stdio; 3]) -> io::Result<([OwnedFd; 3], [Option<OwnedFd>; 3])> {
    let mut child: [Option<OwnedFd>; 3] = [None, None, None];
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    for (i, s) in stdio.into_iter().enumerate() {
        let theirs = match s {
            Stdio::Null => rustix::fs::open(
                "/dev/null",
                if i == 0 {
                    rustix::fs::OFlags::RDONLY
                } else {
                    rustix::fs::OFlags::WRONLY
                } | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?,
            Stdio::Fd(fd) => fd,
            Stdio::Piped => {
                let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                let (theirs, mine) = if i == 0 { (read, write) } else { (write, read) };
                ours[i] = Some(mine);
                theirs
            }
        };
        child[i] = Some(above_stdio(theirs)?);
    }
    match child {
        [Some(a), Some(b), Some(c)] => Ok(([a, b, c], ours)),
        _ => Err(io::Error::other("a standard stream was not set up")),
    }
}

/// Starts `cmd` from the calling thread, contained as `how` says. The
/// child's death signal fires when this thread exits.
pub(crate) fn start(cmd: Command, how: Placement<'_>) -> io::Result<Started> {
    reap_orphans();
    let plan = Plan::of(&cmd)?;
    let (theirs, ours) = streams(cmd.stdio)?;
    let argv = pointers(&plan.argv);
    let sh_argv = pointers(&plan.sh_argv);
    let envp = pointers(&plan.envp);
    let mut shared = Shared {
        path: plan.path.as_ptr(),
        argv: argv.as_ptr(),
        sh_argv: sh_argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: plan.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdio: [
            theirs[0].as_raw_fd(),
            theirs[1].as_raw_fd(),
            theirs[2].as_raw_fd(),
        ],
        terminal: how.terminal.map_or(-1, |t| t.as_raw_fd()),
        procs: -1,
        group: cmd.group,
        parent: rustix::process::getpid().as_raw_nonzero().get(),
        error: AtomicI32::new(0),
    };
    let born_in = match how.cgroup {
        Some(dir) if clone3::available() => clone_child(&shared, Some(dir)).ok(),
        _ => None,
    };
    // Without clone3 into the cgroup, the child writes itself into its
    // `cgroup.procs` (kept open until it has exec'd).
    let mut procs = None;
    let pid = match born_in {
        Some(pid) => pid,
        None => {
            procs = how.cgroup.and_then(|dir| {
                rustix::fs::openat(
                    dir,
                    "cgroup.procs",
                    rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ok()
            });
            shared.procs = procs.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            clone_child(&shared, None)?
        }
    };
    drop(procs);
    // The child has called `execve` or exited by now (CLONE_VFORK).
    drop(theirs);
    let started = Started { pid, pipes: ours };
    match shared.error.load(Ordering::Acquire) {
        0 => Ok(started),
        errno => {
            // Dropping `started` reaps the child, which has exited.
            drop(started);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// `clone(CLONE_VM | CLONE_VFORK)` running [`child_main`] on a stack of its
/// own, with every signal blocked on this thread meanwhile; with `cgroup`,
/// `clone3` making the child in that cgroup (an error if it cannot).
#[allow(unsafe_code)]
fn clone_child(shared: &Shared, cgroup: Option<BorrowedFd<'_>>) -> io::Result<libc::pid_t> {
    let mut stack: Vec<u8> = Vec::with_capacity(STACK);
    // SAFETY: the stack's top is within (one past the end of) the
    // allocation, aligned down to 16 bytes as the ABI asks; the child
    // writes before it reads, and the allocation outlives the child's use
    // of it (the call returns only once the child has exec'd or exited).
    // The signal masks are plain thread-local state. `shared` and what it
    // points at live on this thread's stack and heap until after the call
    // returns, and the child only reads them (and stores `error`, an
    // atomic).
    unsafe {
        let arg = std::ptr::from_ref(shared).cast_mut().cast::<c_void>();
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        let made = match cgroup {
            Some(dir) => clone3::start(child_main, arg, stack.as_mut_ptr(), STACK, dir),
            None => {
                let top = stack.as_mut_ptr().add(STACK);
                let top = top.sub(top as usize % 16);
                let pid = libc::clone(
                    child_main,
                    top.cast::<c_void>(),
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    arg,
                );
                if pid < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(pid)
                }
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        made
    }
}

/// The child, in the exec-server's memory: system calls only, on what
/// [`Shared`] points at; it never returns.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` that `clone_child`'s caller keeps alive
    // until this child has exec'd or exited.
    unsafe {
        let shared = &*arg.cast::<Shared>();
        let errno = child_steps(shared);
        shared.error.store(errno.max(1), Ordering::Release);
        libc::_exit(127)
    }
}

/// The containment steps and the exec; returns the `errno` of the step
/// that failed.
#[allow(unsafe_code)]
unsafe fn child_steps(s: &Shared) -> c_int {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    // SAFETY: async-signal-safe system calls on descriptors and strings
    // prepared by the parent; nothing is allocated or locked.
    unsafe {
        // Every standard signal's default action (a signal the exec-server
        // was started with ignored, as `nohup` ignores SIGHUP, would stay
        // ignored), and no handler of the exec-server's on any other;
        // then nothing blocked.
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return errno();
        }
        if libc::getppid() != s.parent {
            // The exec-server died before the death signal was set.
            return libc::ESRCH;
        }
        if s.procs >= 0 {
            // No cgroup (say, not allowed here) leaves the process group
            // as the containment; the command still runs.
            libc::write(s.procs, b"0".as_ptr().cast::<c_void>(), 1);
        }
        if s.terminal >= 0 {
            // A session of its own (its id, and its process group's, is
            // the child's pid), the terminal its controlling terminal.
            if libc::setsid() < 0 || libc::ioctl(s.terminal, libc::TIOCSCTTY, 0) < 0 {
                return errno();
            }
        } else if s.group && libc::setpgid(0, 0) < 0 {
            return errno();
        }
        for (target, source) in (0..).zip(s.stdio) {
            if libc::dup2(source, target) < 0 {
                return errno();
            }
        }
        if !s.cwd.is_null() && libc::chdir(s.cwd) < 0 {
            return errno();
        }
        libc::execve(s.path, s.argv, s.envp);
        let failed = errno();
        if failed == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), s.sh_argv, s.envp);
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No terminal, no cgroup.
    const UNCONFINED: Placement<'static> = Placement {
        terminal: None,
        cgroup: None,
    };

    /// Starts `cmd` and hands it to the runtime.
    fn running(cmd: Command) -> Child {
        let sigchld = listen_for_exits().unwrap();
        start(cmd, UNCONFINED).unwrap().into_child(sigchld).unwrap()
    }

    #[test]
    fn a_bare_name_is_found_on_the_path_and_a_name_with_a_slash_is_not_searched() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let plain = bin.join("plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = OsString::from(format!("/nonexistent:{}", bin.display()));
        assert_eq!(
            resolve(OsStr::new("tool"), Some(&path), None).unwrap(),
            tool
        );
        // Relative entries are taken from the child's directory.
        let rel = OsString::from("bin");
        assert_eq!(
            resolve(OsStr::new("tool"), Some(&rel), Some(dir.path())).unwrap(),
            tool
        );
        assert_eq!(
            resolve(OsStr::new("missing"), Some(&path), None)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        // Found but not executable (when not root, who may run anything
        // with any execute bit, and here there is none).
        assert_eq!(
            resolve(OsStr::new("plain"), Some(&path), None)
                .unwrap_err()
                .kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            resolve(OsStr::new("./x/y"), Some(&path), None).unwrap(),
            PathBuf::from("./x/y")
        );
    }

    #[test]
    fn later_settings_replace_earlier_ones_in_place() {
        let mut cmd = Command::new("true");
        cmd.env_clear().env("A", "1").env("B", "2").env("A", "3");
        assert_eq!(
            cmd.environment(),
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }

    #[tokio::test]
    async fn a_child_runs_with_its_streams_directory_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read x; echo \"$x $V $(pwd)\"; echo err >&2; exit 3"])
            .env("V", "v")
            .current_dir(dir.path())
            .stdin(Stdio::Piped)
            .stdout(Stdio::Piped)
            .stderr(Stdio::Piped)
            .process_group(true);
        let mut child = running(cmd);
        let pid = child.id().unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(
            out,
            format!("hello v {}\n", dir.path().canonicalize().unwrap().display())
        );
        assert_eq!(err, "err\n");
        assert_eq!(child.id(), None);
        // Its own process group: the group's id was its pid.
        assert!(pid > 0);
    }

    #[tokio::test]
    async fn a_script_without_an_interpreter_line_runs_with_sh() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "echo \"ran $1\"\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut cmd = Command::new(&script);
        cmd.args(["as-sh"]).stdout(Stdio::Piped);
        let mut child = running(cmd);
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        assert_eq!(out, "ran as-sh\n");
    }

    #[test]
    fn a_child_starts_with_nothing_blocked_and_no_standard_signal_ignored() {
        // This thread blocks SIGUSR1, and the process ignores SIGUSR2.
        let mut usr1 = nix::sys::signal::SigSet::empty();
        usr1.add(nix::sys::signal::Signal::SIGUSR1);
        usr1.thread_block().unwrap();
        // SAFETY (test): ignoring a signal nobody in this process uses.
        #[allow(unsafe_code)]
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGUSR2,
                nix::sys::signal::SigHandler::SigIgn,
            )
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(dir.path().join("status")).unwrap();
        let mut cmd = Command::new("cat");
        cmd.args(["/proc/self/status"])
            .stdout(Stdio::Fd(OwnedFd::from(out)));
        let started = start(cmd, UNCONFINED).unwrap();
        let pid = rustix::process::Pid::from_raw(started.pid).unwrap();
        let (_, status) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
                .unwrap()
                .unwrap();
        std::mem::forget(started);
        assert_eq!(status.exit_status(), Some(0));
        let text = std::fs::read_to_string(dir.path().join("status")).unwrap();
        let mask = |name: &str| {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{text}");
        // The spawning thread's own mask is as it was.
        let now = nix::sys::signal::SigSet::thread_get_mask().unwrap();
        assert!(now.contains(nix::sys::signal::Signal::SIGUSR1));
    }

    #[tokio::test]
    async fn a_failed_start_says_why_and_leaves_no_child() {
        let cmd = Command::new("/nonexistent/program");
        let e = start(cmd, UNCONFINED).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let mut cmd = Command::new("true");
        cmd.current_dir("/nonexistent-dir");
        let e = start(cmd, UNCONFINED).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed_and_reaped() {
        let mut cmd = Command::new("sleep");
        cmd.args(["30"]);
        let child = running(cmd);
        let pid = child.id().unwrap();
        drop(child);
        // Reaped now or at the next start.
        let mut again = Command::new("true");
        again.stdout(Stdio::Null);
        let mut next = running(again);
        next.wait().await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the dropped child is still there"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
            reap_orphans();
        }
    }
}
