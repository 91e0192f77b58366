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
