//! A persistent query that fails — its sink cannot be written, its step panics — fails
//! alone: it shows ERROR with why, the other queries carry on, and after its backoff it
//! is reloaded from its last checkpoint and catches up, its sink then holding exactly
//! what an uninterrupted run writes (nothing counted twice, nothing written twice).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Faulty, contents};
use weir_engine::Engine;
use weir_log::{Log, Record};

const SETUP: &str = "
CREATE STREAM readings (car VARCHAR KEY, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=2);
CREATE STREAM pings (id VARCHAR KEY, n INT) WITH (kafka_topic='pings', value_format='JSON', partitions=1);
SET 'auto.offset.reset'='earliest';
SET 'ksql.query.retry.backoff.initial.ms'='50';
CREATE TABLE per_car AS SELECT car, COUNT(*) AS n, SUM(speed) AS total FROM readings GROUP BY car;
CREATE STREAM doubled AS SELECT id, n * 2 AS twice FROM pings;
";

fn open(dir: &std::path::Path) -> (Arc<Faulty>, Engine) {
    let log = Arc::new(Faulty::open(dir));
    let mut engine = Engine::open(log.clone()).unwrap();
    engine.execute_sql(SETUP).unwrap();
    (log, engine)
}

/// Round `round` of input: 40 readings over 8 cars, 10 pings.
fn produce(log: &dyn Log, round: u32) {
    for i in 0..40 {
        let car = format!("car-{}", i % 8);
        let value = format!(r#"{{"SPEED":{}}}"#, round * 100 + i);
        log.produce(
            "readings",
            Record::new(
                Some(car.as_bytes()),
                Some(value.as_bytes()),
                1000 + i as i64,
            ),
        )
        .unwrap();
    }
    for i in 0..10 {
        let value = format!(r#"{{"N":{}}}"#, round * 10 + i);
        log.produce(
            "pings",
            Record::new(Some(b"p"), Some(value.as_bytes()), 1000 + i as i64),
        )
        .unwrap();
    }
}

fn state_of(engine: &Engine, prefix: &str) -> (bool, String) {
    let q = engine
        .queries()
        .find(|q| q.id.starts_with(prefix))
        .unwrap_or_else(|| panic!("no query {prefix}"));
    match &q.error {
        Some(e) => (true, e.message.clone()),
        None => (false, String::new()),
    }
}

/// What the two rounds give without any failure.
fn uninterrupted() -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut engine) = open(dir.path());
    for round in 0..2 {
        produce(log.as_ref(), round);
        engine.run_until_idle().unwrap();
    }
    (
        contents(log.as_ref(), "PER_CAR"),
        contents(log.as_ref(), "DOUBLED"),
    )
}

/// Runs until the failed query has been retried and everything is caught up.
fn recover(engine: &mut Engine) {
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        engine.run_until_idle().unwrap();
        if !state_of(engine, "CTAS_PER_CAR").0 {
            engine.run_until_idle().unwrap();
            return;
        }
    }
    panic!(
        "the failed query never recovered: {}",
        state_of(engine, "CTAS_PER_CAR").1
    );
}

/// Round 0 runs; `fault` is set; round 1 makes the per-car query fail with `why` while the
/// other query writes all of its output; healed, the failed query recovers and its sink
/// equals an uninterrupted run's. The data directory, log and engine, for more.
fn fails_alone_and_recovers(
    fault: impl Fn(&Faulty),
    why: &str,
) -> (tempfile::TempDir, Arc<Faulty>, Engine) {
    let (want_per_car, want_doubled) = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    let (log, mut engine) = open(dir.path());
    produce(log.as_ref(), 0);
    engine.run_until_idle().unwrap();
    fault(&log);
    produce(log.as_ref(), 1);
    engine.run_until_idle().unwrap();
    assert!(log.failed.load(Ordering::SeqCst), "the fault was never hit");
    let (failed, message) = state_of(&engine, "CTAS_PER_CAR");
    assert!(failed, "the failing query is not in ERROR");
    assert!(message.contains(why), "{message}");
    // The other query went on: all of its output is there.
    assert!(!state_of(&engine, "CSAS_DOUBLED").0);
    assert_eq!(contents(log.as_ref(), "DOUBLED"), want_doubled);
    // SHOW QUERIES says so too.
    let shown = format!("{:?}", engine.execute_sql("SHOW QUERIES;").unwrap());
    assert!(shown.contains("ERROR"), "{shown}");
    log.heal();
    recover(&mut engine);
    assert_eq!(contents(log.as_ref(), "PER_CAR"), want_per_car);
    (dir, log, engine)
}

