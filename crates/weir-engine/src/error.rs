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
        EngineError::Plan(e.strip_backtrace())
    }
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
