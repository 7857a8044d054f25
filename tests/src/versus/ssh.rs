//! The OpenSSH peer: a local sshd (set up by `scripts/bench.sh`: bound to
//! 127.0.0.1, a throwaway key, a user whose login shell is `/bin/sh`)
//! reached with a fresh connection per command, or through a
//! `ControlMaster` kept open for the whole scenario.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// How to reach the local sshd.
#[derive(Debug, Clone)]
pub struct Ssh {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The private key file of the benchmark user.
    pub key: PathBuf,
    /// The benchmark user.
    pub user: String,
}

impl Ssh {
    /// `ssh` with the options every run shares (no config file, no host
    /// key prompts or records, batch mode), through `control` if given.
    pub fn command(&self, control: Option<&Path>) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-p", &self.port.to_string(), "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "IdentitiesOnly=yes",
            ]);
        if let Some(socket) = control {
            cmd.arg("-S").arg(socket);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// The `user@127.0.0.1` destination.
    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// Runs `remote` (a command line for the remote `/bin/sh`) once and
    /// returns its stdout; an error unless it exits 0.
    pub async fn output(&self, control: Option<&Path>, remote: &str) -> Result<Vec<u8>, String> {
        let out = self
            .command(control)
            .arg(self.destination())
            .arg(remote)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "ssh {remote:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Opens a `ControlMaster` at `socket` (in the background until
    /// [`Master`] is dropped).
    pub async fn master(&self, socket: &Path) -> Result<Master, String> {
        let status = self
            .command(None)
            .args(["-M", "-S"])
            .arg(socket)
            .args(["-o", "ControlPersist=yes", "-f", "-N"])
            .arg(self.destination())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .await
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if !status.success() {
            return Err(format!("ssh ControlMaster did not start ({status})"));
        }
        Ok(Master {
            ssh: self.clone(),
            socket: socket.to_path_buf(),
        })
    }
}

/// An open `ControlMaster`; asked to exit when dropped.
pub struct Master {
    ssh: Ssh,
    socket: PathBuf,
}

impl Master {
    /// The control socket to pass to [`Ssh::command`].
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-S"])
            .arg(&self.socket)
            .args(["-O", "exit"])
            .arg(self.ssh.destination())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
