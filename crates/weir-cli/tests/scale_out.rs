//! Servers sharing a service id on one Kafka divide a query's partitions (weir-engine's
//! `cluster`): on the tansu broker, `weir run` A starts a query over a 4-partition topic,
//! B joins and takes a share, A is killed with -9 mid-stream and B takes its partitions,
//! then C joins and takes a share. Every input record's output must be in the sink (none
//! lost); duplicates are counted and printed. Beside it, an aggregation over the same
//! events: a COUNT(*) GROUP BY V runs whole on one server at a time, its state moving with
//! it; a COUNT(*) GROUP BY the events' key divides by partition as the stateless query
//! does, each partition's groups moving with the partition. Every count must be exact.
//! (One aggregation per run: the broker, tansu on SQLite, is what limits these runs.)

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_kafka::KafkaLog;
use weir_log::{Log, Record, TopicConfig, partition_for_key};

const SESSION_MS: &str = "6000";
const BEFORE: u64 = 2_000;
const STREAMED: u64 = 8_000;
const TOTAL: u64 = 9_000;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weir run` on the broker as a member of service `scale`, its output (stdout and
/// stderr) in `out`.
fn server(bootstrap: &str, queries: Option<&std::path::Path>, out: &std::path::Path) -> Proc {
    // (`WEIR_BIN`: another build of weir, to run this test over and over while the
    // tree is rebuilt.)
    let bin = std::env::var_os("WEIR_BIN").unwrap_or(env!("CARGO_BIN_EXE_weir").into());
    let mut cmd = Command::new(bin);
    cmd.args([
        "run",
        "--kafka-bootstrap",
        bootstrap,
        "--service-id",
        "scale",
    ])
    .args(["--session-timeout-ms", SESSION_MS, "--progress-every", "0"])
    // tansu 0.6 on SQLite has no DeleteRecords.
    .arg("--no-checkpoint-trim");
    if let Some(q) = queries {
        cmd.arg("--queries-file").arg(q);
    }
    let log = std::fs::File::create(out).unwrap();
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    Proc(cmd.spawn().expect("starting weir run"))
}

fn output_of(path: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s));
    s
}

/// Appends events `from..to` (keyed by `ID % 97`, so by partition as Kafka's producer
/// would) to `events`.
fn produce(log: &dyn Log, from: u64, to: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut by_partition: HashMap<u32, Vec<Record>> = HashMap::new();
    for id in from..to {
        let key = (id % 97).to_string().into_bytes();
        let value = format!(r#"{{"ID":{id},"V":{}}}"#, id % 1000).into_bytes();
        by_partition
            .entry(partition_for_key(&key, 4))
            .or_default()
            .push(Record::new(
                Some(key.as_slice()),
                Some(value.as_slice()),
                now,
            ));
    }
    for (p, records) in by_partition {
        log.append("events", p, &records).unwrap();
    }
}

/// How many times each ID is in the sink so far.
fn read_output(log: &dyn Log) -> HashMap<u64, u32> {
    let mut seen = HashMap::new();
    for p in 0..4 {
        let Ok(records) = log.read_to_end("OUT", p, 0) else {
            continue;
        };
        for r in records {
            let v: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().unwrap_or_default()).unwrap();
            *seen.entry(v["ID"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

fn wait_for(what: &str, dir: &std::path::Path, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            // Whether the broker still answers a new client (tansu's SQLite storage was
            // seen to stop answering altogether).
            let answers = std::fs::read_to_string(dir.join("bootstrap"))
                .ok()
                .and_then(|b| KafkaLog::connect(&b).ok())
                .map(|l| format!("{:?}", l.offsets("events", 0)));
            eprintln!("the broker, asked for events-0's offsets: {answers:?}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nA: {}\nB: {}\nC: {}",
            output_of(&dir.join("a.log")),
            output_of(&dir.join("b.log")),
            output_of(&dir.join("c.log"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The aggregation that runs beside the stateless query.
#[derive(Clone, Copy, PartialEq)]
enum Aggregation {
    /// GROUP BY a value column: whole on one server.
    Whole,
    /// GROUP BY the key: divided by partition.
    ByKey,
}

/// One scenario at a time (each starts its own broker and three servers).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn servers_share_a_query_and_take_over_a_killed_ones_partitions() {
    share_and_take_over(Aggregation::Whole);
}

#[test]
fn servers_share_a_group_by_of_the_key_partition_by_partition() {
    share_and_take_over(Aggregation::ByKey);
}

fn share_and_take_over(aggregation: Aggregation) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = common::broker();
    let bootstrap = format!("127.0.0.1:{}", broker.port);
    std::fs::write(dir.path().join("bootstrap"), &bootstrap).unwrap();
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(&bootstrap).unwrap());
    log.create_topic(
        "events",
        TopicConfig {
            partitions: 4,
            ..Default::default()
        },
    )
    .unwrap();
    produce(log.as_ref(), 0, BEFORE);
    let queries = dir.path().join("q.sql");
    let aggregate = match aggregation {
        Aggregation::Whole => {
            "CREATE TABLE PER_V WITH (KAFKA_TOPIC='PER_V', PARTITIONS=4) AS SELECT V, COUNT(*) AS N FROM EVENTS GROUP BY V;\n"
        }
        Aggregation::ByKey => {
            "CREATE STREAM KEYED (K STRING KEY, ID BIGINT, V INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
             CREATE TABLE PER_K WITH (KAFKA_TOPIC='PER_K', PARTITIONS=4) AS SELECT K, COUNT(*) AS N FROM KEYED GROUP BY K;\n"
        }
    };
    std::fs::write(
        &queries,
        format!(
            "SET 'auto.offset.reset' = 'earliest';\n\
             CREATE STREAM EVENTS (ID BIGINT, V INT) WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON');\n\
             CREATE STREAM OUT WITH (KAFKA_TOPIC='OUT', PARTITIONS=4) AS SELECT ID, V * 2 AS V2 FROM EVENTS;\n\
             {aggregate}"
        ),
    )
    .unwrap();
    // The queries taken partition by partition.
    let divided = if aggregation == Aggregation::ByKey {
        2
    } else {
        1
    };
    let (a_out, b_out, c_out) = (
        dir.path().join("a.log"),
        dir.path().join("b.log"),
        dir.path().join("c.log"),
    );
    let mut a = server(&bootstrap, Some(&queries), &a_out);
    wait_for(
        "A to start the query",
        dir.path(),
        Duration::from_secs(60),
        || {
            output_of(&a_out)
                .matches("took partition(s) [0, 1, 2, 3]")
                .count()
                >= divided
        },
    );
    // B joins (with no statements of its own: it follows the command log) and takes half.
    let _b = server(&bootstrap, None, &b_out);
    wait_for(
        "B to take a share",
        dir.path(),
        Duration::from_secs(60),
        || {
            output_of(&b_out).contains("took partition(s)")
                && output_of(&a_out).contains("handed over")
        },
    );
    // Records keep coming while A is killed mid-stream.
    let producer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut next = BEFORE;
            while next < STREAMED {
                let to = (next + 100).min(STREAMED);
                produce(log.as_ref(), next, to);
                next = to;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    let b_took = || output_of(&b_out).matches("took partition(s)").count();
    wait_for(
        "B to take the killed server's partitions",
        dir.path(),
        Duration::from_secs(60),
        || b_took() >= 2 * divided,
    );
    // C joins and takes a share from B.
    let _c = server(&bootstrap, None, &c_out);
    wait_for(
        "C to take a share",
        dir.path(),
        Duration::from_secs(60),
        || output_of(&c_out).contains("took partition(s)"),
    );
    producer.join().unwrap();
    // Records for every partition after C joined: C writes the output of its share.
    produce(log.as_ref(), STREAMED, TOTAL);
    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        seen = read_output(log.as_ref());
        if seen.len() as u64 >= TOTAL {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let lost = (0..TOTAL).filter(|id| !seen.contains_key(id)).count();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "scale-out: {TOTAL} events, 3 servers (one killed with -9): lost {lost}, duplicates {duplicates}"
    );
    assert_eq!(
        lost,
        0,
        "records lost\nA: {}\nB: {}\nC: {}",
        output_of(&a_out),
        output_of(&b_out),
        output_of(&c_out)
    );
    match aggregation {
        Aggregation::Whole => check_whole(log.as_ref(), [&a_out, &b_out, &c_out]),
        Aggregation::ByKey => check_by_key(log.as_ref(), [&a_out, &b_out, &c_out]),
    }
    // The last server to join holds part of the work: it consumed records.
    assert!(
        output_of(&c_out).contains("consumed "),
        "C consumed nothing: {}",
        output_of(&c_out)
    );
}

/// Servers' outputs: A, B, C.
type Outs<'a> = [&'a std::path::Path; 3];

/// The last count written per key of a table's topic.
fn last_counts(log: &dyn Log, topic: &str) -> HashMap<Vec<u8>, u64> {
    let mut counts = HashMap::new();
    for p in 0..4 {
        for r in log.read_to_end(topic, p, 0).unwrap_or_default() {
            let v: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().unwrap_or_default()).unwrap();
            counts.insert(r.record.key.unwrap_or_default(), v["N"].as_u64().unwrap());
        }
    }
    counts
}

/// The keys whose count is not what `expected` says, sorted.
fn wrong_counts(
    counts: &HashMap<Vec<u8>, u64>,
    expected: impl Fn(&[u8]) -> u64,
) -> Vec<(String, u64)> {
    let mut wrong: Vec<(String, u64)> = counts
        .iter()
        .filter(|(k, n)| **n != expected(k))
        .map(|(k, n)| (String::from_utf8_lossy(k).into_owned(), *n))
        .collect();
    wrong.sort();
    wrong
}

fn assert_none_wrong(wrong: &[(String, u64)], outs: Outs<'_>) {
    assert!(
        wrong.is_empty(),
        "wrong counts: {wrong:?}\nA: {}\nB: {}\nC: {}",
        output_of(outs[0]),
        output_of(outs[1]),
        output_of(outs[2])
    );
}

fn check_whole(log: &dyn Log, outs: Outs<'_>) {
    // The aggregation ran whole on one server at a time (moved with its state when its
    // server was killed or handed it over): every count is exact, none counted twice.
    let mut counts = HashMap::new();
    // (The aggregation may have just moved, under a loaded machine: its new holder
    // reloads and catches up.)
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        counts = last_counts(log, "PER_V");
        if counts.len() == 1000 && counts.values().all(|n| *n >= TOTAL / 1000) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let wrong = wrong_counts(&counts, |_| TOTAL / 1000);
    println!(
        "scale-out: COUNT(*) GROUP BY V over the same events: {} keys, {} with a wrong count",
        counts.len(),
        wrong.len()
    );
    // It moved at least once: A took it first, alone, and kept it until killed or gave it
    // to B when B joined.
    let moves: usize = outs
        .iter()
        .map(|f| output_of(f).matches("took the whole query").count())
        .sum();
    println!("scale-out: the aggregation was taken {moves} times");
    assert!(moves >= 2, "the aggregation never moved");
    assert_eq!(counts.len(), 1000);
    assert_none_wrong(&wrong, outs);
}

/// The GROUP BY of the key: divided (the last server to join took partitions of it), and
/// every key's count exact.
fn check_by_key(log: &dyn Log, outs: Outs<'_>) {
    // Events with ID % 97 == k: TOTAL / 97, one more for the first TOTAL % 97 keys.
    let expected = |k: &[u8]| -> u64 {
        let k: u64 = String::from_utf8_lossy(k).parse().unwrap();
        TOTAL / 97 + u64::from(k < TOTAL % 97)
    };
    let mut counts = HashMap::new();
    // (A partition may have just moved: its new holder reloads and catches up.)
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        counts = last_counts(log, "PER_K");
        if counts.len() == 97 && counts.iter().all(|(k, n)| *n >= expected(k)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let wrong = wrong_counts(&counts, expected);
    println!(
        "scale-out: COUNT(*) GROUP BY the key, divided by partition: {} keys, {} with a wrong count",
        counts.len(),
        wrong.len()
    );
    let c_took = output_of(outs[2])
        .lines()
        .any(|l| l.contains("PER_K") && l.contains("took partition(s)"));
    assert!(
        c_took,
        "C took no partition of the GROUP BY of the key: {}",
        output_of(outs[2])
    );
    assert_eq!(counts.len(), 97);
    assert_none_wrong(&wrong, outs);
}
