//! Commands on a pseudo-terminal, through the relay, with the client
//! library: the child sees a terminal of the size and type asked for, a
//! resize reaches it as `SIGWINCH`, output is byte-exact, exit codes and
//! signals are as with pipes, Ctrl-C is a byte the terminal turns into
//! `SIGINT`, bad sizes are refused, an exec-server run with `--no-tty`
//! refuses terminals, and the terminal is traced as an attribute with its
//! input and resizes counted (O(1) spans however long the session).
//!
//! The spans of every test here go to one in-memory exporter (this test
//! binary's global tracer provider); the trace test picks its own calls'
//! traces out by id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use integration_tests::stack::Stack;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rex_client::{ClientError, Event, ExecFailure, ExecSpec, ExitStatus, InvalidRequest, Terminal};
use telemetry::spans;

/// Long enough for a busy machine; every wait is bounded by it.
const WAIT: Duration = Duration::from_secs(60);

fn exporter() -> &'static (SdkTracerProvider, InMemorySpanExporter) {
    static SPANS: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();
    SPANS.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        (provider, exporter)
    })
}

fn on_terminal(script: &str, rows: u16, cols: u16) -> ExecSpec {
    let mut spec = ExecSpec::new(["sh", "-c", script]);
    spec.terminal = Some(Terminal::new(rows, cols).with_term("xterm-256color"));
    spec
}

