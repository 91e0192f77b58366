//! The sqlparser dialect for ksqlDB expressions: identifiers in back-quotes, and hooks for
//! what ksqlDB adds to SQL expressions: `a->b` struct dereference, `x => ...` lambdas,
//! `CAST(x AS <ksqlDB type>)`, and function calls whose arguments may be lambdas or
//! `name := value` pairs (`STRUCT(A := 1)`, `MAP('k' := v)`).
//!
//! Every function call goes through [`parse_function_call`] rather than sqlparser's own,
//! so `SUBSTRING(a, 2)` or `TRIM(x)` are ordinary calls, as they are in ksqlDB, and not
//! sqlparser's special forms.

use sqlparser::ast::{
    BinaryOperator, CastKind, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgOperator,
    FunctionArgumentList, FunctionArguments, Ident, LambdaFunction, LambdaFunctionParameter,
    LambdaSyntax, ObjectName, OneOrManyWithParens,
};
use sqlparser::dialect::{Dialect, Precedence};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::parser::types::parse_type;

#[derive(Debug, Default, Clone, Copy)]
pub struct KsqlDialect;

impl Dialect for KsqlDialect {
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || ch == '"'
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_'
    }

    /// ksqlDB accepts identifiers that start with digits, such as `1R`.
    fn supports_numeric_prefix(&self) -> bool {
        true
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        parse_prefix(parser)
    }

    /// When the special form one of these words starts fails to parse, that is the error:
    /// sqlparser would otherwise retry the word as a column name, and nested failures
    /// (`CASE WHEN 1 THEN CASE WHEN ...`) would cost twice as much per level.
    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        matches!(
            kw,
            Keyword::CASE
                | Keyword::NOT
                | Keyword::EXISTS
                | Keyword::STRUCT
                | Keyword::TRIM
                | Keyword::ARRAY
                | Keyword::CAST
        )
    }

    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &Expr,
        _precedence: u8,
    ) -> Option<Result<Expr, ParserError>> {
        if parser.peek_token_ref().token == Token::Arrow {
            return Some(parse_dereference(parser, expr));
        }
        None
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        match parser.peek_token_ref().token {
            // `->` binds tighter than any operator: `a->b + 1` is `(a->b) + 1`.
            Token::Arrow => Some(Ok(self.prec_value(Precedence::Period))),
            // `:=` is not an operator: it separates a name from its value in STRUCT(...)
            // and MAP(...), so an expression ends before it.
            Token::Assignment => Some(Ok(0)),
            _ => None,
        }
    }
}

/// sqlparser's own message shape, so the statement layer converts every error the same way.
pub(crate) fn expected(what: &str, found: &TokenWithSpan) -> ParserError {
    let l = found.span.start;
    ParserError::ParserError(format!(
        "Expected: {what}, found: {} at Line: {}, Column: {}",
        found.token, l.line, l.column
    ))
}

fn is_word(t: &Token, value: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value == value)
}

/// Words that start a special form even when followed by `(`.
const NOT_FUNCTIONS: &[&str] = &["NOT", "CASE", "EXISTS", "ARRAY", "CAST"];

/// Words ksqlDB reserves for clauses and operators: never the start of an expression, so
/// `SELECT FROM x` is an error at `FROM` rather than a column named FROM.
const RESERVED: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "WINDOW",
    "PARTITION",
    "EMIT",
    "LIMIT",
    "JOIN",
    "ON",
    "WITHIN",
    "AS",
    "AND",
    "OR",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "IN",
    "IS",
    "BETWEEN",
    "LIKE",
    "ESCAPE",
    "INNER",
    "OUTER",
];

fn parse_prefix(p: &mut Parser) -> Option<Result<Expr, ParserError>> {
    if let Token::Word(w) = &p.peek_token_ref().token
        && w.quote_style.is_none()
        && RESERVED.contains(&w.value.as_str())
    {
        return Some(Err(expected("an expression", p.peek_token_ref())));
    }
    let first = p.peek_token_ref().token.clone();
    // ksqlDB has no INTERVAL expressions, so the word is a column name. (sqlparser would
    // try `INTERVAL <expr> <unit>` first, and nested failures of that cost twice as much
    // per level.)
    if is_word(&first, "INTERVAL") && p.peek_nth_token_ref(1).token != Token::LParen {
        let t = p.next_token();
        return Some(ident_of(t).map(Expr::Identifier));
    }
    let second = p.peek_nth_token_ref(1).token.clone();
    match (&first, &second) {
        (t, Token::LParen) if is_word(t, "CAST") => Some(parse_cast(p)),
        (Token::Word(_), Token::RArrow) => Some(parse_lambda(p)),
        (Token::LParen, _) if lambda_params_ahead(p) => Some(parse_lambda(p)),
        (Token::Word(w), Token::LParen)
            if w.quote_style.is_some() || !NOT_FUNCTIONS.contains(&w.value.as_str()) =>
        {
            Some(parse_function_call(p))
        }
        _ => None,
    }
}

