//! Checkpoints that stay within bounds: a query's state larger than a log record is
//! saved (in several records) and restored; the checkpoints' topic is trimmed to what
//! recovery needs, so it follows the state's size rather than the server's uptime.

mod common;

use std::sync::Arc;

use serde_json::Value;
use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log, Record, TopicConfig};

fn log_config(max_record_bytes: usize) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        fsync: FsyncPolicy::Never,
        max_record_bytes,
        ..Default::default()
    }
}

fn open(dir: &std::path::Path, max_record_bytes: usize) -> (Arc<EmbeddedLog>, Engine) {
    let log = Arc::new(EmbeddedLog::open(dir, log_config(max_record_bytes)).unwrap());
    let engine = Engine::open(log.clone()).unwrap();
    (log, engine)
}

fn errors(engine: &Engine) -> Vec<String> {
    engine
        .queries()
        .filter_map(|q| q.error.as_ref().map(|e| format!("{}: {}", q.id, e.message)))
        .collect()
}

/// The last value written for each key of a table's topic.
fn latest(log: &dyn Log, topic: &str) -> std::collections::BTreeMap<String, Value> {
    log.read_to_end(topic, 0, 0)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.record.key.unwrap()).unwrap(),
                serde_json::from_slice(&r.record.value.unwrap()).unwrap(),
            )
        })
        .collect()
}

