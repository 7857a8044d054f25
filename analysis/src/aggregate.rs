//! From commands to a report's numbers: the dispatch and each stage's
//! distribution and share, cold against warm, the time to the first output
//! against the rest per program, the slowest commands and what dominated
//! them, the unattributed time and the CLI's own stages.
//!
//! A stage's duration statistics are over the commands that have it
//! (`count`); its shares are over every command, counting those without it
//! as 0.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::command::{Command, StageId, StageTable, Warmth};
use super::histogram::Histogram;
use super::stats::{Shares, Summary};

/// At most this many programs get a row of their own in the first-output
/// table; the rest are counted together.
const MAX_PROGRAMS: usize = 50;

/// One stage path's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StageRow {
    /// The names from `tool.dispatch` (exclusive), joined by `/`.
    pub path: String,
    /// The span name.
    pub name: String,
    /// 0 for a direct child of `tool.dispatch`.
    pub depth: u32,
    /// Its duration over the commands that have it.
    #[serde(flatten)]
    pub time: Summary,
    /// Its share of each command's dispatch, over all commands.
    pub share: Shares,
    /// Its duration's distribution in logarithmic buckets (the `histogram`
    /// module: five per decade from 100 ns).
    pub histogram: Histogram,
}

/// One stage name's numbers, whatever its path (what gates read).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct NameStats {
    /// Its duration per command (summed over its spans) over the commands
    /// that have it.
    #[serde(flatten)]
    pub time: Summary,
    /// Its share of each command's dispatch, over all commands.
    pub share: Shares,
}

/// The dispatch of the commands whose session was found one way.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WarmthRow {
    /// `cold`, `warm`, `waited` or `unknown`.
    pub warmth: Warmth,
    /// Their dispatch.
    pub dispatch: Summary,
    /// Their `session.acquire`, if they have one.
    pub acquire: Option<Summary>,
    /// Their dispatch's distribution in logarithmic buckets.
    pub histogram: Histogram,
}

/// What a cold start costs: the cold dispatch's percentiles minus the warm
/// dispatch's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ColdCost {
    /// At the median, nanoseconds (negative: cold was faster).
    pub p50_ns: i64,
    /// At the 90th percentile, nanoseconds.
    pub p90_ns: i64,
}

/// One program's time to first output and the rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProgramOutput {
    /// The program's name (`(other)` for programs past the first 50,
    /// `(unknown)` when not recorded).
    pub program: String,
    /// All its commands.
    pub commands: u64,
    /// From dispatch to the first output byte, over those that printed.
    pub before_first_output: Option<Summary>,
    /// From the first output byte to the end, over those that printed.
    pub after_first_output: Option<Summary>,
    /// Those that printed nothing (never given an "after" part).
    pub without_output: u64,
}

/// One of the slowest commands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Slow {
    /// The trace id (`core-client trace show ID`).
    pub trace_id: String,
    /// When it was dispatched (RFC 3339, UTC).
    pub start: String,
    /// The program's name.
    pub program: Option<String>,
    /// The exec-server's id.
    pub server: Option<String>,
    /// Its dispatch, nanoseconds.
    pub dispatch_ns: u64,
    /// How its session was found.
    pub warmth: Warmth,
    /// The stage that took most of it (a path).
    pub dominant: Option<String>,
    /// That stage's time, nanoseconds.
    pub dominant_ns: Option<u64>,
}

/// The time of dispatches that none of their stages covers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Unattributed {
    /// Per command.
    #[serde(flatten)]
    pub time: Summary,
    /// As a share of each dispatch.
    pub share: Shares,
}

/// The commands a flow-control window held up: how long their stdin
/// waited for its window and their output for credit, and the widest
/// windows they had.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WindowLimited {
    /// Commands whose stdin or output waited.
    pub commands: u64,
    /// Stdin's wait, over the commands whose stdin waited.
    pub stdin_wait: Option<Summary>,
    /// The widest stdin window any command had, in bytes.
    pub stdin_window_max: u64,
    /// Output's wait for credit, over the commands whose output waited.
    pub output_wait: Option<Summary>,
    /// The widest output window any command had, in bytes.
    pub output_window_max: u64,
}

