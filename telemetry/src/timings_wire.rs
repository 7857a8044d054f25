//! A call's stage summary (`CallTimings`) written straight from its
//! [`Timeline`]: each stage and attribute through a scratch buffer reused
//! for the whole summary, names and keys written from the vocabulary's
//! strings, nothing copied into owned protobuf structs first. The bytes
//! are prost's encoding of the same message built as structs (the tests
//! compare them with the timeline's `to_wire`).

use std::time::SystemTime;

use opentelemetry::trace::SpanId;
use prost::encoding::{WireType, encode_key, encode_varint};
use proto::session::EncodedTimings;

use crate::otlp_wire::{fixed64, message, string, uint};
use crate::remote::{MAX_ATTRIBUTES, MAX_TEXT, Stage, Timeline, VERSION, Value, truncate};

/// `timeline`'s summary as it travels (a `CallTimings` message), times
/// relative to `sent` (the send time the carrying envelope states), made
/// on `host`; open stages end at `sent`.
pub fn encode(timeline: &Timeline, sent: SystemTime, host: Option<&str>) -> EncodedTimings {
    EncodedTimings::from_bytes(write(timeline, sent, host))
}

/// The summary's bytes.
fn write(timeline: &Timeline, sent: SystemTime, host: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut stage = Vec::with_capacity(256);
    let mut attribute = Vec::with_capacity(64);
    uint(1, u64::from(VERSION), &mut out);
    for s in timeline
        .stages
        .iter()
        .filter(|s| s.span_id != SpanId::INVALID)
    {
        stage.clear();
        write_stage(s, sent, &mut stage, &mut attribute);
        message(2, &stage, &mut out);
    }
    uint(3, u64::from(timeline.dropped), &mut out);
    if let Some(host) = host {
        string(4, truncate(host, MAX_TEXT), &mut out);
    }
    out
}

/// One `StageTiming`.
fn write_stage(s: &Stage, sent: SystemTime, out: &mut Vec<u8>, attribute: &mut Vec<u8>) {
    let (start_ns, duration_ns) = s.relative_to(sent);
    string(1, s.name, out);
    fixed64(2, u64::from_be_bytes(s.span_id.to_bytes()), out);
    fixed64(3, u64::from_be_bytes(s.parent.to_bytes()), out);
    if start_ns != 0 {
        encode_key(4, WireType::Varint, out);
        encode_varint(zigzag(start_ns), out);
    }
    uint(5, duration_ns, out);
    if s.error {
        encode_key(6, WireType::Varint, out);
        encode_varint(1, out);
    }
    for (key, value) in s.attributes.iter().take(MAX_ATTRIBUTES) {
        attribute.clear();
        string(1, key, attribute);
        // A one-of: written even when it is the default.
        match value {
            Value::Int(n) => {
                encode_key(2, WireType::Varint, attribute);
                encode_varint(zigzag(*n), attribute);
            }
            Value::Text(t) => {
                let t = truncate(t, MAX_TEXT);
                encode_key(3, WireType::LengthDelimited, attribute);
                encode_varint(t.len() as u64, attribute);
                attribute.extend_from_slice(t.as_bytes());
            }
            Value::Flag(b) => {
                encode_key(4, WireType::Varint, attribute);
                encode_varint(u64::from(*b), attribute);
            }
        }
        message(7, attribute, out);
    }
}

/// A `sint64` as protobuf writes it.
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::tests::{stage, t};
    use crate::spans;
    use prost::Message;

    #[test]
    fn the_summary_written_straight_is_prosts_encoding_of_the_message() {
        let mut tl = Timeline::default();
        // Before and after the send time, zero-length, open, failed.
        tl.push(stage(spans::RELAY_FRAME_RECV, 1, 0, 10, Some(11)));
        tl.push(stage(spans::PROCESS_RUN, 2, 1, 25, Some(25)));
        tl.push(stage(spans::RPC_SERVER_EXEC, 3, 1, 11, None));
        let mut failed = stage(spans::PROCESS_SPAWN, 4, 3, 12, Some(13));
        failed.error = true;
        failed.attributes = vec![
            ("process.pid", Value::Int(0)),
            ("rex.bytes", Value::Int(-7)),
            ("process.executable.name", Value::Text("é".repeat(40))),
            ("rex.note", Value::Text(String::new())),
            ("rex.terminal", Value::Flag(false)),
            ("rex.terminal.rows", Value::Flag(true)),
            ("rex.a", Value::Int(1)),
            ("rex.b", Value::Int(2)),
            ("rex.c", Value::Int(3)),
        ];
        tl.push(failed);
        // No id: left out.
        tl.push(stage(spans::TERMINAL_PUSH, 0, 3, 14, Some(15)));
        for _ in 0..crate::remote::MAX_STAGES {
            tl.push(stage(spans::RELAY_FRAME_SEND, 9, 3, 16, Some(17)));
        }
        let sent = t(20);
        for host in [None, Some(""), Some("build-box"), Some(&*"h".repeat(100))] {
            let want = tl.to_wire(sent, host).encode_to_vec();
            assert_eq!(write(&tl, sent, host), want, "host {host:?}");
            assert_eq!(
                encode(&tl, sent, host).decode().unwrap(),
                tl.to_wire(sent, host)
            );
        }
        let empty = Timeline::default();
        assert_eq!(
            write(&empty, sent, None),
            empty.to_wire(sent, None).encode_to_vec()
        );
    }
}
