//! The peer: `socat` relaying plain TCP between two loopback sockets. The
//! bench listens on one, writes into the other, and counts what arrives.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Bytes per write (and per read on the counting side).
pub(super) const WRITE: usize = 64 * 1024;
/// How long socat may take to listen and to connect through.
const SETUP_WAIT: Duration = Duration::from_secs(10);

const MISSING: &str = "socat not found: install it (scripts/bench.sh does)";

/// socat's version line; an error saying to install it if it cannot run.
pub(super) async fn version() -> Result<String, String> {
    let out = Command::new("socat")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|_| MISSING.to_owned())?;
    if !out.status.success() {
        return Err(MISSING.into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("socat version"));
    Ok(line.unwrap_or("socat").trim().to_owned())
}

/// The socat process; killed when dropped.
struct Socat(Child);

impl Socat {
    /// `socat TCP-LISTEN:<listen>,bind=127.0.0.1,reuseaddr TCP:127.0.0.1:<to>`.
    fn spawn(listen: u16, to: u16) -> Result<Self, String> {
        Command::new("socat")
            .arg(format!("TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr"))
            .arg(format!("TCP:127.0.0.1:{to}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map(Self)
            .map_err(|e| format!("socat: cannot start it: {e}"))
    }

    /// CPU time socat has used so far (it has one thread), while it runs.
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/schedstat", self.0.id()?)).ok()?;
        let nanos = stat.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(nanos))
    }

    async fn stop(mut self) {
        let _ = self.0.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.wait()).await;
    }
}

/// One pushed round of the peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pushed {
    /// First byte written until the last one was counted.
    pub took: Duration,
    /// socat's CPU time in the round, if it could be read.
    pub socat_cpu: Option<Duration>,
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("socat: no free port: {e}"))
}

/// Pushes `bytes` through a fresh socat.
pub(super) async fn push(bytes: u64) -> Result<Pushed, String> {
    let io = |what: &'static str| move |e: std::io::Error| format!("socat: {what}: {e}");
    let sink = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding the counting side"))?;
    let to = sink.local_addr().map_err(io("the counting side"))?.port();
    let listen = free_port()?;
    let mut socat = Socat::spawn(listen, to)?;
    let (accepted_tx, accepted) = oneshot::channel();
    let counter = tokio::spawn(count(sink, bytes, accepted_tx));
    let mut stream = connect(&mut socat, listen).await?;
    match tokio::time::timeout(SETUP_WAIT, accepted).await {
        Ok(Ok(())) => {}
        _ => return Err("socat: it did not connect through to the counting side".into()),
    }

    let started = Instant::now();
    let buf = vec![0x5au8; WRITE];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(WRITE, |l| l.min(WRITE));
        stream.write_all(&buf[..n]).await.map_err(io("writing"))?;
        left -= n as u64;
    }
    stream.shutdown().await.map_err(io("ending the write"))?;
    let counted = counter
        .await
        .map_err(|e| format!("socat: the counting task failed: {e}"))??;
    // socat is still there (the counting side holds its connection open).
    let socat_cpu = socat.cpu();
    drop(counted.stream);
    socat.stop().await;
    if counted.bytes != bytes {
        return Err(format!(
            "socat: {} bytes arrived, {bytes} were sent",
            counted.bytes
        ));
    }
    Ok(Pushed {
        took: counted.reached.saturating_duration_since(started),
        socat_cpu,
    })
}

/// Connects to socat's listening side, once it listens.
async fn connect(socat: &mut Socat, port: u16) -> Result<TcpStream, String> {
    let deadline = Instant::now() + SETUP_WAIT;
    loop {
        if let Ok(Some(status)) = socat.0.try_wait() {
            return Err(format!("socat: it exited ({status}) before listening"));
        }
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("socat: it did not listen on port {port}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// What the counting side read, and when it had all it expected.
struct Counted {
    bytes: u64,
    reached: Instant,
    /// The connection from socat, kept open so that socat is still there.
    stream: TcpStream,
}

/// Accepts socat's connection and reads it to its end.
async fn count(
    sink: TcpListener,
    expected: u64,
    accepted: oneshot::Sender<()>,
) -> Result<Counted, String> {
    let (mut stream, _) = match tokio::time::timeout(SETUP_WAIT, sink.accept()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(format!("socat: accepting its connection: {e}")),
        Err(_) => return Err("socat: it did not connect to the counting side".into()),
    };
    let _ = accepted.send(());
    let mut buf = vec![0u8; WRITE];
    let (mut bytes, mut reached) = (0u64, None);
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("socat: reading: {e}"))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        if bytes >= expected && reached.is_none() {
            reached = Some(Instant::now());
        }
    }
    Ok(Counted {
        bytes,
        reached: reached.unwrap_or_else(Instant::now),
        stream,
    })
}
