//! Go/no-go gates: small expressions over a report's numbers, each true or
//! false, for scripts and CI (`--gate 'p90(link.transit) < 2ms'`).
//!
//! The language is in `expr` (its grammar there).
//!
//! STAGE names any row the report prints: a span name (`tool.dispatch`,
//! the whole dispatch; `link.transit`: its time per command, summed over
//! its spans wherever it occurs), `unattributed`, a warmth (`cold`, `warm`,
//! `waited`: their dispatch) or one of the CLI's own stages (`cli.run`...);
//! or a quoted name. A name that is none of them is refused with the names
//! there are.
//! Values are durations or plain numbers, checked when the gate is read:
//! a duration is compared only with a duration (`2ms`, not `2`), and a
//! duration divided by a duration is a number (`cold.p50 / warm.p50 < 3`).
//! `count` is a number. A gate whose statistics rest on fewer commands
//! than the minimum fails, saying so, rather than passing on no data.

mod expr;

use std::fmt;

use serde::Serialize;

use self::expr::{Cmp, Expr, Field, Kind, Pop, kind};
use crate::aggregate::Numbers;
use crate::stats::Summary;

/// A malformed gate, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--gate {expr:?}: {reason}")]
#[non_exhaustive]
pub struct GateError {
    /// The gate as given.
    pub expr: String,
    /// What is wrong, at which point.
    pub reason: String,
}

/// A parsed gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    text: String,
    left: Expr,
    cmp: Cmp,
    right: Expr,
}

/// A gate's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GateResult {
    /// The gate as given.
    pub gate: String,
    /// Whether it holds (and rests on enough commands).
    pub pass: bool,
    /// Its two sides' values, as text (`1.204ms`), when known.
    pub left: Option<String>,
    /// The right side's value.
    pub right: Option<String>,
    /// The fewest commands any of its statistics rests on.
    pub commands: Option<u64>,
    /// Why it failed when not by its comparison (too little data).
    pub reason: Option<String>,
}

impl fmt::Display for GateResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  {}",
            if self.pass { "PASS" } else { "FAIL" },
            self.gate
        )?;
        match (&self.reason, &self.left, &self.right) {
            (Some(reason), _, _) => write!(f, "  ({reason})"),
            (None, Some(l), Some(r)) => {
                write!(f, "  ({l} {} {r}", self.op())?;
                if let Some(n) = self.commands {
                    write!(f, "; {n} commands")?;
                }
                write!(f, ")")
            }
            _ => Ok(()),
        }
    }
}

impl GateResult {
    /// The comparison's operator, as the gate writes it.
    pub(super) fn op(&self) -> &str {
        ["<=", ">=", "==", "!=", "<", ">"]
            .into_iter()
            .find(|op| self.gate.contains(op))
            .unwrap_or("?")
    }
}

impl Gate {
    /// Reads a gate.
    pub fn parse(text: &str) -> Result<Gate, GateError> {
        let fail = |reason: String| GateError {
            expr: text.to_owned(),
            reason,
        };
        let expr::Parsed { left, cmp, right } = expr::parse(text).map_err(fail)?;
        Ok(Gate {
            text: text.trim().to_owned(),
            left,
            cmp,
            right,
        })
    }

    /// Checks the gate against `numbers`; statistics over fewer than
    /// `min_count` commands make it fail.
    pub fn check(&self, numbers: &Numbers, min_count: u64) -> GateResult {
        let mut result = GateResult {
            gate: self.text.clone(),
            pass: false,
            left: None,
            right: None,
            commands: None,
            reason: None,
        };
        let mut fewest: Option<(u64, String)> = None;
        let left = eval(&self.left, numbers, &mut fewest);
        let right = eval(&self.right, numbers, &mut fewest);
        result.commands = fewest.as_ref().map(|(n, _)| *n);
        let (l, r) = match (left, right) {
            (Ok(l), Ok(r)) => (l, r),
            (Err(reason), _) | (_, Err(reason)) => {
                result.reason = Some(reason);
                return result;
            }
        };
        let k = kind(&self.left).unwrap_or(Kind::Number);
        result.left = Some(show(l, k));
        result.right = Some(show(r, k));
        if let Some((n, what)) = fewest
            && n < min_count
        {
            result.reason = Some(format!(
                "too little data: {what} rests on {n} command{} (at least {min_count} needed; see --min-count)",
                if n == 1 { "" } else { "s" }
            ));
            return result;
        }
        result.pass = match self.cmp {
            Cmp::Lt => l < r,
            Cmp::Le => l <= r,
            Cmp::Gt => l > r,
            Cmp::Ge => l >= r,
            Cmp::Eq => l == r,
            Cmp::Ne => l != r,
        };
        result
    }
}