/// 100 keys × 150 values of 30 bytes: a state of about 450 KB, in a log whose records
/// may not exceed 64 KiB. The query checkpoints (whole) without an error, and after a
/// restart its lists go on from where they were.
#[test]
fn a_state_larger_than_a_record_is_checkpointed_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, mut e) = open(dir.path(), 64 << 10);
        e.execute_sql(
            "CREATE STREAM s (k VARCHAR KEY, v VARCHAR) WITH (kafka_topic='s', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE TABLE lists AS SELECT k, COLLECT_LIST(v) AS vs FROM s GROUP BY k;",
        )
        .unwrap();
        for round in 0..150 {
            let records: Vec<Record> = (0..100)
                .map(|k| {
                    let value = format!(r#"{{"V":"value-{round:04}-{k:03}-padding-pad"}}"#);
                    Record::new(
                        Some(format!("k{k}").as_bytes()),
                        Some(value.as_bytes()),
                        round,
                    )
                })
                .collect();
            log.append("s", 0, &records).unwrap();
        }
        e.run_until_idle().unwrap();
        assert_eq!(errors(&e), Vec::<String>::new());
        let lists = latest(log.as_ref(), "LISTS");
        assert_eq!(lists["k7"]["VS"].as_array().unwrap().len(), 150);
    }
    let (log, mut e) = open(dir.path(), 64 << 10);
    log.produce(
        "s",
        Record::new(Some(b"k7"), Some(br#"{"V":"after-restart"}"#), 1000),
    )
    .unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(errors(&e), Vec::<String>::new());
    let vs = latest(log.as_ref(), "LISTS")["k7"]["VS"].clone();
    let vs = vs.as_array().unwrap();
    assert_eq!(vs.len(), 151, "the state was not restored whole");
    assert_eq!(vs[0], "value-0000-007-padding-pad");
    assert_eq!(vs[150], "after-restart");
}

/// A GROUP BY checkpointing after every batch, 400 batches: the checkpoints' topic is
/// trimmed as full snapshots supersede what came before, so it keeps a bounded number of
/// records; a restart restores the counts from what is left.
#[test]
fn the_checkpoints_topic_is_trimmed_to_what_recovery_needs() {
    let dir = tempfile::tempdir().unwrap();
    let produce = |log: &dyn Log, round: i64| {
        let records: Vec<Record> = (0..20)
            .map(|k| Record::new(Some(format!("k{k}").as_bytes()), Some(b"{\"N\":1}"), round))
            .collect();
        log.append("s", 0, &records).unwrap();
    };
    {
        let log = Arc::new(EmbeddedLog::open(dir.path(), log_config(8 << 20)).unwrap());
        // Small segments, so trimming (a segment at a time) shows in a short test.
        log.create_topic(
            "_weir_offsets",
            TopicConfig {
                segment_bytes: Some(16 << 10),
                ..Default::default()
            },
        )
        .unwrap();
        let mut e = Engine::open(log.clone()).unwrap();
        e.execute_sql(
            "CREATE STREAM s (k VARCHAR KEY, n INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             SET 'commit.interval.ms'='0';
             CREATE TABLE counts AS SELECT k, COUNT(*) AS c FROM s GROUP BY k;
             CREATE STREAM copy AS SELECT k, n FROM s;",
        )
        .unwrap();
        for round in 0..400 {
            produce(log.as_ref(), round);
            e.run_until_idle().unwrap();
        }
        let (start, end) = log.offsets("_weir_offsets", 0).unwrap();
        assert!(end >= 800, "only {end} checkpoints were written");
        assert!(start > 0, "nothing was trimmed ({end} records kept)");
        // What is kept: about two full snapshots' worth of checkpoints, plus a segment.
        assert!(end - start < 400, "{} of {end} records kept", end - start);
    }
    let (log, mut e) = open(dir.path(), 8 << 20);
    produce(log.as_ref(), 400);
    e.run_until_idle().unwrap();
    assert_eq!(errors(&e), Vec::<String>::new());
    let counts = latest(log.as_ref(), "COUNTS");
    assert_eq!(counts.len(), 20);
    assert!(counts.values().all(|v| v["C"] == 401), "{counts:?}");
    assert_eq!(log.offsets("COPY", 0).unwrap().1, 401 * 20);
}

/// On a log servers share (Kafka; here the embedded log saying it is shared), the first
/// live member trims the checkpoints' topic behind the earliest checkpoint any recovery
/// of the catalog's queries would start from — what no server could do alone, each
/// holding only some queries — and the members topic behind a snapshot of its claims;
/// a restart from the trimmed topics resumes exactly: every input's output once, every
/// count exact.
#[test]
fn checkpoints_on_a_shared_log_are_trimmed_and_recovery_is_still_exact() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let log = Arc::new(common::Faulty::open(dir.path()));
        log.shared.store(true, Ordering::SeqCst);
        let e = Engine::open_member(
            log.clone(),
            Default::default(),
            "svc",
            std::time::Duration::from_secs(10),
            Default::default(),
        )
        .unwrap();
        (log, e)
    };
    // Rounds of 5,000 events over 5,000 keys: each round changes every group.
    let rounds = |log: &dyn Log, e: &mut Engine, rounds: std::ops::Range<u64>| {
        for round in rounds {
            let records: Vec<Record> = (0..5_000u64)
                .map(|k| {
                    let id = round * 5_000 + k;
                    let v = format!(r#"{{"ID":{id},"K":{k}}}"#);
                    Record::new(None, Some(v.as_bytes()), 0)
                })
                .collect();
            log.append("events", (round % 2) as u32, &records).unwrap();
            e.run_until_idle().unwrap();
        }
    };
    const OFFSETS: &str = "_weir_svc_offsets";
    {
        let (log, mut e) = open();
        log.create_topic(
            "events",
            TopicConfig {
                partitions: 2,
                ..Default::default()
            },
        )
        .unwrap();
        e.execute_sql(
            "SET 'auto.offset.reset'='earliest';\n\
             SET 'weir.checkpoint.interval.ms'='0';\n\
             CREATE STREAM EVENTS (ID BIGINT, K INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
             CREATE STREAM OUT WITH (PARTITIONS=2) AS SELECT ID, K FROM EVENTS;\n\
             CREATE TABLE PER_K WITH (PARTITIONS=2) AS SELECT K, COUNT(*) AS N FROM EVENTS GROUP BY K;",
        )
        .unwrap();
        rounds(log.as_ref(), &mut e, 0..30);
        let (start, end) = log.offsets(OFFSETS, 0).unwrap();
        let trimmed = e.trim_shared_checkpoints().unwrap();
        let bytes = |log: &common::Faulty| -> usize {
            log.read_to_end(OFFSETS, 0, 0)
                .unwrap()
                .iter()
                .map(|r| r.record.value.as_ref().map_or(0, Vec::len))
                .sum()
        };
        println!(
            "shared checkpoints: {} records ({start}..{end}), trimmed to start at {trimmed}; {} KB kept",
            end - start,
            bytes(&log) / 1000
        );
        assert!(start == 0 && trimmed > 0 && trimmed < end, "{trimmed}");
        // The members topic too: what its snapshot holds is deleted.
        let (members_start, members_end) = log.offsets("_weir_svc_members", 0).unwrap();
        println!("members topic: {members_end} records, trimmed to start at {members_start}");
        assert!(members_start > 0 && members_start < members_end);
        e.close().unwrap();
    }
    // A restart from the trimmed topic resumes both queries where they stopped.
    let (log, mut e) = open();
    rounds(log.as_ref(), &mut e, 30..34);
    e.close().unwrap();
    let mut seen = std::collections::HashMap::<u64, u32>::new();
    let mut counts = std::collections::HashMap::<Vec<u8>, u64>::new();
    for p in 0..2 {
        for r in log.read_to_end("OUT", p, 0).unwrap() {
            let v: Value = serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap();
            *seen.entry(v["ID"].as_u64().unwrap()).or_default() += 1;
        }
        for r in log.read_to_end("PER_K", p, 0).unwrap() {
            let v: Value = serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap();
            counts.insert(r.record.key.unwrap(), v["N"].as_u64().unwrap());
        }
    }
    assert_eq!(seen.len(), 34 * 5_000);
    assert!(seen.values().all(|n| *n == 1), "outputs written twice");
    assert_eq!(counts.len(), 5_000);
    assert!(counts.values().all(|n| *n == 34), "counts wrong");
}

