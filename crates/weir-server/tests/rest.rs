//! The REST API as a ksqlDB client sees it: entities, errors and status codes, push queries
//! over `/query` and `/query-stream`, `/close-query`, authentication, restart.

mod common;

use std::io::Write;

use common::*;
use serde_json::{Value, json};

const CREATE: &str = "CREATE STREAM pageviews (id BIGINT KEY, page STRING, ms INT) \
    WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);";

#[test]
fn ksql_runs_statements_and_answers_ksqldb_entities() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);

    let created = ksql(&server, CREATE);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["@type"], "currentStatus");
    assert_eq!(created[0]["commandId"], "stream/`PAGEVIEWS`/create");
    assert_eq!(created[0]["commandStatus"]["status"], "SUCCESS");
    assert_eq!(created[0]["commandStatus"]["message"], "Stream created");
    assert!(created[0]["commandSequenceNumber"].as_u64().is_some());

    // INSERT VALUES and SET answer no entity; the rest one each, in order.
    let entities = ksql(
        &server,
        "INSERT INTO pageviews (id, page, ms) VALUES (1, 'home', 10); \
         SET 'auto.offset.reset'='earliest'; SHOW STREAMS; LIST TOPICS; DESCRIBE pageviews;",
    );
    let types: Vec<&str> = entities
        .iter()
        .map(|e| e["@type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["streams", "kafka_topics", "sourceDescription"]);
    let streams = entities[0]["streams"].as_array().unwrap();
    let pv = streams
        .iter()
        .find(|s| s["name"] == "PAGEVIEWS")
        .expect("listed");
    assert_eq!(pv["topic"], "pageviews");
    assert_eq!(pv["valueFormat"], "JSON");
    assert_eq!(pv["type"], "STREAM");
    assert!(
        entities[1]["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "pageviews")
    );
    let d = &entities[2]["sourceDescription"];
    assert_eq!(d["name"], "PAGEVIEWS");
    assert_eq!(
        d["fields"][0],
        json!({"name": "ID", "schema": {"type": "BIGINT", "fields": null, "memberSchema": null}, "type": "KEY"})
    );
    assert_eq!(d["fields"][1]["schema"]["type"], "STRING");
    assert_eq!(d["fields"][2]["schema"]["type"], "INTEGER");
    assert_eq!(entities[2]["statementText"], "DESCRIBE pageviews;");

    // A bad statement: 400, statement_error 40001, with what ran before it.
    let (status, body) = post(
        &server,
        "/ksql",
        &json!({"ksql": "SHOW STREAMS; DESCRIBE nosuch; SHOW TOPICS;"}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["@type"], "statement_error");
    assert_eq!(body["error_code"], 40001);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("nosuch"),
        "{body}"
    );
    assert_eq!(body["statementText"], "DESCRIBE nosuch;");
    assert_eq!(body["entities"].as_array().unwrap().len(), 1);

    // A syntax error is a statement error too.
    let (status, body) = post(&server, "/ksql", &json!({"ksql": "CREATE STREAM (;"}));
    assert_eq!(
        (status, body["error_code"].clone()),
        (400, json!(40001)),
        "{body}"
    );

    // SELECT and PRINT belong to /query: 40002.
    let (status, body) = post(
        &server,
        "/ksql",
        &json!({"ksql": "SELECT * FROM pageviews EMIT CHANGES;"}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], 40002);

    // Not JSON at all: 40000.
    let response = agent()
        .post(url(&server, "/ksql"))
        .send("{not json")
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body["@type"], "generic_error");
    assert_eq!(body["error_code"], 40000);

    let (status, info) = get(&server, "/info");
    assert_eq!(status, 200);
    assert_eq!(info["KsqlServerInfo"]["serverStatus"], "RUNNING");
    assert!(info["KsqlServerInfo"]["version"].as_str().is_some());
    assert_eq!(info["KsqlServerInfo"]["ksqlServiceId"], "default_");
    let (status, health) = get(&server, "/healthcheck");
    assert_eq!((status, health["isHealthy"].clone()), (200, json!(true)));
    let (status, s) = get(&server, "/status/stream/PAGEVIEWS/create");
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["status"], "SUCCESS");
    assert_eq!(get(&server, "/status/stream/NOPE/create").0, 404);
    assert_eq!(
        get(&server, "/is_valid_property/auto.offset.reset"),
        (200, json!(true))
    );
    assert_eq!(get(&server, "/is_valid_property/bogus").0, 400);
    // Unknown keys in Weir's and ksqlDB's namespaces are not valid; plugin config is.
    assert_eq!(
        get(&server, "/is_valid_property/weir.agregate.coalesce"),
        (200, json!(false))
    );
    assert_eq!(
        get(&server, "/is_valid_property/weir.functions.anomaly.model"),
        (200, json!(true))
    );
    assert_eq!(get(&server, "/no/such/route"), (404, json!("Not Found")));
    server.shutdown().unwrap();
}

