//! A service's settings from a TOML file as well as its flags: each key is
//! a flag's long name (`max-connections = 512`, `directory = ["http://a",
//! "http://b"]`, `no-hop-headers = true`). A flag on the command line or
//! its environment variable wins over the file, and the file over the
//! built-in default. An unknown key, a value of the wrong type or one the
//! flag refuses is an error naming the file and the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

/// Largest config file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than a settings file may be (1 MiB).
    #[error("{}: larger than {MAX_FILE_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not TOML.
    #[error("{}:{line}: not TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// Why.
        message: String,
    },
    /// A key names no flag of this program.
    #[error("{}: unknown key `{key}` (each key is a flag's long name)", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A key's value is of a type no flag takes (a table, a date, a
    /// list for a flag taken once, a non-boolean for a switch).
    #[error("{}: `{key}`: {expected}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// The flags refused a value the file gave.
    #[error("{}: {}", path.display(), first_line(source))]
    Refused {
        /// The file.
        path: PathBuf,
        /// The flags' own message, naming the flag.
        source: Box<clap::Error>,
    },
}

/// Parses the process's arguments into `A`, taking what they leave at
/// its default from the TOML file named by the argument `file_arg` (a
/// `PathBuf` flag of `A`'s, typically `--config`), when one is given.
/// Bad flags exit as clap does; a bad file is an error.
pub fn parse<A: CommandFactory + FromArgMatches>(file_arg: &str) -> Result<A, ConfigFileError> {
    parse_from::<A>(std::env::args_os().collect(), file_arg)
}

/// [`parse`] with the given arguments (the program's name first).
fn parse_from<A: CommandFactory + FromArgMatches>(
    args: Vec<OsString>,
    file_arg: &str,
) -> Result<A, ConfigFileError> {
    let command = A::command();
    // The file may be named beside a subcommand even where the program's
    // other flags may not (`relay --config FILE health`).
    let strict = command.is_args_conflicts_with_subcommands_set();
    let matches = command
        .clone()
        .args_conflicts_with_subcommands(false)
        .get_matches_from(args.clone());
    if strict && let Some((sub, _)) = matches.subcommand() {
        let given = command.get_arguments().find(|a| {
            a.get_id() != file_arg
                && matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
        });
        if let Some(arg) = given {
            let flag = arg
                .get_long()
                .map_or_else(|| arg.get_id().to_string(), |l| format!("--{l}"));
            let message = format!("the subcommand '{sub}' cannot be used with '{flag}'\n");
            let mut command = command.clone();
            clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message)
                .format(&mut command)
                .exit();
        }
    }
    let file = matches
        .try_get_one::<PathBuf>(file_arg)
        .ok()
        .flatten()
        .cloned();
    let matches = match file {
        Some(path) => with_file(command, &path, args, &matches, file_arg)?,
        None => matches,
    };
    A::from_arg_matches(&matches).map_err(|e| e.exit())
}

/// The arguments again, with the file's settings for every flag they left
/// at its default placed right after the program's name, parsed.
fn with_file(
    command: clap::Command,
    path: &Path,
    mut args: Vec<OsString>,
    matches: &ArgMatches,
    file_arg: &str,
) -> Result<ArgMatches, ConfigFileError> {
    let text = read(path)?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigFileError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |at| {
            let before = text.as_bytes().get(..at.start).unwrap_or_default();
            before.iter().filter(|b| **b == b'\n').count() + 1
        }),
        message: e.message().to_owned(),
    })?;
    let bad = |key: &str, expected| ConfigFileError::BadValue {
        path: path.to_owned(),
        key: key.to_owned(),
        expected,
    };
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_id() != file_arg)
            .filter(|a| {
                !matches!(
                    a.get_action(),
                    ArgAction::Help
                        | ArgAction::HelpShort
                        | ArgAction::HelpLong
                        | ArgAction::Version
                )
            })
        else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
            });
        };
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{key}");
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match value {
                toml::Value::Boolean(true) => extra.push(flag.into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(bad(key, "true or false")),
            },
            ArgAction::Append => {
                let values = match value {
                    toml::Value::Array(items) => items.iter().collect(),
                    one => vec![one],
                };
                for v in values {
                    extra.push(
                        assigned(&flag, v)
                            .ok_or_else(|| bad(key, "a string, a number or a list of them"))?,
                    );
                }
            }
            _ => {
                extra.push(assigned(&flag, value).ok_or_else(|| bad(key, "a string or a number"))?);
            }
        }
    }
    let at = usize::from(!args.is_empty());
    args.splice(at..at, extra);
    // The file's settings stand beside a subcommand (`relay health` checks
    // the relay the file describes), where the user's own flags may not.
    command
        .args_conflicts_with_subcommands(false)
        .try_get_matches_from(args)
        .map_err(|e| ConfigFileError::Refused {
            path: path.to_owned(),
            source: Box::new(e),
        })
}

