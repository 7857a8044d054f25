//! One command as a report sees it: a `tool.dispatch` span and what lies
//! under it, reduced to numbers (each stage's time, summed per stage path),
//! so that no span is kept once its trace has been read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use telemetry::spans;

use crate::model::{Interner, Span, Trace, without_placed_copies};

/// A stage path's index in a [`StageTable`].
pub type StageId = u32;

/// How a command's session was found (`session.acquire`'s
/// `rex.session.warmth`, or `rex.session.reused` from older clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Warmth {
    /// The dispatch established the session.
    Cold,
    /// A live session was there.
    Warm,
    /// A session was being established (by a warm or another call) and the
    /// dispatch waited for it.
    Waited,
    /// Not recorded (no `session.acquire`).
    Unknown,
}

impl Warmth {
    /// Every kind, in report order.
    pub const ALL: [Warmth; 4] = [Warmth::Cold, Warmth::Warm, Warmth::Waited, Warmth::Unknown];

    /// Its name in reports and gates.
    pub fn name(self) -> &'static str {
        match self {
            Warmth::Cold => "cold",
            Warmth::Warm => "warm",
            Warmth::Waited => "waited",
            Warmth::Unknown => "unknown",
        }
    }
}

/// One stage path: a span name under `tool.dispatch`, by the names of its
/// ancestors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInfo {
    /// The span name.
    pub name: Arc<str>,
    /// The enclosing stage (`None`: a child of `tool.dispatch`).
    pub parent: Option<StageId>,
    /// 0 for children of `tool.dispatch`.
    pub depth: u32,
    /// Where it first started, from its dispatch's start (orders siblings
    /// as a waterfall does).
    pub first_offset: u64,
}

/// The stage paths seen, each once.
#[derive(Debug, Clone, Default)]
pub struct StageTable {
    stages: Vec<StageInfo>,
    index: HashMap<(Option<StageId>, Arc<str>), StageId>,
}

/// At most this many stage paths are told apart (a hostile or foreign
/// file's others are not counted).
const MAX_STAGES: usize = 4096;

impl StageTable {
    /// The id of `name` under `parent`, added if new.
    fn id(&mut self, parent: Option<StageId>, name: &Arc<str>, offset: u64) -> Option<StageId> {
        if let Some(id) = self.index.get(&(parent, name.clone())) {
            return Some(*id);
        }
        if self.stages.len() >= MAX_STAGES {
            return None;
        }
        let id = StageId::try_from(self.stages.len()).ok()?;
        let depth = parent.and_then(|p| self.get(p)).map_or(0, |p| p.depth + 1);
        self.stages.push(StageInfo {
            name: name.clone(),
            parent,
            depth,
            first_offset: offset,
        });
        self.index.insert((parent, name.clone()), id);
        Some(id)
    }

    /// The stage with this id.
    pub fn get(&self, id: StageId) -> Option<&StageInfo> {
        self.stages.get(usize::try_from(id).ok()?)
    }

    /// How many stage paths there are.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The path of names from `tool.dispatch` (exclusive) to `id`.
    pub fn path(&self, id: StageId) -> Vec<Arc<str>> {
        let mut names = Vec::new();
        let mut at = Some(id);
        while let Some(stage) = at.and_then(|i| self.get(i)) {
            names.push(stage.name.clone());
            at = stage.parent;
        }
        names.reverse();
        names
    }

    /// `id`'s path joined by `/`.
    pub fn path_text(&self, id: StageId) -> String {
        self.path(id)
            .iter()
            .map(|n| &**n)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The ids in tree order: each stage after its parent, siblings by
    /// where they first started.
    pub fn tree_order(&self) -> Vec<StageId> {
        let mut children: HashMap<Option<StageId>, Vec<StageId>> = HashMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            if let Ok(id) = StageId::try_from(i) {
                children.entry(stage.parent).or_default().push(id);
            }
        }
        for list in children.values_mut() {
            list.sort_by_key(|id| self.get(*id).map(|s| (s.first_offset, s.name.clone())));
        }
        let mut out = Vec::with_capacity(self.stages.len());
        let mut stack: Vec<StageId> = children.get(&None).cloned().unwrap_or_default();
        stack.reverse();
        while let Some(id) = stack.pop() {
            out.push(id);
            if let Some(kids) = children.get(&Some(id)) {
                stack.extend(kids.iter().rev());
            }
        }
        out
    }
}

