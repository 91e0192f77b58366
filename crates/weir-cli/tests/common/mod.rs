//! What the CLI's integration tests share: a tmux session to drive the REPL as a person
//! does, and a tansu broker on a free port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tmux server of the test's own, with one session `weir` running a command.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached session of `cols` × `rows`, kept on screen if it exits.
    pub fn start(name: &str, command: &str, cols: u16, rows: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("{name}-{}", std::process::id()),
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "weir",
            "-x",
            &cols,
            "-y",
            &rows,
            command,
        ]);
        assert!(started.status.success(), "{started:?}");
        tmux.run(&["set-option", "-t", "weir", "remain-on-exit", "on"]);
        tmux
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (apt package tmux; scripts/test.sh installs it)")
    }

    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-S", "-500", "-t", "weir"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Types `text` literally. tmux reads an argument ending in `;` as a command
    /// separator, so each `;` goes as its character code.
    pub fn type_text(&self, text: &str) {
        for (i, part) in text.split(';').enumerate() {
            if i > 0 {
                self.run(&["send-keys", "-t", "weir", "-H", "3b"]);
            }
            if !part.is_empty() {
                self.run(&["send-keys", "-t", "weir", "-l", part]);
            }
        }
    }

    pub fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "weir", key]);
    }

    /// Types a line and Enter.
    pub fn line(&self, text: &str) {
        self.type_text(text);
        self.key("Enter");
    }

    /// Types text of several lines, each followed by Enter, as written.
    pub fn lines(&self, text: &str) {
        for line in text.lines() {
            self.line(line);
        }
    }

    /// Enters a statement and waits for the next prompt, as a person does (a person
    /// also does not type the next one in the instant the prompt is drawn: keys sent
    /// while the shell switches the terminal back to raw mode can be lost).
    pub fn statement(&self, text: &str) -> String {
        let prompts = self.screen().matches("weir> ").count();
        self.line(text);
        let screen = self.wait_for("weir> ", prompts + 1);
        std::thread::sleep(Duration::from_millis(300));
        screen
    }

    /// Waits until the screen shows `text` `times` times; the screen, or a panic with it.
    pub fn wait_for(&self, text: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {text:?} x{times}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A tansu broker (installed by scripts/test.sh) with SQLite storage, on a free port.
pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tansu() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    for candidate in ["tansu".to_string(), format!("{home}/.cargo/bin/tansu")] {
        if Command::new(&candidate)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return candidate;
        }
    }
    panic!("tansu is not installed: run scripts/test.sh --setup");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn broker() -> Broker {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        // tansu resolves the SQLite path against its working directory.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tansu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    Broker {
        child,
        port,
        _dir: dir,
    }
}

/// Starts `weir run` (stdout piped) and kills it with SIGKILL once its progress lines
/// (`consumed N total T`) report at least `at_least` records consumed; returns the total
/// it had reached.
pub fn kill_after_consumed(mut run: Command, at_least: u64) -> u64 {
    use std::io::{BufRead, BufReader};
    let mut child = run.stdout(Stdio::piped()).spawn().unwrap();
    let mut consumed = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        assert!(!line.starts_with("ERROR"), "{line}");
        if let Some(total) = progress_total(&line) {
            consumed = total.parse::<u64>().unwrap();
            if consumed >= at_least {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    consumed
}

/// The running total of a `weir run` progress line (`consumed N total T (R records/s)`).
pub fn progress_total(line: &str) -> Option<&str> {
    line.strip_prefix("consumed ")?
        .split(" total ")
        .nth(1)?
        .split_whitespace()
        .next()
}

/// `weir run --data-dir DIR [--queries-file FILE]` (the built binary), ready for more
/// arguments or environment.
pub fn weir_run(data_dir: &std::path::Path, queries: Option<&std::path::Path>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    // A progress line per step: the tests watch steps, not time.
    cmd.args(["run", "--progress-every", "0", "--data-dir"])
        .arg(data_dir);
    if let Some(q) = queries {
        cmd.arg("--queries-file").arg(q);
    }
    cmd
}
