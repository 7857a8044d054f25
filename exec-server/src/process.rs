//! One remote process: spawn, pump its pipes into terminal events as they
//! happen, deliver signals to its process group, report its exit.
//!
//! Output is read in chunks of at most [`MAX_CHUNK`] and each chunk waits
//! for room in the session's bounded event queue before the next read, so a
//! slow client stops the pipe reads (and so the child) rather than growing a
//! buffer.
//!
//! Spans made here (DESIGN.md §3.2): `rpc.server.queue` (from the enqueue
//! time the request carries to this task's start), `process.spawn`,
//! `process.run` (with the id the child's `TRACEPARENT` already names), and
//! under it `process.stdout_reader`, `process.stderr_reader` and
//! `process.exit_watcher`, which count bytes, chunks and the time spent
//! waiting for room in the session's queue rather than making a span per
//! chunk.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::unistd::Pid;
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanId, TraceContextExt, Tracer};
use proto::keys::EnvPolicy;
use proto::limits::MAX_CHUNK;
use proto::pb::session::{
    ExecError, ExecErrorKind, ExecRequest, Exited, Started, StdinMode, exited, terminal_event,
};
use telemetry::remote::{StageSpan, Timeline};
use telemetry::spans;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::contain::{Containment, SpawnError};
use crate::stdin::StdinReceiver;

/// The signal that ends a process group for good.
const SIGKILL: i32 = NixSignal::SIGKILL as i32;

/// A control message for a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Deliver a signal to the process group.
    Signal(i32),
}

/// A terminal event for the session to push, tagged with its call (the
/// session numbers it).
#[derive(Debug)]
pub struct Outgoing {
    /// The call it belongs to.
    pub call_id: u64,
    /// The event.
    pub kind: terminal_event::Kind,
    /// Whether this is the call's final event.
    pub last: bool,
    /// When it was queued (for the push's queue-residence total).
    pub queued_at: Instant,
    /// With the final event: the process task's stages for the call's
    /// summary (empty otherwise).
    pub stages: Timeline,
}

/// Where a process task's spans hang.
#[derive(Debug, Clone)]
pub struct ProcessTrace {
    /// The dispatching call's context (parent of `rpc.server.queue`).
    pub dispatch: Context,
    /// `rpc.server.exec`'s context (parent of `process.spawn`/`process.run`).
    pub exec: Context,
    /// The id `process.run` gets (the child's `TRACEPARENT` names it);
    /// `SpanId::INVALID` when the provider cannot preset ids.
    pub run_span_id: SpanId,
    /// When the request was queued for the task.
    pub enqueued: SystemTime,
}

impl ProcessTrace {
    /// No parent: the spans start a trace of their own.
    pub fn detached() -> Self {
        Self {
            dispatch: Context::new(),
            exec: Context::new(),
            run_span_id: telemetry::ids::new_span_id(),
            enqueued: SystemTime::now(),
        }
    }
}

/// A pipe reader's or the exit watcher's span and its counts.
struct Watch {
    span: StageSpan,
    bytes: i64,
    chunks: i64,
    blocked: Duration,
}

impl Watch {
    fn start(tracer: &BoxedTracer, name: &'static str, parent: &Context, at: SystemTime) -> Self {
        Self {
            span: StageSpan::start(tracer, name, parent, at),
            bytes: 0,
            chunks: 0,
            blocked: Duration::ZERO,
        }
    }

    fn count(&mut self, len: usize, blocked: Duration) {
        self.bytes += i64::try_from(len).unwrap_or(i64::MAX);
        self.chunks += 1;
        self.blocked += blocked;
    }

    fn end(mut self, stages: &mut Timeline) {
        self.span.set_int("rex.bytes", self.bytes);
        self.span.set_int("rex.chunks", self.chunks);
        self.span.set_int(
            "rex.blocked_ns",
            i64::try_from(self.blocked.as_nanos()).unwrap_or(i64::MAX),
        );
        stages.push(self.span.end_at(SystemTime::now()));
    }
}

/// What the process task needs from its session.
#[derive(Debug)]
pub struct ProcessIo {
    /// The call id.
    pub call_id: u64,
    /// Where events go (bounded; shared by the session's processes).
    pub events: mpsc::Sender<Outgoing>,
    /// Signals from the client.
    pub control: mpsc::Receiver<Control>,
    /// Stdin chunks from the client; the sender is dropped at stdin close.
    pub stdin: Option<StdinReceiver>,
    /// Cancelled when the client cancels the call or the session ends.
    pub cancel: CancellationToken,
}

