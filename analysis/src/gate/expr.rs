//! The gate language, read with winnow: a lexer from text to tokens, then
//! a recursive descent over the tokens. Every error says what was
//! expected where, and a gate is type-checked as it is read (a duration is
//! compared only with a duration).
//!
//! ```text
//! gate    = expr CMP expr                      CMP: < <= > >= == !=
//! expr    = term { (+|-) term }
//! term    = factor { (*|/) factor }
//! factor  = - factor | NUMBER [UNIT] | ( expr ) | stat
//! stat    = STAT ( STAGE )                     a stage's time per command
//!         | share ( STAGE ) . SHARE            its share of the dispatch
//!         | POP . STAT                         a population's dispatch
//! STAT    = p50 | p90 | p99 | max | mean | count
//! SHARE   = p50 | p90 | mean | max
//! POP     = all | cold | warm | waited | first_output | after_first_output | unattributed
//! UNIT    = ns | us | µs | ms | s | %
//! ```

use std::fmt;

use winnow::Parser;
use winnow::combinator::{alt, opt, peek, repeat};
use winnow::error::ParserError;
use winnow::stream::Stream;
use winnow::token::{any, one_of, take_till, take_while};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A comparison.
pub(super) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a value is.
pub(super) enum Kind {
    Duration,
    Number,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A statistic of a distribution.
pub(super) enum Field {
    P50,
    P90,
    P99,
    Max,
    Mean,
    Count,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A population of commands.
pub(super) enum Pop {
    All,
    Warmth(&'static str),
    FirstOutput,
    AfterFirstOutput,
    Unattributed,
}

#[derive(Debug, Clone, PartialEq)]
/// One side of a gate.
pub(super) enum Expr {
    /// A number (durations in nanoseconds).
    Lit(f64, Kind),
    Stage(String, Field),
    Share(String, Field),
    Pop(Pop, Field),
    Neg(Box<Expr>),
    Bin(Box<Expr>, char, Box<Expr>),
}

/// A gate read: its two sides and their comparison.
pub(super) struct Parsed {
    /// The left side.
    pub(super) left: Expr,
    /// The comparison.
    pub(super) cmp: Cmp,
    /// The right side.
    pub(super) right: Expr,
}

/// Reads a gate; what is wrong with it, at which point.
pub(super) fn parse(text: &str) -> Result<Parsed, String> {
    let tokens = lex(text)?;
    let mut input: Tokens<'_> = &tokens;
    let left = expr(&mut input).map_err(Why::reason)?;
    let cmp = match input.next_token() {
        Some(Token::Cmp(c)) => c,
        Some(other) => {
            return Err(format!(
                "expected a comparison (< <= > >= == !=), found {other}"
            ));
        }
        None => return Err("expected a comparison such as `< 2ms`".into()),
    };
    let right = expr(&mut input).map_err(Why::reason)?;
    if let Some(extra) = input.next_token() {
        return Err(format!("unexpected {extra} after the gate"));
    }
    let (lk, rk) = (kind(&left)?, kind(&right)?);
    if lk != rk {
        return Err(format!(
            "compares a {} with a {}: give the number a unit (such as 2ms) or compare a ratio",
            kind_name(lk),
            kind_name(rk)
        ));
    }
    Ok(Parsed { left, cmp, right })
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Duration => "duration",
        Kind::Number => "number",
    }
}

/// The kind of `e`, or why it mixes kinds.
pub(super) fn kind(e: &Expr) -> Result<Kind, String> {
    Ok(match e {
        Expr::Lit(_, k) => *k,
        Expr::Stage(_, f) | Expr::Pop(_, f) => {
            if *f == Field::Count {
                Kind::Number
            } else {
                Kind::Duration
            }
        }
        Expr::Share(..) => Kind::Number,
        Expr::Neg(inner) => kind(inner)?,
        Expr::Bin(a, op, b) => {
            let (ka, kb) = (kind(a)?, kind(b)?);
            match (op, ka, kb) {
                ('+' | '-', x, y) if x == y => x,
                ('*', Kind::Number, y) => y,
                ('*', x, Kind::Number) => x,
                ('/', x, Kind::Number) => x,
                ('/', Kind::Duration, Kind::Duration) => Kind::Number,
                _ => {
                    return Err(format!(
                        "`{op}` between a {} and a {} has no meaning",
                        kind_name(ka),
                        kind_name(kb)
                    ));
                }
            }
        }
    })
}

/// Why reading failed: `None` where the parser did not match and another
/// may (winnow backtracks), a reason where the gate is malformed (it
/// does not).
#[derive(Debug)]
struct Why(Option<String>);

impl Why {
    fn at(reason: String) -> Why {
        Why(Some(reason))
    }

