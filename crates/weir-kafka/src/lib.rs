//! Weir's [`Log`] on a Kafka cluster, through `rdkafka` (vendored librdkafka).
//!
//! The engine assigns partitions itself and keeps its own offsets (checkpointed in its
//! offsets topic), so no consumer joins a group here: each partition that is read gets
//! a consumer *assigned* to it at an explicit offset, which is immediate (a group
//! subscription takes seconds to rebalance) and exactly what an engine that checkpoints
//! its own progress wants. What a query checkpointed is also committed to its consumer
//! group ([`Log::commit_group_offsets`]), only so that Kafka's lag tools see it. Topics
//! are created on demand through the admin API.
//!
//! Guarantees differ from the embedded log's, and the engine says so: an append is
//! acknowledged by the cluster (`acks=all`, idempotent producer) but a batch is not atomic,
//! so after a crash a sink may hold a record twice; the engine's recovery finds and skips
//! records whose output it already wrote (by their source header), which covers the
//! common case, and nothing is ever lost.

mod client;

pub use client::{ClientProperties, Offered, builtin_features};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weir_log::{Header, Log, LogError, Record, Result, StoredRecord, TopicConfig, TopicInfo};

/// How long a metadata or admin request may take before it is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read waits for the first records of a partition that has some.
const FETCH_WAIT: Duration = Duration::from_millis(20);

fn backend(e: impl std::fmt::Display) -> LogError {
    LogError::Backend(format!("Kafka: {e}"))
}

/// A client context that keeps the last error librdkafka reported (a refused TLS
/// handshake, a failed login): why a cluster cannot be reached, in its words.
#[derive(Default)]
struct Diagnosed {
    last: Mutex<Option<String>>,
}

impl Diagnosed {
    fn last_error(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl rdkafka::client::ClientContext for Diagnosed {
    fn error(&self, error: KafkaError, reason: &str) {
        let why = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }
}

impl rdkafka::consumer::ConsumerContext for Diagnosed {}

/// A client's configuration: the cluster, Weir's client id, then the user's properties.
fn config(bootstrap: &str, client: &ClientProperties) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "weir");
    client.apply(&mut c);
    c
}

/// A partition being read: its consumer, the offset its next message has, and when it
/// last read.
struct Reader {
    consumer: BaseConsumer,
    next: u64,
    used: Instant,
}

/// How many readers a partition keeps: one per query reading it, up to this many (a
/// query whose reader went makes a new one: a new client, its connection and a fetch).
const READERS_PER_PARTITION: usize = 8;
/// How long a kept reader may go unused before the next read of its partition drops it.
const READER_IDLE: Duration = Duration::from_secs(30);

pub struct KafkaLog {
    bootstrap: String,
    /// The user's client properties (TLS, SASL, ...), on every client made here.
    client: ClientProperties,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// For metadata and watermarks.
    meta: BaseConsumer<Diagnosed>,
    /// Per partition, the readers kept for the next read, each where its last read
    /// ended (several: queries over one topic each read it where they are).
    readers: Mutex<HashMap<(String, u32), Vec<Reader>>>,
    /// Per consumer group named in [`Log::commit_group_offsets`], a consumer that commits
    /// its offsets (never subscribed: it only commits).
    groups: Mutex<HashMap<String, BaseConsumer>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("bootstrap", &self.bootstrap)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Connects to the cluster at `bootstrap` (`host:port[,host:port]`) and checks that it
    /// answers.
    pub fn connect(bootstrap: &str) -> Result<Self> {
        Self::connect_with(bootstrap, &ClientProperties::new())
    }

