//! A crate's modules and what each imports: the module tree is followed
//! from the crate's root file through its `mod` declarations, and every
//! `use` leaf and path written in code is resolved, through re-exports and
//! glob imports, to the module that defines the item it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::syntax::{Bind, PathRef, Scope, UseLeaf, scan};
use super::tokens::tokenize;

/// A module's path from its crate's root (empty for the root).
pub(crate) type ModPath = Vec<String>;

/// Where a module imports from another: the file, the line and the path
/// as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    /// The file that holds the import.
    pub file: PathBuf,
    /// Its line (from 1).
    pub line: usize,
    /// The path it names, as written (`use` trees expanded).
    pub path: String,
}

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Res {
    /// A module of the crate.
    Module(ModPath),
    /// An item the crate defines in this module.
    Item(ModPath),
    /// Something of another crate (or nothing in scope).
    External,
}

/// One module: its file and what it says.
struct Module {
    file: PathBuf,
    scope: Scope,
}

/// A crate's modules and the imports between them.
pub(crate) struct Crate {
    modules: BTreeMap<ModPath, Module>,
    /// Files a `mod` declaration names that are not in the sources.
    pub(crate) missing: Vec<String>,
}

impl Crate {
    /// Follows the crate whose root is `root` through `files` (by path).
    pub(crate) fn load(root: &Path, files: &BTreeMap<PathBuf, String>) -> Crate {
        let mut krate = Crate {
            modules: BTreeMap::new(),
            missing: Vec::new(),
        };
        let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut todo = vec![(Vec::new(), root.to_path_buf(), dir)];
        while let Some((path, file, dir)) = todo.pop() {
            let Some(text) = files.get(&file) else {
                krate.missing.push(file.display().to_string());
                continue;
            };
            for scope in scan(&tokenize(text)) {
                let mut module_path = path.clone();
                module_path.extend(scope.inline_path.iter().cloned());
                let module_dir = scope.inline_path.iter().fold(dir.clone(), |d, m| d.join(m));
                for child in &scope.file_mods {
                    let child_dir = module_dir.join(&child.name);
                    let flat = module_dir.join(format!("{}.rs", child.name));
                    let nested = child_dir.join("mod.rs");
                    let child_file = if files.contains_key(&flat) || !files.contains_key(&nested) {
                        flat
                    } else {
                        nested
                    };
                    let mut child_path = module_path.clone();
                    child_path.push(child.name.clone());
                    todo.push((child_path, child_file, child_dir));
                }
                let module = Module {
                    file: file.clone(),
                    scope,
                };
                krate.modules.insert(module_path, module);
            }
        }
        krate
    }

    /// The files the crate's modules are in.
    pub(crate) fn files(&self) -> BTreeSet<PathBuf> {
        self.modules.values().map(|m| m.file.clone()).collect()
    }

    /// The crate's modules.
    pub(crate) fn module_paths(&self) -> impl Iterator<Item = &ModPath> {
        self.modules.keys()
    }

    /// Every import from one module of the crate to another, with where
    /// each is written.
    pub(crate) fn imports(&self) -> BTreeMap<(ModPath, ModPath), Vec<Site>> {
        let mut out: BTreeMap<(ModPath, ModPath), Vec<Site>> = BTreeMap::new();
        for (path, module) in &self.modules {
            let mut add = |res: Res, at: &PathRef| {
                let target = match res {
                    Res::Item(t) | Res::Module(t) => t,
                    Res::External => return,
                };
                if &target != path {
                    out.entry((path.clone(), target)).or_default().push(Site {
                        file: module.file.clone(),
                        line: at.line,
                        path: at.segs.join("::"),
                    });
                }
            };
            for leaf in &module.scope.uses {
                // Binding a module names none of its items: the paths
                // through it do.
                if let res @ Res::Item(_) = self.resolve(path, &leaf.segs, &mut Vec::new()) {
                    let at = PathRef {
                        segs: leaf.segs.clone(),
                        line: leaf.line,
                    };
                    add(res, &at);
                }
            }
            for at in &module.scope.paths {
                add(self.resolve(path, &at.segs, &mut Vec::new()), at);
            }
            for at in &module.scope.bare {
                let name = &at.segs[0];
                if self.binds_by_name(path, name) {
                    // Defined here, or its `use` is already counted.
                    continue;
                }
                if let Some(res @ Res::Item(_)) =
                    self.through_globs(path, name, path, false, &mut Vec::new())
                {
                    add(res, at);
                }
            }
        }
        for sites in out.values_mut() {
            sites.sort();
            sites.dedup();
        }
        out
    }

