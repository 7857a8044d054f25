//! A server's effective settings and where each came from: a flag (or its
//! environment variable) over the config file's `[servers.NAME]`, over its
//! `[defaults]`, over the known servers (for the key and the relay), over
//! the built-in defaults. `exec` runs with them; `config show` prints them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use clap::Args;
use proto::keys::PublicKey;

use crate::address::{AddressError, RelayAddress};
use crate::config::options::{OptionError, OptionValue, Resume, Terminal, Warm};
use crate::config::{Config, Entry, FromFile, ServerKey};
use crate::known::{KeyChanged, KnownServers};

/// The flags that say which server and how: shared by `exec` and
/// `config show`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServerArgs {
    /// Relay address (repeatable, or a comma-separated list): http://HOST:PORT,
    /// https://HOST:PORT, HOST:PORT, HOST (port 7600) or [IPV6]:PORT.
    /// https:// means TLS (never downgraded to plain) and http:// plain
    /// HTTP/2; a bare address means plain HTTP/2 on loopback and private
    /// addresses and TLS elsewhere. A new session tries them in order,
    /// each for at most 3 s to connect, going on to the next when one
    /// cannot be reached or does not have the exec-server; a session whose
    /// link breaks comes back through any of them. [env: REX_RELAY]
    #[arg(long, value_name = "ADDRESS", value_delimiter = ',')]
    pub relay: Vec<String>,
    /// Connect straight to an exec-server's --listen address instead of a
    /// relay (http://HOST:PORT, or https://HOST:PORT when it serves TLS).
    #[arg(long, value_name = "URL", conflicts_with = "relay")]
    pub direct: Option<String>,
    /// For TLS links: trust only the CA certificates in FILE (PEM, e.g.
    /// the ca.pem of `relay tls-init`) [default: the system's]. [env:
    /// REX_CA]
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The exec-server's public key (as printed by `exec-server keygen`).
    /// [env: REX_SERVER]
    #[arg(long, value_name = "PUBKEY")]
    pub server: Option<String>,
    /// Read the exec-server's public key from a file instead (its first
    /// non-comment line). [env: REX_SERVER_FILE]
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    pub server_file: Option<PathBuf>,
    /// This client's private key file [default: the config dir's
    /// rex/client.key, written by `core-client keygen`] [env: REX_KEY]
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Set a remote environment variable (repeatable; over the config
    /// file's env).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Remote working directory.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Record the server in the known servers on its first successful
    /// handshake if it is not known yet (as ssh's
    /// StrictHostKeyChecking=accept-new); a known name with another key
    /// is always refused.
    #[arg(long)]
    pub accept_new: bool,
    /// Set an option as the config file would (repeatable): warm=off|30s,
    /// resume=true|false|DURATION, terminal=never|auto|always,
    /// accept_new=true|false.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Let the command end with its link (resume=false): by default, when
    /// the link to the exec-server breaks (a relay restart, a network
    /// blip), the session comes back for up to a minute (the `resume`
    /// option: resume=5m waits five), through any of the relays, and the
    /// command goes on with nothing lost.
    #[arg(long)]
    pub no_resume: bool,
    /// Keep the command's spans in the local trace file only (config key
    /// span_forwarding=false): by default, with no OTLP endpoint of its
    /// own, the command hands its spans through the session to an
    /// exec-server that exports them to its collector.
    #[arg(long, env = "REX_NO_SPAN_FORWARDING")]
    pub no_span_forwarding: bool,
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A command-line flag.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// The config file, at `file:line`.
    File(String),
    /// The known servers, at `file:line`.
    Known(String),
    /// The default key file.
    DefaultKey,
    /// Built in.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::File(at) => write!(f, "config {at}"),
            Source::Known(at) => write!(f, "known servers {at}"),
            Source::DefaultKey => f.write_str("default key file"),
            Source::Default => f.write_str("built-in default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its source.
    pub source: Source,
}

fn sourced<T>(value: T, source: Source) -> Sourced<T> {
    Sourced { value, source }
}

/// How the exec-server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Through these relays, tried in order.
    Relays(Vec<RelayAddress>),
    /// Straight to an exec-server's listener.
    Direct(String),
}

