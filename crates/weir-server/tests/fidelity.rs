//! ksqlDB's statements and endpoints as its users rely on them: PAUSE/RESUME, ASSERT,
//! SHOW FUNCTIONS and DESCRIBE FUNCTION, errors in ksqlDB's words, SHOW ... EXTENDED,
//! `/ksql/terminate` and the legacy `/ws/query` websocket.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const SOURCE: &str = "CREATE STREAM src (id INT KEY, v INT) \
    WITH (kafka_topic='src', value_format='JSON', partitions=1);";

fn insert(server: &weir_server::Server, from: i32, to: i32) {
    let sql: String = (from..to)
        .map(|i| format!("INSERT INTO src (id, v) VALUES ({i}, {i});"))
        .collect();
    ksql(server, &sql);
}

/// How many rows a push query from the start over `stream` gives, up to `at_least`.
fn count(server: &weir_server::Server, stream: &str, at_least: usize) -> usize {
    rows(
        server,
        &format!("SELECT * FROM {stream} EMIT CHANGES LIMIT {at_least};"),
    )
    .len()
}

/// The error a `/ksql` request fails with: status and body.
fn ksql_error(server: &weir_server::Server, sql: &str) -> (u16, Value) {
    let (status, body) = post(server, "/ksql", &json!({"ksql": sql}));
    assert_ne!(status, 200, "{sql} succeeded: {body}");
    (status, body)
}

#[test]
fn pause_stops_a_query_where_it_is_and_resume_goes_on_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, SOURCE);
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; CREATE STREAM copy AS SELECT * FROM src;",
    );
    insert(&server, 0, 3);
    assert_eq!(count(&server, "copy", 3), 3);
    let id = wait_for_query_state(&server, "COPY", "RUNNING", Duration::from_secs(10))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let paused = ksql(&server, &format!("PAUSE {id};"));
    assert_eq!(paused[0]["commandStatus"]["message"], "Query paused.");
    wait_for_query_state(&server, "COPY", "PAUSED", Duration::from_secs(5));
    // Rows inserted while it is paused do not reach its sink...
    insert(&server, 3, 6);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(latest_total(&server, "COPY"), 3, "a paused query wrote");
    // ...and a restart keeps it paused.
    server.shutdown().unwrap();
    let server = start(dir.path(), &[]);
    wait_for_query_state(&server, "COPY", "PAUSED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(latest_total(&server, "COPY"), 3);
    // RESUME: it reads on from where it stopped.
    let resumed = ksql(&server, &format!("RESUME {id};"));
    assert_eq!(resumed[0]["commandStatus"]["message"], "Query resumed.");
    wait_for_query_state(&server, "COPY", "RUNNING", Duration::from_secs(5));
    assert_eq!(count(&server, "copy", 6), 6);
    // An unknown query is an error.
    let (_, body) = ksql_error(&server, "PAUSE NOSUCH_0;");
    assert!(
        body["message"].as_str().unwrap().contains("NOSUCH_0"),
        "{body}"
    );
    server.shutdown().unwrap();
}

/// How many rows `sink` holds now: a push query from the start, read until 1.5 s pass
/// without a row.
fn latest_total(server: &weir_server::Server, sink: &str) -> usize {
    let mut q = open_query_stream(
        server,
        &format!("SELECT * FROM {sink} EMIT CHANGES;"),
        json!({"auto.offset.reset": "earliest"}),
    );
    q.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut n = 0;
    let _header = q.next_line();
    loop {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut q.reader, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim_start().starts_with('[') => n += 1,
            Ok(_) => {}
        }
    }
    n
}

