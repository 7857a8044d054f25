//! The built `relay`, `exec-server`, `core-client` and `rex-demo` binaries,
//! run as separate processes.

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{FixtureError, Result};

const BINARIES: [&str; 4] = ["relay", "exec-server", "core-client", "rex-demo"];

/// The directory the binaries are built in: the profile directory of the
/// running executable (test and bench executables live in
/// `<target>/<profile>/deps/`).
fn target_dir() -> std::result::Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate the running executable: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not in <target>/<profile>/deps/", exe.display()))
}

/// Builds the binaries (or finds them up to date); returns where they are.
fn build() -> std::result::Result<PathBuf, String> {
    let dir = target_dir()?;
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
        "-p",
        "rex-demo",
    ]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    // A test runner sets the tests' own package variables (manifest
    // directory, name, version); a build script that watches them (ring's
    // does) would otherwise be run again here, and again in the runner's
    // next build, each rebuilding what depends on it (about 25 s a time).
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_package_variable) {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("building the binaries failed ({status})"));
    }
    for b in BINARIES {
        if !dir.join(b).exists() {
            return Err(format!("{b} was not built in {}", dir.display()));
        }
    }
    Ok(dir)
}

/// Whether `key` is one of the variables cargo sets for a package's own
/// build and tests (rather than one that configures cargo).
fn is_package_variable(key: &str) -> bool {
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"]
        .iter()
        .any(|p| key.starts_with(p))
        || [
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ]
        .contains(&key)
}

/// The path of a workspace binary. The binaries are built (or found up to
/// date) once per test process, so a test never runs a stale binary when
/// only this package's tests were asked for. If that build failed, every
/// call returns the error.
pub fn path(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(dir) => Ok(dir.join(name)),
        Err(reason) => Err(FixtureError::start(name, reason)),
    }
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
    /// A [`FixtureError::Timeout`] if none came `within`, a
    /// [`FixtureError::Output`] if stderr closed first.
    pub fn wait_for_line(&self, needle: &str, within: Duration) -> Result<String> {
        recv_line(
            &self.stderr_lines,
            |line| line.contains(needle),
            &format!("a stderr line containing {needle:?}"),
            within,
        )
    }
}

/// Waits (bounded) for a line from `lines` that `wanted` accepts; returns
/// it. A [`FixtureError::Timeout`] if none came `within`, a
/// [`FixtureError::Output`] if the lines ended first (with the last lines
/// seen, so a process that exited says why). `what` names the line awaited
/// in those errors.
pub fn recv_line(
    lines: &mpsc::Receiver<String>,
    wanted: impl Fn(&str) -> bool,
    what: &str,
    within: Duration,
) -> Result<String> {
    /// How many of the last lines an error quotes.
    const QUOTED: usize = 4;
    let deadline = std::time::Instant::now() + within;
    let mut last = std::collections::VecDeque::with_capacity(QUOTED);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Ok(line),
            Ok(line) => {
                if last.len() == QUOTED {
                    last.pop_front();
                }
                last.push_back(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(FixtureError::Timeout {
                    what: format!("{what} ({within:?})"),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let said = Vec::from(last).join(" | ");
                return Err(FixtureError::output(
                    "the process's output",
                    format!("it ended without {what}; its last lines: {said}"),
                ));
            }
        }
    }
}

/// The lines of a child's stderr, read by a thread of their own, for
/// [`recv_line`].
pub fn pump_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
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

/// Waits (bounded, checking every 50 ms) until `ok` holds; whether it did.
pub fn eventually(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

/// Spawns a binary with `args`, stderr captured line by line.
pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<Proc> {
    let mut cmd = Command::new(path(name)?);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| FixtureError::io(format!("spawning {name}"), e))?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(FixtureError::start(name, "its stderr was not captured"));
    };
    Ok(Proc {
        child,
        stderr_lines: pump_lines(stderr),
    })
}

/// Runs `keygen` of `binary` into `dir/name`; returns the public key.
pub fn keygen(binary: &str, dir: &Path, name: &str) -> Result<String> {
    let what = format!("{binary} keygen --out {}", dir.join(name).display());
    let out = Command::new(path(binary)?)
        .args(["keygen", "--out"])
        .arg(dir.join(name))
        .output()
        .map_err(|e| FixtureError::io(format!("running {what}"), e))?;
    if !out.status.success() {
        return Err(FixtureError::output(
            what,
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ));
    }
    let public = String::from_utf8(out.stdout)
        .map_err(|e| FixtureError::output(what, format!("the public key is not UTF-8: {e}")))?;
    Ok(public.trim().to_owned())
}

