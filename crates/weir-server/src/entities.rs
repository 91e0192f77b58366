//! The engine's outcomes as ksqlDB's REST entities (`KsqlEntity` subtypes, told apart by
//! `@type`), and ksqlDB's error bodies (`KsqlErrorMessage`).
//!
//! Field names and shapes follow `shared/design/ksqldb-rest.md`; clients written for
//! ksqlDB parse them unchanged.

use serde_json::{Value, json};
use weir_engine::Outcome;
use weir_engine::meta::{
    FieldInfo, FunctionDescription, Listing, QueryDescription, QueryStats, QuerySummary,
    SourceDescription,
};
use weir_sql::ast::{QueryTarget, SourceKind, Statement};

/// ksqlDB's error codes (`Errors.java`); the HTTP status is the code / 100.
pub mod code {
    pub const BAD_REQUEST: u32 = 40000;
    pub const BAD_STATEMENT: u32 = 40001;
    pub const QUERY_ENDPOINT: u32 = 40002;
    pub const MAX_PUSH_QUERIES_EXCEEDED: u32 = 40003;
    pub const HTTP2_ONLY: u32 = 40004;
    pub const UNAUTHORIZED: u32 = 40100;
    pub const NOT_FOUND: u32 = 40400;
    pub const SERVER_ERROR: u32 = 50000;
    pub const SERVER_SHUTTING_DOWN: u32 = 50303;
}

pub fn generic_error(error_code: u32, message: &str) -> Value {
    json!({"@type": "generic_error", "error_code": error_code, "message": message})
}

pub fn statement_error(message: &str, statement_text: &str, entities: Vec<Value>) -> Value {
    json!({
        "@type": "statement_error",
        "error_code": code::BAD_STATEMENT,
        "message": message,
        "statementText": statement_text,
        "entities": entities,
    })
}

/// ksqlDB's command id for a statement that changes the catalog:
/// `<type>/<entity>/<action>`, e.g. ``stream/`PAGEVIEWS`/create``.
pub fn command_id(stmt: &Statement) -> Option<String> {
    let kind = |k: &SourceKind| match k {
        SourceKind::Stream => "stream",
        SourceKind::Table => "table",
    };
    Some(match stmt {
        Statement::CreateSource(c) => format!("{}/`{}`/create", kind(&c.kind), c.name.value),
        Statement::CreateAsSelect(c) => format!("{}/`{}`/create", kind(&c.kind), c.name.value),
        Statement::InsertInto { target, .. } => format!("stream/`{}`/create", target.value),
        Statement::DropSource { kind: k, name, .. } => {
            format!("{}/`{}`/drop", kind(k), name.value)
        }
        Statement::Terminate(QueryTarget::All) => "terminate/ALL/execute".to_string(),
        Statement::Terminate(QueryTarget::Query(id)) => format!("terminate/{}/execute", id.value),
        Statement::Pause(QueryTarget::All) => "pause/ALL/execute".to_string(),
        Statement::Pause(QueryTarget::Query(id)) => format!("pause/{}/execute", id.value),
        Statement::Resume(QueryTarget::All) => "resume/ALL/execute".to_string(),
        Statement::Resume(QueryTarget::Query(id)) => format!("resume/{}/execute", id.value),
        Statement::CreateType { name, .. } => format!("type/`{}`/create", name.value),
        Statement::DropType { name, .. } => format!("type/`{}`/drop", name.value),
        _ => return None,
    })
}

/// What `/status/<commandId>` answers for a command that ran.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandStatus {
    pub status: &'static str,
    pub message: String,
    pub query_id: Option<String>,
}

impl CommandStatus {
    pub fn to_json(&self) -> Value {
        json!({"status": self.status, "message": self.message, "queryId": self.query_id})
    }
}

