//! Checkpoints that stay within bounds: a query's state larger than a log record is
//! saved (in several records) and restored; the checkpoints' topic is trimmed to what
//! recovery needs, so it follows the state's size rather than the server's uptime.

use std::sync::Arc;

use serde_json::Value;
use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log, Record, TopicConfig};

fn log_config(max_record_bytes: usize) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        fsync: FsyncPolicy::Never,
        max_record_bytes,
        ..Default::default()
    }
}

fn open(dir: &std::path::Path, max_record_bytes: usize) -> (Arc<EmbeddedLog>, Engine) {
    let log = Arc::new(EmbeddedLog::open(dir, log_config(max_record_bytes)).unwrap());
    let engine = Engine::open(log.clone()).unwrap();
    (log, engine)
}

fn errors(engine: &Engine) -> Vec<String> {
    engine
        .queries()
        .filter_map(|q| q.error.as_ref().map(|e| format!("{}: {}", q.id, e.message)))
        .collect()
}

/// The last value written for each key of a table's topic.
fn latest(log: &dyn Log, topic: &str) -> std::collections::BTreeMap<String, Value> {
    log.read_to_end(topic, 0, 0)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.record.key.unwrap()).unwrap(),
                serde_json::from_slice(&r.record.value.unwrap()).unwrap(),
            )
        })
        .collect()
}

/// 100 keys × 150 values of 30 bytes: a state of about 450 KB, in a log whose records
/// may not exceed 64 KiB. The query checkpoints (whole) without an error, and after a
/// restart its lists go on from where they were.
#[test]
fn a_state_larger_than_a_record_is_checkpointed_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, mut e) = open(dir.path(), 64 << 10);
        e.execute_sql(
            "CREATE STREAM s (k VARCHAR KEY, v VARCHAR) WITH (kafka_topic='s', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE TABLE lists AS SELECT k, COLLECT_LIST(v) AS vs FROM s GROUP BY k;",
        )
        .unwrap();
        for round in 0..150 {
            let records: Vec<Record> = (0..100)
                .map(|k| {
                    let value = format!(r#"{{"V":"value-{round:04}-{k:03}-padding-pad"}}"#);
                    Record::new(
                        Some(format!("k{k}").as_bytes()),
                        Some(value.as_bytes()),
                        round,
                    )
                })
                .collect();
            log.append("s", 0, &records).unwrap();
        }
        e.run_until_idle().unwrap();
        assert_eq!(errors(&e), Vec::<String>::new());
        let lists = latest(log.as_ref(), "LISTS");
        assert_eq!(lists["k7"]["VS"].as_array().unwrap().len(), 150);
    }
    let (log, mut e) = open(dir.path(), 64 << 10);
    log.produce(
        "s",
        Record::new(Some(b"k7"), Some(br#"{"V":"after-restart"}"#), 1000),
    )
    .unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(errors(&e), Vec::<String>::new());
    let vs = latest(log.as_ref(), "LISTS")["k7"]["VS"].clone();
    let vs = vs.as_array().unwrap();
    assert_eq!(vs.len(), 151, "the state was not restored whole");
    assert_eq!(vs[0], "value-0000-007-padding-pad");
    assert_eq!(vs[150], "after-restart");
}

/// A GROUP BY checkpointing after every batch, 400 batches: the checkpoints' topic is
/// trimmed as full snapshots supersede what came before, so it keeps a bounded number of
/// records; a restart restores the counts from what is left.
#[test]
fn the_checkpoints_topic_is_trimmed_to_what_recovery_needs() {
    let dir = tempfile::tempdir().unwrap();
    let produce = |log: &dyn Log, round: i64| {
        let records: Vec<Record> = (0..20)
            .map(|k| Record::new(Some(format!("k{k}").as_bytes()), Some(b"{\"N\":1}"), round))
            .collect();
        log.append("s", 0, &records).unwrap();
    };
    {
        let log = Arc::new(EmbeddedLog::open(dir.path(), log_config(8 << 20)).unwrap());
        // Small segments, so trimming (a segment at a time) shows in a short test.
        log.create_topic(
            "_weir_offsets",
            TopicConfig {
                segment_bytes: Some(16 << 10),
                ..Default::default()
            },
        )
        .unwrap();
        let mut e = Engine::open(log.clone()).unwrap();
        e.execute_sql(
            "CREATE STREAM s (k VARCHAR KEY, n INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             SET 'commit.interval.ms'='0';
             CREATE TABLE counts AS SELECT k, COUNT(*) AS c FROM s GROUP BY k;
             CREATE STREAM copy AS SELECT k, n FROM s;",
        )
        .unwrap();
        for round in 0..400 {
            produce(log.as_ref(), round);
            e.run_until_idle().unwrap();
        }
        let (start, end) = log.offsets("_weir_offsets", 0).unwrap();
        assert!(end >= 800, "only {end} checkpoints were written");
        assert!(start > 0, "nothing was trimmed ({end} records kept)");
        // What is kept: about two full snapshots' worth of checkpoints, plus a segment.
        assert!(end - start < 400, "{} of {end} records kept", end - start);
    }
    let (log, mut e) = open(dir.path(), 8 << 20);
    produce(log.as_ref(), 400);
    e.run_until_idle().unwrap();
    assert_eq!(errors(&e), Vec::<String>::new());
    let counts = latest(log.as_ref(), "COUNTS");
    assert_eq!(counts.len(), 20);
    assert!(counts.values().all(|v| v["C"] == 401), "{counts:?}");
    assert_eq!(log.offsets("COPY", 0).unwrap().1, 401 * 20);
}
