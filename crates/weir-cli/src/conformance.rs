//! `weir conformance`: runs ksqlDB's query-validation cases exactly as
//! `../shared/conformance/ksql-qtt/README.md` describes — a fresh engine on a fresh
//! embedded log per case, statements, then inputs, then the outputs compared — and
//! reports the pass rate overall and per tag. The report format is a stable interface:
//! `{"total": N, "passed": M, "cases": [{"file", "name", "tags", "passed", "error"}]}`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use weir_engine::{Engine, Source};
use weir_format::Format;
use weir_format::registry::{SchemaRegistry, SchemaType};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, FsyncPolicy, Log, Record, TopicConfig};
use weir_sql::ast::SqlType;

#[derive(Debug, Clone)]
pub struct Selection {
    /// Run only cases with at least one of these tags (all when empty).
    pub tags: Vec<String>,
    /// Skip cases with any of these tags; `window_*` matches by prefix.
    pub exclude_tags: Vec<String>,
    pub timeout: Duration,
    /// The engine's parallelism (`Engine::set_parallelism`): steps computed at once, a
    /// GROUP BY's state in shards. ksqlDB's expectations hold whatever it is.
    pub parallelism: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            exclude_tags: Vec::new(),
            timeout: Duration::from_secs(30),
            parallelism: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub tags: Vec<String>,
    pub passed: bool,
    pub error: Option<String>,
}

fn tag_matches(pattern: &str, tag: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => tag.starts_with(prefix),
        None => pattern == tag,
    }
}