#[test]
fn a_query_whose_sink_cannot_be_written_fails_alone_and_recovers_without_duplicates() {
    // The next step's first sink append goes through, the second fails: part of the
    // step is written, its state already folded in memory.
    let (_dir, log, mut engine) = fails_alone_and_recovers(
        |log| log.fail_appends("PER_CAR", 1),
        "injected failure writing PER_CAR",
    );
    // And it goes on from there.
    produce(log.as_ref(), 2);
    engine.run_until_idle().unwrap();
    let last = contents(log.as_ref(), "PER_CAR");
    let written: usize = last.iter().map(Vec::len).sum();
    assert_eq!(written, 120, "{last:?}");
}

#[test]
fn a_query_that_panics_fails_alone_and_recovers() {
    fails_alone_and_recovers(
        |log| log.panic_reads("readings"),
        "panicked: injected panic reading readings",
    );
}

/// A checkpoint that cannot be written: the step's output is in the sinks, its offsets
/// and state changes are not saved. The queries fail, are reloaded from the checkpoint
/// before, and neither count nor write anything twice.
#[test]
fn a_checkpoint_that_cannot_be_written_counts_and_writes_nothing_twice() {
    let (want_per_car, want_doubled) = uninterrupted();
    let dir = tempfile::tempdir().unwrap();
    let (log, mut engine) = open(dir.path());
    produce(log.as_ref(), 0);
    engine.run_until_idle().unwrap();
    log.fail_appends("_weir_offsets", 0);
    produce(log.as_ref(), 1);
    engine.run_until_idle().unwrap();
    assert!(log.failed.load(Ordering::SeqCst), "the fault was never hit");
    let (failed, message) = state_of(&engine, "CTAS_PER_CAR");
    assert!(failed, "the query whose checkpoint failed is not in ERROR");
    assert!(message.contains("_weir_offsets"), "{message}");
    log.heal();
    recover(&mut engine);
    for _ in 0..100 {
        if !state_of(&engine, "CSAS_DOUBLED").0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        engine.run_until_idle().unwrap();
    }
    assert_eq!(contents(log.as_ref(), "PER_CAR"), want_per_car);
    assert_eq!(contents(log.as_ref(), "DOUBLED"), want_doubled);
    // And a restart from what was saved agrees.
    drop(engine);
    drop(log);
    let log = Arc::new(Faulty::open(dir.path()));
    let mut engine = Engine::open(log.clone()).unwrap();
    produce(log.as_ref(), 2);
    engine.run_until_idle().unwrap();
    let written: usize = contents(log.as_ref(), "PER_CAR").iter().map(Vec::len).sum();
    assert_eq!(written, 120);
}

/// A function the first run has and the second does not (a plugin removed meanwhile).
fn with_twice() -> weir_engine::Functions {
    use datafusion::arrow::array::{Array, Int32Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let udf = create_udf(
        "twice",
        vec![DataType::Int32],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let input = args[0].to_array(1)?;
            let ints = input.as_any().downcast_ref::<Int32Array>().unwrap();
            let out: Int32Array = ints.iter().map(|v| v.map(|v| v * 2)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as Arc<dyn Array>))
        }),
    );
    let mut functions = weir_engine::Functions::default();
    functions.register_plugin(
        udf,
        weir_engine::functions::PluginFunction {
            name: "TWICE".into(),
            kind: "SCALAR".into(),
            description: String::new(),
            library: "test".into(),
            version: "1".into(),
            author: String::new(),
            path: "test".into(),
            generation: 1,
            signatures: vec![],
        },
    );
    functions
}

