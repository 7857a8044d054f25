//! The CLI's own life as spans, so that a trace explains all of a
//! command's wall time and not only its dispatch: `cli.run` from the
//! process's start to its spans being flushed, tiled by `cli.startup`
//! (until ready to dispatch), `tool.dispatch` (the library's), `cli.finish`
//! (the last output written, the session closed), `cli.records` (the
//! record saved) and `cli.flush` (the spans exported). Each stage starts at
//! the timestamp its predecessor ended at.
//!
//! `cli.run` and `cli.flush` can only end once the flush they measure is
//! over, so they leave in a second, last export at exit.
//!
//! Through the agent, `cli.flush` is this process's own spans only: the
//! agent writes its own (and keeps the record) once it has handed the
//! exit on, off this process's path; readers pass its barrier first
//! ([`rex_agent::ask::flushed`]).

use std::time::{Duration, SystemTime};

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use telemetry::forward::{Spool, Spooled};
use telemetry::setup::Flusher;
use telemetry::spans;

/// When this process started, as well as the kernel lets us know it.
///
/// The kernel records a process's start in clock ticks (10 ms here), and
/// its CPU time to the nanosecond. Before `main` the process runs (exec,
/// loading) and may wait (for a CPU, for pages): its age is at least its
/// CPU time and at most the tick-rounded age. The start is taken as now
/// minus the CPU time, which is exact when the process did not wait, and
/// the difference to the tick-rounded age is kept as its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessStart {
    /// The estimated start, on the wall clock.
    pub at: SystemTime,
    /// How much earlier it may have been (waits before `main`, and the
    /// tick rounding); `None` when the kernel's start was not readable.
    pub uncertainty: Option<Duration>,
}

impl ProcessStart {
    /// Reads the estimate now (first thing in `main`: nothing has waited
    /// yet that the CPU time would not show).
    pub(crate) fn read() -> Self {
        let now = SystemTime::now();
        let cpu = cpu_time();
        let ticked = tick_age();
        let age = match (cpu, ticked) {
            (Some(cpu), Some(t)) => cpu.min(t),
            (Some(cpu), None) => cpu,
            (None, Some(t)) => t,
            (None, None) => Duration::ZERO,
        };
        Self {
            at: now.checked_sub(age).unwrap_or(now),
            uncertainty: ticked.map(|t| t.saturating_sub(age)),
        }
    }
}

/// This process's CPU time so far.
fn cpu_time() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    Some(Duration::from(t))
}

/// This process's age from the kernel's start time (clock ticks after
/// boot, rounded down) and the boot-time clock.
fn tick_age() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks = start_ticks(&stat)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|hz| *hz > 0)?;
    let started = Duration::from_nanos(ticks.checked_mul(1_000_000_000)? / hz);
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    Some(Duration::from(boot).saturating_sub(started))
}

/// Field 22 of `/proc/PID/stat` (the start, in clock ticks after boot);
/// the command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `cli.run` and where its next stage starts.
pub(super) struct CliRun {
    tracer: BoxedTracer,
    span: BoxedSpan,
    cx: Context,
    start: ProcessStart,
    /// Where the next stage starts (the previous one's end).
    at: SystemTime,
    failed: bool,
    /// Where spans not yet forwarded at exit are kept, and the batch size
    /// the exec-server takes ([`CliRun::spool_rest`]).
    spool: Option<(Spool, u32)>,
}