/// Extra environment for the child (trace context).
pub type ExtraEnv = Vec<(String, String)>;

/// How a call's process is started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Working directory for a request that names none.
    pub default_cwd: Option<PathBuf>,
    /// Extra environment (trace context), set by the exec-server.
    pub extra_env: ExtraEnv,
    /// Which variables the client's key may set.
    pub env_policy: EnvPolicy,
    /// After the process exits, how long descendants' output is drained.
    pub exit_drain: Duration,
    /// Death signal, process group and cgroup.
    pub containment: Arc<Containment>,
}

impl Launch {
    /// Defaults: no default directory, no extra variables, any variable
    /// allowed, a two-second drain, no cgroups.
    pub fn plain() -> Self {
        Self {
            default_cwd: None,
            extra_env: Vec::new(),
            env_policy: EnvPolicy::Any,
            exit_drain: Duration::from_secs(2),
            containment: Containment::without_cgroups(),
        }
    }
}

/// A process's events on their way to its session.
struct Events {
    call_id: u64,
    events: mpsc::Sender<Outgoing>,
}

impl Events {
    /// Sends an event, waiting for room. Returns false if the session is gone.
    async fn send(&mut self, kind: terminal_event::Kind) -> bool {
        self.queue(kind, None).await
    }

    /// Sends the final event, with the task's stages.
    async fn finish(&mut self, kind: terminal_event::Kind, stages: Timeline) {
        self.queue(kind, Some(stages)).await;
    }

    async fn queue(&mut self, kind: terminal_event::Kind, stages: Option<Timeline>) -> bool {
        let out = Outgoing {
            call_id: self.call_id,
            kind,
            last: stages.is_some(),
            queued_at: Instant::now(),
            stages: stages.unwrap_or_default(),
        };
        self.events.send(out).await.is_ok()
    }
}

fn exec_error(kind: ExecErrorKind, message: String) -> terminal_event::Kind {
    terminal_event::Kind::Error(ExecError {
        kind: kind as i32,
        message,
    })
}