/// The CLI's own stages around one dispatch (`cli.run` and its children).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CliTimes {
    /// `cli.run`'s duration.
    pub run: u64,
    /// Its other children (`cli.startup`, `cli.finish`, ...) by name.
    pub stages: Vec<(Arc<str>, u64)>,
}

/// One command, reduced.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The trace id.
    pub trace: u128,
    /// When its dispatch started, nanoseconds since the Unix epoch.
    pub start: u64,
    /// The dispatch's duration.
    pub dispatch: u64,
    /// The program's name (`process.executable.name`).
    pub program: Option<Arc<str>>,
    /// The exec-server's id (`rex.server.id`).
    pub server: Option<Arc<str>>,
    /// How its session was found.
    pub warmth: Warmth,
    /// Time to the first output byte, if it printed anything.
    pub first_output: Option<u64>,
    /// Each stage path's time, summed over its spans, by id.
    pub stages: Vec<(StageId, u64)>,
    /// The dispatch's time covered by none of its direct stages.
    pub unattributed: u64,
    /// The stage that took most of it (descending while one child takes at
    /// least half of its parent), and that stage's time.
    pub dominant: Option<(StageId, u64)>,
    /// Whether the dispatch's status is error.
    pub failed: bool,
    /// The CLI's own stages, when the dispatch is under `cli.run`.
    pub cli: Option<CliTimes>,
    /// What its flow-control windows held it up.
    pub window: WindowWaits,
}

/// How long a command's stdin and output waited for their windows
/// (`rex.stdin.window_wait_ns` on the dispatch, `rex.output.credit_wait_ns`
/// on the process's run), and the windows they had; 0 where not recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowWaits {
    /// Stdin's wait for its window.
    pub stdin_wait: u64,
    /// The widest stdin window.
    pub stdin_window: u64,
    /// Output's wait for credit.
    pub output_wait: u64,
    /// The output window at the end.
    pub output_window: u64,
}

impl WindowWaits {
    /// Takes in what `span` says, keeping the largest of each.
    fn note(&mut self, span: &Span) {
        let take = |into: &mut u64, v: Option<i64>| {
            if let Some(v) = v.and_then(|v| u64::try_from(v).ok()) {
                *into = (*into).max(v);
            }
        };
        take(&mut self.stdin_wait, span.attrs.stdin_window_wait_ns);
        take(&mut self.stdin_window, span.attrs.stdin_window);
        take(&mut self.output_wait, span.attrs.output_credit_wait_ns);
        take(&mut self.output_window, span.attrs.output_window);
    }

    /// Whether a window held the command up.
    pub fn limited(&self) -> bool {
        self.stdin_wait > 0 || self.output_wait > 0
    }
}

impl Command {
    /// The time of stage `id` (0 if it did not occur).
    pub fn stage(&self, id: StageId) -> u64 {
        self.stages
            .binary_search_by_key(&id, |(s, _)| *s)
            .ok()
            .and_then(|i| self.stages.get(i))
            .map_or(0, |(_, ns)| *ns)
    }

    /// The trace id as 32 hex digits.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace)
    }
}

/// Direct children of a dispatch that run alongside the tiled path and
/// would double-count it (or, for `exec.first_output`, cover it from the
/// start).
const ALONGSIDE: &[&str] = &[spans::EXEC_FIRST_OUTPUT, spans::TERMINAL_DELIVERY];

/// A session's set-up, alongside the path when it is a direct child of the
/// dispatch: the call rode in handshake message 1, and the set-up happened
/// while it travelled (under `session.acquire` it is part of the path).
const SETUP_ALONGSIDE: &[&str] = &[
    spans::RELAY_CONNECT,
    spans::NOISE_HANDSHAKE,
    spans::SESSION_INIT,
];

/// Turns traces into commands, naming stage paths in one table.
#[derive(Debug)]
pub struct Reducer {
    /// The stage paths seen so far.
    pub table: StageTable,
    strings: Interner,
    /// Traces read that held no `tool.dispatch`.
    pub traces_without_commands: u64,
    /// Commands made (before any filter).
    pub commands_read: u64,
}

