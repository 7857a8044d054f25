//! `core-client`: run commands on exec-servers through an encrypted relay.

use std::process::ExitCode;

use clap::Parser;
use core_client::cli::{self, Cli, CliCommand, CliError, EXIT_CONNECTION};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        CliCommand::Keygen { out } => cli::keygen(&out),
        CliCommand::Pubkey { key } => cli::pubkey(&key),
        CliCommand::Exec(args) => with_runtime("core-client", |_| cli::exec(args)),
        CliCommand::Demo => with_runtime("core-client", |_| async {
            core_client::demo::run()
                .await
                .map(|code| u8::try_from(code & 0xff).unwrap_or(EXIT_CONNECTION))
                .map_err(|e| CliError {
                    message: e.to_string(),
                    code: 1,
                })
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("core-client: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn with_runtime<F, Fut>(service: &'static str, f: F) -> Result<u8, CliError>
where
    F: FnOnce(()) -> Fut,
    Fut: std::future::Future<Output = Result<u8, CliError>>,
{
    let telemetry = telemetry::setup::init(service, telemetry::setup::LogDefault::Warn);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| CliError {
        message: format!("cannot start runtime: {e}"),
        code: 1,
    })?;
    let result = runtime.block_on(f(()));
    drop(telemetry);
    result
}
