//! Reading the local trace file back (the file `telemetry::trace_file`
//! writes: each line one OTLP JSON `TracesData`): every trace in it (the
//! oldest rotated generation first), merged across the lines that hold
//! its spans and ordered by the line each was last seen on, and the trace
//! a selector names (searched newest first). Malformed lines are skipped
//! and counted, never fatal: the bytes may come from anywhere.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use telemetry::trace_files::files_newest_first;

use crate::model::{Trace, without_placed_copies};
use crate::scan::Scanner;

/// Everything read from a trace file.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Traces {
    /// The traces, oldest to newest by their last written line.
    pub traces: Vec<Trace>,
    /// Lines that could not be parsed and were skipped.
    pub skipped_lines: usize,
}

/// Reading the trace file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceFileError {
    /// Neither the file nor its rotated predecessor exists.
    #[error("no traces have been recorded at {} yet", .0.display())]
    NotFound(PathBuf),
    /// The file exists but holds no traces.
    #[error("the trace file {} holds no traces yet", .0.display())]
    Empty(PathBuf),
    /// No trace with this id is in the file.
    #[error("no trace {0} in {path}", path = .1.display())]
    NoSuchTrace(String, PathBuf),
    /// Reading the file failed.
    #[error("reading the trace file {}: {source}", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// The traces in the text of one trace file, read in full.
pub fn parse(bytes: &[u8]) -> Traces {
    let mut traces = Vec::new();
    let mut scanner = scanner(&mut traces, true, None);
    scanner.lines(bytes, 0, false);
    finish(scanner.finish().skipped, traces)
}

/// Reads every trace in `path` and its rotated generations, ordered oldest
/// to newest by each trace's last line. Malformed lines are skipped.
pub fn read(path: &Path) -> Result<Vec<Trace>, TraceFileError> {
    read_all(path).map(|traces| traces.traces)
}

/// Like [`read`], also counting the malformed lines that were skipped.
pub fn read_all(path: &Path) -> Result<Traces, TraceFileError> {
    let mut files = files_newest_first(path);
    if files.is_empty() {
        return Err(TraceFileError::NotFound(path.to_path_buf()));
    }
    files.reverse();
    read_files(&files, true, None)
}

/// A scanner holding every trace (only `only` if given) to the end, each
/// span in full or only as much as picking a trace needs.
fn scanner(
    into: &mut Vec<Trace>,
    full: bool,
    only: Option<u128>,
) -> Scanner<impl FnMut(Trace) + '_> {
    let sink = |t| into.push(t);
    let scanner = match only {
        Some(id) => Scanner::only(sink, HashSet::from([id])),
        None => Scanner::new(sink),
    }
    .whole();
    if full { scanner.full() } else { scanner }
}

/// The traces read (oldest to newest by their last line), each without
/// the copies of spans that are there themselves.
fn finish(skipped: u64, mut traces: Vec<Trace>) -> Traces {
    for trace in &mut traces {
        trace.spans = without_placed_copies(std::mem::take(&mut trace.spans));
    }
    Traces {
        traces,
        skipped_lines: usize::try_from(skipped).unwrap_or(usize::MAX),
    }
}

/// The traces in `files`, read in that order (oldest first).
fn read_files(files: &[PathBuf], full: bool, only: Option<u128>) -> Result<Traces, TraceFileError> {
    let mut traces = Vec::new();
    let mut scanner = scanner(&mut traces, full, only);
    let mut line = 0;
    for file in files {
        match fs::read(file) {
            Ok(bytes) => line = scanner.lines(&bytes, line, false),
            // Rotated away while being read: what is left is read.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TraceFileError::Io {
                    path: file.clone(),
                    source,
                });
            }
        }
    }
    let skipped = scanner.finish().skipped;
    Ok(finish(skipped, traces))
}

/// Which trace to show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// The most recently written trace.
    Last,
    /// The trace with this id.
    Id(u128),
}

/// A string that is neither `last` nor a trace id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a trace: give `last` or a trace id, 32 hex digits such as \
     4bf92f3577b34da6a3ce929d0e0e4736"
)]
pub struct InvalidSelector(pub String);

impl FromStr for Selector {
    type Err = InvalidSelector;

