//! `weir demo` (the connected-car demo, live, on the embedded log) and `weir gen cars`.
//!
//! The demo starts a server in this process with its MQTT listener and the anomaly plugin,
//! creates the demo's streams, publishes generated car messages over MQTT at QoS 2 (as the
//! demo's `mosquitto_pub -q 2` does), and shows a progress line and each flagged event as
//! it arrives from a push query; at the end, precision and recall against the injected
//! faults.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cars::{self, Kind};
use crate::client::{Client, PushLine};
use crate::progress::{Progress, Stream};

pub struct DemoOptions {
    pub count: usize,
    pub anomalies: f64,
    /// Messages a second (0: as fast as they are acknowledged).
    pub rate: f64,
    pub seed: u64,
    pub mqtt_listen: std::net::SocketAddr,
    /// Keep topics here (default: a temporary folder, removed at the end).
    pub data_dir: Option<PathBuf>,
    /// The anomaly plugin (default: `libanomaly.so` beside this binary).
    pub plugin: Option<PathBuf>,
    /// ONNX Runtime's library (default: `ORT_DYLIB_PATH`, else beside the plugin).
    pub ort_library: Option<PathBuf>,
    /// Scores above it are flagged (default: the built-in model's, [`model_threshold`]).
    pub threshold: Option<f64>,
    /// Where `eventid,kind` of every message goes (default: `labels.csv` in the data
    /// folder when one is given, else `weir-demo-labels.csv` here).
    pub labels: Option<PathBuf>,
    /// Where the REST API and the web console listen (port 0: any free port).
    pub listen: std::net::SocketAddr,
    /// Keep serving (the console stays up) after the summary, until Ctrl-C.
    pub stay: bool,
    /// An existing MQTT broker (HOST:PORT): the cars publish there, Weir bridges from it
    /// (no listener of its own), and the flagged events go back to it on `car/alerts`.
    pub bridge: Option<String>,
}

/// The MQTT topic the demo's flagged events go back to with `--bridge`.
pub const ALERTS_TOPIC: &str = "car/alerts";

/// What the demo measured.
#[derive(Debug)]
pub struct DemoSummary {
    pub published: usize,
    pub scored: u64,
    pub flagged: usize,
    pub true_positives: usize,
    pub injected: usize,
    pub precision: f64,
    pub recall: f64,
}

/// The threshold of the model built into the anomaly plugin (`udfs/anomaly/MODEL.md`),
/// built into this binary with it.
pub fn model_threshold() -> Result<f64, String> {
    const MODEL_JSON: &str = include_str!("../../../udfs/anomaly/model/MODEL.json");
    let v: serde_json::Value = serde_json::from_str(MODEL_JSON).map_err(|e| e.to_string())?;
    v["threshold"]
        .as_f64()
        .ok_or_else(|| "the model's MODEL.json has no threshold".to_string())
}

/// The console opened on the demo's scores: a push query over every scored event, its
/// ANOMALY_VAL charted against the threshold.
pub fn console_url(addr: &str, threshold: f64) -> String {
    let q = "SELECT EVENTID, ANOMALY_VAL FROM ANOMALYDETECTION EMIT CHANGES;";
    let encoded: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!(
        "http://{addr}/?q={encoded}&column=ANOMALY_VAL&threshold={threshold}&earliest=1&tab=charts"
    )
}

/// The ONNX Runtime library's file name the plugin is built for.
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

/// The anomaly plugin: given, or beside this binary (cargo builds it into the same folder).
pub(crate) fn anomaly_plugin(given: Option<&Path>) -> Result<PathBuf, String> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            exe.parent().ok_or("no folder")?.join("libanomaly.so")
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the anomaly plugin {} is missing: pass --plugin PATH (build it with `cargo build -p udf-anomaly`; scripts/demo.sh does)",
            path.display()
        ))
    }
}

/// ONNX Runtime's library: given, `ORT_DYLIB_PATH`, or beside the plugin.
pub(crate) fn ort_library(given: Option<&Path>, plugin: &Path) -> Result<PathBuf, String> {
    let path = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| plugin.with_file_name(ORT_LIBRARY));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "ONNX Runtime's library {} is missing: pass --ort-library PATH or set ORT_DYLIB_PATH (the onnxruntime==1.31.1 wheel from PyPI holds {ORT_LIBRARY}; scripts/demo.sh fetches it into .weir/lib)",
            path.display()
        ))
    }
}

