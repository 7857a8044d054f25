//! `PeerCredit/Grants`: the stream on which a relay of the fleet that
//! forwards sessions here sends its credit for them (see
//! `peer_credit`). Only a member may send one (a fleet proof made for the
//! link), one per link, and at most `peer_credit`'s bound of links at
//! once; a message with too many grants ends the stream.

use std::pin::Pin;

use futures::Stream;
use proto::pb::tunnel::Credit;
use proto::pb::tunnel::peer_credit_server::PeerCredit;
use tonic::{Request, Response, Status, Streaming};

use crate::fleet::PROOF_HEADER;
use crate::peer_credit::{self, AttachError, MAX_GRANTS, PEER_LINK_HEADER};
use crate::service::{RelayState, header, verify_forward};

/// What the stream sends back: nothing, then its end.
type Nothing = Pin<Box<dyn Stream<Item = Result<Credit, Status>> + Send + 'static>>;

/// The grants service.
#[derive(Clone)]
pub(crate) struct PeerGrants {
    state: RelayState,
}

impl PeerGrants {
    /// The service over shared state.
    pub(crate) fn new(state: RelayState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl PeerCredit for PeerGrants {
    type GrantsStream = Nothing;

    async fn grants(
        &self,
        request: Request<Streaming<Credit>>,
    ) -> Result<Response<Self::GrantsStream>, Status> {
        let link: u64 = header(&request, PEER_LINK_HEADER)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!("missing or malformed {PEER_LINK_HEADER}"))
            })?;
        let proof = header(&request, PROOF_HEADER)
            .ok_or_else(|| Status::permission_denied("grants from a relay with no fleet proof"))?;
        verify_forward(&self.state, proof, &peer_credit::proof_subject(link))?;
        let gates = std::sync::Arc::clone(&self.state.gates);
        gates.attach(link).map_err(|e| match e {
            AttachError::Taken => Status::already_exists(e.to_string()),
            AttachError::Full => Status::resource_exhausted(e.to_string()),
        })?;
        let mut inbound = request.into_inner();
        let (done, ended) = tokio::sync::oneshot::channel::<()>();
        let cancel = self.state.tasks.token().clone();
        let span = tracing::info_span!("relay peer grants", link);
        self.state.tasks.spawn(span, async move {
            loop {
                let message = tokio::select! {
                    () = cancel.cancelled() => break,
                    m = inbound.message() => m,
                };
                match message {
                    Ok(Some(credit)) if credit.grants.len() <= MAX_GRANTS => {
                        gates.grant(link, &credit);
                    }
                    _ => break,
                }
            }
            gates.detach(link);
            drop(done);
        });
        // Ends with the task: the forwarding relay then knows its grants
        // reach nothing any more.
        let answer = futures::stream::unfold(Some(ended), |ended| async move {
            if let Some(ended) = ended {
                let _ = ended.await;
            }
            None
        });
        Ok(Response::new(Box::pin(answer)))
    }
}
