//! The config file: named servers and `[defaults]`
//! (`$XDG_CONFIG_HOME/rex/config.toml`, or `--config FILE`).
//!
//! ```toml
//! [defaults]
//! relay = "relay.example:7600"     # or ["a:7600", "b:7600"], tried in order
//! ca = "relay-ca.pem"              # for https:// relays: trust this CA only
//!
//! [servers.build-box]
//! server_file = "build-box.pub"    # or server = "<44-character key>", or `core-client trust`
//! cwd = "/src/project"
//! env = { CC = "clang" }
//! ```
//!
//! Layout:
//! - [`schema`]: the file's shape as serde reads it (values with spans).
//! - [`keys`]: unknown keys found before values, with the nearest known key.
//! - [`options`]: `warm`, `resume`, `terminal` (and `-o KEY=VALUE`).
//! - [`suggest`]: the nearest known key to a mistyped one.
//!
//! Loading checks everything a file says (syntax, keys, types, values)
//! and reports the first problem with its file, line and column.

pub(crate) mod keys;
pub(crate) mod options;
pub(crate) mod schema;
pub(crate) mod suggest;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use proto::keys::PublicKey;
use toml::Spanned;

use crate::address::RelayAddress;
use options::{OptionError, Resume, Terminal, Warm};

/// A value read from the file, with the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FromFile<T> {
    /// The value.
    pub value: T,
    /// Its line.
    pub line: usize,
}

/// Where a server's public key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerKey {
    /// Written in the file.
    Key(PublicKey),
    /// Read from this file (resolved against the config's directory).
    File(PathBuf),
}

/// One table's settings, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The table's first line (its header, or its first key).
    pub line: usize,
    /// Relays, in order.
    pub relays: Option<FromFile<Vec<RelayAddress>>>,
    /// The exec-server's key (servers only).
    pub server: Option<FromFile<ServerKey>>,
    /// The client's key file.
    pub key: Option<FromFile<PathBuf>>,
    /// The CA file for `https://` relays.
    pub ca: Option<FromFile<PathBuf>>,
    /// The remote working directory.
    pub cwd: Option<FromFile<PathBuf>>,
    /// Remote environment variables.
    pub env: BTreeMap<String, FromFile<String>>,
    /// Record the server on first use.
    pub accept_new: Option<FromFile<bool>>,
    /// The warm policy.
    pub warm: Option<FromFile<Warm>>,
    /// Resume over a new link, and for how long.
    pub resume: Option<FromFile<Resume>>,
    /// Terminal allocation.
    pub terminal: Option<FromFile<Terminal>>,
    /// Forward the command's spans through the session.
    pub span_forwarding: Option<FromFile<bool>>,
}

/// A config file, read and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Config {
    /// The file.
    pub path: PathBuf,
    /// `[defaults]`.
    pub defaults: Entry,
    /// `[servers.NAME]`, by name.
    pub servers: BTreeMap<String, Entry>,
}

/// Reading the config file failed; the message names the file and, for a
/// problem in it, the line and column.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file says something wrong.
    #[error("{}:{line}:{column}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        problem: Box<Problem>,
    },
}

/// What is wrong in a config file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Problem {
    /// Not valid TOML.
    #[error("not valid TOML: {}", first_line(.0.message()))]
    Syntax(#[source] Box<toml::de::Error>),
    /// A key the file's shape does not know.
    #[error("unknown key `{key}`{}{}{}", in_table(.table), hint_text(.hint), suggest::did_you_mean(*.suggestion))]
    UnknownKey {
        /// The key.
        key: String,
        /// Its table.
        table: String,
        /// The nearest known key.
        suggestion: Option<&'static str>,
        /// Why a known key is out of place.
        hint: Option<&'static str>,
    },
    /// A value of the wrong type.
    #[error("{}{}", key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default(), first_line(source.message()))]
    Type {
        /// The key it was given to (dotted), when known.
        key: Option<String>,
        /// The deserializer's error.
        source: Box<toml::de::Error>,
    },
    /// A relay address that cannot be one.
    #[error(transparent)]
    Relay(#[from] crate::address::AddressError),
    /// `server` is not a public key.
    #[error("server: {0} (the key printed by `exec-server keygen`)")]
    ServerKey(#[source] proto::keys::KeyError),
    /// Both `server` and `server_file`.
    #[error("give `server` or `server_file`, not both")]
    TwoServerKeys,
    /// An option's value is not valid.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// An environment variable name that cannot be one.
    #[error("env: {0:?} is not a variable name")]
    EnvName(String),
    /// A relay list with nothing in it.
    #[error("relay: the list is empty")]
    NoRelays,
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or("")
}

fn in_table(table: &str) -> String {
    if table.is_empty() {
        " at the top level (expected [defaults] or [servers.NAME])".into()
    } else {
        format!(" in [{table}]")
    }
}

fn hint_text(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(": {h}")).unwrap_or_default()
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// Reads and checks the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Reads the file at `path` if there is one: a missing default file
    /// is no config at all.
    pub(crate) fn load_if_present(path: &Path) -> Result<Option<Self>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Checks `text`, the contents of `path`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let at = |span: Option<Range<usize>>, problem: Problem| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                problem: Box::new(problem),
            }
        };
        let tree = toml::de::DeTable::parse(text)
            .map_err(|e| at(e.span(), Problem::Syntax(Box::new(e))))?;
        if let Some(stray) = keys::first_stray(&tree) {
            return Err(at(
                Some(stray.span),
                Problem::UnknownKey {
                    key: stray.key,
                    table: stray.table,
                    suggestion: stray.suggestion,
                    hint: stray.hint,
                },
            ));
        }
        let doc: schema::Document = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let key = span.as_ref().and_then(|s| keys::key_at(&tree, s.start));
            at(
                span,
                Problem::Type {
                    key,
                    source: Box::new(e),
                },
            )
        })?;
        let base = path.parent();
        let lines = Lines { text };
        let entry = |t: &schema::Table, first: usize| -> Result<Entry, ConfigError> {
            check_entry(t, base, first, &lines).map_err(|(span, problem)| at(Some(span), problem))
        };
        let defaults = entry(&doc.defaults, 1)?;
        let mut servers = BTreeMap::new();
        for (name, table) in &doc.servers {
            let first = line_column(text, table.span().start).0;
            servers.insert(name.clone(), entry(table.get_ref(), first)?);
        }
        Ok(Self {
            path: path.to_owned(),
            defaults,
            servers,
        })
    }

    /// Where `line` of this file is, for a setting's provenance.
    pub(crate) fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }
}

