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

pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name`.pem / `name`.key signed by CA `ca` (self-signed when `ca` is None), for
/// 127.0.0.1 and localhost.
pub fn certificate(dir: &std::path::Path, name: &str, ca: Option<&str>, client: bool) {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    let subject = format!("/CN={name}");
    match ca {
        None => openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-days",
                "2",
                "-subj",
                &subject,
                "-out",
                &pem,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ),
        Some(ca) => {
            let csr = format!("{name}.csr");
            openssl(
                dir,
                &["req", "-new", "-key", &key, "-subj", &subject, "-out", &csr],
            );
            let ext = format!("{name}.ext");
            let usage = if client { "clientAuth" } else { "serverAuth" };
            std::fs::write(
                dir.join(&ext),
                format!(
                    "basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                ),
            )
            .unwrap();
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &pem,
                ],
            );
        }
    }
}

/// A path in the repository.
pub fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Mosquitto on a free port of 127.0.0.1, anonymous, in memory, with room for
/// what a persistent session keeps while its client is away; its log in `dir`.
pub fn mosquitto(dir: &std::path::Path) -> (Killed, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 100000\nmax_inflight_messages 100\n"
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mosquitto.log")).unwrap())
        .spawn()
        .expect("mosquitto (Debian's package; scripts/test.sh --setup installs it)");
    wait_listening(port, "mosquitto");
    (Killed(child), port)
}

/// `weir server` listening on 127.0.0.1:`rest` with `args`, in `dir`, its log in
/// `dir/log_name`, with `env` set; started once it listens.
pub fn weir_server(
    dir: &std::path::Path,
    rest: u16,
    args: &[&str],
    log_name: &str,
    env: &[(&str, &str)],
) -> Child {
    let bin = std::env::var_os("WEIR_BIN").unwrap_or(env!("CARGO_BIN_EXE_weir").into());
    let child = Command::new(bin)
        .args(["server", "--listen", &format!("127.0.0.1:{rest}")])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log_name)).unwrap())
        .spawn()
        .expect("weir server starts");
    wait_listening(rest, "weir server");
    child
}

/// Waits (up to a minute) until something listens on `port`.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port nothing listens on now, and not handed to another test of this binary before:
/// tests run at once, and a port one was given (and whose server is not yet listening)
/// could otherwise come back to another.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
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

/// A small seeded generator (splitmix64) for the crash tests' kill points. The seed is
/// `WEIR_TEST_SEED` when set (to rerun a failure), else the clock; tests print it.
pub struct Seeded {
    pub seed: u64,
    state: u64,
}

impl Seeded {
    pub fn new() -> Seeded {
        let seed = std::env::var("WEIR_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        Seeded { seed, state: seed }
    }

    pub fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `range`.
    pub fn pick(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }

    /// `items` in a seeded order.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.pick(0..i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Where a crash test sends SIGKILL to `weir run`.
#[derive(Debug, Clone)]
pub enum KillAt {
    /// Once the run's progress lines report `at_least` records consumed, `then_ms`
    /// milliseconds later (the next step is under way by then, at an unknown point).
    Consumed { at_least: u64, then_ms: u64 },
    /// At the `pass`-th pass (from 0) of failpoint `name` (see `weir_log::failpoint`),
    /// where the process waits to be killed: `crash_before_checkpoint`, `mid_output`,
    /// `torn_append`.
    Failpoint { name: &'static str, pass: u64 },
}

/// Starts `weir run` and kills it with SIGKILL at `at`; checks that it died of that
/// signal (not of an error before it) and returns how many records it had consumed.
pub fn kill_run(mut run: Command, at: &KillAt) -> u64 {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::sync::mpsc;
    if let KillAt::Failpoint { name, pass } = at {
        run.env("WEIR_FAILPOINT", format!("{name}:{pass}:pause"));
    }
    let mut child = run
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    enum Line {
        Out(String),
        Err(String),
    }
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(Line::Out(line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(Line::Err(line));
        }
    });
    let mut consumed = 0;
    let mut stderr = String::new();
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{at:?} never came: the run consumed {consumed} records and went quiet \
                     (or ended: {:?}); stderr:\n{stderr}",
                    child.try_wait()
                );
            }
        };
        match line {
            Line::Out(line) => {
                assert!(!line.starts_with("ERROR"), "{line}");
                if let Some(total) = progress_total(&line) {
                    consumed = total.parse::<u64>().unwrap();
                    if let KillAt::Consumed { at_least, then_ms } = at
                        && consumed >= *at_least
                    {
                        std::thread::sleep(Duration::from_millis(*then_ms));
                        break;
                    }
                }
            }
            Line::Err(line) => {
                if let KillAt::Failpoint { name, .. } = at
                    && line == format!("WEIR_FAILPOINT {name} reached")
                {
                    break;
                }
                stderr.push_str(&line);
                stderr.push('\n');
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the run was to die of SIGKILL at {at:?}, it ended with {status}; stderr:\n{stderr}"
    );
    consumed
}

/// Kill points for a run of `weir run`s: the failpoints (name, passes below this) and
/// one kill after some records consumed (below `consumed_below`), in a seeded order,
/// after a first kill by records consumed — the first run records the statements, and
/// a failpoint there (a torn append) could cut a statement never accepted.
pub fn seeded_kills(
    rng: &mut Seeded,
    failpoints: &[(&'static str, u64)],
    consumed_below: u64,
) -> Vec<KillAt> {
    let consumed = |rng: &mut Seeded| KillAt::Consumed {
        at_least: rng.pick(1..consumed_below),
        then_ms: rng.pick(0..30),
    };
    let mut points: Vec<KillAt> = failpoints
        .iter()
        .map(|(name, below)| KillAt::Failpoint {
            name,
            pass: rng.pick(0..*below),
        })
        .collect();
    points.push(consumed(rng));
    rng.shuffle(&mut points);
    points.insert(0, consumed(rng));
    points
}

/// Runs `weir run` on `dir` once per point, killing each run there (the first run with
/// the `queries` file, the others recovering from the command log); prints each kill
/// after `label` (the seed, say).
pub fn kill_runs(dir: &std::path::Path, queries: &std::path::Path, points: &[KillAt], label: &str) {
    for (i, at) in points.iter().enumerate() {
        let run = weir_run(dir, (i == 0).then_some(queries));
        let consumed = kill_run(run, at);
        println!(
            "{label}: run {} killed at {at:?}, after {consumed} records",
            i + 1
        );
    }
}

/// Runs `weir run ... --exit-when-idle` to the end: its stdout and the records it consumed.
pub fn run_until_idle(mut run: Command) -> (String, u64) {
    let out = run.arg("--exit-when-idle").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let consumed = stdout
        .lines()
        .rev()
        .find_map(progress_total)
        .map_or(0, |t| t.parse().unwrap());
    (stdout, consumed)
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
