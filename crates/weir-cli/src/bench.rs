//! `weir bench w1`: the W1 workload — JSON car-sensor events through a filter-and-project
//! persistent query on the embedded log — with two ceilings measured in the same run:
//! reading the records from the log alone, and decoding them alone. Prints figures; it
//! asserts nothing (speed goals are read from its output, not enforced by tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// Appends `events` car events to `sensors` (partition 0), 1 ms apart, in batches of 1,000.
fn load_events(log: &dyn Log, events: u64) -> Result<(), String> {
    load_events_into(log, events, 1)
}

/// Re-encodes an event's JSON value in another format.
type Reencode<'a> = &'a dyn Fn(Vec<u8>) -> Result<Vec<u8>, String>;

/// As [`load_events`], each value re-encoded by `encode` (the same event in another format).
fn load_events_as(log: &dyn Log, events: u64, encode: Reencode) -> Result<(), String> {
    load_events_encoded(log, events, 1, encode)
}

/// As [`load_events`], each event in the partition of its key (as a producer puts it, and
/// as a join needs), in batches of up to 1,000 per partition.
fn load_events_by_key(log: &dyn Log, events: u64, partitions: u32) -> Result<(), String> {
    let mut batches: Vec<Vec<Record>> = vec![Vec::new(); partitions.max(1) as usize];
    for i in 0..events {
        let (k, v) = event(i);
        let p = weir_log::partition_for_key(&k, partitions.max(1)) as usize;
        batches[p].push(Record {
            key: Some(k),
            value: Some(v),
            timestamp: 1_700_000_000_000 + i as i64,
            headers: vec![],
        });
        if batches[p].len() == 1000 || i + 1 == events {
            for (p, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() && (batch.len() == 1000 || i + 1 == events) {
                    log.append("sensors", p as u32, batch)
                        .map_err(|e| e.to_string())?;
                    batch.clear();
                }
            }
        }
    }
    Ok(())
}

/// As [`load_events`], the batches spread over `partitions` partitions in turn.
fn load_events_into(log: &dyn Log, events: u64, partitions: u32) -> Result<(), String> {
    load_events_encoded(log, events, partitions, &Ok)
}

