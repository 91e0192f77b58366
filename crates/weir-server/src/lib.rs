//! `weir server`: an engine behind ksqlDB's REST API.
//!
//! One port serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge), as ksqlDB's does, so
//! the ksql CLI, the Java client and Python clients talk to Weir unchanged. Statements run
//! on the engine between the query worker's batches (`weir_engine::Runtime`); push queries
//! stream rows from the engine's bounded per-client channel straight into the response
//! body, so a client that stops reading fills only its own channel and is then ended with
//! a message (see `weir_engine::push`), and a client that goes away ends its query.
//!
//! See `docs/rest.md` for the endpoints with `curl` examples.

// Handlers answer `Result<_, Response>` (axum's idiom): the error is the response itself,
// built once on a path that ends the request.
#![allow(clippy::result_large_err)]

pub mod auth;
mod console;
pub mod entities;
mod inserts;
mod metrics;
mod mqtt_sink;
mod plugins;
mod registry;
mod rest;
mod streaming;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use weir_engine::{Engine, Runtime};
use weir_format::registry::{LocalRegistry, RemoteRegistry, SchemaRegistry};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log};

pub use auth::Users;

/// The version `/info` reports: the ksqlDB release whose REST API Weir speaks (clients
/// check it for compatibility).
pub const KSQL_COMPATIBLE_VERSION: &str = "8.0.0";

/// Push queries one server runs at once unless `weir.max.push.queries` says otherwise.
pub const DEFAULT_MAX_PUSH_QUERIES: usize = 1000;

/// Where to listen, as ksqlDB's `listeners` writes it: the first of a comma-separated
/// list, with or without a scheme (`http://`, `mqtt://`, `tcp://`), a host name or an IP
/// address (`localhost:8088`, `0.0.0.0:8088`, `[::1]:8088`).
pub fn listen_address(value: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let first = value.split(',').next().unwrap_or("").trim();
    let addr = first
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(first)
        .trim_end_matches('/');
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut all| all.next())
        .ok_or_else(|| {
            format!(
                "'{first}' is not an address to listen on (HOST:PORT, e.g. http://0.0.0.0:8088)"
            )
        })
}

/// Whether a `listeners` value's first address is `https://`.
pub fn listen_is_https(value: &str) -> bool {
    value
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .starts_with("https://")
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The REST API over TLS (`listeners=https://...`), with [`ServerConfig::tls`].
    pub rest_tls: bool,
    /// `weir.tls.*`: the certificate, key and (for mutual TLS) client CA of the https
    /// REST listener and the MQTT TLS listener.
    pub tls: Option<tls::TlsFiles>,
    /// `weir.mqtt.tls.listen`: MQTT over TLS here (beside or instead of `mqtt_listen`).
    pub mqtt_tls_listen: Option<SocketAddr>,
    /// `weir.mqtt.bridge.<name>.<key>`: brokers to subscribe to, by name, their settings
    /// by key (see [`bridge_config`]).
    pub mqtt_bridges: BTreeMap<String, BTreeMap<String, String>>,
    /// `weir.mqtt.sink.<name>.<key>`: streams published to brokers, by name (see
    /// [`mqtt_sink::sink_config`]).
    pub mqtt_sinks: BTreeMap<String, BTreeMap<String, String>>,
    pub data_dir: PathBuf,
    /// Keep topics on this Kafka cluster instead of the embedded log.
    pub kafka_bootstrap: Option<String>,
    /// Kafka client properties from the configuration (TLS, SASL, ...), given to every
    /// client the Kafka log makes.
    pub kafka_client: weir_kafka::ClientProperties,
    /// Require HTTP basic authentication by these users.
    pub users_file: Option<PathBuf>,
    /// Load user functions from the `.so` files here, and watch it while running.
    pub plugin_dir: Option<PathBuf>,
    pub max_push_queries: usize,
    /// Session defaults for statements (`auto.offset.reset`, ...), from the config file.
    pub properties: BTreeMap<String, String>,
    /// Listen for MQTT publishes here (off when `None`).
    pub mqtt_listen: Option<SocketAddr>,
    /// `weir.mqtt.topic.map`: `logtopic:regex, ...`, first match wins.
    pub mqtt_topic_map: String,
    /// `weir.mqtt.message.max.bytes` (or the proxy's `mqtt.message.max.bytes`).
    pub mqtt_max_message_bytes: usize,
    /// `weir.mqtt.max.connections`.
    pub mqtt_max_connections: usize,
    /// `weir.workers`: threads that run queries.
    pub workers: usize,
    /// `ksql.service.id`: the cluster of servers this one belongs to; names its internal
    /// topics (see `weir_engine::internal_topics`).
    pub service_id: String,
    /// `weir.cluster.session.timeout.ms`: how long servers sharing the service id on one
    /// Kafka wait for a silent one's heartbeat before taking its work.
    pub session_timeout: std::time::Duration,
    /// The embedded log's settings: retention defaults (`weir.log.retention.ms`,
    /// `weir.log.retention.bytes`), how often retention and compaction run
    /// (`weir.log.retention.check.interval.ms`), compaction's lag and how long it keeps
    /// tombstones (`weir.log.cleaner.min.compaction.lag.ms`,
    /// `weir.log.cleaner.delete.retention.ms`).
    pub log: EmbeddedLogConfig,
    /// How the internal topics are made on Kafka (`ksql.internal.topic.replicas`,
    /// `ksql.internal.topic.min.insync.replicas`).
    pub internal_topics: weir_engine::InternalTopics,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            rest_tls: false,
            tls: None,
            mqtt_tls_listen: None,
            mqtt_bridges: BTreeMap::new(),
            mqtt_sinks: BTreeMap::new(),
            data_dir: PathBuf::from("weir-data"),
            kafka_bootstrap: None,
            kafka_client: Default::default(),
            users_file: None,
            plugin_dir: None,
            max_push_queries: DEFAULT_MAX_PUSH_QUERIES,
            properties: BTreeMap::new(),
            mqtt_listen: None,
            mqtt_topic_map: String::new(),
            mqtt_max_message_bytes: weir_mqtt::DEFAULT_MAX_MESSAGE_BYTES,
            mqtt_max_connections: weir_mqtt::DEFAULT_MAX_CONNECTIONS,
            workers: weir_engine::runtime::default_workers(),
            service_id: weir_engine::DEFAULT_SERVICE_ID.into(),
            session_timeout: weir_engine::cluster::DEFAULT_SESSION_TIMEOUT,
            log: EmbeddedLogConfig::default(),
            internal_topics: Default::default(),
        }
    }
}

