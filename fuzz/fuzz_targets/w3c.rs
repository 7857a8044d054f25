//! `traceparent` and `tracestate` (`telemetry::w3c`), as every carrier
//! reads them: the input split at its first NUL into the two headers, each
//! possibly repeated (split at newlines). What parses formats to text that
//! parses the same; a tracestate never grows past its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry::w3c::{self, TraceParent, TraceState};

fuzz_target!(|data: &[u8]| {
    let Some(text) = rex_fuzz::text(data) else {
        return;
    };
    let (parents, states) = text.split_once('\0').unwrap_or((text, ""));
    if let Ok(p) = TraceParent::parse(parents) {
        assert_eq!(
            TraceParent::parse(&p.to_string()).expect("formatted parses"),
            p
        );
    }
    if let Ok(mut s) = TraceState::parse(states) {
        assert_eq!(
            TraceState::parse(&s.to_string()).expect("formatted parses"),
            s
        );
        s.truncate(512);
        assert!(s.formatted_len() <= 512);
    }
    let parents: Vec<&str> = parents.split('\n').collect();
    let states: Vec<&str> = states.split('\n').collect();
    let _ = w3c::extract(&parents, &states);
});
