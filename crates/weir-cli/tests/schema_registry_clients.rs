//! Clients nobody here wrote, against Weir's schema registry: Confluent's Python
//! `SchemaRegistryClient` (PyPI `confluent-kafka`, put in .weir/venv by scripts/test.sh)
//! with its `AvroSerializer`, `ProtobufSerializer` and `JSONSerializer` produces to the
//! tansu broker, registering its schemas at the `weir server` it points at; Weir's streams,
//! declared without columns, take them from those schemas, write derived topics, and the
//! matching deserializers read the records back, values equal
//! (tests/clients/schema_registry_client.py).

mod common;

use std::process::{Command, Stdio};

use common::{Killed, broker, free_port, repo, wait_listening};

#[test]
fn confluent_serializers_round_trip_through_weir_streams() {
    let broker = broker();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("weir.log")).unwrap();
    let bin = std::env::var_os("WEIR_BIN").unwrap_or(env!("CARGO_BIN_EXE_weir").into());
    let _server = Killed(
        Command::new(bin)
            .args(["server", "--listen", &format!("http://127.0.0.1:{port}")])
            .args(["--kafka-bootstrap", &format!("127.0.0.1:{}", broker.port)])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("weir server starts"),
    );
    wait_listening(port, "weir server");
    let out = Command::new(repo(".weir/venv/bin/python"))
        .args(["-W", "ignore"])
        .arg(repo("tests/clients/schema_registry_client.py"))
        .arg(format!("127.0.0.1:{}", broker.port))
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .expect("the venv's python (scripts/test.sh --setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let server_log = std::fs::read_to_string(dir.path().join("weir.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the client failed:\n{stdout}\n{}\nserver log:\n{server_log}",
        String::from_utf8_lossy(&out.stderr)
    );
    for format in ["avro", "json_sr", "protobuf"] {
        assert!(
            stdout.contains(&format!("{format}: 8 records read back equal")),
            "{format}: {stdout}"
        );
    }
}