/// A log servers share (as Kafka is) with a topic `events` of 4 partitions.
fn shared_log_with_events(dir: &std::path::Path) -> Arc<common::Faulty> {
    let log = Arc::new(common::Faulty::open(dir));
    log.shared.store(true, std::sync::atomic::Ordering::SeqCst);
    log.create_topic(
        "events",
        TopicConfig {
            partitions: 4,
            ..Default::default()
        },
    )
    .unwrap();
    log
}

/// A server of service `svc` on `log`.
fn member_of(log: &Arc<common::Faulty>, session: std::time::Duration) -> Engine {
    Engine::open_member(
        log.clone(),
        Default::default(),
        "svc",
        session,
        Default::default(),
    )
    .unwrap()
}

/// Per key of sink `topic` (4 partitions), its (N, S) changes as they came out.
fn changes_of_n_and_s(
    log: &common::Faulty,
    topic: &str,
) -> std::collections::BTreeMap<String, Vec<(i64, i64)>> {
    let mut seen: std::collections::BTreeMap<String, Vec<(i64, i64)>> = Default::default();
    for p in 0..4 {
        for r in log.read_to_end(topic, p, 0).unwrap() {
            let key = String::from_utf8(r.record.key.unwrap()).unwrap();
            let v: Value = serde_json::from_slice(&r.record.value.unwrap()).unwrap();
            seen.entry(key)
                .or_default()
                .push((v["N"].as_i64().unwrap(), v["S"].as_i64().unwrap()));
        }
    }
    seen
}

/// Each key's N (a COUNT) went up one by one from 1 ([`changes_of_n_and_s`]'s changes).
fn assert_each_n_goes_one_by_one(seen: &std::collections::BTreeMap<String, Vec<(i64, i64)>>) {
    common::assert_counts_go_one_by_one(
        seen.iter()
            .map(|(k, s)| (k.clone(), s.iter().map(|(n, _)| *n).collect()))
            .collect(),
    );
}

