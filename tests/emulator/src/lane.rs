//! One direction of one connection: the delay line between the thread
//! that reads from the sender and the thread that writes to the receiver.
//! Bounded in bytes; every wait in it is woken when the connection is cut.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::CutKind;
use crate::stats::LaneCounters;

/// What travels down a lane, each with the instant it is due at the
/// receiver.
#[derive(Debug)]
pub(crate) enum Item {
    /// Bytes read from the sender.
    Data { bytes: Vec<u8>, due: Instant },
    /// The sender closed its side: pass the end of stream on.
    End { due: Instant },
    /// The cut's byte count was reached: cut the connection.
    Cut { kind: CutKind, due: Instant },
}

impl Item {
    fn due(&self) -> Instant {
        match self {
            Item::Data { due, .. } | Item::End { due } | Item::Cut { due, .. } => *due,
        }
    }

    fn len(&self) -> usize {
        match self {
            Item::Data { bytes, .. } => bytes.len(),
            _ => 0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    queued: usize,
    aborted: bool,
}

/// The delay line.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    state: Mutex<State>,
    changed: Condvar,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding the lock left it in a
        // consistent state (every update is a single step).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `len` more bytes fit under `limit`; false once the
    /// connection is cut.
    pub(crate) fn wait_for_room(&self, len: usize, limit: usize) -> bool {
        let mut s = self.lock();
        while !s.aborted && s.queued > 0 && s.queued + len > limit {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.aborted
    }

    /// Sleeps until `deadline`; false if the connection is cut first.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        loop {
            if s.aborted {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Appends `item`; records the lane's depth in `counters`.
    pub(crate) fn push(&self, item: Item, counters: &LaneCounters) {
        let mut s = self.lock();
        s.queued += item.len();
        counters
            .peak_queued
            .fetch_max(s.queued as u64, Ordering::Relaxed);
        s.items.push_back(item);
        drop(s);
        self.changed.notify_all();
    }

    /// The next item, once it is due and `stalled_until` (asked again at
    /// each wake-up) has passed; `None` once the connection is cut.
    pub(crate) fn next(&self, stalled_until: impl Fn() -> Option<Instant>) -> Option<Item> {
        let mut s = self.lock();
        loop {
            if s.aborted {
                return None;
            }
            let Some(front) = s.items.front() else {
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let due = match stalled_until() {
                Some(stall) => stall.max(front.due()),
                None => front.due(),
            };
            let now = Instant::now();
            if now >= due {
                let item = s.items.pop_front()?;
                s.queued -= item.len();
                drop(s);
                self.changed.notify_all();
                return Some(item);
            }
            s = self
                .changed
                .wait_timeout(s, due - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Drops what is queued and wakes every wait.
    pub(crate) fn abort(&self) {
        let mut s = self.lock();
        s.aborted = true;
        s.items.clear();
        s.queued = 0;
        drop(s);
        self.changed.notify_all();
    }

    /// Wakes every wait, so a stall's end or a setting is looked at again.
    pub(crate) fn nudge(&self) {
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_leave_in_order_when_due() {
        let lane = Lane::default();
        let c = LaneCounters::default();
        let now = Instant::now();
        lane.push(
            Item::Data {
                bytes: vec![1; 10],
                due: now,
            },
            &c,
        );
        lane.push(
            Item::Data {
                bytes: vec![2; 5],
                due: now + Duration::from_millis(20),
            },
            &c,
        );
        assert_eq!(c.peak_queued.load(Ordering::Relaxed), 15);
        match lane.next(|| None).unwrap() {
            Item::Data { bytes, .. } => assert_eq!(bytes, vec![1; 10]),
            other => panic!("{other:?}"),
        }
        match lane.next(|| None).unwrap() {
            Item::Data { bytes, .. } => assert_eq!(bytes, vec![2; 5]),
            other => panic!("{other:?}"),
        }
        // Not before it was due.
        assert!(Instant::now() >= now + Duration::from_millis(20));
    }

    #[test]
    fn a_stall_holds_items_back() {
        let lane = Lane::default();
        let c = LaneCounters::default();
        let now = Instant::now();
        lane.push(Item::End { due: now }, &c);
        let until = now + Duration::from_millis(30);
        assert!(matches!(lane.next(|| Some(until)), Some(Item::End { .. })));
        assert!(Instant::now() >= until);
    }

    #[test]
    fn room_is_bounded_and_abort_wakes_every_wait() {
        let lane = std::sync::Arc::new(Lane::default());
        let c = LaneCounters::default();
        lane.push(
            Item::Data {
                bytes: vec![0; 100],
                due: Instant::now() + Duration::from_secs(3600),
            },
            &c,
        );
        let waiter = {
            let lane = lane.clone();
            std::thread::spawn(move || lane.wait_for_room(50, 120))
        };
        let sleeper = {
            let lane = lane.clone();
            std::thread::spawn(move || lane.sleep_until(Instant::now() + Duration::from_secs(3600)))
        };
        let reader = {
            let lane = lane.clone();
            std::thread::spawn(move || lane.next(|| None).is_none())
        };
        std::thread::sleep(Duration::from_millis(20));
        lane.abort();
        assert!(!waiter.join().unwrap(), "room refused once cut");
        assert!(!sleeper.join().unwrap());
        assert!(reader.join().unwrap());
        // An empty lane always has room for one chunk, whatever its size.
        let fresh = Lane::default();
        assert!(fresh.wait_for_room(1 << 20, 10));
    }
}
