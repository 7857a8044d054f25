//! The `scale` benchmark scenario, small: 20 idle sessions through a relay
//! process and 5 concurrent execs, every output checked byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use integration_tests::versus::{Target, Unit, scale};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_holds_sessions_and_measures_the_relay_per_session() {
    let options = scale::ScaleOptions {
        rounds: 1,
        idle_sessions: 20,
        concurrent_execs: 5,
        output_bytes: 256 * 1024,
    };
    // An output that is not byte-exact, a failed exec or a session the
    // relay did not end makes this an error.
    let c = scale::run(&options).await.unwrap();
    assert_eq!(c.id, "scale");
    assert_eq!(c.unit, Unit::KibPerSession);
    assert_eq!(c.target, Target::AtMost(64.0));
    assert!(c.peer.is_none());
    assert_eq!(c.ours.values.len(), 1);
    let per_session = c.ours.values[0];
    // Each session holds a TCP connection and two HTTP/2 streams at the
    // relay: tens of KiB, never nothing, never megabytes.
    assert!(
        per_session > 1.0 && per_session < 1024.0,
        "{per_session} KiB per session; notes: {:?}",
        c.notes
    );
    assert!(
        c.notes.iter().any(|n| n.contains("byte-exact")),
        "{:?}",
        c.notes
    );
}
