//! `trace-sink`: a stand-in for Jaeger v2 where its image cannot be pulled
//! (see `integration_tests::sink`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use integration_tests::sink::{DEFAULT_MAX_SPANS, SinkConfig, TraceSink, health};
use telemetry::setup::{Export, LogDefault, Options};

/// Takes OTLP trace exports (gRPC, and HTTP with protobuf or JSON bodies)
/// and answers Jaeger v2's HTTP query API
/// (api_v3: services, trace search, trace by id) and its health endpoint,
/// with Jaeger's parameters, status codes and JSON. Spans are kept in
/// memory, at most --max-spans of them: past that the oldest traces are
/// dropped whole.
#[derive(Debug, Parser)]
#[command(name = "trace-sink", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address for OTLP/gRPC trace exports.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4317")]
    otlp_listen: SocketAddr,
    /// Address for OTLP/HTTP trace exports (`POST /v1/traces`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4318")]
    otlp_http_listen: SocketAddr,
    /// Address for the query API (`/api/v3/...`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:16686")]
    http_listen: SocketAddr,
    /// Address for the health endpoint (`GET /status`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:13133")]
    health_listen: SocketAddr,
    /// Most spans kept in memory (at least 1).
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_SPANS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    max_spans: usize,
    /// A Jaeger configuration file, accepted so that the sink can stand in
    /// for Jaeger in the compose file unchanged. It must exist; the sink
    /// reads only its own flags (it never adjusts clock skew, as that file
    /// tells Jaeger not to).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running sink's health endpoint whether it is serving: exit 0
    /// if it answers 200, else exit 1 with one line on stderr. Made for
    /// container healthchecks.
    Health {
        /// The health endpoint.
        #[arg(
            long,
            value_name = "URL",
            default_value = "http://127.0.0.1:13133/status"
        )]
        url: String,
        /// Seconds the probe may take.
        #[arg(long, value_name = "SECS", default_value_t = 3)]
        timeout_secs: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trace-sink: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Health { url, timeout_secs }) = args.command {
        return match runtime.block_on(health::probe(&url, Duration::from_secs(timeout_secs))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("trace-sink: not healthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Logs only: the sink exports no spans of its own.
    let off = Options::new(Export::Off);
    let telemetry = telemetry::setup::init("trace-sink", LogDefault::Info, off);
    if let Some(path) = &args.config {
        if !path.is_file() {
            eprintln!(
                "trace-sink: --config {}: no such file (it stands in for Jaeger's configuration)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        tracing::info!(config = %path.display(), "a Jaeger configuration was given: the sink keeps its own settings and never adjusts clock skew");
    }
    let config = SinkConfig {
        otlp_listen: args.otlp_listen,
        otlp_http_listen: args.otlp_http_listen,
        http_listen: args.http_listen,
        health_listen: args.health_listen,
        max_spans: args.max_spans,
    };
    let code = runtime.block_on(async move {
        let signals = lifecycle::Tasks::new();
        let shutdown = lifecycle::signals::stop_on_signals(&signals);
        let sink = match TraceSink::start(config, shutdown).await {
            Ok(sink) => sink,
            Err(e) => {
                eprintln!("trace-sink: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "trace-sink: OTLP/gRPC on {}, OTLP/HTTP on {}, query API on {}, health on {}; keeping at most {} spans",
            sink.otlp_addr(),
            sink.otlp_http_addr(),
            sink.http_addr(),
            sink.health_addr(),
            args.max_spans
        );
        match sink.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("trace-sink: {e}");
                ExitCode::FAILURE
            }
        }
    });
    telemetry.shutdown();
    code
}
