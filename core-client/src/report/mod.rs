//! `core-client report`: where the time goes across many commands.
//!
//! Layout:
//! - [`scan`]: OTLP JSON read fast and in bounded memory, grouped into
//!   traces over a window of lines.
//! - [`command`]: one trace's commands reduced to numbers (stage times by
//!   path, warmth, first output, unattributed time, the dominant stage).
//! - [`source`]: the local trace file (with its generations), an OTLP JSON
//!   file, or Jaeger ([`jaeger`]); and the filters.
//! - [`stats`]: nearest-rank percentiles and shares; [`histogram`]:
//!   logarithmic buckets.
//! - [`aggregate`]: a population's numbers.
//! - [`compare`]: A/B with a rank test.
//! - [`gate`]: go/no-go expressions.
//! - [`text`]: the terminal table; [`Report`] is also the `--json` schema
//!   (`docs/report.md`).
//! - [`waterfall`]: the median and the slowest command, their spans read
//!   again and laid out; [`html`]: the page (`--html`).

pub mod aggregate;
pub mod command;
pub mod compare;
pub mod gate;
pub mod histogram;
pub mod html;
pub mod jaeger;
pub mod scan;
pub mod source;
pub mod stats;
pub mod text;
pub mod waterfall;

use serde::Serialize;

use self::aggregate::Numbers;
use self::compare::Comparison;
use self::gate::GateResult;
use self::source::{Filter, SourceInfo};

/// The `--json` schema's name and version.
pub const SCHEMA: &str = "rex.report/1";

/// A whole report: what was read, the numbers, the comparison and gates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// What was read.
    pub source: SourceInfo,
    /// Which commands were kept.
    pub filter: Filter,
    /// The numbers.
    #[serde(flatten)]
    pub numbers: Numbers,
    /// The A/B comparison, with `--baseline`.
    pub comparison: Option<Comparison>,
    /// The gates' outcomes, with `--gate`.
    pub gates: Vec<GateResult>,
}
