//! Weir's own streaming semantics as data: every `tests/sql/*.test` file at the top of the
//! repository is a script of statements, records produced, runs, restarts and the changes
//! expected on each topic. `tests/sql/README.md` describes the format. Each file runs on a
//! durable engine (command log and checkpoints, as a server runs queries) over an
//! embedded log of its own; every failing file is reported with its line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_engine::{Engine, KeyWindow};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Record};

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    files
}

/// One step of a script, with the line it starts on.
#[derive(Debug)]
enum Step {
    /// Statements that must all succeed.
    Ok(String),
    /// A statement that must fail with a message containing the text.
    Error(String, String),
    /// Records to append to a topic (partitioned by key, as a producer does).
    Produce(String, Vec<Line>),
    /// Runs the persistent queries until none has input left.
    Run,
    /// Closes the engine and opens it again on the same log (recovery).
    Restart,
    /// The records the topic gained since its last `expect`, in partition then offset order.
    Expect(String, Vec<Line>),
}

/// A record as a script writes it: `key | value | timestamp`; `-` for a null key or value;
/// a windowed key is `key @start..end`.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    key: Option<String>,
    value: Option<String>,
    /// `None`: any (`*` in an expectation, for records stamped with the time they were
    /// written, such as the processing log's).
    timestamp: Option<i64>,
}

fn parse_line(text: &str) -> Result<Line, String> {
    let (key, rest) = text
        .split_once(" | ")
        .ok_or("a record is `key | value | timestamp`")?;
    let (value, ts) = rest
        .rsplit_once(" | ")
        .ok_or("a record is `key | value | timestamp`")?;
    let null = |s: &str| (s.trim() != "-").then(|| s.trim().to_string());
    Ok(Line {
        key: null(key),
        value: null(value),
        timestamp: match ts.trim() {
            "*" => None,
            t => Some(t.parse().map_err(|_| format!("not a timestamp: {ts:?}"))?),
        },
    })
}

fn parse(text: &str) -> Result<Vec<(usize, Step)>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    // The lines from `i` to the next blank one.
    let block = |i: &mut usize| -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        while *i < lines.len() && !lines[*i].trim().is_empty() {
            if !lines[*i].trim_start().starts_with('#') {
                out.push((*i + 1, lines[*i]));
            }
            *i += 1;
        }
        out
    };
    while i < lines.len() {
        let line = lines[i].trim();
        let at = i + 1;
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, arg) = line.split_once(' ').unwrap_or((line, ""));
        let records = |b: Vec<(usize, &str)>| -> Result<Vec<Line>, String> {
            b.into_iter()
                .map(|(n, l)| parse_line(l).map_err(|e| format!("line {n}: {e}")))
                .collect()
        };
        let sql = |b: Vec<(usize, &str)>| b.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n");
        let step = match word {
            "statement" if arg == "ok" => Step::Ok(sql(block(&mut i))),
            "statement" if arg.starts_with("error") => {
                Step::Error(arg["error".len()..].trim().to_string(), sql(block(&mut i)))
            }
            "produce" if !arg.is_empty() => Step::Produce(arg.to_string(), records(block(&mut i))?),
            "expect" if !arg.is_empty() => Step::Expect(arg.to_string(), records(block(&mut i))?),
            "run" => Step::Run,
            "restart" => Step::Restart,
            _ => return Err(format!("line {at}: unknown step {line:?}")),
        };
        steps.push((at, step));
    }
    Ok(steps)
}

/// An engine over the log in `dir`, its queries' steps computed by up to `parallelism`
/// threads (a GROUP BY's state in as many shards).
fn open(dir: &Path, parallelism: usize) -> Engine {
    let log = EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap();
    let mut engine = Engine::open(Arc::new(log)).unwrap();
    engine.set_parallelism(parallelism);
    engine
}

/// How the records of `topic` carry a window in their keys, from the catalog.
fn key_window(engine: &Engine, topic: &str) -> Option<KeyWindow> {
    engine
        .catalog()
        .sources()
        .find(|s| s.topic == topic)
        .and_then(|s| s.window)
}

/// The records `topic` holds from `from` (per partition) on, as lines; moves `from` on.
fn read_new(engine: &Engine, topic: &str, from: &mut Vec<u64>) -> Result<Vec<Line>, String> {
    let log = engine.log();
    let info = log
        .topic(topic)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no topic {topic}"))?;
    from.resize(info.config.partitions as usize, 0);
    let window = key_window(engine, topic);
    let mut out = Vec::new();
    for (p, next) in from.iter_mut().enumerate() {
        for r in log
            .read_to_end(topic, p as u32, *next)
            .map_err(|e| e.to_string())?
        {
            *next = r.offset + 1;
            let key = r.record.key.as_deref().map(|k| match window {
                Some(w) => match w.split(k) {
                    Some((k, start, end)) => format!("{} @{start}..{end}", text(k)),
                    None => format!("{} @?", text(k)),
                },
                None => text(k),
            });
            out.push(Line {
                key,
                value: r.record.value.as_deref().map(text),
                timestamp: Some(r.record.timestamp),
            });
        }
    }
    Ok(out)
}

