//! Where a report's commands come from: the local trace file (with its
//! rotated generations), a given OTLP JSON file, or Jaeger's query API; and
//! which of them it keeps (a time window, a program, servers).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use super::command::{Command, Reducer};
use crate::model::Trace;
use crate::scan::{MAX_SPANS_PER_TRACE, ScanStats, Scanner};

/// Files are read in blocks of this size.
const BLOCK: usize = 8 * 1024 * 1024;
/// A longer line is skipped (and counted), not held.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// A file that is one JSON document (not one per line) is read whole only
/// up to this size.
const MAX_DOCUMENT: u64 = 512 * 1024 * 1024;

/// Reading a source failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// There is no such file (nor any rotated generation of it).
    #[error("no traces at {}: the file does not exist", .0.display())]
    NotFound(PathBuf),
    /// Reading failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Jaeger could not be asked or answered badly.
    #[error(transparent)]
    Jaeger(#[from] crate::jaeger::JaegerError),
    /// No runtime could be made to ask Jaeger.
    #[error("asking Jaeger: {0}")]
    Runtime(#[source] io::Error),
}

/// Where a report's commands are read from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Source {
    /// The local trace file and its rotated generations.
    TraceFile(PathBuf),
    /// One OTLP JSON file (lines, or one document).
    File(PathBuf),
    /// Jaeger's query API.
    Jaeger {
        /// Its base URL.
        url: String,
        /// The service whose traces are searched.
        service: String,
        /// At most this many traces.
        limit: u32,
        /// Keep the answer to read spans from again (the page's
        /// waterfalls).
        keep_answer: bool,
    },
}

/// Which commands to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Filter {
    /// Dispatched at or after, nanoseconds since the Unix epoch.
    pub since_ns: Option<u64>,
    /// Dispatched before, nanoseconds since the Unix epoch.
    pub until_ns: Option<u64>,
    /// This program only.
    pub program: Option<String>,
    /// Servers whose id starts with this (a name resolved to its id).
    pub server: Option<String>,
    /// Only these traces (a probe's own commands).
    #[serde(skip)]
    pub traces: Option<std::collections::HashSet<u128>>,
}

impl Filter {
    /// Whether `command` is kept.
    pub fn keeps(&self, command: &Command) -> bool {
        self.since_ns.is_none_or(|t| command.start >= t)
            && self.until_ns.is_none_or(|t| command.start < t)
            && self
                .program
                .as_deref()
                .is_none_or(|p| command.program.as_deref() == Some(p))
            && self.server.as_deref().is_none_or(|s| {
                command
                    .server
                    .as_deref()
                    .is_some_and(|id| id.starts_with(s))
            })
            && self
                .traces
                .as_ref()
                .is_none_or(|ids| ids.contains(&command.trace))
    }
}

/// What was read, for the report's header and its warnings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SourceInfo {
    /// `trace-file`, `file` or `jaeger`.
    pub kind: String,
    /// The files read, oldest first (or the Jaeger URL).
    pub read: Vec<String>,
    /// Lines (or documents) read.
    pub lines: u64,
    /// Lines that were not OTLP JSON, skipped.
    pub skipped_lines: u64,
    /// The first few of those, as `FILE:LINE`.
    pub skipped_at: Vec<String>,
    /// Files whose last line was cut short (being written, or truncated).
    pub truncated: Vec<String>,
    /// Spans read.
    pub spans: u64,
    /// Traces read that held no command (`tool.dispatch`).
    pub traces_without_commands: u64,
    /// Commands read, before filtering.
    pub commands_read: u64,
    /// When older generations of the trace file were rotated away: spans
    /// before this (RFC 3339) may be gone.
    pub rotated_away_before: Option<String>,
}

/// Commands read from a source, and how the reading went.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Input {
    /// The commands kept, in the order read.
    pub commands: Vec<Command>,
    /// Their stage paths.
    pub reducer: Reducer,
    /// How the reading went.
    pub info: SourceInfo,
    /// Where the spans came from, to read some of them again.
    pub origin: Origin,
}

