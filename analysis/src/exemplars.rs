//! The waterfalls a report draws: which commands (the median one and the
//! slowest), and their spans placed against their dispatch, in tree order,
//! for a picture (the numbers alone hold no spans: the spans are read
//! again from the source, [`crate::source::Origin::traces`]).

use std::collections::HashSet;

use telemetry::spans::TOOL_DISPATCH;

use super::command::{Command, Warmth};
use super::stats;
use crate::layout::{self, Row};
use crate::model::{Span, Trace, without_placed_copies};

/// At most this many spans are drawn per waterfall (the shortest are left
/// out first).
pub(crate) const MAX_BARS: usize = 300;

/// Why a command was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Its dispatch is the median (nearest rank).
    Median,
    /// Its dispatch is the longest.
    Slowest,
}

impl Role {
    /// Its name in the page (`median`, `slowest`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Median => "median",
            Role::Slowest => "slowest",
        }
    }
}

/// A command picked for a waterfall.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pick {
    /// Why.
    pub role: Role,
    /// Its trace.
    pub trace: u128,
    /// Its dispatch's start, nanoseconds since the Unix epoch.
    pub start: u64,
    /// Its dispatch, nanoseconds.
    pub dispatch: u64,
    /// The program's name.
    pub program: Option<String>,
    /// The exec-server's id.
    pub server: Option<String>,
    /// How its session was found.
    pub warmth: Warmth,
}

impl Pick {
    fn of(role: Role, c: &Command) -> Pick {
        Pick {
            role,
            trace: c.trace,
            start: c.start,
            dispatch: c.dispatch,
            program: c.program.as_deref().map(str::to_owned),
            server: c.server.as_deref().map(str::to_owned),
            warmth: c.warmth,
        }
    }

    /// The trace id as 32 hex digits.
    pub(crate) fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace)
    }
}

