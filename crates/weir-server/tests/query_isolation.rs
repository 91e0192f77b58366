//! One persistent query that cannot write its output does not hold up the rest: it shows
//! ERROR with why (SHOW QUERIES, EXPLAIN, `/metrics`), while other persistent queries,
//! push queries, statements and `/healthcheck` go on as before.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_query_that_cannot_write_goes_to_error_and_the_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    // A long backoff: the failing query stays in ERROR for the whole test.
    let server = start(
        dir.path(),
        &[
            ("ksql.query.retry.backoff.initial.ms", "600000"),
            ("auto.offset.reset", "earliest"),
        ],
    );
    ksql(
        &server,
        "CREATE STREAM big (k VARCHAR KEY, v VARCHAR) WITH (kafka_topic='big', value_format='JSON', partitions=1);
         CREATE TABLE lists AS SELECT k, COLLECT_LIST(v) AS vs FROM big GROUP BY k;
         CREATE STREAM small (k VARCHAR KEY, n INT) WITH (kafka_topic='small', value_format='JSON', partitions=1);
         CREATE STREAM small_out AS SELECT k, n + 1 AS m FROM small;",
    );
    // Six values of 1.5 MB under one key: the sixth list outgrows the log's 8 MiB limit.
    let v = "x".repeat(1_500_000);
    for _ in 0..6 {
        ksql(
            &server,
            &format!("INSERT INTO big (k, v) VALUES ('one', '{v}');"),
        );
    }
    let failed = wait_for_query_state(&server, "LISTS", "ERROR", Duration::from_secs(30));
    let id = failed["id"].as_str().unwrap().to_string();
    let explained = ksql(&server, &format!("EXPLAIN {id};"));
    let message = explained[0]["queryDescription"]["queryErrors"][0]["errorMessage"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("record too large"), "{message}");

    // Everything else goes on: statements, the other persistent query, push queries.
    ksql(
        &server,
        "INSERT INTO small (k, n) VALUES ('a', 1); INSERT INTO small (k, n) VALUES ('b', 2); INSERT INTO small (k, n) VALUES ('c', 3);",
    );
    let out = rows(&server, "SELECT k, m FROM small_out EMIT CHANGES LIMIT 3;");
    assert_eq!(
        out,
        [
            serde_json::json!(["a", 2]),
            serde_json::json!(["b", 3]),
            serde_json::json!(["c", 4])
        ]
    );
    let (status, health) = get(&server, "/healthcheck");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["isHealthy"], true, "{health}");
    let (_, metrics) = get(&server, "/metrics");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains(&format!(
            "weir_query_state{{query=\"{id}\",state=\"ERROR\"}} 1"
        )),
        "{metrics}"
    );
    let others: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_query_state{") && !l.contains(&id))
        .collect();
    assert!(
        !others.is_empty() && others.iter().all(|l| l.contains("state=\"RUNNING\"")),
        "{others:?}"
    );
}
