//! Appends published messages to the log and says when they are durable.
//!
//! One thread owns the appends. It takes every message waiting, appends them (one call
//! per topic partition, in arrival order), makes them durable with one `flush` (fsync on
//! the embedded log; delivery on Kafka), and only then answers each sender. Many
//! publishers share an fsync (group commit): acknowledged means stored, without paying a
//! disk flush per message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use weir_log::{Header, Log, Record, TopicConfig, partition_for_key};

/// A message to store, and who waits for it.
pub struct Message {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp: i64,
    /// The persistent session and packet id it came with (stored as record headers,
    /// `mqtt.client` and `mqtt.packet`), for QoS 1 and 2.
    pub origin: Option<(String, u16)>,
    /// Told once the message is durable (or why it could not be stored). `None` for QoS 0.
    pub done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// The most messages one round appends before its flush.
const MAX_ROUND: usize = 4096;

/// Starts the append thread; messages sent on the returned channel are stored in order.
pub fn start(log: Arc<dyn Log>) -> flume::Sender<Message> {
    let (tx, rx) = flume::bounded::<Message>(16 * 1024);
    std::thread::Builder::new()
        .name("weir-mqtt-append".into())
        .spawn(move || run(log, rx))
        .expect("spawning the MQTT append thread");
    tx
}

fn run(log: Arc<dyn Log>, rx: flume::Receiver<Message>) {
    let mut partitions: HashMap<String, u32> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(m) => round.push(m),
                Err(_) => break,
            }
        }
        // Crash tests: killed with messages received and not stored.
        if weir_log::failpoint::reached("mqtt_before_store") {
            weir_log::failpoint::fire("mqtt_before_store");
        }
        let results = store(log.as_ref(), &mut partitions, &round);
        for (m, r) in round.into_iter().zip(results) {
            if let Some(done) = m.done {
                let _ = done.send(r);
            }
        }
    }
}

/// Appends a round and flushes it; the outcome per message.
fn store(
    log: &dyn Log,
    partitions: &mut HashMap<String, u32>,
    round: &[Message],
) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Ok(()); round.len()];
    // By topic partition, each in arrival order.
    let mut groups: BTreeMap<(&str, u32), Vec<usize>> = BTreeMap::new();
    for (i, m) in round.iter().enumerate() {
        match partition_count(log, partitions, &m.topic) {
            Ok(n) => groups
                .entry((m.topic.as_str(), partition_for_key(&m.key, n)))
                .or_default()
                .push(i),
            Err(e) => results[i] = Err(e),
        }
    }
    for ((topic, partition), members) in groups {
        let records: Vec<Record> = members
            .iter()
            .map(|&i| {
                let m = &round[i];
                let mut r = Record::new(Some(&m.key), Some(&m.value), m.timestamp);
                if let Some((client, pkid)) = &m.origin {
                    r.headers = vec![
                        Header {
                            name: crate::CLIENT_HEADER.into(),
                            value: Some(client.as_bytes().to_vec()),
                        },
                        Header {
                            name: crate::PACKET_HEADER.into(),
                            value: Some(pkid.to_string().into_bytes()),
                        },
                    ];
                }
                r
            })
            .collect();
        if let Err(e) = log.append(topic, partition, &records) {
            let why = format!("appending to {topic}-{partition}: {e}");
            tracing::warn!(%why, "MQTT messages not stored");
            for i in members {
                results[i] = Err(why.clone());
            }
            // A topic deleted meanwhile is looked up again next time.
            partitions.remove(topic);
        }
    }
    if let Err(e) = log.flush() {
        let why = format!("flushing the log: {e}");
        tracing::warn!(%why, "MQTT messages not acknowledged");
        for r in &mut results {
            if r.is_ok() {
                *r = Err(why.clone());
            }
        }
    }
    results
}

/// The partitions of `topic`, creating it (one partition) when it does not exist yet, as
/// a Kafka broker with topic auto-creation would.
fn partition_count(
    log: &dyn Log,
    cache: &mut HashMap<String, u32>,
    topic: &str,
) -> Result<u32, String> {
    if let Some(n) = cache.get(topic) {
        return Ok(*n);
    }
    let n = match log.topic(topic).map_err(|e| e.to_string())? {
        Some(info) => info.config.partitions,
        None => {
            tracing::info!(topic, "creating the topic for MQTT messages");
            match log.create_topic(topic, TopicConfig::default()) {
                Ok(info) => info.config.partitions,
                // Created by someone else meanwhile.
                Err(e) => match log.topic(topic).map_err(|e| e.to_string())? {
                    Some(info) => info.config.partitions,
                    None => return Err(format!("creating topic {topic}: {e}")),
                },
            }
        }
    };
    cache.insert(topic.to_string(), n);
    Ok(n)
}

/// How long a publisher waits for its message to be stored before the connection gives up.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(30);
