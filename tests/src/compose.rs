//! The docker-compose stack, driven from the compose tests.
//!
//! `scripts/compose-test.sh` builds the images, brings the stack up and
//! runs the compose tests with the stack named in the environment:
//! `REX_COMPOSE` (the compose command, `docker compose` or
//! `docker-compose`), `REX_COMPOSE_PROJECT`, `REX_COMPOSE_FILE` (one
//! compose file, or several joined by `:` as compose's own `COMPOSE_FILE`
//! takes them) and `REX_JAEGER_URL` (the Jaeger query API), and
//! `REX_COMPOSE_TLS=1` when the stack runs with TLS between the
//! containers (`docker-compose.tls.yml`), `REX_COMPOSE_FLEET=1` when it
//! runs as a fleet of two relays on etcd (`docker-compose.fleet.yml`).
//! Without them
//! [`ComposeStack::from_env`] returns `None` and the tests skip.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{FixtureError, Result};

/// The long-running services of the stack.
pub const SERVICES: [&str; 3] = ["jaeger", "relay", "exec-server"];

/// The long-running services of the fleet's stack.
pub const FLEET_SERVICES: [&str; 5] = ["jaeger", "etcd", "relay", "relay-b", "exec-server"];

/// A compose stack brought up by `scripts/compose-test.sh`.
#[derive(Debug, Clone)]
pub struct ComposeStack {
    compose: Vec<String>,
    project: String,
    files: Vec<PathBuf>,
    /// Base URL of the Jaeger query API (the real Jaeger or the trace sink).
    pub jaeger_url: String,
    /// Whether the links between the containers use TLS.
    pub tls: bool,
    /// Whether the stack is a fleet of two relays on etcd.
    pub fleet: bool,
}