/// Two servers sharing a service id: A is running when B joins and starts a query over 4
/// partitions. A applies B's statement within a moment (not at its next heartbeat, a
/// fifth of the session later) and divides the query with B, whom it has not yet seen
/// beat: it takes its 2 partitions, not all 4 (taking all would race B's claims, hand
/// partitions back and forth and reprocess what was handed). Then B takes the other 2:
/// every input's output once.
#[test]
fn a_server_divides_a_query_another_started_with_it_at_once() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = shared_log_with_events(dir.path());
    // A 60 s session: heartbeats every 12 s, so A does not read B's before the end.
    let member = || member_of(&log, Duration::from_secs(60));
    for p in 0..4u32 {
        let records: Vec<Record> = (0..100u32)
            .map(|i| {
                let v = format!(r#"{{"ID":{}}}"#, p * 1000 + i);
                Record::new(None, Some(v.as_bytes()), 0)
            })
            .collect();
        log.append("events", p, &records).unwrap();
    }
    let began = Instant::now();
    let mut a = member();
    let mut b = member();
    b.execute_sql(
        "SET 'auto.offset.reset'='earliest';\n\
         CREATE STREAM EVENTS (ID INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
         CREATE STREAM OUT WITH (PARTITIONS=4) AS SELECT ID FROM EVENTS;",
    )
    .unwrap();
    let out = |log: &common::Faulty| -> Vec<u64> {
        let mut ids: Vec<u64> = (0..4)
            .flat_map(|p| log.read_to_end("OUT", p, 0).unwrap())
            .map(|r| {
                let v: Value = serde_json::from_slice(&r.record.value.unwrap()).unwrap();
                v["ID"].as_u64().unwrap()
            })
            .collect();
        ids.sort();
        ids
    };
    // A alone, until it has taken and finished its share (or 5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while out(&log).len() < 200 && Instant::now() < deadline {
        a.run_once().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        a.run_once().unwrap();
    }
    assert!(
        began.elapsed() < Duration::from_secs(11),
        "took past A's next heartbeat: the test proves nothing"
    );
    let by_a = out(&log);
    let partitions: std::collections::BTreeSet<u64> = by_a.iter().map(|id| id / 1000).collect();
    assert_eq!(
        (by_a.len(), partitions.len()),
        (200, 2),
        "A wrote the outputs of partitions {partitions:?}"
    );
    // B takes the rest.
    b.run_until_idle().unwrap();
    a.run_until_idle().unwrap();
    let all = out(&log);
    let expected: Vec<u64> = (0..4u64)
        .flat_map(|p| (0..100).map(move |i| p * 1000 + i))
        .collect();
    assert_eq!(all, expected, "every input's output once");
    assert_eq!(errors(&a), Vec::<String>::new());
    assert_eq!(errors(&b), Vec::<String>::new());
}

