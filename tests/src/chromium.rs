//! A real browser for the tests: Debian's `chromium`, headless, with a
//! profile of its own, its background traffic turned off, and every
//! request it would make sent to a proxy the test owns ([`Listener`]), so
//! that a test can tell whether a page made any.
//!
//! chromium is not everywhere: [`available`] says whether it can be run
//! here, and [`REQUIRE`] names the variable that makes its absence a
//! failure rather than a skip (CI sets it).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{FixtureError, Result};

/// Set to `1` to fail, rather than skip, the tests that need chromium
/// when it is missing.
pub const REQUIRE: &str = "REX_REQUIRE_CHROMIUM";

/// The browser's program.
const PROGRAM: &str = "chromium";

/// Where the browser's own services are sent: nowhere (the discard port
/// on loopback, which nothing serves here and the proxy never sees).
const NOWHERE: &str = "http://127.0.0.1:9/";

/// How long one browser run may take before it is killed (only so that a
/// test cannot hang; generous, the machine may be busy).
const DEADLINE: Duration = Duration::from_secs(300);

/// Whether chromium can be run. When it cannot, prints a skip notice for
/// `test` and returns false, unless [`REQUIRE`] is `1`: then it panics.
pub fn available(test: &str) -> bool {
    let found = Command::new(PROGRAM)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    crate::required::present(test, found, "chromium", REQUIRE)
}

/// A TCP listener on loopback that counts the connections made to it (the
/// browser's proxy: any request the browser makes arrives here), and
/// closes each at once.
pub struct Listener {
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts listening on `127.0.0.1:0`.
    pub fn start() -> Result<Listener> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| FixtureError::io("binding the proxy listener", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| FixtureError::io("reading the proxy listener's address", e))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| FixtureError::io("making the proxy listener non-blocking", e))?;
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        drop::<TcpStream>(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Listener {
            port,
            connections,
            stop,
            thread: Some(thread),
        })
    }

    /// The proxy URL to give the browser.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many connections it has taken.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Headless chromium with a profile in `dir`, its requests sent to
/// `proxy`, and what it does on its own (updates, sync, metrics,
/// translation, ...) turned off.
pub fn headless(dir: &Path, proxy: &Listener) -> Command {
    let mut cmd = Command::new(PROGRAM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--metrics-recording-only",
        "--disable-domain-reliability",
        "--disable-breakpad",
        "--disable-features=MediaRouter,OptimizationHints,Translate,NetworkTimeServiceQuerying",
    ])
    // Some of the browser's own services ignore the switches above (the
    // account list of its sign-in, component and extension update checks,
    // seen with chromium 156): their servers are pointed at a closed port
    // on loopback, which the proxy never sees (loopback bypasses it).
    .args(
        [
            "--component-updater=url-source=",
            "--gaia-url=",
            "--google-apis-url=",
            "--lso-url=",
            "--apps-gallery-update-url=",
        ]
        .map(|flag| format!("{flag}{NOWHERE}")),
    )
    .arg(format!("--proxy-server={}", proxy.proxy_url()))
    .arg(format!("--user-data-dir={}", dir.join("profile").display()))
    // Nothing of the user's is read or written.
    .env("HOME", dir)
    .env("XDG_CONFIG_HOME", dir.join("config"))
    .env("XDG_CACHE_HOME", dir.join("cache"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end (killed past a generous deadline, an error) and
/// returns its output; an error if it failed.
pub fn run(mut cmd: Command) -> Result<Output> {
    let what = format!("{PROGRAM} {:?}", cmd.get_args().last());
    let mut child = cmd
        .spawn()
        .map_err(|e| FixtureError::io(format!("spawning {what}"), e))?;
    let started = Instant::now();
    // The output is read on threads so that a full pipe cannot stall it.
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = read(stdout.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let err = read(stderr.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(FixtureError::Timeout {
                    what: format!("{what} to finish ({DEADLINE:?})"),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(FixtureError::io(format!("waiting for {what}"), e)),
        }
    };
    let output = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    if !output.status.success() {
        return Err(FixtureError::output(
            what,
            format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    Ok(output)
}
