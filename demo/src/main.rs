//! `rex-demo`: a relay, an exec-server and a client in one process on
//! loopback, with ephemeral keys and no configuration; it runs a short
//! command remotely through the relay and prints where its time went.
//!
//! Layout:
//! - this file: the command line, the runtime and span export (the three
//!   services' spans go where the standard `OTEL_*` variables say, else to
//!   the local trace file), and the command's waterfall at the end
//!   (`analysis::show`, as `core-client trace show` draws it).
//! - `run`: the three services started, the command run, its events
//!   printed.
//! - `stdout`: stdout that remembers a reader that went away (exit 141),
//!   never a panic.
//!
//! It is the one program that links the relay, the exec-server and the
//! client together; the `core-client` CLI links neither service.

mod run;
mod stdout;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use telemetry::setup::{self, Export, LogDefault, Options};
use telemetry::trace_file::{Retention, TraceFile};

/// Run a relay, an exec-server and a client in this process, run a short
/// command through them (no setup needed) and print its trace.
#[derive(Debug, Parser)]
#[command(name = "rex-demo", version)]
struct Args {
    /// The local trace file the spans go to when no OTLP endpoint is set
    /// (default: the one `core-client trace show` reads).
    #[arg(long, env = "REX_TRACE_FILE", value_name = "PATH")]
    trace_file: Option<PathBuf>,
}

/// Exit status when the demo cannot run (as `core-client`'s connection
/// failures).
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    let args = Args::parse();
    let trace_file = args
        .trace_file
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(telemetry::trace_file::default_path);
    match demo(trace_file) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("rex-demo: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Runs the demo with its spans exported (flushed before it returns) and
/// shows the command's waterfall; the command's exit status.
fn demo(trace_file: Option<PathBuf>) -> Result<u8, String> {
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start runtime: {e}"))?;
    // The OTLP client lives on the runtime: set up inside it.
    let entered = runtime.enter();
    let retention = Retention::from_env().map_err(|e| e.to_string())?;
    let export = Export::from_env(trace_file.map(|p| TraceFile::new(p, retention)))
        .map_err(|e| e.to_string())?;
    // Tried once: a collector that is down must not hold the exit up.
    let options = Options::new(export);
    let telemetry = setup::init_services(
        &["core-client", "relay", "exec-server"],
        LogDefault::Warn,
        options.clone(),
    );
    let outcome = runtime.block_on(run::run());
    telemetry.shutdown();
    drop(entered);
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    let outcome = outcome.map_err(|e| e.to_string())?;
    // The spans are flushed by now: show where the command's time went.
    // (Writes to `out` never fail: a reader that went away is kept in it.)
    let mut out = outcome.stdout;
    match (&options.export, &outcome.trace_id) {
        (Export::File(file), Some(id)) if out.failure().is_none() => {
            let _ = writeln!(out);
            if let Err(e) = analysis::show::show(file.path(), id, &analysis::NoNames, &mut out) {
                eprintln!("rex-demo: cannot show the demo's trace: {e}");
            }
            let _ = writeln!(
                out,
                "\n(saved in {}; `core-client trace show {id}` prints it again)",
                file.path().display()
            );
        }
        (Export::Otlp(_), Some(id)) => {
            let _ = writeln!(
                out,
                "trace {id} was exported to the configured OTLP endpoint"
            );
        }
        _ => {}
    }
    match out.exit_code() {
        Some(Ok(code)) => Ok(code),
        Some(Err(message)) => Err(message),
        None => Ok(u8::try_from(outcome.code & 0xff).unwrap_or(u8::MAX)),
    }
}
