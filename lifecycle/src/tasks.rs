//! Tasks: every task is spawned through [`Tasks::spawn`], which tracks it
//! (so shutdown can wait for it), runs it inside a `tracing` span (so its
//! logs, and with a `tracing-opentelemetry` layer its warnings, land on that
//! span), and attaches the OpenTelemetry context current at the spawn (so
//! spans it starts without an explicit parent stay in the spawner's trace).
//! A cancellation token tells the tasks to stop.

use std::future::Future;

use futures_util::future::Either;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Tracked tasks that share a cancellation token. Clones share both.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Tasks {
    /// An empty set with a fresh token.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token the tasks watch to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawns `future`: tracked, inside `span`, with the current
    /// OpenTelemetry context attached (when there is one: attaching an
    /// empty context on every poll would only cost).
    pub fn spawn<F>(&self, span: tracing::Span, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cx = opentelemetry::Context::current();
        let future = future.instrument(span);
        let future = if cx.has_active_span() {
            Either::Left(future.with_context(cx))
        } else {
            Either::Right(future)
        };
        self.tracker.spawn(future)
    }

    /// Tasks still running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task is running.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Waits until every task has ended, without cancelling them (no new
    /// task may be spawned afterwards).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Cancels the token and waits until every task has ended.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TraceId};

    #[tokio::test]
    async fn a_task_is_tracked_and_carries_the_spawners_context() {
        let tasks = Tasks::new();
        let sc = opentelemetry::trace::SpanContext::new(
            TraceId::from_bytes([7; 16]),
            opentelemetry::trace::SpanId::from_bytes([9; 8]),
            opentelemetry::trace::TraceFlags::SAMPLED,
            true,
            Default::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let _attached = cx.attach();
        let token = tasks.token().clone();
        let handle = tasks.spawn(tracing::info_span!("t"), async move {
            token.cancelled().await;
            opentelemetry::Context::current()
                .span()
                .span_context()
                .trace_id()
        });
        assert_eq!(tasks.len(), 1);
        tasks.shutdown().await;
        assert_eq!(handle.await.unwrap(), TraceId::from_bytes([7; 16]));
        assert!(tasks.is_empty());
    }
}
