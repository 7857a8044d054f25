//! Server ids shown as the names the user gave them: from the config
//! file's `[servers.NAME]` keys and the known servers' named lines.

use std::collections::BTreeMap;

use analysis::Names;
use proto::keys::PublicKey;

use crate::config::{Config, ServerKey};
use crate::known::KnownServers;

/// Names by server id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerNames {
    by_id: BTreeMap<String, String>,
    by_name: BTreeMap<String, String>,
}

impl ServerNames {
    /// The names the config file and the known servers give. A config
    /// name wins over a known one for the same id; a key file that cannot
    /// be read names nothing.
    pub(crate) fn load(config: Option<&Config>, known: &KnownServers) -> Self {
        let mut names = Self::default();
        for (name, entry) in config.iter().flat_map(|c| &c.servers) {
            let key = match entry.server.as_ref().map(|s| &s.value) {
                Some(ServerKey::Key(k)) => Some(*k),
                Some(ServerKey::File(p)) => PublicKey::read_file(p).ok(),
                None => known.by_name(name).map(|k| k.key),
            };
            if let Some(key) = key {
                names.add(name, &key);
            }
        }
        for k in known.entries() {
            if let Some(name) = &k.name {
                names.add(name, &k.key);
            }
        }
        names
    }

    /// Names `key`'s server `name`, unless either already has a name or id.
    pub(crate) fn add(&mut self, name: &str, key: &PublicKey) {
        let id = key.server_id();
        self.by_name
            .entry(name.to_owned())
            .or_insert_with(|| id.clone());
        self.by_id.entry(id).or_insert_with(|| name.to_owned());
    }

    /// The server id a name stands for.
    pub(crate) fn id(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    /// The name for a server id, if it has one.
    pub(crate) fn name(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }
}

impl Names for ServerNames {
    fn name(&self, id: &str) -> Option<&str> {
        ServerNames::name(self, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::keys::StaticKeypair;
    use std::path::Path;

    #[test]
    fn config_names_come_first_then_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            StaticKeypair::generate().unwrap().public(),
            StaticKeypair::generate().unwrap().public(),
            StaticKeypair::generate().unwrap().public(),
        );
        let mut known = KnownServers::load(&dir.path().join("known")).unwrap();
        known.add(Some("old-name"), a, None).unwrap();
        known.add(Some("trusted"), b, None).unwrap();
        known.add(None, c, Some("http://127.0.0.1:1")).unwrap();
        let text =
            format!("[servers.build-box]\nserver = \"{a}\"\n[servers.trusted]\nrelay = \"x\"\n");
        let config = Config::parse(&text, Path::new("/c.toml")).unwrap();
        let names = ServerNames::load(Some(&config), &known);
        assert_eq!(names.name(&a.server_id()), Some("build-box"));
        assert_eq!(names.name(&b.server_id()), Some("trusted"));
        assert_eq!(names.id("old-name"), Some(a.server_id().as_str()));
        assert_eq!(names.label(&c.server_id()), c.server_id()[..8]);
        assert_eq!(names.label(&b.server_id()), "trusted");
    }
}