impl ServerConfig {
    /// Reads a ksqlDB-style properties file (`key=value` or `key: value` per line, `#` and
    /// `!` comments). Server settings: `listeners` (`http://HOST:PORT`), `weir.data.dir`,
    /// `bootstrap.servers` (or `ksql.streams.bootstrap.servers`), `weir.auth.users.file`,
    /// `weir.max.push.queries`, the MQTT listener's `weir.mqtt.listen`,
    /// `weir.mqtt.topic.map` (or the proxy's `topic.regex.list`),
    /// `weir.mqtt.message.max.bytes` (or `mqtt.message.max.bytes`) and
    /// `weir.mqtt.max.connections`; Kafka client properties (`security.protocol`, `ssl.*`,
    /// `sasl.*` and every other librdkafka key, plain or under `ksql.streams.`) go to the
    /// Kafka log's clients; every other key becomes a session property.
    /// The TLS files, set or not yet.
    pub fn tls_files(&mut self) -> &mut tls::TlsFiles {
        self.tls.get_or_insert_with(Default::default)
    }

    /// The TLS acceptor the settings ask for (`None`: no TLS listener), or why not.
    fn tls_acceptor(&self, alpn: &[&[u8]]) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
        let wanted = self.rest_tls || self.mqtt_tls_listen.is_some();
        match &self.tls {
            _ if !wanted => Ok(None),
            Some(files) if !files.certificate.as_os_str().is_empty() && !files.key.as_os_str().is_empty() => {
                tls::acceptor(files, alpn).map(Some)
            }
            _ => Err("a TLS listener (https:// or weir.mqtt.tls.listen) needs weir.tls.certificate.file and weir.tls.key.file (--tls-cert, --tls-key)".into()),
        }
    }

    pub fn apply_properties_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let split = line
                .find(['=', ':'])
                .ok_or_else(|| format!("{}:{}: expected key=value", path.display(), n + 1))?;
            let (key, value) = (line[..split].trim(), line[split + 1..].trim());
            let bad = |e: String| format!("{}:{}: {key}: {e}", path.display(), n + 1);
            match key {
                "listeners" | "listen" => {
                    self.listen = listen_address(value).map_err(bad)?;
                    self.rest_tls = listen_is_https(value);
                }
                "weir.tls.certificate.file" => self.tls_files().certificate = PathBuf::from(value),
                "weir.tls.key.file" => self.tls_files().key = PathBuf::from(value),
                "weir.tls.client.ca.file" => {
                    self.tls_files().client_ca = Some(PathBuf::from(value))
                }
                "weir.mqtt.tls.listen" => {
                    self.mqtt_tls_listen = Some(listen_address(value).map_err(bad)?)
                }
                _ if key.starts_with(SINK_PREFIX) => {
                    let rest = &key[SINK_PREFIX.len()..];
                    let (name, setting) = rest
                        .split_once('.')
                        .filter(|(n, s)| !n.is_empty() && mqtt_sink::SINK_KEYS.contains(s))
                        .ok_or_else(|| {
                            bad(format!(
                                "expected weir.mqtt.sink.<name>.<setting>, the setting one of {}",
                                mqtt_sink::SINK_KEYS.join(", ")
                            ))
                        })?;
                    self.mqtt_sinks
                        .entry(name.to_string())
                        .or_default()
                        .insert(setting.to_string(), value.to_string());
                }
                _ if key.starts_with(BRIDGE_PREFIX) => {
                    let rest = &key[BRIDGE_PREFIX.len()..];
                    let (name, setting) = rest
                        .split_once('.')
                        .filter(|(n, s)| !n.is_empty() && BRIDGE_KEYS.contains(s))
                        .ok_or_else(|| {
                            bad(format!(
                                "expected weir.mqtt.bridge.<name>.<setting>, the setting one of {}",
                                BRIDGE_KEYS.join(", ")
                            ))
                        })?;
                    self.mqtt_bridges
                        .entry(name.to_string())
                        .or_default()
                        .insert(setting.to_string(), value.to_string());
                }
                "weir.data.dir" => self.data_dir = PathBuf::from(value),
                "bootstrap.servers" | "ksql.streams.bootstrap.servers" => {
                    self.kafka_bootstrap = Some(value.to_string())
                }
                "weir.auth.users.file" => self.users_file = Some(PathBuf::from(value)),
                "weir.plugin.dir" => self.plugin_dir = Some(PathBuf::from(value)),
                "weir.max.push.queries" => {
                    self.max_push_queries = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "ksql.service.id" => {
                    weir_engine::check_service_id(value).map_err(bad)?;
                    self.service_id = value.to_string();
                }
                weir_engine::cluster::SESSION_TIMEOUT_SETTING => {
                    self.session_timeout = match value.parse::<u64>() {
                        Ok(ms) if ms >= 500 => std::time::Duration::from_millis(ms),
                        _ => return Err(bad("milliseconds, at least 500".into())),
                    }
                }
                "weir.checkpoint.trim" => {
                    self.internal_topics.trim_checkpoints = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("true or false".into())),
                    }
                }
                "ksql.internal.topic.replicas" => {
                    self.internal_topics.replicas = match value.parse::<u16>() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(bad("a number of replicas, at least 1".into())),
                    }
                }
                "ksql.internal.topic.min.insync.replicas" => {
                    self.internal_topics.min_insync_replicas = match value.parse::<u16>() {
                        Ok(n) if n > 0 => Some(n),
                        _ => return Err(bad("a number of replicas, at least 1".into())),
                    }
                }
                "weir.log.retention.ms" => {
                    self.log.retention_ms = Some(millis(value).map_err(bad)?)
                }
                "weir.log.retention.bytes" => {
                    self.log.retention_bytes = Some(value.parse().map_err(|e| bad(format!("{e}")))?)
                }
                "weir.log.retention.check.interval.ms" => {
                    self.log.housekeeping_every =
                        Some(Duration::from_millis(millis(value).map_err(bad)?.max(100)))
                }
                "weir.log.cleaner.min.compaction.lag.ms" => {
                    self.log.min_compaction_lag = Duration::from_millis(millis(value).map_err(bad)?)
                }
                "weir.log.cleaner.delete.retention.ms" => {
                    self.log.delete_retention = Duration::from_millis(millis(value).map_err(bad)?)
                }
                weir_engine::runtime::WORKERS_SETTING => {
                    self.workers = match value.parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(bad("a number of threads, at least 1".into())),
                    }
                }
                "weir.mqtt.listen" | "mqtt.listeners" | "listeners.mqtt" => {
                    self.mqtt_listen = Some(listen_address(value).map_err(bad)?)
                }
                "weir.mqtt.topic.map" | "topic.regex.list" => {
                    self.mqtt_topic_map = value.to_string()
                }
                "weir.mqtt.message.max.bytes" | "mqtt.message.max.bytes" => {
                    self.mqtt_max_message_bytes = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "weir.mqtt.max.connections" => {
                    self.mqtt_max_connections = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                _ if weir_engine::settings::is_known(key) => {
                    self.properties.insert(key.to_string(), value.to_string());
                }
                _ => match self
                    .kafka_client
                    .offer(key, value)
                    .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?
                {
                    weir_kafka::Offered::Taken(_) => {}
                    weir_kafka::Offered::Ignored(warning) => {
                        tracing::warn!("{}:{}: {warning}", path.display(), n + 1);
                    }
                    weir_kafka::Offered::NotClient => {
                        if let Some(warning) = weir_engine::settings::unknown_key_warning(key) {
                            tracing::warn!("{}:{}: {warning}", path.display(), n + 1);
                        }
                        self.properties.insert(key.to_string(), value.to_string());
                    }
                },
            }
        }
        Ok(())
    }
}

