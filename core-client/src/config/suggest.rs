//! "Did you mean …?": the nearest known key to a mistyped one.

/// The candidate closest to `typed`, if any is close enough to be a
/// plausible typo (`-` for `_` and case are forgiven outright).
pub(crate) fn nearest<'a>(
    typed: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let normal = |s: &str| s.replace('-', "_").to_ascii_lowercase();
    let typed_n = normal(typed);
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let score = if normal(c) == typed_n {
            2.0
        } else {
            strsim::jaro_winkler(&typed_n, c)
        };
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean `KEY`?)`, or nothing.
pub(crate) fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key() {
        let keys = [
            "relay",
            "server",
            "server_file",
            "key",
            "cwd",
            "env",
            "accept_new",
        ];
        assert_eq!(nearest("relays", keys), Some("relay"));
        assert_eq!(nearest("accept-new", keys), Some("accept_new"));
        assert_eq!(nearest("Server_File", keys), Some("server_file"));
        assert_eq!(nearest("sever", keys), Some("server"));
        assert_eq!(nearest("colour", keys), None);
    }
}
