//! Turns script text into positioned tokens with ksqlDB's identifier rules applied, and
//! cuts a script into statements at top-level semicolons.
//!
//! Identifier case is settled here, once: an unquoted word is upper-cased (ksqlDB resolves
//! `foo` as `FOO`), a back-quoted or double-quoted one keeps its case and is marked with a
//! back-quote. Every later stage can then compare names by value.

use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::dialect::KsqlDialect;
use crate::error::{ParseError, Position};

/// The tokens of one statement (without its terminating `;`) and where it sits in the script.
#[derive(Debug, Clone)]
pub(crate) struct StatementTokens {
    pub tokens: Vec<TokenWithSpan>,
    /// Position of the first token.
    pub start: Position,
    /// Position just after the last token: where "end of input" errors point.
    pub end: Position,
}

/// Tokenizes `sql` with positions. Whitespace and comments are kept (the parser skips
/// them); identifiers are normalized as described in the module comment.
pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, ParseError> {
    let dialect = KsqlDialect;
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| ParseError::new(e.location, strip_location(&e.message)))?;
    let mut out = Vec::with_capacity(tokens.len());
    for mut t in tokens {
        match &mut t.token {
            Token::Word(w) => {
                match w.quote_style {
                    None => w.value = w.value.to_uppercase(),
                    Some(_) => w.quote_style = Some('`'),
                }
                out.push(t);
            }
            // ksqlDB has no shift operators, and `ARRAY<ARRAY<INT>>` must close two brackets.
            Token::ShiftRight => {
                let s = t.span.start;
                let mid = Location::new(s.line, s.column + 1);
                out.push(TokenWithSpan::new(Token::Gt, Span::new(s, mid)));
                out.push(TokenWithSpan::new(Token::Gt, Span::new(mid, t.span.end)));
            }
            _ => out.push(t),
        }
    }
    Ok(out)
}

/// Splits tokens at top-level `;`. Statements with no tokens but whitespace are dropped.
/// The second value is the trailing statement that had no `;` (if any tokens follow the
/// last one), which a script checker may want to flag and a REPL keeps reading for.
pub(crate) fn split_statements(
    tokens: Vec<TokenWithSpan>,
) -> (Vec<StatementTokens>, Option<StatementTokens>) {
    let mut done = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    for t in tokens {
        if t.token == Token::SemiColon {
            if let Some(st) = finish(std::mem::take(&mut current)) {
                done.push(st);
            }
        } else if t.token != Token::EOF {
            current.push(t);
        }
    }
    (done, finish(current))
}

fn finish(tokens: Vec<TokenWithSpan>) -> Option<StatementTokens> {
    let mut significant = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)));
    let first = significant.next()?;
    let start = first.span.start.into();
    let last = significant.next_back().unwrap_or(first);
    let end = last.span.end.into();
    Some(StatementTokens { tokens, start, end })
}

/// sqlparser appends " at Line: L, Column: C" to its messages; we carry the position
/// separately, so cut it off.
pub(crate) fn strip_location(message: &str) -> String {
    match message.rfind(" at Line: ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<String> {
        tokenize(sql)
            .unwrap()
            .into_iter()
            .filter_map(|t| match t.token {
                Token::Word(w) => Some(format!(
                    "{}{}",
                    w.quote_style.map(String::from).unwrap_or_default(),
                    w.value
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn unquoted_words_are_upper_cased_and_quoted_keep_case() {
        assert_eq!(
            words("select `mixedCase`, \"Other\", plain"),
            ["SELECT", "`mixedCase", "`Other", "PLAIN"]
        );
    }

    #[test]
    fn shift_right_is_two_closing_brackets() {
        let toks: Vec<_> = tokenize("ARRAY<ARRAY<INT>>")
            .unwrap()
            .into_iter()
            .map(|t| t.token)
            .collect();
        assert_eq!(toks.iter().filter(|t| **t == Token::Gt).count(), 2);
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let (done, rest) =
            split_statements(tokenize("SELECT ';' FROM A;  ;\nSHOW STREAMS; LIST").unwrap());
        assert_eq!(done.len(), 2);
        assert_eq!(done[1].start, Position::new(2, 1));
        assert_eq!(rest.unwrap().start, Position::new(2, 15));
    }

    #[test]
    fn unterminated_string_reports_its_position() {
        let e = tokenize("SELECT 'abc FROM X").unwrap_err();
        assert_eq!(e.position, Position::new(1, 8));
    }
}
