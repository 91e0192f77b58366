//! Stateful queries through the server as a ksqlDB client uses them: a windowed
//! aggregate, a stream-table join, and pull queries over `/query-stream` and `/query`
//! answered from the tables' state.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use weir_server::Server;

/// A query's header and rows over `/query-stream` (a line each).
fn query(server: &Server, sql: &str, properties: Value) -> (Value, Vec<Value>) {
    let (status, body) = post(
        server,
        "/query-stream",
        &json!({"sql": sql, "properties": properties}),
    );
    assert_eq!(status, 200, "{sql}: {body}");
    let text = body
        .as_str()
        .map(str::to_string)
        .unwrap_or(body.to_string());
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let header = lines.next().expect("a header");
    (header, lines.collect())
}

/// A pull query's header and rows.
fn pull(server: &Server, sql: &str) -> (Value, Vec<Value>) {
    query(server, sql, json!({}))
}

/// Polls a pull query until its rows (sorted when `sorted`) are `want` (the persistent
/// queries run in the background); fails with the last rows seen at the deadline.
fn pull_until(server: &Server, sql: &str, want: &[Value], sorted: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, mut rows) = pull(server, sql);
        if sorted {
            rows.sort_by_key(|r| r.to_string());
        }
        if rows == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: still {rows:?} after 20 s, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A persistent query's `weir_query_records_in_total` (the query whose id starts with
/// `prefix`).
fn records_in(server: &Server, prefix: &str) -> u64 {
    let (status, body) = get(server, "/metrics");
    assert_eq!(status, 200);
    let text = body.as_str().expect("metrics are text").to_string();
    let label = format!("weir_query_records_in_total{{query=\"{prefix}");
    text.lines()
        .find(|l| l.starts_with(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {label} in the metrics:\n{text}"))
}

#[test]
fn windowed_aggregates_joins_and_pull_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("auto.offset.reset", "earliest")]);
    ksql(
        &server,
        "CREATE STREAM readings (car VARCHAR KEY, speed DOUBLE) \
           WITH (kafka_topic='readings', value_format='JSON', partitions=1); \
         CREATE TABLE cars (car VARCHAR PRIMARY KEY, model VARCHAR) \
           WITH (kafka_topic='cars', value_format='JSON', partitions=1); \
         CREATE TABLE per_car AS SELECT car, COUNT(*) AS n, AVG(speed) AS mean FROM readings GROUP BY car; \
         CREATE TABLE per_window AS SELECT car, COUNT(*) AS n FROM readings \
           WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY car; \
         CREATE STREAM enriched AS SELECT r.car AS car, c.model, r.speed FROM readings r \
           LEFT JOIN cars c ON r.car = c.car;",
    );
    // The car table first, so the readings find their models.
    ksql(
        &server,
        "INSERT INTO cars (ROWTIME, car, model) VALUES (0, 'a', 'roadster'); \
         INSERT INTO cars (ROWTIME, car, model) VALUES (0, 'b', 'van');",
    );
    // The join has read the table (both rows) before a reading arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    while records_in(&server, "CSAS_ENRICHED") < 2 {
        assert!(
            Instant::now() < deadline,
            "the join never read the car table"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ksql(
        &server,
        "INSERT INTO readings (ROWTIME, car, speed) VALUES (1000, 'a', 10.0); \
         INSERT INTO readings (ROWTIME, car, speed) VALUES (2000, 'b', 20.0); \
         INSERT INTO readings (ROWTIME, car, speed) VALUES (12000, 'a', 30.0); \
         INSERT INTO readings (ROWTIME, car, speed) VALUES (13000, 'c', 5.0);",
    );

    // A key lookup, then the whole table.
    pull_until(
        &server,
        "SELECT * FROM per_car WHERE car = 'a';",
        &[json!(["a", 2, 20.0])],
        false,
    );
    pull_until(
        &server,
        "SELECT car, n FROM per_car;",
        &[json!(["a", 2]), json!(["b", 1]), json!(["c", 1])],
        true,
    );

    // A windowed table: a row per key and window, the bounds after the key.
    let (header, _) = pull(&server, "SELECT * FROM per_window WHERE car = 'a';");
    assert_eq!(
        header["columnNames"],
        json!(["CAR", "WINDOWSTART", "WINDOWEND", "N"])
    );
    pull_until(
        &server,
        "SELECT * FROM per_window WHERE car = 'a' AND WINDOWSTART >= 10000;",
        &[json!(["a", 10000, 20000, 1])],
        false,
    );

    // The join: models looked up as each reading arrives; an unknown car gets nulls.
    pull_until(
        &server,
        "SELECT car, model, speed FROM enriched;",
        &[
            json!(["a", "roadster", 10.0]),
            json!(["b", "van", 20.0]),
            json!(["a", "roadster", 30.0]),
            json!(["c", null, 5.0]),
        ],
        false,
    );

    // A push query with a windowed GROUP BY: each group's changes, bounds after the key.
    let (header, rows) = query(
        &server,
        "SELECT car, COUNT(*) AS n FROM readings WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY car EMIT CHANGES LIMIT 4;",
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(
        header["columnNames"],
        json!(["CAR", "WINDOWSTART", "WINDOWEND", "N"])
    );
    assert_eq!(
        rows,
        [
            json!(["a", 0, 10000, 1]),
            json!(["b", 0, 10000, 1]),
            json!(["a", 10000, 20000, 1]),
            json!(["c", 10000, 20000, 1])
        ]
    );
    // Without the key in the select list, as ksqlDB allows a client.
    let (_, counts) = query(
        &server,
        "SELECT COUNT(*) AS n FROM readings GROUP BY car EMIT CHANGES LIMIT 3;",
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(counts, [json!([1]), json!([1]), json!([2])]);

    // A push query over the join itself, from the earliest records of both sources (taken
    // in timestamp order: the cars, at 0, before the readings).
    let (_, joined) = query(
        &server,
        "SELECT r.car AS car, c.model, r.speed FROM readings r LEFT JOIN cars c ON r.car = c.car EMIT CHANGES LIMIT 4;",
        json!({"auto.offset.reset": "earliest"}),
    );
    assert_eq!(
        joined,
        [
            json!(["a", "roadster", 10.0]),
            json!(["b", "van", 20.0]),
            json!(["a", "roadster", 30.0]),
            json!(["c", null, 5.0])
        ]
    );

    // The old endpoint: the rows, then "Query Completed".
    let (status, body) = post(
        &server,
        "/query",
        &json!({"ksql": "SELECT n FROM per_car WHERE car = 'b';"}),
    );
    assert_eq!(status, 200, "{body}");
    let elements = body.as_array().expect("one JSON array");
    assert_eq!(elements[1], json!({"row": {"columns": [1]}}));
    assert_eq!(elements[2], json!({"finalMessage": "Query Completed"}));

    // What a pull query cannot do is refused with why.
    let (status, body) = post(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT car, COUNT(*) FROM readings GROUP BY car;"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("GROUP BY"),
        "{body}"
    );
    server.shutdown().unwrap();
}
