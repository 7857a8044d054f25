//! The records the crash test's writer (`metadata-crash-writer`) writes:
//! every field derived from the record's number, so the test can tell an
//! intact record from a torn one.

use metadata::{CommandRecord, Exit, Progress, TraceRef};

fn small(i: u64, m: u64) -> i32 {
    i32::try_from(i % m).unwrap_or(0)
}

fn signed(i: u64) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// Record `i` in its final state.
pub fn record(i: u64) -> CommandRecord {
    CommandRecord {
        id: format!("{i:08}"),
        server_id: format!("server{}", i % 3),
        program: format!("prog{i}"),
        args: i
            .is_multiple_of(2)
            .then(|| vec![format!("arg{i}"), "two words".into(), String::new()]),
        trace: TraceRef {
            trace_id: format!("{:032x}", i + 1),
            span_id: format!("{:016x}", i * 2 + 1),
        },
        started_unix_ms: 1_700_000_000_000 + signed(i),
        first_output_us: (!i.is_multiple_of(4)).then(|| signed(i * 3)),
        total_us: Some(signed(i * 11)),
        progress: Progress::Finished,
        exit: Some(match i % 4 {
            0 | 1 => Exit::Code(small(i, 256)),
            2 => Exit::Signal(small(i, 32)),
            _ => Exit::Error(format!("prog{i}: could not run")),
        }),
        stdout_bytes: i * 7,
        stderr_bytes: i * 13,
    }
}

/// Record `i` in an earlier state, replaced later by [`record`].
pub fn earlier(i: u64) -> CommandRecord {
    CommandRecord {
        first_output_us: None,
        total_us: None,
        progress: Progress::Running,
        exit: None,
        stdout_bytes: i,
        stderr_bytes: 0,
        ..record(i)
    }
}
