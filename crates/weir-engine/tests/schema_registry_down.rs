//! A schema registry that does not answer loses nothing: a statement that needs it fails
//! with a clear error; a query reading a record whose writer schema it has not seen yet
//! fails alone (ERROR, saying the registry is unavailable) without logging the record as
//! bad, and once the registry answers it reads the record again from its checkpoint and
//! writes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use weir_engine::{Engine, PROCESSING_LOG_TOPIC};
use weir_format::registry::{
    LocalRegistry, RegisteredSchema, RegistryError, SchemaReference, SchemaRegistry, SchemaType,
    Version,
};
use weir_format::sr;
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};

/// Weir's registry behind a switch that makes every call fail as an unreachable one does.
#[derive(Debug)]
struct Flaky {
    inner: LocalRegistry,
    down: AtomicBool,
}

impl Flaky {
    fn up(&self) -> Result<(), RegistryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RegistryError::Unavailable(
                "http://registry:8081: connection refused".into(),
            ));
        }
        Ok(())
    }
}

impl SchemaRegistry for Flaky {
    fn by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        self.up()?;
        self.inner.by_id(id)
    }
    fn version(&self, subject: &str, version: Option<u32>) -> Result<Version, RegistryError> {
        self.up()?;
        self.inner.version(subject, version)
    }
    fn register_schema(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        references: &[SchemaReference],
        id: Option<u32>,
    ) -> Result<u32, RegistryError> {
        self.up()?;
        self.inner
            .register_schema(subject, schema_type, text, references, id)
    }
    fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.up()?;
        self.inner.subjects()
    }
    fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        self.up()?;
        self.inner.versions(subject)
    }
}

#[test]
fn an_unreachable_registry_fails_the_query_and_loses_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap());
    let registry = Arc::new(Flaky {
        inner: LocalRegistry::open(log.clone(), "_weir_schemas").unwrap(),
        down: AtomicBool::new(false),
    });
    let mut engine = Engine::open(log.clone()).unwrap();
    engine.set_schema_registry(registry.clone());
    engine
        .execute_sql(
            "CREATE STREAM cars (id STRING KEY, speed DOUBLE) \
               WITH (kafka_topic='cars', value_format='AVRO', partitions=1); \
             SET 'auto.offset.reset'='earliest'; \
             SET 'ksql.query.retry.backoff.initial.ms'='50'; \
             CREATE STREAM fast AS SELECT id, speed FROM cars WHERE speed > 10;",
        )
        .unwrap();
    // A producer registers its own version of the schema and writes with it.
    let theirs = r#"{"type":"record","name":"KsqlDataSourceSchema","namespace":"io.confluent.ksql.avro_schemas","fields":[
        {"name":"SPEED","type":["null","double"],"default":null},
        {"name":"DRIVER","type":["null","string"],"default":null}]}"#;
    let id = registry
        .register("cars-value", SchemaType::Avro, theirs)
        .unwrap();
    let value = sr::encode_with(
        &registry.by_id(id).unwrap(),
        id,
        &json!({"SPEED": 42.5, "DRIVER": "ann"}),
    )
    .unwrap();
    registry.down.store(true, Ordering::SeqCst);
    // A statement that needs the registry: refused, saying why.
    let refused = engine
        .execute_sql(
            "CREATE STREAM more WITH (kafka_topic='more', value_format='AVRO', partitions=1);",
        )
        .unwrap_err();
    assert!(
        refused.to_string().contains("Schema registry unavailable"),
        "{refused}"
    );
    log.produce("cars", Record::new(Some(b"car-1"), Some(&value), 1000))
        .unwrap();
    // The record cannot be read: the query fails alone, saying why; nothing is written,
    // nothing logged as a bad record.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        engine.run_once().unwrap();
        if let Some(e) = engine.queries().find_map(|q| q.error.clone()) {
            break e.message;
        }
        assert!(Instant::now() < deadline, "the query did not fail");
    };
    assert!(error.contains("Schema registry unavailable"), "{error}");
    std::thread::sleep(Duration::from_millis(200));
    engine.run_once().unwrap();
    assert_eq!(
        log.offsets("FAST", 0).unwrap().1,
        0,
        "written while unreadable"
    );
    let logged = log
        .topic(PROCESSING_LOG_TOPIC)
        .unwrap()
        .map_or(0, |_| log.offsets(PROCESSING_LOG_TOPIC, 0).unwrap().1);
    assert_eq!(logged, 0, "the record was logged as bad");
    // The registry answers again: the record is read and written, once.
    registry.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.offsets("FAST", 0).unwrap().1 == 0 {
        engine.run_once().unwrap();
        assert!(Instant::now() < deadline, "the query did not recover");
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.run_until_idle().unwrap();
    let written = log.read_to_end("FAST", 0, 0).unwrap();
    assert_eq!(written.len(), 1);
    let bytes = written[0].record.value.as_deref().unwrap();
    let (writer, body) = sr::unframe(bytes).unwrap();
    let row = sr::decode_with(&registry.by_id(writer).unwrap(), body).unwrap();
    assert_eq!(row, json!({"SPEED": 42.5}));
    assert!(engine.queries().all(|q| q.error.is_none()));
}