fn tags_of(case: &Value) -> Vec<String> {
    case["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn selected(case: &Value, sel: &Selection) -> bool {
    let tags = tags_of(case);
    (sel.tags.is_empty()
        || tags
            .iter()
            .any(|t| sel.tags.iter().any(|p| tag_matches(p, t))))
        && !tags
            .iter()
            .any(|t| sel.exclude_tags.iter().any(|p| tag_matches(p, t)))
}

pub fn load_cases(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Runs the selected cases, each on its own thread with the timeout.
pub fn run_cases(cases: &[Value], sel: &Selection) -> Vec<CaseResult> {
    run_cases_with(cases, sel, &mut |_| {})
}

/// As [`run_cases`], calling `done` after each case.
pub fn run_cases_with(
    cases: &[Value],
    sel: &Selection,
    done: &mut dyn FnMut(&CaseResult),
) -> Vec<CaseResult> {
    cases
        .iter()
        .filter(|c| selected(c, sel))
        .map(|case| {
            let (tx, rx) = mpsc::channel();
            let owned = case.clone();
            let parallelism = sel.parallelism;
            std::thread::spawn(move || {
                let outcome = std::panic::catch_unwind(|| run_case_with(&owned, parallelism))
                    .unwrap_or_else(|_| Err("the engine panicked".to_string()));
                let _ = tx.send(outcome);
            });
            let outcome = rx
                .recv_timeout(sel.timeout)
                .unwrap_or_else(|_| Err(format!("timed out after {:?}", sel.timeout)));
            let result = CaseResult {
                file: case["file"].as_str().unwrap_or_default().to_string(),
                name: case["name"].as_str().unwrap_or_default().to_string(),
                tags: tags_of(case),
                passed: outcome.is_ok(),
                error: outcome.err(),
            };
            done(&result);
            result
        })
        .collect()
}

/// One case: Ok when Weir behaves as ksqlDB did, otherwise why not.
pub fn run_case(case: &Value) -> Result<(), String> {
    run_case_with(case, 1)
}

/// As [`run_case`], on an engine of `parallelism`.
pub fn run_case_with(case: &Value, parallelism: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = EmbeddedLogConfig {
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.path(), config).map_err(|e| e.to_string())?);
    let mut engine = Engine::new(log.clone());
    engine.set_parallelism(parallelism);
    if let Some(props) = case["properties"].as_object() {
        for (k, v) in props {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            engine.set_property(k, &v);
        }
    }
    let mut topic_formats: BTreeMap<String, String> = BTreeMap::new();
    for t in case["topics"].as_array().into_iter().flatten() {
        let Some(name) = t["name"].as_str() else {
            continue;
        };
        let partitions = t["partitions"]
            .as_u64()
            .map(|p| p as u32)
            .or_else(|| declared_partitions(case, name))
            .unwrap_or(1);
        if log.topic(name).map_err(|e| e.to_string())?.is_none() {
            log.create_topic(
                name,
                TopicConfig {
                    partitions,
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?;
        }
        if let Some(f) = t["format"].as_str() {
            topic_formats.insert(name.to_string(), f.to_string());
        }
    }
    // As ksqlDB's runner: the topics of the sources the statements declare with columns
    // get their schemas first (as a CREATE registers them), then the case's own topics.
    let mut scratch: Option<(tempfile::TempDir, Engine)> = None;
    for sql in case["statements"].as_array().into_iter().flatten() {
        let sql = sql.as_str().unwrap_or_default();
        let Ok(weir_sql::ast::Statement::CreateSource(c)) = weir_sql::parse_statement(sql) else {
            continue;
        };
        let schema_format = |side: &str| {
            c.properties
                .0
                .iter()
                .filter(|(k, _)| {
                    k.eq_ignore_ascii_case(&format!("{side}_FORMAT"))
                        || k.eq_ignore_ascii_case("FORMAT")
                })
                .any(|(_, v)| Format::from_name(&v.as_text()).is_ok_and(|f| f.uses_registry()))
        };
        let topic = c
            .properties
            .get("KAFKA_TOPIC")
            .map(|t| t.as_text())
            .unwrap_or_default();
        let given = case["topics"].as_array().into_iter().flatten().any(|t| {
            t["name"] == topic.as_str()
                && (!t["keySchema"].is_null() || !t["valueSchema"].is_null())
        });
        if given || c.columns.is_empty() || !(schema_format("KEY") || schema_format("VALUE")) {
            continue;
        }
        let registry = engine.schema_registry().map_err(|e| e.to_string())?;
        let (_, scratch) = match &mut scratch {
            Some(e) => e,
            None => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let log = Arc::new(
                    EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default())
                        .map_err(|e| e.to_string())?,
                );
                let mut e = Engine::new(log);
                e.set_schema_registry(registry);
                scratch.insert((dir, e))
            }
        };
        let _ = scratch.execute_sql(sql);
    }
    drop(scratch);
    // Schemas the case registers, each topic's key schema then its value schema.
    for t in case["topics"].as_array().into_iter().flatten() {
        let Some(name) = t["name"].as_str() else {
            continue;
        };
        for side in ["key", "value"] {
            let schema = &t[format!("{side}Schema")];
            if schema.is_null() {
                continue;
            }
            let format = t[format!("{side}Format")]
                .as_str()
                .or(t["format"].as_str())
                .unwrap_or_default();
            let (schema_type, text) = match (format.to_ascii_uppercase().as_str(), schema) {
                (_, Value::String(text)) if text.trim_start().starts_with("syntax") => {
                    (SchemaType::Protobuf, text.clone())
                }
                ("PROTOBUF" | "PROTOBUF_NOSR", Value::String(text)) => {
                    (SchemaType::Protobuf, text.clone())
                }
                ("JSON" | "JSON_SR", v) => (SchemaType::Json, v.to_string()),
                (_, v) => (SchemaType::Avro, v.to_string()),
            };
            let registry = engine.schema_registry().map_err(|e| e.to_string())?;
            let subject = format!("{name}-{side}");
            // Schemas it imports: each registered under its import name first.
            let mut references = Vec::new();
            for r in t[format!("{side}SchemaReferences")]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (Some(ref_name), Some(ref_text)) = (r["name"].as_str(), r["schema"].as_str())
                else {
                    continue;
                };
                // Out of the way of the ids the case's own schemas get, as in ksqlDB's
                // runner, where a schema's references take none of them.
                let ref_id = 100_000 + references.len() as u32 + 1000 * side.len() as u32;
                registry
                    .register_with_id(ref_name, schema_type, ref_text, ref_id)
                    .map_err(|e| format!("registering {ref_name}: {e}"))?;
                let version = registry
                    .latest(ref_name)
                    .map_err(|e| e.to_string())?
                    .map_or(1, |v| v.version);
                references.push(weir_format::registry::SchemaReference {
                    name: ref_name.to_string(),
                    subject: ref_name.to_string(),
                    version,
                });
            }
            // With references (registered out of the way above), the id the schema would
            // have had without them: the next after the case's others.
            let id = match t[format!("{side}SchemaId")].as_u64() {
                Some(id) => Some(id as u32),
                None if !references.is_empty() => {
                    let mut top = 0;
                    for subject in registry.subjects().map_err(|e| e.to_string())? {
                        if let Some(v) = registry.latest(&subject).map_err(|e| e.to_string())?
                            && v.schema.id < 100_000
                        {
                            top = top.max(v.schema.id);
                        }
                    }
                    Some(top + 1)
                }
                None => None,
            };
            let registered =
                registry.register_schema(&subject, schema_type, &text, &references, id);
            if let Err(e) = registered {
                return if case["expected_error"].is_null() {
                    Err(format!("registering the {side} schema of {name}: {e}"))
                } else {
                    Ok(())
                };
            }
        }
    }
    let expected_error = !case["expected_error"].is_null();
    for sql in case["statements"].as_array().into_iter().flatten() {
        let sql = sql.as_str().unwrap_or_default();
        if let Err(e) = engine.execute_sql(sql) {
            return if expected_error {
                Ok(())
            } else {
                Err(format!("{sql}\n  rejected: {e}"))
            };
        }
    }
    for input in case["inputs"].as_array().into_iter().flatten() {
        let topic = input["topic"].as_str().ok_or("input without a topic")?;
        let (key_format, _, value_format, _) =
            serialization(source_on(&engine, topic), topic_formats.get(topic));
        let registry = if key_format.has_schema() || value_format.has_schema() {
            Some(engine.schema_registry().map_err(|e| e.to_string())?)
        } else {
            None
        };
        let source = source_on(&engine, topic);
        let (key_format, key_type, value_format, value_type) =
            serialization(source, topic_formats.get(topic));
        let with_schema = |side: &str, v: &Value| -> Result<Option<Option<Vec<u8>>>, String> {
            let Some(registry) = &registry else {
                return Ok(None);
            };
            let spec = source.map(|s| {
                if side == "key" {
                    &s.layout.key_format
                } else {
                    &s.layout.value_format
                }
            });
            let format = match side {
                "key" => key_format,
                _ => value_format,
            };
            if !format.has_schema() {
                return Ok(None);
            }
            if v.is_null() {
                return Ok(Some(None));
            }
            serialize_with_schema(
                registry.as_ref(),
                &format!("{topic}-{side}"),
                spec,
                format,
                v,
            )
            .map(|b| Some(Some(b)))
        };
        let mut key = match with_schema("key", &input["key"])? {
            Some(k) => k,
            None => serialize(&input["key"], key_format, key_type.as_ref())?,
        };
        // A windowed source's key carries its window after the key's bytes.
        if let (Some(w), Some(window)) = (source.and_then(|s| s.window), input.get("window")) {
            let bound = |name: &str| window[name].as_i64().unwrap_or(0);
            w.append(
                key.get_or_insert_with(Vec::new),
                bound("start"),
                bound("end"),
            );
        }
        let value = match with_schema("value", &input["value"])? {
            Some(v) => v,
            None => serialize(&input["value"], value_format, value_type.as_ref())?,
        };
        let timestamp = input["timestamp"].as_i64().unwrap_or(0);
        if log.topic(topic).map_err(|e| e.to_string())?.is_none() {
            log.create_topic(topic, TopicConfig::default())
                .map_err(|e| e.to_string())?;
        }
        log.produce(
            topic,
            Record {
                key,
                value,
                timestamp,
                headers: input_headers(&input["headers"])?,
            },
        )
        .map_err(|e| e.to_string())?;
        // Each record is processed before the next is produced, as ksqlDB's test driver
        // does: joins see their sides' records in the order the case gives them.
        if let Err(e) = engine.run_until_idle() {
            return if expected_error {
                Ok(())
            } else {
                Err(format!("running the queries failed: {e}"))
            };
        }
    }
    if let Err(e) = engine.run_until_idle() {
        return if expected_error {
            Ok(())
        } else {
            Err(format!("running the queries failed: {e}"))
        };
    }
    if expected_error {
        return Err("expected an error, but every statement was accepted".to_string());
    }
    let mut expected_by_topic: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for o in case["outputs"].as_array().into_iter().flatten() {
        expected_by_topic
            .entry(o["topic"].as_str().unwrap_or_default())
            .or_default()
            .push(o);
    }
    for (topic, expected) in expected_by_topic {
        let actual = read_topic(&mut engine, log.as_ref(), topic)?;
        // DECIMAL values the case writes as strings read as the decimals they are.
        let decimals: Vec<String> = source_on(&engine, topic)
            .map(|s| {
                s.layout
                    .value_columns
                    .iter()
                    .filter(|c| holds_decimal(&c.ty))
                    .map(|c| c.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let expected: Vec<Value> = expected
            .iter()
            .map(|e| decimals_as_numbers(e, &decimals))
            .collect();
        let expected: Vec<&Value> = expected.iter().collect();
        compare(topic, &expected, &actual).map_err(|e| {
            // Say why records are missing: the first processing-log entry, if any.
            let logged = log
                .read(weir_engine::PROCESSING_LOG_TOPIC, 0, 0, 1)
                .ok()
                .and_then(|r| r.into_iter().next())
                .and_then(|r| r.record.value)
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            match logged {
                Some(entry) if actual.len() < expected.len() => {
                    format!("{e}; processing log: {entry}")
                }
                _ => e,
            }
        })?;
    }
    Ok(())
}

fn holds_decimal(ty: &SqlType) -> bool {
    match ty {
        SqlType::Decimal { .. } => true,
        SqlType::Array(t) => holds_decimal(t),
        _ => false,
    }
}

/// An expected record with the DECIMAL columns' values (strings, as cases often write
/// them) read as numbers, as ksqlDB's runner reads them through the sink's schema.
fn decimals_as_numbers(expected: &Value, columns: &[String]) -> Value {
    fn number(v: &Value) -> Value {
        match v {
            // Java's BigDecimal reads "00.10" too, which JSON does not.
            Value::String(s) => serde_json::from_str::<serde_json::Number>(s.trim())
                .ok()
                .or_else(|| {
                    let f = s.trim().parse::<f64>().ok()?;
                    serde_json::Number::from_f64(f)
                })
                .map_or_else(|| v.clone(), Value::Number),
            Value::Array(items) => Value::Array(items.iter().map(number).collect()),
            other => other.clone(),
        }
    }
    let mut out = expected.clone();
    if let Some(fields) = out["value"].as_object_mut() {
        for (name, v) in fields.iter_mut() {
            if columns.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                *v = number(v);
            }
        }
    }
    out
}

/// The partitions a statement of the case declares a source's topic with, where the case's
/// topic list does not say (ksqlDB's runner makes such topics as the statement says).
fn declared_partitions(case: &Value, topic: &str) -> Option<u32> {
    case["statements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sql| weir_sql::parse_statement(sql.as_str()?).ok())
        .find_map(|s| match s {
            weir_sql::ast::Statement::CreateSource(c)
                if c.properties
                    .get("KAFKA_TOPIC")
                    .map(|t| t.as_text())
                    .as_deref()
                    == Some(topic) =>
            {
                c.properties
                    .get("PARTITIONS")?
                    .as_text()
                    .trim()
                    .parse()
                    .ok()
            }
            _ => None,
        })
}

fn source_on<'a>(engine: &'a Engine, topic: &str) -> Option<&'a Source> {
    engine.catalog().sources().find(|s| s.topic == topic)
}

type Serialization = (Format, Option<SqlType>, Format, Option<SqlType>);

fn serialization(source: Option<&Source>, topic_format: Option<&String>) -> Serialization {
    match source {
        Some(s) => {
            let single = |cols: &[weir_format::Column]| {
                if cols.len() == 1 {
                    Some(cols[0].ty.clone())
                } else {
                    None
                }
            };
            (
                s.layout.key_format.format,
                single(&s.layout.key_columns),
                s.layout.value_format.format,
                single(&s.layout.value_columns),
            )
        }
        None => {
            let f = topic_format
                .and_then(|f| Format::from_name(f).ok())
                .unwrap_or(Format::Json);
            (Format::Kafka, None, f, None)
        }
    }
}

fn serialize(v: &Value, format: Format, ty: Option<&SqlType>) -> Result<Option<Vec<u8>>, String> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(match format {
        Format::Json => serde_json::to_vec(v).map_err(|e| e.to_string())?,
        Format::None => return Ok(None),
        Format::Avro | Format::Protobuf | Format::ProtobufNoSr | Format::JsonSr => {
            return Err(format!(
                "no schema to write a {} record with",
                format.name()
            ));
        }
        Format::Delimited => match v {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        },
        Format::Kafka => match (ty, v) {
            (Some(SqlType::Int), Value::Number(n)) => (n.as_i64().unwrap_or_default() as i32)
                .to_be_bytes()
                .to_vec(),
            (Some(SqlType::Bigint), Value::Number(n)) => {
                n.as_i64().unwrap_or_default().to_be_bytes().to_vec()
            }
            (Some(SqlType::Double), Value::Number(n)) => {
                n.as_f64().unwrap_or_default().to_be_bytes().to_vec()
            }
            (_, Value::String(s)) => s.clone().into_bytes(),
            (_, other) => other.to_string().into_bytes(),
        },
    }))
}

