//! `weir bench w1`: the W1 workload — JSON car-sensor events through a filter-and-project
//! persistent query on the embedded log — with two ceilings measured in the same run:
//! reading the records from the log alone, and decoding them alone. Prints figures; it
//! asserts nothing (speed goals are read from its output, not enforced by tests).

use std::sync::Arc;
use std::time::Instant;

use weir_engine::Engine;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log, Record, TopicConfig};

const W1_SOURCE: &str = "CREATE STREAM SENSORS (CAR_ID STRING KEY, TS BIGINT, SPEED DOUBLE, RPM INT, ENGINE_TEMP DOUBLE, LAT DOUBLE, LON DOUBLE) WITH (KAFKA_TOPIC='sensors', VALUE_FORMAT='JSON');";
const W1_QUERY: &str = "CREATE STREAM FAST AS SELECT CAR_ID, SPEED * 1.609 AS KMH, ENGINE_TEMP FROM SENSORS WHERE SPEED > 50;";

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(String::from)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A deterministic car event: speeds spread over 0..130 so the filter keeps about 60%.
fn event(i: u64) -> (Vec<u8>, Vec<u8>) {
    let car = i % 10_000;
    let x = i.wrapping_mul(2_654_435_761) % 1_000_000;
    let speed = (x % 1300) as f64 / 10.0;
    let value = format!(
        r#"{{"TS":{},"SPEED":{speed},"RPM":{},"ENGINE_TEMP":{},"LAT":{},"LON":{}}}"#,
        1_700_000_000_000u64 + i,
        800 + x % 5000,
        70.0 + (x % 400) as f64 / 10.0,
        48.0 + (x % 1000) as f64 / 1000.0,
        11.0 + (x % 997) as f64 / 1000.0
    );
    (format!("car-{car}").into_bytes(), value.into_bytes())
}

fn rate(n: u64, secs: f64) -> String {
    format!("{:>12.0} events/s ({secs:.2} s)", n as f64 / secs)
}

pub fn w1(events: u64) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = EmbeddedLogConfig {
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.path(), config).map_err(|e| e.to_string())?);
    log.create_topic("sensors", TopicConfig::default())
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..events {
        let (k, v) = event(i);
        batch.push(Record {
            key: Some(k),
            value: Some(v),
            timestamp: 1_700_000_000_000 + i as i64,
            headers: vec![],
        });
        if batch.len() == 1000 {
            log.append("sensors", 0, &batch)
                .map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    log.append("sensors", 0, &batch)
        .map_err(|e| e.to_string())?;
    println!("W1: {events} JSON car-sensor events on the embedded log (1 partition)");
    println!(
        "  load (append)        {}",
        rate(events, started.elapsed().as_secs_f64())
    );

    // Ceiling 1: reading the records from the log, nothing else.
    let started = Instant::now();
    let mut from = 0;
    let mut read = 0u64;
    loop {
        let records = log
            .read("sensors", 0, from, 4096)
            .map_err(|e| e.to_string())?;
        let Some(last) = records.last() else { break };
        from = last.offset + 1;
        read += records.len() as u64;
    }
    println!(
        "  log read only        {}",
        rate(read, started.elapsed().as_secs_f64())
    );

    let mut engine = Engine::new(log.clone());
    engine.execute_sql(W1_SOURCE).map_err(|e| e.to_string())?;
    let source = engine.catalog().source("SENSORS").expect("created").clone();
    let schema = source.layout.schema();

    // Ceiling 2: decoding the records to Arrow, nothing else (records read beforehand).
    let all = log
        .read_to_end("sensors", 0, 0)
        .map_err(|e| e.to_string())?;
    let chunks: Vec<&[weir_log::StoredRecord]> = all.chunks(4096).collect();
    let started = Instant::now();
    let mut decoded = 0u64;
    for c in &chunks {
        decoded += source.layout.decode(&schema, c).batch.num_rows() as u64;
    }
    println!(
        "  JSON decode only     {}",
        rate(decoded, started.elapsed().as_secs_f64())
    );
    drop(chunks);
    drop(all);

    // End to end: the persistent query reads, decodes, filters, projects, encodes, writes.
    engine.set_property("auto.offset.reset", "earliest");
    engine.execute_sql(W1_QUERY).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let consumed = engine.run_until_idle().map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let written = log.offsets("FAST", 0).map_err(|e| e.to_string())?.1;
    println!(
        "  end to end (CSAS)    {}  -> {written} records written to FAST",
        rate(consumed, secs)
    );
    println!("  peak RSS             {:.0} MiB", peak_rss_mib());
    Ok(())
}
