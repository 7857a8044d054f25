//! A real etcd for the fleet's tests: Debian's `etcd-server` binary, a
//! single member of its own on loopback ports, its data in a scratch
//! directory. It can be stopped and started again on the same ports and
//! data (the directory's fault tests), and is killed when dropped.
//!
//! etcd is not everywhere: [`available`] says whether it can be run here,
//! and [`REQUIRE`] names the variable that makes an absence a failure
//! rather than a skip (CI sets it).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{FixtureError, Result};

/// Set to `1` to fail, rather than skip, the tests that need etcd when it
/// is missing.
pub const REQUIRE: &str = "REX_REQUIRE_ETCD";

/// How long etcd has to start answering.
const START_WITHIN: Duration = Duration::from_secs(30);

/// Whether etcd can be run. When it cannot, prints a skip notice for
/// `test` and returns false, unless [`REQUIRE`] is `1`: then it panics.
pub fn available(test: &str) -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    crate::required::present(test, found, "etcd (Debian: etcd-server)", REQUIRE)
}

/// A running single-member etcd.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| FixtureError::io("finding a free port for etcd", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| FixtureError::io("finding a free port for etcd", e))
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| FixtureError::io("etcd's data directory", e))?;
        let mut etcd = Self {
            child: None,
            client_port: free_port()?,
            peer_port: free_port()?,
            dir,
        };
        etcd.start_again()?;
        Ok(etcd)
    }

    /// The client URL relays are given.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts etcd again (after [`Self::stop`]) on the same ports and data.
    pub fn start_again(&mut self) -> Result<()> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))
            .map_err(|e| FixtureError::io("etcd's log file", e))?;
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data().display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .env_remove("ETCD_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| FixtureError::io("starting etcd", e))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(FixtureError::start(
                    "etcd",
                    format!("exited {status}: {tail:?}"),
                ));
            }
            if healthy(self.client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(FixtureError::Timeout {
            what: format!("etcd at {} to answer", self.url()),
        })
    }

    /// Stops etcd (SIGKILL: as a crash or a partition looks to the relays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl` against this etcd; its standard output.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("etcdctl")
            .arg(format!("--endpoints={}", self.url()))
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .map_err(|e| FixtureError::io("running etcdctl", e))?;
        if !out.status.success() {
            return Err(FixtureError::Output {
                what: format!("etcdctl {args:?}"),
                reason: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Whether etcd on 127.0.0.1:`port` answers `GET /health` with 200 and
/// `"health":"true"`.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.take(4096).read_to_string(&mut answer);
    (answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
        && answer.contains("\"health\":\"true\"")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
