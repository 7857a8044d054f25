//! The local trace file: where spans go when no OTLP endpoint is configured
//! (`core-client trace show` and `report` read it back).
//!
//! Layout:
//! - this module: `RemoteSpans` (the exec-server's stages a client brought
//!   home) and where the file is by default ([`default_path`]).
//! - `writer`: [`TraceFile`] (appending whole lines under one lock) and
//!   its span exporter.
//! - `inline`: `InlineProcessor`, which writes a command's spans in
//!   the thread that flushes them.
//! - [`retention`] (`crate::trace_files`, which readers use without this
//!   feature): how much is kept (the current file and its rotated
//!   generations) and what was rotated away.
//! - `json`: a batch's line, written straight from the span data, without
//!   default values (`compact`, which the tests hold it to, says which).
//!
//! Format: JSON Lines. Each line is one OTLP JSON `TracesData` message
//! holding the spans of one trace that one exporter wrote in one batch, so a
//! trace that crosses services (or batches) spans several lines with the same
//! trace id, which a reader merges. Fields holding their default value are
//! left out, as the OTLP JSON mapping allows. Lines are appended whole,
//! under one lock, so exporters sharing a [`TraceFile`] never interleave.
//!
//! Size bound: before a write, a file already larger than its
//! [`Retention::file_bytes`] is rotated (see [`retention`]); readers read
//! the generations oldest first (`<path>.N` ... `<path>.1`, then `<path>`).

#[cfg(test)]
mod compact;
mod inline;
mod json;
mod writer;
use crate::trace_files as retention;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};

use crate::remote::{RemoteSink, RemoteSpan};

pub(crate) use inline::InlineProcessor;
pub use retention::{Retention, rotated_path};
pub use writer::{TraceFile, TraceFileExporter};

/// The environment variable that overrides [`default_path`].
pub const PATH_ENV: &str = "REX_TRACE_FILE";

/// The trace file to use: `$REX_TRACE_FILE` if set and non-empty, else
/// `<data dir>/rex/traces.jsonl` (`None` when there is no data directory).
pub fn default_path() -> Option<PathBuf> {
    match std::env::var_os(PATH_ENV) {
        Some(value) if !value.is_empty() => Some(PathBuf::from(value)),
        _ => dirs::data_dir().map(|dir| dir.join("rex").join("traces.jsonl")),
    }
}

/// Writes the exec-server's stages and the relay's forwards that a client
/// brought home and placed ([`crate::placement`]) into the trace file as
/// those services' spans, through a processor per service (bounded: spans
/// beyond their queues are dropped). A long-running client's are batch
/// processors (a queue and a thread each, off the caller's path); a
/// command's are inline, written by the thread that flushes them as it
/// exits, as its own spans are (no thread to start, nothing to hand over).
/// The processors start with the first spans: a command run through the
/// agent brings nothing home itself.
#[derive(Debug)]
pub(crate) struct RemoteSpans {
    file: TraceFile,
    queue: usize,
    inline: bool,
    processors: OnceLock<Processors>,
}

/// One processor per remote service.
#[derive(Debug)]
struct Processors {
    exec_server: Box<dyn SpanProcessor>,
    relay: Box<dyn SpanProcessor>,
}

impl RemoteSpans {
    /// A writer into `file`, each service's queue holding `queue` spans;
    /// `inline`: written by whoever flushes (a command), not by threads of
    /// their own.
    pub(crate) fn new(file: &TraceFile, queue: usize, inline: bool) -> Self {
        Self {
            file: file.clone(),
            queue,
            inline,
            processors: OnceLock::new(),
        }
    }

    /// The processors, started now if they were not.
    fn processors(&self) -> &Processors {
        self.processors.get_or_init(|| {
            let processor = |service: &'static str| -> Box<dyn SpanProcessor> {
                let resource = Resource::builder_empty().with_service_name(service).build();
                if self.inline {
                    let mut processor = InlineProcessor::new(&self.file, self.queue);
                    processor.set_resource(&resource);
                    Box::new(processor)
                } else {
                    let mut processor =
                        crate::provider::batch_processor(self.file.exporter(), self.queue);
                    processor.set_resource(&resource);
                    Box::new(processor)
                }
            };
            Processors {
                exec_server: processor(crate::remote::EXEC_SERVER),
                relay: processor(crate::remote::RELAY),
            }
        })
    }

    /// Writes what is queued now.
    pub(crate) fn flush(&self) -> OTelSdkResult {
        match self.processors.get() {
            Some(p) => p.exec_server.force_flush().and(p.relay.force_flush()),
            None => Ok(()),
        }
    }

    /// Writes what is queued and stops, waiting at most `timeout` for each.
    pub(crate) fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        match self.processors.get() {
            Some(p) => p
                .exec_server
                .shutdown_with_timeout(timeout)
                .and(p.relay.shutdown_with_timeout(timeout)),
            None => Ok(()),
        }
    }
}

impl RemoteSink for RemoteSpans {
    fn record(&self, spans: Vec<RemoteSpan>) {
        if spans.is_empty() {
            return;
        }
        let processors = self.processors();
        for span in spans {
            if span.service == crate::remote::RELAY {
                processors.relay.on_end(span_data(span));
            } else {
                processors.exec_server.on_end(span_data(span));
            }
        }
    }
}

/// A placed remote stage as the SDK's finished span.
fn span_data(span: RemoteSpan) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            span.trace_id,
            span.span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ),
        parent_span_id: span.parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: span.name.into(),
        start_time: span.start,
        end_time: span.end,
        attributes: span.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if span.error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder(span.service).build(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use opentelemetry::trace::TraceId;

    use super::*;

    fn remote_span(service: &'static str, name: &'static str) -> RemoteSpan {
        RemoteSpan {
            service,
            trace_id: TraceId::from(7u128),
            span_id: opentelemetry::trace::SpanId::from(3u64),
            parent: opentelemetry::trace::SpanId::INVALID,
            name,
            start: std::time::SystemTime::UNIX_EPOCH,
            end: std::time::SystemTime::UNIX_EPOCH,
            error: false,
            attributes: vec![],
        }
    }

    #[test]
    fn remote_spans_start_their_writers_with_the_first_spans() {
        for inline in [false, true] {
            remote_spans_are_written(inline);
        }
    }

    fn remote_spans_are_written(inline: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.jsonl");
        let remote = RemoteSpans::new(
            &TraceFile::new(path.clone(), Retention::default()),
            8,
            inline,
        );
        // Nothing brought home: no queue, no thread, nothing written.
        remote.record(Vec::new());
        assert!(remote.processors.get().is_none());
        remote.flush().unwrap();
        assert!(!path.exists());

        remote.record(vec![
            remote_span(crate::remote::EXEC_SERVER, "process.spawn"),
            remote_span(crate::remote::RELAY, "relay.forward"),
        ]);
        assert!(remote.processors.get().is_some());
        remote.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("process.spawn"), "{text}");
        assert!(text.contains("relay.forward"), "{text}");
        remote.shutdown(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn default_path_ends_in_rex_traces() {
        // Only the fallback is checked: tests share the process environment.
        if std::env::var_os(PATH_ENV).is_none_or(|v| v.is_empty())
            && let Some(path) = default_path()
        {
            assert!(path.ends_with("rex/traces.jsonl"), "{}", path.display());
        }
    }
}
