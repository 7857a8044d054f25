//! One remote process: spawn, pump its pipes (or its pseudo-terminal) into
//! terminal events as they happen, deliver signals to its process group,
//! resize its terminal, report its exit.
//!
//! Output is read in chunks of at most [`MAX_CHUNK`] and each chunk waits
//! for room in the session's bounded event queue before the next read, so a
//! slow client stops the pipe reads (and so the child) rather than growing a
//! buffer. A process on a terminal (`ExecRequest.terminal`) has one output,
//! the terminal's, read the same way and sent as stdout (stderr is merged,
//! as a terminal does); its stdin is typed into the terminal. After the
//! exit, the terminal is drained like the pipes (until every holder of its
//! user side has closed it, which ends its output, or the drain gives up).
//!
//! Spans made here (docs/spans.md): `rpc.server.queue` (from the enqueue
//! time the request carries to this task's start), `process.spawn`,
//! `process.run` (with the id the child's `TRACEPARENT` already names), and
//! under it `process.stdout_reader`, `process.stderr_reader` and
//! `process.exit_watcher`, which count bytes, chunks and the time spent
//! waiting for room in the session's queue rather than making a span per
//! chunk.

use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::unistd::Pid;
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanId, TraceContextExt, Tracer};
use proto::driver::sleep_until;
use proto::keys::EnvPolicy;
use proto::limits::MAX_CHUNK;
use proto::pb::session::{
    ExecError, ExecErrorKind, ExecRequest, Exited, Started, StdinMode, exited, terminal_event,
};
use proto::session::output;
use telemetry::remote::{StageSpan, Timeline};
use telemetry::spans;
use tokio::io::AsyncWrite;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::contain::{CommandGroup, Containment, SpawnError};
use crate::credit::{CHUNK_CREDIT, Credit, Reserved};
use crate::pty;
use crate::shell::LoginShell;
use crate::spawn::{Child, Command, Stdio};
pub use crate::stdin::StdinReceiver;

/// The signal that ends a process group for good.
const SIGKILL: i32 = NixSignal::SIGKILL as i32;
/// How long an abandoned process, killed, is waited for (so that it is
/// reaped here rather than at a later spawn).
const REAP_WAIT: Duration = Duration::from_secs(1);
/// The signal a hung-up terminal's session gets.
const SIGHUP: i32 = NixSignal::SIGHUP as i32;

/// A control message for a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Deliver a signal to the process group.
    Signal(i32),
}

/// A terminal event for the session to push, tagged with its call (the
/// session numbers it).
#[derive(Debug)]
pub struct Outgoing {
    /// The call it belongs to.
    pub(crate) call_id: u64,
    /// The event.
    pub kind: terminal_event::Kind,
    /// Whether this is the call's final event.
    pub last: bool,
    /// When it was queued (for the push's queue-residence total).
    pub(crate) queued_at: Instant,
    /// With the final event: the process task's stages for the call's
    /// summary (empty otherwise).
    pub(crate) stages: Timeline,
}

/// Where a process task's spans hang.
#[derive(Debug, Clone)]
pub struct ProcessTrace {
    /// The dispatching call's context (parent of `rpc.server.queue`).
    pub(crate) dispatch: Context,
    /// `rpc.server.exec`'s context (parent of `process.spawn`/`process.run`).
    pub(crate) exec: Context,
    /// The id `process.run` gets (the child's `TRACEPARENT` names it);
    /// `SpanId::INVALID` when the provider cannot preset ids.
    pub(crate) run_span_id: SpanId,
    /// When the request was queued for the task.
    pub(crate) enqueued: SystemTime,
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
    /// The call's output credit: output is read only with credit for it.
    pub credit: Credit,
    /// Cancelled when the session ends (then `cancel` is too): a process
    /// on a terminal is then hung up before it is killed.
    pub ended: CancellationToken,
    /// The terminal's window size (rows, columns) as the client last set
    /// it, for a call on a terminal; only the latest counts.
    pub resize: Option<watch::Receiver<(u16, u16)>>,
}

