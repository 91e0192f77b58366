//! The Kafka log against a real Kafka-API broker (tansu, installed by scripts/test.sh):
//! topics, appends, reads from any offset, and a persistent query that resumes after a
//! restart from the offsets the engine checkpointed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_engine::Engine;
use weir_kafka::KafkaLog;
use weir_log::{Header, Log, LogError, Record, TopicConfig};

struct Broker {
    child: Child,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    for candidate in ["tansu".to_string(), format!("{home}/.cargo/bin/tansu")] {
        if Command::new(&candidate)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return candidate;
        }
    }
    panic!("tansu is not installed: run scripts/test.sh --setup (it runs `cargo install tansu`)");
}

/// Starts a broker on a free port with SQLite storage (whose offsets are exact).
fn broker() -> Broker {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        // tansu resolves the SQLite path against its working directory.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tansu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    Broker {
        child,
        bootstrap: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn read_all(
    log: &dyn Log,
    topic: &str,
    partition: u32,
    expected: usize,
) -> Vec<weir_log::StoredRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut from = 0;
    while out.len() < expected && Instant::now() < deadline {
        let batch = log.read(topic, partition, from, 1000).unwrap();
        if let Some(last) = batch.last() {
            from = last.offset + 1;
        }
        out.extend(batch);
    }
    out
}

#[test]
fn topics_appends_and_reads_on_a_broker() {
    let b = broker();
    let log = KafkaLog::connect(&b.bootstrap).unwrap();
    let config = TopicConfig {
        partitions: 2,
        ..Default::default()
    };
    log.create_topic("cars", config.clone()).unwrap();
    // Created on demand: again with the same layout is fine, another is not.
    log.create_topic("cars", config).unwrap();
    assert!(matches!(
        log.create_topic("cars", TopicConfig::default()),
        Err(LogError::PartitionMismatch { .. })
    ));
    assert_eq!(log.topic("cars").unwrap().unwrap().config.partitions, 2);
    assert!(log.list_topics().unwrap().iter().any(|t| t.name == "cars"));
    assert!(log.topic("nope").unwrap().is_none());

    let records: Vec<Record> = (0..10)
        .map(|i| {
            let mut r = Record::new(
                Some(format!("k{i}").as_bytes()),
                (i != 3)
                    .then(|| format!("v{i}"))
                    .as_deref()
                    .map(str::as_bytes),
                1_000 + i,
            );
            r.headers.push(Header {
                name: "h".into(),
                value: Some(vec![i as u8]),
            });
            r
        })
        .collect();
    assert_eq!(log.append("cars", 1, &records).unwrap(), 0);
    assert_eq!(log.append("cars", 1, &records[..2]).unwrap(), 10);
    let all = read_all(&log, "cars", 1, 12);
    assert_eq!(all.len(), 12);
    assert_eq!(all[3].record.value, None, "a tombstone stays a tombstone");
    assert_eq!(all[4].record, records[4]);
    assert_eq!(all[11].offset, 11);
    // Reading again from the middle, as a restarted query does.
    let tail = log.read("cars", 1, 7, 100).unwrap();
    assert_eq!(tail.first().map(|r| r.offset), Some(7));
    assert_eq!(log.offsets("cars", 1).unwrap(), (0, 12));
    assert!(log.read("cars", 0, 0, 10).unwrap().is_empty());
    log.delete_topic("cars").unwrap();
}

/// A server asks about a topic before another server creates it (a sink, a command log):
/// once created, the first one sees it, its ends and its records, without a restart.
#[test]
fn a_topic_another_client_creates_later_is_seen() {
    let b = broker();
    let asker = KafkaLog::connect(&b.bootstrap).unwrap();
    let creator = KafkaLog::connect(&b.bootstrap).unwrap();
    let before = asker.offsets("later", 2);
    assert!(
        matches!(before, Err(LogError::UnknownTopic(_))),
        "{before:?}"
    );
    assert!(asker.topic("later").unwrap().is_none());
    creator
        .create_topic(
            "later",
            TopicConfig {
                partitions: 4,
                ..Default::default()
            },
        )
        .unwrap();
    let records: Vec<Record> = (0..5)
        .map(|i| Record::new(None, Some(format!("v{i}").as_bytes()), 1_000 + i))
        .collect();
    creator.append("later", 2, &records).unwrap();
    assert_eq!(asker.offsets("later", 2).unwrap(), (0, 5));
    assert_eq!(asker.topic("later").unwrap().unwrap().config.partitions, 4);
    assert_eq!(read_all(&asker, "later", 2, 5).len(), 5);
}