/// The median command (the one at the median's nearest rank when ordered
/// by dispatch) and the slowest (the first of the report's slowest list),
/// in that order; none without commands.
pub(crate) fn pick(commands: &[Command]) -> Vec<Pick> {
    let mut order: Vec<&Command> = commands.iter().collect();
    order.sort_by(|a, b| {
        a.dispatch
            .cmp(&b.dispatch)
            .then(a.trace.cmp(&b.trace))
            .then(a.start.cmp(&b.start))
    });
    let median = stats::percentile(&order, 50.0);
    let slowest = commands
        .iter()
        .min_by(|a, b| b.dispatch.cmp(&a.dispatch).then(a.trace.cmp(&b.trace)));
    [
        median.map(|c| Pick::of(Role::Median, c)),
        slowest.map(|c| Pick::of(Role::Slowest, c)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// One span of a waterfall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bar {
    /// The span name.
    pub name: String,
    /// The service that made it.
    pub service: String,
    /// 0 for the dispatch, 1 for its children, ...
    pub depth: u32,
    /// Its start from the dispatch's start, nanoseconds (negative: before).
    pub offset_ns: i64,
    /// Its duration, nanoseconds.
    pub duration_ns: u64,
    /// Whether its status is error.
    pub error: bool,
    /// The clock source that placed it on the client's clock (a span the
    /// client wrote for another host, or a `link.transit` leg).
    pub clock_source: Option<String>,
    /// How far off its placement may be, nanoseconds (0: exact).
    pub clock_bound_ns: i64,
    /// For a `link.transit` leg whose split is unknown: the round trip it
    /// is part of, nanoseconds.
    pub unsplit_round_trip_ns: Option<i64>,
    /// For a leg: `to_server` or `to_client`.
    pub direction: Option<String>,
}

/// A picked command's spans, laid out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Waterfall {
    /// The command.
    pub pick: Pick,
    /// Its dispatch and the spans under it, in tree order (each after its
    /// parent, siblings by start); empty when its spans were not found.
    pub bars: Vec<Bar>,
    /// Spans under the dispatch not drawn (beyond [`MAX_BARS`], the
    /// shortest first, with what lies under them).
    pub left_out: usize,
}

/// The waterfall of `pick`, from the spans of `traces` (those of other
/// traces are ignored).
pub(crate) fn lay_out(pick: Pick, traces: &[Trace]) -> Waterfall {
    let spans: Vec<Span> = traces
        .iter()
        .filter(|t| t.id == pick.trace)
        .flat_map(|t| t.spans.iter().cloned())
        .collect();
    let spans = without_placed_copies(spans);
    let dispatches = || {
        spans
            .iter()
            .enumerate()
            .filter(|(_, s)| &*s.name == TOOL_DISPATCH)
    };
    let Some((at, root)) = dispatches()
        .find(|(_, s)| s.start == pick.start)
        .or_else(|| dispatches().next())
    else {
        return Waterfall {
            pick,
            bars: Vec::new(),
            left_out: 0,
        };
    };
    let tree = layout::subtree(&spans, at);
    let kept: HashSet<u64> = if tree.len() > MAX_BARS {
        let mut longest: Vec<&Row<'_>> = tree.iter().collect();
        // The dispatch first, then the longest; ties in tree order.
        longest.sort_by_key(|r| (r.depth != 0, std::cmp::Reverse(r.duration())));
        longest.iter().take(MAX_BARS).map(|r| r.span.id).collect()
    } else {
        tree.iter().map(|r| r.span.id).collect()
    };
    let mut drawn: HashSet<u64> = HashSet::new();
    let mut bars = Vec::new();
    for row in &tree {
        let span = row.span;
        let parent_drawn = row.depth == 0 || drawn.contains(&span.parent);
        if !parent_drawn || !kept.contains(&span.id) {
            continue;
        }
        drawn.insert(span.id);
        bars.push(Bar {
            name: span.name.to_string(),
            service: span.service.to_string(),
            depth: row.depth,
            offset_ns: i64::try_from(i128::from(row.start) - i128::from(root.start)).unwrap_or(0),
            duration_ns: row.duration(),
            error: span.error,
            clock_source: span.attrs.clock_source.as_deref().map(str::to_owned),
            clock_bound_ns: span.attrs.clock_bound_ns.unwrap_or(0).max(0),
            unsplit_round_trip_ns: span
                .attrs
                .split_unknown
                .then_some(span.attrs.round_trip_ns.unwrap_or(0)),
            direction: span.attrs.direction.as_deref().map(str::to_owned),
        });
    }
    Waterfall {
        pick,
        left_out: tree.len() - bars.len(),
        bars,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::command::Reducer;

    use crate::model::client_span as span;

    /// A trace with one dispatch of `total` ns starting at 1000.
    fn simple(id: u128, total: u64) -> Trace {
        Trace::new(
            id,
            vec![
                span(id, 1, 0, "cli.run", 0, 2000 + total),
                span(id, 2, 1, "tool.dispatch", 1000, 1000 + total),
                span(id, 3, 2, "session.acquire", 1000, 1000 + total / 2),
                span(id, 4, 2, "rpc.server.exec", 1000 + total / 2, 1000 + total),
            ],
        )
    }

    #[test]
    fn the_median_and_the_slowest_are_picked() {
        let mut r = Reducer::default();
        let commands: Vec<Command> = [30u64, 10, 50, 20, 40]
            .iter()
            .enumerate()
            .flat_map(|(i, t)| r.commands(simple(i as u128 + 1, *t)))
            .collect();
        let picks = pick(&commands);
        assert_eq!(picks.len(), 2);
        assert_eq!((picks[0].role, picks[0].dispatch), (Role::Median, 30));
        assert_eq!(
            (picks[1].role, picks[1].dispatch, picks[1].trace),
            (Role::Slowest, 50, 3)
        );
        assert!(pick(&[]).is_empty());
    }

    #[test]
    fn spans_are_placed_against_their_dispatch_in_tree_order() {
        let mut t = simple(7, 100);
        let mut remote = span(7, 5, 4, "process.run", 1060, 1090);
        remote.service = Arc::from("exec-server");
        remote.error = true;
        t.spans.push(remote);
        // Another trace's spans are ignored.
        let other = simple(8, 10);
        let mut r = Reducer::default();
        let c = r.commands(t.clone()).remove(0);
        let w = lay_out(Pick::of(Role::Median, &c), &[other, t]);
        let rows: Vec<(&str, u32, i64, u64)> = w
            .bars
            .iter()
            .map(|b| (&*b.name, b.depth, b.offset_ns, b.duration_ns))
            .collect();
        assert_eq!(
            rows,
            [
                ("tool.dispatch", 0, 0, 100),
                ("session.acquire", 1, 0, 50),
                ("rpc.server.exec", 1, 50, 50),
                ("process.run", 2, 60, 30),
            ]
        );
        assert_eq!(w.bars[3].service, "exec-server");
        assert!(w.bars[3].error);
        assert_eq!(w.left_out, 0);
    }

    #[test]
    fn missing_spans_give_an_empty_waterfall() {
        let mut r = Reducer::default();
        let c = r.commands(simple(7, 100)).remove(0);
        let w = lay_out(Pick::of(Role::Slowest, &c), &[]);
        assert!(w.bars.is_empty());
    }

    #[test]
    fn past_the_bound_the_shortest_spans_and_their_children_are_left_out() {
        let mut spans = vec![span(1, 1, 0, "tool.dispatch", 0, 1_000_000)];
        // 400 children of decreasing length; each has one child of length 1.
        for i in 0..400u64 {
            let id = 10 + 2 * i;
            spans.push(span(1, id, 1, "relay.frame.recv", i, i + 10_000 - i));
            spans.push(span(1, id + 1, id, "inner", i, i + 1));
        }
        let mut r = Reducer::default();
        let c = r.commands(Trace::new(1, spans.clone())).remove(0);
        let w = lay_out(Pick::of(Role::Slowest, &c), &[Trace::new(1, spans)]);
        assert_eq!(w.bars.len(), MAX_BARS);
        assert_eq!(w.bars.len() + w.left_out, 801);
        assert_eq!(w.bars[0].name, "tool.dispatch");
        // The longest children are kept: those that started first.
        assert!(w.bars.iter().skip(1).all(|b| b.name == "relay.frame.recv"));
        assert_eq!(w.bars.last().map(|b| b.offset_ns), Some(298));
    }
}
