//! The standard gRPC health protocol (`grpc.health.v1.Health/Check`) as the
//! relay answers it, and the probe that asks it.
//!
//! The relay answers for two kinds of service name:
//! - `""` (the empty name): the relay itself, serving until it shuts down;
//! - an exec-server id: serving while that exec-server is registered, and
//!   `NOT_FOUND` otherwise. A probe run beside an exec-server asks this to
//!   learn whether that exec-server is reachable through the relay.
//!
//! Only `Check` is answered; `Watch` is not offered.

use std::time::Duration;

pub use tonic_health::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The service name that asks about the relay itself.
pub const RELAY: &str = "";

/// Why a health probe did not find the service serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The URL is not a valid endpoint (or TLS cannot be set up for it).
    #[error("{0}")]
    BadUrl(#[from] crate::relay_link::EndpointError),
    /// No connection could be made (TLS failures included).
    #[error("cannot connect: {}", crate::relay_link::why(.0))]
    Connect(#[source] tonic::transport::Error),
    /// The probe took longer than its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server does not know the service (an exec-server id that is not
    /// registered).
    #[error("not registered")]
    NotFound,
    /// The server answered, but not `SERVING`.
    #[error("not serving (status {0})")]
    NotServing(i32),
    /// The call failed.
    #[error("health check failed: {0}")]
    Rpc(#[source] tonic::Status),
    /// The call failed for a reason of TLS (e.g. `http://` to a relay
    /// that serves TLS only).
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsFailure),
}

/// One round trip of `channel`'s link, as a health check of the server
/// itself takes (`None` if it fails or takes longer than `timeout`): a
/// call the server answers at once, with no work of its own to speak of.
pub async fn round_trip(
    channel: &tonic::transport::Channel,
    timeout: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    let request = pb::HealthCheckRequest {
        service: String::new(),
    };
    let mut client = HealthClient::new(channel.clone());
    match tokio::time::timeout(timeout, client.check(request)).await {
        Ok(Ok(_)) => Some(started.elapsed()),
        _ => None,
    }
}

/// Asks the gRPC server at `url` whether `service` is serving; `Ok(())` only
/// if it is. The whole probe (connect and call) is bounded by `timeout`.
/// An `https://` URL is probed over TLS, trusting `tls`.
pub async fn check(
    url: &str,
    service: &str,
    timeout: Duration,
    tls: &crate::tls::TlsSettings,
) -> Result<(), HealthError> {
    // One deadline for the whole probe (below): a per-request timeout
    // would surface as a cancelled call instead.
    let endpoint = crate::relay_link::endpoint(url, timeout, tls)?;
    let probe = async {
        let channel = endpoint.connect().await.map_err(HealthError::Connect)?;
        let request = pb::HealthCheckRequest {
            service: service.to_owned(),
        };
        match HealthClient::new(channel).check(request).await {
            Ok(response) => {
                let status = response.into_inner().status;
                if status == ServingStatus::Serving as i32 {
                    Ok(())
                } else {
                    Err(HealthError::NotServing(status))
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => Err(HealthError::NotFound),
            Err(s) if let Some(failure) = crate::tls::failure_in(&s) => {
                Err(HealthError::Tls(failure))
            }
            Err(s) => Err(HealthError::Rpc(s)),
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .map_err(|_| HealthError::Timeout(timeout))?
}
