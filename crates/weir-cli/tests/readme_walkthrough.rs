//! The README's five-minute walk-through runs as written: a `weir server` with the example
//! plugin in its plugin folder, the shell in tmux, and every `weir>` line of the README's
//! walk-through typed in; the lines the README shows after it must be on the screen, in
//! order, before the next prompt.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Tmux;

/// The walk-through's steps: each `weir>` statement and the lines shown after it.
fn steps(readme: &str) -> Vec<(String, Vec<String>)> {
    let section = readme
        .split("<!-- walkthrough")
        .nth(1)
        .and_then(|s| s.split("<!-- /walkthrough -->").next())
        .expect("README.md marks its walk-through");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line == "```text";
            continue;
        }
        if !in_block {
            continue;
        }
        match line.strip_prefix("weir> ") {
            Some(statement) => steps.push((statement.to_string(), Vec::new())),
            None => steps
                .last_mut()
                .expect("a block starts with a statement")
                .1
                .push(line.trim_end().to_string()),
        }
    }
    steps
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 9, "{steps:?}");

    let dir = tempfile::tempdir().unwrap();
    let weir = env!("CARGO_BIN_EXE_weir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let multiply = std::path::Path::new(weir).with_file_name("libmultiply.so");
    std::fs::copy(&multiply, plugins.join("libmultiply.so")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (cargo build --workspace builds it)",
            multiply.display()
        )
    });
    let port = common::free_port();
    let _server = Killed(
        Command::new(weir)
            .args(["server", "--plugin-dir", "plugins", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let command = format!(
        "env WEIR_HISTORY_FILE={} {weir} cli --server http://127.0.0.1:{port}",
        dir.path().join("history").display(),
    );
    let tmux = Tmux::start("weir-readme", &command, 250, 60);
    tmux.wait_for("Type 'help'", 1);

    // No clearing between steps: a redrawn prompt would count as the next one. Each
    // step's output is read after the last echo of its statement.
    for (statement, expected) in &steps {
        // The table's rows come from its query: give it until they show.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = tmux.statement(statement);
            let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
            let echo = format!("weir> {statement}");
            let from = lines
                .iter()
                .rposition(|l| *l == echo)
                .unwrap_or_else(|| panic!("{echo:?} is not on the screen:\n{screen}"));
            let mut shown = lines[from + 1..].iter();
            let missing = expected.iter().find(|want| !shown.any(|l| l == want));
            match missing {
                None => break,
                Some(want) if Instant::now() > deadline => {
                    panic!("after {statement:?} the README shows {want:?}; the screen:\n{screen}")
                }
                // A pull query may run before the table's query has caught up.
                Some(_) if statement.starts_with("SELECT") && !statement.contains("EMIT") => {
                    std::thread::sleep(Duration::from_millis(300))
                }
                Some(want) => {
                    panic!("after {statement:?} the README shows {want:?}; the screen:\n{screen}")
                }
            }
        }
    }
}
