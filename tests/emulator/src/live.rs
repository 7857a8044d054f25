//! What every connection of a running emulator reads: its configuration,
//! the paths as they are changed while it runs, the stalls, and the
//! counters.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Config, Direction, PathSettings};
use crate::stats::Counters;

/// The emulator's live state, shared with its connections.
pub(crate) struct Live {
    pub(crate) config: Config,
    paths: RwLock<[PathSettings; 2]>,
    stalls: Mutex<[Option<Instant>; 2]>,
    pub(crate) counters: Counters,
}

impl Live {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            paths: RwLock::new([config.up, config.down]),
            config,
            stalls: Mutex::new([None, None]),
            counters: Counters::default(),
        }
    }

    pub(crate) fn path(&self, direction: Direction) -> PathSettings {
        self.paths.read().unwrap_or_else(|p| p.into_inner())[direction.index()]
    }

    pub(crate) fn set_path(&self, direction: Direction, path: PathSettings) {
        self.paths.write().unwrap_or_else(|p| p.into_inner())[direction.index()] = path;
    }

    /// Both directions at a round trip of `rtt`, half each way.
    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let mut paths = self.paths.write().unwrap_or_else(|p| p.into_inner());
        paths[0].delay = rtt / 2;
        paths[1].delay = rtt - rtt / 2;
    }

    /// Holds `direction` for `duration` from now.
    pub(crate) fn stall(&self, direction: Direction, duration: Duration) {
        self.stalls.lock().unwrap_or_else(|p| p.into_inner())[direction.index()] =
            Some(Instant::now() + duration);
    }

    pub(crate) fn stalled_until(&self, direction: Direction) -> Option<Instant> {
        let until = self.stalls.lock().unwrap_or_else(|p| p.into_inner())[direction.index()];
        until.filter(|u| *u > Instant::now())
    }
}