const QUERIES: &str = "
CREATE STREAM SENSORS (CAR STRING KEY, SPEED DOUBLE) WITH (kafka_topic='sensors', value_format='JSON', partitions=2);
SET 'auto.offset.reset' = 'earliest';
CREATE STREAM FAST AS SELECT CAR, SPEED * 1.609 AS KMH FROM SENSORS WHERE SPEED > 50;
";

fn produce(log: &dyn Log, from: u32, to: u32) {
    for i in from..to {
        let value = format!(r#"{{"SPEED": {}}}"#, i % 100);
        log.produce(
            "sensors",
            Record::new(
                Some(format!("car{}", i % 7).as_bytes()),
                Some(value.as_bytes()),
                i as i64,
            ),
        )
        .unwrap();
    }
    log.flush().unwrap();
}

fn sink_count(log: &dyn Log) -> usize {
    (0..2)
        .map(|p| log.read_to_end("FAST", p, 0).unwrap_or_default().len())
        .sum()
}

fn run_until(engine: &mut Engine, log: &dyn Log, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink_count(log) < expected && Instant::now() < deadline {
        if engine.run_once().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    sink_count(log)
}

#[test]
fn a_persistent_query_on_kafka_resumes_from_its_own_offsets() {
    let b = broker();
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(&b.bootstrap).unwrap());
    let mut engine = Engine::open(log.clone()).unwrap();
    engine.execute_sql(QUERIES).unwrap();
    produce(log.as_ref(), 0, 400);
    // Speeds 51..99 of every 100: 49 per 100.
    assert_eq!(run_until(&mut engine, log.as_ref(), 196), 196);
    // As a server's shutdown does: the progress since the last checkpoint is saved.
    let id = engine.query_metrics()[0].id.clone();
    let read = engine.query_metrics()[0].stats.consumed;
    engine.close().unwrap();
    drop(engine);
    // ...and committed to the query's consumer group, where Kafka's lag tools look.
    let group = weir_engine::consumer_group(weir_engine::DEFAULT_SERVICE_ID, &id);
    assert_eq!(group, format!("_confluent-ksql-default_query_{id}"));
    assert_eq!(committed(&b.bootstrap, &group, read), read);

    // A new engine on the same cluster: the command log brings the query back, and it
    // goes on from its checkpoint instead of reading the topic again.
    let mut engine = Engine::open(log.clone()).unwrap();
    assert_eq!(engine.queries().count(), 1);
    produce(log.as_ref(), 400, 600);
    // Until it has read the 200 new records, and then a pass that finds nothing more.
    let consumed = |engine: &Engine| engine.query_metrics()[0].stats.consumed;
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed(&engine) < 200 {
        assert!(
            Instant::now() < deadline,
            "read {} of the 200 new records",
            consumed(&engine)
        );
        if engine.run_once().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(engine.run_once().unwrap(), 0);
    assert_eq!(consumed(&engine), 200, "the topic was read again");
    assert_eq!(
        sink_count(log.as_ref()),
        294,
        "nothing written twice, nothing lost"
    );
    engine.close().unwrap();
    assert_eq!(committed(&b.bootstrap, &group, 600), 600);
}

/// The offsets consumer group `group` has committed on `sensors`, summed over its two
/// partitions: once they reach `expected` (commits are asynchronous), or after 15 s.
fn committed(bootstrap: &str, group: &str, expected: u64) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("sensors", 0);
    tpl.add_partition("sensors", 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sum: u64 = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .map(|c| {
                c.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o as u64),
                        _ => None,
                    })
                    .sum()
            })
            .unwrap_or(0);
        if sum >= expected || Instant::now() > deadline {
            return sum;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const STATEFUL: &str = "
CREATE STREAM READINGS (CAR STRING KEY, SPEED INT) WITH (kafka_topic='readings', value_format='JSON', partitions=1);
CREATE TABLE CARS (CAR STRING PRIMARY KEY, MODEL STRING) WITH (kafka_topic='cars', value_format='JSON', partitions=1);
SET 'auto.offset.reset' = 'earliest';
CREATE TABLE PER_WINDOW AS SELECT CAR, COUNT(*) AS N FROM READINGS WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY CAR;
CREATE STREAM ENRICHED AS SELECT R.CAR AS CAR, C.MODEL, R.SPEED FROM READINGS R JOIN CARS C ON R.CAR = C.CAR;
";

fn values(log: &dyn Log, topic: &str, expected: usize) -> Vec<serde_json::Value> {
    read_all(log, topic, 0, expected)
        .into_iter()
        .map(|r| serde_json::from_slice(&r.record.value.unwrap()).unwrap())
        .collect()
}

fn run_until_written(engine: &mut Engine, log: &dyn Log, topic: &str, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let written = || log.read_to_end(topic, 0, 0).map_or(0, |r| r.len());
    while written() < expected && Instant::now() < deadline {
        if engine.run_once().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A windowed count and a stream-table join on Kafka: a new engine on the same cluster
/// takes their state from the checkpoint records in `_weir_offsets` (the state's
/// changelog), so counts go on and the join still knows the table, which it does not
/// read again.
#[test]
fn windowed_and_join_state_is_recovered_from_kafka() {
    let b = broker();
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(&b.bootstrap).unwrap());
    let mut engine = Engine::open(log.clone()).unwrap();
    engine.execute_sql(STATEFUL).unwrap();
    let car = |name: &str, model: &str| {
        Record::new(
            Some(name.as_bytes()),
            Some(format!(r#"{{"MODEL": "{model}"}}"#).as_bytes()),
            0,
        )
    };
    log.produce("cars", car("a", "roadster")).unwrap();
    log.produce("cars", car("b", "van")).unwrap();
    log.flush().unwrap();
    // The join has read the car table before any reading arrives (a reading that finds
    // no car is dropped by an inner join, as in ksqlDB).
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine
        .query_metrics()
        .iter()
        .find(|m| m.id.starts_with("CSAS_ENRICHED"))
        .is_none_or(|m| m.stats.consumed < 2)
    {
        assert!(Instant::now() < deadline, "the join never read the cars");
        if engine.run_once().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let reading = |name: &str, speed: i32, ts: i64| {
        Record::new(
            Some(name.as_bytes()),
            Some(format!(r#"{{"SPEED": {speed}}}"#).as_bytes()),
            ts,
        )
    };
    for (i, name) in ["a", "b", "a"].iter().enumerate() {
        log.produce("readings", reading(name, 10 * i as i32, 1000 + i as i64))
            .unwrap();
    }
    log.flush().unwrap();
    run_until_written(&mut engine, log.as_ref(), "ENRICHED", 3);
    run_until_written(&mut engine, log.as_ref(), "PER_WINDOW", 3);
    drop(engine);

    let mut engine = Engine::open(log.clone()).unwrap();
    assert_eq!(engine.queries().count(), 2);
    log.produce("readings", reading("a", 99, 5000)).unwrap();
    log.flush().unwrap();
    run_until_written(&mut engine, log.as_ref(), "PER_WINDOW", 4);
    run_until_written(&mut engine, log.as_ref(), "ENRICHED", 4);
    let counts: Vec<i64> = values(log.as_ref(), "PER_WINDOW", 4)
        .iter()
        .map(|v| v["N"].as_i64().unwrap())
        .collect();
    assert_eq!(
        counts,
        [1, 1, 2, 3],
        "the window's count goes on from its state"
    );
    let enriched = values(log.as_ref(), "ENRICHED", 4);
    assert_eq!(enriched.len(), 4, "{enriched:?}");
    assert_eq!(
        enriched[3],
        serde_json::json!({"MODEL": "roadster", "SPEED": 99}),
        "the join's table rows came back with its state"
    );
}
