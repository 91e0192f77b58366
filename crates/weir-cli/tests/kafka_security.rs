//! A server on a secured Kafka cluster: TLS and SASL (SCRAM-SHA-512), configured as a
//! ksqlDB user configures them, in the server's properties file.
//!
//! The cluster is tansu (SASL SCRAM with `--authentication`; its users made with `tansu
//! user create` before authentication is switched on) behind stunnel (Debian's stunnel4,
//! installed by scripts/test.sh), which ends TLS with a certificate from a CA this test
//! makes with `openssl`; tansu advertises stunnel's port, so every client connection goes
//! through TLS.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{certificate, free_port, tansu};
use weir_log::Log;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A CA (`<name>.pem`) and, for the first, a server certificate for 127.0.0.1 it signed.
fn certificates(dir: &Path) {
    certificate(dir, "ca", None, false);
    certificate(dir, "other-ca", None, false);
    certificate(dir, "server", Some("ca"), false);
}

/// tansu requiring SCRAM logins (user `weir`, password `s3cret`) behind stunnel's TLS,
/// with its folder (certificates, storage).
struct SecuredCluster {
    _broker: Killed,
    _tls: Killed,
    plain_port: u16,
    tls_port: u16,
}

fn secured_cluster() -> (tempfile::TempDir, SecuredCluster) {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();
    certificates(dir);
    let (plain_port, tls_port) = (free_port(), free_port());
    let start = |authentication: bool| {
        let mut c = Command::new(tansu());
        c.args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{plain_port}"),
        ])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{tls_port}"),
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if authentication {
            c.arg("--authentication");
        }
        let child = Killed(c.spawn().expect("starting tansu"));
        wait_listening(plain_port, "tansu");
        child
    };
    // The user first, while no login is needed (tansu keeps it in its SQLite storage).
    let open = start(false);
    let made = Command::new(tansu())
        .args([
            "user",
            "create",
            "weir",
            "s3cret",
            "--mechanism",
            "scram512",
        ])
        .args(["--broker", &format!("tcp://127.0.0.1:{plain_port}")])
        .output()
        .unwrap();
    assert!(made.status.success(), "tansu user create: {made:?}");
    drop(open);
    let broker = start(true);
    let conf = dir.join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{plain_port}\ncert = {}\nkey = {}\n",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ),
    )
    .unwrap();
    let stunnel = Command::new("stunnel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stunnel is installed (scripts/test.sh installs stunnel4)");
    let tls = Killed(stunnel);
    wait_listening(tls_port, "stunnel");
    let cluster = SecuredCluster {
        _broker: broker,
        _tls: tls,
        plain_port,
        tls_port,
    };
    (folder, cluster)
}

/// A server's properties file as a ksqlDB user writes it for a SASL_SSL cluster.
fn properties(dir: &Path, cluster: &SecuredCluster, ca: &str, password: &str) -> String {
    format!(
        "listeners=http://127.0.0.1:0\n\
         weir.data.dir={}\n\
         bootstrap.servers=127.0.0.1:{}\n\
         security.protocol=SASL_SSL\n\
         ssl.ca.location={}\n\
         ksql.streams.sasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"weir\" password=\"{password}\";\n\
         weir.checkpoint.trim=false\n",
        dir.join("data").display(),
        cluster.tls_port,
        dir.join(ca).display(),
    )
}

fn server_from(dir: &Path, text: &str) -> Result<weir_server::Server, String> {
    let file = dir.join("weir.properties");
    std::fs::write(&file, text).unwrap();
    let mut config = weir_server::ServerConfig::default();
    config.apply_properties_file(&file)?;
    weir_server::Server::start(config)
}

fn ksql(server: &weir_server::Server, statement: &str) {
    let response = ureq::post(format!("http://{}/ksql", server.addr()))
        .send_json(serde_json::json!({ "ksql": statement }))
        .unwrap();
    assert_eq!(response.status(), 200, "{statement}");
}