/// Reads events until the output so far ends with `tail` (bounded);
/// returns the output. Panics on an exit or failure first.
async fn until(run: &mut rex_client::Execution, out: &mut Vec<u8>, tail: &[u8]) {
    let wait = async {
        while !out.ends_with(tail) {
            match run.next().await {
                Some(Event::Stdout(d)) => out.extend_from_slice(&d),
                Some(Event::Started { .. }) => {}
                other => panic!(
                    "{other:?} before {:?}; output: {:?}",
                    String::from_utf8_lossy(tail),
                    String::from_utf8_lossy(out)
                ),
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| {
        panic!(
            "no {:?} in time; output: {:?}",
            String::from_utf8_lossy(tail),
            String::from_utf8_lossy(out)
        )
    });
}

/// The rest of the call: its output and how it ended (bounded).
async fn finish(run: &mut rex_client::Execution) -> (Vec<u8>, Event) {
    let rest = async {
        let mut out = Vec::new();
        loop {
            match run.next().await {
                Some(Event::Stdout(d)) => out.extend_from_slice(&d),
                Some(Event::Stderr(d)) => panic!("stderr on a terminal: {d:?}"),
                Some(Event::Started { .. }) => {}
                Some(last) => return (out, last),
                None => panic!("no final event"),
            }
        }
    };
    tokio::time::timeout(WAIT, rest).await.unwrap()
}

#[tokio::test]
async fn a_terminal_command_sees_a_terminal_of_the_size_and_type_asked_for() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let script =
        "test -t 0 && test -t 1 && test -t 2 && stty size && echo \"$TERM\" && echo err >&2";
    let mut run = stack
        .client()
        .exec(on_terminal(script, 30, 100))
        .await
        .unwrap();
    let (out, last) = finish(&mut run).await;
    assert_eq!(out, b"30 100\r\nxterm-256color\r\nerr\r\n");
    assert_eq!(last, Event::Exited(ExitStatus::Code(0)));
}

#[tokio::test]
async fn a_resize_changes_the_size_and_the_child_gets_sigwinch() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let script = "trap 'echo WINCH; stty size; exit 7' WINCH; stty size; echo ready; \
                  while :; do sleep 0.05; done";
    let mut run = stack
        .client()
        .exec(on_terminal(script, 24, 80))
        .await
        .unwrap();
    let mut out = Vec::new();
    until(&mut run, &mut out, b"ready\r\n").await;
    assert_eq!(out, b"24 80\r\nready\r\n");
    run.resize(40, 120).await.unwrap();
    let (rest, last) = finish(&mut run).await;
    assert_eq!(rest, b"WINCH\r\n40 120\r\n");
    assert_eq!(last, Event::Exited(ExitStatus::Code(7)));
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

#[tokio::test]
async fn terminal_output_is_byte_exact() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Binary, with the terminal's output processing off: every byte as is.
    let data = random_bytes(1024 * 1024 + 7);
    std::fs::write(dir.path().join("data"), &data).unwrap();
    let mut spec = on_terminal("stty raw -echo; cat data", 24, 80);
    spec.cwd = Some(dir.path().to_path_buf());
    let mut run = stack.client().exec(spec).await.unwrap();
    let (out, last) = finish(&mut run).await;
    assert_eq!(last, Event::Exited(ExitStatus::Code(0)));
    assert!(out == data, "{} bytes back for {}", out.len(), data.len());
    // Text, as the terminal shows it: each newline as CR LF.
    let text: Vec<u8> = random_bytes(300_000)
        .iter()
        .map(|b| if b % 61 == 0 { b'\n' } else { b'a' + b % 26 })
        .collect();
    std::fs::write(dir.path().join("text"), &text).unwrap();
    let mut spec = on_terminal("cat text", 24, 80);
    spec.cwd = Some(dir.path().to_path_buf());
    let mut run = stack.client().exec(spec).await.unwrap();
    let (out, last) = finish(&mut run).await;
    assert_eq!(last, Event::Exited(ExitStatus::Code(0)));
    let shown: Vec<u8> = text
        .iter()
        .flat_map(|&b| {
            if b == b'\n' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    assert!(out == shown, "{} bytes back for {}", out.len(), shown.len());
}

#[tokio::test]
async fn exit_codes_and_signals_are_as_with_pipes() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    let mut run = client
        .exec(on_terminal("echo hi; exit 3", 24, 80))
        .await
        .unwrap();
    assert_eq!(
        finish(&mut run).await,
        (b"hi\r\n".to_vec(), Event::Exited(ExitStatus::Code(3)))
    );
    let mut run = client
        .exec(on_terminal("kill -9 $$", 24, 80))
        .await
        .unwrap();
    assert_eq!(
        finish(&mut run).await.1,
        Event::Exited(ExitStatus::Signal(9))
    );
    // A signal goes to the process group, as with pipes.
    let mut run = client
        .exec(on_terminal("echo ready; exec sleep 1000", 24, 80))
        .await
        .unwrap();
    until(&mut run, &mut Vec::new(), b"ready\r\n").await;
    run.signal(15).await.unwrap();
    assert_eq!(
        finish(&mut run).await.1,
        Event::Exited(ExitStatus::Signal(15))
    );
    // Cancel kills it.
    let mut run = client
        .exec(on_terminal("echo ready; exec sleep 1000", 24, 80))
        .await
        .unwrap();
    until(&mut run, &mut Vec::new(), b"ready\r\n").await;
    run.cancel().await.unwrap();
    assert_eq!(
        finish(&mut run).await.1,
        Event::Exited(ExitStatus::Signal(9))
    );
    // A program that does not exist fails as it does with pipes.
    let mut spec = ExecSpec::new(["no-such-program-xyz"]);
    spec.terminal = Some(Terminal::new(24, 80));
    let mut run = client.exec(spec).await.unwrap();
    assert!(matches!(
        finish(&mut run).await.1,
        Event::Failed(ExecFailure::NotFound(_))
    ));
}

#[tokio::test]
async fn ctrl_c_is_a_byte_the_terminal_turns_into_sigint() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let mut spec = on_terminal("echo ready; exec sleep 1000", 24, 80);
    spec.stdin = true;
    let mut run = stack.client().exec(spec).await.unwrap();
    until(&mut run, &mut Vec::new(), b"ready\r\n").await;
    run.write_stdin(b"\x03").await.unwrap();
    let (out, last) = finish(&mut run).await;
    assert_eq!(last, Event::Exited(ExitStatus::Signal(2)));
    // The terminal echoes it as ^C.
    assert_eq!(out, b"^C");
}

#[tokio::test]
async fn bad_sizes_and_types_are_refused_with_a_clear_error() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    for (rows, cols) in [(0, 80), (24, 0), (10_001, 80), (24, u16::MAX)] {
        let err = client
            .exec(on_terminal("true", rows, cols))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::InvalidRequest(InvalidRequest::TerminalSize { rows: r, cols: c })
                    if (r, c) == (rows, cols)
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("1 to 10000"), "{err}");
    }
    let mut spec = on_terminal("true", 24, 80);
    spec.terminal = Some(Terminal::new(24, 80).with_term("xterm\n256color"));
    assert!(matches!(
        client.exec(spec).await.unwrap_err(),
        ClientError::InvalidRequest(InvalidRequest::TermValue)
    ));
    // Nothing was sent for those: no session was needed.
    assert_eq!(client.sessions_opened(), 0);
    // A resize out of bounds, or of a command without a terminal, is
    // refused here too; the command goes on.
    let mut spec = on_terminal("echo ready; read line; exit 4", 24, 80);
    spec.stdin = true;
    let mut run = client.exec(spec).await.unwrap();
    until(&mut run, &mut Vec::new(), b"ready\r\n").await;
    for (rows, cols) in [(0, 80), (80, 10_001)] {
        assert!(matches!(
            run.resize(rows, cols).await,
            Err(ClientError::InvalidRequest(
                InvalidRequest::TerminalSize { .. }
            ))
        ));
    }
    run.write_stdin(b"go\n").await.unwrap();
    assert_eq!(finish(&mut run).await.1, Event::Exited(ExitStatus::Code(4)));
    let mut piped = client.exec(ExecSpec::new(["sleep", "1000"])).await.unwrap();
    assert!(matches!(
        piped.resize(24, 80).await,
        Err(ClientError::InvalidRequest(InvalidRequest::NoTerminal))
    ));
    piped.cancel().await.unwrap();
    assert_eq!(
        finish(&mut piped).await.1,
        Event::Exited(ExitStatus::Signal(9))
    );
}

