use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("topic '{topic}' has {partitions} partition(s); partition {partition} does not exist")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("invalid topic name '{0}': use 1 to 249 of the characters a-z A-Z 0-9 . _ -")]
    InvalidTopicName(String),
    #[error("topic '{topic}' exists with {existing} partition(s), not {requested}")]
    PartitionMismatch {
        topic: String,
        existing: u32,
        requested: u32,
    },
    #[error("a topic needs at least one partition")]
    NoPartitions,
    #[error("record too large: {0} bytes (the limit is {1})")]
    RecordTooLarge(usize, usize),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt data: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A partition that could not be written or synced to disk: after a failed fsync the
    /// kernel may have dropped the data it held, so nothing more is appended there until
    /// the process restarts (and recovery reads back what the disk holds).
    #[error(
        "{path}: read-only after a failed write to disk ({reason}): check the disk, then restart"
    )]
    Failed { path: PathBuf, reason: String },
    /// Another process has the data directory open.
    #[error(
        "{path} is in use by another Weir process{}: stop it, or give this one another data directory",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    /// An error from a log kept elsewhere (a Kafka cluster).
    #[error("{0}")]
    Backend(String),
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