/// A statement that fails when the command log is replayed (a function whose plugin
/// is gone) does not stop the start: its query is listed in ERROR with why, the queries
/// after it keep their ids and resume from their checkpoints, and a start that has the
/// function again resumes it too; TERMINATE removes it for good.
#[test]
fn a_statement_that_fails_on_replay_is_an_error_not_a_failed_start() {
    let dir = tempfile::tempdir().unwrap();
    let open = |functions: weir_engine::Functions| {
        let log = Arc::new(weir_log::EmbeddedLog::open(dir.path(), Default::default()).unwrap());
        (log.clone(), Engine::open_with(log, functions).unwrap())
    };
    let ids = {
        let (_, mut e) = open(with_twice());
        e.execute_sql(
            "CREATE STREAM nums (v INT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);\n\
             SET 'auto.offset.reset'='earliest';\n\
             CREATE STREAM doubled AS SELECT TWICE(v) AS d FROM nums;\n\
             CREATE STREAM copied AS SELECT v FROM nums;",
        )
        .unwrap();
        common::insert_nums(&mut e, 0);
        let mut ids: Vec<String> = e.queries().map(|q| q.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids, ["CSAS_COPIED_1", "CSAS_DOUBLED_0"]);
    // Without the function: the server starts.
    {
        let (log, mut e) = open(weir_engine::Functions::default());
        let states: Vec<(String, String, String)> = e
            .queries()
            .map(|q| {
                let why = q
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                (q.id.clone(), q.state().to_string(), why)
            })
            .collect();
        assert_eq!(states.len(), 2, "{states:?}");
        let doubled = states.iter().find(|s| s.0 == "CSAS_DOUBLED_0").unwrap();
        assert_eq!(doubled.1, "ERROR");
        assert!(doubled.2.contains("TWICE"), "{doubled:?}");
        let copied = states.iter().find(|s| s.0 == "CSAS_COPIED_1").unwrap();
        assert_eq!(copied.1, "RUNNING");
        // The query after it resumed from its checkpoint: nothing written twice.
        common::insert_nums(&mut e, 5);
        assert_eq!(contents(log.as_ref(), "COPIED").concat().len(), 10);
    }
    // With it again: the query resumes where it stopped, nothing written twice.
    {
        let (log, mut e) = open(with_twice());
        assert!(e.queries().all(|q| q.state() == "RUNNING"));
        e.run_until_idle().unwrap();
        let mut doubled: Vec<String> = contents(log.as_ref(), "DOUBLED").concat();
        doubled.sort();
        assert_eq!(doubled.len(), 10, "{doubled:?}");
        doubled.dedup();
        assert_eq!(doubled.len(), 10, "{doubled:?}");
    }
    // Without it, terminated: gone, and gone after the next start too.
    {
        let (_, mut e) = open(weir_engine::Functions::default());
        e.execute_sql("TERMINATE CSAS_DOUBLED_0;").unwrap();
        assert_eq!(e.queries().count(), 1);
    }
    let (_, e) = open(weir_engine::Functions::default());
    let ids: Vec<String> = e.queries().map(|q| q.id).collect();
    assert_eq!(ids, ["CSAS_COPIED_1"]);
}

/// A statement the command log cannot take (a full disk, a failed fsync) fails and
/// leaves nothing the next start would not have: no source, no query, no query id used
/// up, no topic deleted; TERMINATE stops nothing. Once the log takes appends again the
/// same statements succeed, and a restart has exactly what the server had.
#[test]
fn a_statement_that_cannot_be_recorded_has_no_effect() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut e) = {
        let log = Arc::new(Faulty::open(dir.path()));
        let e = Engine::open(log.clone()).unwrap();
        (log, e)
    };
    e.execute_sql(
        "CREATE STREAM nums (v INT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);\n\
         SET 'auto.offset.reset'='earliest';\n\
         CREATE STREAM first AS SELECT v FROM nums;\n\
         CREATE STREAM spare (v INT) WITH (kafka_topic='spare', value_format='JSON', partitions=1);\n\
         INSERT INTO spare (v) VALUES (7);",
    )
    .unwrap();
    let (names, ids) = (common::source_names, common::query_ids);
    let (names_before, ids_before) = (names(&e), ids(&e));
    log.fail_appends("_weir_commands", 0);
    for sql in [
        "CREATE STREAM other (v INT) WITH (kafka_topic='other', value_format='JSON', partitions=1);",
        "CREATE STREAM second AS SELECT v * 2 AS w FROM nums;",
        "INSERT INTO first SELECT v FROM nums;",
        "DROP STREAM spare DELETE TOPIC;",
        "TERMINATE CSAS_FIRST_0;",
    ] {
        assert!(e.execute_sql(sql).is_err(), "{sql}: accepted");
    }
    assert_eq!(names(&e), names_before);
    assert_eq!(ids(&e), ids_before);
    assert_eq!(contents(log.as_ref(), "spare").concat().len(), 1);
    e.execute_sql("INSERT INTO nums (v) VALUES (1);").unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(contents(log.as_ref(), "FIRST").concat().len(), 1);
    log.heal();
    e.execute_sql("CREATE STREAM second AS SELECT v * 2 AS w FROM nums;")
        .unwrap();
    // The id the failed statement did not use up.
    assert!(
        ids(&e).contains(&"CSAS_SECOND_1".to_string()),
        "{:?}",
        ids(&e)
    );
    e.execute_sql("DROP STREAM spare DELETE TOPIC;").unwrap();
    assert!(log.topic("spare").unwrap().is_none());
    let (names_now, ids_now) = (names(&e), ids(&e));
    drop(e);
    drop(log);
    let log = Arc::new(Faulty::open(dir.path()));
    let e = Engine::open(log.clone()).unwrap();
    assert_eq!((names(&e), ids(&e)), (names_now, ids_now));
}

