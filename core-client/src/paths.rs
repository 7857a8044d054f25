//! Where the CLI's own files live: the config directory
//! (`$XDG_CONFIG_HOME/rex`, else `$HOME/.config/rex`) and, in it, the
//! config file, the default client key and the known servers.

use std::path::{Path, PathBuf};

/// The config file's name in the config directory.
pub(crate) const CONFIG_FILE: &str = "config.toml";
/// The default client key's name in the config directory.
pub(crate) const KEY_FILE: &str = "client.key";
/// The known servers' file name in the config directory.
pub(crate) const KNOWN_FILE: &str = "known_servers";

/// The CLI's config directory: `$XDG_CONFIG_HOME/rex` when that is set to
/// an absolute path (as the XDG spec asks), else `$HOME/.config/rex`;
/// `None` when neither is known.
pub(crate) fn config_dir() -> Option<PathBuf> {
    config_dir_from(|name| std::env::var_os(name))
}

/// [`config_dir`] with the environment read through `var`.
pub(crate) fn config_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    var("XDG_CONFIG_HOME")
        .and_then(absolute)
        .or_else(|| var("HOME").and_then(absolute).map(|h| h.join(".config")))
        .map(|d| d.join("rex"))
}

/// The default config file, if a config directory is known.
pub(crate) fn default_config() -> Option<PathBuf> {
    config_dir().map(|d| d.join(CONFIG_FILE))
}

/// The default client key, if a config directory is known.
pub(crate) fn default_key() -> Option<PathBuf> {
    config_dir().map(|d| d.join(KEY_FILE))
}

/// The known servers file, if a config directory is known.
pub(crate) fn known_servers() -> Option<PathBuf> {
    config_dir().map(|d| d.join(KNOWN_FILE))
}

pub(crate) use metadata::location::create_private_dir;

/// `~/…` expanded with `$HOME`; a relative path taken relative to `base`
/// (the directory of the file that named it).
pub(crate) fn resolve(path: &Path, base: Option<&Path>) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn xdg_wins_then_home() {
        let env = |xdg: Option<&str>, home: Option<&str>| {
            let (xdg, home) = (xdg.map(OsString::from), home.map(OsString::from));
            config_dir_from(move |n| match n {
                "XDG_CONFIG_HOME" => xdg.clone(),
                "HOME" => home.clone(),
                _ => None,
            })
        };
        assert_eq!(env(Some("/x"), Some("/h")), Some(PathBuf::from("/x/rex")));
        assert_eq!(env(None, Some("/h")), Some(PathBuf::from("/h/.config/rex")));
        // A relative XDG_CONFIG_HOME is ignored, as the spec says.
        assert_eq!(
            env(Some("rel"), Some("/h")),
            Some(PathBuf::from("/h/.config/rex"))
        );
        assert_eq!(env(None, None), None);
    }

    #[test]
    fn relative_paths_follow_their_file() {
        assert_eq!(
            resolve(Path::new("k.key"), Some(Path::new("/etc/rex"))),
            PathBuf::from("/etc/rex/k.key")
        );
        assert_eq!(
            resolve(Path::new("/abs/k"), Some(Path::new("/etc/rex"))),
            PathBuf::from("/abs/k")
        );
    }
}
