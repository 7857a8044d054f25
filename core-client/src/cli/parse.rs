//! Parsing the command line: the whole parser ([`Cli`]), and for a command
//! line that starts with `exec` a parser of `exec` alone.

use std::ffi::OsString;

use clap::{Args, FromArgMatches, Parser};

use super::{Cli, CliCommand, ExecArgs, GlobalArgs};

/// Parses this process's arguments, exiting with clap's message (and
/// status 2, or 0 for help) when they are not valid.
///
/// A command line whose first argument is `exec`, the one run most and
/// the one whose start-up counts, is parsed by a parser of `exec` alone:
/// building every subcommand's parser is most of clap's cost at start-up.
/// The outcome, help and errors are those of the whole parser (tested).
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "exec") {
        return parse_exec(args).unwrap_or_else(|e| e.exit());
    }
    Cli::parse_from(args)
}

/// [`Cli`] from a command line whose first argument is `exec`, by a
/// parser of the global options and `exec` alone.
pub(super) fn parse_exec(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    // As the derived parser does: the variant's help over the doc comment
    // of `ExecArgs`.
    let exec = ExecArgs::augment_args(clap::Command::new("exec"))
        .about(EXEC_ABOUT)
        .long_about(EXEC_LONG_ABOUT);
    let mut parser = GlobalArgs::augment_args(
        clap::Command::new("core-client").version(env!("CARGO_PKG_VERSION")),
    )
    .subcommand_required(true)
    .arg_required_else_help(true)
    .subcommand(exec);
    let matches = parser.try_get_matches_from_mut(args)?;
    let global = GlobalArgs::from_arg_matches(&matches)?;
    let Some(("exec", exec)) = matches.subcommand() else {
        return Err(parser.error(
            clap::error::ErrorKind::MissingSubcommand,
            "`exec` was expected",
        ));
    };
    Ok(Cli {
        global,
        command: CliCommand::Exec(ExecArgs::from_arg_matches(exec)?),
    })
}

/// `exec`'s summary: the first paragraph of its help, without the full
/// stop (as clap takes it from a doc comment).
macro_rules! exec_summary {
    () => {
        "Run a command (or, without one, a login shell) on an exec-server; \
         stream its output; exit with its status"
    };
}

/// `exec`'s summary (the first paragraph of [`EXEC_LONG_ABOUT`]).
pub(super) const EXEC_ABOUT: &str = exec_summary!();

/// `exec`'s help.
pub(super) const EXEC_LONG_ABOUT: &str = concat!(
    exec_summary!(),
    ".\n\n\
    Name a server from the config file or the known servers (`core-client \
    exec build-box -- make`), or say where it is with flags. Without a \
    command (`core-client exec build-box`), the exec-server starts the \
    login shell of the user it runs as (from its password database, else \
    /bin/sh) in that user's home directory (unless --cwd names another), \
    as `ssh HOST` does: on a terminal when the local stdin and stdout are \
    terminals, else with pipes. Each setting is taken from the first of: a \
    flag (or its REX_* environment variable), the config file's \
    [servers.NAME], its [defaults], the known servers (the server's key), \
    built-in defaults. `core-client config show NAME` prints them and \
    where each came from.\n\n\
    Exit status: the remote command's; 128+N if it died of signal N; \
    127/126 if it could not be run; 255 for connection and authentication \
    failures (a changed server key too); 2 for usage and configuration \
    errors.\n\n\
    Ctrl-C (SIGINT) and SIGTERM are passed to the remote command, whose \
    status then follows (130 or 143 when it dies of them); from then on, \
    output this side's stdout cannot take at once is dropped. A second \
    Ctrl-C or SIGTERM stops waiting at once: exit 130 or 143.\n\n\
    With a terminal (-t; or the login shell, as above; or the `terminal` \
    option), the command runs on a pseudo-terminal on the exec-server, \
    sized as the local window and with the local TERM; its stderr comes \
    merged into its stdout, as on any terminal. The local terminal is put \
    in raw mode (restored however `exec` ends) so that every key goes to \
    the remote terminal: Ctrl-C is a byte the remote terminal turns into \
    SIGINT for its foreground job, and so are Ctrl-Z and Ctrl-\\. Window \
    changes are passed on. A SIGINT, SIGTERM or SIGHUP sent to core-client \
    itself ends the session (the remote command is killed and its terminal \
    hung up), restores the local terminal, says so in one line and exits \
    128+N. The exit status is otherwise as without a terminal."
);
