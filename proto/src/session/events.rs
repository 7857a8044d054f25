//! A machine's events on their way to its caller: the queue, the one event
//! the caller handed back (it comes out first, and until then the machine
//! reads nothing), and the end, reported once and last.

use std::collections::VecDeque;

#[derive(Debug)]
pub(super) struct Events<E> {
    queue: VecDeque<E>,
    deferred: Option<E>,
    ended: bool,
}

impl<E> Default for Events<E> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            deferred: None,
            ended: false,
        }
    }
}

impl<E> Events<E> {
    /// Queues an event (nothing after the end).
    pub(super) fn push(&mut self, event: E) {
        if !self.ended {
            self.queue.push_back(event);
        }
    }

    /// Queues the end: the last event, once.
    pub(super) fn end(&mut self, event: E) {
        if !self.ended {
            self.queue.push_back(event);
            self.ended = true;
        }
    }

    /// Whether the end has been queued.
    pub(super) fn ended(&self) -> bool {
        self.ended
    }

    /// The next event: a handed-back one first.
    pub(super) fn poll(&mut self) -> Option<E> {
        self.deferred.take().or_else(|| self.queue.pop_front())
    }

    /// Takes back an event the caller could not take yet.
    pub(super) fn defer(&mut self, event: E) {
        self.deferred = Some(event);
    }

    /// Whether nothing waits for the caller.
    pub(super) fn is_empty(&self) -> bool {
        self.deferred.is_none() && self.queue.is_empty()
    }
}