const BRIDGE_PREFIX: &str = "weir.mqtt.bridge.";
const SINK_PREFIX: &str = "weir.mqtt.sink.";

/// The settings of a bridge (`weir.mqtt.bridge.<name>.<setting>`).
pub const BRIDGE_KEYS: &[&str] = &[
    "url",
    "topics",
    "qos",
    "client.id",
    "clean.session",
    "username",
    "password",
    "tls.ca.file",
    "tls.certificate.file",
    "tls.key.file",
];

/// A bridge's configuration from its settings: `url` (`mqtt://HOST:PORT`, or
/// `mqtts://HOST:PORT` for TLS), `topics` (comma-separated filters), `qos` (default 1),
/// `client.id` (default `weir-<service id>-<name>`), `clean.session` (default false: the
/// broker keeps what Weir has not acknowledged), `username`/`password`, and for TLS
/// `tls.ca.file` (default: the system's CAs), `tls.certificate.file` and `tls.key.file`
/// (a client certificate).
pub fn bridge_config(
    name: &str,
    settings: &BTreeMap<String, String>,
    service_id: &str,
) -> Result<weir_mqtt::bridge::BridgeConfig, String> {
    let config = broker_config("MQTT bridge", name, settings, service_id)?;
    if config.filters.is_empty() {
        return Err(format!(
            "MQTT bridge {name}: no topics (comma-separated MQTT topic filters)"
        ));
    }
    Ok(config)
}