/// `path` as a `&str`, for a command-line argument.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        FixtureError::start(
            "a fixture process",
            format!("the path {} is not UTF-8", path.display()),
        )
    })
}

/// The files `relay tls-init` makes (a CA, and a certificate signed by
/// it).
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate (what clients trust: `--ca`).
    pub ca: PathBuf,
    /// The listener's certificate (`--tls-cert`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key`).
    pub key: PathBuf,
}

/// Runs `relay tls-init --dir DIR --name …` for `names`.
pub fn tls_init(dir: &Path, names: &[&str]) -> Result<Certs> {
    let what = format!("relay tls-init --dir {}", dir.display());
    let mut cmd = Command::new(path("relay")?);
    cmd.arg("tls-init").arg("--dir").arg(dir);
    for n in names {
        cmd.args(["--name", n]);
    }
    let out = cmd
        .output()
        .map_err(|e| FixtureError::io(format!("running {what}"), e))?;
    if !out.status.success() {
        return Err(FixtureError::output(
            what,
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ));
    }
    Ok(Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("relay.pem"),
        key: dir.join("relay.key"),
    })
}

/// The names the loopback certificates are for.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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
    /// With TLS: the certificates (the relay serves them; clients and the
    /// exec-server trust the CA).
    pub certs: Option<Certs>,
    /// Path of the `core-client` binary.
    core_client: PathBuf,
    /// The exec-server's arguments (for [`ProcStack::restart_server`]).
    server_args: Vec<String>,
    /// The environment the processes were started with.
    env: Vec<(String, String)>,
}

impl ProcStack {
    /// Starts a relay and an exec-server that authorizes a fresh client key.
    pub fn start(extra_env: &[(&str, &str)]) -> Result<Self> {
        Self::start_with(extra_env, false)
    }

    /// [`ProcStack::start`] with the relay serving TLS (certificates from
    /// `relay tls-init` for loopback): the exec-server and clients dial
    /// `https://` and trust its CA.
    pub fn start_tls(extra_env: &[(&str, &str)]) -> Result<Self> {
        Self::start_with(extra_env, true)
    }

