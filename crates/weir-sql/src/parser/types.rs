//! Parses ksqlDB types (`ARRAY<STRUCT<a INT>>`, `DECIMAL(4, 2)`, custom type names) from
//! the shared token stream, so the same code serves column lists, CREATE TYPE and CAST.

use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

use crate::ast::{SqlType, StructFieldType};
use crate::dialect::expected;

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_TYPE_DEPTH: usize = 32;

pub(crate) fn parse_type(p: &mut Parser) -> Result<SqlType, ParserError> {
    parse_type_at(p, 0)
}

fn parse_type_at(p: &mut Parser, depth: usize) -> Result<SqlType, ParserError> {
    if depth > MAX_TYPE_DEPTH {
        return Err(ParserError::RecursionLimitExceeded);
    }
    let tok = p.next_token();
    let word = match &tok.token {
        Token::Word(w) => w.clone(),
        _ => return Err(expected("a type", &tok)),
    };
    if word.quote_style.is_some() {
        return Ok(SqlType::Custom(word.into_ident(tok.span)));
    }
    let ty = match word.value.as_str() {
        "ARRAY" => {
            p.expect_token(&Token::Lt)?;
            let inner = parse_type_at(p, depth + 1)?;
            p.expect_token(&Token::Gt)?;
            SqlType::Array(Box::new(inner))
        }
        "MAP" => {
            p.expect_token(&Token::Lt)?;
            let k = parse_type_at(p, depth + 1)?;
            p.expect_token(&Token::Comma)?;
            let v = parse_type_at(p, depth + 1)?;
            p.expect_token(&Token::Gt)?;
            SqlType::Map(Box::new(k), Box::new(v))
        }
        "STRUCT" => {
            let mut fields = Vec::new();
            // `STRUCT<>` arrives as the `<>` operator token.
            if !p.consume_token(&Token::Neq) {
                p.expect_token(&Token::Lt)?;
                if !p.consume_token(&Token::Gt) {
                    loop {
                        let t = p.next_token();
                        let name = match t.token {
                            Token::Word(w) => w.into_ident(t.span),
                            _ => return Err(expected("a field name", &t)),
                        };
                        let ty = parse_type_at(p, depth + 1)?;
                        fields.push(StructFieldType { name, ty });
                        if !p.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                    p.expect_token(&Token::Gt)?;
                }
            }
            SqlType::Struct(fields)
        }
        "DECIMAL" => {
            p.expect_token(&Token::LParen)?;
            let precision = small_uint(p)?;
            p.expect_token(&Token::Comma)?;
            let scale = small_uint(p)?;
            p.expect_token(&Token::RParen)?;
            SqlType::Decimal { precision, scale }
        }
        // Literals and operators that could never name a type.
        "NULL" | "TRUE" | "FALSE" | "NOT" | "AND" | "OR" => return Err(expected("a type", &tok)),
        other => match SqlType::from_name(other) {
            Some(SqlType::String) => {
                // `VARCHAR(n)` and `VARCHAR(STRING)`: ksqlDB accepts a parameter and ignores it.
                let param = &p.peek_nth_token_ref(1).token;
                let is_param = matches!(param, Token::Number(..))
                    || matches!(param, Token::Word(w) if w.quote_style.is_none() && w.value == "STRING");
                if p.peek_token_ref().token == Token::LParen && is_param {
                    p.next_token();
                    p.next_token();
                    p.expect_token(&Token::RParen)?;
                }
                SqlType::String
            }
            Some(t) => t,
            None => SqlType::Custom(word.into_ident(tok.span)),
        },
    };
    Ok(ty)
}

fn small_uint(p: &mut Parser) -> Result<u32, ParserError> {
    let tok = p.next_token();
    match &tok.token {
        Token::Number(n, _) => n
            .parse::<u32>()
            .map_err(|_| expected("a small whole number", &tok)),
        _ => Err(expected("a whole number", &tok)),
    }
}
