//! The server driven by a real ksqlDB client: PyPI's `ksql-python-ng` (HTTP/2 for
//! `/query-stream` and `/inserts-stream`). `scripts/test.sh` installs it into
//! `.weir/venv`; `WEIR_PYTHON` may name another interpreter that has it.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_PYTHON") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join(".weir/venv/bin/python")
}

/// Runs `tests/clients/<script>` against a fresh server and checks that it succeeded and
/// printed `done`.
fn run_client(script: &str, done: &str) {
    let python = python();
    assert!(
        python.exists(),
        "{} not found: run `scripts/test.sh --setup` (it installs the clients from PyPI)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/clients")
        .join(script);
    let output = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}", server.addr()))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(done), "{stdout}");
    eprintln!("{stdout}");
    server.shutdown().unwrap();
}

#[test]
fn ksql_python_ng_creates_lists_inserts_queries_and_closes() {
    run_client("ksql_python_ng_client.py", "3 rows over HTTP/2");
}

/// A second ksqlDB client from PyPI, `ksqldb` (requests + httpx over HTTP/2), unchanged:
/// statements, inserts, push and pull queries, variables and errors.
#[test]
fn the_ksqldb_client_runs_statements_inserts_queries_variables_and_errors() {
    run_client(
        "ksqldb_client.py",
        "statements, inserts, push, pull, variables and errors all as expected",
    );
}