    fn start_with(extra_env: &[(&str, &str)], tls: bool) -> Result<Self> {
        let dir = tempfile::tempdir()
            .map_err(|e| FixtureError::io("creating the stack's scratch directory", e))?;
        let server_pub = keygen("exec-server", dir.path(), "server.key")?;
        let client_pub = keygen("core-client", dir.path(), "client.key")?;
        let ak = dir.path().join("authorized_keys");
        std::fs::write(&ak, format!("# test client\n{client_pub}\n"))
            .map_err(|e| FixtureError::io(format!("writing {}", ak.display()), e))?;
        let certs = if tls {
            Some(tls_init(&dir.path().join("tls"), &LOOPBACK_NAMES)?)
        } else {
            None
        };
        let mut relay_args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        if let Some(c) = &certs {
            relay_args.extend([
                "--tls-cert".to_owned(),
                utf8(&c.cert)?.to_owned(),
                "--tls-key".to_owned(),
                utf8(&c.key)?.to_owned(),
            ]);
        }
        let relay_args: Vec<&str> = relay_args.iter().map(String::as_str).collect();
        let relay = spawn("relay", &relay_args, extra_env)?;
        let line = relay.wait_for_line("listening on", Duration::from_secs(30))?;
        let addr = line.rsplit(' ').next().unwrap_or(&line).trim().to_owned();
        let scheme = if tls { "https" } else { "http" };
        let relay_url = format!("{scheme}://{addr}");
        let key = dir.path().join("server.key");
        let data = dir.path().join("server-data");
        let mut server_args = vec![
            "--relay",
            &relay_url,
            "--key",
            utf8(&key)?,
            "--authorized-keys",
            utf8(&ak)?,
            "--data-dir",
            utf8(&data)?,
        ];
        if let Some(c) = &certs {
            server_args.extend(["--ca", utf8(&c.ca)?]);
        }
        let server = spawn("exec-server", &server_args, extra_env)?;
        server.wait_for_line("registered with relay", Duration::from_secs(30))?;
        let client_key = dir.path().join("client.key");
        let server_args = server_args.iter().map(|a| (*a).to_owned()).collect();
        Ok(Self {
            dir,
            relay,
            server,
            relay_url,
            server_pub,
            client_key,
            certs,
            core_client: path("core-client")?,
            server_args,
            env: extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    /// Stops the exec-server and starts it again with its arguments and
    /// `extra` (e.g. another `--relay`, or resume bounds), waiting until it
    /// has registered with `registrations` relays.
    pub fn restart_server(&mut self, extra: &[&str], registrations: usize) -> Result<()> {
        let args: Vec<String> = self.server_args.clone();
        self.respawn_server(args, extra, registrations)
    }

    /// [`restart_server`](Self::restart_server) registering through
    /// `relays` (e.g. a forwarder in front of the stack's relay) instead
    /// of the stack's relay.
    pub fn restart_server_via(
        &mut self,
        relays: &[&str],
        extra: &[&str],
        registrations: usize,
    ) -> Result<()> {
        let mut args = Vec::new();
        let mut given = self.server_args.iter();
        while let Some(a) = given.next() {
            if a == "--relay" {
                given.next();
            } else {
                args.push(a.clone());
            }
        }
        for r in relays {
            args.extend(["--relay".to_owned(), (*r).to_owned()]);
        }
        self.respawn_server(args, extra, registrations)
    }

    fn respawn_server(
        &mut self,
        args: Vec<String>,
        extra: &[&str],
        registrations: usize,
    ) -> Result<()> {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(extra);
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.server = spawn("exec-server", &args, &env)?;
        for _ in 0..registrations {
            self.server
                .wait_for_line("registered with relay", Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// The relay's socket address.
    pub fn relay_addr(&self) -> Result<std::net::SocketAddr> {
        let addr = self
            .relay_url
            .split_once("://")
            .map_or(self.relay_url.as_str(), |(_, a)| a);
        addr.parse()
            .map_err(|e| FixtureError::start("the relay", format!("{addr}: {e}")))
    }

    /// Kills the relay (SIGKILL: no goodbye to anyone).
    pub fn kill_relay(&mut self) {
        let _ = self.relay.child.kill();
        let _ = self.relay.child.wait();
    }

    /// Starts the relay again on its address (after
    /// [`kill_relay`](Self::kill_relay)), waiting until it listens.
    pub fn start_relay_again(&mut self) -> Result<()> {
        let addr = self
            .relay_url
            .split_once("://")
            .map_or(self.relay_url.as_str(), |(_, a)| a)
            .to_owned();
        let mut args = vec!["--listen".to_owned(), addr];
        if let Some(c) = &self.certs {
            args.extend([
                "--tls-cert".to_owned(),
                utf8(&c.cert)?.to_owned(),
                "--tls-key".to_owned(),
                utf8(&c.key)?.to_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.relay = spawn("relay", &args, &env)?;
        self.relay
            .wait_for_line("listening on", Duration::from_secs(30))?;
        Ok(())
    }

    /// A `core-client exec` command through the relay for `argv`.
    pub fn exec(&self, argv: &[&str]) -> Command {
        self.exec_with(&[], argv)
    }

    /// [`ProcStack::exec`] with `flags` right after `exec` (e.g.
    /// `--print-trace-id`).
    /// With TLS, `--ca` names the stack's CA.
    pub fn exec_with(&self, flags: &[&str], argv: &[&str]) -> Command {
        self.exec_via(&self.relay_url, flags, argv)
    }

    /// [`ProcStack::exec_with`] through `url` instead of the relay's own
    /// (a path in front of it, such as the link emulator).
    pub fn exec_via(&self, url: &str, flags: &[&str], argv: &[&str]) -> Command {
        let ca = self.certs.as_ref().and_then(|c| c.ca.to_str());
        let mut all: Vec<&str> = ca.map(|ca| vec!["--ca", ca]).unwrap_or_default();
        all.extend(flags);
        exec_command_of(
            &self.core_client,
            url,
            &self.server_pub,
            &self.client_key,
            &all,
            argv,
        )
    }

    /// Runs `argv` with no agent through `url`, stdin closed, and returns
    /// its trace id and that trace's spans from the stack's trace file; an
    /// error carrying its stderr if it did not exit 0.
    pub fn traced_exec(
        &self,
        url: &str,
        argv: &[&str],
    ) -> Result<(String, Vec<crate::otlp::RecordedSpan>)> {
        let out = self
            .exec_via(url, &["--no-agent", "--print-trace-id"], argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| FixtureError::io("running core-client exec", e))?;
        if !out.status.success() {
            return Err(FixtureError::output(
                "core-client exec",
                format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
            ));
        }
        let id = printed_trace_id(&out)?;
        let spans = crate::trace_check::from_trace_file(&self.dir.path().join("traces.jsonl"), &id);
        Ok((id, spans))
    }

    /// `core-client trace show ID` over the stack's trace file: its output.
    pub fn trace_show(&self, id: &str) -> Result<String> {
        let out = core_client_of(&self.core_client, self.dir.path())
            .args(["trace", "show", id])
            .output()
            .map_err(|e| FixtureError::io("running core-client trace show", e))?;
        if !out.status.success() {
            return Err(FixtureError::output(
                "core-client trace show",
                String::from_utf8_lossy(&out.stderr),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A `core-client exec` command through `relay_url` to `server_pub`, as
/// `key`, with `flags` right after `exec` (e.g. `--print-trace-id`).
/// Its local trace file is `traces.jsonl` beside the key and its config
/// directory `config/` there (never the user's own), and no OTLP endpoint
/// from the test's environment leaks in.
pub fn exec_command(
    relay_url: &str,
    server_pub: &str,
    key: &Path,
    flags: &[&str],
    argv: &[&str],
) -> Result<Command> {
    Ok(exec_command_of(
        &path("core-client")?,
        relay_url,
        server_pub,
        key,
        flags,
        argv,
    ))
}

/// A `core-client` command with no arguments yet, in the sandbox
/// [`exec_command`] describes for a key in `dir`.
pub fn core_client(dir: &Path) -> Result<Command> {
    Ok(core_client_of(&path("core-client")?, dir))
}

fn core_client_of(program: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("REX_TRACE_FILE", dir.join("traces.jsonl"))
        .env("REX_DATA_DIR", dir.join("client-data"))
        // The user's own config file and known servers are never read.
        .env("XDG_CONFIG_HOME", dir.join("config"))
        // Nor the user's agent: a test's agent (if any) listens here.
        .env("REX_AGENT_SOCKET", dir.join("agent").join("agent.sock"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    cmd
}

/// [`exec_command`] with the `core-client` binary at `program`.
fn exec_command_of(
    program: &Path,
    relay_url: &str,
    server_pub: &str,
    key: &Path,
    flags: &[&str],
    argv: &[&str],
) -> Command {
    let mut cmd = core_client_of(program, key.parent().unwrap_or(Path::new(".")));
    cmd.arg("exec")
        .args(flags)
        .args(["--relay", relay_url, "--server", server_pub, "--key"])
        .arg(key)
        .arg("--")
        .args(argv);
    cmd
}

/// Runs `cmd`, feeding it `stdin` (from another thread, so a large input
/// cannot deadlock against its output), and collects its output.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Result<Output> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FixtureError::io(format!("spawning {what}"), e))?;
    let Some(mut pipe) = child.stdin.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(FixtureError::start(what, "its stdin was not piped"));
    };
    let data = stdin.to_vec();
    // The command may exit without reading it all; that is its business.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| FixtureError::io(format!("collecting the output of {what}"), e))?;
    writer
        .join()
        .map_err(|_| FixtureError::output(what, "the thread feeding its stdin panicked"))?;
    Ok(out)
}

/// The trace id a `core-client exec --print-trace-id` run printed.
pub fn printed_trace_id(out: &Output) -> Result<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("core-client: trace "))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| {
            FixtureError::output(
                "core-client exec --print-trace-id",
                format!("no trace id printed; stderr: {stderr}"),
            )
        })
}

/// libfaketime's preload library, where Debian's `faketime` package puts
/// it; `None` (the test skips with a notice) unless `REX_REQUIRE_FAKETIME`
/// is set, as CI sets it after installing the package.
pub fn libfaketime() -> Option<std::path::PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("REX_REQUIRE_FAKETIME").is_none(),
            "libfaketime is required (Debian package faketime)"
        );
        eprintln!("skipped: libfaketime is not installed (Debian package faketime)");
    }
    found
}
