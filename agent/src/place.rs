//! Where the agent listens: `$REX_AGENT_SOCKET` if set, else
//! `$XDG_RUNTIME_DIR/rex/agent.sock`, else `/tmp/rex-agent-<uid>/agent.sock`;
//! the directory is the user's own, mode 0700 (checked, never trusted: a
//! directory someone else made or can enter is refused), and the socket
//! mode 0600.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The variable that names the socket.
pub const SOCKET_ENV: &str = "REX_AGENT_SOCKET";
/// The socket's name in its directory.
const SOCKET_NAME: &str = "agent.sock";

/// A socket directory that may not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// It could not be made or inspected.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It belongs to another user, or others may enter it.
    #[error(
        "{}: the agent's directory must be yours and private (mode 0700), but it is owned by \
         uid {owner} with mode {mode:o}",
        path.display()
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its mode.
        mode: u32,
    },
}

/// The socket path this user's agent uses.
pub fn socket_path() -> PathBuf {
    socket_path_from(
        |name| std::env::var_os(name),
        nix::unistd::getuid().as_raw(),
    )
}

/// [`socket_path`] with the environment read through `var`, for `uid`.
pub(crate) fn socket_path_from(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    uid: u32,
) -> PathBuf {
    if let Some(p) = var(SOCKET_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let runtime = var("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    match runtime {
        Some(dir) => dir.join("rex").join(SOCKET_NAME),
        None => PathBuf::from(format!("/tmp/rex-agent-{uid}")).join(SOCKET_NAME),
    }
}

/// Makes the socket's directory (mode 0700) if it is missing, and checks
/// that it is this user's and private.
pub fn prepare_dir(socket: &Path) -> Result<(), PlaceError> {
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    let io = |source| PlaceError::Io {
        path: dir.to_path_buf(),
        source,
    };
    metadata::location::create_private_dir(dir).map_err(io)?;
    check_private(dir, nix::unistd::getuid().as_raw())
}

/// Checks that `dir` is owned by `uid` and that nobody else may enter it.
pub(crate) fn check_private(dir: &Path, uid: u32) -> Result<(), PlaceError> {
    let meta = fs::metadata(dir).map_err(|source| PlaceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != uid || mode & 0o077 != 0 {
        return Err(PlaceError::NotPrivate {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_socket_is_named_by_the_variable_then_the_runtime_dir_then_tmp() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            socket_path_from(env(&[("REX_AGENT_SOCKET", "/x/a.sock")]), 5),
            PathBuf::from("/x/a.sock")
        );
        assert_eq!(
            socket_path_from(env(&[("XDG_RUNTIME_DIR", "/run/user/5")]), 5),
            PathBuf::from("/run/user/5/rex/agent.sock")
        );
        // A relative runtime dir is not one (the XDG spec's rule).
        assert_eq!(
            socket_path_from(env(&[("XDG_RUNTIME_DIR", "run")]), 5),
            PathBuf::from("/tmp/rex-agent-5/agent.sock")
        );
        assert_eq!(
            socket_path_from(env(&[]), 7),
            PathBuf::from("/tmp/rex-agent-7/agent.sock")
        );
    }

    #[test]
    fn a_directory_others_may_enter_or_another_users_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let private = dir.path().join("private");
        prepare_dir(&private.join("agent.sock")).unwrap();
        let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        check_private(&private, uid).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            check_private(&private, uid),
            Err(PlaceError::NotPrivate { mode: 0o755, .. })
        ));
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            check_private(&private, uid + 1),
            Err(PlaceError::NotPrivate { .. })
        ));
    }
}
