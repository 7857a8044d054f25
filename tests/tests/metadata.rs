//! Command and process records (the `metadata` crate) end to end: every
//! record a flush confirmed survives SIGKILL of its writer at random
//! points; stalled writers never hold commands up, and once they resume
//! both sides' records are complete; `core-client history` and
//! `trace show` over what the built binaries recorded; a corrupt
//! database is reported in one line (and stops the command only with
//! `--strict-records`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration_tests::binaries::{self, ProcStack};
use integration_tests::crash_records::{earlier, record};
use integration_tests::stack::Stack;
use metadata::{CommandRecord, Exit, Progress, Store, WriterConfig};
use rand::Rng;
use rex_client::{Client, ExecSpec, ExitStatus};

/// Bound on anything that should be quick, only so a bug cannot hang the
/// test.
const WAIT: Duration = Duration::from_secs(60);

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

// ---------------------------------------------------------------------------
// Crash safety

/// How many times the writer is started and killed.
const CRASH_ITERATIONS: usize = 25;

/// One run of the writer: started on `dir` at record `first`, killed with
/// SIGKILL after `delay` (counted from its first confirmation when
/// `after_first_ok`, else from its start). Returns the records it
/// confirmed, in the order it printed them.
fn crash_run(dir: &Path, first: u64, delay: Duration, after_first_ok: bool) -> Vec<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metadata-crash-writer"))
        .arg(dir)
        .arg(first.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut got = Vec::new();
    let waited = if after_first_ok {
        lines.recv_timeout(WAIT).map(|l| got.push(l))
    } else {
        Ok(())
    };
    if waited.is_ok() {
        std::thread::sleep(delay);
    }
    // std's kill is SIGKILL.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(
        waited.is_ok(),
        "the writer confirmed nothing within {WAIT:?} ({status}): {stderr}"
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "the writer ended before it was killed ({status}): {stderr}"
    );
    got.extend(lines.try_iter());
    let ids: Vec<u64> = got
        .iter()
        .map(|l| {
            l.strip_prefix("ok ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?} from the writer"))
        })
        .collect();
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(*id, first + k as u64, "confirmations in order: {got:?}");
    }
    ids
}

/// Checks that every confirmed record is in the store at `db` with
/// exactly its final contents, and that every other row is a state the
/// writer wrote, whole. Returns how many rows there are.
fn check_store(db: &Path, confirmed: &BTreeSet<u64>, iteration: usize) -> usize {
    let store = Store::open(db).unwrap_or_else(|e| panic!("after kill {iteration}: {e}"));
    let rows: HashMap<String, CommandRecord> = store
        .commands(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    for &i in confirmed {
        let want = record(i);
        match rows.get(&want.id) {
            Some(got) => assert_eq!(got, &want, "record {i} after kill {iteration}"),
            None => panic!(
                "record {i} was confirmed but is missing after kill {iteration} \
                 ({} rows, {} confirmed)",
                rows.len(),
                confirmed.len()
            ),
        }
    }
    for (id, got) in &rows {
        let i: u64 = id
            .parse()
            .unwrap_or_else(|_| panic!("a row with id {id:?} after kill {iteration}"));
        assert!(
            *got == record(i) || *got == earlier(i),
            "row {id} is not a state the writer wrote (after kill {iteration}): {got:?}"
        );
    }
    rows.len()
}

#[test]
fn records_confirmed_by_a_flush_survive_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(metadata::store::FILE_NAME);
    let mut rng = rand::rng();
    let mut confirmed = BTreeSet::new();
    let mut next = 0u64;
    let mut history = Vec::new();
    for iteration in 0..CRASH_ITERATIONS {
        // Every other run is killed at a random time after it starts
        // (opening the store or creating its schema included); the
        // others once they have confirmed something, so that every
        // other run must add records.
        let after_first_ok = iteration % 2 == 1;
        let delay = Duration::from_millis(rng.random_range(5..=150));
        let ids = crash_run(dir.path(), next, delay, after_first_ok);
        if after_first_ok {
            assert!(!ids.is_empty());
        }
        if let Some(last) = ids.last() {
            next = last + 1;
        }
        let before = confirmed.len();
        confirmed.extend(ids.iter().copied());
        assert_eq!(confirmed.len(), before + ids.len(), "ids are new");
        history.push(confirmed.len());
        if db.exists() {
            let rows = check_store(&db, &confirmed, iteration);
            assert!(rows >= confirmed.len());
        } else {
            assert!(confirmed.is_empty(), "confirmed records but no database");
        }
    }
    // The confirmed records grew with every run that was let confirm.
    for (k, pair) in history.windows(2).enumerate() {
        assert!(pair[1] >= pair[0], "{history:?}");
        if (k + 1) % 2 == 1 {
            assert!(
                pair[1] > pair[0],
                "run {} added nothing: {history:?}",
                k + 1
            );
        }
    }
    assert!(
        history.last().copied().unwrap_or(0) >= CRASH_ITERATIONS / 2,
        "{history:?}"
    );
}

