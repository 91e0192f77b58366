//! The MQTT listener, driven by the real `mosquitto_pub` (Debian's mosquitto-clients) and,
//! for what that client cannot show (reason codes, bad packets), by raw packets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const MAP: &str = "temperature:.*temperature, telemetry:car/.*";

fn server(dir: &std::path::Path, users: Option<&str>, max_bytes: usize) -> weir_server::Server {
    let users_file = users.map(|u| {
        let path = dir.join("users");
        std::fs::write(&path, u).unwrap();
        path
    });
    start_with(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_topic_map: MAP.into(),
        mqtt_max_message_bytes: max_bytes,
        users_file,
        ..Default::default()
    })
}

/// `mosquitto_pub`; its exit status and what it printed.
fn mosquitto_pub(server: &weir_server::Server, args: &[&str]) -> (bool, String) {
    let port = server.mqtt_addr().unwrap().port().to_string();
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .output()
        .expect("mosquitto_pub (apt install mosquitto-clients; scripts/test.sh does)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn mosquitto_pub_at_every_qos_and_version_lands_in_the_mapped_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), None, 8092);
    ksql(
        &server,
        "CREATE STREAM carsensor (mqtt_topic VARCHAR KEY, eventid INT, sensorinput VARCHAR) \
         WITH (kafka_topic='temperature', key_format='KAFKA', value_format='DELIMITED', partitions=1);",
    );
    let mut expected = Vec::new();
    let mut id = 0;
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            id += 1;
            let message = format!("{id},2.10# 2.13# {qos}");
            let (ok, out) = mosquitto_pub(
                &server,
                &[
                    "-V",
                    version,
                    "-q",
                    qos,
                    "-t",
                    "car/engine/temperature",
                    "-m",
                    &message,
                ],
            );
            assert!(ok, "{version} QoS {qos}: {out}");
            expected.push(json!([
                "car/engine/temperature",
                id,
                format!("2.10# 2.13# {qos}")
            ]));
        }
    }
    // The other mapping; and an unmapped topic, acknowledged (3.1.1) but not stored.
    let (ok, out) = mosquitto_pub(&server, &["-q", "1", "-t", "car/engine/oil", "-m", "oil"]);
    assert!(ok, "{out}");
    let (ok, out) = mosquitto_pub(
        &server,
        &["-q", "1", "-t", "house/temperature/x", "-m", "99,x"],
    );
    assert!(ok, "{out}");

    assert_eq!(
        rows(
            &server,
            "SELECT mqtt_topic, eventid, sensorinput FROM carsensor EMIT CHANGES LIMIT 6;"
        ),
        expected
    );
    // Arrival time is the record time.
    let times = rows(
        &server,
        "SELECT ROWTIME AS t FROM carsensor EMIT CHANGES LIMIT 6;",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for t in times {
        let t = t[0].as_i64().unwrap();
        assert!((now - 60_000..=now).contains(&t), "{t} vs {now}");
    }
    ksql(
        &server,
        "CREATE STREAM telemetry (k VARCHAR KEY, v VARCHAR) WITH (kafka_topic='telemetry', key_format='KAFKA', value_format='KAFKA');",
    );
    assert_eq!(
        rows(&server, "SELECT k, v FROM telemetry EMIT CHANGES LIMIT 1;"),
        [json!(["car/engine/oil", "oil"])]
    );

    // /metrics: the listener's counters, and a persistent query's over the MQTT data.
    ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; CREATE STREAM ids AS SELECT mqtt_topic, eventid FROM carsensor;",
    );
    rows(&server, "SELECT eventid FROM ids EMIT CHANGES LIMIT 6;");
    let (status, metrics) = get(&server, "/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    for line in [
        "weir_mqtt_messages_stored_total{qos=\"0\"} 2",
        "weir_mqtt_messages_stored_total{qos=\"1\"} 3",
        "weir_mqtt_messages_stored_total{qos=\"2\"} 2",
        "weir_mqtt_publishes_unmapped_total 1",
        "weir_query_records_out_total{query=\"CSAS_IDS_0\"} 6",
        "weir_query_source_lag{query=\"CSAS_IDS_0\"} 0",
        "weir_query_latency_seconds_count{query=\"CSAS_IDS_0\"} 6",
        "weir_rest_requests_total{endpoint=\"/ksql\",status=\"200\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    server.shutdown().unwrap();
}

