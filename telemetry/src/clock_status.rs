//! What this process knows of its own clock, told to the peers that place
//! its spans on their clocks: a digest of the kernel's boot id (equal for
//! every process of one running kernel, so a peer with the same digest
//! shares our clock exactly) and, when the kernel says its clock is
//! synchronized, the kernel's stated maximum error (`adjtimex`).
//!
//! The kernel's state is read at most once a [`READING_FOR`]: a relay
//! tells it on every traced frame it forwards, and a syscall per frame
//! cost more than the rest of the frame's timing. A reading used again
//! states its error grown as the kernel grows it between updates, so what
//! is told is still a bound.
//!
//! `REX_CLOCK_STATUS=withheld` tells peers nothing, so they estimate this
//! process's clock from the session's round trips instead: for a process
//! whose clock is deliberately offset from its kernel's (libfaketime, a
//! test of skewed clocks), whose kernel's word would be wrong.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use proto::session::peer_clock::Status;
use sha2::{Digest, Sha256};

/// The environment variable that withholds this process's clock status.
const STATUS_ENV: &str = "REX_CLOCK_STATUS";

/// How long a reading of the kernel's clock state is used before the
/// kernel is asked again.
const READING_FOR: Duration = Duration::from_secs(1);

/// How fast the kernel grows its maximum error between a time daemon's
/// updates: 500 ppm (`MAXFREQ`), 500 µs a second.
const ERROR_GROWTH_PER_SEC: Duration = Duration::from_micros(500);

/// The last reading of the kernel's state and when it was taken.
type Reading = Option<(Instant, Option<Duration>)>;

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
    static LAST: Mutex<Reading> = Mutex::new(None);
    read_at(&LAST, Instant::now(), || {
        let (state, status, max_error_micros) = adjtimex()?;
        reading(state, status, max_error_micros)
    })
}

/// The maximum error at `now`: `last`'s, grown for its age, while it is
/// younger than [`READING_FOR`]; otherwise `read`'s, kept in `last`.
fn read_at(
    last: &Mutex<Reading>,
    now: Instant,
    read: impl FnOnce() -> Option<Duration>,
) -> Option<Duration> {
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((at, error)) = *last {
        let age = now.saturating_duration_since(at);
        if age < READING_FOR {
            return error.map(|e| e + grown(age));
        }
    }
    let error = read();
    *last = Some((now, error));
    error
}

/// What the kernel may add to its maximum error in `age`, rounded up to
/// the microsecond.
fn grown(age: Duration) -> Duration {
    let micros = (age.as_nanos() * ERROR_GROWTH_PER_SEC.as_micros()).div_ceil(1_000_000_000);
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
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

    #[test]
    fn a_reading_is_used_for_a_second_its_error_grown_as_the_kernel_grows_it() {
        let last = Mutex::new(None);
        let t0 = Instant::now();
        let reads = std::cell::Cell::new(0);
        let read = |error: Option<Duration>| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                error
            }
        };
        let us = Duration::from_micros;
        assert_eq!(read_at(&last, t0, read(Some(us(250)))), Some(us(250)));
        // Within the second: not read again, the error grown 500 ppm.
        let half = t0 + Duration::from_millis(500);
        assert_eq!(read_at(&last, half, read(Some(us(1)))), Some(us(500)));
        assert_eq!(read_at(&last, t0 + us(1), read(None)), Some(us(251)));
        assert_eq!(reads.get(), 1);
        // After it: read again, and what it says is what is told.
        let later = t0 + READING_FOR;
        assert_eq!(read_at(&last, later, read(None)), None);
        assert_eq!(reads.get(), 2);
        // An unsynchronized reading stays unsynchronized until read again.
        assert_eq!(read_at(&last, later + us(10), read(Some(us(5)))), None);
        assert_eq!(reads.get(), 2);
        assert_eq!(
            read_at(&last, later + READING_FOR, read(Some(us(5)))),
            Some(us(5))
        );
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn growth_rounds_up_to_the_microsecond() {
        assert_eq!(grown(Duration::ZERO), Duration::ZERO);
        assert_eq!(grown(Duration::from_nanos(1)), Duration::from_micros(1));
        assert_eq!(grown(Duration::from_secs(1)), Duration::from_micros(500));
        assert_eq!(grown(Duration::from_secs(4)), Duration::from_millis(2));
    }
}
