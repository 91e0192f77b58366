//! What SHOW/LIST, DESCRIBE and EXPLAIN answer: plain descriptions of streams, topics,
//! queries, properties and functions, shaped after ksqlDB's REST entities so the server
//! can serialize them as they are.

use serde::Serialize;

/// A stream or table as `SHOW STREAMS` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    pub name: String,
    /// `STREAM` or `TABLE`.
    #[serde(rename = "type")]
    pub kind: String,
    pub topic: String,
    pub key_format: String,
    pub value_format: String,
    pub is_windowed: bool,
    /// `TUMBLING`/`HOPPING` keys read as `TIME` in ksqlDB's entities; `SESSION`.
    pub window_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replicas: u16,
}

/// A running query, as `SHOW QUERIES` and `DESCRIBE` list it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuerySummary {
    pub id: String,
    pub query_string: String,
    pub sinks: Vec<String>,
    pub sink_kafka_topics: Vec<String>,
    /// `PERSISTENT` or `PUSH`.
    pub query_type: String,
    pub state: String,
}

/// Counters a persistent query keeps while it runs (`DESCRIBE EXTENDED`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryStats {
    /// Source records read.
    pub consumed: u64,
    /// Records written to the sink.
    pub produced: u64,
    /// Records that went to the processing log instead.
    pub errors: u64,
    /// Records a windowed aggregation dropped: they came after their windows closed
    /// (window end plus grace period).
    pub late: u64,
    /// Wall-clock millis of the last batch with input.
    pub last_message_ms: Option<i64>,
    /// Bytes of source records read (keys and values) and of records written.
    pub bytes_consumed: u64,
    pub bytes_produced: u64,
    /// End-to-end latency of output records: from their timestamp (ROWTIME) to when they
    /// were written.
    #[serde(skip)]
    pub latency: LatencyHistogram,
}

/// Upper bounds of [`LatencyHistogram`]'s buckets, in milliseconds (the last is +Inf).
pub const LATENCY_BUCKETS_MS: [f64; 11] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 30000.0,
];

/// A Prometheus-style histogram: `counts[i]` observations at most
/// `LATENCY_BUCKETS_MS[i]` (not cumulative; the last counts the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyHistogram {
    pub counts: [u64; 12],
    pub sum_ms: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, ms: f64) {
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c += o;
        }
        self.sum_ms += other.sum_ms;
        self.count += other.count;
    }
}

/// A persistent query's figures for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMetrics {
    pub id: String,
    pub stats: QueryStats,
    /// Source records not yet read, over all partitions.
    pub lag: u64,
    /// RUNNING, or ERROR while it waits to be retried (or stopped on a function error).
    pub state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldInfo {
    pub name: String,
    /// The ksqlDB type, e.g. `ARRAY<INTEGER>`.
    #[serde(rename = "type")]
    pub ty: String,
    /// `KEY` for key columns, `HEADER` for header columns, absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A `HEADER('name')` column's header name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_key: Option<String>,
    /// The type as ksqlDB's REST API describes it: `{"type", "fields", "memberSchema"}`,
    /// with `parameters` for DECIMAL.
    #[serde(skip)]
    pub schema: serde_json::Value,
}

/// ksqlDB's `SchemaInfo` for a type: nested `memberSchema` for ARRAY and MAP (the
/// value), `fields` for STRUCT, `parameters` with precision and scale for DECIMAL.
pub fn schema_info(ty: &weir_sql::ast::SqlType) -> serde_json::Value {
    use serde_json::json;
    use weir_sql::ast::SqlType;
    let base = |name: &str| json!({"type": name, "fields": null, "memberSchema": null});
    match ty {
        SqlType::Array(t) => {
            json!({"type": "ARRAY", "fields": null, "memberSchema": schema_info(t)})
        }
        SqlType::Map(_, v) => {
            json!({"type": "MAP", "fields": null, "memberSchema": schema_info(v)})
        }
        SqlType::Struct(fields) => json!({
            "type": "STRUCT",
            "fields": fields
                .iter()
                .map(|f| json!({"name": f.name.value, "schema": schema_info(&f.ty)}))
                .collect::<Vec<_>>(),
            "memberSchema": null,
        }),
        SqlType::Decimal { precision, scale } => json!({
            "type": "DECIMAL", "fields": null, "memberSchema": null,
            "parameters": {"precision": precision, "scale": scale},
        }),
        SqlType::Int => base("INTEGER"),
        other => base(&other.to_string()),
    }
}

/// `DESCRIBE name [EXTENDED]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDescription {
    /// Name, type, topic and formats, as SHOW lists them.
    #[serde(flatten)]
    pub source: SourceInfo,
    pub fields: Vec<FieldInfo>,
    pub statement: String,
    pub timestamp: String,
    pub read_queries: Vec<QuerySummary>,
    pub write_queries: Vec<QuerySummary>,
    pub partitions: u32,
    pub replication: u16,
    pub extended: bool,
    /// Totals over the queries that write this source (EXTENDED only).
    pub statistics: Option<QueryStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSummary {
    pub name: String,
    /// `SCALAR` or `AGGREGATE`.
    #[serde(rename = "type")]
    pub kind: String,
    pub category: String,
}

/// One overload of a function: its arguments (name, ksqlDB type), return type, and what
/// it does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSignature {
    pub arguments: Vec<(String, String)>,
    pub return_type: String,
    pub description: String,
}

impl std::fmt::Display for FunctionSignature {
    /// `NAME(a BIGINT, b BIGINT) -> BIGINT` without the name: `(a BIGINT, b BIGINT) -> BIGINT`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let args: Vec<String> = self
            .arguments
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect();
        write!(f, "({}) -> {}", args.join(", "), self.return_type)
    }
}

/// `DESCRIBE FUNCTION name`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDescription {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub syntax: String,
    /// Each overload, where known (plugin functions).
    pub signatures: Vec<FunctionSignature>,
    pub author: String,
    pub version: String,
    pub path: String,
}

/// `EXPLAIN query_id | statement`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryDescription {
    pub id: String,
    pub statement_text: String,
    pub fields: Vec<FieldInfo>,
    pub sources: Vec<String>,
    pub sinks: Vec<String>,
    /// A windowed aggregation's window: TUMBLING, HOPPING or SESSION.
    pub window_type: Option<String>,
    /// The pipeline of batch operators the query runs, one per line.
    pub execution_plan: String,
    pub state: Option<String>,
    pub statistics: Option<QueryStats>,
    /// Why the query stopped, when it did.
    pub errors: Vec<QueryError>,
}

/// An error that stopped a persistent query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryError {
    /// When, in ms since the epoch.
    pub timestamp: i64,
    pub message: String,
}

/// A type registered with `CREATE TYPE`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(skip)]
    pub schema: serde_json::Value,
}

/// The answer to a SHOW/LIST statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Listing {
    Streams(Vec<SourceInfo>),
    Tables(Vec<SourceInfo>),
    Topics(Vec<TopicSummary>),
    Queries(Vec<QuerySummary>),
    Properties(Vec<(String, String)>),
    Functions(Vec<FunctionSummary>),
    Types(Vec<TypeInfo>),
}
