//! `weir-sql` parses ksqlDB's SQL dialect into a typed AST.
//!
//! It owns the statement forms ksqlDB adds to SQL (CREATE STREAM/TABLE ... WITH, EMIT,
//! WINDOW, WITHIN, PARTITION BY, PRINT, SHOW/DESCRIBE, ...), ksqlDB's identifier case
//! rules, canonical printing of every node, and errors that name a line and column.
//! Expressions are [`sqlparser`] expressions, parsed with [`KsqlDialect`]'s hooks for
//! `->`, lambdas, ksqlDB types in CAST and `:=` constructor arguments. What statements
//! mean (catalog lookups, types of expressions, planning) belongs to the crates above.
//!
//! ```
//! let stmts = weir_sql::parse("select eventid from carsensor emit changes;").unwrap();
//! assert_eq!(stmts[0].to_string(), "SELECT EVENTID FROM CARSENSOR EMIT CHANGES");
//! ```

pub mod ast;
mod dialect;
mod error;
mod lexer;
mod parser;
mod variables;

pub use ast::Statement;
pub use dialect::{KsqlDialect, function_call};
pub use error::{ParseError, Position, Result};
pub use parser::parse_window_size;
/// The sqlparser this crate builds on, for callers that work with its expressions.
pub use sqlparser;
pub use variables::{Applied, Variables};

use lexer::{split_statements, tokenize};

/// The words of ksqlDB's statements and clauses this parser reads (what a shell
/// highlights and completes).
pub const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "EMIT",
    "CHANGES",
    "FINAL",
    "LIMIT",
    "CREATE",
    "STREAM",
    "TABLE",
    "STREAMS",
    "TABLES",
    "TOPICS",
    "QUERIES",
    "PROPERTIES",
    "FUNCTIONS",
    "TYPES",
    "AS",
    "WITH",
    "INSERT",
    "INTO",
    "VALUES",
    "DROP",
    "DELETE",
    "TOPIC",
    "TERMINATE",
    "ALL",
    "SHOW",
    "LIST",
    "DESCRIBE",
    "EXTENDED",
    "FUNCTION",
    "EXPLAIN",
    "PRINT",
    "BEGINNING",
    "INTERVAL",
    "SET",
    "UNSET",
    "RUN",
    "SCRIPT",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "BETWEEN",
    "LIKE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "KEY",
    "PRIMARY",
    "PARTITION",
    "BY",
    "GROUP",
    "HAVING",
    "WINDOW",
    "TUMBLING",
    "HOPPING",
    "SESSION",
    "SIZE",
    "ADVANCE",
    "JOIN",
    "LEFT",
    "INNER",
    "OUTER",
    "ON",
    "WITHIN",
    "TRUE",
    "FALSE",
    "INT",
    "INTEGER",
    "BIGINT",
    "DOUBLE",
    "DECIMAL",
    "STRING",
    "VARCHAR",
    "BOOLEAN",
    "BYTES",
    "DATE",
    "TIME",
    "TIMESTAMP",
    "ARRAY",
    "MAP",
    "STRUCT",
    "TYPE",
    "IF",
    "EXISTS",
    "REPLACE",
    "SOURCE",
    "KAFKA_TOPIC",
    "VALUE_FORMAT",
    "KEY_FORMAT",
    "PARTITIONS",
    "REPLICAS",
    "JSON",
    "DELIMITED",
    "KAFKA",
    "EXIT",
    "QUIT",
    "HELP",
    "ASSERT",
    "TIMEOUT",
    "SCHEMA",
    "SUBJECT",
    "ID",
    "PAUSE",
    "RESUME",
    "DEFINE",
    "UNDEFINE",
    "VARIABLES",
    "GRACE",
    "PERIOD",
    "FULL",
    "RIGHT",
    "HEADERS",
    "HEADER",
    "RETENTION",
];

/// What a caller accepts besides server statements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Accept commands only the REPL runs (`RUN SCRIPT`). The server refuses them, as
    /// ksqlDB's does: they name files on the client's machine.
    pub allow_cli_commands: bool,
}

/// One statement of a script, parsed or not.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    /// Where the statement starts in the script.
    pub start: Position,
    /// The statement's text as written, without the `;`.
    pub text: String,
    pub result: Result<Statement>,
    options: ParseOptions,
}

impl ParsedStatement {
    /// The statement with `vars` substituted into it: its text again, parsed after
    /// substitution when it refers to any variable, else the parse already made.
    /// Positions in an error count from the start of the script as written.
    pub fn resolve(&self, vars: &Variables) -> Result<Statement> {
        if !self.text.contains("${") || self.result.is_err() && !is_variable_error(&self.result) {
            return self.result.clone();
        }
        let substituted = vars.substitute(&self.text);
        let mut parsed = parse_script(&substituted, self.options);
        let shift = |p: Position| {
            if p.line == 1 {
                Position::new(self.start.line, p.column + self.start.column - 1)
            } else {
                Position::new(p.line + self.start.line - 1, p.column)
            }
        };
        match parsed.len() {
            1 => parsed.remove(0).result.map_err(|mut e| {
                e.position = shift(e.position);
                e
            }),
            _ => Err(ParseError::new(
                self.start,
                format!(
                    "After variable substitution the statement reads: {substituted}: expected one statement"
                ),
            )),
        }
    }

