//! A flush barrier for placing: a client hands a call's final event to its
//! caller first and places the exec-server's stages just after, off the
//! call's path. A [`Placing`] is held from before the event is handed on
//! until the stages are recorded, and a flush (`setup::Flusher`) waits for
//! every one to be dropped, so that what it writes has the whole call.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Calls being placed now.
static PLACING: Mutex<usize> = Mutex::new(0);
/// Told when the count falls to zero.
static PLACED: Condvar = Condvar::new();

/// A call's stages being placed: dropped once they are recorded (or given
/// up).
#[derive(Debug)]
#[must_use = "the barrier holds only while the guard lives"]
pub struct Placing(());

/// Starts placing one call's stages.
pub fn placing() -> Placing {
    *PLACING.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    Placing(())
}

impl Drop for Placing {
    fn drop(&mut self) {
        let mut n = PLACING.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        if *n == 0 {
            PLACED.notify_all();
        }
    }
}

/// Waits until no call is being placed, for at most `within` (placing takes
/// microseconds; the bound only keeps a stuck placer from stopping a
/// flush). Returns whether none is.
pub fn wait_placed(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut n = PLACING.lock().unwrap_or_else(PoisonError::into_inner);
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        n = PLACED
            .wait_timeout(n, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_waits_for_the_calls_being_placed() {
        let guard = placing();
        // Held: the wait gives up at its bound.
        assert!(!wait_placed(Duration::from_millis(10)));
        let placer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(guard);
        });
        // Released by another thread: the wait ends with it.
        assert!(wait_placed(Duration::from_secs(30)));
        placer.join().unwrap();
        assert!(wait_placed(Duration::ZERO));
    }
}