/// The entity for one statement's outcome, or `None` for statements ksqlDB answers with no
/// entity (INSERT VALUES, SET, UNSET). `dropped_topic` is the topic of a source a DROP
/// removed (looked up before it ran). Also returns the command's status, for `/status`.
pub fn entity(
    stmt: &Statement,
    text: &str,
    outcome: Outcome,
    sequence: u64,
    dropped_topic: Option<&str>,
) -> Option<(Value, Option<(String, CommandStatus)>)> {
    let with_text = |mut v: Value| {
        v["statementText"] = json!(text);
        v["warnings"] = json!([]);
        v
    };
    let status = |message: String, query_id: Option<String>| {
        let id = command_id(stmt).unwrap_or_else(|| "statement//execute".into());
        let status = CommandStatus {
            status: "SUCCESS",
            message,
            query_id,
        };
        let v = with_text(json!({
            "@type": "currentStatus",
            "commandId": id,
            "commandStatus": status.to_json(),
            "commandSequenceNumber": sequence,
        }));
        Some((v, Some((id, status))))
    };
    match outcome {
        Outcome::Created { kind, .. } => status(format!("{} created", capitalized(kind)), None),
        Outcome::QueryStarted { query_id, .. } => {
            status(format!("Created query with ID {query_id}"), Some(query_id))
        }
        Outcome::Dropped { name } => status(
            match dropped_topic {
                Some(t) => format!("Source `{name}` (topic: {t}) was dropped."),
                None => format!("Source `{name}` was dropped."),
            },
            None,
        ),
        Outcome::Terminated { .. } => status("Query terminated.".into(), None),
        Outcome::Asserted { what, name, exists } => {
            let v = match what {
                "topic" => json!({"@type": "assert_topic", "topicName": name, "exists": exists}),
                "schema" => {
                    json!({"@type": "assert_schema", "subject": name, "id": null, "exists": exists})
                }
                _ => {
                    json!({"@type": "assert_source", "sourceName": name, "sourceType": what.to_uppercase(), "exists": exists})
                }
            };
            Some((with_text(v), None))
        }
        Outcome::Paused { paused, .. } => status(
            if paused {
                "Query paused.".into()
            } else {
                "Query resumed.".into()
            },
            None,
        ),
        Outcome::TypeRegistered { name } => status(format!("Registered custom type {name}"), None),
        Outcome::TypeDropped { name } => status(format!("Dropped type '{name}'"), None),
        Outcome::Inserted | Outcome::PropertySet { .. } => None,
        Outcome::Listing(listing) => Some((with_text(listing_entity(listing)), None)),
        Outcome::Described(mut sources) => {
            let v = if matches!(stmt, Statement::Describe { target, .. } if matches!(target, weir_sql::ast::DescribeTarget::Source(_)))
                && sources.len() == 1
            {
                json!({"@type": "sourceDescription", "sourceDescription": source_description(sources.remove(0))})
            } else {
                json!({
                    "@type": "source_descriptions",
                    "sourceDescriptions": sources.into_iter().map(source_description).collect::<Vec<_>>(),
                })
            };
            Some((with_text(v), None))
        }
        Outcome::FunctionDescribed(f) => Some((with_text(describe_function(f)), None)),
        Outcome::Explained(q) => Some((
            with_text(
                json!({"@type": "queryDescription", "queryDescription": query_description(q)}),
            ),
            None,
        )),
        Outcome::QueriesExplained(qs) => Some((
            with_text(json!({
                "@type": "query_descriptions",
                "queryDescriptions": qs.into_iter().map(query_description).collect::<Vec<_>>(),
            })),
            None,
        )),
        // Push queries go to /query and /query-stream, never here.
        Outcome::Push(_) => None,
    }
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(|c| c.to_lowercase()))
            .collect(),
        None => String::new(),
    }
}

fn running_query(q: QuerySummary) -> Value {
    json!({
        "queryString": q.query_string,
        "sinks": q.sinks,
        "sinkKafkaTopics": q.sink_kafka_topics,
        "id": q.id,
        "statusCount": {q.state.clone(): 1},
        "queryType": q.query_type,
        "state": q.state,
    })
}

fn field(f: FieldInfo) -> Value {
    let mut v = json!({"name": f.name, "schema": f.schema});
    if let Some(k) = f.key {
        v["type"] = json!(k);
    }
    if let Some(k) = f.header_key {
        v["headerKey"] = json!(k);
    }
    v
}

fn statistics_text(stats: Option<QueryStats>) -> (String, String) {
    match stats {
        None => (String::new(), String::new()),
        Some(s) => (
            format!(
                "messages-consumed-total: {} messages-produced-total: {}{}",
                s.consumed,
                s.produced,
                s.last_message_ms
                    .map(|t| format!(" last-message: {t}"))
                    .unwrap_or_default()
            ),
            if s.late > 0 {
                format!(
                    "failed-messages-total: {} late-records-dropped-total: {}",
                    s.errors, s.late
                )
            } else {
                format!("failed-messages-total: {}", s.errors)
            },
        ),
    }
}

fn source_description(s: SourceDescription) -> Value {
    let (statistics, error_stats) = statistics_text(s.statistics);
    json!({
        "name": s.source.name,
        "windowType": s.source.window_type,
        "readQueries": s.read_queries.into_iter().map(running_query).collect::<Vec<_>>(),
        "writeQueries": s.write_queries.into_iter().map(running_query).collect::<Vec<_>>(),
        "fields": s.fields.into_iter().map(field).collect::<Vec<_>>(),
        "type": s.source.kind,
        "timestamp": s.timestamp,
        "statistics": statistics,
        "errorStats": error_stats,
        "extended": s.extended,
        "keyFormat": s.source.key_format,
        "valueFormat": s.source.value_format,
        "topic": s.source.topic,
        "partitions": s.partitions,
        "replication": s.replication,
        "statement": s.statement,
        "queryOffsetSummaries": [],
        "sourceConstraints": [],
        "clusterStatistics": [],
        "clusterErrorStats": [],
    })
}