#[test]
fn assert_waits_for_what_it_names_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, SOURCE);
    let ok = ksql(&server, "ASSERT TOPIC src WITH (PARTITIONS=1);");
    assert_eq!(ok[0]["@type"], "assert_topic");
    assert_eq!(ok[0]["topicName"], "src");
    assert_eq!(ok[0]["exists"], true);
    let ok = ksql(
        &server,
        "ASSERT NOT EXISTS TOPIC nosuch TIMEOUT 100 MILLISECONDS;",
    );
    assert_eq!(ok[0]["exists"], false);
    assert_eq!(ksql(&server, "ASSERT STREAM src;")[0]["exists"], true);
    // What does not hold fails after the timeout, saying why.
    let started = Instant::now();
    let (status, body) = ksql_error(&server, "ASSERT TOPIC nosuch TIMEOUT 300 MILLISECONDS;");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, 400);
    assert_eq!(body["message"], "Topic NOSUCH does not exist");
    let (_, body) = ksql_error(
        &server,
        "ASSERT TOPIC src WITH (PARTITIONS=3) TIMEOUT 1 MILLISECONDS;",
    );
    assert_eq!(
        body["message"],
        "Mismatched configuration for topic src: For config partitions, expected 3 got 1"
    );
    let (_, body) = ksql_error(
        &server,
        "ASSERT NOT EXISTS STREAM src TIMEOUT 1 MILLISECONDS;",
    );
    assert_eq!(body["message"], "Stream SRC exists");
    let (_, body) = ksql_error(&server, "ASSERT TABLE src TIMEOUT 1 MILLISECONDS;");
    assert_eq!(body["message"], "Table SRC does not exist");
    // Schemas, in Weir's own registry: a JSON stream has none, an AVRO one registers its.
    let (_, body) = ksql_error(
        &server,
        "ASSERT SCHEMA SUBJECT 'src-value' TIMEOUT 1 MILLISECONDS;",
    );
    assert_eq!(
        body["message"],
        "Schema with subject name src-value does not exist"
    );
    ksql(
        &server,
        "CREATE STREAM avro_src (id INT KEY, v INT) WITH (kafka_topic='avro_src', value_format='AVRO', partitions=1);",
    );
    ksql(
        &server,
        "ASSERT SCHEMA SUBJECT 'avro_src-value' TIMEOUT 1 MILLISECONDS;",
    );
    ksql(&server, "ASSERT SCHEMA SUBJECT 'avro_src-value' ID 1;");
    let (_, body) = ksql_error(&server, "ASSERT NOT EXISTS SCHEMA ID 1;");
    assert_eq!(body["message"], "Schema with id 1 exists");
    // A topic that appears while it waits: the ASSERT succeeds then.
    let addr = server.addr();
    let creator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let (status, _) = common::post_to(
            addr,
            "/ksql",
            &json!({"ksql": "CREATE STREAM later (v INT) WITH (kafka_topic='later', value_format='JSON', partitions=1);"}),
        );
        assert_eq!(status, 200);
    });
    let ok = ksql(&server, "ASSERT TOPIC later TIMEOUT 10 SECONDS;");
    assert_eq!(ok[0]["exists"], true);
    creator.join().unwrap();
    server.shutdown().unwrap();
}

#[test]
fn show_functions_lists_ksqldb_functions_and_describe_function_describes_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let listed = ksql(&server, "SHOW FUNCTIONS;")[0]["functions"].clone();
    let find = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
    };
    for (name, kind) in [
        ("UCASE", "SCALAR"),
        ("TRANSFORM", "SCALAR"),
        ("REDUCE", "SCALAR"),
        ("LATEST_BY_OFFSET", "AGGREGATE"),
        ("COUNT", "AGGREGATE"),
        ("EXPLODE", "TABLE"),
        ("CUBE_EXPLODE", "TABLE"),
    ] {
        let f = find(name).unwrap_or_else(|| panic!("{name} not listed: {listed}"));
        assert_eq!(f["type"], kind, "{f}");
    }
    // DataFusion's own functions are not ksqlDB's.
    for name in ["TO_CHAR", "DATE_BIN", "ARRAY_TO_STRING", "MAP_EXTRACT"] {
        assert!(find(name).is_none(), "{name} listed");
    }
    // Every listed function can be described.
    for f in listed.as_array().unwrap() {
        let d = ksql(
            &server,
            &format!("DESCRIBE FUNCTION {};", f["name"].as_str().unwrap()),
        );
        assert_eq!(d[0]["@type"], "describe_function");
        assert!(!d[0]["description"].as_str().unwrap().is_empty(), "{d:?}");
    }
    let (_, body) = ksql_error(&server, "DESCRIBE FUNCTION to_char;");
    assert_eq!(
        body["message"],
        "Can't find any functions with the name 'TO_CHAR'"
    );
    server.shutdown().unwrap();
}

