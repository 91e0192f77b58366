//! The settings Weir reads, declared once each with its default and its doc line: the
//! server's (`--config` file keys, mirrored by `weir server`'s flags) and the session's
//! (`SET`, a request's `streamsProperties`). `weir server --help`, `/is_valid_property`
//! and the unknown-key warnings of the config file, the REST API and the shell all read
//! this table.
//!
//! Keys under [`OPEN_PREFIXES`] are open-ended (a plugin's or a function's own config) and
//! are never called unknown.

/// Where a setting applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read once when the server starts (its config file and flags).
    Server,
    /// Per session or request: `SET`, `streamsProperties`, or the config file as defaults.
    Session,
}

#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    /// The default as a user would write it; empty where there is none.
    pub default: &'static str,
    pub doc: &'static str,
    pub scope: Scope,
}

const fn server(key: &'static str, default: &'static str, doc: &'static str) -> Setting {
    Setting {
        key,
        default,
        doc,
        scope: Scope::Server,
    }
}

const fn session(key: &'static str, default: &'static str, doc: &'static str) -> Setting {
    Setting {
        key,
        default,
        doc,
        scope: Scope::Session,
    }
}

pub const SETTINGS: &[Setting] = &[
    server(
        "listeners",
        "http://127.0.0.1:8088",
        "where the REST API listens (the first of a comma-separated list)",
    ),
    server("listen", "", "same as listeners"),
    server(
        "weir.data.dir",
        "weir-data",
        "where the embedded log keeps topics (ignored with bootstrap.servers)",
    ),
    server(
        "bootstrap.servers",
        "",
        "keep topics on this Kafka cluster (HOST:PORT) instead of the embedded log",
    ),
    server(
        "ksql.streams.bootstrap.servers",
        "",
        "same as bootstrap.servers",
    ),
    server(
        "weir.auth.users.file",
        "",
        "require HTTP basic authentication (and MQTT credentials) by the users in this file",
    ),
    server(
        "weir.plugin.dir",
        "",
        "load user functions from the .so plugins in this folder, and watch it",
    ),
    server(
        "weir.max.push.queries",
        "1000",
        "push queries open at once; more are refused",
    ),
    server(
        "weir.mqtt.listen",
        "",
        "accept MQTT publishes on ADDRESS:PORT (off when empty)",
    ),
    server(
        "weir.mqtt.tls.listen",
        "",
        "accept MQTT publishes over TLS on ADDRESS:PORT (beside or instead of weir.mqtt.listen; needs weir.tls.certificate.file and weir.tls.key.file)",
    ),
    server(
        "weir.tls.certificate.file",
        "",
        "PEM file of the server's TLS certificate and chain, for an https:// REST listener and the MQTT TLS listener",
    ),
    server(
        "weir.tls.key.file",
        "",
        "PEM file of the TLS certificate's private key",
    ),
    server(
        "weir.tls.client.ca.file",
        "",
        "PEM file of the CAs that sign client certificates: when set, TLS clients must present one (mutual TLS)",
    ),
    server("mqtt.listeners", "", "same as weir.mqtt.listen"),
    server("listeners.mqtt", "", "same as weir.mqtt.listen"),
    server(
        "weir.mqtt.topic.map",
        "",
        "where MQTT topics go: `logtopic:regex, ...`, first full match wins; without one the listener refuses every connection",
    ),
    server("topic.regex.list", "", "same as weir.mqtt.topic.map"),
    server(
        "weir.mqtt.message.max.bytes",
        "8092",
        "the largest MQTT payload; a bigger publish closes its connection",
    ),
    server(
        "mqtt.message.max.bytes",
        "8092",
        "same as weir.mqtt.message.max.bytes",
    ),
    server(
        "weir.mqtt.max.connections",
        "10000",
        "MQTT connections beyond this many are closed at once",
    ),
    server(
        "ksql.service.id",
        crate::DEFAULT_SERVICE_ID,
        "the cluster of servers this one belongs to: servers with another id on the same Kafka keep their own catalog and checkpoints (internal topics _weir_<id>_commands, _weir_<id>_offsets)",
    ),
    server(
        crate::cluster::SESSION_TIMEOUT_SETTING,
        "10000",
        "servers sharing a service id on one Kafka take a server's work when it has sent no heartbeat for this long (ms)",
    ),
    server(
        "ksql.internal.topic.replicas",
        "1",
        "on Kafka, the replication factor of the internal topics (command log, checkpoints, members)",
    ),
    server(
        "ksql.internal.topic.min.insync.replicas",
        "",
        "on Kafka, the internal topics' min.insync.replicas (default: the broker's)",
    ),
    server(
        "weir.checkpoint.trim",
        "true",
        "on Kafka, delete (DeleteRecords) the checkpoints no recovery needs, every minute; false for brokers without DeleteRecords (tansu 0.6's SQLite storage fails on it)",
    ),
    server(
        "weir.log.retention.ms",
        "",
        "the embedded log deletes a topic's oldest segments once older than this (ms), unless the topic sets its own (RETENTION_MS) or is internal; default: never",
    ),
    server(
        "weir.log.retention.bytes",
        "",
        "the embedded log deletes a partition's oldest segments once it is larger than this, unless the topic sets its own (RETENTION_BYTES) or is internal; default: never",
    ),
    server(
        "weir.log.retention.check.interval.ms",
        "30000",
        "how often the embedded log applies retention and compacts compacted topics (ms)",
    ),
    server(
        "weir.log.cleaner.min.compaction.lag.ms",
        "60000",
        "a segment of a compacted topic is compacted only once closed this long (ms)",
    ),
    server(
        "weir.log.cleaner.delete.retention.ms",
        "86400000",
        "compaction keeps a tombstone this long after its segment closed (ms)",
    ),
    server(
        crate::runtime::WORKERS_SETTING,
        "",
        "threads that run persistent and push queries (default: one per core)",
    ),
    session(
        "ksql.assert.topic.default.timeout.ms",
        "1000",
        "how long ASSERT TOPIC (and ASSERT STREAM/TABLE) waits without a TIMEOUT (ms)",
    ),
    server(
        crate::SCHEMA_REGISTRY_URL,
        "",
        "an external schema registry for AVRO, PROTOBUF and JSON_SR (default: Weir's own, served at /subjects, /schemas)",
    ),
    session(
        "ksql.assert.schema.default.timeout.ms",
        "1000",
        "how long ASSERT SCHEMA waits without a TIMEOUT (ms)",
    ),
    session(
        crate::WRAP_SINGLE_VALUES_PROPERTY,
        "true",
        "false: a stream or table of one value column reads and writes the bare value unless WRAP_SINGLE_VALUE says otherwise",
    ),
    session(
        crate::OUTPUT_TOPIC_PREFIX,
        "",
        "prefix of the topic a CREATE ... AS SELECT writes when it names none",
    ),
    session(
        "ksql.persistence.default.format.key",
        "KAFKA",
        "key format of a stream or table declared without KEY_FORMAT or FORMAT",
    ),
    session(
        "ksql.persistence.default.format.value",
        "",
        "value format of a stream or table declared without VALUE_FORMAT or FORMAT (none: it must say)",
    ),
    session(
        "auto.offset.reset",
        "latest",
        "where a new query starts reading: earliest or latest",
    ),
    session(
        "ksql.streams.auto.offset.reset",
        "latest",
        "same as auto.offset.reset",
    ),
    session(
        crate::COALESCE_PROPERTY,
        "false",
        "true: a GROUP BY query started afterwards writes each group's last change per batch",
    ),
    session(
        crate::CHECKPOINT_INTERVAL_PROPERTY,
        "1000",
        "how often (ms) a persistent query started afterwards checkpoints while it has records to read (at once when caught up); a restart never writes an output twice whatever the value, it only reads up to this much again (0: after every batch)",
    ),
    session(
        crate::COMMIT_INTERVAL_PROPERTY,
        "1000",
        "ksqlDB's name for weir.checkpoint.interval.ms (used when that is not set)",
    ),
    session(
        "ksql.streams.commit.interval.ms",
        "1000",
        "same as commit.interval.ms",
    ),
    session(
        crate::DIVIDE_STATE_PROPERTY,
        "true",
        "on servers sharing a service id: a GROUP BY of a stream's key columns started afterwards divides its state by partition between the servers (false: whole on one server)",
    ),
    session(
        crate::FAIL_ON_FUNCTION_ERROR,
        "false",
        "true: a function error stops the persistent query (ERROR) instead of writing NULL",
    ),
    session(
        crate::RETRY_BACKOFF_INITIAL,
        "15000",
        "how long (ms) a persistent query that failed waits before it is reloaded from its last checkpoint and run again",
    ),
    session(
        crate::RETRY_BACKOFF_MAX,
        "900000",
        "the longest wait (ms) between a failing query's retries; each failure doubles the wait up to it",
    ),
    session(
        "weir.push.buffer.rows",
        "10000",
        "rows a push query's client may fall behind before its query ends (at most 1000000)",
    ),
    session(
        "weir.pull.max.scan.rows",
        "10000000",
        "the most records a pull query may scan before it has its rows (or its LIMIT)",
    ),
    session(
        "ksql.functions.collect_list.limit",
        "1000",
        "the most values COLLECT_LIST keeps per group",
    ),
    session(
        "ksql.functions.collect_set.limit",
        "1000",
        "the most values COLLECT_SET keeps per group",
    ),
    session(
        "processing.guarantee",
        "",
        "accepted from ksqlDB clients; Weir's guarantee does not change with it",
    ),
];

