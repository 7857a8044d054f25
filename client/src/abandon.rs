//! Giving a session up at the exec-server. When this end can no longer go
//! on with a session whose calls may still be running there (a record
//! that failed to open, as when a relay tampers with the link; a resume
//! given up; the caller gone while the link was down), the exec-server
//! would keep those processes for its whole resume grace. Instead a fresh
//! Noise handshake is made, through each way to the exec-server in turn,
//! and the session is resumed with `abandon` set: proved with its secret,
//! so nobody else can end it. The exec-server ends its processes at once,
//! and their records say their client gave them up.
//!
//! All of it is bounded by [`GIVE_UP_WITHIN`]: the calls' callers wait
//! that long at most for their failure.

use std::sync::Arc;
use std::time::Duration;

use proto::driver::{Delivery, Endpoint, Wake, drive};
use proto::limits::MAX_GRPC_MESSAGE;
use proto::pb::tunnel::tunnel_client::TunnelClient;
use proto::routing::SERVER_ID_HEADER;
use proto::session::{Abandonment, ClientEvent, ClientSession, Now};
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;

use crate::config::{ClientConfig, Target};
use crate::connect::LINK_QUEUE;
use crate::outbound::{Drained, Outbound};

/// How long giving a session up may take in all.
pub(crate) const GIVE_UP_WITHIN: Duration = Duration::from_secs(5);

type Giver = ClientSession<()>;

/// Gives up the session `abandonment` names at its exec-server; whether
/// the exec-server answered (its processes have been told to end, or had
/// ended already).
pub(crate) async fn give_up(config: &ClientConfig, abandonment: Abandonment) -> bool {
    let calls = abandonment.calls();
    let told = tokio::time::timeout(GIVE_UP_WITHIN, async {
        for target in config.targets() {
            if attempt(config, target, abandonment.clone()).await {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    tracing::debug!(
        calls,
        told,
        "gave up a session whose calls the exec-server may still run"
    );
    told
}

/// One attempt through `target`.
async fn attempt(config: &ClientConfig, target: &Target, abandonment: Abandonment) -> bool {
    let Ok(endpoint) =
        proto::relay_link::client_endpoint(target.url(), config.connect_timeout, &config.tls)
    else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let now = Now::system();
    let Ok(mut machine) = Giver::abandon(
        &config.key,
        &config.server,
        config.limits(),
        abandonment,
        now,
    ) else {
        return false;
    };
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    while let Some(t) = machine.poll_transmit(now) {
        let _ = tx.try_send(Ok(t.frame));
    }
    let mut request = tonic::Request::new(Outbound::new(rx, Arc::new(Drained::default())));
    if let Ok(v) = MetadataValue::try_from(config.server.server_id().as_str()) {
        request.metadata_mut().insert(SERVER_ID_HEADER, v);
    }
    let mut client = TunnelClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let Ok(response) = client.open(request).await else {
        return false;
    };
    let (_, told) = drive(
        machine,
        Told(false),
        response.into_inner(),
        tx,
        std::future::pending(),
    )
    .await;
    told.0
}

/// The giving-up machine's endpoint: no local input; notes the answer.
struct Told(bool);

impl Endpoint<Giver> for Told {
    type Input = ();

    fn wait(
        &mut self,
        _accepting: bool,
        _blocked: bool,
    ) -> impl std::future::Future<Output = Wake<()>> + Send {
        std::future::pending()
    }

    fn apply(&mut self, _machine: &mut Giver, (): (), _now: Now) {}

    fn deliver(
        &mut self,
        _machine: &mut Giver,
        event: ClientEvent,
        _now: Now,
    ) -> Delivery<ClientEvent> {
        if let ClientEvent::Abandoned { .. } = event {
            self.0 = true;
        }
        Delivery::Taken
    }

    fn transmitted(&mut self, _done: Vec<()>, _sent: u64, _now: Now) {}
}
