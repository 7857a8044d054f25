//! A small client of etcd's v3 API: what the directory needs (one lease and
//! its keep-alive, puts under it, a delete that only removes this relay's
//! own key, a paged read of a prefix and a watch from a revision), each call
//! bounded in time.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

mod pb {
    #![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

use pb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    lease_client::LeaseClient,
    request_op,
    watch_client::WatchClient,
    watch_request,
};
pub(crate) use pb::{WatchResponse, event::EventType};

/// Keys read per page of a snapshot.
const PAGE: i64 = 1000;
/// Most operations in one transaction (etcd's default `--max-txn-ops`).
pub(crate) const MAX_TXN_OPS: usize = 128;
/// Largest response accepted (a page of entries is far less).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Why a call to the store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EtcdError {
    /// No endpoint could be reached.
    #[error("cannot reach etcd at {endpoints}: {why}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last endpoint's failure.
        why: String,
    },
    /// An endpoint is not a URL this client dials.
    #[error("etcd endpoint {0:?}: {1}")]
    Endpoint(String, #[source] proto::relay_link::EndpointError),
    /// A call failed.
    #[error("etcd {op}: {source}")]
    Call {
        /// The call.
        op: &'static str,
        /// Its status.
        #[source]
        source: tonic::Status,
    },
    /// A call took longer than its bound.
    #[error("etcd {0}: no answer in time")]
    Timeout(&'static str),
    /// The store refused a lease.
    #[error("etcd refused a lease: {0}")]
    Lease(String),
    /// The lease is gone (expired or revoked).
    #[error("the directory lease expired")]
    LeaseLost,
    /// A stream the store should keep open ended.
    #[error("etcd ended the {0} stream")]
    Ended(&'static str),
}

/// A connection to one reachable etcd endpoint.
#[derive(Clone)]
pub(crate) struct Etcd {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    timeout: Duration,
}

/// A live keep-alive of one lease: send on `tx`, answers on `rx`.
pub(crate) struct KeepAlive {
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    rx: Streaming<pb::LeaseKeepAliveResponse>,
    id: i64,
}

/// A live watch of a prefix.
pub(crate) struct Watch {
    // Dropping it ends the request stream, which cancels the watch.
    _tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

/// The end of the key range that covers every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

async fn bounded<T>(
    op: &'static str,
    within: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(within, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(source)) => Err(EtcdError::Call { op, source }),
        Err(_) => Err(EtcdError::Timeout(op)),
    }
}

impl Etcd {
    /// Connects to the first endpoint that answers (each within
    /// `timeout`, which also bounds every later call).
    pub(crate) async fn connect(
        endpoints: &[String],
        tls: &proto::tls::TlsSettings,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        let mut why = String::from("no endpoint given");
        for url in endpoints {
            let endpoint = proto::relay_link::endpoint(url, timeout, tls)
                .map_err(|e| EtcdError::Endpoint(url.clone(), e))?;
            match endpoint.connect().await {
                Ok(channel) => return Ok(Self::over(channel, timeout)),
                Err(e) => why = format!("{url}: {}", proto::relay_link::why(&e)),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: endpoints.join(","),
            why,
        })
    }

    fn over(channel: Channel, timeout: Duration) -> Self {
        Self {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
            timeout,
        }
    }

    /// A new lease of `ttl`; its id.
    pub(crate) async fn grant(&mut self, ttl: Duration) -> Result<i64, EtcdError> {
        let request = LeaseGrantRequest {
            ttl: i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX),
            id: 0,
        };
        let granted = bounded("lease grant", self.timeout, self.lease.lease_grant(request)).await?;
        if !granted.error.is_empty() || granted.id == 0 {
            return Err(EtcdError::Lease(granted.error));
        }
        Ok(granted.id)
    }

    /// Revokes a lease: its keys go at once.
    pub(crate) async fn revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        let request = LeaseRevokeRequest { id };
        bounded(
            "lease revoke",
            self.timeout,
            self.lease.lease_revoke(request),
        )
        .await?;
        Ok(())
    }

    /// Opens the keep-alive stream of lease `id`.
    pub(crate) async fn keep_alive(&mut self, id: i64) -> Result<KeepAlive, EtcdError> {
        let (tx, requests) = mpsc::channel(1);
        // The store answers the call once it has a request to answer.
        tx.try_send(LeaseKeepAliveRequest { id })
            .map_err(|_| EtcdError::Ended("lease keep-alive"))?;
        let rx = bounded(
            "lease keep-alive",
            self.timeout,
            self.lease.lease_keep_alive(ReceiverStream::new(requests)),
        )
        .await?;
        Ok(KeepAlive { tx, rx, id })
    }

    /// Writes every one of `entries` (key, value; no key twice) under lease
    /// `lease`, in one transaction: at most [`MAX_TXN_OPS`].
    pub(crate) async fn put_all(
        &mut self,
        entries: Vec<(String, Vec<u8>)>,
        lease: i64,
    ) -> Result<(), EtcdError> {
        let success = entries
            .into_iter()
            .take(MAX_TXN_OPS)
            .map(|(key, value)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.into_bytes(),
                    value,
                    lease,
                })),
            })
            .collect();
        let request = TxnRequest {
            compare: Vec::new(),
            success,
            failure: Vec::new(),
        };
        bounded("put", self.timeout, self.kv.txn(request)).await?;
        Ok(())
    }

    /// Deletes `key` only if it is held under `lease` (another relay may
    /// have written it since); whether it was.
    pub(crate) async fn delete_if_leased(
        &mut self,
        key: &str,
        lease: i64,
    ) -> Result<bool, EtcdError> {
        let key = key.as_bytes().to_vec();
        let request = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Lease as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::Lease(lease)),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key,
                        range_end: Vec::new(),
                    },
                )),
            }],
            failure: Vec::new(),
        };
        let answer = bounded("delete", self.timeout, self.kv.txn(request)).await?;
        Ok(answer.succeeded)
    }

    /// Every key under `prefix` with its value, read page by page at one
    /// revision; and that revision.
    pub(crate) async fn snapshot(
        &mut self,
        prefix: &str,
    ) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>)>), EtcdError> {
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut all = Vec::new();
        loop {
            let request = RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: PAGE,
                revision,
            };
            let page = bounded("range", self.timeout, self.kv.range(request)).await?;
            if revision == 0 {
                revision = page.header.map_or(0, |h| h.revision);
            }
            let more = page.more;
            for kv in page.kvs {
                from = kv.key.clone();
                all.push((kv.key, kv.value));
            }
            if !more {
                return Ok((revision, all));
            }
            // The next page starts just after the last key.
            from.push(0);
        }
    }

    /// Watches every key under `prefix` from `start_revision` on.
    pub(crate) async fn watch(
        &mut self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let (tx, requests) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    start_revision,
                    progress_notify: true,
                },
            )),
        };
        tx.try_send(create).map_err(|_| EtcdError::Ended("watch"))?;
        let rx = bounded(
            "watch",
            self.timeout,
            self.watch.watch(ReceiverStream::new(requests)),
        )
        .await?;
        Ok(Watch { _tx: tx, rx })
    }
}

impl KeepAlive {
    /// Asks for the lease to be renewed.
    pub(crate) async fn renew(&self) -> Result<(), EtcdError> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| EtcdError::Ended("lease keep-alive"))
    }

    /// The next answer: `Ok` while the lease lives.
    pub(crate) async fn answer(&mut self) -> Result<(), EtcdError> {
        match self.rx.message().await {
            Ok(Some(a)) if a.ttl > 0 => Ok(()),
            Ok(Some(_)) => Err(EtcdError::LeaseLost),
            Ok(None) => Err(EtcdError::Ended("lease keep-alive")),
            Err(source) => Err(EtcdError::Call {
                op: "lease keep-alive",
                source,
            }),
        }
    }
}

impl Watch {
    /// The next batch of events (or notice).
    pub(crate) async fn next(&mut self) -> Result<WatchResponse, EtcdError> {
        match self.rx.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(EtcdError::Ended("watch")),
            Err(source) => Err(EtcdError::Call {
                op: "watch",
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_just_past_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/rex/servers/"), b"/rex/servers0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
