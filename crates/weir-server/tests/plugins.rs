//! Plugins dropped into a running server's folder: callable without a restart, described
//! by SHOW FUNCTIONS and DESCRIBE FUNCTION, gone when removed; a plugin that panics sends
//! the bad rows to the processing log and the server carries on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn functions(server: &weir_server::Server) -> Vec<Value> {
    ksql(server, "SHOW FUNCTIONS;")[0]["functions"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until SHOW FUNCTIONS does (or does not) list `name`; how long it took.
fn wait_for_function(server: &weir_server::Server, name: &str, present: bool) -> Duration {
    let started = Instant::now();
    while functions(server).iter().any(|f| f["name"] == name) != present {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{name} present={present} never happened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn a_dropped_in_plugin_is_callable_without_a_restart_and_gone_when_removed() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let server = start_with(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        plugin_dir: Some(plugins.clone()),
        properties: [(
            "weir.functions.haversine.unit".to_string(),
            "miles".to_string(),
        )]
        .into(),
        ..Default::default()
    });
    ksql(
        &server,
        "CREATE STREAM nums (x BIGINT, lat DOUBLE) WITH (kafka_topic='nums', value_format='JSON', partitions=1);",
    );
    ksql(
        &server,
        "INSERT INTO nums (x, lat) VALUES (2, 52.52); INSERT INTO nums (x, lat) VALUES (7, 48.8566);",
    );
    let (status, _) = post(
        &server,
        "/ksql",
        &json!({"ksql": "CREATE STREAM m AS SELECT MULTIPLY(x, 3) AS y FROM nums;"}),
    );
    assert_eq!(status, 400, "MULTIPLY is not there yet");

    // A broken file in the folder is refused; the server goes on.
    std::fs::write(plugins.join("junk.so"), b"not a library").unwrap();
    std::fs::copy(built("multiply"), plugins.join("multiply.so")).unwrap();
    let took = wait_for_function(&server, "MULTIPLY", true);
    eprintln!("multiply.so callable {took:?} after it was copied in");
    assert_eq!(get(&server, "/healthcheck").0, 200);
    // The function list says the junk was refused, and why (the two files were settled
    // in the same scan); once the file is gone, so is the warning.
    let refusals = || -> Vec<String> {
        ksql(&server, "SHOW FUNCTIONS;")[0]["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|m| m["message"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let warned = refusals();
    assert!(
        warned.len() == 1 && warned[0].starts_with("plugin file junk.so refused: cannot load"),
        "{warned:?}"
    );
    std::fs::remove_file(plugins.join("junk.so")).unwrap();
    let removed = Instant::now();
    while !refusals().is_empty() {
        assert!(
            removed.elapsed() < Duration::from_secs(15),
            "the refusal outlived the file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let listed = functions(&server);
    let multiply = listed.iter().find(|f| f["name"] == "MULTIPLY").unwrap();
    assert_eq!(multiply["category"], "PLUGIN (multiply)");
    assert_eq!(multiply["type"], "SCALAR");
    assert_eq!(
        rows(
            &server,
            "SELECT x, MULTIPLY(x, 3) AS y, MULTIPLY(lat, 2.0) AS z FROM nums EMIT CHANGES LIMIT 2;"
        ),
        [json!([2, 6, 105.04]), json!([7, 21, 97.7132])]
    );
    // Config from the server's properties reached the plugin: miles, not km.
    let d = rows(
        &server,
        "SELECT HAVERSINE(52.52, 13.405, 48.8566, 2.3522) AS d FROM nums EMIT CHANGES LIMIT 1;",
    );
    assert!((d[0][0].as_f64().unwrap() - 545.0).abs() < 5.0, "{d:?}");

    let described = ksql(&server, "DESCRIBE FUNCTION multiply;");
    let f = &described[0];
    assert_eq!(f["@type"], "describe_function");
    assert_eq!(f["author"], "Weir examples");
    assert!(f["path"].as_str().unwrap().contains("multiply.so"), "{f}");
    // Each overload with its arguments, as ksqlDB's describe_function lists them.
    let overloads = f["functions"].as_array().unwrap();
    assert_eq!(overloads.len(), 2, "{f}");
    assert_eq!(
        overloads[0]["arguments"],
        json!([
            {"name": "a", "type": "BIGINT", "description": "", "isVariadic": false},
            {"name": "b", "type": "BIGINT", "description": "", "isVariadic": false},
        ])
    );
    assert_eq!(overloads[0]["returnType"], "BIGINT");
    assert_eq!(overloads[1]["returnType"], "DOUBLE");
    assert_eq!(overloads[1]["description"], "Multiplies two doubles");

    // A persistent query keeps working after its plugin file is removed; new ones can't use it.
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; CREATE STREAM tripled AS SELECT x, MULTIPLY(x, 3) AS y FROM nums;",
    );
    std::fs::remove_file(plugins.join("multiply.so")).unwrap();
    wait_for_function(&server, "MULTIPLY", false);
    let (status, body) = post(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT MULTIPLY(x, 2) FROM nums EMIT CHANGES;"}),
    );
    assert_eq!(status, 400, "{body}");
    ksql(&server, "INSERT INTO nums (x, lat) VALUES (10, 0.0);");
    assert_eq!(
        rows(&server, "SELECT x, y FROM tripled EMIT CHANGES LIMIT 3;"),
        [json!([2, 6]), json!([7, 21]), json!([10, 30])]
    );
    server.shutdown().unwrap();
}

#[test]
fn a_panicking_plugin_sends_its_bad_rows_to_the_processing_log_and_the_query_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_plugin(dir.path(), "faulty", "faulty.so");
    ksql(
        &server,
        "CREATE STREAM nums (x BIGINT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);",
    );
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; CREATE STREAM checked AS SELECT x, FAULTY(x) AS f FROM nums;",
    );
    for x in [2, -5, 0, 7] {
        ksql(&server, &format!("INSERT INTO nums (x) VALUES ({x});"));
    }
    assert_eq!(
        rows(&server, "SELECT x, f FROM checked EMIT CHANGES LIMIT 2;"),
        [json!([2, 2]), json!([7, 7])]
    );
    let logged = rows(
        &server,
        "SELECT MESSAGE FROM KSQL_PROCESSING_LOG EMIT CHANGES LIMIT 2;",
    );
    let messages: Vec<&str> = logged.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert!(
        messages.iter().any(|m| m.contains("negative input -5")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("zero is not allowed")),
        "{messages:?}"
    );
    assert_eq!(get(&server, "/healthcheck").0, 200);
    server.shutdown().unwrap();
}

/// A plugin aggregate whose update fails half done (an error, a panic) leaves the
/// group as it was before that update: the group's other rows are folded once each, the
/// bad ones go to the processing log. Under EMIT FINAL a group's rows of a batch go to
/// the plugin in one update (which fails, and is done again row by row); with a change
/// per record, one at a time.
#[test]
fn a_plugin_aggregate_update_that_fails_half_done_leaves_its_group_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_plugin(dir.path(), "faulty", "faulty.so");
    ksql(
        &server,
        "CREATE STREAM nums (k VARCHAR KEY, x BIGINT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);",
    );
    // All the rows are there before the queries start: one batch. The last one, in a
    // later window, closes the first.
    for (time, k, x) in [
        (1_000, "a", 5),
        (1_001, "a", 0),
        (1_002, "a", 7),
        (1_003, "a", -1),
        (1_004, "a", 3),
        (60_000, "b", 1),
    ] {
        ksql(
            &server,
            &format!("INSERT INTO nums (ROWTIME, k, x) VALUES ({time}, '{k}', {x});"),
        );
    }
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; \
         CREATE TABLE closed AS SELECT k, FAULTY_SUM(x) AS s, COUNT(*) AS n FROM nums \
         WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY k EMIT FINAL;",
    );
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; \
         CREATE TABLE per_row AS SELECT k, FAULTY_SUM(x) AS s FROM nums GROUP BY k;",
    );
    assert_eq!(
        rows(&server, "SELECT k, s, n FROM closed EMIT CHANGES LIMIT 1;"),
        [json!(["a", 15, 5])]
    );
    // A change per record; a bad record's change shows the group as it was.
    let each = rows(&server, "SELECT k, s FROM per_row EMIT CHANGES LIMIT 6;");
    assert_eq!(
        each,
        [
            ("a", 5),
            ("a", 5),
            ("a", 12),
            ("a", 12),
            ("a", 15),
            ("b", 1)
        ]
        .map(|(k, s)| json!([k, s])),
        "the bad rows change nothing"
    );
    let logged = rows(
        &server,
        "SELECT MESSAGE FROM KSQL_PROCESSING_LOG EMIT CHANGES LIMIT 4;",
    );
    let messages: Vec<&str> = logged.iter().map(|r| r[0].as_str().unwrap()).collect();
    for bad in ["zero is not allowed", "negative input -1"] {
        assert_eq!(
            messages.iter().filter(|m| m.contains(bad)).count(),
            2,
            "{bad}, once per query: {messages:?}"
        );
    }
    assert_eq!(get(&server, "/healthcheck").0, 200);
    server.shutdown().unwrap();
}