/// A connection to a broker from `settings` (a bridge's or a sink's: `what`).
pub fn broker_config(
    what: &str,
    name: &str,
    settings: &BTreeMap<String, String>,
    service_id: &str,
) -> Result<weir_mqtt::bridge::BridgeConfig, String> {
    let bad = |e: &str| format!("{what} {name}: {e}");
    let url = settings
        .get("url")
        .ok_or_else(|| bad("no url (mqtt://HOST:PORT or mqtts://HOST:PORT)"))?;
    let (scheme, at) = url.split_once("://").unwrap_or(("mqtt", url));
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => {
            return Err(bad(&format!(
                "unknown scheme '{other}' (mqtt:// or mqtts://)"
            )));
        }
    };
    let at = at.trim_end_matches('/');
    let (host, port) = match at.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad(&format!("bad port in {url}")))?,
        ),
        None => (at, if tls { 8883 } else { 1883 }),
    };
    let filters: Vec<String> = settings
        .get("topics")
        .map(|t| {
            t.split(',')
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let qos = match settings.get("qos").map(String::as_str) {
        None => 1,
        Some("0") => 0,
        Some("1") => 1,
        Some("2") => 2,
        Some(other) => return Err(bad(&format!("qos is 0, 1 or 2, not {other}"))),
    };
    let clean_session = match settings.get("clean.session").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad(&format!("clean.session is true or false, not {other}"))),
    };
    let path = |k: &str| settings.get(k).map(PathBuf::from);
    let tls = match tls {
        false => None,
        true => {
            let identity = match (path("tls.certificate.file"), path("tls.key.file")) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => return Err(bad("tls.certificate.file and tls.key.file go together")),
            };
            Some(
                tls::client_config(
                    path("tls.ca.file").as_deref(),
                    identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                )
                .map_err(|e| bad(&e))?,
            )
        }
    };
    Ok(weir_mqtt::bridge::BridgeConfig {
        name: name.to_string(),
        host: host.to_string(),
        port,
        tls,
        filters,
        qos,
        client_id: settings
            .get("client.id")
            .cloned()
            .unwrap_or_else(|| format!("weir-{}-{name}", service_id.trim_end_matches('_'))),
        clean_session,
        credentials: settings.get("username").map(|u| {
            (
                u.clone(),
                settings.get("password").cloned().unwrap_or_default(),
            )
        }),
        keep_alive: Duration::from_secs(30),
    })
}

/// A setting in milliseconds.
fn millis(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("'{value}' is not a number of milliseconds"))
}