    fn from_str(s: &str) -> Result<Selector, InvalidSelector> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("last") {
            return Ok(Selector::Last);
        }
        if s.len() == 32
            && s.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(id) = u128::from_str_radix(s, 16)
        {
            return Ok(Selector::Id(id));
        }
        Err(InvalidSelector(s.to_owned()))
    }
}

/// Whether a trace holds only background work (metadata persistence and
/// barriers, and the session- and link-level spans, are traces of their
/// own).
fn is_background(trace: &Trace) -> bool {
    trace
        .spans
        .iter()
        .all(|s| telemetry::spans::is_background(&s.name))
}

/// The trace in `path` that `selector` names; `last` is the newest trace
/// that is not only background work. The generations are searched newest
/// first, and the one before the generation that holds the trace is read
/// with it (a trace's first spans may have been written before a rotation).
pub fn find(path: &Path, selector: &Selector) -> Result<Trace, TraceFileError> {
    let files = files_newest_first(path);
    if files.is_empty() {
        return Err(TraceFileError::NotFound(path.to_path_buf()));
    }
    for (at, file) in files.iter().enumerate() {
        let traces = read_files(std::slice::from_ref(file), false, None)?.traces;
        let Some(id) = pick(traces, selector).map(|t| t.id) else {
            continue;
        };
        let mut both: Vec<PathBuf> = files.iter().skip(at).take(2).cloned().collect();
        both.reverse();
        let merged = read_files(&both, true, Some(id))?.traces;
        if let Some(trace) = merged.into_iter().find(|t| t.id == id) {
            return Ok(trace);
        }
    }
    Err(match selector {
        Selector::Last => TraceFileError::Empty(path.to_path_buf()),
        Selector::Id(id) => {
            TraceFileError::NoSuchTrace(crate::model::trace_hex(*id), path.to_path_buf())
        }
    })
}

