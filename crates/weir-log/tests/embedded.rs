//! The embedded log as the engine uses it: append and read back across segment rolls,
//! survive a reopen and a torn write, keep retention limits, wake waiting readers.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_log::{
    EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Header, Log, LogError, Record, TopicConfig,
    partition_for_key,
};

fn small_segments() -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        segment_bytes: 1024,
        fsync: FsyncPolicy::Never,
        ..Default::default()
    }
}

fn rec(i: u64) -> Record {
    Record::new(
        Some(format!("k{i}").as_bytes()),
        Some(format!("value-{i}").as_bytes()),
        i as i64,
    )
}

fn values(log: &dyn Log, topic: &str, partition: u32, from: u64, max: usize) -> Vec<String> {
    log.read(topic, partition, from, max)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.record.value.unwrap()).unwrap())
        .collect()
}

#[test]
fn appends_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    log.create_topic(
        "cars",
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..500 {
        let base = log.append("cars", 1, &[rec(i)]).unwrap();
        assert_eq!(base, i);
    }
    assert_eq!(log.offsets("cars", 1).unwrap(), (0, 500));
    assert_eq!(log.offsets("cars", 0).unwrap(), (0, 0));
    let segments = std::fs::read_dir(dir.path().join("topics/cars/1"))
        .unwrap()
        .count();
    assert!(
        segments > 5,
        "expected many 1 KiB segments, found {segments}"
    );
    let all = log.read("cars", 1, 0, 10_000).unwrap();
    assert_eq!(all.len(), 500);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as u64 && r.record == rec(i as u64))
    );
    // Reads may start anywhere, including inside a batch, and stop at `max`.
    assert_eq!(
        values(&log, "cars", 1, 321, 3),
        ["value-321", "value-322", "value-323"]
    );
    assert!(log.read("cars", 1, 500, 10).unwrap().is_empty());
}

#[test]
fn batches_keep_nulls_headers_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let batch = vec![
        Record {
            key: None,
            value: None,
            timestamp: -5,
            headers: vec![],
        },
        Record {
            key: Some(vec![]),
            value: Some(vec![]),
            timestamp: 7,
            headers: vec![],
        },
        Record {
            key: Some(b"car/engine/temperature".to_vec()),
            value: Some(b"99999,2.10# 2.13".to_vec()),
            timestamp: 1_700_000_000_000,
            headers: vec![
                Header {
                    name: "h1".into(),
                    value: Some(b"v".to_vec()),
                },
                Header {
                    name: "h2".into(),
                    value: None,
                },
            ],
        },
    ];
    assert_eq!(log.append("t", 0, &batch).unwrap(), 0);
    assert_eq!(log.append("t", 0, &batch[..1]).unwrap(), 3);
    let back: Vec<Record> = log
        .read("t", 0, 0, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.record)
        .collect();
    assert_eq!(&back[..3], &batch[..]);
    assert_eq!(back[3], batch[0]);
    // A read from inside a batch steps over the records before it there (headers, nulls
    // and all) and stops at `max` inside a batch.
    let reversed: Vec<Record> = batch.iter().rev().cloned().collect();
    assert_eq!(log.append("t", 0, &reversed).unwrap(), 4);
    let read = |from, max| -> Vec<(u64, Record)> {
        log.read("t", 0, from, max)
            .unwrap()
            .into_iter()
            .map(|r| (r.offset, r.record))
            .collect()
    };
    assert_eq!(read(5, 1), [(5, batch[1].clone())]);
    assert_eq!(read(6, 5), [(6, batch[0].clone())]);
    assert_eq!(
        read(2, 3),
        [
            (2, batch[2].clone()),
            (3, batch[0].clone()),
            (4, batch[2].clone())
        ]
    );
    // A read into records kept from an earlier read (their buffers written over) gives
    // what a fresh read gives: longer and shorter values, nulls where there were bytes
    // and bytes where there were nulls, headers gone or come, fewer records.
    let mut kept = Vec::new();
    for (from, max) in [(0, 7), (4, 3), (1, 2), (6, 1), (3, 4), (9, 2), (0, 7)] {
        log.read_into("t", 0, from, max, &mut kept).unwrap();
        assert_eq!(kept, log.read("t", 0, from, max).unwrap(), "from {from}");
    }
    log.create_topic(
        "u",
        TopicConfig {
            partitions: 2,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    log.append("u", 1, &batch[..1]).unwrap();
    log.read_into("u", 1, 0, 7, &mut kept).unwrap();
    assert_eq!(kept, log.read("u", 1, 0, 7).unwrap());
    assert_eq!((kept[0].partition, kept.len()), (1, 1));
}

#[test]
fn reopening_recovers_topics_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
        log.create_topic(
            "a",
            TopicConfig {
                partitions: 3,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..100 {
            log.append("a", (i % 3) as u32, &[rec(i)]).unwrap();
        }
    }
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    let topics = log.list_topics().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].config.partitions, 3);
    assert_eq!(log.offsets("a", 0).unwrap(), (0, 34));
    assert_eq!(log.append("a", 0, &[rec(1000)]).unwrap(), 34);
    assert_eq!(values(&log, "a", 0, 33, 5), ["value-99", "value-1000"]);
}

