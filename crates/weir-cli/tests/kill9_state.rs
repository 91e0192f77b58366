//! State that survives (embedded log): a windowed aggregation and a stream-table join run
//! in `weir run`, which is killed with SIGKILL again and again at seeded points (a while
//! after a step began, between a step's output and its checkpoint, in the middle of a
//! write), and, separately, crashed between writing a batch's output and its checkpoint. A second `weir run` on the same data
//! directory resumes both queries from their checkpointed state. Their output topics must
//! then be identical, record for record (key, value, timestamp, in order), to those of an
//! uninterrupted run over the same input.

mod common;

use std::path::{Path, PathBuf};

use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record, TopicConfig};

const READINGS: u64 = 120_000;
const CARS: u64 = 200;

const QUERIES: &str = "
CREATE STREAM readings (car STRING KEY, speed INT) WITH (kafka_topic='readings', value_format='JSON', partitions=1);
CREATE TABLE cars (car STRING PRIMARY KEY, model STRING) WITH (kafka_topic='cars', value_format='JSON', partitions=1);
SET 'auto.offset.reset' = 'earliest';
CREATE TABLE per_window AS SELECT car, COUNT(*) AS n, AVG(speed) AS mean, MAX(speed) AS top
  FROM readings WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY car;
CREATE STREAM enriched AS SELECT r.car AS car, c.model AS model, r.speed AS speed
  FROM readings r LEFT JOIN cars c ON r.car = c.car;
";

const SINKS: [&str; 2] = ["PER_WINDOW", "ENRICHED"];

/// The input: a table of 150 of the 200 cars (the rest join to nulls), and readings
/// slightly out of time order, 10 ms apart.
fn load_input(dir: &Path) -> PathBuf {
    {
        let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
        for topic in ["readings", "cars"] {
            log.create_topic(topic, TopicConfig::default()).unwrap();
        }
        let cars: Vec<Record> = (0..CARS)
            .filter(|c| c % 4 != 3)
            .map(|c| {
                let key = format!("car{c}");
                let value = format!(r#"{{"MODEL": "model-{}"}}"#, c % 7);
                Record::new(Some(key.as_bytes()), Some(value.as_bytes()), 0)
            })
            .collect();
        log.append("cars", 0, &cars).unwrap();
        let readings: Vec<Record> = (0..READINGS)
            .map(|i| {
                let key = format!("car{}", (i * 7919) % CARS);
                let value = format!(r#"{{"SPEED": {}}}"#, (i * 31) % 130);
                let ts = (i * 10) as i64 - ((i % 5) * 10) as i64;
                Record::new(Some(key.as_bytes()), Some(value.as_bytes()), ts)
            })
            .collect();
        for chunk in readings.chunks(5000) {
            log.append("readings", 0, chunk).unwrap();
        }
        log.flush().unwrap();
    }
    let queries = dir.join("queries.sql");
    std::fs::write(&queries, QUERIES).unwrap();
    queries
}

type Output = Vec<(Option<Vec<u8>>, Option<Vec<u8>>, i64)>;

/// Every record of the sinks, in order.
fn outputs(dir: &Path) -> Vec<Output> {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    SINKS
        .iter()
        .map(|sink| {
            let partitions = log.topic(sink).unwrap().unwrap().config.partitions;
            let mut out = Vec::new();
            for p in 0..partitions {
                for r in log.read_to_end(sink, p, 0).unwrap() {
                    out.push((r.record.key, r.record.value, r.record.timestamp));
                }
            }
            out
        })
        .collect()
}

fn run_to_end(dir: &Path, queries: Option<&Path>) -> String {
    let out = common::weir_run(dir, queries)
        .arg("--exit-when-idle")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The uninterrupted run's output.
fn reference() -> Vec<Output> {
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    run_to_end(dir.path(), Some(&queries));
    let out = outputs(dir.path());
    assert!(out[0].len() as u64 >= READINGS, "one change per reading");
    assert_eq!(out[1].len() as u64, READINGS, "every reading joined");
    let unmatched = out[1]
        .iter()
        .filter(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.1.as_deref().unwrap()).unwrap();
            v["MODEL"].is_null()
        })
        .count();
    assert!(unmatched > 0 && unmatched < READINGS as usize / 2);
    out
}

fn assert_identical(got: &[Output], want: &[Output]) {
    for ((sink, g), w) in SINKS.iter().zip(got).zip(want) {
        assert_eq!(g.len(), w.len(), "{sink}: record count");
        if let Some(i) = (0..g.len()).find(|i| g[*i] != w[*i]) {
            panic!(
                "{sink}: record {i} differs: {:?} vs {:?}",
                g[i].1.as_deref().map(String::from_utf8_lossy),
                w[i].1.as_deref().map(String::from_utf8_lossy)
            );
        }
    }
}

/// Runs the queries with a failpoint armed; the sinks' records when it aborted the run.
fn crash_at(dir: &Path, queries: &Path, failpoint: &str) -> Vec<Output> {
    let crashed = common::weir_run(dir, Some(queries))
        .env("WEIR_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the failpoint aborts the run");
    outputs(dir)
}

/// Resumes the crashed run to the end of its input: the sinks must hold what an
/// uninterrupted run wrote.
fn resume_and_compare(dir: &Path, want: &[Output]) {
    run_to_end(dir, None);
    assert_identical(&outputs(dir), want);
}

#[test]
fn windowed_aggregate_and_join_killed_at_seeded_points_give_identical_output() {
    let want = reference();
    let mut rng = common::Seeded::new();
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    // Every kind of point but mid_output (one sink partition each), in a seeded order.
    let points = common::seeded_kills(
        &mut rng,
        &[("crash_before_checkpoint", 4), ("torn_append", 10)],
        15_000,
    );
    let seed = rng.seed;
    common::kill_runs(dir.path(), &queries, &points, &format!("seed {seed}"));
    let (stdout, consumed) = common::run_until_idle(common::weir_run(dir.path(), None));
    assert!(stdout.starts_with("recovered 2 persistent"), "{stdout}");
    // Both queries read the readings (and the join the cars).
    assert!(
        consumed > 0,
        "seed {seed}: the kills came after the end of the input; the last run had nothing left"
    );
    let got = outputs(dir.path());
    assert_identical(&got, &want);
    println!(
        "seed {seed}: the last run consumed {consumed} records; PER_WINDOW holds {} and ENRICHED {} records, identical to an uninterrupted run",
        got[0].len(),
        got[1].len()
    );
}

#[test]
fn a_crash_between_output_and_checkpoint_leaves_stateful_output_identical() {
    let want = reference();
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    let before = crash_at(dir.path(), &queries, "crash_before_checkpoint:5");
    assert!(
        before.iter().any(|o| !o.is_empty()),
        "some output was written before the crash"
    );
    resume_and_compare(dir.path(), &want);
    println!(
        "crashed between output and checkpoint with {} + {} records written; after restart identical to an uninterrupted run",
        before[0].len(),
        before[1].len()
    );
}

/// With a commit interval longer than the run, the aggregation and the join checkpoint
/// only when they are created: a crash five steps in leaves all five steps' output in the
/// sinks and none of them in a checkpoint. The restart reads those records again (the
/// join step by step, as its recovery intents say) and writes none of their output twice.
#[test]
fn a_crash_many_steps_after_the_last_checkpoint_writes_nothing_twice() {
    let want = reference();
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    std::fs::write(
        &queries,
        format!("SET 'commit.interval.ms' = '600000';\n{QUERIES}"),
    )
    .unwrap();
    let before = crash_at(dir.path(), &queries, "crash_before_checkpoint:5");
    // Checkpoints name their query (a join's recovery intents are other records).
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    let stored = log.read_to_end(weir_engine::OFFSETS_TOPIC, 0, 0).unwrap();
    drop(log);
    for sink in SINKS {
        let checkpoints = stored
            .iter()
            .filter_map(|r| weir_engine::parse_checkpoint(r.record.value.as_deref()?))
            .filter(|v| v["query"].as_str().is_some_and(|q| q.contains(sink)))
            .count();
        assert_eq!(checkpoints, 1, "{sink} checkpointed only when created");
    }
    assert!(
        before[0].len() > 1,
        "the aggregation wrote output before the crash"
    );
    resume_and_compare(dir.path(), &want);
    println!(
        "crashed with {} aggregate records written since its only checkpoint; after restart identical to an uninterrupted run",
        before[0].len()
    );
}

const STREAM_JOIN: &str = "
CREATE STREAM L (ID STRING KEY, A INT) WITH (kafka_topic='l', value_format='JSON', partitions=1);
CREATE STREAM R (ID STRING KEY, B INT) WITH (kafka_topic='r', value_format='JSON', partitions=1);
SET 'auto.offset.reset' = 'earliest';
CREATE STREAM LR AS SELECT L.ID AS ID, A, B FROM L LEFT JOIN R WITHIN 1 MINUTE ON L.ID = R.ID;
";

fn append(dir: &Path, topic: &str, field: &str, n: i64) {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    if log.topic(topic).unwrap().is_none() {
        log.create_topic(topic, TopicConfig::default()).unwrap();
    }
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let key = format!("k{i}");
            let value = format!(r#"{{"{field}": {i}}}"#);
            Record::new(Some(key.as_bytes()), Some(value.as_bytes()), i)
        })
        .collect();
    log.append(topic, 0, &records).unwrap();
    log.flush().unwrap();
}

