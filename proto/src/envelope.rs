//! Session envelope encode/decode with size limits.
//!
//! Sizes are checked before anything is encoded or decoded. Errors never
//! carry the bytes themselves.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::limits::MAX_ENVELOPE;
use crate::pb::session::{Envelope, TraceContext, envelope::Body};

/// Errors encoding or decoding an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope is larger than [`MAX_ENVELOPE`].
    #[error("envelope of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The envelope's encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid envelope (the protobuf decoder's reason).
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The envelope could not be encoded (the protobuf encoder's reason).
    #[error("cannot encode envelope: {0}")]
    Encode(String),
}

/// An envelope for `call_id` carrying `trace` and `body`, stamped with the
/// sender's wall clock now.
pub fn new(call_id: u64, trace: Option<TraceContext>, body: Body) -> Envelope {
    Envelope {
        call_id,
        trace,
        send_time_unix_nanos: crate::wall_time::now_unix_nanos(),
        body: Some(body),
    }
}

/// Builds and encodes an envelope in one step (see [`new`] and [`encode`]).
pub fn encode_new(
    call_id: u64,
    trace: Option<TraceContext>,
    body: Body,
) -> Result<Bytes, EnvelopeError> {
    encode(&new(call_id, trace, body))
}

/// Encodes `env`, refusing (before encoding) if its encoded length exceeds
/// [`MAX_ENVELOPE`].
pub fn encode(env: &Envelope) -> Result<Bytes, EnvelopeError> {
    let len = env.encoded_len();
    if len > MAX_ENVELOPE {
        return Err(EnvelopeError::TooLarge {
            len,
            max: MAX_ENVELOPE,
        });
    }
    let mut buf = BytesMut::with_capacity(len);
    env.encode(&mut buf)
        .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes an envelope, refusing (before decoding) input longer than
/// [`MAX_ENVELOPE`].
pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    check_len(bytes.len())?;
    Envelope::decode(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

/// Like [`decode`], but byte fields of the result share `bytes`'s buffer
/// instead of being copied.
pub fn decode_bytes(bytes: Bytes) -> Result<Envelope, EnvelopeError> {
    check_len(bytes.len())?;
    Envelope::decode(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

fn check_len(len: usize) -> Result<(), EnvelopeError> {
    if len > MAX_ENVELOPE {
        return Err(EnvelopeError::TooLarge {
            len,
            max: MAX_ENVELOPE,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::pb::session::{self as s, envelope::Body};
    use proptest::prelude::*;

    fn env(body: Body) -> Envelope {
        Envelope {
            call_id: 7,
            trace: Some(s::TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: "k=v".into(),
            }),
            send_time_unix_nanos: 1_700_000_000_000_000_000,
            body: Some(body),
        }
    }

    fn all_bodies() -> Vec<Body> {
        use s::terminal_event::Kind;
        let ev = |kind| {
            Body::Event(s::TerminalEvent {
                seq: 3,
                kind: Some(kind),
                timings: None,
            })
        };
        vec![
            Body::Hello(s::Hello {
                client_version: "1.0".into(),
                output_window: 1 << 22,
                acks_when_asked: true,
            }),
            Body::HelloAck(s::HelloAck {
                server_version: "1.0".into(),
                max_processes: 8,
                max_chunk: 32768,
                stdin_window: 262_144,
                output_window: 1 << 22,
                resume_token: Bytes::from_static(&[7; 16]),
                early_ticket: Bytes::from_static(&[9; 16]),
                span_batch_max: 65536,
                login_shell: true,
                clock: Some(crate::pb::clock::ClockStatus {
                    boot: Bytes::from_static(&[3; 16]),
                    synchronized: true,
                    max_error_ns: 250_000,
                }),
            }),
            Body::OutputAck(s::OutputAck {
                seq: 9,
                window: 1 << 24,
            }),
            Body::AckWanted(s::AckWanted {}),
            Body::Resume(s::Resume {
                token: Bytes::from_static(&[7; 16]),
                proof: Bytes::from_static(&[9; 32]),
                calls: vec![s::ResumeCall {
                    call_id: 3,
                    next_seq: 12,
                }],
                abandon: true,
                acks_when_asked: true,
            }),
            Body::Resumed(s::Resumed {
                expired: true,
                calls: vec![s::ResumedCall {
                    call_id: 3,
                    known: false,
                    accounted: true,
                    stdout_total: 100,
                    exit: Some(s::Exited {
                        status: Some(s::exited::Status::Code(2)),
                    }),
                    ..Default::default()
                }],
                resume_token: Bytes::from_static(&[8; 16]),
                output_window: 1 << 22,
                max_processes: 8,
                stdin_window: 262_144,
                login_shell: true,
                span_batch_max: 4096,
            }),
            Body::Exec(s::ExecRequest {
                argv: vec![Bytes::from_static(b"ls"), Bytes::from_static(b"-l")],
                env: vec![s::EnvVar {
                    name: Bytes::from_static(b"A"),
                    value: Bytes::from_static(b"b"),
                }],
                cwd: Bytes::from_static(b"/tmp"),
                stdin: s::StdinMode::Pipe as i32,
                clear_env: true,
                terminal: None,
                login_shell: false,
                output_window: 1 << 23,
            }),
            Body::Exec(s::ExecRequest {
                login_shell: true,
                stdin: s::StdinMode::Pipe as i32,
                ..Default::default()
            }),
            Body::Exec(s::ExecRequest {
                argv: vec![Bytes::from_static(b"sh")],
                terminal: Some(s::Terminal {
                    rows: 30,
                    cols: 100,
                    term: "xterm-256color".into(),
                }),
                ..Default::default()
            }),
            Body::Resize(s::Resize {
                rows: 40,
                cols: 120,
            }),
            Body::Stdin(s::StdinData {
                data: Bytes::from_static(b"input"),
            }),
            Body::StdinClose(s::StdinClose {}),
            Body::Spans(s::ForwardedSpans {
                traces: Bytes::from_static(b"\x0a\x00"),
                spans: 3,
                dropped: 1,
            }),
            Body::StdinAck(s::StdinAck {
                consumed: 65_536,
                window: 1 << 20,
            }),
            Body::Signal(s::Signal { signal: 15 }),
            Body::Cancel(s::Cancel {}),
            Body::Ping(s::Ping { nonce: 99 }),
            Body::Pong(s::Pong {
                nonce: 99,
                recv_time_unix_nanos: 5,
                clock: None,
            }),
            ev(Kind::Started(s::Started {
                pid: 42,
                program: "bash".into(),
            })),
            ev(Kind::Stdout(Bytes::from_static(b"out"))),
            ev(Kind::Stderr(Bytes::from_static(b"err"))),
            ev(Kind::Exited(s::Exited {
                status: Some(s::exited::Status::Code(0)),
            })),
            ev(Kind::Exited(s::Exited {
                status: Some(s::exited::Status::Signal(9)),
            })),
            ev(Kind::Error(s::ExecError {
                kind: s::ExecErrorKind::NotFound as i32,
                message: "no such program".into(),
            })),
        ]
    }

    #[test]
    fn every_body_round_trips() {
        for body in all_bodies() {
            let e = env(body);
            let bytes = encode(&e).unwrap();
            assert_eq!(decode(&bytes).unwrap(), e);
            assert_eq!(decode_bytes(bytes).unwrap(), e);
        }
        let empty = Envelope::default();
        assert_eq!(decode(&encode(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn oversized_envelope_is_refused_on_encode_and_decode() {
        let e = env(Body::Stdin(s::StdinData {
            data: Bytes::from(vec![0u8; MAX_ENVELOPE]),
        }));
        assert!(matches!(
            encode(&e),
            Err(EnvelopeError::TooLarge {
                max: MAX_ENVELOPE,
                ..
            })
        ));
        let big = vec![0u8; MAX_ENVELOPE + 1];
        assert_eq!(
            decode(&big),
            Err(EnvelopeError::TooLarge {
                len: MAX_ENVELOPE + 1,
                max: MAX_ENVELOPE
            })
        );
    }

    #[test]
    fn truncated_and_garbage_input_are_errors() {
        let e = env(Body::Exec(s::ExecRequest {
            argv: vec![Bytes::from(vec![b'a'; 200])],
            ..Default::default()
        }));
        let bytes = encode(&e).unwrap();
        // Cut inside the length-delimited exec body.
        let cut = &bytes[..bytes.len() - 50];
        assert!(matches!(decode(cut), Err(EnvelopeError::Malformed(_))));
        // Wire type 7 does not exist.
        assert!(matches!(
            decode(&[0xff; 12]),
            Err(EnvelopeError::Malformed(_))
        ));
        // A length prefix far beyond the input.
        assert!(matches!(
            decode(&[0x62, 0xff, 0xff, 0xff, 0x0f]),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn errors_do_not_echo_input() {
        let secret = b"\x62\x05hunter2-secret";
        let err = decode(secret).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
            let _ = decode_bytes(Bytes::from(bytes));
        }
    }
}
