//! The local terminal of `exec` in terminal mode: whether there is one,
//! its window size, and raw mode, which is undone on every way out: the
//! guard's drop (a normal or an early return, an error, an unwinding
//! panic) and a panic hook (which runs before the panic's message is
//! printed, so that it is readable).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, Once, PoisonError};

use rustix::termios::{OptionalActions, Termios, isatty, tcgetattr, tcgetwinsize, tcsetattr};

/// The window size when no local terminal says (rows, columns).
pub(super) const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// The terminal raw mode was entered on and the settings it replaced, for
/// the panic hook.
static SAVED: Mutex<Option<(OwnedFd, Termios)>> = Mutex::new(None);

fn hook_state() -> std::sync::MutexGuard<'static, Option<(OwnedFd, Termios)>> {
    SAVED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether stdin is a terminal.
pub(super) fn stdin_is_terminal() -> bool {
    isatty(io::stdin().as_fd())
}

/// Whether stdout is a terminal.
pub(super) fn stdout_is_terminal() -> bool {
    isatty(io::stdout().as_fd())
}

/// Whether stderr is a terminal.
pub(super) fn stderr_is_terminal() -> bool {
    isatty(io::stderr().as_fd())
}

/// The local window (rows, columns): from stdin, stdout or stderr,
/// whichever is a terminal that knows its size.
pub(super) fn size() -> Option<(u16, u16)> {
    let sizes = [
        tcgetwinsize(io::stdin().as_fd()),
        tcgetwinsize(io::stdout().as_fd()),
        tcgetwinsize(io::stderr().as_fd()),
    ];
    sizes
        .into_iter()
        .flatten()
        .find(|w| w.ws_row > 0 && w.ws_col > 0)
        .map(|w| (w.ws_row, w.ws_col))
}

/// Raw mode on a terminal, undone when dropped.
#[derive(Debug)]
pub(super) struct Raw {
    fd: OwnedFd,
    saved: Termios,
}

impl Raw {
    /// Puts stdin in raw mode (no echo, no line editing, no signals from
    /// Ctrl-C or Ctrl-Z: every key is a byte for the remote terminal).
    /// `None` when stdin is not a terminal.
    pub(super) fn enter() -> io::Result<Option<Self>> {
        let stdin = io::stdin();
        if !isatty(stdin.as_fd()) {
            return Ok(None);
        }
        Self::on(stdin.as_fd().try_clone_to_owned()?).map(Some)
    }

    /// Raw mode on the terminal `fd`.
    fn on(fd: OwnedFd) -> io::Result<Self> {
        install_hook();
        let saved = tcgetattr(&fd)?;
        *hook_state() = Some((fd.try_clone()?, saved.clone()));
        let mut raw = saved.clone();
        raw.make_raw();
        if let Err(e) = tcsetattr(&fd, OptionalActions::Now, &raw) {
            hook_state().take();
            return Err(e.into());
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // A terminal that has gone away cannot be restored; nothing to do.
        let _ = tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
        hook_state().take();
    }
}

/// Restores the saved settings from a panic, before its message.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Never wait on a lock from a panic: a holder may be the one
            // panicking.
            if let Ok(saved) = SAVED.try_lock()
                && let Some((fd, termios)) = saved.as_ref()
            {
                let _ = tcsetattr(fd, OptionalActions::Now, termios);
            }
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, unlockpt};
    use rustix::termios::LocalModes;

    /// A terminal of our own (the user side of a pseudo-terminal), and
    /// the controller side that keeps it open.
    fn terminal() -> (OwnedFd, OwnedFd) {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let controller = openpt(flags).unwrap();
        grantpt(&controller).unwrap();
        unlockpt(&controller).unwrap();
        let user = ioctl_tiocgptpeer(&controller, flags).unwrap();
        (controller, user)
    }

    fn cooked(fd: &OwnedFd) -> bool {
        let modes = tcgetattr(fd).unwrap().local_modes;
        modes.contains(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG)
    }

    #[test]
    fn raw_mode_is_undone_on_drop_and_on_a_panic() {
        let (_controller, user) = terminal();
        let before = format!("{:?}", tcgetattr(&user).unwrap());
        assert!(cooked(&user));
        let raw = Raw::on(user.try_clone().unwrap()).unwrap();
        let modes = tcgetattr(&user).unwrap().local_modes;
        assert!(!modes.intersects(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG));
        assert!(
            hook_state().is_some(),
            "the panic hook knows what to restore"
        );
        drop(raw);
        assert_eq!(format!("{:?}", tcgetattr(&user).unwrap()), before);
        assert!(hook_state().is_none());

        let fd = user.try_clone().unwrap();
        let panicked = std::panic::catch_unwind(move || {
            let _raw = Raw::on(fd).unwrap();
            panic!("on purpose");
        });
        assert!(panicked.is_err());
        assert_eq!(format!("{:?}", tcgetattr(&user).unwrap()), before);
    }
}
