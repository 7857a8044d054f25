//! The local trace file's reader (`analysis::trace_file`), which
//! `core-client trace show` runs over a file anything may have written:
//! no input panics, and every span read lands in the trace of its id.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let traces = analysis::trace_file::parse(data);
    let lines = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    assert!(traces.skipped_lines <= lines);
    for trace in &traces.traces {
        assert!(trace.spans.iter().all(|s| s.trace == trace.id));
    }
});
