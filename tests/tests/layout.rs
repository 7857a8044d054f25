//! The house keeps its layout (docs/architecture.md): each crate depends
//! only on the layers below it, the CLI links neither service, analysis
//! links no network code, and no two modules of a crate import each other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root (this package is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Each workspace package's normal (not dev, not build) dependencies on
/// other workspace packages, from `cargo metadata`.
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Everything `package` links, directly or through others.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, package: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![package.to_owned()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn each_crate_depends_only_on_the_layers_below_it() {
    // What each library and program may link of the workspace (docs/architecture.md).
    let allowed: &[(&str, &[&str])] = &[
        ("proto", &[]),
        ("telemetry", &["proto"]),
        ("metadata", &["telemetry", "proto"]),
        ("lifecycle", &[]),
        ("analysis", &["telemetry", "proto"]),
        (
            "rex-client",
            &["proto", "telemetry", "metadata", "lifecycle"],
        ),
        ("relay", &["proto", "telemetry", "metadata", "lifecycle"]),
        (
            "exec-server",
            &["proto", "telemetry", "metadata", "lifecycle"],
        ),
        (
            "rex-agent",
            &["rex-client", "proto", "telemetry", "metadata", "lifecycle"],
        ),
        (
            "core-client",
            &[
                "rex-agent",
                "rex-client",
                "analysis",
                "proto",
                "telemetry",
                "metadata",
                "lifecycle",
            ],
        ),
    ];
    let graph = workspace_graph();
    for (package, may) in allowed {
        let links = closure(&graph, package);
        let may: BTreeSet<String> = may.iter().map(|s| (*s).to_owned()).collect();
        let upward: Vec<&String> = links.difference(&may).collect();
        assert!(
            upward.is_empty(),
            "{package} links {upward:?}, which are not below it"
        );
    }
    // Every library of the workspace is placed above.
    for package in graph.keys() {
        let placed = allowed.iter().any(|(p, _)| p == package);
        let program_or_tests = ["rex-demo", "integration-tests", "link-emulator"];
        assert!(
            placed || program_or_tests.contains(&package.as_str()),
            "{package} has no place in the layers"
        );
    }
}

/// A crate's modules by path (`a::b`), each with its file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            // A binary's own modules (`src/bin/…`) are another crate.
            if parts.first().is_some_and(|p| p == "bin") {
                continue;
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The paths a file names that start at `crate`, `super` or `self`,
/// `use` trees expanded, each as its segments.
fn named_paths(text: &str) -> Vec<(String, Vec<String>)> {
    let text: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let head = ["crate", "super", "self"]
            .into_iter()
            .find(|h| rest.starts_with(&format!("{h}::")));
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        match head {
            Some(h) if boundary => {
                let tree_len = use_tree_len(&rest[h.len() + 2..]);
                let tree = &rest[h.len() + 2..h.len() + 2 + tree_len];
                for segs in expand(tree) {
                    out.push((h.to_owned(), segs));
                }
                i += h.len() + 2 + tree_len.max(1);
            }
            _ => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// How long the path or `use` tree at the start of `s` is.
fn use_tree_len(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ if depth > 0 => {}
            c if c.is_alphanumeric() || c == '_' || c == ':' => {}
            _ => return i,
        }
    }
    s.len()
}

/// A `use` tree's paths: `a::{b, c::d}` is `a::b` and `a::c::d`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim().trim_end_matches(':');
    if let Some(open) = tree.find('{') {
        let prefix: Vec<String> = segments(&tree[..open]);
        let inner = tree[open + 1..].trim_end().trim_end_matches('}');
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut cur = String::new();
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        parts.push(cur);
        return parts
            .iter()
            .filter(|p| !p.trim().is_empty())
            .flat_map(|p| {
                expand(p).into_iter().map(|rest| {
                    let mut all = prefix.clone();
                    all.extend(rest);
                    all
                })
            })
            .collect();
    }
    vec![segments(tree)]
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
        .filter(|s| !s.is_empty() && s != "*")
        .collect()
}

/// The sibling modules that import each other, in every crate under `src`
/// (children counted as the sibling that holds them).
fn cycles(src: &Path) -> Vec<Vec<String>> {
    let mods = modules(src);
    let mut edges: HashMap<Vec<String>, BTreeSet<Vec<String>>> = HashMap::new();
    for (module, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        for (head, segs) in named_paths(&text) {
            let mut base: Vec<String> = match head.as_str() {
                "crate" => Vec::new(),
                "self" => module.clone(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            let mut segs = segs.as_slice();
            while let Some(("super", rest)) = segs.split_first().map(|(s, r)| (s.as_str(), r)) {
                base.pop();
                segs = rest;
            }
            base.extend(segs.iter().cloned());
            let target = (0..=base.len())
                .rev()
                .map(|k| base[..k].to_vec())
                .find(|p| mods.contains_key(p));
            if let Some(t) = target
                && &t != module
            {
                edges.entry(module.clone()).or_default().insert(t);
            }
        }
    }
    // Under each parent, its children's graph; a cycle is a strongly
    // connected set of two or more.
    let parents: BTreeSet<Vec<String>> = mods
        .keys()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    let mut found = Vec::new();
    for parent in parents {
        let child = |m: &Vec<String>| -> Option<Vec<String>> {
            (m.len() > parent.len() && m[..parent.len()] == parent[..])
                .then(|| m[..=parent.len()].to_vec())
        };
        let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (from, tos) in &edges {
            let Some(a) = child(from) else { continue };
            for to in tos {
                if let Some(b) = child(to)
                    && a != b
                {
                    g.entry(a.clone()).or_default().insert(b);
                }
            }
        }
        for set in strongly_connected(&g) {
            if set.len() > 1 {
                found.push(set.iter().map(|m| m.join("::")).collect());
            }
        }
    }
    found
}

/// The strongly connected sets of `g` (Kosaraju's two passes).
fn strongly_connected(
    g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<BTreeSet<Vec<String>>> {
    let nodes: BTreeSet<&Vec<String>> = g.keys().chain(g.values().flatten()).collect();
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
    let mut reverse: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
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

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let root = root();
    let crates = [
        "proto/src",
        "telemetry/src",
        "metadata/src",
        "lifecycle/src",
        "analysis/src",
        "client/src",
        "agent/src",
        "relay/src",
        "exec-server/src",
        "core-client/src",
        "demo/src",
        "tests/emulator/src",
    ];
    let mut all = Vec::new();
    for src in crates {
        for cycle in cycles(&root.join(src)) {
            all.push(format!("{src}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(
        all.is_empty(),
        "modules that import each other:\n{}",
        all.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_reads_use_trees() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{b::{self, X}, c};\n").unwrap();
    std::fs::write(src.join("b.rs"), "fn f() { super::a::g() }\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "// crate::a::g names a in a comment only\n",
    )
    .unwrap();
    assert_eq!(cycles(src), [vec!["a".to_owned(), "b".to_owned()]]);
    std::fs::write(src.join("b.rs"), "fn f() {}\n").unwrap();
    assert!(cycles(src).is_empty());
}