/// What windows held up in `commands`; `None` when nothing waited.
fn window_limited(commands: &[Command]) -> Option<WindowLimited> {
    let limited: Vec<&Command> = commands.iter().filter(|c| c.window.limited()).collect();
    if limited.is_empty() {
        return None;
    }
    // Each flow's wait over the commands where it waited, and its widest
    // window over all the commands.
    let wait = |of: fn(&Command) -> u64| {
        let mut waits: Vec<u64> = limited.iter().map(|c| of(c)).filter(|w| *w > 0).collect();
        Summary::of(&mut waits)
    };
    let widest = |of: fn(&Command) -> u64| commands.iter().map(of).max().unwrap_or(0);
    Some(WindowLimited {
        commands: limited.len() as u64,
        stdin_wait: wait(|c| c.window.stdin_wait),
        stdin_window_max: widest(|c| c.window.stdin_window),
        output_wait: wait(|c| c.window.output_wait),
        output_window_max: widest(|c| c.window.output_window),
    })
}

/// One of the CLI's own stages (`cli.run` and its children other than the
/// dispatch), over the commands run by the CLI.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CliRow {
    /// The span name.
    pub name: String,
    /// Its duration.
    #[serde(flatten)]
    pub time: Summary,
}

impl CliRow {
    /// Its depth in the CLI's tree: 0 for `cli.run`, 1 for its stages.
    pub fn depth(&self) -> u32 {
        u32::from(self.name != telemetry::spans::CLI_RUN)
    }
}

/// The numbers of one population of commands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Numbers {
    /// How many commands.
    pub commands: u64,
    /// How many of them failed.
    pub failed: u64,
    /// The first and last dispatch (RFC 3339, UTC).
    pub first_start: Option<String>,
    /// The last dispatch.
    pub last_start: Option<String>,
    /// The dispatch (`tool.dispatch`).
    pub dispatch: Option<Summary>,
    /// The dispatch's distribution in logarithmic buckets (five per decade
    /// from 100 ns; empty without commands).
    pub dispatch_histogram: Histogram,
    /// Each stage path, in tree order.
    pub stages: Vec<StageRow>,
    /// Each stage name, whatever its path.
    pub stages_by_name: BTreeMap<String, NameStats>,
    /// The dispatch by how the session was found.
    pub warmth: Vec<WarmthRow>,
    /// What a cold start costs, when there are both cold and warm commands.
    pub cold_start_cost: Option<ColdCost>,
    /// From dispatch to the first output byte, over the commands that
    /// printed.
    pub time_to_first_output: Option<Summary>,
    /// From the first output byte to the end, over the same commands.
    pub after_first_output: Option<Summary>,
    /// Commands that printed nothing.
    pub without_output: u64,
    /// Time to first output and the rest, per program.
    pub first_output: Vec<ProgramOutput>,
    /// The slowest commands, slowest first.
    pub slowest: Vec<Slow>,
    /// What no stage covers.
    pub unattributed: Option<Unattributed>,
    /// What flow-control windows held up, when they held any command up.
    pub window_limited: Option<WindowLimited>,
    /// The CLI's own stages.
    pub cli: Vec<CliRow>,
}