/// Where an input's spans came from, so that the spans of a few of its
/// traces can be read again once the report has picked them (its
/// waterfalls).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Origin {
    /// Nowhere they can be read again.
    #[default]
    Nothing,
    /// The local trace file (its generations are found again, so a
    /// rotation in between loses nothing).
    TraceFile(PathBuf),
    /// One OTLP JSON file.
    File(PathBuf),
    /// A Jaeger answer, kept whole (it is bounded).
    Answer(Bytes),
}

impl Origin {
    /// The spans of the traces `ids` (at most
    /// `scan::MAX_SPANS_PER_TRACE` each; a trace's spans from
    /// several files are one trace), in no particular order.
    pub fn traces(&self, ids: &HashSet<u128>) -> Result<Vec<Trace>, SourceError> {
        let mut found: HashMap<u128, Trace> = HashMap::new();
        let mut sink = |trace: Trace| match found.entry(trace.id) {
            Entry::Vacant(e) => {
                e.insert(trace);
            }
            Entry::Occupied(mut e) => {
                let held = e.get_mut();
                let room = MAX_SPANS_PER_TRACE.saturating_sub(held.spans.len());
                held.dropped += trace.dropped + trace.spans.len().saturating_sub(room);
                held.spans.extend(trace.spans.into_iter().take(room));
            }
        };
        match self {
            Origin::Nothing => {}
            Origin::TraceFile(path) => {
                let mut files = telemetry::trace_files::files_newest_first(path);
                files.reverse();
                scan_files(&files, Some(ids), &mut sink)?;
            }
            Origin::File(path) => {
                scan_files(std::slice::from_ref(path), Some(ids), &mut sink)?;
            }
            Origin::Answer(body) => {
                // An answer that did not parse has no commands either.
                let _ = scan_document(body, Some(ids), &mut sink);
            }
        }
        Ok(found.into_values().collect())
    }
}

impl Input {
    /// An input filling from `kind` sources.
    pub fn new(kind: &str) -> Input {
        Input {
            info: SourceInfo {
                kind: kind.to_owned(),
                ..SourceInfo::default()
            },
            ..Input::default()
        }
    }

    /// Reads the local trace file at `path` and its rotated generations,
    /// oldest first, as one stream (a trace split by a rotation is one
    /// trace).
    pub fn trace_file(path: &Path, filter: &Filter) -> Result<Input, SourceError> {
        let mut files = telemetry::trace_files::files_newest_first(path);
        if files.is_empty() {
            return Err(SourceError::NotFound(path.to_path_buf()));
        }
        files.reverse();
        let mut input = Input::new("trace-file");
        input.origin = Origin::TraceFile(path.to_path_buf());
        input.read_files(&files, filter)?;
        input.info.rotated_away_before =
            telemetry::trace_files::rotated_away_before(path).map(crate::time::system_rfc3339);
        Ok(input)
    }

    /// Reads the local trace file's newest generations, newest first, until
    /// every trace in `wanted` has been seen (for the commands just run).
    pub fn recent(
        path: &Path,
        filter: &Filter,
        wanted: &HashSet<u128>,
    ) -> Result<Input, SourceError> {
        let files = telemetry::trace_files::files_newest_first(path);
        if files.is_empty() {
            return Err(SourceError::NotFound(path.to_path_buf()));
        }
        // The newest generations holding them, read oldest first (the one
        // before the first that has them all too: a trace's first spans
        // may have been written before a rotation).
        let mut take = files.len();
        for n in 1..=files.len() {
            let mut input = Input::new("trace-file");
            let mut newest: Vec<PathBuf> = files.iter().take(n).cloned().collect();
            newest.reverse();
            input.read_files(&newest, filter)?;
            let found: HashSet<u128> = input.commands.iter().map(|c| c.trace).collect();
            if wanted.is_subset(&found) {
                take = (n + 1).min(files.len());
                break;
            }
        }
        let mut chosen: Vec<PathBuf> = files.into_iter().take(take).collect();
        chosen.reverse();
        let mut input = Input::new("trace-file");
        input.origin = Origin::TraceFile(path.to_path_buf());
        input.read_files(&chosen, filter)?;
        Ok(input)
    }

