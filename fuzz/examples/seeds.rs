//! Writes the seed corpora (`corpus/<target>/`): small valid inputs of
//! each kind, including those only a key holder could make (handshake
//! message 1 from the authorized client at the targets' clock, message 1
//! of a registration proof). Run from `fuzz/`: `cargo run --example seeds`.

use std::path::Path;

use prost::Message;
use proto::envelope_stream::EnvelopeEncoder;
use proto::noise::{ClientHandshake, SessionConfig};
use proto::pb::session::{self, envelope::Body};
use proto::pb::tunnel::{self, CloseReason, Frame, FrameKind};
use proto::registration::ProofInitiator;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    if let Err(e) =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(name), bytes))
    {
        eprintln!("seeds: {}: {e}", dir.display());
        std::process::exit(1);
    }
}

fn envelopes() -> Vec<Vec<u8>> {
    let tc = session::TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into(),
    };
    let bodies = [
        Body::Hello(session::Hello {
            client_version: "rex/3".into(),
            output_window: 4 << 20,
            acks_when_asked: true,
        }),
        Body::Exec(session::ExecRequest {
            argv: vec![
                b"sh".to_vec().into(),
                b"-c".to_vec().into(),
                b"echo hi".to_vec().into(),
            ],
            env: vec![session::EnvVar {
                name: b"LANG".to_vec().into(),
                value: b"C".to_vec().into(),
            }],
            cwd: b"/tmp".to_vec().into(),
            stdin: session::StdinMode::Pipe as i32,
            clear_env: false,
            terminal: Some(session::Terminal {
                rows: 24,
                cols: 80,
                term: "xterm".into(),
            }),
            login_shell: false,
            // The session's window (not encoded): the seed's bytes as before.
            output_window: 0,
        }),
        Body::OutputAck(session::OutputAck {
            seq: 7,
            window: 8 << 20,
        }),
        Body::AckWanted(session::AckWanted {}),
        Body::Resize(session::Resize {
            rows: 40,
            cols: 120,
        }),
        Body::Stdin(session::StdinData {
            data: b"input\n".to_vec().into(),
        }),
        Body::Signal(session::Signal { signal: 2 }),
        Body::Ping(session::Ping { nonce: 7 }),
        Body::Event(session::TerminalEvent {
            seq: 3,
            kind: Some(session::terminal_event::Kind::Stdout(
                b"hi\n".to_vec().into(),
            )),
            timings: None,
        }),
        // A final event with its stage timings (bytes: a `CallTimings`).
        Body::Event(session::TerminalEvent {
            seq: 4,
            kind: Some(session::terminal_event::Kind::Exited(session::Exited {
                status: Some(session::exited::Status::Code(0)),
            })),
            timings: Some(
                session::CallTimings {
                    version: 1,
                    stages: vec![session::StageTiming {
                        name: "process.run".into(),
                        span_id: 7,
                        parent_span_id: 3,
                        start_ns: -1_000,
                        duration_ns: 900,
                        error: false,
                        attributes: vec![session::StageAttribute {
                            key: "process.pid".into(),
                            value: Some(session::stage_attribute::Value::Int(42)),
                        }],
                    }],
                    dropped: 0,
                    host: "box".into(),
                }
                .encode_to_vec()
                .into(),
            ),
        }),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let env = session::Envelope {
                call_id: i as u64,
                trace: (i % 2 == 0).then(|| tc.clone()),
                send_time_unix_nanos: 1_750_000_000_000_000_000,
                body: Some(body),
            };
            env.encode_to_vec()
        })
        .collect()
}

