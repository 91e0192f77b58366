//! Bridging from an existing broker: Debian's Mosquitto, started by the test, and
//! mosquitto_pub publishing into it at QoS 0, 1 and 2; `weir server --mqtt-bridge`
//! subscribes there and stores what comes into a Weir stream. Then Weir is killed with
//! SIGKILL mid-stream and started again: no QoS 1/2 message the broker handed over is lost
//! (the persistent session keeps what Weir had not acknowledged); duplicates are counted
//! and printed.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, free_port, mosquitto};

fn weir_server(dir: &Path, rest: u16, broker: u16, log_name: &str) -> Child {
    weir_server_with(dir, rest, broker, log_name, None)
}

/// With `failpoint` (weir_log::failpoint) armed.
fn weir_server_with(
    dir: &Path,
    rest: u16,
    broker: u16,
    log_name: &str,
    failpoint: Option<&str>,
) -> Child {
    let bridge = format!("mqtt://127.0.0.1:{broker}");
    let args = [
        "--data-dir",
        "data",
        "--mqtt-bridge",
        &bridge,
        "--mqtt-bridge-topics",
        "fleet/#,depot/#",
        "--mqtt-topic-map",
        "readings:fleet/.*",
    ];
    let env: Vec<(&str, &str)> = failpoint
        .map(|f| ("WEIR_FAILPOINT", f))
        .into_iter()
        .collect();
    common::weir_server(dir, rest, &args, log_name, &env)
}

fn get(url: &str) -> String {
    ureq::get(url)
        .call()
        .map(|r| r.into_body().read_to_string().unwrap_or_default())
        .unwrap_or_default()
}

