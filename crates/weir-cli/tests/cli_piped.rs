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
