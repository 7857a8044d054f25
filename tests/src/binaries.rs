//! The built `relay`, `exec-server` and `core-client` binaries, run as
//! separate processes.

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

const BINARIES: [&str; 3] = ["relay", "exec-server", "core-client"];

fn target_dir() -> PathBuf {
    // Test executables live in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The path of a workspace binary. The binaries are built (or found up to
/// date) once per test process, so a test never runs a stale binary when
/// only this package's tests were asked for.
pub fn path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_dir();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--bins",
            "-p",
            "relay",
            "-p",
            "exec-server",
            "-p",
            "core-client",
        ]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building the binaries failed");
        for b in BINARIES {
            assert!(
                dir.join(b).exists(),
                "{b} was not built in {}",
                dir.display()
            );
        }
    });
    dir.join(name)
}

/// A child process killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Lines the child wrote to stderr.
    pub stderr_lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no line containing {needle:?}: {e}"),
            }
        }
    }
}

fn pump_stderr(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Spawns a binary with `args`, stderr captured line by line.
pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(path(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    Proc {
        child,
        stderr_lines: pump_stderr(stderr),
    }
}

/// Runs `keygen` of `binary` into `dir/name`; returns the public key.
pub fn keygen(binary: &str, dir: &Path, name: &str) -> String {
    let out = Command::new(path(binary))
        .args(["keygen", "--out"])
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A relay and an exec-server as separate processes.
pub struct ProcStack {
    /// Scratch directory holding the keys.
    pub dir: tempfile::TempDir,
    /// The relay process.
    pub relay: Proc,
    /// The exec-server process.
    pub server: Proc,
    /// The relay URL.
    pub relay_url: String,
    /// The exec-server's public key.
    pub server_pub: String,
    /// Path of the authorized client key.
    pub client_key: PathBuf,
}

impl ProcStack {
    /// Starts a relay and an exec-server that authorizes a fresh client key.
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server_pub = keygen("exec-server", dir.path(), "server.key");
        let client_pub = keygen("core-client", dir.path(), "client.key");
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("# test client\n{client_pub}\n"),
        )
        .unwrap();
        let relay = spawn("relay", &["--listen", "127.0.0.1:0"], extra_env);
        let line = relay.wait_for_line("listening on", Duration::from_secs(30));
        let addr = line.rsplit(' ').next().unwrap().trim().to_owned();
        let relay_url = format!("http://{addr}");
        let key = dir.path().join("server.key");
        let ak = dir.path().join("authorized_keys");
        let data = dir.path().join("server-data");
        let server = spawn(
            "exec-server",
            &[
                "--relay",
                &relay_url,
                "--key",
                key.to_str().unwrap(),
                "--authorized-keys",
                ak.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
            extra_env,
        );
        server.wait_for_line("registered with relay", Duration::from_secs(30));
        let client_key = dir.path().join("client.key");
        Self {
            dir,
            relay,
            server,
            relay_url,
            server_pub,
            client_key,
        }
    }

    /// A `core-client exec` command through the relay for `argv`.
    pub fn exec(&self, argv: &[&str]) -> Command {
        exec_command(&self.relay_url, &self.server_pub, &self.client_key, argv)
    }
}

/// A `core-client exec` command through `relay_url` to `server_pub`, as `key`.
/// Its local trace file is `traces.jsonl` beside the key (never the user's
/// own), and no OTLP endpoint from the test's environment leaks in.
pub fn exec_command(relay_url: &str, server_pub: &str, key: &Path, argv: &[&str]) -> Command {
    let mut cmd = Command::new(path("core-client"));
    let dir = key.parent().unwrap_or(Path::new("."));
    cmd.env("REX_TRACE_FILE", dir.join("traces.jsonl"))
        .env("REX_DATA_DIR", dir.join("client-data"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    cmd.args([
        "exec", "--relay", relay_url, "--server", server_pub, "--key",
    ])
    .arg(key)
    .arg("--")
    .args(argv);
    cmd
}

/// Runs `cmd`, feeding it `stdin` (from another thread, so a large input
/// cannot deadlock against its output), and collects its output.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // The command may exit without reading it all; that is its business.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// `cmd` (a `core-client exec ...` command) with `extra` arguments put
/// right after `exec`, e.g. `--print-trace-id`; the environment is kept.
pub fn with_exec_flags(cmd: &Command, extra: &[&str]) -> Command {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut c = Command::new(cmd.get_program());
    c.arg(&args[0]).args(extra).args(&args[1..]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// The trace id a `core-client exec --print-trace-id` run printed.
pub fn printed_trace_id(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("core-client: trace "))
        .unwrap_or_else(|| panic!("no trace id printed; stderr: {stderr}"))
        .trim()
        .to_owned()
}
