//! What a file says about its modules, read from its tokens: for the file's
//! module and each inline `mod x { … }` in it, the modules it declares, the
//! items it defines at its top level, its `use` trees (expanded) and the
//! paths and bare names its code writes.

use super::tokens::{Tok, Token};

/// How a `use` leaf binds its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bind {
    /// `use a::b;` binds `b`, `use a::b as c;` binds `c`.
    Name(String),
    /// `use a::*;`.
    Glob,
    /// `use a::Trait as _;`.
    Anonymous,
}

/// One path of a `use` tree: `use a::{b, c::d};` has `a::b` and `a::c::d`.
#[derive(Clone, Debug)]
pub(crate) struct UseLeaf {
    /// The path's segments (`self` leaves folded: `a::{self}` is `a`).
    pub(crate) segs: Vec<String>,
    /// The name it binds.
    pub(crate) bind: Bind,
    /// Whether the `use` is `pub` in any form (seen outside its module).
    pub(crate) public: bool,
    /// The line the leaf is on.
    pub(crate) line: usize,
}

/// A path of two or more segments written in code (not in a `use`), or
/// a bare name that may come from a glob import.
#[derive(Clone, Debug)]
pub(crate) struct PathRef {
    /// The segments.
    pub(crate) segs: Vec<String>,
    /// The line it is on.
    pub(crate) line: usize,
}

/// A declared module or a defined item, by name.
#[derive(Clone, Debug)]
pub(crate) struct Named {
    /// The name.
    pub(crate) name: String,
    /// Whether it is `pub` in any form.
    pub(crate) public: bool,
}

/// One module's part of a file: the file's own module or an inline one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    /// The inline modules between the file's module and this one (empty
    /// for the file's own).
    pub(crate) inline_path: Vec<String>,
    /// `mod x;` declarations (modules in files of their own).
    pub(crate) file_mods: Vec<Named>,
    /// `mod x { … }` declarations.
    pub(crate) inline_mods: Vec<Named>,
    /// Items defined at the module's top level.
    pub(crate) items: Vec<Named>,
    /// Every `use` leaf in the module, in functions too.
    pub(crate) uses: Vec<UseLeaf>,
    /// Paths of two or more segments written in code.
    pub(crate) paths: Vec<PathRef>,
    /// Single names written in code that look like they name an item (a
    /// capitalised name, or a call or macro), for glob imports.
    pub(crate) bare: Vec<PathRef>,
}

/// The keywords that define an item named by the next identifier.
const ITEM_KEYWORDS: &[&str] = &[
    "fn", "struct", "enum", "trait", "type", "const", "static", "union",
];

/// Words that are never the start of a path to an item.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type", "union",
    "unsafe", "use", "where", "while", "_",
];

/// The modules of a file's tokens: the file's own first, then its inline
/// modules.
pub(crate) fn scan(tokens: &[Token]) -> Vec<Scope> {
    let mut scanner = Scanner {
        tokens,
        i: 0,
        scopes: Vec::new(),
    };
    scanner.module(Vec::new());
    scanner.scopes
}

struct Scanner<'a> {
    tokens: &'a [Token],
    i: usize,
    scopes: Vec<Scope>,
}

