//! Alerts back to devices: a stream's records published to an MQTT broker
//! (`weir.mqtt.sink.<name>.*`), each to a topic built from its columns
//! (`cars/${CAR_ID}/alerts`), its value (the stream's encoding: JSON text, say) as the
//! payload, at the QoS asked for.
//!
//! At least once: the sink reads the stream's topic from where it last got to, publishes a
//! batch, waits until the broker has acknowledged every message of it (PUBACK for QoS 1,
//! PUBCOMP for QoS 2), and only then records how far it got, in the internal topic
//! `_weir_mqtt_sinks`. After a crash, a disconnect or an acknowledgement that does not
//! come, it starts again from the last recorded position: nothing is skipped, a message
//! may be published twice. QoS 0 publishes are recorded as sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};
use weir_log::{Log, Record, TopicConfig};

use crate::AppState;

/// Where each sink's progress is kept: `{"sink", "partition", "next"}` records, keyed by
/// `<sink>:<partition>` in a compacted topic, so it holds about one record per sink
/// partition however long the sinks run.
pub const POSITIONS_TOPIC: &str = "_weir_mqtt_sinks";

/// The most records one batch publishes before waiting for their acknowledgements.
const BATCH: usize = 500;

/// A sink: which stream, which broker, how its topics are made.
#[derive(Clone)]
pub struct SinkConfig {
    pub name: String,
    /// The stream (or table) whose records are published.
    pub stream: String,
    /// The MQTT topic of a record: `${COLUMN}` replaced by the column's value (`${KEY}`:
    /// the record key as text).
    pub topic: String,
    pub qos: u8,
    /// Publish with the retain flag.
    pub retain: bool,
    pub broker: weir_mqtt::bridge::BridgeConfig,
}

/// A sink's counters.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Messages the broker acknowledged (QoS 1/2) or that were sent (QoS 0).
    pub published: AtomicU64,
    /// Records whose topic could not be made (a column missing or null): skipped, logged.
    pub skipped: AtomicU64,
    pub connection_errors: AtomicU64,
}

/// The settings of a sink (`weir.mqtt.sink.<name>.<setting>`): `stream`, `topic`, `qos`
/// and `retain`, and the broker's, as a bridge's (`url`, `client.id`, `username`,
/// `password`, `tls.*`).
pub const SINK_KEYS: &[&str] = &[
    "stream",
    "topic",
    "qos",
    "retain",
    "url",
    "client.id",
    "username",
    "password",
    "tls.ca.file",
    "tls.certificate.file",
    "tls.key.file",
];

pub fn sink_config(
    name: &str,
    settings: &BTreeMap<String, String>,
    service_id: &str,
) -> Result<SinkConfig, String> {
    let bad = |e: &str| format!("MQTT sink {name}: {e}");
    let stream = settings
        .get("stream")
        .ok_or_else(|| bad("no stream (the stream whose records are published)"))?;
    let topic = settings
        .get("topic")
        .ok_or_else(|| bad("no topic (e.g. cars/${CAR_ID}/alerts)"))?;
    if topic.contains('#') || topic.contains('+') {
        return Err(bad("a topic to publish to has no wildcards"));
    }
    let mut broker_settings = settings.clone();
    broker_settings
        .entry("client.id".into())
        .or_insert_with(|| format!("weir-{}-sink-{name}", service_id.trim_end_matches('_')));
    let broker = crate::broker_config("MQTT sink", name, &broker_settings, service_id)?;
    let retain = match settings.get("retain").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad(&format!("retain is true or false, not {other}"))),
    };
    Ok(SinkConfig {
        name: name.to_string(),
        stream: stream.to_ascii_uppercase(),
        topic: topic.clone(),
        qos: broker.qos,
        retain,
        broker,
    })
}

