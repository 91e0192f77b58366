use weir_format::FormatError;
use weir_log::LogError;

/// What went wrong running a statement or a query. The first group are the user's to
/// fix (the statement is rejected); the rest are failures of running it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Parse(#[from] weir_sql::ParseError),
    #[error("{0}")]
    Invalid(String),
    #[error("{kind} {name} does not exist")]
    UnknownSource { kind: &'static str, name: String },
    #[error("Cannot add {kind} '{name}': A {existing} with the same name already exists")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        existing: &'static str,
    },
    #[error("Not supported yet: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("{0}")]
    Plan(String),
    #[error("{0}")]
    Execution(String),
    /// A function failed while `weir.fail.on.function.error` is set: the query stops at
    /// this record, with nothing of its step written.
    #[error("{message}")]
    Stopped {
        partition: u32,
        offset: u64,
        message: String,
    },
}

impl From<datafusion::error::DataFusionError> for EngineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        EngineError::Plan(ksql_words(&e.strip_backtrace()))
    }
}

/// A DataFusion error said as ksqlDB says it: an unknown function or column in ksqlDB's
/// words, DataFusion's own prefixes ("Error during planning: ", ...) left off.
pub(crate) fn ksql_words(message: &str) -> String {
    const PREFIXES: &[&str] = &[
        "Error during planning: ",
        "Execution error: ",
        "This feature is not implemented: ",
        "Arrow error: ",
        "Invalid argument error: ",
        "Internal error: ",
    ];
    let mut m = message.trim();
    while let Some(rest) = PREFIXES.iter().find_map(|p| m.strip_prefix(p)) {
        m = rest.trim_start();
    }
    // `Invalid function 'foo'.\nDid you mean 'bar'?`
    if let Some(rest) = m.strip_prefix("Invalid function '")
        && let Some(end) = rest.find('\'')
    {
        return format!(
            "Can't find any functions with the name '{}'",
            rest[..end].to_ascii_uppercase()
        );
    }
    // `Schema error: No field named "X". Valid fields are ...`
    if let Some(rest) = m.strip_prefix("Schema error: No field named ") {
        let end = rest.find([' ', '\n']).unwrap_or(rest.len());
        let raw = rest[..end].trim_end_matches('.');
        let last = raw.rsplit("\".\"").next().unwrap_or(raw).trim_matches('"');
        return format!("Column '{last}' cannot be resolved.");
    }
    m.to_string()
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Execution(e.to_string())
    }
}

/// What a caught panic said (its `&str` or `String` payload).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::ksql_words;

    #[test]
    fn datafusion_errors_in_ksqldb_words() {
        assert_eq!(
            ksql_words(
                "Error during planning: Invalid function 'wont_find_me'.\nDid you mean 'contains'?"
            ),
            "Can't find any functions with the name 'WONT_FIND_ME'"
        );
        assert_eq!(
            ksql_words("Schema error: No field named \"NOSUCH\". Valid fields are \"A\"."),
            "Column 'NOSUCH' cannot be resolved."
        );
        assert_eq!(
            ksql_words("Error during planning: Execution error: something else"),
            "something else"
        );
    }
}