#[test]
fn credentials_are_checked_against_the_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Some("alice: s3cret\n"), 8092);
    let topic = ["-q", "1", "-t", "car/x/temperature", "-m", "1,a"];
    let (ok, out) = mosquitto_pub(&server, &topic);
    assert!(!ok, "no credentials must be refused: {out}");
    assert!(out.to_lowercase().contains("not authori"), "{out}");
    let (ok, out) = mosquitto_pub(
        &server,
        &[&["-u", "alice", "-P", "wrong"][..], &topic].concat(),
    );
    assert!(!ok, "a wrong password must be refused: {out}");
    for version in ["mqttv311", "mqttv5"] {
        let (ok, out) = mosquitto_pub(
            &server,
            &[&["-V", version, "-u", "alice", "-P", "s3cret"][..], &topic].concat(),
        );
        assert!(ok, "{version}: {out}");
    }
    // Two stored (the REST API wants the same credentials).
    let authed = |path: &str, body: Value| {
        agent()
            .post(url(&server, path))
            .header("Authorization", "Basic YWxpY2U6czNjcmV0")
            .send(body.to_string())
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    };
    authed(
        "/ksql",
        json!({"ksql": "CREATE STREAM t (eventid INT, s VARCHAR) WITH (kafka_topic='temperature', value_format='DELIMITED');"}),
    );
    let body = authed(
        "/query-stream",
        json!({"sql": "SELECT eventid FROM t EMIT CHANGES LIMIT 2;", "properties": {"auto.offset.reset": "earliest"}}),
    );
    assert_eq!(
        body.lines().skip(1).collect::<Vec<_>>(),
        ["[1]", "[1]"],
        "{body}"
    );
    server.shutdown().unwrap();
}

// --- raw packets -----------------------------------------------------------------------------

fn connect_packet(version: u8, client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, 0x02, 0, 60];
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    framed(0x10, &body)
}

fn publish_packet(version: u8, qos: u8, pkid: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if version == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    framed(0x30 | (qos << 1), &body)
}

fn framed(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn raw(server: &weir_server::Server, version: u8, client_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.mqtt_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&connect_packet(version, client_id)).unwrap();
    let connack = read_packet(&mut s);
    assert_eq!(connack[0], 0x20, "CONNACK");
    assert_eq!(connack[3], 0, "connection accepted");
    s
}

/// The next whole packet the server sends (short remaining lengths only).
fn read_packet(s: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 2];
    s.read_exact(&mut header).unwrap();
    assert!(header[1] < 128, "short packets only");
    let mut packet = vec![0u8; 2 + header[1] as usize];
    packet[..2].copy_from_slice(&header);
    s.read_exact(&mut packet[2..]).unwrap();
    packet
}

/// Everything the server sends until it closes the connection: EOF or a reset. A read
/// that times out means the server kept the connection open, and the test fails.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept the connection open ({e}); it sent {out:?}"),
    }
    out
}

/// `read_to_close` can fail: a peer that keeps the connection open is caught.
#[test]
#[should_panic(expected = "the server kept the connection open")]
fn read_to_close_fails_when_the_connection_stays_open() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _held = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    read_to_close(&mut s);
}

/// An MQTT 5 DISCONNECT's reason code and reason string.
fn disconnect_reason(bytes: &[u8]) -> (u8, String) {
    assert_eq!(bytes[0], 0xE0, "DISCONNECT: {bytes:?}");
    assert_eq!(
        bytes.len(),
        2 + bytes[1] as usize,
        "one whole packet: {bytes:?}"
    );
    // Reason code, properties length, then property 0x1F: the reason string.
    let why = match bytes.get(4) {
        Some(0x1F) => String::from_utf8_lossy(&bytes[7..]).to_string(),
        _ => String::new(),
    };
    (bytes[2], why)
}