    fn reason(self) -> String {
        self.0
            .unwrap_or_else(|| "expected a number or a statistic".to_owned())
    }
}

impl<I: Stream> ParserError<I> for Why {
    type Inner = Why;

    fn from_input(_input: &I) -> Why {
        Why(None)
    }

    fn is_backtrack(&self) -> bool {
        self.0.is_none()
    }

    fn into_inner(self) -> Result<Why, Why> {
        Ok(self)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64, Kind),
    Ident(String),
    Quoted(String),
    Cmp(Cmp),
    Sym(char),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Num(v, _) => write!(f, "the number {v}"),
            Token::Ident(s) => write!(f, "`{s}`"),
            Token::Quoted(s) => write!(f, "\"{s}\""),
            Token::Cmp(_) => write!(f, "a comparison"),
            Token::Sym(c) => write!(f, "`{c}`"),
        }
    }
}

/// The tokens of `text`.
fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut input = text;
    let mut out = Vec::new();
    loop {
        let _: Result<&str, Why> = take_while(0.., char::is_whitespace).parse_next(&mut input);
        if input.is_empty() {
            return Ok(out);
        }
        let token = alt((number, ident, quoted, comparison, symbol))
            .parse_next(&mut input)
            .map_err(|why: Why| match why.0 {
                Some(reason) => reason,
                None => format!("unexpected `{}`", input.chars().next().unwrap_or_default()),
            })?;
        out.push(token);
    }
}

/// A number and its unit (`2ms`, `.5`, `30%`).
fn number(input: &mut &str) -> Result<Token, Why> {
    let digit = |c: char| c.is_ascii_digit();
    peek(alt((one_of(digit).void(), ('.', one_of(digit)).void()))).parse_next(input)?;
    let digits = take_while(1.., |c: char| c.is_ascii_digit() || c == '.').parse_next(input)?;
    let value: f64 = digits
        .parse()
        .map_err(|_| Why::at(format!("`{digits}` is not a number")))?;
    let unit = take_while(0.., |c: char| c.is_alphabetic() || c == '%').parse_next(input)?;
    let (scale, kind) = match unit {
        "" => (1.0, Kind::Number),
        "%" => (0.01, Kind::Number),
        "ns" => (1.0, Kind::Duration),
        "us" | "µs" => (1e3, Kind::Duration),
        "ms" => (1e6, Kind::Duration),
        "s" => (1e9, Kind::Duration),
        other => {
            return Err(Why::at(format!(
                "`{digits}{other}`: unknown unit `{other}` (use ns, us, ms, s or %)"
            )));
        }
    };
    Ok(Token::Num(value * scale, kind))
}

/// A name: a statistic, a population's (`cold.p50`) or a stage's.
fn ident(input: &mut &str) -> Result<Token, Why> {
    (
        one_of(|c: char| c.is_alphabetic() || c == '_'),
        take_while(0.., |c: char| {
            c.is_alphanumeric() || matches!(c, '_' | '.' | '/')
        }),
    )
        .take()
        .map(|name: &str| Token::Ident(name.to_owned()))
        .parse_next(input)
}

/// A quoted stage name.
fn quoted(input: &mut &str) -> Result<Token, Why> {
    '"'.parse_next(input)?;
    let name = take_till(0.., '"').parse_next(input)?;
    opt('"')
        .parse_next(input)?
        .ok_or_else(|| Why::at("a quoted stage name is not closed".into()))?;
    Ok(Token::Quoted(name.to_owned()))
}

/// `<`, `<=`, `>`, `>=`, `==` or `!=`.
fn comparison(input: &mut &str) -> Result<Token, Why> {
    let c = one_of(['<', '>', '=', '!']).parse_next(input)?;
    let two = opt('=').parse_next(input)?.is_some();
    Ok(Token::Cmp(match (c, two) {
        ('<', false) => Cmp::Lt,
        ('<', true) => Cmp::Le,
        ('>', false) => Cmp::Gt,
        ('>', true) => Cmp::Ge,
        ('=', true) => Cmp::Eq,
        ('!', true) => Cmp::Ne,
        _ => {
            return Err(Why::at(format!(
                "`{c}` is not a comparison (< <= > >= == !=)"
            )));
        }
    }))
}

/// A parenthesis, an operator or the dot of `share(STAGE).p50`.
fn symbol(input: &mut &str) -> Result<Token, Why> {
    one_of(['(', ')', '+', '-', '*', '/', '.'])
        .map(Token::Sym)
        .parse_next(input)
}

type Tokens<'t> = &'t [Token];

/// An operator among `ops`.
fn operator<'t>(ops: [char; 2]) -> impl Parser<Tokens<'t>, char, Why> {
    any.verify_map(move |t: Token| match t {
        Token::Sym(c) if ops.contains(&c) => Some(c),
        _ => None,
    })
}

