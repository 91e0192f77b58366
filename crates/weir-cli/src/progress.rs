//! Progress of long work (`weir gen cars`, `weir conformance`, `weir run`): on a terminal,
//! a bar with rate and time left (a spinner with the rate when the end is unknown); when
//! not a terminal (a pipe, a log, CI), a plain line every few seconds. Lines go where the
//! command says, so a command's result on standard output stays clean.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where plain lines go, and whose terminal decides between bar and lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        }
    }

    fn line(self, text: &str) {
        match self {
            Stream::Stdout => println!("{text}"),
            Stream::Stderr => eprintln!("{text}"),
        }
    }
}

pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    note: String,
    stream: Stream,
    started: Instant,
    last_line: Instant,
    every: Duration,
}

impl Progress {
    /// `what` is under way over `total` `unit`s (`None`: open-ended): a bar when `stream`
    /// is a terminal, else a line every `every`.
    pub fn new(
        what: &str,
        unit: &'static str,
        total: Option<u64>,
        stream: Stream,
        every: Duration,
    ) -> Progress {
        let bar = stream.is_terminal().then(|| {
            let target = match stream {
                Stream::Stdout => ProgressDrawTarget::stdout(),
                Stream::Stderr => ProgressDrawTarget::stderr(),
            };
            let bar = match total {
                Some(n) => ProgressBar::with_draw_target(Some(n), target).with_style(
                    ProgressStyle::with_template(&format!(
                        "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}} {{msg}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::with_draw_target(None, target).with_style(
                    ProgressStyle::with_template(&format!(
                        "{{spinner}} {{prefix}} {{pos}} {unit} {{per_sec}} {{elapsed}} {{msg}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            what: what.to_string(),
            unit,
            total,
            done: 0,
            note: String::new(),
            stream,
            started: now,
            last_line: now,
            every,
        }
    }

    /// Whether progress is drawn as a bar (a terminal) rather than as lines.
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// `n` more units done.
    pub fn add(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// `done` units done in all.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= self.every => {
                self.last_line = Instant::now();
                self.stream.line(&self.line());
            }
            None => {}
        }
    }

    /// A short note shown after the figures (`12 failed`).
    pub fn note(&mut self, note: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(note.clone());
        }
        self.note = note;
    }

    /// Ends the bar; as lines, one last line.
    pub fn finish(self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => self.stream.line(&self.line()),
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let of = self.total.map(|t| format!("/{t}")).unwrap_or_default();
        let note = if self.note.is_empty() {
            String::new()
        } else {
            format!(", {}", self.note)
        };
        format!(
            "{}: {}{of} {} ({:.0} {}/s, {secs:.1} s{note})",
            self.what,
            self.done,
            self.unit,
            self.done as f64 / secs.max(1e-9),
            self.unit
        )
    }
}
