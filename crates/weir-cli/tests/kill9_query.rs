//! No loss, no repeat on restart (embedded log): a persistent query over 200,000 records
//! runs in `weir run`, is killed with SIGKILL mid-way, and a second `weir run` on the same
//! data directory resumes it from the command log and its checkpoints. The output topic
//! must then hold exactly one copy of every expected record.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record, TopicConfig, partition_for_key};

const RECORDS: u64 = 200_000;

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

/// Runs `weir run` until idle and checks OUTPUT holds every expected record exactly once.
fn restart_and_verify(dir: &std::path::Path) -> usize {
    let started = Instant::now();
    let second = common::weir_run(dir, None)
        .arg("--exit-when-idle")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "second run failed: {stdout}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
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
    ids.len()
}

#[test]
fn a_killed_query_resumes_without_losing_or_repeating_output() {
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());

    // First run: killed once it has consumed part of the input.
    let first = common::weir_run(dir.path(), Some(&queries));
    let consumed_before_kill = common::kill_after_consumed(first, 60_000);
    assert!(
        (60_000..RECORDS).contains(&consumed_before_kill),
        "killed mid-way, after {consumed_before_kill}"
    );

    // Second run: no queries file; the command log brings the query back.
    let written = restart_and_verify(dir.path());
    println!(
        "killed after {consumed_before_kill} of {RECORDS}; after restart OUTPUT holds {written} records, each once"
    );
}

/// The narrowest window: the process dies after a batch's output is written and before
/// its checkpoint is. Recovery must find that output and not write it again.
#[test]
fn a_crash_between_output_and_checkpoint_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let queries = load_input(dir.path());
    let crashed = common::weir_run(dir.path(), Some(&queries))
        // Batches grow under load (4096 records per partition, doubling), so the 8th
        // partition batch comes well before the end of the input.
        .env("WEIR_FAILPOINT", "crash_before_checkpoint:7")
        .output()
        .unwrap();
    assert!(
        !crashed.status.success(),
        "the failpoint aborts the first run"
    );
    let stdout = String::from_utf8_lossy(&crashed.stdout);
    let progress: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("consumed"))
        .collect();
    let consumed = progress.len();
    let total: u64 = progress
        .last()
        .and_then(|l| common::progress_total(l))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    // Each progress line covers both source partitions; the failpoint counts partition batches.
    assert!(
        consumed >= 2 && total < RECORDS,
        "it crashed after {consumed} steps, {total} records"
    );
    let written = restart_and_verify(dir.path());
    println!(
        "crashed between output and checkpoint after {consumed} steps; OUTPUT holds {written} records, each once"
    );
}
