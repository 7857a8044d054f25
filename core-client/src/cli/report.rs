//! `report`: the numbers of many commands, with gates and a baseline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Args;

use super::error::CliError;
use crate::names::ServerNames;
use analysis::gate::Gate;
use analysis::html::Page;
use analysis::jaeger::JaegerError;
use analysis::report::{self, Options, Report};
use analysis::source::{Filter, Input, Source, SourceError};
use analysis::{text, time};

/// Exit status when a gate fails.
pub(crate) const EXIT_GATE_FAILED: u8 = 1;
/// Exit status when the source cannot be read.
pub(crate) const EXIT_NO_SOURCE: u8 = 3;

/// Arguments of `report`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReportArgs {
    /// Read this OTLP JSON file (one `TracesData` per line, or one
    /// document) instead of the local trace file.
    #[arg(long, value_name = "FILE", conflicts_with = "jaeger")]
    pub file: Option<PathBuf>,
    /// Read from Jaeger's query API instead (v2, /api/v3), e.g.
    /// http://localhost:16686.
    #[arg(long, value_name = "URL", requires = "service")]
    pub jaeger: Option<String>,
    /// With --jaeger: the service whose traces to read (the client's:
    /// core-client, or your embedder's).
    #[arg(long, value_name = "NAME", requires = "jaeger")]
    pub service: Option<String>,
    /// With --jaeger: at most this many traces per search.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "jaeger")]
    pub limit: u32,
    /// Commands dispatched at or after this time: RFC 3339, a date
    /// (midnight UTC), or a duration ago (90m, 2h, 7d) [default: all; with
    /// --jaeger, 7d]
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Commands dispatched before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this program (the command's argv[0] file name).
    #[arg(long, value_name = "NAME")]
    pub program: Option<String>,
    /// Only commands run on this server: a configured or known name, or a
    /// server id (or its first digits).
    #[arg(long, value_name = "NAME|ID")]
    pub server: Option<String>,
    /// How many of the slowest commands to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Print JSON (schema rex.report/1, docs/report.md) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// A go/no-go check (repeatable): exit 1 unless every gate holds, e.g.
    /// 'p90(link.transit) < 2ms', 'share(session.acquire).p50 >= 0.30',
    /// 'cold.p50 / warm.p50 < 3'. The language is in docs/tracing.md.
    #[arg(long = "gate", value_name = "EXPR")]
    pub gates: Vec<String>,
    /// Statistics over fewer commands than this make a gate fail, and an
    /// A/B row say "too little data".
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub min_count: u64,
    /// Compare with a baseline: an OTLP JSON file, or a window of the same
    /// source such as 14d..7d (START..END, either side may be empty).
    #[arg(long, value_name = "FILE|START..END")]
    pub baseline: Option<String>,
    /// Also write the report as one self-contained HTML page to FILE (it
    /// fetches nothing and runs no script; send it to a colleague): the
    /// stage tree, each stage's distribution, cold against warm, time to
    /// first output, the slowest commands, and the waterfalls of the
    /// median and the slowest command. The tables or --json are printed
    /// as well.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Runs `report`.
pub(crate) fn report(
    args: &ReportArgs,
    trace_file: Option<&Path>,
    names: &ServerNames,
) -> Result<u8, CliError> {
    let gates = gates(&args.gates)?;
    let now = SystemTime::now();
    let filter = filter(args, names, now)?;
    let current = read(args, &filter, trace_file, args.html.is_some())?;
    // The page's waterfalls: picked now, their spans read again later.
    let page = args.html.as_deref().map(|path| (path, Page::of(&current)));
    let baseline = match &args.baseline {
        None => None,
        Some(spec) => Some(baseline(args, spec, &filter, trace_file, now)?),
    };
    let options = Options::new(args.top, args.min_count);
    let report = report::build(current, baseline, &gates, filter, options);
    emit(&report, args.json, page, names)
}

/// The gates given, read.
pub(super) fn gates(given: &[String]) -> Result<Vec<Gate>, CliError> {
    given
        .iter()
        .map(|g| Gate::parse(g).map_err(|e| CliError::usage(e.to_string())))
        .collect()
}

/// Prints `report` (tables, or JSON), writes its page if asked, and gives
/// the exit status (1 when a gate failed).
pub(super) fn emit(
    report: &Report,
    json: bool,
    page: Option<(&Path, Page)>,
    names: &ServerNames,
) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        // Serialized first, so that a closed pipe is told by its kind.
        serde_json::to_vec_pretty(report)
            .map_err(std::io::Error::other)
            .and_then(|json| out.write_all(&json))
            .and_then(|()| writeln!(out))
    } else {
        out.write_all(text::render(report, names).as_bytes())
    };
    // A closed pipe (`| head`) is not an error of the report's.
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(CliError::failed(format!("writing the report: {e}")));
    }
    if let Some((path, page)) = page {
        std::fs::write(path, page.render(report, names))
            .map_err(|e| CliError::failed(format!("writing the page {}: {e}", path.display())))?;
    }
    Ok(if report.gates_hold() {
        0
    } else {
        EXIT_GATE_FAILED
    })
}

