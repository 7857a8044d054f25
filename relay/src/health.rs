//! The relay's answers to the gRPC health protocol (see [`proto::health`]):
//! the relay itself serves until shutdown starts; an exec-server id serves
//! while that exec-server is registered.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::health::pb::health_check_response::ServingStatus;
use proto::health::pb::health_server::Health;
use proto::health::pb::{HealthCheckRequest, HealthCheckResponse};
use proto::routing::is_server_id;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::registry::Registry;

/// `grpc.health.v1.Health` for the relay.
pub(crate) struct RelayHealth {
    registry: Arc<Registry>,
    shutdown: CancellationToken,
}

impl RelayHealth {
    /// Answers from `registry`; reports not serving once `shutdown` is cancelled.
    pub(crate) fn new(registry: Arc<Registry>, shutdown: CancellationToken) -> Self {
        Self { registry, shutdown }
    }

    fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if self.shutdown.is_cancelled() {
            return Ok(ServingStatus::NotServing);
        }
        if service == proto::health::RELAY {
            return Ok(ServingStatus::Serving);
        }
        if !is_server_id(service) {
            return Err(Status::invalid_argument(
                "service must be empty (the relay) or an exec-server id",
            ));
        }
        if self.registry.is_registered(service) {
            Ok(ServingStatus::Serving)
        } else {
            Err(Status::not_found(
                "no exec-server with this id is registered",
            ))
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for RelayHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service)?;
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("only Check is offered"))
    }
}
