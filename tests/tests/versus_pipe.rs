//! The `pipe` benchmark scenario end to end with a tiny payload: both
//! sides run, count (and, for ours, check) every byte, and report one
//! throughput per round.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use integration_tests::versus::pipe::{self, PipeOptions};
use integration_tests::versus::{Target, Unit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_pipes_deliver_every_byte() {
    let socat = std::process::Command::new("socat").arg("-V").output();
    if !socat.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: socat is not installed");
        return;
    }
    // Not a multiple of the record size: the last envelope is short.
    let options = PipeOptions {
        rounds: 2,
        bytes: 1024 * 1024 + 3,
    };
    let c = pipe::run(&options).await.unwrap();
    assert_eq!((c.id, c.unit), ("pipe", Unit::MibPerSec));
    assert_eq!(c.target, Target::AtLeast(1.0));
    let peer = c.peer.as_ref().unwrap();
    for series in [&c.ours, peer] {
        assert_eq!(series.values.len(), 2, "{}", series.label);
        assert!(series.values.iter().all(|v| v.is_finite() && *v > 0.0));
        assert!(series.p99.is_empty());
    }
    assert!(c.notes.iter().any(|n| n.contains("Noise_IK_25519")));
}
