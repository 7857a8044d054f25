//! The house keeps its layout (docs/architecture.md): each crate depends
//! only on the layers below it, the CLI links neither service, analysis
//! links no network code, and no two modules of a crate import each other
//! (siblings, with what is inside them, and a module and its own child:
//! a parent that imports its children is a facade they never import
//! back). The check itself is
//! `integration_tests::layout`; the tests at the end hold it to small
//! crates in memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::layout::{Cycle, CycleKind, crate_cycles};

/// The workspace's root (this package is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The workspace's packages, from `cargo metadata`.
fn workspace_packages() -> Vec<serde_json::Value> {
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
    meta["packages"].as_array().unwrap().clone()
}

/// Each workspace package's normal (not dev, not build) dependencies on
/// other workspace packages.
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let packages = workspace_packages();
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

/// Every `.rs` file under `dir`, by path.
fn sources(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(path, text);
            }
        }
    }
    out
}

/// What the check finds in each library and program of the workspace
/// (a program's root is a crate of its own): `(crate, cycles)`, and every
/// source file no crate reaches.
fn workspace_cycles() -> (Vec<(String, Vec<Cycle>)>, Vec<String>) {
    let root = root();
    let mut found = Vec::new();
    let mut unreached = Vec::new();
    for package in workspace_packages() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        let src = manifest.parent().unwrap().join("src");
        let files = sources(&src);
        let mut reached = BTreeSet::new();
        for target in package["targets"].as_array().unwrap() {
            let kinds = target["kind"].as_array().unwrap();
            let kind = if kinds.iter().any(|k| k == "lib") {
                "lib"
            } else if kinds.iter().any(|k| k == "bin") {
                "bin"
            } else {
                continue;
            };
            let crate_root = PathBuf::from(target["src_path"].as_str().unwrap());
            let checked = crate_cycles(&crate_root, &files);
            assert!(
                checked.missing.is_empty(),
                "module files not found: {:?}",
                checked.missing
            );
            reached.extend(checked.files);
            let name = format!(
                "{} ({kind} {})",
                crate_root.strip_prefix(&root).unwrap().display(),
                target["name"].as_str().unwrap()
            );
            let mut cycles = checked.cycles;
            for cycle in &mut cycles {
                for import in &mut cycle.imports {
                    import.site.file = import.site.file.strip_prefix(&root).unwrap().into();
                }
            }
            found.push((name, cycles));
        }
        unreached.extend(
            files
                .keys()
                .filter(|f| !reached.contains(*f))
                .map(|f| f.strip_prefix(&root).unwrap().display().to_string()),
        );
    }
    (found, unreached)
}

/// The cycles of `kind`, one per line with their imports.
fn listed(found: &[(String, Vec<Cycle>)], kind: CycleKind) -> Vec<String> {
    found
        .iter()
        .flat_map(|(name, cycles)| {
            cycles
                .iter()
                .filter(move |c| c.kind == kind)
                .map(move |c| format!("{name}: {c}"))
        })
        .collect()
}

#[test]
fn every_source_file_is_a_module_of_some_crate() {
    let (_, unreached) = workspace_cycles();
    assert!(
        unreached.is_empty(),
        "files no crate's module tree reaches (the check would not read them): {unreached:?}"
    );
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let (found, _) = workspace_cycles();
    let all = listed(&found, CycleKind::Siblings);
    assert!(
        all.is_empty(),
        "modules that import each other (with what is inside them):\n{}",
        all.join("\n")
    );
}

/// No child imports its parent's own items while the parent imports the
/// child's: what both need lives in a module of its own.
#[test]
fn no_module_and_its_child_import_each_other() {
    let (found, _) = workspace_cycles();
    let all = listed(&found, CycleKind::ParentAndChildren);
    assert!(
        all.is_empty(),
        "modules and children that import each other:\n{}",
        all.join("\n")
    );
}

/// The cycles found in a crate given as `(path, source)` pairs, its root
/// `src/lib.rs` unless a `src/main.rs` is given alone; each cycle as its
/// members.
fn cycles_in(files: &[(&str, &str)], root: &str) -> Vec<(CycleKind, Vec<String>)> {
    let files: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), (*s).to_owned()))
        .collect();
    let checked = crate_cycles(Path::new(root), &files);
    assert!(checked.missing.is_empty(), "{:?}", checked.missing);
    checked
        .cycles
        .into_iter()
        .map(|c| (c.kind, c.members))
        .collect()
}