/// The numbers of `commands` (stage paths named in `table`), with the `top`
/// slowest listed.
pub(crate) fn numbers(commands: &[Command], table: &StageTable, top: usize) -> Numbers {
    let n = commands.len();
    let mut dispatch: Vec<u64> = commands.iter().map(|c| c.dispatch).collect();
    let (stages, stages_by_name) = stage_rows(commands, table);
    let warmth = warmth_rows(commands, table);
    let cold_start_cost = cold_cost(&warmth);
    let mut slowest: Vec<&Command> = commands.iter().collect();
    slowest.sort_by(|a, b| b.dispatch.cmp(&a.dispatch).then(a.trace.cmp(&b.trace)));
    let slowest = slowest
        .into_iter()
        .take(top)
        .map(|c| Slow {
            trace_id: c.trace_hex(),
            start: crate::time::rfc3339(c.start),
            program: c.program.as_deref().map(str::to_owned),
            server: c.server.as_deref().map(str::to_owned),
            dispatch_ns: c.dispatch,
            warmth: c.warmth,
            dominant: c.dominant.map(|(id, _)| table.path_text(id)),
            dominant_ns: c.dominant.map(|(_, ns)| ns),
        })
        .collect();
    let mut unattributed: Vec<u64> = commands.iter().map(|c| c.unattributed).collect();
    let mut unattributed_share: Vec<f64> = commands
        .iter()
        .filter(|c| c.unattributed > 0)
        .map(|c| share(c.unattributed, c.dispatch))
        .collect();
    let absent = n - unattributed_share.len();
    let unattributed = Summary::of(&mut unattributed).and_then(|time| {
        Shares::of(&mut unattributed_share, absent).map(|share| Unattributed { time, share })
    });
    let mut before: Vec<u64> = commands.iter().filter_map(|c| c.first_output).collect();
    let mut after: Vec<u64> = commands
        .iter()
        .filter_map(|c| c.first_output.map(|f| c.dispatch.saturating_sub(f)))
        .collect();
    Numbers {
        time_to_first_output: Summary::of(&mut before),
        after_first_output: Summary::of(&mut after),
        without_output: commands.iter().filter(|c| c.first_output.is_none()).count() as u64,
        commands: n as u64,
        failed: commands.iter().filter(|c| c.failed).count() as u64,
        first_start: commands
            .iter()
            .map(|c| c.start)
            .min()
            .map(crate::time::rfc3339),
        last_start: commands
            .iter()
            .map(|c| c.start)
            .max()
            .map(crate::time::rfc3339),
        dispatch_histogram: Histogram::of(&dispatch),
        dispatch: Summary::of(&mut dispatch),
        stages,
        stages_by_name,
        warmth,
        cold_start_cost,
        first_output: first_output_rows(commands),
        slowest,
        unattributed,
        window_limited: window_limited(commands),
        cli: cli_rows(commands),
    }
}

/// `part` as a share of `whole` (0 when the whole is 0).
pub(crate) fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Per command, each stage name's time summed over its paths.
pub(crate) fn by_name(command: &Command, table: &StageTable) -> HashMap<Arc<str>, u64> {
    let mut sums: HashMap<Arc<str>, u64> = HashMap::new();
    for (id, ns) in &command.stages {
        if let Some(stage) = table.get(*id) {
            *sums.entry(stage.name.clone()).or_default() += ns;
        }
    }
    sums
}

fn stage_rows(
    commands: &[Command],
    table: &StageTable,
) -> (Vec<StageRow>, BTreeMap<String, NameStats>) {
    let n = commands.len();
    let mut times: HashMap<StageId, Vec<u64>> = HashMap::new();
    let mut shares: HashMap<StageId, Vec<f64>> = HashMap::new();
    let mut name_times: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
    let mut name_shares: HashMap<Arc<str>, Vec<f64>> = HashMap::new();
    for c in commands {
        for (id, ns) in &c.stages {
            times.entry(*id).or_default().push(*ns);
            shares.entry(*id).or_default().push(share(*ns, c.dispatch));
        }
        for (name, ns) in by_name(c, table) {
            name_shares
                .entry(name.clone())
                .or_default()
                .push(share(ns, c.dispatch));
            name_times.entry(name).or_default().push(ns);
        }
    }
    let rows = table
        .tree_order()
        .into_iter()
        .filter_map(|id| {
            let stage = table.get(id)?;
            let values = times.get_mut(&id)?;
            let present = shares.get_mut(&id)?;
            let absent = n - present.len();
            Some(StageRow {
                path: table.path_text(id),
                name: stage.name.to_string(),
                depth: stage.depth,
                histogram: Histogram::of(values),
                time: Summary::of(values)?,
                share: Shares::of(present, absent)?,
            })
        })
        .collect();
    let mut names = BTreeMap::new();
    for (name, mut values) in name_times {
        let Some(present) = name_shares.get_mut(&name) else {
            continue;
        };
        let absent = n - present.len();
        if let (Some(time), Some(share)) = (Summary::of(&mut values), Shares::of(present, absent)) {
            names.insert(name.to_string(), NameStats { time, share });
        }
    }
    (rows, names)
}