/// As [`load_events_into`], each value re-encoded by `encode`.
fn load_events_encoded(
    log: &dyn Log,
    events: u64,
    partitions: u32,
    encode: Reencode,
) -> Result<(), String> {
    let mut batch = Vec::with_capacity(1000);
    for i in 0..events {
        let (k, v) = event(i);
        batch.push(Record {
            key: Some(k),
            value: Some(encode(v)?),
            timestamp: 1_700_000_000_000 + i as i64,
            headers: vec![],
        });
        if batch.len() == 1000 || i + 1 == events {
            let partition = (i / 1000) as u32 % partitions.max(1);
            log.append("sensors", partition, &batch)
                .map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    Ok(())
}

fn rate(n: u64, secs: f64) -> String {
    format!("{:>12.0} events/s ({secs:.2} s)", n as f64 / secs)
}

/// W1 on the embedded log, or on the Kafka cluster at `kafka` (a fresh `sensors` topic is
/// needed there: the run fails if one exists with other data).
pub fn w1(events: u64, kafka: Option<&str>, format: &str) -> Result<(), String> {
    let avro = match format.to_ascii_lowercase().as_str() {
        "json" => false,
        "avro" => true,
        other => return Err(format!("--format takes json or avro, not {other}")),
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = EmbeddedLogConfig {
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let (log, name): (Arc<dyn Log>, String) = match kafka {
        None => (
            Arc::new(EmbeddedLog::open(dir.path(), config).map_err(|e| e.to_string())?),
            "the embedded log".into(),
        ),
        Some(b) => (
            Arc::new(weir_kafka::KafkaLog::connect(b).map_err(|e| e.to_string())?),
            format!("Kafka at {b}"),
        ),
    };
    log.create_topic("sensors", TopicConfig::default())
        .map_err(|e| e.to_string())?;
    if log.offsets("sensors", 0).map_err(|e| e.to_string())?.1 != 0 {
        return Err("topic 'sensors' already holds records: use a fresh cluster".into());
    }

    // The source first: with AVRO its schema is registered (Weir's own registry, in the
    // log) and the same events are written with it, in Confluent's framing.
    let mut engine = Engine::new(log.clone());
    let source_sql = if avro {
        W1_SOURCE.replace("VALUE_FORMAT='JSON'", "VALUE_FORMAT='AVRO'")
    } else {
        W1_SOURCE.to_string()
    };
    engine.execute_sql(&source_sql).map_err(|e| e.to_string())?;
    let source = engine.catalog().source("SENSORS").expect("created").clone();
    let schema = source.layout.schema();
    let started = Instant::now();
    match &source.layout.value_format.schema {
        Some(binding) if avro => {
            let id = binding.write_id()?;
            let write = binding.write.clone();
            load_events_as(log.as_ref(), events, &|json| {
                let v: serde_json::Value =
                    serde_json::from_slice(&json).map_err(|e| e.to_string())?;
                weir_format::sr::encode_with(&write, id, &v)
            })?;
        }
        _ => load_events(log.as_ref(), events)?,
    }
    log.flush().map_err(|e| e.to_string())?;
    let label = if avro { "AVRO" } else { "JSON" };
    println!("W1: {events} {label} car-sensor events on {name} (1 partition)");
    println!(
        "  load (append)        {}",
        rate(events, started.elapsed().as_secs_f64())
    );

    // Ceiling 1: reading the records from the log, nothing else.
    let started = Instant::now();
    let mut from = 0;
    let mut read = 0u64;
    let mut empty_reads = 0;
    // A remote log may answer a read with nothing before the end: stop at the count.
    while read < events && empty_reads < 100 {
        let records = log
            .read("sensors", 0, from, 4096)
            .map_err(|e| e.to_string())?;
        let Some(last) = records.last() else {
            empty_reads += 1;
            continue;
        };
        from = last.offset + 1;
        read += records.len() as u64;
    }
    println!(
        "  log read only        {}",
        rate(read, started.elapsed().as_secs_f64())
    );

    // Ceiling 2: decoding the records to Arrow, nothing else (records read beforehand).
    let mut all = Vec::with_capacity(events as usize);
    while (all.len() as u64) < events {
        let records = log
            .read("sensors", 0, all.len() as u64, 4096)
            .map_err(|e| e.to_string())?;
        if records.is_empty()
            && log.offsets("sensors", 0).map_err(|e| e.to_string())?.1 <= all.len() as u64
        {
            break;
        }
        all.extend(records);
    }
    let chunks: Vec<&[weir_log::StoredRecord]> = all.chunks(4096).collect();
    let started = Instant::now();
    let mut decoded = 0u64;
    for c in &chunks {
        decoded += source.layout.decode(&schema, c).batch.num_rows() as u64;
    }
    let decode_secs = started.elapsed().as_secs_f64();
    println!("  {label} decode only     {}", rate(decoded, decode_secs));
    drop(chunks);
    drop(all);
    // The input held for decoding given back now (not a second later, as mimalloc
    // otherwise would), and the peak counted afresh: the end-to-end runs' own.
    let holding_input = peak_rss_mib();
    // SAFETY: a plain call into the allocator this binary runs on.
    unsafe { libmimalloc_sys::mi_collect(true) };
    reset_peak_rss();

    // End to end: the persistent query reads, decodes, filters, projects, encodes, writes;
    // then the same query again on an engine that may use two threads: with one partition
    // busy, a step's next batch is read and decoded while its batch goes through the
    // operators and is written.
    drop(engine);
    let decode_rate = decoded as f64 / decode_secs;
    for (threads, sink, what, ratio) in [
        (
            1,
            "FAST",
            "end to end (CSAS)   ",
            "end to end / decode only",
        ),
        (
            2,
            "FAST2",
            "end to end, reading ahead on a 2nd thread",
            "reading ahead / decode only",
        ),
    ] {
        let mut engine = Engine::new(log.clone());
        engine.set_parallelism(threads);
        engine.execute_sql(&source_sql).map_err(|e| e.to_string())?;
        engine.set_property("auto.offset.reset", "earliest");
        engine
            .execute_sql(&W1_QUERY.replace("STREAM FAST ", &format!("STREAM {sink} ")))
            .map_err(|e| e.to_string())?;
        let (consumed, secs) = run_until(&mut engine, events)?;
        log.flush().map_err(|e| e.to_string())?;
        let written = log.offsets(sink, 0).map_err(|e| e.to_string())?.1;
        println!(
            "  {what} {}  -> {written} records written to {sink}",
            rate(consumed, secs)
        );
        println!(
            "  {ratio}: {:.0}%",
            100.0 * (consumed as f64 / secs) / decode_rate
        );
    }
    println!(
        "  peak RSS             {holding_input:.0} MiB holding the input to decode it, {:.0} MiB in the end-to-end runs",
        peak_rss_mib()
    );
    Ok(())
}

const W3_WINDOW: &str = "CREATE TABLE PER_CAR AS SELECT CAR_ID, COUNT(*) AS N, AVG(SPEED) AS MEAN_SPEED FROM SENSORS WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 10 SECONDS) GROUP BY CAR_ID;";
const W3_CARS: &str = "CREATE TABLE CARS (CAR_ID STRING PRIMARY KEY, MODEL STRING, YEAR INT) WITH (KAFKA_TOPIC='cars', VALUE_FORMAT='JSON');";
const W3_JOIN: &str = "CREATE STREAM ENRICHED AS SELECT S.CAR_ID AS CAR_ID, C.MODEL, C.YEAR, S.SPEED FROM SENSORS S JOIN CARS C ON S.CAR_ID = C.CAR_ID;";

/// The process's CPU time so far, user and system, in seconds (Linux: `/proc/self/stat`,
/// in clock ticks of 10 ms; zeros elsewhere).
fn cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| {
        rest.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    // utime and stime are the 14th and 15th fields: the 12th and 13th after the name.
    (field(11), field(12))
}

/// Resets the process's peak RSS (Linux: `5` to clear_refs), so each phase reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs the engine until `expected` records were consumed (or it stays idle); seconds.
fn run_until(engine: &mut Engine, expected: u64) -> Result<(u64, f64), String> {
    let started = Instant::now();
    let mut consumed = 0;
    let mut idle = 0;
    while consumed < expected && idle < 200 {
        match engine.run_once().map_err(|e| e.to_string())? {
            0 => idle += 1,
            n => consumed += n,
        }
    }
    Ok((consumed, started.elapsed().as_secs_f64()))
}

/// The rows of W3's car table.
const CARS: u32 = 10_000;

/// Car `c` of W3's car table, as a record.
fn car(c: u32) -> Record {
    let value = format!(r#"{{"MODEL":"model-{}","YEAR":{}}}"#, c % 37, 2000 + c % 25);
    Record::new(
        Some(format!("car-{c}").as_bytes()),
        Some(value.as_bytes()),
        0,
    )
}

/// A fresh embedded log holding W3's input: the W1 events and a 10,000-row car table.
/// `config` as the engine under test would have it.
fn w3_log(
    events: u64,
    config: EmbeddedLogConfig,
) -> Result<(tempfile::TempDir, Arc<dyn Log>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log: Arc<dyn Log> =
        Arc::new(EmbeddedLog::open(dir.path(), config).map_err(|e| e.to_string())?);
    for topic in ["sensors", "cars"] {
        log.create_topic(topic, TopicConfig::default())
            .map_err(|e| e.to_string())?;
    }
    load_events(log.as_ref(), events)?;
    let cars: Vec<Record> = (0..CARS).map(car).collect();
    log.append("cars", 0, &cars).map_err(|e| e.to_string())?;
    log.flush().map_err(|e| e.to_string())?;
    Ok((dir, log))
}

/// W3: the W1 events (10,000 cars, 1 ms apart) through a tumbling 10-second window with
/// COUNT and AVG(SPEED) per car, then through a stream-table join to a 10,000-row car
/// table. Each runs twice, each time on a fresh embedded log: on a plain engine, and on
/// a durable one as `weir server` and `weir run` keep queries (command log, a checkpoint
/// after every batch, the log's default fsync every 200 ms). W1's end-to-end figure from
/// the same run gives the ratio. Prints events/s and peak RSS.
pub fn w3(events: u64, only: Option<&str>, engine: Option<&str>) -> Result<(), String> {
    if let Some(o) = only.filter(|o| !["window", "join"].contains(o)) {
        return Err(format!("--only takes window or join, not {o}"));
    }
    let engines: &[bool] = match engine {
        None => &[false, true],
        Some("plain") => &[false],
        Some("durable") => &[true],
        Some(other) => return Err(format!("--engine takes plain or durable, not {other}")),
    };
    println!(
        "W3: {events} JSON car-sensor events from 10,000 cars, 1 ms apart, on the embedded log"
    );
    let plain = EmbeddedLogConfig {
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };

    // W1 end to end, for the ratio.
    let w1_rate = {
        let (_dir, log) = w3_log(events, plain.clone())?;
        let mut e = Engine::new(log.clone());
        e.set_property("auto.offset.reset", "earliest");
        e.execute_sql(W1_SOURCE).map_err(|e| e.to_string())?;
        e.execute_sql(W1_QUERY).map_err(|e| e.to_string())?;
        let (consumed, secs) = run_until(&mut e, events)?;
        let r = consumed as f64 / secs;
        println!(
            "  W1 end to end (CSAS, plain engine) {}",
            rate(consumed, secs)
        );
        r
    };

    // (query, label, expected input, sink)
    let mut runs: Vec<(&[&str], &str, u64, &str)> = Vec::new();
    if only != Some("join") {
        runs.push((
            &[W3_WINDOW],
            "tumbling 10 s COUNT, AVG per car",
            events,
            "PER_CAR",
        ));
    }
    if only != Some("window") {
        runs.push((
            &[W3_CARS, W3_JOIN],
            "stream-table join to 10,000 cars",
            events + 10_000,
            "ENRICHED",
        ));
    }
    for (statements, label, expected, sink) in runs {
        for &durable in engines {
            let config = if durable {
                EmbeddedLogConfig::default()
            } else {
                plain.clone()
            };
            let (_dir, log) = w3_log(events, config)?;
            reset_peak_rss();
            let mut e = if durable {
                Engine::open(log.clone()).map_err(|e| e.to_string())?
            } else {
                Engine::new(log.clone())
            };
            e.set_property("auto.offset.reset", "earliest");
            e.execute_sql(W1_SOURCE).map_err(|e| e.to_string())?;
            for sql in statements {
                e.execute_sql(sql).map_err(|e| e.to_string())?;
            }
            let (consumed, secs) = run_until(&mut e, expected)?;
            log.flush().map_err(|e| e.to_string())?;
            let written = log.offsets(sink, 0).map_err(|e| e.to_string())?.1;
            let checkpoints = if durable {
                let stored = log
                    .read_to_end(weir_engine::OFFSETS_TOPIC, 0, 0)
                    .map_err(|e| e.to_string())?;
                // A join's recovery intents (one per step) are there too.
                // (A large checkpoint's leading parts, `<query>#part`, are checkpoint too.)
                let is_part = |r: &&weir_log::StoredRecord| {
                    r.record
                        .key
                        .as_deref()
                        .is_some_and(|k| k.ends_with(weir_engine::PART_SUFFIX))
                };
                let (checkpoints, intents): (Vec<_>, Vec<_>) = stored
                    .iter()
                    .filter(|r| !is_part(r))
                    .filter_map(|r| r.record.value.as_deref())
                    .partition(|v| {
                        weir_engine::parse_checkpoint(v)
                            .is_some_and(|v| v.get("intent_for").is_none())
                    });
                let parts: usize = stored
                    .iter()
                    .filter(is_part)
                    .map(|r| r.record.value.as_ref().map_or(0, Vec::len))
                    .sum();
                let bytes: usize = checkpoints.iter().map(|v| v.len()).sum::<usize>() + parts;
                let intents = match intents.len() {
                    0 => String::new(),
                    n => format!(" (and {n} join step intents)"),
                };
                format!(
                    ", {} checkpoints of {:.1} MB{intents}",
                    checkpoints.len(),
                    bytes as f64 / 1e6
                )
            } else {
                String::new()
            };
            println!(
                "  {label} ({}) {}  = {:.2}x W1 -> {written} records to {sink}{checkpoints}; peak RSS {:.0} MiB",
                if durable { "durable" } else { "plain  " },
                rate(consumed, secs),
                consumed as f64 / secs / w1_rate,
                peak_rss_mib()
            );
        }
    }
    Ok(())
}

/// `weir bench push`: the latency from appending a record to an idle engine until a push
/// query's client holds its row, over `samples` records appended one at a time with
/// pauses (so the worker is idle, its slowest case, each time). Prints percentiles.
pub fn push_latency(samples: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = Arc::new(
        EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).map_err(|e| e.to_string())?,
    );
    let runtime = weir_engine::Runtime::start(Engine::new(log.clone()));
    runtime.execute_sql(W1_SOURCE).map_err(|e| e.to_string())?;
    let handle = match runtime
        .execute_sql(
            "SELECT CAR_ID, SPEED * 1.609 AS KMH FROM SENSORS WHERE SPEED > 50 EMIT CHANGES;",
        )
        .map_err(|e| e.to_string())?
        .pop()
    {
        Some(weir_engine::Outcome::Push(h)) => h,
        other => return Err(format!("expected a push query, got {other:?}")),
    };
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        // Let the worker go idle (its back-off reaches the 10 ms maximum).
        std::thread::sleep(std::time::Duration::from_millis(30));
        let value = format!(r#"{{"SPEED":{}}}"#, 60 + i % 50);
        let started = Instant::now();
        log.append(
            "sensors",
            0,
            &[Record::new(
                Some(b"car-1"),
                Some(value.as_bytes()),
                i as i64,
            )],
        )
        .map_err(|e| e.to_string())?;
        match handle.rows.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(weir_engine::PushEvent::Row(_)) => latencies.push(started.elapsed()),
            other => return Err(format!("no row within 5 s: {other:?}")),
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!("push query latency, append to client, idle engine ({samples} records):");
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    runtime.shutdown().map_err(|e| e.to_string())?;
    Ok(())
}

/// The plugin's `.so` beside this binary (cargo puts cdylibs in the same target folder).
fn plugin_beside_binary(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(format!("lib{name}.so"));
    path.exists().then_some(path)
}

/// A plugin scalar against the same function built in: `MULTIPLY(a, b)` from the
/// `udfs/multiply` plugin (loaded through the host, one FFI call per batch) and the same
/// Rust code linked into this binary, over `rows` rows in batches of `batch` rows.
pub fn udf(rows: usize, batch: usize, plugin: Option<&std::path::Path>) -> Result<(), String> {
    use arrow::array::{ArrayRef, Int64Array};
    let path = match plugin {
        Some(p) => p.to_path_buf(),
        None => plugin_beside_binary("multiply")
            .ok_or("libmultiply.so is not beside the weir binary: `cargo build --release --workspace`, or pass --plugin")?,
    };
    let loaded = weir_udf_host::Plugin::load(&path, &Default::default())?;
    let index = loaded
        .scalars
        .iter()
        .position(|f| f.name == "MULTIPLY" && f.returns == "BIGINT")
        .ok_or("the plugin has no MULTIPLY(BIGINT, BIGINT)")?;
    let built_in = multiply::multiply::def().invoke;
    let batches: Vec<[ArrayRef; 2]> = (0..rows.div_ceil(batch))
        .map(|b| {
            let n = batch.min(rows - b * batch);
            let start = (b * batch) as i64;
            [
                Arc::new(Int64Array::from_iter_values(start..start + n as i64)) as ArrayRef,
                Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 7))) as ArrayRef,
            ]
        })
        .collect();
    type Scalar<'a> = &'a dyn Fn(&[ArrayRef], usize) -> Result<ArrayRef, String>;
    let run = |f: Scalar| -> Result<(f64, i64), String> {
        let started = Instant::now();
        let mut check = 0i64;
        for args in &batches {
            let out = f(args, args[0].len())?;
            let out = out
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or("not BIGINT")?;
            check = check.wrapping_add(out.value(out.len() - 1));
        }
        Ok((started.elapsed().as_secs_f64(), check))
    };
    // Warm both once, then measure.
    run(&|a, n| built_in(a, n))?;
    run(&|a, n| loaded.invoke(index, a, n))?;
    let (builtin_secs, c1) = run(&|a, n| built_in(a, n))?;
    let (plugin_secs, c2) = run(&|a, n| loaded.invoke(index, a, n))?;
    if c1 != c2 {
        return Err(format!(
            "the plugin and the built-in disagree: {c1} vs {c2}"
        ));
    }
    println!("udf: MULTIPLY(BIGINT, BIGINT) over {rows} rows in batches of {batch}");
    println!(
        "  built in          {:>10.3} s  {}",
        builtin_secs,
        rate(rows as u64, builtin_secs)
    );
    println!(
        "  plugin (FFI)      {:>10.3} s  {}",
        plugin_secs,
        rate(rows as u64, plugin_secs)
    );
    println!(
        "  plugin / built-in {:>10.2}x (goal <= 1.20x)",
        plugin_secs / builtin_secs
    );
    Ok(())
}

/// `weir bench inserts`: `rows` JSON rows (the W1 event shape) sent over one HTTP/2
/// `/inserts-stream` request to a server on the embedded log, as ksqlDB's clients send
/// them; every row's acknowledgement is read back. Prints rows/s from the first byte sent
/// to the last acknowledgement, and checks the topic holds them all.
pub fn inserts(rows: u64) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = weir_server::Server::start(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })?;
    let addr = server.addr();
    let created = ureq::post(format!("http://{addr}/ksql"))
        .send_json(serde_json::json!({"ksql": "CREATE STREAM SENSORS (CAR_ID STRING KEY, TS BIGINT, SPEED DOUBLE, RPM INT, TEMP DOUBLE, LAT DOUBLE, LON DOUBLE) WITH (KAFKA_TOPIC='sensors', VALUE_FORMAT='JSON', PARTITIONS=1);"}))
        .map_err(|e| e.to_string())?;
    if created.status() != 200 {
        return Err("CREATE STREAM failed".into());
    }
    // The request body: the target, then one row per line.
    let mut body = String::from("{\"target\": \"SENSORS\"}\n");
    for i in 0..rows {
        body.push_str(&format!(
            "{{\"CAR_ID\": \"car-{}\", \"TS\": {i}, \"SPEED\": {:.1}, \"RPM\": {}, \"TEMP\": {:.1}, \"LAT\": 52.52, \"LON\": 13.40}}\n",
            i % 10_000,
            (i % 130) as f64 + 0.5,
            800 + i % 5000,
            60.0 + (i % 40) as f64 / 2.0
        ));
    }
    let bytes = body.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (acked, errors, secs) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (client, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let request = http::Request::post(format!("http://{addr}/inserts-stream"))
            .header("content-type", "application/vnd.ksqlapi.delimited.v1")
            .body(())
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let (response, mut send) = client
            .send_request(request, false)
            .map_err(|e| e.to_string())?;
        // Sent in 64 KiB pieces as the flow-control window allows, while acks are read.
        let sender = tokio::spawn(async move {
            let data = bytes::Bytes::from(body);
            let mut at = 0;
            while at < data.len() {
                let piece = data.slice(at..(at + 65_536).min(data.len()));
                send.reserve_capacity(piece.len());
                let mut granted = 0;
                while granted < piece.len() {
                    match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(n)) => granted = n,
                        _ => return Err("the server closed the stream".to_string()),
                    }
                }
                at += piece.len();
                send.send_data(piece, at == data.len())
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        let response = response.await.map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("/inserts-stream answered {}", response.status()));
        }
        let mut stream = response.into_body();
        let (mut acked, mut errors) = (0u64, 0u64);
        let mut pending = Vec::new();
        while acked + errors < rows {
            let Some(chunk) = stream.data().await else {
                break;
            };
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = stream.flow_control().release_capacity(chunk.len());
            pending.extend_from_slice(&chunk);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                if line.windows(4).any(|w| w == b"\"ok\"") {
                    acked += 1;
                } else {
                    errors += 1;
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        sender.await.map_err(|e| e.to_string())??;
        Ok::<_, String>((acked, errors, secs))
    })?;
    server.shutdown()?;
    let stored = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default())
        .and_then(|l| l.offsets("sensors", 0))
        .map_err(|e| e.to_string())?
        .1;
    println!(
        "inserts: {rows} rows ({:.1} MB) over one HTTP/2 /inserts-stream request",
        bytes as f64 / 1e6
    );
    println!(
        "  {acked} acknowledged, {errors} refused in {secs:.2} s: {:.0} rows/s",
        acked as f64 / secs
    );
    println!("  in topic sensors afterwards: {stored} records");
    if acked != rows || stored != rows {
        return Err(format!(
            "{acked} acknowledged and {stored} stored of {rows}"
        ));
    }
    Ok(())
}

