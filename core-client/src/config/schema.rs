//! The config file's shape, as serde reads it: every value keeps its span
//! so that settings can say which line they came from. Keys are checked
//! separately ([`crate::config::keys`]) so that an unknown one is named
//! with the nearest known key; `deny_unknown_fields` stays as a net.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    /// `[defaults]`: settings for every server.
    #[serde(default)]
    pub defaults: Table,
    /// `[servers.NAME]`: one table per named server.
    #[serde(default)]
    pub servers: BTreeMap<String, Spanned<Table>>,
}

/// One server's table (or `[defaults]`: the same keys less the server's own key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Table {
    /// Relay address, or several tried in order.
    pub relay: Option<Spanned<Relays>>,
    /// The exec-server's public key.
    pub server: Option<Spanned<String>>,
    /// A file holding the exec-server's public key.
    pub server_file: Option<Spanned<String>>,
    /// The client's private key file.
    pub key: Option<Spanned<String>>,
    /// The CA certificates (PEM) an `https://` relay is checked against.
    pub ca: Option<Spanned<String>>,
    /// The remote working directory.
    pub cwd: Option<Spanned<String>>,
    /// Remote environment variables.
    pub env: Option<BTreeMap<String, Spanned<String>>>,
    /// Record the server on first use (as `--accept-new`).
    pub accept_new: Option<Spanned<bool>>,
    /// The warm policy.
    pub warm: Option<Spanned<String>>,
    /// Resume commands over a new link: `true`, `false`, or for how long.
    pub resume: Option<Spanned<ResumeValue>>,
    /// Terminal allocation.
    pub terminal: Option<Spanned<String>>,
    /// Forward the command's spans through the session to an exec-server
    /// that exports them (when there is no collector of our own).
    pub span_forwarding: Option<Spanned<bool>>,
}

/// `resume = true | false | "DURATION"`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "true, false, or a duration such as \"30s\" or \"5m\""
)]
pub(crate) enum ResumeValue {
    /// On (for the default time) or off.
    Flag(bool),
    /// For this long.
    Within(String),
}

/// `relay = "ADDR"` or `relay = ["ADDR", …]`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a relay address or an array of them")]
pub(crate) enum Relays {
    /// One address.
    One(String),
    /// Several, tried in order.
    Many(Vec<String>),
}

impl Relays {
    /// The addresses, in order.
    pub(crate) fn list(&self) -> Vec<&str> {
        match self {
            Relays::One(a) => vec![a.as_str()],
            Relays::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The keys a `[servers.NAME]` table may hold.
pub(crate) const SERVER_KEYS: [&str; 12] = [
    "relay",
    "server",
    "server_file",
    "key",
    "ca",
    "cwd",
    "env",
    "accept_new",
    "warm",
    "resume",
    "terminal",
    "span_forwarding",
];

/// The keys `[defaults]` may hold: a server's own key belongs to it alone.
pub(crate) const DEFAULT_KEYS: [&str; 10] = [
    "relay",
    "key",
    "ca",
    "cwd",
    "env",
    "accept_new",
    "warm",
    "resume",
    "terminal",
    "span_forwarding",
];

/// The top-level tables.
pub(crate) const ROOT_KEYS: [&str; 2] = ["defaults", "servers"];
