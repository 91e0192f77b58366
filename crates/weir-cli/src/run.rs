//! `weir run`: headless mode, as ksqlDB's `--queries-file`. Opens a data directory on the
//! embedded log, replays its command log (so every persistent query resumes where it
//! stopped), runs the statements of a queries file if given, then keeps the queries
//! running, with the user functions of `--plugin-dir`'s plugins. Progress goes to standard
//! output: a spinner with the rate on a terminal, else a line a second
//! (`consumed N total T (R records/s)`; `--progress-every 0`: one per step).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::progress::{Progress, Stream};

use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log};
use weir_sql::{ParseOptions, parse_script};

pub fn run(
    (service_id, session, internal): (&str, Duration, weir_engine::InternalTopics),
    data_dir: &Path,
    queries_file: Option<&Path>,
    exit_when_idle: bool,
    kafka: Option<(&str, &weir_kafka::ClientProperties)>,
    plugin_dir: Option<&Path>,
    // How often a progress line is printed; threads that run a query's partitions.
    (progress_every, workers): (Duration, usize),
) -> Result<(), String> {
    weir_engine::check_service_id(service_id).map_err(|e| format!("--service-id: {e}"))?;
    let (log, place): (Arc<dyn Log>, String) = match kafka {
        None => (
            Arc::new(
                EmbeddedLog::open(data_dir, EmbeddedLogConfig::default())
                    .map_err(|e| e.to_string())?,
            ),
            data_dir.display().to_string(),
        ),
        Some((b, client)) => (
            Arc::new(weir_kafka::KafkaLog::connect_with(b, client).map_err(|e| e.to_string())?),
            format!("Kafka at {b}"),
        ),
    };
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    // Plugins before the command log is replayed, so the queries that call them resume.
    let functions = match plugin_dir {
        Some(dir) => {
            let (functions, lines) = weir_server::functions_with_plugins(dir, &Default::default());
            for line in lines {
                say(&mut out, line);
            }
            functions
        }
        None => Default::default(),
    };
    let mut engine = Engine::open_member(log.clone(), functions, service_id, session, internal)
        .map_err(|e| format!("recovering {place}: {e}"))?;
    // A query's partitions are stepped at once, on `workers` threads.
    engine.set_parallelism(workers.max(1));
    say(
        &mut out,
        format!(
            "recovered {} persistent quer(ies)",
            engine.queries().count()
        ),
    );
    if let Some(file) = queries_file {
        let script = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let mut vars = weir_sql::Variables::new();
        for stmt in parse_script(&script, ParseOptions::default()) {
            let line = match stmt
                .resolve(&vars)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    if vars.apply(&s).is_some() {
                        return Ok(s.kind());
                    }
                    engine
                        .execute(&s)
                        .map(|_| s.kind())
                        .map_err(|e| e.to_string())
                }) {
                Ok(kind) => format!("OK {kind}"),
                Err(e) => format!("ERROR {}: {e}", stmt.text),
            };
            say(&mut out, line);
        }
    }
    // On a terminal a spinner with the rate; otherwise a line every `progress_every`
    // (zero: every step that consumed records) with the records since the last line.
    let mut bar = Some(Progress::new(
        "weir run",
        "records",
        None,
        Stream::Stdout,
        progress_every,
    ))
    .filter(Progress::is_bar);
    let mut total = 0u64;
    let mut since_line = 0u64;
    let mut last_line = Instant::now();
    let line =
        |out: &mut std::io::StdoutLock, since_line: &mut u64, total: u64, last: &mut Instant| {
            let secs = last.elapsed().as_secs_f64().max(1e-9);
            say(
                out,
                format!(
                    "consumed {since_line} total {total} ({:.0} records/s)",
                    *since_line as f64 / secs
                ),
            );
            *since_line = 0;
            *last = Instant::now();
        };
    loop {
        let n = engine.run_once().map_err(|e| e.to_string())?;
        total += n;
        since_line += n;
        if n > 0 {
            match &mut bar {
                Some(bar) => bar.set(total),
                None if last_line.elapsed() >= progress_every => {
                    line(&mut out, &mut since_line, total, &mut last_line)
                }
                None => {}
            }
        } else if exit_when_idle {
            log.flush().map_err(|e| e.to_string())?;
            // Idle because a query failed (it waits to be retried) is not done.
            let failed: Vec<String> = engine
                .queries()
                .filter_map(|q| {
                    Some(format!(
                        "query {} failed: {}",
                        q.id,
                        q.error.as_ref()?.message
                    ))
                })
                .collect();
            if !failed.is_empty() {
                return Err(failed.join("\n"));
            }
            match bar.take() {
                Some(bar) => bar.finish(),
                None if since_line > 0 => line(&mut out, &mut since_line, total, &mut last_line),
                None => {}
            }
            say(&mut out, format!("idle total {total}"));
            return Ok(());
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
