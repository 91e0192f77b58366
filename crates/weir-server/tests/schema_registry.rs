//! Weir's own schema registry over Confluent's REST API: subjects, versions, schemas by
//! id, lookup, compatibility (checked and configured), deletes, Confluent's error codes;
//! what it holds survives a restart; the schema-registry formats use it (a sink's schema
//! registered under `<topic>-value`, rows written and read back as AVRO).

mod common;

use common::*;
use serde_json::{Value, json};

const V1: &str = r#"{"type":"record","name":"Car","fields":[{"name":"id","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Car","fields":[{"name":"id","type":"string"},{"name":"speed","type":["null","double"],"default":null}]}"#;
const BREAKS: &str = r#"{"type":"record","name":"Car","fields":[{"name":"id","type":"string"},{"name":"gear","type":"int"}]}"#;

fn register(server: &weir_server::Server, subject: &str, schema: &str) -> (u16, Value) {
    post(
        server,
        &format!("/subjects/{subject}/versions"),
        &json!({"schema": schema}),
    )
}

fn send(
    server: &weir_server::Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let agent = agent();
    let response = match (method, body) {
        ("PUT", Some(b)) => agent
            .put(url(server, path))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send(b.to_string()),
        ("DELETE", _) => agent.delete(url(server, path)).call(),
        _ => unreachable!(),
    }
    .expect("request");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn the_registry_api_answers_as_confluents_and_keeps_its_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let (status, body) = register(&server, "cars-value", V1);
    assert_eq!(status, 200, "{body}");
    let v1 = body["id"].as_u64().unwrap();
    // The same schema again: the same id; a compatible change: a new version.
    assert_eq!(register(&server, "cars-value", V1).1["id"], v1);
    let v2 = register(&server, "cars-value", V2).1["id"]
        .as_u64()
        .unwrap();
    assert_ne!(v1, v2);
    assert_eq!(
        get(&server, "/subjects/cars-value/versions").1,
        json!([1, 2])
    );
    let latest = get(&server, "/subjects/cars-value/versions/latest").1;
    assert_eq!(
        (latest["version"].clone(), latest["id"].as_u64()),
        (json!(2), Some(v2))
    );
    assert_eq!(
        get(&server, &format!("/schemas/ids/{v1}")).1["schema"],
        json!(serde_json::from_str::<Value>(V1).unwrap().to_string())
    );
    // An incompatible change is refused with 409; its check says why.
    let (status, body) = register(&server, "cars-value", BREAKS);
    assert_eq!(status, 409, "{body}");
    let (_, check) = post(
        &server,
        "/compatibility/subjects/cars-value/versions/latest",
        &json!({"schema": BREAKS}),
    );
    assert_eq!(check["is_compatible"], false, "{check}");
    // With compatibility off for the subject it is taken.
    let (status, _) = send(
        &server,
        "PUT",
        "/config/cars-value",
        Some(json!({"compatibility": "NONE"})),
    );
    assert_eq!(status, 200);
    assert_eq!(
        get(&server, "/config/cars-value").1["compatibilityLevel"],
        "NONE"
    );
    assert_eq!(get(&server, "/config").1["compatibilityLevel"], "BACKWARD");
    assert_eq!(register(&server, "cars-value", BREAKS).0, 200);
    // Lookup: which version of the subject a schema is.
    let (status, found) = post(&server, "/subjects/cars-value", &json!({"schema": V2}));
    assert_eq!(
        (status, found["version"].clone()),
        (200, json!(2)),
        "{found}"
    );
    // Confluent's error codes.
    let (status, body) = get(&server, "/subjects/nobody-value/versions");
    assert_eq!(
        (status, body["error_code"].clone()),
        (404, json!(40401)),
        "{body}"
    );
    let (status, body) = get(&server, "/schemas/ids/999");
    assert_eq!(
        (status, body["error_code"].clone()),
        (404, json!(40403)),
        "{body}"
    );
    let (status, body) = register(&server, "bad-value", "{not avro");
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, json!(42201)),
        "{body}"
    );
    // A deleted version is gone from the subject; its schema stays readable by id.
    assert_eq!(
        send(&server, "DELETE", "/subjects/cars-value/versions/1", None).1,
        json!(1)
    );
    assert_eq!(
        get(&server, "/subjects/cars-value/versions").1,
        json!([2, 3])
    );
    assert_eq!(get(&server, &format!("/schemas/ids/{v1}")).0, 200);

    // A sink of a schema format registers its schema; rows go through it.
    ksql(
        &server,
        "CREATE STREAM cars (id STRING KEY, speed DOUBLE) \
         WITH (kafka_topic='readings', value_format='AVRO', partitions=1);",
    );
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; \
         CREATE STREAM fast WITH (value_format='PROTOBUF') AS \
         SELECT id, speed * 2 AS double_speed FROM cars WHERE speed > 10;",
    );
    ksql(
        &server,
        "INSERT INTO cars (id, speed) VALUES ('a', 5.0); \
         INSERT INTO cars (id, speed) VALUES ('b', 50.5);",
    );
    let subjects = get(&server, "/subjects").1;
    for s in ["readings-value", "FAST-value"] {
        assert!(
            subjects.as_array().unwrap().contains(&json!(s)),
            "{subjects}"
        );
    }
    let fast = get(&server, "/subjects/FAST-value/versions/latest").1;
    assert_eq!(fast["schemaType"], "PROTOBUF", "{fast}");
    assert!(
        fast["schema"]
            .as_str()
            .unwrap()
            .contains("double DOUBLE_SPEED"),
        "{fast}"
    );
    let got = rows(&server, "SELECT * FROM fast EMIT CHANGES LIMIT 1;");
    assert_eq!(got.len(), 1);
    assert!(got[0].to_string().contains("101"), "{got:?}");
    server.shutdown().unwrap();

    // After a restart: the same subjects, versions and ids; the streams still read.
    let server = start(dir.path(), &[]);
    assert_eq!(
        get(&server, "/subjects/cars-value/versions").1,
        json!([2, 3])
    );
    assert_eq!(get(&server, &format!("/schemas/ids/{v2}")).0, 200);
    ksql(&server, "INSERT INTO cars (id, speed) VALUES ('c', 20.0);");
    let got = rows(&server, "SELECT * FROM fast EMIT CHANGES LIMIT 2;");
    assert_eq!(got.len(), 2, "{got:?}");
    server.shutdown().unwrap();
}