    /// Reads one OTLP JSON file (lines, or one document).
    pub fn file(path: &Path, filter: &Filter) -> Result<Input, SourceError> {
        let mut input = Input::new("file");
        input.origin = Origin::File(path.to_path_buf());
        input.read_file(path, filter)?;
        Ok(input)
    }

    /// Reads `path`'s commands (see [`scan_files`]).
    fn read_file(&mut self, path: &Path, filter: &Filter) -> Result<(), SourceError> {
        self.read_files(std::slice::from_ref(&path.to_path_buf()), filter)
    }

    /// Reads the commands of `files`, in order, as one stream; a file that
    /// is gone (rotated away) before it is opened is passed over.
    fn read_files(&mut self, files: &[PathBuf], filter: &Filter) -> Result<(), SourceError> {
        let commands = &mut self.commands;
        let reducer = &mut self.reducer;
        let read = scan_files(files, None, &mut |trace| {
            commands.extend(
                reducer
                    .commands(trace)
                    .into_iter()
                    .filter(|c| filter.keeps(c)),
            );
        })?;
        for (path, stats) in read {
            let name = path.display().to_string();
            self.info.read.push(name.clone());
            self.count(&stats, &name);
        }
        Ok(())
    }

    /// Adds one input's reading to the totals.
    fn count(&mut self, stats: &ScanStats, name: &str) {
        self.info.lines += stats.lines;
        self.info.skipped_lines += stats.skipped;
        self.info.spans += stats.spans;
        for line in &stats.skipped_at {
            if self.info.skipped_at.len() < 5 {
                self.info.skipped_at.push(format!("{name}:{line}"));
            }
        }
        if stats.truncated_tail {
            self.info.truncated.push(name.to_owned());
        }
        self.info.traces_without_commands = self.reducer.traces_without_commands;
        self.info.commands_read = self.reducer.commands_read;
    }

    /// Reads the commands `source` names.
    pub fn read(source: &Source, filter: &Filter) -> Result<Input, SourceError> {
        match source {
            Source::TraceFile(path) => Input::trace_file(path, filter),
            Source::File(path) => Input::file(path, filter),
            Source::Jaeger {
                url,
                service,
                limit,
                keep_answer,
            } => Input::jaeger(url, service, *limit, filter, *keep_answer),
        }
    }

    /// Searches Jaeger at `url` for `service`'s traces in the filter's
    /// window (at most `limit`); with `keep_answer`, the answer is kept to
    /// read spans from again.
    pub fn jaeger(
        url: &str,
        service: &str,
        limit: u32,
        filter: &Filter,
        keep_answer: bool,
    ) -> Result<Input, SourceError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let client = crate::jaeger::Client::new(url)?;
        let search = crate::jaeger::Search::new(
            service,
            filter.since_ns.unwrap_or(0),
            filter.until_ns.unwrap_or(now),
            limit,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SourceError::Runtime)?;
        let body = runtime.block_on(client.search(&search))?;
        let mut input = Input::new("jaeger");
        input.info.read.push(client.base_url().to_owned());
        if !body.is_empty() {
            input.jaeger_answer(&body, filter);
            if keep_answer {
                input.origin = Origin::Answer(body);
            }
        }
        Ok(input)
    }

    /// Takes in the spans of one Jaeger answer.
    pub fn jaeger_answer(&mut self, body: &[u8], filter: &Filter) {
        let commands = &mut self.commands;
        let reducer = &mut self.reducer;
        let stats = scan_document(body, None, &mut |trace| {
            commands.extend(
                reducer
                    .commands(trace)
                    .into_iter()
                    .filter(|c| filter.keeps(c)),
            );
        });
        let stats = stats.unwrap_or_else(|stats| ScanStats {
            skipped: stats.skipped + 1,
            ..stats
        });
        self.count(&stats, "jaeger");
    }
}

