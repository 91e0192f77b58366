//! How long a topic keeps its data: a table's topic is compacted (as ksqlDB's are), so
//! it holds about one record per key however often keys change, and the table reads
//! the same after a restart over the compacted topic; `CLEANUP_POLICY`, `RETENTION_MS`
//! and `RETENTION_BYTES` in WITH set a new topic's policy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pull;
use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log};

fn log_config() -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        segment_bytes: 16 << 10,
        fsync: FsyncPolicy::Never,
        housekeeping_every: None,
        min_compaction_lag: Duration::ZERO,
        ..Default::default()
    }
}

fn records(log: &dyn Log, topic: &str) -> usize {
    let partitions = log.topic(topic).unwrap().unwrap().config.partitions;
    (0..partitions)
        .map(|p| log.read_to_end(topic, p, 0).unwrap().len())
        .sum()
}

fn insert_rounds(e: &mut Engine, rounds: std::ops::Range<u32>) {
    for round in rounds {
        let mut sql = String::new();
        for k in 0..20 {
            sql.push_str(&format!(
                "INSERT INTO events (k, v) VALUES ('key-{k}', {round});"
            ));
        }
        e.execute_sql(&sql).unwrap();
        e.run_until_idle().unwrap();
    }
}

#[test]
fn a_tables_topic_is_compacted_and_the_table_reads_the_same_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let counts = |e: &mut Engine| {
        let mut rows = pull(e, "SELECT k, n, total FROM per_key;");
        rows.sort_by_key(|r| r[0].to_string());
        rows
    };
    let before = {
        let log = Arc::new(EmbeddedLog::open(dir.path(), log_config()).unwrap());
        let mut e = Engine::open(log.clone()).unwrap();
        e.execute_sql(
            "CREATE STREAM events (k VARCHAR KEY, v INT) WITH (kafka_topic='events', value_format='JSON', partitions=2);\n\
             SET 'auto.offset.reset'='earliest';\n\
             CREATE TABLE per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM events GROUP BY k;",
        )
        .unwrap();
        insert_rounds(&mut e, 0..100);
        let config = |t: &str| log.topic(t).unwrap().unwrap().config;
        assert!(config("PER_KEY").compact, "a table's topic is compacted");
        assert!(!config("events").compact, "a stream's topic is not");
        let written = records(log.as_ref(), "PER_KEY");
        let reclaimed = log.housekeep().unwrap();
        let kept = records(log.as_ref(), "PER_KEY");
        println!(
            "retention: table of 20 keys after 2,000 updates: {written} records in its topic, {kept} after compaction ({reclaimed} bytes reclaimed)"
        );
        assert!(written >= 2000 && kept < 500, "{written} -> {kept}");
        counts(&mut e)
    };
    assert_eq!(before.len(), 20);
    assert!(before.iter().all(|r| r[1] == 100), "{before:?}");
    // A restart: the query resumes and the table is read again from the compacted topic.
    let log = Arc::new(EmbeddedLog::open(dir.path(), log_config()).unwrap());
    let mut e = Engine::open(log.clone()).unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(counts(&mut e), before);
    // And goes on counting, nothing counted twice.
    insert_rounds(&mut e, 100..110);
    let after = counts(&mut e);
    assert!(after.iter().all(|r| r[1] == 110), "{after:?}");
    // A table over the compacted topic, read from its start, has every key's last row.
    e.execute_sql(
        "SET 'auto.offset.reset'='earliest';\n\
         CREATE TABLE again (k VARCHAR PRIMARY KEY, n BIGINT, total BIGINT) WITH (kafka_topic='PER_KEY', value_format='JSON');\n\
         CREATE TABLE again_copy AS SELECT * FROM again;",
    )
    .unwrap();
    e.run_until_idle().unwrap();
    let mut copy = pull(&mut e, "SELECT k, n, total FROM again_copy;");
    copy.sort_by_key(|r| r[0].to_string());
    assert_eq!(copy, after);
}

#[test]
fn with_properties_set_a_new_topics_cleanup_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(dir.path(), log_config()).unwrap());
    let mut e = Engine::open(log.clone()).unwrap();
    e.execute_sql(
        "CREATE STREAM s (k VARCHAR KEY, v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1, retention_ms=3600000, retention_bytes=1048576);\n\
         CREATE TABLE t (k VARCHAR PRIMARY KEY, v INT) WITH (kafka_topic='t', value_format='JSON', partitions=1);\n\
         CREATE TABLE kept WITH (cleanup_policy='delete') AS SELECT k, COUNT(*) AS n FROM s GROUP BY k;\n\
         CREATE STREAM both_ WITH (cleanup_policy='compact,delete', retention_ms=1000) AS SELECT * FROM s;\n\
         CREATE TABLE windowed AS SELECT k, COUNT(*) AS n FROM s WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY k;",
    )
    .unwrap();
    let config = |t: &str| log.topic(t).unwrap().unwrap().config;
    let s = config("s");
    assert_eq!(
        (s.compact, s.retention_ms, s.retention_bytes),
        (false, Some(3_600_000), Some(1 << 20))
    );
    assert!(config("t").compact);
    assert!(!config("KEPT").compact);
    let both = config("BOTH_");
    assert_eq!((both.compact, both.retention_ms), (true, Some(1000)));
    // A windowed table's keys are never updated after their window: not compacted.
    assert!(!config("WINDOWED").compact);
    for (sql, message) in [
        (
            "CREATE STREAM bad (v INT) WITH (kafka_topic='bad', value_format='JSON', partitions=1, cleanup_policy='forever');",
            "Invalid CLEANUP_POLICY",
        ),
        (
            "CREATE STREAM bad (v INT) WITH (kafka_topic='bad', value_format='JSON', partitions=1, retention_ms='a week');",
            "Invalid RETENTION_MS",
        ),
    ] {
        let error = e.execute_sql(sql).unwrap_err().to_string();
        assert!(error.contains(message), "{sql}: {error}");
    }
    assert!(log.topic("bad").unwrap().is_none());
}

/// The internal topics are made as the server says (on Kafka: their replication and
/// `min.insync.replicas`), and kept forever whatever the log's default retention.
#[test]
fn internal_topics_are_made_as_configured_and_kept_forever() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        EmbeddedLog::open(
            dir.path(),
            EmbeddedLogConfig {
                retention_ms: Some(1),
                ..log_config()
            },
        )
        .unwrap(),
    );
    let _e = Engine::open_member(
        log.clone(),
        Default::default(),
        "svc",
        Duration::from_secs(10),
        weir_engine::InternalTopics {
            replicas: 3,
            min_insync_replicas: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    for topic in ["_weir_svc_commands", "_weir_svc_offsets"] {
        let c = log.topic(topic).unwrap().unwrap().config;
        assert_eq!(
            (c.replicas, c.min_insync_replicas, c.keep_forever),
            (3, Some(2), true),
            "{topic}"
        );
    }
}
