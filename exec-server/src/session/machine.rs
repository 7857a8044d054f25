//! The session machine as this exec-server runs it: what each message
//! hands back once it has left.

use opentelemetry::global::BoxedSpan;
use proto::session::ServerSession;

/// What a marked message hands back once it has left: the spans that end
/// with it.
pub(super) type Tag = Vec<Leaving>;

/// A span that ends when its message has left, and the call whose summary
/// takes its stage then (if the call is still running: once its final
/// event has gone, its summary already holds the stage, open).
pub(super) struct Leaving {
    pub(super) span: BoxedSpan,
    pub(super) call: Option<u64>,
}

pub(super) type Machine = ServerSession<Tag>;