#[tokio::test]
async fn an_exec_server_run_with_no_tty_refuses_terminals_and_runs_pipes() {
    exporter();
    let stack = Stack::start_with(|c| c.terminals = false).await.unwrap();
    let client = stack.client();
    let mut run = client.exec(on_terminal("echo hi", 24, 80)).await.unwrap();
    let (out, last) = finish(&mut run).await;
    assert!(out.is_empty());
    let Event::Failed(ExecFailure::NoTerminal(message)) = &last else {
        panic!("{last:?}")
    };
    assert!(message.contains("--no-tty"), "{message}");
    assert_eq!(ExecFailure::NoTerminal(message.clone()).shell_code(), 255);
    let out = client
        .output(ExecSpec::new(["sh", "-c", "echo piped"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"piped\n");
}

/// The spans of one trace, by name.
fn trace_of(trace_id: &str) -> Vec<SpanData> {
    let (provider, exporter) = exporter();
    provider.force_flush().unwrap();
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace_id)
        .collect()
}

fn the<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {:?}", names(spans));
    found[0]
}

fn names(spans: &[SpanData]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for s in spans {
        *n.entry(s.name.to_string()).or_default() += 1;
    }
    n
}

/// The one span of `name` whose `rex.message` is `what`.
fn message<'a>(spans: &'a [SpanData], name: &str, what: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && attr(s, "rex.message") == Some(Value::from(what.to_owned())))
        .collect();
    assert_eq!(found.len(), 1, "{name} ({what}): {:?}", names(spans));
    found[0]
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// Runs a terminal session that prints `print` bytes, is resized `resizes`
/// times and is then told (typed) to exit; returns its trace id.
async fn session(stack: &Stack, print: usize, resizes: u16) -> String {
    let script = format!(
        "echo ready; head -c {print} /dev/zero | tr '\\0' x; echo; echo printed; \
         read line; exit 4"
    );
    let mut spec = on_terminal(&script, 24, 80);
    spec.stdin = true;
    let client = stack.client();
    let mut run = client.exec(spec).await.unwrap();
    let id = run.trace_id().unwrap();
    let mut shown = Vec::new();
    until(&mut run, &mut shown, b"printed\r\n").await;
    // What the terminal showed first.
    assert!(shown.starts_with(b"ready\r\n"), "{shown:?}");
    for i in 0..resizes {
        run.resize(30 + i, 90 + i).await.unwrap();
    }
    run.write_stdin(b"secret-input\n").await.unwrap();
    assert_eq!(finish(&mut run).await.1, Event::Exited(ExitStatus::Code(4)));
    client.close().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_is_an_attribute_and_its_input_and_resizes_are_counted() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let quiet = session(&stack, 0, 0).await;
    let busy = session(&stack, 2 * 1024 * 1024, 20).await;
    let quiet = trace_of(&quiet);
    let busy = trace_of(&busy);
    // O(1) spans: as many, of each name, however much it printed and
    // however often it was resized.
    assert_eq!(names(&quiet), names(&busy));
    for span in [
        the(&busy, spans::TOOL_DISPATCH),
        the(&busy, spans::RPC_SERVER_EXEC),
    ] {
        assert_eq!(attr(span, "rex.terminal"), Some(Value::Bool(true)));
        assert_eq!(attr(span, "rex.terminal.rows"), Some(Value::I64(24)));
        assert_eq!(attr(span, "rex.terminal.cols"), Some(Value::I64(80)));
    }
    let typed = i64::try_from(b"secret-input\n".len()).unwrap();
    for span in [
        the(&busy, spans::TERMINAL_DELIVERY),
        the(&busy, spans::TERMINAL_PUSH),
    ] {
        assert_eq!(
            attr(span, "rex.resizes"),
            Some(Value::I64(20)),
            "{}",
            span.name
        );
        assert_eq!(
            attr(span, "rex.stdin.bytes"),
            Some(Value::I64(typed)),
            "{}",
            span.name
        );
    }
    assert_eq!(
        attr(the(&quiet, spans::TERMINAL_DELIVERY), "rex.resizes"),
        Some(Value::I64(0))
    );
    // The first output is the terminal's first byte: it ends once the
    // first stdout event has come (its frame decoded, after the exec-server
    // sent it and after the start was handed over), and before the rest
    // (the exit, which the session only makes after the caller, having
    // seen the output, typed its line). All spans of one process: one
    // clock, so this is order, not timing.
    for trace in [&quiet, &busy] {
        let first = the(trace, spans::EXEC_FIRST_OUTPUT);
        let dispatch = the(trace, spans::TOOL_DISPATCH);
        assert_eq!(first.start_time, dispatch.start_time);
        assert_eq!(first.parent_span_id, dispatch.span_context.span_id());
        let sent = message(trace, spans::RELAY_FRAME_SEND, "output.first");
        let received = message(trace, spans::RELAY_FRAME_RECV, "output.first");
        let exited = message(trace, spans::RELAY_FRAME_RECV, "exited");
        let delivery = the(trace, spans::TERMINAL_DELIVERY);
        assert!(sent.start_time <= received.start_time);
        assert!(received.end_time <= first.end_time);
        assert!(delivery.start_time <= first.end_time);
        assert!(first.end_time <= exited.start_time);
        assert!(first.end_time <= delivery.end_time);
    }
    // What was typed or shown is in no span.
    for span in busy.iter().chain(&quiet) {
        for kv in &span.attributes {
            let text = kv.value.as_str();
            assert!(
                !text.contains("secret") && !text.contains("xxxx"),
                "{} carries {}",
                span.name,
                kv.key
            );
        }
    }
}