/// The effective settings for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The server's name, when it has one.
    pub name: Option<String>,
    /// How to reach it (`None`: nothing says).
    pub route: Option<Sourced<Route>>,
    /// Its public key (`None`: nothing says).
    pub server: Option<Sourced<PublicKey>>,
    /// The client's key file (`None`: none given and no default key).
    pub key: Option<Sourced<PathBuf>>,
    /// The CA file for TLS links (`None`: the system's CA certificates).
    pub ca: Option<Sourced<PathBuf>>,
    /// The remote working directory (`None`: the exec-server's own).
    pub cwd: Option<Sourced<PathBuf>>,
    /// Remote environment variables.
    pub env: BTreeMap<String, Sourced<String>>,
    /// Record the server on first use.
    pub accept_new: Sourced<bool>,
    /// The warm policy.
    pub warm: Sourced<Warm>,
    /// Resume over a new link, and for how long.
    pub resume: Sourced<Resume>,
    /// Terminal allocation.
    pub terminal: Sourced<Terminal>,
    /// Forward the command's spans through the session (when there is no
    /// collector of our own).
    pub span_forwarding: Sourced<bool>,
    /// Whether the name's key is the one the known servers hold.
    pub known: bool,
}

/// The settings cannot be worked out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    /// A relay address is not one.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// `--server` (or `REX_SERVER`) is not a key.
    #[error(
        "{0}: not a valid public key (expected the 44-character key printed by `exec-server keygen`)"
    )]
    ServerKey(&'static str),
    /// A key file could not be read.
    #[error(transparent)]
    KeyFile(#[from] proto::keys::KeyError),
    /// `-e` without `NAME=`.
    #[error("--env takes NAME=VALUE")]
    Env,
    /// `-o` is not valid.
    #[error("-o: {0}")]
    Option(#[from] OptionError),
    /// A name nothing defines.
    #[error(
        "no server named `{name}`: not in {config} nor in the known servers (add [servers.{name}] to the config file, or run `core-client trust {name} --server KEY`)"
    )]
    UnknownName {
        /// The name.
        name: String,
        /// The config file consulted.
        config: String,
    },
    /// A name that cannot be one.
    #[error(
        "`{0}` cannot name a server (letters, digits, `.`, `_` and `-`, not starting with `-`)"
    )]
    BadName(String),
    /// The known servers hold another key for the name.
    #[error(transparent)]
    KeyChanged(#[from] Box<KeyChanged>),
}

/// What the settings are worked out from.
pub(crate) struct Inputs<'a> {
    /// The server's name, if one was given.
    pub name: Option<&'a str>,
    /// The flags.
    pub args: &'a ServerArgs,
    /// The environment (`REX_RELAY`, `REX_SERVER`, `REX_SERVER_FILE`, `REX_KEY`,
    /// `REX_CA`).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The config file, if there is one.
    pub config: Option<&'a Config>,
    /// The known servers.
    pub known: &'a KnownServers,
    /// The default client key file, if a config directory is known.
    pub default_key: Option<PathBuf>,
}

/// The first of `candidates` that is set.
fn first<T>(candidates: impl IntoIterator<Item = Option<Sourced<T>>>) -> Option<Sourced<T>> {
    candidates.into_iter().flatten().next()
}

