//! Acknowledged means stored: `weir server` takes MQTT publishes from the real
//! `mosquitto_pub` at QoS 1 and 2, is killed with SIGKILL right after the last
//! acknowledgement, and the log on disk holds every acknowledged message.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn mosquitto_pub(mqtt: SocketAddr, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients; scripts/test.sh does)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_acknowledged_publish_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen",
            &http.to_string(),
            "--mqtt-listen",
            &mqtt.to_string(),
        ])
        .args(["--mqtt-topic-map", "temperature:.*temperature"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(mqtt).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut expected = BTreeMap::new();
    // QoS 2, one client per message; then 500 lines over one QoS 1 connection, which
    // mosquitto_pub leaves only once every one is acknowledged.
    for i in 0..20 {
        let m = format!("{i},qos2");
        mosquitto_pub(
            mqtt,
            &["-q", "2", "-t", "car/engine/temperature", "-m", &m],
            None,
        );
        expected.insert(m, 0);
    }
    let lines: Vec<String> = (20..520).map(|i| format!("{i},qos1")).collect();
    mosquitto_pub(
        mqtt,
        &["-q", "1", "-t", "car/brakes/temperature", "-l"],
        Some(&(lines.join("\n") + "\n")),
    );
    expected.extend(lines.into_iter().map(|m| (m, 0)));
    // Acknowledged: now kill it, with no chance to flush anything.
    server.kill().unwrap();
    server.wait().unwrap();

    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap();
    let partitions = log.topic("temperature").unwrap().unwrap().config.partitions;
    for p in 0..partitions {
        for r in log.read_to_end("temperature", p, 0).unwrap() {
            let value = String::from_utf8(r.record.value.unwrap()).unwrap();
            let key = String::from_utf8(r.record.key.unwrap()).unwrap();
            assert!(key.ends_with("/temperature"), "{key}");
            if let Some(n) = expected.get_mut(&value) {
                *n += 1;
            }
        }
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(m, _)| m)
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Nothing was resent, so nothing is there twice.
    assert!(expected.values().all(|n| *n == 1), "{expected:?}");
}