fn main() {
    // Relay frames and registration messages, each behind its kind byte.
    let frames = [
        Frame {
            kind: FrameKind::Handshake as i32,
            payload: vec![1u8; 96].into(),
            hop_traceparent: String::new(),
            close_reason: 0,
            hop_timings: Vec::new(),
        },
        Frame {
            kind: FrameKind::Data as i32,
            payload: vec![2u8; 40].into(),
            hop_traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            close_reason: 0,
            hop_timings: Vec::new(),
        },
        Frame {
            kind: FrameKind::Close as i32,
            payload: Default::default(),
            hop_traceparent: String::new(),
            close_reason: CloseReason::Busy as i32,
            hop_timings: Vec::new(),
        },
    ];
    for (i, f) in frames.iter().enumerate() {
        write(
            "tunnel_frame",
            &format!("frame-{i}"),
            &[[0u8].as_slice(), &f.encode_to_vec()].concat(),
        );
    }
    // The same frames as one gRPC body (each message a flag, a length and
    // the frame), read in DATA frames of 7 bytes.
    let mut body = vec![7u8];
    for f in &frames {
        let message = f.encode_to_vec();
        body.push(0);
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
    }
    write("frame_wire", "body", &body);
    let up = tunnel::RegisterUp {
        msg: Some(tunnel::register_up::Msg::Proof(vec![3u8; 48].into())),
    };
    write(
        "tunnel_frame",
        "register-up",
        &[[1u8].as_slice(), &up.encode_to_vec()].concat(),
    );
    let incoming = tunnel::Incoming {
        session_id: vec![4u8; 16].into(),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    };
    write(
        "tunnel_frame",
        "incoming",
        &[[3u8].as_slice(), &incoming.encode_to_vec()].concat(),
    );
    write(
        "tunnel_frame",
        "session-id",
        b"\x040123456789abcdef0123456789abcdef",
    );

    // Envelopes, and the same as an envelope stream (pieces of 7 bytes).
    let envs = envelopes();
    let mut encoder = EnvelopeEncoder::with_max(4096);
    for (i, e) in envs.iter().enumerate() {
        write("envelope", &format!("envelope-{i}"), e);
        if let Err(err) = encoder.push(e) {
            eprintln!("seeds: envelope stream: {err}");
            std::process::exit(1);
        }
    }
    let stream = encoder.take(usize::MAX);
    write(
        "envelope_stream",
        "stream",
        &[[7u8].as_slice(), &stream].concat(),
    );
    write(
        "envelope_stream",
        "too-long",
        &[1u8, 0, 0, 0x20, 0, 1, 2, 3],
    );

    // Early data: the hello and the first call as message 1 carries them
    // (an envelope stream), and the shapes the exec-server must refuse.
    let hello = session::Envelope {
        call_id: 0,
        trace: None,
        send_time_unix_nanos: 1_750_000_000_000_000_000,
        body: Some(Body::Hello(session::Hello {
            client_version: "rex/3".into(),
            output_window: 4 << 20,
            acks_when_asked: true,
        })),
    };
    let exec = |call_id: u64| session::Envelope {
        call_id,
        trace: None,
        send_time_unix_nanos: 1_750_000_000_000_000_000,
        body: Some(Body::Exec(session::ExecRequest {
            argv: vec![b"true".to_vec().into()],
            ..Default::default()
        })),
    };
    let streams: [(&str, Vec<session::Envelope>); 5] = [
        ("hello-and-call", vec![hello.clone(), exec(1)]),
        ("hello-only", vec![hello.clone()]),
        ("two-calls", vec![hello.clone(), exec(1), exec(2)]),
        ("call-first", vec![exec(1), hello.clone()]),
        ("call-zero", vec![hello.clone(), exec(0)]),
    ];
    for (name, envs) in streams {
        let mut early = EnvelopeEncoder::with_max(64 * 1024);
        for env in &envs {
            if let Err(err) = early.push_message(env) {
                eprintln!("seeds: early data: {err}");
                std::process::exit(1);
            }
        }
        write("early_data", name, &early.take(usize::MAX));
    }

    // Handshake message 1 from the authorized client, at the targets' clock.
    let server = rex_fuzz::server_key();
    let client = rex_fuzz::client_key();
    let route = server.public().server_id();
    match ClientHandshake::start(
        &client,
        &server.public(),
        route.as_bytes(),
        rex_fuzz::now(),
        SessionConfig::default(),
    ) {
        Ok((_, msg1)) => write("noise_accept", "msg1", &msg1),
        Err(e) => {
            eprintln!("seeds: handshake: {e}");
            std::process::exit(1);
        }
    }
    write("noise_accept", "short", &[0u8; 40]);

    // Registration: message 1 (and bytes standing for message 3).
    match ProofInitiator::start(&server) {
        Ok((_, msg1)) => {
            let len = u16::try_from(msg1.len()).unwrap_or(u16::MAX).to_be_bytes();
            write(
                "registration",
                "msg1",
                &[len.as_slice(), &msg1, &[5u8; 64]].concat(),
            );
        }
        Err(e) => {
            eprintln!("seeds: registration: {e}");
            std::process::exit(1);
        }
    }

    // Answers to the client's message 1 and to the exec-server's proof
    // message 1: no valid one can exist (the ephemeral keys are fresh),
    // so lengths around the real ones.
    write("noise_initiate", "msg2-length", &[3u8; 48]);
    write("noise_initiate", "long", &[3u8; 96]);
    write("registration_initiate", "msg2-length", &[4u8; 96]);
    write("registration_initiate", "short", &[4u8; 32]);

    // The record layer: envelopes through it, then raw records of each
    // type (data, rekey, close with a reason, an unknown type).
    let step = |kind: u8, bytes: &[u8]| {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes();
        [[kind].as_slice(), &len, bytes].concat()
    };
    let envs = envelopes();
    let mut sent = Vec::new();
    for env in &envs {
        sent.extend(step(2, env));
    }
    write("transport_record", "envelopes", &sent);
    write(
        "transport_record",
        "records",
        &[
            step(1, &[0, 0, 0, 2, 9, 9, 0x01]),
            step(1, &[0x02]),
            step(2, envs.first().map_or(&[][..], |e| &e[..])),
            step(1, b"done\x03"),
            step(1, &[0x01]),
        ]
        .concat(),
    );
    write("transport_record", "unknown", &step(1, &[1, 2, 3, 0x7f]));
    write("transport_record", "raw", &step(0, &[0u8; 40]));

    // The relay fleet: a directory entry, and a proof at the targets' clock.
    write(
        "directory_entry",
        "valid",
        br#"{"relay":"http://10.0.0.5:7600","registered_at":"2026-11-25T08:00:00Z"}"#,
    );
    write(
        "directory_entry",
        "key",
        format!("/rex/servers/{}", rex_fuzz::FLEET_SERVER).as_bytes(),
    );
    let fleet = relay::fleet::Fleet::from_secret(&rex_fuzz::FLEET_SECRET);
    for (name, client) in [("v4", "10.1.2.3"), ("v6", "2001:db8::1")] {
        let client = client
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let proof = fleet.prove(rex_fuzz::FLEET_SERVER, client, rex_fuzz::now());
        write("fleet_proof", name, proof.as_bytes());
    }

    // Headers.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    write("hop_header", "valid", tp.as_bytes());
    write(
        "hop_header",
        "future-version",
        b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra",
    );
    write(
        "w3c",
        "both",
        format!("{tp}\0rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").as_bytes(),
    );
    write(
        "w3c",
        "tenant",
        format!("{tp}\0tenant@system=1,a=b\nc=d").as_bytes(),
    );
    write("w3c", "repeated", format!("{tp}\n{tp}\0a=1,a=2").as_bytes());

    // A trace file: two lines of one trace, a broken line.
    let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"core-client"}}]},"scopeSpans":[{"scope":{"name":"core-client"},"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","parentSpanId":"","name":"tool.dispatch","kind":1,"startTimeUnixNano":"1750000000000000000","endTimeUnixNano":"1750000000100000000","attributes":[{"key":"rex.program","value":{"stringValue":"sh"}},{"key":"rex.bytes","value":{"intValue":"12"}}],"status":{"code":2,"message":"boom"}}]}]}]}"#;
    let child = line
        .replace(
            "00f067aa0ba902b7\",\"parentSpanId\":\"\"",
            "00f067aa0ba902b8\",\"parentSpanId\":\"00f067aa0ba902b7\"",
        )
        .replace("tool.dispatch", "session.acquire");
    write(
        "trace_file",
        "two-lines",
        format!("{line}\n{child}\n{{not json\n\n").as_bytes(),
    );

    // Key files.
    let public = server.public().to_string();
    write(
        "keys",
        "public",
        format!("\0# server\n{public}  # comment\n").as_bytes(),
    );
    write(
        "keys",
        "private",
        format!("\x01# key\n{}\n", base64_private(&client)).as_bytes(),
    );
    write(
        "keys",
        "authorized",
        format!(
            "\x02# alice\n{public} alice\nfrom=\"10.0.0.0/8,fd00::/8\",no-env {public}\nenv-allow=\"LANG,TERM\" {public} # bob\n"
        )
        .as_bytes(),
    );
    write(
        "keys",
        "options",
        b"\x03from=\"127.0.0.1/32\",env-allow=\"A,B\",no-env",
    );
}

/// The private key's text form, as `keygen` writes it.
fn base64_private(key: &proto::keys::StaticKeypair) -> String {
    let dir = std::env::temp_dir().join(format!("rex-fuzz-seeds-{}", std::process::id()));
    let path = dir.join("key");
    let text = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| key.write_file(&path).map_err(|e| e.to_string()))
        .and_then(|()| std::fs::read_to_string(&path).map_err(|e| e.to_string()));
    let _ = std::fs::remove_dir_all(&dir);
    match text {
        Ok(t) => t.trim().to_owned(),
        Err(e) => {
            eprintln!("seeds: writing a key: {e}");
            std::process::exit(1);
        }
    }
}
