//! What users see from SHOW/LIST, DESCRIBE, EXPLAIN, push queries and PRINT, with the
//! engine running continuously.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use weir_engine::meta::Listing;
use weir_engine::{Engine, Outcome, PushEvent, PushHandle, Runtime};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Record};

fn runtime() -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    (dir, Runtime::start(Engine::new(Arc::new(log))))
}

fn produce(rt: &Runtime, topic: &str, value: &str) {
    rt.engine()
        .log()
        .produce(topic, Record::new(None, Some(value.as_bytes()), 1_000))
        .unwrap();
}

fn one(rt: &Runtime, sql: &str) -> Outcome {
    rt.execute_sql(sql).unwrap().pop().unwrap()
}

fn push(rt: &Runtime, sql: &str) -> PushHandle {
    match one(rt, sql) {
        Outcome::Push(h) => h,
        other => panic!("not a push query: {other:?}"),
    }
}

fn next(h: &PushHandle) -> PushEvent {
    h.rows
        .recv_timeout(Duration::from_secs(10))
        .expect("a row within 10 s")
}

const SETUP: &str = "CREATE STREAM CARS (ID INT KEY, SPEED DOUBLE, NAME STRING) WITH (kafka_topic='cars', value_format='JSON', partitions=2);
     CREATE STREAM FAST AS SELECT ID, SPEED, NAME FROM CARS WHERE SPEED > 50;";

#[test]
fn show_describe_and_explain_report_the_catalog() {
    let (_d, rt) = runtime();
    rt.execute_sql(SETUP).unwrap();
    let Outcome::Listing(Listing::Streams(streams)) = one(&rt, "SHOW STREAMS;") else {
        panic!()
    };
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["CARS", "FAST", "KSQL_PROCESSING_LOG"]);
    assert_eq!(streams[0].value_format, "JSON");
    let Outcome::Listing(Listing::Topics(topics)) = one(&rt, "LIST TOPICS;") else {
        panic!()
    };
    let cars = topics.iter().find(|t| t.name == "cars").unwrap();
    assert_eq!(cars.partitions, 2);
    assert!(topics.iter().all(|t| !t.name.starts_with("_weir")));
    let Outcome::Listing(Listing::Queries(queries)) = one(&rt, "SHOW QUERIES;") else {
        panic!()
    };
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].sinks, ["FAST"]);

    produce(&rt, "cars", r#"{"SPEED": 80.0, "NAME": "a"}"#);
    produce(&rt, "cars", r#"{"SPEED": 20.0, "NAME": "b"}"#);
    produce(&rt, "cars", r#"{"SPEED": "fast", "NAME": "c"}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    let description = loop {
        let Outcome::Described(mut d) = one(&rt, "DESCRIBE FAST EXTENDED;") else {
            panic!()
        };
        let d = d.remove(0);
        let stats = d.statistics.unwrap();
        if stats.consumed == 3 || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stats = description.statistics.unwrap();
    assert_eq!((stats.consumed, stats.produced, stats.errors), (3, 1, 1));
    let fields: Vec<(String, String, Option<String>)> = description
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.ty.clone(), f.key.clone()))
        .collect();
    assert_eq!(
        fields,
        [
            ("ID".into(), "INTEGER".into(), Some("KEY".into())),
            ("SPEED".into(), "DOUBLE".into(), None),
            ("NAME".into(), "STRING".into(), None)
        ]
    );
    assert_eq!(description.write_queries.len(), 1);

    let Outcome::Explained(plan) = one(&rt, &format!("EXPLAIN {};", queries[0].id)) else {
        panic!()
    };
    assert!(
        plan.execution_plan.contains("Filter"),
        "{}",
        plan.execution_plan
    );
    assert!(plan.execution_plan.contains("Sink: topic 'FAST'"));

    let Outcome::Listing(Listing::Functions(functions)) = one(&rt, "SHOW FUNCTIONS;") else {
        panic!()
    };
    for f in [
        "UCASE",
        "GEO_DISTANCE",
        "STRINGTOTIMESTAMP",
        "URL_EXTRACT_HOST",
    ] {
        assert!(functions.iter().any(|x| x.name == f), "{f} missing");
    }
    assert!(rt.execute_sql("DESCRIBE NOPE;").is_err());
}

