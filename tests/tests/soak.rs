//! The soak driver (`scripts/soak.sh`) for a minute with a few clients:
//! the relay killed and started again, the exec-server's link cut twice,
//! the flood from 127.0.0.2 on. Asserts counts only: commands of every
//! kind completed and checked, none lost, the faults made and sessions
//! resumed through them. Never speed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::soak::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_mixed_commands_under_faults_loses_nothing() {
    let mut options = Options::minutes(1);
    options.clients = 4;
    options.bulk_bytes = 64 * 1024;
    options.stdin_bytes = 64 * 1024;
    options.pause = Duration::from_millis(200);
    options.relay_every = Duration::from_secs(25);
    options.cut_every = Duration::from_secs(20);
    options.sample_every = Duration::from_secs(5);
    let report = soak::run(options).await.unwrap();
    let said = report.lines().join("\n");
    eprintln!("{said}");
    assert_eq!(report.lost, 0, "{said}");
    assert!(
        report.completed.iter().all(|&n| n > 0),
        "every kind of command completed: {said}"
    );
    assert!(report.relay_restarts >= 1, "{said}");
    assert!(report.cuts >= 1, "{said}");
    // Every client's session was cut by the relay's restart and came back.
    assert!(report.resumes >= 1, "{said}");
    assert_eq!(report.expired, 0, "{said}");
    assert!(
        report.memory.iter().all(|m| !m.samples.is_empty()),
        "{said}"
    );
}
