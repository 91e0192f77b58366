//! TLS on the REST API and the MQTT listener, with clients nobody here wrote: curl
//! (HTTP/1.1 and HTTP/2 over TLS) and mosquitto_pub (MQTT over TLS, with and without a
//! client certificate), against certificates from a test CA made with openssl. Bad
//! certificates are refused with a clear error on both sides; bad TLS files stop the
//! server at start with one naming the file.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Killed, certificate, free_port, wait_listening};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the command runs")
}

fn weir(dir: &Path, args: &[&str]) -> Command {
    let bin = std::env::var_os("WEIR_BIN").unwrap_or(env!("CARGO_BIN_EXE_weir").into());
    let mut cmd = Command::new(bin);
    cmd.arg("server").args(args).current_dir(dir);
    cmd
}

fn start(dir: &Path, name: &str, args: &[&str], ports: &[u16]) -> Killed {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = weir(dir, args)
        .args(["--data-dir", name])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("weir server starts");
    for p in ports {
        wait_listening(*p, "weir server");
    }
    Killed(child)
}

fn curl(dir: &Path, args: &[&str]) -> Output {
    run(Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .current_dir(dir))
}

fn ksql(dir: &Path, url: &str, sql: &str, extra: &[&str]) -> String {
    let body = serde_json::json!({"ksql": sql, "streamsProperties": {}}).to_string();
    let out = curl(
        dir,
        &[
            &["--cacert", "ca.pem", "-X", "POST", "-d", &body][..],
            extra,
            &[&format!("{url}/ksql")],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mosquitto_pub(dir: &Path, port: u16, extra: &[&str], message: &str) -> Output {
    run(Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "car/1/temp",
            "-q",
            "1",
        ])
        .args(["-i", &format!("tls-test-{message}"), "-m", message])
        .args(extra)
        .current_dir(dir))
}

/// The stream's values so far (a pull query over https).
fn values(dir: &Path, url: &str, extra: &[&str]) -> String {
    let body = serde_json::json!({"sql": "SELECT * FROM readings;", "properties": {}}).to_string();
    let out = curl(
        dir,
        &[
            &[
                "--cacert",
                "ca.pem",
                "-X",
                "POST",
                "-H",
                "Accept: application/vnd.ksqlapi.delimited.v1",
                "-d",
                &body,
            ][..],
            extra,
            &[&format!("{url}/query-stream")],
        ]
        .concat(),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tls_on_the_rest_api_and_the_mqtt_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certificate(dir, "ca", None, false);
    certificate(dir, "server", Some("ca"), false);
    certificate(dir, "client", Some("ca"), true);
    certificate(dir, "rogue", None, false);
    certificate(dir, "intruder", Some("rogue"), true);

    // One server: REST over https, MQTT over TLS only, no client certificates asked.
    let (rest, mqtt) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{rest}");
    let _server = start(
        dir,
        "plain-auth",
        &[
            "--listen",
            &url,
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--mqtt-tls-listen",
            &format!("127.0.0.1:{mqtt}"),
            "--mqtt-topic-map",
            "readings:car/.*",
        ],
        &[rest, mqtt],
    );
    let info = curl(dir, &["--cacert", "ca.pem", &format!("{url}/info")]);
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("KsqlServerInfo"),
        "https /info: {info:?}"
    );
    let h2 = curl(
        dir,
        &[
            "--cacert",
            "ca.pem",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &format!("{url}/info"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&h2.stdout),
        "2",
        "HTTP/2 over TLS (ALPN): {h2:?}"
    );
    // A client that does not trust the server's CA refuses it; plain HTTP gets nothing.
    let untrusted = curl(dir, &[&format!("{url}/info")]);
    assert!(!untrusted.status.success());
    let why = String::from_utf8_lossy(&untrusted.stderr);
    assert!(why.contains("certificate"), "{why}");
    let plain = curl(dir, &[&format!("http://127.0.0.1:{rest}/info")]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("KsqlServerInfo"));
    println!(
        "tls: https /info answered over HTTP/1.1 and HTTP/2; curl without the CA: {}",
        why.trim()
    );

    ksql(
        dir,
        &url,
        "CREATE STREAM readings (reading VARCHAR) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='KAFKA', PARTITIONS=1);",
        &[],
    );
    let sent = mosquitto_pub(dir, mqtt, &["--cafile", "ca.pem"], "over-tls");
    assert!(sent.status.success(), "mosquitto_pub over TLS: {sent:?}");
    let rogue = mosquitto_pub(dir, mqtt, &["--cafile", "rogue.pem"], "to-the-wrong-ca");
    assert!(
        !rogue.status.success(),
        "a client trusting another CA connected"
    );
    let plain = mosquitto_pub(dir, mqtt, &[], "in-clear");
    assert!(
        !plain.status.success(),
        "plain MQTT on the TLS port was accepted"
    );
    let stored = values(dir, &url, &[]);
    assert!(stored.contains("over-tls"), "{stored}");
    assert!(
        !stored.contains("in-clear") && !stored.contains("to-the-wrong-ca"),
        "{stored}"
    );
    println!(
        "tls: mosquitto_pub over TLS stored; with another CA: {}",
        String::from_utf8_lossy(&rogue.stderr).trim()
    );

    // Mutual TLS: clients must show a certificate of the client CA, on both ports.
    let (rest2, mqtt2) = (free_port(), free_port());
    let url2 = format!("https://127.0.0.1:{rest2}");
    let _mutual = start(
        dir,
        "mutual",
        &[
            "--listen",
            &url2,
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--tls-client-ca",
            "ca.pem",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--mqtt-tls-listen",
            &format!("127.0.0.1:{mqtt2}"),
            "--mqtt-topic-map",
            "readings:car/.*",
        ],
        &[rest2, mqtt2],
    );
    let with_cert = ["--cert", "client.pem", "--key", "client.key"];
    ksql(
        dir,
        &url2,
        "CREATE STREAM readings (reading VARCHAR) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='KAFKA', PARTITIONS=1);",
        &with_cert,
    );
    let no_cert = curl(dir, &["--cacert", "ca.pem", &format!("{url2}/info")]);
    assert!(
        !String::from_utf8_lossy(&no_cert.stdout).contains("KsqlServerInfo"),
        "REST without a client certificate answered"
    );
    let sent = mosquitto_pub(
        dir,
        mqtt2,
        &[
            "--cafile",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
        ],
        "with-a-cert",
    );
    assert!(
        sent.status.success(),
        "mosquitto_pub with a client certificate: {sent:?}"
    );
    let anonymous = mosquitto_pub(dir, mqtt2, &["--cafile", "ca.pem"], "without-a-cert");
    assert!(
        !anonymous.status.success(),
        "MQTT without a client certificate was accepted"
    );
    let intruder = mosquitto_pub(
        dir,
        mqtt2,
        &[
            "--cafile",
            "ca.pem",
            "--cert",
            "intruder.pem",
            "--key",
            "intruder.key",
        ],
        "with-a-foreign-cert",
    );
    assert!(
        !intruder.status.success(),
        "a certificate of another CA was accepted"
    );
    let stored = values(dir, &url2, &with_cert);
    assert!(stored.contains("with-a-cert"), "{stored}");
    assert!(
        !stored.contains("without-a-cert") && !stored.contains("with-a-foreign-cert"),
        "{stored}"
    );
    let log = std::fs::read_to_string(dir.join("mutual.log")).unwrap();
    let refused = log
        .lines()
        .find(|l| l.contains("TLS handshake failed"))
        .unwrap_or_else(|| panic!("no handshake failure logged:\n{log}"));
    println!("tls: mutual TLS refused a client without a valid certificate: {refused}");

    // Bad TLS files: the server does not start, and says which file and why.
    std::fs::write(dir.join("garbage.key"), "not a key\n").unwrap();
    for (args, expected) in [
        (
            vec!["--tls-cert", "server.pem", "--tls-key", "garbage.key"],
            "TLS key file garbage.key: no PEM private key",
        ),
        (
            vec!["--tls-cert", "missing.pem", "--tls-key", "server.key"],
            "TLS certificate file missing.pem",
        ),
        (
            vec!["--tls-cert", "server.pem", "--tls-key", "client.key"],
            "do not make a usable pair",
        ),
        (
            vec![],
            "needs weir.tls.certificate.file and weir.tls.key.file",
        ),
    ] {
        let out = run(&mut weir(
            dir,
            &[
                &[
                    "--listen",
                    &format!("https://127.0.0.1:{}", free_port()),
                    "--data-dir",
                    "bad",
                ][..],
                &args,
            ]
            .concat(),
        ));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    println!("tls: bad TLS files stop the server with the file and the reason");
}

/// Bridges over TLS: Debian's Mosquitto serving MQTT over TLS with the test CA's
/// certificate; one Weir bridge trusting that CA stores what mosquitto_pub publishes
/// there, another trusting a different CA is refused with the certificate error logged
/// and counted.
#[test]
fn a_bridge_to_a_broker_over_tls_trusts_only_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certificate(dir, "ca", None, false);
    certificate(dir, "server", Some("ca"), false);
    certificate(dir, "rogue", None, false);
    let broker = free_port();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            // Mosquitto started as root drops to its own user before reading the files:
            // `user root` keeps it able to read the test's private folder.
            "user root\nlistener {broker} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            dir.display()
        ),
    )
    .unwrap();
    let _mosquitto = Killed(
        Command::new("mosquitto")
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("mosquitto.log")).unwrap())
            .spawn()
            .expect("mosquitto"),
    );
    wait_listening(broker, "mosquitto over TLS");
    let bridge = |name: &str, ca: &str| {
        format!(
            "weir.mqtt.bridge.{name}.url=mqtts://127.0.0.1:{broker}\n\
             weir.mqtt.bridge.{name}.topics=fleet/#\n\
             weir.mqtt.bridge.{name}.tls.ca.file={}\n",
            dir.join(ca).display()
        )
    };
    std::fs::write(
        dir.join("weir.properties"),
        format!(
            "weir.mqtt.topic.map=readings:fleet/.*\n{}{}",
            bridge("trusting", "ca.pem"),
            bridge("doubting", "rogue.pem")
        ),
    )
    .unwrap();
    let rest = free_port();
    let _weir = Killed(common::weir_server(
        dir,
        rest,
        &["--data-dir", "data", "--config", "weir.properties"],
        "weir.log",
        &[],
    ));
    let url = format!("http://127.0.0.1:{rest}");
    let body = serde_json::json!({"ksql": "CREATE STREAM readings (reading VARCHAR) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='KAFKA', PARTITIONS=1);", "streamsProperties": {}}).to_string();
    let made = curl(dir, &["-X", "POST", "-d", &body, &format!("{url}/ksql")]);
    assert!(made.status.success(), "{made:?}");
    let metric = |name: &str| -> u64 {
        let out = curl(dir, &[&format!("{url}/metrics")]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metric("weir_mqtt_bridge_connections_total{bridge=\"trusting\"}") == 0
        || metric("weir_mqtt_bridge_connection_errors_total{bridge=\"doubting\"}") == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "bridges not connected/refused in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = run(Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.to_string(),
            "--cafile",
            "ca.pem",
        ])
        .args(["-t", "fleet/car1/temp", "-q", "1", "-m", "bridged-over-tls"])
        .current_dir(dir));
    assert!(sent.status.success(), "{sent:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metric("weir_mqtt_bridge_stored_total{bridge=\"trusting\"}") < 1 {
        assert!(std::time::Instant::now() < deadline, "not bridged in time");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pull = serde_json::json!({"sql": "SELECT * FROM readings;", "properties": {}}).to_string();
    let rows = curl(
        dir,
        &[
            "-X",
            "POST",
            "-H",
            "Accept: application/vnd.ksqlapi.delimited.v1",
            "-d",
            &pull,
            &format!("{url}/query-stream"),
        ],
    );
    assert!(
        String::from_utf8_lossy(&rows.stdout).contains("bridged-over-tls"),
        "{rows:?}"
    );
    assert_eq!(
        metric("weir_mqtt_bridge_connections_total{bridge=\"doubting\"}"),
        0
    );
    let log = std::fs::read_to_string(dir.join("weir.log")).unwrap();
    let refused = log
        .lines()
        .find(|l| l.contains("bridge=doubting") && l.contains("connection failed"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        refused.to_ascii_lowercase().contains("certificate") || refused.contains("UnknownIssuer"),
        "{refused}"
    );
    println!("tls: a bridge over TLS stored a message; one trusting another CA: {refused}");
}
