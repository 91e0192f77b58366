//! Persistent queries run on a pool of workers, each query under its own lock: one stuck
//! in a slow step (here a source read that takes seconds) holds up neither statements,
//! nor the other persistent queries, nor push queries.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Faulty;
use weir_engine::{Engine, Outcome, PushEvent, Runtime};
use weir_log::{Log, Record};

#[test]
fn a_query_stuck_in_a_step_holds_up_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Faulty::open(dir.path()));
    let mut engine = Engine::open(log.clone()).unwrap();
    engine
        .execute_sql(
            "CREATE STREAM slow_in (k VARCHAR KEY, n INT) WITH (kafka_topic='slow_in', value_format='JSON', partitions=1);
             CREATE STREAM fast_in (k VARCHAR KEY, n INT) WITH (kafka_topic='fast_in', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE STREAM slow_out AS SELECT k, n FROM slow_in;
             CREATE STREAM fast_out AS SELECT k, n + 1 AS m FROM fast_in;",
        )
        .unwrap();
    // Every read of slow_in takes 3 s: the worker stepping its query is stuck that long.
    let stuck = Duration::from_secs(3);
    log.slow_reads("slow_in", stuck);
    let runtime = Runtime::start_with(engine, 2);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();

    // A statement does not wait for the stuck step.
    let shown = format!("{:?}", runtime.execute_sql("SHOW QUERIES;").unwrap());
    assert!(shown.contains("CSAS_SLOW_OUT"), "{shown}");
    let statement = started.elapsed();

    // A push query on another stream gets a row appended now.
    let handle = match runtime
        .execute_sql("SELECT k, n FROM fast_in EMIT CHANGES;")
        .unwrap()
        .pop()
    {
        Some(Outcome::Push(h)) => h,
        other => panic!("not a push query: {other:?}"),
    };
    log.produce("fast_in", Record::new(Some(b"a"), Some(br#"{"N":1}"#), 1))
        .unwrap();
    match handle.rows.recv_timeout(stuck) {
        Ok(PushEvent::Row(_)) => {}
        other => panic!("no push row while a query was stuck: {other:?}"),
    }
    let pushed = started.elapsed();

    // The other persistent query writes its output.
    while log.offsets("FAST_OUT", 0).unwrap().1 < 1 {
        assert!(
            started.elapsed() < stuck,
            "FAST_OUT got nothing while a query was stuck"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = started.elapsed();
    // All of it long before the stuck step could have ended (3 s after it began).
    assert!(
        written < Duration::from_millis(2000),
        "statement {statement:?}, push row {pushed:?}, other query's output {written:?}"
    );
    log.heal();
    runtime.shutdown().unwrap();
}

/// Push queries are stepped under their own locks too: one stuck in a slow read holds up
/// neither statements, nor another push query, nor the persistent queries.
#[test]
fn a_push_query_stuck_in_a_step_holds_up_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Faulty::open(dir.path()));
    let mut engine = Engine::open(log.clone()).unwrap();
    engine
        .execute_sql(
            "CREATE STREAM slow_in (k VARCHAR KEY, n INT) WITH (kafka_topic='slow_in', value_format='JSON', partitions=1);
             CREATE STREAM fast_in (k VARCHAR KEY, n INT) WITH (kafka_topic='fast_in', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE STREAM fast_out AS SELECT k, n + 1 AS m FROM fast_in;",
        )
        .unwrap();
    let runtime = Runtime::start_with(engine, 2);
    let push = |sql: &str| match runtime.execute_sql(sql).unwrap().pop() {
        Some(Outcome::Push(h)) => h,
        other => panic!("not a push query: {other:?}"),
    };
    // Every read of slow_in takes 3 s: the worker stepping its push query is stuck.
    let stuck = Duration::from_secs(3);
    let _slow = push("SELECT k, n FROM slow_in EMIT CHANGES;");
    log.slow_reads("slow_in", stuck);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();

    let shown = format!("{:?}", runtime.execute_sql("SHOW QUERIES;").unwrap());
    assert!(shown.contains("CSAS_FAST_OUT"), "{shown}");
    let statement = started.elapsed();

    let fast = push("SELECT k, n FROM fast_in EMIT CHANGES;");
    log.produce("fast_in", Record::new(Some(b"a"), Some(br#"{"N":1}"#), 1))
        .unwrap();
    match fast.rows.recv_timeout(stuck) {
        Ok(PushEvent::Row(_)) => {}
        other => panic!("no push row while a push query was stuck: {other:?}"),
    }
    let pushed = started.elapsed();
    while log.offsets("FAST_OUT", 0).unwrap().1 < 1 {
        assert!(started.elapsed() < stuck, "FAST_OUT got nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = started.elapsed();
    assert!(
        statement < Duration::from_millis(500) && written < Duration::from_millis(2000),
        "statement {statement:?}, push row {pushed:?}, persistent query's output {written:?}"
    );
    log.heal();
    runtime.shutdown().unwrap();
}