#[test]
fn errors_are_said_in_ksqldb_words() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, SOURCE);
    let (status, body) = ksql_error(
        &server,
        "CREATE STREAM bad AS SELECT id, wont_find_me(v) FROM src;",
    );
    assert_eq!((status, body["error_code"].clone()), (400, json!(40001)));
    assert_eq!(
        body["message"],
        "Can't find any functions with the name 'WONT_FIND_ME'"
    );
    let (_, body) = ksql_error(&server, "CREATE STREAM bad AS SELECT id, nosuch FROM src;");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("'NOSUCH' cannot be resolved"), "{message}");
    assert!(!message.contains("Schema error"), "{message}");
    let (status, body) = post(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT UCASE(v, v, v) FROM src EMIT CHANGES;"}),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(!message.starts_with("Error during planning"), "{message}");
    server.shutdown().unwrap();
}

#[test]
fn show_extended_describes_sources_and_explains_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, SOURCE);
    ksql(&server, "CREATE STREAM copy AS SELECT * FROM src;");
    let streams = ksql(&server, "SHOW STREAMS EXTENDED;");
    assert_eq!(streams[0]["@type"], "source_descriptions");
    let names: Vec<&str> = streams[0]["sourceDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"SRC") && names.contains(&"COPY"),
        "{names:?}"
    );
    assert!(streams[0]["sourceDescriptions"][0]["extended"] == true);
    let queries = ksql(&server, "SHOW QUERIES EXTENDED;");
    assert_eq!(queries[0]["@type"], "query_descriptions");
    let q = &queries[0]["queryDescriptions"][0];
    assert!(q["id"].as_str().unwrap().starts_with("CSAS_COPY"), "{q}");
    assert!(q["statementText"].as_str().unwrap().contains("COPY"), "{q}");
    assert_eq!(q["sinks"], json!(["COPY"]));
    // Without EXTENDED: the plain listings.
    assert_eq!(ksql(&server, "SHOW STREAMS;")[0]["@type"], "streams");
    assert_eq!(ksql(&server, "SHOW QUERIES;")[0]["@type"], "queries");
    server.shutdown().unwrap();
}

#[test]
fn ksql_terminate_stops_every_query_and_drops_every_source_and_the_named_topics() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, SOURCE);
    ksql(
        &server,
        "CREATE STREAM copy AS SELECT * FROM src; \
         CREATE TABLE counts AS SELECT id, COUNT(*) AS n FROM src GROUP BY id;",
    );
    let (status, body) = post(
        &server,
        "/ksql/terminate",
        &json!({"deleteTopicList": ["COPY", "cou.*"]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["commandStatus"]["message"], "Cluster terminated.");
    assert_eq!(ksql(&server, "SHOW QUERIES;")[0]["queries"], json!([]));
    assert_eq!(ksql(&server, "SHOW STREAMS;")[0]["streams"], json!([]));
    assert_eq!(ksql(&server, "SHOW TABLES;")[0]["tables"], json!([]));
    let topics: Vec<String> = ksql(&server, "SHOW TOPICS;")[0]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    // The listed ones deleted, the source's topic (not listed) kept.
    assert!(topics.contains(&"src".to_string()), "{topics:?}");
    assert!(!topics.contains(&"COPY".to_string()), "{topics:?}");
    assert!(
        !topics.iter().any(|t| t.starts_with("COUNTS")),
        "{topics:?}"
    );
    server.shutdown().unwrap();
}

#[test]
fn ws_query_streams_a_push_query_over_a_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, SOURCE);
    insert(&server, 0, 2);
    let request = json!({
        "ksql": "SELECT id, v * 10 AS t FROM ${s} EMIT CHANGES LIMIT 2;",
        "streamsProperties": {"auto.offset.reset": "earliest"},
        "sessionVariables": {"s": "src"},
    })
    .to_string();
    let encoded: String = request
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (mut socket, _) =
        tungstenite::connect(format!("ws://{}/ws/query?request={encoded}", server.addr()))
            .expect("websocket opens");
    let mut messages = Vec::new();
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Text(t)) => {
                messages.push(serde_json::from_str::<Value>(&t).unwrap())
            }
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[0]["header"]["schema"], "`ID` INTEGER, `T` INTEGER");
    assert_eq!(messages[1], json!({"row": {"columns": [0, 0]}}));
    assert_eq!(messages[2], json!({"row": {"columns": [1, 10]}}));
    assert_eq!(messages[3], json!({"finalMessage": "Limit Reached"}));
    // A statement that is not a query is refused before any upgrade.
    let refused = tungstenite::connect(format!(
        "ws://{}/ws/query?request=%7B%22ksql%22%3A%22SHOW%20STREAMS%3B%22%7D",
        server.addr()
    ));
    assert!(refused.is_err());
    server.shutdown().unwrap();
}