fn metric(rest: u16, name: &str) -> u64 {
    get(&format!("http://127.0.0.1:{rest}/metrics"))
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes `lines` (one message each) at `qos` to `topic` through mosquitto_pub.
fn publish(broker: u16, topic: &str, qos: u8, lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.to_string(), "-t", topic])
        .args(["-q", &qos.to_string(), "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
}

/// The stream's values so far, each with how many times it is stored.
fn stored(rest: u16) -> BTreeMap<String, usize> {
    let body = serde_json::json!({"ksql": "SELECT * FROM readings;", "streamsProperties": {}});
    let text = ureq::post(&format!("http://127.0.0.1:{rest}/query"))
        .send_json(body)
        .map(|r| r.into_body().read_to_string().unwrap_or_default())
        .unwrap_or_default();
    let mut counts = BTreeMap::new();
    if let Ok(serde_json::Value::Array(rows)) = serde_json::from_str::<serde_json::Value>(&text) {
        for r in rows {
            if let Some(v) = r["row"]["columns"][0].as_str() {
                *counts.entry(v.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn create_stream(rest: u16) {
    let sql = "CREATE STREAM readings (reading VARCHAR) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='KAFKA', PARTITIONS=1);";
    let r = ureq::post(&format!("http://127.0.0.1:{rest}/ksql"))
        .send_json(serde_json::json!({"ksql": sql, "streamsProperties": {}}));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_bridge_stores_what_mosquitto_delivers_and_loses_nothing_to_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_broker, broker) = mosquitto(dir);
    let rest = free_port();
    let mut weir = Killed(weir_server(dir, rest, broker, "weir-1.log"));
    create_stream(rest);
    wait_for("the bridge to connect", Duration::from_secs(30), || {
        metric(rest, "weir_mqtt_bridge_connections_total") >= 1
    });

    // QoS 0, 1 and 2 publishers into Mosquitto reach the stream.
    let mut sent = Vec::new();
    for qos in 0..3u8 {
        let lines: Vec<String> = (0..200).map(|i| format!("q{qos}-{i}")).collect();
        publish(broker, &format!("fleet/car{qos}/temp"), qos, &lines);
        sent.extend(lines);
    }
    wait_for("600 bridged messages", Duration::from_secs(60), || {
        stored(rest).len() >= 600
    });
    let first = stored(rest);
    for m in &sent {
        assert!(first.contains_key(m), "{m} missing");
    }
    // A subscribed topic the map does not route is dropped (logged and counted).
    publish(broker, "depot/gate", 1, &["stray".to_string()]);
    wait_for("the stray message counted", Duration::from_secs(30), || {
        metric(rest, "weir_mqtt_bridge_unmapped_total") == 1
    });
    println!(
        "bridge: 600 messages at QoS 0/1/2 from Mosquitto stored, {} duplicates",
        first.values().filter(|n| **n > 1).count()
    );

    // Mid-stream SIGKILL, at a known place: the append of received messages stops
    // (failpoint `mqtt_before_store`, paused) while the broker keeps sending; Weir is
    // killed there. The broker keeps (and resends) what was not acknowledged.
    let _ = weir.0.kill();
    let _ = weir.0.wait();
    let mut weir = Killed(weir_server_with(
        dir,
        rest,
        broker,
        "weir-2.log",
        Some("mqtt_before_store:3:pause"),
    ));
    let burst: Vec<String> = (0..22_000).map(|i| format!("k-{i}")).collect();
    let (a, b) = burst.split_at(20_000);
    let publisher = {
        let a = a.to_vec();
        std::thread::spawn(move || publish(broker, "fleet/car9/temp", 1, &a))
    };
    wait_for("the failpoint", Duration::from_secs(60), || {
        std::fs::read_to_string(dir.join("weir-2.log"))
            .unwrap_or_default()
            .contains("WEIR_FAILPOINT mqtt_before_store reached")
    });
    let received = metric(rest, "weir_mqtt_bridge_received_total");
    let before = metric(rest, "weir_mqtt_bridge_stored_total");
    let _ = weir.0.kill();
    let _ = weir.0.wait();
    publisher.join().unwrap();
    // Published while Weir is down: queued by Mosquitto for the persistent session.
    publish(broker, "fleet/car9/temp", 2, b);
    let _weir = Killed(weir_server(dir, rest, broker, "weir-3.log"));
    wait_for(
        "every message of the burst",
        Duration::from_secs(120),
        || {
            let s = stored(rest);
            burst.iter().all(|m| s.contains_key(m))
        },
    );
    let after = stored(rest);
    let lost = burst.iter().filter(|m| !after.contains_key(*m)).count();
    let duplicates: usize = burst.iter().map(|m| after[m].saturating_sub(1)).sum();
    println!(
        "bridge: killed with -9 mid-stream ({received} of 20,000 received, {before} stored and acknowledged), 2,000 more sent while it was down; 22,000 at QoS 1/2: lost {lost}, duplicates {duplicates}"
    );
    assert_eq!(lost, 0);
    assert!(
        before < received,
        "not killed mid-stream: {before} stored of {received} received"
    );
    // A kill at no chosen place, while the bridge stores and acknowledges: the broker
    // resends what was in flight (DUP); what Weir had stored of it is recognised by its
    // packet id and content (rebuilt from the records' headers) and not stored again.
    drop(_weir);
    let rest2 = free_port();
    let mut weir = Killed(weir_server(dir, rest2, broker, "weir-4.log"));
    let burst2: Vec<String> = (0..10_000).map(|i| format!("r-{i}")).collect();
    let publisher = {
        let b = burst2.clone();
        std::thread::spawn(move || publish(broker, "fleet/car5/temp", 1, &b))
    };
    wait_for(
        "the bridge storing the second burst",
        Duration::from_secs(60),
        || metric(rest2, "weir_mqtt_bridge_stored_total") >= 500,
    );
    let received = metric(rest2, "weir_mqtt_bridge_received_total");
    let acknowledged = metric(rest2, "weir_mqtt_bridge_stored_total");
    let _ = weir.0.kill();
    let _ = weir.0.wait();
    publisher.join().unwrap();
    let _weir = Killed(weir_server(dir, rest2, broker, "weir-5.log"));
    wait_for(
        "every message of the second burst",
        Duration::from_secs(120),
        || {
            let s = stored(rest2);
            burst2.iter().all(|m| s.contains_key(m))
        },
    );
    let after = stored(rest2);
    let duplicates: usize = burst2.iter().map(|m| after[m].saturating_sub(1)).sum();
    let recognised = metric(rest2, "weir_mqtt_bridge_resent_duplicates_total");
    println!(
        "bridge: killed with -9 at no chosen place ({received} of 10,000 received, {acknowledged} acknowledged); after the restart {recognised} resends recognised as stored; lost 0, duplicates {duplicates}"
    );
    assert_eq!(duplicates, 0);
    let log = std::fs::read_to_string(dir.join("weir-1.log")).unwrap_or_default();
    assert!(
        log.contains("no topic map entry for this topic"),
        "the stray message is logged: {log}"
    );
}
