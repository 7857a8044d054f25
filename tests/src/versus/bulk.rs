//! The bulk scenarios: `head -c N /dev/zero` streamed to the caller through
//! the relay, against ssh (`-c aes128-gcm@openssh.com`) — `bulk` — and
//! against our client connected to the exec-server directly — `relay tax`.
//! The three paths run in the same rounds, their order rotating.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rex_client::{Client, Event, ExecSpec, ExitStatus};
use tokio::io::AsyncReadExt;

use super::rounds::throughputs;
use super::ssh::Ssh;
use super::{Comparison, Target, Unit};

/// Bytes of each warm-up run.
const WARMUP_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Relay,
    Ssh,
    Direct,
}

/// Whether every byte of `data` is zero (written to vectorise: no early
/// exit).
fn all_zero(data: &[u8]) -> bool {
    data.iter().fold(0u8, |acc, b| acc | b) == 0
}

fn command(bytes: u64) -> String {
    format!("head -c {bytes} /dev/zero")
}

/// Streams `bytes` zeros from `client`; the time from the call to the exit,
/// after checking the count, the content and the exit status.
pub(super) async fn ours(client: &Client, bytes: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut run = client
        .exec(ExecSpec::new(["sh", "-c", &command(bytes)]))
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let (mut got, mut zeros, mut status) = (0u64, true, None);
    while let Some(event) = run.next().await {
        match event {
            Event::Stdout(chunk) => {
                got += chunk.len() as u64;
                zeros &= all_zero(&chunk);
            }
            Event::Exited(s) => status = Some(s),
            Event::Failed(f) => return Err(format!("bulk exec failed: {f}")),
            Event::Started { .. } | Event::Stderr(_) | Event::Reconnecting | Event::Resumed => {}
        }
    }
    let took = started.elapsed();
    if got == bytes && zeros && status == Some(ExitStatus::Code(0)) {
        Ok(took)
    } else {
        Err(format!(
            "bulk exec went wrong: {got} of {bytes} bytes, all zero: {zeros}, {status:?}"
        ))
    }
}

/// The same through ssh with AES-128-GCM.
pub(super) async fn ssh_bulk(ssh: &Ssh, bytes: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = ssh
        .command(None)
        .args(["-c", "aes128-gcm@openssh.com"])
        .arg(ssh.destination())
        .arg(command(bytes))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("ssh: no stdout pipe")?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut got, mut zeros) = (0u64, true);
    loop {
        let n = stdout
            .read(&mut buf)
            .await
            .map_err(|e| format!("ssh stdout: {e}"))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        zeros &= all_zero(&buf[..n]);
    }
    let status = child.wait().await.map_err(|e| format!("ssh: {e}"))?;
    let took = started.elapsed();
    if got == bytes && zeros && status.success() {
        Ok(took)
    } else {
        Err(format!(
            "ssh bulk went wrong: {got} of {bytes} bytes, all zero: {zeros}, {status}"
        ))
    }
}

/// `bulk` (relay against ssh, target ≥ 2.0) and `relay tax` (relay against
/// direct, target ≥ 0.95), from the same rounds.
pub async fn bulk_and_relay_tax(
    rounds: usize,
    bytes: u64,
    relay: &Client,
    direct: &Client,
    ssh: &Ssh,
) -> Result<(Comparison, Comparison), String> {
    let sides = [
        (Path::Relay, "through the relay"),
        (Path::Ssh, "ssh -c aes128-gcm@openssh.com"),
        (Path::Direct, "client connected to the exec-server directly"),
    ];
    let series = throughputs(rounds, bytes, &sides, async |path, warm| {
        let n = if warm { WARMUP_BYTES.min(bytes) } else { bytes };
        match path {
            Path::Relay => ours(relay, n).await,
            Path::Ssh => ssh_bulk(ssh, n).await,
            Path::Direct => ours(direct, n).await,
        }
    })
    .await?;
    let [relayed, ssh_side, direct_side] =
        <[_; 3]>::try_from(series).map_err(|_| "bulk: expected three series".to_owned())?;
    let note = format!(
        "`head -c {bytes} /dev/zero` ({} MiB) per run; every byte counted and checked",
        bytes / (1024 * 1024)
    );
    let bulk = Comparison {
        id: "bulk",
        unit: Unit::MibPerSec,
        ours: relayed.clone(),
        peer: Some(ssh_side),
        target: Target::AtLeast(2.0),
        notes: vec![note.clone()],
    };
    let tax = Comparison {
        id: "relay tax",
        unit: Unit::MibPerSec,
        ours: relayed,
        peer: Some(direct_side),
        target: Target::AtLeast(0.95),
        notes: vec![format!("{note}; same rounds as `bulk`")],
    };
    Ok((bulk, tax))
}