/// A misspelt property, in `streamsProperties` or a SET, is a warning on the entities
/// after it, naming the key the user probably meant; the statements still run.
#[test]
fn unknown_request_properties_are_warned_about_with_the_nearest_known_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let (status, entities) = post(
        &server,
        "/ksql",
        &json!({"ksql": CREATE, "streamsProperties": {"auto.ofset.reset": "earliest"}}),
    );
    assert_eq!(status, 200, "{entities}");
    assert_eq!(
        entities[0]["warnings"],
        json!([{"message": "unknown property 'auto.ofset.reset' is ignored: did you mean 'auto.offset.reset'?"}])
    );
    let (status, entities) = post(
        &server,
        "/ksql",
        &json!({"ksql": "SHOW STREAMS; SET 'weir.agregate.coalesce'='true'; SHOW STREAMS;",
                "streamsProperties": {}}),
    );
    assert_eq!(status, 200, "{entities}");
    assert_eq!(entities[0]["warnings"], json!([]));
    let warnings = entities[1]["warnings"].to_string();
    assert!(
        warnings.contains("did you mean 'weir.aggregate.coalesce'?"),
        "{warnings}"
    );
    server.shutdown().unwrap();
}

#[test]
fn push_queries_stream_over_query_stream_and_the_old_query_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, CREATE);
    ksql(
        &server,
        "INSERT INTO pageviews (id, page, ms) VALUES (1, 'home', 10); \
         INSERT INTO pageviews (id, page, ms) VALUES (2, 'cart', 20); \
         INSERT INTO pageviews (id, page, ms) VALUES (3, 'pay', 30);",
    );
    let earliest = json!({"auto.offset.reset": "earliest"});

    // New API, delimited: a header, then a JSON array per row; LIMIT ends it.
    let (status, body) = post(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT id, UCASE(page) AS p FROM pageviews WHERE ms > 10 EMIT CHANGES LIMIT 2;", "properties": earliest}),
    );
    assert_eq!(status, 200);
    let text = body.as_str().expect("not one JSON value").to_string();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0]["queryId"]
            .as_str()
            .unwrap()
            .starts_with("transient_")
    );
    assert_eq!(lines[0]["columnNames"], json!(["ID", "P"]));
    assert_eq!(lines[0]["columnTypes"], json!(["BIGINT", "STRING"]));
    assert_eq!(lines[1], json!([2, "CART"]));
    assert_eq!(lines[2], json!([3, "PAY"]));

    // New API, application/json: one JSON array.
    let response = agent()
        .post(url(&server, "/query-stream"))
        .header("Accept", "application/json")
        .send(json!({"sql": "SELECT page FROM pageviews EMIT CHANGES LIMIT 1;", "properties": earliest}).to_string())
        .unwrap();
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body[0]["columnNames"], json!(["PAGE"]));
    assert_eq!(body[1], json!(["home"]));
    assert_eq!(body.as_array().unwrap().len(), 2);

    // Old API: a JSON array, one element per line, closed with the final message.
    let (status, body) = post(
        &server,
        "/query",
        &json!({"ksql": "SELECT page, ms FROM pageviews EMIT CHANGES LIMIT 2;", "streamsProperties": {"ksql.streams.auto.offset.reset": "earliest"}}),
    );
    assert_eq!(status, 200);
    let elements = body.as_array().expect("one JSON array");
    assert_eq!(
        elements[0]["header"]["schema"],
        "`PAGE` STRING, `MS` INTEGER"
    );
    assert_eq!(elements[1], json!({"row": {"columns": ["home", 10]}}));
    assert_eq!(elements[2], json!({"row": {"columns": ["cart", 20]}}));
    assert_eq!(elements[3], json!({"finalMessage": "Limit Reached"}));

    // A statement that is not a query is refused before any header.
    let (status, body) = post(&server, "/query-stream", &json!({"sql": "SHOW STREAMS;"}));
    assert_eq!((status, body["error_code"].clone()), (400, json!(40001)));
    let (status, body) = post(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT * FROM nosuch EMIT CHANGES;"}),
    );
    assert_eq!(status, 400, "{body}");
    server.shutdown().unwrap();
}