fn joined(dir: &Path) -> Output {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    log.read_to_end("LR", 0, 0)
        .unwrap()
        .into_iter()
        .map(|r| (r.record.key, r.record.value, r.record.timestamp))
        .collect()
}

/// A stream-stream join's step that read to the end of its input is interrupted before
/// its checkpoint; the other stream's records arrive before the restart. The replayed
/// step must read what the interrupted one read (not the new records), so the output is
/// that of a run stopped cleanly at the same point: 1,000 unmatched left records, then
/// 1,000 joined ones.
#[test]
fn an_interrupted_join_step_is_replayed_over_the_same_records() {
    let queries = |dir: &Path| {
        let q = dir.join("queries.sql");
        std::fs::write(&q, STREAM_JOIN).unwrap();
        q
    };
    // Reference: stopped cleanly after the left records, then the right ones arrive.
    let reference = tempfile::tempdir().unwrap();
    append(reference.path(), "l", "A", 1000);
    run_to_end(reference.path(), Some(&queries(reference.path())));
    append(reference.path(), "r", "B", 1000);
    run_to_end(reference.path(), None);
    let want = joined(reference.path());
    assert_eq!(want.len(), 2000);

    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), "l", "A", 1000);
    let crashed = common::weir_run(dir.path(), Some(&queries(dir.path())))
        .env("WEIR_FAILPOINT", "crash_before_checkpoint:0")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the failpoint aborts the run");
    assert_eq!(
        joined(dir.path()).len(),
        1000,
        "the step's output was written"
    );
    append(dir.path(), "r", "B", 1000);
    run_to_end(dir.path(), None);
    let got = joined(dir.path());
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the output differs from the clean run's");
    println!("interrupted join step replayed over the same records: LR identical to a clean stop");
}
