//! Statements run against an embedded log: persistent queries move records from topic to
//! topic through filters and projections, as a ksqlDB user sees them.

mod common;

use std::sync::Arc;

use common::pull;
use serde_json::{Value, json};
use weir_engine::{Engine, EngineError, Outcome, PROCESSING_LOG_TOPIC};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Record};

fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    (dir, Engine::new(Arc::new(log)))
}

/// An engine that keeps its statements and checkpoints in `dir` (reopened after a restart).
fn open_durable(dir: &std::path::Path) -> Engine {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    Engine::open(Arc::new(log)).unwrap()
}

/// As [`open_durable`], with a query's step on `threads` threads.
fn open_parallel(dir: &std::path::Path, threads: usize) -> Engine {
    let mut e = open_durable(dir);
    e.set_parallelism(threads);
    e
}

fn produce(engine: &Engine, topic: &str, key: Option<&str>, value: &str, ts: i64) {
    engine
        .log()
        .produce(
            topic,
            Record::new(key.map(str::as_bytes), Some(value.as_bytes()), ts),
        )
        .unwrap();
}

fn read_all(engine: &Engine, topic: &str) -> Vec<(Option<String>, Option<String>, i64)> {
    let log = engine.log();
    let partitions = log.topic(topic).unwrap().unwrap().config.partitions;
    let mut out = Vec::new();
    for p in 0..partitions {
        for r in log.read(topic, p, 0, 100_000).unwrap() {
            let s = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8(b).unwrap());
            out.push((s(r.record.key), s(r.record.value), r.record.timestamp));
        }
    }
    out
}

#[test]
fn a_delimited_stream_flows_through_filter_and_projection() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE STREAM carsensor (eventid integer, sensorinput varchar) WITH (kafka_topic='temperature', value_format='DELIMITED');
         CREATE STREAM readings AS SELECT EVENTID, LEN(SENSORINPUT) AS N, UCASE(SENSORINPUT) AS UP FROM CARSENSOR WHERE EVENTID > 10;",
    )
    .unwrap();
    produce(
        &e,
        "temperature",
        Some("car/engine/temperature"),
        "99999,2.10# 2.13",
        5,
    );
    produce(&e, "temperature", None, "7,abc", 6);
    produce(&e, "temperature", None, "42,x,y", 7); // one field too many: processing log
    produce(&e, "temperature", None, "11,\"a,b\"", 8);
    assert_eq!(e.run_until_idle().unwrap(), 4);
    let out = read_all(&e, "READINGS");
    assert_eq!(
        out,
        [
            (None, Some("99999,10,2.10# 2.13".to_string()), 5),
            (None, Some("11,3,\"A,B\"".to_string()), 8)
        ]
    );
    let plog = read_all(&e, PROCESSING_LOG_TOPIC);
    assert_eq!(plog.len(), 1);
    let entry: Value = serde_json::from_str(plog[0].1.as_deref().unwrap()).unwrap();
    assert_eq!(entry["OFFSET"], json!(2));
    assert!(
        entry["MESSAGE"]
            .as_str()
            .unwrap()
            .contains("Unexpected field count"),
        "{entry}"
    );
}

#[test]
fn chained_streams_keep_the_key_and_take_new_formats() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE STREAM s (id STRING KEY, speed DOUBLE, pos STRUCT<lat DOUBLE, lon DOUBLE>) WITH (kafka_topic='s', value_format='JSON', partitions=3);
         CREATE STREAM fast AS SELECT id, speed * 1.609 AS kmh, pos->lat AS lat FROM s WHERE speed > 50;
         CREATE STREAM fast_csv WITH (value_format='DELIMITED') AS SELECT id, kmh FROM fast;",
    )
    .unwrap();
    for (i, speed) in [30.0, 60.0, 100.0].iter().enumerate() {
        produce(
            &e,
            "s",
            Some(&format!("car-{i}")),
            &format!(r#"{{"SPEED": {speed}, "pos": {{"lat": {i}.5, "lon": 0}}}}"#),
            i as i64,
        );
    }
    e.run_until_idle().unwrap();
    let mut fast = read_all(&e, "FAST");
    fast.sort();
    assert_eq!(fast.len(), 2);
    assert_eq!(fast[0].0.as_deref(), Some("car-1"));
    let v: Value = serde_json::from_str(fast[0].1.as_deref().unwrap()).unwrap();
    assert_eq!(v, json!({"KMH": 60.0 * 1.609, "LAT": 1.5}));
    let mut csv: Vec<String> = read_all(&e, "FAST_CSV")
        .into_iter()
        .map(|r| r.1.unwrap())
        .collect();
    csv.sort();
    assert_eq!(csv, ["160.9", "96.53999999999999"]);
    assert_eq!(
        e.log().topic("FAST").unwrap().unwrap().config.partitions,
        3,
        "sinks take the source's partition count"
    );
}

