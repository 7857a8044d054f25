//! The login shell a call may ask for instead of a command
//! (`ExecRequest.login_shell`), as sshd starts one for a session without a
//! command: the shell of the user the exec-server runs as, from the
//! password database (`/bin/sh` when the entry names none, or there is no
//! entry), started as a login shell (its `argv[0]` is its file name after a
//! `-`), in that user's home directory, with `HOME`, `USER`, `LOGNAME`
//! and `SHELL` set from the entry.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The shell when the password database names none.
const FALLBACK: &str = "/bin/sh";

/// The login shell of the user the exec-server runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginShell {
    /// The shell's path.
    pub path: PathBuf,
    /// The user's home directory, when the password database knows it.
    pub(crate) home: Option<PathBuf>,
    /// The user's name, when the password database knows it.
    pub(crate) user: Option<String>,
}

impl LoginShell {
    /// Reads this process's user from the password database (a local file
    /// or whatever the name service is set up to ask).
    pub fn of_this_user() -> Self {
        let entry = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten();
        Self::from_entry(entry.map(|u| (u.shell, u.dir, u.name)))
    }

    /// From a password entry's shell, home directory and user name (none:
    /// no entry).
    fn from_entry(entry: Option<(PathBuf, PathBuf, String)>) -> Self {
        let Some((shell, home, user)) = entry else {
            return Self {
                path: PathBuf::from(FALLBACK),
                home: None,
                user: None,
            };
        };
        // An empty shell field means /bin/sh (passwd(5)).
        let path = if shell.as_os_str().is_empty() {
            PathBuf::from(FALLBACK)
        } else {
            shell
        };
        Self {
            path,
            home: (!home.as_os_str().is_empty()).then_some(home),
            user: Some(user),
        }
    }

    /// The shell's file name (`bash`): what spans and records name.
    pub fn program(&self) -> String {
        proto::program::program_name(self.path.as_os_str().as_bytes())
    }

    /// Its `argv[0]`: its file name after a `-` (`-bash`), which tells a
    /// shell it is a login shell.
    pub fn argv0(&self) -> OsString {
        let name = self
            .path
            .file_name()
            .unwrap_or(self.path.as_os_str())
            .as_bytes();
        let mut argv0 = Vec::with_capacity(name.len() + 1);
        argv0.push(b'-');
        argv0.extend_from_slice(name);
        OsString::from_vec(argv0)
    }

    /// The home directory to start in, when it is one.
    pub fn home_dir(&self) -> Option<&Path> {
        self.home.as_deref().filter(|h| h.is_dir())
    }

    /// The variables a login sets: `HOME`, `USER`, `LOGNAME`, `SHELL`
    /// (those the entry knows).
    pub(crate) fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = Vec::with_capacity(4);
        if let Some(home) = &self.home {
            env.push(("HOME", home.clone().into_os_string()));
        }
        if let Some(user) = &self.user {
            env.push(("USER", OsString::from(user)));
            env.push(("LOGNAME", OsString::from(user)));
        }
        env.push(("SHELL", self.path.clone().into_os_string()));
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(shell: &str, home: &str) -> LoginShell {
        LoginShell::from_entry(Some((shell.into(), home.into(), "alice".into())))
    }

    #[test]
    fn the_entry_names_the_shell_and_its_login_argv0() {
        let s = entry("/usr/bin/zsh", "/home/alice");
        assert_eq!(s.path, PathBuf::from("/usr/bin/zsh"));
        assert_eq!(s.program(), "zsh");
        assert_eq!(s.argv0(), OsString::from("-zsh"));
        assert_eq!(
            s.env(),
            vec![
                ("HOME", OsString::from("/home/alice")),
                ("USER", OsString::from("alice")),
                ("LOGNAME", OsString::from("alice")),
                ("SHELL", OsString::from("/usr/bin/zsh")),
            ]
        );
    }

    #[test]
    fn without_a_shell_or_an_entry_it_is_bin_sh() {
        let empty = entry("", "/home/alice");
        assert_eq!(empty.path, PathBuf::from(FALLBACK));
        assert_eq!(empty.argv0(), OsString::from("-sh"));
        let none = LoginShell::from_entry(None);
        assert_eq!(none.path, PathBuf::from(FALLBACK));
        assert_eq!(none.program(), "sh");
        assert_eq!(none.home, None);
        assert_eq!(none.env(), vec![("SHELL", OsString::from(FALLBACK))]);
    }

    #[test]
    fn a_home_that_is_not_a_directory_is_not_started_in() {
        assert_eq!(entry("/bin/sh", "/no/such/home").home_dir(), None);
        assert_eq!(entry("/bin/sh", "/").home_dir(), Some(Path::new("/")));
    }

    #[test]
    fn this_user_has_a_shell() {
        let s = LoginShell::of_this_user();
        assert!(s.path.is_absolute(), "{s:?}");
        assert!(s.argv0().as_bytes().starts_with(b"-"));
    }
}
