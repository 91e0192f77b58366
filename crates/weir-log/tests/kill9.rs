//! A process killed with SIGKILL mid-append loses nothing it acknowledged: the test runs
//! itself as a child that appends batches and prints an ACK after each `append` returns,
//! kills it, reopens the log and checks every acknowledged record, byte for byte.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log, Record, TopicConfig};

const CHILD_ENV: &str = "WEIR_LOG_KILL9_CHILD_DIR";

fn value_for(offset: u64) -> Vec<u8> {
    format!("record-{offset}-{}", "x".repeat((offset % 97) as usize)).into_bytes()
}

fn config() -> EmbeddedLogConfig {
    // Small segments so the kill can land during a roll; no fsync: a killed process's
    // writes are in the page cache, which survives it.
    EmbeddedLogConfig {
        segment_bytes: 64 << 10,
        fsync: FsyncPolicy::Never,
        ..Default::default()
    }
}

fn child(dir: &str) {
    let log = EmbeddedLog::open(dir, config()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut next = log.offsets("t", 0).unwrap().1;
    while started.elapsed() < Duration::from_secs(60) {
        let count = 1 + next % 17;
        let batch: Vec<Record> = (next..next + count)
            .map(|o| Record::new(Some(&o.to_be_bytes()), Some(&value_for(o)), o as i64))
            .collect();
        let base = log.append("t", 0, &batch).unwrap();
        assert_eq!(base, next);
        next += count;
        writeln!(out, "ACK {next}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_appends_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0u64;
    let mut acks = 0;
    for line in BufReader::new(proc.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("ACK ") {
            acked = n.parse().unwrap();
            acks += 1;
            if acks == 3000 {
                break;
            }
        }
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    assert_eq!(
        acks, 3000,
        "the child acknowledged appends before it was killed"
    );

    let log = EmbeddedLog::open(dir.path(), config()).unwrap();
    let (start, end) = log.offsets("t", 0).unwrap();
    assert_eq!(start, 0);
    assert!(
        end >= acked,
        "acknowledged up to offset {acked}, log ends at {end}"
    );
    let mut offset = 0;
    while offset < end {
        for r in log.read("t", 0, offset, 1000).unwrap() {
            assert_eq!(r.offset, offset);
            assert_eq!(
                r.record.value.as_deref(),
                Some(&value_for(offset)[..]),
                "record at offset {offset}"
            );
            offset += 1;
        }
    }
    println!(
        "{acks} acknowledged batches ({acked} records); after kill -9 the log holds {end}, all intact"
    );
}