impl CliRun {
    /// Starts `cli.run` at the process's start, under `parent` (the
    /// caller's `TRACEPARENT`, or a new trace).
    pub(super) fn start(start: ProcessStart, parent: &Context) -> Self {
        let tracer = opentelemetry::global::tracer("core-client");
        let span = tracer
            .span_builder(spans::CLI_RUN)
            .with_start_time(start.at)
            .with_attributes(vec![KeyValue::new(
                "process.pid",
                i64::from(std::process::id()),
            )])
            .start_with_context(&tracer, parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        Self {
            tracer,
            span,
            cx,
            start,
            at: start.at,
            failed: false,
            spool: None,
        }
    }

    /// `cli.run`'s context: the parent of the dispatch.
    pub(super) fn context(&self) -> &Context {
        &self.cx
    }

    /// Ends `cli.startup` now; returns the instant, where the dispatch
    /// starts.
    pub(super) fn ready(&mut self) -> SystemTime {
        let now = SystemTime::now();
        let mut startup = self.stage_from(spans::CLI_STARTUP, self.at);
        if let Some(u) = self.start.uncertainty {
            startup.set_attribute(KeyValue::new(
                "rex.start.uncertainty_ns",
                i64::try_from(u.as_nanos()).unwrap_or(i64::MAX),
            ));
        }
        startup.end_with_timestamp(now.max(self.at));
        self.at = now.max(self.at);
        self.at
    }

    /// The dispatch ended at `ended` (when its last event was handed
    /// over); the next stage starts there. A dispatch that never produced
    /// an execution ends where the CLI learnt that.
    pub(super) fn dispatched(&mut self, ended: Option<SystemTime>) {
        let end = ended.unwrap_or_else(SystemTime::now);
        self.at = end.max(self.at);
    }

    /// Ends stage `name` now, from where the previous one ended.
    pub(super) fn stage(&mut self, name: &'static str) {
        let now = SystemTime::now().max(self.at);
        let mut span = self.stage_from(name, self.at);
        span.end_with_timestamp(now);
        self.at = now;
    }

    /// The command failed: `cli.run` says so.
    pub(super) fn failed(&mut self) {
        self.failed = true;
    }

    /// The exec-server took this command's spans (batches of at most
    /// `max` bytes): those that end after the session closed (`cli.run`
    /// and its last stages) go to `spool`, for the next session to it.
    pub(super) fn spool_rest(&mut self, spool: Spool, max: u32) {
        self.spool = Some((spool, max));
    }

    /// Exports every span ended so far (`cli.flush`, timed), then ends
    /// `cli.flush` and `cli.run` where it finished; they leave with the
    /// exporters' shutdown (and, with [`CliRun::spool_rest`], their
    /// forwarded copies go to the spool: what it wrote is returned).
    pub(super) async fn flush(
        mut self,
        flusher: Flusher,
    ) -> Option<(Spool, std::io::Result<Spooled>)> {
        let from = self.at;
        // Spans written here, in this thread, need no thread to wait on.
        if flusher.in_place() {
            flusher.flush();
        } else {
            let _ = tokio::task::spawn_blocking(move || flusher.flush()).await;
        }
        let now = SystemTime::now().max(from);
        let mut flush = self.stage_from(spans::CLI_FLUSH, from);
        flush.end_with_timestamp(now);
        if self.failed {
            self.span.set_status(Status::error("the command failed"));
        }
        self.span.end_with_timestamp(now);
        let (spool, max) = self.spool.take()?;
        let source = telemetry::forward::source()?;
        let rest = source.take(self.span.span_context().trace_id(), max as usize);
        let written = spool.write(&rest);
        Some((spool, written))
    }

    fn stage_from(&self, name: &'static str, from: SystemTime) -> BoxedSpan {
        self.tracer
            .span_builder(name)
            .with_start_time(from)
            .start_with_context(&self.tracer, &self.cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_is_read_past_the_command_name() {
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 ...";
        assert_eq!(start_ticks(stat), Some(987_654));
        assert_eq!(start_ticks("garbage"), None);
        assert_eq!(start_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn this_process_started_in_the_past_within_its_tick_rounded_age() {
        let start = ProcessStart::read();
        assert!(start.at <= SystemTime::now());
        let (Some(u), Some(ticked)) = (start.uncertainty, tick_age()) else {
            panic!("/proc/self/stat and the clocks are readable on Linux");
        };
        // The estimated age and its uncertainty add up to at most the
        // kernel's tick-rounded age (which only grows).
        assert!(u <= ticked);
    }
}