/// The topic for a record: each `${NAME}` from `values` (by column name, any case).
fn render(template: &str, values: &HashMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let value = values.get(&after[..end].to_ascii_uppercase())?;
        // A value must not add levels or wildcards to the topic.
        out.extend(value.chars().map(|c| match c {
            '/' | '+' | '#' => '_',
            c => c,
        }));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Each record's column values as text, by upper-case column name, decoded with the
/// stream's layout; `KEY` is the record key as text. Records that do not decode get only
/// `KEY`.
fn columns(
    source: &weir_engine::catalog::Source,
    records: &[weir_log::StoredRecord],
) -> Vec<HashMap<String, String>> {
    use arrow::array::{Array, AsArray};
    let mut out: Vec<HashMap<String, String>> = records
        .iter()
        .map(|r| {
            let key = r
                .record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            key.map(|k| HashMap::from([("KEY".to_string(), k)]))
                .unwrap_or_default()
        })
        .collect();
    let schema = source.layout.schema();
    let decoded = source.layout.decode(&schema, records);
    let batch = &decoded.batch;
    let Some(offsets) = batch
        .column_by_name(weir_format::PSEUDO_COLUMNS[2])
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>().cloned())
    else {
        return out;
    };
    let at: HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.offset, i))
        .collect();
    let options = arrow::util::display::FormatOptions::default();
    for (c, field) in batch.schema().fields().iter().enumerate() {
        let Ok(shown) =
            arrow::util::display::ArrayFormatter::try_new(batch.column(c).as_ref(), &options)
        else {
            continue;
        };
        for row in 0..batch.num_rows() {
            if batch.column(c).is_null(row) {
                continue;
            }
            if let Some(i) = at.get(&(offsets.value(row) as u64)) {
                out[*i].insert(
                    field.name().to_ascii_uppercase(),
                    shown.value(row).to_string(),
                );
            }
        }
    }
    out
}

/// Where sink `name` got to, per partition, from the positions topic.
fn positions(log: &dyn Log, name: &str) -> Result<HashMap<u32, u64>, String> {
    let mut at = HashMap::new();
    if log
        .topic(POSITIONS_TOPIC)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Ok(at);
    }
    for r in log
        .read_to_end(POSITIONS_TOPIC, 0, 0)
        .map_err(|e| e.to_string())?
    {
        let Some(v) = r.record.json_value() else {
            continue;
        };
        if v["sink"] == name
            && let (Some(p), Some(next)) = (v["partition"].as_u64(), v["next"].as_u64())
        {
            at.insert(p as u32, next);
        }
    }
    Ok(at)
}

fn record_position(log: &dyn Log, name: &str, partition: u32, next: u64) -> Result<(), String> {
    if log
        .topic(POSITIONS_TOPIC)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let _ = log.create_topic(
            POSITIONS_TOPIC,
            TopicConfig {
                compact: true,
                keep_forever: true,
                ..TopicConfig::default()
            },
        );
    }
    let value = serde_json::json!({"sink": name, "partition": partition, "next": next});
    log.append(
        POSITIONS_TOPIC,
        0,
        &[Record::new(
            Some(format!("{name}:{partition}").as_bytes()),
            Some(value.to_string().as_bytes()),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        )],
    )
    .map_err(|e| e.to_string())?;
    log.flush().map_err(|e| e.to_string())
}

