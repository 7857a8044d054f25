//! The cycles among a crate's modules. Under each module, its children
//! are looked at as wholes (an import from or to anything inside a child
//! counts as the child's): children that import each other, directly or
//! around a loop, are a sibling cycle; the module itself and children that
//! import each other are a parent cycle (the module's own items, not its
//! children's).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::resolve::{Crate, ModPath, Site};

/// Which modules a cycle joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleKind {
    /// Children of one module (with what is inside them).
    Siblings,
    /// A module's own items and one or more of its children.
    ParentAndChildren,
}

/// One import of a cycle: from a module to a module, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The importing module (`a::b`; `crate` for the root).
    pub from: String,
    /// The module that defines what is imported.
    pub to: String,
    /// Where.
    pub site: Site,
}

/// Modules of a crate that import each other.
#[derive(Clone, Debug)]
pub struct Cycle {
    /// Siblings, or a parent and children.
    pub kind: CycleKind,
    /// The module whose children (or which and its children) are in it
    /// (`crate` for the root).
    pub parent: String,
    /// The modules in it (the parent first, for a parent cycle).
    pub members: Vec<String>,
    /// Every import between its members.
    pub imports: Vec<Import>,
}

/// How many imports of one module from another a cycle's text shows.
const SHOWN: usize = 3;

impl fmt::Display for Cycle {
    /// The members, then for each importing module and imported one the
    /// first few imports (`use` lines come first).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.members.join(" <-> "))?;
        let mut by_pair: BTreeMap<(&str, &str), Vec<&Site>> = BTreeMap::new();
        for import in &self.imports {
            by_pair
                .entry((&import.from, &import.to))
                .or_default()
                .push(&import.site);
        }
        for ((from, to), sites) in by_pair {
            write!(f, "\n    {from} -> {to}:")?;
            for site in sites.iter().take(SHOWN) {
                let (file, line, path) = (site.file.display(), site.line, &site.path);
                write!(f, " {file}:{line} ({path})")?;
            }
            if sites.len() > SHOWN {
                write!(f, " and {} more", sites.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

/// What the check found in one crate.
#[derive(Clone, Debug)]
pub struct CrateCycles {
    /// The cycles.
    pub cycles: Vec<Cycle>,
    /// Module files that its `mod` declarations name but that are not in
    /// the sources.
    pub missing: Vec<String>,
    /// The files its modules are in.
    pub files: BTreeSet<PathBuf>,
}

/// The cycles among the modules of the crate whose root file is `root`;
/// `files` holds its sources by path (more files do no harm).
pub fn crate_cycles(root: &Path, files: &BTreeMap<PathBuf, String>) -> CrateCycles {
    let krate = Crate::load(root, files);
    let imports = krate.imports();
    let mut cycles = Vec::new();
    let parents: BTreeSet<ModPath> = krate
        .module_paths()
        .filter_map(|m| m.split_last().map(|(_, parent)| parent.to_vec()))
        .collect();
    for parent in &parents {
        cycles.extend(level(parent, &imports));
    }
    CrateCycles {
        cycles,
        missing: krate.missing.clone(),
        files: krate.files(),
    }
}

/// The node a module is under `parent`: the parent itself, or the child
/// that holds it (`None` outside the parent).
fn node(parent: &[String], module: &[String]) -> Option<ModPath> {
    if !module.starts_with(parent) {
        return None;
    }
    Some(module[..(parent.len() + 1).min(module.len())].to_vec())
}

/// The cycles under one parent.
fn level(parent: &ModPath, imports: &BTreeMap<(ModPath, ModPath), Vec<Site>>) -> Vec<Cycle> {
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let mut sites: Vec<(ModPath, ModPath, &ModPath, &ModPath, &Site)> = Vec::new();
    for ((from, to), at) in imports {
        let (Some(a), Some(b)) = (node(parent, from), node(parent, to)) else {
            continue;
        };
        if a == b {
            continue;
        }
        graph.entry(a.clone()).or_default().insert(b.clone());
        for site in at {
            sites.push((a.clone(), b.clone(), from, to, site));
        }
    }
    let siblings: BTreeMap<ModPath, BTreeSet<ModPath>> = graph
        .iter()
        .filter(|(a, _)| *a != parent)
        .map(|(a, bs)| {
            (
                a.clone(),
                bs.iter().filter(|b| *b != parent).cloned().collect(),
            )
        })
        .collect();
    let mut out = Vec::new();
    let kinds = [
        (CycleKind::Siblings, strongly_connected(&siblings)),
        (CycleKind::ParentAndChildren, strongly_connected(&graph)),
    ];
    for (kind, sets) in kinds {
        for set in sets {
            if set.len() < 2 || (kind == CycleKind::ParentAndChildren) != set.contains(parent) {
                continue;
            }
            let mut members: Vec<&ModPath> = set.iter().collect();
            members.sort_by_key(|m| (*m != parent, (*m).clone()));
            out.push(Cycle {
                kind,
                parent: name(parent),
                members: members.into_iter().map(|m| name(m)).collect(),
                imports: sites
                    .iter()
                    .filter(|(a, b, ..)| set.contains(a) && set.contains(b))
                    .map(|(_, _, from, to, site)| Import {
                        from: name(from),
                        to: name(to),
                        site: (*site).clone(),
                    })
                    .collect(),
            });
        }
    }
    out
}

/// A module's name as a path (`crate` for the root).
fn name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

/// The strongly connected sets of `g` (Kosaraju's two passes).
fn strongly_connected(g: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<BTreeSet<ModPath>> {
    let nodes: BTreeSet<&ModPath> = g.keys().chain(g.values().flatten()).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for n in &nodes {
        let mut stack = vec![((*n).clone(), false)];
        while let Some((v, done)) = stack.pop() {
            if done {
                order.push(v);
                continue;
            }
            if !seen.insert(v.clone()) {
                continue;
            }
            stack.push((v.clone(), true));
            for w in g.get(&v).into_iter().flatten() {
                if !seen.contains(w) {
                    stack.push((w.clone(), false));
                }
            }
        }
    }
    let mut reverse: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (v, ws) in g {
        for w in ws {
            reverse.entry(w).or_default().push(v);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut sets = Vec::new();
    for v in order.iter().rev() {
        if assigned.contains(v) {
            continue;
        }
        let mut set = BTreeSet::new();
        let mut stack = vec![v];
        while let Some(x) = stack.pop() {
            if !assigned.insert(x.clone()) {
                continue;
            }
            set.insert(x.clone());
            for w in reverse.get(x).into_iter().flatten() {
                if !assigned.contains(*w) {
                    stack.push(w);
                }
            }
        }
        sets.push(set);
    }
    sets
}
