//! `completions` (clap_complete) and `man` (clap_mangen): generated from
//! the same argument definitions the parser uses.

use clap::CommandFactory;

use super::error::CliError;
use super::parse::Cli;

/// Runs `completions SHELL`: the script on stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<u8, CliError> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "core-client", &mut out);
    Ok(0)
}

/// Runs `man [SUBCOMMAND]`: the roff page on stdout.
pub(crate) fn man(subcommand: Option<&str>) -> Result<u8, CliError> {
    let command = Cli::command();
    let man = match subcommand {
        None => clap_mangen::Man::new(command),
        Some(name) => {
            let Some(sub) = command.find_subcommand(name) else {
                let known: Vec<String> = command
                    .get_subcommands()
                    .map(|s| s.get_name().to_owned())
                    .collect();
                return Err(CliError::usage(format!(
                    "no subcommand `{name}` (one of: {})",
                    known.join(", ")
                )));
            };
            clap_mangen::Man::new(sub.clone()).title(format!("core-client-{}", sub.get_name()))
        }
    };
    let mut text = Vec::new();
    man.render(&mut text)
        .map_err(|e| CliError::failed(format!("rendering the manual page: {e}")))?;
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(&text);
    Ok(0)
}
