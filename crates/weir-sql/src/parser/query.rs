//! `SELECT` in ksqlDB's clause order, with its streaming clauses.

use sqlparser::ast::{Expr, Ident};
use sqlparser::tokenizer::Token;

use super::StatementParser;
use super::expr::is_predicate;
use crate::ast::{
    AliasedSource, Duration, Emit, Join, JoinKind, Query, Relation, SelectItem, TimeUnit,
    WindowExpr, WindowKind, WithinExpr,
};
use crate::error::{ParseError, Result};

/// Words that end a select item or a source reference rather than naming an alias.
const CLAUSE_WORDS: &[&str] = &[
    "FROM",
    "WINDOW",
    "WHERE",
    "GROUP",
    "PARTITION",
    "HAVING",
    "EMIT",
    "LIMIT",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "OUTER",
    "WITHIN",
    "ON",
];

impl StatementParser<'_> {
    pub(super) fn query(&mut self) -> Result<Query> {
        self.expect_kw("SELECT")?;
        let mut select = vec![self.select_item()?];
        while self.eat_token(&Token::Comma) {
            select.push(self.select_item()?);
        }
        self.expect_kw("FROM")?;
        let from = self.relation()?;
        let window = self.optional_clause(&["WINDOW"], Self::window)?;
        let where_clause = self.optional_clause(&["WHERE"], Self::expr)?;
        let group_by = self.optional_clause(&["GROUP", "BY"], |p| p.grouping("GROUP BY"))?;
        let partition_by =
            self.optional_clause(&["PARTITION", "BY"], |p| p.grouping("PARTITION BY"))?;
        let having = self.optional_clause(&["HAVING"], Self::expr)?;
        let emit = if self.eat_kw("EMIT") {
            if self.eat_kw("CHANGES") {
                Some(Emit::Changes)
            } else if self.eat_kw("FINAL") {
                Some(Emit::Final)
            } else {
                return Err(self.expected("CHANGES or FINAL"));
            }
        } else {
            None
        };
        let limit = self.optional_clause(&["LIMIT"], Self::uint)?;
        Ok(Query {
            select,
            from,
            window,
            where_clause,
            group_by,
            partition_by,
            having,
            emit,
            limit,
        })
    }

    fn select_item(&mut self) -> Result<SelectItem> {
        if self.eat_token(&Token::Mul) {
            return Ok(SelectItem::Wildcard);
        }
        if matches!(self.peek().token, Token::Word(_))
            && self.p.peek_nth_token_ref(1).token == Token::Period
            && self.p.peek_nth_token_ref(2).token == Token::Mul
        {
            let source = self.ident()?;
            self.p.next_token();
            self.p.next_token();
            return Ok(SelectItem::QualifiedWildcard(source));
        }
        let expr = self.expr()?;
        let alias = self.alias(&["FROM"])?;
        Ok(SelectItem::Expr { expr, alias })
    }

    /// `[AS] name`, where a bare name must not be one of `stop` words.
    fn alias(&mut self, stop: &[&str]) -> Result<Option<Ident>> {
        if self.eat_kw("AS") {
            return Ok(Some(self.ident()?));
        }
        match &self.peek().token {
            Token::Word(w) if w.quote_style.is_some() || !stop.contains(&w.value.as_str()) => {
                Ok(Some(self.ident()?))
            }
            _ => Ok(None),
        }
    }

    fn aliased_source(&mut self) -> Result<AliasedSource> {
        let name = self.ident()?;
        let alias = self.alias(CLAUSE_WORDS)?;
        Ok(AliasedSource { name, alias })
    }

    fn relation(&mut self) -> Result<Relation> {
        let source = self.aliased_source()?;
        let mut joins = Vec::new();
        loop {
            let kind = if self.eat_kw("JOIN") || self.eat_kws(&["INNER", "JOIN"]) {
                JoinKind::Inner
            } else if self.eat_kws(&["LEFT", "JOIN"]) || self.eat_kws(&["LEFT", "OUTER", "JOIN"]) {
                JoinKind::Left
            } else if self.eat_kws(&["RIGHT", "JOIN"]) || self.eat_kws(&["RIGHT", "OUTER", "JOIN"])
            {
                JoinKind::Right
            } else if self.eat_kws(&["FULL", "JOIN"]) || self.eat_kws(&["FULL", "OUTER", "JOIN"]) {
                JoinKind::Full
            } else if self.peek_kw("INNER")
                || self.peek_kw("LEFT")
                || self.peek_kw("RIGHT")
                || self.peek_kw("FULL")
            {
                self.p.next_token();
                return Err(self.expected("JOIN"));
            } else {
                break;
            };
            let source = self.aliased_source()?;
            let within = self.optional_clause(&["WITHIN"], Self::within)?;
            self.expect_kw("ON")?;
            let on = self.expr()?;
            joins.push(Join {
                kind,
                source,
                within,
                on,
            });
        }
        Ok(Relation { source, joins })
    }

    pub(super) fn duration(&mut self) -> Result<Duration> {
        let value = self.uint()?;
        let unit = match &self.peek().token {
            Token::Word(w) if w.quote_style.is_none() => TimeUnit::from_word(&w.value),
            _ => None,
        };
        match unit {
            Some(unit) => {
                self.p.next_token();
                Ok(Duration { value, unit })
            }
            None => Err(self.expected("a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)")),
        }
    }

    fn grace(&mut self) -> Result<Option<Duration>> {
        self.optional_clause(&["GRACE", "PERIOD"], Self::duration)
    }

    fn within(&mut self) -> Result<WithinExpr> {
        let (before, after) = if self.eat_token(&Token::LParen) {
            let before = self.duration()?;
            self.expect_token(&Token::Comma)?;
            let after = self.duration()?;
            self.expect_token(&Token::RParen)?;
            (before, Some(after))
        } else {
            (self.duration()?, None)
        };
        let grace = self.grace()?;
        Ok(WithinExpr {
            before,
            after,
            grace,
        })
    }

    fn window(&mut self) -> Result<WindowExpr> {
        let kinds = ["TUMBLING", "HOPPING", "SESSION"];
        let named = matches!(self.peek().token, Token::Word(_))
            && !kinds.iter().any(|k| self.peek_kw(k))
            && kinds.iter().any(|k| self.peek_nth_kw(1, k));
        let name = if named { Some(self.ident()?) } else { None };
        let kind = if self.eat_kw("TUMBLING") {
            self.expect_token(&Token::LParen)?;
            self.expect_kw("SIZE")?;
            WindowKind::Tumbling {
                size: self.duration()?,
            }
        } else if self.eat_kw("HOPPING") {
            self.expect_token(&Token::LParen)?;
            self.expect_kw("SIZE")?;
            let size = self.duration()?;
            self.expect_token(&Token::Comma)?;
            self.expect_kw("ADVANCE")?;
            self.expect_kw("BY")?;
            WindowKind::Hopping {
                size,
                advance: self.duration()?,
            }
        } else if self.eat_kw("SESSION") {
            self.expect_token(&Token::LParen)?;
            WindowKind::Session {
                gap: self.duration()?,
            }
        } else {
            return Err(self.expected("TUMBLING, HOPPING or SESSION"));
        };
        let mut retention = None;
        let mut grace = None;
        while self.eat_token(&Token::Comma) {
            if retention.is_none() && grace.is_none() && self.eat_kw("RETENTION") {
                retention = Some(self.duration()?);
            } else if grace.is_none() && self.eat_kws(&["GRACE", "PERIOD"]) {
                grace = Some(self.duration()?);
            } else {
                return Err(self.expected(if grace.is_none() {
                    "RETENTION or GRACE PERIOD"
                } else {
                    "')'"
                }));
            }
        }
        self.expect_token(&Token::RParen)?;
        Ok(WindowExpr {
            name,
            kind,
            retention,
            grace,
        })
    }

    /// GROUP BY / PARTITION BY: `a, b`, `(a, b)` or `()`. Items are value expressions:
    /// a predicate such as `a AND b` must be parenthesized, as in ksqlDB.
    fn grouping(&mut self, clause: &str) -> Result<Vec<Expr>> {
        if self.peek().token == Token::LParen && self.p.peek_nth_token_ref(1).token == Token::RParen
        {
            self.p.next_token();
            self.p.next_token();
            return Ok(Vec::new());
        }
        let mut raw = Vec::new();
        loop {
            let at = self.here();
            raw.push((at, self.raw_expr()?));
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        // A lone `(a, b)` is the parenthesized list form.
        if let [(at, Expr::Tuple(items))] = raw.as_slice() {
            let at = *at;
            raw = items.iter().cloned().map(|e| (at, e)).collect();
        }
        raw.into_iter()
            .map(|(at, e)| {
                if is_predicate(&e) {
                    return Err(ParseError::new(
                        at,
                        format!("Syntax error: {clause} takes value expressions; put the condition in parentheses"),
                    ));
                }
                if matches!(e, Expr::Tuple(_)) {
                    return Err(ParseError::syntax(at, "(", Some(&format!("a single expression per {clause} item"))));
                }
                self.finish(e)
            })
            .collect()
    }
}
