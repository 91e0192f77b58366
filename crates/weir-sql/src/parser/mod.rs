//! The statement layer: dispatches on the leading keyword and parses ksqlDB's statement
//! forms, handing expressions to sqlparser (with [`crate::dialect::KsqlDialect`]'s hooks).
//! One file per statement family; this file holds the token helpers they share.

mod expr;
mod query;
mod statements;

pub use statements::parse_window_size;
pub(crate) mod types;

use sqlparser::ast::{Expr, Ident};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::ast::Statement;
use crate::dialect::KsqlDialect;
use crate::error::{ParseError, Position, Result};
use crate::lexer::{StatementTokens, strip_location};

/// sqlparser's limit on recursion while parsing; deeper input is refused with an error.
/// It leaves room for re-reading anything we print (see [`expr::MAX_NESTING`]); sqlparser
/// grows its stack as needed, so the limit is about input size, not stack safety.
const RECURSION_LIMIT: usize = 100;

static DIALECT: KsqlDialect = KsqlDialect;

/// The most operators one statement may hold. sqlparser builds a chain of operators
/// (`a + a + ...`) without recursing, but the tree it builds is as deep as the chain is
/// long, and checking, printing and even dropping such a tree recurses. ksqlDB's own test
/// statements use at most about a hundred.
pub const MAX_OPERATORS: usize = 1_000;

fn is_operator(t: &Token) -> bool {
    use Token::*;
    match t {
        Plus | Minus | Mul | Div | Mod | StringConcat | Eq | Neq | Lt | Gt | LtEq | GtEq
        | Arrow | DoubleColon | LBracket => true,
        Word(w) if w.quote_style.is_none() => {
            matches!(
                w.value.as_str(),
                "AND" | "OR" | "NOT" | "IS" | "BETWEEN" | "LIKE" | "IN"
            )
        }
        _ => false,
    }
}

/// Stack a statement's parse may need at most: trees of up to [`MAX_OPERATORS`] levels
/// are walked recursively by sqlparser's helpers (spans, printing, cloning) as well as
/// ours. Callers on small stacks (2 MiB test and tokio threads) get a fresh segment.
const STACK_RED_ZONE: usize = 4 << 20;
const STACK_SEGMENT: usize = 16 << 20;

/// Parses the tokens of exactly one statement.
pub(crate) fn parse_statement_tokens(st: StatementTokens) -> Result<Statement> {
    stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || parse_on_enough_stack(st))
}

fn parse_on_enough_stack(st: StatementTokens) -> Result<Statement> {
    let operators = st.tokens.iter().filter(|t| is_operator(&t.token)).count();
    if operators > MAX_OPERATORS {
        return Err(ParseError::new(
            st.start,
            format!(
                "Statement has {operators} operators, more than the {MAX_OPERATORS} one statement may hold: split it up"
            ),
        ));
    }
    let mut p = StatementParser::new(st);
    let stmt = p.statement()?;
    p.expect_end()?;
    Ok(stmt)
}

pub(crate) struct StatementParser<'a> {
    p: Parser<'a>,
    start: Position,
    end: Position,
}

