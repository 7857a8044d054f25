//! What ours sends: envelopes of [`CHUNK`] bytes numbered and filled with
//! a fixed [`Pattern`], cheap to build and to check.

use proto::envelope_stream::LEN_PREFIX;
use proto::limits::MAX_NOISE_PLAINTEXT;

/// Plaintext bytes per envelope of ours: with its length prefix and the
/// record's type byte it fills one Noise transport message (65,535 bytes).
pub(super) const CHUNK: usize = MAX_NOISE_PLAINTEXT - 1 - LEN_PREFIX;

/// What ours sends: envelope `n` is `n` (big-endian `u64`) then a fixed
/// pattern, cut to its length; cheap to build and to check.
pub(super) struct Pattern(Vec<u8>);

impl Pattern {
    pub(super) fn new() -> Self {
        Self((0..CHUNK).map(|i| (i ^ (i >> 8) ^ 0x5a) as u8).collect())
    }

    /// Envelope `seq`, `len` bytes long (at most [`CHUNK`]).
    pub(super) fn envelope(&mut self, seq: u64, len: usize) -> &[u8] {
        let len = len.min(CHUNK);
        let head = len.min(8);
        self.0[..head].copy_from_slice(&seq.to_be_bytes()[..head]);
        &self.0[..len]
    }

    /// Whether `env` is envelope `seq` (of its length).
    pub(super) fn matches(&self, seq: u64, env: &[u8]) -> bool {
        if env.len() > CHUNK {
            return false;
        }
        let head = env.len().min(8);
        env[..head] == seq.to_be_bytes()[..head] && env[head..] == self.0[head..env.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_told_apart_by_number_and_content() {
        let (mut sent, seen) = (Pattern::new(), Pattern::new());
        for (seq, len) in [(0, CHUNK), (1, CHUNK), (300, 5), (7, 0), (9, 1000)] {
            let env = sent.envelope(seq, len).to_vec();
            assert_eq!(env.len(), len);
            assert!(seen.matches(seq, &env));
            // (A short last envelope holds only part of its number.)
            assert!(len < 8 || !seen.matches(seq + 1, &env));
        }
        let mut env = sent.envelope(2, CHUNK).to_vec();
        env[CHUNK / 2] ^= 1;
        assert!(!seen.matches(2, &env));
        assert!(!seen.matches(2, &[0; CHUNK + 1]));
    }
}