    /// Connects with client properties (TLS, SASL, ...) given to every client, and checks
    /// that the cluster answers: a refused handshake or login is the error.
    pub fn connect_with(bootstrap: &str, client: &ClientProperties) -> Result<Self> {
        let base = |extra: &[(&str, &str)]| {
            let mut c = config(bootstrap, client);
            for (k, v) in extra {
                c.set(*k, *v);
            }
            c
        };
        // An append waits for its records' delivery (a step's outputs are stored before
        // its checkpoint), so lingering only delays it: a step's records are queued at
        // once and fill their batches; 1 ms, not librdkafka's 5, for the last one. A
        // `linger.ms` among the user's properties wins.
        let linger = client
            .iter()
            .find(|(k, _)| *k == "linger.ms")
            .map_or("1", |(_, v)| v)
            .to_string();
        let producer: FutureProducer = base(&[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", &linger),
            ("message.timeout.ms", "30000"),
        ])
        .create()
        .map_err(backend)?;
        let admin = base(&[]).create().map_err(backend)?;
        let meta: BaseConsumer<Diagnosed> =
            base(&[("group.id", "weir"), ("enable.auto.commit", "false")])
                .create_with_context(Diagnosed::default())
                .map_err(backend)?;
        if let Err(e) = meta.fetch_metadata(None, REQUEST_TIMEOUT) {
            // The reason (a refused handshake or login) waits in the client's queue as an
            // error event: served by a poll.
            let _ = meta.poll(Duration::from_millis(100));
            let why = meta.context().last_error();
            return Err(backend(format!(
                "cannot reach the cluster at {bootstrap}: {}",
                why.unwrap_or_else(|| e.to_string())
            )));
        }
        Ok(Self {
            bootstrap: bootstrap.to_string(),
            client: client.clone(),
            producer,
            admin,
            meta,
            readers: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// Up to `max` records from `from`; `waiting`: records are known to be there (the
    /// partition's end is past `from`), so it waits for them up to the request timeout.
    fn read_from(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        waiting: bool,
    ) -> Result<Vec<StoredRecord>> {
        let key = (topic.to_string(), partition);
        // Taken out while it reads, so reads of other partitions go on meanwhile: the one
        // whose last read ended at `from` (the same query's reader), else a new one.
        let cached = {
            let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            readers.get_mut(&key).and_then(|kept| {
                let at = kept.iter().position(|r| r.next == from)?;
                Some(kept.remove(at))
            })
        };
        let reader = match cached {
            Some(r) => r,
            None => self.reader(topic, partition, from)?,
        };
        // An empty read must mean "nothing there", not "not fetched yet" (a new consumer
        // first connects; a fetch may take longer than FETCH_WAIT): when the partition's end
        // says records are waiting at `from`, keep polling for them, up to REQUEST_TIMEOUT.
        let mut first_wait = if waiting { REQUEST_TIMEOUT } else { FETCH_WAIT };
        let mut checked_end = waiting;
        let mut out = Vec::new();
        let start = Instant::now();
        loop {
            if out.len() >= max {
                break;
            }
            let wait = if out.is_empty() {
                first_wait.saturating_sub(start.elapsed())
            } else {
                Duration::ZERO
            };
            match reader.consumer.poll(wait) {
                Some(Ok(m)) => {
                    if (m.offset() as u64) < from {
                        continue;
                    }
                    out.push(to_stored(partition, &m));
                }
                // The end of the partition: what there is, is read.
                Some(Err(KafkaError::PartitionEOF(_))) if !out.is_empty() => break,
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    if !out.is_empty() {
                        break;
                    }
                    if !checked_end {
                        checked_end = true;
                        // The end as the reader's last fetch saw it (no round trip to the
                        // broker); asked of the broker only before its first fetch.
                        let end = match cached_end(&reader.consumer, topic, partition) {
                            Some(high) => high,
                            None => self.offsets(topic, partition)?.1,
                        };
                        if end > from {
                            first_wait = REQUEST_TIMEOUT;
                            continue;
                        }
                        break;
                    }
                    // Records are waiting: an end-of-partition event is stale; time is up
                    // only when the wait is.
                    if start.elapsed() >= first_wait {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Dropping the reader makes the next read start afresh at `from`.
                    return Err(backend(e));
                }
            }
        }
        let next = out.last().map(|r| r.offset + 1).unwrap_or(from);
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let kept = readers.entry(key).or_default();
        // Readers left where no read came back for a while go (a scan that ended, a
        // query that went back to its checkpoint: nothing asks for their place again, and
        // each fetches ahead in the background); then the least recently used, past
        // the most a partition keeps.
        kept.retain(|r| r.used.elapsed() < READER_IDLE);
        kept.push(Reader {
            consumer: reader.consumer,
            next,
            used: Instant::now(),
        });
        if kept.len() > READERS_PER_PARTITION {
            kept.remove(0);
        }
        Ok(out)
    }

    fn reader(&self, topic: &str, partition: u32, from: u64) -> Result<Reader> {
        let consumer: BaseConsumer = config(&self.bootstrap, &self.client)
            .set("group.id", "weir")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // The broker answers a fetch as soon as records come; the wait bounds how often
            // an idle reader asks again (at 10 ms, eight idle readers kept tansu 68% busy;
            // at 500 ms, 2.5%), not how late it sees a record (1 ms either way).
            .set("fetch.wait.max.ms", "500")
            .create()
            .map_err(backend)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(from as i64))
            .map_err(backend)?;
        consumer.assign(&tpl).map_err(backend)?;
        Ok(Reader {
            consumer,
            next: from,
            used: Instant::now(),
        })
    }
}

/// The end of a partition as `consumer`'s last fetch from it reported (librdkafka keeps
/// it; reading it costs no request); `None` before any fetch.
fn cached_end(consumer: &BaseConsumer, topic: &str, partition: u32) -> Option<u64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer lives as long as `consumer`, which this borrows; the call
    // only copies librdkafka's cached watermarks into the two integers.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition as i32,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high as u64)
}

/// A topic as the cluster's metadata describes it; `None` for one that does not exist.
fn topic_info(t: &rdkafka::metadata::MetadataTopic) -> Option<TopicInfo> {
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(TopicInfo {
        name: t.name().to_string(),
        config: TopicConfig {
            partitions: t.partitions().len() as u32,
            replicas: t.partitions()[0].replicas().len().max(1) as u16,
            ..Default::default()
        },
    })
}

fn to_stored(partition: u32, m: &rdkafka::message::BorrowedMessage<'_>) -> StoredRecord {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    name: h.key.to_string().into(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    StoredRecord {
        partition,
        offset: m.offset() as u64,
        record: Record {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis().unwrap_or(0),
            headers,
        },
    }
}

