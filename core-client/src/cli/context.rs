//! The [`Context`] every command reads: the config file, the known
//! servers and how much `exec` says.

use std::path::Path;

use super::error::CliError;
use super::verbose::Verbose;
use crate::config::Config;
use crate::known::KnownServers;
use crate::names::ServerNames;

/// What every command may read: the config file (if any) and the known
/// servers.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The config file, read and checked.
    pub config: Option<Config>,
    /// The known servers.
    pub known: KnownServers,
    /// How much `exec` says of what it does (`-v`).
    pub verbose: Verbose,
}

impl Context {
    /// Reads `--config FILE` (which must exist), else the default config
    /// file if there is one, and the known servers.
    pub(crate) fn load(config: Option<&Path>) -> Result<Self, CliError> {
        let config = match config.filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => Some(Config::load(path)?),
            None => match crate::paths::default_config() {
                Some(path) => Config::load_if_present(&path)?,
                None => None,
            },
        };
        let known = match crate::paths::known_servers() {
            Some(path) => KnownServers::load(&path)?,
            None => KnownServers::default(),
        };
        Ok(Self {
            config,
            known,
            verbose: Verbose::default(),
        })
    }

    /// The names servers are shown by.
    pub(crate) fn names(&self) -> ServerNames {
        ServerNames::load(self.config.as_ref(), &self.known)
    }
}
