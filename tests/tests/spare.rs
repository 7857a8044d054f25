//! The relay ↔ exec-server leg costs no round trip: a registered
//! exec-server keeps a spare `Accept` stream at its relay, and a client's
//! `Open` is spliced to it at once (no announcement to wait on); the next
//! spare is opened as soon as one is taken. Only the registration that
//! proved its key can leave spares (its token); anyone else is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use integration_tests::binaries::{self, ProcStack};
use proto::keys::PublicKey;
use proto::pb::tunnel::Frame;
use proto::pb::tunnel::registry_client::RegistryClient;
use proto::routing::{SERVER_ID_HEADER, SPARE_TOKEN_HEADER};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

const PATIENCE: Duration = Duration::from_secs(120);

#[test]
fn each_open_is_spliced_to_a_spare_stream() {
    let stack = ProcStack::start(&[("RUST_LOG", "info,relay=debug")]).unwrap();
    for n in 0..3 {
        let out = stack
            .exec(&["sh", "-c", &format!("echo run {n}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("run {n}\n"));
        // Each session went to a spare, none was announced: the spare
        // taken by one is replaced before the next comes.
        let line = binaries::recv_line(
            &stack.relay.stderr_lines,
            |l| l.contains("spliced to a spare stream") || l.contains("announced"),
            "the relay's word on the session",
            PATIENCE,
        )
        .unwrap();
        assert!(
            line.contains("spliced to a spare stream"),
            "session {n}: {line}"
        );
    }
}

#[tokio::test]
async fn a_spare_needs_its_registrations_token() {
    let stack = ProcStack::start(&[]).unwrap();
    let server_id = stack.server_pub.parse::<PublicKey>().unwrap().server_id();
    let channel = tonic::transport::Endpoint::from_shared(stack.relay_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (token, code) in [
        (
            "00112233445566778899aabbccddeeff",
            tonic::Code::PermissionDenied,
        ),
        ("not-a-token", tonic::Code::InvalidArgument),
    ] {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Frame>(1);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let md = request.metadata_mut();
        md.insert(
            SERVER_ID_HEADER,
            MetadataValue::try_from(server_id.as_str()).unwrap(),
        );
        md.insert(SPARE_TOKEN_HEADER, MetadataValue::try_from(token).unwrap());
        let refused = RegistryClient::new(channel.clone())
            .accept(request)
            .await
            .expect_err("a spare with a token the relay never gave is refused");
        assert_eq!(refused.code(), code, "{refused}");
    }
    // The real exec-server's spares still serve.
    let out = stack.exec(&["true"]).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