fn eval(e: &Expr, n: &Numbers, fewest: &mut Option<(u64, String)>) -> Result<f64, String> {
    let mut note = |count: u64, what: String| {
        if fewest.as_ref().is_none_or(|(c, _)| count < *c) {
            *fewest = Some((count, what));
        }
    };
    Ok(match e {
        Expr::Lit(v, _) => *v,
        Expr::Neg(inner) => -eval(inner, n, fewest)?,
        Expr::Bin(a, op, b) => {
            let (x, y) = (eval(a, n, fewest)?, eval(b, n, fewest)?);
            match op {
                '+' => x + y,
                '-' => x - y,
                '*' => x * y,
                _ => {
                    if y == 0.0 {
                        return Err("divides by zero".into());
                    }
                    x / y
                }
            }
        }
        Expr::Stage(stage, field) => {
            if let Some(p) = row_population(stage) {
                return pop(&p, *field, n, &mut note);
            }
            let time = match n.stages_by_name.get(stage) {
                Some(stats) => Some(&stats.time),
                None => n.cli.iter().find(|r| r.name == *stage).map(|r| &r.time),
            };
            let Some(time) = time else {
                if *field == Field::Count {
                    return Ok(0.0);
                }
                return Err(unknown_row(stage, n));
            };
            if *field != Field::Count {
                note(time.count, format!("{}({stage})", field_name(*field)));
            }
            summary_field(time, *field)
        }
        Expr::Share(stage, field) => {
            let whole = crate::stats::Shares {
                p50: 1.0,
                p90: 1.0,
                mean: 1.0,
                max: 1.0,
            };
            let shares = match row_population(stage) {
                Some(Pop::Unattributed) => n.unattributed.as_ref().map(|u| u.share),
                Some(Pop::All) => n.dispatch.map(|_| whole),
                _ => n.stages_by_name.get(stage).map(|s| s.share),
            };
            let Some(s) = shares else {
                return Err(unknown_row(stage, n));
            };
            note(n.commands, format!("share({stage})"));
            match field {
                Field::P50 => s.p50,
                Field::P90 => s.p90,
                Field::Max => s.max,
                _ => s.mean,
            }
        }
        Expr::Pop(p, field) => pop(p, *field, n, &mut note)?,
    })
}

/// The population a report row stands for, when `name` is one: the
/// dispatch (`tool.dispatch`), what no stage covers, or a warmth.
fn row_population(name: &str) -> Option<Pop> {
    Some(match name {
        telemetry::spans::TOOL_DISPATCH => Pop::All,
        "unattributed" | "(unattributed)" => Pop::Unattributed,
        "cold" => Pop::Warmth("cold"),
        "warm" => Pop::Warmth("warm"),
        "waited" => Pop::Warmth("waited"),
        _ => return None,
    })
}

/// Every row name the report prints for `n`, in its order: the dispatch,
/// each stage, `unattributed`, each warmth, the CLI's own stages.
pub(crate) fn row_names(n: &Numbers) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    };
    if n.dispatch.is_some() {
        add(telemetry::spans::TOOL_DISPATCH);
    }
    for row in &n.stages {
        add(&row.name);
    }
    if n.unattributed.is_some() {
        add("unattributed");
    }
    for w in &n.warmth {
        add(w.warmth.name());
    }
    for row in &n.cli {
        add(&row.name);
    }
    names
}

/// Why `name` names nothing, with the names that exist.
fn unknown_row(name: &str, n: &Numbers) -> String {
    let names = row_names(n);
    if names.is_empty() {
        format!("no command has a `{name}` stage (the report has no rows)")
    } else {
        format!(
            "no command has a `{name}` stage; the report's rows are: {}",
            names.join(", ")
        )
    }
}