/// Runs a sink until the server stops.
pub async fn run(
    config: SinkConfig,
    state: Arc<AppState>,
    stats: Arc<SinkStats>,
    mut stopping: watch::Receiver<bool>,
) {
    // A clean session: what was not acknowledged is published again from the position.
    let mut options = config.broker.options();
    options.set_clean_session(true).set_inflight(100);
    let (client, mut events) = AsyncClient::new(options, 1024);
    // Acknowledgements (and connection losses) from the event loop.
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<Result<(), ()>>();
    let poller = {
        let (name, stats) = (config.name.clone(), stats.clone());
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let event = tokio::select! {
                    e = events.poll() => e,
                    _ = weir_mqtt::stopped(&mut stopping) => return,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(100);
                        tracing::info!(sink = %name, "MQTT sink connected");
                    }
                    Ok(Event::Incoming(Packet::PubAck(_)))
                    | Ok(Event::Incoming(Packet::PubComp(_))) => {
                        let _ = acks_tx.send(Ok(()));
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) | Ok(_) => {}
                    Err(e) => {
                        stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sink = %name, error = %e, retry_in = ?backoff, "MQTT sink: connection failed");
                        let _ = acks_tx.send(Err(()));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        })
    };
    let qos = match config.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let log = state.runtime.engine().log().clone();
    let mut at: Option<HashMap<u32, u64>> = None;
    'run: loop {
        if *stopping.borrow() {
            break;
        }
        // The stream (it may be created after the server starts).
        let source = state
            .runtime
            .engine()
            .catalog()
            .source(&config.stream)
            .cloned();
        let Some(source) = source else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = weir_mqtt::stopped(&mut stopping) => break,
            }
        };
        let positions = match &mut at {
            Some(p) => p,
            None => match positions(log.as_ref(), &config.name) {
                Ok(p) => at.insert(p),
                Err(e) => {
                    tracing::warn!(sink = %config.name, error = %e, "MQTT sink: cannot read its position");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let partitions = match log.topic(&source.topic) {
            Ok(Some(t)) => t.config.partitions,
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut idle = true;
        for p in 0..partitions {
            let from = positions.get(&p).copied().unwrap_or(0);
            let records = match log.read(&source.topic, p, from, BATCH) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(sink = %config.name, error = %e, "MQTT sink: reading the stream failed");
                    continue;
                }
            };
            let Some(last) = records.last().map(|r| r.offset) else {
                continue;
            };
            idle = false;
            let values = columns(&source, &records);
            while acks.try_recv().is_ok() {}
            let mut sent = 0u64;
            for (r, values) in records.iter().zip(&values) {
                let Some(payload) = r.record.value.as_ref() else {
                    continue; // a tombstone: nothing to say
                };
                let Some(topic) = render(&config.topic, values) else {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sink = %config.name, offset = r.offset, template = %config.topic, "MQTT sink: a column of the topic is missing or null; record skipped");
                    continue;
                };
                if client
                    .publish(topic, qos, config.retain, payload.to_vec())
                    .await
                    .is_err()
                {
                    break 'run;
                }
                sent += 1;
            }
            // Every message of the batch acknowledged, or start the batch again.
            let mut acked = 0;
            let complete = qos == QoS::AtMostOnce
                || loop {
                    if acked >= sent {
                        break true;
                    }
                    match tokio::time::timeout(Duration::from_secs(30), acks.recv()).await {
                        Ok(Some(Ok(()))) => acked += 1,
                        _ => break false,
                    }
                };
            if !complete {
                tracing::warn!(sink = %config.name, partition = p, from, "MQTT sink: not every message acknowledged; publishing again from the last position");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue 'run;
            }
            stats.published.fetch_add(sent, Ordering::Relaxed);
            if let Err(e) = record_position(log.as_ref(), &config.name, p, last + 1) {
                tracing::warn!(sink = %config.name, error = %e, "MQTT sink: cannot record its position");
                continue 'run;
            }
            positions.insert(p, last + 1);
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = weir_mqtt::stopped(&mut stopping) => break,
            }
        }
    }
    let _ = client.disconnect().await;
    poller.abort();
}

#[cfg(test)]
mod tests {
    use super::render;
    use std::collections::HashMap;

    #[test]
    fn topics_are_made_from_columns_without_adding_levels() {
        let v = HashMap::from([
            ("CAR_ID".to_string(), "17".to_string()),
            ("ZONE".to_string(), "a/b#".to_string()),
        ]);
        assert_eq!(
            render("cars/${car_id}/alerts", &v).unwrap(),
            "cars/17/alerts"
        );
        assert_eq!(render("z/${ZONE}", &v).unwrap(), "z/a_b_");
        assert_eq!(render("plain/topic", &v).unwrap(), "plain/topic");
        assert!(render("cars/${MISSING}/x", &v).is_none());
        assert!(render("cars/${CAR_ID", &v).is_none());
    }
}
