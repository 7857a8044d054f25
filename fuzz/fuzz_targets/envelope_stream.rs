//! The length-prefixed envelope stream inside a session
//! (`proto::envelope_stream`): bytes fed in pieces of every size give the same
//! messages, never more than the bound, and nothing buffered past it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::envelope_stream::EnvelopeDecoder;

/// A small bound, so that the fuzzer reaches it.
const MAX: usize = 4096;

fn drain(d: &mut EnvelopeDecoder, out: &mut Vec<Vec<u8>>) -> bool {
    loop {
        match d.next() {
            Ok(Some(msg)) => {
                assert!(msg.len() <= MAX);
                out.push(msg.to_vec());
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    // All at once.
    let mut whole = EnvelopeDecoder::new(MAX);
    whole.feed(stream);
    let mut a = Vec::new();
    let whole_ok = drain(&mut whole, &mut a);
    // In pieces.
    let mut pieces = EnvelopeDecoder::new(MAX);
    let mut b = Vec::new();
    let mut pieces_ok = true;
    for chunk in stream.chunks(piece) {
        pieces.feed(chunk);
        if !drain(&mut pieces, &mut b) {
            pieces_ok = false;
            break;
        }
    }
    assert_eq!(whole_ok, pieces_ok);
    if whole_ok {
        assert_eq!(a, b);
    }
});
