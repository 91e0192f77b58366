//! Disk faults on the embedded log, injected by failpoint (`WEIR_FAILPOINT`, read once per
//! process: each test runs its faulty half in a child process of this test binary).
//! - A write that fails part-way (a full disk) leaves nothing of itself: the appends
//!   after it are kept, in order, across a reopen.
//! - A failed fsync makes the partition read-only with a clear error: nothing is
//!   acknowledged after it, reads go on, and a restart recovers what the disk holds.

use std::process::Command;

use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log, LogError, Record, TopicConfig};

fn rec(i: u64) -> Record {
    Record::new(None, Some(format!("value-{i}").as_bytes()), i as i64)
}

fn values(log: &dyn Log) -> Vec<String> {
    log.read_to_end("t", 0, 0)
        .unwrap()
        .into_iter()
        .map(|r| {
            format!(
                "{}:{}",
                r.offset,
                String::from_utf8(r.record.value.unwrap()).unwrap()
            )
        })
        .collect()
}

/// Runs test `name` of this binary in a child with `failpoint` armed and `CHILD_DIR` set.
fn in_child(name: &str, failpoint: &str, dir: &std::path::Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("WEIR_FAILPOINT", failpoint)
        .env("CHILD_DIR", dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    text
}

#[test]
fn a_write_that_fails_part_way_leaves_nothing_and_later_appends_survive() {
    if let Ok(dir) = std::env::var("CHILD_DIR") {
        let log = EmbeddedLog::open(&dir, EmbeddedLogConfig::default()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        for i in 0..5 {
            // The third append (after the first two) fails part-way.
            let r = log.append("t", 0, &[rec(i), rec(i + 100)]);
            match i {
                2 => assert!(r.unwrap_err().to_string().contains("injected write error")),
                _ => {
                    r.unwrap();
                }
            }
        }
        assert_eq!(values(&log).len(), 8);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    in_child(
        "a_write_that_fails_part_way_leaves_nothing_and_later_appends_survive",
        "write_error:2",
        dir.path(),
    );
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    assert_eq!(
        values(&log),
        [
            "0:value-0",
            "1:value-100",
            "2:value-1",
            "3:value-101",
            "4:value-3",
            "5:value-103",
            "6:value-4",
            "7:value-104"
        ]
    );
}

#[test]
fn a_failed_fsync_makes_the_partition_read_only_until_a_restart() {
    if let Ok(dir) = std::env::var("CHILD_DIR") {
        let log = EmbeddedLog::open(
            &dir,
            EmbeddedLogConfig {
                fsync: FsyncPolicy::Always,
                ..Default::default()
            },
        )
        .unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        log.create_topic("other", TopicConfig::default()).unwrap();
        // The first append is synced; the second append's fsync fails.
        log.append("t", 0, &[rec(0)]).unwrap();
        let failed = log.append("t", 0, &[rec(1)]).unwrap_err();
        assert!(matches!(failed, LogError::Failed { .. }), "{failed}");
        // Not retried: the partition takes nothing more, and says why.
        let again = log.append("t", 0, &[rec(2)]).unwrap_err();
        assert!(
            again
                .to_string()
                .contains("read-only after a failed write to disk")
                && again.to_string().contains("injected fsync error"),
            "{again}"
        );
        assert!(log.flush().is_err());
        // Reads go on; other partitions too.
        assert_eq!(values(&log).len(), 2);
        log.append("other", 0, &[rec(3)]).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = in_child(
        "a_failed_fsync_makes_the_partition_read_only_until_a_restart",
        "fsync_error:1",
        dir.path(),
    );
    assert!(out.contains("read-only from now on"), "{out}");
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    log.append("t", 0, &[rec(5)]).unwrap();
    assert_eq!(values(&log).last().unwrap(), "2:value-5");
}
