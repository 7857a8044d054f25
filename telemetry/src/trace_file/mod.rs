//! The local trace file: where spans go when no OTLP endpoint is configured
//! (`core-client trace show` and `report` read it back).
//!
//! Layout:
//! - this module: [`TraceFile`] (appending whole lines under one lock) and
//!   its span exporter, and `RemoteSpans` (the exec-server's stages a
//!   client brought home).
//! - `inline`: `InlineProcessor`, which writes a command's spans in
//!   the thread that flushes them.
//! - [`retention`] (`crate::trace_files`, which readers use without this
//!   feature): how much is kept (the current file and its rotated
//!   generations) and what was rotated away.
//! - `compact`: lines without default values.
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

mod compact;
mod inline;
use crate::trace_files as retention;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor};

use crate::remote::{RemoteSink, RemoteSpan};

pub(crate) use inline::InlineProcessor;
pub use retention::{Retention, rotated_path};

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

/// A trace file that any number of exporters append to. Cloning shares the
/// same file and lock. The file is opened on the first write.
#[derive(Debug, Clone)]
pub struct TraceFile {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    retention: Retention,
    /// The open file, while it is still the one at `path`; the lock every
    /// line is written under.
    file: Mutex<Option<File>>,
}

impl TraceFile {
    /// A trace file at `path`, kept as `retention` says. Nothing is created
    /// until the first span is written.
    pub fn new(path: PathBuf, retention: Retention) -> TraceFile {
        TraceFile {
            inner: Arc::new(Shared {
                path,
                retention,
                file: Mutex::new(None),
            }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A span exporter appending to this file (one per tracer provider).
    pub fn exporter(&self) -> TraceFileExporter {
        TraceFileExporter {
            file: self.clone(),
            resource: Resource::builder_empty().build(),
            shut_down: AtomicBool::new(false),
        }
    }

    /// Appends `line` (which ends in a newline) with a single `write_all`,
    /// rotating first if the file is already over its bound.
    fn append_line(&self, line: &[u8]) -> io::Result<()> {
        // A writer that panicked mid-line leaves nothing worth protecting.
        let mut held = self
            .inner
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let file = self.inner.prepare(&mut held)?;
        file.write_all(line)
    }
}

impl Shared {
    /// The file to append to: rotated if over the bound, and reopened if the
    /// one at `path` is not the one held open (first write, or another
    /// process rotated or removed it).
    fn prepare<'a>(&self, held: &'a mut Option<File>) -> io::Result<&'a mut File> {
        let on_disk = match fs::metadata(&self.path) {
            Ok(meta) => Some(meta),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        let mut current = match (&on_disk, held.as_ref()) {
            (Some(meta), Some(file)) => {
                let open = file.metadata()?;
                open.dev() == meta.dev() && open.ino() == meta.ino()
            }
            _ => false,
        };
        if on_disk
            .as_ref()
            .is_some_and(|meta| meta.len() > self.retention.file_bytes)
        {
            *held = None;
            current = false;
            retention::rotate(&self.path, self.retention)?;
        }
        if !current {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)?;
            *held = Some(file);
        }
        held.as_mut()
            .ok_or_else(|| io::Error::other("trace file is not open"))
    }
}

/// An OpenTelemetry span exporter writing one JSON line per trace in each
/// batch to a [`TraceFile`].
#[derive(Debug)]
pub struct TraceFileExporter {
    file: TraceFile,
    resource: Resource,
    shut_down: AtomicBool,
}

impl TraceFileExporter {
    /// Serializes `batch` as one line per trace id, in order of first
    /// appearance, and appends the lines.
    fn write_batch(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let resource: ResourceAttributesWithSchema = (&self.resource).into();
        for spans in group_by_trace(batch) {
            let data = TracesData {
                resource_spans: group_spans_by_resource_and_scope(spans, &resource),
            };
            let mut value = serde_json::to_value(&data).map_err(|err| self.failure(&err))?;
            compact::compact(&mut value);
            let mut line = serde_json::to_vec(&value).map_err(|err| self.failure(&err))?;
            line.push(b'\n');
            self.file
                .append_line(&line)
                .map_err(|err| self.failure(&err))?;
        }
        Ok(())
    }