fn pop(
    p: &Pop,
    field: Field,
    n: &Numbers,
    note: &mut impl FnMut(u64, String),
) -> Result<f64, String> {
    let (summary, name) = match p {
        Pop::All => (n.dispatch, "all".to_owned()),
        Pop::Warmth(w) => (
            n.warmth
                .iter()
                .find(|r| r.warmth.name() == *w)
                .map(|r| r.dispatch),
            (*w).to_owned(),
        ),
        Pop::FirstOutput => (n.time_to_first_output, "first_output".to_owned()),
        Pop::AfterFirstOutput => (n.after_first_output, "after_first_output".to_owned()),
        Pop::Unattributed => (
            n.unattributed.as_ref().map(|u| u.time),
            "unattributed".to_owned(),
        ),
    };
    if field == Field::Count {
        return Ok(summary.map_or(0.0, |s| s.count as f64));
    }
    let Some(summary) = summary else {
        note(0, name.clone());
        return Err(format!("too little data: no {name} commands"));
    };
    note(summary.count, format!("{name}.{}", field_name(field)));
    Ok(summary_field(&summary, field))
}

fn summary_field(s: &Summary, field: Field) -> f64 {
    match field {
        Field::P50 => s.p50_ns as f64,
        Field::P90 => s.p90_ns as f64,
        Field::P99 => s.p99_ns as f64,
        Field::Max => s.max_ns as f64,
        Field::Mean => s.mean_ns as f64,
        Field::Count => s.count as f64,
    }
}

fn field_name(f: Field) -> &'static str {
    match f {
        Field::P50 => "p50",
        Field::P90 => "p90",
        Field::P99 => "p99",
        Field::Max => "max",
        Field::Mean => "mean",
        Field::Count => "count",
    }
}

