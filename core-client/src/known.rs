//! Known servers (`$XDG_CONFIG_HOME/rex/known_servers`), as ssh's
//! known_hosts: trust on first use, opt-in. One server per line:
//!
//! ```text
//! # NAME KEY [RELAY]
//! build-box 9Hq…=
//! - x2L…= http://10.0.0.5:7600
//! ```
//!
//! A named line pins the key the name must have (`core-client trust`, or
//! `--accept-new` on first use); its relay, when recorded (`trust
//! --relay`, or where it was first seen), is where `exec NAME` reaches it
//! when nothing else names a relay. A `-` line is a relay and exec-server pairing accepted
//! without a name. A name whose key differs from its line is refused
//! ([`KeyChanged`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use proto::keys::PublicKey;

/// One known server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    /// Its name (`None` for a nameless relay pairing).
    pub name: Option<String>,
    /// Its public key.
    pub key: PublicKey,
    /// The relay it was first seen through, if recorded.
    pub relay: Option<String>,
    /// Its line in the file (1-based; 0 when not yet written).
    pub line: usize,
}

/// The known servers file, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KnownServers {
    path: PathBuf,
    entries: Vec<Known>,
}

/// Reading or writing the known servers failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KnownError {
    /// The file could not be read.
    #[error("cannot read known servers {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write known servers {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `NAME KEY [RELAY]`.
    #[error("{}:{line}: not a known server line (expected NAME KEY [RELAY])", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// The name is recorded with another key.
    #[error(transparent)]
    KeyChanged(#[from] Box<KeyChanged>),
}

/// A known name offered with a different key: possibly someone in the
/// middle, possibly a replaced key. Shown as ssh shows it, with what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "WARNING: THE KEY OF SERVER `{name}` HAS CHANGED!\n\
     Someone could be impersonating the exec-server (a man-in-the-middle attack),\n\
     or its key may have been replaced.\n\
     The known key has id {known_id} ({known_at}).\n\
     The key offered now has id {offered_id} ({offered_from}).\n\
     If the change is expected, record the new key with:\n    \
     core-client trust {name} --server NEW_KEY --replace\n\
     Refusing to connect to `{name}`."
)]
pub(crate) struct KeyChanged {
    /// The server's name.
    pub name: String,
    /// The known key's server id.
    pub known_id: String,
    /// Where the known key is (file:line).
    pub known_at: String,
    /// The offered key's server id.
    pub offered_id: String,
    /// Where the offered key came from.
    pub offered_from: String,
}

impl KnownServers {
    /// Reads the file at `path`; a missing file knows nothing yet.
    pub(crate) fn load(path: &Path) -> Result<Self, KnownError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(KnownError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || KnownError::Malformed {
                path: path.to_owned(),
                line: i + 1,
            };
            let mut fields = line.split_whitespace();
            let (Some(name), Some(key)) = (fields.next(), fields.next()) else {
                return Err(malformed());
            };
            let key: PublicKey = key.parse().map_err(|_| malformed())?;
            let relay = fields.next().map(str::to_owned);
            if fields.next().is_some() || (name != "-" && !crate::config::keys::valid_name(name)) {
                return Err(malformed());
            }
            entries.push(Known {
                name: (name != "-").then(|| name.to_owned()),
                key,
                relay,
                line: i + 1,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            entries,
        })
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry, in file order.
    pub(crate) fn entries(&self) -> &[Known] {
        &self.entries
    }

    /// The entry for `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Known> {
        self.entries
            .iter()
            .find(|e| e.name.as_deref() == Some(name))
    }

    /// Whether `key` through `relay` is known, under any name or none.
    pub(crate) fn knows_pairing(&self, relay: &str, key: &PublicKey) -> bool {
        self.entries
            .iter()
            .any(|e| e.key == *key && (e.name.is_some() || e.relay.as_deref() == Some(relay)))
    }

    /// Checks `key` for `name`: `Ok(true)` when the name is known with
    /// this key, `Ok(false)` when the name is not known, and the ssh-style
    /// refusal when it is known with another key.
    pub(crate) fn check(
        &self,
        name: &str,
        key: &PublicKey,
        offered_from: &str,
    ) -> Result<bool, Box<KeyChanged>> {
        match self.by_name(name) {
            None => Ok(false),
            Some(k) if k.key == *key => Ok(true),
            Some(k) => Err(Box::new(KeyChanged {
                name: name.to_owned(),
                known_id: k.key.server_id(),
                known_at: format!("{}:{}", self.path.display(), k.line),
                offered_id: key.server_id(),
                offered_from: offered_from.to_owned(),
            })),
        }
    }

