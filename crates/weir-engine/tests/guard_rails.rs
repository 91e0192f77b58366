//! Guard rails: what a statement or a session may not do to the server — write to its
//! internal topics, make it hold unbounded lists or buffers, make a pull query read a
//! whole stream to answer one row.

mod common;

use std::sync::Arc;

use common::pull;
use serde_json::Value;
use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};

fn open_durable(dir: &std::path::Path) -> Engine {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    Engine::open(Arc::new(log)).unwrap()
}

fn error_of(engine: &mut Engine, sql: &str) -> String {
    match engine.execute_sql(sql) {
        Ok(o) => panic!("{sql}: accepted ({o:?})"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn internal_topics_may_be_read_but_never_written_created_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut e = open_durable(dir.path());
        e.execute_sql("CREATE STREAM plain (v VARCHAR) WITH (kafka_topic='plain', value_format='KAFKA', partitions=1);")
            .unwrap();
        // A source over the command log may be declared: it reads it.
        e.execute_sql("SET 'auto.offset.reset'='earliest';")
            .unwrap();
        e.execute_sql(
            "CREATE STREAM cmds (v VARCHAR) WITH (kafka_topic='_weir_commands', value_format='KAFKA');",
        )
        .unwrap();
        let rows = pull(&mut e, "SELECT v FROM cmds;");
        assert!(
            rows.iter()
                .any(|r| r[0].as_str().is_some_and(|s| s.contains("PLAIN"))),
            "{rows:?}"
        );
        // Nothing may write to it, delete it, or create another topic in its namespace.
        for (sql, why) in [
            ("INSERT INTO cmds (v) VALUES ('garbage');", "read-only"),
            ("INSERT INTO cmds SELECT v FROM plain;", "reserved"),
            (
                "CREATE STREAM sneaky WITH (kafka_topic='_weir_offsets') AS SELECT v FROM plain;",
                "reserved",
            ),
            (
                "CREATE STREAM fresh (v VARCHAR) WITH (kafka_topic='_weir_mine', value_format='KAFKA', partitions=1);",
                "reserved",
            ),
            ("DROP STREAM cmds DELETE TOPIC;", "read-only"),
        ] {
            let message = error_of(&mut e, sql);
            assert!(message.contains(why), "{sql}: {message}");
        }
        assert!(e.log().topic("_weir_mine").unwrap().is_none());
        e.execute_sql("INSERT INTO plain (v) VALUES ('kept');")
            .unwrap();
    }
    // The server starts again, with everything it was told.
    let mut e = open_durable(dir.path());
    let shown = format!("{:?}", e.execute_sql("SHOW STREAMS;").unwrap());
    assert!(shown.contains("CMDS") && shown.contains("PLAIN"), "{shown}");
    assert_eq!(pull(&mut e, "SELECT v FROM plain;").len(), 1);
}

#[test]
fn collect_list_keeps_at_most_a_thousand_values_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open_durable(dir.path());
    e.execute_sql(
        "CREATE STREAM s (k VARCHAR KEY, v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
         SET 'auto.offset.reset'='earliest';
         CREATE TABLE capped AS SELECT k, COLLECT_LIST(v) AS vs, COLLECT_SET(v) AS distinct_vs FROM s GROUP BY k;
         SET 'ksql.functions.collect_list.limit'='1500';
         CREATE TABLE wider AS SELECT k, COLLECT_LIST(v) AS vs FROM s GROUP BY k;",
    )
    .unwrap();
    for i in 0..1_200 {
        e.log()
            .produce(
                "s",
                Record::new(Some(b"a"), Some(format!(r#"{{"V":{i}}}"#).as_bytes()), i),
            )
            .unwrap();
    }
    e.run_until_idle().unwrap();
    let last = |e: &Engine, topic: &str| -> Value {
        let records = e.log().read_to_end(topic, 0, 0).unwrap();
        serde_json::from_slice(records.last().unwrap().record.value.as_deref().unwrap()).unwrap()
    };
    let capped = last(&e, "CAPPED");
    assert_eq!(capped["VS"].as_array().unwrap().len(), 1000);
    assert_eq!(capped["VS"][999], 999);
    assert_eq!(capped["DISTINCT_VS"].as_array().unwrap().len(), 1000);
    assert_eq!(last(&e, "WIDER")["VS"].as_array().unwrap().len(), 1200);
}

#[test]
fn a_session_cannot_make_a_push_query_buffer_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open_durable(dir.path());
    e.execute_sql(
        "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
    )
    .unwrap();
    e.execute_sql("SET 'weir.push.buffer.rows'='50000';")
        .unwrap();
    e.execute_sql("SELECT v FROM s EMIT CHANGES;").unwrap();
    e.execute_sql("SET 'weir.push.buffer.rows'='5000000000';")
        .unwrap();
    let message = error_of(&mut e, "SELECT v FROM s EMIT CHANGES;");
    assert!(message.contains("at most 1000000"), "{message}");
}

/// A pull query stops reading a stream once it has its LIMIT: with a scan cap of 1,000
/// rows, LIMIT 3 over 50,000 records answers, and the same query without LIMIT is refused
/// (with the cap named) instead of reading everything.
#[test]
fn a_pull_query_over_a_stream_stops_at_its_limit_and_caps_its_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open_durable(dir.path());
    e.execute_sql(
        "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON', partitions=2);",
    )
    .unwrap();
    for p in 0..2u32 {
        let records: Vec<Record> = (0..25_000)
            .map(|i| Record::new(None, Some(format!(r#"{{"V":{i}}}"#).as_bytes()), i))
            .collect();
        e.log().append("s", p, &records).unwrap();
    }
    e.execute_sql("SET 'weir.pull.max.scan.rows'='1000';")
        .unwrap();
    let rows = pull(&mut e, "SELECT v FROM s WHERE v >= 10 LIMIT 3;");
    assert_eq!(
        rows,
        vec![vec![Value::from(10)], vec![11.into()], vec![12.into()]]
    );
    let message = error_of(&mut e, "SELECT v FROM s WHERE v >= 10;");
    assert!(message.contains("weir.pull.max.scan.rows"), "{message}");
    e.execute_sql("SET 'weir.pull.max.scan.rows'='100000';")
        .unwrap();
    assert_eq!(pull(&mut e, "SELECT v FROM s WHERE v >= 24990;").len(), 20);
}

/// Acknowledged means stored: with an fsync interval far longer than the test, a
/// statement and an `INSERT VALUES` are on disk (fsynced) by the time they return, not
/// only in the page cache.
#[test]
fn statements_and_inserts_are_fsynced_before_they_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        EmbeddedLog::open(
            dir.path(),
            EmbeddedLogConfig {
                fsync: weir_log::FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut e = Engine::open(log.clone()).unwrap();
    e.execute_sql(
        "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
    )
    .unwrap();
    assert_eq!(log.unsynced_partitions(), 0, "the statement is not synced");
    e.execute_sql("INSERT INTO s (v) VALUES (1);").unwrap();
    assert_eq!(log.unsynced_partitions(), 0, "the insert is not synced");
    // (An append the engine makes on its own is synced by the flusher, later.)
    log.append("s", 0, &[Record::new(None, Some(b"{\"V\":2}"), 0)])
        .unwrap();
    assert_eq!(log.unsynced_partitions(), 1);
}

/// A pull query scans without the engine: while one reads a large stream (slowly, here),
/// statements go on at once, and its rows are the stream's.
#[test]
fn a_pull_query_scans_without_holding_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(common::Faulty::open(dir.path()));
    let runtime = Arc::new(weir_engine::Runtime::start_with(
        Engine::open(log.clone()).unwrap(),
        1,
    ));
    runtime
        .execute_sql("CREATE STREAM big (v INT) WITH (kafka_topic='big', value_format='JSON', partitions=1);")
        .unwrap();
    let records: Vec<Record> = (0..40_000)
        .map(|v| Record::new(None, Some(format!("{{\"V\":{v}}}").as_bytes()), 0))
        .collect();
    log.append("big", 0, &records).unwrap();
    // Each read of the stream takes a while: the scan (5 reads) takes over a second.
    log.slow_reads("big", std::time::Duration::from_millis(250));
    let scan = {
        let runtime = runtime.clone();
        std::thread::spawn(move || {
            let stmt = weir_sql::parse_statement("SELECT v FROM big WHERE v >= 39990;").unwrap();
            let started = std::time::Instant::now();
            let weir_engine::Outcome::Push(handle) =
                runtime.execute_with(&stmt, &Default::default()).unwrap()
            else {
                panic!("not a query");
            };
            let rows = handle.rows.iter().count();
            (rows, started.elapsed())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    runtime
        .execute_sql("CREATE STREAM other (v INT) WITH (kafka_topic='other', value_format='JSON', partitions=1);")
        .unwrap();
    let statement = started.elapsed();
    let (rows, scanning) = scan.join().unwrap();
    println!(
        "pull scan of 40,000 slow records: {} ms; a statement meanwhile: {} ms",
        scanning.as_millis(),
        statement.as_millis()
    );
    assert_eq!(rows, 10);
    assert!(scanning >= std::time::Duration::from_secs(1));
    assert!(
        statement < std::time::Duration::from_millis(500),
        "the statement waited {statement:?} for the scan"
    );
}

/// `LIMIT 1` over a stream of a million records reads one chunk: allowed to scan only
/// 10,000 records, it answers (a scan of the stream would be refused), and says how long
/// it took.
#[test]
fn a_limit_1_pull_over_a_million_records_reads_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open_durable(dir.path());
    e.execute_sql(
        "CREATE STREAM big (v INT) WITH (kafka_topic='big', value_format='JSON', partitions=1);",
    )
    .unwrap();
    for chunk in 0..10 {
        let records: Vec<Record> = (0..100_000)
            .map(|i| {
                let v = chunk * 100_000 + i;
                Record::new(None, Some(format!(r#"{{"V":{v}}}"#).as_bytes()), v)
            })
            .collect();
        e.log().append("big", 0, &records).unwrap();
    }
    e.execute_sql("SET 'weir.pull.max.scan.rows'='10000';")
        .unwrap();
    let started = std::time::Instant::now();
    let rows = pull(&mut e, "SELECT v FROM big LIMIT 1;");
    println!(
        "pull LIMIT 1 over 1,000,000 records: {} ms (debug build)",
        started.elapsed().as_millis()
    );
    assert_eq!(rows, vec![vec![Value::from(0)]]);
    // Without the LIMIT the same query would scan the stream: refused.
    let message = error_of(&mut e, "SELECT v FROM big;");
    assert!(message.contains("weir.pull.max.scan.rows"), "{message}");
}
