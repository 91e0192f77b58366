//! `weir run` headless: plugins from `--plugin-dir` serve its queries, and its progress
//! lines carry the rate.

use std::process::Command;

use weir_log::Log;

#[test]
fn weir_run_calls_plugin_functions_from_its_plugin_folder() {
    let dir = tempfile::tempdir().unwrap();
    let weir = env!("CARGO_BIN_EXE_weir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        std::path::Path::new(weir).with_file_name("libmultiply.so"),
        plugins.join("libmultiply.so"),
    )
    .expect("cargo build --workspace builds the example plugin");
    let queries = dir.path().join("q.sql");
    std::fs::write(
        &queries,
        "CREATE STREAM s (a BIGINT, b BIGINT) WITH (kafka_topic='s', value_format='JSON', partitions=1);\n\
         CREATE STREAM m AS SELECT MULTIPLY(a, b) AS p FROM s;\n\
         INSERT INTO s (a, b) VALUES (2, 21);\n\
         INSERT INTO s (a, b) VALUES (3, 5);\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = Command::new(weir)
        .args(["run", "--exit-when-idle", "--plugin-dir"])
        .arg(&plugins)
        .arg("--data-dir")
        .arg(&data)
        .arg("--queries-file")
        .arg(&queries)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plugin_line = stdout.lines().find(|l| l.starts_with("plugin ")).unwrap();
    assert!(plugin_line.contains("MULTIPLY"), "{stdout}");
    assert!(!stdout.contains("ERROR"), "{stdout}");
    // Not a terminal: a last progress line with the rate, then the idle line.
    let progress = stdout
        .lines()
        .find(|l| l.starts_with("consumed "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(progress.ends_with("records/s)"), "{progress}");
    assert!(stdout.contains("idle total 2"), "{stdout}");

    let log = weir_log::EmbeddedLog::open(&data, Default::default()).unwrap();
    let values: Vec<String> = log
        .read_to_end("M", 0, 0)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.record.value.unwrap()).unwrap())
        .collect();
    assert_eq!(values, [r#"{"P":42}"#, r#"{"P":15}"#]);
    drop(log);

    // Without the plugin folder the query cannot be resumed: a clear error, not a crash.
    let out = Command::new(weir)
        .args(["run", "--exit-when-idle", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("MULTIPLY"), "{said}");
}

#[test]
fn weir_server_help_shows_defaults_and_config_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("(config key listeners) [default: http://127.0.0.1:8088]"),
        "{help}"
    );
    assert!(
        help.contains("(config key weir.data.dir) [default: weir-data]"),
        "{help}"
    );
}

/// A misspelt key in the config file is named at start, with the key it probably is.
#[test]
fn weir_server_warns_about_unknown_config_keys() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.properties");
    std::fs::write(
        &config,
        "weir.data.dir=data\nweir.agregate.coalesce=true\nauto.offset.reset=earliest\n",
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines().map_while(Result::ok) {
        let done = line.contains("weir.agregate.coalesce") || seen.len() > 50;
        seen.push(line);
        if done {
            break;
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let warning = seen.last().unwrap();
    assert!(
        warning.contains(
            "weir.properties:2: unknown property 'weir.agregate.coalesce' is ignored: did you mean 'weir.aggregate.coalesce'?"
        ),
        "{seen:?}"
    );
    // Only the unknown key is warned about.
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("'auto.offset.reset' is ignored")),
        "{seen:?}"
    );
}

/// `weir run --service-id` uses that service's command log and checkpoints: on one data
/// directory, two ids keep apart queries, and each resumes only its own.
#[test]
fn weir_run_keeps_each_service_ids_queries_apart() {
    let dir = tempfile::tempdir().unwrap();
    let weir = env!("CARGO_BIN_EXE_weir");
    let data = dir.path().join("data");
    let run = |id: &str, queries: &str| {
        let file = dir.path().join(format!("{id}.sql"));
        std::fs::write(&file, queries).unwrap();
        let out = Command::new(weir)
            .args(["run", "--exit-when-idle", "--service-id", id, "--data-dir"])
            .arg(&data)
            .arg("--queries-file")
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("ERROR"), "{stdout}");
        stdout
    };
    let first = run(
        "fleet_a",
        "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
         SET 'auto.offset.reset'='earliest';
         CREATE STREAM a_out AS SELECT v * 2 AS w FROM s;
         INSERT INTO s (v) VALUES (21);",
    );
    assert!(first.contains("recovered 0 persistent"), "{first}");
    // Another id on the same data: its own catalog (no stream S yet), its own query.
    let other = run(
        "fleet_b",
        "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);
         SET 'auto.offset.reset'='earliest';
         CREATE STREAM b_out AS SELECT v + 1 AS w FROM s;",
    );
    assert!(other.contains("recovered 0 persistent"), "{other}");
    // fleet_a again: only its query comes back.
    let again = run("fleet_a", "");
    assert!(again.contains("recovered 1 persistent"), "{again}");
    let log = weir_log::EmbeddedLog::open(&data, Default::default()).unwrap();
    let value = |topic: &str| -> Vec<String> {
        log.read_to_end(topic, 0, 0)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.record.value.unwrap()).unwrap())
            .collect()
    };
    assert_eq!(value("A_OUT"), [r#"{"W":42}"#]);
    assert_eq!(value("B_OUT"), [r#"{"W":22}"#]);
    for topic in ["_weir_fleet_a_commands", "_weir_fleet_b_commands"] {
        assert!(log.topic(topic).unwrap().is_some(), "{topic}");
    }
    // An id that cannot name topics is refused.
    let out = Command::new(weir)
        .args([
            "run",
            "--exit-when-idle",
            "--service-id",
            "a b",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--service-id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two processes on one data directory: the second exits at once, naming the first's pid,
/// and the first carries on.
#[test]
fn a_second_process_on_a_data_directory_in_use_exits_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let weir = env!("CARGO_BIN_EXE_weir");
    let data = dir.path().join("data");
    let mut first = Command::new(weir)
        .args(["run", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(data.join("LOCK")).map_or(true, |t| t.trim() != pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first never opened its data"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for args in [
        &["run", "--exit-when-idle"][..],
        &["server", "--listen", "127.0.0.1:0"],
    ] {
        let out = Command::new(weir)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("in use by another Weir process (pid {pid})")),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first process ended"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock goes with the process, however it ends.
    let log = weir_log::EmbeddedLog::open(&data, Default::default());
    assert!(log.is_ok());
}