#[test]
fn a_torn_last_write_is_cut_off_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        log.append("t", 0, &[rec(0), rec(1)]).unwrap();
        log.append("t", 0, &[rec(2)]).unwrap();
    }
    // A crash in the middle of the next append leaves half a frame behind.
    let seg = dir.path().join("topics/t/0/00000000000000000000.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(f);
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    assert_eq!(log.offsets("t", 0).unwrap(), (0, 3));
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "the torn bytes are truncated"
    );
    assert_eq!(log.append("t", 0, &[rec(3)]).unwrap(), 3);
    assert_eq!(
        values(&log, "t", 0, 0, 10),
        ["value-0", "value-1", "value-2", "value-3"]
    );
}

#[test]
fn corruption_inside_an_earlier_segment_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        for i in 0..200 {
            log.append("t", 0, &[rec(i)]).unwrap();
        }
    }
    let first = dir.path().join("topics/t/0/00000000000000000000.seg");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    match EmbeddedLog::open(dir.path(), small_segments()) {
        Err(LogError::Corrupt { path, .. }) => assert_eq!(path, first),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("corruption went unnoticed"),
    }
}

#[test]
fn retention_by_size_drops_the_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    log.create_topic(
        "t",
        TopicConfig {
            retention_bytes: Some(4096),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..1000 {
        log.append("t", 0, &[rec(i)]).unwrap();
    }
    let (start, end) = log.offsets("t", 0).unwrap();
    assert_eq!(end, 1000);
    assert!(start > 800, "old data is gone: start offset {start}");
    // A reader asking for deleted offsets starts at the oldest kept one.
    let first = log.read("t", 0, 0, 1).unwrap();
    assert_eq!(first[0].offset, start);
}

#[test]
fn retention_by_time_drops_segments_of_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    log.create_topic(
        "t",
        TopicConfig {
            retention_ms: Some(60_000),
            ..Default::default()
        },
    )
    .unwrap();
    // Records from 1970, then from now.
    for i in 0..100 {
        log.append("t", 0, &[rec(i)]).unwrap();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..100 {
        log.append("t", 0, &[Record::new(None, Some(b"fresh"), now + i)])
            .unwrap();
    }
    log.enforce_retention().unwrap();
    let kept = log.read("t", 0, 0, 1000).unwrap();
    assert!(kept.iter().all(|r| r.offset >= 90), "old records are gone");
    assert!(
        kept.iter()
            .filter(|r| r.record.value.as_deref() == Some(b"fresh"))
            .count()
            == 100
    );
}

#[test]
fn waiting_readers_wake_when_records_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap());
    log.create_topic("t", TopicConfig::default()).unwrap();
    assert!(!log.wait_for("t", 0, 0, Duration::from_millis(20)).unwrap());
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            log.append("t", 0, &[rec(0)]).unwrap();
        })
    };
    let started = Instant::now();
    assert!(log.wait_for("t", 0, 0, Duration::from_secs(10)).unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
    writer.join().unwrap();
}