/// A scanner handing traces to `sink`, keeping only `only`'s if given.
fn scanner<F: FnMut(Trace)>(sink: F, only: Option<&HashSet<u128>>) -> Scanner<F> {
    match only {
        Some(ids) => Scanner::only(sink, ids.clone()),
        None => Scanner::new(sink),
    }
}

/// Reads `files` in order as one stream of lines (a trace whose spans are
/// in two of them is one trace), in blocks, handing the traces (only
/// `only`'s if given) to `sink`; what was read from each file. A file gone
/// before it is opened is passed over (a rotation moved it). A file where
/// no line parses but that is one JSON document is read whole.
fn scan_files(
    files: &[PathBuf],
    only: Option<&HashSet<u128>>,
    sink: &mut dyn FnMut(Trace),
) -> Result<Vec<(PathBuf, ScanStats)>, SourceError> {
    let mut read = Vec::with_capacity(files.len());
    let mut documents = Vec::new();
    {
        let mut scanner = scanner(&mut *sink, only);
        for path in files {
            match scan_lines(path, &mut scanner) {
                Ok((stats, true)) => read.push((path.clone(), stats)),
                Ok((stats, false)) => {
                    // Not one JSON value per line: perhaps one document.
                    documents.push(read.len());
                    read.push((path.clone(), stats));
                }
                Err(SourceError::NotFound(_)) if files.len() > 1 => {}
                Err(e) => return Err(e),
            }
        }
        let tail = scanner.finish();
        if let Some((_, last)) = read.last_mut() {
            last.spans += tail.spans;
        }
    }
    for at in documents {
        let Some((path, stats)) = read.get_mut(at) else {
            continue;
        };
        if let Some(whole) = read_document(path, only, sink)? {
            *stats = whole;
        }
    }
    Ok(read)
}

/// Reads `path`'s lines into `scanner`; what was read, and whether the
/// file looked like OTLP JSON lines (something parsed, or nothing failed).
fn scan_lines<F: FnMut(Trace)>(
    path: &Path,
    scanner: &mut Scanner<F>,
) -> Result<(ScanStats, bool), SourceError> {
    let io_error = |source: io::Error| io_error(path, source);
    let mut file = File::open(path).map_err(io_error)?;
    let parsed_before = scanner.parsed_lines();
    // Lines are read into `buf`; only the last, partial line of a block
    // is moved to the front for the next.
    let mut buf: Vec<u8> = Vec::with_capacity(2 * BLOCK);
    let mut line_base = 0u64;
    // Inside a line over MAX_LINE: dropped until its newline.
    let mut skipping = false;
    let mut oversized = 0u64;
    loop {
        let start = buf.len();
        buf.resize(start + BLOCK, 0);
        let n = read_full(&mut file, buf.get_mut(start..).unwrap_or_default()).map_err(io_error)?;
        buf.truncate(start + n);
        let eof = n < BLOCK;
        if skipping {
            match buf.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    buf.drain(..=at);
                    skipping = false;
                }
                None => {
                    buf.clear();
                    if eof {
                        break;
                    }
                    continue;
                }
            }
        }
        let cut = if eof {
            buf.len()
        } else {
            match buf.iter().rposition(|b| *b == b'\n') {
                Some(at) => at + 1,
                None if buf.len() >= MAX_LINE => {
                    buf.clear();
                    skipping = true;
                    oversized += 1;
                    line_base += 1;
                    continue;
                }
                None => continue,
            }
        };
        line_base = scanner.lines(buf.get(..cut).unwrap_or_default(), line_base, eof);
        buf.drain(..cut);
        if eof {
            break;
        }
    }
    let mut stats = scanner.take_stats();
    stats.skipped += oversized;
    stats.lines += oversized;
    let parsed_any = scanner.parsed_lines() > parsed_before;
    let looks_like_lines =
        parsed_any || oversized > 0 || stats.skipped + u64::from(stats.truncated_tail) == 0;
    Ok((stats, looks_like_lines))
}

