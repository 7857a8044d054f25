//! A whole report: what was read, the numbers, the comparison and the
//! gates; also the `--json` schema (`docs/report.md`).

use serde::Serialize;

use crate::aggregate::{self, Numbers};
use crate::compare::{self, Comparison, Side};
use crate::gate::{Gate, GateResult};
use crate::source::{Filter, Input, SourceInfo};

/// The `--json` schema's name and version.
pub const SCHEMA: &str = "rex.report/1";

/// A whole report: what was read, the numbers, the comparison and gates.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
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

/// How a report is made beyond its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// How many of the slowest commands are listed.
    pub top: usize,
    /// Statistics over fewer commands make a gate fail, and an A/B row
    /// say "too little data".
    pub min_count: u64,
}

impl Options {
    /// Options listing the `top` slowest, with gates and A/B resting on
    /// at least `min_count` commands.
    pub fn new(top: usize, min_count: u64) -> Options {
        Options { top, min_count }
    }
}

/// The report of `current` (kept by `filter`), compared with `baseline`
/// (named) if given, with `gates` checked.
pub fn build(
    current: Input,
    baseline: Option<(String, Input)>,
    gates: &[Gate],
    filter: Filter,
    options: Options,
) -> Report {
    let numbers = aggregate::numbers(&current.commands, &current.reducer.table, options.top);
    let comparison = baseline.as_ref().map(|(name, base)| {
        compare::compare(
            name,
            &Side {
                commands: &base.commands,
                table: &base.reducer.table,
            },
            &Side {
                commands: &current.commands,
                table: &current.reducer.table,
            },
            options.min_count,
        )
    });
    let gates = gates
        .iter()
        .map(|g| g.check(&numbers, options.min_count))
        .collect();
    Report {
        schema: SCHEMA,
        source: current.info,
        filter,
        numbers,
        comparison,
        gates,
    }
}

impl Report {
    /// Whether every gate holds.
    pub fn gates_hold(&self) -> bool {
        self.gates.iter().all(|g| g.pass)
    }
}
