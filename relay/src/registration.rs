//! Who may register, and how often: the optional allow-list of
//! exec-server keys (re-read when the file changes) and the per-source
//! rate limit on registration attempts (each costs the relay a key
//! exchange).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use proto::admission::Source;
use proto::keys::{AuthorizedKeys, KeyError, PublicKey};

/// The exec-server keys allowed to register, from a file.
#[derive(Debug)]
pub(crate) struct AllowList {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    keys: AuthorizedKeys,
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

/// How often the file's modification time is looked at, at most.
const RECHECK: Duration = Duration::from_millis(500);

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What a re-read found.
#[derive(Debug)]
pub(crate) enum Reload {
    /// The file did not change.
    Unchanged,
    /// The file changed and was read: this many keys now.
    Reloaded(usize),
    /// The file changed but could not be read; the previous list stays.
    Failed(KeyError),
}

impl AllowList {
    /// Reads the list at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, KeyError> {
        let stamp = stamp(path);
        let keys = AuthorizedKeys::read_file(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(Loaded {
                keys,
                stamp,
                checked: Some(Instant::now()),
            }),
        })
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the file if its modification time or size changed (looked
    /// at most every half second unless `force`).
    pub(crate) fn refresh(&self, force: bool) -> Reload {
        let mut state = self.lock();
        if !force && state.checked.is_some_and(|at| at.elapsed() < RECHECK) {
            return Reload::Unchanged;
        }
        state.checked = Some(Instant::now());
        let now = stamp(&self.path);
        if now == state.stamp && now.is_some() {
            return Reload::Unchanged;
        }
        match AuthorizedKeys::read_file(&self.path) {
            Ok(keys) => {
                let n = keys.len();
                state.keys = keys;
                state.stamp = now;
                Reload::Reloaded(n)
            }
            Err(e) => {
                state.stamp = now;
                Reload::Failed(e)
            }
        }
    }

    /// Whether `key` may register (as of the last read).
    pub(crate) fn allows(&self, key: &PublicKey) -> bool {
        self.lock().keys.contains(key)
    }
}

/// A token bucket per source: `rate` attempts a second, `burst` at once.
/// Time is handed in.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<Source, (f64, Instant)>,
}

/// Most sources tracked; full buckets are forgotten first when over it.
const MAX_TRACKED: usize = 16_384;

impl RateLimiter {
    /// A limiter with no history.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes one attempt for `source` at `now`; false if over the rate.
    pub(crate) fn allow(&mut self, source: Source, now: Instant) -> bool {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&source) {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets
                .retain(|_, (tokens, at)| refill(*tokens, *at, now, rate, burst) < burst);
            if self.buckets.len() >= MAX_TRACKED {
                // Everyone tracked is still limited: so is a newcomer.
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(source).or_insert((self.burst, now));
        let filled = refill(*tokens, *at, now, self.rate, self.burst);
        *at = now;
        if filled >= 1.0 {
            *tokens = filled - 1.0;
            true
        } else {
            *tokens = filled;
            false
        }
    }
}

fn refill(tokens: f64, at: Instant, now: Instant, rate: f64, burst: f64) -> f64 {
    (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn rate_limit_per_source() {
        let mut r = RateLimiter::new(2.0, 3.0);
        let a = Source::of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let b = Source::of(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(a, t0)));
        assert!(!r.allow(a, t0));
        assert!(r.allow(b, t0), "another source has its own bucket");
        assert!(r.allow(a, t0 + Duration::from_millis(500)));
        assert!(!r.allow(a, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn the_allow_list_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowed");
        let k1 = proto::keys::StaticKeypair::generate().unwrap().public();
        let k2 = proto::keys::StaticKeypair::generate().unwrap().public();
        std::fs::write(&path, format!("# servers\n{k1} one\n")).unwrap();
        let list = AllowList::open(&path).unwrap();
        assert!(list.allows(&k1));
        assert!(!list.allows(&k2));
        assert!(matches!(list.refresh(true), Reload::Unchanged));
        std::fs::write(&path, format!("{k2}\n{k1}\n")).unwrap();
        assert!(matches!(list.refresh(true), Reload::Reloaded(2)));
        assert!(list.allows(&k2));
        std::fs::write(&path, "not a key with more bytes\n").unwrap();
        assert!(matches!(list.refresh(true), Reload::Failed(_)));
        assert!(list.allows(&k2), "a bad file keeps the previous list");
    }
}