#[test]
fn with_fail_on_function_error_a_panicking_plugin_stops_its_query_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_plugin(dir.path(), "faulty", "faulty.so");
    ksql(
        &server,
        "CREATE STREAM nums (x BIGINT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);",
    );
    // The strict query, and a lenient one over the same input beside it.
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; SET 'weir.fail.on.function.error'='true'; \
         CREATE STREAM strict AS SELECT x, FAULTY(x) AS f FROM nums;",
    );
    ksql(
        &server,
        "UNSET 'weir.fail.on.function.error'; CREATE STREAM lenient AS SELECT x, FAULTY(x) AS f FROM nums;",
    );
    ksql(&server, "INSERT INTO nums (x) VALUES (2);");
    assert_eq!(
        rows(&server, "SELECT x, f FROM strict EMIT CHANGES LIMIT 1;"),
        [json!([2, 2])]
    );
    ksql(
        &server,
        "INSERT INTO nums (x) VALUES (-5); INSERT INTO nums (x) VALUES (7);",
    );

    // The strict query stops at the panic, in state ERROR, saying why.
    let strict = wait_for_query_state(&server, "STRICT", "ERROR", Duration::from_secs(15));
    let explained = ksql(
        &server,
        &format!("EXPLAIN {};", strict["id"].as_str().unwrap()),
    );
    let description = &explained[0]["queryDescription"];
    assert_eq!(description["state"], "ERROR");
    let message = description["queryErrors"][0]["errorMessage"]
        .as_str()
        .unwrap();
    assert!(message.contains("negative input -5"), "{message}");
    assert!(message.contains("weir.fail.on.function.error"), "{message}");
    // It wrote nothing past the failing batch: 7 never came out of it.
    assert!(
        description["statistics"]
            .as_str()
            .unwrap()
            .contains("messages-produced-total: 1"),
        "{description}"
    );

    // The lenient query went past the bad row; the server is fine.
    assert_eq!(
        rows(&server, "SELECT x, f FROM lenient EMIT CHANGES LIMIT 2;"),
        [json!([2, 2]), json!([7, 7])]
    );
    assert_eq!(get(&server, "/healthcheck").0, 200);
    server.shutdown().unwrap();
}