impl Settings {
    /// Works out the settings: flag > environment > the server's table >
    /// `[defaults]` > known servers (key and relay) > built-in default.
    pub(crate) fn resolve(inputs: &Inputs<'_>) -> Result<Self, SettingsError> {
        let Inputs {
            name,
            args,
            env,
            config,
            known,
            ..
        } = *inputs;
        if let Some(n) = name
            && !crate::config::keys::valid_name(n)
        {
            return Err(SettingsError::BadName(n.to_owned()));
        }
        let table = name.and_then(|n| config.and_then(|c| c.servers.get(n)));
        let defaults = config.map(|c| &c.defaults);
        let at = |line: usize| Source::File(config.map(|c| c.at(line)).unwrap_or_default());
        let tables = [table, defaults];
        // The flags' options (-o), last one wins.
        let mut opt_warm = None;
        let mut opt_resume = None;
        let mut opt_terminal = None;
        let mut opt_accept = None;
        for o in &args.options {
            match OptionValue::parse(o)? {
                OptionValue::Warm(w) => opt_warm = Some(w),
                OptionValue::Resume(r) => opt_resume = Some(r),
                OptionValue::Terminal(t) => opt_terminal = Some(t),
                OptionValue::AcceptNew(a) => opt_accept = Some(a),
            }
        }

        // The route.
        let relays_from = |list: &[String], source: Source| -> Result<_, SettingsError> {
            let parsed = list
                .iter()
                .map(|a| RelayAddress::parse(a))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(sourced(Route::Relays(parsed), source))
        };
        let route = if let Some(d) = &args.direct {
            Some(sourced(Route::Direct(d.clone()), Source::Flag("--direct")))
        } else if !args.relay.is_empty() {
            Some(relays_from(&args.relay, Source::Flag("--relay"))?)
        } else if let Some(r) = env("REX_RELAY").filter(|r| !r.is_empty()) {
            // A comma-separated list, as --relay takes.
            let list: Vec<String> = r
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
            Some(relays_from(&list, Source::Env("REX_RELAY"))?)
        } else {
            from_file(tables, config, |e| e.relays.as_ref())
                .map(|s| sourced(Route::Relays(s.value), s.source))
        };
        // Last, the relay a known server's line records.
        let named = name.and_then(|n| known.by_name(n));
        let route = match (route, named) {
            (None, Some(k)) => match &k.relay {
                Some(relay) => Some(sourced(
                    Route::Relays(vec![RelayAddress::parse(relay)?]),
                    Source::Known(format!("{}:{}", known.path().display(), k.line)),
                )),
                None => None,
            },
            (route, _) => route,
        };

        // The exec-server's key.
        let server = if let Some(text) = &args.server {
            Some(sourced(
                parse_key(text, "--server")?,
                Source::Flag("--server"),
            ))
        } else if let Some(path) = &args.server_file {
            Some(sourced(
                PublicKey::read_file(path)?,
                Source::Flag("--server-file"),
            ))
        } else if let Some(text) = env("REX_SERVER").filter(|v| !v.is_empty()) {
            Some(sourced(
                parse_key(&text, "REX_SERVER")?,
                Source::Env("REX_SERVER"),
            ))
        } else if let Some(path) = env("REX_SERVER_FILE").filter(|v| !v.is_empty()) {
            Some(sourced(
                PublicKey::read_file(std::path::Path::new(&path))?,
                Source::Env("REX_SERVER_FILE"),
            ))
        } else if let Some(f) = table.and_then(|t| t.server.as_ref()) {
            let key = match &f.value {
                ServerKey::Key(k) => *k,
                ServerKey::File(p) => PublicKey::read_file(p)?,
            };
            Some(sourced(key, at(f.line)))
        } else {
            named.map(|k| {
                sourced(
                    k.key,
                    Source::Known(format!("{}:{}", known.path().display(), k.line)),
                )
            })
        };
        if let Some(n) = name
            && table.is_none()
            && named.is_none()
            && server.is_none()
        {
            return Err(SettingsError::UnknownName {
                name: n.to_owned(),
                config: config.map_or_else(
                    || "the config file (there is none)".to_owned(),
                    |c| c.path.display().to_string(),
                ),
            });
        }
        // A known name must keep its key.
        let mut is_known = false;
        if let (Some(n), Some(s)) = (name, &server) {
            is_known = known.check(n, &s.value, &s.source.to_string())?;
        }

        // The client's key.
        let key = first([
            args.key.clone().map(|k| sourced(k, Source::Flag("--key"))),
            env("REX_KEY")
                .filter(|v| !v.is_empty())
                .map(|k| sourced(PathBuf::from(k), Source::Env("REX_KEY"))),
        ])
        .or_else(|| from_file(tables, config, |e| e.key.as_ref()))
        .or_else(|| {
            inputs
                .default_key
                .clone()
                .filter(|p| p.exists())
                .map(|p| sourced(p, Source::DefaultKey))
        });

        let ca = first([
            args.ca.clone().map(|c| sourced(c, Source::Flag("--ca"))),
            env("REX_CA")
                .filter(|v| !v.is_empty())
                .map(|c| sourced(PathBuf::from(c), Source::Env("REX_CA"))),
        ])
        .or_else(|| from_file(tables, config, |e| e.ca.as_ref()));

        let cwd = first([args.cwd.clone().map(|c| sourced(c, Source::Flag("--cwd")))])
            .or_else(|| from_file(tables, config, |e| e.cwd.as_ref()));

        // Environment: [defaults], then the server's table, then -e.
        let mut vars = BTreeMap::new();
        for entry in [defaults, table].into_iter().flatten() {
            for (k, v) in &entry.env {
                vars.insert(k.clone(), sourced(v.value.clone(), at(v.line)));
            }
        }
        for kv in &args.env {
            let (k, v) = kv
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or(SettingsError::Env)?;
            vars.insert(k.to_owned(), sourced(v.to_owned(), Source::Flag("-e")));
        }

        let accept_new = first([
            args.accept_new
                .then(|| sourced(true, Source::Flag("--accept-new"))),
            flag_o(opt_accept),
        ])
        .or_else(|| from_file(tables, config, |e| e.accept_new.as_ref()));
        let warm =
            first([flag_o(opt_warm)]).or_else(|| from_file(tables, config, |e| e.warm.as_ref()));
        let resume = first([
            args.no_resume
                .then(|| sourced(Resume::Off, Source::Flag("--no-resume"))),
            flag_o(opt_resume),
        ])
        .or_else(|| from_file(tables, config, |e| e.resume.as_ref()));
        let span_forwarding = first([args
            .no_span_forwarding
            .then(|| sourced(false, Source::Flag("--no-span-forwarding")))])
        .or_else(|| from_file(tables, config, |e| e.span_forwarding.as_ref()))
        .unwrap_or_else(|| sourced(true, Source::Default));
        let terminal = first([flag_o(opt_terminal)])
            .or_else(|| from_file(tables, config, |e| e.terminal.as_ref()));
        let accept_new = accept_new.unwrap_or_else(|| sourced(false, Source::Default));
        let warm = warm.unwrap_or_else(|| sourced(Warm::Off, Source::Default));
        let resume = resume.unwrap_or_else(|| sourced(Resume::default(), Source::Default));
        let terminal = terminal.unwrap_or_else(|| sourced(Terminal::default(), Source::Default));
        Ok(Self {
            name: name.map(str::to_owned),
            route,
            server,
            key,
            ca,
            cwd,
            env: vars,
            accept_new,
            warm,
            resume,
            terminal,
            span_forwarding,
            known: is_known,
        })
    }
}

/// The first of the tables (the server's, then `[defaults]`) that sets
/// what `pick` picks, with its line.
fn from_file<T: Clone>(
    tables: [Option<&Entry>; 2],
    config: Option<&Config>,
    pick: impl Fn(&Entry) -> Option<&FromFile<T>>,
) -> Option<Sourced<T>> {
    tables.into_iter().flatten().find_map(|e| {
        pick(e).map(|f| {
            sourced(
                f.value.clone(),
                Source::File(config.map(|c| c.at(f.line)).unwrap_or_default()),
            )
        })
    })
}

/// An option given with `-o`.
fn flag_o<T>(value: Option<T>) -> Option<Sourced<T>> {
    value.map(|v| sourced(v, Source::Flag("-o")))
}

fn parse_key(text: &str, what: &'static str) -> Result<PublicKey, SettingsError> {
    text.parse().map_err(|_| SettingsError::ServerKey(what))
}

#[cfg(test)]
mod tests;
