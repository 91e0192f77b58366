//! The seed demo verbatim (../shared/seed/connected-cars-demo.md): every statement of
//! sql/connected_cars.sql typed into the REPL (in tmux) against a server whose topics are
//! on Kafka (the tansu broker) with its MQTT listener on and the anomaly plugin loaded.
//! The demo's sample message is produced to topic `temperature` by an external Kafka
//! client (confluent-kafka from PyPI, as kafkacat was in the demo) and published with
//! `mosquitto_pub -t car/engine/temperature -q 2`; both show up in the push query with
//! their anomaly value, and `PRINT ANOMALYDETECTIONWITHFILTER FROM BEGINNING` shows the
//! flagged event.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Tmux, broker, tansu};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The demo's `kafkacat -P -t temperature`: confluent-kafka from PyPI (scripts/test.sh
/// puts it in .weir/venv).
fn kafka_produce(port: u16, topic: &str, value: &str) {
    let python = repo(".weir/venv/bin/python");
    let script = "import sys\nfrom confluent_kafka import Producer\np = Producer({'bootstrap.servers': sys.argv[1]})\np.produce(sys.argv[2], value=sys.argv[3].encode())\nassert p.flush(30) == 0, 'not delivered'\n";
    let out = Command::new(&python)
        .args(["-c", script, &format!("127.0.0.1:{port}"), topic, value])
        .output()
        .expect("the venv's python (scripts/test.sh --setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mosquitto_pub(port: u16, message: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "car/engine/temperature", "-q", "2", "-m", message])
        .output()
        .expect("mosquitto_pub (scripts/test.sh installs mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_seed_demo_typed_into_the_repl_on_kafka_with_mqtt() {
    let broker = broker();
    let created = Command::new(tansu())
        .args(["topic", "create", "temperature", "--partitions", "1"])
        .args(["--broker", &format!("tcp://127.0.0.1:{}", broker.port)])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_weir")).with_file_name("libanomaly.so");
    assert!(plugin.exists(), "build the workspace first");
    std::fs::copy(&plugin, plugins.join("libanomaly.so")).unwrap();
    let server = weir_server::Server::start(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        kafka_bootstrap: Some(format!("127.0.0.1:{}", broker.port)),
        plugin_dir: Some(plugins),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_topic_map: "temperature:.*temperature".into(),
        // tansu 0.6 on SQLite has no DeleteRecords.
        internal_topics: weir_engine::InternalTopics {
            trim_checkpoints: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let mqtt = server.mqtt_addr().unwrap().port();

    let command = format!(
        "env WEIR_HISTORY_FILE={} {} cli --server http://{}",
        dir.path().join("history").display(),
        env!("CARGO_BIN_EXE_weir"),
        server.addr()
    );
    let tmux = Tmux::start("weir-seed", &command, 200, 60);
    tmux.wait_for("weir> ", 1);

    // The statements, exactly as sql/connected_cars.sql (the demo's) has them.
    let script = std::fs::read_to_string(repo("sql/connected_cars.sql")).unwrap();
    let statements: Vec<String> = script
        .split(';')
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s};"))
        .collect();
    assert_eq!(statements.len(), 7, "{statements:?}");
    let sample = std::fs::read_to_string(repo("udfs/anomaly/sample_message.txt")).unwrap();
    let sample = sample.trim();
    let model: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("udfs/anomaly/model/MODEL.json")).unwrap(),
    )
    .unwrap();
    let sample_score = model["sample_message_score"].as_f64().unwrap();
    // LIST FUNCTIONS: ANOMALY is there, a SCALAR.
    tmux.lines(&statements[0]);
    let screen = tmux.wait_for("ANOMALY_SCORE", 1);
    assert!(
        screen
            .lines()
            .any(|l| l.contains("ANOMALY ") && l.contains("SCALAR")),
        "{screen}"
    );
    tmux.lines(&statements[1]);
    tmux.wait_for("Stream created", 1);

    // The push query; then the sample from a Kafka producer and over MQTT at QoS 2.
    tmux.lines(&statements[2]);
    // The header is drawn once the query runs; its start offsets are fixed by then.
    tmux.wait_for("|EVENTID", 1);
    kafka_produce(broker.port, "temperature", sample);
    mosquitto_pub(mqtt, &sample.replacen("99999", "11111", 1));
    let screen = tmux.wait_for("|11111", 1);
    for id in ["|99999", "|11111"] {
        let row = screen
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{screen}"));
        let value: f64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(
            (value - sample_score).abs() / sample_score < 1e-3,
            "{row} vs {sample_score}"
        );
    }
    tmux.key("C-c");
    tmux.wait_for("Query terminated", 1);

    tmux.lines(&statements[3]);
    tmux.lines(&statements[4]);
    tmux.wait_for("Created query with ID", 2);
    tmux.lines(&statements[5]);
    tmux.wait_for("|ANOMALY_VAL", 1);
    // A normal message (filtered out), and a sensor dropping out on every other reading:
    // it scores far above the demo's `> 3` (8.3; MODEL.md).
    mosquitto_pub(mqtt, &sample.replacen("99999", "22222", 1));
    let readings: Vec<&str> = sample.split_once(',').unwrap().1.split('#').collect();
    let dead = format!(
        "33333,{}",
        readings
            .iter()
            .enumerate()
            .map(|(i, r)| if i % 2 == 0 { "0.00" } else { r.trim() })
            .collect::<Vec<_>>()
            .join("# ")
    );
    mosquitto_pub(mqtt, &dead);
    let screen = tmux.wait_for("33333", 1);
    assert!(
        !screen.contains("22222"),
        "a normal message is not flagged: {screen}"
    );
    tmux.key("C-c");
    tmux.wait_for("Query terminated", 2);

    // PRINT shows the flagged event in the output topic, as DELIMITED.
    tmux.lines(&statements[6]);
    let screen = tmux.wait_for("value: 33333,8.3", 1);
    assert!(!screen.contains("value: 22222"), "{screen}");
    tmux.key("C-c");
    tmux.wait_for("Query terminated", 3);
    // Not one of the demo's statements: the source topic holds the MQTT topic as the key
    // (derived streams declare no key column, so, as in today's ksqlDB, theirs is null).
    tmux.lines("PRINT temperature FROM BEGINNING LIMIT 4;");
    let screen = tmux.wait_for("key: car/engine/temperature, value: 33333,", 1);
    assert!(
        screen.contains("key: <null>, value: 99999,"),
        "the Kafka producer's: {screen}"
    );
    tmux.key("C-d");
    server.shutdown().unwrap();
}