impl Default for Reducer {
    fn default() -> Reducer {
        Reducer {
            table: StageTable::default(),
            strings: Interner::new(100_000),
            traces_without_commands: 0,
            commands_read: 0,
        }
    }
}

impl Reducer {
    /// The commands in `trace` (one per `tool.dispatch`).
    pub fn commands(&mut self, trace: Trace) -> Vec<Command> {
        let spans = without_placed_copies(trace.spans);
        let roots: Vec<usize> = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| &*s.name == spans::TOOL_DISPATCH)
            .map(|(i, _)| i)
            .collect();
        if roots.is_empty() {
            self.traces_without_commands += 1;
            return Vec::new();
        }
        let mut children: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut by_id: HashMap<u64, usize> = HashMap::new();
        for (i, span) in spans.iter().enumerate() {
            by_id.insert(span.id, i);
            if span.parent != 0 && span.parent != span.id {
                children.entry(span.parent).or_default().push(i);
            }
        }
        for list in children.values_mut() {
            list.sort_by_key(|i| spans.get(*i).map(|s| s.start));
        }
        let tree = Tree {
            spans: &spans,
            children: &children,
        };
        let commands: Vec<Command> = roots
            .into_iter()
            .filter_map(|root| self.command(&tree, root, &by_id))
            .collect();
        self.commands_read += commands.len() as u64;
        commands
    }

    fn command(
        &mut self,
        tree: &Tree<'_>,
        root: usize,
        by_id: &HashMap<u64, usize>,
    ) -> Option<Command> {
        let dispatch = tree.spans.get(root)?;
        let mut sums: HashMap<StageId, u64> = HashMap::new();
        let mut warmth: Option<(u64, Warmth)> = None;
        let mut seen: HashSet<u64> = HashSet::from([dispatch.id]);
        // (span index, its stage's parent stage)
        let mut stack: Vec<(usize, Option<StageId>)> = tree
            .kids(dispatch.id)
            .iter()
            .rev()
            .map(|i| (*i, None))
            .collect();
        let mut stage_of: HashMap<u64, StageId> = HashMap::new();
        let mut window = WindowWaits::default();
        window.note(dispatch);
        while let Some((i, parent)) = stack.pop() {
            let Some(span) = tree.spans.get(i) else {
                continue;
            };
            if !seen.insert(span.id) {
                continue;
            }
            window.note(span);
            let offset = span.start.saturating_sub(dispatch.start);
            let Some(id) = self.table.id(parent, &span.name, offset) else {
                continue;
            };
            stage_of.insert(span.id, id);
            *sums.entry(id).or_default() += span.duration();
            if &*span.name == spans::SESSION_ACQUIRE {
                let found = warmth_of(span);
                if warmth.is_none_or(|(start, _)| span.start < start) {
                    warmth = Some((span.start, found));
                }
            }
            for kid in tree.kids(span.id).iter().rev() {
                stack.push((*kid, Some(id)));
            }
        }
        let direct: Vec<&Span> = tree
            .kids(dispatch.id)
            .iter()
            .filter_map(|i| tree.spans.get(*i))
            .collect();
        let first_output = direct
            .iter()
            .find(|s| &*s.name == spans::EXEC_FIRST_OUTPUT)
            .map(|s| s.duration());
        let tiled: Vec<&Span> = direct
            .iter()
            .copied()
            .filter(|s| !ALONGSIDE.contains(&&*s.name) && !SETUP_ALONGSIDE.contains(&&*s.name))
            .collect();
        let covered = union_within(&tiled, dispatch.start, dispatch.end);
        let dominant =
            dominant(tree, &tiled).and_then(|s| stage_of.get(&s.id).map(|id| (*id, s.duration())));
        let mut stages: Vec<(StageId, u64)> = sums.into_iter().collect();
        stages.sort_unstable_by_key(|(id, _)| *id);
        let program = dispatch
            .attrs
            .program
            .as_deref()
            .map(|p| self.strings.intern(p));
        let server = dispatch
            .attrs
            .server
            .as_deref()
            .map(|s| self.strings.intern(s));
        let cli = by_id
            .get(&dispatch.parent)
            .and_then(|i| tree.spans.get(*i))
            .filter(|parent| &*parent.name == spans::CLI_RUN)
            .map(|run| CliTimes {
                run: run.duration(),
                stages: tree
                    .kids(run.id)
                    .iter()
                    .filter_map(|i| tree.spans.get(*i))
                    .filter(|s| s.id != dispatch.id)
                    .map(|s| (s.name.clone(), s.duration()))
                    .collect(),
            });
        Some(Command {
            trace: dispatch.trace,
            start: dispatch.start,
            dispatch: dispatch.duration(),
            program,
            server,
            warmth: warmth.map_or(Warmth::Unknown, |(_, w)| w),
            first_output,
            stages,
            unattributed: dispatch.duration().saturating_sub(covered),
            dominant,
            failed: dispatch.error,
            cli,
            window,
        })
    }
}