/// What the request handlers share.
pub(crate) struct AppState {
    pub runtime: Runtime,
    pub users: Option<Users>,
    pub sequence: AtomicU64,
    pub statuses: Mutex<BTreeMap<String, entities::CommandStatus>>,
    pub push_queries: Arc<AtomicUsize>,
    pub max_push_queries: usize,
    /// Flips to true when the server stops: open push streams end.
    pub stopping: watch::Receiver<bool>,
    pub cluster_id: String,
    pub service_id: String,
    /// The MQTT listener's counters, when it runs.
    pub mqtt: Option<Arc<weir_mqtt::MqttStats>>,
    /// The MQTT bridges' counters, by name.
    pub bridges: Vec<(String, Arc<weir_mqtt::bridge::BridgeStats>)>,
    /// The MQTT sinks' counters, by name.
    pub sinks: Vec<(String, Arc<mqtt_sink::SinkStats>)>,
    pub requests: metrics::Requests,
    /// Weir's own schema registry, served over Confluent's REST API (`None` when
    /// `ksql.schema.registry.url` names an external one).
    pub schemas: Option<Arc<LocalRegistry>>,
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    mqtt_tls_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Server {
    /// Opens the log (replaying the command log, so persistent queries resume), binds the
    /// port and starts serving on a thread of its own.
    pub fn start(config: ServerConfig) -> Result<Server, String> {
        Self::start_inner(config, false)
    }

    /// As [`Server::start`], and also stops on SIGINT or SIGTERM (for `weir server`).
    pub fn start_with_signals(config: ServerConfig) -> Result<Server, String> {
        Self::start_inner(config, true)
    }

    fn start_inner(config: ServerConfig, signals: bool) -> Result<Server, String> {
        let users = match &config.users_file {
            Some(path) => Some(Users::load(path)?),
            None => None,
        };
        let (log, cluster_id): (Arc<dyn Log>, String) = match &config.kafka_bootstrap {
            None => (
                Arc::new(
                    EmbeddedLog::open(&config.data_dir, config.log.clone())
                        .map_err(|e| format!("opening {}: {e}", config.data_dir.display()))?,
                ),
                "weir-embedded".to_string(),
            ),
            Some(b) => (
                Arc::new(
                    weir_kafka::KafkaLog::connect_with(b, &config.kafka_client)
                        .map_err(|e| format!("connecting to Kafka at {b}: {e}"))?,
                ),
                format!("kafka:{b}"),
            ),
        };
        let (functions, plugin_dir) = match &config.plugin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    format!("cannot create the plugin folder {}: {e}", dir.display())
                })?;
                let (functions, watch, _) = scan_plugins(dir, &config.properties);
                (functions, Some(watch))
            }
            None => (plugin_functions(), None),
        };
        // TLS: the REST API offers HTTP/2 and HTTP/1.1 by ALPN; MQTT has no ALPN of its own.
        let rest_tls = match config.rest_tls {
            true => config.tls_acceptor(&[b"h2", b"http/1.1"])?,
            false => None,
        };
        let mqtt_tls = match config.mqtt_tls_listen {
            Some(_) => config.tls_acceptor(&[])?,
            None => None,
        };
        let bridges = config
            .mqtt_bridges
            .iter()
            .map(|(name, settings)| bridge_config(name, settings, &config.service_id))
            .collect::<Result<Vec<_>, _>>()?;
        let bridge_map = match bridges.is_empty() {
            true => None,
            false => {
                let map = weir_mqtt::TopicMap::parse(&config.mqtt_topic_map)?;
                if map.is_empty() {
                    return Err("an MQTT bridge needs weir.mqtt.topic.map (--mqtt-topic-map): where its topics go".into());
                }
                Some(map)
            }
        };
        let bridges: Vec<_> = bridges
            .into_iter()
            .map(|b| (b, Arc::new(weir_mqtt::bridge::BridgeStats::default())))
            .collect();
        let sinks: Vec<(mqtt_sink::SinkConfig, Arc<mqtt_sink::SinkStats>)> = config
            .mqtt_sinks
            .iter()
            .map(|(name, settings)| {
                mqtt_sink::sink_config(name, settings, &config.service_id)
                    .map(|s| (s, Arc::default()))
            })
            .collect::<Result<_, _>>()?;
        let bridging = bridge_map.map(|map| Bridging {
            map,
            log: log.clone(),
            bridges: bridges.clone(),
        });
        let mqtt = match config.mqtt_listen.is_some() || config.mqtt_tls_listen.is_some() {
            true => Some(start_mqtt(&config, mqtt_tls, log.clone(), users.clone())?),
            false => None,
        };
        // The schema formats' registry: an external one when named, else Weir's own (kept in
        // the log), which this server also serves over Confluent's REST API.
        let (registry, schemas): (Arc<dyn SchemaRegistry>, Option<Arc<LocalRegistry>>) =
            match config.properties.get(weir_engine::SCHEMA_REGISTRY_URL) {
                Some(url) if !url.trim().is_empty() => {
                    (Arc::new(RemoteRegistry::new(url.trim())), None)
                }
                _ => {
                    let local = Arc::new(
                        LocalRegistry::open(
                            log.clone(),
                            &weir_engine::schemas_topic(&config.service_id),
                        )
                        .map_err(|e| format!("opening the schema registry: {e}"))?,
                    );
                    (local.clone(), Some(local))
                }
            };
        let mut engine = Engine::open_member_with(
            log,
            functions,
            &config.service_id,
            config.session_timeout,
            config.internal_topics,
            Some(registry.clone()),
        )
        .map_err(|e| format!("recovering the command log: {e}"))?;
        for (k, v) in &config.properties {
            engine.set_property(k, v);
        }
        // The one the replay bound sources to (setting the property does not replace it).
        engine.set_schema_registry(registry);
        let recovered = engine.queries().count();
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let runtime = Runtime::start_with(engine, config.workers);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (stopping_tx, stopping_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            runtime,
            users,
            sequence: AtomicU64::new(0),
            statuses: Mutex::new(BTreeMap::new()),
            push_queries: Arc::new(AtomicUsize::new(0)),
            max_push_queries: config.max_push_queries,
            stopping: stopping_rx,
            cluster_id,
            service_id: config.service_id.clone(),
            mqtt: mqtt.as_ref().map(|m| m.mqtt.stats().clone()),
            bridges: bridges
                .iter()
                .map(|(b, s)| (b.name.clone(), s.clone()))
                .collect(),
            sinks: sinks
                .iter()
                .map(|(c, s)| (c.name.clone(), s.clone()))
                .collect(),
            requests: metrics::Requests::default(),
            schemas,
        });
        tracing::info!(
            %addr,
            recovered_queries = recovered,
            log = %config.kafka_bootstrap.as_deref().map_or_else(|| config.data_dir.display().to_string(), |b| format!("kafka {b}")),
            auth = state.users.is_some(),
            "weir server listening"
        );
        if let Some(watch) = plugin_dir {
            let state = state.clone();
            std::thread::Builder::new()
                .name("weir-plugins".into())
                .spawn(move || plugins::watch(watch, state))
                .map_err(|e| e.to_string())?;
        }
        let mqtt_addr = mqtt
            .as_ref()
            .and_then(|m| m.plain.as_ref().map(|(_, a)| *a));
        let mqtt_tls_addr = mqtt
            .as_ref()
            .and_then(|m| m.tls.as_ref().map(|(_, a, _)| *a));
        let thread = std::thread::Builder::new()
            .name("weir-server".into())
            .spawn(move || {
                serve(
                    listener,
                    rest_tls,
                    mqtt,
                    bridging,
                    sinks,
                    state,
                    stop_rx,
                    stopping_tx,
                    signals,
                )
            })
            .map_err(|e| e.to_string())?;
        Ok(Server {
            addr,
            mqtt_addr,
            mqtt_tls_addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the MQTT listener listens, when it runs.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// Where the MQTT listener takes TLS connections, when it does.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.mqtt_tls_addr
    }

    /// Blocks until the server stops (a signal, for `start_with_signals`).
    pub fn wait(mut self) -> Result<(), String> {
        self.join()
    }

    /// Stops accepting requests, ends open push queries, lets the query worker finish its
    /// batch (committing progress) and flushes the log.
    pub fn shutdown(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    fn join(&mut self) -> Result<(), String> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| "the server thread panicked".to_string())?,
            None => Ok(()),
        }
    }
}

