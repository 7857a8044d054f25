//! A whole report: what was read, the numbers, the comparison and the
//! gates; also the `--json` schema (`docs/report.md`).

use serde::Serialize;

use crate::aggregate::Numbers;
use crate::compare::Comparison;
use crate::gate::GateResult;
use crate::source::{Filter, SourceInfo};

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
