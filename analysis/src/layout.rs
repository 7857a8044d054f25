//! The one waterfall layout: a trace's spans in tree order (each after its
//! parent, siblings by start), with their depths and their intervals
//! clamped (never ending before they start). `trace show` draws every
//! span of a trace; the report's page draws a dispatch and what lies
//! under it.

use std::collections::HashMap;

use crate::model::Span;

/// One span placed in the tree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    /// The span.
    pub span: &'a Span,
    /// 0 for a root, 1 for its children, ...
    pub depth: u32,
    /// Its start, nanoseconds since the Unix epoch.
    pub start: u64,
    /// Its end, never before its start.
    pub end: u64,
}

impl Row<'_> {
    /// Its duration in nanoseconds.
    pub(crate) fn duration(&self) -> u64 {
        self.end - self.start
    }
}

/// Every span of `spans` once, in tree order. A span whose parent is not
/// there is a root; roots and each span's children are ordered by start
/// (then as read). Spans caught in a parent cycle (no root above them)
/// follow as extra roots, earliest first.
pub(crate) fn tree(spans: &[Span]) -> Vec<Row<'_>> {
    let children = Children::of(spans);
    let mut roots: Vec<usize> = (0..spans.len())
        .filter(|i| children.parent.get(*i).copied().flatten().is_none())
        .collect();
    roots.sort_by_key(|i| children.by_start(*i));
    // Cycle members, earliest first, as fallback roots after the real ones.
    let mut everything: Vec<usize> = (0..spans.len()).collect();
    everything.sort_by_key(|i| children.by_start(*i));
    roots.extend(everything);
    children.walk(&roots)
}

/// `spans[root]` and the spans under it, in tree order (children by
/// start, then as read); each span once, however the parents loop.
pub(crate) fn subtree(spans: &[Span], root: usize) -> Vec<Row<'_>> {
    Children::of(spans).walk(&[root])
}

/// The spans with their parents and children, by index.
struct Children<'a> {
    spans: &'a [Span],
    /// Each span's parent among `spans`, if it is there.
    parent: Vec<Option<usize>>,
    /// Each span's children, by start.
    kids: Vec<Vec<usize>>,
}

impl<'a> Children<'a> {
    fn of(spans: &'a [Span]) -> Children<'a> {
        let mut by_id: HashMap<u64, usize> = HashMap::new();
        for (i, span) in spans.iter().enumerate() {
            by_id.entry(span.id).or_insert(i);
        }
        let parent: Vec<Option<usize>> = spans
            .iter()
            .enumerate()
            .map(|(i, span)| {
                (span.parent != 0)
                    .then(|| by_id.get(&span.parent).copied())
                    .flatten()
                    .filter(|p| *p != i)
            })
            .collect();
        let mut kids: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
        for (i, p) in parent.iter().enumerate() {
            if let Some(siblings) = p.and_then(|p| kids.get_mut(p)) {
                siblings.push(i);
            }
        }
        let mut children = Children {
            spans,
            parent,
            kids: Vec::new(),
        };
        for siblings in &mut kids {
            siblings.sort_by_key(|i| children.by_start(*i));
        }
        children.kids = kids;
        children
    }

    /// The order of span `i` among its siblings.
    fn by_start(&self, i: usize) -> (u64, usize) {
        (self.spans.get(i).map_or(0, |s| s.start), i)
    }

    /// Depth first from each of `roots` in turn, each span once.
    fn walk(&self, roots: &[usize]) -> Vec<Row<'a>> {
        let mut out = Vec::with_capacity(self.spans.len());
        let mut visited = vec![false; self.spans.len()];
        for root in roots {
            let mut stack = vec![(*root, 0u32)];
            while let Some((i, depth)) = stack.pop() {
                match visited.get_mut(i) {
                    Some(seen) if !*seen => *seen = true,
                    _ => continue,
                }
                let Some(span) = self.spans.get(i) else {
                    continue;
                };
                out.push(Row {
                    span,
                    depth,
                    start: span.start,
                    end: span.clamped_end(),
                });
                if let Some(kids) = self.kids.get(i) {
                    stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::client_span as span;

    #[test]
    fn children_follow_their_parent_by_start_and_cycles_end() {
        let spans = vec![
            span(1, 1, 0, "root", 0, 10),
            span(1, 3, 1, "late", 5, 6),
            span(1, 2, 1, "early", 1, 4),
            span(1, 4, 2, "inner", 2, 1),
            span(1, 5, 6, "cycle a", 7, 8),
            span(1, 6, 5, "cycle b", 8, 9),
        ];
        let rows: Vec<(&str, u32, u64)> = tree(&spans)
            .iter()
            .map(|r| (&*r.span.name, r.depth, r.duration()))
            .collect();
        assert_eq!(
            rows,
            [
                ("root", 0, 10),
                ("early", 1, 3),
                ("inner", 2, 0),
                ("late", 1, 1),
                ("cycle a", 0, 1),
                ("cycle b", 1, 1),
            ]
        );
        let under: Vec<&str> = subtree(&spans, 2).iter().map(|r| &*r.span.name).collect();
        assert_eq!(under, ["early", "inner"]);
    }
}
