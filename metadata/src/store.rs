//! The embedded store: SQLite in one file, WAL mode, with a schema
//! version. A database made by a newer version of this code is refused,
//! never overwritten.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};

use crate::record::{CommandRecord, Exit, ProcessRecord, Progress, Record, TraceRef};

/// The schema this code writes and reads (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 1;

/// The database file inside a data directory.
pub const FILE_NAME: &str = "metadata.sqlite3";

/// Why the store cannot be used. Every message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file (or its directory) cannot be opened or created.
    #[error("cannot open the metadata database {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a usable database (corrupt, or not SQLite).
    #[error(
        "the metadata database {path} is unreadable ({reason}); move it aside to start a new one"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A newer version of this software made the file.
    #[error(
        "the metadata database {path} has schema version {found}, newer than this program's {supported}; use a newer program or another --data-dir"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// Another process holds the database locked (it is not damaged).
    #[error("the metadata database {path} is locked by another process")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The disk is full, or a quota or the file size limit is reached
    /// (the database is not damaged).
    #[error(
        "the disk holding the metadata database {path} is full (or a quota or file size limit is reached); the database is not damaged"
    )]
    Full {
        /// The file.
        path: PathBuf,
    },
    /// A write failed (read-only, I/O error).
    #[error("writing the metadata database {path} failed: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What SQLite's error code (and, for an I/O error, the system call's
/// error number) says about a failure that is not the database's fault:
/// locked by another process, or no room to write. Decided by the codes,
/// never the message.
fn transient(path: &Path, e: &rusqlite::Error, errno: Option<i32>) -> Option<StoreError> {
    use rusqlite::ErrorCode;
    use std::io::ErrorKind;
    let no_room = || {
        errno.is_some_and(|n| {
            matches!(
                std::io::Error::from_raw_os_error(n).kind(),
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
            )
        })
    };
    match e.sqlite_error_code()? {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Some(StoreError::Locked {
            path: path.to_owned(),
        }),
        ErrorCode::DiskFull => Some(StoreError::Full {
            path: path.to_owned(),
        }),
        // Reading a database in WAL mode writes its shared-memory index
        // (`-shm`): on a full disk even a read fails, as an I/O error.
        ErrorCode::SystemIoFailure | ErrorCode::CannotOpen if no_room() => Some(StoreError::Full {
            path: path.to_owned(),
        }),
        _ => None,
    }
}

/// SQLite's record of one connection's last failed system call. Made and
/// used within one method of [`Store`] (while its connection is open, even
/// when a transaction borrows it), never kept.
#[derive(Debug, Clone, Copy)]
struct OsErrno {
    db: *mut rusqlite::ffi::sqlite3,
}

impl OsErrno {
    #[allow(unsafe_code)]
    fn of(conn: &Connection) -> Self {
        Self {
            // SAFETY: the handle is only passed to `sqlite3_system_errno`
            // (by `get`) while its connection is open (see the type's
            // doc); it is never closed or shared with another thread.
            db: unsafe { conn.handle() },
        }
    }

    /// The error number of the connection's last failed system call.
    #[allow(unsafe_code)]
    fn get(self) -> Option<i32> {
        // SAFETY: `db` is an open connection's handle (see `of`), and
        // `sqlite3_system_errno` only reads a field of it.
        let n = unsafe { rusqlite::ffi::sqlite3_system_errno(self.db) };
        (n != 0).then_some(n)
    }
}

/// How long a statement waits for another process's lock before failing
/// with [`StoreError::Locked`] (the writer retries with backoff; a
/// reader reports it).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    server_id TEXT NOT NULL,
    program TEXT NOT NULL,
    args TEXT,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    started_unix_ms INTEGER NOT NULL,
    first_output_us INTEGER,
    total_us INTEGER,
    progress TEXT NOT NULL,
    exit_kind TEXT,
    exit_value INTEGER,
    exit_message TEXT,
    stdout_bytes INTEGER NOT NULL,
    stderr_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_by_start ON commands (started_unix_ms);
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    client_key TEXT NOT NULL,
    program TEXT NOT NULL,
    pid INTEGER,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    started_unix_ms INTEGER NOT NULL,
    exited_unix_ms INTEGER,
    progress TEXT NOT NULL,
    exit_kind TEXT,
    exit_value INTEGER,
    exit_message TEXT,
    stdout_bytes INTEGER NOT NULL,
    stderr_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS processes_by_start ON processes (started_unix_ms);
";

fn exit_columns(exit: Option<&Exit>) -> (Option<&'static str>, Option<i64>, Option<&str>) {
    match exit {
        None => (None, None, None),
        Some(Exit::Code(c)) => (Some("code"), Some(i64::from(*c)), None),
        Some(Exit::Signal(s)) => (Some("signal"), Some(i64::from(*s)), None),
        Some(Exit::Error(m)) => (Some("error"), None, Some(m.as_str())),
    }
}

