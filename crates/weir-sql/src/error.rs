//! Parse errors carry the line and column (1-based) of the token they refer to, so a
//! user can find the spot in a multi-statement script.

use std::fmt;

use sqlparser::tokenizer::Location;

/// Where in the script text something is. Lines and columns count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub fn new(line: u64, column: u64) -> Self {
        Self { line, column }
    }
}

impl From<Location> for Position {
    fn from(l: Location) -> Self {
        Self {
            line: l.line,
            column: l.column,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A statement that could not be parsed, or that ksqlDB's grammar forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {position}: {message}")]
pub struct ParseError {
    pub position: Position,
    pub message: String,
}

impl ParseError {
    pub fn new(position: impl Into<Position>, message: impl Into<String>) -> Self {
        Self {
            position: position.into(),
            message: message.into(),
        }
    }

    /// `Syntax error at or near 'X'`, optionally followed by what was expected.
    pub fn syntax(position: impl Into<Position>, near: &str, expected: Option<&str>) -> Self {
        let near = if near.is_empty() {
            "Syntax error at end of input".to_string()
        } else {
            format!("Syntax error at or near '{near}'")
        };
        let message = match expected {
            Some(e) => format!("{near}: expected {e}"),
            None => near,
        };
        Self::new(position, message)
    }
}

pub type Result<T, E = ParseError> = std::result::Result<T, E>;