#[test]
fn mqtt5_is_told_a_topic_is_not_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), None, 8092);
    let mut s = raw(&server, 5, "v5-unmapped");
    s.write_all(&publish_packet(5, 1, 7, "bike/speed", b"1"))
        .unwrap();
    let ack = read_packet(&mut s);
    assert_eq!(ack[0], 0x40, "PUBACK");
    assert_eq!(u16::from_be_bytes([ack[2], ack[3]]), 7);
    assert_eq!(ack[4], 0x90, "reason: topic name invalid");
    s.write_all(&publish_packet(5, 2, 9, "bike/speed", b"1"))
        .unwrap();
    let rec = read_packet(&mut s);
    assert_eq!((rec[0], rec[4]), (0x50, 0x90), "PUBREC, topic name invalid");
    // The same connection goes on: a mapped publish is stored and acknowledged (success
    // may be a bare PUBACK: no reason code).
    s.write_all(&publish_packet(5, 1, 8, "car/a/temperature", b"5,ok"))
        .unwrap();
    let ack = read_packet(&mut s);
    assert_eq!(ack, [0x40, 2, 0, 8]);
    let mut metrics = String::new();
    if let (200, Value::String(text)) = get(&server, "/metrics") {
        metrics = text;
    }
    assert!(
        metrics.contains("weir_mqtt_publishes_unmapped_total 2"),
        "{metrics}"
    );
    server.shutdown().unwrap();
}

/// A listener with no topic map could store nothing: it refuses every CONNECT and says
/// why, where 3.1.1 used to acknowledge publishes and drop them.
#[test]
fn a_listener_without_a_topic_map_refuses_connections_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    });
    let connack = |version: u8| {
        let mut s = TcpStream::connect(server.mqtt_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&connect_packet(version, "no-map")).unwrap();
        read_packet(&mut s)
    };
    // 3.1.1: return code 3, server unavailable.
    assert_eq!(connack(4), [0x20, 2, 0, 3]);
    // MQTT 5: reason 0x88, server unavailable, with a reason string naming the setting.
    let v5 = connack(5);
    assert_eq!((v5[0], v5[3]), (0x20, 0x88), "{v5:?}");
    let text = String::from_utf8_lossy(&v5);
    assert!(text.contains("weir.mqtt.topic.map"), "{text}");
    // The real client reports the refusal and fails.
    let (ok, said) = mosquitto_pub(
        &server,
        &["-t", "car/a/temperature", "-m", "1,x", "-q", "1"],
    );
    assert!(!ok, "{said}");
    assert!(said.to_lowercase().contains("unavailable"), "{said}");
    server.shutdown().unwrap();
}