/// Extra environment for the child (trace context).
type ExtraEnv = Vec<(String, String)>;

/// How a call's process is started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Working directory for a request that names none.
    pub(crate) default_cwd: Option<PathBuf>,
    /// The exec-server's variables the command gets (its allow-list's),
    /// unless the request asks for an empty environment.
    pub(crate) inherited: crate::environment::Inherited,
    /// Extra environment (trace context), set by the exec-server.
    pub(crate) extra_env: ExtraEnv,
    /// Which variables the client's key may set.
    pub(crate) env_policy: EnvPolicy,
    /// After the process exits, how long descendants' output is drained.
    pub(crate) exit_drain: Duration,
    /// Death signal, process group and cgroup.
    pub(crate) containment: Arc<Containment>,
    /// Whether a command may have a terminal (`exec-server --no-tty`
    /// refuses them).
    pub(crate) terminals: bool,
    /// The login shell for a request that asks for one, as read when the
    /// call started (None: the process task reads it).
    pub(crate) login_shell: Option<LoginShell>,
}

impl Launch {
    /// Defaults: no default directory, the default allow-list of this
    /// process's variables, no extra variables, any variable allowed, a
    /// two-second drain, no cgroups, terminals allowed.
    pub fn plain() -> Self {
        Self {
            default_cwd: None,
            inherited: crate::environment::PassEnv::default().inherited(),
            extra_env: Vec::new(),
            env_policy: EnvPolicy::Any,
            exit_drain: Duration::from_secs(2),
            containment: Containment::without_cgroups(),
            terminals: true,
            login_shell: None,
        }
    }
}

/// A process's events on their way to its session.
struct Events {
    call_id: u64,
    events: mpsc::Sender<Outgoing>,
    credit: Credit,
}

impl Events {
    /// Sends an event, waiting for its credit and for room. Returns false
    /// if the session is gone.
    async fn send(&mut self, kind: terminal_event::Kind) -> bool {
        self.send_reserved(kind, None).await
    }

    /// Sends an output event with the credit reserved for it before the
    /// read (taken now if there is none).
    async fn send_reserved(
        &mut self,
        kind: terminal_event::Kind,
        reserved: Option<Reserved>,
    ) -> bool {
        let cost = output::cost(&kind);
        match reserved {
            Some(r) => r.spend(cost),
            None => self.credit.reserve(cost).await.spend(cost),
        }
        self.queue(kind, None).await
    }

