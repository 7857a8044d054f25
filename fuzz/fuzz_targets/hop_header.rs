//! The hop trace header on relay frames (`telemetry::carriers::hop`):
//! what it extracts injects back to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry::carriers::hop;

fuzz_target!(|data: &[u8]| {
    let Some(text) = rex_fuzz::text(data) else {
        return;
    };
    if let Some(parent) = hop::extract(text) {
        let again = hop::extract(&hop::inject(&parent)).expect("an injected header extracts");
        assert_eq!(again, parent);
    }
});
