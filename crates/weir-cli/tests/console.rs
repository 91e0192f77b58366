//! The web console in a real browser: Debian's Chromium, headless, driven by Playwright
//! (PyPI, in .weir/venv; scripts/test.sh --setup installs both) through
//! tests/clients/console_test.py, against two `weir server`s: one open, one with a users
//! file (basic authentication). The script checks what a user sees: the catalog listed
//! live, completion and highlighting, a push query's rows streaming into the table, the
//! chart, errors with their position, the pipeline view's operators and counts, the
//! processing log, and that nothing is readable without credentials.
//!
//! `WEIR_CONSOLE_SCREENSHOTS=DIR` saves the screenshots docs/console.md shows.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Killed, free_port, repo, wait_listening};

fn server(dir: &Path, name: &str, extra: &[&str]) -> (Killed, u16) {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let bin = std::env::var_os("WEIR_BIN").unwrap_or(env!("CARGO_BIN_EXE_weir").into());
    let child = Command::new(bin)
        .args(["server", "--listen", &format!("http://127.0.0.1:{port}")])
        .args(["--data-dir", dir.join(name).to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("weir server starts");
    wait_listening(port, "weir server");
    (Killed(child), port)
}

#[test]
fn the_console_works_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice: wonderland\n").unwrap();
    let (_open, port) = server(dir.path(), "open", &[]);
    let (_guarded, guarded_port) = server(
        dir.path(),
        "guarded",
        &["--users-file", users.to_str().unwrap()],
    );
    let mut script = Command::new(repo(".weir/venv/bin/python"));
    script
        .arg(repo("tests/clients/console_test.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--users-url", &format!("http://127.0.0.1:{guarded_port}")])
        .args(["alice", "wonderland"]);
    if let Some(shots) = std::env::var_os("WEIR_CONSOLE_SCREENSHOTS") {
        script.arg("--screenshots").arg(shots);
    }
    let out = script
        .output()
        .expect("the venv's python with playwright (scripts/test.sh --setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let logs: String = ["open", "guarded"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default())
        .collect();
    assert!(
        out.status.success(),
        "the browser checks failed:\n{stdout}\n{}\nserver logs:\n{logs}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "ok: the page lists the streams, tables, queries and functions",
        "ok: a push query run from the editor shows inserted rows live",
        "ok: the push query's chart receives points",
        "ok: a bad statement shows its error with line and column",
        "ok: the pipeline view draws the queries' operators with row counts",
        "ok: the processing log shows bad records",
        "ok: a browser without credentials is asked for them and sees no console",
        "ok: with credentials the console loads and lists the streams",
        "console: all checks passed",
    ] {
        assert!(stdout.contains(check), "missing `{check}` in:\n{stdout}");
    }
}
