//! The relay's copy of the directory: every exec-server another relay holds,
//! fed by a snapshot of the servers prefix and then by a watch from the
//! snapshot's revision. Lookups never go to the store.

use std::collections::HashMap;

use super::entry::{Entry, server_of};

/// Most entries kept (a bound on what a store's contents can make the relay
/// hold); entries past it are skipped and counted.
const MAX_ENTRIES: usize = 1 << 20;

/// What changed in the store, as the watch (or a snapshot) tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A key was written with this value.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// A key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// The directory as last seen.
#[derive(Debug)]
pub(crate) struct Cache {
    servers: String,
    routes: HashMap<String, Entry>,
    /// Entries that did not parse or did not fit, since the start.
    skipped: u64,
    /// The store revision the cache is current to.
    revision: i64,
}

impl Cache {
    /// An empty cache of the entries under `servers` (the servers prefix).
    pub(crate) fn new(servers: String) -> Self {
        Self {
            servers,
            routes: HashMap::new(),
            skipped: 0,
            revision: 0,
        }
    }

    /// Replaces everything with a snapshot taken at `revision` (after a
    /// start, a reconnect or a compaction the watch could not follow).
    pub(crate) fn replace(
        &mut self,
        revision: i64,
        snapshot: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) {
        self.routes.clear();
        for (key, value) in snapshot {
            self.put(&key, &value);
        }
        self.revision = revision;
    }

    /// Applies changes the watch reported at `revision`.
    pub(crate) fn apply(&mut self, revision: i64, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            match change {
                Change::Put { key, value } => self.put(&key, &value),
                Change::Delete { key } => {
                    if let Ok(id) = server_of(&self.servers, &key) {
                        self.routes.remove(id);
                    }
                }
            }
        }
        self.revision = self.revision.max(revision);
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        let Ok(id) = server_of(&self.servers, key) else {
            self.skipped += 1;
            return;
        };
        match Entry::decode(value) {
            Ok(entry) if self.routes.len() < MAX_ENTRIES || self.routes.contains_key(id) => {
                self.routes.insert(id.to_owned(), entry);
            }
            // Over the bound, or not an entry: the old route (if any)
            // is no longer what the store says.
            Ok(_) | Err(_) => {
                self.routes.remove(id);
                self.skipped += 1;
            }
        }
    }

    /// Where `server_id`'s registration is held, if the directory says.
    pub(crate) fn get(&self, server_id: &str) -> Option<&Entry> {
        self.routes.get(server_id)
    }

    /// Entries held.
    pub(crate) fn entries(&self) -> usize {
        self.routes.len()
    }

    /// Entries skipped (not parsing, or over the bound) since the start.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The revision the cache is current to.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn value(relay: &str) -> Vec<u8> {
        Entry {
            relay: relay.into(),
            registered_at: "2026-11-25T08:00:00Z".parse().unwrap(),
        }
        .encode()
    }

    fn key(id: &str) -> Vec<u8> {
        format!("/rex/servers/{id}").into_bytes()
    }

    fn cache() -> Cache {
        Cache::new("/rex/servers/".into())
    }

    #[test]
    fn puts_and_deletes_apply_in_order() {
        let mut c = cache();
        c.replace(5, [(key(A), value("http://b:1"))]);
        assert_eq!(c.get(A).unwrap().relay, "http://b:1");
        assert_eq!(c.revision(), 5);
        c.apply(
            7,
            [
                Change::Put {
                    key: key(B),
                    value: value("http://c:1"),
                },
                Change::Put {
                    key: key(A),
                    value: value("http://c:1"),
                },
                Change::Delete { key: key(B) },
            ],
        );
        assert_eq!(c.get(A).unwrap().relay, "http://c:1");
        assert!(c.get(B).is_none());
        assert_eq!((c.entries(), c.revision(), c.skipped()), (1, 7, 0));
    }

    #[test]
    fn a_resync_replaces_everything_including_entries_deleted_while_away() {
        let mut c = cache();
        c.replace(
            5,
            [(key(A), value("http://b:1")), (key(B), value("http://b:1"))],
        );
        // After a compaction: the store now holds only B, elsewhere.
        c.replace(90, [(key(B), value("http://c:1"))]);
        assert!(c.get(A).is_none());
        assert_eq!(c.get(B).unwrap().relay, "http://c:1");
        assert_eq!(c.revision(), 90);
    }

    #[test]
    fn entries_that_do_not_parse_are_skipped_counted_and_drop_an_older_route() {
        let mut c = cache();
        c.replace(
            1,
            [
                (key(A), value("http://b:1")),
                (b"/rex/servers/nope".to_vec(), value("http://b:1")),
            ],
        );
        assert_eq!((c.entries(), c.skipped()), (1, 1));
        c.apply(
            2,
            [Change::Put {
                key: key(A),
                value: b"garbage".to_vec(),
            }],
        );
        assert!(c.get(A).is_none());
        assert_eq!(c.skipped(), 2);
        // A delete of a key outside the prefix is not an error.
        c.apply(
            3,
            [Change::Delete {
                key: b"/elsewhere".to_vec(),
            }],
        );
        assert_eq!(c.skipped(), 2);
    }
}