fn filter(args: &ReportArgs, names: &ServerNames, now: SystemTime) -> Result<Filter, CliError> {
    let time = |flag: &str, t: &Option<String>| -> Result<Option<u64>, CliError> {
        t.as_deref()
            .map(|t| {
                time::parse_time(t, now).map_err(|e| CliError::usage(format!("--{flag}: {e}")))
            })
            .transpose()
    };
    let mut since_ns = time("since", &args.since)?;
    let until_ns = time("until", &args.until)?;
    if args.jaeger.is_some() && since_ns.is_none() {
        since_ns = time::parse_time("7d", now).ok();
    }
    if let (Some(a), Some(b)) = (since_ns, until_ns)
        && a >= b
    {
        return Err(CliError::usage("--until is not after --since"));
    }
    let server = args
        .server
        .as_deref()
        .map(|s| super::views::server_filter(s, names).map(str::to_owned))
        .transpose()?;
    let mut filter = Filter::default();
    filter.since_ns = since_ns;
    filter.until_ns = until_ns;
    filter.program.clone_from(&args.program);
    filter.server = server;
    Ok(filter)
}

/// Reads the source the arguments name; with `keep_answer`, a Jaeger
/// answer is kept to read spans from again.
fn read(
    args: &ReportArgs,
    filter: &Filter,
    trace_file: Option<&Path>,
    keep_answer: bool,
) -> Result<Input, CliError> {
    let source = if let (Some(url), Some(service)) = (&args.jaeger, &args.service) {
        Source::Jaeger {
            url: url.clone(),
            service: service.clone(),
            limit: args.limit,
            keep_answer,
        }
    } else if let Some(file) = &args.file {
        Source::File(file.clone())
    } else if let Some(path) = trace_file {
        Source::TraceFile(path.to_path_buf())
    } else {
        return Err(CliError::usage(
            "no trace file: set --trace-file or REX_TRACE_FILE (no user data dir is known), or give --file or --jaeger",
        ));
    };
    Input::read(&source, filter).map_err(|e| no_source(args, e, ""))
}

/// A source that could not be read: its one line, and exit 3.
fn no_source(args: &ReportArgs, e: SourceError, prefix: &str) -> CliError {
    let message = match (&e, &args.jaeger) {
        (SourceError::Jaeger(JaegerError::Url { .. }), Some(url)) => format!(
            "--jaeger {}: give the query API's base URL, such as http://localhost:16686",
            url.trim_end_matches('/')
        ),
        _ => e.to_string(),
    };
    CliError {
        message: format!("{prefix}{message}"),
        code: EXIT_NO_SOURCE,
    }
}

/// The baseline `spec` names: a file, else a window of the same source.
fn baseline(
    args: &ReportArgs,
    spec: &str,
    filter: &Filter,
    trace_file: Option<&Path>,
    now: SystemTime,
) -> Result<(String, Input), CliError> {
    let path = Path::new(spec);
    if path.is_file() {
        // A file: the same program and server, any time.
        let mut f = filter.clone();
        f.since_ns = None;
        f.until_ns = None;
        let input = Input::file(path, &f).map_err(|e| no_source(args, e, "--baseline: "))?;
        return Ok((spec.to_owned(), input));
    }
    let (since_ns, until_ns) = time::parse_window(spec, now)
        .map_err(|e| CliError::usage(format!("--baseline: {e} (no such file either)")))?;
    let mut f = filter.clone();
    f.since_ns = since_ns;
    f.until_ns = until_ns;
    let input = read(args, &f, trace_file, false)?;
    Ok((format!("the window {spec}"), input))
}