    /// Records a server (appends a line), creating the file (0600) and its
    /// directory (0700) if needed.
    pub(crate) fn add(
        &mut self,
        name: Option<&str>,
        key: PublicKey,
        relay: Option<&str>,
    ) -> Result<(), KnownError> {
        let fail = |source| KnownError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            crate::paths::create_private_dir(dir).map_err(fail)?;
        }
        let existing = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut text = String::new();
        if existing.is_empty() {
            text.push_str("# core-client known servers: NAME KEY [RELAY] (`-` for no name)\n");
        } else if !existing.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line_for(name, &key, relay));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        let line = existing.lines().count() + text.lines().count();
        self.entries.push(Known {
            name: name.map(str::to_owned),
            key,
            relay: relay.map(str::to_owned),
            line,
        });
        Ok(())
    }

    /// Replaces `name`'s line (its key and relay): its lines go, a new one
    /// is appended. The file is rewritten whole and renamed into place.
    pub(crate) fn replace(
        &mut self,
        name: &str,
        key: PublicKey,
        relay: Option<&str>,
    ) -> Result<(), KnownError> {
        let fail = |source| KnownError::Write {
            path: self.path.clone(),
            source,
        };
        let existing = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut kept = String::new();
        for (i, line) in existing.lines().enumerate() {
            let drop = self
                .entries
                .iter()
                .any(|e| e.line == i + 1 && e.name.as_deref() == Some(name));
            if !drop {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        kept.push_str(&line_for(Some(name), &key, relay));
        let tmp = self.path.with_extension("new");
        {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(fail)?;
            file.write_all(kept.as_bytes()).map_err(fail)?;
            file.sync_all().map_err(fail)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(fail)?;
        *self = Self::load(&self.path.clone())?;
        Ok(())
    }
}

use std::os::unix::fs::OpenOptionsExt;

fn line_for(name: Option<&str>, key: &PublicKey, relay: Option<&str>) -> String {
    match relay {
        Some(r) => format!("{} {key} {r}\n", name.unwrap_or("-")),
        None => format!("{} {key}\n", name.unwrap_or("-")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::keys::StaticKeypair;

    fn key() -> PublicKey {
        StaticKeypair::generate().unwrap().public()
    }

    #[test]
    fn trust_on_first_use_then_a_changed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rex").join("known_servers");
        let mut known = KnownServers::load(&path).unwrap();
        assert!(known.entries().is_empty());
        let (k1, k2) = (key(), key());
        assert_eq!(known.check("build-box", &k1, "flag --server"), Ok(false));
        known
            .add(Some("build-box"), k1, Some("http://127.0.0.1:7600"))
            .unwrap();
        // Read back from the file.
        let known = KnownServers::load(&path).unwrap();
        assert_eq!(known.check("build-box", &k1, "flag --server"), Ok(true));
        let refused = known.check("build-box", &k2, "flag --server").unwrap_err();
        assert_eq!(refused.known_id, k1.server_id());
        assert_eq!(refused.offered_id, k2.server_id());
        assert!(
            refused.known_at.ends_with("known_servers:2"),
            "{}",
            refused.known_at
        );
        let text = refused.to_string();
        assert!(text.contains("HAS CHANGED"));
        assert!(text.contains("core-client trust build-box --server NEW_KEY --replace"));
        // Key material is never printed, only ids.
        assert!(!text.contains(&k1.to_string()) && !text.contains(&k2.to_string()));

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn replace_and_pairings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        let mut known = KnownServers::load(&path).unwrap();
        let (k1, k2, k3) = (key(), key(), key());
        known.add(Some("a"), k1, None).unwrap();
        known.add(None, k3, Some("http://10.0.0.1:7600")).unwrap();
        known.add(Some("b"), k2, None).unwrap();
        known.replace("a", k2, None).unwrap();
        assert_eq!(known.by_name("a").unwrap().key, k2);
        assert_eq!(known.by_name("b").unwrap().key, k2);
        assert_eq!(known.entries().len(), 3);
        assert!(known.knows_pairing("http://10.0.0.1:7600", &k3));
        assert!(!known.knows_pairing("http://10.0.0.2:7600", &k3));
        assert!(known.knows_pairing("http://anything:1", &k2));
    }

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        std::fs::write(&path, "# c\n\nbuild-box not-a-key\n").unwrap();
        let err = KnownServers::load(&path).unwrap_err();
        assert!(
            matches!(err, KnownError::Malformed { line: 3, .. }),
            "{err}"
        );
    }
}
