//! Test logs: the embedded log with faults to order.
#![allow(dead_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use weir_engine::{Engine, Outcome, PushEvent};
use weir_log::{
    EmbeddedLog, EmbeddedLogConfig, Log, LogError, Record, Result, StoredRecord, TopicConfig,
    TopicInfo,
};

/// The embedded log, with faults to order: appends to one topic fail after a number of
/// them succeed, reads of one topic panic, or take a while.
pub struct Faulty {
    inner: EmbeddedLog,
    fail_appends_to: Mutex<Option<String>>,
    appends_before_failing: AtomicI64,
    panic_reading: Mutex<Option<String>>,
    pub failed: AtomicBool,
    slow_reading: Mutex<Option<(String, Duration)>>,
    /// Says it is a log servers share (as Kafka does), so the engine divides work and
    /// trims checkpoints as it would there.
    pub shared: AtomicBool,
    /// Shared: records deleted before an offset, exactly (as Kafka's DeleteRecords, not
    /// a whole segment at a time), kept in `<dir>/deleted-before.json` across reopens.
    deleted_before: Mutex<std::collections::BTreeMap<String, u64>>,
    dir: std::path::PathBuf,
}

impl Faulty {
    pub fn open(dir: &std::path::Path) -> Self {
        Faulty {
            inner: EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap(),
            fail_appends_to: Mutex::new(None),
            appends_before_failing: AtomicI64::new(0),
            panic_reading: Mutex::new(None),
            failed: AtomicBool::new(false),
            slow_reading: Mutex::new(None),
            shared: AtomicBool::new(false),
            deleted_before: Mutex::new(
                std::fs::read(dir.join("deleted-before.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default(),
            ),
            dir: dir.to_path_buf(),
        }
    }

    /// Each read of `topic` takes `pause` first.
    pub fn slow_reads(&self, topic: &str, pause: Duration) {
        *self.slow_reading.lock().unwrap() = Some((topic.to_string(), pause));
    }

    pub fn fail_appends(&self, topic: &str, after: i64) {
        self.appends_before_failing.store(after, Ordering::SeqCst);
        *self.fail_appends_to.lock().unwrap() = Some(topic.to_string());
    }

    pub fn panic_reads(&self, topic: &str) {
        *self.panic_reading.lock().unwrap() = Some(topic.to_string());
    }

    pub fn heal(&self) {
        *self.fail_appends_to.lock().unwrap() = None;
        *self.panic_reading.lock().unwrap() = None;
        *self.slow_reading.lock().unwrap() = None;
    }
}

impl Log for Faulty {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        self.inner.create_topic(name, config)
    }
    fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        self.inner.topic(name)
    }
    fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.inner.list_topics()
    }
    fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.delete_topic(name)
    }
    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64> {
        if self.fail_appends_to.lock().unwrap().as_deref() == Some(topic)
            && self.appends_before_failing.fetch_sub(1, Ordering::SeqCst) <= 0
        {
            self.failed.store(true, Ordering::SeqCst);
            return Err(LogError::Backend(format!(
                "injected failure writing {topic}"
            )));
        }
        self.inner.append(topic, partition, records)
    }
    fn atomic_appends(&self) -> bool {
        self.inner.atomic_appends() && !self.shared.load(Ordering::SeqCst)
    }
    fn shared(&self) -> bool {
        self.shared.load(Ordering::SeqCst)
    }
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        if self.panic_reading.lock().unwrap().as_deref() == Some(topic) {
            self.failed.store(true, Ordering::SeqCst);
            panic!("injected panic reading {topic}");
        }
        let pause = match &*self.slow_reading.lock().unwrap() {
            Some((t, pause)) if t == topic => Some(*pause),
            _ => None,
        };
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
        let from = from.max(self.first(topic, partition));
        self.inner.read(topic, partition, from, max)
    }
    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let (start, end) = self.inner.offsets(topic, partition)?;
        Ok((start.max(self.first(topic, partition)).min(end), end))
    }
    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool> {
        self.inner.wait_for(topic, partition, offset, timeout)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn sync_topic(&self, topic: &str) -> Result<()> {
        self.inner.sync_topic(topic)
    }
    fn max_record_bytes(&self) -> usize {
        self.inner.max_record_bytes()
    }
    fn delete_before(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
        if !self.shared.load(Ordering::SeqCst) {
            return self.inner.delete_before(topic, partition, offset);
        }
        let mut d = self.deleted_before.lock().unwrap();
        let at = d.entry(format!("{topic}/{partition}")).or_insert(0);
        *at = (*at).max(offset);
        std::fs::write(
            self.dir.join("deleted-before.json"),
            serde_json::to_vec(&*d).unwrap(),
        )
        .unwrap();
        drop(d);
        Ok(self.offsets(topic, partition)?.0)
    }
}

impl Faulty {
    /// Shared: the first offset not deleted.
    fn first(&self, topic: &str, partition: u32) -> u64 {
        self.deleted_before
            .lock()
            .unwrap()
            .get(&format!("{topic}/{partition}"))
            .copied()
            .unwrap_or(0)
    }
}

/// Each partition's records of `topic`, as `key value timestamp` lines.
pub fn contents(log: &dyn Log, topic: &str) -> Vec<Vec<String>> {
    let partitions = log.topic(topic).unwrap().unwrap().config.partitions;
    (0..partitions)
        .map(|p| {
            log.read_to_end(topic, p, 0)
                .unwrap()
                .iter()
                .map(|r| {
                    let text = |b: &Option<Vec<u8>>| {
                        b.as_deref()
                            .map_or("-".to_string(), |b| String::from_utf8_lossy(b).into_owned())
                    };
                    format!(
                        "{} {} {}",
                        text(&r.record.key),
                        text(&r.record.value),
                        r.record.timestamp
                    )
                })
                .collect()
        })
        .collect()
}

/// A pull query's rows (the handle ends after the last one).
pub fn pull(engine: &mut Engine, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let Outcome::Push(handle) = engine.execute_sql(sql).unwrap().remove(0) else {
        panic!("{sql}: not a query");
    };
    let mut rows = Vec::new();
    while let Ok(PushEvent::Row(r)) = handle.rows.recv() {
        rows.push(r);
    }
    rows
}

/// Inserts `from..from + 5` into stream `nums` (`v INT`) and runs the queries through.
pub fn insert_nums(e: &mut Engine, from: i32) {
    let sql: String = (from..from + 5)
        .map(|v| format!("INSERT INTO nums (v) VALUES ({v});"))
        .collect();
    e.execute_sql(&sql).unwrap();
    e.run_until_idle().unwrap();
}

/// The persistent queries' ids, sorted.
pub fn query_ids(e: &Engine) -> Vec<String> {
    let mut ids: Vec<String> = e.queries().map(|q| q.id).collect();
    ids.sort();
    ids
}

/// The catalog's source names, sorted.
pub fn source_names(e: &Engine) -> Vec<String> {
    let mut n: Vec<String> = e.catalog().sources().map(|s| s.name.clone()).collect();
    n.sort();
    n
}

/// Each group's COUNTs as its changes came out of the sink: they must go 1, 2, 3, ...
/// (nothing skipped, nothing repeated); panics naming the first group that does not.
pub fn assert_counts_go_one_by_one(counts: std::collections::BTreeMap<String, Vec<i64>>) {
    for (group, seen) in counts {
        if let Some(i) = (0..seen.len()).find(|i| seen[*i] != *i as i64 + 1) {
            panic!(
                "{group}: change {i} has COUNT {} (then {:?})",
                seen[i],
                &seen[i..(i + 5).min(seen.len())]
            );
        }
    }
}