/// Polls (bounded) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive(pid: i32) -> bool {
    // A zombie has ended too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn the_end_of_the_session_hangs_the_terminal_up() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("hung-up");
    // The session leader hears SIGHUP, as when a terminal's line drops.
    let script = "trap 'echo hup > hung-up; exit 0' HUP; echo ready; while :; do sleep 0.05; done";
    let mut spec = on_terminal(script, 24, 80);
    spec.cwd = Some(dir.path().to_path_buf());
    let client = stack.client();
    let mut run = client.exec(spec).await.unwrap();
    until(&mut run, &mut Vec::new(), b"ready\r\n").await;
    client.close().await;
    eventually("the session leader got SIGHUP", || marker.exists()).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "hup\n");

    // An interactive bash passes the hang-up on to its jobs, so a job it
    // left running in the background ends too (as over ssh).
    if !std::path::Path::new("/bin/bash").exists() {
        eprintln!("bash is not installed here: its jobs were not tried");
        return;
    }
    let client = stack.client();
    let mut spec = ExecSpec::new(["bash", "--norc", "--noprofile", "-i"]);
    spec.terminal = Some(Terminal::new(24, 80));
    spec.stdin = true;
    spec.env = vec![("PS1".into(), "bash$ ".into())];
    let mut run = client.exec(spec).await.unwrap();
    let mut out = Vec::new();
    until(&mut run, &mut out, b"bash$ ").await;
    out.clear();
    run.write_stdin(b"sleep 1000 & echo job=$!\n")
        .await
        .unwrap();
    until(&mut run, &mut out, b"bash$ ").await;
    let text = String::from_utf8_lossy(&out).into_owned();
    // The typed line is echoed too; the job's pid is on a line of its own.
    let job: i32 = text
        .split(['\r', '\n'])
        .find_map(|l| l.strip_prefix("job="))
        .unwrap_or_else(|| panic!("{text:?}"))
        .parse()
        .unwrap();
    assert!(alive(job));
    client.close().await;
    eventually("the background job ended with the session", || !alive(job)).await;
}

