//! Compacted topics and retention on the embedded log: a compacted partition keeps each
//! key's latest record at its offset (tombstones for a while), survives a reopen and a
//! crash mid-compaction, and the background thread applies retention and compaction
//! by itself; retention defaults from the log's settings apply to topics without their
//! own, never to topics kept forever.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log, Record, TopicConfig};

fn config() -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        segment_bytes: 2048,
        fsync: FsyncPolicy::Never,
        housekeeping_every: None,
        min_compaction_lag: Duration::ZERO,
        ..Default::default()
    }
}

fn compacted() -> TopicConfig {
    TopicConfig {
        compact: true,
        ..Default::default()
    }
}

fn put(log: &dyn Log, key: &str, value: Option<&str>) -> u64 {
    log.append(
        "t",
        0,
        &[Record::new(
            Some(key.as_bytes()),
            value.map(str::as_bytes),
            1_000,
        )],
    )
    .unwrap()
}

/// Every record of partition 0: (offset, key, value).
fn all(log: &dyn Log) -> Vec<(u64, String, Option<String>)> {
    log.read("t", 0, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.record.key.unwrap()).unwrap(),
                r.record.value.map(|v| String::from_utf8(v).unwrap()),
            )
        })
        .collect()
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("topics/t/0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// 20 keys updated 50 times each, in turn: 1,000 records.
fn updates(log: &dyn Log) -> BTreeMap<String, (u64, String)> {
    let mut last = BTreeMap::new();
    for round in 0..50 {
        for k in 0..20 {
            let (key, value) = (format!("key-{k:02}"), format!("value {round} of {k}"));
            let offset = put(log, &key, Some(&value));
            last.insert(key, (offset, value));
        }
    }
    last
}

#[test]
fn a_compacted_topic_keeps_each_keys_latest_record_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), config()).unwrap();
    log.create_topic("t", compacted()).unwrap();
    // A key written once, first: kept where it is, in the first segment.
    put(&log, "once", Some("never updated"));
    let mut last = updates(&log);
    last.insert("once".into(), (0, "never updated".into()));
    let before = disk_bytes(dir.path());
    let reclaimed = log.housekeep().unwrap();
    let after = disk_bytes(dir.path());
    println!("compaction: 1001 records of 21 keys, {before} bytes on disk before, {after} after");
    assert!(reclaimed > 0 && after < before / 4, "{before} -> {after}");
    let records = all(&log);
    // Each key's latest value, at the offset it was written at; nothing else but what
    // the active segment holds (never compacted).
    let mut latest = BTreeMap::new();
    for (offset, key, value) in &records {
        latest.insert(key.clone(), (*offset, value.clone().unwrap()));
    }
    assert_eq!(latest, last);
    assert!(records.len() < 200, "{} records kept", records.len());
    assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
    // The offsets go on from where they were; a reopen reads the same.
    assert_eq!(log.offsets("t", 0).unwrap(), (0, 1001));
    assert_eq!(put(&log, "key-00", Some("after")), 1001);
    let kept = all(&log);
    drop(log);
    let log = EmbeddedLog::open(dir.path(), config()).unwrap();
    assert_eq!(all(&log), kept);
    assert_eq!(put(&log, "key-01", Some("after reopen")), 1002);
    // A read from inside a gap starts at the next record kept.
    let gap = kept
        .windows(2)
        .find(|w| w[1].0 > w[0].0 + 1)
        .map(|w| w[0].0 + 1)
        .expect("a gap");
    let first = log.read("t", 0, gap, 1).unwrap();
    assert!(first[0].offset > gap);
}

#[test]
fn tombstones_go_only_after_the_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), config()).unwrap();
    log.create_topic("t", compacted()).unwrap();
    put(&log, "gone", Some("soon deleted"));
    put(&log, "gone", None);
    updates(&log);
    log.housekeep().unwrap();
    let keys = |log: &dyn Log| -> Vec<(String, Option<String>)> {
        all(log)
            .into_iter()
            .filter(|(_, k, _)| k == "gone")
            .map(|(_, k, v)| (k, v))
            .collect()
    };
    assert_eq!(keys(&log), vec![("gone".to_string(), None)]);
    drop(log);
    let log = EmbeddedLog::open(
        dir.path(),
        EmbeddedLogConfig {
            delete_retention: Duration::ZERO,
            ..config()
        },
    )
    .unwrap();
    // Another segment closes: a pass is due; past the delete retention the tombstone
    // goes too.
    updates(&log);
    log.housekeep().unwrap();
    assert_eq!(keys(&log), vec![]);
}

#[test]
fn segments_closed_less_than_the_lag_ago_are_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(
        dir.path(),
        EmbeddedLogConfig {
            min_compaction_lag: Duration::from_secs(3600),
            ..config()
        },
    )
    .unwrap();
    log.create_topic("t", compacted()).unwrap();
    updates(&log);
    assert_eq!(log.housekeep().unwrap(), 0);
    assert_eq!(all(&log).len(), 1000);
}

#[test]
fn a_topic_without_compaction_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), config()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    updates(&log);
    assert_eq!(log.housekeep().unwrap(), 0);
    assert_eq!(all(&log).len(), 1000);
}

#[test]
fn a_compaction_a_crash_interrupted_leaves_the_segment_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), config()).unwrap();
    log.create_topic("t", compacted()).unwrap();
    updates(&log);
    let before = all(&log);
    drop(log);
    // What a crash leaves of a rewrite: a partial file beside its segment.
    let first = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .min()
        .unwrap();
    let leftover = first.with_extension("seg.cleaning");
    std::fs::write(&leftover, b"half a segment").unwrap();
    let log = EmbeddedLog::open(dir.path(), config()).unwrap();
    assert!(!leftover.exists());
    assert_eq!(all(&log), before);
}

#[test]
fn the_background_thread_compacts_and_applies_default_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(
        dir.path(),
        EmbeddedLogConfig {
            housekeeping_every: Some(Duration::from_millis(50)),
            // Old data goes from topics without a retention of their own...
            retention_ms: Some(60_000),
            ..config()
        },
    )
    .unwrap();
    log.create_topic("t", compacted()).unwrap();
    let old = |i: u64| {
        Record::new(
            Some(b"k".as_slice()),
            Some(format!("{i:0>200}").as_bytes()),
            1_000,
        )
    };
    for name in ["plain", "kept"] {
        log.create_topic(
            name,
            TopicConfig {
                // ...never from those kept forever.
                keep_forever: name == "kept",
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..100 {
            log.append(name, 0, &[old(i)]).unwrap();
        }
    }
    updates(&log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while all(&log).len() >= 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(all(&log).len() < 200, "not compacted in 20 s");
    // Records stamped in 1970 are past a minute's retention: all but the active segment
    // of `plain` went; `kept` keeps all 100.
    assert!(log.offsets("plain", 0).unwrap().0 > 50);
    assert_eq!(log.offsets("kept", 0).unwrap().0, 0);
    assert_eq!(log.read("kept", 0, 0, 1000).unwrap().len(), 100);
}