fn exit_from(kind: Option<String>, value: Option<i64>, message: Option<String>) -> Option<Exit> {
    let v = || i32::try_from(value.unwrap_or(-1)).unwrap_or(-1);
    match kind.as_deref() {
        Some("code") => Some(Exit::Code(v())),
        Some("signal") => Some(Exit::Signal(v())),
        Some("error") => Some(Exit::Error(message.unwrap_or_default())),
        _ => None,
    }
}

fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

const COMMANDS: &str = "SELECT id, server_id, program, args, trace_id, span_id, \
    started_unix_ms, first_output_us, total_us, progress, exit_kind, exit_value, \
    exit_message, stdout_bytes, stderr_bytes FROM commands";

const PROCESSES: &str = "SELECT id, session, client_key, program, pid, trace_id, span_id, \
    started_unix_ms, exited_unix_ms, progress, exit_kind, exit_value, exit_message, \
    stdout_bytes, stderr_bytes FROM processes";

/// Byte counts are stored as SQLite's signed integers.
fn count(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
}

fn command_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRecord> {
    let args: Option<String> = r.get(3)?;
    Ok(CommandRecord {
        id: r.get(0)?,
        server_id: r.get(1)?,
        program: r.get(2)?,
        args: args.and_then(|a| serde_json::from_str(&a).ok()),
        trace: TraceRef {
            trace_id: r.get(4)?,
            span_id: r.get(5)?,
        },
        started_unix_ms: r.get(6)?,
        first_output_us: r.get(7)?,
        total_us: r.get(8)?,
        progress: Progress::parse(&r.get::<_, String>(9)?),
        exit: exit_from(r.get(10)?, r.get(11)?, r.get(12)?),
        stdout_bytes: count(r, 13)?,
        stderr_bytes: count(r, 14)?,
    })
}

fn process_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProcessRecord> {
    Ok(ProcessRecord {
        id: r.get(0)?,
        session: r.get(1)?,
        client_key: r.get(2)?,
        program: r.get(3)?,
        pid: r.get(4)?,
        trace: TraceRef {
            trace_id: r.get(5)?,
            span_id: r.get(6)?,
        },
        started_unix_ms: r.get(7)?,
        exited_unix_ms: r.get(8)?,
        progress: Progress::parse(&r.get::<_, String>(9)?),
        exit: exit_from(r.get(10)?, r.get(11)?, r.get(12)?),
        stdout_bytes: count(r, 13)?,
        stderr_bytes: count(r, 14)?,
    })
}

/// What a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// A power loss or an OS crash: every commit is fsynced
    /// (`synchronous=FULL`). For services, whose writer is off every path.
    #[default]
    PowerLoss,
    /// The process ending or crashing at any point, but not a power loss,
    /// which may take the last commits back (`synchronous=NORMAL` in WAL
    /// mode: the log is fsynced at checkpoints only). For a short-lived CLI
    /// whose exit waits for its record.
    ProcessCrash,
}