/// `weir bench mqtt`: `publishers` MQTT 3.1.1 clients at once, each publishing `messages`
/// demo-sized car messages at QoS 1 with up to `inflight` unacknowledged, into a server on
/// the embedded log (every acknowledgement waits for an fsync). Prints messages/s and the
/// publish-to-PUBACK latency percentiles, and checks the log holds them all.
/// `publishers` MQTT 3.1.1 clients at once, each publishing `messages` copies of
/// `payload` at QoS 1 to `addr`, up to `inflight` unacknowledged; each message's time
/// from publish to PUBACK.
fn publish_qos1(
    addr: std::net::SocketAddr,
    publishers: usize,
    messages: usize,
    inflight: usize,
    payload: &[u8],
) -> Result<Vec<Duration>, String> {
    use rumqttc::mqttbytes::v4;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let payload = payload.to_vec();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for id in 0..publishers {
            let payload = payload.clone();
            tasks.push(tokio::spawn(async move {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                let (mut rd, mut wr) = s.into_split();
                let mut out = bytes::BytesMut::new();
                v4::Packet::Connect(v4::Connect::new(format!("bench-{id}")))
                    .write(&mut out, usize::MAX)
                    .map_err(|e| e.to_string())?;
                wr.write_all(&out).await.map_err(|e| e.to_string())?;
                let mut inbuf = bytes::BytesMut::new();
                let topic = format!("car/{id}/engine/temperature");
                let mut sent: std::collections::HashMap<u16, Instant> = Default::default();
                let mut latencies = Vec::with_capacity(messages);
                let (mut next, mut connected) = (0usize, false);
                while latencies.len() < messages {
                    while connected && next < messages && sent.len() < inflight {
                        let pkid = (next % 65_535) as u16 + 1;
                        let mut p =
                            v4::Publish::new(&topic, rumqttc::QoS::AtLeastOnce, payload.clone());
                        p.pkid = pkid;
                        out.clear();
                        v4::Packet::Publish(p)
                            .write(&mut out, usize::MAX)
                            .map_err(|e| e.to_string())?;
                        sent.insert(pkid, Instant::now());
                        wr.write_all(&out).await.map_err(|e| e.to_string())?;
                        next += 1;
                    }
                    match v4::Packet::read(&mut inbuf, 1 << 20) {
                        Ok(v4::Packet::ConnAck(_)) => connected = true,
                        Ok(v4::Packet::PubAck(a)) => {
                            let at = sent.remove(&a.pkid).ok_or("a PUBACK for nothing sent")?;
                            latencies.push(at.elapsed());
                        }
                        Ok(other) => return Err(format!("unexpected {other:?}")),
                        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                            if rd.read_buf(&mut inbuf).await.map_err(|e| e.to_string())? == 0 {
                                return Err("the server closed the connection".into());
                            }
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok::<_, String>(latencies)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(all)
    })
}

/// The demo's message size: an event id and 210 readings.
fn demo_payload() -> Vec<u8> {
    let readings: Vec<String> = (0..210)
        .map(|i| format!("{:.2}", 5.0 + (i as f64 / 9.0).sin()))
        .collect();
    format!("99999,{}", readings.join("# ")).into_bytes()
}

pub fn mqtt(publishers: usize, messages: usize, inflight: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = weir_server::Server::start(weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_topic_map: "temperature:.*temperature".into(),
        ..Default::default()
    })?;
    let addr = server.mqtt_addr().expect("the MQTT listener runs");
    let payload = demo_payload();
    let started = Instant::now();
    let results = publish_qos1(addr, publishers, messages, inflight, &payload)?;
    let secs = started.elapsed().as_secs_f64();
    let mut latencies = results;
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    let total = latencies.len();
    server.shutdown()?;
    // Every acknowledged message is in the log.
    let stored = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default())
        .and_then(|l| l.offsets("temperature", 0))
        .map_err(|e| e.to_string())?
        .1;
    println!(
        "MQTT QoS 1 into the embedded log (fsync per acknowledgement round): {publishers} publishers x {messages} messages of {} bytes, up to {inflight} in flight each",
        payload.len()
    );
    println!(
        "  {total} acknowledged in {secs:.2} s: {:.0} messages/s ({:.1} MB/s)",
        total as f64 / secs,
        (total * payload.len()) as f64 / secs / 1e6
    );
    println!(
        "  publish to PUBACK: p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("  in topic temperature afterwards: {stored} records");
    if stored < total as u64 {
        return Err(format!(
            "only {stored} of {total} acknowledged messages are stored"
        ));
    }
    Ok(())
}

/// The same publishers into an MQTT broker (Mosquitto, say) at `broker`, and Weir
/// bridging from it: how fast the bridged messages are stored in Weir's log.
pub fn mqtt_bridged(
    broker: &str,
    publishers: usize,
    messages: usize,
    inflight: usize,
) -> Result<(), String> {
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(broker)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--bridge {broker}: not a HOST:PORT"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = weir_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        mqtt_topic_map: "temperature:.*temperature".into(),
        ..Default::default()
    };
    config.mqtt_bridges.insert(
        "bench".into(),
        std::collections::BTreeMap::from([
            ("url".to_string(), format!("mqtt://{broker}")),
            ("topics".to_string(), "car/+/engine/temperature".to_string()),
            ("qos".to_string(), "1".to_string()),
            ("clean.session".to_string(), "true".to_string()),
        ]),
    );
    let server = weir_server::Server::start(config)?;
    let metrics = format!("http://{}/metrics", server.addr());
    let stored =
        || crate::client::metric(&metrics, "weir_mqtt_bridge_stored_total{bridge=\"bench\"}");
    let connected = || {
        crate::client::metric(
            &metrics,
            "weir_mqtt_bridge_connections_total{bridge=\"bench\"}",
        ) >= 1
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !connected() {
        if Instant::now() > deadline {
            return Err(format!("the bridge did not connect to {broker}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // subscribed
    let payload = demo_payload();
    let total = (publishers * messages) as u64;
    let started = Instant::now();
    publish_qos1(addr, publishers, messages, inflight, &payload)?;
    let published = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let got = stored();
    server.shutdown()?;
    println!(
        "MQTT QoS 1 through the broker at {broker}, bridged into the embedded log (stored, then acknowledged to the broker): {publishers} publishers x {messages} messages"
    );
    println!(
        "  published to the broker in {published:.2} s; {got} stored by Weir in {secs:.2} s: {:.0} messages/s ({:.1} MB/s)",
        got as f64 / secs,
        (got as usize * payload.len()) as f64 / secs / 1e6
    );
    if got < total {
        return Err(format!("only {got} of {total} messages were bridged"));
    }
    Ok(())
}

/// The demo's statements W2 runs: the source and the two persistent queries of
/// sql/connected_cars.sql (its push queries, PRINT and LIST FUNCTIONS left out).
fn w2_statements() -> Vec<String> {
    weir_sql::parse_script(
        include_str!("../../../sql/connected_cars.sql"),
        weir_sql::ParseOptions::default(),
    )
    .into_iter()
    .map(|s| s.text.trim().to_string())
    .filter(|t| t.to_ascii_uppercase().starts_with("CREATE STREAM"))
    .collect()
}

/// W2: `events` demo-format messages (`weir gen cars`) on the embedded log through the
/// demo's ANOMALYDETECTION and ANOMALYDETECTIONWITHFILTER with the anomaly plugin, and,
/// in the same run, what bounds it: parsing alone (DELIMITED decode, then each message's
/// 210 readings into doubles), inference alone (the parsed rows through the plugin's
/// ONNX session in batches of the engine's size), the serial ceiling of the two, and
/// row at a time as the seed's UDF runs: decode, then one call that parses and scores
/// each message (its per-row calls timed over `row_sample` messages).
pub fn w2(
    events: usize,
    row_sample: usize,
    plugin: Option<&std::path::Path>,
    ort_library: Option<&std::path::Path>,
) -> Result<(), String> {
    use arrow::array::{Array, ArrayRef, Float64Builder, ListBuilder, StringArray};
    let plugin = crate::demo::anomaly_plugin(plugin)?;
    let ort = crate::demo::ort_library(ort_library, &plugin)?;
    let properties = std::collections::BTreeMap::from([(
        "weir.functions.anomaly.ort_library".to_string(),
        ort.display().to_string(),
    )]);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = EmbeddedLogConfig {
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let log: Arc<dyn Log> =
        Arc::new(EmbeddedLog::open(dir.path().join("data"), config).map_err(|e| e.to_string())?);
    log.create_topic("temperature", TopicConfig::default())
        .map_err(|e| e.to_string())?;
    let messages = crate::cars::messages(42, events, 0.05, 1);
    for chunk in messages.chunks(1000) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|m| Record::new(None, Some(m.text.as_bytes()), m.event_id as i64))
            .collect();
        log.append("temperature", 0, &records)
            .map_err(|e| e.to_string())?;
    }
    log.flush().map_err(|e| e.to_string())?;
    let bytes: usize = messages.iter().map(|m| m.text.len()).sum();
    drop(messages);
    println!(
        "W2: {events} demo-format messages ({:.1} KB each, 210 readings) on the embedded log, anomaly plugin {}",
        bytes as f64 / events.max(1) as f64 / 1000.0,
        plugin.display()
    );

    let statements = w2_statements();
    let mut engine = Engine::new(log.clone());
    engine
        .execute_sql(&statements[0])
        .map_err(|e| e.to_string())?;
    let source = engine
        .catalog()
        .source("CARSENSOR")
        .ok_or("sql/connected_cars.sql creates no CARSENSOR")?
        .clone();
    let schema = source.layout.schema();
    let records = log
        .read_to_end("temperature", 0, 0)
        .map_err(|e| e.to_string())?;

    // Ceiling 1: parsing, nothing else: the DELIMITED decode to Arrow, then each
    // message's readings into doubles (timed apart, reported apart and summed).
    // Each batch decoded and let go before the next, as the engine decodes them (keeping
    // them all timed fresh pages faulted in as much as the decoder, as for the readings
    // below); then decoded again, untimed, for what follows.
    let started = Instant::now();
    for chunk in records.chunks(weir_engine::BATCH_RECORDS) {
        std::hint::black_box(source.layout.decode(&schema, chunk).batch);
    }
    let decode_secs = started.elapsed().as_secs_f64();
    let batches: Vec<arrow::record_batch::RecordBatch> = records
        .chunks(weir_engine::BATCH_RECORDS)
        .map(|chunk| source.layout.decode(&schema, chunk).batch)
        .collect();
    drop(records);
    let inputs = batches
        .iter()
        .map(|b| {
            b.column_by_name("SENSORINPUT")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or("CARSENSOR has no SENSORINPUT column")
        })
        .collect::<Result<Vec<&StringArray>, _>>()?;
    // Timed: each message's readings parsed and let go before the next, as the engine
    // holds one batch's at a time. (Keeping the whole run's — 1.7 KB a message, 168 MB
    // for 100,000 — timed the kernel faulting in and zeroing fresh pages as much as the
    // parser: the same binary printed 99,049 to 593,029 messages/s from run to run, and
    // its decode 265,128 to 1,239,891.)
    let started = Instant::now();
    let mut readings = 0usize;
    for text in inputs.iter().flat_map(|c| c.iter().flatten()) {
        readings += std::hint::black_box(weir_udf::parse_numbers(text, '#', "reading")?).len();
    }
    let readings_secs = started.elapsed().as_secs_f64();
    // Kept for the inference figure (not timed).
    let parsed = inputs
        .iter()
        .flat_map(|c| c.iter().flatten())
        .map(|text| weir_udf::parse_numbers(text, '#', "reading"))
        .collect::<Result<Vec<Vec<f64>>, String>>()?;
    debug_assert_eq!(readings, parsed.iter().map(Vec::len).sum::<usize>());
    let texts: Vec<String> = inputs
        .iter()
        .flat_map(|c| c.iter().flatten())
        .take(row_sample)
        .map(str::to_string)
        .collect();
    drop(inputs);
    drop(batches);
    let parse_secs = decode_secs + readings_secs;
    let decode_rate = parsed.len() as f64 / decode_secs;
    let parse_rate = parsed.len() as f64 / parse_secs;
    println!(
        "  parse only                                    {}",
        rate(parsed.len() as u64, parse_secs)
    );
    println!(
        "    of which DELIMITED decode to Arrow          {}",
        rate(parsed.len() as u64, decode_secs)
    );
    println!(
        "    of which 210 readings into doubles          {}",
        rate(parsed.len() as u64, readings_secs)
    );

    // Ceiling 2: inference, nothing else: ANOMALY_SCORE(ARRAY<DOUBLE>) per engine batch.
    let anomaly = weir_udf_host::Plugin::load(&plugin, &weir_udf_host::plugin_config(&properties))?;
    let index = |name: &str, arg: &str| {
        anomaly
            .scalars
            .iter()
            .position(|f| f.name == name && f.args[0].1 == arg)
            .ok_or(format!("the plugin has no {name}({arg})"))
    };
    let by_array = index("ANOMALY_SCORE", "ARRAY<DOUBLE>")?;
    let by_text = index("ANOMALY_SCORE", "STRING")?;
    let batches: Vec<(ArrayRef, usize)> = parsed
        .chunks(weir_engine::BATCH_RECORDS)
        .map(|rows| {
            let mut list = ListBuilder::new(Float64Builder::new());
            for r in rows {
                list.values().append_slice(r);
                list.append(true);
            }
            (Arc::new(list.finish()) as ArrayRef, rows.len())
        })
        .collect();
    drop(parsed);
    // The first call loads ONNX Runtime and the model: not part of the figure.
    anomaly.invoke(by_array, &[batches[0].0.slice(0, 1)], 1)?;
    let started = Instant::now();
    let mut scored = 0;
    for (array, rows) in &batches {
        scored += anomaly
            .invoke(by_array, std::slice::from_ref(array), *rows)?
            .len();
    }
    let infer_secs = started.elapsed().as_secs_f64();
    let infer_rate = scored as f64 / infer_secs;
    drop(batches);
    println!(
        "  inference only ({} rows per call)            {}",
        weir_engine::BATCH_RECORDS,
        rate(scored as u64, infer_secs)
    );
    let serial = 1.0 / (1.0 / parse_rate + 1.0 / infer_rate);
    println!("  serial ceiling 1/(1/parse + 1/inference)      {serial:>12.0} events/s");

    // Row at a time, as the seed's UDF runs: every message decoded as above, then one
    // ANOMALY call (parse and inference) per message.
    let rows: Vec<ArrayRef> = texts
        .iter()
        .map(|t| Arc::new(StringArray::from(vec![t.as_str()])) as ArrayRef)
        .collect();
    let started = Instant::now();
    for row in &rows {
        anomaly.invoke(by_text, std::slice::from_ref(row), 1)?;
    }
    let call_secs = started.elapsed().as_secs_f64();
    let call_rate = rows.len() as f64 / call_secs;
    let row_rate = 1.0 / (1.0 / decode_rate + 1.0 / call_rate);
    println!("  row at a time 1/(1/decode + 1/one call per row) {row_rate:>11.0} events/s");
    println!(
        "    of which one call per row (parse, inference) {}  over {} messages",
        rate(rows.len() as u64, call_secs),
        rows.len()
    );
    drop(rows);

    // End to end: the demo's two persistent queries on a durable engine, as a server runs
    // them, with the plugin loaded from a plugin folder.
    drop(engine);
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
    std::fs::copy(&plugin, plugins.join("libanomaly.so")).map_err(|e| e.to_string())?;
    let (functions, lines) = weir_server::functions_with_plugins(&plugins, &properties);
    if let Some(refused) = lines.iter().find(|l| l.contains("refused")) {
        return Err(refused.clone());
    }
    let mut engine = Engine::open_with(log.clone(), functions).map_err(|e| e.to_string())?;
    engine.set_property("auto.offset.reset", "earliest");
    for sql in &statements {
        engine.execute_sql(sql).map_err(|e| e.to_string())?;
    }
    // Each message is consumed twice: by ANOMALYDETECTION, then its row by the filter.
    let (consumed, secs) = run_until(&mut engine, 2 * events as u64)?;
    log.flush().map_err(|e| e.to_string())?;
    let scored = log
        .offsets("ANOMALYDETECTION", 0)
        .map_err(|e| e.to_string())?
        .1;
    let flagged = log
        .offsets("ANOMALYDETECTIONWITHFILTER", 0)
        .map_err(|e| e.to_string())?
        .1;
    let e2e = (consumed / 2) as f64 / secs;
    println!(
        "  end to end (both persistent queries, durable) {}  -> {scored} scored, {flagged} flagged",
        rate(consumed / 2, secs)
    );
    println!(
        "  end to end / serial ceiling {:.0}%   end to end / row at a time {:.1}x   peak RSS {:.0} MiB",
        100.0 * e2e / serial,
        e2e / row_rate,
        peak_rss_mib()
    );
    Ok(())
}

/// `weir bench workers`: `queries` copies of the W1 query (`query` "w1") or of W3's
/// windowed aggregation ("w3") over the same events, on a
/// durable engine run by the server's runtime with each worker count of `counts` in turn
/// (a fresh log each). Prints the records/s of all queries together and the speedup over
/// the first count; and, measured while they work through their backlog, how long a
/// statement (`SHOW QUERIES`) waits and how long a row appended to an idle stream takes
/// to reach a push query's client.
pub fn workers(
    events: u64,
    queries: usize,
    partitions: u32,
    counts: &[usize],
    query: &str,
    repeat: usize,
) -> Result<(), String> {
    let (name, sql, made) = match query {
        "w1" => ("W1", W1_QUERY, "STREAM FAST AS"),
        "w3" => ("W3 windowed aggregation", W3_WINDOW, "TABLE PER_CAR AS"),
        "w3-join" => ("W3 stream-table join", W3_JOIN, "STREAM ENRICHED AS"),
        other => return Err(format!("unknown query '{other}': w1, w3 or w3-join")),
    };
    println!(
        "workers: {queries} {name} queries over {events} events each in {partitions} partition(s), durable engine, embedded log ({} cores)",
        weir_engine::runtime::default_workers()
    );
    // Each count's speedups over the rounds.
    let mut speedups: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    for round in 0..repeat.max(1) {
        if repeat > 1 {
            println!(" round {}", round + 1);
        }
        let mut first = None;
        for (c, &count) in counts.iter().enumerate() {
            let run = WorkersRun {
                events,
                queries,
                partitions,
                sql,
                made,
                join: query == "w3-join",
            };
            let speedup = run.run(count, &mut first)?;
            speedups[c].push(speedup);
        }
    }
    if repeat > 1 {
        for (mut sorted, count) in speedups.into_iter().zip(counts) {
            sorted.sort_by(f64::total_cmp);
            println!(
                "  {count} worker(s): speedup {:.2}x .. {:.2}x over {} rounds, median {:.2}x",
                sorted[0],
                sorted[sorted.len() - 1],
                sorted.len(),
                sorted[sorted.len() / 2]
            );
        }
    }
    Ok(())
}

/// What one run of [`workers`] runs: `queries` copies of `sql` (its `made` clause
/// renamed per copy) over `events` events in `partitions` partitions.
struct WorkersRun<'a> {
    events: u64,
    queries: usize,
    partitions: u32,
    sql: &'a str,
    made: &'a str,
    /// The stream-table join: the cars table loaded too, events by key.
    join: bool,
}

impl WorkersRun<'_> {
    /// One run with `count` workers; its speedup over `first` (set by the round's
    /// first run).
    fn run(&self, count: usize, first: &mut Option<f64>) -> Result<f64, String> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let err = |e: weir_engine::EngineError| e.to_string();
        let WorkersRun {
            events,
            queries,
            partitions,
            sql,
            made,
            join,
        } = *self;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log: Arc<dyn Log> = Arc::new(
            EmbeddedLog::open(
                dir.path(),
                EmbeddedLogConfig {
                    fsync: FsyncPolicy::Never,
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?,
        );
        // The join's car table is partitioned as the events are (a join needs them
        // alike), and the events go to their key's partition.
        let topics: &[&str] = if join {
            &["sensors", "cars"]
        } else {
            &["sensors"]
        };
        for topic in topics {
            log.create_topic(
                topic,
                TopicConfig {
                    partitions,
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?;
        }
        if join {
            load_events_by_key(log.as_ref(), events, partitions)?;
            for c in 0..CARS {
                log.produce("cars", car(c)).map_err(|e| e.to_string())?;
            }
        } else {
            load_events_into(log.as_ref(), events, partitions)?;
        }
        let mut engine = Engine::open(log.clone()).map_err(err)?;
        engine.set_property("auto.offset.reset", "earliest");
        engine.execute_sql(W1_SOURCE).map_err(err)?;
        if join {
            engine.execute_sql(W3_CARS).map_err(err)?;
        }
        engine
            .execute_sql("CREATE STREAM IDLE (ID STRING KEY, N INT) WITH (KAFKA_TOPIC='idle', VALUE_FORMAT='JSON', PARTITIONS=1);")
            .map_err(err)?;
        for i in 0..queries {
            engine
                .execute_sql(&sql.replace(
                    made,
                    &made.replace(" AS", &format!("_{i} WITH (PARTITIONS={partitions}) AS")),
                ))
                .map_err(err)?;
        }
        let started = Instant::now();
        let cpu_before = cpu_secs();
        let runtime = weir_engine::Runtime::start_with(engine, count);
        let handle = match runtime
            .execute_sql("SELECT ID, N FROM IDLE EMIT CHANGES;")
            .map_err(err)?
            .pop()
        {
            Some(weir_engine::Outcome::Push(h)) => h,
            other => return Err(format!("expected a push query, got {other:?}")),
        };
        // Push rows on the idle stream, one every 20 ms, while the queries work.
        let busy = Arc::new(AtomicBool::new(true));
        let pusher = {
            let (log, busy) = (log.clone(), busy.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut i = 0;
                while busy.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                    let at = Instant::now();
                    let value = format!(r#"{{"N":{i}}}"#);
                    i += 1;
                    if log
                        .append(
                            "idle",
                            0,
                            &[Record::new(Some(b"x"), Some(value.as_bytes()), 0)],
                        )
                        .is_err()
                    {
                        break;
                    }
                    match handle.rows.recv_timeout(Duration::from_secs(10)) {
                        Ok(weir_engine::PushEvent::Row(_)) => latencies.push(at.elapsed()),
                        _ => break,
                    }
                }
                latencies
            })
        };
        let mut statement = Vec::new();
        let secs = loop {
            std::thread::sleep(Duration::from_millis(5));
            let at = Instant::now();
            runtime.execute_sql("SHOW QUERIES;").map_err(err)?;
            statement.push(at.elapsed());
            let done = runtime
                .engine()
                .query_metrics()
                .iter()
                .all(|q| q.stats.consumed >= events);
            if done {
                break started.elapsed().as_secs_f64();
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err("the queries did not finish in 10 minutes".into());
            }
        };
        let cpu_after = cpu_secs();
        busy.store(false, Ordering::SeqCst);
        let pushed = pusher.join().map_err(|_| "the push thread panicked")?;
        runtime.shutdown().map_err(err)?;
        let total = events * queries as u64;
        let r = total as f64 / secs;
        let speedup = first.map_or(1.0, |f: f64| r / f);
        first.get_or_insert(r);
        let pct = |v: &mut Vec<Duration>, p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            v.sort();
            v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
        };
        let mut pushed = pushed;
        println!(
            "  {count} worker(s): {}  = {speedup:.2}x;  CPU {:.2} s user + {:.2} s system;  SHOW QUERIES p50 {:.1} ms p99 {:.1} ms;  idle-stream push row p50 {:.1} ms p99 {:.1} ms ({} rows)",
            rate(total, secs),
            cpu_after.0 - cpu_before.0,
            cpu_after.1 - cpu_before.1,
            pct(&mut statement, 0.5),
            pct(&mut statement, 0.99),
            pct(&mut pushed, 0.5),
            pct(&mut pushed, 0.99),
            pushed.len()
        );
        Ok(speedup)
    }
}

/// Servers sharing work on one Kafka cluster: for each count in `servers`, that many
/// `weir run` processes of one service id (fresh topics and id per run) run `query` —
/// W1's projection (no filter), or `count-by-car`, a COUNT and AVG GROUP BY the events'
/// key (its state divided by partition): one output per event either way — over
/// `events` events in a 4-partition topic, loaded beforehand; the rate is events over
/// the time from the statement to the last output in the sink. The broker's read
/// ceiling (4 readers at once) is printed first.
pub fn cluster(
    bootstrap: &str,
    events: u64,
    servers: &[usize],
    workers: usize,
    query: &str,
) -> Result<(), String> {
    let (what, select) = match query {
        "w1" => (
            "W1's projection",
            "CREATE STREAM OUT WITH (KAFKA_TOPIC='{sink}', PARTITIONS=4) AS SELECT CAR_ID, SPEED * 1.609 AS KMH, ENGINE_TEMP FROM SENSORS;",
        ),
        "count-by-car" => (
            "COUNT(*) and AVG(SPEED) GROUP BY the key",
            "CREATE TABLE OUT WITH (KAFKA_TOPIC='{sink}', PARTITIONS=4) AS SELECT CAR_ID, COUNT(*) AS N, AVG(SPEED) AS AVG_SPEED FROM SENSORS GROUP BY CAR_ID;",
        ),
        other => return Err(format!("unknown query {other:?}: w1 or count-by-car")),
    };
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let err = |e: weir_log::LogError| e.to_string();
    let log: Arc<dyn Log> =
        Arc::new(weir_kafka::KafkaLog::connect(bootstrap).map_err(|e| e.to_string())?);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    println!(
        "cluster: {what} over {events} events in 4 partitions on Kafka at {bootstrap}, by 1 or more `weir run` servers sharing a service id ({} cores here)",
        weir_engine::runtime::default_workers()
    );
    let load = |topic: &str| -> Result<(), String> {
        log.create_topic(
            topic,
            TopicConfig {
                partitions: 4,
                ..Default::default()
            },
        )
        .map_err(err)?;
        let mut batches: Vec<Vec<Record>> = vec![Vec::new(); 4];
        for i in 0..events {
            let (k, v) = event(i);
            let p = weir_log::partition_for_key(&k, 4) as usize;
            batches[p].push(Record {
                key: Some(k),
                value: Some(v),
                timestamp: 1_700_000_000_000 + i as i64,
                headers: vec![],
            });
            if batches[p].len() == 1000 {
                log.append(topic, p as u32, &batches[p]).map_err(err)?;
                batches[p].clear();
            }
        }
        for (p, batch) in batches.iter().enumerate() {
            if !batch.is_empty() {
                log.append(topic, p as u32, batch).map_err(err)?;
            }
        }
        Ok(())
    };
    // The records in a topic, counted by reading them all (tansu's memory storage
    // reports the first offset of a partition's last batch as its end, and answers reads
    // from inside a batch late): until `expected` are read or reads find nothing for a
    // while.
    let count_all = |topic: &str, expected: u64| -> (u64, Option<String>) {
        let (mut at, mut read, mut error) = ([0u64; 4], 0u64, None);
        let mut quiet = Instant::now();
        while read < expected && quiet.elapsed() < Duration::from_secs(15) {
            let before = read;
            for (p, next) in at.iter_mut().enumerate() {
                match log.read(topic, p as u32, *next, 65_536) {
                    Ok(batch) => {
                        read += batch.len() as u64;
                        *next = batch.last().map_or(*next, |r| r.offset + 1);
                    }
                    Err(e) => error = Some(format!("{topic}-{p}: {e}")),
                }
            }
            if read > before {
                quiet = Instant::now();
            }
        }
        (read, error)
    };

    // The broker's ceilings: the four partitions read at once, nothing else; then read
    // and each batch appended to a copy as it is read (a server's traffic without its
    // work: no server, however many, goes faster than that on this broker).
    let first = format!("bench_{tag}_ceiling");
    load(&first)?;
    let copy = format!("{first}_copy");
    log.create_topic(
        &copy,
        TopicConfig {
            partitions: 4,
            ..Default::default()
        },
    )
    .map_err(err)?;
    for to in [None, Some(&copy)] {
        let started = Instant::now();
        let read: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u32)
                .map(|p| {
                    let (log, first) = (&log, &first);
                    s.spawn(move || {
                        let (mut next, mut read) = (0u64, 0u64);
                        let deadline = Instant::now() + Duration::from_secs(120);
                        // Until the loaded events are read (their count per partition is
                        // not known here: until a read finds nothing twice).
                        let mut empty = 0;
                        while empty < 2 && Instant::now() < deadline {
                            match log.read(first, p, next, 65_536) {
                                Ok(batch) if !batch.is_empty() => {
                                    empty = 0;
                                    read += batch.len() as u64;
                                    next = batch.last().map_or(next, |r| r.offset + 1);
                                    if let Some(to) = to {
                                        let records: Vec<Record> =
                                            batch.into_iter().map(|r| r.record).collect();
                                        if log.append(to, p, &records).is_err() {
                                            break;
                                        }
                                    }
                                }
                                Ok(_) => empty += 1,
                                Err(_) => break,
                            }
                        }
                        read
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  broker {} ceiling (4 at once)  {}{}",
            if to.is_some() { "read+write" } else { "read" },
            rate(read, secs),
            if read < events {
                format!("  (read {read} of {events})")
            } else {
                String::new()
            }
        );
    }

    let mut one = None;
    for (i, &count) in servers.iter().enumerate() {
        let run = format!("bench_{tag}_{i}_{count}");
        let (source, sink) = (format!("{run}_src"), format!("{run}_out"));
        load(&source)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let queries = dir.path().join("q.sql");
        std::fs::write(
            &queries,
            format!(
                "SET 'auto.offset.reset' = 'earliest';\n\
                 CREATE STREAM SENSORS (CAR_ID STRING KEY, TS BIGINT, SPEED DOUBLE, RPM INT, ENGINE_TEMP DOUBLE, LAT DOUBLE, LON DOUBLE) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');\n\
                 {}\n",
                select.replace("{sink}", &sink)
            ),
        )
        .map_err(|e| e.to_string())?;
        // Each server's progress: the records its steps consumed and wrote (a line per
        // step, `consumed N total T`), read from its standard output.
        let totals: Vec<Arc<AtomicU64>> = (0..count).map(|_| Arc::default()).collect();
        let spawn = |with_queries: bool, total: Arc<AtomicU64>| {
            let mut cmd = Command::new(&exe);
            // (tansu 0.6 on SQLite has no DeleteRecords: no checkpoint trimming.)
            cmd.args(["run", "--kafka-bootstrap", bootstrap, "--service-id", &run])
                .args(["--no-checkpoint-trim", "--progress-every", "0"])
                .args(["--workers", &workers.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            // WEIR_BENCH_LOGS=DIR: each server's output kept there.
            let mut keep = None;
            if let Some(logs) = std::env::var_os("WEIR_BENCH_LOGS") {
                let at = std::path::Path::new(&logs).join(format!(
                    "{run}-{}.log",
                    if with_queries { "q" } else { "other" }
                ));
                let file = std::fs::File::create(&at).map_err(|e| e.to_string())?;
                cmd.stderr(file.try_clone().map_err(|e| e.to_string())?);
                keep = Some(file);
            }
            if with_queries {
                cmd.arg("--queries-file").arg(&queries);
            }
            let mut child = cmd.spawn().map_err(|e| e.to_string())?;
            let out = child.stdout.take().ok_or("no standard output")?;
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(file) = &mut keep {
                        let _ = writeln!(file, "{line}");
                    }
                    let at = line.split_whitespace().collect::<Vec<_>>();
                    if let ["consumed", _, "total", t, ..] = at[..]
                        && let Ok(t) = t.parse()
                    {
                        total.store(t, Ordering::SeqCst);
                    }
                }
            });
            Ok::<_, String>(child)
        };
        // The others first, so that the query is divided as it starts.
        let mut procs = Vec::new();
        for total in &totals[1..] {
            procs.push(spawn(false, total.clone())?);
        }
        // Their first heartbeats stored (every 2 s with the default 10 s session).
        std::thread::sleep(Duration::from_secs(3));
        let started = Instant::now();
        procs.push(spawn(true, totals[0].clone())?);
        let deadline = started + Duration::from_secs(600);
        let (mut done, mut first_output, mut last) = (0u64, None, 0u64);
        let trace = std::env::var_os("WEIR_BENCH_TRACE").is_some();
        while done < events && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            done = totals.iter().map(|t| t.load(Ordering::SeqCst)).sum();
            if done > 0 {
                first_output.get_or_insert(started.elapsed().as_secs_f64());
            }
            if trace && done != last {
                last = done;
                eprintln!("{:.2} {done}", started.elapsed().as_secs_f64());
            }
        }
        let secs = started.elapsed().as_secs_f64();
        for mut p in procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        // What the servers said they wrote, checked in the sink: a record per event.
        let (written, error) = count_all(&sink, events);
        let done = done.min(written);
        // Also the rate once outputs flow (the servers started, the query planned and
        // its partitions claimed): from the first step a server reported to the last.
        let first = first_output.unwrap_or(secs);
        let flowing = done.min(events) as f64 / (secs - first).max(1e-9);
        let speedup = match one {
            None => {
                one = Some((secs, flowing));
                String::new()
            }
            Some((base, base_flowing)) => format!(
                "  ({:.2}x the first; once flowing {:.2}x)",
                base / secs,
                flowing / base_flowing
            ),
        };
        println!(
            "  {count} server(s)                      {}{speedup}{}",
            rate(done.min(events), secs),
            if done < events {
                format!(
                    "  INCOMPLETE: {done} of {events}{}",
                    error.map_or(String::new(), |e| format!(" (last read error: {e})"))
                )
            } else {
                format!(
                    "; first output after {first:.2} s, then {flowing:.0} events/s; {written} in the sink"
                )
            }
        );
    }
    Ok(())
}

/// Bytes of the files under `path`.
fn disk_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `weir bench restart`: `events` W1 events from 10,000 cars through a durable GROUP BY
/// per car (COUNT, AVG) with the default commit interval, on the embedded log as a
/// server keeps it; then the data directory's use per topic beside the size of the
/// state (its last full snapshot), the checkpoints written and kept, and how long the
/// engine takes to open again (replay the catalog, recover the query's state) and to be
/// caught up.
pub fn restart(events: u64) -> Result<(), String> {
    let err = |e: weir_engine::EngineError| e.to_string();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let open = || -> Result<Arc<EmbeddedLog>, String> {
        EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default())
            .map(Arc::new)
            .map_err(|e| e.to_string())
    };
    println!(
        "restart: {events} events from 10,000 cars through a durable GROUP BY per car (COUNT, AVG), embedded log, default checkpoint interval"
    );
    let (consumed, secs) = {
        let log = open()?;
        log.create_topic("sensors", TopicConfig::default())
            .map_err(|e| e.to_string())?;
        load_events_into(log.as_ref(), events, 1)?;
        let mut engine = Engine::open(log.clone()).map_err(err)?;
        engine.set_property("auto.offset.reset", "earliest");
        engine.execute_sql(W1_SOURCE).map_err(err)?;
        engine
            .execute_sql("CREATE TABLE PER_CAR AS SELECT CAR_ID, COUNT(*) AS N, AVG(SPEED) AS MEAN_SPEED FROM SENSORS GROUP BY CAR_ID;")
            .map_err(err)?;
        let run = run_until(&mut engine, events)?;
        log.flush().map_err(|e| e.to_string())?;
        run
    };
    println!("  processed {}", rate(consumed, secs));
    let log = open()?;
    let (start, end) = log
        .offsets(weir_engine::OFFSETS_TOPIC, 0)
        .map_err(|e| e.to_string())?;
    // The state's size: the largest checkpoint kept (a full snapshot, with its parts).
    let (mut state, mut pending) = (0usize, 0usize);
    for r in log
        .read_to_end(weir_engine::OFFSETS_TOPIC, 0, 0)
        .map_err(|e| e.to_string())?
    {
        let len = r.record.value.as_ref().map_or(0, Vec::len);
        if r.record
            .key
            .as_deref()
            .is_some_and(|k| k.ends_with(weir_engine::PART_SUFFIX))
        {
            pending += len;
        } else {
            state = state.max(pending + len);
            pending = 0;
        }
    }
    let topics = dir.path().join("topics");
    let mb = |b: u64| b as f64 / 1e6;
    // The table's topic is compacted (as a server's background pass would, once its
    // segments are a minute old).
    let table_before = disk_bytes(&topics.join("PER_CAR"));
    drop(log);
    let began = Instant::now();
    EmbeddedLog::open(
        dir.path(),
        EmbeddedLogConfig {
            min_compaction_lag: std::time::Duration::ZERO,
            housekeeping_every: None,
            ..Default::default()
        },
    )
    .and_then(|log| log.housekeep())
    .map_err(|e| e.to_string())?;
    let compacting = began.elapsed().as_secs_f64();
    let offsets_bytes = disk_bytes(&topics.join(weir_engine::OFFSETS_TOPIC));
    println!(
        "  on disk: input {:.1} MB, output PER_CAR {:.1} MB ({:.1} MB after a compaction pass of {compacting:.2} s), {} {:.2} MB, {} {:.3} MB",
        mb(disk_bytes(&topics.join("sensors"))),
        mb(table_before),
        mb(disk_bytes(&topics.join("PER_CAR"))),
        weir_engine::OFFSETS_TOPIC,
        mb(offsets_bytes),
        weir_engine::COMMAND_TOPIC,
        mb(disk_bytes(&topics.join(weir_engine::COMMAND_TOPIC)))
    );
    println!(
        "  state (largest checkpoint kept) {:.2} MB; checkpoints written {end}, kept {} (from offset {start}); {} = {:.1}x the state",
        mb(state as u64),
        end - start,
        weir_engine::OFFSETS_TOPIC,
        offsets_bytes as f64 / state.max(1) as f64
    );
    reset_peak_rss();
    let began = Instant::now();
    let log = open()?;
    let mut engine = Engine::open(log.clone()).map_err(err)?;
    let opened = began.elapsed().as_secs_f64();
    while engine.run_once().map_err(err)? > 0 {}
    let caught_up = began.elapsed().as_secs_f64();
    let n = engine
        .queries()
        .next()
        .map_or(0, |q| q.offsets.iter().sum::<u64>());
    println!(
        "  restart: open (catalog replayed, state recovered) {opened:.3} s, caught up {caught_up:.3} s (query at offset {n}); peak RSS {:.0} MiB",
        peak_rss_mib()
    );
    Ok(())
}