#[test]
fn a_server_works_on_a_cluster_that_requires_tls_and_a_sasl_login() {
    let (dir, cluster) = secured_cluster();

    let server = server_from(
        dir.path(),
        &properties(dir.path(), &cluster, "ca.pem", "s3cret"),
    )
    .expect("the server starts on the secured cluster");
    ksql(
        &server,
        "CREATE STREAM READINGS (CAR INT KEY, STATE VARCHAR) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='JSON', PARTITIONS=1);",
    );
    ksql(
        &server,
        "CREATE STREAM LOUD AS SELECT CAR, UCASE(STATE) AS STATE FROM READINGS EMIT CHANGES;",
    );
    for (car, state) in [(1, "ok"), (2, "hot"), (3, "ok")] {
        ksql(
            &server,
            &format!("INSERT INTO READINGS (CAR, STATE) VALUES ({car}, '{state}');"),
        );
    }

    // The query's output, read from the cluster by a client of our own over TLS + SCRAM.
    let mut client = weir_kafka::ClientProperties::new();
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        (
            "ssl.ca.location",
            &dir.path().join("ca.pem").display().to_string(),
        ),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "weir"),
        ("sasl.password", "s3cret"),
    ] {
        client.set(k, v).unwrap();
    }
    let log =
        weir_kafka::KafkaLog::connect_with(&format!("127.0.0.1:{}", cluster.tls_port), &client)
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut values = Vec::new();
    while values.len() < 3 && Instant::now() < deadline {
        values = log
            .read("LOUD", 0, 0, 100)
            .map(|records| {
                records
                    .iter()
                    .map(|r| {
                        String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default())
                            .into_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        values,
        [
            r#"{"STATE":"OK"}"#,
            r#"{"STATE":"HOT"}"#,
            r#"{"STATE":"OK"}"#
        ]
    );
    server.shutdown().unwrap();

    // `weir run` on the same cluster, its client properties given as flags.
    let queries = dir.path().join("queries.sql");
    std::fs::write(
        &queries,
        "SET 'auto.offset.reset' = 'earliest';\n\
         CREATE STREAM R2 (CAR INT KEY, STATE VARCHAR) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='JSON');\n\
         CREATE STREAM HOT AS SELECT CAR, STATE FROM R2 WHERE STATE = 'hot' EMIT CHANGES;\n",
    )
    .unwrap();
    let ca = format!("ssl.ca.location={}", dir.path().join("ca.pem").display());
    let run = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "run",
            "--exit-when-idle",
            "--no-checkpoint-trim",
            "--service-id",
            "other",
        ])
        .args(["--data-dir", &dir.path().join("run").display().to_string()])
        .args([
            "--kafka-bootstrap",
            &format!("127.0.0.1:{}", cluster.tls_port),
        ])
        .args(["--queries-file", &queries.display().to_string()])
        .args([
            "--kafka-property",
            "security.protocol=SASL_SSL",
            "--kafka-property",
            &ca,
        ])
        .args(["--kafka-property", "sasl.mechanism=SCRAM-SHA-512"])
        .args([
            "--kafka-property",
            "sasl.username=weir",
            "--kafka-property",
            "sasl.password=s3cret",
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "weir run: {run:?}");
    let hot = log.read("HOT", 0, 0, 100).unwrap();
    assert_eq!(hot.len(), 1, "{hot:?}");

    // Without a login, the broker itself answers nothing (so the server above logged in).
    let plain = weir_kafka::KafkaLog::connect(&format!("127.0.0.1:{}", cluster.plain_port));
    assert!(plain.is_err(), "tansu answered a client without a login");
}

#[test]
fn a_wrong_password_or_an_unknown_ca_is_a_clear_error_at_start() {
    let (dir, cluster) = secured_cluster();

    // Each refused at start, with librdkafka's reason.
    for (ca, password, reason) in [
        ("ca.pem", "not-it", "SASL authentication error"),
        ("other-ca.pem", "s3cret", "certificate verify failed"),
    ] {
        let refused = server_from(dir.path(), &properties(dir.path(), &cluster, ca, password))
            .err()
            .unwrap_or_else(|| panic!("the server started with {ca} and {password}"));
        eprintln!("{ca}, {password}: {refused}");
        assert!(
            refused.contains("connecting to Kafka at 127.0.0.1:") && refused.contains(reason),
            "{refused}"
        );
    }

    // A value librdkafka cannot take is named with its line.
    let bad = server_from(dir.path(), "security.protocol=SASL_TLS\n")
        .err()
        .expect("an unknown protocol is refused");
    assert!(
        bad.contains("weir.properties:1: security.protocol: "),
        "{bad}"
    );
}
