//! What this process knows of its own clock, told to the peers that place
//! its spans on their clocks: a digest of the kernel's boot id (equal for
//! every process of one running kernel, so a peer with the same digest
//! shares our clock exactly) and, when the kernel says its clock is
//! synchronized, the kernel's stated maximum error (`adjtimex`).
//!
//! `REX_CLOCK_STATUS=withheld` tells peers nothing, so they estimate this
//! process's clock from the session's round trips instead: for a process
//! whose clock is deliberately offset from its kernel's (libfaketime, a
//! test of skewed clocks), whose kernel's word would be wrong.

use std::sync::OnceLock;
use std::time::Duration;

use proto::session::peer_clock::Status;
use sha2::{Digest, Sha256};

/// The environment variable that withholds this process's clock status.
const STATUS_ENV: &str = "REX_CLOCK_STATUS";

/// What this process tells of its clock now (the boot id read once, the
/// kernel's synchronization state at each call).
pub fn status() -> Status {
    if withheld() {
        return Status::default();
    }
    Status {
        boot: boot(),
        max_error: synchronized(),
    }
}

/// Whether `REX_CLOCK_STATUS=withheld` (read once).
fn withheld() -> bool {
    static WITHHELD: OnceLock<bool> = OnceLock::new();
    *WITHHELD.get_or_init(|| {
        std::env::var(STATUS_ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("withheld"))
    })
}

/// The digest of the kernel's boot id, read once; `None` if it cannot be
/// read. Peers learn only whether theirs is equal, not the id itself.
fn boot() -> Option<[u8; 16]> {
    static BOOT: OnceLock<Option<[u8; 16]>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        digest(id.trim())
    })
}

fn digest(boot_id: &str) -> Option<[u8; 16]> {
    if boot_id.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(b"rex clock boot id v1\0");
    h.update(boot_id.as_bytes());
    let full = h.finalize();
    <[u8; 16]>::try_from(full.get(..16)?).ok()
}

/// The kernel's maximum error when it says its clock is synchronized.
fn synchronized() -> Option<Duration> {
    let (state, status, max_error_micros) = adjtimex()?;
    reading(state, status, max_error_micros)
}

/// A synchronized clock's maximum error from an `adjtimex` reading: not
/// `TIME_ERROR`, not `STA_UNSYNC`, and a sane error.
fn reading(state: i32, status: i32, max_error_micros: i64) -> Option<Duration> {
    if state < 0 || state == libc::TIME_ERROR || status & libc::STA_UNSYNC != 0 {
        return None;
    }
    let micros = u64::try_from(max_error_micros).ok()?;
    Some(Duration::from_micros(micros))
}

/// Reads the kernel's clock state without changing it: the call's state,
/// the status bits and the maximum error in microseconds.
#[allow(unsafe_code)]
fn adjtimex() -> Option<(i32, i32, i64)> {
    // SAFETY: `timex` is plain integers, so all-zero is a valid value;
    // with `modes` 0 the call only reads the kernel's state into it.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, exclusively borrowed `timex`.
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return None;
    }
    Some((state, t.status, t.maxerror))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_digest_is_stable_and_not_the_id() {
        let a = digest("fda12810-6e04-4941-b836-c5bc3085a1c7").unwrap();
        assert_eq!(Some(a), digest("fda12810-6e04-4941-b836-c5bc3085a1c7"));
        assert_ne!(Some(a), digest("fda12810-6e04-4941-b836-c5bc3085a1c8"));
        assert_eq!(digest(""), None);
        // This process's kernel has one, and it is read the same each time.
        assert_eq!(boot(), boot());
    }

    #[test]
    fn only_a_synchronized_kernel_states_an_error() {
        // TIME_OK, synchronized, 250 µs.
        assert_eq!(reading(0, 0, 250), Some(Duration::from_micros(250)));
        // The clock is unsynchronized (the kernel's own word, or its
        // state).
        assert_eq!(reading(0, libc::STA_UNSYNC, 250), None);
        assert_eq!(reading(libc::TIME_ERROR, 0, 250), None);
        assert_eq!(reading(-1, 0, 250), None);
        assert_eq!(reading(0, 0, -3), None);
        // The real kernel answers (whatever its state).
        assert!(adjtimex().is_some());
    }
}