type Checked<T> = Result<T, (Range<usize>, Problem)>;

/// Places values on their lines.
struct Lines<'a> {
    text: &'a str,
}

impl Lines<'_> {
    fn from<T>(&self, span: Range<usize>, value: T) -> FromFile<T> {
        FromFile {
            value,
            line: line_column(self.text, span.start).0,
        }
    }

    fn parsed<T: std::str::FromStr<Err = OptionError>>(
        &self,
        s: &Option<Spanned<String>>,
    ) -> Checked<Option<FromFile<T>>> {
        s.as_ref()
            .map(|s| {
                s.get_ref()
                    .parse()
                    .map(|v| self.from(s.span(), v))
                    .map_err(|e| (s.span(), Problem::Option(e)))
            })
            .transpose()
    }

    fn flag(&self, b: &Option<Spanned<bool>>) -> Option<FromFile<bool>> {
        b.as_ref().map(|b| self.from(b.span(), *b.get_ref()))
    }
}

fn check_entry(
    t: &schema::Table,
    base: Option<&Path>,
    first: usize,
    lines: &Lines<'_>,
) -> Checked<Entry> {
    let path_of = |s: &Spanned<String>| {
        lines.from(
            s.span(),
            crate::paths::resolve(Path::new(s.get_ref()), base),
        )
    };
    let relays = match &t.relay {
        None => None,
        Some(r) => {
            let list = r
                .get_ref()
                .list()
                .into_iter()
                .map(RelayAddress::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| (r.span(), Problem::from(e)))?;
            if list.is_empty() {
                return Err((r.span(), Problem::NoRelays));
            }
            Some(lines.from(r.span(), list))
        }
    };
    let server = match (&t.server, &t.server_file) {
        (Some(_), Some(file)) => return Err((file.span(), Problem::TwoServerKeys)),
        (Some(k), None) => {
            let key = k
                .get_ref()
                .parse::<PublicKey>()
                .map_err(|e| (k.span(), Problem::ServerKey(e)))?;
            Some(lines.from(k.span(), ServerKey::Key(key)))
        }
        (None, Some(f)) => {
            let p = path_of(f);
            Some(FromFile {
                value: ServerKey::File(p.value),
                line: p.line,
            })
        }
        (None, None) => None,
    };
    let mut env = BTreeMap::new();
    for (name, value) in t.env.iter().flatten() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err((value.span(), Problem::EnvName(name.clone())));
        }
        env.insert(
            name.clone(),
            lines.from(value.span(), value.get_ref().clone()),
        );
    }
    Ok(Entry {
        line: first,
        relays,
        server,
        key: t.key.as_ref().map(path_of),
        ca: t.ca.as_ref().map(path_of),
        cwd: t
            .cwd
            .as_ref()
            .map(|c| lines.from(c.span(), PathBuf::from(c.get_ref()))),
        env,
        accept_new: lines.flag(&t.accept_new),
        span_forwarding: lines.flag(&t.span_forwarding),
        warm: lines.parsed(&t.warm)?,
        resume: t
            .resume
            .as_ref()
            .map(|r| match r.get_ref() {
                schema::ResumeValue::Flag(on) => Ok(lines.from(r.span(), Resume::from_flag(*on))),
                schema::ResumeValue::Within(text) => text
                    .parse()
                    .map(|v| lines.from(r.span(), v))
                    .map_err(|e| (r.span(), Problem::Option(e))),
            })
            .transpose()?,
        terminal: lines.parsed(&t.terminal)?,
    })
}

#[cfg(test)]
mod tests;