#[test]
fn close_query_ends_a_running_push_query_and_new_rows_reach_it_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, CREATE);
    let mut stream = open_query_stream(
        &server,
        "SELECT page FROM pageviews EMIT CHANGES;",
        json!({}),
    );
    let header: Value = serde_json::from_str(&stream.next_line().unwrap()).unwrap();
    let id = header["queryId"].as_str().unwrap().to_string();

    // Appended after the query started: it arrives (the query reads from the end).
    ksql(
        &server,
        "INSERT INTO pageviews (id, page, ms) VALUES (9, 'late', 1);",
    );
    assert_eq!(stream.next_line().as_deref(), Some("[\"late\"]"));
    let listed = ksql(&server, "SHOW QUERIES;");
    assert!(
        listed[0]["queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["id"] == id.as_str())
    );

    let (status, _) = post(&server, "/close-query", &json!({"queryId": id}));
    assert_eq!(status, 200);
    assert_eq!(stream.next_line(), None, "the stream ends once closed");
    let listed = ksql(&server, "SHOW QUERIES;");
    assert!(
        !listed[0]["queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["id"] == id.as_str())
    );

    let (status, body) = post(&server, "/close-query", &json!({"queryId": id}));
    assert_eq!((status, body["error_code"].clone()), (400, json!(40000)));
    server.shutdown().unwrap();
}

#[test]
fn inserts_stream_needs_http2() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, CREATE);
    let (status, body) = post(&server, "/inserts-stream", &json!({"target": "PAGEVIEWS"}));
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], 40004);
    server.shutdown().unwrap();
}

#[test]
fn without_valid_credentials_requests_get_401_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    std::fs::File::create(&users)
        .unwrap()
        .write_all(b"# who may use the server\nalice: wonderland\n")
        .unwrap();
    let server = start_with(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        users_file: Some(users),
        ..Default::default()
    });
    let (status, body) = post(&server, "/ksql", &json!({"ksql": CREATE}));
    assert_eq!(status, 401);
    assert_eq!(body["error_code"], 40100);
    let wrong = agent()
        .post(url(&server, "/ksql"))
        .header("Authorization", "Basic YWxpY2U6bm9wZQ==") // alice:nope
        .send(json!({"ksql": CREATE}).to_string())
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("www-authenticate").is_some());

    let ok = agent()
        .post(url(&server, "/ksql"))
        .header("Authorization", "Basic YWxpY2U6d29uZGVybGFuZA==") // alice:wonderland
        .send(json!({"ksql": "SHOW STREAMS;"}).to_string())
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&ok.into_body().read_to_string().unwrap()).unwrap();
    let names: Vec<&str> = body[0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"PAGEVIEWS"),
        "a refused request created a stream: {names:?}"
    );
    assert_eq!(
        get(&server, "/chc/live").0,
        200,
        "liveness needs no credentials"
    );
    server.shutdown().unwrap();
}