/// A GROUP BY over four partitions with a backlog, on two threads: each step's stages
/// with state fold, encode and write while the next step's batches are read ahead. Its
/// sink fails in the middle of the backlog (part of a step's output written, the state
/// holding steps not yet written, batches read ahead) with a checkpoint due after every
/// step: reloaded, every car's COUNT goes 1, 2, 3, ... in the sink, nothing skipped or
/// repeated, and the last totals are the records'.
#[test]
fn a_group_by_reading_ahead_whose_sink_fails_mid_backlog_counts_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Faulty::open(dir.path()));
    let mut engine = Engine::open(log.clone()).unwrap();
    engine.set_parallelism(2);
    engine
        .execute_sql(
            "CREATE STREAM readings (car VARCHAR KEY, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=4);
             SET 'auto.offset.reset'='earliest';
             SET 'ksql.query.retry.backoff.initial.ms'='50';
             SET 'weir.checkpoint.interval.ms'='0';
             CREATE TABLE per_car AS SELECT car, COUNT(*) AS n, SUM(speed) AS total FROM readings GROUP BY car;",
        )
        .unwrap();
    let mut want: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for i in 0..60_000i64 {
        let car = format!("car-{}", i % 101);
        let speed = (i * 13) % 97;
        let value = format!(r#"{{"SPEED":{speed}}}"#);
        log.produce(
            "readings",
            Record::new(Some(car.as_bytes()), Some(value.as_bytes()), i),
        )
        .unwrap();
        let w = want.entry(car).or_default();
        (w.0, w.1) = (w.0 + 1, w.1 + speed);
    }
    // Some of the steps' output goes through (each source partition's step is one
    // append, to the sink partition of the same number), then one fails.
    log.fail_appends("PER_CAR", 5);
    engine.run_until_idle().unwrap();
    assert!(log.failed.load(Ordering::SeqCst), "the fault was never hit");
    let (failed, message) = state_of(&engine, "CTAS_PER_CAR");
    assert!(failed, "the failing query is not in ERROR");
    assert!(
        message.contains("injected failure writing PER_CAR"),
        "{message}"
    );
    log.heal();
    recover(&mut engine);
    let mut counts: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let mut last: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for line in contents(log.as_ref(), "PER_CAR").concat() {
        let (key, rest) = line.split_once(' ').unwrap();
        let value = rest.rsplit_once(' ').unwrap().0;
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let (n, total) = (v["N"].as_i64().unwrap(), v["TOTAL"].as_i64().unwrap());
        counts.entry(key.to_string()).or_default().push(n);
        last.insert(key.to_string(), (n, total));
    }
    assert_eq!(last, want);
    common::assert_counts_go_one_by_one(counts);
}
