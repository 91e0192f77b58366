//! `GET /metrics`: Prometheus text format. Per persistent query: its state, records and bytes in and
//! out, records sent to the processing log, source lag and an end-to-end latency
//! histogram; per server: push queries open, REST requests by endpoint and status, and
//! the MQTT listener's counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weir_engine::meta::{LATENCY_BUCKETS_MS, QueryMetrics};

/// REST requests by (endpoint, status).
#[derive(Default)]
pub struct Requests(Mutex<BTreeMap<(&'static str, u16), u64>>);

impl Requests {
    pub fn count(&self, path: &str, status: u16) {
        let endpoint = endpoint(path);
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint, status))
            .or_default() += 1;
    }
}

/// The endpoint a path belongs to (a bounded set of labels, whatever clients send).
fn endpoint(path: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "/ksql",
        "/query",
        "/query-stream",
        "/inserts-stream",
        "/close-query",
        "/info",
        "/healthcheck",
        "/status",
        "/metrics",
        "/chc/live",
        "/chc/ready",
        "/",
    ];
    if let Some(k) = KNOWN.iter().find(|k| **k == path) {
        return k;
    }
    if path.starts_with("/status/") {
        "/status/{kind}/{entity}/{action}"
    } else if path.starts_with("/is_valid_property/") {
        "/is_valid_property/{property}"
    } else {
        "other"
    }
}

/// One counter of each named instance (a bridge, a sink), labelled `{label="name"}`.
fn by_name<S>(
    label: &str,
    all: &[(String, Arc<S>)],
    counter: fn(&S) -> &AtomicU64,
) -> Vec<(String, String)> {
    all.iter()
        .map(|(name, s)| {
            (
                format!("{{{label}=\"{name}\"}}"),
                counter(s).load(Ordering::Relaxed).to_string(),
            )
        })
        .collect()
}