/// `path` read whole as one document, if it is not too large and parses.
fn read_document(
    path: &Path,
    only: Option<&HashSet<u128>>,
    sink: &mut dyn FnMut(Trace),
) -> Result<Option<ScanStats>, SourceError> {
    let size = std::fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .len();
    if size > MAX_DOCUMENT {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    Ok(scan_document(&bytes, only, sink).ok())
}

/// Reading `path` failed with `source`.
fn io_error(path: &Path, source: io::Error) -> SourceError {
    if source.kind() == io::ErrorKind::NotFound {
        SourceError::NotFound(path.to_path_buf())
    } else {
        SourceError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads `bytes` as one JSON document, handing its traces (only `only`'s if
/// given) to `sink`; what was read, as an error if it did not parse.
fn scan_document(
    bytes: &[u8],
    only: Option<&HashSet<u128>>,
    sink: &mut dyn FnMut(Trace),
) -> Result<ScanStats, ScanStats> {
    let mut scanner = scanner(sink, only);
    let parsed = scanner.document(bytes);
    let stats = scanner.finish();
    if parsed { Ok(stats) } else { Err(stats) }
}

/// Reads until `buf` is full or the end of the input.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One OTLP JSON line with one span of `trace` named `name`.
    fn line(trace: u128, span: u64, name: &str) -> String {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{trace:032x}","spanId":"{span:016x}","name":"{name}","startTimeUnixNano":"1","endTimeUnixNano":"2"}}]}}]}}]}}"#
        )
    }

    fn names(mut traces: Vec<Trace>) -> Vec<(u128, Vec<String>)> {
        traces.sort_by_key(|t| t.id);
        traces
            .into_iter()
            .map(|t| {
                let mut names: Vec<String> = t.spans.iter().map(|s| s.name.to_string()).collect();
                names.sort();
                (t.id, names)
            })
            .collect()
    }

    #[test]
    fn the_spans_of_chosen_traces_are_read_again_from_every_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.jsonl");
        // Trace 1 was split by a rotation: one span in <path>.1, one in
        // <path>; trace 2 is not asked for; trace 3 is only in <path>.
        std::fs::write(
            telemetry::trace_files::generation_path(&path, 1),
            format!("{}\n{}\n", line(1, 1, "a"), line(2, 2, "x")),
        )
        .unwrap();
        std::fs::write(
            &path,
            format!("{}\n{}\nnot json\n", line(1, 3, "b"), line(3, 4, "c")),
        )
        .unwrap();
        let ids = HashSet::from([1, 3, 9]);
        let origin = Origin::TraceFile(path.clone());
        let found = names(origin.traces(&ids).unwrap());
        assert_eq!(
            found,
            [(1, vec!["a".into(), "b".into()]), (3, vec!["c".into()])]
        );
        // One file; a pretty-printed document too.
        let found = names(Origin::File(path.clone()).traces(&ids).unwrap());
        assert_eq!(found, [(1, vec!["b".into()]), (3, vec!["c".into()])]);
        let value: serde_json::Value = serde_json::from_str(&line(3, 4, "c")).unwrap();
        let doc = dir.path().join("doc.json");
        std::fs::write(&doc, serde_json::to_string_pretty(&value).unwrap()).unwrap();
        let found = names(Origin::File(doc).traces(&ids).unwrap());
        assert_eq!(found, [(3, vec!["c".into()])]);
        // A Jaeger answer kept in memory.
        let answer = Bytes::from(format!("{{\"result\":{}}}", line(1, 3, "b")));
        let found = names(Origin::Answer(answer).traces(&ids).unwrap());
        assert_eq!(found, [(1, vec!["b".into()])]);
        assert!(Origin::Nothing.traces(&ids).unwrap().is_empty());
        // A file that is gone is an error.
        assert!(matches!(
            Origin::File(dir.path().join("gone")).traces(&ids),
            Err(SourceError::NotFound(_))
        ));
    }
}
