//! No pseudo-terminal to be had is an error for the call, never a crash:
//! the process runs out of descriptors (its own test binary, since the
//! limit is process-wide) and a terminal command gets a `NO_TERMINAL`
//! error event; with the limit back, the next one runs. (The system out of
//! pseudo-terminals, a devpts of its own with room for two, is
//! `tests/tests/pty_exhaustion.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use exec_server::process::{Launch, Outgoing, ProcessIo, ProcessTrace, run};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use proto::pb::session::{ExecErrorKind, ExecRequest, Terminal, terminal_event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn on_terminal() -> ExecRequest {
    ExecRequest {
        argv: vec![Bytes::from_static(b"true")],
        terminal: Some(Terminal {
            rows: 24,
            cols: 80,
            term: String::new(),
        }),
        ..Default::default()
    }
}

/// Runs the request to its final event.
async fn last_event(req: ExecRequest) -> terminal_event::Kind {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(8);
    let (_control_tx, control) = mpsc::channel(1);
    let io = ProcessIo {
        call_id: 1,
        events: tx,
        control,
        stdin: None,
        cancel: CancellationToken::new(),
        credit: exec_server::credit::Credit::unlimited(),
        ended: CancellationToken::new(),
        resize: None,
    };
    let task = tokio::spawn(run(req, io, Launch::plain(), ProcessTrace::detached()));
    let mut last = None;
    while let Some(out) = rx.recv().await {
        if out.last {
            last = Some(out.kind);
            break;
        }
    }
    task.await.unwrap();
    last.unwrap()
}

#[test]
fn a_terminal_when_none_can_be_opened_is_an_error_event() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // The lowest free descriptor (what a new open gets, whatever this
    // process's stdin is, even closed): every one below it is taken, and
    // with the limit there no new one can be had.
    let lowest = std::fs::File::open("/dev/null").unwrap();
    let free = u64::try_from(std::os::fd::AsRawFd::as_raw_fd(&lowest)).unwrap();
    drop(lowest);
    setrlimit(Resource::RLIMIT_NOFILE, free, hard).unwrap();
    let refused = rt.block_on(last_event(on_terminal()));
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    match refused {
        terminal_event::Kind::Error(e) => {
            assert_eq!(e.kind, ExecErrorKind::NoTerminal as i32, "{}", e.message);
            assert!(
                e.message
                    .starts_with("true: cannot open a pseudo-terminal: "),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    // Descriptors again: the next terminal command runs.
    let ran = rt.block_on(last_event(on_terminal()));
    assert!(matches!(ran, terminal_event::Kind::Exited(_)), "{ran:?}");
}
