//! `metadata-crash-writer DIR [FIRST]`: writes command records to the
//! metadata store in `DIR` forever, for the crash test in
//! `tests/metadata.rs`, which kills it with SIGKILL at random points.
//!
//! Record `i` (for `i` in `FIRST..`, default 0) has the id `{i:08}` and
//! contents derived from `i` alone ([`record`]); some records first go
//! through an earlier state ([`earlier`]) that the final one replaces,
//! sometimes committed by a flush of its own. Records are written in
//! batches of random size, each ended by a flush; only once that flush
//! returned `Ok` is `ok {i}` printed (and flushed) for each record of the
//! batch. Any error ends the program with a message and exit code 1.
//!
//! `tests/tests/metadata.rs` derives the same contents independently.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use integration_tests::crash_records::{earlier, record};
use metadata::{Persister, Record, WriterConfig};
use rand::Rng;

fn flush(store: &Persister) -> Result<(), String> {
    store.flush().map_err(|e| format!("flush failed: {e}"))
}

fn run(dir: &Path, first: u64) -> Result<(), String> {
    let store = metadata::open(dir, WriterConfig::default()).map_err(|e| e.to_string())?;
    let mut rng = rand::rng();
    let mut out = std::io::stdout().lock();
    let mut i = first;
    loop {
        let batch = i..i + rng.random_range(1..=16u64);
        // Now and then the earlier states are committed first.
        if rng.random_range(0..4) == 0 {
            for j in batch.clone() {
                store.record(Record::Command(earlier(j)));
            }
            flush(&store)?;
        }
        for j in batch.clone() {
            if j.is_multiple_of(3) {
                store.record(Record::Command(earlier(j)));
            }
            store.record(Record::Command(record(j)));
        }
        flush(&store)?;
        for j in batch.clone() {
            writeln!(out, "ok {j}")
                .and_then(|()| out.flush())
                .map_err(|e| format!("stdout: {e}"))?;
        }
        i = batch.end;
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), first, None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: metadata-crash-writer DIR [FIRST]");
        return ExitCode::from(2);
    };
    let first = match first.map(|f| f.to_str().and_then(|s| s.parse::<u64>().ok())) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => {
            eprintln!("metadata-crash-writer: FIRST must be a number");
            return ExitCode::from(2);
        }
    };
    match run(Path::new(&dir), first) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metadata-crash-writer: {e}");
            ExitCode::FAILURE
        }
    }
}