/// Servers A and B share a GROUP BY of a stream's key over 4 partitions: its state
/// divides by partition, not whole to one server. A takes 2 partitions (only those
/// partitions' cars come out of it), B the other 2; both go on through a second round.
/// Then A, mid-way through a third round (outputs written past its last checkpoint),
/// stops without a checkpoint; B takes A's partitions with their groups from A's last
/// checkpoint. Every car's COUNT goes 1, 2, 3, … in the sink (nothing counted twice,
/// nothing restarted) and ends at the car's number of records, its SUM likewise.
#[test]
fn a_group_by_of_the_key_divides_by_partition_and_each_partitions_groups_move_with_it() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = shared_log_with_events(dir.path());
    let member = || member_of(&log, Duration::from_secs(3));
    // Car c's records go to partition c % 4 (as a keyed producer puts them); each
    // round appends `per_car` records of every car, V = 1, 2, 3, ... within the round.
    const CARS: u32 = 40;
    let append = |per_car: u32| {
        for p in 0..4u32 {
            let records: Vec<Record> = (0..per_car)
                .flat_map(|i| {
                    (0..CARS).filter(move |c| c % 4 == p).map(move |c| {
                        let key = format!("car{c}");
                        let v = format!(r#"{{"V":{}}}"#, i + 1);
                        Record::new(Some(key.as_bytes()), Some(v.as_bytes()), 0)
                    })
                })
                .collect();
            log.append("events", p, &records).unwrap();
        }
    };
    // Per car, its (COUNT, SUM) changes as they came out of the sink.
    let out = |log: &common::Faulty| changes_of_n_and_s(log, "COUNTS");
    let partitions_of = |cars: &BTreeMap<String, Vec<(i64, i64)>>| -> BTreeSet<u32> {
        cars.keys()
            .map(|c| c.trim_start_matches("car").parse::<u32>().unwrap() % 4)
            .collect()
    };
    append(50);
    let mut a = member();
    let mut b = member();
    b.execute_sql(
        "SET 'auto.offset.reset'='earliest';\n\
         SET 'weir.checkpoint.interval.ms'='3600000';\n\
         CREATE STREAM EVENTS (CAR STRING KEY, V INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
         CREATE TABLE COUNTS WITH (PARTITIONS=4) AS SELECT CAR, COUNT(*) AS N, SUM(V) AS S FROM EVENTS GROUP BY CAR;",
    )
    .unwrap();
    // A alone first: it takes its share, 2 partitions, and folds only their cars.
    let deadline = Instant::now() + Duration::from_secs(10);
    while out(&log).len() < CARS as usize / 2 && Instant::now() < deadline {
        a.run_once().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    a.run_until_idle().unwrap();
    let by_a = out(&log);
    assert_eq!(
        (by_a.len(), partitions_of(&by_a).len()),
        (CARS as usize / 2, 2),
        "A folded the cars of partitions {:?}",
        partitions_of(&by_a)
    );
    // B takes the other two.
    b.run_until_idle().unwrap();
    assert_eq!(out(&log).len(), CARS as usize);
    // A second round on both.
    append(50);
    a.run_until_idle().unwrap();
    b.run_until_idle().unwrap();
    // A third, of which A does part (a step per partition: more than a step reads),
    // then stops with its outputs past its last checkpoint.
    append(2_000);
    b.run_until_idle().unwrap();
    let before = out(&log).values().map(Vec::len).sum::<usize>();
    a.run_once().unwrap();
    let after = out(&log).values().map(Vec::len).sum::<usize>();
    assert!(after > before, "A wrote nothing of the third round");
    drop(a);
    // B takes A's partitions, with their groups, and finishes.
    let total = (50 + 50 + 2_000) as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        b.run_until_idle().unwrap();
        if out(&log).values().all(|s| s.len() >= total) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(errors(&b), Vec::<String>::new());
    let seen = out(&log);
    assert_each_n_goes_one_by_one(&seen);
    let sum = |per_car: i64| per_car * (per_car + 1) / 2;
    for (car, s) in &seen {
        assert_eq!(
            s.last().copied(),
            Some((total as i64, sum(50) * 2 + sum(2_000))),
            "{car}'s last COUNT and SUM"
        );
    }
    assert_eq!(seen.len(), CARS as usize);
}

/// `SET 'weir.cluster.divide.state'='false'` keeps a GROUP BY of the key whole: the
/// server that holds it folds every partition's cars, the other none.
#[test]
fn a_group_by_of_the_key_stays_whole_when_the_session_says_so() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let log = shared_log_with_events(dir.path());
    for p in 0..4u32 {
        let records: Vec<Record> = (0..40u32)
            .filter(|c| c % 4 == p)
            .map(|c| {
                let key = format!("car{c}");
                Record::new(Some(key.as_bytes()), Some(br#"{"V":1}"#.as_slice()), 0)
            })
            .collect();
        log.append("events", p, &records).unwrap();
    }
    let mut a = member_of(&log, Duration::from_secs(3));
    let mut b = member_of(&log, Duration::from_secs(3));
    b.execute_sql(
        "SET 'auto.offset.reset'='earliest';\n\
         SET 'weir.cluster.divide.state'='false';\n\
         CREATE STREAM EVENTS (CAR STRING KEY, V INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
         CREATE TABLE COUNTS WITH (PARTITIONS=4) AS SELECT CAR, COUNT(*) AS N FROM EVENTS GROUP BY CAR;",
    )
    .unwrap();
    let cars = |log: &common::Faulty| -> usize {
        (0..4)
            .map(|p| log.read_to_end("COUNTS", p, 0).unwrap().len())
            .sum()
    };
    // Both have seen each other (a heartbeat of a 3 s session is 0.6 s).
    std::thread::sleep(Duration::from_millis(1500));
    a.run_until_idle().unwrap();
    let by_a = cars(&log);
    assert!(by_a == 0 || by_a == 40, "A folded {by_a} of the 40 cars");
    b.run_until_idle().unwrap();
    assert_eq!(cars(&log), 40);
}

/// A windowed GROUP BY of the key with EMIT FINAL, divided between two servers, one of
/// which stops mid-backlog: once a record far later closes them, every car's every
/// window is written once, with its count. (The grace is long: a query's window clock
/// is the newest record of the partitions it reads, so a backlog read partition after
/// partition would otherwise make the later partitions' records late.)
#[test]
fn a_divided_windowed_group_by_emits_each_final_window_once() {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = shared_log_with_events(dir.path());
    const CARS: u32 = 40;
    // (A record timestamp of 0 would be taken for none.)
    const BASE: i64 = 1_700_000_000_000;
    // Per car, `per_window` records in each 10 s window of `windows`, then (closing the
    // last of them) one at `close_at` ms.
    let append = |windows: std::ops::Range<i64>, per_window: i64, close_at: Option<i64>| {
        for p in 0..4u32 {
            let mut records = Vec::new();
            for w in windows.clone() {
                for i in 0..per_window {
                    for c in (0..CARS).filter(|c| c % 4 == p) {
                        let key = format!("car{c}");
                        records.push(Record::new(
                            Some(key.as_bytes()),
                            Some(br#"{"V":1}"#.as_slice()),
                            BASE + w * 10_000 + i,
                        ));
                    }
                }
            }
            if let Some(t) = close_at {
                for c in (0..CARS).filter(|c| c % 4 == p) {
                    let key = format!("car{c}");
                    records.push(Record::new(
                        Some(key.as_bytes()),
                        Some(br#"{"V":1}"#.as_slice()),
                        BASE + t,
                    ));
                }
            }
            log.append("events", p, &records).unwrap();
        }
    };
    // Per (car, window start), the counts written.
    let out = |log: &common::Faulty| -> BTreeMap<(String, i64), Vec<i64>> {
        let mut seen: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
        for p in 0..4 {
            for r in log.read_to_end("PER_WINDOW", p, 0).unwrap() {
                let key = r.record.key.unwrap();
                let (car, start) = key.split_at(key.len() - 8);
                let start = i64::from_be_bytes(start.try_into().unwrap());
                let v: Value = serde_json::from_slice(&r.record.value.unwrap()).unwrap();
                seen.entry((String::from_utf8(car.to_vec()).unwrap(), start))
                    .or_default()
                    .push(v["N"].as_i64().unwrap());
            }
        }
        seen
    };
    append(0..3, 50, None);
    let mut a = member_of(&log, Duration::from_secs(3));
    let mut b = member_of(&log, Duration::from_secs(3));
    b.execute_sql(
        "SET 'auto.offset.reset'='earliest';\n\
         SET 'weir.checkpoint.interval.ms'='3600000';\n\
         CREATE STREAM EVENTS (CAR STRING KEY, V INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
         CREATE TABLE PER_WINDOW WITH (PARTITIONS=4) AS SELECT CAR, COUNT(*) AS N FROM EVENTS \
         WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 1 HOUR) GROUP BY CAR EMIT FINAL;",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    a.run_until_idle().unwrap();
    b.run_until_idle().unwrap();
    // Nothing closed yet.
    assert_eq!(out(&log).len(), 0);
    append(3..6, 2_000, None);
    b.run_until_idle().unwrap();
    a.run_once().unwrap();
    drop(a);
    // B takes A's partitions (at its next heartbeat) and reads every one to its end;
    // then a record two hours on closes every window.
    let per_partition = (CARS as u64 / 4) * (3 * 50 + 3 * 2_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !b
            .queries()
            .all(|q| q.offsets.iter().all(|o| *o == per_partition))
    {
        b.run_until_idle().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    append(0..0, 0, Some(7_200_000));
    while Instant::now() < deadline && out(&log).len() < 6 * CARS as usize {
        b.run_until_idle().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(errors(&b), Vec::<String>::new());
    let seen = out(&log);
    assert_eq!(seen.len(), 6 * CARS as usize, "every car's six windows");
    for ((car, start), counts) in &seen {
        let expected = if *start < BASE + 30_000 { 50 } else { 2_000 };
        assert_eq!(counts, &vec![expected], "{car}'s window at {start}");
    }
}

/// A GROUP BY of a value column, on servers sharing work, written as ksqlDB would plan
/// it: a stream re-keyed by the column (`PARTITION BY`, stateless), then a GROUP BY of
/// that stream's key. Both divide by partition between two servers: a region's records
/// all reach one partition of the re-keyed stream, so each server folds only the
/// regions of its partitions. One server stops mid-backlog with outputs past its last
/// checkpoint; the other takes its partitions of both queries, and every region's counts
/// go up one by one to its total: nothing lost, nothing folded twice.
#[test]
fn a_group_by_of_a_column_over_a_stream_rekeyed_by_it_divides_between_servers() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = shared_log_with_events(dir.path());
    const CARS: u32 = 40;
    const REGIONS: u32 = 12;
    // Car c's records go to partition c % 4; its i-th record of a round is in region
    // (7c + i) % 12 with V = i + 1, so every region has records of every partition.
    let region = |c: u32, i: u32| (7 * c + i) % REGIONS;
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut append = |per_car: u32| {
        for p in 0..4u32 {
            let mut records = Vec::new();
            for i in 0..per_car {
                for c in (0..CARS).filter(|c| c % 4 == p) {
                    let r = format!("r{}", region(c, i));
                    let e = expected.entry(r.clone()).or_default();
                    *e = (e.0 + 1, e.1 + i as i64 + 1);
                    let v = format!(r#"{{"REGION":"{r}","V":{}}}"#, i + 1);
                    let key = format!("car{c}");
                    records.push(Record::new(Some(key.as_bytes()), Some(v.as_bytes()), 0));
                }
            }
            log.append("events", p, &records).unwrap();
        }
    };
    // Per region, its (COUNT, SUM) changes as they came out of the sink.
    let out = |log: &common::Faulty| changes_of_n_and_s(log, "PER_REGION");
    append(30);
    let mut a = member_of(&log, Duration::from_secs(3));
    let mut b = member_of(&log, Duration::from_secs(3));
    b.execute_sql(
        "SET 'auto.offset.reset'='earliest';\n\
         SET 'weir.checkpoint.interval.ms'='3600000';\n\
         CREATE STREAM EVENTS (CAR STRING KEY, REGION STRING, V INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
         CREATE STREAM BY_REGION WITH (PARTITIONS=4) AS SELECT * FROM EVENTS PARTITION BY REGION;\n\
         CREATE TABLE PER_REGION WITH (PARTITIONS=4) AS SELECT REGION, COUNT(*) AS N, SUM(V) AS S FROM BY_REGION GROUP BY REGION;",
    )
    .unwrap();
    // A alone first: it re-keys the records of its two source partitions and folds the
    // regions of its two partitions of BY_REGION, so some regions and not all.
    let deadline = Instant::now() + Duration::from_secs(10);
    while out(&log).is_empty() && Instant::now() < deadline {
        a.run_once().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    a.run_until_idle().unwrap();
    let by_a = out(&log).len();
    assert!(
        by_a > 0 && by_a < REGIONS as usize,
        "A alone folded {by_a} of the {REGIONS} regions (whole: all or none)"
    );
    // Both on, then a second round of which A does part, and A stops.
    let deadline = Instant::now() + Duration::from_secs(10);
    while out(&log).len() < REGIONS as usize && Instant::now() < deadline {
        b.run_until_idle().unwrap();
        a.run_until_idle().unwrap();
    }
    append(1_000);
    b.run_until_idle().unwrap();
    let before = out(&log).values().map(Vec::len).sum::<usize>();
    a.run_once().unwrap();
    a.run_once().unwrap();
    let after = out(&log).values().map(Vec::len).sum::<usize>();
    assert!(after > before, "A wrote nothing of the second round");
    drop(a);
    // B takes A's partitions of both queries, with their offsets and groups.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        b.run_until_idle().unwrap();
        let seen = out(&log);
        if expected
            .iter()
            .all(|(r, want)| seen.get(r).and_then(|s| s.last()) == Some(want))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(errors(&b), Vec::<String>::new());
    let seen = out(&log);
    assert_each_n_goes_one_by_one(&seen);
    let last: BTreeMap<String, (i64, i64)> = seen
        .iter()
        .map(|(r, s)| (r.clone(), *s.last().unwrap()))
        .collect();
    assert_eq!(last, expected, "each region's last COUNT and SUM");
    // The premise: each region's records are in one partition of the re-keyed stream.
    let mut partitions_of: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for p in 0..4 {
        for r in log.read_to_end("BY_REGION", p, 0).unwrap() {
            let region = String::from_utf8(r.record.key.unwrap()).unwrap();
            partitions_of.entry(region).or_default().insert(p);
        }
    }
    assert!(
        partitions_of.values().all(|p| p.len() == 1),
        "regions over BY_REGION's partitions: {partitions_of:?}"
    );
}