/// A record of a schema format, written as the case's runner writes it: with the schema
/// registered for the topic's subject, else the one the source on it writes.
fn serialize_with_schema(
    registry: &dyn SchemaRegistry,
    subject: &str,
    spec: Option<&weir_format::FormatSpec>,
    format: Format,
    v: &Value,
) -> Result<Vec<u8>, String> {
    let (schema, id) = match registry.latest(subject).map_err(|e| e.to_string())? {
        Some(latest) => (latest.schema.clone(), latest.schema.id),
        None => match spec.and_then(|s| s.schema.as_ref()) {
            Some(b) => (b.write.clone(), b.write_id()?),
            None => return Err(format!("no schema for {subject}")),
        },
    };
    match format {
        // No framing: the message alone.
        Format::ProtobufNoSr => {
            let message = spec
                .and_then(|s| s.schema.as_ref())
                .and_then(|b| b.message.as_deref());
            weir_format::sr::encode_body(&schema, message, v)
        }
        _ => match spec
            .and_then(|s| s.schema.as_ref())
            .and_then(|b| b.message.as_deref())
        {
            // The message the source names, within the registered schema.
            Some(message) => weir_format::sr::encode_framed(&schema, id, Some(message), v),
            None => weir_format::sr::encode_with(&schema, id, v),
        },
    }
}