/// A value as text: durations with a unit, numbers as they are.
fn show(v: f64, k: Kind) -> String {
    match k {
        Kind::Number => {
            let text = format!("{v:.4}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            text.to_owned()
        }
        Kind::Duration => crate::format::duration(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Reducer};
    use crate::model::{Trace, client_span};

    fn numbers(count: u64) -> Numbers {
        let mut reducer = Reducer::default();
        let mut commands: Vec<Command> = Vec::new();
        for i in 0..count {
            let trace = u128::from(i) + 1;
            let span =
                |id: u64, parent: u64, name: &str, start: u64, end: u64, warmth: Option<&str>| {
                    let mut span = client_span(trace, id, parent, name, start, end);
                    span.attrs.warmth = warmth.map(Box::from);
                    span
                };
            let cold = i % 2 == 0;
            // Cold: 10 ms with 4 ms acquire; warm: 5 ms with 0.5 ms; the
            // rest is link.transit.
            let (total, acquire) = if cold {
                (10_000_000, 4_000_000)
            } else {
                (5_000_000, 500_000)
            };
            let spans = vec![
                span(1, 0, "tool.dispatch", 0, total, None),
                span(
                    2,
                    1,
                    "session.acquire",
                    0,
                    acquire,
                    Some(if cold { "cold" } else { "warm" }),
                ),
                span(3, 1, "link.transit", acquire, total, None),
            ];
            commands.extend(reducer.commands(Trace::new(trace, spans)));
        }
        crate::aggregate::numbers(&commands, &reducer.table, 5)
    }

    fn check(gate: &str, count: u64, min: u64) -> GateResult {
        Gate::parse(gate).unwrap().check(&numbers(count), min)
    }

    #[test]
    fn true_and_false_gates() {
        // link.transit: 6 ms (cold) and 4.5 ms (warm), ten of each.
        assert!(check("p90(link.transit) <= 6ms", 20, 10).pass);
        assert!(!check("p90(link.transit) < 6ms", 20, 10).pass);
        assert!(check("p50(link.transit) == 4.5ms", 20, 10).pass);
        assert!(check("cold.p50 / warm.p50 < 3", 20, 10).pass);
        assert!(check("cold.p50 / warm.p50 >= 2", 20, 10).pass);
        assert!(!check("cold.p50 / warm.p50 > 2", 20, 10).pass);
        // Shares: 0.4 (cold) and 0.1 (warm); p50 is 0.1, p90 0.4.
        assert!(check("share(session.acquire).p50 >= 10%", 20, 10).pass);
        assert!(!check("share(session.acquire).p50 >= 0.30", 20, 10).pass);
        assert!(check("share(session.acquire).p90 >= 0.30", 20, 10).pass);
        assert!(check("all.count == 20", 20, 10).pass);
        assert!(check("count(noise.handshake) == 0", 20, 10).pass);
        assert!(check("-(warm.p50 - cold.p50) == 5000us", 20, 10).pass);
        assert!(check("unattributed.max == 0ns", 20, 10).pass);
        let r = check("p90(link.transit) < 6ms", 20, 10);
        assert_eq!(
            r.to_string(),
            "FAIL  p90(link.transit) < 6ms  (6.00ms < 6.00ms; 20 commands)"
        );
    }

    #[test]
    fn every_row_the_report_prints_can_be_named() {
        let n = numbers(20);
        let names = row_names(&n);
        assert_eq!(
            names,
            [
                "tool.dispatch",
                "session.acquire",
                "link.transit",
                "unattributed",
                "cold",
                "warm"
            ]
        );
        for name in &names {
            for stat in ["p50", "p90", "p99", "max", "mean"] {
                let gate = format!("{stat}({name}) >= 0ns");
                let r = Gate::parse(&gate).unwrap().check(&n, 10);
                assert!(r.pass, "{r}");
            }
            let r = Gate::parse(&format!("count({name}) > 0"))
                .unwrap()
                .check(&n, 10);
            assert!(r.pass, "{r}");
        }
        // The gate: the dispatch is 10 ms (cold) or 5 ms (warm).
        assert!(check("p99(tool.dispatch) < 60s", 20, 10).pass);
        assert!(check("p50(tool.dispatch) == all.p50", 20, 10).pass);
        assert!(check("max(tool.dispatch) == 10ms", 20, 10).pass);
        assert!(check("p50(cold) == cold.p50", 20, 10).pass);
        assert!(check("share(tool.dispatch).p50 == 100%", 20, 10).pass);
        // An unknown name says which names there are.
        let r = check("p99(tool.dispach) < 60s", 20, 10);
        assert!(!r.pass);
        assert_eq!(
            r.reason.as_deref(),
            Some(
                "no command has a `tool.dispach` stage; the report's rows are: tool.dispatch, \
                 session.acquire, link.transit, unattributed, cold, warm"
            )
        );
    }

    #[test]
    fn too_little_data_fails_and_says_so() {
        let r = check("cold.p50 / warm.p50 < 3", 6, 10);
        assert!(!r.pass);
        let reason = r.reason.unwrap();
        assert!(
            reason.contains("too little data") && reason.contains("3 commands"),
            "{reason}"
        );
        let r = check("p50(noise.handshake) < 1ms", 20, 10);
        assert!(!r.pass);
        assert!(
            r.reason
                .unwrap()
                .contains("no command has a `noise.handshake` stage")
        );
        let r = check("waited.p50 < 1ms", 20, 10);
        assert!(!r.pass);
        assert!(r.reason.unwrap().contains("too little data"));
    }

    #[test]
    fn malformed_gates_are_refused_with_a_reason() {
        for (gate, says) in [
            ("p90(link.transit) < 2", "give the number a unit"),
            ("p90(link.transit)", "expected a comparison"),
            ("p90(link.transit) < 2parsecs", "unknown unit"),
            ("p95(link.transit) < 2ms", "is not a statistic"),
            ("p90 < 2ms", "needs a stage"),
            ("share(x).p99 < 1", "use p50, p90, mean or max"),
            ("lukewarm.p50 < 1ms", "is not a population"),
            ("cold.p50 * warm.p50 < 1ms", "has no meaning"),
            ("(cold.p50 < 1ms", "expected `)`"),
            ("cold.p50 < 1ms extra", "unexpected"),
            ("cold.p50 =< 1ms", "is not a comparison"),
            ("", "expected a number or a statistic"),
        ] {
            let err = Gate::parse(gate).unwrap_err();
            assert!(err.reason.contains(says), "{gate:?}: {}", err.reason);
            assert!(err.to_string().starts_with("--gate "), "{err}");
        }
    }
}
