//! A query worker whose thread ends is started again: queries go on being served. (Its
//! own test binary: the failpoint that ends a worker is armed for the whole process.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_engine::{Engine, Runtime};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};

fn output(log: &dyn Log) -> u64 {
    log.topic("DOUBLED")
        .unwrap()
        .map_or(0, |_| log.offsets("DOUBLED", 0).unwrap().1)
}

fn wait_for_output(log: &dyn Log, n: u64, what: &str) {
    let started = Instant::now();
    while output(log) < n {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_worker_that_ends_is_started_again() {
    // The one worker's 30th pass ends its thread (armed before anything reads it).
    // SAFETY: no other thread runs yet in this test binary.
    unsafe { std::env::set_var("WEIR_FAILPOINT", "worker_exit:30") };
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap());
    let mut engine = Engine::new(log.clone());
    engine
        .execute_sql(
            "CREATE STREAM nums (k VARCHAR KEY, n INT) WITH (kafka_topic='nums', value_format='JSON', partitions=1);
             SET 'auto.offset.reset'='earliest';
             CREATE STREAM doubled AS SELECT k, n * 2 AS d FROM nums;",
        )
        .unwrap();
    let runtime = Runtime::start_with(engine, 1);
    let produce = |n: i32| {
        let value = format!(r#"{{"N":{n}}}"#);
        log.produce("nums", Record::new(Some(b"a"), Some(value.as_bytes()), 1))
            .unwrap();
    };
    produce(1);
    wait_for_output(log.as_ref(), 1, "no output before the worker ended");
    // Idle passes take 1 to 10 ms: the 30th is well within this.
    let started = Instant::now();
    while runtime.restarts() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the worker was not started again"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(runtime.worker_alive());
    produce(2);
    wait_for_output(log.as_ref(), 2, "no output after the worker ended");
    runtime.shutdown().unwrap();
}
