//! `weir run`: headless mode, as ksqlDB's `--queries-file`. Opens a data directory on the
//! embedded log, replays its command log (so every persistent query resumes where it
//! stopped), runs the statements of a queries file if given, then keeps the queries
//! running. Progress goes to standard output, one line per step that consumed records.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log};
use weir_sql::{ParseOptions, parse_script};

pub fn run(
    data_dir: &Path,
    queries_file: Option<&Path>,
    exit_when_idle: bool,
    kafka: Option<&str>,
) -> Result<(), String> {
    let (log, place): (Arc<dyn Log>, String) = match kafka {
        None => (
            Arc::new(
                EmbeddedLog::open(data_dir, EmbeddedLogConfig::default())
                    .map_err(|e| e.to_string())?,
            ),
            data_dir.display().to_string(),
        ),
        Some(b) => (
            Arc::new(weir_kafka::KafkaLog::connect(b).map_err(|e| e.to_string())?),
            format!("Kafka at {b}"),
        ),
    };
    let mut engine = Engine::open(log.clone()).map_err(|e| format!("recovering {place}: {e}"))?;
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
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
        for stmt in parse_script(&script, ParseOptions::default()) {
            let line = match stmt.result.map_err(|e| e.to_string()).and_then(|s| {
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
    let mut total = 0u64;
    loop {
        let n = engine.run_once().map_err(|e| e.to_string())?;
        total += n;
        if n > 0 {
            say(&mut out, format!("consumed {n} total {total}"));
        } else if exit_when_idle {
            log.flush().map_err(|e| e.to_string())?;
            say(&mut out, format!("idle total {total}"));
            return Ok(());
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
