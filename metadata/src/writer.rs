//! The background writer and its flush barriers.
//!
//! [`Persister::record`] never waits for the disk: it puts the record's
//! latest state in a map keyed by command (so a command's later states
//! replace its earlier ones, whatever the writer is doing) and wakes the
//! writer thread, which commits everything pending in one transaction.
//! Every record gets a sequence number; after a commit, every record
//! accepted up to the number read when the batch was taken is durable.
//! Commits are grouped: the writer waits a moment (`group_commit`) for more
//! records before committing, unless a barrier waits.
//!
//! [`Persister::flush`] is the barrier: it returns `Ok` once everything
//! accepted before the call is committed, or the error of a write attempt
//! made after the call that left such work uncommitted. A failed batch stays
//! pending and is retried with backoff (at once when a barrier waits); the
//! failure is logged once per run of failures and reported by the barriers
//! that find it unresolved. Records refused because the map was full (only
//! when the writer has been failing or stalled for a long time) are counted
//! and reported by the next barrier, never dropped silently.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Link, Span, SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState, Tracer,
};
use telemetry::spans;

use crate::record::{Key, Record, TraceRef};
use crate::store::{Store, StoreError};

/// Settings of a [`Persister`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriterConfig {
    /// Most commands waiting to be written; beyond it, new commands are
    /// refused and counted (a known command's update is always taken).
    max_pending: usize,
    /// First retry delay after a failed write (doubles up to `retry_max`).
    retry_min: Duration,
    /// Longest retry delay.
    retry_max: Duration,
    /// The service whose spans `metadata.persist`/`metadata.flush` are.
    pub service: &'static str,
    /// Group commit: after the first record of a batch arrives, wait this
    /// long for more before committing (a barrier cuts the wait short), so
    /// the commands' state changes share fsyncs. Zero for a process of one
    /// command: each state is written as it comes, so that the last one is
    /// mostly written by the time the process waits for it.
    pub group_commit: Duration,
    /// Log a warning when writes start failing. Off where the caller
    /// reports the barrier's error itself (one line, not two).
    pub log_failures: bool,
    /// What a commit survives (the store opened in the background).
    pub durability: crate::store::Durability,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_pending: 65_536,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            service: "metadata",
            group_commit: Duration::from_millis(20),
            log_failures: true,
            durability: crate::store::Durability::PowerLoss,
        }
    }
}

/// Why a barrier could not confirm durability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The database could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Records were refused because too many were waiting.
    #[error(
        "{count} command record(s) were not kept: the metadata writer fell too far behind (writing {path})"
    )]
    Dropped {
        /// How many.
        count: u64,
        /// The database file.
        path: PathBuf,
    },
    /// The barrier's time ran out first.
    #[error("the metadata database {path} did not confirm the records within {waited:?}")]
    Timeout {
        /// The database file.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
    },
    /// The writer has stopped.
    #[error("the metadata writer for {0} has stopped")]
    Stopped(PathBuf),
}

/// Test hooks: make writes fail or stall the writer.
#[derive(Debug, Default)]
pub struct Faults {
    fail_next: AtomicUsize,
    stalled: AtomicBool,
    gate: Mutex<()>,
    resumed: Condvar,
}