    /// The text with `vars` substituted, as the statement runs (what a persistent query
    /// records as its statement).
    pub fn resolved_text(&self, vars: &Variables) -> String {
        vars.substitute(&self.text).into_owned()
    }
}

fn is_variable_error(r: &Result<Statement>) -> bool {
    r.as_ref()
        .err()
        .is_some_and(|e| e.message.starts_with("Variable '"))
}

/// Parses a script of `;`-separated statements for the server, stopping at the first
/// error. A final statement may omit its `;`.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    parse_script(sql, ParseOptions::default())
        .into_iter()
        .map(|p| p.result)
        .collect()
}

/// Parses exactly one statement.
pub fn parse_statement(sql: &str) -> Result<Statement> {
    let mut stmts = parse(sql)?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        0 => Err(ParseError::new(
            Position::new(1, 1),
            "Syntax error at end of input: expected a statement",
        )),
        n => Err(ParseError::new(
            Position::new(1, 1),
            format!("Expected one statement, found {n}"),
        )),
    }
}

/// Parses every statement of a script independently, so one bad statement does not hide
/// the others (what `weir check` reports). A script that cannot even be tokenized (an
/// unterminated string, say) yields the statements before the bad spot, then one error.
///
/// A statement that refers to a variable outside quotes (`${NAME}`) is reported as
/// naming an undefined variable here; [`ParsedStatement::resolve`] parses it again with
/// the variables defined by then.
pub fn parse_script(sql: &str, options: ParseOptions) -> Vec<ParsedStatement> {
    let text = ScriptText::new(sql);
    // Variable references become placeholders of the same width, so the script splits
    // into statements at the right places and every position stays true.
    let (masked, references) = variables::mask(sql);
    let (tokens, lex_error) = match tokenize(&masked) {
        Ok(t) => (t, None),
        Err(e) => {
            // Statements that end before the bad token are still worth reporting.
            let cut = ScriptText::new(&masked).offset(e.position);
            (tokenize(&masked[..cut]).unwrap_or_default(), Some(e))
        }
    };
    let undefined = |start: Position, end: Position| {
        references
            .iter()
            .find(|r| r.position >= start && r.position < end)
            .map(|r| {
                ParseError::new(
                    r.position,
                    format!("Variable '{}' is not defined", r.name.to_uppercase()),
                )
            })
    };
    let parse = |st: lexer::StatementTokens| {
        let (start, end) = (st.start, st.end);
        let result = match undefined(start, end) {
            Some(e) => Err(e),
            None => {
                parser::parse_statement_tokens(st).and_then(|s| check_context(s, start, options))
            }
        };
        ParsedStatement {
            start,
            text: text.slice(start, end),
            result,
            options,
        }
    };
    let (complete, trailing) = split_statements(tokens);
    let mut out: Vec<ParsedStatement> = complete.into_iter().map(parse).collect();
    match (trailing, lex_error) {
        (Some(st), Some(e)) => out.push(ParsedStatement {
            start: st.start,
            text: text.slice(st.start, e.position),
            result: Err(e),
            options,
        }),
        (None, Some(e)) => out.push(ParsedStatement {
            start: e.position,
            text: String::new(),
            result: Err(e),
            options,
        }),
        (Some(st), None) => out.push(parse(st)),
        (None, None) => {}
    }
    out
}

fn check_context(stmt: Statement, start: Position, options: ParseOptions) -> Result<Statement> {
    if matches!(stmt, Statement::RunScript { .. }) && !options.allow_cli_commands {
        return Err(ParseError::new(
            start,
            "RUN SCRIPT is a command of the weir REPL, not a statement the server runs: \
             run the script with `weir` or send its statements",
        ));
    }
    Ok(stmt)
}

/// Maps line/column positions back to byte offsets of the script.
struct ScriptText<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> ScriptText<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { sql, line_starts }
    }

    /// Byte offset of a position; columns count characters.
    fn offset(&self, p: Position) -> usize {
        let Some(&line_start) = self.line_starts.get((p.line as usize).saturating_sub(1)) else {
            return self.sql.len();
        };
        let line = &self.sql[line_start..];
        let col = (p.column as usize).saturating_sub(1);
        line_start
            + line
                .char_indices()
                .nth(col)
                .map(|(i, _)| i)
                .unwrap_or(line.len())
    }

    fn slice(&self, start: Position, end: Position) -> String {
        let (a, b) = (self.offset(start), self.offset(end));
        if a <= b {
            self.sql[a..b].trim().to_string()
        } else {
            String::new()
        }
    }
}