/// The MQTT listener, bound: connections are served once the server's runtime runs.
/// Functions a plugin's row warnings reach the processing log from, no plugin yet.
fn plugin_functions() -> weir_engine::Functions {
    let mut functions = weir_engine::Functions::default();
    functions.set_warning_source(weir_udf_host::take_row_warnings);
    functions
}

/// Functions with the plugins of `dir` registered (one scan), the folder to go on
/// watching, and a line per plugin file: what it added, or why it was refused.
fn scan_plugins(
    dir: &Path,
    properties: &BTreeMap<String, String>,
) -> (
    weir_engine::Functions,
    weir_udf_host::PluginDir,
    Vec<String>,
) {
    use weir_udf_host::Change;
    let mut functions = plugin_functions();
    let mut watch = plugins::open(dir, properties);
    let changes = watch.initial_scan();
    let lines = changes
        .iter()
        .map(|c| match c {
            Change::Loaded(p) | Change::Replaced { new: p, .. } => {
                let names: Vec<&str> = p
                    .scalars
                    .iter()
                    .chain(&p.aggregates)
                    .map(|f| f.name.as_str())
                    .collect();
                format!("plugin {}: {}", p.path.display(), names.join(", "))
            }
            Change::Removed(p) => format!("plugin {}: removed", p.path.display()),
            Change::Refused { path, reason } => {
                format!("plugin {} refused: {reason}", path.display())
            }
        })
        .collect();
    plugins::apply(&mut functions, changes);
    plugins::note_refusals(&mut functions, &watch);
    (functions, watch, lines)
}