fn build_command(req: &ExecRequest, launch: &Launch) -> Result<Command, terminal_event::Kind> {
    let default_cwd = launch.default_cwd.as_deref();
    let Some((argv0, args)) = req.argv.split_first() else {
        return Err(exec_error(
            ExecErrorKind::BadRequest,
            "empty command: no program given".into(),
        ));
    };
    if argv0.is_empty() {
        return Err(exec_error(
            ExecErrorKind::BadRequest,
            "empty program name".into(),
        ));
    }
    let mut cmd = Command::new(OsStr::from_bytes(argv0));
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)));
    if req.clear_env {
        cmd.env_clear();
    }
    for var in &req.env {
        if var.name.is_empty() || var.name.contains(&b'=') || var.name.contains(&0) {
            return Err(exec_error(
                ExecErrorKind::BadRequest,
                "invalid environment variable name".into(),
            ));
        }
        if !launch.env_policy.allows(&var.name) {
            // The name is the client's own; it is told, never logged.
            return Err(exec_error(
                ExecErrorKind::PermissionDenied,
                format!(
                    "setting the environment variable {} is not allowed for this client key \
                     (its authorized_keys options)",
                    String::from_utf8_lossy(&var.name)
                ),
            ));
        }
        cmd.env(OsStr::from_bytes(&var.name), OsStr::from_bytes(&var.value));
    }
    for (k, v) in &launch.extra_env {
        cmd.env(k, v);
    }
    let cwd: Option<PathBuf> = if req.cwd.is_empty() {
        default_cwd.map(Path::to_path_buf)
    } else {
        Some(PathBuf::from(OsStr::from_bytes(&req.cwd)))
    };
    if let Some(dir) = &cwd {
        if !dir.is_dir() {
            return Err(exec_error(
                ExecErrorKind::BadCwd,
                "working directory does not exist or is not a directory".into(),
            ));
        }
        cmd.current_dir(dir);
    }
    let stdin = if req.stdin == StdinMode::Pipe as i32 {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

fn spawn_error(e: &SpawnError, program: &str) -> terminal_event::Kind {
    let SpawnError::Io(e) = e else {
        return exec_error(
            ExecErrorKind::SpawnFailed,
            format!("{program}: cannot start: {e}"),
        );
    };
    match e.kind() {
        std::io::ErrorKind::NotFound => exec_error(
            ExecErrorKind::NotFound,
            format!("{program}: command not found"),
        ),
        std::io::ErrorKind::PermissionDenied => exec_error(
            ExecErrorKind::PermissionDenied,
            format!("{program}: permission denied"),
        ),
        _ => exec_error(
            ExecErrorKind::SpawnFailed,
            format!("{program}: cannot start: {e}"),
        ),
    }
}

fn signal_group(pgid: Option<u32>, signo: i32) {
    let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Ok(sig) = NixSignal::try_from(signo) {
        // The group may already be gone; nothing to do then.
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

/// Writes the call's stdin into the child's, reporting each chunk taken.
/// Once the child has closed its stdin, what follows is dropped (and still
/// reported taken, so the client is never left waiting for credit).
async fn write_stdin(mut pipe: ChildStdin, input: StdinReceiver) {
    let mut open = true;
    while let Some(chunks) = input.next().await {
        for chunk in chunks {
            if open && pipe.write_all(&chunk).await.is_err() {
                open = false;
            }
            input.taken(chunk.len());
        }
    }
    if open {
        let _ = pipe.shutdown().await;
    }
}

async fn read_chunk<R: AsyncRead + Unpin>(pipe: &mut Option<R>) -> Option<Bytes> {
    let reader = pipe.as_mut()?;
    let mut buf = BytesMut::with_capacity(MAX_CHUNK);
    match reader.read_buf(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(buf.freeze()),
    }
}

/// Runs one process to completion, pushing its events. The returned
/// future ends after the final event (exited or error) was queued, or when
/// the session went away.
pub async fn run(req: ExecRequest, io: ProcessIo, launch: Launch, trace: ProcessTrace) {
    let tracer = opentelemetry::global::tracer("exec-server");
    // This task's stages, for the call's summary (sent with the final
    // event).
    let mut stages = Timeline::default();
    let taken = SystemTime::now();
    let queue = StageSpan::start(
        &tracer,
        spans::RPC_SERVER_QUEUE,
        &trace.dispatch,
        trace.enqueued,
    );
    stages.push(queue.end_at(taken));
    let ProcessIo {
        call_id,
        events,
        mut control,
        stdin,
        cancel,
    } = io;
    let mut seq = Events { call_id, events };
    let program = req
        .argv
        .first()
        .map(|a| proto::program::program_name(a))
        .unwrap_or_default();
    let mut spawn_span = StageSpan::start(&tracer, spans::PROCESS_SPAWN, &trace.exec, taken);
    let spawned = match build_command(&req, &launch) {
        Ok(cmd) => launch
            .containment
            .spawn(cmd)
            .await
            .map_err(|e| spawn_error(&e, &program)),
        Err(e) => Err(e),
    };
    // The command's cgroup (if any) is killed when this task ends, however
    // it ends.
    let (mut child, _group): (Child, _) = match spawned {
        Ok(c) => c,
        Err(kind) => {
            if let terminal_event::Kind::Error(e) = &kind {
                spawn_span.fail(e.message.clone());
            }
            stages.push(spawn_span.end_at(SystemTime::now()));
            seq.finish(kind, stages).await;
            return;
        }
    };
    let pid = child.id();
    let spawned_at = SystemTime::now();
    spawn_span.set_int("process.pid", i64::from(pid.unwrap_or(0)));
    stages.push(spawn_span.end_at(spawned_at));
    // process.run gets the id the child's TRACEPARENT already names.
    let start_run = || {
        tracer
            .span_builder(spans::PROCESS_RUN)
            .with_start_time(spawned_at)
            .start_with_context(&tracer, &trace.exec)
    };
    let run_span = if trace.run_span_id == SpanId::INVALID {
        start_run()
    } else {
        telemetry::ids::start_with_span_id(trace.run_span_id, start_run)
    };
    let mut run_span = StageSpan::wrap(run_span, spans::PROCESS_RUN, &trace.exec, spawned_at);
    run_span.set_text("process.executable.name", program.clone());
    run_span.set_int("process.pid", i64::from(pid.unwrap_or(0)));
    let run_cx = trace
        .exec
        .with_remote_span_context(run_span.span_context().clone());
    if !seq
        .send(terminal_event::Kind::Started(Started {
            pid: pid.unwrap_or(0),
        }))
        .await
    {
        signal_group(pid, SIGKILL);
        return;
    }
    // The stdin writer runs inside this task (no task of its own to track):
    // it is polled with the pipes below until it has written everything.
    let writer = match (child.stdin.take(), stdin) {
        (Some(pipe), Some(rx)) => Some(write_stdin(pipe, rx)),
        _ => None,
    };
    let mut writing = writer.is_some();
    let writer = async move {
        match writer {
            Some(w) => w.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(writer);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let watching = SystemTime::now();
    let mut out_watch = Some(Watch::start(
        &tracer,
        spans::PROCESS_STDOUT_READER,
        &run_cx,
        watching,
    ));
    let mut err_watch = Some(Watch::start(
        &tracer,
        spans::PROCESS_STDERR_READER,
        &run_cx,
        watching,
    ));
    let mut exit_watch = Some(Watch::start(
        &tracer,
        spans::PROCESS_EXIT_WATCHER,
        &run_cx,
        watching,
    ));
    let mut status = None;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut killed = false;
    loop {
        if stdout.is_none()
            && let Some(w) = out_watch.take()
        {
            w.end(&mut stages);
        }
        if stderr.is_none()
            && let Some(w) = err_watch.take()
        {
            w.end(&mut stages);
        }
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        let drain = async {
            match drain_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut writer, if writing => writing = false,
            () = cancel.cancelled(), if !killed => {
                signal_group(pid, SIGKILL);
                killed = true;
            }
            c = control.recv() => match c {
                Some(Control::Signal(n)) => signal_group(pid, n),
                None => {
                    // The session is gone: nobody can see this process any more.
                    signal_group(pid, SIGKILL);
                    return;
                }
            },
            chunk = read_chunk(&mut stdout), if stdout.is_some() => match chunk {
                Some(data) => {
                    let (len, t) = (data.len(), Instant::now());
                    if !seq.send(terminal_event::Kind::Stdout(data)).await {
                        signal_group(pid, SIGKILL);
                        return;
                    }
                    if let Some(w) = out_watch.as_mut() {
                        w.count(len, t.elapsed());
                    }
                }
                None => stdout = None,
            },
            chunk = read_chunk(&mut stderr), if stderr.is_some() => match chunk {
                Some(data) => {
                    let (len, t) = (data.len(), Instant::now());
                    if !seq.send(terminal_event::Kind::Stderr(data)).await {
                        signal_group(pid, SIGKILL);
                        return;
                    }
                    if let Some(w) = err_watch.as_mut() {
                        w.count(len, t.elapsed());
                    }
                }
                None => stderr = None,
            },
            s = child.wait(), if status.is_none() => {
                match s {
                    Ok(s) => status = Some(s),
                    Err(e) => {
                        run_span.fail("wait failed".into());
                        stages.push(run_span.end_at(SystemTime::now()));
                        seq.finish(exec_error(ExecErrorKind::Internal, format!("{program}: wait failed: {e}")), stages).await;
                        return;
                    }
                }
                if let Some(w) = exit_watch.take() {
                    w.end(&mut stages);
                }
                drain_deadline = Some(tokio::time::Instant::now() + launch.exit_drain);
            }
            () = drain => {
                // Descendants still hold the pipes open; stop waiting for them.
                stdout = None;
                stderr = None;
            }
        }
    }
    let exit = match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => exited::Status::Code(code),
            (None, Some(sig)) => exited::Status::Signal(sig),
            (None, None) => exited::Status::Code(-1),
        },
        None => exited::Status::Code(-1),
    };
    match exit {
        exited::Status::Code(c) => run_span.set_int("process.exit.code", i64::from(c)),
        exited::Status::Signal(s) => run_span.set_int("rex.exit.signal", i64::from(s)),
    }
    // Exit observed and both pipes drained.
    stages.push(run_span.end_at(SystemTime::now()));
    seq.finish(
        terminal_event::Kind::Exited(Exited { status: Some(exit) }),
        stages,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::pb::session::EnvVar;

    struct Run {
        events: Vec<terminal_event::Kind>,
    }

    impl Run {
        fn stdout(&self) -> Vec<u8> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    terminal_event::Kind::Stdout(d) => Some(d.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect()
        }
        fn last(&self) -> &terminal_event::Kind {
            self.events.last().unwrap()
        }
    }

    async fn run_req(req: ExecRequest, stdin: Option<Vec<u8>>) -> Run {
        let (tx, mut rx) = mpsc::channel(4);
        let (_ctl_tx, ctl_rx) = mpsc::channel(4);
        let (in_tx, in_rx) = crate::stdin::pipe(Default::default());
        let io = ProcessIo {
            call_id: 9,
            events: tx,
            control: ctl_rx,
            stdin: Some(in_rx),
            cancel: CancellationToken::new(),
        };
        let task = tokio::spawn(run(req, io, Launch::plain(), ProcessTrace::detached()));
        if let Some(data) = stdin {
            in_tx.push(Bytes::from(data));
        }
        drop(in_tx);
        let mut events = vec![];
        let mut finals = 0;
        while let Some(o) = rx.recv().await {
            assert_eq!(o.call_id, 9);
            let is_final = matches!(
                o.kind,
                terminal_event::Kind::Exited(_) | terminal_event::Kind::Error(_)
            );
            assert_eq!(o.last, is_final, "only the final event is marked last");
            finals += usize::from(is_final);
            events.push(o.kind);
            if o.last {
                break;
            }
        }
        task.await.unwrap();
        // The session numbers events (`proto::session`); here: one final
        // event, and it is the last.
        assert_eq!(finals, 1);
        assert!(rx.try_recv().is_err(), "nothing after the final event");
        Run { events }
    }

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv
                .iter()
                .map(|a| Bytes::from(a.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn output_and_exit_code() {
        let r = run_req(req(&["sh", "-c", "printf 'a\\nb\\n'; exit 3"]), None).await;
        assert!(matches!(r.events[0], terminal_event::Kind::Started(_)));
        assert_eq!(r.stdout(), b"a\nb\n");
        assert_eq!(
            r.last(),
            &terminal_event::Kind::Exited(Exited {
                status: Some(exited::Status::Code(3))
            })
        );
    }

    #[tokio::test]
    async fn stdin_is_piped() {
        let mut rq = req(&["cat"]);
        rq.stdin = StdinMode::Pipe as i32;
        let r = run_req(rq, Some(b"hello stdin".to_vec())).await;
        assert_eq!(r.stdout(), b"hello stdin");
    }

    #[tokio::test]
    async fn missing_program_is_an_error_event() {
        let r = run_req(req(&["/no/such/program-xyz"]), None).await;
        match r.last() {
            terminal_event::Kind::Error(e) => {
                assert_eq!(e.kind, ExecErrorKind::NotFound as i32);
                assert!(e.message.contains("program-xyz"), "{}", e.message);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_cwd_is_an_error_event() {
        let mut rq = req(&["true"]);
        rq.cwd = Bytes::from_static(b"/no/such/dir");
        let r = run_req(rq, None).await;
        assert!(
            matches!(r.last(), terminal_event::Kind::Error(e) if e.kind == ExecErrorKind::BadCwd as i32)
        );
    }

    #[tokio::test]
    async fn env_is_passed_and_can_be_cleared() {
        let mut rq = req(&["/usr/bin/env"]);
        rq.clear_env = true;
        rq.env = vec![EnvVar {
            name: Bytes::from_static(b"ONLY"),
            value: Bytes::from_static(b"this"),
        }];
        let r = run_req(rq, None).await;
        assert_eq!(r.stdout(), b"ONLY=this\n");
    }

    #[tokio::test]
    async fn cancel_kills_the_process_group() {
        let (tx, mut rx) = mpsc::channel(4);
        let (_ctl_tx, ctl_rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let io = ProcessIo {
            call_id: 1,
            events: tx,
            control: ctl_rx,
            stdin: None,
            cancel: cancel.clone(),
        };
        // The grandchild holds stdout open; killing only the child would leave it.
        let launch = Launch {
            exit_drain: Duration::from_secs(60),
            ..Launch::plain()
        };
        let task = tokio::spawn(run(
            req(&["sh", "-c", "sleep 1000 & sleep 1000"]),
            io,
            launch,
            ProcessTrace::detached(),
        ));
        let started = rx.recv().await.unwrap();
        assert!(matches!(started.kind, terminal_event::Kind::Started(_)));
        cancel.cancel();
        let last = rx.recv().await.unwrap();
        assert!(last.last);
        assert_eq!(
            last.kind,
            terminal_event::Kind::Exited(Exited {
                status: Some(exited::Status::Signal(9))
            })
        );
        task.await.unwrap();
    }
}