#[test]
fn push_queries_stream_rows_until_their_limit() {
    let (_d, rt) = runtime();
    rt.execute_sql(SETUP).unwrap();
    let h = push(
        &rt,
        "SELECT NAME, SPEED * 2 AS DOUBLED FROM CARS WHERE SPEED > 10 EMIT CHANGES LIMIT 2;",
    );
    assert_eq!(
        h.columns
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>(),
        ["NAME STRING", "DOUBLED DOUBLE"]
    );
    produce(&rt, "cars", r#"{"SPEED": 5.0, "NAME": "slow"}"#);
    produce(&rt, "cars", r#"{"SPEED": 30.0, "NAME": "a"}"#);
    assert_eq!(next(&h), PushEvent::Row(vec![json!("a"), json!(60.0)]));
    produce(&rt, "cars", r#"{"SPEED": 40.0, "NAME": "b"}"#);
    produce(&rt, "cars", r#"{"SPEED": 50.0, "NAME": "c"}"#);
    assert_eq!(next(&h), PushEvent::Row(vec![json!("b"), json!(80.0)]));
    assert_eq!(next(&h), PushEvent::End(None));
    assert!(!rt.engine().has_push_query(&h.query_id));
}

#[test]
fn a_push_query_starts_at_the_end_unless_earliest_is_set() {
    let (_d, rt) = runtime();
    rt.execute_sql(SETUP).unwrap();
    produce(&rt, "cars", r#"{"SPEED": 60.0, "NAME": "old"}"#);
    let latest = push(&rt, "SELECT NAME FROM CARS EMIT CHANGES;");
    rt.execute_sql("SET 'auto.offset.reset' = 'earliest';")
        .unwrap();
    let earliest = push(&rt, "SELECT NAME FROM CARS EMIT CHANGES;");
    assert_eq!(next(&earliest), PushEvent::Row(vec![json!("old")]));
    produce(&rt, "cars", r#"{"SPEED": 60.0, "NAME": "new"}"#);
    assert_eq!(next(&latest), PushEvent::Row(vec![json!("new")]));
    assert_eq!(next(&earliest), PushEvent::Row(vec![json!("new")]));
}

#[test]
fn a_client_that_leaves_ends_its_query_and_others_carry_on() {
    let (_d, rt) = runtime();
    rt.execute_sql(SETUP).unwrap();
    let gone = push(&rt, "SELECT NAME FROM CARS EMIT CHANGES;");
    let stays = push(&rt, "SELECT NAME FROM CARS EMIT CHANGES;");
    let gone_id = gone.query_id.clone();
    drop(gone);
    produce(&rt, "cars", r#"{"SPEED": 60.0, "NAME": "x"}"#);
    assert_eq!(next(&stays), PushEvent::Row(vec![json!("x")]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.engine().has_push_query(&gone_id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!rt.engine().has_push_query(&gone_id));
    assert!(rt.engine().has_push_query(&stays.query_id));
}

#[test]
fn a_client_that_falls_too_far_behind_is_told_and_dropped() {
    let (_d, rt) = runtime();
    rt.execute_sql(SETUP).unwrap();
    let slow = push(&rt, "SELECT NAME FROM CARS EMIT CHANGES;");
    let n = weir_engine::push::CLIENT_BUFFER_ROWS + 10;
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(None, Some(format!(r#"{{"NAME": "n{i}"}}"#).as_bytes()), 1))
        .collect();
    rt.engine().log().append("cars", 0, &records).unwrap();
    // The persistent query keeps up regardless.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.engine().has_push_query(&slow.query_id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!rt.engine().has_push_query(&slow.query_id));
    let mut rows = 0;
    let mut end = None;
    while let Ok(e) = slow.rows.try_recv() {
        match e {
            PushEvent::Row(_) => rows += 1,
            PushEvent::End(why) => end = Some(why),
        }
    }
    assert_eq!(rows, weir_engine::push::CLIENT_BUFFER_ROWS);
    // The last thing in the buffer says why.
    let why = end.expect("an end message").expect("a reason");
    assert!(why.contains("fell more than 10000 rows behind"), "{why}");
}

#[test]
fn print_shows_records_from_the_beginning() {
    let (_d, rt) = runtime();
    rt.execute_sql(SETUP).unwrap();
    produce(&rt, "cars", r#"{"SPEED": 1.0}"#);
    produce(&rt, "cars", r#"{"SPEED": 2.0}"#);
    let h = push(&rt, "PRINT 'cars' FROM BEGINNING LIMIT 2;");
    let PushEvent::Row(first) = next(&h) else {
        panic!()
    };
    let line = first[0].as_str().unwrap().to_string();
    assert!(
        line.starts_with(
            "rowtime: 1970/01/01 00:00:01.000 Z, key: <null>, value: {\"SPEED\": 1.0}"
        ),
        "{line}"
    );
    assert!(matches!(next(&h), PushEvent::Row(_)));
    assert_eq!(next(&h), PushEvent::End(None));
    assert!(rt.execute_sql("PRINT nosuchtopic;").is_err());
}

#[test]
fn the_processing_log_is_a_stream_users_can_query() {
    let (_d, rt) = runtime();
    rt.execute_sql(SETUP).unwrap();
    let h = push(
        &rt,
        "SELECT TOPIC, `OFFSET`, MESSAGE FROM KSQL_PROCESSING_LOG EMIT CHANGES LIMIT 1;",
    );
    produce(&rt, "cars", r#"{"SPEED": "not a number"}"#);
    let PushEvent::Row(row) = next(&h) else {
        panic!()
    };
    assert_eq!(row[0], json!("cars"));
    assert_eq!(row[1], json!(0));
    assert!(row[2].as_str().unwrap().contains("SPEED"), "{row:?}");
    assert!(
        rt.execute_sql("INSERT INTO KSQL_PROCESSING_LOG (MESSAGE) VALUES ('forged');")
            .is_err()
    );
}

/// A push query whose expression fails on a row skips it, and says why in the processing
/// log under its own id (its client, seeing nothing, can look there); the rows around
/// it still come.
#[test]
fn a_push_querys_failing_rows_are_in_the_processing_log_under_its_id() {
    let (_d, rt) = runtime();
    // (No persistent query over the stream: its entries would be there too.)
    rt.execute_sql("CREATE STREAM CARS (ID INT KEY, SPEED DOUBLE) WITH (kafka_topic='cars', value_format='JSON', partitions=1);")
        .unwrap();
    let log = push(
        &rt,
        "SELECT QUERY_ID, MESSAGE FROM KSQL_PROCESSING_LOG EMIT CHANGES LIMIT 1;",
    );
    let h = push(&rt, "SELECT SPEED FROM CARS EMIT CHANGES;");
    produce(&rt, "cars", r#"{"SPEED": "seven"}"#);
    produce(&rt, "cars", r#"{"SPEED": 8}"#);
    let PushEvent::Row(row) = next(&h) else {
        panic!()
    };
    assert_eq!(row[0], json!(8.0));
    let PushEvent::Row(entry) = next(&log) else {
        panic!()
    };
    assert_eq!(entry[0].as_str(), Some(h.query_id.as_str()), "{entry:?}");
    assert!(entry[1].as_str().unwrap().contains("SPEED"), "{entry:?}");
}

#[test]
fn explain_of_a_windowed_join_aggregate_names_both_sources_its_window_and_its_sink() {
    let (_dir, rt) = runtime();
    for sql in [
        "CREATE STREAM s (k STRING KEY, v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
        "CREATE TABLE t (id STRING PRIMARY KEY, g STRING) WITH (kafka_topic='t', value_format='JSON', partitions=1);",
        "CREATE TABLE agg AS SELECT s.k, COUNT(*) AS n FROM s JOIN t ON s.k = t.id WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 5 SECONDS) GROUP BY s.k;",
    ] {
        one(&rt, sql);
    }
    let Outcome::Listing(Listing::Queries(queries)) = one(&rt, "SHOW QUERIES;") else {
        panic!()
    };
    let Outcome::Explained(plan) = one(&rt, &format!("EXPLAIN {};", queries[0].id)) else {
        panic!()
    };
    assert_eq!(plan.sources, ["S", "T"]);
    assert_eq!(plan.window_type.as_deref(), Some("HOPPING"));
    let last = plan.execution_plan.lines().last().unwrap();
    assert_eq!(last, "Sink: topic 'AGG'", "{}", plan.execution_plan);
    assert!(
        !plan.execution_plan.contains("the client"),
        "{}",
        plan.execution_plan
    );
}

#[test]
fn explain_prints_the_logical_plan_as_a_tree_in_the_query_s_own_terms() {
    let (_dir, rt) = runtime();
    for sql in [
        "CREATE STREAM s (k STRING KEY, v DOUBLE) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
        "CREATE TABLE per_k AS SELECT k, COUNT(*) AS n, AVG(v) AS mean FROM s WINDOW TUMBLING (SIZE 10 SECONDS) WHERE v > 0 GROUP BY k HAVING COUNT(*) > 1;",
    ] {
        one(&rt, sql);
    }
    let Outcome::Listing(Listing::Queries(queries)) = one(&rt, "SHOW QUERIES;") else {
        panic!()
    };
    let Outcome::Explained(plan) = one(&rt, &format!("EXPLAIN {};", queries[0].id)) else {
        panic!()
    };
    let text = &plan.execution_plan;
    // Root first, each input one level deeper: sink, project, having, aggregate, filter,
    // source.
    let tree: Vec<(usize, &str)> = text
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let depth = (l.len() - l.trim_start().len()) / 2;
            let node = l.trim_start().split(" ]").next().unwrap();
            (depth, node.trim_start_matches("> [ "))
        })
        .collect();
    assert_eq!(
        tree,
        [
            (0, "SINK"),
            (1, "PROJECT"),
            (2, "HAVING"),
            (3, "AGGREGATE"),
            (4, "FILTER"),
            (5, "SOURCE")
        ],
        "{text}"
    );
    // Expressions as the query wrote them, columns with their roles, no internal names.
    assert!(
        text.contains(
            "GROUP BY K WINDOW TUMBLING (SIZE 10 SECONDS) CALLS COUNT(*), AVG(V) EMIT CHANGES"
        ),
        "{text}"
    );
    assert!(
        text.lines().next().unwrap().ends_with(
            "Schema: K STRING KEY, WINDOWSTART BIGINT WINDOW START, WINDOWEND BIGINT WINDOW END, N BIGINT, MEAN DOUBLE"
        ),
        "{text}"
    );
    assert!(text.contains("[ FILTER ] (V > 0)"), "{text}");
    assert!(!text.contains("WEIR_"), "{text}");
    // Then the physical pipeline, ending at the sink.
    assert_eq!(
        text.lines().last().unwrap(),
        "Sink: topic 'PER_K'",
        "{text}"
    );
}

#[test]
fn explain_of_a_statement_plans_it_as_it_would_run_joins_and_aggregations_included() {
    let (_dir, rt) = runtime();
    for sql in [
        "CREATE STREAM s (k STRING KEY, v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
        "CREATE TABLE t (id STRING PRIMARY KEY, g STRING) WITH (kafka_topic='t', value_format='JSON', partitions=1);",
    ] {
        one(&rt, sql);
    }
    let Outcome::Explained(plan) = one(
        &rt,
        "EXPLAIN SELECT k, COUNT(*) AS n FROM s WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY k EMIT CHANGES;",
    ) else {
        panic!()
    };
    assert_eq!(plan.window_type.as_deref(), Some("TUMBLING"));
    assert!(
        plan.execution_plan.starts_with("> [ CLIENT ]"),
        "{}",
        plan.execution_plan
    );
    assert!(
        plan.execution_plan
            .contains("[ AGGREGATE ] GROUP BY K WINDOW TUMBLING (SIZE 1 MINUTES) CALLS COUNT(*)"),
        "{}",
        plan.execution_plan
    );

    let Outcome::Explained(plan) = one(
        &rt,
        "EXPLAIN CREATE STREAM enriched AS SELECT s.k, v, g FROM s JOIN t ON s.k = t.id;",
    ) else {
        panic!()
    };
    assert_eq!(plan.sources, ["S", "T"]);
    assert_eq!(plan.sinks, ["ENRICHED"]);
    let text = &plan.execution_plan;
    assert!(
        text.starts_with("> [ SINK ] STREAM ENRICHED (topic 'ENRICHED')"),
        "{text}"
    );
    assert!(
        text.contains("[ JOIN ] INNER JOIN ON (S.K = T.ID)"),
        "{text}"
    );
    assert_eq!(
        text.lines().last().unwrap(),
        "Sink: topic 'ENRICHED'",
        "{text}"
    );
    // Nothing was created.
    let Outcome::Listing(Listing::Queries(queries)) = one(&rt, "SHOW QUERIES;") else {
        panic!()
    };
    assert!(queries.is_empty());
}
