//! A broken link as the library's callers see it: with
//! `ClientConfig::resume_events`, a call hears `Reconnecting` when its
//! session's link breaks and `Resumed` when it is back, between the output
//! before and after, which arrives whole; the call counts its resume.
//! Without them, a resume is only a pause. Relay, exec-server and client
//! run in this process; the client's link goes through a forwarder that
//! cuts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use integration_tests::proxy::Cutter;
use integration_tests::stack::{TestRelay, TestServer};
use proto::keys::StaticKeypair;
use rex_client::{Client, ClientConfig, Event, ExecSpec, ExitStatus, Target};

/// Bounds every wait (never a measure of speed).
const PATIENCE: Duration = Duration::from_secs(120);

/// Prints numbered lines (blocks of 1000) until the file `flag` exists,
/// then exits 3.
fn until(flag: &std::path::Path) -> ExecSpec {
    ExecSpec::new([
        "sh".to_owned(),
        "-c".to_owned(),
        format!(
            "i=0; while [ ! -e '{}' ]; do seq $((i*1000)) $((i*1000+999)); i=$((i+1)); \
             sleep 0.02; done; exit 3",
            flag.display()
        ),
    ])
}

/// Every number from 0 once and in order, in whole blocks.
fn assert_numbers(out: &[u8]) {
    let text = std::str::from_utf8(out).unwrap();
    let mut next = 0u64;
    for line in text.lines() {
        assert_eq!(line, next.to_string(), "line {next} missing or repeated");
        next += 1;
    }
    assert!(next > 0 && next.is_multiple_of(1000), "{next} lines");
}

async fn next(run: &mut rex_client::Execution) -> Event {
    tokio::time::timeout(PATIENCE, run.next())
        .await
        .expect("an event in time")
        .expect("the call has not ended")
}

/// How the client's link breaks.
#[derive(Clone, Copy)]
enum Break {
    /// Its connection is closed: every end sees it go.
    Cut,
    /// Nothing passes any more but the connection stays open: the client
    /// finds it dead (its keepalives go unanswered) while the relay and
    /// the exec-server still hold the session on it.
    Freeze,
}

/// Runs a call across a break of the client's link; returns the events
/// other than output, the output, and the call's resumes.
async fn across_a_cut(resume_events: bool) -> (Vec<Event>, Vec<u8>, u32) {
    across(resume_events, Break::Cut).await
}

async fn across(resume_events: bool, fault: Break) -> (Vec<Event>, Vec<u8>, u32) {
    let relay = TestRelay::start().await.unwrap();
    let cutter = Cutter::start(relay.addr).await.unwrap();
    let client_key = StaticKeypair::generate().unwrap();
    let server = TestServer::start(Some(relay.url()), false, &[&client_key])
        .await
        .unwrap();
    let mut config =
        ClientConfig::new(client_key, server.key.public(), Target::Relay(cutter.url()));
    config.resume = Some(PATIENCE);
    config.resume_events = resume_events;
    // A frozen link is found dead after three keepalives unanswered.
    config.keepalive = Duration::from_millis(500);
    let client = Client::new(config);
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let mut run = client.exec(until(&flag)).await.unwrap();
    let mut notices = Vec::new();
    let mut out = Vec::new();
    let mut cut = false;
    let mut after_cut = 0usize;
    let status = loop {
        match next(&mut run).await {
            Event::Stdout(d) => {
                out.extend_from_slice(&d);
                if !cut && out.len() > 50_000 {
                    cut = true;
                    match fault {
                        Break::Cut => cutter.cut(),
                        Break::Freeze => cutter.freeze(),
                    }
                } else if cut {
                    after_cut += d.len();
                    // Well past anything that was on its way before the
                    // cut: the session is back; the command may end.
                    if after_cut > 200_000 && !flag.exists() {
                        std::fs::write(&flag, b"").unwrap();
                    }
                }
            }
            Event::Stderr(d) => panic!("stderr: {d:?}"),
            Event::Exited(status) => break status,
            Event::Failed(f) => panic!("the call failed: {f}"),
            e @ Event::Started { .. } => notices.push(e),
            e @ (Event::Reconnecting | Event::Resumed) => notices.push(e),
        }
    };
    assert_eq!(status, ExitStatus::Code(3));
    assert_eq!(cutter.cuts(), 1);
    (notices, out, run.resumes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_hears_its_link_break_and_come_back_and_gets_every_byte() {
    let (notices, out, resumes) = across_a_cut(true).await;
    assert!(
        matches!(
            notices.as_slice(),
            [Event::Started { .. }, Event::Reconnecting, Event::Resumed]
        ),
        "{notices:?}"
    );
    assert_numbers(&out);
    assert_eq!(resumes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_events_a_resume_is_only_a_pause() {
    let (notices, out, resumes) = across_a_cut(false).await;
    assert!(
        matches!(notices.as_slice(), [Event::Started { .. }]),
        "{notices:?}"
    );
    assert_numbers(&out);
    assert_eq!(resumes, 1, "counted all the same");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_finds_its_link_dead_first_takes_its_session_over() {
    // The exec-server still holds the session on the old link when the
    // client comes back over a new one: it gives the old one up for it.
    let (notices, out, resumes) = across(true, Break::Freeze).await;
    assert!(
        matches!(
            notices.as_slice(),
            [Event::Started { .. }, Event::Reconnecting, Event::Resumed]
        ),
        "{notices:?}"
    );
    assert_numbers(&out);
    assert_eq!(resumes, 1);
}