/// The spans of a trace with their children by parent id.
struct Tree<'a> {
    spans: &'a [Span],
    children: &'a HashMap<u64, Vec<usize>>,
}

impl Tree<'_> {
    fn kids(&self, id: u64) -> &[usize] {
        self.children.get(&id).map_or(&[], Vec::as_slice)
    }
}

fn warmth_of(acquire: &Span) -> Warmth {
    match acquire.attrs.warmth.as_deref() {
        Some("cold") => Warmth::Cold,
        Some("warm") => Warmth::Warm,
        Some("waited") => Warmth::Waited,
        _ => match acquire.attrs.reused {
            Some(true) => Warmth::Warm,
            Some(false) => Warmth::Cold,
            None => Warmth::Unknown,
        },
    }
}

/// The largest of `candidates`, then, while one of its children (other
/// than those alongside) takes at least half of it, that child.
fn dominant<'a>(tree: &Tree<'a>, candidates: &[&'a Span]) -> Option<&'a Span> {
    let mut best: &Span = candidates.iter().copied().max_by_key(|s| s.duration())?;
    for _ in 0..32 {
        let child = tree
            .kids(best.id)
            .iter()
            .filter_map(|i| tree.spans.get(*i))
            .filter(|s| !ALONGSIDE.contains(&&*s.name))
            .max_by_key(|s| s.duration());
        match child {
            Some(c) if c.duration().saturating_mul(2) >= best.duration() && c.duration() > 0 => {
                best = c;
            }
            _ => break,
        }
    }
    Some(best)
}

/// How much of `[start, end)` the spans cover together.
fn union_within(spans: &[&Span], start: u64, end: u64) -> u64 {
    let mut intervals: Vec<(u64, u64)> = spans
        .iter()
        .map(|s| (s.start.clamp(start, end), s.end.clamp(start, end)))
        .filter(|(a, b)| b > a)
        .collect();
    intervals.sort_unstable();
    let mut covered = 0;
    let mut current: Option<(u64, u64)> = None;
    for (a, b) in intervals {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                covered += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((ca, cb)) = current {
        covered += cb - ca;
    }
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u64, parent: u64, name: &str, start: u64, end: u64) -> Span {
        crate::model::client_span(7, id, parent, name, start, end)
    }

    fn trace(spans: Vec<Span>) -> Trace {
        Trace::new(7, spans)
    }

    #[test]
    fn a_command_sums_its_stages_by_path_and_finds_what_dominates() {
        let mut dispatch = span(1, 9, "tool.dispatch", 100, 1100);
        dispatch.attrs.program = Some("ls".into());
        let mut acquire = span(3, 1, "session.acquire", 110, 500);
        acquire.attrs.warmth = Some("cold".into());
        let spans = vec![
            span(9, 0, "cli.run", 0, 1500),
            span(8, 9, "cli.startup", 0, 100),
            dispatch,
            span(2, 1, "dispatch.prepare", 100, 110),
            acquire,
            span(4, 3, "noise.handshake", 120, 400),
            span(5, 1, "rpc.server.exec", 500, 1000),
            span(6, 5, "process.run", 600, 990),
            span(10, 1, "relay.frame.recv", 1000, 1010),
            span(11, 1, "relay.frame.recv", 1020, 1050),
            span(12, 1, "exec.first_output", 100, 700),
            span(13, 1, "terminal.delivery", 650, 1100),
        ];
        let mut reducer = Reducer::default();
        let commands = reducer.commands(trace(spans));
        assert_eq!(commands.len(), 1);
        let c = &commands[0];
        assert_eq!((c.start, c.dispatch), (100, 1000));
        assert_eq!(c.program.as_deref(), Some("ls"));
        assert_eq!(c.warmth, Warmth::Cold);
        assert_eq!(c.first_output, Some(600));
        // Gaps: 1010..1020 and 1050..1100 (delivery runs alongside).
        assert_eq!(c.unattributed, 60);
        let t = &reducer.table;
        let by_path: HashMap<String, u64> = c
            .stages
            .iter()
            .map(|(id, ns)| (t.path_text(*id), *ns))
            .collect();
        assert_eq!(by_path["relay.frame.recv"], 40);
        assert_eq!(by_path["session.acquire/noise.handshake"], 280);
        assert_eq!(by_path["rpc.server.exec/process.run"], 390);
        // rpc.server.exec (500) is the largest; process.run takes 390 of it.
        let (dominant, ns) = c.dominant.unwrap();
        assert_eq!(t.path_text(dominant), "rpc.server.exec/process.run");
        assert_eq!(ns, 390);
        let cli = c.cli.as_ref().unwrap();
        assert_eq!(cli.run, 1500);
        assert_eq!(cli.stages, [(Arc::from("cli.startup"), 100)]);
        let order: Vec<String> = t.tree_order().iter().map(|id| t.path_text(*id)).collect();
        assert_eq!(order[0], "dispatch.prepare");
        assert_eq!(order[1], "exec.first_output");
        assert_eq!(order[2], "session.acquire");
        assert_eq!(order[3], "session.acquire/noise.handshake");
    }

    #[test]
    fn older_clients_warmth_and_unknown_and_no_output() {
        let mut acquire = span(3, 1, "session.acquire", 0, 5);
        acquire.attrs.reused = Some(true);
        let mut reducer = Reducer::default();
        let c = &reducer.commands(trace(vec![span(1, 0, "tool.dispatch", 0, 10), acquire]))[0];
        assert_eq!(c.warmth, Warmth::Warm);
        assert_eq!(c.first_output, None);
        assert_eq!(c.unattributed, 5);
        let c = &reducer.commands(trace(vec![span(1, 0, "tool.dispatch", 0, 10)]))[0];
        assert_eq!(c.warmth, Warmth::Unknown);
        assert_eq!(c.unattributed, 10);
        assert_eq!(c.dominant, None);
    }

    #[test]
    fn traces_without_a_dispatch_cycles_and_placed_copies() {
        let mut reducer = Reducer::default();
        assert!(
            reducer
                .commands(trace(vec![span(1, 0, "metadata.persist", 0, 1)]))
                .is_empty()
        );
        assert_eq!(reducer.traces_without_commands, 1);
        // A cycle below the dispatch ends.
        let spans = vec![
            span(1, 0, "tool.dispatch", 0, 10),
            span(2, 1, "a", 0, 5),
            span(3, 2, "b", 0, 5),
            span(2, 3, "a", 0, 5),
        ];
        assert_eq!(reducer.commands(trace(spans)).len(), 1);
        // The exec-server's own span wins over the client's copy.
        let mut copy = span(5, 1, "rpc.server.exec", 0, 9);
        copy.attrs.placed = true;
        let spans = vec![
            span(1, 0, "tool.dispatch", 0, 10),
            copy,
            span(5, 1, "rpc.server.exec", 1, 8),
        ];
        let c = &reducer.commands(trace(spans))[0];
        assert_eq!(c.stages.iter().map(|(_, ns)| ns).sum::<u64>(), 7);
    }

    #[test]
    fn union_merges_overlaps_and_clips() {
        let a = span(1, 0, "a", 0, 10);
        let b = span(2, 0, "b", 5, 20);
        let c = span(3, 0, "c", 30, 50);
        assert_eq!(union_within(&[&a, &b, &c], 2, 40), 18 + 10);
    }
}
