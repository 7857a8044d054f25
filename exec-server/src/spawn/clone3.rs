//! `clone3` with `CLONE_INTO_CGROUP`: the child is born in its cgroup.
//!
//! Moving a running process into a cgroup (writing `cgroup.procs`) takes
//! the cgroup subsystem's write lock, which on many kernels waits for an
//! RCU grace period (milliseconds per command). A child made by `clone3`
//! with `CLONE_INTO_CGROUP` (Linux 5.7) starts in the cgroup and pays no
//! migration. The C library has no wrapper that runs a function on a new
//! stack with `clone3`, so the system call is made here, as the C
//! library's own `clone` wrapper makes it: the child's side calls the
//! function on its stack and exits with its result.
//!
//! Only on x86-64; elsewhere, and where the kernel or a seccomp filter
//! refuses `clone3`, [`start`] says so and the caller moves the child in
//! instead.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc::{self, c_int, c_void};

/// `CLONE_INTO_CGROUP` (`linux/sched.h`).
#[cfg(target_arch = "x86_64")]
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (its second version).
#[repr(C, align(8))]
#[cfg(target_arch = "x86_64")]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Set once the kernel has refused `clone3` itself (not one child).
static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Whether `clone3` into a cgroup is still worth trying here.
pub(crate) fn available() -> bool {
    cfg!(target_arch = "x86_64") && !UNAVAILABLE.load(Ordering::Relaxed)
}

/// Starts `main(arg)` as a child sharing this process's memory (this
/// thread waits until it has called `execve` or exited), on `stack`, born
/// in the cgroup whose directory is `cgroup`; its exit is signalled with
/// SIGCHLD. Err when the child was not made (the caller may then start it
/// another way).
///
/// # Safety
/// As for `clone(CLONE_VM | CLONE_VFORK)`: `main` may make only
/// async-signal-safe system calls on memory that outlives the call, and
/// must never return into Rust code (it exits); `stack_len` bytes from
/// `stack` must be writable until this returns.
#[allow(unsafe_code)]
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn start(
    main: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
    stack: *mut u8,
    stack_len: usize,
    cgroup: BorrowedFd<'_>,
) -> io::Result<libc::pid_t> {
    // The child's stack top, 16-byte aligned as the ABI asks: the kernel
    // starts it at `stack + stack_size`.
    let base = stack as u64;
    let size = (base + stack_len as u64) / 16 * 16 - base;
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: base,
        stack_size: size,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::from(cgroup.as_raw_fd().unsigned_abs()),
    };
    let ret: i64;
    // SAFETY: the system call reads `args` (alive across it). The parent
    // side returns here with every register but rax, rcx and r11 as it
    // was. The child side runs on its own stack and never comes back into
    // this function: it calls `main(arg)` (with the stack aligned as a
    // call expects) and exits with what it returns.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_ref(&args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") main as usize,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret >= 0 {
        return libc::pid_t::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    }
    let errno = c_int::try_from(-ret).unwrap_or(libc::EINVAL);
    if matches!(errno, libc::ENOSYS | libc::E2BIG | libc::EPERM) {
        // No clone3 here (an old kernel, or a seccomp filter that refuses
        // it, as container runtimes' default filters do).
        UNAVAILABLE.store(true, Ordering::Relaxed);
    }
    Err(io::Error::from_raw_os_error(errno))
}

/// Elsewhere than x86-64: never made here.
#[allow(unsafe_code, clippy::missing_safety_doc)]
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn start(
    _main: extern "C" fn(*mut c_void) -> c_int,
    _arg: *mut c_void,
    _stack: *mut u8,
    _stack_len: usize,
    _cgroup: BorrowedFd<'_>,
) -> io::Result<libc::pid_t> {
    UNAVAILABLE.store(true, Ordering::Relaxed);
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}
