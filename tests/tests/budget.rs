//! The exec-server's budget for output its clients have not acknowledged,
//! over a long-lived session (an agent's, an embedder's): what a command
//! holds of it goes back once its client has its last events, however
//! many commands the session runs. Counts, never times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::stack::Stack;
use rex_client::{ExecSpec, ExitStatus};

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script])
}

/// A long-lived session (a client that does not resume, as the library's
/// default) runs command after command: each gives its floor back as it
/// ends, and what it holds once its client has acknowledged its last
/// events. (Both were kept until the session ended: after some sixty
/// commands a key's share was all floors, and every command of the key
/// was held to a quarter window in flight, 18 MiB/s across 50 ms instead
/// of 56.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_long_lived_session_give_back_their_share_of_the_exec_servers_budget() {
    const COMMANDS: usize = 80;
    let stack = Stack::start().await.unwrap();
    let client = stack.client();
    let budget = std::sync::Arc::clone(stack.server.handle.unacked());
    let window = proto::session::Limits::client().output_window;
    // What one finished command holds until its client's next message
    // acknowledges its last events.
    let floor = u64::from(window) / 4 + exec_server::credit::CHUNK_CREDIT;
    // Less than an eighth of the window each: acknowledged only with the
    // final event's acknowledgement.
    for i in 0..COMMANDS {
        let out = client
            .output(sh("head -c 300000 /dev/zero"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status, ExitStatus::Code(0), "command {i}");
        assert_eq!(out.stdout.len(), 300_000, "command {i}");
    }
    let settled = async {
        for _ in 0..200 {
            if budget.floors() <= floor && budget.used() <= floor {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(
        settled.await,
        "after {COMMANDS} commands the exec-server still sets aside {} bytes of floors and holds {} (one command's floor: {floor})",
        budget.floors(),
        budget.used()
    );
    client.close().await;
}