#[test]
fn a_restarted_server_has_its_streams_and_queries_and_their_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    ksql(&server, CREATE);
    ksql(
        &server,
        "CREATE STREAM carts AS SELECT id, page FROM pageviews WHERE page = 'cart' EMIT CHANGES;",
    );
    ksql(
        &server,
        "INSERT INTO pageviews (id, page, ms) VALUES (1, 'home', 10); \
         INSERT INTO pageviews (id, page, ms) VALUES (2, 'cart', 20);",
    );
    server.shutdown().unwrap();

    let server = start(dir.path(), &[]);
    let entities = ksql(&server, "SHOW STREAMS; SHOW QUERIES;");
    let streams: Vec<&str> = entities[0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        streams.contains(&"PAGEVIEWS") && streams.contains(&"CARTS"),
        "{streams:?}"
    );
    assert!(
        entities[1]["queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["queryType"] == "PERSISTENT" && q["sinks"] == json!(["CARTS"]))
    );
    ksql(
        &server,
        "INSERT INTO pageviews (id, page, ms) VALUES (3, 'cart', 30);",
    );
    let (_, body) = post(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT id, page FROM carts EMIT CHANGES LIMIT 2;", "properties": {"auto.offset.reset": "earliest"}}),
    );
    let rows: Vec<&str> = body
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .lines()
        .skip(1)
        .collect();
    assert_eq!(rows, [r#"[2,"cart"]"#, r#"[3,"cart"]"#]);
    server.shutdown().unwrap();
}

/// Variables as ksqlDB has them: `sessionVariables` on `/ksql` and `/query-stream`,
/// DEFINE/UNDEFINE for the rest of a request, SHOW VARIABLES, and the error that names
/// one not defined.
#[test]
fn variables_from_the_request_and_from_define_are_substituted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    // From the request, and DEFINEd within it; DEFINE and UNDEFINE answer no entity.
    let (status, body) = post(
        &server,
        "/ksql",
        &json!({
            "ksql": "DEFINE name = 'VARVIEWS'; \
                     CREATE STREAM ${name} (id BIGINT KEY, page STRING) \
                       WITH (kafka_topic='${topic}', value_format='JSON', partitions=${parts}); \
                     INSERT INTO ${name} (id, page) VALUES (1, '${page}'); \
                     UNDEFINE topic; SHOW VARIABLES;",
            "sessionVariables": {"topic": "var_topic", "parts": 1, "page": "home"}
        }),
    );
    assert_eq!(status, 200, "{body}");
    let entities = body.as_array().unwrap();
    assert_eq!(entities.len(), 2, "{body}");
    assert_eq!(entities[0]["commandStatus"]["message"], "Stream created");
    assert!(
        entities[0]["statementText"]
            .as_str()
            .unwrap()
            .contains("kafka_topic='var_topic'"),
        "{body}"
    );
    assert_eq!(entities[1]["@type"], "variables");
    assert_eq!(
        entities[1]["variables"],
        json!([
            {"name": "NAME", "value": "VARVIEWS"},
            {"name": "PAGE", "value": "home"},
            {"name": "PARTS", "value": "1"},
        ])
    );
    let described = ksql(&server, "DESCRIBE varviews;");
    assert_eq!(described[0]["sourceDescription"]["topic"], "var_topic");
    // Request-scoped: the next request has none of them.
    let (status, body) = post(&server, "/ksql", &json!({"ksql": "DESCRIBE ${name};"}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Variable 'NAME' is not defined"),
        "{body}"
    );
    // /query-stream substitutes its own sessionVariables.
    let (status, body) = post(
        &server,
        "/query-stream",
        &json!({
            "sql": "SELECT page FROM ${source} WHERE page = '${page}' EMIT CHANGES LIMIT 1;",
            "properties": {"auto.offset.reset": "earliest"},
            "sessionVariables": {"source": "varviews", "page": "home"}
        }),
    );
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().unwrap().to_string();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1], json!(["home"]), "{text}");
    server.shutdown().unwrap();
}