#[test]
fn a_plugin_aggregate_is_called_from_group_by() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_plugin(dir.path(), "spread", "spread.so");
    ksql(
        &server,
        "CREATE STREAM temps (car VARCHAR KEY, t INT) WITH (kafka_topic='temps', value_format='JSON', partitions=1);",
    );
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; CREATE TABLE ranges AS SELECT car, SPREAD(t) AS spread, COUNT(*) AS n FROM temps GROUP BY car;",
    );
    for (car, t) in [("a", 70), ("a", 95), ("b", 80), ("a", 60)] {
        ksql(
            &server,
            &format!("INSERT INTO temps (car, t) VALUES ('{car}', {t});"),
        );
    }
    // The INT argument is widened to the plugin's DOUBLE; one change per input record.
    assert_eq!(
        rows(
            &server,
            "SELECT car, spread, n FROM ranges EMIT CHANGES LIMIT 4;"
        ),
        [
            json!(["a", 0.0, 1]),
            json!(["a", 25.0, 2]),
            json!(["b", 0.0, 1]),
            json!(["a", 35.0, 3]),
        ]
    );
    server.shutdown().unwrap();
}

#[test]
fn a_plugin_aggregate_folds_merged_sessions_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_plugin(dir.path(), "spread", "spread.so");
    ksql(
        &server,
        "CREATE STREAM temps (car VARCHAR KEY, t INT) WITH (kafka_topic='temps', value_format='JSON', partitions=1);",
    );
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; CREATE TABLE sessions AS SELECT car, SPREAD(t) AS spread, COUNT(*) AS n FROM temps WINDOW SESSION (60 SECONDS) GROUP BY car;",
    );
    // Two sessions 99 s apart, then a record between them that merges them: the merged
    // session's spread comes from all three readings.
    for (time, t) in [(1_000, 70), (100_000, 95), (50_000, 60)] {
        ksql(
            &server,
            &format!("INSERT INTO temps (ROWTIME, car, t) VALUES ({time}, 'a', {t});"),
        );
    }
    assert_eq!(
        rows(
            &server,
            "SELECT car, WINDOWSTART, WINDOWEND, spread, n FROM sessions EMIT CHANGES LIMIT 3;"
        ),
        [
            json!(["a", 1_000, 1_000, 0.0, 1]),
            json!(["a", 100_000, 100_000, 0.0, 1]),
            json!(["a", 1_000, 100_000, 35.0, 3]),
        ]
    );
    server.shutdown().unwrap();
}