fn siblings(members: &[&str]) -> Vec<(CycleKind, Vec<String>)> {
    vec![(
        CycleKind::Siblings,
        members.iter().map(|m| (*m).to_owned()).collect(),
    )]
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_reads_use_trees() {
    let lib = "mod a;\nmod b;\nmod c;\n";
    let c = "// crate::a::g names a in a comment only\n";
    let cycle = [
        ("src/lib.rs", lib),
        ("src/a.rs", "use crate::{b::{self, X}, c};\npub fn g() {}\n"),
        ("src/b.rs", "pub struct X;\nfn f() { super::a::g() }\n"),
        ("src/c.rs", c),
    ];
    assert_eq!(cycles_in(&cycle, "src/lib.rs"), siblings(&["a", "b"]));
    let none = [
        ("src/lib.rs", lib),
        ("src/a.rs", "use crate::{b::{self, X}, c};\npub fn g() {}\n"),
        ("src/b.rs", "pub struct X;\nfn f() {}\n"),
        ("src/c.rs", c),
    ];
    assert!(cycles_in(&none, "src/lib.rs").is_empty());
}

#[test]
fn an_item_a_parent_re_exports_is_its_defining_module_s() {
    // The shape of proto's noise: the parent re-exports transport's error,
    // cipher imports it through the parent, transport imports cipher.
    let parent = "mod cipher;\nmod transport;\npub use transport::{Transport, TransportError};\n";
    let noise = [
        ("src/lib.rs", "pub mod noise;\n"),
        ("src/noise.rs", parent),
        (
            "src/noise/cipher.rs",
            "use super::TransportError;\npub struct Cipher;\n",
        ),
        (
            "src/noise/transport.rs",
            "use super::cipher::Cipher;\npub struct Transport;\npub enum TransportError {}\n",
        ),
    ];
    assert_eq!(
        cycles_in(&noise, "src/lib.rs"),
        siblings(&["noise::cipher", "noise::transport"])
    );
    // Every form of re-export is followed.
    for reexport in [
        "pub use self::transport::TransportError;",
        "pub use transport::{Transport as _, TransportError};",
        "pub(crate) use transport::TransportError;",
        "pub use transport::*;",
        "pub use self::transport::{self as t};\npub use t::TransportError;",
    ] {
        let parent = format!("mod cipher;\nmod transport;\n{reexport}\n");
        let mut files = noise;
        files[1].1 = &parent;
        assert_eq!(
            cycles_in(&files, "src/lib.rs"),
            siblings(&["noise::cipher", "noise::transport"]),
            "{reexport}"
        );
    }
    // Through the crate's root, from afar.
    let mut files = noise;
    files[2].1 = "use crate::noise::TransportError;\npub struct Cipher;\n";
    assert_eq!(
        cycles_in(&files, "src/lib.rs"),
        siblings(&["noise::cipher", "noise::transport"])
    );
}

#[test]
fn names_a_glob_import_brings_are_resolved() {
    let parent = "mod a;\nmod b;\npub use b::Shared;\n";
    for a in [
        // A child module of the globbed module, named bare.
        "use super::*;\npub fn f() { b::g() }\n",
        // An item the globbed module re-exports, named bare.
        "use super::*;\npub fn f(_: Shared) {}\n",
        // A glob of a sibling, then a bare call.
        "use crate::b::*;\npub fn f() { g() }\n",
    ] {
        let files = [
            ("src/lib.rs", parent),
            ("src/a.rs", a),
            (
                "src/b.rs",
                "pub struct Shared;\npub fn g() {}\nfn h() { crate::a::f(); }\n",
            ),
        ];
        assert_eq!(
            cycles_in(&files, "src/lib.rs"),
            siblings(&["a", "b"]),
            "{a}"
        );
    }
    // A name defined where it is used is not the glob's.
    let files = [
        ("src/lib.rs", parent),
        (
            "src/a.rs",
            "use super::*;\npub struct Shared;\nfn f(_: Shared) {}\n",
        ),
        (
            "src/b.rs",
            "pub struct Shared;\nfn h() { crate::a::f(); }\n",
        ),
    ];
    assert!(cycles_in(&files, "src/lib.rs").is_empty());
}

#[test]
fn bare_and_inline_paths_are_resolved() {
    for a in [
        // A module brought in by `use`, then a path through it.
        "use super::b;\npub fn f() { b::g() }\n",
        // A fully qualified path with no `use`.
        "pub fn f() { crate::b::g() }\n",
        // A child of the parent, named bare from the parent's scope: here
        // through `self`.
        "pub fn f() { let _ = self::inner::X; }\nmod inner { pub const X: () = crate::b::G; }\n",
    ] {
        let files = [
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a.rs", a),
            (
                "src/b.rs",
                "pub fn g() {}\npub const G: () = ();\nfn h() { crate::a::f(); }\n",
            ),
        ];
        assert_eq!(
            cycles_in(&files, "src/lib.rs"),
            siblings(&["a", "b"]),
            "{a}"
        );
    }
    // A parent's path to its own child, bare.
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\nfn top() { a::f() }\n"),
        ("src/a.rs", "pub fn f() { crate::top() }\n"),
        ("src/b.rs", ""),
    ];
    assert_eq!(
        cycles_in(&files, "src/lib.rs"),
        [(
            CycleKind::ParentAndChildren,
            vec!["crate".to_owned(), "a".to_owned()]
        )]
    );
}