/// The trace `selector` names among `traces` (oldest to newest).
fn pick(traces: Vec<Trace>, selector: &Selector) -> Option<Trace> {
    match selector {
        Selector::Last => traces.into_iter().rev().find(|t| !is_background(t)),
        Selector::Id(id) => traces.into_iter().find(|trace| trace.id == *id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Span as ReadSpan;

    /// A trace id's value.
    fn hex_id(hex: &str) -> u128 {
        u128::from_str_radix(hex, 16).unwrap()
    }

    /// The spans of one line.
    fn spans_of(line: &str) -> Vec<ReadSpan> {
        parse(line.as_bytes())
            .traces
            .into_iter()
            .flat_map(|t| t.spans)
            .collect()
    }
    use opentelemetry::Context;
    use opentelemetry::KeyValue as OtelKeyValue;
    use opentelemetry::trace::TraceId;
    use opentelemetry::trace::{
        Link, Span, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceState, Tracer,
        TracerProvider,
    };
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, SystemTime};
    use telemetry::trace_file::{Retention, TraceFile, rotated_path};

    fn provider(file: &TraceFile, service: &'static str) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service).build())
            .with_simple_exporter(file.exporter())
            .build()
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
    }

    /// Writes one parent/child trace from `provider` and returns its id.
    fn parent_child(provider: &SdkTracerProvider, parent: &str, child: &str) -> String {
        let tracer = provider.tracer("test");
        let mut root = tracer
            .span_builder(parent.to_owned())
            .with_start_time(at(0))
            .start(&tracer);
        let trace_id = root.span_context().trace_id().to_string();
        let cx = Context::current().with_remote_span_context(root.span_context().clone());
        let mut kid = tracer
            .span_builder(child.to_owned())
            .with_start_time(at(2))
            .with_attributes([
                OtelKeyValue::new("rex.stdout.bytes", 42_i64),
                OtelKeyValue::new("rex.ok", true),
            ])
            .start_with_context(&tracer, &cx);
        kid.end_with_timestamp(at(7));
        root.end_with_timestamp(at(10));
        trace_id
    }

    /// A directory for a test, and the trace file's path in it.
    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.jsonl");
        (dir, path)
    }

    /// A provider of service `svc` writing to `path`.
    fn svc(path: &Path) -> SdkTracerProvider {
        provider(
            &TraceFile::new(path.to_path_buf(), Retention::default()),
            "svc",
        )
    }

    /// A trace file rotated at every write, keeping `generations`.
    fn small(path: &Path, generations: usize) -> TraceFile {
        let mut retention = Retention::default();
        retention.file_bytes = 10;
        retention.generations = generations;
        TraceFile::new(path.to_path_buf(), retention)
    }

    /// The ids of the traces read from `path`, oldest first.
    fn ids_in(path: &Path) -> Vec<String> {
        read(path)
            .unwrap()
            .into_iter()
            .map(|t| t.id_hex())
            .collect()
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn writes_and_reads_a_parent_child_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/traces.jsonl");
        let file = TraceFile::new(path.clone(), Retention::default());
        assert!(!path.exists(), "opening is lazy");
        let p = provider(&file, "core-client");
        let id = parent_child(&p, "tool.dispatch", "terminal.delivery");
        p.force_flush().unwrap();
        p.shutdown().unwrap();

        let mode = fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "parent dir is private: {mode:o}");

        let traces = read(&path).unwrap();
        assert_eq!(traces.len(), 1);
        let trace = &traces[0];
        assert_eq!(trace.id_hex(), id);
        assert_eq!(trace.id_hex().len(), 32);
        assert_eq!(trace.spans.len(), 2);
        let root = trace
            .spans
            .iter()
            .find(|s| &*s.name == "tool.dispatch")
            .unwrap();
        let kid = trace
            .spans
            .iter()
            .find(|s| &*s.name == "terminal.delivery")
            .unwrap();
        assert_eq!(&*root.service, "core-client");
        assert_eq!(&*kid.service, "core-client");
        assert_eq!(root.parent, 0);
        assert_eq!(kid.parent, root.id);
        assert_eq!(root.id_hex().len(), 16);
        assert!(root.start < kid.start);
        assert!(kid.end < root.end);
        assert_eq!(kid.end - kid.start, 5_000_000);
        assert_eq!(
            root.start,
            1_700_000_000 * 1_000_000_000,
            "times survive the JSON round trip"
        );
        assert_eq!(kid.text("rex.stdout.bytes"), Some("42"));
        assert_eq!(kid.text("rex.ok"), Some("true"));
        assert_eq!(root.error_message(), None);
    }

    #[test]
    fn services_sharing_a_file_merge_into_one_trace() {
        let (_dir, path) = fresh();
        let file = TraceFile::new(path.clone(), Retention::default());
        let client = provider(&file, "core-client");
        let server = provider(&file, "exec-server");

        let client_tracer = client.tracer("client");
        let server_tracer = server.tracer("server");
        let mut root = client_tracer
            .span_builder("tool.dispatch")
            .with_start_time(at(0))
            .start(&client_tracer);
        let cx = Context::current().with_remote_span_context(root.span_context().clone());
        let mut exec = server_tracer
            .span_builder("rpc.server.exec")
            .with_start_time(at(1))
            .start_with_context(&server_tracer, &cx);
        exec.set_status(Status::error("boom"));
        exec.end_with_timestamp(at(3));
        root.end_with_timestamp(at(4));
        let id = root.span_context().trace_id().to_string();
        client.shutdown().unwrap();
        server.shutdown().unwrap();

        // Each provider wrote its own line, each a valid one-trace message.
        let written = lines(&path);
        assert_eq!(written.len(), 2);
        for line in &written {
            let data: opentelemetry_proto::tonic::trace::v1::TracesData =
                serde_json::from_str(line).unwrap();
            assert_eq!(data.resource_spans.len(), 1);
            let spans = spans_of(line);
            assert_eq!(spans.len(), 1);
            assert_eq!(spans[0].trace_hex(), id);
        }

        let trace = find(&path, &Selector::Id(hex_id(&id))).unwrap();
        let mut services: Vec<(&str, &str)> = trace
            .spans
            .iter()
            .map(|s| (&*s.name, &*s.service))
            .collect();
        services.sort();
        assert_eq!(
            services,
            [
                ("rpc.server.exec", "exec-server"),
                ("tool.dispatch", "core-client")
            ]
        );
        let exec = trace
            .spans
            .iter()
            .find(|s| &*s.name == "rpc.server.exec")
            .unwrap();
        let root = trace
            .spans
            .iter()
            .find(|s| &*s.name == "tool.dispatch")
            .unwrap();
        assert_eq!(exec.parent, root.id);
        assert_eq!(exec.error_message(), Some("boom"));
    }

    #[test]
    fn links_are_read_back() {
        let (_dir, path) = fresh();
        let p = svc(&path);
        let tracer = p.tracer("t");
        let target = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut span = tracer
            .span_builder("linked")
            .with_links(vec![Link::with_context(target)])
            .start(&tracer);
        span.end();
        p.shutdown().unwrap();
        let trace = find(&path, &Selector::Last).unwrap();
        assert_eq!(
            trace.spans[0].links(),
            [(0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331)]
        );
    }

    #[test]
    fn last_and_id_lookup() {
        let (_dir, path) = fresh();
        let p = svc(&path);
        let first = parent_child(&p, "first", "first.child");
        let second = parent_child(&p, "second", "second.child");
        // Background work written after the last command is skipped by `last`.
        let background = parent_child(
            &p,
            telemetry::spans::METADATA_FLUSH,
            telemetry::spans::METADATA_PERSIST,
        );
        p.shutdown().unwrap();

        let ids: Vec<String> = ids_in(&path);
        assert_eq!(ids, [first.clone(), second.clone(), background.clone()]);
        assert_eq!(
            find(&path, &Selector::Id(hex_id(&background)))
                .unwrap()
                .spans
                .len(),
            2
        );

        assert_eq!(find(&path, &Selector::Last).unwrap().id_hex(), second);
        let upper: Selector = first.to_ascii_uppercase().parse().unwrap();
        assert_eq!(upper, Selector::Id(hex_id(&first)));
        let found = find(&path, &upper).unwrap();
        assert_eq!(found.id_hex(), first);
        assert!(found.spans.iter().any(|s| &*s.name == "first"));

        let missing = "0123456789abcdef0123456789abcdef";
        let err = find(&path, &Selector::Id(hex_id(missing))).unwrap_err();
        assert!(matches!(&err, TraceFileError::NoSuchTrace(id, p) if id == missing && *p == path));
        assert!(err.to_string().contains(missing));
    }

    #[test]
    fn a_trace_is_positioned_by_its_last_line() {
        let (_dir, path) = fresh();
        let p = svc(&path);
        let tracer = p.tracer("t");
        // Trace A's child ends first, then trace B completes, then A's root.
        let mut a_root = tracer.start("a.root");
        let cx = Context::current().with_remote_span_context(a_root.span_context().clone());
        let mut a_child = tracer.start_with_context("a.child", &cx);
        a_child.end();
        let b = parent_child(&p, "b.root", "b.child");
        a_root.end();
        let a = a_root.span_context().trace_id().to_string();
        p.shutdown().unwrap();

        let traces = read(&path).unwrap();
        let ids: Vec<String> = traces.iter().map(|t| t.id_hex()).collect();
        assert_eq!(ids, [b.as_str(), a.as_str()]);
        assert_eq!(traces[1].spans.len(), 2);
        assert_eq!(find(&path, &Selector::Last).unwrap().id_hex(), a);
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let (_dir, path) = fresh();
        let p = svc(&path);
        let first = parent_child(&p, "first", "first.child");
        {
            let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
            raw.write_all(b"{not json\n\n[1,2]\n\xff\xfe\n").unwrap();
        }
        let second = parent_child(&p, "second", "second.child");
        p.shutdown().unwrap();

        let all = read_all(&path).unwrap();
        assert_eq!(all.skipped_lines, 3);
        let ids: Vec<String> = all.traces.iter().map(|t| t.id_hex()).collect();
        assert_eq!(ids, [first.as_str(), second.as_str()]);
    }

    #[test]
    fn missing_file_and_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl");
        let err = read(&path).unwrap_err();
        assert!(matches!(&err, TraceFileError::NotFound(p) if *p == path));
        let message = err.to_string();
        assert!(
            message.contains("no traces have been recorded"),
            "{message}"
        );
        assert!(message.contains("none.jsonl"), "{message}");

        fs::write(&path, "").unwrap();
        assert!(read(&path).unwrap().is_empty());
        assert!(matches!(
            find(&path, &Selector::Last),
            Err(TraceFileError::Empty(_))
        ));
    }

    #[test]
    fn rotation_keeps_one_older_file_and_reads_both() {
        let (dir, path) = fresh();
        let rotated = rotated_path(&path);
        assert_eq!(rotated, dir.path().join("traces.jsonl.1"));
        let p = provider(&small(&path, 1), "svc");
        let mut ids = Vec::new();
        for name in ["one", "two", "three"] {
            let tracer = p.tracer("t");
            let mut span = tracer.start(name);
            ids.push(span.span_context().trace_id().to_string());
            span.end();
        }
        p.shutdown().unwrap();

        // Every write found the file over 10 bytes, so each rotated it: the
        // newest trace is in the file, the one before in `.1`, and the
        // oldest was replaced.
        assert!(rotated.exists());
        assert_eq!(lines(&path).len(), 1);
        assert_eq!(lines(&rotated).len(), 1);
        let read_ids: Vec<String> = ids_in(&path);
        assert_eq!(read_ids, ids[1..]);

        // A large bound never rotates.
        let big = dir.path().join("big.jsonl");
        let file = TraceFile::new(big.clone(), Retention::default());
        let p = provider(&file, "svc");
        parent_child(&p, "x", "y");
        parent_child(&p, "x", "y");
        p.shutdown().unwrap();
        assert!(!rotated_path(&big).exists());
        // The simple processor exports each span on its own: 2 per trace.
        assert_eq!(lines(&big).len(), 4);
    }

    #[test]
    fn a_trace_in_an_older_generation_is_found_and_all_are_read() {
        let (_dir, path) = fresh();
        let p = provider(&small(&path, 3), "svc");
        let mut ids = Vec::new();
        for name in ["one", "two", "three", "four", "five"] {
            let mut span = p.tracer("t").start(name);
            ids.push(span.span_context().trace_id().to_string());
            span.end();
        }
        p.shutdown().unwrap();
        // Four files: the current one and three generations; "one" is gone
        // and said to be.
        assert!(telemetry::trace_files::generation_path(&path, 3).exists());
        assert!(!telemetry::trace_files::generation_path(&path, 4).exists());
        assert!(telemetry::trace_files::rotated_away_before(&path).is_some());
        let read_ids: Vec<String> = ids_in(&path);
        assert_eq!(read_ids, ids[1..]);
        let oldest = find(&path, &Selector::Id(hex_id(&ids[1]))).unwrap();
        assert_eq!(&*oldest.spans[0].name, "two");
        assert!(matches!(
            find(&path, &Selector::Id(hex_id(&ids[0]))),
            Err(TraceFileError::NoSuchTrace(..))
        ));
    }

    #[test]
    fn a_trace_split_by_rotation_is_merged() {
        let (_dir, path) = fresh();
        let p = provider(&small(&path, 1), "svc");
        // The child's line is rotated into `.1` when the root's is written.
        let id = parent_child(&p, "root", "child");
        p.shutdown().unwrap();
        assert_eq!(lines(&rotated_path(&path)).len(), 1);
        assert_eq!(lines(&path).len(), 1);
        let trace = find(&path, &Selector::Last).unwrap();
        assert_eq!(trace.id_hex(), id);
        let names: Vec<&str> = trace.spans.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["child", "root"]);
    }

    #[test]
    fn only_the_rotated_file_is_still_read() {
        let (_dir, path) = fresh();
        let p = svc(&path);
        let id = parent_child(&p, "x", "y");
        p.shutdown().unwrap();
        fs::rename(&path, rotated_path(&path)).unwrap();
        assert_eq!(find(&path, &Selector::Last).unwrap().id_hex(), id);
    }

    #[test]
    fn a_removed_file_is_recreated() {
        let (_dir, path) = fresh();
        let p = svc(&path);
        parent_child(&p, "x", "y");
        fs::remove_file(&path).unwrap();
        let id = parent_child(&p, "x", "y");
        p.shutdown().unwrap();
        let traces = read(&path).unwrap();
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].id_hex(), id);
    }

    #[test]
    fn selector_parsing() {
        assert_eq!("last".parse::<Selector>().unwrap(), Selector::Last);
        assert_eq!(
            "4BF92F3577B34DA6A3CE929D0E0E4736"
                .parse::<Selector>()
                .unwrap(),
            Selector::Id(0x4bf92f3577b34da6a3ce929d0e0e4736)
        );
        for bad in [
            "",
            "first",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47366",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let err = bad.parse::<Selector>().unwrap_err();
            let message = err.to_string();
            assert!(message.contains("32 hex digits"), "{message}");
            assert!(message.contains("last"), "{message}");
        }
    }
}