#[test]
fn insert_values_and_insert_into_select() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE STREAM a (k INT KEY, v STRING) WITH (kafka_topic='a', value_format='JSON');
         CREATE STREAM b (k INT KEY, v STRING) WITH (kafka_topic='b', value_format='JSON');
         CREATE STREAM merged AS SELECT k, v FROM a;
         INSERT INTO merged SELECT k, v FROM b;
         INSERT INTO a (k, v, ROWTIME) VALUES (1, 'one', 100);
         INSERT INTO b VALUES (2, 'two');",
    )
    .unwrap();
    e.run_until_idle().unwrap();
    let mut out = read_all(&e, "MERGED");
    out.sort();
    assert_eq!(
        out[0].0,
        Some(String::from_utf8(1i32.to_be_bytes().to_vec()).unwrap())
    );
    assert_eq!(out[0].1.as_deref(), Some(r#"{"V":"one"}"#));
    assert_eq!(out[0].2, 100);
    assert_eq!(out[1].1.as_deref(), Some(r#"{"V":"two"}"#));
}

#[test]
fn statements_ksqldb_rejects_are_rejected_with_its_reasons() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE STREAM s (id INT KEY, v INT) WITH (kafka_topic='s', value_format='JSON');",
    )
    .unwrap();
    let err = |e: &mut Engine, sql: &str| e.execute_sql(sql).unwrap_err().to_string();
    assert!(
        err(
            &mut e,
            "CREATE STREAM s (x INT) WITH (kafka_topic='t', value_format='JSON');"
        )
        .contains("already exists")
    );
    assert!(
        err(&mut e, "CREATE STREAM o AS SELECT v FROM s;").contains("Key missing from projection")
    );
    assert!(err(&mut e, "CREATE STREAM o AS SELECT id, nope FROM s;").contains("NOPE"));
    assert!(
        err(
            &mut e,
            "CREATE STREAM o AS SELECT id, v FROM s WHERE v + 1;"
        )
        .contains("Should evaluate to boolean")
    );
    assert!(
        err(&mut e, "CREATE STREAM o AS SELECT id, v FROM missing;").contains("does not exist")
    );
    assert!(
        err(
            &mut e,
            "CREATE STREAM t (x INT) WITH (value_format='JSON');"
        )
        .contains("KAFKA_TOPIC")
    );
    assert!(
        err(
            &mut e,
            "CREATE STREAM t (x INT) WITH (kafka_topic='t', value_format='AVRO2');"
        )
        .contains("Unknown format")
    );
    assert!(
        err(
            &mut e,
            "CREATE STREAM t (x ARRAY<INT>) WITH (kafka_topic='t', value_format='DELIMITED');"
        )
        .contains("does not support")
    );
    assert!(
        err(&mut e, "CREATE STREAM o AS SELECT id, ARRAY[] AS a FROM s;")
            .contains("Array constructor cannot be empty")
    );
    assert!(
        err(&mut e, "CREATE STREAM o AS SELECT id, MAP() AS m FROM s;")
            .contains("Map constructor cannot be empty")
    );
    assert!(
        err(
            &mut e,
            "CREATE STREAM o AS SELECT id, NULL = NULL AS b FROM s;"
        )
        .contains("Comparison with NULL not supported")
    );
    assert!(
        err(
            &mut e,
            "CREATE STREAM o AS SELECT id, v FROM s WHERE v >= 'not an int';"
        )
        .contains("Cannot compare V (INTEGER) to 'not an int' (STRING) with GREATER_THAN_OR_EQUAL")
    );
    // The rejected CSASes left nothing behind: no source, no topic, no query.
    assert!(e.catalog().source("O").is_none());
    assert!(e.log().topic("O").unwrap().is_none());
    assert_eq!(e.queries().count(), 0);
    // A numeric string literal compares with a number, as in ksqlDB.
    e.execute_sql("CREATE STREAM ok1 AS SELECT id, v FROM s WHERE v >= '10';")
        .unwrap();
    assert_eq!(e.queries().count(), 1);
    assert!(e.log().topic("OK1").unwrap().is_some());
}

#[test]
fn terminate_and_drop() {
    let (_d, mut e) = engine();
    let outcomes = e
        .execute_sql(
            "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON');
             CREATE STREAM o AS SELECT v FROM s;",
        )
        .unwrap();
    let Outcome::QueryStarted { query_id, .. } = &outcomes[1] else {
        panic!("{outcomes:?}")
    };
    assert!(
        matches!(e.execute_sql("DROP STREAM s;").unwrap_err(), EngineError::Invalid(m) if m.contains(query_id))
    );
    e.execute_sql(&format!("TERMINATE {query_id};")).unwrap();
    e.execute_sql("DROP STREAM o DELETE TOPIC; DROP STREAM s;")
        .unwrap();
    assert!(e.log().topic("O").unwrap().is_none());
    assert!(e.log().topic("s").unwrap().is_some());
    assert!(e.execute_sql("DROP STREAM IF EXISTS s;").is_ok());
}

/// DROP of a source made by CREATE ... AS SELECT terminates the query that makes it, as
/// ksqlDB does; it is refused while another query reads it or an INSERT INTO writes it.
#[test]
fn dropping_a_derived_source_terminates_the_query_that_makes_it() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON');
         CREATE STREAM d AS SELECT v FROM s;
         CREATE STREAM r AS SELECT v FROM s;
         CREATE STREAM fed AS SELECT v FROM s;
         INSERT INTO fed SELECT v FROM s;
         CREATE STREAM over_r AS SELECT v FROM r;",
    )
    .unwrap();
    let ids = |e: &Engine| {
        let mut ids: Vec<String> = e.queries().map(|q| q.id).collect();
        ids.sort();
        ids
    };
    // Read by a query, or written by an INSERT INTO: refused, naming it.
    for (sql, blocker) in [
        ("DROP STREAM r;", "CSAS_OVER_R_4"),
        ("DROP STREAM fed;", "INSERTQUERY_FED_3"),
    ] {
        match e.execute_sql(sql).unwrap_err() {
            EngineError::Invalid(m) => assert!(m.contains(blocker), "{sql}: {m}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert_eq!(ids(&e).len(), 5);
    // Only its own query: terminated, then dropped.
    e.execute_sql("DROP STREAM d DELETE TOPIC;").unwrap();
    assert!(!ids(&e).contains(&"CSAS_D_0".to_string()), "{:?}", ids(&e));
    assert!(e.catalog().source("D").is_none());
    assert!(e.log().topic("D").unwrap().is_none());
    assert_eq!(ids(&e).len(), 4);
}

#[test]
fn explode_makes_a_row_per_element_and_pads_shorter_lists() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE STREAM s (id INT KEY, tags ARRAY<STRING>, n ARRAY<INT>) WITH (kafka_topic='s', value_format='JSON');
         SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM o AS SELECT id, EXPLODE(tags) AS tag, EXPLODE(n) AS num FROM s;",
    )
    .unwrap();
    let key = |i: i32| i.to_be_bytes();
    for (i, v) in [
        (1, r#"{"TAGS": ["a", "b", "c"], "N": [10]}"#),
        (2, r#"{"TAGS": [], "N": []}"#),
        (3, r#"{"TAGS": null, "N": [7, 8]}"#),
    ] {
        e.log()
            .produce(
                "s",
                Record::new(Some(&key(i)), Some(v.as_bytes()), i as i64),
            )
            .unwrap();
    }
    e.run_until_idle().unwrap();
    let rows: Vec<Value> = read_all(&e, "O")
        .into_iter()
        .map(|r| serde_json::from_str(&r.1.unwrap()).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            json!({"TAG": "a", "NUM": 10}),
            json!({"TAG": "b", "NUM": null}),
            json!({"TAG": "c", "NUM": null}),
            json!({"TAG": null, "NUM": 7}),
            json!({"TAG": null, "NUM": 8}),
        ]
    );
}

/// A windowed table's change: key, window (start, end), value, timestamp.
type WindowedChange = (String, (i64, i64), Option<Value>, i64);

/// Reads a windowed table's changes.
fn read_windowed(
    engine: &Engine,
    topic: &str,
    window: weir_engine::KeyWindow,
) -> Vec<WindowedChange> {
    let log = engine.log();
    let mut out = Vec::new();
    for r in log.read(topic, 0, 0, 100_000).unwrap() {
        let key = r.record.key.unwrap();
        let (k, start, end) = window.split(&key).unwrap();
        out.push((
            String::from_utf8(k.to_vec()).unwrap(),
            (start, end),
            r.record.value.map(|v| serde_json::from_slice(&v).unwrap()),
            r.record.timestamp,
        ));
    }
    out
}

/// A record for a window closed before a restart is late: dropped (tests/sql/windows.test
/// shows the output) and counted in DESCRIBE EXTENDED, which also says the sink's
/// windows are TIME windows.
#[test]
fn late_records_are_counted_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open_durable(dir.path());
    engine
        .execute_sql(
            "CREATE STREAM readings (car VARCHAR KEY, speed DOUBLE) WITH (kafka_topic='readings', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE TABLE tumbling AS SELECT car, COUNT(*) AS n FROM readings
               WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 5 SECONDS) GROUP BY car;",
        )
        .unwrap();
    for ts in [1_000, 12_000, 20_000] {
        produce(&engine, "readings", Some("a"), r#"{"speed": 1.0}"#, ts);
    }
    engine.run_until_idle().unwrap();
    drop(engine);
    let mut engine = open_durable(dir.path());
    produce(&engine, "readings", Some("a"), r#"{"speed": 1.0}"#, 3_000);
    engine.run_until_idle().unwrap();
    let Outcome::Described(d) = engine
        .execute_sql("DESCRIBE TUMBLING EXTENDED;")
        .unwrap()
        .remove(0)
    else {
        panic!("not a description")
    };
    assert_eq!(d[0].statistics.as_ref().unwrap().late, 1);
    assert_eq!(d[0].source.window_type.as_deref(), Some("TIME"));
    assert_eq!(
        read_windowed(
            &engine,
            "TUMBLING",
            weir_engine::KeyWindow::Time { size_ms: 10_000 }
        )
        .len(),
        3
    );
}

/// Pull queries by key: a windowed table's rows of one key (not of keys it prefixes), a
/// table keyed as other producers write JSON keys (found by the scan when the key bytes
/// differ), and the latest row after an update and a delete.
#[test]
fn pull_queries_find_a_key_s_rows() {
    let (_dir, mut engine) = engine();
    engine
        .execute_sql(
            "CREATE STREAM clicks (user VARCHAR KEY, n INT) WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
             CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR) WITH (kafka_topic='people', key_format='JSON', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE TABLE per_user AS SELECT user, COUNT(*) AS c FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user;",
        )
        .unwrap();
    for (user, ts) in [("a", 1_000), ("ab", 2_000), ("a", 61_000)] {
        produce(&engine, "clicks", Some(user), r#"{"N": 1}"#, ts);
    }
    produce(&engine, "people", Some(" 7"), r#"{"NAME": "ann"}"#, 1);
    produce(&engine, "people", Some("8"), r#"{"NAME": "bob"}"#, 2);
    produce(&engine, "people", Some("8"), r#"{"NAME": "bo"}"#, 3);
    engine.run_until_idle().unwrap();
    assert_eq!(
        pull(&mut engine, "SELECT * FROM per_user WHERE user = 'a';"),
        [
            vec![json!("a"), json!(0), json!(60_000), json!(1)],
            vec![json!("a"), json!(60_000), json!(120_000), json!(1)]
        ]
    );
    assert_eq!(
        pull(&mut engine, "SELECT name FROM people WHERE id = 7;"),
        [vec![json!("ann")]]
    );
    assert_eq!(
        pull(&mut engine, "SELECT name FROM people WHERE id = 8;"),
        [vec![json!("bo")]]
    );
    engine
        .log()
        .produce("people", Record::new(Some(b"8"), None, 4))
        .unwrap();
    assert!(pull(&mut engine, "SELECT name FROM people WHERE id = 8;").is_empty());
    assert_eq!(pull(&mut engine, "SELECT id FROM people;").len(), 1);
}

/// A checkpoint carries the groups a batch changed, not every group: after 2,000 groups,
/// one more record checkpoints a small change; a restart still has every group.
#[test]
fn checkpoints_carry_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_durable(dir.path());
    let mut engine = open();
    engine
        .execute_sql(
            "CREATE STREAM readings (car VARCHAR KEY, speed DOUBLE) WITH (kafka_topic='readings', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE TABLE per_car AS SELECT car, COUNT(*) AS n FROM readings GROUP BY car;",
        )
        .unwrap();
    for i in 0..2000 {
        produce(
            &engine,
            "readings",
            Some(&format!("car{i}")),
            r#"{"speed": 1.0}"#,
            i,
        );
    }
    engine.run_until_idle().unwrap();
    produce(&engine, "readings", Some("car7"), r#"{"speed": 2.0}"#, 5000);
    engine.run_until_idle().unwrap();
    let checkpoints: Vec<usize> = engine
        .log()
        .read_to_end("_weir_offsets", 0, 0)
        .unwrap()
        .iter()
        .map(|r| r.record.value.as_ref().map_or(0, Vec::len))
        .collect();
    let largest = *checkpoints.iter().max().unwrap();
    let last = *checkpoints.last().unwrap();
    assert!(largest > 50_000, "{checkpoints:?}");
    assert!(last < 1_000, "the last checkpoint is {last} bytes");
    drop(engine);

    let mut engine = open();
    produce(&engine, "readings", Some("car7"), r#"{"speed": 3.0}"#, 6000);
    produce(
        &engine,
        "readings",
        Some("car1999"),
        r#"{"speed": 3.0}"#,
        6001,
    );
    engine.run_until_idle().unwrap();
    let all = read_all(&engine, "PER_CAR");
    let tail: Vec<Value> = all[all.len() - 2..]
        .iter()
        .map(|(_, v, _)| serde_json::from_str(v.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(tail, [json!({"N": 3}), json!({"N": 2})]);
}

/// A stream over a windowed table's topic: its records' windows are WINDOWSTART and
/// WINDOWEND, and a query over it writes windowed keys too.
#[test]
fn a_stream_over_windowed_keys_reads_and_passes_on_their_windows() {
    let (_dir, mut engine) = engine();
    engine
        .execute_sql(
            "CREATE STREAM clicks (user VARCHAR KEY, n INT) WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE TABLE per_user AS SELECT user, COUNT(*) AS c FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user;
             CREATE STREAM changes (user VARCHAR KEY, c BIGINT) WITH (kafka_topic='PER_USER', value_format='JSON', window_type='TUMBLING', window_size='1 MINUTE');
             CREATE STREAM starts AS SELECT user, WINDOWSTART AS ws, c FROM changes WHERE WINDOWEND > 60000;",
        )
        .unwrap();
    for (user, ts) in [("a", 1_000), ("b", 61_000), ("b", 62_000)] {
        produce(&engine, "clicks", Some(user), r#"{"N": 1}"#, ts);
    }
    engine.run_until_idle().unwrap();
    let minute = weir_engine::KeyWindow::Time { size_ms: 60_000 };
    let got: Vec<((i64, i64), Option<Value>)> = read_windowed(&engine, "STARTS", minute)
        .into_iter()
        .map(|(_, w, v, _)| (w, v))
        .collect();
    assert_eq!(
        got,
        [
            ((60_000, 120_000), Some(json!({"WS": 60_000, "C": 1}))),
            ((60_000, 120_000), Some(json!({"WS": 60_000, "C": 2}))),
        ]
    );
}

/// Rows inserted as JSON objects (what `/inserts-stream` carries): rows with their
/// columns' types take one batch, rows needing a conversion go through INSERT VALUES, bad
/// rows are refused with the statement's reason; the records keep the rows' order and
/// encode the same either way.
#[test]
fn inserted_rows_keep_their_order_and_encode_as_insert_values_does() {
    let (_dir, mut engine) = engine();
    engine
        .execute_sql(
            "CREATE STREAM s (id INT KEY, n BIGINT, x DOUBLE, name STRING, tags ARRAY<STRING>, \
             pos STRUCT<lat DOUBLE, lon DOUBLE>, attrs MAP<STRING, INT>) \
             WITH (kafka_topic='s', value_format='JSON', partitions=1);",
        )
        .unwrap();
    let rows: Vec<serde_json::Map<String, Value>> = [
        json!({"id": 1, "n": 10, "x": 1.5, "name": "a", "tags": ["t", null], "pos": {"lat": 1.0, "LON": 2.0}, "attrs": {"k": 1}}),
        // A string for a number: converted as INSERT VALUES converts it.
        json!({"ID": 2, "N": "20", "X": "2.5", "NAME": 7}),
        json!({"id": 3, "nope": 1}),
        json!({"id": 4, "n": "not a number"}),
        json!({"id": 5, "x": 3}),
        json!({"id": 6}),
    ]
    .into_iter()
    .map(|v| v.as_object().unwrap().clone())
    .collect();
    let outcomes = engine.insert_rows("S", rows).unwrap();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(
        outcomes[2].as_ref().unwrap_err().contains("nope"),
        "{outcomes:?}"
    );
    assert!(outcomes[3].is_err(), "{outcomes:?}");
    assert!(outcomes[4].is_ok() && outcomes[5].is_ok(), "{outcomes:?}");
    let values: Vec<Value> = read_all(&engine, "s")
        .into_iter()
        .map(|(_, v, _)| serde_json::from_str(&v.unwrap()).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            json!({"N": 10, "X": 1.5, "NAME": "a", "TAGS": ["t", null], "POS": {"LAT": 1.0, "LON": 2.0}, "ATTRS": {"k": 1}}),
            json!({"N": 20, "X": 2.5, "NAME": "7", "TAGS": null, "POS": null, "ATTRS": null}),
            json!({"N": null, "X": 3.0, "NAME": null, "TAGS": null, "POS": null, "ATTRS": null}),
            json!({"N": null, "X": null, "NAME": null, "TAGS": null, "POS": null, "ATTRS": null}),
        ]
    );
    // The same row through INSERT VALUES encodes to the same bytes.
    engine
        .execute_sql(
            "INSERT INTO s (id, n, x, name, tags) VALUES (1, 10, 1.5, 'a', ARRAY['t', NULL]);",
        )
        .unwrap();
    let row = json!({"id": 1, "n": 10, "x": 1.5, "name": "a", "tags": ["t", null]});
    engine
        .insert_rows("S", vec![row.as_object().unwrap().clone()])
        .unwrap()
        .remove(0)
        .unwrap();
    let all = read_all(&engine, "s");
    let (by_statement, by_row) = (&all[all.len() - 2], &all[all.len() - 1]);
    assert_eq!((&by_statement.0, &by_statement.1), (&by_row.0, &by_row.1));
    // Unknown and read-only targets are refused as a whole.
    assert!(engine.insert_rows("NOPE", vec![]).is_err());
}

/// A stateless query over several partitions with a backlog steps them at once, several
/// batches each, each thread writing the output of the batches it computed: every key's
/// rows come out in its order, once, bad records of every partition reach the processing
/// log, and the query resumes exactly where it was after a restart.
#[test]
fn a_stateless_query_over_partitions_at_once_loses_and_reorders_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open_parallel(dir.path(), 3);
    engine
        .execute_sql(
            "CREATE STREAM readings (car VARCHAR KEY, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=4);
             SET 'auto.offset.reset'='earliest';
             CREATE STREAM fast AS SELECT car, speed * 2 AS twice FROM readings WHERE speed > 10;",
        )
        .unwrap();
    let mut want: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let mut bad = 0;
    for round in 0..2 {
        for i in 0..30_000i64 {
            let car = format!("car-{}", i % 37);
            if i % 101 == 0 {
                produce(&engine, "readings", Some(&car), "not json", i);
                bad += 1;
                continue;
            }
            let speed = (i * 7 + round) % 50;
            produce(
                &engine,
                "readings",
                Some(&car),
                &format!(r#"{{"SPEED":{speed}}}"#),
                i,
            );
            if speed > 10 {
                want.entry(car).or_default().push(speed * 2);
            }
        }
        engine.run_until_idle().unwrap();
        if round == 0 {
            drop(engine);
            engine = open_parallel(dir.path(), 3);
        }
    }
    let mut got: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for (key, value, _) in read_all(&engine, "FAST") {
        let v: Value = serde_json::from_str(&value.unwrap()).unwrap();
        got.entry(key.unwrap())
            .or_default()
            .push(v["TWICE"].as_i64().unwrap());
    }
    assert_eq!(got, want);
    let logged = read_all(&engine, weir_engine::PROCESSING_LOG_TOPIC).len();
    assert_eq!(logged, bad);
    // Every partition had records: the steps ran at once.
    let partitions_used = (0..4)
        .filter(|p| engine.log().offsets("readings", *p).unwrap().1 > 0)
        .count();
    assert_eq!(partitions_used, 4);
}

/// A GROUP BY over partitions with a backlog, stepped several batches at a time on
/// several threads: every group's changes come out one per record, in order (COUNT
/// going 1, 2, 3, ... with nothing skipped or repeated), across a restart.
#[test]
fn a_group_by_over_a_backlog_in_partitions_counts_every_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open_parallel(dir.path(), 3);
    engine
        .execute_sql(
            "CREATE STREAM readings (car VARCHAR KEY, zone VARCHAR, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=4);
             SET 'auto.offset.reset'='earliest';
             CREATE TABLE per_zone AS SELECT zone, COUNT(*) AS n, SUM(speed) AS total FROM readings GROUP BY zone;",
        )
        .unwrap();
    let mut want: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for round in 0..2i64 {
        for i in 0..30_000i64 {
            let car = format!("car-{}", i % 53);
            let zone = format!("zone-{}", (i / 7) % 11);
            let speed = (i * 7 + round) % 90;
            let value = format!(r#"{{"ZONE":"{zone}","SPEED":{speed}}}"#);
            produce(&engine, "readings", Some(&car), &value, i);
            let w = want.entry(zone).or_default();
            (w.0, w.1) = (w.0 + 1, w.1 + speed);
        }
        engine.run_until_idle().unwrap();
        if round == 0 {
            drop(engine);
            engine = open_parallel(dir.path(), 3);
        }
    }
    let mut counts: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let mut last: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for (key, value, _) in read_all(&engine, "PER_ZONE") {
        let v: Value = serde_json::from_str(&value.unwrap()).unwrap();
        let (n, total) = (v["N"].as_i64().unwrap(), v["TOTAL"].as_i64().unwrap());
        let key = key.unwrap();
        counts.entry(key.clone()).or_default().push(n);
        last.insert(key, (n, total));
    }
    assert_eq!(last, want);
    common::assert_counts_go_one_by_one(counts);
}

/// GROUP BYs whose state is split into shards folding at once, over partitions stepped
/// at once, give the very records, in the very order, one thread gives: windows
/// (hopping, session) whose groups span partitions, late records, null keys, HAVING,
/// bad records, and a restart that deals the state out to another number of shards.
#[test]
fn aggregations_in_shards_give_what_one_thread_gives() {
    let run = |parallelism: [usize; 2]| {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = open_parallel(dir.path(), parallelism[0]);
        engine
            .execute_sql(
                "CREATE STREAM readings (car VARCHAR KEY, zone VARCHAR, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=4);
                 SET 'auto.offset.reset'='earliest';
                 CREATE TABLE hopping AS SELECT zone, COUNT(*) AS n, SUM(speed) AS total, MAX(speed) AS top FROM readings WINDOW HOPPING (SIZE 100 MILLISECONDS, ADVANCE BY 50 MILLISECONDS, GRACE PERIOD 20 MILLISECONDS) GROUP BY zone;
                 CREATE TABLE sessions AS SELECT zone, COUNT(*) AS n FROM readings WINDOW SESSION (30 MILLISECONDS, GRACE PERIOD 40 MILLISECONDS) GROUP BY zone;
                 CREATE TABLE busy AS SELECT zone, COUNT(*) AS n, AVG(speed) AS mean FROM readings GROUP BY zone HAVING COUNT(*) % 3 <> 1;",
            )
            .unwrap();
        for round in 0..2i64 {
            for i in 0..12_000i64 {
                let car = format!("car-{}", i % 53);
                let at = round * 30_000 + i * 2 + if i % 97 == 0 { -300 } else { i % 5 };
                if i % 211 == 0 {
                    produce(&engine, "readings", Some(&car), "not json", at);
                    continue;
                }
                let zone = match i % 41 {
                    0 => "null".to_string(),
                    z if i % 400 < 20 => format!(r#""quiet-{z}""#),
                    z => format!(r#""zone-{}""#, z % 17),
                };
                let value = format!(r#"{{"ZONE":{zone},"SPEED":{}}}"#, (i * 7 + round) % 90);
                produce(&engine, "readings", Some(&car), &value, at);
            }
            engine.run_until_idle().unwrap();
            if round == 0 {
                drop(engine);
                engine = open_parallel(dir.path(), parallelism[1]);
            }
        }
        // Each topic's records as stored (windowed keys are bytes), partition by partition.
        let topics = [
            "HOPPING",
            "SESSIONS",
            "BUSY",
            weir_engine::PROCESSING_LOG_TOPIC,
        ];
        topics.map(|t| {
            let log = engine.log();
            let partitions = log.topic(t).unwrap().unwrap().config.partitions;
            (0..partitions)
                .flat_map(|p| log.read(t, p, 0, 1_000_000).unwrap())
                .map(|r| {
                    (
                        r.partition,
                        r.record.key,
                        r.record.value,
                        r.record.timestamp,
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    let one = run([1, 1]);
    // Three shards, then two (half the threads).
    let shards = run([6, 4]);
    let topics = ["HOPPING", "SESSIONS", "BUSY", "processing log"];
    assert_same_outputs("in shards", &topics, &one, &shards, (1001, 101));
}

/// Each topic's records from a run on several threads (`how`) against one thread's: as
/// many, at least `least.0` (the processing log: only counted, at least `least.1`, its
/// entries say when they were written), and the very records in the very order.
fn assert_same_outputs<T: PartialEq + std::fmt::Debug>(
    how: &str,
    topics: &[&str],
    one: &[Vec<T>],
    other: &[Vec<T>],
    least: (usize, usize),
) {
    for (topic, (a, b)) in topics.iter().zip(one.iter().zip(other)) {
        assert_eq!(a.len(), b.len(), "{topic}: as many records {how}");
        if *topic == "processing log" {
            assert!(a.len() >= least.1, "{topic}: {} records", a.len());
            continue;
        }
        assert!(a.len() >= least.0, "{topic}: {} records", a.len());
        if let Some(i) = (0..a.len()).find(|i| a[*i] != b[*i]) {
            panic!(
                "{topic}: record {i} {how} differs: {:?} then {:?}",
                a[i], b[i]
            );
        }
    }
}

/// Stream-table joins whose steps read, decode and look up on several threads give, key
/// by key, the very records one thread gives: inner and left joins over four partitions,
/// backlogs large enough for a step to look up in parts, table rows changed between
/// them, keys with no table row, null keys, bad records, records with headers, and a
/// restart onto another number of threads.
#[test]
fn joins_on_threads_give_what_one_thread_gives() {
    let run = |parallelism: [usize; 2]| {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = open_parallel(dir.path(), parallelism[0]);
        engine
            .execute_sql(
                "CREATE STREAM readings (car VARCHAR KEY, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=4);
                 CREATE TABLE cars (car VARCHAR PRIMARY KEY, model VARCHAR) WITH (kafka_topic='cars', value_format='JSON', partitions=4);
                 SET 'auto.offset.reset'='earliest';
                 CREATE STREAM enriched AS SELECT r.car AS car, c.model, r.speed * 2 AS double FROM readings r JOIN cars c ON r.car = c.car;
                 CREATE STREAM everyone AS SELECT r.car AS car, c.model, r.speed FROM readings r LEFT JOIN cars c ON r.car = c.car WHERE r.speed % 5 <> 3;",
            )
            .unwrap();
        let mut at = 0i64;
        for round in 0..3i64 {
            // Models for most cars, changed every round (car-0 .. car-60; car-61 .. car-70
            // never have one).
            for c in 0..61 {
                let value = format!(r#"{{"MODEL":"m{c}-{round}"}}"#);
                produce(&engine, "cars", Some(&format!("car-{c}")), &value, at);
            }
            engine.run_until_idle().unwrap();
            for i in 0..24_000i64 {
                at += 1;
                let car = format!("car-{}", (i * 7 + round) % 71);
                match i % 997 {
                    0 => produce(&engine, "readings", Some(&car), "not json", at),
                    1 => produce(&engine, "readings", None, r#"{"SPEED": 1}"#, at),
                    2 => {
                        let mut record = Record::new(
                            Some(car.as_bytes()),
                            Some(br#"{"SPEED": 7}"#.as_slice()),
                            at,
                        );
                        record.headers = vec![weir_log::Header {
                            name: "trip".into(),
                            value: Some(i.to_string().into_bytes()),
                        }];
                        engine.log().produce("readings", record).unwrap();
                    }
                    _ => {
                        let value = format!(r#"{{"SPEED": {}}}"#, (i + round) % 90);
                        produce(&engine, "readings", Some(&car), &value, at);
                    }
                }
            }
            engine.run_until_idle().unwrap();
            if round == 0 {
                drop(engine);
                engine = open_parallel(dir.path(), parallelism[1]);
            }
        }
        // Each sink's records by key, in the order written; and how many problems logged.
        let log = engine.log();
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        let by_key = |t: &str| {
            let partitions = log.topic(t).unwrap().unwrap().config.partitions;
            let mut keys: std::collections::BTreeMap<Option<String>, Vec<_>> = Default::default();
            for p in 0..partitions {
                for r in log.read(t, p, 0, 1_000_000).unwrap() {
                    let headers: Vec<_> = r
                        .record
                        .user_headers()
                        .into_iter()
                        .map(|h| (h.name, text(h.value)))
                        .collect();
                    keys.entry(text(r.record.key)).or_default().push((
                        p,
                        text(r.record.value),
                        r.record.timestamp,
                        headers,
                    ));
                }
            }
            keys
        };
        let problems = (0..log
            .topic(weir_engine::PROCESSING_LOG_TOPIC)
            .unwrap()
            .unwrap()
            .config
            .partitions)
            .map(|p| {
                log.read(weir_engine::PROCESSING_LOG_TOPIC, p, 0, 1_000_000)
                    .unwrap()
                    .len()
            })
            .sum::<usize>();
        (by_key("ENRICHED"), by_key("EVERYONE"), problems)
    };
    let one = run([1, 1]);
    let threads = run([2, 3]);
    for (topic, a, b) in [
        ("ENRICHED", &one.0, &threads.0),
        ("EVERYONE", &one.1, &threads.1),
    ] {
        let records: usize = a.values().map(Vec::len).sum();
        assert!(records > 50_000, "{topic}: {records} records");
        let with_headers = a.values().flatten().filter(|r| !r.3.is_empty()).count();
        assert!(
            with_headers > 20,
            "{topic}: {with_headers} records with headers"
        );
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{topic}: the same keys"
        );
        for (key, records) in a {
            let other = &b[key];
            if let Some(i) =
                (0..records.len().max(other.len())).find(|i| records.get(*i) != other.get(*i))
            {
                panic!(
                    "{topic}: key {key:?}, record {i}: {:?} then {:?}",
                    records.get(i),
                    other.get(i)
                );
            }
        }
    }
    // Left joins keep cars without a model; inner ones do not.
    assert!(one.1.contains_key(&Some("car-65".to_string())));
    assert!(!one.0.contains_key(&Some("car-65".to_string())));
    assert_eq!(one.2, threads.2, "as many problems logged");
    assert!(one.2 >= 100, "{} problems logged", one.2);
}

/// A query over one busy partition reads its next batch on a second thread while the
/// batch before goes through the operators and is written; it gives the very records, in
/// the very order, one thread gives: a projection with a filter and a GROUP BY over
/// batches that arrive while steps run, bad records, and restarts onto the other number
/// of threads (what was read ahead is not kept over a restart).
#[test]
fn reading_ahead_gives_what_one_thread_gives() {
    let run = |threads: [usize; 2]| {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = open_parallel(dir.path(), threads[0]);
        engine
            .execute_sql(
                "CREATE STREAM readings (car VARCHAR KEY, zone VARCHAR, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=1);
                 SET 'auto.offset.reset'='earliest';
                 CREATE STREAM fast AS SELECT car, zone, speed * 2 AS twice FROM readings WHERE speed > 20;
                 CREATE TABLE zones AS SELECT zone, COUNT(*) AS n, SUM(speed) AS total FROM readings GROUP BY zone;",
            )
            .unwrap();
        for round in 0..4i64 {
            for i in 0..9_000i64 {
                let car = format!("car-{}", i % 31);
                if i % 307 == 0 {
                    produce(&engine, "readings", Some(&car), "not json", i);
                    continue;
                }
                let value = format!(
                    r#"{{"ZONE":"zone-{}","SPEED":{}}}"#,
                    i % 13,
                    (i * 7 + round) % 60
                );
                produce(&engine, "readings", Some(&car), &value, round * 10_000 + i);
                // Steps now and then while records arrive: a batch read ahead may hold
                // fewer records than the partition will have.
                if i % 2_500 == 0 {
                    engine.run_once().unwrap();
                }
            }
            engine.run_until_idle().unwrap();
            if round % 2 == 1 {
                drop(engine);
                engine = open_parallel(dir.path(), threads[1]);
            }
        }
        ["FAST", "ZONES", weir_engine::PROCESSING_LOG_TOPIC].map(|t| read_all(&engine, t))
    };
    let one = run([1, 1]);
    let topics = ["FAST", "ZONES", "processing log"];
    let least = (10_001, 4 * 29);
    assert_same_outputs("reading ahead", &topics, &one, &run([2, 2]), least);
    assert_same_outputs("over a restart", &topics, &one, &run([2, 1]), least);
}

/// Servers with different `ksql.service.id`s on one log are different clusters: each has
/// its own command log and checkpoints, and sees only its own streams and queries.
#[test]
fn servers_with_another_service_id_keep_their_own_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn weir_log::Log> =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap());
    let open = |id: &str| {
        Engine::open_service(log.clone(), weir_engine::Functions::default(), id).unwrap()
    };
    let mut a = open("fleet_a");
    a.execute_sql(
        "CREATE STREAM readings (car VARCHAR KEY, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=1);
         SET 'auto.offset.reset'='earliest';
         CREATE STREAM fast AS SELECT car, speed FROM readings WHERE speed > 10;",
    )
    .unwrap();
    produce(&a, "readings", Some("c1"), r#"{"SPEED": 20}"#, 1);
    a.run_until_idle().unwrap();
    drop(a);

    let b = open("fleet_b");
    assert!(b.catalog().source("READINGS").is_none());
    assert_eq!(b.queries().count(), 0);
    drop(b);
    for topic in ["_weir_fleet_a_commands", "_weir_fleet_b_offsets"] {
        assert!(log.topic(topic).unwrap().is_some(), "{topic}");
    }
    assert!(log.topic(weir_engine::COMMAND_TOPIC).unwrap().is_none());

    // fleet_a has it all back, and resumes where it was: nothing written twice.
    let mut a = open("fleet_a");
    assert!(a.catalog().source("READINGS").is_some());
    assert_eq!(a.queries().count(), 1);
    produce(&a, "readings", Some("c1"), r#"{"SPEED": 30}"#, 2);
    a.run_until_idle().unwrap();
    let speeds: Vec<String> = read_all(&a, "FAST")
        .into_iter()
        .filter_map(|(_, v, _)| v)
        .collect();
    assert_eq!(speeds, [r#"{"SPEED":20}"#, r#"{"SPEED":30}"#]);
}

/// Header columns, as ksqlDB's: `HEADERS` holds every header of the record (Weir's own
/// `weir.*` headers left out), `HEADER('name')` the last header of that name; they are
/// read, never written, and DESCRIBE shows them. A query's output records carry their
/// input's headers.
#[test]
fn header_columns_read_the_records_headers() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE STREAM S (K STRING KEY, H ARRAY<STRUCT<key STRING, value BYTES>> HEADERS, A BYTES HEADER('a'), V INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
         CREATE STREAM OUT AS SELECT K, V, H, A, LEN(A) AS N FROM S WHERE V > 0;",
    )
    .unwrap();
    let header = |name: &'static str, value: Option<&[u8]>| weir_log::Header {
        name: name.into(),
        value: value.map(<[u8]>::to_vec),
    };
    let mut record = Record::new(Some(b"k1".as_slice()), Some(br#"{"V": 1}"#.as_slice()), 5);
    record.headers = vec![
        header("a", Some(b"!")),
        header("weir.src", Some(b"internal")),
        header("b", None),
        header("a", Some(b"##")),
    ];
    e.log().produce("s", record).unwrap();
    produce(&e, "s", Some("k2"), r#"{"V": 2}"#, 6);
    e.run_until_idle().unwrap();
    let rows: Vec<Value> = read_all(&e, "OUT")
        .into_iter()
        .map(|(_, v, _)| serde_json::from_str(&v.unwrap()).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            json!({"V": 1, "N": 2, "A": "IyM=",
                   "H": [{"KEY": "a", "VALUE": "IQ=="}, {"KEY": "b", "VALUE": null},
                         {"KEY": "a", "VALUE": "IyM="}]}),
            json!({"V": 2, "N": null, "A": null, "H": []}),
        ]
    );
    // Each output record carries the headers of the record that made it (the user's only).
    let carried: Vec<Vec<(String, Option<Vec<u8>>)>> = e
        .log()
        .read("OUT", 0, 0, 10)
        .unwrap()
        .into_iter()
        .map(|r| {
            r.record
                .headers
                .into_iter()
                .filter(|h| !h.is_weir())
                .map(|h| (h.name.to_string(), h.value))
                .collect()
        })
        .collect();
    assert_eq!(
        carried,
        [
            vec![
                ("a".to_string(), Some(b"!".to_vec())),
                ("b".to_string(), None),
                ("a".to_string(), Some(b"##".to_vec())),
            ],
            vec![],
        ]
    );

    let Outcome::Described(d) = e.execute_sql("DESCRIBE S;").unwrap().remove(0) else {
        panic!("not a description")
    };
    let fields: Vec<_> = d[0]
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.key.as_deref(), f.header_key.as_deref()))
        .collect();
    assert_eq!(
        fields,
        [
            ("K", Some("KEY"), None),
            ("V", None, None),
            ("H", Some("HEADER"), None),
            ("A", Some("HEADER"), Some("a")),
        ]
    );
    let refused = e
        .execute_sql("INSERT INTO S (K, A, V) VALUES ('k3', TO_BYTES('x', 'utf8'), 3);")
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("Cannot insert into HEADER columns: A"),
        "{refused}"
    );
    let wrong = e
        .execute_sql("CREATE STREAM W (K STRING KEY, A STRING HEADER('a')) WITH (kafka_topic='w', value_format='JSON', partitions=1);")
        .unwrap_err();
    assert!(wrong.to_string().contains("expected BYTES"), "{wrong}");
}

/// A join's output records carry the headers of the record that made them: the stream's
/// record in a stream-table join (the batch lookup path), whichever side arrived last in
/// a stream-stream join.
#[test]
fn join_outputs_carry_the_headers_of_the_record_that_made_them() {
    let (_d, mut e) = engine();
    e.execute_sql(
        "CREATE TABLE T (ID INT PRIMARY KEY, NAME STRING) WITH (kafka_topic='t', value_format='JSON', partitions=1);
         CREATE STREAM S (ID INT KEY, V INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
         CREATE STREAM R (ID INT KEY, W INT) WITH (kafka_topic='r', value_format='JSON', partitions=1);
         CREATE STREAM ST AS SELECT S.ID, V, NAME FROM S JOIN T ON S.ID = T.ID;
         CREATE STREAM SS AS SELECT S.ID, V, W FROM S JOIN R WITHIN 10 SECONDS ON S.ID = R.ID;",
    )
    .unwrap();
    let send = |e: &Engine, topic: &str, value: &str, ts: i64, header: Option<&'static str>| {
        let mut record = Record::new(Some(&1i32.to_be_bytes()), Some(value.as_bytes()), ts);
        record.headers = header
            .map(|h| weir_log::Header {
                name: h.into(),
                value: Some(b"x".to_vec()),
            })
            .into_iter()
            .collect();
        e.log().produce(topic, record).unwrap();
    };
    send(&e, "t", r#"{"NAME": "one"}"#, 1, Some("from-table"));
    // The table first, alone: the stream's step is then a batch lookup.
    e.run_until_idle().unwrap();
    send(&e, "s", r#"{"V": 10}"#, 2, Some("from-s"));
    send(&e, "r", r#"{"W": 20}"#, 3, Some("from-r"));
    e.run_until_idle().unwrap();
    let names = |topic: &str| -> Vec<Vec<String>> {
        e.log()
            .read(topic, 0, 0, 10)
            .unwrap()
            .into_iter()
            .map(|r| {
                r.record
                    .headers
                    .iter()
                    .filter(|h| !h.is_weir())
                    .map(|h| h.name.to_string())
                    .collect()
            })
            .collect()
    };
    assert_eq!(names("ST"), [vec!["from-s".to_string()]]);
    assert_eq!(names("SS"), [vec!["from-r".to_string()]]);
}