// ---------------------------------------------------------------------------
// Off the hot path

/// Runs `spec`; returns its trace id and output.
async fn run_traced(client: &Client, spec: ExecSpec) -> (String, rex_client::Output) {
    let exec = tokio::time::timeout(WAIT, client.exec(spec))
        .await
        .expect("exec within the bound")
        .unwrap();
    let trace = exec.trace_id().expect("a traced call");
    let out = tokio::time::timeout(WAIT, exec.output())
        .await
        .expect("the command finished within the bound")
        .unwrap();
    (trace, out)
}

async fn flush(p: &metadata::Persister) -> Result<(), metadata::PersistError> {
    let p = p.clone();
    tokio::task::spawn_blocking(move || p.flush_within(WAIT))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_writers_never_hold_commands_up_and_catch_up_after() {
    // Real span contexts, so records carry trace ids.
    let provider = telemetry::provider::base_builder("test".into()).build();
    opentelemetry::global::set_tracer_provider(provider);

    let client_dir = tempfile::tempdir().unwrap();
    let server_dir = tempfile::tempdir().unwrap();
    let client_records = metadata::open(client_dir.path(), WriterConfig::default()).unwrap();
    let server_records = metadata::open(server_dir.path(), WriterConfig::default()).unwrap();
    client_records.faults().stall();
    server_records.faults().stall();
    let stack = {
        let records = server_records.clone();
        Stack::start_with(move |cfg| cfg.metadata = Some(records))
            .await
            .unwrap()
    };
    let mut config = stack.client_config();
    config.metadata = Some(client_records.clone());
    assert!(!config.record_args, "arguments are not recorded by default");
    let client = Client::new(config);

    // (trace id, exit code, stdout bytes)
    let mut ran = Vec::new();
    for k in 0..20 {
        let arg = format!("arg{k}");
        let spec = ExecSpec::new(["sh", "-c", "echo $0; exit 3", arg.as_str()]);
        let (trace, out) = run_traced(&client, spec).await;
        assert_eq!(out.status, ExitStatus::Code(3));
        assert_eq!(out.stdout, format!("{arg}\n").into_bytes());
        assert!(out.stderr.is_empty(), "{:?}", out.stderr);
        ran.push((trace, 3, out.stdout.len() as u64));
    }
    let big = 5 * 1024 * 1024;
    let spec = ExecSpec::new(["sh", "-c", "head -c 5242880 /dev/zero | tr '\\0' x; exit 3"]);
    let (trace, out) = run_traced(&client, spec).await;
    assert_eq!(out.status, ExitStatus::Code(3));
    assert_eq!(out.stdout.len(), big);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    ran.push((trace, 3, big as u64));
    let traces: BTreeSet<&str> = ran.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(traces.len(), ran.len(), "one trace per command");

    // The writers really were stalled all along: nothing reached the disk,
    // and a barrier cannot complete.
    let stored = |p: &metadata::Persister| Store::open(p.path()).unwrap();
    assert!(stored(&client_records).commands(100).unwrap().is_empty());
    assert!(stored(&server_records).processes(100).unwrap().is_empty());
    let p = client_records.clone();
    let err = tokio::task::spawn_blocking(move || p.flush_within(Duration::from_millis(200)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, metadata::PersistError::Timeout { .. }),
        "{err}"
    );

    client_records.faults().resume();
    server_records.faults().resume();
    flush(&client_records).await.unwrap();
    flush(&server_records).await.unwrap();

    let server_id = stack.server.key.public().server_id();
    let commands = stored(&client_records).commands(1000).unwrap();
    let processes = stored(&server_records).processes(1000).unwrap();
    assert_eq!(commands.len(), ran.len(), "{commands:#?}");
    assert_eq!(processes.len(), ran.len(), "{processes:#?}");
    for (trace, code, bytes) in &ran {
        let c: Vec<&CommandRecord> = commands
            .iter()
            .filter(|c| &c.trace.trace_id == trace)
            .collect();
        assert_eq!(c.len(), 1, "one command record for trace {trace}");
        let c = c[0];
        assert!(is_hex(&c.id, 32), "{c:?}");
        assert_eq!(c.server_id, server_id);
        assert_eq!(c.program, "sh");
        assert_eq!(c.args, None, "arguments are recorded only when asked");
        assert!(is_hex(&c.trace.trace_id, 32), "{c:?}");
        assert!(is_hex(&c.trace.span_id, 16), "{c:?}");
        assert_eq!(c.progress, Progress::Finished, "{c:?}");
        assert_eq!(c.exit, Some(Exit::Code(*code)), "{c:?}");
        assert_eq!(c.stdout_bytes, *bytes, "{c:?}");
        assert_eq!(c.stderr_bytes, 0, "{c:?}");
        let first = c.first_output_us.expect("first output time");
        let total = c.total_us.expect("total time");
        assert!(0 <= first && first <= total, "{c:?}");
        assert!(c.started_unix_ms > 1_600_000_000_000, "{c:?}");

        let p: Vec<&metadata::ProcessRecord> = processes
            .iter()
            .filter(|p| &p.trace.trace_id == trace)
            .collect();
        assert_eq!(p.len(), 1, "one process record for trace {trace}");
        let p = p[0];
        assert!(is_hex(&p.id, 32), "{p:?}");
        assert_eq!(p.program, "sh");
        assert!(p.pid.is_some_and(|pid| pid > 0), "{p:?}");
        assert_eq!(p.progress, Progress::Finished, "{p:?}");
        assert_eq!(p.exit, Some(Exit::Code(*code)), "{p:?}");
        assert_eq!(p.stdout_bytes, *bytes, "{p:?}");
        assert_eq!(p.stderr_bytes, 0, "{p:?}");
        assert!(
            p.exited_unix_ms.is_some_and(|t| t >= p.started_unix_ms),
            "{p:?}"
        );
        assert_ne!(
            p.trace.span_id, c.trace.span_id,
            "the exec span, not the dispatch"
        );
    }
    client.close().await;
}

// ---------------------------------------------------------------------------
// The command line

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `core-client exec` through `stack` with `flags`, not continuing any
/// trace of the test's environment.
fn exec(stack: &ProcStack, flags: &[&str], argv: &[&str]) -> Command {
    let mut cmd = stack.exec_with(flags, argv);
    cmd.env_remove("TRACEPARENT").env_remove("TRACESTATE");
    cmd
}

fn client_data(stack: &ProcStack) -> PathBuf {
    stack.dir.path().join("client-data")
}

/// `core-client ARGS` with the data dir and trace file `stack.exec` uses.
fn core_client(stack: &ProcStack, args: &[&str]) -> Command {
    let mut cmd = Command::new(binaries::path("core-client").unwrap());
    cmd.args(args)
        .env("REX_DATA_DIR", client_data(stack))
        .env("REX_TRACE_FILE", stack.dir.path().join("traces.jsonl"))
        .env("XDG_CONFIG_HOME", stack.dir.path().join("config"));
    cmd
}

fn history_json(stack: &ProcStack) -> Vec<serde_json::Value> {
    let out = run(core_client(stack, &["history", "--json"]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().expect("a JSON array").clone()
}

#[test]
fn history_and_trace_show_over_what_the_binaries_recorded() {
    let stack = ProcStack::start(&[]).unwrap();
    let script = "echo hi; exit 3";
    let out = run(exec(&stack, &["--print-trace-id"], &["sh", "-c", script]));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let trace = binaries::printed_trace_id(&out).unwrap();
    assert!(is_hex(&trace, 32), "{trace}");
    let server_id = stack
        .server_pub
        .parse::<proto::keys::PublicKey>()
        .unwrap()
        .server_id();

    // JSON: newest first, everything the client saw.
    let rows = history_json(&stack);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(r["trace"]["trace_id"], trace.as_str(), "{r:#}");
    assert!(is_hex(r["trace"]["span_id"].as_str().unwrap(), 16), "{r:#}");
    assert!(is_hex(r["id"].as_str().unwrap(), 32), "{r:#}");
    assert_eq!(r["server_id"], server_id.as_str(), "{r:#}");
    assert_eq!(r["program"], "sh", "{r:#}");
    assert!(r["args"].is_null(), "arguments only when asked: {r:#}");
    assert_eq!(r["progress"], "finished", "{r:#}");
    assert_eq!(r["exit"], serde_json::json!({"code": 3}), "{r:#}");
    assert_eq!(r["stdout_bytes"], 3, "{r:#}");
    assert_eq!(r["stderr_bytes"], 0, "{r:#}");
    let first = r["first_output_us"].as_i64().expect("first output time");
    let total = r["total_us"].as_i64().expect("total time");
    assert!(0 <= first && first <= total, "{r:#}");
    assert!(r["started_unix_ms"].as_i64().unwrap() > 1_600_000_000_000);

    // The table: a header, then the command with its trace id.
    let out = run(core_client(&stack, &["history"]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    for column in ["when (UTC)", "program", "exit", "trace"] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().unwrap_or_default();
    assert!(row.contains(&trace), "no row with trace {trace}:\n{table}");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.contains(&"sh") && cells.contains(&"3"), "{table}");
    assert_eq!(lines.next(), None, "one command: {table}");

    // Its trace, from the local trace file.
    let out = run(core_client(&stack, &["trace", "show", &trace]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("tool.dispatch"), "{text}");
    assert!(text.contains(&trace), "{text}");

    // --record-args keeps the arguments; --no-records keeps nothing.
    let out = run(exec(
        &stack,
        &["--record-args", "--print-trace-id"],
        &["sh", "-c", "echo with args", "zero"],
    ));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let with_args = binaries::printed_trace_id(&out).unwrap();
    let out = run(exec(
        &stack,
        &["--no-records", "--print-trace-id"],
        &["sh", "-c", "echo unrecorded"],
    ));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let unrecorded = binaries::printed_trace_id(&out).unwrap();
    let rows = history_json(&stack);
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["trace"]["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [with_args.as_str(), trace.as_str()], "newest first");
    assert!(!ids.contains(&unrecorded.as_str()));
    assert_eq!(
        rows[0]["args"],
        serde_json::json!(["-c", "echo with args", "zero"]),
        "{:#}",
        rows[0]
    );
    assert_eq!(rows[0]["exit"], serde_json::json!({"code": 0}));
    assert_eq!(rows[0]["stdout_bytes"], 10);
    assert!(rows[1]["args"].is_null());
    let out = run(core_client(&stack, &["history", "--json", "--limit", "1"]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v:#}");

    // The exec-server's own record of the process, written in the
    // background: polled, never flushed.
    let db = stack
        .dir
        .path()
        .join("server-data")
        .join(metadata::store::FILE_NAME);
    let deadline = Instant::now() + Duration::from_secs(10);
    let process = loop {
        let found = Store::open(&db).ok().and_then(|s| {
            s.processes(100)
                .ok()?
                .into_iter()
                .find(|p| p.trace.trace_id == trace && p.progress == Progress::Finished)
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the exec-server recorded no finished process for trace {trace} in {}",
            db.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(process.program, "sh", "{process:?}");
    assert!(process.pid.is_some_and(|p| p > 0), "{process:?}");
    assert_eq!(process.exit, Some(Exit::Code(3)), "{process:?}");
    assert_eq!(process.stdout_bytes, 3, "{process:?}");
}

#[test]
fn a_corrupt_database_is_one_line_and_stops_the_command_only_when_strict() {
    let stack = ProcStack::start(&[]).unwrap();
    let data = stack.dir.path().join("corrupt-data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join(metadata::store::FILE_NAME);
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let marker = stack.dir.path().join("marker");
    let script = format!("echo ran > '{}'", marker.display());
    let argv = ["sh", "-c", script.as_str()];

    // Not strict: it runs, with one line naming the file.
    let mut cmd = exec(&stack, &[], &argv);
    cmd.env("REX_DATA_DIR", &data);
    let out = run(cmd);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the file is left alone"
    );

    // Strict: it does not run; exit 1 with one line naming the file.
    std::fs::remove_file(&marker).unwrap();
    let mut cmd = exec(&stack, &["--strict-records"], &argv);
    cmd.env("REX_DATA_DIR", &data);
    let out = run(cmd);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!marker.exists(), "the command ran: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("--strict-records"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the file is left alone"
    );

    // history over it: a clear error too.
    let mut cmd = core_client(&stack, &["history"]);
    cmd.env("REX_DATA_DIR", &data);
    let out = run(cmd);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&db.display().to_string()), "{err}");
}

#[test]
fn history_without_a_database_says_nothing_was_recorded_yet() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("empty");
    let out = run({
        let mut cmd = Command::new(binaries::path("core-client").unwrap());
        cmd.arg("history")
            .env("REX_DATA_DIR", &data)
            .env("XDG_CONFIG_HOME", dir.path().join("config"));
        cmd
    });
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("no commands have been recorded yet"), "{err}");
    assert!(
        !data.join(metadata::store::FILE_NAME).exists(),
        "nothing created"
    );
}