/// Functions with the plugins of `dir` registered, for a headless run (`weir run`): one
/// scan, no watching, and a line per plugin file (see [`scan_plugins`]).
pub fn functions_with_plugins(
    dir: &Path,
    properties: &BTreeMap<String, String>,
) -> (weir_engine::Functions, Vec<String>) {
    let (functions, _, lines) = scan_plugins(dir, properties);
    (functions, lines)
}

/// The MQTT listener and its ports: plain, and over TLS.
struct MqttListener {
    mqtt: Arc<weir_mqtt::Mqtt>,
    plain: Option<(std::net::TcpListener, SocketAddr)>,
    tls: Option<(std::net::TcpListener, SocketAddr, tokio_rustls::TlsAcceptor)>,
}

fn bind(at: SocketAddr, what: &str) -> Result<(std::net::TcpListener, SocketAddr), String> {
    let listener = std::net::TcpListener::bind(at)
        .map_err(|e| format!("cannot listen for {what} on {at}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, addr))
}

fn start_mqtt(
    config: &ServerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    log: Arc<dyn Log>,
    users: Option<Users>,
) -> Result<MqttListener, String> {
    let topics = weir_mqtt::TopicMap::parse(&config.mqtt_topic_map)?;
    if topics.is_empty() {
        tracing::warn!(
            "the MQTT listener has no weir.mqtt.topic.map (--mqtt-topic-map): every connection is refused"
        );
    }
    let authenticate: Option<weir_mqtt::Authenticator> = users.map(|u| {
        let f: weir_mqtt::Authenticator = Arc::new(move |name, password| u.verify(name, password));
        f
    });
    let mqtt = weir_mqtt::Mqtt::new(
        weir_mqtt::MqttConfig {
            topics,
            max_message_bytes: config.mqtt_max_message_bytes,
            max_connections: config.mqtt_max_connections,
            authenticate,
            ..Default::default()
        },
        log,
    );
    let plain = config.mqtt_listen.map(|at| bind(at, "MQTT")).transpose()?;
    let tls = match (config.mqtt_tls_listen, tls) {
        (Some(at), Some(acceptor)) => {
            let (l, addr) = bind(at, "MQTT over TLS")?;
            Some((l, addr, acceptor))
        }
        _ => None,
    };
    let client_certs = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if let Some((_, addr)) = &plain {
        tracing::info!(%addr, map = %config.mqtt_topic_map, auth = config.users_file.is_some(), "MQTT listener ready");
    }
    if let Some((_, addr, _)) = &tls {
        tracing::info!(%addr, map = %config.mqtt_topic_map, auth = config.users_file.is_some(), client_certs, "MQTT TLS listener ready");
    }
    Ok(MqttListener { mqtt, plain, tls })
}

/// The MQTT bridges to run, and where what they receive goes.
struct Bridging {
    map: weir_mqtt::TopicMap,
    log: Arc<dyn Log>,
    bridges: Vec<(
        weir_mqtt::bridge::BridgeConfig,
        Arc<weir_mqtt::bridge::BridgeStats>,
    )>,
}

#[allow(clippy::too_many_arguments)]
fn serve(
    listener: std::net::TcpListener,
    rest_tls: Option<tokio_rustls::TlsAcceptor>,
    mqtt: Option<MqttListener>,
    bridging: Option<Bridging>,
    sinks: Vec<(mqtt_sink::SinkConfig, Arc<mqtt_sink::SinkStats>)>,
    state: Arc<AppState>,
    stop: oneshot::Receiver<()>,
    stopping: watch::Sender<bool>,
    signals: bool,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-http")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let served = rt.block_on(async {
        // No Nagle delay: acknowledgements and pushed rows are small writes a client
        // waits for (with the client's delayed ACKs, each could wait 40 ms).
        let tcp = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        if let Some(m) = mqtt {
            if let Some((l, _)) = m.plain {
                let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                tokio::spawn(m.mqtt.clone().serve(l, None, state.stopping.clone()));
            }
            if let Some((l, _, acceptor)) = m.tls {
                let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                tokio::spawn(
                    m.mqtt
                        .clone()
                        .serve(l, Some(acceptor), state.stopping.clone()),
                );
            }
        }
        if let Some(b) = bridging {
            let ingest = weir_mqtt::ingest::start(b.log.clone());
            for (config, stats) in b.bridges {
                tokio::spawn(weir_mqtt::bridge::run(
                    config,
                    b.map.clone(),
                    b.log.clone(),
                    ingest.clone(),
                    stats,
                    state.stopping.clone(),
                ));
            }
        }
        for (config, stats) in sinks {
            tokio::spawn(mqtt_sink::run(
                config,
                state.clone(),
                stats,
                state.stopping.clone(),
            ));
        }
        let app = rest::router(state.clone());
        let shutdown = async move {
            wait_for_stop(stop, signals).await;
            tracing::info!("weir server stopping");
            let _ = stopping.send(true);
        };
        match rest_tls {
            None => {
                let listener =
                    axum::serve::ListenerExt::tap_io(tcp, |tcp: &mut tokio::net::TcpStream| {
                        let _ = tcp.set_nodelay(true);
                    });
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
            Some(acceptor) => {
                let listener = tls::TlsListener::new(tcp, acceptor).map_err(|e| e.to_string())?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    });
    // Connections still open after a grace period are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(5));
    let flushed = state
        .runtime
        .shutdown()
        .map_err(|e| format!("flushing the log: {e}"));
    tracing::info!("weir server stopped");
    served.and(flushed)
}

async fn wait_for_stop(stop: oneshot::Receiver<()>, signals: bool) {
    if !signals {
        let _ = stop.await;
        return;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = stop.await;
                return;
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = stop => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use weir_engine::settings::find;

    /// `--listen` and `listeners` take what ksqlDB's `listeners` takes, the default shown
    /// in `--help` included.
    #[test]
    fn listen_addresses_read_as_ksqldb_writes_them() {
        use super::listen_address;
        let default = find("listeners").unwrap().default.to_string();
        assert_eq!(listen_address(&default).unwrap().port(), 8088);
        assert_eq!(
            listen_address("http://0.0.0.0:9000,https://0.0.0.0:9001").unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(
            listen_address("127.0.0.1:18088").unwrap(),
            "127.0.0.1:18088".parse().unwrap()
        );
        assert_eq!(
            listen_address("mqtt://[::1]:1883").unwrap(),
            "[::1]:1883".parse().unwrap()
        );
        assert_eq!(listen_address("localhost:8088").unwrap().port(), 8088);
        let err = listen_address("http://nowhere").unwrap_err();
        assert!(err.contains("HOST:PORT"), "{err}");
    }

    /// The log's and the internal topics' settings from a config file reach the server's
    /// config; a bad value names its line.
    #[test]
    fn log_and_internal_topic_settings_are_read_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.properties");
        std::fs::write(
            &path,
            "weir.log.retention.ms=86400000\nweir.log.retention.bytes=1073741824\n\
             weir.log.retention.check.interval.ms=5000\n\
             weir.log.cleaner.min.compaction.lag.ms=1000\n\
             weir.log.cleaner.delete.retention.ms=0\n\
             ksql.internal.topic.replicas=3\nksql.internal.topic.min.insync.replicas=2\n\
             weir.checkpoint.trim=false\n",
        )
        .unwrap();
        let mut config = super::ServerConfig::default();
        config.apply_properties_file(&path).unwrap();
        let log = &config.log;
        assert_eq!(log.retention_ms, Some(86_400_000));
        assert_eq!(log.retention_bytes, Some(1 << 30));
        assert_eq!(log.housekeeping_every, Some(super::Duration::from_secs(5)));
        assert_eq!(log.min_compaction_lag, super::Duration::from_secs(1));
        assert_eq!(log.delete_retention, super::Duration::ZERO);
        assert_eq!(config.internal_topics.replicas, 3);
        assert_eq!(config.internal_topics.min_insync_replicas, Some(2));
        assert!(!config.internal_topics.trim_checkpoints);
        assert!(config.properties.is_empty(), "{:?}", config.properties);
        std::fs::write(&path, "# comment\nksql.internal.topic.replicas=0\n").unwrap();
        let err = super::ServerConfig::default()
            .apply_properties_file(&path)
            .unwrap_err();
        assert!(err.contains(":2: ksql.internal.topic.replicas"), "{err}");
    }

    /// `weir server --help` shows the settings table's defaults: they must be the server's.
    #[test]
    fn declared_defaults_are_the_servers() {
        let config = super::ServerConfig::default();
        let default = |key: &str| find(key).unwrap().default.to_string();
        assert_eq!(default("listeners"), format!("http://{}", config.listen));
        assert_eq!(
            default("weir.data.dir"),
            config.data_dir.display().to_string()
        );
        assert_eq!(
            default("weir.max.push.queries"),
            config.max_push_queries.to_string()
        );
        assert_eq!(
            default("weir.mqtt.message.max.bytes"),
            config.mqtt_max_message_bytes.to_string()
        );
        assert_eq!(
            default("weir.mqtt.max.connections"),
            config.mqtt_max_connections.to_string()
        );
    }
}
