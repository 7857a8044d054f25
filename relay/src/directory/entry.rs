//! One directory entry: the key naming an exec-server and the value naming
//! the relay that holds its registration.
//!
//! Keys are `<prefix>/servers/<server id>`; values are a small JSON object,
//! readable with `etcdctl get --prefix <prefix>/servers/`:
//! `{"relay":"http://10.0.0.5:7600","registered_at":"2026-11-25T08:00:00Z"}`.
//! Fields this version does not know are ignored, so a newer relay may add
//! some. An entry is read from a shared store: every field is checked, and
//! one that does not parse is refused (the cache skips and counts it).

use proto::routing::is_server_id;

/// Longest value accepted (a URL and a timestamp need far less).
const MAX_VALUE: usize = 1024;
/// Longest relay URL accepted.
const MAX_URL: usize = 512;

/// Where an exec-server's registration is held.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The holding relay's forwarding address (`http://` or `https://`).
    pub relay: String,
    /// When the registration was accepted (RFC 3339, UTC).
    pub(crate) registered_at: jiff::Timestamp,
}

/// Why a key or value is not a directory entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryError {
    /// The key is not `<prefix>/servers/<server id>`.
    #[error("not a server key of this directory")]
    Key,
    /// The value is longer than an entry may be.
    #[error("value of {0} bytes (at most {MAX_VALUE})")]
    TooLong(usize),
    /// The value is not the JSON of an entry.
    #[error("value is not an entry: {0}")]
    Json(String),
    /// The relay address is not an `http://` or `https://` URL.
    #[error("relay address is not an http:// or https:// URL")]
    Relay,
}

/// The key prefix under which `prefix`'s server entries live.
pub fn servers_prefix(prefix: &str) -> String {
    format!("{}/servers/", prefix.trim_end_matches('/'))
}

/// The key of `server_id`'s entry under `servers` (from [`servers_prefix`]).
pub fn key(servers: &str, server_id: &str) -> String {
    format!("{servers}{server_id}")
}

/// The server id a key names, if it is one of `servers`'.
pub fn server_of<'a>(servers: &str, key: &'a [u8]) -> Result<&'a str, EntryError> {
    let rest = key
        .strip_prefix(servers.as_bytes())
        .ok_or(EntryError::Key)?;
    let id = std::str::from_utf8(rest).map_err(|_| EntryError::Key)?;
    if is_server_id(id) {
        Ok(id)
    } else {
        Err(EntryError::Key)
    }
}

impl Entry {
    /// The value written to the store.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of a string and a timestamp always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a value, checking every field.
    pub fn decode(value: &[u8]) -> Result<Self, EntryError> {
        if value.len() > MAX_VALUE {
            return Err(EntryError::TooLong(value.len()));
        }
        let entry: Self =
            serde_json::from_slice(value).map_err(|e| EntryError::Json(json_failure(&e)))?;
        if !is_relay_url(&entry.relay) {
            return Err(EntryError::Relay);
        }
        Ok(entry)
    }
}

/// Whether `url` is an address another relay may dial.
pub fn is_relay_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    url.len() <= MAX_URL
        && matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_graphic())
        && url.parse::<tonic::transport::Uri>().is_ok()
}

/// The kind of a JSON failure and where, never the value's text.
fn json_failure(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "wrong fields",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} at column {}", e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn an_entry_round_trips_and_its_key_names_the_server() {
        let entry = Entry {
            relay: "https://relay-b.example:7600".into(),
            registered_at: "2026-11-25T08:00:00Z".parse().unwrap(),
        };
        assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        let servers = servers_prefix("/rex/");
        assert_eq!(servers, "/rex/servers/");
        let key = key(&servers, ID);
        assert_eq!(server_of(&servers, key.as_bytes()), Ok(ID));
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_values_refused() {
        let newer = br#"{"relay":"http://10.0.0.5:7600","registered_at":"2026-11-25T08:00:00Z","zone":"eu"}"#;
        assert_eq!(Entry::decode(newer).unwrap().relay, "http://10.0.0.5:7600");
        for (value, want) in [
            (&b"{"[..], "cut short"),
            (b"[]", "wrong fields"),
            (b"\xff", "not JSON"),
            (br#"{"relay":"http://a"}"#, "wrong fields"),
        ] {
            match Entry::decode(value) {
                Err(EntryError::Json(why)) => assert!(why.starts_with(want), "{why}"),
                other => panic!("{value:?}: {other:?}"),
            }
        }
        for relay in [
            "ftp://a:1",
            "http://",
            "a:7600",
            "http://a b",
            "http://\u{e9}",
        ] {
            let value = format!(r#"{{"relay":"{relay}","registered_at":"2026-11-25T08:00:00Z"}}"#);
            assert_eq!(
                Entry::decode(value.as_bytes()),
                Err(EntryError::Relay),
                "{relay}"
            );
        }
        let long = vec![b' '; MAX_VALUE + 1];
        assert_eq!(
            Entry::decode(&long),
            Err(EntryError::TooLong(MAX_VALUE + 1))
        );
    }

    #[test]
    fn keys_outside_the_servers_prefix_or_with_bad_ids_are_refused() {
        let servers = servers_prefix("/rex");
        for key in [
            format!("/other/servers/{ID}"),
            "/rex/servers/short".to_owned(),
            format!("/rex/servers/{}", ID.to_uppercase()),
            format!("/rex/servers/{ID}/x"),
        ] {
            assert_eq!(
                server_of(&servers, key.as_bytes()),
                Err(EntryError::Key),
                "{key}"
            );
        }
    }
}