impl<'a> StatementParser<'a> {
    fn new(st: StatementTokens) -> StatementParser<'static> {
        StatementParser {
            p: Parser::new(&DIALECT)
                .with_recursion_limit(RECURSION_LIMIT)
                .with_tokens_with_locations(st.tokens),
            start: st.start,
            end: st.end,
        }
    }

    fn peek(&self) -> &TokenWithSpan {
        self.p.peek_token_ref()
    }

    fn position_of(&self, t: &TokenWithSpan) -> Position {
        if t.token == Token::EOF || t.span.start.line == 0 {
            self.end
        } else {
            t.span.start.into()
        }
    }

    /// The position of the next token (or the end of the statement).
    fn here(&self) -> Position {
        self.position_of(self.peek())
    }

    /// A syntax error at the next token.
    fn expected(&self, what: &str) -> ParseError {
        let t = self.peek();
        let near = if t.token == Token::EOF {
            String::new()
        } else {
            t.token.to_string()
        };
        ParseError::syntax(self.position_of(t), &near, Some(what))
    }

    fn is_kw(t: &Token, kw: &str) -> bool {
        matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value == kw)
    }

    fn peek_kw(&self, kw: &str) -> bool {
        Self::is_kw(&self.peek().token, kw)
    }

    fn peek_nth_kw(&self, n: usize, kw: &str) -> bool {
        Self::is_kw(&self.p.peek_nth_token_ref(n).token, kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek_kw(kw) {
            self.p.next_token();
            true
        } else {
            false
        }
    }

    /// Consumes all of `kws` in order, or nothing.
    fn eat_kws(&mut self, kws: &[&str]) -> bool {
        if kws.iter().enumerate().all(|(i, k)| self.peek_nth_kw(i, k)) {
            for _ in kws {
                self.p.next_token();
            }
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.expected(kw))
        }
    }

    /// `KEYWORDS thing`, where the whole clause is optional: `Some(thing)` after the
    /// keywords, `None` when they are absent.
    fn optional_clause<T>(
        &mut self,
        keywords: &[&str],
        parse: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.eat_kws(keywords) {
            parse(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn eat_token(&mut self, t: &Token) -> bool {
        self.p.consume_token(t)
    }

    fn expect_token(&mut self, t: &Token) -> Result<()> {
        if self.eat_token(t) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{t}'")))
        }
    }

    fn expect_end(&mut self) -> Result<()> {
        if self.peek().token == Token::EOF {
            Ok(())
        } else {
            Err(self.expected("end of statement"))
        }
    }

    /// Any word, quoted or not, as a name.
    fn ident(&mut self) -> Result<Ident> {
        let t = self.peek().clone();
        match t.token {
            Token::Word(w) => {
                self.p.next_token();
                Ok(w.into_ident(t.span))
            }
            _ => Err(self.expected("an identifier")),
        }
    }

    fn string(&mut self) -> Result<String> {
        match self.peek().token.clone() {
            Token::SingleQuotedString(s) => {
                self.p.next_token();
                Ok(s)
            }
            _ => Err(self.expected("a string in single quotes")),
        }
    }

    fn uint(&mut self) -> Result<u64> {
        let t = self.peek().clone();
        match &t.token {
            Token::Number(n, _) => match n.parse::<u64>() {
                Ok(v) => {
                    self.p.next_token();
                    Ok(v)
                }
                Err(_) => Err(ParseError::new(
                    self.position_of(&t),
                    format!("Expected a whole number, found {n}"),
                )),
            },
            _ => Err(self.expected("a whole number")),
        }
    }

    /// An expression as sqlparser parses it, before ksqlDB's checks.
    fn raw_expr(&mut self) -> Result<Expr> {
        self.p.parse_expr().map_err(|e| self.convert(e))
    }

    fn finish(&self, e: Expr) -> Result<Expr> {
        expr::finish_expr(e, self.start)
    }

    fn expr(&mut self) -> Result<Expr> {
        let e = self.raw_expr()?;
        self.finish(e)
    }

    /// Translates sqlparser's errors into ours, keeping the position and what was expected.
    fn convert(&self, e: ParserError) -> ParseError {
        match e {
            ParserError::RecursionLimitExceeded => ParseError::new(
                self.here(),
                format!("Statement is nested too deeply (the limit is {RECURSION_LIMIT} levels)"),
            ),
            ParserError::ParserError(msg) | ParserError::TokenizerError(msg) => {
                let position = location_in(&msg)
                    .filter(|p| p.line > 0)
                    .unwrap_or_else(|| self.here());
                let msg = strip_location(&msg);
                if let Some(rest) = msg.strip_prefix("Expected: ")
                    && let Some((want, found)) = rest.rsplit_once(", found: ")
                {
                    let near = if found == "EOF" { "" } else { found };
                    let position = if found == "EOF" { self.end } else { position };
                    return ParseError::syntax(position, near, Some(want));
                }
                ParseError::new(position, msg)
            }
        }
    }
}

/// Reads the "at Line: L, Column: C" sqlparser appends to its messages.
fn location_in(msg: &str) -> Option<Position> {
    let rest = &msg[msg.rfind("at Line: ")? + "at Line: ".len()..];
    let (line, col) = rest.split_once(", Column: ")?;
    let col: String = col.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some(Position::new(line.trim().parse().ok()?, col.parse().ok()?))
}
