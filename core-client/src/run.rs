//! The program: the command line parsed, each command run on the runtime
//! and span export it needs, and its outcome as an exit status.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::agent::AgentCommand;
use crate::cli::{self, CliCommand, CliError, ConfigCommand, Context, TraceCommand};
use telemetry::setup::{self, COMMAND_SPAN_QUEUE, Export, LogDefault, Options, SERVICE_SPAN_QUEUE};
use telemetry::trace_file::{Retention, TraceFile};

/// Runs `core-client` with this process's arguments; its exit status.
pub fn main() -> ExitCode {
    // First: the estimate reads this process's CPU time so far.
    let started = cli::ProcessStart::read();
    let cli = cli::parse();
    let trace_file = cli.trace_file_path();
    let data_dir = cli.data_dir_path();
    let config = cli.global.config.clone();
    let verbose = cli::Verbose(cli.global.verbose);
    let context = || {
        Context::load(config.as_deref()).map(|mut ctx| {
            ctx.verbose = verbose;
            ctx
        })
    };
    let result = match cli.command {
        CliCommand::Keygen { out } => cli::keygen(out.as_deref()),
        CliCommand::Pubkey { key } => cli::pubkey(key.as_deref()),
        CliCommand::Trust(args) => context().and_then(|ctx| cli::trust(&args, ctx)),
        CliCommand::Config {
            command: ConfigCommand::Show { name, server },
        } => context().and_then(|ctx| cli::config_show(name.as_deref(), &server, &ctx)),
        CliCommand::Trace {
            command: TraceCommand::Show { trace },
        } => context().and_then(|ctx| {
            cli::agent::barrier();
            cli::trace_show(trace_file.as_deref(), &trace, &ctx.names())
        }),
        CliCommand::Report(args) => context().and_then(|ctx| {
            cli::agent::barrier();
            cli::report::report(&args, trace_file.as_deref(), &ctx.names())
        }),
        CliCommand::Probe(args) => context().and_then(|ctx| {
            with_runtime(
                trace_file,
                "core-client",
                Process::Service,
                Flavor::Workers,
                |export, flusher| cli::probe::probe(args, ctx, export, flusher),
            )
        }),
        CliCommand::Exec(args) => context().and_then(|ctx| {
            // Through a running agent, this process only relays one call:
            // one thread does it (no workers to start).
            let flavor = if !args.no_agent && rex_agent::place::socket_path().exists() {
                Flavor::OneThread
            } else {
                Flavor::Workers
            };
            with_runtime(
                trace_file,
                "core-client",
                Process::Command,
                flavor,
                |_, flusher| cli::exec(args, ctx, data_dir, cli::Lifetime { started, flusher }),
            )
        }),
        CliCommand::History {
            limit,
            json,
            server,
        } => context().and_then(|ctx| {
            cli::agent::barrier();
            cli::history(
                data_dir.as_deref(),
                limit,
                json,
                server.as_deref(),
                &ctx.names(),
            )
        }),
        CliCommand::Agent { command } => match command {
            AgentCommand::Start(args) => cli::agent::check(&args)
                .and_then(|()| context())
                .and_then(|ctx| {
                    if args.foreground {
                        with_runtime(
                            trace_file,
                            "core-client-agent",
                            Process::Service,
                            Flavor::Workers,
                            |export, flusher| {
                                // Each call's spans are written just after it
                                // ends when both use the local trace file.
                                let flusher = matches!(export, Export::File(_)).then_some(flusher);
                                cli::agent::run_foreground(args, flusher, ctx, data_dir.as_deref())
                            },
                        )
                    } else {
                        cli::agent::start(
                            &args,
                            trace_file.as_deref(),
                            data_dir.as_deref(),
                            config.as_deref(),
                            &ctx,
                        )
                    }
                }),
            AgentCommand::Stop => cli::agent::stop(),
            AgentCommand::Flush => cli::agent::flush(),
            AgentCommand::Status { json } => {
                context().and_then(|ctx| cli::agent::status(json, &ctx.names()))
            }
            AgentCommand::Warm(args) => context().and_then(|ctx| cli::agent::warm(&args, &ctx)),
        },
        CliCommand::Completions { shell } => cli::completions(shell),
        CliCommand::Man { subcommand } => cli::man(subcommand.as_deref()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("core-client: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// What kind of process this run is, for its span export.
#[derive(Clone, Copy)]
enum Process {
    /// One command: tens of spans, written by the command itself as it
    /// exits (no exporter thread).
    Command,
    /// Long-running (the agent) or many calls (probe): batched.
    Service,
}

/// Which runtime a command runs on.
#[derive(Clone, Copy)]
enum Flavor {
    /// Worker threads, one per core (sessions of its own, services).
    Workers,
    /// This thread only (a call relayed through the agent).
    OneThread,
}

/// Runs `f` on a runtime of `flavor` with telemetry set up for `service`
/// as `process` needs it, and flushes the spans (bounded) before
/// returning, whatever `f` returned.
fn with_runtime<F, Fut, T>(
    trace_file: Option<PathBuf>,
    service: &'static str,
    process: Process,
    flavor: Flavor,
    f: F,
) -> Result<T, CliError>
where
    F: FnOnce(Export, setup::Flusher) -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let runtime = match flavor {
        Flavor::Workers => tokio::runtime::Runtime::new(),
        Flavor::OneThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .map_err(|e| CliError {
        message: format!("cannot start runtime: {e}"),
        code: 1,
    })?;
    // The OTLP client lives on the runtime: set up inside it.
    let _entered = runtime.enter();
    let retention = Retention::from_env().map_err(|e| CliError {
        message: e.to_string(),
        code: 2,
    })?;
    let local = trace_file.map(|p| TraceFile::new(p, retention));
    let export = Export::from_env(local).map_err(|e| CliError {
        message: e.to_string(),
        code: 2,
    })?;
    let mut options = Options::new(export);
    // A CLI tries each export once: a collector that is down must not
    // hold the exit up.
    options.retry = false;
    // One command: its warnings are its one-line messages on stderr.
    options.span_events = false;
    options.span_queue = match process {
        Process::Command => COMMAND_SPAN_QUEUE,
        Process::Service => SERVICE_SPAN_QUEUE,
    };
    options.inline = matches!(process, Process::Command);
    // With no collector, the spans of each call are kept for an
    // exec-server that exports them for this client.
    options.collect = true;
    let telemetry = setup::init(service, LogDefault::Warn, options.clone());
    let otlp = matches!(options.export, Export::Otlp(_));
    let result = runtime.block_on(f(options.export, telemetry.flusher()));
    match flavor {
        // An OTLP exporter needs the runtime running while it sends; on
        // one thread only `block_on` runs it.
        Flavor::OneThread if otlp => {
            let _ = runtime.block_on(tokio::task::spawn_blocking(move || telemetry.shutdown()));
        }
        _ => telemetry.shutdown(),
    }
    // A blocking read of a terminal's stdin (the stdin pump) is not waited
    // for at exit.
    drop(_entered);
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}