#[test]
fn a_resent_qos2_publish_is_stored_once_even_across_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), None, 8092);
    // A persistent session (clean session off): 3.1.1 connect flags 0x00.
    let persistent = |s: &mut TcpStream| {
        let mut p = connect_packet(4, "car-42");
        p[9] = 0x00;
        s.write_all(&p).unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        connack
    };
    let mut s = TcpStream::connect(server.mqtt_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(persistent(&mut s), [0x20, 2, 0, 0], "new session");
    s.write_all(&publish_packet(4, 2, 9, "car/b/temperature", b"1,once"))
        .unwrap();
    let mut rec = [0u8; 4];
    s.read_exact(&mut rec).unwrap();
    assert_eq!(rec, [0x50, 2, 0, 9], "PUBREC");
    // The connection drops before PUBREL; the client reconnects and resends (DUP).
    drop(s);
    let mut s = TcpStream::connect(server.mqtt_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(persistent(&mut s), [0x20, 2, 1, 0], "session present");
    let mut dup = publish_packet(4, 2, 9, "car/b/temperature", b"1,once");
    dup[0] |= 0x08;
    s.write_all(&dup).unwrap();
    s.read_exact(&mut rec).unwrap();
    assert_eq!(rec, [0x50, 2, 0, 9], "PUBREC again");
    s.write_all(&[0x62, 2, 0, 9]).unwrap(); // PUBREL
    s.read_exact(&mut rec).unwrap();
    assert_eq!(rec, [0x70, 2, 0, 9], "PUBCOMP");
    // The next message after it, to know where the topic ends.
    s.write_all(&publish_packet(4, 1, 10, "car/b/temperature", b"2,next"))
        .unwrap();
    s.read_exact(&mut rec).unwrap();
    assert_eq!(rec, [0x40, 2, 0, 10], "PUBACK");
    ksql(
        &server,
        "CREATE STREAM t (eventid INT, s VARCHAR) WITH (kafka_topic='temperature', value_format='DELIMITED');",
    );
    assert_eq!(
        rows(&server, "SELECT eventid, s FROM t EMIT CHANGES LIMIT 2;"),
        [json!([1, "once"]), json!([2, "next"])]
    );
    server.shutdown().unwrap();
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), None, 1000);
    let bystander = {
        let mut s = raw(&server, 4, "bystander");
        s.write_all(&publish_packet(4, 1, 1, "car/c/temperature", b"1,before"))
            .unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0x40, 2, 0, 1]);
        s
    };

    // Not MQTT at all.
    let mut s = TcpStream::connect(server.mqtt_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), b"", "closed without an answer");

    // A malformed publish (v5: told why, 0x81 malformed packet).
    let mut s = raw(&server, 5, "garbage");
    s.write_all(&[0x32, 0x01, 0xFF]).unwrap();
    let (code, why) = disconnect_reason(&read_to_close(&mut s));
    assert_eq!(code, 0x81, "{why}");
    assert!(why.contains("malformed packet"), "{why}");

    // An oversized message (v5: 0x95 packet too large); nothing of it is stored.
    let mut s = raw(&server, 5, "too-big");
    s.write_all(&publish_packet(
        5,
        1,
        3,
        "car/d/temperature",
        &vec![b'x'; 1001],
    ))
    .unwrap();
    let (code, why) = disconnect_reason(&read_to_close(&mut s));
    assert_eq!(code, 0x95, "{why}");
    assert!(
        why.contains("1001 bytes") && why.contains("limit of 1000"),
        "{why}"
    );

    // A remaining length that never ends; and a packet announcing 200 MB.
    let mut s = raw(&server, 4, "bad-length");
    s.write_all(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).unwrap();
    assert_eq!(read_to_close(&mut s), b"");
    let mut s = raw(&server, 4, "huge");
    s.write_all(&[0x30, 0x80, 0x80, 0x80, 0x64]).unwrap();
    assert_eq!(read_to_close(&mut s), b"");

    // The bystander, and new clients, carry on.
    let mut s = bystander;
    s.write_all(&publish_packet(4, 1, 2, "car/c/temperature", b"2,after"))
        .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x40, 2, 0, 2]);
    let (ok, out) = mosquitto_pub(
        &server,
        &["-q", "2", "-t", "car/e/temperature", "-m", "3,new"],
    );
    assert!(ok, "{out}");
    ksql(
        &server,
        "CREATE STREAM t (eventid INT, s VARCHAR) WITH (kafka_topic='temperature', value_format='DELIMITED');",
    );
    assert_eq!(
        rows(&server, "SELECT eventid, s FROM t EMIT CHANGES LIMIT 3;"),
        [json!([1, "before"]), json!([2, "after"]), json!([3, "new"])]
    );
    assert_eq!(get(&server, "/healthcheck").0, 200);
    server.shutdown().unwrap();
}

#[test]
fn a_flood_of_connections_is_cut_at_the_limit_and_the_connected_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_topic_map: MAP.into(),
        mqtt_max_connections: 10,
        ..Default::default()
    });
    let mut device = raw(&server, 4, "device");
    // 50 more connections that never say anything: the first 9 fit, the rest are closed.
    let flood: Vec<TcpStream> = (0..50)
        .map(|_| {
            let s = TcpStream::connect(server.mqtt_addr().unwrap()).unwrap();
            // Closed ones read end-of-stream at once; open ones time out (well before
            // the 10 s the server gives a connection to send its CONNECT).
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    // Once the server has turned the 41 away (its counter), each of them reads as closed.
    let rejected = || -> u64 {
        let (_, metrics) = get(&server, "/metrics");
        metrics
            .as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("weir_mqtt_connections_rejected_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rejected() < 41 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 50 connections over the limit turned away",
            rejected()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let closed = flood
        .iter()
        .filter(|s| {
            let mut b = [0u8; 1];
            matches!((&**s).read(&mut b), Ok(0))
                || matches!((&**s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
        })
        .count();
    assert_eq!(closed, 41, "connections over the limit are closed");
    // The connected device is not disturbed.
    device
        .write_all(&publish_packet(4, 1, 1, "car/f/temperature", b"1,during"))
        .unwrap();
    assert_eq!(read_packet(&mut device), [0x40, 2, 0, 1]);
    // Once the flood is gone, new clients get in again.
    drop(flood);
    let started = std::time::Instant::now();
    loop {
        let (ok, out) = mosquitto_pub(
            &server,
            &["-q", "1", "-t", "car/g/temperature", "-m", "2,after"],
        );
        if ok {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The 41, and any retry above that came while the flood's slots were being freed.
    assert!(rejected() >= 41);
    server.shutdown().unwrap();
}