fn deserialize_with_schema(
    registry: &dyn SchemaRegistry,
    spec: Option<&weir_format::FormatSpec>,
    format: Format,
    bytes: &[u8],
) -> Result<Value, String> {
    match format {
        Format::ProtobufNoSr => {
            let b = spec
                .and_then(|s| s.schema.as_ref())
                .ok_or("no schema for PROTOBUF_NOSR")?;
            weir_format::sr::decode_body(&b.write, b.message.as_deref(), bytes)
        }
        _ => {
            let (id, body) = weir_format::sr::unframe(bytes)?;
            let schema = registry.by_id(id).map_err(|e| e.to_string())?;
            weir_format::sr::decode_with(&schema, body)
        }
    }
}

fn deserialize(bytes: Option<Vec<u8>>, format: Format, ty: Option<&SqlType>) -> Value {
    let Some(b) = bytes else { return Value::Null };
    match format {
        Format::Avro | Format::Protobuf | Format::ProtobufNoSr | Format::JsonSr => {
            Value::String(String::from_utf8_lossy(&b).into())
        }
        Format::Json => serde_json::from_slice(&b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into())),
        Format::Delimited => Value::String(String::from_utf8_lossy(&b).into()),
        Format::None => Value::Null,
        Format::Kafka => match (ty, b.len()) {
            (Some(SqlType::Int), 4) => json!(i32::from_be_bytes(b[..4].try_into().unwrap())),
            (Some(SqlType::Bigint), 8) => json!(i64::from_be_bytes(b[..8].try_into().unwrap())),
            (Some(SqlType::Double), 8) => json!(f64::from_be_bytes(b[..8].try_into().unwrap())),
            _ => Value::String(String::from_utf8_lossy(&b).into()),
        },
    }
}