/// Keys that are a plugin's or a built-in function's own config: `weir.functions.<name>.<key>`
/// and ksqlDB's `ksql.functions.<name>.<key>`.
pub const OPEN_PREFIXES: &[&str] = &["weir.functions.", "ksql.functions."];

/// A ksqlDB streams property among `properties`: under its own name, or as ksqlDB
/// clients also send it, after `ksql.streams.`.
pub fn streams_property<'a>(
    properties: &'a std::collections::BTreeMap<String, String>,
    key: &str,
) -> Option<&'a String> {
    properties
        .get(key)
        .or_else(|| properties.get(&format!("ksql.streams.{key}")))
}

/// The setting named `key`, if Weir knows it.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Whether Weir reads `key`: a setting of the table or a key under an open prefix.
pub fn is_known(key: &str) -> bool {
    find(key).is_some() || OPEN_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The warning for a key Weir does not read, naming the nearest known key when one is
/// close; `None` for a known key.
pub fn unknown_key_warning(key: &str) -> Option<String> {
    if is_known(key) {
        return None;
    }
    let nearest = SETTINGS
        .iter()
        .map(|s| (edit_distance(key, s.key), s.key))
        .min()
        .filter(|(d, _)| *d <= (key.len() / 4).max(2));
    Some(match nearest {
        Some((_, near)) => {
            format!("unknown property '{key}' is ignored: did you mean '{near}'?")
        }
        None => format!("unknown property '{key}' is ignored"),
    })
}

/// `--help` text for a server flag: the setting's doc line, its config key and default.
pub fn flag_help(key: &str) -> String {
    let s = find(key).unwrap_or_else(|| panic!("{key} is declared in SETTINGS"));
    let default = if s.default.is_empty() {
        String::new()
    } else {
        format!(" [default: {}]", s.default)
    };
    format!("{} (config key {}){default}", upper_first(s.doc), s.key)
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_key_names_the_nearest_known_one() {
        assert_eq!(
            unknown_key_warning("weir.agregate.coalesce").as_deref(),
            Some(
                "unknown property 'weir.agregate.coalesce' is ignored: did you mean 'weir.aggregate.coalesce'?"
            )
        );
        assert_eq!(
            unknown_key_warning("auto.ofset.reset").as_deref(),
            Some(
                "unknown property 'auto.ofset.reset' is ignored: did you mean 'auto.offset.reset'?"
            )
        );
        assert_eq!(
            unknown_key_warning("weir.something.else").as_deref(),
            Some("unknown property 'weir.something.else' is ignored")
        );
    }

    #[test]
    fn known_and_open_keys_get_no_warning() {
        for key in [
            "auto.offset.reset",
            "weir.aggregate.coalesce",
            "weir.functions.anomaly.model",
            "ksql.functions.collect_list.limit",
            "weir.mqtt.topic.map",
        ] {
            assert_eq!(unknown_key_warning(key), None, "{key}");
        }
    }

    #[test]
    fn declared_defaults_are_the_engines() {
        assert_eq!(
            find("weir.push.buffer.rows").unwrap().default,
            crate::push::CLIENT_BUFFER_ROWS.to_string()
        );
        assert_eq!(
            find(crate::pull::PULL_MAX_SCAN_PROPERTY).unwrap().default,
            crate::pull::DEFAULT_PULL_MAX_SCAN.to_string()
        );
        assert_eq!(
            find("ksql.functions.collect_list.limit").unwrap().default,
            crate::aggregate::DEFAULT_COLLECT_LIMIT.to_string()
        );
    }

    #[test]
    fn every_key_is_declared_once() {
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort();
        let all = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), all);
    }
}