fn warmth_rows(commands: &[Command], table: &StageTable) -> Vec<WarmthRow> {
    Warmth::ALL
        .iter()
        .filter_map(|w| {
            let of: Vec<&Command> = commands.iter().filter(|c| c.warmth == *w).collect();
            let mut dispatch: Vec<u64> = of.iter().map(|c| c.dispatch).collect();
            let mut acquire: Vec<u64> = of
                .iter()
                .filter_map(|c| {
                    by_name(c, table)
                        .get(telemetry::spans::SESSION_ACQUIRE)
                        .copied()
                })
                .collect();
            Some(WarmthRow {
                warmth: *w,
                histogram: Histogram::of(&dispatch),
                dispatch: Summary::of(&mut dispatch)?,
                acquire: Summary::of(&mut acquire),
            })
        })
        .collect()
}

fn cold_cost(rows: &[WarmthRow]) -> Option<ColdCost> {
    let get = |w: Warmth| rows.iter().find(|r| r.warmth == w).map(|r| r.dispatch);
    let (cold, warm) = (get(Warmth::Cold)?, get(Warmth::Warm)?);
    let diff = |a: u64, b: u64| i64::try_from(i128::from(a) - i128::from(b)).unwrap_or(0);
    Some(ColdCost {
        p50_ns: diff(cold.p50_ns, warm.p50_ns),
        p90_ns: diff(cold.p90_ns, warm.p90_ns),
    })
}

fn first_output_rows(commands: &[Command]) -> Vec<ProgramOutput> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for c in commands {
        *counts
            .entry(c.program.as_deref().unwrap_or("(unknown)"))
            .or_default() += 1;
    }
    let mut programs: Vec<(&str, u64)> = counts.into_iter().collect();
    programs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named: HashMap<&str, usize> = programs
        .iter()
        .take(MAX_PROGRAMS)
        .enumerate()
        .map(|(i, (p, _))| (*p, i))
        .collect();
    let other = named.len();
    let mut groups: Vec<(Vec<u64>, Vec<u64>, u64, u64)> = vec![Default::default(); other + 1];
    for c in commands {
        let program = c.program.as_deref().unwrap_or("(unknown)");
        let slot = named.get(program).copied().unwrap_or(other);
        let Some(group) = groups.get_mut(slot) else {
            continue;
        };
        group.2 += 1;
        match c.first_output {
            Some(first) => {
                group.0.push(first);
                group.1.push(c.dispatch.saturating_sub(first));
            }
            None => group.3 += 1,
        }
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| g.2 > 0)
        .map(
            |(i, (mut before, mut after, commands, without_output))| ProgramOutput {
                program: programs
                    .get(i)
                    .filter(|_| i < other)
                    .map_or_else(|| "(other)".to_owned(), |(p, _)| (*p).to_owned()),
                commands,
                before_first_output: Summary::of(&mut before),
                after_first_output: Summary::of(&mut after),
                without_output,
            },
        )
        .collect()
}