fn query_description(q: QueryDescription) -> Value {
    let (statistics, error_stats) = statistics_text(q.statistics);
    json!({
        "id": q.id,
        "statementText": q.statement_text,
        "windowType": q.window_type,
        "fields": q.fields.into_iter().map(field).collect::<Vec<_>>(),
        "sources": q.sources,
        "sinks": q.sinks,
        "topology": q.execution_plan,
        "executionPlan": q.execution_plan,
        "overriddenProperties": {},
        "ksqlHostQueryStatus": {},
        "queryType": "PERSISTENT",
        "queryErrors": q.errors.iter().map(|e| json!({
            "timestamp": e.timestamp, "errorMessage": e.message, "type": "USER",
        })).collect::<Vec<_>>(),
        "tasksMetadata": [],
        "state": q.state,
        "statistics": statistics,
        "errorStats": error_stats,
    })
}

fn describe_function(f: FunctionDescription) -> Value {
    // Each overload as ksqlDB lists it; built-ins without one give their syntax.
    let functions: Vec<Value> = if f.signatures.is_empty() {
        vec![json!({"arguments": [], "returnType": "", "description": f.syntax})]
    } else {
        f.signatures
            .iter()
            .map(|s| {
                json!({
                    "arguments": s.arguments.iter().map(|(n, t)| json!({
                        "name": n, "type": t, "description": "", "isVariadic": false,
                    })).collect::<Vec<_>>(),
                    "returnType": s.return_type,
                    "description": s.description,
                    "argumentTypes": s.arguments.iter().map(|(_, t)| t).collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    json!({
        "@type": "describe_function",
        "name": f.name,
        "description": f.description,
        "author": f.author,
        "version": f.version,
        "path": f.path,
        "type": f.kind,
        "functions": functions,
    })
}

fn listing_entity(listing: Listing) -> Value {
    match listing {
        Listing::Streams(s) => json!({"@type": "streams", "streams": s}),
        Listing::Tables(t) => json!({"@type": "tables", "tables": t}),
        Listing::Topics(topics) => json!({
            "@type": "kafka_topics",
            "topics": topics
                .into_iter()
                .map(|t| json!({"name": t.name, "replicaInfo": vec![t.replicas; t.partitions as usize]}))
                .collect::<Vec<_>>(),
        }),
        Listing::Queries(q) => json!({
            "@type": "queries",
            "queries": q.into_iter().map(running_query).collect::<Vec<_>>(),
        }),
        Listing::Properties(p) => json!({
            "@type": "properties",
            "properties": p
                .into_iter()
                .map(|(name, value)| json!({"name": name, "scope": "KSQL", "value": value}))
                .collect::<Vec<_>>(),
            "overwrittenProperties": [],
            "defaultProperties": [],
        }),
        Listing::Functions(f) => json!({"@type": "function_names", "functions": f}),
        Listing::Types(types) => json!({
            "@type": "type_list",
            "types": types
                .into_iter()
                .map(|t| (t.name, t.schema))
                .collect::<serde_json::Map<String, Value>>(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> Statement {
        weir_sql::parse_statement(sql).unwrap()
    }

    #[test]
    fn command_ids_name_the_entity_as_ksqldb_does() {
        assert_eq!(
            command_id(&stmt(
                "CREATE STREAM pageviews (id INT) WITH (kafka_topic='p', value_format='JSON')"
            ))
            .as_deref(),
            Some("stream/`PAGEVIEWS`/create")
        );
        assert_eq!(
            command_id(&stmt("DROP TABLE t DELETE TOPIC")).as_deref(),
            Some("table/`T`/drop")
        );
        assert_eq!(command_id(&stmt("SHOW STREAMS")), None);
    }

    #[test]
    fn a_created_stream_is_a_current_status_with_success() {
        let s = stmt("CREATE STREAM s (id INT) WITH (kafka_topic='s', value_format='JSON')");
        let (v, status) = entity(
            &s,
            "CREATE STREAM s (id INT) WITH (kafka_topic='s', value_format='JSON');",
            Outcome::Created {
                kind: "stream",
                name: "S".into(),
            },
            3,
            None,
        )
        .unwrap();
        assert_eq!(v["@type"], "currentStatus");
        assert_eq!(v["commandStatus"]["status"], "SUCCESS");
        assert_eq!(v["commandStatus"]["message"], "Stream created");
        assert_eq!(v["commandSequenceNumber"], 3);
        assert_eq!(status.unwrap().0, "stream/`S`/create");
    }
}
