//! The servers whose entry in the store is not yet what this relay's
//! registrations say, in the order they changed: the oldest is written
//! first, so that under a steady inflow of registrations none waits behind
//! the newer ones.

use std::collections::{HashSet, VecDeque};

/// Server ids to write, each once, oldest first.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    order: VecDeque<String>,
    queued: HashSet<String>,
}

impl Dirty {
    /// Queues `id` (a change to an id already queued keeps its place).
    pub(super) fn insert(&mut self, id: String) {
        if self.queued.insert(id.clone()) {
            self.order.push_back(id);
        }
    }

    /// Takes the oldest.
    pub(super) fn pop(&mut self) -> Option<String> {
        let id = self.order.pop_front()?;
        self.queued.remove(&id);
        Some(id)
    }

    /// Puts back an id whose write failed: the first to be tried again.
    pub(super) fn retry(&mut self, id: String) {
        if self.queued.insert(id.clone()) {
            self.order.push_front(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dirty;

    #[test]
    fn the_oldest_change_is_written_first_and_each_id_once() {
        let mut dirty = Dirty::default();
        for id in ["c", "a", "b", "a", "c"] {
            dirty.insert(id.to_owned());
        }
        assert_eq!(dirty.pop().as_deref(), Some("c"));
        dirty.retry("c".to_owned());
        dirty.insert("d".to_owned());
        let rest: Vec<String> = std::iter::from_fn(|| dirty.pop()).collect();
        assert_eq!(rest, ["c", "a", "b", "d"]);
    }
}