#[test]
fn a_server_uses_an_external_registry_named_by_ksql_schema_registry_url() {
    // Another server's registry stands in for an external one (the same REST API).
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = start(registry_dir.path(), &[]);
    let url = format!("http://{}", registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("ksql.schema.registry.url", url.as_str())]);
    // Its own registry API is off: it says which one it uses.
    let (status, body) = get(&server, "/subjects");
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("ksql.schema.registry.url"),
        "{body}"
    );
    ksql(
        &server,
        "CREATE STREAM cars (id STRING KEY, speed DOUBLE) \
         WITH (kafka_topic='cars', value_format='AVRO', partitions=1);",
    );
    ksql(&server, "INSERT INTO cars (id, speed) VALUES ('a', 12.5);");
    // The schema went to the external registry.
    let latest = get(&registry, "/subjects/cars-value/versions/latest").1;
    assert!(
        latest["schema"].as_str().unwrap().contains("SPEED"),
        "{latest}"
    );
    let got = rows(&server, "SELECT * FROM cars EMIT CHANGES LIMIT 1;");
    assert!(got[0].to_string().contains("12.5"), "{got:?}");
    // The registry goes away: a statement that needs it says so, and changes nothing.
    registry.shutdown().unwrap();
    let (status, body) = post(
        &server,
        "/ksql",
        &json!({"ksql": "CREATE STREAM more WITH (kafka_topic='more', value_format='AVRO', partitions=1);"}),
    );
    assert_ne!(status, 200, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Schema registry unavailable"),
        "{body}"
    );
    let listed = ksql(&server, "SHOW STREAMS;");
    assert!(!listed[0].to_string().contains("MORE"), "{listed:?}");
    server.shutdown().unwrap();
}
