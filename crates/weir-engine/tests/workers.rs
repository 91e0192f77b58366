//! Persistent queries run on a pool of workers, each query under its own lock: one stuck
//! in a slow step (here a source read that takes seconds) holds up neither statements,
//! nor the other persistent queries, nor push queries.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Faulty;
use weir_engine::{Engine, Outcome, PushEvent, Runtime};
use weir_log::{Log, Record};

/// An engine on a log with faults to order: streams SLOW_IN and FAST_IN, a persistent
/// query over FAST_IN (FAST_OUT), then `more`.
fn engine_with(dir: &std::path::Path, more: &str) -> (Arc<Faulty>, Engine) {
    let log = Arc::new(Faulty::open(dir));
    let mut engine = Engine::open(log.clone()).unwrap();
    engine
        .execute_sql(&format!(
            "CREATE STREAM slow_in (k VARCHAR KEY, n INT) WITH (kafka_topic='slow_in', value_format='JSON', partitions=1);
             CREATE STREAM fast_in (k VARCHAR KEY, n INT) WITH (kafka_topic='fast_in', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE STREAM fast_out AS SELECT k, n + 1 AS m FROM fast_in;
             {more}"
        ))
        .unwrap();
    (log, engine)
}

fn push(runtime: &Runtime, sql: &str) -> weir_engine::PushHandle {
    match runtime.execute_sql(sql).unwrap().pop() {
        Some(Outcome::Push(h)) => h,
        other => panic!("not a push query: {other:?}"),
    }
}

/// While something is stuck for `stuck`, the rest goes on: a statement answers, a push
/// query on FAST_IN gets a row appended now, FAST_OUT gets its output. How long after
/// `started` each was done; all of it long before the stuck step could end.
fn the_rest_goes_on(runtime: &Runtime, log: &Faulty, stuck: Duration, started: Instant) {
    let shown = format!("{:?}", runtime.execute_sql("SHOW QUERIES;").unwrap());
    assert!(shown.contains("CSAS_FAST_OUT"), "{shown}");
    let statement = started.elapsed();

    let handle = push(runtime, "SELECT k, n FROM fast_in EMIT CHANGES;");
    log.produce("fast_in", Record::new(Some(b"a"), Some(br#"{"N":1}"#), 1))
        .unwrap();
    match handle.rows.recv_timeout(stuck) {
        Ok(PushEvent::Row(_)) => {}
        other => panic!("no push row while a query was stuck: {other:?}"),
    }
    let pushed = started.elapsed();

    while log.offsets("FAST_OUT", 0).unwrap().1 < 1 {
        assert!(
            started.elapsed() < stuck,
            "FAST_OUT got nothing while a query was stuck"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = started.elapsed();
    assert!(
        statement < Duration::from_millis(500) && written < Duration::from_millis(2000),
        "statement {statement:?}, push row {pushed:?}, other query's output {written:?}"
    );
}

#[test]
fn a_query_stuck_in_a_step_holds_up_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (log, engine) = engine_with(
        dir.path(),
        "CREATE STREAM slow_out AS SELECT k, n FROM slow_in;",
    );
    // Every read of slow_in takes 3 s: the worker stepping its query is stuck that long.
    let stuck = Duration::from_secs(3);
    log.slow_reads("slow_in", stuck);
    let runtime = Runtime::start_with(engine, 2);
    std::thread::sleep(Duration::from_millis(300));
    the_rest_goes_on(&runtime, &log, stuck, Instant::now());
    log.heal();
    runtime.shutdown().unwrap();
}

/// Push queries are stepped under their own locks too: one stuck in a slow read holds up
/// neither statements, nor another push query, nor the persistent queries.
#[test]
fn a_push_query_stuck_in_a_step_holds_up_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (log, engine) = engine_with(dir.path(), "");
    let runtime = Runtime::start_with(engine, 2);
    // Every read of slow_in takes 3 s: the worker stepping its push query is stuck.
    let stuck = Duration::from_secs(3);
    let _slow = push(&runtime, "SELECT k, n FROM slow_in EMIT CHANGES;");
    log.slow_reads("slow_in", stuck);
    std::thread::sleep(Duration::from_millis(300));
    the_rest_goes_on(&runtime, &log, stuck, Instant::now());
    log.heal();
    runtime.shutdown().unwrap();
}