#[test]
fn topics_are_created_on_demand_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    log.create_topic(
        "t",
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    )
    .unwrap();
    // Same layout again: fine. Another partition count: refused.
    log.create_topic(
        "t",
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        log.create_topic(
            "t",
            TopicConfig {
                partitions: 3,
                ..Default::default()
            }
        ),
        Err(LogError::PartitionMismatch {
            existing: 2,
            requested: 3,
            ..
        })
    ));
    for bad in [
        "",
        ".",
        "..",
        "../etc",
        "a/b",
        "with space",
        &"x".repeat(250),
    ] {
        assert!(
            matches!(
                log.create_topic(bad, TopicConfig::default()),
                Err(LogError::InvalidTopicName(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        log.append("nope", 0, &[rec(0)]),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.append("t", 2, &[rec(0)]),
        Err(LogError::UnknownPartition { partition: 2, .. })
    ));
    log.delete_topic("t").unwrap();
    assert!(log.topic("t").unwrap().is_none());
    assert!(!dir.path().join("topics/t").exists());
}

#[test]
fn produce_partitions_by_key_like_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    log.create_topic(
        "t",
        TopicConfig {
            partitions: 6,
            ..Default::default()
        },
    )
    .unwrap();
    for car in 0..50 {
        let key = format!("car-{car}");
        let (p, _) = log
            .produce("t", Record::new(Some(key.as_bytes()), Some(b"v"), 0))
            .unwrap();
        assert_eq!(p, partition_for_key(key.as_bytes(), 6));
    }
    let total: u64 = (0..6).map(|p| log.offsets("t", p).unwrap().1).sum();
    assert_eq!(total, 50);
}

#[test]
fn oversized_records_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedLogConfig {
        max_record_bytes: 100,
        ..Default::default()
    };
    let log = EmbeddedLog::open(dir.path(), config).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let big = Record::new(None, Some(&[0u8; 200]), 0);
    assert!(matches!(
        log.append("t", 0, &[rec(0), big]),
        Err(LogError::RecordTooLarge(..))
    ));
    assert_eq!(log.offsets("t", 0).unwrap(), (0, 0));
}

#[test]
fn the_interval_policy_syncs_appends_in_the_background_without_another_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(
        dir.path(),
        EmbeddedLogConfig {
            fsync: FsyncPolicy::Interval(Duration::from_millis(20)),
            ..Default::default()
        },
    )
    .unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    log.append("t", 0, &[rec(1)]).unwrap();
    // The append returned without waiting for the disk; nothing else is appended, and
    // the flusher still syncs it within a few intervals.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.unsynced_partitions() > 0 {
        assert!(
            Instant::now() < deadline,
            "an append stayed unsynced for 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A log that keeps no interval leaves it to the next flush.
    let never = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(never.path(), small_segments()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    log.append("t", 0, &[rec(1)]).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(log.unsynced_partitions(), 1);
    log.flush().unwrap();
    assert_eq!(log.unsynced_partitions(), 0);
}

/// One process at a time: a second open of a data directory in use fails, naming the
/// holder's pid; once the first is closed the directory opens again, with its data.
#[test]
fn a_data_directory_in_use_is_not_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    log.append("t", 0, &[rec(1)]).unwrap();
    match EmbeddedLog::open(dir.path(), small_segments()) {
        Err(e @ LogError::Locked { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&format!("pid {}", std::process::id())),
                "{message}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a directory in use was opened a second time"),
    }
    drop(log);
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!(values(&log, "t", 0, 0, 10), ["value-1"]);
}

/// A segment that rolls is synced with the partition's next sync (a flush, the flusher),
/// not by the roll under the partition's lock. A power cut after several rolls that were
/// not flushed leaves a log that opens, holding its records in order with no gap, every
/// flushed one among them; one after a flush keeps every record.
#[test]
fn rolled_segments_are_synced_with_the_next_sync() {
    let segments = |dir: &std::path::Path| {
        walk(dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .count()
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        for i in 0..40 {
            log.append("t", 0, &[rec(i)]).unwrap();
        }
        log.flush().unwrap();
        let before = segments(dir.path());
        // Several segments' worth more, none flushed.
        for i in 40..200 {
            log.append("t", 0, &[rec(i)]).unwrap();
        }
        assert!(segments(dir.path()) >= before + 3, "the segments rolled");
        log.power_cut().unwrap();
    }
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    let kept = values(&log, "t", 0, 0, 1000);
    assert!(kept.len() >= 40, "flushed records lost: {}", kept.len());
    let want: Vec<String> = (0..kept.len()).map(|i| format!("value-{i}")).collect();
    assert_eq!(
        kept, want,
        "the records left are not the log's first ones in order"
    );
    // Rolled again and flushed: all of it survives.
    let from = kept.len() as u64;
    for i in from..from + 160 {
        log.append("t", 0, &[rec(i)]).unwrap();
    }
    log.flush().unwrap();
    log.power_cut().unwrap();
    drop(log);
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    let kept = values(&log, "t", 0, 0, 1000);
    let want: Vec<String> = (0..from + 160).map(|i| format!("value-{i}")).collect();
    assert_eq!(kept, want);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