struct Actual {
    key: Value,
    value: Value,
    timestamp: i64,
    /// A windowed key's window: start and end.
    window: Option<(i64, i64)>,
    /// The user's headers (not Weir's own), as the cases write them:
    /// `[{"KEY": name, "VALUE": base64}]`.
    headers: Value,
}

fn read_topic(engine: &mut Engine, log: &dyn Log, topic: &str) -> Result<Vec<Actual>, String> {
    let Some(info) = log.topic(topic).map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let (kf, _, vf, _) = serialization(source_on(engine, topic), None);
    let registry = if kf.has_schema() || vf.has_schema() {
        Some(engine.schema_registry().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let source = source_on(engine, topic);
    let (kf, kt, vf, vt) = serialization(source, None);
    let mut out = Vec::new();
    for p in 0..info.config.partitions {
        for r in log.read_to_end(topic, p, 0).map_err(|e| e.to_string())? {
            let (key, window) = match (source.and_then(|s| s.window), r.record.key) {
                (Some(w), Some(k)) => match w.split(&k) {
                    Some((k, start, end)) => (Some(k.to_vec()), Some((start, end))),
                    None => (Some(k), None),
                },
                (_, k) => (k, None),
            };
            let headers = r
                .record
                .headers
                .iter()
                .filter(|h| !h.is_weir())
                .map(|h| {
                    use base64::Engine as _;
                    let value = h.value.as_ref().map(|v| {
                        Value::String(base64::engine::general_purpose::STANDARD.encode(v))
                    });
                    serde_json::json!({"KEY": h.name, "VALUE": value})
                })
                .collect();
            let side =
                |bytes: Option<Vec<u8>>, format: Format, ty: Option<&SqlType>, key: bool| match (
                    &registry, bytes,
                ) {
                    (Some(registry), Some(b)) if format.has_schema() => {
                        let spec = source.map(|s| {
                            if key {
                                &s.layout.key_format
                            } else {
                                &s.layout.value_format
                            }
                        });
                        deserialize_with_schema(registry.as_ref(), spec, format, &b)
                            .unwrap_or_else(|e| Value::String(format!("undecodable: {e}")))
                    }
                    (_, b) => deserialize(b, format, ty),
                };
            out.push(Actual {
                key: side(key, kf, kt.as_ref(), true),
                value: side(r.record.value, vf, vt.as_ref(), false),
                timestamp: r.record.timestamp,
                window,
                headers: Value::Array(headers),
            });
        }
    }
    Ok(out)
}

/// JSON values equal as ksqlDB's runner compares them: numbers by value (1 equals 1.0).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// An expected record value against the one read, as ksqlDB's runner compares them: it
/// reads the expected value through the sink's schema, so each column read back takes
/// the expected object's field of exactly its name, else the one field whose name
/// differs only in case (its cases write `{"val": ...}` for a column named `VAL`), else
/// null; expected fields that name no column are not read. Values compare as
/// [`json_eq`]; nested values exactly.
pub fn record_value_eq(expected: &Value, actual: &Value) -> bool {
    let (Value::Object(x), Value::Object(y)) = (expected, actual) else {
        return json_eq(expected, actual);
    };
    y.iter().all(|(column, w)| {
        let field = x.get(column).or_else(|| {
            let mut same = x
                .iter()
                .filter(|(name, _)| !y.contains_key(*name) && name.eq_ignore_ascii_case(column));
            match (same.next(), same.next()) {
                (Some((_, v)), None) => Some(v),
                _ => None,
            }
        });
        json_eq(field.unwrap_or(&Value::Null), w)
    })
}

fn compare(topic: &str, expected: &[&Value], actual: &[Actual]) -> Result<(), String> {
    let show = |a: &Actual| {
        let window = a
            .window
            .map(|(s, e)| format!(" window={s}..{e}"))
            .unwrap_or_default();
        format!(
            "key={} value={} ts={}{window} headers={}",
            a.key, a.value, a.timestamp, a.headers
        )
    };
    for (i, e) in expected.iter().enumerate() {
        let Some(a) = actual.get(i) else {
            return Err(format!(
                "topic {topic}: expected {} records, got {}",
                expected.len(),
                actual.len()
            ));
        };
        let ts_ok = e["timestamp"].as_i64().is_none_or(|t| t == a.timestamp);
        // Headers compared where the case gives them.
        let headers_ok = e["headers"].is_null() || e["headers"] == a.headers;
        // A key of several columns (or a schema format's message) reads through the sink's
        // key schema as a value does.
        if !record_value_eq(&e["key"], &a.key)
            || !record_value_eq(&e["value"], &a.value)
            || !ts_ok
            || !window_ok(&e["window"], a.window)
            || !headers_ok
        {
            return Err(format!(
                "topic {topic}, record {i}: expected key={} value={} ts={}{}{}, got {}",
                e["key"],
                e["value"],
                e["timestamp"],
                if e["window"].is_null() {
                    String::new()
                } else {
                    format!(" window={}", e["window"])
                },
                if e["headers"].is_null() {
                    String::new()
                } else {
                    format!(" headers={}", e["headers"])
                },
                show(a)
            ));
        }
    }
    if actual.len() > expected.len() {
        return Err(format!(
            "topic {topic}: expected {} records, got {} (first extra: {})",
            expected.len(),
            actual.len(),
            show(&actual[expected.len()])
        ));
    }
    Ok(())
}

/// A case's expected window (`{"start", "end", "type"}`) against the record's.
fn window_ok(expected: &Value, actual: Option<(i64, i64)>) -> bool {
    match (expected.is_null(), actual) {
        (true, _) => true,
        (false, None) => false,
        (false, Some((start, end))) => {
            expected["start"].as_i64() == Some(start) && expected["end"].as_i64() == Some(end)
        }
    }
}

/// Passed / total per tag, and overall.
pub fn summary(results: &[CaseResult]) -> (BTreeMap<String, (usize, usize)>, usize, usize) {
    let mut per_tag: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in results {
        for t in &r.tags {
            let e = per_tag.entry(t.clone()).or_default();
            e.1 += 1;
            if r.passed {
                e.0 += 1;
            }
        }
    }
    let passed = results.iter().filter(|r| r.passed).count();
    (per_tag, passed, results.len())
}

pub fn report_json(results: &[CaseResult]) -> Value {
    let (_, passed, total) = summary(results);
    json!({
        "total": total,
        "passed": passed,
        "cases": results.iter().map(|r| json!({
            "file": r.file, "name": r.name, "tags": r.tags, "passed": r.passed, "error": r.error,
        })).collect::<Vec<_>>(),
    })
}

pub fn print_table(results: &[CaseResult]) {
    let (per_tag, passed, total) = summary(results);
    println!("{:<32} {:>7} {:>7} {:>7}", "tag", "passed", "total", "rate");
    for (tag, (p, t)) in &per_tag {
        println!(
            "{tag:<32} {p:>7} {t:>7} {:>6.1}%",
            100.0 * *p as f64 / (*t).max(1) as f64
        );
    }
    println!(
        "{:<32} {passed:>7} {total:>7} {:>6.1}%",
        "TOTAL",
        100.0 * passed as f64 / total.max(1) as f64
    );
}

/// An input's `headers`: `[{"KEY": name, "VALUE": base64 bytes or null}, ...]`.
fn input_headers(headers: &Value) -> Result<Vec<weir_log::Header>, String> {
    use base64::Engine as _;
    let Some(list) = headers.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|h| {
            let name = h["KEY"].as_str().ok_or("a header without a KEY")?;
            let value = match &h["VALUE"] {
                Value::Null => None,
                v => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().ok_or("a header VALUE that is not base64 text")?)
                        .map_err(|e| format!("header {name}: {e}"))?,
                ),
            };
            Ok(weir_log::Header {
                name: name.to_string().into(),
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_values_match_columns_ignoring_case_only_where_ksqldb_does() {
        // A column named VAL read back for an expected `val`: ksqlDB's runner matches it.
        assert!(record_value_eq(&json!({"val": 1}), &json!({"VAL": 1.0})));
        // Names that exist exactly compare exactly; values still have to be equal.
        assert!(!record_value_eq(&json!({"val": 1}), &json!({"VAL": 2})));
        assert!(!record_value_eq(
            &json!({"Value": 1, "VALUE": 2}),
            &json!({"Value": 2, "VALUE": 1})
        ));
        // Nested objects (maps) keep their keys' case.
        assert!(!record_value_eq(
            &json!({"M": {"a": 1}}),
            &json!({"M": {"A": 1}})
        ));
        // Two columns that differ only in case: no guessing.
        assert!(!record_value_eq(
            &json!({"v": 1, "x": 2}),
            &json!({"V": 1, "v": 2})
        ));
        // A column the expected value leaves out is expected null; a field that names
        // no column is not read.
        assert!(record_value_eq(
            &json!({"A": 1, "Z": null}),
            &json!({"A": 1, "B": null})
        ));
        assert!(!record_value_eq(&json!({"A": 1}), &json!({"A": 1, "B": 2})));
    }
}