fn query_id_of(entities: &[serde_json::Value]) -> String {
    entities
        .first()
        .and_then(|e| e["commandStatus"]["queryId"].as_str())
        .unwrap_or("")
        .to_string()
}

pub fn demo(o: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary, String> {
    let threshold = match o.threshold {
        Some(t) => t,
        None => model_threshold()?,
    };
    let plugin = anomaly_plugin(o.plugin.as_deref())?;
    let ort = ort_library(o.ort_library.as_deref(), &plugin)?;
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data_dir = o
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let labels_file = match (&o.labels, &o.data_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => dir.join("labels.csv"),
        (None, None) => PathBuf::from("weir-demo-labels.csv"),
    };
    let plugins = data_dir.join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
    std::fs::copy(&plugin, plugins.join("libanomaly.so"))
        .map_err(|e| format!("copying {}: {e}", plugin.display()))?;
    let start = if o.stay {
        weir_server::Server::start_with_signals
    } else {
        weir_server::Server::start
    };
    let mut config = weir_server::ServerConfig {
        listen: o.listen,
        data_dir: data_dir.clone(),
        plugin_dir: Some(plugins),
        mqtt_listen: Some(o.mqtt_listen),
        mqtt_topic_map: "temperature:.*temperature".into(),
        properties: BTreeMap::from([(
            "weir.functions.anomaly.ort_library".to_string(),
            ort.display().to_string(),
        )]),
        ..Default::default()
    };
    if let Some(broker) = &o.bridge {
        // The cars publish to the broker; Weir subscribes there and answers on car/alerts.
        config.mqtt_listen = None;
        let url = format!("mqtt://{broker}");
        config.mqtt_bridges.insert(
            "demo".into(),
            BTreeMap::from([
                ("url".to_string(), url.clone()),
                ("topics".to_string(), "car/+/temperature".to_string()),
                ("qos".to_string(), "2".to_string()),
            ]),
        );
        config.mqtt_sinks.insert(
            "alerts".into(),
            BTreeMap::from([
                ("url".to_string(), url),
                (
                    "stream".to_string(),
                    "ANOMALYDETECTIONWITHFILTER".to_string(),
                ),
                ("topic".to_string(), ALERTS_TOPIC.to_string()),
                ("qos".to_string(), "1".to_string()),
            ]),
        );
    }
    let server = start(config)?;
    let mqtt: std::net::SocketAddr = match &o.bridge {
        None => server.mqtt_addr().expect("the MQTT listener runs"),
        Some(broker) => std::net::ToSocketAddrs::to_socket_addrs(broker.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("--bridge {broker}: not a HOST:PORT"))?,
    };
    let client = Client::new(&format!("http://{}", server.addr()), None);
    let run = |sql: &str| {
        client
            .ksql(sql, &BTreeMap::new())
            .map_err(|e| format!("{sql}\n  {e}"))
    };
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(
        out,
        format!(
            "Weir connected-car demo: REST on http://{}, MQTT on {mqtt}{}, data in {}",
            server.addr(),
            if o.bridge.is_some() {
                format!(" (an existing broker, bridged; flagged events go back to {ALERTS_TOPIC})")
            } else {
                String::new()
            },
            data_dir.display()
        ),
    );
    say(
        out,
        format!(
            "console: {}{}",
            console_url(&server.addr().to_string(), threshold),
            if o.stay {
                ""
            } else {
                "  (add --stay to keep it up after the run)"
            }
        ),
    );
    let statements = [
        "CREATE STREAM carsensor (eventid integer, sensorinput varchar) WITH (kafka_topic='temperature', value_format='DELIMITED', partitions=1);".to_string(),
        "CREATE STREAM ANOMALYDETECTION AS SELECT EVENTID, CAST (ANOMALY(SENSORINPUT) AS DOUBLE) AS ANOMALY_VAL FROM CARSENSOR;".to_string(),
        format!("CREATE STREAM ANOMALYDETECTIONWITHFILTER AS SELECT EVENTID, ANOMALY_VAL FROM ANOMALYDETECTION WHERE ANOMALY_VAL > {threshold};"),
    ];
    let mut scoring_query = String::new();
    for sql in &statements {
        say(out, format!("weir> {sql}"));
        let entities = run(sql)?;
        if sql.contains("AS SELECT") && scoring_query.is_empty() {
            scoring_query = query_id_of(&entities);
        }
    }
    let messages = cars::messages(o.seed, o.count, o.anomalies, 1);
    let labels: BTreeMap<u64, Kind> = messages.iter().map(|m| (m.event_id, m.kind)).collect();
    write_labels(&labels_file, &messages)?;

    // Flagged events, as the push query delivers them.
    let flagged: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let screen: Arc<Mutex<Vec<String>>> = Arc::default();
    let stream = client
        .query_stream(
            "SELECT * FROM ANOMALYDETECTIONWITHFILTER EMIT CHANGES;",
            &BTreeMap::from([("auto.offset.reset".to_string(), "earliest".to_string())]),
        )
        .map_err(|e| e.to_string())?;
    let push_id = stream.query_id.clone();
    let reader = {
        let (flagged, screen, labels) = (flagged.clone(), screen.clone(), labels.clone());
        std::thread::spawn(move || {
            for line in stream {
                let Ok(PushLine::Row(row)) = line else { break };
                let id = row.first().and_then(|v| v.as_u64()).unwrap_or(0);
                let score = row.get(1).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                flagged.lock().unwrap().insert(id);
                let truth = labels.get(&id).map_or("?", |k| k.name());
                screen.lock().unwrap().push(format!(
                    "  ANOMALY  event {id:>6}  score {score:>8.4}  (injected: {truth})"
                ));
            }
        })
    };

    say(
        out,
        format!(
            "publishing {} generated messages to car/engine/temperature over MQTT (QoS 2){}, {:.0}% with injected faults; threshold {threshold}",
            o.count,
            if o.rate > 0.0 {
                format!(" at {:.0}/s", o.rate)
            } else {
                String::new()
            },
            o.anomalies * 100.0
        ),
    );
    let payloads: Vec<String> = messages.iter().map(|m| m.text.clone()).collect();
    let started = Instant::now();
    let metrics_url = format!("http://{}/metrics", server.addr());
    let scored_sample = format!("weir_query_records_out_total{{query=\"{scoring_query}\"}}");
    let scored_count = || crate::client::metric(&metrics_url, &scored_sample);
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut draw = |out: &mut dyn Write, published: usize, force: bool| {
        let lines: Vec<String> = std::mem::take(&mut *screen.lock().unwrap());
        if !force && lines.is_empty() && last_draw.elapsed() < Duration::from_millis(250) {
            return;
        }
        last_draw = Instant::now();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let _ = write!(out, "\r\x1b[2K");
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = write!(
            out,
            "[{secs:6.1} s] published {published:>6} ({:>6.0} events/s)  scored {:>6}  flagged {:>5}",
            published as f64 / secs,
            scored_count(),
            flagged.lock().unwrap().len()
        );
        let _ = out.flush();
    };
    {
        let mut progress = |n: usize| draw(out, n, false);
        cars::publish_mqtt(
            mqtt,
            "weir-demo",
            "car/engine/temperature",
            &payloads,
            2,
            o.rate,
            &mut progress,
        )?;
    }
    // Wait for the queries to score everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (scored_count() as usize) < o.count && Instant::now() < deadline {
        draw(out, o.count, false);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    draw(out, o.count, true);
    let _ = writeln!(out);
    // With a broker: the alerts published back before the server stops.
    if o.bridge.is_some() {
        let published = || {
            crate::client::metric(
                &metrics_url,
                "weir_mqtt_sink_published_total{sink=\"alerts\"}",
            )
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while published() < flagged.lock().unwrap().len() as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        say(
            out,
            format!("{} alerts published to {ALERTS_TOPIC}", published()),
        );
    }
    let scored = scored_count();
    let _ = client.close_query(&push_id);
    let _ = reader.join();
    let flagged = flagged.lock().unwrap().clone();
    let injected: BTreeSet<u64> = labels
        .iter()
        .filter(|(_, k)| **k != Kind::Normal)
        .map(|(id, _)| *id)
        .collect();
    let true_positives = flagged.intersection(&injected).count();
    let precision = if flagged.is_empty() {
        1.0
    } else {
        true_positives as f64 / flagged.len() as f64
    };
    let recall = if injected.is_empty() {
        1.0
    } else {
        true_positives as f64 / injected.len() as f64
    };
    say(
        out,
        format!(
            "\nsummary: {} messages published, {scored} scored in {:.1} s; {} flagged, {} faults injected",
            o.count,
            started.elapsed().as_secs_f64(),
            flagged.len(),
            injected.len()
        ),
    );
    for k in Kind::FAULTS {
        let of_kind: Vec<&u64> = labels
            .iter()
            .filter(|(_, v)| **v == k)
            .map(|(id, _)| id)
            .collect();
        let caught = of_kind.iter().filter(|id| flagged.contains(id)).count();
        say(
            out,
            format!(
                "  {:<9} {caught:>4} of {:>4} caught",
                k.name(),
                of_kind.len()
            ),
        );
    }
    say(
        out,
        format!(
            "  precision {precision:.3}   recall {recall:.3}   (labels in {})",
            labels_file.display()
        ),
    );
    if o.stay {
        say(
            out,
            format!(
                "the server and its console stay up at http://{}/ (Ctrl-C stops)",
                server.addr()
            ),
        );
        server.wait()?;
    } else {
        server.shutdown()?;
    }
    Ok(DemoSummary {
        published: o.count,
        scored,
        flagged: flagged.len(),
        true_positives,
        injected: injected.len(),
        precision,
        recall,
    })
}

/// `eventid,kind` per message, with a header line.
fn write_labels(path: &std::path::Path, messages: &[cars::Message]) -> Result<(), String> {
    let text: String = std::iter::once("eventid,kind".to_string())
        .chain(
            messages
                .iter()
                .map(|m| format!("{},{}", m.event_id, m.kind.name())),
        )
        .map(|l| l + "\n")
        .collect();
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Where `weir gen cars` writes.
pub enum GenTarget {
    Mqtt {
        addr: std::net::SocketAddr,
        topic: String,
        qos: u8,
    },
    Kafka {
        bootstrap: String,
        topic: String,
    },
    Embedded {
        dir: PathBuf,
        topic: String,
    },
}

pub fn gen_cars(
    target: &GenTarget,
    count: usize,
    anomalies: f64,
    rate: f64,
    seed: u64,
    first_id: u64,
    labels: Option<&std::path::Path>,
) -> Result<(), String> {
    let messages = cars::messages(seed, count, anomalies, first_id);
    if let Some(path) = labels {
        write_labels(path, &messages)?;
    }
    let started = Instant::now();
    let mut progress = Progress::new(
        "weir gen cars",
        "messages",
        Some(count as u64),
        Stream::Stderr,
        Duration::from_secs(5),
    );
    match target {
        GenTarget::Mqtt { addr, topic, qos } => {
            let payloads: Vec<String> = messages.iter().map(|m| m.text.clone()).collect();
            cars::publish_mqtt(
                *addr,
                &format!("weir-gen-{}", std::process::id()),
                topic,
                &payloads,
                *qos,
                rate,
                &mut |n| progress.set(n as u64),
            )?;
        }
        GenTarget::Kafka { bootstrap, topic } => {
            let log = weir_kafka::KafkaLog::connect(bootstrap).map_err(|e| e.to_string())?;
            produce(&log, topic, &messages, rate, &mut progress)?;
        }
        GenTarget::Embedded { dir, topic } => {
            let log = weir_log::EmbeddedLog::open(dir, weir_log::EmbeddedLogConfig::default())
                .map_err(|e| e.to_string())?;
            produce(&log, topic, &messages, rate, &mut progress)?;
        }
    }
    progress.finish();
    let faults = messages.iter().filter(|m| m.kind != Kind::Normal).count();
    println!(
        "wrote {count} messages ({faults} with injected faults, event ids {}..{}) in {:.2} s",
        first_id,
        first_id + count as u64 - 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn produce(
    log: &dyn weir_log::Log,
    topic: &str,
    messages: &[cars::Message],
    rate: f64,
    progress: &mut Progress,
) -> Result<(), String> {
    if log.topic(topic).map_err(|e| e.to_string())?.is_none() {
        log.create_topic(topic, weir_log::TopicConfig::default())
            .map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    for (i, chunk) in messages
        .chunks(if rate > 0.0 { 1 } else { 500 })
        .enumerate()
    {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let records: Vec<weir_log::Record> = chunk
            .iter()
            .map(|m| weir_log::Record::new(None, Some(m.text.as_bytes()), now()))
            .collect();
        log.append(topic, 0, &records).map_err(|e| e.to_string())?;
        progress.add(records.len() as u64);
    }
    log.flush().map_err(|e| e.to_string())
}