impl<'a> Scanner<'a> {
    fn tok(&self, k: usize) -> Option<&'a Token> {
        self.tokens.get(self.i + k)
    }

    /// Reads a module's body up to its closing brace (or the end of the
    /// file), inline modules in it as modules of their own.
    fn module(&mut self, inline_path: Vec<String>) {
        let index = self.scopes.len();
        self.scopes.push(Scope {
            inline_path: inline_path.clone(),
            ..Scope::default()
        });
        let mut depth = 0usize;
        let mut public = false;
        while let Some(t) = self.tok(0).cloned() {
            let top = depth == 0;
            match &t.tok {
                Tok::Punct('{') => {
                    depth += 1;
                    public = false;
                    self.i += 1;
                }
                Tok::Punct('}') => {
                    self.i += 1;
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    public = false;
                }
                Tok::Punct(';') => {
                    public = false;
                    self.i += 1;
                }
                Tok::Ident(w) if w == "pub" => {
                    public = top;
                    self.i += 1;
                    if self.tok(0).is_some_and(|t| t.is_punct('(')) {
                        self.skip_parens();
                    }
                }
                Tok::Ident(w) if w == "use" && !self.tok(1).is_some_and(|t| t.is_punct('<')) => {
                    self.i += 1;
                    let leaves = self.use_tree(public);
                    self.scopes[index].uses.extend(leaves);
                    public = false;
                }
                Tok::Ident(w) if w == "mod" && top => {
                    let Some(name) = self.tok(1).and_then(Token::ident).map(str::to_owned) else {
                        self.i += 1;
                        continue;
                    };
                    let named = Named { name, public };
                    public = false;
                    if self.tok(2).is_some_and(|t| t.is_punct('{')) {
                        self.i += 3;
                        let mut path = inline_path.clone();
                        path.push(named.name.clone());
                        self.scopes[index].inline_mods.push(named);
                        self.module(path);
                    } else {
                        self.i += 2;
                        self.scopes[index].file_mods.push(named);
                    }
                }
                Tok::Ident(w) if w == "macro_rules" && top => {
                    if let Some(name) = self.tok(2).and_then(Token::ident) {
                        let name = name.to_owned();
                        self.scopes[index].items.push(Named { name, public });
                    }
                    self.i += 3;
                }
                Tok::Ident(w) if ITEM_KEYWORDS.contains(&w.as_str()) && top => {
                    let mut k = 1;
                    if self.tok(k).is_some_and(|t| t.is("mut")) {
                        k += 1;
                    }
                    match self.tok(k).and_then(Token::ident) {
                        Some(name) if !KEYWORDS.contains(&name) => {
                            let name = name.to_owned();
                            self.scopes[index].items.push(Named { name, public });
                            self.i += k + 1;
                            public = false;
                        }
                        _ => self.i += 1,
                    }
                }
                Tok::Ident(_) => self.path(index),
                _ => self.i += 1,
            }
        }
    }

    /// Skips a parenthesised group (`pub(crate)`).
    fn skip_parens(&mut self) {
        let mut depth = 0usize;
        while let Some(t) = self.tok(0) {
            self.i += 1;
            if t.is_punct('(') {
                depth += 1;
            } else if t.is_punct(')') {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }

    /// A path (or a single name) written in code, from its first segment.
    fn path(&mut self, index: usize) {
        let before = self.i.checked_sub(1).and_then(|k| self.tokens.get(k));
        let line = self.tokens[self.i].line;
        let mut segs = Vec::new();
        while let Some(name) = self.tok(0).and_then(Token::ident) {
            segs.push(name.to_owned());
            let more = self.tok(1).is_some_and(|t| t.tok == Tok::PathSep)
                && self.tok(2).is_some_and(|t| t.ident().is_some());
            self.i += if more { 2 } else { 1 };
            if !more {
                break;
            }
        }
        // `x.f`, `<T as Trait>::f` and `::ext::f` start no path in scope.
        if before.is_some_and(|t| t.is_punct('.') || t.tok == Tok::PathSep) {
            return;
        }
        if segs.len() > 1 {
            self.scopes[index].paths.push(PathRef { segs, line });
            return;
        }
        let name = &segs[0];
        let after = self.tok(0);
        let binding = before.is_some_and(|t| {
            ["let", "mut", "ref", "mod", "macro_rules"]
                .iter()
                .chain(ITEM_KEYWORDS)
                .any(|w| t.is(w))
        });
        let field = after.is_some_and(|t| t.is_punct(':'));
        let capital = name.starts_with(|c: char| c.is_uppercase());
        let call = after.is_some_and(|t| t.is_punct('(') || t.is_punct('!'));
        if !KEYWORDS.contains(&name.as_str()) && !binding && !field && (capital || call) {
            self.scopes[index].bare.push(PathRef { segs, line });
        }
    }

    /// A `use` tree's leaves, up to its `;`.
    fn use_tree(&mut self, public: bool) -> Vec<UseLeaf> {
        let mut leaves = Vec::new();
        if self.tok(0).is_some_and(|t| t.tok == Tok::PathSep) {
            // `use ::ext::…`: another crate.
            self.skip_to_semicolon();
            return leaves;
        }
        self.subtree(Vec::new(), public, &mut leaves);
        self.skip_to_semicolon();
        leaves
    }

    fn skip_to_semicolon(&mut self) {
        while let Some(t) = self.tok(0) {
            self.i += 1;
            if t.is_punct(';') {
                return;
            }
        }
    }

    fn subtree(&mut self, mut segs: Vec<String>, public: bool, out: &mut Vec<UseLeaf>) {
        loop {
            let Some(t) = self.tok(0).cloned() else {
                return;
            };
            match &t.tok {
                Tok::Ident(name) => {
                    segs.push(name.clone());
                    self.i += 1;
                    if self.tok(0).is_some_and(|t| t.tok == Tok::PathSep) {
                        self.i += 1;
                        continue;
                    }
                    if segs.last().is_some_and(|s| s == "self") && segs.len() > 1 {
                        segs.pop();
                    }
                    let mut bind = Bind::Name(segs.last().cloned().unwrap_or_default());
                    if self.tok(0).is_some_and(|t| t.is("as")) {
                        bind = match self.tok(1).and_then(Token::ident) {
                            Some("_") => Bind::Anonymous,
                            Some(alias) => Bind::Name(alias.to_owned()),
                            None => Bind::Anonymous,
                        };
                        self.i += 2;
                    }
                    out.push(UseLeaf {
                        segs,
                        bind,
                        public,
                        line: t.line,
                    });
                    return;
                }
                Tok::Punct('*') => {
                    self.i += 1;
                    out.push(UseLeaf {
                        segs,
                        bind: Bind::Glob,
                        public,
                        line: t.line,
                    });
                    return;
                }
                Tok::Punct('{') => {
                    self.i += 1;
                    loop {
                        match self.tok(0) {
                            None => return,
                            Some(t) if t.is_punct('}') => {
                                self.i += 1;
                                return;
                            }
                            Some(t) if t.is_punct(',') => self.i += 1,
                            Some(_) => {
                                let before = self.i;
                                self.subtree(segs.clone(), public, out);
                                if self.i == before {
                                    self.i += 1;
                                }
                            }
                        }
                    }
                }
                _ => return,
            }
        }
    }
}
