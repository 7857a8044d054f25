//! A span processor for one command's process: ended spans wait in a
//! bounded buffer and are written to the trace file by whoever flushes
//! (the command, as it exits), in its own thread. No thread of the
//! processor's own is started, and no hand-over to one is waited for: a
//! command that makes tens of spans and flushes them once pays neither.
//! When the buffer is half full, the thread that ends a span writes it
//! out, so that a long command loses nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};

use super::writer::{TraceFile, TraceFileExporter};

/// Buffers ended spans (at most `queue`; later ones are dropped and
/// counted) and appends them to the trace file on
/// [`force_flush`](SpanProcessor::force_flush) and at shutdown.
#[derive(Debug)]
pub(crate) struct InlineProcessor {
    exporter: Mutex<TraceFileExporter>,
    ended: Mutex<Vec<SpanData>>,
    queue: usize,
    dropped: AtomicUsize,
    shut_down: AtomicBool,
}

impl InlineProcessor {
    /// A processor writing to `file`, holding at most `queue` spans
    /// between flushes.
    pub(crate) fn new(file: &TraceFile, queue: usize) -> Self {
        Self {
            exporter: Mutex::new(file.exporter()),
            ended: Mutex::new(Vec::new()),
            queue: queue.max(1),
            dropped: AtomicUsize::new(0),
            shut_down: AtomicBool::new(false),
        }
    }

    fn write_out(&self) -> OTelSdkResult {
        let batch = std::mem::take(&mut *self.ended.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            return Ok(());
        }
        self.exporter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_batch(batch)
    }
}

impl SpanProcessor for InlineProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() || self.shut_down.load(Ordering::Acquire) {
            return;
        }
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        // Only spans ended by many threads at once, while one writes, can
        // find it full.
        if ended.len() >= self.queue {
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::debug!("the span buffer is full: spans are dropped");
            }
            return;
        }
        ended.push(span);
        // Half full: written out now, by the thread that ended this span,
        // so that a long command loses nothing.
        if ended.len() >= self.queue.div_ceil(2) {
            drop(ended);
            if let Err(e) = self.write_out() {
                tracing::debug!(error = %e, "writing spans failed");
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.write_out()
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.write_out()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_file::Retention;
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// A provider writing through an inline processor of `queue` spans to
    /// a trace file in a scratch directory; the file's lines.
    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        provider: SdkTracerProvider,
    }

    impl Fixture {
        fn new(queue: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("traces.jsonl");
            let file = TraceFile::new(path.clone(), Retention::total(1 << 20));
            let provider = SdkTracerProvider::builder()
                .with_span_processor(InlineProcessor::new(&file, queue))
                .build();
            Self {
                _dir: dir,
                path,
                provider,
            }
        }

        fn span(&self, name: impl Into<std::borrow::Cow<'static, str>>) {
            self.provider.tracer("test").in_span(name, |_| {});
        }

        fn lines(&self) -> Vec<String> {
            std::fs::read_to_string(&self.path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    #[test]
    fn spans_are_written_when_flushed_and_at_shutdown_not_before() {
        let f = Fixture::new(8);
        f.span("first");
        assert!(f.lines().is_empty(), "nothing is written before a flush");
        f.provider.force_flush().unwrap();
        let after_flush = f.lines();
        assert_eq!(after_flush.len(), 1);
        assert!(after_flush[0].contains("\"first\""));
        f.span("second");
        f.provider.shutdown().unwrap();
        let all = f.lines();
        assert_eq!(all.len(), 2, "the flush wrote nothing twice");
        assert!(all[1].contains("\"second\"") && !all[1].contains("\"first\""));
    }

    #[test]
    fn a_half_full_buffer_is_written_by_the_thread_that_ends_a_span() {
        let f = Fixture::new(4);
        f.span("a");
        assert!(f.lines().is_empty());
        f.span("b");
        let text = f.lines().concat();
        assert!(text.contains("\"a\"") && text.contains("\"b\""), "{text}");
        for i in 0..10 {
            f.span(format!("n{i}"));
        }
        f.provider.shutdown().unwrap();
        let text = f.lines().concat();
        assert!(
            (0..10).all(|i| text.contains(&format!("\"n{i}\""))),
            "none lost: {text}"
        );
    }
}
