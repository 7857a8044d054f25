//! `exec`'s arguments ([`ExecArgs`]) and its help, which the whole parser
//! and the parser of `exec` alone both take.

use std::ffi::OsString;

use clap::Args;

use crate::settings::ServerArgs;

/// Arguments of `exec`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ExecArgs {
    /// A server named in the config file ([servers.NAME]) or the known
    /// servers.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Where and how.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Do not forward stdin (the remote stdin is /dev/null; on a terminal,
    /// nothing is typed into it).
    #[arg(short = 'n', long)]
    pub no_stdin: bool,
    /// Run the command on a terminal (a pseudo-terminal on the exec-server),
    /// as `ssh -t` does: for interactive programs (shells, editors, REPLs,
    /// password prompts). Sized as the local window (24x80 when there is
    /// none); the local terminal, if stdin is one, goes into raw mode.
    #[arg(short = 't', long = "tty", conflicts_with = "no_tty")]
    pub tty: bool,
    /// Never run the command (or the login shell) on a terminal: pipes
    /// only, as `ssh -T` gives, whatever the `terminal` option says.
    /// Without -t or -T the `terminal` option decides, as ssh's
    /// RequestTTY: `auto` (the default) gives the login shell a terminal
    /// when the local stdin and stdout are terminals and -n is not given,
    /// and a command pipes; `always` gives both a terminal; `never`
    /// neither.
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Print the command's trace id on stderr when it ends.
    #[arg(long)]
    pub print_trace_id: bool,
    /// Record the command's arguments too (by default only the program
    /// name is recorded).
    #[arg(long)]
    pub record_args: bool,
    /// Do not run the command unless its record can be kept, and fail if
    /// it could not be saved.
    #[arg(long, conflicts_with = "no_records")]
    pub strict_records: bool,
    /// Keep no record of this command.
    #[arg(long)]
    pub no_records: bool,
    /// Do not use a running agent (`core-client agent start`): open a
    /// session of this command's own.
    #[arg(long)]
    pub no_agent: bool,
    /// The program and its arguments (no shell unless you run one): the
    /// first word after NAME starts it, as with ssh, and every word after
    /// that is the command's, options too; or give it after `--`. Without
    /// a command: the remote user's login shell.
    #[arg(last = true, num_args = 1..)]
    pub command: Vec<OsString>,
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
    exec build-box make -j4`: as with ssh, the first word after the name \
    starts the command, and the words after it are the command's, options \
    too; `core-client exec build-box -- make -j4` is the same), or say \
    where it is with flags (then the command comes after `--`). Without a \
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
    errors; 141 when stdout goes away (`| head -1`; the remote command is \
    ended), as for a local command killed by SIGPIPE.\n\n\
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