pub fn render(
    queries: &[QueryMetrics],
    push_queries_open: usize,
    requests: &Requests,
    mqtt: Option<&weir_mqtt::MqttStats>,
    bridges: &[(String, Arc<weir_mqtt::bridge::BridgeStats>)],
    sinks: &[(String, Arc<crate::mqtt_sink::SinkStats>)],
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_query = |f: &dyn Fn(&QueryMetrics) -> u64| -> Vec<(String, String)> {
        queries
            .iter()
            .map(|q| (format!("{{query=\"{}\"}}", q.id), f(q).to_string()))
            .collect()
    };
    family(
        "weir_query_state",
        "gauge",
        "1 for the state a persistent query is in (RUNNING, or ERROR while it waits to be retried from its last checkpoint).",
        queries
            .iter()
            .map(|q| {
                (
                    format!("{{query=\"{}\",state=\"{}\"}}", q.id, q.state),
                    "1".into(),
                )
            })
            .collect(),
    );
    family(
        "weir_query_records_in_total",
        "counter",
        "Source records a persistent query read.",
        per_query(&|q| q.stats.consumed),
    );
    family(
        "weir_query_records_out_total",
        "counter",
        "Records a persistent query wrote to its sink.",
        per_query(&|q| q.stats.produced),
    );
    family(
        "weir_query_bytes_in_total",
        "counter",
        "Bytes (keys and values) of source records read.",
        per_query(&|q| q.stats.bytes_consumed),
    );
    family(
        "weir_query_bytes_out_total",
        "counter",
        "Bytes (keys and values) of records written.",
        per_query(&|q| q.stats.bytes_produced),
    );
    family(
        "weir_query_processing_log_total",
        "counter",
        "Records sent to the processing log instead (decode or compute errors).",
        per_query(&|q| q.stats.errors),
    );
    family(
        "weir_query_source_lag",
        "gauge",
        "Source records not read yet, over all partitions.",
        per_query(&|q| q.lag),
    );
    let mut latency = Vec::new();
    for q in queries {
        let h = &q.stats.latency;
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += h.counts[i];
            latency.push((
                format!("_bucket{{query=\"{}\",le=\"{}\"}}", q.id, bound / 1000.0),
                cumulative.to_string(),
            ));
        }
        latency.push((
            format!("_bucket{{query=\"{}\",le=\"+Inf\"}}", q.id),
            h.count.to_string(),
        ));
        latency.push((
            format!("_sum{{query=\"{}\"}}", q.id),
            (h.sum_ms / 1000.0).to_string(),
        ));
        latency.push((format!("_count{{query=\"{}\"}}", q.id), h.count.to_string()));
    }
    family(
        "weir_query_latency_seconds",
        "histogram",
        "End-to-end latency of output records: from their timestamp to when they were written.",
        latency,
    );
    family(
        "weir_push_queries_open",
        "gauge",
        "Push queries running now.",
        vec![(String::new(), push_queries_open.to_string())],
    );
    let requests: Vec<(String, String)> = requests
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|((e, s), n)| {
            (
                format!("{{endpoint=\"{e}\",status=\"{s}\"}}"),
                n.to_string(),
            )
        })
        .collect();
    family(
        "weir_rest_requests_total",
        "counter",
        "REST requests by endpoint and HTTP status.",
        requests,
    );
    if let Some(m) = mqtt {
        let one = |v: &std::sync::atomic::AtomicU64| {
            vec![(String::new(), v.load(Ordering::Relaxed).to_string())]
        };
        family(
            "weir_mqtt_connections_open",
            "gauge",
            "MQTT connections open now.",
            one(&m.connections_open),
        );
        family(
            "weir_mqtt_connections_total",
            "counter",
            "MQTT connections accepted or rejected.",
            one(&m.connections_total),
        );
        family(
            "weir_mqtt_connections_rejected_total",
            "counter",
            "MQTT connections closed at once: over weir.mqtt.max.connections.",
            one(&m.connections_rejected),
        );
        family(
            "weir_mqtt_connects_refused_total",
            "counter",
            "MQTT CONNECTs refused (credentials, client id).",
            one(&m.connects_refused),
        );
        family(
            "weir_mqtt_protocol_errors_total",
            "counter",
            "MQTT connections closed for bad input.",
            one(&m.protocol_errors),
        );
        family(
            "weir_mqtt_messages_stored_total",
            "counter",
            "MQTT messages appended to the log, by QoS.",
            (0..3)
                .map(|q| {
                    (
                        format!("{{qos=\"{q}\"}}"),
                        m.stored[q].load(Ordering::Relaxed).to_string(),
                    )
                })
                .collect(),
        );
        family(
            "weir_mqtt_publishes_unmapped_total",
            "counter",
            "MQTT publishes to topics weir.mqtt.topic.map does not map (refused or dropped).",
            one(&m.unmapped),
        );
        family(
            "weir_mqtt_resent_duplicates_total",
            "counter",
            "Resent MQTT publishes (DUP) of messages already stored: acknowledged again, not stored twice.",
            one(&m.resent_duplicates),
        );
    }
    type BridgeCounter = fn(&weir_mqtt::bridge::BridgeStats) -> &AtomicU64;
    let bridge_counters: [(&str, &str, BridgeCounter); 6] = [
        (
            "weir_mqtt_bridge_received_total",
            "Messages an MQTT bridge received from its broker.",
            |s| &s.received,
        ),
        (
            "weir_mqtt_bridge_stored_total",
            "Messages an MQTT bridge stored in the log (then acknowledged to the broker; QoS 1 and 2).",
            |s| &s.stored,
        ),
        (
            "weir_mqtt_bridge_unmapped_total",
            "Messages an MQTT bridge dropped: the topic map routes their topic nowhere.",
            |s| &s.unmapped,
        ),
        (
            "weir_mqtt_bridge_connections_total",
            "Connections an MQTT bridge made to its broker.",
            |s| &s.connections,
        ),
        (
            "weir_mqtt_bridge_connection_errors_total",
            "Failed connection attempts and dropped connections of an MQTT bridge.",
            |s| &s.connection_errors,
        ),
        (
            "weir_mqtt_bridge_resent_duplicates_total",
            "Resends (DUP) of messages an MQTT bridge had stored: acknowledged again, not stored twice.",
            |s| &s.resent_duplicates,
        ),
    ];
    if !bridges.is_empty() {
        for (name, help, counter) in bridge_counters {
            family(name, "counter", help, by_name("bridge", bridges, counter));
        }
    }
    type SinkCounter = fn(&crate::mqtt_sink::SinkStats) -> &AtomicU64;
    let sink_counters: [(&str, &str, SinkCounter); 3] = [
        (
            "weir_mqtt_sink_published_total",
            "Records an MQTT sink published and the broker acknowledged (QoS 1/2) or that were sent (QoS 0).",
            |s| &s.published,
        ),
        (
            "weir_mqtt_sink_skipped_total",
            "Records an MQTT sink skipped: a column its topic names is missing or null.",
            |s| &s.skipped,
        ),
        (
            "weir_mqtt_sink_connection_errors_total",
            "Failed connection attempts and dropped connections of an MQTT sink.",
            |s| &s.connection_errors,
        ),
    ];
    if !sinks.is_empty() {
        for (name, help, counter) in sink_counters {
            family(name, "counter", help, by_name("sink", sinks, counter));
        }
    }
    out
}
