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

use proto::driver::{Delivery, Endpoint, Wake, drive, first_flight};
use proto::session::{Abandonment, ClientEvent, ClientSession, Now};

use crate::config::{ClientConfig, Target};
use crate::outbound::Drained;
use crate::transport_tasks::TransportTasks;
use crate::tunnel;

/// How long giving a session up may take in all.
pub(crate) const GIVE_UP_WITHIN: Duration = Duration::from_secs(5);

type Giver = ClientSession<()>;

/// Gives up the session `abandonment` names at its exec-server; whether
/// the exec-server answered (its processes have been told to end, or had
/// ended already).
pub(crate) async fn give_up(
    config: &ClientConfig,
    transport: &TransportTasks,
    abandonment: Abandonment,
) -> bool {
    let calls = abandonment.calls();
    let told = tokio::time::timeout(GIVE_UP_WITHIN, async {
        for target in config.targets() {
            if attempt(config, transport, target, abandonment.clone()).await {
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
async fn attempt(
    config: &ClientConfig,
    transport: &TransportTasks,
    target: &Target,
    abandonment: Abandonment,
) -> bool {
    let Ok(channel) = tunnel::channel(config, target, transport).await else {
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
    let mut told = Told(false);
    let first = first_flight(&mut machine, &mut told, now);
    let server_id = config.server.server_id();
    let drained = Arc::new(Drained::default());
    let Ok((inbound, outbound)) = tunnel::open(channel, &first, &server_id, drained, None).await
    else {
        return false;
    };
    let (_, told) = drive(machine, told, inbound, outbound, std::future::pending()).await;
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
