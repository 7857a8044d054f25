//! The client's command records: one per dispatched command, written again
//! (off the hot path) when it starts running, when its first output
//! arrives, and when it ends.

use std::time::Instant;

use metadata::{CommandRecord, Exit, Persister, Progress, Record, TraceRef};
use opentelemetry::trace::SpanContext;

use crate::exec::{ExecFailure, ExitStatus};

/// The program a login shell's record names until the exec-server says
/// which shell it started.
pub(crate) const LOGIN_SHELL: &str = "(login shell)";

/// A command's record and where it goes.
#[derive(Debug)]
pub(crate) struct CallRecord {
    store: Persister,
    record: CommandRecord,
    started: Instant,
}

fn micros(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_micros()).unwrap_or(i64::MAX)
}

impl CallRecord {
    /// Records a dispatched command (its arguments only when `args` is
    /// given).
    pub(crate) fn dispatched(
        store: &Persister,
        server_id: String,
        program: String,
        args: Option<Vec<String>>,
        dispatch: &SpanContext,
    ) -> Self {
        let record = CommandRecord {
            id: metadata::record::new_id(),
            server_id,
            program,
            args,
            trace: if dispatch.is_valid() {
                TraceRef {
                    trace_id: dispatch.trace_id().to_string(),
                    span_id: dispatch.span_id().to_string(),
                }
            } else {
                TraceRef::default()
            },
            started_unix_ms: metadata::record::now_unix_ms(),
            first_output_us: None,
            total_us: None,
            progress: Progress::Dispatched,
            exit: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
        };
        store.record(Record::Command(record.clone()));
        Self {
            store: store.clone(),
            record,
            started: Instant::now(),
        }
    }

    /// The process started; `program` names a login shell the
    /// exec-server chose.
    pub(crate) fn running(&mut self, program: Option<&str>) {
        self.record.progress = Progress::Running;
        if let Some(p) = program {
            p.clone_into(&mut self.record.program);
        }
        self.save();
    }

    /// The first output byte reached the caller.
    pub(crate) fn first_output(&mut self) {
        self.record.first_output_us = Some(micros(self.started));
        self.save();
    }

    /// The command ended (`Err` when it could not run or was cut off).
    pub(crate) fn finished(&mut self, end: Result<ExitStatus, &ExecFailure>, out: u64, err: u64) {
        self.record.progress = Progress::Finished;
        self.record.total_us = Some(micros(self.started));
        self.record.exit = Some(match end {
            Ok(ExitStatus::Code(c)) => Exit::Code(c),
            Ok(ExitStatus::Signal(s)) => Exit::Signal(s),
            Err(f) => Exit::Error(f.to_string()),
        });
        self.record.stdout_bytes = out;
        self.record.stderr_bytes = err;
        self.save();
    }

    /// The command could not be dispatched at all.
    pub(crate) fn failed(&mut self, reason: &str) {
        self.record.progress = Progress::Finished;
        self.record.total_us = Some(micros(self.started));
        self.record.exit = Some(Exit::Error(reason.to_owned()));
        self.save();
    }

    fn save(&self) {
        self.store.record(Record::Command(self.record.clone()));
    }
}
