//! A hundred push-query clients on one server each receive every row, while a client that
//! stopped reading is cut off and one that vanished is forgotten, and a persistent query
//! keeps up.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const CLIENTS: usize = 100;
const ROWS: usize = 3000;
/// Rows a client may fall behind by (`weir.push.buffer.rows`), small so the test is quick.
const BUFFER: &str = "500";

fn query_ids(server: &weir_server::Server) -> Vec<String> {
    ksql(server, "SHOW QUERIES;")[0]["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_hundred_clients_get_every_row_and_a_stalled_or_vanished_one_stalls_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("weir.push.buffer.rows", BUFFER)]);
    ksql(
        &server,
        "CREATE STREAM events (id BIGINT, pad STRING) WITH (kafka_topic='events', value_format='JSON', partitions=1);",
    );
    ksql(
        &server,
        "CREATE STREAM evens AS SELECT id FROM events WHERE id % 2 = 0 EMIT CHANGES;",
    );

    // The readers: each reads its stream to the end (LIMIT) on a thread of its own.
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = open_query_stream(
            &server,
            &format!("SELECT id FROM events EMIT CHANGES LIMIT {ROWS};"),
            json!({}),
        );
        let header = stream.next_line().expect("a header");
        assert!(header.contains("queryId"), "{header}");
        readers.push(std::thread::spawn(move || {
            let mut ids = Vec::with_capacity(ROWS);
            while let Some(line) = stream.next_line() {
                let row: Value = serde_json::from_str(&line).unwrap();
                ids.push(row[0].as_u64().expect("a row, not an error"));
            }
            ids
        }));
    }
    // One that stops reading after its header (its rows are large, 20 kB, to fill the
    // socket's buffers quickly), and one that goes away.
    let mut stalled = open_query_stream(
        &server,
        "SELECT id, LPAD(pad, 20000, 'y') AS big FROM events EMIT CHANGES;",
        json!({}),
    );
    let stalled_id =
        serde_json::from_str::<Value>(&stalled.next_line().unwrap()).unwrap()["queryId"]
            .as_str()
            .unwrap()
            .to_string();
    let mut vanished = open_query_stream(&server, "SELECT * FROM events EMIT CHANGES;", json!({}));
    let vanished_id =
        serde_json::from_str::<Value>(&vanished.next_line().unwrap()).unwrap()["queryId"]
            .as_str()
            .unwrap()
            .to_string();
    drop(vanished);
    assert!(query_ids(&server).contains(&stalled_id));

    // Rows go in in batches of statements, a record each.
    let pad = "x".repeat(100);
    let started = Instant::now();
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(250) {
        let sql: String = chunk
            .iter()
            .map(|i| format!("INSERT INTO events (id, pad) VALUES ({i}, '{pad}');"))
            .collect();
        ksql(&server, &sql);
    }

    for (n, reader) in readers.into_iter().enumerate() {
        let ids = reader.join().unwrap();
        assert_eq!(ids.len(), ROWS, "client {n} got {} rows", ids.len());
        assert!(
            ids.iter().enumerate().all(|(i, id)| *id == i as u64),
            "client {n}: out of order"
        );
    }
    let elapsed = started.elapsed();
    eprintln!("{CLIENTS} clients x {ROWS} rows delivered in {elapsed:?}");

    // The stalled client was ended rather than holding anyone back; the vanished one is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while query_ids(&server).contains(&stalled_id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ids = query_ids(&server);
    assert!(
        !ids.contains(&stalled_id),
        "the stalled client's query still runs"
    );
    assert!(
        !ids.contains(&vanished_id),
        "the vanished client's query still runs"
    );
    // When it reads again, it learns why it was cut off.
    let mut last = String::new();
    while let Some(line) = stalled.next_line() {
        last = line;
    }
    assert!(
        last.contains("fell more than 500 rows behind"),
        "{}",
        &last[..last.len().min(300)]
    );

    // The persistent query kept up: every even id is in its sink.
    let (_, body) = post(
        &server,
        "/query-stream",
        &json!({"sql": format!("SELECT id FROM evens EMIT CHANGES LIMIT {};", ROWS / 2), "properties": {"auto.offset.reset": "earliest"}}),
    );
    let evens: Vec<u64> = body
        .as_str()
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()[0]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        evens,
        (0..ROWS as u64).filter(|i| i % 2 == 0).collect::<Vec<_>>()
    );
    server.shutdown().unwrap();
}
