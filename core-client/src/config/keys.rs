//! Checking a config file's keys before its values: every key must be one
//! the file's shape knows, and a stray one is reported with its line and
//! the nearest known key.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::schema::{DEFAULT_KEYS, ROOT_KEYS, SERVER_KEYS};
use crate::config::suggest::nearest;

/// A key the file's shape does not know, or a server name that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StrayKey {
    /// Where the key is.
    pub span: Range<usize>,
    /// The key.
    pub key: String,
    /// The table it is in (`defaults`, `servers.NAME`, or empty for the top).
    pub table: String,
    /// The nearest known key.
    pub suggestion: Option<&'static str>,
    /// Why it is not allowed when it is a known key in the wrong place.
    pub hint: Option<&'static str>,
}

/// Whether `name` can name a server: letters, digits, `.`, `_`, `-`,
/// not starting with `-`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The first stray key in `doc`, in file order.
pub(crate) fn first_stray(doc: &Spanned<DeTable<'_>>) -> Option<StrayKey> {
    let mut strays = Vec::new();
    check(doc.get_ref(), &ROOT_KEYS, "", &mut strays);
    if let Some(defaults) = table(doc.get_ref(), "defaults") {
        check(defaults, &DEFAULT_KEYS, "defaults", &mut strays);
    }
    if let Some(servers) = table(doc.get_ref(), "servers") {
        for (name, value) in servers {
            let table_name = format!("servers.{}", name.get_ref());
            if !valid_name(name.get_ref()) {
                strays.push(StrayKey {
                    span: name.span(),
                    key: name.get_ref().to_string(),
                    table: "servers".into(),
                    suggestion: None,
                    hint: Some(
                        "a server name is letters, digits, `.`, `_` and `-`, not starting with `-`",
                    ),
                });
            }
            if let DeValue::Table(t) = value.get_ref() {
                check(t, &SERVER_KEYS, &table_name, &mut strays);
            }
        }
    }
    strays.into_iter().min_by_key(|s| s.span.start)
}

/// The dotted name of the innermost key whose value spans `offset` (for
/// naming the key a wrong type was given to). A table's own span covers
/// only its header, so every table is searched.
pub(crate) fn key_at(doc: &Spanned<DeTable<'_>>, offset: usize) -> Option<String> {
    fn search(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
        for (key, value) in table {
            path.push(key.get_ref().to_string());
            if let DeValue::Table(inner) = value.get_ref()
                && search(inner, offset, path)
            {
                return true;
            }
            let span = value.span();
            if span.start <= offset && offset < span.end.max(span.start + 1) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    search(doc.get_ref(), offset, &mut path).then(|| path.join("."))
}

fn table<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a DeTable<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref() == key)
        .and_then(|(_, v)| match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        })
}

fn check(t: &DeTable<'_>, known: &[&'static str], table: &str, out: &mut Vec<StrayKey>) {
    for (key, _) in t {
        let k: &str = key.get_ref();
        if known.contains(&k) {
            continue;
        }
        let hint = (table == "defaults" && SERVER_KEYS.contains(&k))
            .then_some("a server's key belongs in its own [servers.NAME] table");
        out.push(StrayKey {
            span: key.span(),
            key: k.to_owned(),
            table: table.to_owned(),
            suggestion: if hint.is_some() {
                None
            } else {
                nearest(k, known.iter().copied())
            },
            hint,
        });
    }
}
