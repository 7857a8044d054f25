//! A real terminal for the tests, driven the way a person would: a tmux
//! server of its own (a unique socket, no user configuration, no status
//! line), one window whose pane runs a command; keys are typed with
//! `send-keys` and the screen is read with `capture-pane`. Every wait polls
//! the screen until what is expected shows or a deadline passes.
//!
//! tmux is not everywhere: [`available`] says whether it can be run here
//! ([`tool`], whether a shell or interpreter the tests drive can), and
//! [`REQUIRE`] names the variable that makes an absence a failure rather
//! than a skip (CI sets it).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{FixtureError, Result};

/// Set to `1` to fail, rather than skip, the tests that need tmux when it
/// is missing.
pub const REQUIRE: &str = "REX_REQUIRE_TMUX";

/// How often the screen is read while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Whether tmux can be run. When it cannot, prints a skip notice for
/// `test` and returns false, unless [`REQUIRE`] is `1`: then it panics.
pub fn available(test: &str) -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    crate::required::present(test, found, "tmux", REQUIRE)
}

/// Whether `program` (a shell or an interpreter such as `bash` or
/// `python3`, which the terminal tests drive on both ends) runs here: it
/// is run with `-c ""`. When it does not, prints a skip notice for `what`
/// in `test` and returns false, unless [`REQUIRE`] is `1`: then it panics,
/// as for tmux itself.
pub fn tool(test: &str, program: &str, what: &str) -> bool {
    let found = Command::new(program)
        .args(["-c", ""])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
        panic!("{test}: {program} is required ({REQUIRE}=1) but cannot be run");
    }
    eprintln!(
        "{test}: {what} skipped: {program} is not installed (set {REQUIRE}=1 to make this a \
         failure)"
    );
    false
}

/// Quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes an executable shell script at `path` that runs `cmd` as it is
/// set up (program, arguments, environment set and removed), with `2>`
/// nothing changed: a command line short enough to type.
pub fn script_for(cmd: &Command, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = |s: &std::ffi::OsStr| -> Result<String> {
        s.to_str()
            .map(str::to_owned)
            .ok_or_else(|| FixtureError::start("a tmux script", format!("{s:?} is not UTF-8")))
    };
    let mut body = String::from("#!/bin/sh\n");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => body.push_str(&format!("export {}={}\n", text(k)?, quote(&text(v)?))),
            None => body.push_str(&format!("unset {}\n", text(k)?)),
        }
    }
    body.push_str("exec ");
    body.push_str(&quote(&text(cmd.get_program())?));
    for a in cmd.get_args() {
        body.push(' ');
        body.push_str(&quote(&text(a)?));
    }
    body.push('\n');
    std::fs::write(path, body)
        .map_err(|e| FixtureError::io(format!("writing {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| FixtureError::io(format!("making {} executable", path.display()), e))
}

/// A tmux server with one window, killed when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a server on a socket of its own, with one detached window
    /// of `cols` by `rows` (the pane is the whole window: no status line)
    /// running `command` (through `sh -c`) in `dir`.
    pub fn start(dir: &Path, cols: u16, rows: u16, command: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let socket = format!(
            "rex-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let conf = dir.join("tmux.conf");
        // The pane stays after its command exits, so its last screen can
        // be read.
        std::fs::write(&conf, "set -g status off\nset -g remain-on-exit on\n")
            .map_err(|e| FixtureError::io(format!("writing {}", conf.display()), e))?;
        let tmux = Self { socket };
        let conf = conf.to_str().ok_or_else(|| {
            FixtureError::start("tmux", format!("{} is not UTF-8", conf.display()))
        })?;
        let dir = dir.to_str().ok_or_else(|| {
            FixtureError::start("tmux", format!("{} is not UTF-8", dir.display()))
        })?;
        let (cols, rows) = (cols.to_string(), rows.to_string());
        tmux.run_with(
            &["-f", conf],
            &[
                "new-session",
                "-d",
                "-s",
                "main",
                "-c",
                dir,
                "-x",
                &cols,
                "-y",
                &rows,
                command,
            ],
        )?;
        Ok(tmux)
    }

    fn run_with(&self, global: &[&str], args: &[&str]) -> Result<Output> {
        let what = format!("tmux {}", args.first().copied().unwrap_or_default());
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(global)
            .args(args)
            .output()
            .map_err(|e| FixtureError::io(format!("running {what}"), e))?;
        if !out.status.success() {
            return Err(FixtureError::output(
                what,
                format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
            ));
        }
        Ok(out)
    }

    /// Runs a tmux command against this server.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.run_with(&[], args)
    }

    /// Types `text` as it is (no key names).
    pub fn type_text(&self, text: &str) -> Result<()> {
        self.run(&["send-keys", "-t", "main", "-l", text]).map(drop)
    }

    /// Types `line` and Enter.
    pub fn type_line(&self, line: &str) -> Result<()> {
        self.type_text(line)?;
        self.keys(&["Enter"])
    }

    /// Presses keys by name (`Enter`, `C-c`, ...).
    pub fn keys(&self, keys: &[&str]) -> Result<()> {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.run(&args).map(drop)
    }

    /// The screen as text, one line per row, trailing blanks trimmed.
    pub fn screen(&self) -> Result<String> {
        let out = self.run(&["capture-pane", "-p", "-t", "main"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Resizes the window (and so the pane) to `cols` by `rows`.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let (cols, rows) = (cols.to_string(), rows.to_string());
        self.run(&["resize-window", "-t", "main", "-x", &cols, "-y", &rows])
            .map(drop)
    }

    /// Reads the screen until `wanted` accepts it or `within` passes;
    /// returns the screen it accepted. `what` names it in the timeout.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + within;
        let mut screen = self.screen()?;
        while !wanted(&screen) {
            if Instant::now() >= deadline {
                return Err(FixtureError::Timeout {
                    what: format!("{what} ({within:?}); the screen:\n{screen}"),
                });
            }
            std::thread::sleep(POLL);
            screen = self.screen()?;
        }
        Ok(screen)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The screen's lines, trailing blanks and empty lines at the end left
/// out.
pub fn lines(screen: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}
