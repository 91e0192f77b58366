//! `weir-log` owns topics, partitions and offsets: the [`Log`] trait every source and sink
//! uses, and its implementations. The [`EmbeddedLog`] keeps each partition as CRC-framed
//! segment files under a data directory, so one machine runs everything with no broker;
//! `weir-kafka` implements the same trait on a Kafka cluster. What records *mean*
//! (formats, schemas) belongs to the crates above.

mod embedded;
mod error;
pub mod failpoint;
mod partitioner;
mod record;

pub use embedded::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy};
pub use error::{LogError, Result};
pub use partitioner::{murmur2, partition_for_key};
pub use record::{Header, Record, StoredRecord};

use std::time::Duration;

/// How a topic is laid out. `replicas` is recorded for Kafka; the embedded log keeps one copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    pub partitions: u32,
    pub replicas: u16,
    /// Delete the oldest data once a partition holds more than this many bytes.
    pub retention_bytes: Option<u64>,
    /// Delete data older than this many milliseconds (by record timestamp).
    pub retention_ms: Option<u64>,
    /// The embedded log starts a new segment beyond this size (else its log-wide
    /// setting): data is deleted a segment at a time, so a topic trimmed often
    /// ([`Log::delete_before`]) wants small ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// Never delete this topic's data by age or size, whatever the log's defaults (on
    /// Kafka `retention.ms` and `retention.bytes` -1, where the broker's default would
    /// delete a week-old command log). The embedded log deletes nothing by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_forever: bool,
    /// Keep only each key's latest record (Kafka's `cleanup.policy=compact`, with
    /// `delete` too when a retention is set): a table's topic then holds about one
    /// record per key, however often the key changed. Records without a key are kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compact: bool,
    /// On Kafka, the replicas that must have an append before it is acknowledged
    /// (`min.insync.replicas`; the broker's default when `None`). The embedded log has one
    /// copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<u16>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            replicas: 1,
            retention_bytes: None,
            retention_ms: None,
            segment_bytes: None,
            keep_forever: false,
            compact: false,
            min_insync_replicas: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
}

/// Topics of partitions of records at offsets: what Kafka offers, as a trait, so the
/// engine runs unchanged on the embedded log and on a Kafka cluster.
///
/// Offsets are per partition, start at 0 and grow by one per record. A reader that asks
/// for offsets past the end gets nothing, and can [`Log::wait_for`] more.
pub trait Log: Send + Sync {
    /// Creates a topic; creating one that exists with the same partition count is not an
    /// error (topics are created on demand), a different count is.
    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo>;

    fn topic(&self, name: &str) -> Result<Option<TopicInfo>>;

    fn list_topics(&self) -> Result<Vec<TopicInfo>>;

    /// Deletes a topic and all its data.
    fn delete_topic(&self, name: &str) -> Result<()>;

    /// Appends records to one partition, all or none; returns the offset of the first.
    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64>;

    /// Whether an append survives a crash of this process whole or not at all (never a
    /// prefix of its records). A Kafka producer killed mid-append may have sent some.
    fn atomic_appends(&self) -> bool {
        false
    }

    /// Up to `max` records of a partition, starting at `from` (or at the oldest retained
    /// offset, if `from` was deleted by retention).
    fn read(&self, topic: &str, partition: u32, from: u64, max: usize)
    -> Result<Vec<StoredRecord>>;

    /// As [`Log::read`], into `out` (what it held is replaced). A log may write over the
    /// buffers of the records `out` held, so a reader that keeps `out` from one read to
    /// the next saves allocating them.
    fn read_into(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<()> {
        *out = self.read(topic, partition, from, max)?;
        Ok(())
    }

    /// The oldest retained offset and the offset the next append will get.
    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)>;

    /// Blocks until the partition holds a record at `offset` or `timeout` passes; true if
    /// it does.
    fn wait_for(&self, topic: &str, partition: u32, offset: u64, timeout: Duration)
    -> Result<bool>;

    /// Makes every append so far durable, whatever the fsync policy.
    fn flush(&self) -> Result<()>;

    /// Makes the appends so far to `topic` as durable as the log promises acknowledged
    /// writes are (the embedded log: fsynced unless its policy is never to; Kafka: an
    /// append already waits for the cluster's acknowledgement). Called before a write a
    /// client asked for is acknowledged: inserted rows, statements.
    fn sync_topic(&self, _topic: &str) -> Result<()> {
        self.flush()
    }

    /// The largest record an append accepts (key, value and headers), so a writer can
    /// split what is larger. Kafka's default `message.max.bytes` is about 1 MB.
    fn max_record_bytes(&self) -> usize {
        1_000_000
    }

    /// Deletes what partition `partition` of `topic` holds before `offset`, as far as the
    /// log can (the embedded log: whole segments; Kafka: DeleteRecords); returns the
    /// partition's first offset afterwards.
    /// For a topic whose older records are known to be superseded (checkpoints).
    fn delete_before(&self, topic: &str, partition: u32, _offset: u64) -> Result<u64> {
        Ok(self.offsets(topic, partition)?.0)
    }

    /// Records, as consumer group `group`'s committed offsets, that a reader of `topic` is
    /// at `offsets` (partition, the next offset to read), so that the tools that
    /// report a group's lag see it. Advisory: the engine keeps its own offsets in its
    /// checkpoints. Nothing for a log without consumer groups (the embedded log).
    fn commit_group_offsets(
        &self,
        _group: &str,
        _topic: &str,
        _offsets: &[(u32, u64)],
    ) -> Result<()> {
        Ok(())
    }

    /// Whether several servers can use this log at once (Kafka: a cluster several Weir
    /// servers connect to), so that servers sharing a service id divide their work
    /// (weir-engine's `cluster`). The embedded log belongs to one process.
    fn shared(&self) -> bool {
        false
    }

    /// Every record of a partition from `from` to its current end, read in batches.
    fn read_to_end(&self, topic: &str, partition: u32, mut from: u64) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        loop {
            let batch = self.read(topic, partition, from, 4096)?;
            let Some(last) = batch.last() else {
                return Ok(out);
            };
            from = last.offset + 1;
            out.extend(batch);
        }
    }

    /// Appends one record to the partition its key hashes to (murmur2, as Kafka's default
    /// partitioner), or to partition 0..n in turn for records without a key.
    fn produce(&self, topic: &str, record: Record) -> Result<(u32, u64)> {
        let info = self
            .topic(topic)?
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        let partition = match &record.key {
            Some(k) => partition_for_key(k, info.config.partitions),
            None => 0,
        };
        let offset = self.append(topic, partition, std::slice::from_ref(&record))?;
        Ok((partition, offset))
    }
}

/// Kafka's rules for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`. They also
/// keep a topic name from ever naming a path outside the data directory.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidTopicName(name.to_string()))
    }
}