/// Bytes as a script writes them: the text when it is printable UTF-8, else `0x` and hex
/// (a KAFKA-format INT key 1 is `0x00000001`).
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) && !s.starts_with("0x") => s.to_string(),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// What a script's `0x...` stands for; any other text as it is.
fn bytes(text: &str) -> Result<Vec<u8>, String> {
    let Some(hex) = text.strip_prefix("0x") else {
        return Ok(text.as_bytes().to_vec());
    };
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| format!("not hex: {text}"))
        })
        .collect()
}

/// Values compare as JSON when both parse as JSON (so key order and spacing do not
/// matter), else as text.
fn same(want: &Line, got: &Line) -> bool {
    let value = match (&want.value, &got.value) {
        (Some(w), Some(g)) => match (
            serde_json::from_str::<serde_json::Value>(w),
            serde_json::from_str::<serde_json::Value>(g),
        ) {
            (Ok(w), Ok(g)) => w == g,
            _ => w == g,
        },
        (w, g) => w == g,
    };
    value && want.key == got.key && (want.timestamp.is_none() || want.timestamp == got.timestamp)
}

fn show(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| {
            format!(
                "  {} | {} | {}\n",
                l.key.as_deref().unwrap_or("-"),
                l.value.as_deref().unwrap_or("-"),
                l.timestamp.map_or("*".to_string(), |t| t.to_string())
            )
        })
        .collect()
}

/// Runs a script on engines of `parallelism` (each restart opens the next of the list,
/// round and round); the expectations met.
fn run_file(path: &Path, parallelism: &[usize]) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let steps = parse(&text)?;
    let dir = tempfile::tempdir().unwrap();
    let mut opened = 0;
    let mut engine = open(dir.path(), parallelism[0]);
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut expects = 0;
    for (at, step) in steps {
        let fail = |why: String| format!("line {at}: {why}");
        match step {
            Step::Ok(sql) => {
                engine
                    .execute_sql(&sql)
                    .map_err(|e| fail(format!("{sql}\nfailed: {e}")))?;
            }
            Step::Error(why, sql) => match engine.execute_sql(&sql) {
                Ok(_) => return Err(fail(format!("{sql}\nsucceeded; expected an error"))),
                Err(e) if e.to_string().contains(&why) => {}
                Err(e) => return Err(fail(format!("{sql}\nfailed with {e:?}, not {why:?}"))),
            },
            Step::Produce(topic, lines) => {
                for l in lines {
                    let key = l.key.as_deref().map(bytes).transpose().map_err(fail)?;
                    let value = l.value.as_deref().map(bytes).transpose().map_err(fail)?;
                    let ts = l
                        .timestamp
                        .ok_or_else(|| fail("a produced record needs a timestamp".into()))?;
                    let record = Record::new(key.as_deref(), value.as_deref(), ts);
                    engine
                        .log()
                        .produce(&topic, record)
                        .map_err(|e| fail(format!("producing to {topic}: {e}")))?;
                }
            }
            Step::Run => {
                engine
                    .run_until_idle()
                    .map_err(|e| fail(format!("run: {e}")))?;
            }
            Step::Restart => {
                drop(engine);
                opened += 1;
                engine = open(dir.path(), parallelism[opened % parallelism.len()]);
            }
            Step::Expect(topic, want) => {
                expects += 1;
                let from = seen.entry(topic.clone()).or_default();
                let got = read_new(&engine, &topic, from).map_err(fail)?;
                let equal =
                    want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| same(w, g));
                if !equal {
                    return Err(fail(format!(
                        "{topic}: expected\n{}got\n{}",
                        show(&want),
                        show(&got)
                    )));
                }
            }
        }
    }
    Ok(expects)
}

#[test]
fn the_sql_files_give_the_expected_changes() {
    every_file_gives_the_expected_changes(&[1]);
}

/// The same with steps computed at once and a GROUP BY's state in shards, whose number
/// changes at each restart (the state dealt out again): the same changes, in the same
/// order.
#[test]
fn the_sql_files_give_the_same_changes_in_parallel() {
    // 3 shards, then 2, then 1 (half the threads).
    every_file_gives_the_expected_changes(&[6, 4, 2]);
}

fn every_file_gives_the_expected_changes(parallelism: &[usize]) {
    let files = files();
    assert!(!files.is_empty(), "no tests/sql/*.test files");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match run_file(path, parallelism) {
            Ok(0) => failures.push(format!("{name}: expects nothing")),
            Ok(n) => println!("{name}: {n} expectations met"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// The runner can fail: a script whose expectation is wrong is reported with its line.
#[test]
fn a_wrong_expectation_fails_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("wrong.test");
    std::fs::write(
        &script,
        "statement ok\n\
         CREATE STREAM s (id INT KEY, v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);\n\
         SET 'auto.offset.reset'='earliest';\n\
         CREATE STREAM o AS SELECT id, v * 2 AS w FROM s;\n\
         \n\
         produce s\n\
         0x00000001 | {\"V\": 2} | 10\n\
         \n\
         run\n\
         \n\
         expect O\n\
         1 | {\"W\": 5} | 10\n",
    )
    .unwrap();
    let err = run_file(&script, &[1]).unwrap_err();
    assert!(
        err.starts_with("line 11: O: expected") && err.contains(r#"0x00000001 | {"W":4} | 10"#),
        "{err}"
    );
}
