//! The registration proof at the relay (`proto::registration`): message 1
//! and message 3 from a registering exec-server (the first two bytes give
//! message 1's length). No input panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::registration::ProofResponder;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (msg1, msg3) = rest.split_at(len);
    let Ok(mut responder) = ProofResponder::new() else {
        return;
    };
    if responder.respond(msg1).is_ok() {
        let _ = responder.finish(msg3);
    }
});