    /// Sends the final event, with the task's stages.
    async fn finish(&mut self, kind: terminal_event::Kind, stages: Timeline) {
        let cost = output::cost(&kind);
        self.credit.reserve(cost).await.spend(cost);
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

/// Why a terminal request is refused on an exec-server run with `--no-tty`.
const NO_TTY: &str =
    "this exec-server gives commands no terminal (it runs with --no-tty): run without -t";

/// The program the request runs, and its login shell if it asked for
/// that instead.
fn program_of(req: &ExecRequest, launch: &Launch) -> (String, Option<LoginShell>) {
    if req.login_shell {
        let shell = launch
            .login_shell
            .clone()
            .unwrap_or_else(LoginShell::of_this_user);
        return (shell.program(), Some(shell));
    }
    let program = req
        .argv
        .first()
        .map(|a| proto::program::program_name(a))
        .unwrap_or_default();
    (program, None)
}

/// The command for a request (its program, or its login shell), and the
/// pseudo-terminal it runs on if it asked for one.
fn build_command(
    req: &ExecRequest,
    launch: &Launch,
    shell: Option<&LoginShell>,
    program: &str,
) -> Result<(Command, Option<pty::Pair>), terminal_event::Kind> {
    let default_cwd = match shell {
        // A login starts at home (when there is one to start in).
        Some(s) => s.home_dir().or(launch.default_cwd.as_deref()),
        None => launch.default_cwd.as_deref(),
    };
    let mut cmd = match (shell, req.argv.split_first()) {
        (Some(_), Some(_)) => {
            return Err(exec_error(
                ExecErrorKind::BadRequest,
                "a login shell request names no command".into(),
            ));
        }
        (Some(s), None) => {
            let mut cmd = Command::new(&s.path);
            cmd.arg0(s.argv0());
            cmd
        }
        (None, None) => {
            return Err(exec_error(
                ExecErrorKind::BadRequest,
                "empty command: no program given".into(),
            ));
        }
        (None, Some((argv0, _))) if argv0.is_empty() => {
            return Err(exec_error(
                ExecErrorKind::BadRequest,
                "empty program name".into(),
            ));
        }
        (None, Some((argv0, args))) => {
            let mut cmd = Command::new(OsStr::from_bytes(argv0));
            cmd.args(args.iter().map(|a| OsStr::from_bytes(a)));
            cmd
        }
    };
    // Built, never inherited whole (see `crate::environment`).
    cmd.env_clear();
    if !req.clear_env {
        for (k, v) in launch.inherited.iter() {
            cmd.env(k, v);
        }
    }
    // What a login sets, before what the request sets.
    for (k, v) in shell.map(LoginShell::env).unwrap_or_default() {
        cmd.env(k, v);
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
    // The terminal's type is part of the terminal request, not an
    // environment variable the key's options govern.
    if let Some(t) = req.terminal.as_ref().filter(|t| !t.term.is_empty()) {
        cmd.env("TERM", &t.term);
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
    if let Some(t) = &req.terminal {
        if !launch.terminals {
            return Err(exec_error(ExecErrorKind::TerminalRefused, NO_TTY.into()));
        }
        // The session machine checked the bounds.
        let size = (u16::try_from(t.rows), u16::try_from(t.cols));
        let (Ok(rows), Ok(cols)) = size else {
            return Err(exec_error(
                ExecErrorKind::BadRequest,
                "the terminal size is out of bounds".into(),
            ));
        };
        let pair = pty::open(rows, cols).map_err(|e| no_terminal(program, &e))?;
        let [stdin, stdout, stderr] = pair.stdio().map_err(|e| no_terminal(program, &e))?;
        // No process group is asked for: the new session is one.
        cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        return Ok((cmd, Some(pair)));
    }
    let stdin = if req.stdin == StdinMode::Pipe as i32 {
        Stdio::Piped
    } else {
        Stdio::Null
    };
    cmd.stdin(stdin)
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped)
        .process_group(true);
    Ok((cmd, None))
}

/// No pseudo-terminal could be had (the system has none left, or this
/// process no descriptor): an error for the call, never more.
fn no_terminal(program: &str, e: &std::io::Error) -> terminal_event::Kind {
    exec_error(
        ExecErrorKind::NoTerminal,
        format!("{program}: cannot open a pseudo-terminal: {e}"),
    )
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

/// Writes the call's stdin into the child's (its pipe, or its terminal),
/// reporting each chunk taken. Once the child has closed its stdin, what
/// follows is dropped (and still reported taken, so the client is never
/// left waiting for credit).
async fn write_stdin<W: AsyncWrite + Unpin>(mut pipe: W, input: StdinReceiver) {
    let mut open = true;
    while let Some(chunks) = input.next().await {
        for chunk in chunks {
            if open && pipe.write_all(&chunk).await.is_err() {
                open = false;
            }
            input.taken(chunk.len());
        }
    }
    // Only a close the client sent ends the input (on a terminal, by
    // typing its end-of-file character); a session that went away says
    // nothing about it (its process is about to be hung up or killed), and
    // a pipe closes when dropped anyway.
    if open && input.closed_by_client() {
        let _ = pipe.shutdown().await;
    }
}

/// The stdin writer, polled with the pipes.
type Writing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Until the stdin writer has written everything (never, without one).
async fn wrote(writer: &mut Option<Writing>) {
    match writer {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

/// The session is gone: nobody can see this process any more, and its
/// process group is killed. A process on a terminal is hung up first, as
/// when a terminal's line drops: its session leader's group and each of
/// its jobs' groups get SIGHUP (as a shell passes it on to its jobs) while
/// the terminal still works (a
/// shell that read the end of its input first would exit without doing
/// so), then `terminal` (every other handle on its controller side
/// already dropped) is closed, which hangs the terminal up for whatever
/// else holds it, and the process is given `grace` to end.
async fn abandon(child: &mut Child, terminal: Option<Arc<pty::Terminal>>, grace: Duration) {
    let pid = child.id();
    if terminal.is_some() {
        // The leader's group, and the jobs it started on the terminal.
        signal_group(pid, SIGHUP);
        if let Some(sid) = pid.and_then(|p| i32::try_from(p).ok()) {
            for group in pty::session_groups(sid) {
                signal_group(u32::try_from(group).ok(), SIGHUP);
            }
        }
        drop(terminal);
        let _ = tokio::time::timeout(grace, child.wait()).await;
    }
    signal_group(pid, SIGKILL);
    // Reaped here, as a rule: it exits as soon as the kill lands.
    let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
}

/// The terminal's latest window size once it has changed; `None` once the
/// call's sender is gone.
async fn resized(rx: &mut Option<watch::Receiver<(u16, u16)>>) -> Option<(u16, u16)> {
    let rx = rx.as_mut()?;
    rx.changed().await.ok()?;
    let size = *rx.borrow_and_update();
    Some(size)
}

/// Spawns the command contained, on its terminal if it has one (which is
/// then handed to the runtime).
async fn spawn(
    cmd: Command,
    pair: Option<pty::Pair>,
    launch: &Launch,
    program: &str,
) -> Result<(Child, CommandGroup, Option<Arc<pty::Terminal>>), terminal_event::Kind> {
    let controlling = match &pair {
        Some(p) => Some(p.controlling().map_err(|e| no_terminal(program, &e))?),
        None => None,
    };
    let (child, group) = launch
        .containment
        .spawn(cmd, controlling)
        .await
        .map_err(|e| spawn_error(&e, program))?;
    let terminal = match pair.map(pty::Pair::into_terminal).transpose() {
        Ok(t) => t.map(Arc::new),
        Err(e) => {
            // The process runs on a terminal nobody can read: it ends now
            // (its group with it, as the cgroup does when `group` drops).
            signal_group(child.id(), SIGKILL);
            return Err(exec_error(
                ExecErrorKind::Internal,
                format!("{program}: cannot watch its terminal: {e}"),
            ));
        }
    };
    Ok((child, group, terminal))
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
        credit,
        ended,
        mut resize,
    } = io;
    // Before anything is read: the window the call starts with.
    let first_window = credit.widest();
    let mut seq = Events {
        call_id,
        events,
        credit: credit.clone(),
    };
    let (program, shell) = program_of(&req, &launch);
    let mut spawn_span = StageSpan::start(&tracer, spans::PROCESS_SPAWN, &trace.exec, taken);
    let spawned = match build_command(&req, &launch, shell.as_ref(), &program) {
        Ok((cmd, pair)) => spawn(cmd, pair, &launch, &program).await,
        Err(e) => Err(e),
    };
    // The command's cgroup (if any) is killed when this task ends, however
    // it ends; so is its terminal hung up.
    let (mut child, _group, mut terminal) = match spawned {
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
            // The client learns which shell it got.
            program: if shell.is_some() {
                program.clone()
            } else {
                String::new()
            },
        }))
        .await
    {
        abandon(&mut child, terminal.take(), launch.exit_drain).await;
        return;
    }
    // The stdin writer runs inside this task (no task of its own to track):
    // it is polled with the pipes below until it has written everything.
    let piped = req.stdin == StdinMode::Pipe as i32;
    let mut writer: Option<Writing> = match (&terminal, child.stdin.take(), stdin) {
        (Some(t), _, Some(rx)) if piped => {
            Some(Box::pin(write_stdin(pty::Writer::new(Arc::clone(t)), rx)))
        }
        (None, Some(pipe), Some(rx)) => Some(Box::pin(write_stdin(pipe, rx))),
        _ => None,
    };
    // A terminal has one output, read as stdout.
    let mut stdout: Option<Box<dyn AsyncRead + Send + Unpin>> = match &terminal {
        Some(t) => Some(Box::new(pty::Reader(Arc::clone(t)))),
        None => child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn AsyncRead + Send + Unpin>),
    };
    let mut stderr = child.stderr.take();
    if terminal.is_none() {
        resize = None;
    }
    let watching = SystemTime::now();
    let mut out_watch = Some(Watch::start(
        &tracer,
        spans::PROCESS_STDOUT_READER,
        &run_cx,
        watching,
    ));
    let mut err_watch = stderr
        .is_some()
        .then(|| Watch::start(&tracer, spans::PROCESS_STDERR_READER, &run_cx, watching));
    let mut exit_watch = Some(Watch::start(
        &tracer,
        spans::PROCESS_EXIT_WATCHER,
        &run_cx,
        watching,
    ));
    let mut status = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut killed = false;
    // A pipe (or the terminal) is read only with credit for a whole chunk
    // in hand, taken while signals and cancels are still heard.
    let mut reserved: Option<Reserved> = None;
    // Time a reader waited for output credit (window-limited), from when
    // it needed a chunk's worth and none was free.
    let mut credit_wait = Duration::ZERO;
    let mut needs_credit: Option<Instant> = None;
    loop {
        if reserved.is_none()
            && needs_credit.is_none()
            && (stdout.is_some() || stderr.is_some())
            && credit.available().is_some_and(|free| free < CHUNK_CREDIT)
        {
            needs_credit = Some(Instant::now());
        }
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
        let drain = sleep_until(drain_deadline);
        let reading = stdout.is_some() || stderr.is_some();
        tokio::select! {
            () = wrote(&mut writer), if writer.is_some() => writer = None,
            r = credit.reserve(CHUNK_CREDIT), if reading && reserved.is_none() => {
                reserved = Some(r);
                if let Some(since) = needs_credit.take() {
                    credit_wait += since.elapsed();
                }
            }
            () = cancel.cancelled(), if !killed => {
                if ended.is_cancelled() {
                    // The session is gone: nobody can see this process
                    // any more.
                    drop((stdout.take(), writer.take()));
                    abandon(&mut child, terminal.take(), launch.exit_drain).await;
                    return;
                }
                signal_group(pid, SIGKILL);
                killed = true;
            }
            size = resized(&mut resize), if resize.is_some() => match (size, &terminal) {
                // A terminal that cannot take the size keeps its own.
                (Some((rows, cols)), Some(t)) => { let _ = t.resize(rows, cols); }
                _ => resize = None,
            },
            c = control.recv() => match c {
                Some(Control::Signal(n)) => signal_group(pid, n),
                None => {
                    // The session is gone: nobody can see this process any more.
                    drop((stdout.take(), writer.take()));
                    abandon(&mut child, terminal.take(), launch.exit_drain).await;
                    return;
                }
            },
            chunk = read_chunk(&mut stdout), if stdout.is_some() && reserved.is_some() => match chunk {
                Some(data) => {
                    let (len, t) = (data.len(), Instant::now());
                    let r = reserved.take();
                    if !seq.send_reserved(terminal_event::Kind::Stdout(data), r).await {
                        drop((stdout.take(), writer.take()));
                        abandon(&mut child, terminal.take(), launch.exit_drain).await;
                        return;
                    }
                    if let Some(w) = out_watch.as_mut() {
                        w.count(len, t.elapsed());
                    }
                }
                None => stdout = None,
            },
            chunk = read_chunk(&mut stderr), if stderr.is_some() && reserved.is_some() => match chunk {
                Some(data) => {
                    let (len, t) = (data.len(), Instant::now());
                    let r = reserved.take();
                    if !seq.send_reserved(terminal_event::Kind::Stderr(data), r).await {
                        abandon(&mut child, None, launch.exit_drain).await;
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
                drain_deadline = Some(Instant::now() + launch.exit_drain);
            }
            () = drain => {
                // Descendants still hold the pipes open; stop waiting for them.
                stdout = None;
                stderr = None;
            }
        }
    }
    if let Some(r) = reserved.take() {
        r.spend(0);
    }
    // The terminal is released before the final event (every handle on its
    // controller side closed), so a client that has seen the exit can have
    // another at once, even when the system had none left.
    drop((writer.take(), stdout.take(), terminal.take()));
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
    run_span.set_int(
        spans::ATTR_OUTPUT_CREDIT_WAIT,
        i64::try_from(credit_wait.as_nanos()).unwrap_or(i64::MAX),
    );
    if let Some(window) = credit.widest() {
        run_span.set_int(
            spans::ATTR_OUTPUT_WINDOW,
            i64::try_from(window).unwrap_or(i64::MAX),
        );
    }
    if let Some(window) = first_window {
        run_span.set_int(
            spans::ATTR_OUTPUT_WINDOW_FIRST,
            i64::try_from(window).unwrap_or(i64::MAX),
        );
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
        run_with(req, stdin, Launch::plain()).await
    }

    async fn run_with(req: ExecRequest, stdin: Option<Vec<u8>>, launch: Launch) -> Run {
        let (tx, mut rx) = mpsc::channel(4);
        let (_ctl_tx, ctl_rx) = mpsc::channel(4);
        let (in_tx, in_rx) = crate::stdin::pipe(Default::default());
        // The smallest window, given back as each event is taken (as the
        // client's acknowledgements would), so every output in these tests
        // goes through the credit.
        let credit = Credit::new(output::MIN_WINDOW, None);
        let io = ProcessIo {
            call_id: 9,
            events: tx,
            control: ctl_rx,
            stdin: Some(in_rx),
            cancel: CancellationToken::new(),
            credit: credit.clone(),
            ended: CancellationToken::new(),
            resize: None,
        };
        let task = tokio::spawn(run(req, io, launch, ProcessTrace::detached()));
        if let Some(data) = stdin {
            in_tx.push(Bytes::from(data));
        }
        in_tx.close();
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
            credit.release(output::cost(&o.kind));
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

    fn login_shell_request(script: &str) -> (ExecRequest, Option<Vec<u8>>) {
        let rq = ExecRequest {
            login_shell: true,
            stdin: StdinMode::Pipe as i32,
            ..Default::default()
        };
        (rq, Some(script.as_bytes().to_vec()))
    }

    /// The lines after `marker` in `out` (a login shell may print what its
    /// profile says first).
    fn after(out: &[u8], marker: &str) -> String {
        let text = String::from_utf8_lossy(out).into_owned();
        let at = text.find(marker).unwrap_or_else(|| panic!("{text:?}"));
        text[at + marker.len()..].to_owned()
    }

    #[tokio::test]
    async fn a_login_shell_runs_as_one_at_home_and_is_named() {
        let home = tempfile::tempdir().unwrap();
        let home_path = home.path().canonicalize().unwrap();
        let launch = Launch {
            login_shell: Some(LoginShell {
                path: "/bin/sh".into(),
                home: Some(home_path.clone()),
                user: Some("tester".into()),
            }),
            // A login's home comes before the exec-server's default.
            default_cwd: Some("/".into()),
            ..Launch::plain()
        };
        let (rq, stdin) = login_shell_request(
            "echo MARK; echo \"$0\"; pwd -P; echo \"$HOME $USER $LOGNAME $SHELL\"; exit 3\n",
        );
        let r = run_with(rq, stdin, launch.clone()).await;
        let terminal_event::Kind::Started(started) = &r.events[0] else {
            panic!("{:?}", r.events)
        };
        assert_eq!(started.program, "sh");
        let home = home_path.display();
        assert_eq!(
            after(&r.stdout(), "MARK\n"),
            format!("-sh\n{home}\n{home} tester tester /bin/sh\n")
        );
        assert_eq!(
            r.last(),
            &terminal_event::Kind::Exited(Exited {
                status: Some(exited::Status::Code(3))
            })
        );
        // A directory asked for wins over home.
        let (mut rq, stdin) = login_shell_request("echo MARK; pwd -P\n");
        rq.cwd = Bytes::from_static(b"/");
        let r = run_with(rq, stdin, launch).await;
        assert_eq!(after(&r.stdout(), "MARK\n"), "/\n");
    }

    #[tokio::test]
    async fn a_login_shell_is_this_users_when_none_is_given() {
        let shell = LoginShell::of_this_user();
        let (rq, stdin) = login_shell_request("echo MARK; echo \"$0\"\n");
        let r = run_req(rq, stdin).await;
        let terminal_event::Kind::Started(started) = &r.events[0] else {
            panic!("{:?}", r.events)
        };
        assert_eq!(started.program, shell.program());
        let argv0 = shell.argv0().into_string().unwrap();
        assert_eq!(after(&r.stdout(), "MARK\n"), format!("{argv0}\n"));
        // A command names no program in its start: the client knows it.
        let r = run_req(req(&["true"]), None).await;
        let terminal_event::Kind::Started(started) = &r.events[0] else {
            panic!("{:?}", r.events)
        };
        assert_eq!(started.program, "");
    }

    #[tokio::test]
    async fn a_login_shell_with_a_command_is_a_bad_request() {
        let mut rq = req(&["sh"]);
        rq.login_shell = true;
        let r = run_req(rq, None).await;
        assert_eq!(r.events.len(), 1, "{:?}", r.events);
        assert!(
            matches!(r.last(), terminal_event::Kind::Error(e) if e.kind == ExecErrorKind::BadRequest as i32)
        );
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
            credit: Credit::unlimited(),
            ended: CancellationToken::new(),
            resize: None,
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

    fn on_terminal(argv: &[&str], rows: u32, cols: u32) -> ExecRequest {
        let mut rq = req(argv);
        rq.terminal = Some(proto::pb::session::Terminal {
            rows,
            cols,
            term: "vt100".into(),
        });
        rq
    }

    fn no_stderr(r: &Run) -> bool {
        !r.events
            .iter()
            .any(|e| matches!(e, terminal_event::Kind::Stderr(_)))
    }

    #[tokio::test]
    async fn a_terminal_is_stdin_stdout_and_stderr_with_its_size_and_type() {
        let script = "test -t 0 && test -t 1 && test -t 2 && stty size && echo \"$TERM\" \
                      && echo err >&2";
        let r = run_req(on_terminal(&["sh", "-c", script], 30, 100), None).await;
        assert_eq!(r.stdout(), b"30 100\r\nvt100\r\nerr\r\n");
        assert!(no_stderr(&r), "stderr is merged: {:?}", r.events);
        assert_eq!(
            r.last(),
            &terminal_event::Kind::Exited(Exited {
                status: Some(exited::Status::Code(0))
            })
        );
    }

    #[tokio::test]
    async fn the_child_leads_a_session_whose_controlling_terminal_it_is() {
        // /proc/PID/stat: pid (comm) state ppid pgrp session tty_nr ...
        let script = "set -- $(cat /proc/$$/stat); \
                      [ \"$1\" = \"$5\" ] && [ \"$1\" = \"$6\" ] && [ \"$7\" != 0 ] && echo leader";
        let r = run_req(on_terminal(&["sh", "-c", script], 24, 80), None).await;
        assert_eq!(r.stdout(), b"leader\r\n");
    }

    #[tokio::test]
    async fn output_written_before_the_exit_all_arrives() {
        let r = run_req(
            on_terminal(
                &["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; exit 5"],
                24,
                80,
            ),
            None,
        )
        .await;
        let out = r.stdout();
        assert_eq!(out.len(), 300_000);
        assert!(out.iter().all(|&b| b == b'x'));
        assert_eq!(
            r.last(),
            &terminal_event::Kind::Exited(Exited {
                status: Some(exited::Status::Code(5))
            })
        );
    }

    #[tokio::test]
    async fn stdin_is_typed_and_its_close_ends_the_input() {
        let mut rq = on_terminal(&["cat"], 24, 80);
        rq.stdin = StdinMode::Pipe as i32;
        let r = run_req(rq, Some(b"hello\n".to_vec())).await;
        // Echoed by the terminal, then written back by cat.
        assert_eq!(r.stdout(), b"hello\r\nhello\r\n");
        assert_eq!(
            r.last(),
            &terminal_event::Kind::Exited(Exited {
                status: Some(exited::Status::Code(0))
            })
        );
    }

    #[tokio::test]
    async fn an_exec_server_without_terminals_refuses_one() {
        let launch = Launch {
            terminals: false,
            ..Launch::plain()
        };
        let r = run_with(on_terminal(&["true"], 24, 80), None, launch).await;
        assert_eq!(r.events.len(), 1, "{:?}", r.events);
        match r.last() {
            terminal_event::Kind::Error(e) => {
                assert_eq!(e.kind, ExecErrorKind::TerminalRefused as i32);
                assert_eq!(e.message, NO_TTY);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resize_reaches_the_terminal_and_the_child_gets_sigwinch() {
        let (tx, mut rx) = mpsc::channel(4);
        let (_ctl_tx, ctl_rx) = mpsc::channel(4);
        let (size_tx, size_rx) = watch::channel((24, 80));
        let cancel = CancellationToken::new();
        let io = ProcessIo {
            call_id: 1,
            events: tx,
            control: ctl_rx,
            stdin: None,
            cancel: cancel.clone(),
            credit: Credit::unlimited(),
            ended: CancellationToken::new(),
            resize: Some(size_rx),
        };
        let script = "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done";
        let task = tokio::spawn(run(
            on_terminal(&["sh", "-c", script], 24, 80),
            io,
            Launch::plain(),
            ProcessTrace::detached(),
        ));
        let mut out = Vec::new();
        let mut resized = false;
        while !out.ends_with(b"40 120\r\n") {
            match rx.recv().await.unwrap().kind {
                terminal_event::Kind::Stdout(d) => out.extend_from_slice(&d),
                terminal_event::Kind::Started(_) => {}
                other => panic!("unexpected {other:?} after {out:?}"),
            }
            if !resized && out.ends_with(b"ready\r\n") {
                resized = true;
                size_tx.send_replace((40, 120));
            }
        }
        cancel.cancel();
        loop {
            let o = rx.recv().await.unwrap();
            if o.last {
                assert_eq!(
                    o.kind,
                    terminal_event::Kind::Exited(Exited {
                        status: Some(exited::Status::Signal(9))
                    })
                );
                break;
            }
        }
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_process_out_of_credit_stops_reading_and_still_hears_a_cancel() {
        let (tx, mut rx) = mpsc::channel(64);
        let (_ctl_tx, ctl_rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let credit = Credit::new(output::MIN_WINDOW, None);
        let io = ProcessIo {
            call_id: 1,
            events: tx,
            control: ctl_rx,
            stdin: None,
            cancel: cancel.clone(),
            credit: credit.clone(),
            ended: CancellationToken::new(),
            resize: None,
        };
        let task = tokio::spawn(run(
            req(&["sh", "-c", "exec yes"]),
            io,
            Launch::plain(),
            ProcessTrace::detached(),
        ));
        // Nobody gives credit back: the output stops within the window.
        let mut taken = 0;
        for quiet in 0.. {
            assert!(quiet < 240, "the output never stopped");
            match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                Ok(Some(o)) => {
                    taken += output::cost(&o.kind);
                    assert!(!o.last);
                }
                Ok(None) => panic!("the process task ended"),
                Err(_) if credit.available() < Some(CHUNK_CREDIT) => break,
                Err(_) => {}
            }
        }
        assert!(taken <= u64::from(output::MIN_WINDOW));
        // Waiting for credit, it still hears the cancel; its exit comes
        // once credit is given back. What the pipe still held comes first,
        // and is acknowledged as a client would (else it could take the
        // credit given back and leave the exit waiting on more).
        cancel.cancel();
        credit.release(taken);
        let last = loop {
            let o = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("no exit after the cancel")
                .unwrap();
            if o.last {
                break o;
            }
            credit.release(output::cost(&o.kind));
        };
        assert_eq!(
            last.kind,
            terminal_event::Kind::Exited(Exited {
                status: Some(exited::Status::Signal(9))
            })
        );
        task.await.unwrap();
    }
}
