//! Rust source as the tokens the layout check reads: identifiers, `::` and
//! single punctuation, each with its line. Comments (`//`, `///`, `//!`,
//! nested `/* */`) are dropped, and string, character and number literals
//! and lifetimes become one opaque token, so that nothing written inside
//! them reads as a path.

/// What a token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    /// An identifier or keyword (a raw identifier without its `r#`).
    Ident(String),
    /// `::`.
    PathSep,
    /// Any other single punctuation character.
    Punct(char),
    /// A literal or a lifetime, whatever it holds.
    Opaque,
}

/// A token and the line (from 1) it starts on.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) line: usize,
}

impl Token {
    /// Whether this token is the identifier or keyword `word`.
    pub(crate) fn is(&self, word: &str) -> bool {
        matches!(&self.tok, Tok::Ident(s) if s == word)
    }

    /// Whether this token is the punctuation `c`.
    pub(crate) fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    /// The identifier, if this token is one.
    pub(crate) fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(s) => Some(s),
            _ => None,
        }
    }
}

/// The tokens of `text`.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        i: 0,
        line: 1,
        out: Vec::new(),
    };
    lexer.run();
    lexer.out
}

struct Lexer<'a> {
    chars: &'a [char],
    i: usize,
    line: usize,
    out: Vec<Token>,
}

impl Lexer<'_> {
    fn at(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    /// Moves on one character, counting lines.
    fn bump(&mut self) {
        if self.at(0) == Some('\n') {
            self.line += 1;
        }
        self.i += 1;
    }

    fn push(&mut self, tok: Tok, line: usize) {
        self.out.push(Token { tok, line });
    }

    fn run(&mut self) {
        while let Some(c) = self.at(0) {
            let line = self.line;
            match c {
                '/' if self.at(1) == Some('/') => {
                    while self.at(0).is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                '/' if self.at(1) == Some('*') => self.block_comment(),
                '"' => {
                    self.quoted('"');
                    self.push(Tok::Opaque, line);
                }
                '\'' => {
                    self.char_or_lifetime();
                    self.push(Tok::Opaque, line);
                }
                ':' if self.at(1) == Some(':') => {
                    self.i += 2;
                    self.push(Tok::PathSep, line);
                }
                c if c.is_ascii_digit() => {
                    self.number();
                    self.push(Tok::Opaque, line);
                }
                c if c == '_' || c.is_alphabetic() => self.word(line),
                c if c.is_whitespace() => self.bump(),
                c => {
                    self.bump();
                    self.push(Tok::Punct(c), line);
                }
            }
        }
    }

    /// A `/* */` comment, nested ones included.
    fn block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.at(0) {
            if c == '/' && self.at(1) == Some('*') {
                depth += 1;
                self.i += 2;
            } else if c == '*' && self.at(1) == Some('/') {
                self.i += 2;
                depth -= 1;
                if depth == 0 {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// A literal from its opening `quote` to its closing one, escapes
    /// skipped.
    fn quoted(&mut self, quote: char) {
        self.bump();
        while let Some(c) = self.at(0) {
            self.bump();
            if c == '\\' {
                self.bump();
            } else if c == quote {
                return;
            }
        }
    }

    /// A raw string from its `#`s or opening quote: `r#"…"#`.
    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.at(0) == Some('#') {
            hashes += 1;
            self.bump();
        }
        self.bump();
        while let Some(c) = self.at(0) {
            self.bump();
            if c == '"' && (0..hashes).all(|k| self.at(k) == Some('#')) {
                self.i += hashes;
                return;
            }
        }
    }

    /// `'x'`, `'\n'`, or a lifetime `'a`.
    fn char_or_lifetime(&mut self) {
        if self.at(1) == Some('\\') || self.at(2) == Some('\'') {
            self.quoted('\'');
        } else {
            self.bump();
            while self.at(0).is_some_and(|c| c == '_' || c.is_alphanumeric()) {
                self.bump();
            }
        }
    }

    fn number(&mut self) {
        while let Some(c) = self.at(0) {
            let fraction = c == '.' && self.at(1).is_some_and(|d| d.is_ascii_digit());
            if c == '_' || c.is_alphanumeric() || fraction {
                self.bump();
            } else {
                return;
            }
        }
    }

    /// An identifier, or the prefix of a string (`b"`, `r#"`, `c"`) or
    /// byte (`b'x'`), or a raw identifier.
    fn word(&mut self, line: usize) {
        let start = self.i;
        while self.at(0).is_some_and(|c| c == '_' || c.is_alphanumeric()) {
            self.bump();
        }
        let word: String = self.chars[start..self.i].iter().collect();
        let next = self.at(0);
        match (word.as_str(), next) {
            ("r" | "br" | "cr", Some('"')) => {
                self.raw_string();
                self.push(Tok::Opaque, line);
            }
            ("r" | "br" | "cr", Some('#')) if matches!(self.at(1), Some('#' | '"')) => {
                self.raw_string();
                self.push(Tok::Opaque, line);
            }
            ("r", Some('#')) => {
                self.bump();
                self.word(line);
            }
            ("b" | "c", Some('"')) => {
                self.quoted('"');
                self.push(Tok::Opaque, line);
            }
            ("b", Some('\'')) => {
                self.quoted('\'');
                self.push(Tok::Opaque, line);
            }
            _ => self.push(Tok::Ident(word), line),
        }
    }
}