fn cli_rows(commands: &[Command]) -> Vec<CliRow> {
    let mut order: Vec<Arc<str>> = vec![Arc::from(telemetry::spans::CLI_RUN)];
    let mut values: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
    for c in commands {
        let Some(cli) = &c.cli else { continue };
        values.entry(order[0].clone()).or_default().push(cli.run);
        for (name, ns) in &cli.stages {
            if !order.contains(name) {
                order.push(name.clone());
            }
            values.entry(name.clone()).or_default().push(*ns);
        }
    }
    order
        .into_iter()
        .filter_map(|name| {
            let time = Summary::of(values.get_mut(&name)?)?;
            Some(CliRow {
                name: name.to_string(),
                time,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Reducer;
    use crate::model::Trace;
    use crate::model::client_span as span;

    /// A command of `total` ns: acquire `acquire` ns (cold or warm), then
    /// the rest in `rpc.server.exec`; first output at `first` if any.
    fn command(
        reducer: &mut Reducer,
        trace: u128,
        total: u64,
        acquire: u64,
        cold: bool,
        program: &str,
        first: Option<u64>,
    ) -> Command {
        let mut root = span(trace, 1, 0, "tool.dispatch", 0, total);
        root.attrs.program = Some(program.into());
        let mut acq = span(trace, 2, 1, "session.acquire", 0, acquire);
        acq.attrs.warmth = Some(if cold { "cold" } else { "warm" }.into());
        let mut spans = vec![
            root,
            acq,
            span(trace, 3, 1, "rpc.server.exec", acquire, total),
        ];
        if let Some(f) = first {
            spans.push(span(trace, 4, 1, "exec.first_output", 0, f));
        }
        reducer.commands(Trace::new(trace, spans)).remove(0)
    }

    #[test]
    fn window_limited_time_is_gathered_from_the_dispatch_and_the_process() {
        let mut r = Reducer::default();
        let mut commands = Vec::new();
        // Stdin waited 5, 1 and 3 ms (on the dispatch); output waited
        // 20 ms once (on the process's run, under the exec); one command
        // waited for nothing.
        for (i, (stdin, output)) in [(5, 0), (1, 0), (3, 20), (0, 0)].into_iter().enumerate() {
            let trace = i as u128 + 1;
            let mut root = span(trace, 1, 0, "tool.dispatch", 0, 100_000_000);
            root.attrs.stdin_window_wait_ns = Some(stdin * 1_000_000);
            root.attrs.stdin_window = Some(262_144 << i);
            let mut run = span(trace, 4, 3, "process.run", 10, 90_000_000);
            run.attrs.output_credit_wait_ns = Some(output * 1_000_000);
            run.attrs.output_window = Some(4 << 20);
            let spans = vec![
                root,
                span(trace, 3, 1, "rpc.server.exec", 0, 100_000_000),
                run,
            ];
            commands.push(r.commands(Trace::new(trace, spans)).remove(0));
        }
        let n = numbers(&commands, &r.table, 3);
        let w = n.window_limited.expect("three commands waited");
        assert_eq!(w.commands, 3);
        let stdin = w.stdin_wait.unwrap();
        assert_eq!(
            (stdin.count, stdin.p50_ns, stdin.max_ns),
            (3, 3_000_000, 5_000_000)
        );
        let output = w.output_wait.unwrap();
        assert_eq!((output.count, output.max_ns), (1, 20_000_000));
        assert_eq!(w.stdin_window_max, 262_144 << 3);
        assert_eq!(w.output_window_max, 4 << 20);
        // Nothing waited: nothing said.
        assert!(
            numbers(&commands[3..], &r.table, 3)
                .window_limited
                .is_none()
        );
    }

    #[test]
    fn numbers_match_hand_computed_ones() {
        let mut r = Reducer::default();
        let mut commands = Vec::new();
        // Warm: totals 10..=19 ms with 1 ms acquire; cold: 40 and 50 ms with
        // 30 ms acquire.
        for i in 0..10u64 {
            commands.push(command(
                &mut r,
                u128::from(i) + 1,
                (10 + i) * 1_000_000,
                1_000_000,
                false,
                "ls",
                Some(2_000_000),
            ));
        }
        commands.push(command(
            &mut r, 100, 40_000_000, 30_000_000, true, "ls", None,
        ));
        commands.push(command(
            &mut r,
            101,
            50_000_000,
            30_000_000,
            true,
            "make",
            Some(45_000_000),
        ));
        let n = numbers(&commands, &r.table, 3);
        assert_eq!(n.commands, 12);
        let d = n.dispatch.unwrap();
        // Sorted: 10..19, 40, 50 (ms): p50 = rank 6 = 15 ms; p90 = rank
        // ⌈10.8⌉ = 11 = 40 ms.
        assert_eq!(
            (d.p50_ns, d.p90_ns, d.max_ns),
            (15_000_000, 40_000_000, 50_000_000)
        );
        let warm = n.warmth.iter().find(|w| w.warmth == Warmth::Warm).unwrap();
        assert_eq!(warm.dispatch.count, 10);
        assert_eq!(warm.dispatch.p50_ns, 14_000_000);
        let cold = n.warmth.iter().find(|w| w.warmth == Warmth::Cold).unwrap();
        assert_eq!(
            (cold.dispatch.p50_ns, cold.dispatch.p90_ns),
            (40_000_000, 50_000_000)
        );
        assert_eq!(cold.acquire.unwrap().p50_ns, 30_000_000);
        // The histograms count every command once; 40 and 50 ms both fall
        // in bucket 28 (39.8 ms to 63.1 ms).
        assert_eq!(cold.histogram.counts, [2]);
        assert_eq!(cold.histogram.first, 28);
        assert_eq!(n.dispatch_histogram.counts.iter().sum::<u64>(), 12);
        assert_eq!(warm.histogram.counts.iter().sum::<u64>(), 10);
        let exec = n
            .stages
            .iter()
            .find(|s| s.path == "rpc.server.exec")
            .unwrap();
        assert_eq!(exec.histogram.counts.iter().sum::<u64>(), exec.time.count);
        let cost = n.cold_start_cost.unwrap();
        assert_eq!(
            (cost.p50_ns, cost.p90_ns),
            (26_000_000, 50_000_000 - 18_000_000)
        );
        // session.acquire's share: 1/10..1/19 for the warm ones, 0.75 and 0.6.
        let acquire = &n.stages_by_name["session.acquire"];
        assert_eq!(acquire.time.count, 12);
        assert!((acquire.share.max - 0.75).abs() < 1e-12);
        // Sorted shares: 1/19 ... 1/10, 0.6, 0.75: p50 = rank 6 = 1/14.
        assert!((acquire.share.p50 - 1.0 / 14.0).abs() < 1e-12);
        // First output: ls has 11 commands, one silent; make has one.
        let ls = n.first_output.iter().find(|p| p.program == "ls").unwrap();
        assert_eq!((ls.commands, ls.without_output), (11, 1));
        assert_eq!(ls.before_first_output.unwrap().count, 10);
        assert_eq!(ls.after_first_output.unwrap().p50_ns, 12_000_000);
        let make = n.first_output.iter().find(|p| p.program == "make").unwrap();
        assert_eq!(make.after_first_output.unwrap().p50_ns, 5_000_000);
        // The slowest: 50 ms (cold, dominated by the 30 ms acquire? no:
        // rpc.server.exec is 20 ms, acquire 30 ms).
        assert_eq!(n.slowest.len(), 3);
        assert_eq!(n.slowest[0].dispatch_ns, 50_000_000);
        assert_eq!(n.slowest[0].dominant.as_deref(), Some("session.acquire"));
        assert_eq!(n.slowest[2].dominant.as_deref(), Some("rpc.server.exec"));
        // The stages tile every dispatch.
        assert_eq!(n.unattributed.unwrap().time.max_ns, 0);
    }

    #[test]
    fn no_commands_no_numbers() {
        let n = numbers(&[], &StageTable::default(), 10);
        assert_eq!(n.commands, 0);
        assert!(n.dispatch.is_none() && n.stages.is_empty() && n.warmth.is_empty());
        assert!(n.cold_start_cost.is_none());
    }
}