/// The first line of clap's message, without its `error: `.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// `--flag=value` for a scalar value.
fn assigned(flag: &str, value: &toml::Value) -> Option<OsString> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        _ => return None,
    };
    Some(format!("{flag}={text}").into())
}

/// The file's text, bounded.
fn read(path: &Path) -> Result<String, ConfigFileError> {
    use std::io::Read;
    let failed = |source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(failed)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(name = "svc", args_conflicts_with_subcommands = true)]
    struct Args {
        #[command(subcommand)]
        command: Option<Sub>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:1")]
        listen: String,
        #[arg(long, default_value_t = 10)]
        max_connections: usize,
        #[arg(long)]
        quiet: bool,
        #[arg(long, value_delimiter = ',')]
        directory: Vec<String>,
        #[arg(long, default_value_t = 1.5)]
        rate: f64,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Health,
    }

    /// A file with `text`, removed when dropped.
    struct File(PathBuf);

    impl File {
        fn new(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "config-file-test-{}-{}.toml",
                std::process::id(),
                next_suffix()
            ));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn next_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn parse(file: &File, flags: &[&str]) -> Result<Args, ConfigFileError> {
        let mut args: Vec<OsString> = vec!["svc".into(), "--config".into(), (&file.0).into()];
        args.extend(flags.iter().map(OsString::from));
        parse_from::<Args>(args, "config")
    }

    #[test]
    fn the_file_fills_what_the_flags_leave_at_their_defaults() {
        let file = File::new(
            "listen = \"0.0.0.0:7600\"\nmax-connections = 512\nquiet = true\n\
             directory = [\"http://a:1\", \"http://b:2\"]\nrate = 2.5\n",
        );
        let args = parse(&file, &[]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:7600");
        assert_eq!(args.max_connections, 512);
        assert!(args.quiet);
        assert_eq!(args.directory, ["http://a:1", "http://b:2"]);
        assert!((args.rate - 2.5).abs() < f64::EPSILON);
        // A flag on the command line wins over the file.
        let args = parse(
            &file,
            &["--max-connections", "7", "--directory", "http://c:3"],
        )
        .unwrap();
        assert_eq!(args.max_connections, 7);
        assert_eq!(args.directory, ["http://c:3"]);
        assert_eq!(args.listen, "0.0.0.0:7600");
        // Without a file, the defaults.
        let args = parse_from::<Args>(vec!["svc".into()], "config").unwrap();
        assert_eq!(args.max_connections, 10);
        assert!(!args.quiet && args.directory.is_empty());
    }

    #[test]
    fn a_false_switch_and_a_single_list_value_are_taken() {
        let file = File::new("quiet = false\ndirectory = \"http://a:1,http://b:2\"\n");
        let args = parse(&file, &[]).unwrap();
        assert!(!args.quiet);
        assert_eq!(args.directory, ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file_and_the_key() {
        let cases = [
            ("max_connections = 5\n", "unknown key `max_connections`"),
            ("config = \"/x\"\n", "unknown key `config`"),
            ("help = true\n", "unknown key `help`"),
            ("quiet = \"yes\"\n", "`quiet`: true or false"),
            (
                "listen = [\"a\", \"b\"]\n",
                "`listen`: a string or a number",
            ),
            ("directory = [[\"a\"]]\n", "`directory`: a string"),
            ("[section]\nx = 1\n", "unknown key `section`"),
            ("max-connections = -3\n", "--max-connections"),
            ("quiet = true\nmax-connections = \n", ":2: not TOML"),
        ];
        for (text, says) in cases {
            let file = File::new(text);
            let e = parse(&file, &[]).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.starts_with(&file.0.display().to_string()), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let missing = parse_from::<Args>(
            vec![
                "svc".into(),
                "--config".into(),
                "/nonexistent/svc.toml".into(),
            ],
            "config",
        )
        .unwrap_err();
        assert!(matches!(missing, ConfigFileError::Read { .. }), "{missing}");
    }

    #[test]
    fn a_subcommand_sees_the_files_settings() {
        let args = parse_from::<Args>(vec!["svc".into(), "health".into()], "config").unwrap();
        assert!(matches!(args.command, Some(Sub::Health)));
        assert_eq!(args.listen, "127.0.0.1:1");
        let file = File::new("listen = \"0.0.0.0:7600\"\n");
        let args = parse(&file, &["health"]).unwrap();
        assert!(matches!(args.command, Some(Sub::Health)));
        assert_eq!(args.listen, "0.0.0.0:7600");
    }
}
