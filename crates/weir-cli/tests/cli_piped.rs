//! Statements piped into `weir cli` run as if typed, and the exit status says whether
//! they all succeeded (`echo 'SHOW STREAMS;' | weir cli --embedded`).

use std::io::Write;
use std::process::{Command, Stdio};

fn piped(dir: &std::path::Path, statements: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["cli", "--embedded", "--data-dir"])
        .arg(dir)
        .env("WEIR_HISTORY_FILE", dir.join("history"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(statements.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn piped_statements_run_and_a_failure_sets_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = piped(
        &dir.path().join("data"),
        "CREATE STREAM piped_s (v INT) WITH (kafka_topic='piped', value_format='JSON', partitions=1);\nSHOW STREAMS;\n",
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("PIPED_S"), "{out}");
    assert!(!err.contains("terminal error"), "{err}");
    // A failing statement: reported, the others still run, and the status is failure.
    let (ok, out, err) = piped(
        &dir.path().join("data"),
        "DESCRIBE nosuch;\nSHOW STREAMS;\n",
    );
    assert!(!ok, "{out}\n{err}");
    assert!(out.contains("PIPED_S"), "{out}");
    assert!(err.contains("1 statement(s) failed"), "{err}");
}

/// DEFINE, `${NAME}`, SHOW VARIABLES and UNDEFINE in the CLI, as ksqlDB's CLI keeps them.
#[test]
fn variables_are_defined_listed_substituted_and_undefined() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = piped(
        &dir.path().join("data"),
        "DEFINE stream_name = 'VAR_S';\nDEFINE topic = 'var_topic';\nSHOW VARIABLES;\n\
         CREATE STREAM ${stream_name} (v INT) WITH (kafka_topic='${topic}', value_format='JSON', partitions=1);\n\
         SHOW STREAMS;\nUNDEFINE topic;\nSHOW VARIABLES;\n",
    );
    assert!(ok, "{out}\n{err}");
    // Listed with their values.
    assert!(out.contains("Variable Name"), "{out}");
    assert!(out.contains("STREAM_NAME"), "{out}");
    assert!(out.contains("var_topic"), "{out}");
    // Substituted into the statement: the stream has the name and topic.
    let line = out
        .lines()
        .find(|l| l.contains("VAR_S") && !l.contains("STREAM_NAME"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("var_topic"), "{line}");
    // After UNDEFINE the last listing holds STREAM_NAME only.
    let last = out.rsplit("Variable Name").next().unwrap();
    assert!(
        last.contains("STREAM_NAME") && !last.contains("var_topic"),
        "{last}"
    );
    // An undefined variable is named in the error and fails the run.
    let (ok, _, err) = piped(&dir.path().join("data"), "DESCRIBE ${nosuch};\n");
    assert!(!ok);
    assert!(err.contains("Variable 'NOSUCH' is not defined"), "{err}");
}

fn weir(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("WEIR_HISTORY_FILE", dir.join("history"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// ksqlDB's CLI flags: `-e`, `-f` with `--define`, `--output JSON`, the server URL as a
/// positional argument, and a non-zero exit when a statement fails.
#[test]
fn flags_run_statements_files_variables_and_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = weir_server::Server::start(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        ..Default::default()
    })
    .unwrap();
    let url = format!("http://{}", server.addr());
    // -e, against the URL given positionally.
    let (ok, out, err) = weir(
        &[
            "cli",
            &url,
            "-e",
            "CREATE STREAM flags_s (v INT) WITH (kafka_topic='flags', value_format='JSON', partitions=1); SHOW STREAMS;",
        ],
        dir.path(),
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("FLAGS_S"), "{out}");
    // -f with --define: the file's variables come from the command line.
    let script = dir.path().join("s.sql");
    std::fs::write(
        &script,
        "CREATE STREAM ${name} (v INT) WITH (kafka_topic='${topic}', value_format='JSON', partitions=1);\nSHOW STREAMS;\n",
    )
    .unwrap();
    let (ok, out, err) = weir(
        &[
            "cli",
            "--server",
            &url,
            "-f",
            script.to_str().unwrap(),
            "--define",
            "name=FROM_FILE",
            "--define",
            "topic=file_topic",
        ],
        dir.path(),
    );
    assert!(ok, "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("FROM_FILE"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("file_topic"), "{line}");
    // --output JSON: entities as JSON.
    let (ok, out, err) = weir(
        &["cli", &url, "--output", "JSON", "-e", "SHOW STREAMS;"],
        dir.path(),
    );
    assert!(ok, "{out}\n{err}");
    let entity: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(entity["@type"], "streams");
    // A failing statement: reported, and the exit status says so.
    let (ok, _, err) = weir(&["cli", &url, "-e", "DESCRIBE nosuch;"], dir.path());
    assert!(!ok);
    assert!(err.contains("1 statement(s) failed"), "{err}");
    server.shutdown().unwrap();
}
