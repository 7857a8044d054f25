//! Trace analysis, one library for every view: reading traces, placing
//! their spans, statistics, gates, A/B and the renderers, for
//! `core-client trace show`, `core-client report` and `probe` (which ends
//! with a report), and the CLI's other views (`history`, `agent status`).
//! Of the workspace it links the trace layer (`telemetry`: the span
//! vocabulary, the trace file's generations) and, through it, `proto`;
//! never a service, the agent or the client library.
//!
//! # Layout
//!
//! - [`model`]: the one trace model: [`model::Span`] (typed attributes a
//!   report reads, every attribute when a view asks) and [`model::Trace`].
//! - `scan`: the one OTLP JSON reader (lines or documents, hex or base64
//!   ids), spans grouped into traces over a window of lines.
//! - [`trace_file`]: the local trace file and its rotated generations: every
//!   trace, or the one a selector names.
//! - [`source`]: where a report's commands come from (the trace file, an
//!   OTLP JSON file, Jaeger) and which it keeps.
//! - [`jaeger`]: the client of Jaeger's query API (the report's and the
//!   tests').
//! - [`command`]: one trace's commands reduced to numbers.
//! - [`stats`]: nearest-rank percentiles and shares.
//! - [`histogram`]: logarithmic buckets.
//! - [`aggregate`]: a population's numbers.
//! - [`compare`]: A/B with a rank test.
//! - [`gate`]: go/no-go expressions (the language in `gate::expr`).
//! - [`report`]: a whole report, the `--json` schema, and how one is built.
//! - `layout`: the one waterfall layout (tree order, depths, clamped
//!   intervals) that both renderers draw.
//! - `exemplars`: the commands the page draws as waterfalls (the median
//!   and the slowest) and their spans laid out.
//! - [`show`]: `trace show`: one trace as text (header, waterfall, stages).
//! - `table`: the terminal's tables.
//! - [`views`]: the CLI's other views (`history`, `agent status`, `agent
//!   warm`), drawn from the rows the CLI gathers.
//! - [`text`]: the report as terminal tables.
//! - [`html`]: the report as one self-contained page.
//! - [`format`](mod@format): numbers as every renderer writes them.
//! - [`time`]: times as reports write them and people give them, and
//!   durations as people write them.
//! - [`names`]: server ids as the names the user gave them (the CLI knows
//!   them).
//!
//! # One reader
//!
//! The reader is the hand-written scanner (borrowed serde pieces), not
//! `opentelemetry-proto`'s serde types. Measured on the report benchmark's
//! file (30,000 realistic commands, 152 MiB, 539,000 spans; optimised build
//! on the 2-core development machine): the scanner reads 161 to 178 MiB/s
//! on one thread (157 with every attribute kept) and up to 300 MiB/s on
//! two; the serde types parse 203 to 214 MiB/s and, turned into this model
//! and grouped by trace, 185 to 191 MiB/s, on one thread only. Comparable
//! speed, then; the scanner is kept because it reads what the serde types
//! refuse (base64 ids, as protobuf's JSON mapping and some Jaeger answers
//! write them; a malformed value is no value, not a lost line), keeps only
//! what is asked for, and parses large inputs in parallel.
//!
//! # Crates, and where the code is our own
//!
//! Adopted: `winnow` (the gate language), `statrs` (the rank test's erfc),
//! `comfy-table` (the tables of `trace show`, `history` and `agent
//! status`), `jiff` (every time written or read). Kept, one line each:
//! - histograms: the buckets' edges are fixed to the nanosecond by
//!   `rex.report/1` (five a decade from 100 ns); `hdrhistogram`'s buckets
//!   are binary, kept to 0 to 5 significant digits, so counts at an edge
//!   would move.
//! - percentiles: nearest rank, every percentile a value that occurred (the
//!   schema says so); `hdrhistogram`'s are the bucket's highest equivalent.
//! - the report's terminal tables: every column a fixed width, a stage name
//!   wider than its column pushing only its own row; `comfy-table` can fix
//!   a column's least width, but a wider cell widens the whole column.
//! - the page's HTML: written straight into one string, its escaping
//!   (`html::Esc`, five characters as `&lt;` `&gt;` `&amp;` `&quot;`
//!   `&#39;`, pinned by its tests) kept too. `maud`'s escaper leaves `'`;
//!   `askama` (and `askama_escape` alone) escapes the same five but as
//!   numeric references (`&#60;` for `<`), so every escaped byte the tests
//!   and docs fix would change; and templating the page in either would
//!   rewrite its 1,400 lines of markup and SVG for no change in what it
//!   shows.

// Tests may unwrap; the library may not (the workspace lints deny it).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod aggregate;
pub mod command;
pub mod compare;
mod exemplars;
pub mod format;
pub mod gate;
pub mod histogram;
pub mod html;
pub mod jaeger;
mod layout;
pub mod model;
pub mod names;
pub mod report;
mod scan;
pub mod show;
pub mod source;
pub mod stats;
mod table;
pub mod text;
pub mod time;
pub mod trace_file;
pub mod views;

pub use names::{Names, NoNames};
pub use scan::read_spans;
