//! Alerts back over MQTT: a stream's records published to Debian's Mosquitto by an MQTT
//! sink (`weir.mqtt.sink.*`), each to a topic made from its columns, and received by
//! `mosquitto_sub`. Weir killed with SIGKILL and started again picks up where it had got
//! to: the alerts that come after reach the subscriber, the earlier ones are not all sent
//! again.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Killed, free_port, mosquitto};

fn weir_server(dir: &Path, rest: u16, log_name: &str) -> Child {
    common::weir_server(
        dir,
        rest,
        &["--data-dir", "data", "--config", "weir.properties"],
        log_name,
        &[],
    )
}

fn ksql(rest: u16, sql: &str) {
    let r = ureq::post(&format!("http://127.0.0.1:{rest}/ksql"))
        .send_json(serde_json::json!({"ksql": sql, "streamsProperties": {}}));
    assert!(r.is_ok(), "{sql}: {r:?}");
}

/// `mosquitto_sub` on `cars/+/alerts`: its lines (`topic payload`) as they come.
fn subscriber(broker: u16) -> (Killed, mpsc::Receiver<String>) {
    let mut child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.to_string()])
        .args(["-t", "cars/+/alerts", "-q", "1", "-v"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Subscribed before anything is published (mosquitto_sub has no session to keep).
    std::thread::sleep(Duration::from_millis(700));
    (Killed(child), rx)
}

fn receive(rx: &mpsc::Receiver<String>, want: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while !want(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => panic!("timed out; received so far: {got:?}"),
        }
    }
    got
}

fn metric(rest: u16, name: &str) -> u64 {
    ureq::get(&format!("http://127.0.0.1:{rest}/metrics"))
        .call()
        .ok()
        .and_then(|r| r.into_body().read_to_string().ok())
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_streams_records_go_back_over_mqtt_to_topics_made_from_their_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_broker, broker) = mosquitto(dir);
    std::fs::write(
        dir.join("weir.properties"),
        format!(
            "weir.mqtt.sink.alerts.stream=ALERTS\n\
             weir.mqtt.sink.alerts.url=mqtt://127.0.0.1:{broker}\n\
             weir.mqtt.sink.alerts.topic=cars/${{CAR_ID}}/alerts\n\
             weir.mqtt.sink.alerts.qos=1\n"
        ),
    )
    .unwrap();
    let rest = free_port();
    let mut weir = Killed(weir_server(dir, rest, "weir-1.log"));
    ksql(
        rest,
        "CREATE STREAM readings (car_id VARCHAR KEY, temp DOUBLE) \
         WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='JSON', PARTITIONS=1);",
    );
    ksql(
        rest,
        "CREATE STREAM alerts AS SELECT car_id, temp FROM readings WHERE temp > 100 EMIT CHANGES;",
    );
    let (_sub, lines) = subscriber(broker);
    let temps = [
        90.0, 101.5, 120.0, 95.0, 130.25, 99.0, 140.0, 150.5, 100.0, 160.0,
    ];
    let inserts: String = temps
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "INSERT INTO readings (car_id, temp) VALUES ('car-{}', {t});",
                i % 3
            )
        })
        .collect();
    ksql(rest, &inserts);
    let alerts: Vec<(usize, f64)> = temps
        .iter()
        .enumerate()
        .filter(|(_, t)| **t > 100.0)
        .map(|(i, t)| (i % 3, *t))
        .collect();
    let got = receive(&lines, |g| g.len() >= alerts.len());
    for (car, temp) in &alerts {
        let topic = format!("cars/car-{car}/alerts ");
        assert!(
            got.iter().any(|l| l.starts_with(&topic)
                && serde_json::from_str::<serde_json::Value>(&l[topic.len()..])
                    .is_ok_and(|v| v["TEMP"].as_f64() == Some(*temp))),
            "no alert for car-{car} at {temp}: {got:?}"
        );
    }
    println!(
        "alerts: {} alerts received by mosquitto_sub on their cars' topics, e.g. {}",
        got.len(),
        got[0]
    );
    // Counted once the broker acknowledged them and the position is recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(rest, "weir_mqtt_sink_published_total") < alerts.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "published_total never reached {}",
            alerts.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Killed and started again: what comes after is published; what was acknowledged
    // before is not sent again wholesale (its position was recorded).
    let _ = weir.0.kill();
    let _ = weir.0.wait();
    let _weir = Killed(weir_server(dir, rest, "weir-2.log"));
    ksql(
        rest,
        "INSERT INTO readings (car_id, temp) VALUES ('car-7', 170.0); \
         INSERT INTO readings (car_id, temp) VALUES ('car-8', 180.0);",
    );
    let after = receive(&lines, |g| {
        ["car-7", "car-8"].iter().all(|c| {
            g.iter()
                .any(|l| l.starts_with(&format!("cars/{c}/alerts ")))
        })
    });
    let repeated = after
        .iter()
        .filter(|l| !l.starts_with("cars/car-7/") && !l.starts_with("cars/car-8/"))
        .count();
    println!(
        "alerts: after a kill -9 and a restart the next 2 alerts arrived; {repeated} earlier ones sent again"
    );
    assert!(
        repeated < alerts.len(),
        "everything was sent again: {after:?}"
    );
    // The positions are kept in a compacted topic (one record per sink partition survives
    // compaction): it does not grow with the alerts sent.
    drop(_weir);
    use weir_log::Log;
    let log = weir_log::EmbeddedLog::open(dir.join("data"), Default::default()).unwrap();
    let positions = log
        .topic("_weir_mqtt_sinks")
        .unwrap()
        .expect("the positions topic");
    assert!(positions.config.compact, "{:?}", positions.config);
}

/// `weir demo --bridge`: the cars publish to Mosquitto, Weir bridges from it, and the
/// flagged events come back on car/alerts, where mosquitto_sub receives them.
#[test]
fn the_demo_runs_against_an_existing_mosquitto_and_answers_on_car_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_broker, broker) = mosquitto(dir);
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.to_string(),
            "-t",
            "car/alerts",
            "-q",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let out = sub.stdout.take().unwrap();
    let _sub = Killed(sub);
    let (tx, alerts) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let demo = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "demo",
            "--count",
            "400",
            "--rate",
            "0",
            "--anomalies",
            "0.1",
        ])
        .args(["--bridge", &format!("127.0.0.1:{broker}"), "--data-dir"])
        .arg(dir.join("demo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&demo.stdout).replace('\r', "\n");
    assert!(
        demo.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(
        text.contains("summary: 400 messages published, 400 scored"),
        "{text}"
    );
    let flagged: usize = text
        .lines()
        .find_map(|l| l.split_once(" alerts published to car/alerts"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no alerts line: {text}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < flagged && Instant::now() < deadline {
        if let Ok(l) = alerts.recv_timeout(Duration::from_millis(200)) {
            got.push(l);
        }
    }
    println!(
        "demo --bridge: 400 messages through Mosquitto, {flagged} alerts published, {} received on car/alerts, e.g. {:?}",
        got.len(),
        got.first()
    );
    assert!(flagged > 0 && got.len() >= flagged, "{got:?}\n{text}");
    // Each alert is a flagged event: `EVENTID,SCORE` (the stream's DELIMITED value).
    for a in &got {
        let (id, score) = a.split_once(',').unwrap_or_else(|| panic!("{a}"));
        assert!(
            id.parse::<u64>().is_ok() && score.parse::<f64>().is_ok(),
            "{a}"
        );
    }
}
