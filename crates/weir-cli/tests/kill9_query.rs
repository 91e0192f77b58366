//! No loss, no repeat on restart (embedded log): a persistent query over 300,000 records
//! runs in `weir run`, which is killed with SIGKILL again and again at seeded points — a
//! while after a step began, between a step's output and its checkpoint, between two of
//! its output partitions, in the middle of a write — each run resuming where the last
//! stopped, from the command log and its checkpoints. A last run goes to the end; the
//! output topic must then hold exactly one copy of every expected record.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::KillAt;

use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record, TopicConfig, partition_for_key};

const RECORDS: u64 = 300_000;

const QUERIES: &str = "
CREATE STREAM INPUT (K STRING KEY, ID BIGINT, V INT) WITH (kafka_topic='input', value_format='JSON', partitions=2);
SET 'auto.offset.reset' = 'earliest';
CREATE STREAM OUTPUT WITH (PARTITIONS=3) AS SELECT K, ID, V * 2 AS W FROM INPUT WHERE V <> 3;
";

fn load_input(dir: &std::path::Path) -> std::path::PathBuf {
    {
        let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
        log.create_topic(
            "input",
            TopicConfig {
                partitions: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let mut batches: [Vec<Record>; 2] = Default::default();
        for id in 0..RECORDS {
            let key = format!("k{}", id % 1000);
            let value = format!(r#"{{"ID": {id}, "V": {}}}"#, id % 10);
            let p = partition_for_key(key.as_bytes(), 2) as usize;
            batches[p].push(Record::new(
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                id as i64,
            ));
        }
        for (p, b) in batches.iter().enumerate() {
            for chunk in b.chunks(5000) {
                log.append("input", p as u32, chunk).unwrap();
            }
        }
        log.flush().unwrap();
    }
    let queries = dir.join("queries.sql");
    std::fs::write(&queries, QUERIES).unwrap();
    queries
}

/// Runs `weir run` until idle and checks OUTPUT holds every expected record exactly once;
/// how many records OUTPUT holds and how many the run consumed.
fn restart_and_verify(dir: &std::path::Path) -> (usize, u64) {
    let started = Instant::now();
    let (stdout, consumed) = common::run_until_idle(common::weir_run(dir, None));
    assert!(stdout.starts_with("recovered 1 persistent"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(120));

    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    let mut ids = Vec::new();
    for p in 0..3 {
        let mut from = 0;
        loop {
            let records = log.read("OUTPUT", p, from, 10_000).unwrap();
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for r in records {
                let v: serde_json::Value =
                    serde_json::from_slice(&r.record.value.unwrap()).unwrap();
                let id = v["ID"].as_u64().unwrap();
                assert_eq!(v["W"].as_u64().unwrap(), (id % 10) * 2);
                ids.push(id);
            }
        }
    }
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    let expected: BTreeSet<u64> = (0..RECORDS).filter(|id| id % 10 != 3).collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "{} records were written twice",
        ids.len() - unique.len()
    );
    assert_eq!(unique, expected, "records were lost");
    (ids.len(), consumed)
}

#[test]
fn a_query_killed_at_seeded_points_resumes_without_losing_or_repeating_output() {
    let mut rng = common::Seeded::new();
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    // Every kind of point, in a seeded order (each run starts its batches small again).
    let points = common::seeded_kills(
        &mut rng,
        &[
            ("crash_before_checkpoint", 5),
            ("mid_output", 5),
            ("torn_append", 12),
        ],
        25_000,
    );
    let seed = rng.seed;
    common::kill_runs(dir.path(), &queries, &points, &format!("seed {seed}"));
    // The last run: the command log brings the query back; it had work left.
    let (written, consumed) = restart_and_verify(dir.path());
    assert!(
        consumed > 0,
        "seed {seed}: the kills came after the end of the input; the last run had nothing left"
    );
    println!(
        "seed {seed}: the last run consumed {consumed} of {RECORDS}; OUTPUT holds {written} records, each once"
    );
}

/// The narrowest window: the process dies after a batch's output is written and before
/// its checkpoint is. Recovery must find that output and not write it again.
#[test]
fn a_crash_between_output_and_checkpoint_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    let crashed = common::weir_run(dir.path(), Some(&queries))
        // Batches grow under load (4096 records per partition, doubling), so the 7th
        // partition batch comes well before the end of the input (a step may hold several
        // batches of each partition: the failpoint counts batches, not steps).
        .env("WEIR_FAILPOINT", "crash_before_checkpoint:7")
        .output()
        .unwrap();
    assert!(
        !crashed.status.success(),
        "the failpoint aborts the first run"
    );
    // It died with output written for records it had not checkpointed: some, not all.
    let left = {
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
        (0..3)
            .map(|p| log.offsets("OUTPUT", p).unwrap().1)
            .sum::<u64>()
    };
    let all = (0..RECORDS).filter(|id| id % 10 != 3).count() as u64;
    assert!(
        left > 0 && left < all,
        "the crashed run left {left} of {all} outputs"
    );
    let (written, _) = restart_and_verify(dir.path());
    println!(
        "crashed between output and checkpoint with {left} outputs written; OUTPUT holds {written} records, each once"
    );
}

/// Found by the seeded test: a step killed after writing part of its output (a big
/// batch), a restart that replays it in smaller batches, and a second crash before the
/// replay got past it. The outputs written ahead by the first step lie before the last
/// checkpoint's sink ends; the checkpoints carry them (`ahead`) so that the second
/// recovery does not write them again.
#[test]
fn output_written_ahead_by_an_interrupted_step_survives_a_second_crash() {
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    let points = [
        KillAt::Consumed {
            at_least: 24_000,
            then_ms: 0,
        },
        KillAt::Failpoint {
            name: "mid_output",
            pass: 4,
        },
        KillAt::Failpoint {
            name: "crash_before_checkpoint",
            pass: 1,
        },
    ];
    common::kill_runs(dir.path(), &queries, &points, "fixed points");
    let (written, consumed) = restart_and_verify(dir.path());
    assert!(consumed > 0);
    println!("OUTPUT holds {written} records, each once");
}