/// The topic-level settings a new topic is created with.
/// The youngest a compacted topic's records are before the broker may compact them away.
const MIN_COMPACTION_LAG_MS: u64 = 60_000;

fn topic_settings(config: &TopicConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let deletes =
        !config.keep_forever && (config.retention_ms.is_some() || config.retention_bytes.is_some());
    if config.compact {
        out.push((
            "cleanup.policy",
            if deletes { "compact,delete" } else { "compact" }.into(),
        ));
        // As on the embedded log: what a query wrote since its last checkpoint stays as
        // written, for its recovery to find.
        out.push(("min.compaction.lag.ms", MIN_COMPACTION_LAG_MS.to_string()));
    }
    if let Some(n) = config.min_insync_replicas {
        out.push(("min.insync.replicas", n.to_string()));
    }
    if config.keep_forever {
        out.push(("retention.ms", "-1".into()));
        out.push(("retention.bytes", "-1".into()));
        return out;
    }
    if let Some(v) = config.retention_ms {
        out.push(("retention.ms", v.to_string()));
    }
    if let Some(v) = config.retention_bytes {
        out.push(("retention.bytes", v.to_string()));
    }
    out
}

impl Log for KafkaLog {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        weir_log::validate_topic_name(name)?;
        if config.partitions == 0 {
            return Err(LogError::NoPartitions);
        }
        if let Some(existing) = self.topic(name)? {
            if existing.config.partitions != config.partitions {
                return Err(LogError::PartitionMismatch {
                    topic: name.to_string(),
                    existing: existing.config.partitions,
                    requested: config.partitions,
                });
            }
            return Ok(existing);
        }
        let settings = topic_settings(&config);
        let mut topic = NewTopic::new(
            name,
            config.partitions as i32,
            TopicReplication::Fixed(config.replicas.max(1) as i32),
        );
        for (k, v) in &settings {
            topic = topic.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = futures_executor::block_on(self.admin.create_topics(&[topic], &opts))
            .map_err(backend)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(backend(format!("creating topic {t}: {code}"))),
            }
        }
        // Metadata may lag the creation by a moment.
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            if let Some(info) = self.topic(name)? {
                return Ok(info);
            }
            if Instant::now() > deadline {
                return Err(backend(format!(
                    "topic {name} was created but does not show"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        let md = self
            .meta
            .fetch_metadata(Some(name), REQUEST_TIMEOUT)
            .map_err(backend)?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .and_then(topic_info))
    }

    fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let md = self
            .meta
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(backend)?;
        let mut out: Vec<TopicInfo> = md.topics().iter().filter_map(topic_info).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| t != name);
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = futures_executor::block_on(self.admin.delete_topics(&[name], &opts))
            .map_err(backend)?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    return Err(LogError::UnknownTopic(name.to_string()));
                }
                Err((t, code)) => return Err(backend(format!("deleting topic {t}: {code}"))),
            }
        }
        Ok(())
    }

    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64> {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let mut headers = OwnedHeaders::new();
            for h in &r.headers {
                headers = headers.insert(KHeader {
                    key: &h.name,
                    value: h.value.as_deref(),
                });
            }
            let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .partition(partition as i32)
                .timestamp(r.timestamp)
                .headers(headers);
            if let Some(k) = &r.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                fr = fr.payload(v.as_slice());
            }
            // A full local queue: wait for deliveries to make room, then try again.
            let mut attempt = fr;
            loop {
                match self.producer.send_result(attempt) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        self.producer.poll(Duration::from_millis(10));
                        attempt = back;
                    }
                    Err((e, _)) => return Err(backend(e)),
                }
            }
        }
        let mut first = None;
        for f in pending {
            let delivery = futures_executor::block_on(f)
                .map_err(|_| backend("the producer went away"))?
                .map_err(|(e, _)| backend(e))?;
            first.get_or_insert(delivery.offset as u64);
        }
        match first {
            Some(o) => Ok(o),
            None => Ok(self.offsets(topic, partition)?.1),
        }
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.read_from(topic, partition, from, max, false)
    }

    /// The records before `offset` deleted (Kafka's DeleteRecords: the partition's log
    /// start moves there); returns the partition's first offset afterwards.
    fn delete_before(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
        let mut at = TopicPartitionList::new();
        at.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
            .map_err(backend)?;
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let done = futures_executor::block_on(self.admin.delete_records(&at, &opts))
            .map_err(|e| backend(format!("deleting records of {topic}-{partition}: {e}")))?;
        for e in done.elements() {
            if let Err(e) = e.error() {
                return Err(backend(format!(
                    "deleting records of {topic}-{partition} before {offset}: {e}"
                )));
            }
        }
        Ok(self.offsets(topic, partition)?.0)
    }

    /// To the end the broker reports when called: an empty read is retried while records
    /// are known to be waiting (a read may answer from an older fetch).
    fn read_to_end(&self, topic: &str, partition: u32, mut from: u64) -> Result<Vec<StoredRecord>> {
        let end = self.offsets(topic, partition)?.1;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut out = Vec::new();
        while from < end {
            let batch = self.read_from(topic, partition, from, 4096, true)?;
            match batch.last() {
                Some(last) => from = last.offset + 1,
                None if Instant::now() >= deadline => {
                    return Err(backend(format!(
                        "{topic}-{partition}: records up to {end} are not readable after {from}"
                    )));
                }
                None => continue,
            }
            out.extend(batch);
        }
        Ok(out)
    }

    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let mut asked = self
            .meta
            .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT);
        // librdkafka remembers a topic it was told does not exist; one another client
        // (another server) created since is looked up afresh before the answer stands.
        if let Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownPartition | RDKafkaErrorCode::UnknownTopicOrPartition,
        )) = asked
            && self
                .meta
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .is_ok()
        {
            asked = self
                .meta
                .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT);
        }
        let (low, high) = asked.map_err(|e| match e {
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                LogError::UnknownTopic(topic.to_string())
            }
            // librdkafka says "unknown partition" of a topic it has no metadata for.
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition)
                if matches!(self.topic(topic), Ok(None)) =>
            {
                LogError::UnknownTopic(topic.to_string())
            }
            e => backend(e),
        })?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.offsets(topic, partition)?.1 > offset {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn commit_group_offsets(&self, group: &str, topic: &str, offsets: &[(u32, u64)]) -> Result<()> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if !groups.contains_key(group) {
            let consumer: BaseConsumer = config(&self.bootstrap, &self.client)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .create()
                .map_err(backend)?;
            groups.insert(group.to_string(), consumer);
        }
        let consumer = &groups[group];
        let mut tpl = TopicPartitionList::new();
        for (p, next) in offsets {
            tpl.add_partition_offset(topic, *p as i32, Offset::Offset(*next as i64))
                .map_err(backend)?;
        }
        // Not waited for: the commit is advisory, and a checkpoint should not wait on it.
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Async)
            .map_err(backend)?;
        // Serves the commit's reply (and any error it reports) without blocking.
        let _ = consumer.poll(Duration::ZERO);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.producer.flush(REQUEST_TIMEOUT).map_err(backend)
    }

    /// Nothing to do: an append returns once the cluster acknowledged it (`acks=all`).
    fn sync_topic(&self, _topic: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_kept_forever_override_the_brokers_retention() {
        let kept = TopicConfig {
            retention_ms: Some(1000),
            keep_forever: true,
            ..Default::default()
        };
        assert_eq!(
            topic_settings(&kept),
            [
                ("retention.ms", "-1".to_string()),
                ("retention.bytes", "-1".to_string())
            ]
        );
        let plain = TopicConfig {
            retention_ms: Some(1000),
            ..Default::default()
        };
        assert_eq!(
            topic_settings(&plain),
            [("retention.ms", "1000".to_string())]
        );
        assert!(topic_settings(&TopicConfig::default()).is_empty());
        let table = TopicConfig {
            compact: true,
            ..Default::default()
        };
        assert_eq!(
            topic_settings(&table),
            [
                ("cleanup.policy", "compact".to_string()),
                ("min.compaction.lag.ms", "60000".to_string())
            ]
        );
        let internal = TopicConfig {
            replicas: 3,
            min_insync_replicas: Some(2),
            keep_forever: true,
            ..Default::default()
        };
        assert_eq!(
            topic_settings(&internal),
            [
                ("min.insync.replicas", "2".to_string()),
                ("retention.ms", "-1".to_string()),
                ("retention.bytes", "-1".to_string())
            ]
        );
        let both = TopicConfig {
            compact: true,
            retention_bytes: Some(1 << 30),
            ..Default::default()
        };
        assert_eq!(
            topic_settings(&both),
            [
                ("cleanup.policy", "compact,delete".to_string()),
                ("min.compaction.lag.ms", "60000".to_string()),
                ("retention.bytes", (1u64 << 30).to_string())
            ]
        );
    }
}
