//! The session's record layer after decryption (`Transport::receive` and
//! `poll_envelope`): two ends keyed with fixed keys, so that inputs reach
//! the records' plaintext. The input is a list of steps, each a kind byte
//! and a two-byte length then that many bytes:
//!
//! - kind 0: the bytes as a Noise message from the peer, unencrypted;
//! - kind 1: the bytes encrypted as the peer would, with no record layer
//!   (any record type, any body);
//! - otherwise: the bytes as an envelope the peer sends through its
//!   record layer.
//!
//! No input panics; while only envelopes were sent, exactly those
//! envelopes come out, in order; once the session fails, it stays failed.
#![no_main]

use std::collections::VecDeque;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use proto::noise::{SessionConfig, Transport, TransportError};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let Ok((mut peer, mut us)) = Transport::fuzzing_pair(
        rex_fuzz::client_key().public(),
        SessionConfig::default(),
        now,
    ) else {
        return;
    };
    let mut clean = true;
    let mut expected: VecDeque<Vec<u8>> = VecDeque::new();
    let mut rest = data;
    while let Some((&[kind, hi, lo], tail)) = rest.split_first_chunk::<3>() {
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let mut messages = Vec::new();
        match kind {
            0 => {
                clean = false;
                messages.push(bytes.to_vec());
            }
            1 => {
                clean = false;
                match peer.encrypt_raw(bytes) {
                    Ok(m) => messages.push(m),
                    Err(_) => return,
                }
            }
            _ => {
                if peer.send(bytes).is_err() {
                    continue;
                }
                expected.push_back(bytes.to_vec());
                while let Ok(Some(m)) = peer.poll_transmit(now) {
                    messages.push(m.to_vec());
                }
            }
        }
        for message in messages {
            let received = us.receive(&message);
            if us.is_dead() {
                assert!(received.is_err());
                assert_eq!(us.receive(&message), Err(TransportError::Dead));
                assert!(!clean, "a session that only carried envelopes failed");
                return;
            }
            loop {
                match us.poll_envelope() {
                    Ok(Some(envelope)) => {
                        if clean {
                            assert_eq!(expected.pop_front().as_deref(), Some(&envelope[..]));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        assert!(!clean, "a session that only carried envelopes failed");
                        assert!(us.is_dead());
                        return;
                    }
                }
            }
        }
    }
    if clean {
        assert!(expected.is_empty(), "envelopes were lost");
    }
});