impl Faults {
    /// Fails the next `n` write attempts (before touching the database).
    #[cfg(test)]
    fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Holds the writer before its next write until [`Faults::resume`].
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Lets a stalled writer go on.
    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        let _g = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.resumed.notify_all();
    }

    fn wait_while_stalled(&self) {
        let mut g = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        while self.stalled.load(Ordering::SeqCst) {
            g = self
                .resumed
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn take_failure(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

struct Pending {
    record: Record,
}

#[derive(Default)]
struct State {
    pending: HashMap<Key, Pending>,
    /// The last sequence number given out.
    accepted: u64,
    /// Every record accepted up to this number is committed.
    durable: u64,
    /// Write attempts started / finished.
    attempts_started: u64,
    attempts_finished: u64,
    /// The last attempt's failure, until an attempt succeeds.
    failure: Option<StoreError>,
    /// Records refused since the last barrier.
    dropped: u64,
    /// A barrier waits: write now rather than after the retry delay.
    urgent: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer (new work, a barrier, stop).
    work: Condvar,
    /// Wakes barriers (an attempt finished).
    done: Condvar,
    path: PathBuf,
    config: WriterConfig,
    faults: Arc<Faults>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Persists records off the hot path; cheap to clone. The writer thread
/// (and with it the database) starts with the first record: a process
/// that ends up recording nothing never opens the database.
#[derive(Clone)]
pub struct Persister {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Writer>>,
}

/// The writer thread's state.
enum Writer {
    /// Not started: no record yet (and the store, if opened already).
    Idle(Option<Store>),
    /// Started.
    Running(JoinHandle<()>),
    /// Joined, or it could not be started.
    Gone,
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persister")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

fn link_for(trace: &TraceRef) -> Option<Link> {
    let sc = SpanContext::new(
        TraceId::from_hex(&trace.trace_id).ok()?,
        SpanId::from_hex(&trace.span_id).ok()?,
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    sc.is_valid().then(|| Link::with_context(sc))
}

/// Links to the traces of up to `max` records.
fn links<'a>(records: impl Iterator<Item = &'a Record>, max: usize) -> Vec<Link> {
    records
        .filter_map(|r| link_for(r.trace()))
        .take(max)
        .collect()
}

/// Most links one persistence span carries.
const MAX_LINKS: usize = 32;

impl Persister {
    /// A writer for `store` (its thread starts with the first record).
    pub(crate) fn start(store: Store, config: WriterConfig) -> Self {
        let path = store.path().to_owned();
        Self::spawn(path, Some(store), config)
    }

    /// A writer for the database at `path`, which its thread (started with
    /// the first record) opens itself: nothing here waits for the disk or
    /// for another process's lock. A database that cannot be opened is retried like a
    /// failed write, and reported by the barriers.
    pub(crate) fn start_opening(path: PathBuf, config: WriterConfig) -> Self {
        Self::spawn(path, None, config)
    }

    fn spawn(path: PathBuf, store: Option<Store>, config: WriterConfig) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            path,
            config,
            faults: Arc::new(Faults::default()),
        });
        Self {
            shared,
            thread: Arc::new(Mutex::new(Writer::Idle(store))),
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.thread.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the writer thread if it has not started.
    fn ensure_started(&self) {
        let mut writer = self.writer();
        let Writer::Idle(store) = &mut *writer else {
            return;
        };
        let store = store.take();
        let shared = Arc::clone(&self.shared);
        *writer = match std::thread::Builder::new()
            .name("metadata-writer".into())
            .spawn(move || run(&shared, store))
        {
            Ok(handle) => Writer::Running(handle),
            Err(_) => {
                self.shared.lock().stop = true;
                self.shared.done.notify_all();
                Writer::Gone
            }
        };
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.shared.path
    }

    /// The test hooks.
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.shared.faults)
    }

    /// Accepts a record's latest state. Never waits for the disk.
    pub fn record(&self, record: Record) {
        let key = record.key();
        let mut s = self.shared.lock();
        if !s.pending.contains_key(&key) && s.pending.len() >= self.shared.config.max_pending {
            s.dropped += 1;
            return;
        }
        s.accepted += 1;
        // Only the first record of a batch wakes the writer; later ones
        // join the batch it is gathering (no wake-up per record).
        let wake = s.pending.is_empty();
        s.pending.insert(key, Pending { record });
        drop(s);
        if wake {
            self.ensure_started();
            self.shared.work.notify_one();
        }
    }

    /// Whether any record was ever offered (accepted or dropped): when
    /// none was, a barrier has nothing to wait for.
    pub fn offered(&self) -> bool {
        let s = self.shared.lock();
        s.accepted > 0 || s.dropped > 0
    }

    /// Waits until everything accepted before this call is committed
    /// (see the module docs). Blocking.
    pub fn flush(&self) -> Result<(), PersistError> {
        self.flush_within(Duration::MAX)
    }

    /// [`flush`](Self::flush), giving up after `limit`.
    pub fn flush_within(&self, limit: Duration) -> Result<(), PersistError> {
        let tracer = opentelemetry::global::tracer(self.shared.config.service);
        let started = Instant::now();
        let mut s = self.shared.lock();
        let target = s.accepted;
        let from_attempt = s.attempts_started;
        let waiting = s.pending.len();
        let mut span = tracer
            .span_builder(spans::METADATA_FLUSH)
            .with_links(links(s.pending.values().map(|p| &p.record), MAX_LINKS))
            .with_attributes(vec![KeyValue::new(
                "rex.records",
                i64::try_from(waiting).unwrap_or(i64::MAX),
            )])
            .start(&tracer);
        let result = loop {
            if s.dropped > 0 {
                let count = std::mem::take(&mut s.dropped);
                break Err(PersistError::Dropped {
                    count,
                    path: self.shared.path.clone(),
                });
            }
            if s.durable >= target {
                break Ok(());
            }
            // An attempt that began after this barrier failed (the last
            // finished one; attempts run one after another). The next may
            // be under way already, started at once because this barrier
            // waits: waiting for it too would wait as long as every retry
            // starts before this thread looks.
            if s.attempts_finished > from_attempt
                && let Some(e) = &s.failure
            {
                break Err(PersistError::Store(e.clone()));
            }
            if s.stop {
                break Err(PersistError::Stopped(self.shared.path.clone()));
            }
            s.urgent = true;
            self.shared.work.notify_one();
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                break Err(PersistError::Timeout {
                    path: self.shared.path.clone(),
                    waited: limit,
                });
            }
            s = self
                .shared
                .done
                .wait_timeout(s, left.min(Duration::from_secs(3600)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(s);
        if let Err(e) = &result {
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
        result
    }

    /// Flushes (within `limit`) and stops the writer. Other clones can no
    /// longer flush afterwards.
    pub fn shutdown(&self, limit: Duration) -> Result<(), PersistError> {
        let result = self.finish(limit);
        // A writer stuck in a write is not waited for.
        if result.is_ok() {
            let mut writer = self.writer();
            if let Writer::Running(t) = std::mem::replace(&mut *writer, Writer::Gone) {
                let _ = t.join();
            }
        }
        result
    }

    /// The barrier, then the writer is told to stop, without waiting for
    /// it to close the database (which may checkpoint it): for a process
    /// about to exit, whose records are written once this returns `Ok`.
    pub fn finish(&self, limit: Duration) -> Result<(), PersistError> {
        let result = self.flush_within(limit);
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        self.shared.done.notify_all();
        result
    }
}

/// The writer thread.
fn run(shared: &Shared, mut store: Option<Store>) {
    let mut delay = shared.config.retry_min;
    let mut warned = false;
    // Opened at once, so that the first barrier finds it open; a store
    // that cannot be opened yet is tried again with the first write.
    if store.is_none() {
        store = Store::open_with(&shared.path, shared.config.durability).ok();
    }
    loop {
        let mut s = shared.lock();
        loop {
            if s.stop && (s.pending.is_empty() || s.failure.is_some()) {
                drop(s);
                shared.done.notify_all();
                return;
            }
            if !s.pending.is_empty() && (s.failure.is_none() || s.urgent) {
                break;
            }
            let wait = if s.failure.is_some() && !s.pending.is_empty() {
                delay
            } else {
                Duration::from_secs(3600)
            };
            let (next, timeout) = shared
                .work
                .wait_timeout(s, wait)
                .unwrap_or_else(PoisonError::into_inner);
            s = next;
            if timeout.timed_out() && !s.pending.is_empty() {
                break;
            }
        }
        // Group commit: gather what arrives shortly after, unless a barrier
        // (or shutdown) waits.
        let deadline = Instant::now() + shared.config.group_commit;
        while !s.urgent && !s.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = shared
                .work
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(s);
        shared.faults.wait_while_stalled();
        let mut s = shared.lock();
        s.urgent = false;
        s.attempts_started += 1;
        let upto = s.accepted;
        let batch = std::mem::take(&mut s.pending);
        drop(s);

        let records: Vec<Record> = batch.values().map(|p| p.record.clone()).collect();
        // Taken per batch: telemetry may be set up after the writer starts.
        let tracer = opentelemetry::global::tracer(shared.config.service);
        let mut span = tracer
            .span_builder(spans::METADATA_PERSIST)
            .with_links(links(records.iter(), MAX_LINKS))
            .with_attributes(vec![KeyValue::new(
                "rex.records",
                i64::try_from(records.len()).unwrap_or(i64::MAX),
            )])
            .start(&tracer);
        let result = if shared.faults.take_failure() {
            Err(StoreError::Write {
                path: shared.path.clone(),
                reason: "injected failure".into(),
            })
        } else {
            // A store not open yet is opened as part of the attempt.
            let opened = match store.take() {
                Some(s) => Ok(s),
                None => Store::open_with(&shared.path, shared.config.durability),
            };
            opened.and_then(|s| store.insert(s).write(&records))
        };
        if let Err(e) = &result {
            span.set_status(Status::error(e.to_string()));
        }
        span.end();

        let mut s = shared.lock();
        s.attempts_finished += 1;
        match result {
            Ok(()) => {
                s.durable = s.durable.max(upto);
                s.failure = None;
                delay = shared.config.retry_min;
                warned = false;
            }
            Err(e) => {
                // Keep the batch; a newer state of the same command wins.
                for (key, p) in batch {
                    s.pending.entry(key).or_insert(p);
                }
                if !warned && shared.config.log_failures {
                    tracing::warn!(error = %e, "metadata records are not being saved; retrying");
                    warned = true;
                }
                s.failure = Some(e);
                delay = (delay * 2).min(shared.config.retry_max);
            }
        }
        drop(s);
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CommandRecord, Progress, TraceRef};

    fn cmd(id: &str, progress: Progress) -> Record {
        Record::Command(CommandRecord {
            id: id.into(),
            server_id: "srv".into(),
            program: "sh".into(),
            args: None,
            trace: TraceRef::default(),
            started_unix_ms: 1,
            first_output_us: None,
            total_us: None,
            progress,
            exit: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
        })
    }

    fn open(dir: &tempfile::TempDir) -> (Persister, PathBuf) {
        let path = dir.path().join("db.sqlite3");
        let p = Persister::start(Store::open(&path).unwrap(), WriterConfig::default());
        (p, path)
    }

    fn stored(path: &std::path::Path) -> Vec<(String, Progress)> {
        let mut v: Vec<(String, Progress)> = Store::open(path)
            .unwrap()
            .commands(1000)
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.progress))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn a_locked_database_is_opened_in_the_background_and_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        drop(Store::open(&path).unwrap());
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder
            .execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;")
            .unwrap();
        let config = WriterConfig {
            log_failures: false,
            ..WriterConfig::default()
        };
        // Starting and recording never wait for the database.
        let p = Persister::start_opening(path.clone(), config);
        p.record(cmd("a", Progress::Dispatched));
        // The first attempt fails while the command runs; the barrier at
        // its end finds the writer waiting to retry.
        std::thread::sleep(Duration::from_millis(300));
        p.record(cmd("a", Progress::Finished));
        assert_eq!(
            p.flush_within(Duration::from_secs(30)),
            Err(PersistError::Store(StoreError::Locked {
                path: path.clone()
            }))
        );
        holder.execute_batch("COMMIT;").unwrap();
        drop(holder);
        p.flush_within(Duration::from_secs(30)).unwrap();
        assert_eq!(stored(&path), vec![("a".into(), Progress::Finished)]);
    }

    #[test]
    fn a_barrier_makes_earlier_records_durable_with_their_latest_state() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path) = open(&dir);
        p.record(cmd("a", Progress::Dispatched));
        p.record(cmd("b", Progress::Dispatched));
        p.record(cmd("a", Progress::Finished));
        p.flush().unwrap();
        assert_eq!(
            stored(&path),
            vec![
                ("a".into(), Progress::Finished),
                ("b".into(), Progress::Dispatched)
            ]
        );
    }

    #[test]
    fn with_no_group_commit_a_record_is_written_without_a_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let p = Persister::start(
            Store::open(&path).unwrap(),
            WriterConfig {
                group_commit: Duration::ZERO,
                ..WriterConfig::default()
            },
        );
        // The batch is not held for company: it is written with nothing
        // else offered and no barrier (bounded, however slow the disk).
        p.record(cmd("a", Progress::Finished));
        let deadline = Instant::now() + Duration::from_secs(30);
        while stored(&path).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stored(&path), vec![("a".into(), Progress::Finished)]);
    }

    #[test]
    fn a_barrier_waits_only_for_work_accepted_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path) = open(&dir);
        p.record(cmd("early", Progress::Finished));
        p.flush().unwrap();
        // The writer is stalled: work accepted after this barrier's target
        // is already durable must not hold the barrier up.
        p.faults().stall();
        let done = std::thread::scope(|scope| {
            let h = scope.spawn(|| p.flush_within(Duration::from_secs(5)));
            std::thread::sleep(Duration::from_millis(50));
            p.record(cmd("late", Progress::Dispatched));
            h.join().unwrap()
        });
        assert_eq!(done, Ok(()));
        // A barrier for the stalled work waits for it.
        let err = p.flush_within(Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, PersistError::Timeout { .. }), "{err}");
        // And once the writer runs, a barrier returns although new work
        // keeps arriving after it.
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    p.record(cmd(&format!("stream{}", i % 50), Progress::Running));
                    i += 1;
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            p.faults().resume();
            let r = p.flush_within(Duration::from_secs(10));
            stop.store(true, Ordering::SeqCst);
            assert_eq!(r, Ok(()));
        });
        assert!(stored(&path).iter().any(|(id, _)| id == "late"));
    }

    #[test]
    fn an_injected_failure_is_reported_by_the_next_barrier_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path) = open(&dir);
        p.faults().fail_next(1);
        p.record(cmd("a", Progress::Finished));
        let err = p.flush().unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(err.to_string().contains("db.sqlite3"), "{err}");
        assert!(stored(&path).is_empty(), "nothing was committed");
        // Kept and retried: the next barrier sees it committed.
        p.flush().unwrap();
        assert_eq!(stored(&path), vec![("a".into(), Progress::Finished)]);
    }

    #[test]
    fn a_failed_batch_does_not_overwrite_newer_states() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path) = open(&dir);
        p.faults().fail_next(2);
        p.record(cmd("a", Progress::Dispatched));
        assert!(p.flush().is_err());
        p.record(cmd("a", Progress::Finished));
        assert!(p.flush().is_err());
        p.flush().unwrap();
        assert_eq!(stored(&path), vec![("a".into(), Progress::Finished)]);
    }

    #[test]
    fn ordering_later_states_win_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path) = open(&dir);
        for i in 0..200usize {
            let progress = if i.is_multiple_of(2) {
                Progress::Running
            } else {
                Progress::Finished
            };
            p.record(cmd(&format!("c{}", i % 10), progress));
        }
        p.flush().unwrap();
        let got = stored(&path);
        assert_eq!(got.len(), 10);
        // The last state given for each key was from the final round (i in 190..200).
        for (id, progress) in got {
            let n: usize = id[1..].parse().unwrap();
            let expected = if (190 + n).is_multiple_of(2) {
                Progress::Running
            } else {
                Progress::Finished
            };
            assert_eq!(progress, expected, "{id}");
        }
    }

    #[test]
    fn overflow_is_counted_and_reported_never_silent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let p = Persister::start(
            Store::open(&path).unwrap(),
            WriterConfig {
                max_pending: 2,
                ..WriterConfig::default()
            },
        );
        p.faults().stall();
        p.record(cmd("a", Progress::Dispatched));
        p.record(cmd("b", Progress::Dispatched));
        p.record(cmd("c", Progress::Dispatched)); // refused
        p.record(cmd("a", Progress::Finished)); // an update is always taken
        p.faults().resume();
        let err = p.flush().unwrap_err();
        assert!(
            matches!(err, PersistError::Dropped { count: 1, .. }),
            "{err}"
        );
        p.flush().unwrap();
        assert_eq!(
            stored(&path),
            vec![
                ("a".into(), Progress::Finished),
                ("b".into(), Progress::Dispatched)
            ]
        );
    }

    #[test]
    fn batches_and_barriers_are_spans_linked_to_their_records() {
        use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider);
        let dir = tempfile::tempdir().unwrap();
        let (p, _path) = open(&dir);
        p.faults().stall();
        let trace = TraceRef {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
        };
        let Record::Command(mut c) = cmd("traced", Progress::Finished) else {
            unreachable!()
        };
        c.trace = trace.clone();
        p.record(Record::Command(c));
        std::thread::scope(|scope| {
            let h = scope.spawn(|| p.flush());
            std::thread::sleep(Duration::from_millis(50));
            p.faults().resume();
            h.join().unwrap().unwrap();
        });
        let spans = exporter.get_finished_spans().unwrap();
        for name in [spans::METADATA_PERSIST, spans::METADATA_FLUSH] {
            let s = spans
                .iter()
                .find(|s| {
                    s.name == name
                        && s.links.iter().any(|l| {
                            l.span_context.trace_id().to_string() == trace.trace_id
                                && l.span_context.span_id().to_string() == trace.span_id
                        })
                })
                .unwrap_or_else(|| panic!("no {name} linked to the record's span"));
            // Linked, never a child on the command's critical path.
            assert_eq!(s.parent_span_id, opentelemetry::trace::SpanId::INVALID);
            assert_ne!(s.span_context.trace_id().to_string(), trace.trace_id);
        }
    }

    #[test]
    fn shutdown_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path) = open(&dir);
        p.record(cmd("a", Progress::Finished));
        p.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(stored(&path), vec![("a".into(), Progress::Finished)]);
        // Nothing new: nothing to wait for. New work cannot be made durable.
        assert_eq!(p.flush(), Ok(()));
        p.record(cmd("b", Progress::Finished));
        assert!(matches!(p.flush(), Err(PersistError::Stopped(_))));
    }

    #[test]
    fn record_never_waits_for_a_stalled_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path) = open(&dir);
        p.faults().stall();
        let started = Instant::now();
        for i in 0..10_000 {
            p.record(cmd(&format!("x{}", i % 100), Progress::Running));
        }
        // Nothing here touched the disk; generous bound for a slow machine.
        assert!(started.elapsed() < Duration::from_secs(5));
        p.faults().resume();
        p.flush().unwrap();
        assert_eq!(stored(&path).len(), 100);
    }

    #[test]
    fn a_writer_given_no_record_starts_no_thread_and_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.sqlite3");
        let p = Persister::start_opening(path.clone(), WriterConfig::default());
        p.flush_within(Duration::from_secs(5)).unwrap();
        assert!(matches!(*p.writer(), Writer::Idle(_)));
        p.shutdown(Duration::from_secs(5)).unwrap();
        assert!(
            !path.exists(),
            "nothing recorded, yet the database was made"
        );

        // The first record starts it.
        let p = Persister::start_opening(path.clone(), WriterConfig::default());
        p.record(cmd("a", Progress::Dispatched));
        assert!(matches!(*p.writer(), Writer::Running(_)));
        p.shutdown(Duration::from_secs(30)).unwrap();
        assert_eq!(stored(&path), vec![("a".into(), Progress::Dispatched)]);
    }
}
