//! A persistent query working through a backlog of 10 million records holds up neither
//! `/healthcheck` nor a push query on another stream: the workers step queries outside
//! the engine's lock, and a second worker serves the push queries while the first is
//! busy (issue 17's goals: health under 50 ms at p99, a new row within 100 ms).

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record, TopicConfig};

const BACKLOG: u64 = 10_000_000;

#[test]
fn a_query_with_a_large_backlog_holds_up_neither_health_nor_push_queries() {
    let dir = tempfile::tempdir().unwrap();
    // The backlog, written to the log before the server opens it: four partitions of
    // small JSON records over 1,000 keys.
    {
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
        log.create_topic(
            "backlog",
            TopicConfig {
                partitions: 4,
                ..Default::default()
            },
        )
        .unwrap();
        for p in 0..4u32 {
            let batch: Vec<Record> = (0..10_000u64)
                .map(|i| {
                    let key = format!("k{}", (i * 4 + p as u64) % 1000);
                    let value = format!(r#"{{"V":{i}}}"#);
                    Record::new(Some(key.as_bytes()), Some(value.as_bytes()), i as i64)
                })
                .collect();
            for _ in 0..BACKLOG / 4 / 10_000 {
                log.append("backlog", p, &batch).unwrap();
            }
        }
        log.flush().unwrap();
    }
    let server = start(dir.path(), &[("auto.offset.reset", "earliest")]);
    ksql(
        &server,
        "CREATE STREAM backlog (k VARCHAR KEY, v BIGINT) WITH (kafka_topic='backlog', value_format='JSON');
         CREATE TABLE per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM backlog GROUP BY k;
         CREATE STREAM idle (k VARCHAR KEY, n INT) WITH (kafka_topic='idle', value_format='JSON', partitions=1);",
    );
    let mut push = open_query_stream(
        &server,
        "SELECT k, n FROM idle EMIT CHANGES;",
        serde_json::json!({}),
    );
    push.next_line().expect("the push query's header");
    // The query is at work on its backlog.
    std::thread::sleep(Duration::from_secs(1));

    let (mut health, mut rows) = (Vec::new(), Vec::new());
    for n in 0..30 {
        for _ in 0..5 {
            let at = Instant::now();
            let (status, body) = get(&server, "/healthcheck");
            health.push(at.elapsed());
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["isHealthy"], true, "{body}");
            std::thread::sleep(Duration::from_millis(10));
        }
        // From the INSERT's request to the row at the client.
        let at = Instant::now();
        ksql(
            &server,
            &format!("INSERT INTO idle (k, n) VALUES ('a', {n});"),
        );
        let line = push.next_line().expect("a row");
        rows.push(at.elapsed());
        assert_eq!(line, format!(r#"["a",{n}]"#));
    }
    // Still at work when measured: the backlog was not done with.
    let (_, metrics) = get(&server, "/metrics");
    let consumed: u64 = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("weir_query_records_in_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    health.sort();
    rows.sort();
    let p99 = |v: &[Duration]| v[(v.len() * 99 / 100).min(v.len() - 1)];
    println!(
        "{consumed} of {BACKLOG} backlog records processed while measuring; /healthcheck p50 {:?} p99 {:?}; push row p50 {:?} max {:?}",
        health[health.len() / 2],
        p99(&health),
        rows[rows.len() / 2],
        rows[rows.len() - 1]
    );
    assert!(consumed > 0 && consumed < BACKLOG, "{consumed}");
    assert!(p99(&health) < Duration::from_millis(50), "{health:?}");
    assert!(
        rows[rows.len() - 1] < Duration::from_millis(100),
        "{rows:?}"
    );
}
