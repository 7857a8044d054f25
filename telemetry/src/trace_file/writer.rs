//! The writing side of the trace file: [`TraceFile`] (appending whole
//! lines under one lock, rotating by its retention) and its span exporter,
//! [`TraceFileExporter`] (one line per trace of a batch).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::TraceId;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::json;
use super::retention::{self, Retention};

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
    pub(super) fn write_batch(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut line = Vec::with_capacity(4096);
        for spans in group_by_trace(batch) {
            line.clear();
            json::write_line(&self.resource, &spans, &mut line);
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::TracesData;

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
}
