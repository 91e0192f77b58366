//! A persistent query that fails — its sink cannot be written, its step panics — fails
//! alone: it shows ERROR with why, the other queries carry on, and after its backoff it
//! is reloaded from its last checkpoint and catches up, its sink then holding exactly
//! what an uninterrupted run writes (nothing counted twice, nothing written twice).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_engine::Engine;
use weir_log::{
    EmbeddedLog, EmbeddedLogConfig, Log, LogError, Record, Result, StoredRecord, TopicConfig,
    TopicInfo,
};

/// The embedded log, with faults to order: appends to one topic fail after a number of
/// them succeed, or reads of one topic panic.
struct Faulty {
    inner: EmbeddedLog,
    fail_appends_to: Mutex<Option<String>>,
    appends_before_failing: AtomicI64,
    panic_reading: Mutex<Option<String>>,
    failed: AtomicBool,
}

impl Faulty {
    fn fail_appends(&self, topic: &str, after: i64) {
        self.appends_before_failing.store(after, Ordering::SeqCst);
        *self.fail_appends_to.lock().unwrap() = Some(topic.to_string());
    }

    fn panic_reads(&self, topic: &str) {
        *self.panic_reading.lock().unwrap() = Some(topic.to_string());
    }

    fn heal(&self) {
        *self.fail_appends_to.lock().unwrap() = None;
        *self.panic_reading.lock().unwrap() = None;
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
        self.inner.atomic_appends()
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
        self.inner.read(topic, partition, from, max)
    }
    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        self.inner.offsets(topic, partition)
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
}

const SETUP: &str = "
CREATE STREAM readings (car VARCHAR KEY, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=2);
CREATE STREAM pings (id VARCHAR KEY, n INT) WITH (kafka_topic='pings', value_format='JSON', partitions=1);
SET 'auto.offset.reset'='earliest';
SET 'ksql.query.retry.backoff.initial.ms'='50';
CREATE TABLE per_car AS SELECT car, COUNT(*) AS n, SUM(speed) AS total FROM readings GROUP BY car;
CREATE STREAM doubled AS SELECT id, n * 2 AS twice FROM pings;
";

fn open(dir: &std::path::Path) -> (Arc<Faulty>, Engine) {
    let log = Arc::new(Faulty {
        inner: EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap(),
        fail_appends_to: Mutex::new(None),
        appends_before_failing: AtomicI64::new(0),
        panic_reading: Mutex::new(None),
        failed: AtomicBool::new(false),
    });
    let mut engine = Engine::open(log.clone()).unwrap();
    engine.execute_sql(SETUP).unwrap();
    (log, engine)
}

/// Round `round` of input: 40 readings over 8 cars, 10 pings.
fn produce(log: &dyn Log, round: u32) {
    for i in 0..40 {
        let car = format!("car-{}", i % 8);
        let value = format!(r#"{{"SPEED":{}}}"#, round * 100 + i);
        log.produce(
            "readings",
            Record::new(
                Some(car.as_bytes()),
                Some(value.as_bytes()),
                1000 + i as i64,
            ),
        )
        .unwrap();
    }
    for i in 0..10 {
        let value = format!(r#"{{"N":{}}}"#, round * 10 + i);
        log.produce(
            "pings",
            Record::new(Some(b"p"), Some(value.as_bytes()), 1000 + i as i64),
        )
        .unwrap();
    }
}

/// Each partition's records as `key value` lines.
fn contents(log: &dyn Log, topic: &str) -> Vec<Vec<String>> {
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
                    format!("{} {}", text(&r.record.key), text(&r.record.value))
                })
                .collect()
        })
        .collect()
}

fn state_of(engine: &Engine, prefix: &str) -> (bool, String) {
    let q = engine
        .queries()
        .find(|q| q.id.starts_with(prefix))
        .unwrap_or_else(|| panic!("no query {prefix}"));
    match &q.error {
        Some(e) => (true, e.message.clone()),
        None => (false, String::new()),
    }
}

/// What the two rounds give without any failure.
fn uninterrupted() -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut engine) = open(dir.path());
    for round in 0..2 {
        produce(log.as_ref(), round);
        engine.run_until_idle().unwrap();
    }
    (
        contents(log.as_ref(), "PER_CAR"),
        contents(log.as_ref(), "DOUBLED"),
    )
}

/// Runs until the failed query has been retried and everything is caught up.
fn recover(engine: &mut Engine) {
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        engine.run_until_idle().unwrap();
        if !state_of(engine, "CTAS_PER_CAR").0 {
            engine.run_until_idle().unwrap();
            return;
        }
    }
    panic!(
        "the failed query never recovered: {}",
        state_of(engine, "CTAS_PER_CAR").1
    );
}

#[test]
fn a_query_whose_sink_cannot_be_written_fails_alone_and_recovers_without_duplicates() {
    let (want_per_car, want_doubled) = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    let (log, mut engine) = open(dir.path());
    produce(log.as_ref(), 0);
    engine.run_until_idle().unwrap();
    // The next step's first sink append goes through, the second fails: part of the
    // step is written, its state already folded in memory.
    log.fail_appends("PER_CAR", 1);
    produce(log.as_ref(), 1);
    engine.run_until_idle().unwrap();
    assert!(log.failed.load(Ordering::SeqCst), "the fault was never hit");
    let (failed, why) = state_of(&engine, "CTAS_PER_CAR");
    assert!(failed, "the query whose sink failed is not in ERROR");
    assert!(why.contains("injected failure writing PER_CAR"), "{why}");
    // The other query went on: all of its output is there.
    assert!(!state_of(&engine, "CSAS_DOUBLED").0);
    assert_eq!(contents(log.as_ref(), "DOUBLED"), want_doubled);
    // SHOW QUERIES says so too.
    let shown = format!("{:?}", engine.execute_sql("SHOW QUERIES;").unwrap());
    assert!(shown.contains("ERROR"), "{shown}");
    log.heal();
    recover(&mut engine);
    assert_eq!(contents(log.as_ref(), "PER_CAR"), want_per_car);
    // And it goes on from there.
    produce(log.as_ref(), 2);
    engine.run_until_idle().unwrap();
    let last = contents(log.as_ref(), "PER_CAR");
    let written: usize = last.iter().map(Vec::len).sum();
    assert_eq!(written, 120, "{last:?}");
}

#[test]
fn a_query_that_panics_fails_alone_and_recovers() {
    let (want_per_car, want_doubled) = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    let (log, mut engine) = open(dir.path());
    produce(log.as_ref(), 0);
    engine.run_until_idle().unwrap();
    log.panic_reads("readings");
    produce(log.as_ref(), 1);
    engine.run_until_idle().unwrap();
    assert!(log.failed.load(Ordering::SeqCst), "the fault was never hit");
    let (failed, why) = state_of(&engine, "CTAS_PER_CAR");
    assert!(failed, "the panicking query is not in ERROR");
    assert!(
        why.contains("panicked: injected panic reading readings"),
        "{why}"
    );
    assert!(!state_of(&engine, "CSAS_DOUBLED").0);
    assert_eq!(contents(log.as_ref(), "DOUBLED"), want_doubled);
    log.heal();
    recover(&mut engine);
    assert_eq!(contents(log.as_ref(), "PER_CAR"), want_per_car);
}
