//! The anomaly plugin (`udfs/anomaly`, ONNX Runtime) loaded by a server and called from
//! SQL: the demo's contract (a string score), a score as a number, NULL plus a
//! processing-log entry for a message that does not parse, never a failed batch.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn anomaly_scores_the_demo_message_low_and_faults_high_and_bad_input_goes_to_the_processing_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_plugin(dir.path(), "anomaly", "libanomaly.so");
    let model: Value = serde_json::from_str(
        &std::fs::read_to_string(manifest("udfs/anomaly/model/MODEL.json")).unwrap(),
    )
    .unwrap();
    let threshold = model["threshold"].as_f64().unwrap();
    let sample = std::fs::read_to_string(manifest("udfs/anomaly/sample_message.txt")).unwrap();
    let sample = sample.trim();
    let readings: Vec<f64> = sample
        .split_once(',')
        .unwrap()
        .1
        .split('#')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    // The same beat with a sensor fault: 40 readings stuck at 0.
    let faulty: Vec<String> = readings
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if (100..140).contains(&i) {
                "0.00".into()
            } else {
                format!("{v:.2}")
            }
        })
        .collect();

    let functions = ksql(&server, "SHOW FUNCTIONS;")[0]["functions"].clone();
    assert!(
        functions
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "ANOMALY" && f["type"] == "SCALAR"),
        "{functions}"
    );
    ksql(
        &server,
        "CREATE STREAM carsensor (eventid integer, sensorinput varchar) WITH (kafka_topic='temperature', value_format='DELIMITED', partitions=1);",
    );
    for message in [
        sample.to_string(),
        format!("2,{}", faulty.join("# ")),
        "3,1.0# 2.0# oops".to_string(),
        "4,1.0# 2.0".to_string(),
    ] {
        ksql(
            &server,
            &format!(
                "INSERT INTO carsensor (eventid, sensorinput) VALUES ({}, '{}');",
                message.split_once(',').unwrap().0,
                message.split_once(',').unwrap().1
            ),
        );
    }
    let scored = rows(
        &server,
        "SELECT EVENTID, ANOMALY(SENSORINPUT) AS A, ANOMALY_SCORE(SENSORINPUT) AS S FROM CARSENSOR EMIT CHANGES LIMIT 4;",
    );
    println!("scores: {scored:?} (threshold {threshold})");
    let a0: f64 = scored[0][1].as_str().unwrap().parse().unwrap();
    let expected = model["sample_message_score"].as_f64().unwrap();
    assert!(
        (a0 - expected).abs() / expected < 1e-3,
        "{a0} vs the training script's {expected}"
    );
    assert!(
        a0 < threshold,
        "the demo's sample scores below the threshold"
    );
    assert_eq!(
        scored[0][2].as_f64().unwrap(),
        a0,
        "the number and the string agree"
    );
    let a1 = scored[1][2].as_f64().unwrap();
    assert!(
        a1 > threshold,
        "a stuck sensor scores above the threshold: {a1}"
    );
    assert_eq!(scored[2], json!([3, null, null]));
    assert_eq!(scored[3], json!([4, null, null]));

    // CAST as the demo does, and the array overload.
    let cast = rows(
        &server,
        "SELECT CAST(ANOMALY(SENSORINPUT) AS DOUBLE) AS V FROM CARSENSOR WHERE EVENTID = 2 EMIT CHANGES LIMIT 1;",
    );
    assert_eq!(cast[0][0].as_f64().unwrap(), a1);

    // ANOMALY_SCORE(ARRAY<DOUBLE>): the same readings as an array score the same.
    ksql(
        &server,
        "CREATE STREAM readings (id INT, r ARRAY<DOUBLE>) WITH (kafka_topic='readings', value_format='JSON', partitions=1);",
    );
    let array: Vec<String> = readings.iter().map(|v| format!("{v:.2}")).collect();
    ksql(
        &server,
        &format!(
            "INSERT INTO readings (id, r) VALUES (1, ARRAY[{}]);",
            array.join(", ")
        ),
    );
    ksql(
        &server,
        "INSERT INTO readings (id, r) VALUES (2, ARRAY[1.0, 2.0]);",
    );
    let by_array = rows(
        &server,
        "SELECT id, ANOMALY_SCORE(r) AS s FROM readings EMIT CHANGES LIMIT 2;",
    );
    assert_eq!(by_array[0][1].as_f64().unwrap(), a0, "{by_array:?}");
    assert_eq!(by_array[1], json!([2, null]), "too few readings: NULL");

    // The bad rows are in the processing log, with why (a persistent query's batch).
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; CREATE STREAM scored AS SELECT EVENTID, ANOMALY(SENSORINPUT) AS A FROM CARSENSOR;",
    );
    let logged = rows(
        &server,
        "SELECT MESSAGE FROM KSQL_PROCESSING_LOG EMIT CHANGES LIMIT 2;",
    );
    let text = format!("{logged:?}");
    assert!(
        text.contains("ANOMALY: reading 3 is not a number: 'oops'"),
        "{text}"
    );
    assert!(
        text.contains("ANOMALY: 2 readings, the model takes 210"),
        "{text}"
    );
    assert_eq!(
        rows(&server, "SELECT EVENTID FROM scored EMIT CHANGES LIMIT 4;"),
        [json!([99999]), json!([2]), json!([3]), json!([4])],
        "the batch went on"
    );
    server.shutdown().unwrap();
}