    fn failure(&self, err: &dyn fmt::Display) -> OTelSdkError {
        OTelSdkError::InternalFailure(format!("trace file {}: {err}", self.file.path().display()))
    }
}

/// Splits `batch` by trace id, keeping the order of first appearance and the
/// order of spans within each trace.
fn group_by_trace(batch: Vec<SpanData>) -> Vec<Vec<SpanData>> {
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    let mut groups: Vec<Vec<SpanData>> = Vec::new();
    for span in batch {
        let trace_id = span.span_context.trace_id();
        let slot = *index.entry(trace_id).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(slot) {
            group.push(span);
        }
    }
    groups
}

impl SpanExporter for TraceFileExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Synchronous: the span processors call this off the hot path.
        let result = if self.shut_down.load(Ordering::Acquire) {
            Err(OTelSdkError::AlreadyShutdown)
        } else {
            self.write_batch(batch)
        };
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shut_down.store(true, Ordering::Release);
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Lines are written unbuffered; there is nothing held back.
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
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
    use super::*;

    fn span_data(trace: u128, span: u64, name: &'static str) -> SpanData {
        use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    /// Polls a future that is ready on its first poll (the exporter's are).
    fn block_on_ready<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("export future was not ready"),
        }
    }

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
    fn write_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // The parent "directory" is a regular file, so opening fails.
        let blocker = dir.path().join("blocker");
        fs::write(&blocker, "x").unwrap();
        let path = blocker.join("traces.jsonl");
        let file = TraceFile::new(path.clone(), Retention::default());
        let exporter = file.exporter();
        match block_on_ready(exporter.export(vec![span_data(1, 1, "x")])) {
            Err(OTelSdkError::InternalFailure(message)) => {
                assert!(message.contains("blocker/traces.jsonl"), "{message}");
            }
            other => panic!("expected an internal failure, got {other:?}"),
        }
    }

    /// The service and the (name, trace id) of each span of one line.
    fn line_spans(line: &str) -> (String, Vec<(String, u128)>) {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let data: TracesData = serde_json::from_str(line).unwrap();
        let [resource_spans] = data.resource_spans.as_slice() else {
            panic!("one resource per line: {line}");
        };
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let spans = resource_spans
            .scope_spans
            .iter()
            .flat_map(|s| &s.spans)
            .map(|s| {
                let id = s
                    .trace_id
                    .iter()
                    .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
                (s.name.clone(), id)
            })
            .collect();
        (service, spans)
    }

    #[test]
    fn one_batch_with_two_traces_writes_one_line_per_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.jsonl");
        let file = TraceFile::new(path.clone(), Retention::default());
        let mut exporter = file.exporter();
        exporter.set_resource(&Resource::builder().with_service_name("batcher").build());
        let batch = vec![
            span_data(0xa, 1, "a1"),
            span_data(0xb, 2, "b1"),
            span_data(0xa, 3, "a2"),
        ];
        block_on_ready(exporter.export(batch)).unwrap();

        let lines = || -> Vec<String> {
            fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        };
        let written = lines();
        assert_eq!(written.len(), 2);
        let (service, first) = line_spans(&written[0]);
        assert_eq!(service, "batcher");
        assert_eq!(first, [("a1".to_owned(), 0xa), ("a2".to_owned(), 0xa)]);
        let (service, second) = line_spans(&written[1]);
        assert_eq!(service, "batcher");
        assert_eq!(second, [("b1".to_owned(), 0xb)]);

        // After shutdown the exporter refuses to write.
        exporter.shutdown().unwrap();
        let refused = block_on_ready(exporter.export(vec![span_data(0xa, 4, "late")]));
        assert!(matches!(refused, Err(OTelSdkError::AlreadyShutdown)));
        assert_eq!(lines().len(), 2);
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