/// `(a, b) =>` ahead?
fn lambda_params_ahead(p: &Parser) -> bool {
    let mut i = 1;
    loop {
        if !matches!(p.peek_nth_token_ref(i).token, Token::Word(_)) {
            return false;
        }
        i += 1;
        match p.peek_nth_token_ref(i).token {
            Token::Comma => i += 1,
            Token::RParen => return p.peek_nth_token_ref(i + 1).token == Token::RArrow,
            _ => return false,
        }
    }
}

fn ident_of(t: TokenWithSpan) -> Result<Ident, ParserError> {
    match t.token {
        Token::Word(w) => Ok(w.into_ident(t.span)),
        _ => Err(expected("an identifier", &t)),
    }
}

fn parse_lambda(p: &mut Parser) -> Result<Expr, ParserError> {
    let params = if p.consume_token(&Token::LParen) {
        let mut names = Vec::new();
        loop {
            names.push(LambdaFunctionParameter {
                name: ident_of(p.next_token())?,
                data_type: None,
            });
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen)?;
        OneOrManyWithParens::Many(names)
    } else {
        OneOrManyWithParens::One(LambdaFunctionParameter {
            name: ident_of(p.next_token())?,
            data_type: None,
        })
    };
    p.expect_token(&Token::RArrow)?;
    let body = p.parse_expr()?;
    Ok(Expr::Lambda(LambdaFunction {
        params,
        body: Box::new(body),
        syntax: LambdaSyntax::Arrow,
    }))
}

fn parse_cast(p: &mut Parser) -> Result<Expr, ParserError> {
    p.next_token(); // CAST
    p.expect_token(&Token::LParen)?;
    let expr = p.parse_expr()?;
    let tok = p.next_token();
    if !is_word(&tok.token, "AS") {
        return Err(expected("AS", &tok));
    }
    let ty = parse_type(p)?;
    p.expect_token(&Token::RParen)?;
    Ok(Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(expr),
        data_type: ty.to_data_type(),
        array: false,
        format: None,
    })
}

/// `name(arg, ...)`: arguments are expressions, lambdas, `*`, or `name := value`.
fn parse_function_call(p: &mut Parser) -> Result<Expr, ParserError> {
    let name = ident_of(p.next_token())?;
    p.expect_token(&Token::LParen)?;
    let mut args = Vec::new();
    if !p.consume_token(&Token::RParen) {
        if p.peek_token_ref().token == Token::Mul && p.peek_nth_token_ref(1).token == Token::RParen
        {
            p.next_token();
            args.push(FunctionArg::Unnamed(FunctionArgExpr::Wildcard));
        } else {
            loop {
                let e = p.parse_expr()?;
                let arg = if p.consume_token(&Token::Assignment) {
                    let value = FunctionArgExpr::Expr(p.parse_expr()?);
                    let operator = FunctionArgOperator::Assignment;
                    match e {
                        Expr::Identifier(name) => FunctionArg::Named {
                            name,
                            arg: value,
                            operator,
                        },
                        name => FunctionArg::ExprNamed {
                            name,
                            arg: value,
                            operator,
                        },
                    }
                } else {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                };
                args.push(arg);
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
        }
        p.expect_token(&Token::RParen)?;
    }
    Ok(function_call(name, args))
}

/// The longest `a->b->c...` chain accepted. sqlparser lends the infix hook its left
/// operand, so each `->` copies the chain so far: the cap keeps that cheap and shallow.
const MAX_DEREFERENCE_CHAIN: usize = 64;

/// A call `name(args)` in the shape every call in a ksqlDB expression has: a plain
/// argument list, no window, filter or ordering.
pub fn function_call(name: Ident, args: Vec<FunctionArg>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![name]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// `expr->field` and `expr->*`, with any subscripts that follow (`a->b[1]`).
fn parse_dereference(p: &mut Parser, left: &Expr) -> Result<Expr, ParserError> {
    let mut chain_len = 0;
    let mut spine = left;
    loop {
        spine = match spine {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Arrow,
                ..
            } => left,
            Expr::CompoundFieldAccess { root, .. } => root,
            _ => break,
        };
        chain_len += 1;
        if chain_len >= MAX_DEREFERENCE_CHAIN {
            let l = p.peek_token_ref().span.start;
            return Err(ParserError::ParserError(format!(
                "More than {MAX_DEREFERENCE_CHAIN} '->' in a row at Line: {}, Column: {}",
                l.line, l.column
            )));
        }
    }
    p.next_token(); // ->
    let tok = p.next_token();
    let field = match tok.token {
        Token::Mul => Expr::Wildcard(sqlparser::ast::helpers::attached_token::AttachedToken(tok)),
        Token::Word(w) => Expr::Identifier(w.into_ident(tok.span)),
        _ => return Err(expected("a field name or '*' after '->'", &tok)),
    };
    let deref = Expr::BinaryOp {
        left: Box::new(left.clone()),
        op: BinaryOperator::Arrow,
        right: Box::new(field),
    };
    let mut chain = Vec::new();
    p.parse_multi_dim_subscript(&mut chain)?;
    Ok(if chain.is_empty() {
        deref
    } else {
        Expr::CompoundFieldAccess {
            root: Box::new(deref),
            access_chain: chain,
        }
    })
}