#[test]
fn comments_and_literals_name_nothing() {
    let b = "pub fn g() {}\nfn h() { crate::a::f(); }\n";
    for a in [
        "/* crate::b::g() */ pub fn f() {}\n",
        "/* outer /* nested */ crate::b::g() */ pub fn f() {}\n",
        "/// [`crate::b::g`]\npub fn f() {}\n",
        "//! crate::b::g\npub fn f() {}\n",
        "pub fn f() { let _ = \"crate::b::g()\"; }\n",
        "pub fn f() { let _ = r#\"crate::b::g() \"quoted\" \"#; }\n",
        "pub fn f() { let _ = ('\"', \"crate::b::g\"); }\n",
        "pub fn f<'a>(_: &'a str) { let _ = b\"crate::b::g\"; }\n",
    ] {
        let files = [
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a.rs", a),
            ("src/b.rs", b),
        ];
        assert!(cycles_in(&files, "src/lib.rs").is_empty(), "{a}");
    }
    // And code after a comment or literal still counts.
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "/* a /* b */ c */ pub fn f() { let _ = '\"'; crate::b::g() }\n",
        ),
        ("src/b.rs", b),
    ];
    assert_eq!(cycles_in(&files, "src/lib.rs"), siblings(&["a", "b"]));
}

#[test]
fn a_program_s_root_is_a_crate_of_its_own() {
    let files = [
        ("src/lib.rs", "pub mod a;\npub mod b;\npub fn top() {}\n"),
        ("src/a.rs", "use crate::b::g;\npub fn f() {}\n"),
        ("src/b.rs", "pub fn g() {}\n"),
        (
            "src/main.rs",
            "mod cli;\nmod run;\nuse mylib::a::f;\nfn main() { crate::run::go(); mylib::b::g(); }\n",
        ),
        ("src/cli.rs", "use crate::run::go;\npub struct Args;\n"),
        (
            "src/run.rs",
            "pub fn go() {}\nfn h(_: crate::cli::Args) { mylib::top() }\n",
        ),
    ];
    // The library has none: the program's paths are not its own.
    assert!(cycles_in(&files, "src/lib.rs").is_empty());
    // The program's `crate::` is the program's.
    assert_eq!(cycles_in(&files, "src/main.rs"), siblings(&["cli", "run"]));
}

#[test]
fn an_inline_module_is_a_child_of_its_file_s_module() {
    // `super` in `a`'s inline tests is `a`, `super::super` the root; what
    // the tests import counts as `a`'s.
    let b = "pub fn g() {}\nfn h() { crate::a::f() }\n";
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::b::g;\n    fn t() { f(); g() }\n}\n",
        ),
        ("src/b.rs", b),
    ];
    assert_eq!(cycles_in(&files, "src/lib.rs"), siblings(&["a", "b"]));
    // A test module's glob of its own module names nothing outside it.
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "pub fn f() {}\nmod tests {\n    use super::*;\n    fn t() { f() }\n}\n",
        ),
        ("src/b.rs", b),
    ];
    assert!(cycles_in(&files, "src/lib.rs").is_empty());
}