impl ComposeStack {
    /// The stack named by the environment, or `None` (with the reason)
    /// when the compose tests were not asked for.
    pub fn from_env() -> std::result::Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    format!(
                        "{name} is not set: the compose tests run from scripts/compose-test.sh \
                         (which needs a Docker daemon)"
                    )
                })
        };
        let compose: Vec<String> = var("REX_COMPOSE")?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Ok(Self {
            compose,
            project: var("REX_COMPOSE_PROJECT")?,
            files: var("REX_COMPOSE_FILE")?
                .split(':')
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
                .collect(),
            jaeger_url: var("REX_JAEGER_URL")?,
            tls: std::env::var("REX_COMPOSE_TLS").is_ok_and(|v| v == "1"),
            fleet: std::env::var("REX_COMPOSE_FLEET").is_ok_and(|v| v == "1"),
        })
    }

    /// A compose command for this stack, with `args` after the project
    /// and file options.
    pub fn command(&self, args: &[&str]) -> Command {
        let (program, rest) = self
            .compose
            .split_first()
            .map_or(("docker-compose", &[][..]), |(p, r)| (p.as_str(), r));
        let mut cmd = Command::new(program);
        cmd.args(rest).arg("-p").arg(&self.project);
        for file in &self.files {
            cmd.arg("-f").arg(file);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs a compose command and returns its output; an error if it could
    /// not run or did not succeed.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let what = format!("compose {}", args.join(" "));
        let out = self
            .command(args)
            .output()
            .map_err(|e| FixtureError::io(what.clone(), e))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(FixtureError::output(
                what,
                format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
            ))
        }
    }

    /// `core-client exec` in a one-off core-client container (no TTY, no
    /// stdin, dependencies not touched), with `flags` before `--`.
    pub fn exec(&self, flags: &[&str], argv: &[&str]) -> Command {
        self.exec_named(None, flags, argv)
    }

    fn exec_named(&self, name: Option<&str>, flags: &[&str], argv: &[&str]) -> Command {
        let mut args = vec!["run", "--rm", "-T", "--no-deps"];
        if let Some(name) = name {
            args.extend_from_slice(&["--name", name]);
        }
        args.extend_from_slice(&["core-client", "exec", "-n"]);
        args.extend_from_slice(flags);
        args.push("--");
        args.extend_from_slice(argv);
        self.command(&args)
    }

    /// [`ComposeStack::exec`] started in the background, its stdout read
    /// line by line.
    pub fn spawn_exec(&self, flags: &[&str], argv: &[&str]) -> Result<Running> {
        let name = format!("{}-client-{:08x}", self.project, rand::random::<u32>());
        let mut child = self
            .exec_named(Some(&name), flags, argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| FixtureError::io("starting a core-client container", e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| FixtureError::start("core-client", "no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| FixtureError::start("core-client", "no stderr pipe"))?;
        let (tx, lines) = mpsc::sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        Ok(Running {
            child,
            name,
            lines,
            stderr: Some(stderr),
        })
    }

    /// The id of the service's (first) container.
    pub fn container(&self, service: &str) -> Result<String> {
        let out = self.run(&["ps", "-q", service])?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| FixtureError::output("compose ps", format!("no {service} container")))
    }

    /// `docker inspect --format FORMAT` of the service's container.
    pub fn inspect(&self, service: &str, format: &str) -> Result<String> {
        let id = self.container(service)?;
        docker(&["inspect", "--format", format, &id]).map(|s| s.trim().to_owned())
    }

    /// The host pid of the service's main process.
    pub fn pid(&self, service: &str) -> Result<u32> {
        let pid = self.inspect(service, "{{.State.Pid}}")?;
        pid.parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| FixtureError::output("docker inspect", format!("no pid ({pid:?})")))
    }

    /// The networks the service's container is attached to.
    pub fn networks(&self, service: &str) -> Result<Vec<String>> {
        let names = self.inspect(
            service,
            "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
        )?;
        Ok(names.split_whitespace().map(str::to_owned).collect())
    }

    /// Starts whatever of the long-running services is not running and
    /// waits (bounded) until all are healthy.
    pub fn ensure_up(&self, within: Duration) -> Result<()> {
        let services: &[&str] = if self.fleet {
            &FLEET_SERVICES
        } else {
            &SERVICES
        };
        let mut args = vec!["up", "-d", "--no-recreate"];
        args.extend_from_slice(services);
        self.run(&args)?;
        self.wait_healthy(services, within)
    }

    /// Waits (bounded) until each of `services` reports healthy.
    pub fn wait_healthy(&self, services: &[&str], within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for service in services {
            loop {
                let status = self
                    .inspect(
                        service,
                        "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    )
                    .unwrap_or_default();
                if status == "healthy" {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(FixtureError::Timeout {
                        what: format!("{service} to be healthy (last: {status:?}) ({within:?})"),
                    });
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Ok(())
    }

    /// The service's logs (stdout and stderr) so far.
    pub fn logs(&self, service: &str) -> Result<String> {
        let out = self.run(&["logs", "--no-color", service])?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `docker ARGS` and returns its stdout; an error unless it succeeded.
pub fn docker(args: &[&str]) -> Result<String> {
    let what = format!("docker {}", args.join(" "));
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FixtureError::io(what.clone(), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FixtureError::output(
            what,
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ))
    }
}

/// A core-client container running in the background; killed if dropped
/// before it ends.
pub struct Running {
    child: Child,
    name: String,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// How a background core-client ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything it wrote to stderr (the compose tool's own lines too).
    pub stderr: String,
    /// How long after [`Running::wait`] was called it ended.
    pub after: Duration,
}

impl Running {
    /// Waits (bounded) for a stdout line equal to `line`.
    pub fn wait_for_line(&self, line: &str, within: Duration) -> Result<()> {
        crate::binaries::recv_line(
            &self.lines,
            |l| l == line,
            &format!("the stdout line {line:?}"),
            within,
        )
        .map(drop)
    }

    /// The next stdout line (bounded wait).
    pub fn next_line(&self, within: Duration) -> Result<String> {
        crate::binaries::recv_line(&self.lines, |_| true, "a stdout line", within)
    }

    /// Waits (bounded) for it to end. A [`FixtureError::Timeout`] (and the
    /// process killed) if it is still running after `within`.
    pub fn wait(mut self, within: Duration) -> Result<Ended> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let stderr = self
                        .stderr
                        .take()
                        .and_then(|h| h.join().ok())
                        .unwrap_or_default();
                    return Ok(Ended {
                        code: status.code(),
                        stderr,
                        after: started.elapsed(),
                    });
                }
                Ok(None) if started.elapsed() < within => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(None) => {
                    return Err(FixtureError::Timeout {
                        what: format!("the core-client container to end ({within:?})"),
                    });
                }
                Err(e) => return Err(FixtureError::io("waiting for core-client", e)),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Killing the compose tool would leave its container running.
            let _ = docker(&["rm", "-f", &self.name]);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Lines of `stderr` that the core-client wrote (it prefixes each with
/// `core-client:`), leaving out the compose tool's own.
pub fn client_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("core-client:"))
        .collect()
}