/// The lines of a terminal's output (CR LF or LF ended).
fn shown_lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .split(['\r', '\n'])
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_login_shell_is_the_users_own_at_home_and_is_named_by_its_file_name() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let shell = exec_server::shell::LoginShell::of_this_user();
    let mut spec = ExecSpec::login_shell();
    spec.terminal = Some(Terminal::new(24, 80));
    spec.stdin = true;
    let client = stack.client();
    let mut run = client.exec(spec).await.unwrap();
    let id = run.trace_id().unwrap();
    let started = tokio::time::timeout(WAIT, run.next()).await.unwrap();
    assert_eq!(
        started.as_ref().map(|e| match e {
            Event::Started { program, .. } => program.clone(),
            _ => None,
        }),
        Some(Some(shell.program())),
        "{started:?}"
    );
    // Typed before the shell has read its profile: the terminal keeps it.
    run.write_stdin(b"echo \"zero=$0\"; echo \"home=$(pwd -P)\"; exit 5\n")
        .await
        .unwrap();
    let (out, last) = finish(&mut run).await;
    assert_eq!(last, Event::Exited(ExitStatus::Code(5)));
    let lines = shown_lines(&out);
    let argv0 = shell.argv0().into_string().unwrap();
    assert!(lines.contains(&format!("zero={argv0}")), "{lines:?}");
    if let Some(home) = shell.home_dir() {
        let home = home.canonicalize().unwrap();
        assert!(
            lines.contains(&format!("home={}", home.display())),
            "{lines:?}"
        );
    }
    client.close().await;

    // Spans name the shell by its file name, never by its path or argv[0].
    let spans = trace_of(&id);
    let name = Some(Value::from(shell.program()));
    let dispatch = the(&spans, spans::TOOL_DISPATCH);
    assert_eq!(attr(dispatch, "process.executable.name"), name);
    assert_eq!(attr(dispatch, "rex.login_shell"), Some(Value::Bool(true)));
    for server_side in [spans::RPC_SERVER_EXEC, spans::PROCESS_RUN] {
        assert_eq!(
            attr(the(&spans, server_side), "process.executable.name"),
            name,
            "{server_side}"
        );
    }
    let path = shell.path.display().to_string();
    for span in &spans {
        for kv in &span.attributes {
            let text = kv.value.as_str();
            assert!(
                text != path && text != argv0,
                "{} carries {} = {text}",
                span.name,
                kv.key
            );
        }
    }
}

#[tokio::test]
async fn a_login_shell_without_a_terminal_runs_with_pipes_in_the_directory_asked_for() {
    exporter();
    let stack = Stack::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ExecSpec::login_shell();
    spec.stdin = true;
    spec.cwd = Some(dir.path().to_path_buf());
    let client = stack.client();
    let mut run = client.exec(spec).await.unwrap();
    run.write_stdin(b"test -t 0 || echo piped; echo \"here=$(pwd -P)\"; exit 3\n")
        .await
        .unwrap();
    run.close_stdin().await.unwrap();
    let mut out = Vec::new();
    let last = loop {
        match tokio::time::timeout(WAIT, run.next()).await.unwrap() {
            Some(Event::Stdout(d)) => out.extend_from_slice(&d),
            Some(Event::Stderr(_) | Event::Started { .. }) => {}
            Some(last) => break last,
            None => panic!("no final event"),
        }
    };
    assert_eq!(last, Event::Exited(ExitStatus::Code(3)));
    let lines = shown_lines(&out);
    let here = dir.path().canonicalize().unwrap();
    assert!(lines.contains(&"piped".to_owned()), "{lines:?}");
    assert!(
        lines.contains(&format!("here={}", here.display())),
        "{lines:?}"
    );
}

#[tokio::test]
async fn an_exec_server_without_login_shells_refuses_one_clearly_and_runs_commands() {
    exporter();
    let stack = Stack::start_with(|c| c.login_shells = false).await.unwrap();
    let client = stack.client();
    let mut run = client.exec(ExecSpec::login_shell()).await.unwrap();
    let last = tokio::time::timeout(WAIT, run.next()).await.unwrap();
    let Some(Event::Failed(failure @ ExecFailure::Refused(message))) = &last else {
        panic!("{last:?}")
    };
    assert!(message.contains("does not start login shells"), "{message}");
    assert!(message.contains("older"), "{message}");
    assert_eq!(failure.shell_code(), 255);
    // The session is whole: a command runs.
    let out = client
        .output(ExecSpec::new(["sh", "-c", "echo still"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"still\n");
    // A login shell with a command is refused here, before anything is
    // sent.
    let mut both = ExecSpec::login_shell();
    both.argv = vec!["sh".into()];
    assert!(matches!(
        client.exec(both).await.unwrap_err(),
        ClientError::InvalidRequest(InvalidRequest::LoginShellWithCommand)
    ));
}