    /// What `segs`, written in module `from`, names.
    fn resolve(&self, from: &[String], segs: &[String], guard: &mut Guard) -> Res {
        let Some((first, rest)) = segs.split_first() else {
            return Res::External;
        };
        let (mut at, rest) = match first.as_str() {
            "crate" => (Vec::new(), rest),
            "self" => (from.to_vec(), rest),
            "super" => (from.to_vec(), segs),
            "Self" => return Res::External,
            name => match self.lookup(from, name, from, !rest.is_empty(), guard) {
                Some(Res::Module(m)) => (m, rest),
                Some(other) => return other,
                None => return Res::External,
            },
        };
        for (k, seg) in rest.iter().enumerate() {
            match seg.as_str() {
                "super" => {
                    if at.pop().is_none() {
                        return Res::External;
                    }
                }
                "self" => {}
                name => match self.lookup(&at, name, from, k + 1 < rest.len(), guard) {
                    Some(Res::Module(m)) => at = m,
                    Some(other) => return other,
                    // Nothing the check can see (generated code): the item
                    // is taken as this module's.
                    None => return Res::Item(at),
                },
            }
        }
        Res::Module(at)
    }

    /// Whether module `at` defines, declares or imports `name` by name.
    fn binds_by_name(&self, at: &[String], name: &str) -> bool {
        let Some(module) = self.modules.get(at) else {
            return false;
        };
        let scope = &module.scope;
        scope
            .file_mods
            .iter()
            .chain(&scope.inline_mods)
            .chain(&scope.items)
            .any(|n| n.name == name)
            || scope
                .uses
                .iter()
                .any(|u| matches!(&u.bind, Bind::Name(n) if n == name))
    }

    /// What `name` is in module `at`, as module `importer` sees it; a module
    /// is preferred when `want_module` (the path goes on), an item
    /// otherwise.
    fn lookup(
        &self,
        at: &[String],
        name: &str,
        importer: &[String],
        want_module: bool,
        guard: &mut Guard,
    ) -> Option<Res> {
        let module = self.modules.get(at)?;
        let key = (at.to_vec(), name.to_owned());
        if guard.contains(&key) {
            return None;
        }
        guard.push(key);
        let sees_private = importer.starts_with(at);
        let scope = &module.scope;
        let mut found = Vec::new();
        for child in scope.file_mods.iter().chain(&scope.inline_mods) {
            if child.name == name && (sees_private || child.public) {
                let mut path = at.to_vec();
                path.push(name.to_owned());
                found.push(Res::Module(path));
            }
        }
        if scope
            .items
            .iter()
            .any(|i| i.name == name && (sees_private || i.public))
        {
            found.push(Res::Item(at.to_vec()));
        }
        for leaf in visible_uses(scope, sees_private) {
            if matches!(&leaf.bind, Bind::Name(n) if n == name) {
                found.push(self.resolve(at, &leaf.segs, guard));
            }
        }
        let preferred = found
            .iter()
            .position(|r| matches!(r, Res::Module(_)) == want_module)
            .unwrap_or(0);
        let res = if found.is_empty() {
            self.through_globs(at, name, importer, want_module, guard)
        } else {
            Some(found.swap_remove(preferred))
        };
        guard.pop();
        res
    }

    /// What `name` is in module `at` through its glob imports.
    fn through_globs(
        &self,
        at: &[String],
        name: &str,
        importer: &[String],
        want_module: bool,
        guard: &mut Guard,
    ) -> Option<Res> {
        let module = self.modules.get(at)?;
        let sees_private = importer.starts_with(at);
        for leaf in visible_uses(&module.scope, sees_private) {
            if leaf.bind != Bind::Glob {
                continue;
            }
            if let Res::Module(source) = self.resolve(at, &leaf.segs, guard)
                && let Some(res) = self.lookup(&source, name, at, want_module, guard)
            {
                return Some(res);
            }
        }
        None
    }
}

/// The lookups under way (module and name), so that imports that name
/// each other end.
type Guard = Vec<(ModPath, String)>;

/// The `use` leaves of `scope` that a module sees: all of them from within
/// it, the `pub` ones from elsewhere.
fn visible_uses(scope: &Scope, sees_private: bool) -> impl Iterator<Item = &UseLeaf> {
    scope.uses.iter().filter(move |u| sees_private || u.public)
}
