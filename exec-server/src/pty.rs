//! A pseudo-terminal for a call's process: the pair is opened (with the
//! window size asked for) before the spawn, the child gets the user side as
//! its stdin, stdout, stderr and controlling terminal (see
//! `spawn`), and the exec-server keeps the controller
//! side: its output is read as the process's stdout, stdin is written to
//! it, and a resize sets its window (the process gets `SIGWINCH`). Closing
//! it hangs the terminal up.
//!
//! All of it goes through `rustix`'s `pty` and `termios` modules; the
//! controller side is non-blocking and polled by the runtime.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use crate::spawn::Stdio;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, ptsname, unlockpt};
use rustix::termios::{
    InputModes, OptionalActions, SpecialCodeIndex, Winsize, tcgetattr, tcsetattr, tcsetwinsize,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The end-of-file character when the terminal does not say (Ctrl-D).
const DEFAULT_EOF: u8 = 0x04;

/// A pseudo-terminal pair, before the spawn.
#[derive(Debug)]
pub(crate) struct Pair {
    controller: OwnedFd,
    user: OwnedFd,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Opens a pseudo-terminal pair whose window is `rows` by `cols`. Fails
/// when the system has no pseudo-terminal left (or this process no
/// descriptor).
pub(crate) fn open(rows: u16, cols: u16) -> io::Result<Pair> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let controller = openpt(flags)?;
    grantpt(&controller)?;
    unlockpt(&controller)?;
    // Without a path where the kernel allows it (Linux 4.13 and later).
    let user = match ioctl_tiocgptpeer(&controller, flags) {
        Ok(fd) => fd,
        Err(_) => {
            let name = ptsname(&controller, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        }
    };
    tcsetwinsize(&controller, winsize(rows, cols))?;
    // Line editing counts UTF-8 characters, as a local terminal's does.
    if let Ok(mut modes) = tcgetattr(&user) {
        modes.input_modes |= InputModes::IUTF8;
        let _ = tcsetattr(&user, OptionalActions::Now, &modes);
    }
    Ok(Pair { controller, user })
}

impl Pair {
    /// The child's stdin, stdout and stderr: the user side, three times.
    pub(crate) fn stdio(&self) -> io::Result<[Stdio; 3]> {
        Ok([
            Stdio::Fd(self.user.try_clone()?),
            Stdio::Fd(self.user.try_clone()?),
            Stdio::Fd(self.user.try_clone()?),
        ])
    }

    /// The descriptor the child makes its controlling terminal.
    pub(crate) fn controlling(&self) -> io::Result<OwnedFd> {
        self.user.try_clone()
    }

    /// After the spawn: the user side is closed here (the child holds its
    /// own), and the controller side is handed to the runtime. Must be
    /// called within a Tokio runtime.
    pub(crate) fn into_terminal(self) -> io::Result<Terminal> {
        let eof = tcgetattr(&self.user)
            .map(|t| t.special_codes[SpecialCodeIndex::VEOF])
            .ok()
            .filter(|c| *c != 0)
            .unwrap_or(DEFAULT_EOF);
        drop(self.user);
        rustix::io::ioctl_fionbio(&self.controller, true)?;
        Ok(Terminal {
            fd: watch(self.controller)?,
            eof,
        })
    }
}

/// Registers `fd` with the runtime's reactor. `AsyncFd::new` is deprecated
/// because a type whose descriptor can change or close under it would
/// leave the registration naming another file; an `OwnedFd` is closed only
/// when dropped, which the `AsyncFd` does after deregistering it, so it
/// meets `AsyncFd::register`'s conditions without code of our own that is
/// unsafe.
#[allow(deprecated)]
fn watch(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

/// The controller side of a running process's terminal. Dropping every
/// handle on it hangs the terminal up.
#[derive(Debug)]
pub(crate) struct Terminal {
    fd: AsyncFd<OwnedFd>,
    /// The character that ends the input (VEOF).
    eof: u8,
}

impl Terminal {
    /// Sets the window size; the terminal's foreground process group gets
    /// `SIGWINCH`.
    pub(crate) fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        Ok(tcsetwinsize(self.fd.get_ref(), winsize(rows, cols))?)
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| read(fd.get_ref().as_fd(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| write(fd.get_ref().as_fd(), data)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One read: the user side closed by everyone (`EIO`) is the end of the
/// output.
fn read(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(Errno::IO) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn write(fd: std::os::fd::BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::io::write(fd, data) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads what the terminal shows (the process's stdout and stderr, merged).
#[derive(Debug, Clone)]
pub(crate) struct Reader(pub Arc<Terminal>);

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read(cx, buf)
    }
}

/// Types into the terminal. Shutting it down types the end-of-file
/// character once (as a person ending the input with Ctrl-D would): a
/// terminal cannot be half-closed.
#[derive(Debug)]
pub(crate) struct Writer {
    terminal: Arc<Terminal>,
    ended: bool,
}

impl Writer {
    /// A writer into `terminal`.
    pub(crate) fn new(terminal: Arc<Terminal>) -> Self {
        Self {
            terminal,
            ended: false,
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.terminal.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.ended {
            return Poll::Ready(Ok(()));
        }
        let eof = [self.terminal.eof];
        let n = ready!(self.terminal.poll_write(cx, &eof))?;
        if n == 1 {
            self.ended = true;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn what_is_typed_is_echoed_and_the_size_is_set() {
        let pair = open(30, 100).unwrap();
        let user = pair.controlling().unwrap();
        assert_eq!(
            rustix::termios::tcgetwinsize(&user).unwrap(),
            winsize(30, 100)
        );
        let terminal = Arc::new(pair.into_terminal().unwrap());
        terminal.resize(40, 120).unwrap();
        assert_eq!(
            rustix::termios::tcgetwinsize(&user).unwrap(),
            winsize(40, 120)
        );
        let mut writer = Writer::new(Arc::clone(&terminal));
        writer.write_all(b"hi\n").await.unwrap();
        // Echoed by the line discipline, newline translated.
        let mut reader = Reader(Arc::clone(&terminal));
        let mut seen = Vec::new();
        while !seen.ends_with(b"hi\r\n") {
            let mut buf = [0u8; 64];
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "the terminal ended early: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
        }
        // The user side holds the typed line.
        let mut line = [0u8; 16];
        let n = rustix::io::read(&user, &mut line[..]).unwrap();
        assert_eq!(&line[..n], b"hi\n");
    }

    #[tokio::test]
    async fn closing_the_user_side_ends_the_output_after_what_was_written() {
        let pair = open(24, 80).unwrap();
        let user = pair.controlling().unwrap();
        let terminal = Arc::new(pair.into_terminal().unwrap());
        rustix::io::write(&user, b"last words").unwrap();
        drop(user);
        let mut out = Vec::new();
        Reader(terminal).read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"last words");
    }

    #[tokio::test]
    async fn shutting_the_writer_down_types_the_end_of_file_character_once() {
        let pair = open(24, 80).unwrap();
        let user = pair.controlling().unwrap();
        let terminal = Arc::new(pair.into_terminal().unwrap());
        let mut writer = Writer::new(terminal);
        writer.write_all(b"abc").await.unwrap();
        writer.shutdown().await.unwrap();
        writer.shutdown().await.unwrap();
        // Canonical mode: the end-of-file character ends the pending line
        // without being part of it.
        let mut line = [0u8; 16];
        let n = rustix::io::read(&user, &mut line[..]).unwrap();
        assert_eq!(&line[..n], b"abc");
    }
}

/// The process groups of the terminal session `sid` leads (its jobs), read
/// from `/proc`: a hang-up reaches each of them as when a terminal's line
/// drops and its shell passes the hang-up on, without depending on the
/// shell having the time to do so.
pub(crate) fn session_groups(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut groups: Vec<i32> = dir
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            name.to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (pgrp, session) = groups_of(&stat)?;
            (session == sid).then_some(pgrp)
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The process group and session of a `/proc/PID/stat` line (the fields
/// after the command name, which may hold spaces and parentheses).
fn groups_of(stat: &str) -> Option<(i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // state, ppid, pgrp, session
    let pgrp = fields.nth(2)?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((pgrp, session))
}

#[cfg(test)]
mod session_tests {
    use super::*;

    #[test]
    fn the_groups_of_a_stat_line_are_read_past_an_odd_name() {
        let stat = "4242 (a (b) c) S 1 4300 4242 34816 4300 4194304 0";
        assert_eq!(groups_of(stat), Some((4300, 4242)));
        assert_eq!(groups_of("garbage"), None);
    }

    #[test]
    fn this_process_is_in_its_own_session() {
        let sid = nix::unistd::getsid(None).unwrap().as_raw();
        let pgrp = nix::unistd::getpgrp().as_raw();
        assert!(session_groups(sid).contains(&pgrp));
    }
}