impl Store {
    /// Opens (creating on first use) the database at `path`: WAL mode,
    /// synchronous commits, schema checked.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Durability::PowerLoss)
    }

    /// [`open`](Self::open), with commits as durable as `durability` says.
    pub(crate) fn open_with(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::location::create_private_dir(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| transient(path, &e, None).unwrap_or_else(|| open_err(e.to_string())))?;
        let mut store = Self {
            conn,
            path: path.to_owned(),
        };
        store.prepare(durability)?;
        Ok(store)
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn unreadable(&self, e: rusqlite::Error) -> StoreError {
        let errno = OsErrno::of(&self.conn).get();
        transient(&self.path, &e, errno).unwrap_or_else(|| StoreError::Unreadable {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    fn prepare(&mut self, durability: Durability) -> Result<(), StoreError> {
        // Before any statement (rusqlite's default is five seconds).
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.unreadable(e))?;
        // Any read of a file that is not a database fails here.
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.unreadable(e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| self.unreadable(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::debug!(%mode, "the metadata database is not in WAL mode");
        }
        let synchronous = match durability {
            Durability::PowerLoss => "PRAGMA synchronous=FULL;",
            Durability::ProcessCrash => "PRAGMA synchronous=NORMAL;",
        };
        self.conn
            .execute_batch(synchronous)
            .map_err(|e| self.unreadable(e))?;
        if version < SCHEMA_VERSION {
            let path = self.path.clone();
            let errno = OsErrno::of(&self.conn);
            let write_err = |e: rusqlite::Error| {
                transient(&path, &e, errno.get()).unwrap_or_else(|| StoreError::Write {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            };
            let tx = self.conn.transaction().map_err(write_err)?;
            tx.execute_batch(SCHEMA)
                .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
                .and_then(|()| tx.commit())
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// Writes `records` (latest state of each) in one transaction: all of
    /// them are durable when this returns `Ok`, none of them if it fails.
    pub fn write(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let errno = OsErrno::of(&self.conn);
        let err = |e: rusqlite::Error| {
            transient(&path, &e, errno.get()).unwrap_or_else(|| StoreError::Write {
                path: path.clone(),
                reason: e.to_string(),
            })
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut cmd = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO commands (id, server_id, program, args, trace_id, \
                     span_id, started_unix_ms, first_output_us, total_us, progress, exit_kind, \
                     exit_value, exit_message, stdout_bytes, stderr_bytes) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(err)?;
            let mut proc = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO processes (id, session, client_key, program, pid, \
                     trace_id, span_id, started_unix_ms, exited_unix_ms, progress, exit_kind, \
                     exit_value, exit_message, stdout_bytes, stderr_bytes) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(err)?;
            for r in records {
                match r {
                    Record::Command(c) => {
                        let (kind, value, message) = exit_columns(c.exit.as_ref());
                        let args = c
                            .args
                            .as_ref()
                            .map(|a| serde_json::to_string(a).unwrap_or_default());
                        cmd.execute(params![
                            c.id,
                            c.server_id,
                            c.program,
                            args,
                            c.trace.trace_id,
                            c.trace.span_id,
                            c.started_unix_ms,
                            c.first_output_us,
                            c.total_us,
                            c.progress.as_str(),
                            kind,
                            value,
                            message,
                            bytes(c.stdout_bytes),
                            bytes(c.stderr_bytes),
                        ])
                        .map_err(err)?;
                    }
                    Record::Process(p) => {
                        let (kind, value, message) = exit_columns(p.exit.as_ref());
                        proc.execute(params![
                            p.id,
                            p.session,
                            p.client_key,
                            p.program,
                            p.pid,
                            p.trace.trace_id,
                            p.trace.span_id,
                            p.started_unix_ms,
                            p.exited_unix_ms,
                            p.progress.as_str(),
                            kind,
                            value,
                            message,
                            bytes(p.stdout_bytes),
                            bytes(p.stderr_bytes),
                        ])
                        .map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// The newest `limit` commands, newest first.
    pub fn commands(&self, limit: usize) -> Result<Vec<CommandRecord>, StoreError> {
        let sql = format!("{COMMANDS} ORDER BY started_unix_ms DESC, rowid DESC LIMIT ?1");
        self.query(&sql, sql_limit(limit), command_row)
    }

    /// The newest `limit` commands sent to the exec-servers whose id
    /// starts with `server` (a whole id, or the first digits of one),
    /// newest first.
    pub fn commands_on(
        &self,
        server: &str,
        limit: usize,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let sql = format!(
            "{COMMANDS} WHERE substr(server_id, 1, length(?1)) = ?1 \
             ORDER BY started_unix_ms DESC, rowid DESC LIMIT ?2"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.unreadable(e))?;
        let rows = stmt
            .query_map(rusqlite::params![server, sql_limit(limit)], command_row)
            .map_err(|e| self.unreadable(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.unreadable(e))
    }

    /// One command by id.
    #[cfg(test)]
    fn command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let sql = format!("{COMMANDS} WHERE id = ?1");
        Ok(self.query(&sql, id, command_row)?.pop())
    }

    /// The newest `limit` processes, newest first.
    pub fn processes(&self, limit: usize) -> Result<Vec<ProcessRecord>, StoreError> {
        let sql = format!("{PROCESSES} ORDER BY started_unix_ms DESC, rowid DESC LIMIT ?1");
        self.query(&sql, sql_limit(limit), process_row)
    }

    /// Runs `sql` with its one parameter and maps each row.
    fn query<T>(
        &self,
        sql: &str,
        param: impl rusqlite::ToSql,
        map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.unreadable(e))?;
        let rows = stmt
            .query_map([param], map)
            .map_err(|e| self.unreadable(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.unreadable(e))
    }

    /// The schema version stored in the file.
    #[cfg(test)]
    fn schema_version(&self) -> Result<i64, StoreError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.unreadable(e))
            .map(|v| v.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_and_full_are_told_from_corrupt_by_error_code() {
        let path = Path::new("/x/db");
        let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        assert_eq!(
            transient(path, &failure(rusqlite::ffi::SQLITE_BUSY), None),
            Some(StoreError::Locked { path: path.into() })
        );
        assert_eq!(
            transient(path, &failure(rusqlite::ffi::SQLITE_FULL), None),
            Some(StoreError::Full { path: path.into() })
        );
        assert_eq!(
            transient(path, &failure(rusqlite::ffi::SQLITE_CORRUPT), None),
            None
        );
        assert_eq!(
            transient(path, &failure(rusqlite::ffi::SQLITE_NOTADB), None),
            None
        );
        // An I/O error is no room to write when its system call said so
        // (ENOSPC, EDQUOT, EFBIG), and damage otherwise.
        let full = Some(StoreError::Full { path: path.into() });
        for errno in [28, 122, 27] {
            assert_eq!(
                transient(
                    path,
                    &failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE),
                    Some(errno)
                ),
                full,
                "errno {errno}"
            );
        }
        assert_eq!(
            transient(path, &failure(rusqlite::ffi::SQLITE_IOERR_READ), Some(5)),
            None
        );
        assert_eq!(
            transient(path, &failure(rusqlite::ffi::SQLITE_CORRUPT), Some(28)),
            None
        );
        // A database another process holds is locked, not unreadable.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        drop(Store::open(&db).unwrap());
        let holder = Connection::open(&db).unwrap();
        holder
            .execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;")
            .unwrap();
        let err = Store::open(&db).unwrap_err();
        assert_eq!(err, StoreError::Locked { path: db.clone() }, "{err}");
    }
    use crate::record::{Record, new_id};

    pub(crate) fn command(id: &str, progress: Progress) -> CommandRecord {
        CommandRecord {
            id: id.into(),
            server_id: "srv".into(),
            program: "sh".into(),
            args: None,
            trace: TraceRef {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            },
            started_unix_ms: 1_000,
            first_output_us: None,
            total_us: None,
            progress,
            exit: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
        }
    }

    #[test]
    fn commands_by_server_id_or_its_first_digits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db.sqlite3")).unwrap();
        let on = |id: &str, server: &str, at: i64| {
            let mut c = command(id, Progress::Finished);
            c.server_id = server.into();
            c.started_unix_ms = at;
            Record::Command(c)
        };
        store
            .write(&[
                on("a", "729d6f42aa", 1),
                on("b", "0000ffff00", 2),
                on("c", "729d6f42aa", 3),
                on("d", "729d0000bb", 4),
            ])
            .unwrap();
        let ids = |rows: Vec<CommandRecord>| rows.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.commands_on("729d6f42aa", 10).unwrap()),
            ["c", "a"]
        );
        assert_eq!(ids(store.commands_on("729d6f42", 1).unwrap()), ["c"]);
        assert_eq!(ids(store.commands_on("729d", 10).unwrap()), ["d", "c", "a"]);
        assert!(store.commands_on("abcd", 10).unwrap().is_empty());
    }

    #[test]
    fn records_round_trip_and_the_latest_state_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/db.sqlite3");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mut c = command("a", Progress::Dispatched);
        store.write(&[Record::Command(c.clone())]).unwrap();
        c.progress = Progress::Finished;
        c.exit = Some(Exit::Signal(9));
        c.args = Some(vec!["-c".into(), "x y".into()]);
        c.total_us = Some(1234);
        c.stdout_bytes = 5;
        let mut later = command("b", Progress::Finished);
        later.started_unix_ms = 2_000;
        later.exit = Some(Exit::Error("no such program".into()));
        store
            .write(&[Record::Command(c.clone()), Record::Command(later.clone())])
            .unwrap();
        let got = store.commands(10).unwrap();
        assert_eq!(
            got,
            vec![later, c.clone()],
            "newest first, updated in place"
        );
        assert_eq!(store.commands(1).unwrap().len(), 1);
        assert_eq!(store.command("a").unwrap(), Some(c));

        let p = ProcessRecord {
            id: new_id(),
            session: "s".into(),
            client_key: "key".into(),
            program: "true".into(),
            pid: Some(42),
            trace: TraceRef::default(),
            started_unix_ms: 5,
            exited_unix_ms: Some(6),
            progress: Progress::Finished,
            exit: Some(Exit::Code(0)),
            stdout_bytes: 1,
            stderr_bytes: 2,
        };
        store.write(&[Record::Process(p.clone())]).unwrap();
        assert_eq!(store.processes(5).unwrap(), vec![p]);
        // Reopening keeps everything and the schema.
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.commands(10).unwrap().len(), 2);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 7;")
                .unwrap();
        }
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { found: 7, .. }));
        let text = err.to_string();
        assert!(text.contains("db.sqlite3") && text.contains('7'), "{text}");
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 7, "not overwritten");
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'commands'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.sqlite3");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains("junk.sqlite3"), "{err}");
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        // Root ignores directory permissions; nothing to check then.
        if std::fs::write(ro.join("probe"), b"x").is_ok() {
            return;
        }
        let err = Store::open(&ro.join("db.sqlite3")).unwrap_err();
        assert!(err.to_string().contains("db.sqlite3"), "{err}");
    }
}