/// `term { (+|-) term }`.
fn expr(input: &mut Tokens<'_>) -> Result<Expr, Why> {
    let first = term(input)?;
    repeat(0.., (operator(['+', '-']), term))
        .fold(
            move || first.clone(),
            |left, (op, right)| Expr::Bin(Box::new(left), op, Box::new(right)),
        )
        .parse_next(input)
}

/// `factor { (*|/) factor }`.
fn term(input: &mut Tokens<'_>) -> Result<Expr, Why> {
    let first = factor(input)?;
    repeat(0.., (operator(['*', '/']), factor))
        .fold(
            move || first.clone(),
            |left, (op, right)| Expr::Bin(Box::new(left), op, Box::new(right)),
        )
        .parse_next(input)
}

/// `- factor | NUMBER | ( expr ) | stat`.
fn factor(input: &mut Tokens<'_>) -> Result<Expr, Why> {
    match input.next_token() {
        Some(Token::Sym('-')) => Ok(Expr::Neg(Box::new(factor(input)?))),
        Some(Token::Num(v, k)) => Ok(Expr::Lit(v, k)),
        Some(Token::Sym('(')) => {
            let e = expr(input)?;
            expect(input, ')')?;
            Ok(e)
        }
        Some(Token::Ident(name)) => stat(input, &name),
        Some(other) => Err(Why::at(format!(
            "expected a number or a statistic, found {other}"
        ))),
        None => Err(Why::at(
            "expected a number or a statistic before the end".into(),
        )),
    }
}

/// The symbol `c`, next.
fn expect(input: &mut Tokens<'_>, c: char) -> Result<(), Why> {
    match input.next_token() {
        Some(Token::Sym(s)) if s == c => Ok(()),
        Some(other) => Err(Why::at(format!("expected `{c}`, found {other}"))),
        None => Err(Why::at(format!("expected `{c}` before the end"))),
    }
}

/// `( STAGE )`.
fn stage(input: &mut Tokens<'_>) -> Result<String, Why> {
    expect(input, '(')?;
    let stage = match input.next_token() {
        Some(Token::Ident(s) | Token::Quoted(s)) if !s.is_empty() => s,
        Some(other) => return Err(Why::at(format!("expected a stage name, found {other}"))),
        None => return Err(Why::at("expected a stage name".into())),
    };
    expect(input, ')')?;
    Ok(stage)
}

/// What follows the name of a statistic.
fn stat(input: &mut Tokens<'_>, name: &str) -> Result<Expr, Why> {
    if name == "share" {
        let stage = stage(input)?;
        expect(input, '.')?;
        let field = match input.next_token() {
            Some(Token::Ident(f)) => f,
            _ => {
                return Err(Why::at(
                    "expected share(STAGE).p50, .p90, .mean or .max".into(),
                ));
            }
        };
        let field = match field.as_str() {
            "p50" => Field::P50,
            "p90" => Field::P90,
            "mean" => Field::Mean,
            "max" => Field::Max,
            other => {
                return Err(Why::at(format!(
                    "share(...).{other}: use p50, p90, mean or max"
                )));
            }
        };
        return Ok(Expr::Share(stage, field));
    }
    if let Some(field) = parse_field(name) {
        let opens = peek(any::<_, Why>)
            .parse_next(input)
            .is_ok_and(|t| t == Token::Sym('('));
        if !opens {
            return Err(Why::at(format!("`{name}` needs a stage: {name}(STAGE)")));
        }
        return Ok(Expr::Stage(stage(input)?, field));
    }
    if let Some((pop, field)) = name.rsplit_once('.') {
        let pop = match pop {
            "all" => Pop::All,
            "cold" => Pop::Warmth("cold"),
            "warm" => Pop::Warmth("warm"),
            "waited" => Pop::Warmth("waited"),
            "first_output" => Pop::FirstOutput,
            "after_first_output" => Pop::AfterFirstOutput,
            "unattributed" => Pop::Unattributed,
            other => {
                return Err(Why::at(format!(
                    "`{other}` is not a population (all, cold, warm, waited, first_output, \
                     after_first_output, unattributed)"
                )));
            }
        };
        let field = parse_field(field).ok_or_else(|| {
            Why::at(format!(
                "`{name}`: use .p50, .p90, .p99, .max, .mean or .count"
            ))
        })?;
        return Ok(Expr::Pop(pop, field));
    }
    Err(Why::at(format!(
        "`{name}` is not a statistic: use p50(STAGE), share(STAGE).p50, cold.p50, ..."
    )))
}

/// A statistic's name.
fn parse_field(name: &str) -> Option<Field> {
    Some(match name {
        "p50" => Field::P50,
        "p90" => Field::P90,
        "p99" => Field::P99,
        "max" => Field::Max,
        "mean" => Field::Mean,
        "count" => Field::Count,
        _ => return None,
    })
}
