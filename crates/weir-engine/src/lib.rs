//! `weir-engine` runs statements: it keeps the catalog, creates topics on demand, and plans
//! persistent queries into pipelines that read a source topic in batches, decode them to
//! Arrow, filter and project with DataFusion physical expressions, and write the sink
//! topic. Parsing belongs to `weir-sql`, storage to `weir-log`, bytes to `weir-format`.
//!
//! What runs: streams and tables over topics, `CREATE STREAM/TABLE ... AS SELECT` and
//! `INSERT INTO ... SELECT` (WHERE, projections, GROUP BY with HAVING, TUMBLING/HOPPING/
//! SESSION windows, stream-stream, stream-table, table-table and foreign-key joins),
//! `INSERT INTO ... VALUES`, push and pull queries, types, properties ([`settings`]), DROP
//! and TERMINATE; a durable engine checkpoints offsets with operator state. Queries
//! advance when [`Engine::run_once`] is called: by the [`Runtime`]'s worker in a server,
//! by `weir run`'s loop headless.

mod aggregate;
mod builtins;
pub mod catalog;
pub mod cluster;
mod delta;
mod error;
pub mod functions;
mod helpers;
/// The session property that says whether a single value column is wrapped in an
/// object (JSON) by default.
pub const WRAP_SINGLE_VALUES_PROPERTY: &str = "ksql.persistence.wrap.single.values";

/// The session property that prefixes the default topic names of CREATE ... AS SELECT.
pub const OUTPUT_TOPIC_PREFIX: &str = "ksql.output.topic.name.prefix";

pub mod insert;
mod inspect;
mod javatime;
mod join;
pub mod ksql_functions;
mod lambda;
pub mod logical;
pub mod meta;
mod names;
mod pipeline;
mod plan;
mod pull;
pub mod push;
mod replay;
mod rowcodec;
mod rowfns;
pub mod runtime;
pub mod settings;
mod tracked;
mod trim;
mod types;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema};
use weir_format::registry::{LocalRegistry, RemoteRegistry, SchemaRegistry};
use weir_format::{Column, Format, FormatSpec, Layout};
use weir_log::{Header, Log, Record, StoredRecord, TopicConfig, partition_for_key};
use weir_sql::ast::{
    ColumnConstraint, CreateAsSelect, CreateSource, Literal, Properties, QueryTarget, SourceKind,
    Statement,
};

pub use catalog::{Catalog, KeyWindow, Source};
pub use delta::parse_checkpoint;
pub use error::{EngineError, Result};
pub use functions::Functions;
pub use plan::{SelectPlan, plan_select};
pub use pull::PullJob;
pub use push::{PushEvent, PushHandle};
pub use runtime::Runtime;

/// Records read from a partition per step: large enough to amortize per-batch work.
/// Records a query reads per partition per step at first; under load the size doubles up
/// to [`MAX_BATCH_RECORDS`] (fewer, larger batches), and shrinks back when input thins.
pub const BATCH_RECORDS: usize = 4096;
const MIN_BATCH_RECORDS: usize = 256;
const MAX_BATCH_RECORDS: usize = 65_536;
/// How long one step of one partition should take at most: batches shrink when steps
/// take longer, so a worker gets back to its other queries and the push queries soon.
const STEP_TARGET: Duration = Duration::from_millis(20);
/// A query over several busy partitions reads (and, without state, writes) them for about
/// this many [`STEP_TARGET`]s a step (see `shared_rounds`).
const SHARED_STEP_ROUNDS: u32 = 4;

/// The topic that holds the processing log: records that could not be processed, with why.
pub const PROCESSING_LOG_TOPIC: &str = "weir_processing_log";
/// The stream over it.
pub const PROCESSING_LOG_STREAM: &str = "KSQL_PROCESSING_LOG";

/// A source record that could not be processed, and why: one entry of the processing
/// log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    pub partition: u32,
    pub offset: u64,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(partition: u32, offset: u64, message: impl Into<String>) -> Self {
        Self {
            partition,
            offset,
            message: message.into(),
        }
    }
}

/// Rows for a table or stream, or (`tombstones`) deletes of their keys: what a step
/// hands on, in runs.
#[derive(Debug, Clone)]
pub(crate) struct ChangeBatch {
    pub tombstones: bool,
    pub batch: RecordBatch,
}

/// The command log: every accepted statement that changes the catalog or starts or stops
/// a query, replayed by [`Engine::open`] so a restarted server has them all again.
pub const COMMAND_TOPIC: &str = "_weir_commands";

/// Where persistent queries checkpoint how far they have read.
pub const OFFSETS_TOPIC: &str = "_weir_offsets";

/// The service id servers have unless `ksql.service.id` says otherwise (ksqlDB's default).
pub const DEFAULT_SERVICE_ID: &str = "default_";

/// Whether `id` may be a `ksql.service.id`: letters, digits, '.', '_' and '-' (it names
/// topics and consumer groups); why not otherwise.
pub fn check_service_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err("use letters, digits, '.', '_' and '-'".into())
    }
}

/// The internal topics of the servers with service id `id`: [`COMMAND_TOPIC`] and
/// [`OFFSETS_TOPIC`] for the default id, `_weir_<id>_commands` and `_weir_<id>_offsets`
/// otherwise — so clusters sharing one Kafka keep apart catalogs and checkpoints.
pub fn internal_topics(id: &str) -> (String, String) {
    if id == DEFAULT_SERVICE_ID {
        (COMMAND_TOPIC.into(), OFFSETS_TOPIC.into())
    } else {
        (
            format!("_weir_{id}_commands"),
            format!("_weir_{id}_offsets"),
        )
    }
}

/// Whether `topic` is one of Weir's internal topics (any service's command log,
/// checkpoints or members: names starting `_weir_`). Sources may be declared over those
/// that exist, read-only; nothing else may write to them, create or delete them.
pub fn is_internal_topic(topic: &str) -> bool {
    topic.starts_with("_weir_")
}

/// Why `topic` may not be written or created by a statement.
fn reserved(topic: &str) -> EngineError {
    EngineError::Invalid(format!(
        "Topic '{topic}' is reserved for Weir's internal use (names starting '_weir_'): a source may read it, nothing may write to, create or delete it."
    ))
}

/// The consumer group whose committed offsets show query `query`'s progress on Kafka,
/// named as ksqlDB names its queries' groups: `_confluent-ksql-<service id>query_<id>`.
pub fn consumer_group(service_id: &str, query: &str) -> String {
    format!("_confluent-ksql-{service_id}query_{query}")
}

/// Header on the output records of a durable engine: `query:partition:offset` of the
/// source record each came from, or, on a log whose appends are whole or absent after a
/// crash ([`Log::atomic_appends`]), only on each append's last record, naming the highest
/// source offset of the append. Recovery reads it to write nothing twice.
pub const SOURCE_HEADER: &str = "weir.src";

/// How often, in milliseconds, a durable persistent query started afterwards checkpoints
/// while it has records to read (at once when it has caught up). The outputs of records
/// read after a checkpoint carry their source offsets (see [`SOURCE_HEADER`]), so a
/// restart that reads them again writes nothing twice, whatever the interval: it only
/// bounds how much is read again. 0: after every batch.
pub const CHECKPOINT_INTERVAL_PROPERTY: &str = "weir.checkpoint.interval.ms";
/// The same, under ksqlDB's streams name (used when Weir's is not set).
pub const COMMIT_INTERVAL_PROPERTY: &str = "commit.interval.ms";
const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(1000);

/// Set to `true` (SET, or a request's properties), a GROUP BY query started afterwards
/// writes each group's last change per batch instead of one change per input record.
pub const COALESCE_PROPERTY: &str = "weir.aggregate.coalesce";

/// The window bounds of windowed results; with the pseudo-columns, names ksqlDB reserves.
pub const WINDOW_BOUNDS: [&str; 2] = ["WINDOWSTART", "WINDOWEND"];

fn is_reserved_column(name: &str) -> bool {
    weir_format::PSEUDO_COLUMNS.contains(&name) || WINDOW_BOUNDS.contains(&name)
}

fn contains_map(ty: &weir_sql::ast::SqlType) -> bool {
    use weir_sql::ast::SqlType;
    match ty {
        SqlType::Map(..) => true,
        SqlType::Array(t) => contains_map(t),
        SqlType::Struct(fields) => fields.iter().any(|f| contains_map(&f.ty)),
        _ => false,
    }
}

fn json_map_with_non_string_keys(ty: &weir_sql::ast::SqlType) -> bool {
    use weir_sql::ast::SqlType;
    match ty {
        SqlType::Map(k, v) => **k != SqlType::String || json_map_with_non_string_keys(v),
        SqlType::Array(t) => json_map_with_non_string_keys(t),
        SqlType::Struct(fields) => fields.iter().any(|f| json_map_with_non_string_keys(&f.ty)),
        _ => false,
    }
}

/// ksqlDB's checks of a layout against its WITH properties, beyond what the format
/// itself refuses.
fn validate_layout(layout: &Layout, props: &Properties) -> Result<()> {
    layout.validate()?;
    if let Some(wrap) = props.get("WRAP_SINGLE_VALUE") {
        let on = !wrap.as_text().eq_ignore_ascii_case("false");
        // DELIMITED and KAFKA values are never wrapped; PROTOBUF's always are.
        let only = match layout.value_format.format {
            Format::Delimited | Format::Kafka => Some(false),
            Format::Protobuf | Format::ProtobufNoSr => Some(true),
            _ => None,
        };
        if only.is_some_and(|only| only != on) {
            return Err(EngineError::Invalid(format!(
                "Format '{}' does not support 'WRAP_SINGLE_VALUE' set to '{on}'.",
                layout.value_format.format.name()
            )));
        }
        if layout.value_columns.len() != 1 {
            return Err(EngineError::Invalid(
                "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas".into(),
            ));
        }
    }
    if layout.key_columns.iter().any(|c| contains_map(&c.ty)) {
        return Err(EngineError::Invalid(
            "Map keys, including types that contain maps, are not supported as they may lead to unexpected behavior due to inconsistent serialization.".into(),
        ));
    }
    for (spec, cols) in [
        (&layout.key_format, &layout.key_columns),
        (&layout.value_format, &layout.value_columns),
    ] {
        if matches!(spec.format, Format::Json | Format::JsonSr)
            && cols.iter().any(|c| json_map_with_non_string_keys(&c.ty))
        {
            return Err(EngineError::Invalid(
                "JSON only supports MAP types with STRING keys".into(),
            ));
        }
    }
    Ok(())
}

/// What a statement did.
#[derive(Debug)]
pub enum Outcome {
    Created {
        kind: &'static str,
        name: String,
    },
    QueryStarted {
        query_id: String,
        sink: String,
    },
    Inserted,
    Dropped {
        name: String,
    },
    Terminated {
        query_ids: Vec<String>,
    },
    /// An ASSERT held: `what` (`topic`, `schema`, `stream`, `table`) `name` exists, or
    /// (`exists` false) does not.
    Asserted {
        what: &'static str,
        name: String,
        exists: bool,
    },
    /// PAUSE (`paused`) or RESUME of these queries.
    Paused {
        query_ids: Vec<String>,
        paused: bool,
    },
    PropertySet {
        name: String,
        value: Option<String>,
    },
    TypeRegistered {
        name: String,
    },
    TypeDropped {
        name: String,
    },
    /// SHOW/LIST.
    Listing(meta::Listing),
    /// DESCRIBE: one source, or every stream/table.
    Described(Vec<meta::SourceDescription>),
    FunctionDescribed(meta::FunctionDescription),
    Explained(meta::QueryDescription),
    /// SHOW QUERIES EXTENDED: every persistent query explained.
    QueriesExplained(Vec<meta::QueryDescription>),
    /// A push query or PRINT: rows arrive on the handle until it ends or is dropped.
    Push(push::PushHandle),
}

/// What a persistent query is planned into: joins (if any), the stateless plan, GROUP BY
/// (if any); [`Engine::start_query`] assembles them into its [`pipeline::Pipeline`].
struct Parts<'q> {
    /// The query as written (for its logical plan).
    query: &'q weir_sql::ast::Query,
    plan: SelectPlan,
    aggregate: Option<aggregate::Aggregator>,
    join: Option<join::Joiner>,
}

/// What a query reads as one relation ([`Engine::relation`]).
pub(crate) struct Relation {
    /// The source, or the relation the joins make.
    pub source: Source,
    /// The query over it: as written, or with no joins and its column references
    /// rewritten to the relation's.
    pub query: weir_sql::ast::Query,
    pub join: Option<join::Joiner>,
    /// The query as written (what errors name).
    pub written: weir_sql::ast::Query,
}

impl Relation {
    /// What the written query's column references may resolve to, and the relation's
    /// internal names for them.
    fn scope<'a>(&'a self, functions: &'a functions::Functions) -> names::Scope<'a> {
        match &self.join {
            Some(j) => names::Scope {
                inputs: j
                    .inputs
                    .iter()
                    .map(|i| (i.alias.as_str(), &i.source))
                    .collect(),
                functions,
                // Quoted first: a reference the join rewrote reads `ALIAS_COLUMN`.
                renames: ["`", ""]
                    .into_iter()
                    .flat_map(|q| {
                        j.inputs.iter().flat_map(move |i| {
                            i.columns().map(move |c| {
                                (
                                    format!("{q}{}_{}{q}", i.alias, c.name),
                                    format!("{}.{}", i.alias, c.name),
                                )
                            })
                        })
                    })
                    .collect(),
            },
            None => names::Scope {
                inputs: vec![(
                    plan::source_alias(&self.written, &self.source),
                    &self.source,
                )],
                functions,
                renames: Vec::new(),
            },
        }
    }
}

/// A persistent query: a plan and how far it has read each source partition.
#[derive(Debug)]
pub struct PersistentQuery {
    pub id: String,
    pub statement: String,
    pub sink: String,
    /// The stateless plan (its first operator runs a copy): the query's source and
    /// output columns.
    plan: SelectPlan,
    source_topic: String,
    /// Its input (one topic, or joins) and operators.
    pipeline: pipeline::Pipeline,
    sink_topic: String,
    sink_layout: Layout,
    /// The sink's keys carry windows (a windowed aggregation writes it).
    sink_window: Option<KeyWindow>,
    sink_partitions: u32,
    /// After recovery: per (source partition, sink partition), the highest source offset
    /// whose output is already in the sink. Re-read records up to it write nothing. Kept
    /// (and carried in checkpoints as `ahead`) until the source offsets pass it.
    already_written: BTreeMap<(u32, u32), u64>,
    /// The sink column whose value is each output record's timestamp, likewise.
    sink_timestamp: Option<(String, Option<String>)>,
    stats: meta::QueryStats,
    /// Why the query stopped; it consumes nothing more until restarted.
    pub error: Option<meta::QueryError>,
    /// The session properties it was started with (a reload plans it with them again).
    properties: BTreeMap<String, String>,
    /// After a failure: when it is reloaded from its last checkpoint and run again.
    retry: Option<Retry>,
    /// Terminated: a worker that still holds it leaves it alone.
    terminated: bool,
    /// PAUSEd: it reads nothing until RESUMEd (its offsets and state stay as they are).
    paused: bool,
    /// What others read of it (see [`QueryView`]).
    view: Arc<Mutex<QueryView>>,
    /// Where it checkpoints (and a join records its steps).
    offsets_topic: Arc<str>,
    /// The consumer group its checkpointed offsets are committed to ([`consumer_group`]),
    /// and whether committing failed already (said once).
    group: String,
    group_failed: bool,
    /// Checkpoints since the last full one (later checkpoints carry what changed since
    /// the one before: the entries the operators report as set or removed; see
    /// `delta.rs`). At [`delta::FULL_EVERY`] (or before any), the next is full.
    since_full: usize,
    /// The size of the last full checkpoint, and of the deltas written since.
    full_bytes: usize,
    delta_bytes: usize,
    /// The last checkpoint's text buffer, reused by the next.
    checkpoint_text: Vec<u8>,
    /// Where its last self-contained checkpoint (a full one, or any of a query without
    /// state) begins in the offsets topic: recovery needs nothing of it from before.
    anchor: Option<u64>,
    /// How often it checkpoints while it has records to read ([`COMMIT_INTERVAL_PROPERTY`]);
    /// once caught up, at once.
    commit_every: Duration,
    /// When it last checkpointed, and whether it has consumed records since.
    last_checkpoint: Instant,
    unsaved: bool,
    /// On servers sharing work ([`cluster`]): the units it holds (a stateless query's
    /// source partitions, or unit 0 for all of a query with state), each with the epoch
    /// it was claimed at; `None` on a server alone (it runs every partition).
    owned: Option<BTreeMap<cluster::Unit, u64>>,
    /// It claimed units it must be restored for before it runs again (a reload).
    handoff: bool,
    /// On servers sharing work: this server's name, which its checkpoints carry (each
    /// server's checkpoints of a query are a chain of their own: a full state, then what
    /// changed).
    member: Option<String>,
}

/// A persistent query as the engine and its workers share it.
pub(crate) type SharedQuery = Arc<Mutex<PersistentQuery>>;

/// A query in the engine: itself, and its view (read without the query's lock).
struct Entry {
    query: SharedQuery,
    view: Arc<Mutex<QueryView>>,
}

/// What statements (SHOW QUERIES, DESCRIBE, EXPLAIN), `/metrics` and tools read of a
/// persistent query, without taking its lock, so they never wait on its work: what is
/// fixed when it starts, and its progress as its last step left it
/// ([`PersistentQuery::publish`]).
#[derive(Debug, Clone)]
pub struct QueryView {
    pub id: String,
    pub statement: String,
    pub sink: String,
    pub sink_topic: String,
    /// The source it reads, as planned (a join: the relation).
    pub source: String,
    pub source_topic: String,
    pub sink_layout: Layout,
    /// The sources it reads, by name.
    pub sources: Vec<String>,
    pub window_type: Option<&'static str>,
    /// EXPLAIN's text.
    pub execution_plan: String,
    /// Its operators, as EXPLAIN shows each, and the rows into and out of each since it
    /// started.
    pub stages: Vec<String>,
    pub stage_rows: Vec<(u64, u64)>,
    pub stats: meta::QueryStats,
    /// Records a windowed aggregation dropped as late.
    pub late: u64,
    /// Why it is in ERROR.
    pub error: Option<meta::QueryError>,
    /// PAUSEd.
    pub paused: bool,
    /// The next offset it reads, per source partition.
    pub offsets: Vec<u64>,
    /// Where its last self-contained checkpoint begins in the offsets topic (see
    /// [`Engine::trim_checkpoints`]).
    pub anchor: Option<u64>,
}

impl QueryView {
    /// RUNNING, PAUSED, or ERROR (failed and waiting to be retried, or stopped by a
    /// function error).
    pub fn state(&self) -> &'static str {
        if self.error.is_some() {
            "ERROR"
        } else if self.paused {
            "PAUSED"
        } else {
            "RUNNING"
        }
    }
}

fn view_of(v: &Mutex<QueryView>) -> QueryView {
    v.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Query `q`, locked (a panic while it was held left it to be reloaded, not unusable).
pub(crate) fn lock(q: &SharedQuery) -> MutexGuard<'_, PersistentQuery> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// A push query, stepped by the workers under its own lock, never the engine's.
pub(crate) type SharedPush = Arc<Mutex<push::PushQuery>>;

/// A push query in the engine: its handle, and its statement (SHOW QUERIES lists it
/// without waiting on its step).
pub(crate) struct PushEntry {
    pub query: SharedPush,
    pub statement: String,
    /// The query's [`push::PushQuery::ended`].
    pub ended: Arc<std::sync::atomic::AtomicBool>,
}

impl PushEntry {
    /// Over (its client told, or gone), though perhaps not dropped yet.
    pub fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What stepping the persistent and push queries needs from the engine
/// ([`Engine::work`]): taken under its lock, used without it (the runtime's workers step
/// queries in parallel).
pub(crate) struct Work {
    pub log: Arc<dyn Log>,
    pub durable: bool,
    /// A failed query's first wait before it is reloaded, and the longest.
    pub backoff: (Duration, Duration),
    /// Threads a query's step may use for its partitions.
    pub parallelism: usize,
    /// This server's membership, where servers share the work.
    pub cluster: Option<Arc<cluster::Cluster>>,
    pub queries: Vec<(String, SharedQuery)>,
    pub push: Vec<(String, SharedPush)>,
}

impl Work {
    /// Advances every push query no other worker holds by one batch per partition: the
    /// records read, and the queries that are done (their client gone, too slow, or
    /// their LIMIT reached), for the engine to drop ([`Engine::close_push_query`]).
    pub(crate) fn run_push_queries(&self) -> Result<(u64, Vec<String>)> {
        let (mut consumed, mut finished) = (0, Vec::new());
        for (id, q) in &self.push {
            let mut q = match q.try_lock() {
                Ok(q) => q,
                Err(std::sync::TryLockError::Poisoned(q)) => q.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => continue,
            };
            let (n, next) = q.step(self.log.as_ref(), BATCH_RECORDS)?;
            consumed += n;
            if next == push::Next::Finished {
                q.end();
                finished.push(id.clone());
            }
        }
        Ok((consumed, finished))
    }

    /// One step of query `q`: a batch per source partition (see [`PersistentQuery::step`]).
    /// On a durable engine an error or a panic fails `q` alone (ERROR, retried after the
    /// backoff); a plain engine returns the error. Nothing for a query that waits to be
    /// reloaded or was terminated.
    pub(crate) fn step(&self, q: &mut PersistentQuery) -> Result<u64> {
        if q.terminated || !q.runnable() {
            return Ok(0);
        }
        let stepped = self.step_unpublished(q);
        q.publish();
        stepped
    }

    /// Servers sharing work: what `q` holds follows the division (see
    /// [`PersistentQuery::rebalance`]); before its reload is looked at and it is stepped.
    pub(crate) fn rebalance(&self, q: &mut PersistentQuery) {
        let Some(c) = &self.cluster else { return };
        if q.terminated || !q.runnable() {
            return;
        }
        if let Err(e) = q.rebalance(self.log.as_ref(), c) {
            q.failed(
                format!("dividing its work with other servers failed: {e}"),
                self.backoff,
            );
        }
    }

    fn step_unpublished(&self, q: &mut PersistentQuery) -> Result<u64> {
        if !self.durable {
            return q.step(self.log.as_ref(), false, self.parallelism);
        }
        let log = self.log.as_ref();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.step(log, true, self.parallelism)
        })) {
            Ok(Ok(n)) => {
                if n > 0 && q.retry.is_some_and(|r| r.reloaded) {
                    q.retry = None;
                }
                Ok(n)
            }
            Ok(Err(e)) => {
                q.failed(e.to_string(), self.backoff);
                Ok(0)
            }
            Err(panic) => {
                let what = error::panic_message(panic.as_ref());
                q.failed(format!("panicked: {what}"), self.backoff);
                Ok(0)
            }
        }
    }
}

/// The shards a GROUP BY's state folds in on `threads` threads: half of them (at least
/// one), for while the state folds, the partitions' next steps are read and decoded on
/// the others (see `PersistentQuery::shared_steps`). On two cores one shard: measured,
/// the fold of one shard beside the reading beats two shards' split and merge
/// (docs/performance.md, "Reading ahead while the state folds").
pub(crate) fn shards_for(threads: usize) -> usize {
    (threads / 2).max(1)
}

/// A failed query's next attempt.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    /// The wait before this attempt; the next failure waits twice as long (up to the
    /// maximum), a step that reads records resets it.
    backoff: Duration,
    /// Whether it has been reloaded and runs again (its error stays shown until a step
    /// succeeds).
    reloaded: bool,
}

impl PersistentQuery {
    /// Reads one batch per source partition of a query (a join: from every partition of
    /// every source at once) and writes what it produces; a durable engine checkpoints
    /// after each. Output first, then the checkpoint: a crash between them re-reads the
    /// batch, and recovery keeps its output from being written twice.
    fn step(&mut self, log: &dyn Log, durable: bool, parallelism: usize) -> Result<u64> {
        let partitions = self.pipeline.partitions();
        let started = Instant::now();
        // Over several busy partitions: their steps computed at once (see
        // [`Self::shared_steps`]), then counted (and, with state, written) in order.
        let computed = match self.error {
            None if parallelism > 1 => self.shared_steps(log, durable, parallelism),
            _ => None,
        };
        if computed.is_none() {
            // Steps read ahead are for steps computed at once.
            self.pipeline.take_ahead();
        }
        // Steps computed at once with state: the state holds them all, so a checkpoint
        // waits until every one is written and moved past.
        let whole = computed.is_some() && !self.pipeline.stateless();
        let mut consumed = 0;
        // The first error of a step computed at once with others: returned once the
        // others' steps whose output is written already are counted and moved past.
        let mut failed = None;
        let mut failed_partitions = std::collections::BTreeSet::new();
        let mut steps = computed.map(Vec::into_iter);
        let owned: Vec<u32> = (0..partitions).filter(|p| self.owns(*p)).collect();
        let mut serial = owned.into_iter();
        loop {
            let n = match steps.as_mut() {
                Some(steps) => match steps.next() {
                    None => break,
                    // After a failure (or a stop), only the steps written already, of
                    // partitions that did not fail.
                    Some((p, step, _))
                        if failed_partitions.contains(&p)
                            || ((failed.is_some() || self.error.is_some())
                                && !matches!(&step, Ok(s) if s.written.is_some())) =>
                    {
                        0
                    }
                    // Paced by its own computing time plus its writing.
                    Some((p, step, took)) => {
                        let began = Instant::now().checked_sub(took).unwrap_or(started);
                        match self.commit_step(log, durable, p, step, began) {
                            Ok(n) => n,
                            Err(e) => {
                                failed.get_or_insert(e);
                                failed_partitions.insert(p);
                                0
                            }
                        }
                    }
                },
                None if self.error.is_some() => break,
                None => match serial.next() {
                    Some(partition) => self.step_partition(log, durable, partition, parallelism)?,
                    None => break,
                },
            };
            if n > 0 && durable {
                // Tests of recovery: a step's output is written, its checkpoint not
                // (`WEIR_FAILPOINT=crash_before_checkpoint:N`, see [`weir_log::failpoint`]).
                weir_log::failpoint::hit("crash_before_checkpoint");
                self.unsaved = true;
                if !whole
                    && self.last_checkpoint.elapsed() >= self.commit_every
                    && self.may_checkpoint()
                {
                    self.checkpoint(log)?;
                }
            }
            consumed += n;
        }
        if let Some(e) = failed {
            self.pipeline.take_ahead();
            return Err(e);
        }
        if self.error.is_some() {
            self.pipeline.take_ahead();
        } else if whole
            && self.unsaved
            && self.last_checkpoint.elapsed() >= self.commit_every
            && self.may_checkpoint()
        {
            self.checkpoint(log)?;
        }
        // Caught up (or stopped): what it did is checkpointed now.
        if consumed == 0 && self.unsaved && self.may_checkpoint() {
            self.checkpoint(log)?;
        }
        Ok(consumed)
    }

    /// The steps of its partitions, computed at once on up to `threads` threads, when the
    /// pipeline reads several partitions of which two or more were busy at their last
    /// step; `None` otherwise. The threads read, decode and run the stateless stages of
    /// the partitions, several batches each while time lasts ([`shared_rounds`]); a
    /// query without state writes its output there too. A pipeline with state (a GROUP
    /// BY) runs it after them, step after step in order, its state split into shards that
    /// fold at once (`aggregate/shards.rs`), encodes their output at once again and
    /// writes it in order — while other threads read the partitions' next steps (up to
    /// the stages with state) for the next call, which takes them where its partitions
    /// are still where they were read from, so the stages with state, the encoding and
    /// the writing cost no time of their own while records wait. A step that fails ends
    /// the list (those after it are read again next time, and nothing read ahead is
    /// kept). A panic in a thread goes on in the caller.
    #[allow(clippy::type_complexity)]
    fn shared_steps(
        &mut self,
        log: &dyn Log,
        durable: bool,
        threads: usize,
    ) -> Option<Vec<(u32, Result<pipeline::Step>, Duration)>> {
        // Every partition (asking the log which have records waiting would cost a round
        // trip per partition on Kafka; an idle one's step reads nothing).
        let owned: Vec<u32> = (0..self.pipeline.partitions())
            .filter(|p| self.owns(*p))
            .collect();
        let mut ahead: BTreeMap<u32, pipeline::AheadSteps> = self
            .pipeline
            .take_ahead()
            .into_iter()
            .map(|a| (a.partition, a))
            .collect();
        let (input, stages) = self.pipeline.shared()?;
        let stateless = stages.len() == self.pipeline.operators.len();
        let first_stateful = stages.len();
        let n = threads.min(owned.len());
        // The steps read ahead for partitions still where they were read from; the
        // others read now (and those whose steps read ahead ran dry, from after them).
        let mut results = Vec::new();
        let mut to_read = Vec::new();
        for &p in &owned {
            match ahead.remove(&p) {
                Some(a) if a.from == input.offsets[p as usize] => {
                    let next = a.steps.last().and_then(|(s, _)| s.next);
                    if !a.full {
                        to_read.push((p, next));
                    }
                    results.extend(a.steps.into_iter().map(|(s, took)| (p, Ok(s), took)));
                }
                _ => to_read.push((p, None)),
            }
        }
        // Without state, each partition's output is written on its thread.
        let spec = &self.sink_spec(log, durable);
        let write = stateless.then_some((spec, durable));
        if !to_read.is_empty() {
            results.extend(shared_rounds(input, &stages, log, write, &to_read, n));
            // In order of partition, each partition's in the order read.
            results.sort_by_key(|(p, _, _)| *p);
        }
        for (_, step, _) in &results {
            if let Ok(step) = step {
                self.pipeline.count_stage_rows(step);
            }
        }
        if stateless {
            return Some(results);
        }
        // The stages with state, over the steps up to the first that failed (those after
        // it are read again next time), as if one after the other.
        let read_ahead = match results.iter().position(|(_, step, _)| step.is_err()) {
            Some(failed) => {
                results.truncate(failed + 1);
                None
            }
            // Each partition's next steps, from after the last record its steps here
            // read (where its input stands if they read none).
            None => Some(
                owned
                    .iter()
                    .map(|&p| {
                        let next = results
                            .iter()
                            .rev()
                            .filter(|(q, _, _)| *q == p)
                            .find_map(|(_, s, _)| s.as_ref().ok()?.next);
                        (p, next)
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        let (spec, pipeline) = self.sink_spec_and_pipeline(log, durable);
        let (input, stages, mut stateful) = pipeline.split_at_state(first_stateful)?;
        enum Job<'a, 'b> {
            Run(
                Vec<(u32, Result<pipeline::Step>, Duration)>,
                &'a mut pipeline::Stateful<'b>,
            ),
            Read(&'a [(u32, Option<u64>)]),
        }
        enum Done {
            Ran(Vec<(u32, Result<pipeline::Step>, Duration)>),
            Read(Vec<(u32, Result<pipeline::Step>, Duration)>),
        }
        let mut jobs = vec![Job::Run(results, &mut stateful)];
        if let Some(reads) = &read_ahead {
            jobs.push(Job::Read(reads));
        }
        let spec = &spec;
        let mut done = each_at_once(jobs, 2, |_, job| match job {
            Job::Run(results, stateful) => {
                Done::Ran(run_stateful(stateful, results, spec, log, durable, threads))
            }
            Job::Read(reads) => Done::Read(shared_rounds(input, &stages, log, None, reads, n)),
        })
        .into_iter();
        let Some(Done::Ran(ran)) = done.next() else {
            unreachable!("the jobs' results come in their order")
        };
        let read = match done.next() {
            Some(Done::Read(read)) => read,
            _ => Vec::new(),
        };
        // What was read ahead is kept for the next step where this one's steps all went
        // through (each partition's steps up to the first that failed, if any; those
        // that read nothing are read again then).
        let ok = ran.iter().all(|(_, step, _)| step.is_ok());
        if ok && let Some(reads) = &read_ahead {
            let mut kept: Vec<pipeline::AheadSteps> = Vec::new();
            for (p, step, took) in read {
                let Ok(step) = step else {
                    kept.retain(|a| a.partition != p);
                    continue;
                };
                if step.consumed == 0 || kept.last().is_some_and(|a| a.partition == p && !a.full) {
                    continue;
                }
                let full = step.requested.is_some_and(|r| step.consumed as usize >= r);
                match kept.last_mut() {
                    Some(a) if a.partition == p => {
                        a.full = full;
                        a.steps.push((step, took));
                    }
                    _ => {
                        let from = reads
                            .iter()
                            .find(|(q, _)| *q == p)
                            .and_then(|(_, from)| *from)
                            .unwrap_or(input.offsets[p as usize]);
                        kept.push(pipeline::AheadSteps {
                            partition: p,
                            from,
                            steps: vec![(step, took)],
                            full,
                        });
                    }
                }
            }
            pipeline.keep_ahead(kept);
        }
        Some(ran)
    }

    /// One step of one partition through the query's pipeline, into its sink topic.
    fn step_partition(
        &mut self,
        log: &dyn Log,
        durable: bool,
        partition: u32,
        parallelism: usize,
    ) -> Result<u64> {
        let started = Instant::now();
        // With threads to spare, the next batch is read and decoded while this one goes
        // through the operators and is written (a topic input; not a join, which steps
        // on its own threads).
        if parallelism > 1 && self.pipeline.join().is_none() {
            let (spec, pipeline) = self.sink_spec_and_pipeline(log, durable);
            let stepped = pipeline.step_reading_ahead(log, partition, |step| {
                step.written = Some(write_step(log, &spec, step, partition, durable)?);
                Ok(())
            });
            if let Some(step) = stepped {
                return self.commit_step(log, durable, partition, step, started);
            }
        }
        // Everything is computed before anything is written: a query that stops on an
        // error writes nothing of the step it stops at, and resumes from its start.
        let (id, topic) = (self.id.clone(), self.offsets_topic.clone());
        let intents = durable.then_some(Intents {
            query: &id,
            topic: &topic,
        });
        let mut step = self.pipeline.step(log, partition, None, intents);
        // A join's step comes in parts (see `Joiner::lookup`): their output encoded at
        // once on the join's threads, then written in order.
        let threads = self.pipeline.join().map_or(1, |j| j.threads);
        if threads > 1 && step.as_ref().is_ok_and(|s| s.changes.len() > 1) {
            let spec = &self.sink_spec(log, durable);
            step = step.and_then(|s| encode_step(spec, s, partition, durable, threads));
            step = step.and_then(|mut s| {
                s.written = Some(append_step_at_once(
                    log, spec, &mut s, partition, durable, threads,
                )?);
                Ok(s)
            });
        }
        self.commit_step(log, durable, partition, step, started)
    }

    /// Writes what a partition's step computed (begun at `started`) and moves past it: its
    /// output to the sink, its problems to the processing log. A step stopped by a
    /// function error (`weir.fail.on.function.error`) stops the query instead.
    fn commit_step(
        &mut self,
        log: &dyn Log,
        durable: bool,
        partition: u32,
        step: Result<pipeline::Step>,
        started: Instant,
    ) -> Result<u64> {
        let q = self;
        let mut step = match step {
            Ok(step) => step,
            Err(EngineError::Stopped {
                partition,
                offset,
                message,
            }) => {
                let why = format!(
                    "Query stopped ({FAIL_ON_FUNCTION_ERROR}=true) at {}-{partition} {message}",
                    q.source_topic
                );
                eprintln!("weir: query {}: {why}", q.id);
                write_processing_log(
                    log,
                    &q.id,
                    &q.source_topic,
                    &[Problem::new(partition, offset, why.clone())],
                )?;
                q.stats.errors += 1;
                q.error = Some(meta::QueryError {
                    timestamp: now_ms(),
                    message: why,
                });
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        if step.consumed == 0 {
            q.pipeline.advance(partition, &step, started.elapsed());
            return Ok(0);
        }
        let written = match step.written.take() {
            Some(written) => written,
            None => write_step(
                log,
                &q.sink_spec(log, durable),
                &mut step,
                partition,
                durable,
            )?,
        };
        q.stats.produced += written.produced;
        q.stats.latency.merge(&written.latency);
        q.stats.bytes_produced += written.bytes;
        if !step.problems.is_empty() {
            q.stats.errors += step.problems.len() as u64;
            write_processing_log(log, &q.id, &q.source_topic, &step.problems)?;
        }
        q.pipeline.advance(partition, &step, started.elapsed());
        q.stats.consumed += step.consumed;
        q.stats.bytes_consumed += step.bytes;
        q.stats.last_message_ms = Some(now_ms());
        Ok(step.consumed)
    }

    /// Appends the query's checkpoint: its offsets, where its sink ended, and its operator
    /// state — whole every `delta::FULL_EVERY` checkpoints, otherwise only what changed
    /// since the last one.
    fn checkpoint(&mut self, log: &dyn Log) -> Result<()> {
        let q = self;
        // Sharing work and holding nothing: nothing of it is this server's to save.
        if q.owned.as_ref().is_some_and(BTreeMap::is_empty) {
            return Ok(());
        }
        let mut sink_ends = Vec::new();
        for p in 0..q.sink_partitions {
            sink_ends.push(log.offsets(&q.sink_topic, p)?.1);
        }
        // Outputs already written for source records not consumed yet (by a step that was
        // interrupted after writing part of its output, then replayed in smaller batches):
        // they go with every checkpoint until consumed, so that a later recovery skips
        // them too. The others are done with.
        let offsets = q.pipeline.offsets();
        q.already_written
            .retain(|(p, _), max| offsets.get(*p as usize).is_none_or(|next| *max >= *next));
        let ahead: Vec<[u64; 3]> = q
            .already_written
            .iter()
            .map(|((p, s), max)| [*p as u64, *s as u64, *max])
            .collect();
        let mut v = serde_json::json!({"query": q.id, "offsets": q.pipeline.offsets(), "sink_ends": sink_ends});
        if !ahead.is_empty() {
            v["ahead"] = serde_json::json!(ahead);
        }
        // Sharing work: the units it covers, with the epochs they are held at (recovery
        // takes, per unit, the newest checkpoint of the highest epoch).
        if let Some(owned) = &q.owned {
            let epochs: serde_json::Map<String, serde_json::Value> = owned
                .iter()
                .map(|(u, e)| (u.to_string(), serde_json::json!(e)))
                .collect();
            v["epochs"] = serde_json::Value::Object(epochs);
        }
        if let Some(member) = &q.member {
            v["member"] = serde_json::json!(member);
        }
        // The record: `v` as JSON, or, with a delta, a binary one (`delta::BINARY`): its
        // fields as a JSON header, then the delta's entries; in one buffer (the last
        // checkpoint's, reused).
        let mut text = std::mem::take(&mut q.checkpoint_text);
        text.clear();
        // A full snapshot every FULL_EVERY checkpoints, or once the changes written since
        // the last one add up to its size and 1 MiB (then a full one costs no more, and the
        // checkpoints recovery needs — and the topic, trimmed behind them — stay within
        // about twice the state).
        if q.pipeline.has_state()
            && q.since_full < delta::FULL_EVERY
            && q.delta_bytes < q.full_bytes.max(delta::FULL_AFTER_DELTA_BYTES)
        {
            // The operators say which entries of their state changed (the state can be
            // large and mostly unchanged: a table's rows, open windows), so a checkpoint
            // costs what the step changed; every FULL_EVERY-th is a full snapshot.
            v["delta"] = serde_json::Value::Bool(true);
            let header = v.to_string();
            text.push(delta::BINARY);
            text.extend_from_slice(&(header.len() as u32).to_le_bytes());
            text.extend_from_slice(header.as_bytes());
            let mut changes = delta::Delta::after(text);
            q.pipeline.take_changes(&mut changes);
            text = changes.into_bytes();
            q.since_full += 1;
            q.delta_bytes += text.len();
        } else {
            if q.pipeline.has_state() {
                v["full"] = q.pipeline.snapshot();
                q.since_full = 0;
            }
            text.extend_from_slice(v.to_string().as_bytes());
            (q.full_bytes, q.delta_bytes) = (text.len(), 0);
        }
        let self_contained = !q.pipeline.has_state() || q.since_full == 0;
        let mut records = checkpoint_records(&q.id, text, log.max_record_bytes());
        // The output it covers is on disk before it is: after a power cut no checkpoint
        // survives the output it says was written.
        let written = log
            .sync_topic(&q.sink_topic)
            .and_then(|()| log.append(&q.offsets_topic, 0, &records));
        // The buffer goes back to the query for the next checkpoint.
        if records.len() == 1
            && let Some(bytes) = records[0].value.take()
            && bytes.capacity() <= 16 << 20
        {
            q.checkpoint_text = bytes;
        }
        if written.is_err() {
            // What this checkpoint carried is not saved: the next one is a full one.
            q.since_full = delta::FULL_EVERY;
        }
        let first = written?;
        if self_contained {
            q.anchor = Some(first);
        }
        q.unsaved = false;
        q.last_checkpoint = Instant::now();
        // What was just saved, committed to the query's consumer group too, so Kafka's
        // lag tools see the query's progress (never ahead of the checkpoint).
        let whole = q.units().1;
        for (topic, offsets) in q.pipeline.source_offsets() {
            // Those of the partitions it holds (the others are other servers' to commit).
            let offsets: Vec<(u32, u64)> = offsets
                .into_iter()
                .enumerate()
                .map(|(p, o)| (p as u32, o))
                .filter(|(p, _)| whole || q.owned.as_ref().is_none_or(|o| o.contains_key(p)))
                .collect();
            if let Err(e) = log.commit_group_offsets(&q.group, &topic, &offsets)
                && !std::mem::replace(&mut q.group_failed, true)
            {
                eprintln!(
                    "weir: query {}: committing its offsets to consumer group {} failed (its checkpoints are unaffected): {e}",
                    q.id, q.group
                );
            }
        }
        Ok(())
    }
}

impl PersistentQuery {
    /// Not while a join replays the steps a crash interrupted: a checkpoint would drop
    /// the recovery intents of those not replayed yet. Not after a failure either.
    /// Brings its view up to date: counters, error, offsets.
    fn publish(&self) {
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        v.stats = self.stats;
        v.stage_rows.clone_from(&self.pipeline.stage_rows);
        v.late = self.pipeline.late_records();
        v.error.clone_from(&self.error);
        v.paused = self.paused;
        v.offsets.clear();
        v.offsets.extend_from_slice(self.pipeline.offsets());
        v.anchor = self.anchor;
    }

    /// To be reloaded (by the engine): waiting to retry after a failure and the wait is
    /// over, or restored for the units it just claimed.
    pub(crate) fn reload_due(&self) -> bool {
        let now = Instant::now();
        let failed_due = self.retry.is_some_and(|r| !r.reloaded && now >= r.at);
        let may = self.retry.is_none_or(|r| r.reloaded || now >= r.at);
        failed_due || (self.handoff && may)
    }

    /// Runs now: not while it waits to be reloaded.
    fn runnable(&self) -> bool {
        self.retry.is_none_or(|r| r.reloaded) && !self.handoff && !self.paused
    }

    /// Whether it runs whole on one server (it has state that does not divide by source
    /// partition: a join, a GROUP BY of anything but the stream's key), rather than
    /// partition by partition; and so its units of work ([`cluster::Unit`]).
    fn units(&self) -> (u32, bool) {
        let whole = self.pipeline.has_state() && !self.pipeline.by_partition;
        (if whole { 1 } else { self.pipeline.partitions() }, whole)
    }

    /// Whether this server steps `partition` of its input.
    fn owns(&self, partition: u32) -> bool {
        match &self.owned {
            None => true,
            Some(o) => o.contains_key(&if self.units().1 { 0 } else { partition }),
        }
    }

    /// Servers sharing work ([`cluster`]): what it holds follows the division the live
    /// members compute. Units claimed by another server at a newer epoch (this one was
    /// taken for dead) are dropped at once; units the division gives to others are
    /// checkpointed and released; units it is given that are free (released, unclaimed,
    /// or held by a member no longer live) are claimed, and then it is reloaded
    /// ([`PersistentQuery::handoff`]): planned again and restored from their checkpoints.
    fn rebalance(&mut self, log: &dyn Log, c: &cluster::Cluster) -> Result<()> {
        let (units, whole) = self.units();
        let target = c.target(&self.id, units, whole);
        let id = self.id.clone();
        let owned = self.owned.get_or_insert_default();
        let stolen: Vec<cluster::Unit> = owned
            .iter()
            .filter(|(u, e)| !c.holds(&id, **u, **e))
            .map(|(u, _)| *u)
            .collect();
        for u in stolen {
            owned.remove(&u);
            eprintln!("weir: query {id}: another server claimed its unit {u}; letting it go");
        }
        let give: BTreeMap<cluster::Unit, u64> = owned
            .iter()
            .filter(|(u, _)| !target.contains(u))
            .map(|(u, e)| (*u, *e))
            .collect();
        let take: Vec<cluster::Unit> = target
            .iter()
            .filter(|u| !owned.contains_key(u) && c.claimable(&id, **u))
            .copied()
            .collect();
        let held = !owned.is_empty();
        if give.is_empty() && take.is_empty() {
            return Ok(());
        }
        // Saved first: the next holder resumes from here, as does this one after a reload.
        if held && self.unsaved && self.may_checkpoint() {
            self.checkpoint(log)?;
        }
        if !give.is_empty() {
            let owned = self.owned.get_or_insert_default();
            for u in give.keys() {
                owned.remove(u);
            }
            c.release(&id, &give)?;
            // Its state divides by partition: reloaded with only the partitions it keeps
            // (the groups of those it gave go, and with them anything they would still
            // emit, as windows closing).
            if !whole && self.pipeline.has_state() {
                self.handoff = true;
            }
            eprintln!(
                "weir: query {id}: handed over {} to another server",
                describe_units(whole, give.keys())
            );
        }
        let won = c.claim(&id, &take)?;
        if !won.is_empty() {
            eprintln!(
                "weir: query {id}: took {}",
                describe_units(whole, won.keys())
            );
            self.owned.get_or_insert_default().extend(won);
            self.handoff = true;
        }
        Ok(())
    }

    /// It failed: ERROR with `message`, and a reload after the backoff (`initial`, then
    /// doubling up to `max`, from [`Engine::work`]).
    fn failed(&mut self, message: String, (initial, max): (Duration, Duration)) {
        let backoff = match self.retry {
            Some(r) => (r.backoff * 2).min(max),
            None => initial,
        };
        eprintln!(
            "weir: query {} failed; retrying from its last checkpoint in {} ms: {message}",
            self.id,
            backoff.as_millis()
        );
        self.retry = Some(Retry {
            at: Instant::now() + backoff,
            backoff,
            reloaded: false,
        });
        self.error = Some(meta::QueryError {
            timestamp: now_ms(),
            message,
        });
        self.publish();
    }

    fn may_checkpoint(&self) -> bool {
        self.pipeline.join().is_none_or(|j| j.replay.is_empty())
            // A query that failed holds what its failed step left in memory: it is
            // reloaded from the last checkpoint, never saved over it.
            && self.retry.is_none_or(|r| r.reloaded)
    }
}

/// What a server holds of a query, in words: `partition(s) [0, 2]`, or `the whole query`.
fn describe_units<'a>(whole: bool, units: impl Iterator<Item = &'a cluster::Unit>) -> String {
    if whole {
        "the whole query".into()
    } else {
        format!("partition(s) {:?}", units.collect::<Vec<_>>())
    }
}

/// On servers sharing work: a query's state divides by partition where it can (a GROUP
/// BY of the stream's key). Set on the commands of queries started since it exists;
/// `'false'` keeps a query's state whole on one server.
pub const DIVIDE_STATE_PROPERTY: &str = "weir.cluster.divide.state";

/// The property that makes a function error stop a persistent query.
pub const FAIL_ON_FUNCTION_ERROR: &str = "weir.fail.on.function.error";
/// How long a failed query waits before its first retry (ms; ksqlDB's name and default).
pub const RETRY_BACKOFF_INITIAL: &str = "ksql.query.retry.backoff.initial.ms";
/// The longest wait between retries (ms); each failure doubles the wait up to it.
pub const RETRY_BACKOFF_MAX: &str = "ksql.query.retry.backoff.max.ms";

pub struct Engine {
    log: Arc<dyn Log>,
    catalog: Catalog,
    functions: Functions,
    /// Each behind its own lock: a worker steps a query holding only that lock (never the
    /// engine's), so statements and other queries go on meanwhile. Lock order: the
    /// engine's, then a query's; a worker holding a query's lock never takes the engine's.
    queries: BTreeMap<String, Entry>,
    push_queries: BTreeMap<String, PushEntry>,
    push_counter: u64,
    /// Tables' current rows, for pull queries (see `pull.rs`).
    materialized: std::collections::HashMap<String, Arc<Mutex<pull::Materialized>>>,
    properties: BTreeMap<String, String>,
    query_counter: u64,
    /// Keeps a command log and query checkpoints in the log ([`Engine::open`]).
    durable: bool,
    /// Threads one query's step may use for its partitions ([`Engine::set_parallelism`]).
    parallelism: usize,
    /// The command log and the checkpoints' topic ([`internal_topics`]).
    command_topic: String,
    offsets_topic: Arc<str>,
    /// `ksql.service.id`: names the queries' consumer groups ([`consumer_group`]).
    service_id: Arc<str>,
    replaying: bool,
    /// On a log several servers share (Kafka): this server's membership among those with
    /// its service id, who divide the queries' work ([`cluster`]).
    cluster: Option<Arc<cluster::Cluster>>,
    /// The command log applied up to here, and the commands this server appended (the
    /// others' are applied as they come: [`Engine::follow_commands`]).
    command_cursor: u64,
    own_commands: std::collections::HashSet<u64>,
    /// The checkpoints' topic was last trimmed up to here ([`Engine::trim_checkpoints`]).
    trimmed_to: std::sync::atomic::AtomicU64,
    /// Queries whose statement failed when the command log was replayed (a plugin
    /// function gone, a source missing): listed in ERROR, with why, until terminated;
    /// their checkpoints are kept, so a restart that can run them resumes them.
    broken: BTreeMap<String, QueryView>,
    /// Topics of sources dropped with DELETE TOPIC by the statement running, deleted once
    /// it is recorded.
    dropped_topics: Vec<String>,
    /// Commands of the command log replayed when it opened, and left out as dead history
    /// ([`replay`]).
    replay_applied: usize,
    replay_skipped: usize,
    /// On a log servers share: the checkpoints' topic's trimmer ([`trim`]), when on.
    shared_trim: Option<trim::SharedTrim>,
    /// Where the schema formats' schemas are (opened at first need: Weir's own in the
    /// log, or `ksql.schema.registry.url`'s).
    schema_registry: Option<Arc<dyn SchemaRegistry>>,
}

/// The property naming an external schema registry (ksqlDB's).
pub const SCHEMA_REGISTRY_URL: &str = "ksql.schema.registry.url";

/// The topic Weir's own schema registry is kept in, for a service id.
pub fn schemas_topic(service_id: &str) -> String {
    if service_id == DEFAULT_SERVICE_ID {
        "_weir_schemas".into()
    } else {
        format!("_weir_{service_id}_schemas")
    }
}

/// The segment size of the checkpoints' topic on the embedded log: it is trimmed a
/// segment at a time, so what it keeps beyond what recovery needs is at most about this.
const OFFSETS_SEGMENT_BYTES: u64 = 1 << 20;

fn prop(props: &Properties, name: &str) -> Option<String> {
    props.get(name).map(Literal::as_text)
}

impl Engine {
    pub fn new(log: Arc<dyn Log>) -> Self {
        let mut engine = Self {
            log,
            catalog: Catalog::default(),
            functions: Functions::default(),
            queries: BTreeMap::new(),
            push_queries: BTreeMap::new(),
            push_counter: 0,
            materialized: Default::default(),
            properties: BTreeMap::new(),
            query_counter: 0,
            durable: false,
            replaying: false,
            parallelism: 1,
            command_topic: COMMAND_TOPIC.into(),
            offsets_topic: OFFSETS_TOPIC.into(),
            service_id: DEFAULT_SERVICE_ID.into(),
            cluster: None,
            command_cursor: 0,
            own_commands: Default::default(),
            trimmed_to: std::sync::atomic::AtomicU64::new(0),
            broken: BTreeMap::new(),
            dropped_topics: Vec::new(),
            replay_applied: 0,
            replay_skipped: 0,
            shared_trim: None,
            schema_registry: None,
        };
        // The processing log is a stream users can query, as ksqlDB's KSQL_PROCESSING_LOG.
        // Should the log refuse the topic now, entries still create it when they come.
        if let Ok(Statement::CreateSource(c)) = weir_sql::parse_statement(&format!(
            "CREATE SOURCE STREAM {PROCESSING_LOG_STREAM} (QUERY_ID STRING, TOPIC STRING, \
             `PARTITION` INT, `OFFSET` BIGINT, MESSAGE STRING) \
             WITH (KAFKA_TOPIC='{PROCESSING_LOG_TOPIC}', VALUE_FORMAT='JSON');"
        )) {
            let _ = engine.create_source(&c);
        }
        engine
    }

    /// An engine whose catalog and queries survive restarts: statements are kept in the
    /// command log, queries checkpoint their progress, and opening replays the commands
    /// and resumes every query where it stopped — writing nothing twice.
    pub fn open(log: Arc<dyn Log>) -> Result<Self> {
        Self::open_with(log, Functions::default())
    }

    /// As [`Engine::open`], with functions registered beforehand (plugins), so that
    /// persistent queries that call them can be replayed.
    pub fn open_with(log: Arc<dyn Log>, functions: Functions) -> Result<Self> {
        Self::open_service(log, functions, DEFAULT_SERVICE_ID)
    }

    /// As [`Engine::open_with`], for the servers with service id `service_id`
    /// (`ksql.service.id`): their own command log and checkpoints ([`internal_topics`]).
    pub fn open_service(log: Arc<dyn Log>, functions: Functions, service_id: &str) -> Result<Self> {
        Self::open_member(
            log,
            functions,
            service_id,
            cluster::DEFAULT_SESSION_TIMEOUT,
            InternalTopics::default(),
        )
    }

    /// As [`Engine::open_service`]; on a log several servers share (Kafka) this server
    /// joins the others with its service id and divides the queries' work with them
    /// ([`cluster`]), taking over a member's work when it has sent no heartbeat for
    /// `session`. The internal topics it creates are made as `internal` says.
    pub fn open_member(
        log: Arc<dyn Log>,
        functions: Functions,
        service_id: &str,
        session: Duration,
        internal: InternalTopics,
    ) -> Result<Self> {
        Self::open_member_with(log, functions, service_id, session, internal, None)
    }

    /// As [`Engine::open_member`], with the schema registry the schema formats use (an
    /// external one, or Weir's own that a server also serves) set before the command log
    /// replays: the sources it recreates bind to it.
    pub fn open_member_with(
        log: Arc<dyn Log>,
        functions: Functions,
        service_id: &str,
        session: Duration,
        internal: InternalTopics,
        registry: Option<Arc<dyn SchemaRegistry>>,
    ) -> Result<Self> {
        let mut engine = Self::new(log);
        engine.schema_registry = registry;
        engine.functions = functions;
        engine.durable = true;
        let (commands, offsets) = internal_topics(service_id);
        engine.command_topic = commands;
        engine.offsets_topic = offsets.into();
        engine.service_id = service_id.into();
        if internal.trim_checkpoints && engine.log.shared() {
            engine.shared_trim = Some(trim::SharedTrim::default());
        }
        for (topic, segment_bytes) in [
            (&*engine.command_topic, None),
            (&*engine.offsets_topic, Some(OFFSETS_SEGMENT_BYTES)),
        ] {
            if engine.log.topic(topic)?.is_none() {
                // Kept whatever the broker's retention: the catalog and the state.
                engine
                    .log
                    .create_topic(topic, internal.config(segment_bytes))?;
            }
        }
        if engine.log.shared() {
            engine.cluster = Some(cluster::Cluster::join(
                engine.log.clone(),
                cluster::members_topic(service_id),
                engine.command_topic.clone(),
                session,
                internal,
            )?);
        }
        engine.replaying = true;
        let commands = read_topic_values(engine.log.as_ref(), &engine.command_topic)?;
        // What the catalog is, not every statement ever run ([`replay`]).
        let plan = replay::plan(&commands);
        for (i, (offset, value)) in commands.iter().enumerate() {
            engine.command_cursor = offset + 1;
            if !plan.keep[i] {
                engine.replay_skipped += 1;
                continue;
            }
            if let Some(before) = plan.counter_before[i] {
                engine.query_counter = before;
            }
            let counter = engine.query_counter;
            engine.replay_applied += 1;
            if let Err(e) = engine.apply_command(*offset, value) {
                engine.replay_failed(value, counter, e);
            }
        }
        if let Some(after) = plan.counter_after {
            engine.query_counter = engine.query_counter.max(after);
        }
        engine.properties.clear();
        engine.replaying = false;
        engine.recover_offsets()?;
        Ok(engine)
    }

    /// Runs a command of the command log (replaying: it is not recorded again).
    fn apply_command(&mut self, offset: u64, value: &[u8]) -> Result<()> {
        let command: serde_json::Value = serde_json::from_slice(value).map_err(|e| {
            EngineError::Execution(format!("command log record {offset} is not JSON: {e}"))
        })?;
        self.properties = command["properties"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let sql = command["sql"].as_str().unwrap_or_default();
        let stmt = weir_sql::parse_statement(sql)?;
        self.execute(&stmt).map_err(|e| {
            EngineError::Execution(format!("replaying command {offset} ({sql}) failed: {e}"))
        })?;
        Ok(())
    }

    /// A command of the command log that failed on replay: said on stderr, and the start
    /// goes on without it. A query it started is listed in ERROR (with the id it had, so
    /// the queries after it keep theirs, and with them their checkpoints) until
    /// terminated; a restart that can run it resumes it from its last checkpoint.
    fn replay_failed(&mut self, value: &[u8], counter: u64, error: EngineError) {
        eprintln!("weir: {error}; going on without it");
        let sql = serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|c| c["sql"].as_str().map(str::to_string));
        let Some(sql) = sql else { return };
        let (prefix, sink) = match weir_sql::parse_statement(&sql) {
            Ok(Statement::CreateAsSelect(c)) => (
                if c.query.group_by.is_some() {
                    "CTAS"
                } else {
                    "CSAS"
                },
                c.name.value.clone(),
            ),
            Ok(Statement::InsertInto { target, .. }) => ("INSERTQUERY", target.value.clone()),
            _ => return,
        };
        // Started, and failed after it had its id: it is a query like the others.
        if self.query_counter != counter {
            return;
        }
        let id = format!("{prefix}_{sink}_{}", self.query_counter);
        self.query_counter += 1;
        let view = QueryView {
            id: id.clone(),
            statement: sql,
            sink: sink.clone(),
            sink_topic: String::new(),
            source: String::new(),
            source_topic: String::new(),
            sink_layout: Layout {
                key_columns: vec![],
                value_columns: vec![],
                key_format: FormatSpec::new(Format::None),
                value_format: FormatSpec::new(Format::None),
                header_columns: Vec::new(),
            },
            sources: vec![],
            window_type: None,
            execution_plan: String::new(),
            stages: Vec::new(),
            stage_rows: Vec::new(),
            paused: false,
            stats: Default::default(),
            late: 0,
            error: Some(meta::QueryError {
                timestamp: now_ms(),
                message: format!(
                    "not started: its statement failed when the server started: {error}"
                ),
            }),
            offsets: vec![],
            anchor: None,
        };
        self.broken.insert(id, view);
    }

    /// On servers sharing a service id: applies the commands the others appended to the
    /// command log since this one last looked (statements they accepted: new streams,
    /// queries started or terminated), so that every server has the same catalog and
    /// queries. `fresh`: asks the log for the command log's end (a statement about to
    /// run); otherwise the end the heartbeats last saw is used (a worker's pass).
    pub fn follow_commands(&mut self, fresh: bool) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let end = if fresh {
            self.log.offsets(&self.command_topic, 0)?.1
        } else {
            cluster.commands_end()
        };
        if end <= self.command_cursor {
            return Ok(());
        }
        let records = self
            .log
            .read_to_end(&self.command_topic, 0, self.command_cursor)?;
        let saved = std::mem::take(&mut self.properties);
        self.replaying = true;
        for r in records {
            self.command_cursor = r.offset + 1;
            if self.own_commands.remove(&r.offset) {
                continue;
            }
            let Some(value) = r.record.value else {
                continue;
            };
            let counter = self.query_counter;
            if let Err(e) = self.apply_command(r.offset, &value) {
                eprintln!("weir: a statement another server accepted could not be applied here:");
                self.replay_failed(&value, counter, e);
            }
        }
        self.replaying = false;
        self.properties = saved;
        Ok(())
    }

    /// Sets each query's offsets to its last checkpoint, then finds which records after
    /// it already have their output in the sink (by the source header), so that
    /// reprocessing them writes nothing twice.
    fn recover_offsets(&mut self) -> Result<()> {
        let mut locked: Vec<_> = self.queries.values().map(|e| lock(&e.query)).collect();
        recover(
            self.log.as_ref(),
            &self.offsets_topic,
            locked.iter_mut().map(|q| &mut **q),
        )?;
        locked.iter().for_each(|q| q.publish());
        Ok(())
    }

    fn record_command(&mut self, stmt: &Statement) -> Result<()> {
        if !self.recorded(stmt) {
            return Ok(());
        }
        // With the query counter after it: a replay that leaves out commands before it
        // still gives its query the same id (see `replay`).
        let v = serde_json::json!({
            "sql": format!("{stmt};"),
            "properties": self.properties,
            "counter": self.query_counter,
        });
        let offset = self.log.append(
            &self.command_topic,
            0,
            &[Record::new(None, Some(v.to_string().as_bytes()), now_ms())],
        )?;
        self.log.sync_topic(&self.command_topic)?;
        if self.cluster.is_some() {
            self.own_commands.insert(offset);
        }
        Ok(())
    }

    /// Processes one batch per partition of every persistent query; returns how many
    /// source records were consumed (0 when all are caught up).
    ///
    /// On a durable engine each query fails alone ([`Work::step`]): an error or a panic
    /// in its step puts it in ERROR while the others go on; after a backoff
    /// ([`RETRY_BACKOFF_INITIAL`], doubling up to [`RETRY_BACKOFF_MAX`]) it is planned
    /// again and reloaded from its last checkpoint, as a restart would, so nothing the
    /// failed step did in memory is kept and nothing it wrote is written twice. A plain
    /// engine (tests, benchmarks) returns the first error.
    pub fn run_once(&mut self) -> Result<u64> {
        self.follow_commands(false)?;
        let work = self.work();
        let mut consumed = 0;
        for (id, q) in &work.queries {
            work.rebalance(&mut lock(q));
            if lock(q).reload_due() {
                self.reload_or_wait(id);
            }
            consumed += work.step(&mut lock(q))?;
        }
        let (n, finished) = work.run_push_queries()?;
        for id in finished {
            self.close_push_query(&id);
        }
        Ok(consumed + n)
    }

    /// What stepping the persistent queries needs, for use without the engine's lock.
    /// Deletes what no recovery needs from the checkpoints' topic: everything before the
    /// oldest of the running queries' last self-contained checkpoints (their *anchors*),
    /// a segment at a time. So the topic, start-up's reading of it and recovery's memory
    /// follow the queries' state, not the server's uptime. When the oldest anchor moved;
    /// not while a query has no anchor yet; not on a log servers share (Kafka: what a
    /// member recovers from may be another's, and the broker's retention applies).
    pub(crate) fn trim_checkpoints(&self) {
        use std::sync::atomic::Ordering;
        // (Not while a query could not be started: its checkpoints are kept for it.)
        if !self.durable || self.queries.is_empty() || !self.broken.is_empty() {
            return;
        }
        if self.log.shared() {
            // One member trims for all, off the engine's lock ([`trim`]).
            if let Some(trim) = &self.shared_trim
                && self.cluster.as_ref().is_some_and(|c| c.is_first())
            {
                trim.maybe_start(
                    trim::SHARED_TRIM_EVERY,
                    self.log.clone(),
                    self.offsets_topic.to_string(),
                    || self.query_units(),
                );
            }
            return;
        }
        let anchors: Option<Vec<u64>> = self
            .queries
            .values()
            .map(|e| e.view.lock().unwrap_or_else(|e| e.into_inner()).anchor)
            .collect();
        let Some(oldest) = anchors.and_then(|a| a.into_iter().min()) else {
            return;
        };
        // Only when the oldest anchor moved (one worker does it).
        let last = self.trimmed_to.load(Ordering::Relaxed);
        if oldest <= last
            || self
                .trimmed_to
                .compare_exchange(last, oldest, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // The anchors are on disk before what they supersede goes: a power cut between
        // the two must not leave deltas without their full snapshot.
        if let Err(e) = self
            .log
            .sync_topic(&self.offsets_topic)
            .and_then(|()| self.log.delete_before(&self.offsets_topic, 0, oldest))
        {
            eprintln!("weir: trimming {}: {e}", self.offsets_topic);
        }
    }

    /// The command log's commands replayed when the engine opened, and those left out as
    /// history whose effects later commands undid (a stream created and dropped, an
    /// INSERT INTO's query started and terminated).
    pub fn replay_stats(&self) -> (usize, usize) {
        (self.replay_applied, self.replay_skipped)
    }

    /// Each persistent query with its number of units of work (see `cluster`).
    fn query_units(&self) -> Vec<(String, u32)> {
        self.queries
            .iter()
            .map(|(id, e)| (id.clone(), lock(&e.query).units().0))
            .collect()
    }

    /// On a log servers share (Kafka): deletes, now, the checkpoints no recovery of the
    /// catalog's queries needs any more (what the first live member does every minute
    /// by itself), and compacts the members topic (what it does every ten minutes:
    /// `cluster::COMPACT_EVERY`); returns the checkpoints' topic's first offset
    /// afterwards. Nothing is trimmed while a query has no self-contained checkpoint, or
    /// one could not be started, or with trimming off
    /// ([`InternalTopics::trim_checkpoints`]). On the embedded log, what
    /// [`Engine::run_once`] trims as it goes.
    pub fn trim_shared_checkpoints(&self) -> Result<u64> {
        match &self.shared_trim {
            Some(trim) if self.durable && self.broken.is_empty() => {
                if let Some(c) = &self.cluster {
                    c.compact()?;
                }
                trim.run(self.log.as_ref(), &self.offsets_topic, &self.query_units())
            }
            _ => Ok(self.log.offsets(&self.offsets_topic, 0)?.0),
        }
    }

    pub(crate) fn work(&self) -> Work {
        self.trim_checkpoints();
        // The session's value, else the settings table's default.
        let millis = |name: &str| {
            let set = self.properties.get(name).map(String::as_str);
            let default = settings::find(name).map(|s| s.default);
            Duration::from_millis(
                set.or(default)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0),
            )
        };
        let initial = millis(RETRY_BACKOFF_INITIAL);
        Work {
            log: self.log.clone(),
            durable: self.durable,
            backoff: (initial, millis(RETRY_BACKOFF_MAX).max(initial)),
            parallelism: self.parallelism,
            cluster: self.cluster.clone(),
            queries: self
                .queries
                .iter()
                .map(|(id, e)| (id.clone(), e.query.clone()))
                .collect(),
            push: self
                .push_queries
                .iter()
                .filter(|(_, e)| !e.ended())
                .map(|(id, e)| (id.clone(), e.query.clone()))
                .collect(),
        }
    }

    /// Reloads query `id`, whose wait after a failure is over; a reload that fails waits
    /// again, longer. (A query terminated meanwhile is left alone.)
    pub(crate) fn reload_or_wait(&mut self, id: &str) {
        let Some(q) = self.queries.get(id).map(|e| e.query.clone()) else {
            return;
        };
        // Another worker may have reloaded it meanwhile.
        if !lock(&q).reload_due() {
            return;
        }
        match self.reload(id) {
            Ok(()) => {
                eprintln!("weir: query {id} reloaded from its last checkpoint; running again")
            }
            Err(e) => {
                let backoff = self.work().backoff;
                lock(&q).failed(
                    format!("reloading it from its last checkpoint failed: {e}"),
                    backoff,
                );
            }
        }
    }

    /// Replaces query `id` (in place: a worker holding it sees the new one) by the same
    /// query planned again from its statement, with the properties it started with, and
    /// restored from its last checkpoint.
    fn reload(&mut self, id: &str) -> Result<()> {
        let shared = self.queries[id].query.clone();
        let (statement, properties, stats, retry, owned, paused) = {
            let q = lock(&shared);
            let owned = q.owned.clone();
            (
                q.statement.clone(),
                q.properties.clone(),
                q.stats,
                q.retry,
                owned,
                q.paused,
            )
        };
        let stmt = weir_sql::parse_statement(&statement)?;
        let saved = std::mem::replace(&mut self.properties, properties);
        let fresh = self.replan(id, &stmt, statement);
        self.properties = saved;
        let mut fresh = fresh?;
        // What it holds of the work servers share stays held.
        if owned.is_some() {
            fresh.owned = owned;
        }
        recover(self.log.as_ref(), &self.offsets_topic, [&mut fresh])?;
        fresh.stats = stats;
        fresh.paused = paused;
        fresh.retry = retry.map(|r| Retry {
            reloaded: true,
            ..r
        });
        // The view the engine holds stays the query's.
        fresh.view = self.queries[id].view.clone();
        fresh.publish();
        *lock(&shared) = fresh;
        Ok(())
    }

    /// Query `id` as its statement starts it, over the catalog as it is.
    fn replan(&self, id: &str, stmt: &Statement, statement: String) -> Result<PersistentQuery> {
        let (sink, query, relation, plan, aggregate) = match stmt {
            Statement::CreateAsSelect(c) => {
                let relation = self.relation(&c.query)?;
                let (plan, mut aggregate) = self.plan_over(&relation, true)?;
                if let Some(a) = aggregate.as_mut() {
                    self.tune_aggregate(a)?;
                }
                (&c.name, &c.query, relation, plan, aggregate)
            }
            Statement::InsertInto { target, query, .. } => {
                let relation = self.relation(query)?;
                let plan = plan_select(&self.functions, &relation.query, &relation.source)?;
                (target, query, relation, plan, None)
            }
            _ => {
                return Err(EngineError::Execution(format!(
                    "query {id} was not started by a query: {statement}"
                )));
            }
        };
        let sink = self.stream(&sink.value)?;
        let Relation { source, join, .. } = relation;
        self.assemble_query(
            id.to_string(),
            &sink,
            &source,
            Parts {
                query,
                plan,
                aggregate,
                join,
            },
            statement,
        )
    }

    /// The session's settings for an aggregation: collection limits, coalescing.
    fn tune_aggregate(&self, a: &mut aggregate::Aggregator) -> Result<()> {
        let limit = |name: &str| {
            self.properties
                .get(&format!("ksql.functions.{name}.limit"))
                .and_then(|v| v.parse::<usize>().ok())
                .or(Some(aggregate::DEFAULT_COLLECT_LIMIT))
        };
        a.limit_collections(limit("collect_list"), limit("collect_set"))?;
        a.coalesce = self
            .properties
            .get(COALESCE_PROPERTY)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(())
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    pub fn functions(&self) -> &Functions {
        &self.functions
    }

    /// For loading and unloading plugin functions while running.
    pub fn functions_mut(&mut self) -> &mut Functions {
        &mut self.functions
    }

    /// The persistent queries as their last steps left them (no query's work waited for).
    pub fn queries(&self) -> impl Iterator<Item = QueryView> + '_ {
        self.queries
            .values()
            .map(|e| view_of(&e.view))
            .chain(self.broken.values().cloned())
    }

    /// Each persistent query's counters and source lag, for `/metrics`.
    pub fn query_metrics(&self) -> Vec<meta::QueryMetrics> {
        self.queries()
            .map(|q| {
                let lag = q
                    .offsets
                    .iter()
                    .enumerate()
                    .map(|(p, at)| {
                        self.log
                            .offsets(&q.source_topic, p as u32)
                            .map(|(_, end)| end.saturating_sub(*at))
                            .unwrap_or(0)
                    })
                    .sum();
                meta::QueryMetrics {
                    id: q.id.clone(),
                    stats: q.stats,
                    lag,
                    state: q.state(),
                }
            })
            .collect()
    }

    /// Push queries open now.
    pub fn push_query_count(&self) -> usize {
        self.push_queries.values().filter(|e| !e.ended()).count()
    }

    /// Lets a query's step compute up to `threads` partitions at once, and a GROUP BY's
    /// state fold in up to half as many shards at once ([`shards_for`]; 1, the default:
    /// one after the other). The runtime sets it to its number of workers.
    pub fn set_parallelism(&mut self, threads: usize) {
        self.parallelism = threads.max(1);
        for e in self.queries.values() {
            let mut q = lock(&e.query);
            if q.pipeline.set_threads(self.parallelism) {
                // Its state was dealt out again: the next checkpoint saves it whole.
                q.since_full = delta::FULL_EVERY;
            }
        }
    }

    pub fn set_property(&mut self, name: &str, value: &str) {
        // Another registry named: opened at next need.
        if name == SCHEMA_REGISTRY_URL
            && self.properties.get(name).map(String::as_str) != Some(value)
        {
            self.schema_registry = None;
        }
        self.properties.insert(name.to_string(), value.to_string());
    }

    /// Uses `registry` for the schema formats (a server shares its own with its REST API).
    pub fn set_schema_registry(&mut self, registry: Arc<dyn SchemaRegistry>) {
        self.schema_registry = Some(registry);
    }

    /// The schema registry: as set, else `ksql.schema.registry.url`'s, else Weir's own,
    /// kept in the log's `_weir_schemas` topic (opened at first need).
    pub fn schema_registry(&mut self) -> Result<Arc<dyn SchemaRegistry>> {
        if let Some(r) = &self.schema_registry {
            return Ok(r.clone());
        }
        let r: Arc<dyn SchemaRegistry> = match self.properties.get(SCHEMA_REGISTRY_URL) {
            Some(url) if !url.trim().is_empty() => Arc::new(RemoteRegistry::new(url.trim())),
            _ => Arc::new(
                LocalRegistry::open(self.log.clone(), &schemas_topic(&self.service_id))
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
            ),
        };
        self.schema_registry = Some(r.clone());
        Ok(r)
    }

    /// Parses and runs every statement of `sql`, stopping at the first failure.
    pub fn execute_sql(&mut self, sql: &str) -> Result<Vec<Outcome>> {
        let statements = weir_sql::parse(sql)?;
        statements.iter().map(|s| self.execute(s)).collect()
    }

    /// Runs one statement with request-scoped properties (a REST request's
    /// `streamsProperties`): they apply over the session's for this statement only, and
    /// are recorded with it when it is durable.
    pub fn execute_with(
        &mut self,
        stmt: &Statement,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Outcome> {
        if overrides.is_empty() {
            return self.execute(stmt);
        }
        let saved = self.properties.clone();
        self.properties
            .extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let result = self.execute(stmt);
        self.properties = saved;
        result
    }

    /// A pull query (`SELECT` without EMIT CHANGES) made ready to run without the
    /// engine's lock ([`PullJob::run`]: it reads its source and computes its rows on its
    /// own); `None` for any other statement. `overrides` are the request's properties.
    pub fn prepare_pull(
        &mut self,
        stmt: &Statement,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Option<PullJob>> {
        let Statement::Query(q) = stmt else {
            return Ok(None);
        };
        if q.emit.is_some() {
            return Ok(None);
        }
        if !self.replaying {
            self.follow_commands(true)?;
        }
        self.prepare_pull_query(q, overrides).map(Some)
    }

    /// The session's properties (`SET`).
    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    pub fn execute(&mut self, stmt: &Statement) -> Result<Outcome> {
        // What other servers sharing the service id accepted comes first.
        if !self.replaying {
            self.follow_commands(true)?;
        }
        if !self.recorded(stmt) {
            let outcome = self.execute_inner(stmt);
            self.delete_dropped_topics()?;
            return outcome;
        }
        // Its effects stand only once it is recorded: a statement the command log did
        // not take (a disk full, a failed fsync) leaves nothing behind that the next start
        // would not have. TERMINATE and DROP are checked, recorded, then done (a query
        // stopped cannot be started again as it was); the others are done, then recorded, and
        // undone should the record fail: the catalog and the query counter as they were,
        // the queries it started stopped before any worker saw them (the engine is ours
        // meanwhile); a topic DELETE TOPIC drops is deleted only once it is recorded.
        match stmt {
            Statement::Terminate(target) => {
                self.terminate_ids(target)?;
                self.record_command(stmt)?;
                return self.execute_inner(stmt);
            }
            // (A DROP may terminate the query that creates its source: checked and
            // recorded first too.)
            Statement::DropSource {
                kind,
                if_exists,
                name,
                delete_topic,
            } => {
                self.drop_check(*kind, *if_exists, &name.value, *delete_topic)?;
                self.record_command(stmt)?;
                let outcome = self.execute_inner(stmt)?;
                self.delete_dropped_topics()?;
                return Ok(outcome);
            }
            _ => {}
        }
        let before = (
            self.catalog.clone(),
            self.query_counter,
            self.queries
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
        );
        // Servers sharing work: a query started now divides its state by partition where
        // it can, and its command says so, so every server (and a later replay) plans it
        // the same; one recorded without it (by an earlier version) keeps its state whole,
        // as its checkpoints hold it.
        let saved = (self.cluster.is_some()
            && matches!(
                stmt,
                Statement::CreateAsSelect(_) | Statement::InsertInto { .. }
            )
            && !self.properties.contains_key(DIVIDE_STATE_PROPERTY))
        .then(|| self.properties.clone());
        if saved.is_some() {
            self.properties
                .insert(DIVIDE_STATE_PROPERTY.into(), "true".into());
        }
        let done = self
            .execute_inner(stmt)
            .and_then(|outcome| self.record_command(stmt).map(|()| outcome));
        if let Some(properties) = saved {
            self.properties = properties;
        }
        match done {
            Ok(outcome) => {
                self.delete_dropped_topics()?;
                Ok(outcome)
            }
            Err(e) => {
                let (catalog, counter, had) = before;
                self.catalog = catalog;
                self.query_counter = counter;
                let started: Vec<String> = self
                    .queries
                    .keys()
                    .filter(|id| !had.contains(*id))
                    .cloned()
                    .collect();
                for id in started {
                    if let Some(entry) = self.queries.remove(&id) {
                        lock(&entry.query).terminated = true;
                    }
                }
                self.dropped_topics.clear();
                Err(e)
            }
        }
    }

    /// Whether `stmt` goes to the command log: it changes the catalog or starts or stops
    /// a query, on a durable engine, and is not being replayed.
    fn recorded(&self, stmt: &Statement) -> bool {
        self.durable
            && !self.replaying
            && matches!(
                stmt,
                Statement::CreateSource(_)
                    | Statement::CreateAsSelect(_)
                    | Statement::InsertInto { .. }
                    | Statement::DropSource { .. }
                    | Statement::Terminate(_)
                    | Statement::Pause(_)
                    | Statement::Resume(_)
                    | Statement::CreateType { .. }
                    | Statement::DropType { .. }
            )
    }

    /// Deletes the topics of the sources a statement dropped with DELETE TOPIC (once the
    /// statement is recorded). One already gone is no error (a replay).
    fn delete_dropped_topics(&mut self) -> Result<()> {
        for topic in std::mem::take(&mut self.dropped_topics) {
            match self.log.delete_topic(&topic) {
                Ok(()) | Err(weir_log::LogError::UnknownTopic(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn execute_inner(&mut self, stmt: &Statement) -> Result<Outcome> {
        // `struct->*` in a select list stands for each of the struct's fields.
        if let Some(expanded) = self.expand_struct_stars(stmt)? {
            return self.execute_inner(&expanded);
        }
        match stmt {
            Statement::CreateSource(c) => self.create_source(c),
            Statement::CreateAsSelect(c) => self.create_as_select(c, stmt),
            Statement::InsertInto {
                target,
                properties: _,
                query,
            } => {
                if let Ok(t) = self.stream(&target.value)
                    && is_internal_topic(&t.topic)
                {
                    return Err(reserved(&t.topic));
                }
                // A join inserts its joined rows, planned as for CREATE ... AS SELECT.
                let r = self.relation(query)?;
                let plan = plan_select(&self.functions, &r.query, &r.source)?;
                let query_id = self.start_query(
                    &target.value,
                    &r.source,
                    Parts {
                        query,
                        plan,
                        aggregate: None,
                        join: r.join,
                    },
                    stmt,
                    "INSERTQUERY",
                )?;
                Ok(Outcome::QueryStarted {
                    query_id,
                    sink: target.value.clone(),
                })
            }
            Statement::InsertValues {
                target,
                columns,
                values,
            } => {
                let outcome = self.insert_values(&target.value, columns, values)?;
                // Acknowledged once stored.
                let topic = self.stream(&target.value)?.topic;
                self.log.sync_topic(&topic)?;
                Ok(outcome)
            }
            Statement::DropSource {
                kind,
                if_exists,
                name,
                delete_topic,
            } => self.drop_source(*kind, *if_exists, &name.value, *delete_topic),
            Statement::Terminate(t) => self.terminate(t),
            Statement::Assert(a) => self.assert(a),
            Statement::Pause(t) => self.pause(t, true),
            Statement::Resume(t) => self.pause(t, false),
            Statement::SetProperty { name, value } => {
                self.properties.insert(name.clone(), value.clone());
                Ok(Outcome::PropertySet {
                    name: name.clone(),
                    value: Some(value.clone()),
                })
            }
            Statement::UnsetProperty { name } => {
                self.properties.remove(name);
                Ok(Outcome::PropertySet {
                    name: name.clone(),
                    value: None,
                })
            }
            Statement::CreateType {
                if_not_exists,
                name,
                ty,
            } => {
                self.catalog
                    .add_type(&name.value, ty.clone(), *if_not_exists)?;
                Ok(Outcome::TypeRegistered {
                    name: name.value.clone(),
                })
            }
            Statement::DropType { if_exists, name } => {
                self.catalog.drop_type(&name.value, *if_exists)?;
                Ok(Outcome::TypeDropped {
                    name: name.value.clone(),
                })
            }
            // EXTENDED: STREAMS and TABLES described, QUERIES explained.
            Statement::List {
                what: what @ (weir_sql::ast::ListKind::Streams | weir_sql::ast::ListKind::Tables),
                extended: true,
            } => self.describe(
                &if *what == weir_sql::ast::ListKind::Streams {
                    weir_sql::ast::DescribeTarget::Streams
                } else {
                    weir_sql::ast::DescribeTarget::Tables
                },
                true,
            ),
            Statement::List {
                what: weir_sql::ast::ListKind::Queries,
                extended: true,
            } => self.explain_queries(),
            Statement::List { what, .. } => self.list(*what),
            Statement::Describe { target, extended } => self.describe(target, *extended),
            Statement::DescribeFunction { name } => self.describe_function(&name.value),
            Statement::Explain(target) => self.explain(target),
            Statement::Query(q) => self.start_push_query(q, &BTreeMap::new()),
            Statement::Print(p) => self.start_print(p),
            other => Err(EngineError::Unsupported(format!(
                "{} statements in the engine",
                other.kind()
            ))),
        }
    }

    /// `stmt` with each select item `x->*` (a STRUCT column of a source of its FROM, or a
    /// field of one) replaced by an item per field, `x->F AS F`; `None` when it has none.
    fn expand_struct_stars(&self, stmt: &Statement) -> Result<Option<Statement>> {
        use weir_sql::ast::{SelectItem, SqlType};
        use weir_sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr};
        let query = match stmt {
            Statement::Query(q) => q,
            Statement::CreateAsSelect(c) => &c.query,
            Statement::InsertInto { query, .. } => query,
            _ => return Ok(None),
        };
        let is_star = |e: &SqlExpr| {
            matches!(e, SqlExpr::BinaryOp { op: BinaryOperator::Arrow, right, .. }
                if matches!(right.as_ref(), SqlExpr::Wildcard(_)))
        };
        if !query
            .select
            .iter()
            .any(|i| matches!(i, SelectItem::Expr { expr, .. } if is_star(expr)))
        {
            return Ok(None);
        }
        let sources: Vec<(String, Source)> = std::iter::once(&query.from.source)
            .chain(query.from.joins.iter().map(|j| &j.source))
            .filter_map(|a| {
                let s = self.catalog.source(&a.name.value)?.clone();
                let alias = a.alias.as_ref().unwrap_or(&a.name).value.clone();
                Some((alias, s))
            })
            .collect();
        // The type of `e`: a column, qualified or not, then fields by `->`.
        fn type_of(e: &SqlExpr, sources: &[(String, Source)]) -> Option<SqlType> {
            let column = |q: Option<&str>, name: &str| {
                sources
                    .iter()
                    .filter(|(alias, _)| q.is_none_or(|q| q == alias))
                    .flat_map(|(_, s)| s.layout.key_columns.iter().chain(&s.layout.value_columns))
                    .find(|c| c.name == name)
                    .map(|c| c.ty.clone())
            };
            match e {
                SqlExpr::Identifier(id) => column(None, &id.value),
                SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                    column(Some(&parts[0].value), &parts[1].value)
                }
                SqlExpr::BinaryOp {
                    left,
                    op: BinaryOperator::Arrow,
                    right,
                } => {
                    let SqlExpr::Identifier(field) = right.as_ref() else {
                        return None;
                    };
                    match type_of(left, sources)? {
                        SqlType::Struct(fields) => fields
                            .into_iter()
                            .find(|f| f.name.value == field.value)
                            .map(|f| f.ty),
                        _ => None,
                    }
                }
                SqlExpr::Nested(inner) => type_of(inner, sources),
                _ => None,
            }
        }
        let mut select = Vec::with_capacity(query.select.len());
        for item in &query.select {
            match item {
                SelectItem::Expr {
                    expr: star @ SqlExpr::BinaryOp { left, .. },
                    ..
                } if is_star(star) => {
                    let Some(SqlType::Struct(fields)) = type_of(left, &sources) else {
                        return Err(EngineError::Invalid(format!(
                            "Expected STRUCT type for {}->*",
                            left
                        )));
                    };
                    for f in fields {
                        let name = f.name.clone();
                        select.push(SelectItem::Expr {
                            expr: SqlExpr::BinaryOp {
                                left: left.clone(),
                                op: BinaryOperator::Arrow,
                                right: Box::new(SqlExpr::Identifier(name.clone())),
                            },
                            alias: Some(name),
                        });
                    }
                }
                other => select.push(other.clone()),
            }
        }
        let mut q = query.clone();
        q.select = select;
        Ok(Some(match stmt {
            Statement::Query(_) => Statement::Query(q),
            Statement::CreateAsSelect(c) => {
                let mut c = c.clone();
                c.query = q;
                Statement::CreateAsSelect(c)
            }
            Statement::InsertInto {
                target, properties, ..
            } => Statement::InsertInto {
                target: target.clone(),
                properties: properties.clone(),
                query: q,
            },
            _ => return Ok(None),
        }))
    }

    /// The stream named `name`, or the error a statement naming a missing one gets.
    fn stream(&self, name: &str) -> Result<Source> {
        self.catalog
            .source(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownSource {
                kind: "Stream",
                name: name.to_string(),
            })
    }

    /// A single value column not said to be wrapped or not (`WRAP_SINGLE_VALUE`) follows
    /// the session's `ksql.persistence.wrap.single.values` (default true: wrapped).
    fn default_wrapping(&self, layout: &mut Layout, props: &Properties) {
        if layout.value_columns.len() == 1
            && props.get("WRAP_SINGLE_VALUE").is_none()
            && self
                .properties
                .get(WRAP_SINGLE_VALUES_PROPERTY)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
        {
            layout.value_format.wrap_single = false;
        }
    }

    /// Binds the schema formats' sides of a layout to their schemas: a source declared
    /// without columns on a side takes them from the registry (the schema `*_SCHEMA_ID`
    /// names, else its subject's latest: ksqlDB's schema inference) and writes with that
    /// schema; otherwise a side writes the schema made from its columns, registered under
    /// `<topic>-key` / `<topic>-value` (a sink's now, a source's at its first write). A sink
    /// given `*_SCHEMA_ID` writes that schema, whose fields must be its columns in order.
    /// Returns whether columns were inferred.
    fn bind_schemas(
        &mut self,
        layout: &mut Layout,
        topic: &str,
        props: &Properties,
        sink: bool,
    ) -> Result<bool> {
        use weir_format::registry::{RegisteredSchema, normalize};
        use weir_format::sr;
        let invalid = |e: String| EngineError::Invalid(e);
        let mut inferred = false;
        for side in ["KEY", "VALUE"] {
            let (spec, cols) = if side == "KEY" {
                (&mut layout.key_format, &mut layout.key_columns)
            } else {
                (&mut layout.value_format, &mut layout.value_columns)
            };
            let id = prop(props, &format!("{side}_SCHEMA_ID"));
            let full_name = prop(props, &format!("{side}_SCHEMA_FULL_NAME"))
                .or_else(|| prop(props, &format!("{side}_AVRO_SCHEMA_FULL_NAME")));
            if full_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(invalid(
                    "fullSchemaName cannot be empty. Format configuration: {fullSchemaName=}"
                        .into(),
                ));
            }
            let Some(schema_type) = sr::schema_type(spec.format) else {
                if id.is_some() {
                    return Err(invalid(format!(
                        "{side}_FORMAT should support schema inference when {side}_SCHEMA_ID is provided. Current format is {}.",
                        spec.format.name()
                    )));
                }
                if full_name.is_some() {
                    return Err(invalid(format!(
                        "{} does not support the following configs: [fullSchemaName]",
                        spec.format.name()
                    )));
                }
                continue;
            };
            let id = id
                .map(|v| {
                    v.trim().parse::<u32>().map_err(|_| {
                        invalid(format!(
                            "Invalid {side}_SCHEMA_ID: {v} (a whole number is expected)"
                        ))
                    })
                })
                .transpose()?;
            if id.is_some() && !sink && !cols.is_empty() {
                return Err(invalid(format!(
                    "Table elements and {side}_SCHEMA_ID cannot both exist for create statement."
                )));
            }
            let registry = self.schema_registry()?;
            let subject = format!("{topic}-{}", side.to_ascii_lowercase());
            let registry_error = |e: weir_format::registry::RegistryError| invalid(e.to_string());
            let given = match id {
                Some(id) => Some(registry.by_id(id).map_err(registry_error)?),
                None => None,
            };
            if let Some(g) = &given
                && g.schema_type != schema_type
            {
                return Err(invalid(format!(
                    "{side}_SCHEMA_ID {} is a {} schema, but the {side}_FORMAT is {}.",
                    g.id,
                    g.schema_type.name(),
                    spec.format.name()
                )));
            }
            // A sink whose subject already holds a schema of its columns writes with it
            // (its field names as registered), as ksqlDB does.
            let given = match given {
                None if sink && spec.format.uses_registry() => {
                    match registry.latest(&subject).map_err(registry_error)? {
                        Some(v) if v.schema.schema_type == schema_type => {
                            let theirs = sr::columns_of(&v.schema, "ROWVAL", full_name.as_deref())
                                .map(|(c, _)| c)
                                .unwrap_or_default();
                            let same = theirs.len() == cols.len()
                                && theirs.iter().zip(cols.iter()).all(|(t, c)| {
                                    t.name.eq_ignore_ascii_case(&c.name) && t.ty == c.ty
                                });
                            same.then_some(v.schema)
                        }
                        _ => None,
                    }
                }
                g => g,
            };
            let write = if !sink && cols.is_empty() && spec.format.uses_registry() {
                let schema = match given {
                    Some(g) => g,
                    None => match registry.latest(&subject).map_err(registry_error)? {
                        Some(v) => v.schema,
                        // No key schema: a stream without key columns.
                        None if side == "KEY" => continue,
                        None => {
                            return Err(invalid(format!(
                                "Schema for message values on topic '{topic}' does not exist in the Schema Registry.\nSubject: {subject}"
                            )));
                        }
                    },
                };
                let wrap = props
                    .get("WRAP_SINGLE_VALUE")
                    .map(|w| !w.as_text().eq_ignore_ascii_case("false"));
                let (columns, wrapped) =
                    sr::infer_columns(&schema, side == "KEY", wrap, full_name.as_deref())
                        .map_err(invalid)?;
                *cols = columns;
                spec.wrap_single = wrapped && cols.len() == 1;
                inferred = true;
                schema
            } else if let Some(g) = given {
                let (theirs, _) =
                    sr::columns_of(&g, "ROWVAL", full_name.as_deref()).map_err(invalid)?;
                let fits = cols.iter().enumerate().all(|(i, c)| {
                    theirs
                        .get(i)
                        .is_some_and(|t| t.name.eq_ignore_ascii_case(&c.name) && t.ty == c.ty)
                });
                if !fits {
                    let list = |cs: &[Column]| {
                        cs.iter()
                            .map(|c| format!("`{}` {}", c.name, c.ty))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(invalid(format!(
                        "The following {} columns are changed, missing or reordered: [{}]. Schema from schema registry is [{}]",
                        side.to_ascii_lowercase(),
                        list(cols),
                        list(&theirs)
                    )));
                }
                g
            } else {
                let nullable = match prop(
                    props,
                    &format!("{side}_PROTOBUF_NULLABLE_REPRESENTATION"),
                )
                .map(|v| v.trim().to_ascii_uppercase())
                .as_deref()
                {
                    None => weir_format::protobuf::Nullable::Defaults,
                    Some("OPTIONAL") => weir_format::protobuf::Nullable::Optional,
                    Some("WRAPPER") => weir_format::protobuf::Nullable::Wrapper,
                    Some(other) => {
                        return Err(invalid(format!(
                            "Invalid {side}_PROTOBUF_NULLABLE_REPRESENTATION: {other} (OPTIONAL or WRAPPER)"
                        )));
                    }
                };
                let text = sr::schema_for(
                    spec.format,
                    cols,
                    spec.wrap_single,
                    full_name.as_deref(),
                    nullable,
                )
                .map_err(invalid)?;
                let text = normalize(schema_type, &text).map_err(registry_error)?;
                Arc::new(RegisteredSchema::new(0, schema_type, text))
            };
            // A sink's schema is registered now; a source's too where its subject has
            // none yet (as ksqlDB registers it), else at its first write.
            let register = spec.format.uses_registry()
                && (sink || registry.latest(&subject).map_err(registry_error)?.is_none());
            let mut binding = sr::SchemaBinding::new(registry, subject, write);
            if schema_type == weir_format::registry::SchemaType::Protobuf {
                // The message written: the one named, which must be there.
                if let Some(name) = &full_name {
                    binding.write.protobuf().and_then(|p| p.message(Some(name))).map_err(
                        |_| {
                            invalid(format!(
                                "Schema for message {}s on topic '{topic}' does not exist in the Schema Registry.\nSubject: {}\nThe message {name} is not in its schema.",
                                side.to_ascii_lowercase(),
                                binding.subject
                            ))
                        },
                    )?;
                    binding.message = Some(name.clone());
                }
            }
            if register {
                binding.write_id().map_err(invalid)?;
            }
            spec.schema = Some(binding);
        }
        Ok(inferred)
    }

    fn format_spec(props: &Properties, side: &str, default: Option<Format>) -> Result<FormatSpec> {
        let name = prop(props, &format!("{side}_FORMAT")).or_else(|| prop(props, "FORMAT"));
        let format = match (name, default) {
            (Some(n), _) => Format::from_name(&n)?,
            (None, Some(d)) => d,
            (None, None) => {
                return Err(EngineError::Invalid(format!(
                    "Missing required property \"{side}_FORMAT\" in WITH clause"
                )));
            }
        };
        let mut spec = FormatSpec::new(format);
        if let Some(d) = prop(props, &format!("{side}_DELIMITER")) {
            spec.delimiter = match d.to_ascii_uppercase().as_str() {
                "TAB" => '\t',
                "SPACE" => ' ',
                _ if d.chars().count() == 1 => d.chars().next().expect("one char"),
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "Invalid delimiter '{d}': use a single character, TAB or SPACE"
                    )));
                }
            };
        }
        if side == "KEY" {
            // Keys are written bare, but for PROTOBUF's, always a message.
            spec.wrap_single = matches!(format, Format::Protobuf | Format::ProtobufNoSr);
        } else if let Some(w) = props.get("WRAP_SINGLE_VALUE") {
            spec.wrap_single =
                !matches!(w, Literal::Boolean(false)) && !w.as_text().eq_ignore_ascii_case("false");
        }
        Ok(spec)
    }

    /// The topic a source is declared on, created when missing: `PARTITIONS`, `REPLICAS`,
    /// and how long its data is kept: `RETENTION_MS` (as ksqlDB), `RETENTION_BYTES` and
    /// `CLEANUP_POLICY` (`'delete'`, `'compact'` or `'compact,delete'`; a table's topic
    /// is compacted unless it says otherwise, as ksqlDB's are — windowed ones excepted).
    fn ensure_topic(
        &self,
        topic: &str,
        props: &Properties,
        default_partitions: Option<u32>,
        table: bool,
    ) -> Result<u32> {
        let number = |name: &str| -> Result<Option<u64>> {
            prop(props, name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        EngineError::Invalid(format!(
                            "Invalid {name}: {v} (a whole number is expected)"
                        ))
                    })
                })
                .transpose()
        };
        let retention_ms = number("RETENTION_MS")?;
        let retention_bytes = number("RETENTION_BYTES")?;
        let compact = match prop(props, "CLEANUP_POLICY") {
            None => table,
            Some(p) => {
                let parts: std::collections::BTreeSet<String> = p
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect();
                if parts.is_empty() || !parts.iter().all(|s| s == "compact" || s == "delete") {
                    return Err(EngineError::Invalid(format!(
                        "Invalid CLEANUP_POLICY: '{p}' (use 'delete', 'compact' or 'compact,delete')"
                    )));
                }
                parts.contains("compact")
            }
        };
        let partitions = match prop(props, "PARTITIONS") {
            Some(p) => Some(
                p.parse::<u32>()
                    .map_err(|_| EngineError::Invalid(format!("Invalid PARTITIONS: {p}")))?,
            ),
            None => None,
        };
        if let Some(existing) = self.log.topic(topic)? {
            if let Some(p) = partitions
                && p != existing.config.partitions
            {
                return Err(EngineError::Invalid(format!(
                    "A Kafka topic with the name '{topic}' already exists, with different partition/replica configuration than required. KSQL expects {p} partitions (topic has {}).",
                    existing.config.partitions
                )));
            }
            return Ok(existing.config.partitions);
        }
        let partitions = partitions.or(default_partitions).unwrap_or(1);
        let replicas = prop(props, "REPLICAS")
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        self.log.create_topic(
            topic,
            TopicConfig {
                partitions,
                replicas,
                retention_ms,
                retention_bytes,
                compact,
                ..Default::default()
            },
        )?;
        Ok(partitions)
    }

    fn create_source(&mut self, c: &CreateSource) -> Result<Outcome> {
        if c.or_replace && c.is_source {
            return Err(EngineError::Invalid(format!(
                "Cannot add {} '{}': CREATE OR REPLACE is not supported on source {}s.",
                c.kind.to_string().to_lowercase(),
                c.name.value,
                c.kind.to_string().to_lowercase()
            )));
        }
        let table = c.kind == SourceKind::Table;
        let created = if table { "Table" } else { "Stream" };
        for col in &c.columns {
            match (table, &col.constraint) {
                (true, ColumnConstraint::Key) => {
                    return Err(EngineError::Invalid(format!(
                        "Column `{}` is a 'KEY' column: please use 'PRIMARY KEY' for tables.\nTables have PRIMARY KEYs, which are unique and NON NULL.\nStreams have KEYs, which have no uniqueness or NON NULL constraints.",
                        col.name.value
                    )));
                }
                (false, ColumnConstraint::PrimaryKey) => {
                    return Err(EngineError::Invalid(format!(
                        "Column `{}` is a 'PRIMARY KEY' column: please use 'KEY' for streams.\nTables have PRIMARY KEYs, which are unique and NON NULL.\nStreams have KEYs, which have no uniqueness or NON NULL constraints.",
                        col.name.value
                    )));
                }
                _ => {}
            }
        }
        if table
            && !c.columns.is_empty()
            && !c
                .columns
                .iter()
                .any(|col| col.constraint == ColumnConstraint::PrimaryKey)
        {
            return Err(EngineError::Invalid(
                "Tables require a PRIMARY KEY. Please define the PRIMARY KEY.".into(),
            ));
        }
        let name = c.name.value.clone();
        if c.if_not_exists && self.catalog.source(&name).is_some() {
            return Ok(Outcome::Created {
                kind: created,
                name,
            });
        }
        let topic = prop(&c.properties, "KAFKA_TOPIC").ok_or_else(|| {
            EngineError::Invalid("Missing required property \"KAFKA_TOPIC\" in WITH clause".into())
        })?;
        let mut key_columns = Vec::new();
        let mut value_columns = Vec::new();
        let mut header_columns = Vec::new();
        for col in &c.columns {
            let column = Column::new(&col.name.value, self.catalog.resolve(&col.ty)?);
            match &col.constraint {
                ColumnConstraint::Key | ColumnConstraint::PrimaryKey => key_columns.push(column),
                ColumnConstraint::None => value_columns.push(column),
                ColumnConstraint::Headers | ColumnConstraint::Header(_) => {
                    let key = match &col.constraint {
                        ColumnConstraint::Header(k) => Some(k.clone()),
                        _ => None,
                    };
                    let header = weir_format::HeaderColumn { column, key };
                    header
                        .validate()
                        .map_err(|e| EngineError::Invalid(e.to_string()))?;
                    header_columns.push(header);
                }
            }
        }
        if header_columns.iter().filter(|h| h.key.is_none()).count() > 1 {
            return Err(EngineError::Invalid(
                "Schema already contains a HEADERS column.".into(),
            ));
        }
        for col in key_columns
            .iter()
            .chain(&value_columns)
            .chain(header_columns.iter().map(|h| &h.column))
        {
            if is_reserved_column(&col.name) {
                return Err(EngineError::Invalid(format!(
                    "'{}' is a reserved column name. You cannot use it as a name for a column.",
                    col.name
                )));
            }
        }
        // Formats not given: the session's defaults (`ksql.persistence.default.format.*`).
        let default_format = |side: &str| -> Result<Option<Format>> {
            let given = prop(&c.properties, &format!("{}_FORMAT", side.to_uppercase()))
                .or_else(|| prop(&c.properties, "FORMAT"));
            if given.is_some() {
                return Ok(None);
            }
            let name = format!("ksql.persistence.default.format.{side}");
            match self.properties.get(&name).map(|v| v.trim()) {
                Some(v) if !v.is_empty() => Ok(Some(Format::from_name(v)?)),
                _ => Ok((side == "key").then_some(Format::Kafka)),
            }
        };
        let key_format = Self::format_spec(&c.properties, "KEY", default_format("key")?)?;
        // A keyless stream keeps a key format it was given (`FORMAT='JSON'`), which a
        // re-keyed sink inherits; given none, it has no key format at all.
        let declared =
            prop(&c.properties, "KEY_FORMAT").is_some() || prop(&c.properties, "FORMAT").is_some();
        let key_format = if key_columns.is_empty() && !declared {
            FormatSpec {
                format: Format::None,
                ..key_format
            }
        } else {
            key_format
        };
        let mut layout = Layout {
            key_columns,
            value_columns,
            key_format,
            value_format: Self::format_spec(&c.properties, "VALUE", default_format("value")?)?,
            header_columns,
        };
        self.default_wrapping(&mut layout, &c.properties);
        let inferred = self.bind_schemas(&mut layout, &topic, &c.properties, false)?;
        if inferred && table && layout.key_columns.is_empty() {
            return Err(EngineError::Invalid(
                "Tables require a PRIMARY KEY. Please define the PRIMARY KEY.".into(),
            ));
        }
        validate_layout(&layout, &c.properties)?;
        if c.columns.is_empty() && !inferred {
            return Err(EngineError::Invalid(
                "The statement does not define any columns.".into(),
            ));
        }
        if prop(&c.properties, "WINDOW_TYPE").is_some() && layout.key_columns.is_empty() {
            return Err(EngineError::Invalid(
                "Windowed sources require a key column.".into(),
            ));
        }
        if let Some(t) = prop(&c.properties, "WINDOW_TYPE")
            && !t.eq_ignore_ascii_case("SESSION")
            && prop(&c.properties, "WINDOW_SIZE").is_none()
        {
            return Err(EngineError::Invalid(format!(
                "{} windows require 'WINDOW_SIZE' in the WITH clause.",
                t.to_uppercase()
            )));
        }
        let timestamp_column = timestamp_column(&layout, &c.properties)?;
        let internal = is_internal_topic(&topic);
        if internal && self.log.topic(&topic)?.is_none() {
            return Err(reserved(&topic));
        }
        self.ensure_topic(
            &topic,
            &c.properties,
            None,
            table && prop(&c.properties, "WINDOW_TYPE").is_none(),
        )?;
        let source = Source {
            name: name.clone(),
            kind: c.kind,
            topic,
            layout,
            timestamp_column,
            timestamp_format: prop(&c.properties, "TIMESTAMP_FORMAT"),
            statement: Statement::CreateSource(c.clone()).to_string(),
            written_by: None,
            read_only: c.is_source || internal,
            window: prop(&c.properties, "WINDOW_TYPE").and_then(|t| {
                KeyWindow::from_properties(&t, prop(&c.properties, "WINDOW_SIZE").as_deref())
            }),
        };
        self.catalog.add_source(source, c.or_replace)?;
        Ok(Outcome::Created {
            kind: created,
            name,
        })
    }

    fn create_as_select(&mut self, c: &CreateAsSelect, stmt: &Statement) -> Result<Outcome> {
        let grouped = c.query.group_by.is_some();
        // A join reads as one relation, planned first (its refusals come before the
        // others); a source is looked up after the name is checked.
        let joined = if c.query.from.joins.is_empty() {
            None
        } else {
            Some(self.relation(&c.query)?)
        };
        // ksqlDB's refusals, as checks on the query's logical nodes.
        let shape = logical::shape(&c.query, &self.catalog);
        logical::check_result_kind(&shape, c.kind)?;
        // `PARTITION BY NULL` makes a stream without key columns: no key format to give.
        if matches!(c.query.partition_by.as_deref(), Some([weir_sql::sqlparser::ast::Expr::Value(v)]) if v.value == weir_sql::sqlparser::ast::Value::Null)
            && prop(&c.properties, "KEY_FORMAT").is_some_and(|f| !f.eq_ignore_ascii_case("NONE"))
        {
            return Err(EngineError::Invalid(
                "Key format specified for stream without key columns.".into(),
            ));
        }
        let from_table = match &joined {
            Some(r) => r.source.kind == SourceKind::Table,
            None => self
                .catalog
                .source(&c.query.from.source.name.value)
                .is_some_and(|s| s.kind == SourceKind::Table),
        };
        let name = c.name.value.clone();
        if let Some(existing) = self.catalog.source(&name) {
            if c.if_not_exists {
                return Ok(Outcome::Created {
                    kind: "Stream",
                    name,
                });
            }
            if !c.or_replace {
                return Err(EngineError::AlreadyExists {
                    kind: "stream",
                    name,
                    existing: existing.kind_name(),
                });
            }
        }
        let relation = match joined {
            Some(r) => r,
            None => self.relation(&c.query)?,
        };
        logical::check_no_windowed_table(&shape)?;
        if from_table && relation.query.select.iter().any(|i| {
            matches!(i, weir_sql::ast::SelectItem::Expr { expr, .. } if plan::is_table_function(expr))
        }) {
            return Err(EngineError::Invalid(
                "Table source is not supported with table functions".into(),
            ));
        }
        let (plan, mut aggregate) = self.plan_over(&relation, true)?;
        if let Some(a) = aggregate.as_mut() {
            self.tune_aggregate(a)?;
        }
        let Relation {
            source,
            join: joiner,
            ..
        } = relation;
        let inherited = match source.layout.key_format.format {
            // A sink that gains key columns (PARTITION BY) from a keyless source: ksqlDB's default.
            Format::None => Format::Kafka,
            f => f,
        };
        let key_format = match Self::format_spec(&c.properties, "KEY", Some(inherited))? {
            s if plan.output_layout_columns.0.is_empty() => FormatSpec {
                format: Format::None,
                ..s
            },
            s => s,
        };
        let value_format = Self::format_spec(
            &c.properties,
            "VALUE",
            Some(source.layout.value_format.format),
        )?;
        let value_format = if prop(&c.properties, "VALUE_FORMAT").is_none()
            && prop(&c.properties, "FORMAT").is_none()
            && prop(&c.properties, "VALUE_DELIMITER").is_none()
        {
            FormatSpec {
                wrap_single: value_format.wrap_single,
                ..source.layout.value_format.clone()
            }
        } else {
            value_format
        };
        let template = Layout {
            key_columns: vec![],
            value_columns: vec![],
            key_format,
            value_format,
            header_columns: Vec::new(),
        };
        let mut layout = plan.output_layout(&template);
        self.default_wrapping(&mut layout, &c.properties);
        validate_layout(&layout, &c.properties)?;
        timestamp_column(&layout, &c.properties)?;
        if layout.value_format.format == Format::Delimited
            && aggregate
                .as_ref()
                .is_some_and(|a| a.has_structured_intermediate())
        {
            return Err(EngineError::Invalid(
                "One of the functions used in the statement has an intermediate type that the value format can not handle. Please remove the function or change the format.".into(),
            ));
        }
        // Not named: the sink's name, after `ksql.output.topic.name.prefix` when set.
        let topic = prop(&c.properties, "KAFKA_TOPIC").unwrap_or_else(|| {
            let prefix = self
                .properties
                .get(OUTPUT_TOPIC_PREFIX)
                .map(String::as_str)
                .unwrap_or_default();
            format!("{prefix}{name}")
        });
        if is_internal_topic(&topic) {
            return Err(reserved(&topic));
        }
        layout.key_format.schema = None;
        layout.value_format.schema = None;
        self.bind_schemas(&mut layout, &topic, &c.properties, true)?;
        let source_partitions = self.log.topic(&source.topic)?.map(|t| t.config.partitions);
        let windowed = match &aggregate {
            Some(a) => a.key_window().is_some(),
            None => plan.window_bounds.and(source.window).is_some(),
        };
        self.ensure_topic(
            &topic,
            &c.properties,
            source_partitions,
            c.kind == SourceKind::Table && !windowed,
        )?;
        let sink = Source {
            name: name.clone(),
            kind: c.kind,
            topic,
            layout,
            timestamp_column: prop(&c.properties, "TIMESTAMP").map(|t| t.to_uppercase()),
            timestamp_format: prop(&c.properties, "TIMESTAMP_FORMAT"),
            statement: stmt.to_string(),
            written_by: None,
            read_only: false,
            // A windowed aggregation's, or the windowed source's a query passes on.
            window: match &aggregate {
                Some(a) => a.key_window(),
                None => plan.window_bounds.and(source.window),
            },
        };
        self.catalog.add_source(sink, c.or_replace)?;
        let prefix = if grouped { "CTAS" } else { "CSAS" };
        let parts = Parts {
            query: &c.query,
            plan,
            aggregate,
            join: joiner,
        };
        match self.start_query(&name, &source, parts, stmt, prefix) {
            Ok(query_id) => {
                if let Some(s) = self.catalog.source_mut(&name) {
                    s.written_by = Some(query_id.clone());
                }
                Ok(Outcome::QueryStarted {
                    query_id,
                    sink: name,
                })
            }
            Err(e) => {
                self.catalog.remove_source(&name);
                Err(e)
            }
        }
    }

    /// Plans a query's joins over the catalog (see `join.rs`), with what ksqlDB refuses
    /// beyond the plan: sources with different partition counts, and window bounds
    /// selected from a windowed aggregation over a join.
    pub(crate) fn plan_join(&self, query: &weir_sql::ast::Query) -> Result<join::JoinPlan> {
        let j = join::plan_join(&self.functions, query, |n| self.stream(n))?;
        let partitions = |s: &Source| -> Result<Option<u32>> {
            Ok(self.log.topic(&s.topic)?.map(|t| t.config.partitions))
        };
        let first = &j.joiner.inputs[0].source;
        // A foreign-key join repartitions its right side; others need co-partitioning.
        for i in j.joiner.inputs[1..]
            .iter()
            .filter(|_| !j.joiner.has_foreign_key())
        {
            let (a, b) = (partitions(first)?, partitions(&i.source)?);
            if a != b {
                return Err(EngineError::Invalid(format!(
                    "Can't join `{}` with `{}` since the number of partitions don't match. `{}` partitions = {}; `{}` partitions = {}. Please repartition either one so that the number of partitions match.",
                    first.name,
                    i.source.name,
                    first.name,
                    a.unwrap_or(0),
                    i.source.name,
                    b.unwrap_or(0)
                )));
            }
        }
        if query.window.is_some() {
            for item in &query.select {
                if let weir_sql::ast::SelectItem::Expr { expr, .. } = item
                    && let Some(c) =
                        plan::column_name(expr).filter(|c| WINDOW_BOUNDS.contains(&c.as_str()))
                {
                    return Err(EngineError::Invalid(format!(
                        "SELECT column '{c}' cannot be resolved."
                    )));
                }
            }
        }
        Ok(j)
    }

    /// What a query reads as one relation: its source, or the relation its joins make
    /// (planned first; the rest of the query plans over it).
    pub(crate) fn relation(&self, query: &weir_sql::ast::Query) -> Result<Relation> {
        if query.from.joins.is_empty() {
            return Ok(Relation {
                source: self.stream(&query.from.source.name.value)?,
                query: query.clone(),
                join: None,
                written: query.clone(),
            });
        }
        let j = self.plan_join(query).map_err(|e| {
            let sources: Vec<(&str, Source)> = std::iter::once(&query.from.source)
                .chain(query.from.joins.iter().map(|j| &j.source))
                .filter_map(|s| {
                    let alias = s.alias.as_ref().unwrap_or(&s.name).value.as_str();
                    Some((alias, self.stream(&s.name.value).ok()?))
                })
                .collect();
            let scope = names::Scope {
                inputs: sources.iter().map(|(a, s)| (*a, s)).collect(),
                functions: &self.functions,
                renames: Vec::new(),
            };
            scope.explain(e, query)
        })?;
        Ok(Relation {
            source: j.joiner.relation.clone(),
            query: j.query,
            join: Some(j.joiner),
            written: query.clone(),
        })
    }

    /// The stateless plan over a relation and its GROUP BY, for a sink (persistent
    /// queries and their EXPLAIN) or for a client (push queries). With GROUP BY the plan
    /// is the aggregation's stateless step, showing the aggregation's output columns.
    pub(crate) fn plan_over(
        &self,
        r: &Relation,
        to_sink: bool,
    ) -> Result<(SelectPlan, Option<aggregate::Aggregator>)> {
        let planned = if r.query.group_by.is_some() {
            aggregate::plan_aggregate(&self.functions, &r.query, &r.source, to_sink).map(|a| {
                let mut shown = a.pre.clone();
                shown.output_layout_columns = a.output_layout_columns.clone();
                (shown, Some(a))
            })
        } else if to_sink {
            plan_select(&self.functions, &r.query, &r.source).map(|p| (p, None))
        } else {
            plan::plan_push(&self.functions, &r.query, &r.source).map(|p| (p, None))
        };
        planned.map_err(|e| r.scope(&self.functions).explain(e, &r.written))
    }

    /// Starts a planned query writing into `sink_name`; returns its id.
    fn start_query(
        &mut self,
        sink_name: &str,
        source: &Source,
        parts: Parts<'_>,
        stmt: &Statement,
        prefix: &str,
    ) -> Result<String> {
        let Parts {
            query,
            plan,
            aggregate,
            join: joiner,
        } = parts;
        let sink = self.stream(sink_name)?;
        // INSERT INTO: the query's output must fit the sink's columns.
        let (keys, values) = &plan.output_layout_columns;
        if keys != &sink.layout.key_columns || values != &sink.layout.value_columns {
            return Err(EngineError::Invalid(format!(
                "Incompatible schema between results and sink. Result schema is {}, but sink schema is {}.",
                describe_columns(keys, values),
                describe_columns(&sink.layout.key_columns, &sink.layout.value_columns)
            )));
        }
        let id = format!("{prefix}_{}_{}", sink.name, self.query_counter);
        let query = self.assemble_query(
            id.clone(),
            &sink,
            source,
            Parts {
                query,
                plan,
                aggregate,
                join: joiner,
            },
            stmt.to_string(),
        )?;
        self.query_counter += 1;
        let view = query.view.clone();
        self.queries.insert(
            id.clone(),
            Entry {
                query: Arc::new(Mutex::new(query)),
                view,
            },
        );
        if self.durable && !self.replaying {
            let mut q = lock(&self.queries[&id].query);
            match q.owned.take() {
                // Servers sharing work: where it starts, for every unit at epoch 0, so
                // whichever server claims a unit first starts it there.
                Some(held) => {
                    q.owned = Some((0..q.units().0).map(|u| (u, 0)).collect());
                    let saved = q.checkpoint(self.log.as_ref());
                    q.owned = Some(held);
                    saved?;
                }
                None => q.checkpoint(self.log.as_ref())?,
            }
            // Stored before the statement is acknowledged: where the query starts is
            // never lost (a later checkpoint lost to a power cut only means more is read
            // again; its outputs are found by their source headers).
            self.log.sync_topic(&self.offsets_topic)?;
        }
        Ok(id)
    }

    /// A persistent query as it starts: reading from where `auto.offset.reset` says (a
    /// checkpoint, when there is one, moves it on), its operators' state empty.
    fn assemble_query(
        &self,
        id: String,
        sink: &Source,
        source: &Source,
        parts: Parts<'_>,
        statement: String,
    ) -> Result<PersistentQuery> {
        let Parts {
            query,
            plan,
            aggregate,
            join: mut joiner,
        } = parts;
        let earliest = self.earliest(&BTreeMap::new());
        // A join reads each of its sources; the query's own offsets are unused.
        let offsets = match joiner.as_mut() {
            Some(j) => {
                for input in &mut j.inputs {
                    input.offsets =
                        push::start_offsets(self.log.as_ref(), &input.source.topic, earliest)?;
                }
                Vec::new()
            }
            None => push::start_offsets(self.log.as_ref(), &source.topic, earliest)?,
        };
        let logical = logical::build(logical::Parts {
            query,
            catalog: &self.catalog,
            relation: joiner.as_ref().map(|_| source),
            aggregate: aggregate.as_ref().map(|a| a.describe()),
            output: (
                &plan.output_layout_columns.0,
                &plan.output_layout_columns.1,
                sink.window.is_some(),
            ),
            sink: Some(sink),
        });
        let stop_on_error = self
            .properties
            .get(FAIL_ON_FUNCTION_ERROR)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut pipeline = pipeline::Pipeline::assemble(
            source,
            joiner.map(Box::new),
            plan.clone(),
            aggregate,
            offsets,
            pipeline::OnError {
                stop: stop_on_error,
                warnings: self.functions.warning_source,
            },
        );
        pipeline.set_threads(self.parallelism);
        if self.cluster.is_some()
            && self
                .properties
                .get(DIVIDE_STATE_PROPERTY)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            pipeline.divide_state_by_partition();
        }
        pipeline.set_tracking(self.durable);
        let commit_every = self
            .properties
            .get(CHECKPOINT_INTERVAL_PROPERTY)
            .or_else(|| settings::streams_property(&self.properties, COMMIT_INTERVAL_PROPERTY))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_COMMIT_INTERVAL, Duration::from_millis);
        let sink_partitions = self
            .log
            .topic(&sink.topic)?
            .map(|t| t.config.partitions)
            .unwrap_or(1);
        let view = QueryView {
            id: id.clone(),
            statement: statement.clone(),
            sink: sink.name.clone(),
            sink_topic: sink.topic.clone(),
            source: plan.source.clone(),
            source_topic: source.topic.clone(),
            sink_layout: sink.layout.clone(),
            sources: pipeline.sources(),
            window_type: pipeline.window_type(),
            execution_plan: pipeline.explain(&logical, Some(&sink.topic)),
            stages: pipeline.stage_names(),
            stage_rows: pipeline.stage_rows.clone(),
            stats: meta::QueryStats::default(),
            late: 0,
            error: None,
            paused: false,
            offsets: pipeline.offsets().to_vec(),
            anchor: None,
        };
        Ok(PersistentQuery {
            view: Arc::new(Mutex::new(view)),
            offsets_topic: self.offsets_topic.clone(),
            group: consumer_group(&self.service_id, &id),
            group_failed: false,
            id,
            statement,
            properties: self.properties.clone(),
            retry: None,
            terminated: false,
            paused: false,
            sink: sink.name.clone(),
            plan,
            source_topic: source.topic.clone(),
            pipeline,
            sink_topic: sink.topic.clone(),
            sink_layout: sink.layout.clone(),
            sink_window: sink.window,
            sink_partitions,
            already_written: BTreeMap::new(),
            sink_timestamp: sink
                .timestamp_column
                .clone()
                .map(|c| (c, sink.timestamp_format.clone())),
            stats: meta::QueryStats::default(),
            error: None,
            since_full: delta::FULL_EVERY,
            full_bytes: 0,
            delta_bytes: 0,
            checkpoint_text: Vec::new(),
            anchor: None,
            commit_every,
            last_checkpoint: Instant::now(),
            unsaved: false,
            owned: self.cluster.as_ref().map(|_| BTreeMap::new()),
            handoff: false,
            member: self.cluster.as_ref().map(|c| c.member().to_string()),
        })
    }

    fn insert_values(
        &mut self,
        target: &str,
        columns: &[weir_sql::ast::Ident],
        values: &[weir_sql::ast::Expr],
    ) -> Result<Outcome> {
        let source = self.insert_target(target)?;
        let layout = &source.layout;
        let all = insert::row_columns(&source);
        let names: Vec<String> = if columns.is_empty() {
            all.iter().map(|c| c.name.clone()).collect()
        } else {
            columns.iter().map(|c| c.value.clone()).collect()
        };
        let headers: Vec<&str> = layout
            .header_columns
            .iter()
            .map(|h| h.column.name.as_str())
            .filter(|h| names.iter().any(|n| n == h))
            .collect();
        if !headers.is_empty() {
            return Err(EngineError::Invalid(format!(
                "Cannot insert into HEADER columns: {}",
                headers.join(", ")
            )));
        }
        if names.len() != values.len() {
            return Err(EngineError::Invalid(format!(
                "Expected a value for each column. Expected Columns: [{}]. Got [{}]",
                names.join(", "),
                values
                    .iter()
                    .map(|v| weir_sql::ast::fmt_expr(v).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // Constant expressions evaluate over a one-row batch with no columns.
        let empty = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
        )
        .map_err(|e| EngineError::Execution(e.to_string()))?;
        let compiler = plan::ExprCompiler::new(&self.functions, &Schema::empty(), None)?;
        let mut rowtime = None;
        let mut arrays: BTreeMap<String, ArrayRef> = BTreeMap::new();
        for (name, value) in names.iter().zip(values) {
            let compiled = compiler.compile(value)?;
            let array = compiled.expr.evaluate(&empty)?.into_array(1)?;
            if name == "ROWTIME" {
                let a = arrow::compute::cast(&array, &DataType::Int64)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                rowtime = Some(a.as_primitive::<Int64Type>().value(0));
                continue;
            }
            let column = all.iter().find(|c| c.name == *name).ok_or_else(|| {
                EngineError::Invalid(format!("Column name {name} does not exist."))
            })?;
            let target_type = weir_format::arrow_type(&column.ty);
            let cast = arrow::compute::cast(&array, &target_type).map_err(|e| {
                EngineError::Invalid(format!(
                    "Expected type {} for field {name} but got {}: {e}",
                    column.ty,
                    weir_sql::ast::fmt_expr(value)
                ))
            })?;
            arrays.insert(name.clone(), cast);
        }
        let schema = insert::row_schema(all.iter().copied());
        let cols: Vec<ArrayRef> = all
            .iter()
            .map(|c| {
                arrays.remove(&c.name).unwrap_or_else(|| {
                    arrow::array::new_null_array(&weir_format::arrow_type(&c.ty), 1)
                })
            })
            .collect();
        let batch = RecordBatch::try_new(schema, cols)
            .map_err(|e| EngineError::Execution(e.to_string()))?;
        let (key, value) = layout.encode(&batch)?.remove(0);
        let timestamp = rowtime.unwrap_or_else(now_ms);
        self.log.produce(
            &source.topic,
            Record {
                key,
                value,
                timestamp,
                headers: vec![],
            },
        )?;
        Ok(Outcome::Inserted)
    }

    /// What DROP of source `name` does, checked: `None` when there is nothing to drop
    /// (IF EXISTS of a missing source), else the query that creates it (a CREATE ... AS
    /// SELECT's), which the drop terminates first, as ksqlDB does. Refused while other
    /// queries read or write the source.
    fn drop_check(
        &self,
        kind: SourceKind,
        if_exists: bool,
        name: &str,
        delete_topic: bool,
    ) -> Result<Option<Option<String>>> {
        let Some(source) = self.catalog.source(name) else {
            if if_exists {
                return Ok(None);
            }
            let kind = if kind == SourceKind::Stream {
                "Stream"
            } else {
                "Table"
            };
            return Err(EngineError::UnknownSource {
                kind,
                name: name.to_string(),
            });
        };
        if source.kind != kind {
            return Err(EngineError::Invalid(format!(
                "Incompatible data source type is {}, but statement was DROP {}",
                source.kind_name().to_uppercase(),
                kind
            )));
        }
        // The query that creates it goes with it; any other that reads or writes it
        // (INSERT INTO, a query over it) must be terminated first.
        let creator = source
            .written_by
            .clone()
            .filter(|id| self.queries.contains_key(id) || self.broken.contains_key(id));
        let readers: Vec<String> = self
            .queries()
            .filter(|q| q.source == name || q.sink == name)
            .filter(|q| Some(&q.id) != creator.as_ref())
            .map(|q| q.id.clone())
            .collect();
        if !readers.is_empty() {
            return Err(EngineError::Invalid(format!(
                "Cannot drop {name}.\nThe following queries read from or write to this source: [{}].\nYou need to terminate them before dropping {name}.",
                readers.join(", ")
            )));
        }
        if delete_topic && source.read_only {
            return Err(EngineError::Invalid(format!(
                "Cannot delete topic for read-only source: {name}"
            )));
        }
        Ok(Some(creator))
    }

    fn drop_source(
        &mut self,
        kind: SourceKind,
        if_exists: bool,
        name: &str,
        delete_topic: bool,
    ) -> Result<Outcome> {
        let Some(creator) = self.drop_check(kind, if_exists, name, delete_topic)? else {
            return Ok(Outcome::Dropped {
                name: name.to_string(),
            });
        };
        if let Some(id) = creator {
            self.terminate(&QueryTarget::Query(weir_sql::ast::Ident::new(id)))?;
        }
        let source = self.catalog.remove_source(name).expect("checked above");
        if delete_topic {
            // Once the statement is recorded ([`Engine::execute`]).
            self.dropped_topics.push(source.topic);
        }
        Ok(Outcome::Dropped {
            name: name.to_string(),
        })
    }

    /// The queries TERMINATE `target` stops (an unknown id is an error).
    fn terminate_ids(&self, target: &QueryTarget) -> Result<Vec<String>> {
        let ids: Vec<String> = match target {
            QueryTarget::All => self
                .queries
                .keys()
                .chain(self.broken.keys())
                .cloned()
                .collect(),
            QueryTarget::Query(id) => {
                let id = self
                    .queries
                    .keys()
                    .chain(self.broken.keys())
                    .find(|k| k.eq_ignore_ascii_case(&id.value))
                    .cloned()
                    .ok_or_else(|| {
                        EngineError::Invalid(format!("Unknown queryId: {}", id.value))
                    })?;
                vec![id]
            }
        };
        Ok(ids)
    }

    /// One check of an ASSERT: what it says holds now, or the error that says what does
    /// not. (A server checks again until the statement's TIMEOUT, without the engine.)
    fn assert(&mut self, a: &weir_sql::ast::Assert) -> Result<Outcome> {
        use weir_sql::ast::AssertWhat;
        let want = !a.not_exists;
        match &a.what {
            AssertWhat::Topic { name, properties } => {
                // The topic of that name, else the one whose name differs only in case
                // (an unquoted name is upper-cased).
                let topic = match self.log.topic(&name.value)? {
                    Some(t) => Some(t),
                    None => {
                        let found = self
                            .log
                            .list_topics()?
                            .into_iter()
                            .find(|t| t.name.eq_ignore_ascii_case(&name.value));
                        match found {
                            Some(t) => self.log.topic(&t.name)?,
                            None => None,
                        }
                    }
                };
                match (&topic, want) {
                    (Some(_), false) => {
                        return Err(EngineError::Invalid(format!("Topic {} exists", name.value)));
                    }
                    (None, true) => {
                        return Err(EngineError::Invalid(format!(
                            "Topic {} does not exist",
                            name.value
                        )));
                    }
                    _ => {}
                }
                if let Some(t) = &topic {
                    for (key, actual) in [
                        ("PARTITIONS", t.config.partitions as u64),
                        ("REPLICAS", t.config.replicas as u64),
                    ] {
                        if let Some(v) = properties.get(key) {
                            let expected = v.as_text();
                            if expected.trim().parse::<u64>().ok() != Some(actual) {
                                return Err(EngineError::Invalid(format!(
                                    "Mismatched configuration for topic {}: For config {}, expected {} got {}",
                                    t.name,
                                    key.to_ascii_lowercase(),
                                    expected,
                                    actual
                                )));
                            }
                        }
                    }
                }
                Ok(Outcome::Asserted {
                    what: "topic",
                    name: topic.map(|t| t.name).unwrap_or_else(|| name.value.clone()),
                    exists: want,
                })
            }
            AssertWhat::Schema { subject, id } => {
                let registry = self.schema_registry()?;
                let unavailable =
                    |e: weir_format::registry::RegistryError| EngineError::Invalid(e.to_string());
                let subject = subject.as_ref().map(|s| s.value.clone());
                let id = id.map(|i| i as u32);
                // The subject has versions (one of them the id, when given); or the id is a
                // schema.
                let found = match (&subject, id) {
                    (Some(s), id) => match registry.versions(s) {
                        Ok(versions) => match id {
                            None => !versions.is_empty(),
                            Some(id) => versions.iter().any(|v| {
                                registry
                                    .version(s, Some(*v))
                                    .is_ok_and(|v| v.schema.id == id)
                            }),
                        },
                        Err(weir_format::registry::RegistryError::SubjectNotFound(_)) => false,
                        Err(e) => return Err(unavailable(e)),
                    },
                    (None, Some(id)) => match registry.by_id(id) {
                        Ok(_) => true,
                        Err(weir_format::registry::RegistryError::SchemaNotFound(_)) => false,
                        Err(e) => return Err(unavailable(e)),
                    },
                    (None, None) => {
                        return Err(EngineError::Invalid(
                            "ASSERT SCHEMA needs a SUBJECT or an ID".into(),
                        ));
                    }
                };
                let mut what = String::from("Schema with");
                if let Some(s) = &subject {
                    what.push_str(&format!(" subject name {s}"));
                }
                if let Some(i) = id {
                    what.push_str(&format!(" id {i}"));
                }
                match (found, want) {
                    (true, false) => Err(EngineError::Invalid(format!("{what} exists"))),
                    (false, true) => Err(EngineError::Invalid(format!("{what} does not exist"))),
                    _ => Ok(Outcome::Asserted {
                        what: "schema",
                        name: subject.unwrap_or_else(|| id.unwrap_or_default().to_string()),
                        exists: want,
                    }),
                }
            }
            AssertWhat::Source { kind, name } => {
                let found = self.catalog.source(&name.value).filter(|s| s.kind == *kind);
                let noun = match kind {
                    SourceKind::Stream => "stream",
                    SourceKind::Table => "table",
                };
                match (found.is_some(), want) {
                    (true, false) => Err(EngineError::Invalid(format!(
                        "{} {} exists",
                        capitalized_noun(noun),
                        name.value
                    ))),
                    (false, true) => Err(EngineError::Invalid(format!(
                        "{} {} does not exist",
                        capitalized_noun(noun),
                        name.value
                    ))),
                    _ => Ok(Outcome::Asserted {
                        what: noun,
                        name: name.value.clone(),
                        exists: want,
                    }),
                }
            }
        }
    }

    /// PAUSE (`paused`) or RESUME persistent queries: a paused query reads nothing, its
    /// offsets and state kept, until resumed (a restart keeps it paused: the statement is
    /// in the command log).
    fn pause(&mut self, target: &QueryTarget, paused: bool) -> Result<Outcome> {
        let ids: Vec<String> = self
            .terminate_ids(target)?
            .into_iter()
            .filter(|id| self.queries.contains_key(id))
            .collect();
        for id in &ids {
            if let Some(entry) = self.queries.get(id) {
                let mut q = lock(&entry.query);
                q.paused = paused;
                q.view.lock().unwrap_or_else(|e| e.into_inner()).paused = paused;
            }
        }
        Ok(Outcome::Paused {
            query_ids: ids,
            paused,
        })
    }

    fn terminate(&mut self, target: &QueryTarget) -> Result<Outcome> {
        let ids = self.terminate_ids(target)?;
        for id in &ids {
            self.broken.remove(id);
            let Some(entry) = self.queries.remove(id) else {
                continue;
            };
            // After a step in progress; a worker that took it before it left the map
            // finds it terminated.
            let mut q = lock(&entry.query);
            q.terminated = true;
            if let Some(s) = self.catalog.source_mut(&q.sink)
                && s.written_by.as_deref() == Some(id.as_str())
            {
                s.written_by = None;
            }
        }
        Ok(Outcome::Terminated { query_ids: ids })
    }

    /// Advances every persistent query until none has input left. Returns how many source
    /// records were consumed.
    pub fn run_until_idle(&mut self) -> Result<u64> {
        let mut total = 0;
        loop {
            let progressed = self.run_once()?;
            if progressed == 0 {
                return Ok(total);
            }
            total += progressed;
        }
    }

    /// Checkpoints every query that has consumed records since its last checkpoint, so
    /// that the next start resumes exactly where this one stopped (an engine dropped
    /// without it reads those records again, writing none of their output twice).
    pub fn close(&mut self) -> Result<()> {
        for e in self.queries.values() {
            let mut q = lock(&e.query);
            if q.unsaved && q.may_checkpoint() {
                q.checkpoint(self.log.as_ref())?;
            }
            // What it held is the others' to take at once.
            if let (Some(c), Some(owned)) = (&self.cluster, q.owned.take()) {
                c.release(&q.id, &owned)?;
            }
        }
        if let Some(c) = &self.cluster {
            c.leave();
        }
        Ok(())
    }
}

/// Sets each of `queries` to its last checkpoint (offsets and operator state), then finds
/// which records after it already have their output in the sink (by the source header),
/// so that reprocessing them writes nothing twice: what a restart does, and what a query
/// that failed does before it runs again.
fn recover<'a>(
    log: &dyn Log,
    offsets_topic: &str,
    queries: impl IntoIterator<Item = &'a mut PersistentQuery>,
) -> Result<()> {
    let mut queries: BTreeMap<String, &'a mut PersistentQuery> =
        queries.into_iter().map(|q| (q.id.clone(), q)).collect();
    let mut last: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    // A join's steps that started after its query's last checkpoint: what each read.
    let mut intents: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    // Each query's operator state, per server that wrote it (its own chain on servers
    // sharing work): its last full snapshot with the changes after it.
    let mut states: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    // Where each query's last checkpoint is among the records.
    let mut last_index: BTreeMap<String, usize> = BTreeMap::new();
    // Servers sharing work (`cluster`): per query and unit, the highest epoch checkpointed
    // and what the last checkpoint at it says of the unit. A checkpoint at a lower epoch
    // than one before it was written by a server that had lost the unit: never used.
    let mut epochs: BTreeMap<String, BTreeMap<cluster::Unit, u64>> = BTreeMap::new();
    let mut units: BTreeMap<String, BTreeMap<cluster::Unit, UnitCheckpoint>> = BTreeMap::new();
    let records = read_topic_records(log, offsets_topic)?;
    for (i, v) in parsed_checkpoints(&records) {
        if let Some(q) = v["query"].as_str() {
            if !queries.contains_key(q) {
                continue;
            }
            let covers: Vec<(cluster::Unit, u64)> = v["epochs"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(u, e)| Some((u.parse().ok()?, e.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default();
            let best = epochs.entry(q.to_string()).or_default();
            if covers
                .iter()
                .any(|(u, e)| best.get(u).is_some_and(|b| e < b))
            {
                continue;
            }
            for (u, e) in &covers {
                best.insert(*u, *e);
                units
                    .entry(q.to_string())
                    .or_default()
                    .insert(*u, UnitCheckpoint::of(&v, *u, i));
            }
            intents.remove(q);
            let chain = (q.to_string(), checkpoint_member(&v));
            if let Some(full) = v.get("full") {
                states.insert(chain, full.clone());
            } else if let (Some(d), Some(s)) = (v.get("delta"), states.get_mut(&chain)) {
                delta::apply(s, d);
            }
            last_index.insert(q.to_string(), i);
            last.insert(q.to_string(), v);
        } else if let Some(q) = v["intent_for"].as_str() {
            intents
                .entry(q.to_string())
                .or_default()
                .push(v["ends"].clone());
        }
    }
    for (id, steps) in intents {
        if let Some(j) = queries.get_mut(&id).and_then(|q| q.pipeline.join_mut()) {
            j.replay = steps
                .into_iter()
                .filter_map(|ends| serde_json::from_value(ends).ok())
                .collect();
        }
    }
    // Sharing work with a state divided by partition: per query, the checkpoint each
    // partition it holds is taken from, and (below) the states those checkpoints carry.
    let mut divided: BTreeMap<String, BTreeMap<u32, usize>> = BTreeMap::new();
    for q in queries.values() {
        if let (Some(owned), Some(i)) = (&q.owned, last_index.get(&q.id))
            && !q.units().1
            && q.pipeline.has_state()
        {
            let chosen = units.get(&q.id);
            let at = owned
                .keys()
                .map(|p| (*p, chosen.and_then(|u| u.get(p)).map_or(*i, |c| c.index)))
                .collect();
            divided.insert(q.id.clone(), at);
        }
    }
    let mut divided_states = states_at(&records, &divided);
    for q in queries.into_values() {
        let Some(cp) = last.get(&q.id) else { continue };
        // Sharing work and partition by partition: each partition it holds from its own
        // checkpoint (perhaps another server's).
        if let Some(owned) = &q.owned
            && !q.units().1
        {
            let units = units.remove(&q.id).unwrap_or_default();
            if let Some(at) = divided.get(&q.id) {
                // Each partition's groups from the state of the checkpoint it is taken
                // from (one that carries none leaves that partition's empty).
                let parts: Vec<(&serde_json::Value, u32)> = at
                    .iter()
                    .filter_map(|(p, i)| Some((divided_states.get(&(q.id.clone(), *i))?, *p)))
                    .collect();
                let unread = q.pipeline.restore_units(&parts);
                say_unread(&q.id, unread);
                q.since_full = delta::FULL_EVERY;
                divided_states.retain(|(id, _), _| *id != q.id);
            }
            let mut offsets = q.pipeline.offsets().to_vec();
            let mut scan_from: Vec<u64> = Vec::new();
            for p in owned.keys() {
                let unit = units.get(p).cloned().unwrap_or_else(|| {
                    UnitCheckpoint::of(cp, *p, last_index.get(&q.id).copied().unwrap_or(0))
                });
                if let (Some(slot), Some(o)) = (offsets.get_mut(*p as usize), unit.offset) {
                    *slot = o;
                }
                for [src, sink, max] in unit.ahead {
                    let e = q
                        .already_written
                        .entry((src as u32, sink as u32))
                        .or_insert(max);
                    *e = (*e).max(max);
                }
                for (i, end) in unit.sink_ends.iter().enumerate() {
                    match scan_from.get_mut(i) {
                        Some(x) => *x = (*x).min(*end),
                        None => scan_from.push(*end),
                    }
                }
            }
            q.pipeline.set_offsets(offsets);
            find_written(log, q, &scan_from)?;
            continue;
        }
        if q.owned.as_ref().is_some_and(BTreeMap::is_empty) {
            continue;
        }
        q.pipeline.set_offsets(as_offsets(&cp["offsets"]));
        if let Some(state) = states.remove(&(q.id.clone(), checkpoint_member(cp))) {
            let unread = q.pipeline.restore(&state);
            say_unread(&q.id, unread);
            // The next checkpoint is a full one: a fresh anchor for the next recovery.
            q.since_full = delta::FULL_EVERY;
        }
        // Outputs written ahead of the checkpoint by an earlier interrupted step (they
        // lie before `sink_ends`, so the scan below does not see them).
        for e in cp["ahead"].as_array().into_iter().flatten() {
            if let (Some(p), Some(s), Some(o)) = (e[0].as_u64(), e[1].as_u64(), e[2].as_u64()) {
                let max = q.already_written.entry((p as u32, s as u32)).or_insert(o);
                *max = (*max).max(o);
            }
        }
        find_written(log, q, &as_offsets(&cp["sink_ends"]))?;
    }
    Ok(())
}

/// How the internal topics (command log, checkpoints, members) are created on Kafka:
/// `ksql.internal.topic.replicas` copies, `ksql.internal.topic.min.insync.replicas` of
/// which must have an append before it is acknowledged; kept whatever the broker's
/// retention. (The embedded log keeps one copy.)
#[derive(Debug, Clone, Copy)]
pub struct InternalTopics {
    pub replicas: u16,
    pub min_insync_replicas: Option<u16>,
    /// On a log servers share: delete the checkpoints no recovery needs any more
    /// (`weir.checkpoint.trim`; see [`Engine::trim_shared_checkpoints`]). Off for brokers
    /// without DeleteRecords (tansu 0.6's SQLite storage fails on it).
    pub trim_checkpoints: bool,
}

impl Default for InternalTopics {
    fn default() -> Self {
        Self {
            replicas: 1,
            min_insync_replicas: None,
            trim_checkpoints: true,
        }
    }
}

impl InternalTopics {
    pub(crate) fn config(&self, segment_bytes: Option<u64>) -> TopicConfig {
        TopicConfig {
            replicas: self.replicas,
            min_insync_replicas: self.min_insync_replicas,
            segment_bytes,
            // The catalog and the state: never deleted by age or size.
            keep_forever: true,
            ..Default::default()
        }
    }
}

/// The key suffix of a checkpoint's leading parts (see [`checkpoint_records`]).
pub const PART_SUFFIX: &[u8] = b"#part";

/// A checkpoint's text as the records it is written in: one, keyed by the query's id;
/// or, when larger than a record may be (a large state's full snapshot), leading parts
/// keyed `<id>#part`, then the last part keyed by the id. They are appended together:
/// recovery joins the parts that precede a checkpoint's last record, in order.
fn checkpoint_records(id: &str, bytes: Vec<u8>, max_record_bytes: usize) -> Vec<Record> {
    // Room for the key and the record's framing.
    let room = max_record_bytes.saturating_sub(id.len() + 256).max(1024);
    let record = |key: Vec<u8>, value: Vec<u8>| Record {
        key: Some(key),
        value: Some(value),
        timestamp: now_ms(),
        headers: vec![],
    };
    if bytes.len() <= room {
        return vec![record(id.as_bytes().to_vec(), bytes)];
    }
    let mut chunks: Vec<&[u8]> = bytes.chunks(room).collect();
    let last = chunks.pop().expect("a checkpoint is never empty");
    let part_key = [id.as_bytes(), PART_SUFFIX].concat();
    chunks
        .into_iter()
        .map(|c| record(part_key.clone(), c.to_vec()))
        .chain([record(id.as_bytes().to_vec(), last.to_vec())])
        .collect()
}

fn as_offsets(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default()
}

/// What a checkpoint says of one partition of a query's source.
#[derive(Debug, Clone)]
struct UnitCheckpoint {
    offset: Option<u64>,
    sink_ends: Vec<u64>,
    ahead: Vec<[u64; 3]>,
    /// Where the checkpoint is among the topic's (parsed) records.
    index: usize,
}

/// Entries of a query's checkpointed state that could not be read (written by another
/// version of Weir, or damaged): said, rather than going on as if the state were whole.
fn say_unread(query: &str, unread: usize) {
    if unread > 0 {
        eprintln!(
            "weir: query {query}: {unread} entries of its checkpointed state could not be read (another version's format?); they start empty"
        );
    }
}

/// The server that wrote a checkpoint (none alone): its checkpoints' states are a chain
/// of their own.
fn checkpoint_member(cp: &serde_json::Value) -> String {
    cp["member"].as_str().unwrap_or_default().to_string()
}

/// The checkpoints among the records of the offsets topic, each with where it is among
/// them: one written in parts ([`checkpoint_records`]) joined to its leading parts (or
/// alone, should those be left over from a write that failed part-way: a Kafka batch
/// is not atomic); records that are not one skipped.
fn parsed_checkpoints(
    records: &[StoredRecord],
) -> impl Iterator<Item = (usize, serde_json::Value)> {
    // The leading parts of a checkpoint written in several records, per query.
    let mut parts: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    records.iter().enumerate().filter_map(move |(i, r)| {
        let (Some(key), Some(value)) = (&r.record.key, &r.record.value) else {
            return None;
        };
        if let Some(id) = key.strip_suffix(PART_SUFFIX) {
            parts
                .entry(id.to_vec())
                .or_default()
                .extend_from_slice(value);
            return None;
        }
        let joined = parts.remove(key.as_slice()).and_then(|mut lead| {
            lead.extend_from_slice(value);
            delta::parse_checkpoint(&lead)
        });
        Some((i, joined.or_else(|| delta::parse_checkpoint(value))?))
    })
}

/// Per query of `wanted` and checkpoint it names (by index), the operator state as of
/// that checkpoint: the chain of the server that wrote it (its full snapshot before it
/// and its changes up to it, every checkpoint of that server counted, even one
/// recovery does not take the offsets of).
fn states_at(
    records: &[StoredRecord],
    wanted: &BTreeMap<String, BTreeMap<u32, usize>>,
) -> BTreeMap<(String, usize), serde_json::Value> {
    let mut out = BTreeMap::new();
    let Some(end) = wanted.values().flat_map(|at| at.values()).max() else {
        return out;
    };
    let mut chains: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    for (i, v) in parsed_checkpoints(&records[..=*end]) {
        let Some(at) = v["query"].as_str().and_then(|q| Some((q, wanted.get(q)?))) else {
            continue;
        };
        let (q, at) = at;
        let chain = (q.to_string(), checkpoint_member(&v));
        if let Some(full) = v.get("full") {
            chains.insert(chain.clone(), full.clone());
        } else if let (Some(d), Some(s)) = (v.get("delta"), chains.get_mut(&chain)) {
            delta::apply(s, d);
        }
        if at.values().any(|x| *x == i)
            && let Some(s) = chains.get(&chain)
        {
            out.insert((q.to_string(), i), s.clone());
        }
    }
    out
}

impl UnitCheckpoint {
    fn of(cp: &serde_json::Value, partition: u32, index: usize) -> Self {
        Self {
            index,
            offset: cp["offsets"][partition as usize].as_u64(),
            sink_ends: as_offsets(&cp["sink_ends"]),
            ahead: cp["ahead"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| Some([e[0].as_u64()?, e[1].as_u64()?, e[2].as_u64()?]))
                .filter(|[p, _, _]| *p == partition as u64)
                .collect(),
        }
    }
}

/// Finds the outputs query `q` wrote past `sink_ends` (per sink partition), by their
/// source header, so that reading their records again writes nothing twice.
fn find_written(log: &dyn Log, q: &mut PersistentQuery, sink_ends: &[u64]) -> Result<()> {
    let prefix = format!("{}:", q.id);
    for sink_partition in 0..q.sink_partitions {
        let from = sink_ends.get(sink_partition as usize).copied().unwrap_or(0);
        for r in log.read_to_end(&q.sink_topic, sink_partition, from)? {
            let Some(src) = r.record.headers.iter().find(|h| h.name == SOURCE_HEADER) else {
                continue;
            };
            let Some(text) = src
                .value
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
            else {
                continue;
            };
            let Some(rest) = text.strip_prefix(&prefix) else {
                continue;
            };
            if let Some((p, o)) = rest.split_once(':')
                && let (Ok(p), Ok(o)) = (p.parse::<u32>(), o.parse::<u64>())
            {
                let e = q.already_written.entry((p, sink_partition)).or_insert(o);
                *e = (*e).max(o);
            }
        }
    }
    Ok(())
}

/// Where a durable query records its join steps: its id and its checkpoints' topic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Intents<'a> {
    pub query: &'a str,
    pub topic: &'a str,
}

/// Records what a durable join's step read (the offsets each source partition reaches)
/// before the step is processed: if the process dies before a checkpoint covers the
/// step, recovery (`recover_offsets`) has the steps after the restart read exactly the
/// records of each step since the checkpoint again, in order.
pub(crate) fn write_intent(log: &dyn Log, at: Intents, ends: &[Vec<u64>]) -> Result<()> {
    let Intents { query, topic } = at;
    let intent = serde_json::json!({"intent_for": query, "ends": ends});
    log.append(
        topic,
        0,
        &[Record::new(
            Some(query.as_bytes()),
            Some(intent.to_string().as_bytes()),
            now_ms(),
        )],
    )?;
    Ok(())
}

/// How a batch of output is written.
struct Sink<'a> {
    /// The batch came from tombstones: write tombstones.
    tombstones: bool,
    /// Tag records with their source, and skip what recovery found already written.
    durable: bool,
    source_partition: u32,
    /// The user's headers of the source records, by offset: each output record carries
    /// those of the record that made it.
    headers: &'a BTreeMap<u64, Vec<Header>>,
}

/// Where and how a query writes its output: what encoding a batch for its sink needs,
/// borrowed from the query (shared by the threads that step its partitions at once).
struct SinkSpec<'a> {
    id: &'a str,
    plan: &'a SelectPlan,
    layout: &'a Layout,
    timestamp: &'a Option<(String, Option<String>)>,
    window: Option<KeyWindow>,
    partitions: u32,
    topic: &'a str,
    already_written: &'a BTreeMap<(u32, u32), u64>,
    /// Every record carries its source tag (else each append's last one).
    tag_each: bool,
}

impl PersistentQuery {
    fn sink_spec(&self, log: &dyn Log, durable: bool) -> SinkSpec<'_> {
        SinkSpec {
            id: &self.id,
            plan: &self.plan,
            layout: &self.sink_layout,
            timestamp: &self.sink_timestamp,
            window: self.sink_window,
            partitions: self.sink_partitions,
            topic: &self.sink_topic,
            already_written: &self.already_written,
            tag_each: durable && !log.atomic_appends(),
        }
    }

    /// As [`Self::sink_spec`], with the pipeline borrowed beside it (a step reading ahead
    /// writes its output while the pipeline's input reads the next batch).
    fn sink_spec_and_pipeline(
        &mut self,
        log: &dyn Log,
        durable: bool,
    ) -> (SinkSpec<'_>, &mut pipeline::Pipeline) {
        let PersistentQuery {
            id,
            plan,
            sink_layout,
            sink_timestamp,
            sink_window,
            sink_partitions,
            sink_topic,
            already_written,
            pipeline,
            ..
        } = self;
        let spec = SinkSpec {
            id,
            plan,
            layout: sink_layout,
            timestamp: sink_timestamp,
            window: *sink_window,
            partitions: *sink_partitions,
            topic: sink_topic,
            already_written,
            tag_each: durable && !log.atomic_appends(),
        };
        (spec, pipeline)
    }
}

/// A batch of output encoded for the sink: per sink partition, its records and the
/// highest source offset among them.
type Encoded = BTreeMap<u32, (Vec<Record>, u64)>;

/// The `weir.src` header naming a source record (`query:partition:offset`).
fn source_tag(q: &SinkSpec, source_partition: u32, offset: u64) -> Header {
    let mut src = Vec::with_capacity(q.id.len() + 24);
    let _ = std::io::Write::write_fmt(
        &mut src,
        format_args!("{}:{source_partition}:{offset}", q.id),
    );
    Header {
        name: SOURCE_HEADER.into(),
        value: Some(src),
    }
}

/// Writes a batch of output; the bytes written (keys and values).
fn write_output(log: &dyn Log, q: &SinkSpec, out: &RecordBatch, sink: Sink) -> Result<u64> {
    let encoded = encode_output(q, out, &sink)?;
    append_output(log, q, encoded, &sink)
}

/// Writes a step's output to the sink (encoding what is not encoded yet): what the
/// query counts of it.
fn write_step(
    log: &dyn Log,
    spec: &SinkSpec,
    step: &mut pipeline::Step,
    partition: u32,
    durable: bool,
) -> Result<pipeline::Written> {
    let mut written = pipeline::Written::default();
    let mut encoded = std::mem::take(&mut step.encoded).into_iter();
    for change in &step.changes {
        count_written(&mut written, change);
        let sink = Sink {
            tombstones: change.tombstones,
            durable,
            source_partition: partition,
            headers: &step.headers,
        };
        written.bytes += match encoded.next() {
            Some(e) => append_output(log, spec, e, &sink)?,
            None => write_output(log, spec, &change.batch, sink)?,
        };
    }
    Ok(written)
}

/// Writes a step's output encoded in parts ([`encode_step`]: a join's) on up to `threads`
/// threads at once, one sink partition each (the partitions of the sink have no order
/// between them): a partition's records of each part as one append, the parts in order,
/// tagged as [`append_output`] tags an append.
fn append_step_at_once(
    log: &dyn Log,
    spec: &SinkSpec,
    step: &mut pipeline::Step,
    partition: u32,
    durable: bool,
    threads: usize,
) -> Result<pipeline::Written> {
    let mut written = pipeline::Written::default();
    for change in &step.changes {
        count_written(&mut written, change);
    }
    // Each sink partition's output, part by part in order; handed to the thread that
    // appends it (and drops it after: freeing a step's records costs about as much as
    // appending them).
    let mut by_partition: BTreeMap<u32, Vec<Encoded>> = BTreeMap::new();
    for encoded in std::mem::take(&mut step.encoded) {
        for (p, part) in encoded {
            by_partition
                .entry(p)
                .or_default()
                .push(Encoded::from([(p, part)]));
        }
    }
    let sink = Sink {
        // (What an append needs of it: whether durable, and the source partition.)
        tombstones: false,
        durable,
        source_partition: partition,
        headers: &step.headers,
    };
    let append = |i: usize, parts: Vec<Encoded>| -> Result<u64> {
        if i > 0 {
            // Crash tests: some of the step's partitions written, not all.
            weir_log::failpoint::hit("mid_output");
        }
        let mut bytes = 0;
        for part in parts {
            bytes += append_output(log, spec, part, &sink)?;
        }
        Ok(bytes)
    };
    let appends: Vec<Vec<Encoded>> = by_partition.into_values().collect();
    for bytes in each_at_once(appends, threads, append) {
        written.bytes += bytes?;
    }
    Ok(written)
}

/// Counts a change about to be written: its rows, and each one's latency from its event
/// time to now.
fn count_written(written: &mut pipeline::Written, change: &ChangeBatch) {
    written.produced += change.batch.num_rows() as u64;
    let now = now_ms();
    for t in change.batch.column(0).as_primitive::<Int64Type>().values() {
        written.latency.observe((now - t).max(0) as f64);
    }
}

/// A step's output encoded for the sink, change by change (see [`pipeline::Step::encoded`]),
/// on up to `threads` threads at once.
fn encode_step(
    spec: &SinkSpec,
    mut step: pipeline::Step,
    partition: u32,
    durable: bool,
    threads: usize,
) -> Result<pipeline::Step> {
    let (changes, headers) = (&step.changes, &step.headers);
    let encode = |i: usize| {
        let sink = Sink {
            tombstones: changes[i].tombstones,
            durable,
            source_partition: partition,
            headers,
        };
        encode_output(spec, &changes[i].batch, &sink)
    };
    let encoded: Vec<Result<_>> = if threads > 1 && changes.len() > 1 {
        at_once(changes.len(), threads, encode)
    } else {
        (0..changes.len()).map(encode).collect()
    };
    step.encoded = encoded.into_iter().collect::<Result<_>>()?;
    Ok(step)
}

/// The stages with state over several partitions' steps (read and through the stages
/// before them), as if one after the other ([`pipeline::Stateful::run_many`]); their
/// output encoded on up to `threads` threads at once, then written in order, up to the
/// first step whose write fails (that step carries the error; those after it are not
/// written). An error of the stages with state is the list's one step: state may hold
/// some of the steps, so the query fails and is reloaded.
#[allow(clippy::type_complexity)]
fn run_stateful(
    stateful: &mut pipeline::Stateful<'_>,
    mut results: Vec<(u32, Result<pipeline::Step>, Duration)>,
    spec: &SinkSpec,
    log: &dyn Log,
    durable: bool,
    threads: usize,
) -> Vec<(u32, Result<pipeline::Step>, Duration)> {
    let began = Instant::now();
    let mut ok: Vec<(u32, &mut pipeline::Step)> = results
        .iter_mut()
        .filter_map(|(p, step, _)| step.as_mut().ok().map(|s| (*p, s)))
        .collect();
    let inputs: Vec<(u32, Vec<ChangeBatch>)> = ok
        .iter_mut()
        .map(|(p, step)| (*p, std::mem::take(&mut step.changes)))
        .collect();
    let mut problems: Vec<&mut Vec<Problem>> =
        ok.iter_mut().map(|(_, step)| &mut step.problems).collect();
    match stateful.run_many(inputs, &mut problems) {
        Ok(changes) => {
            for ((_, step), changes) in ok.into_iter().zip(changes) {
                step.changes = changes;
            }
        }
        Err(e) => return vec![(results[0].0, Err(e), began.elapsed())],
    }
    let share = began.elapsed() / results.len().max(1) as u32;
    // Their output encoded at once again, then written in order.
    let encoded = each_at_once(results, threads, |_, (p, step, took)| {
        let began = Instant::now();
        let step = step.and_then(|step| encode_step(spec, step, p, durable, 1));
        (p, step, took + share + began.elapsed())
    });
    let mut failed = false;
    encoded
        .into_iter()
        .map(|(p, step, took)| {
            let began = Instant::now();
            let step = match step {
                Ok(mut s) if !failed && s.consumed > 0 => {
                    match write_step(log, spec, &mut s, p, durable) {
                        Ok(written) => {
                            s.written = Some(written);
                            Ok(s)
                        }
                        Err(e) => Err(e),
                    }
                }
                step => step,
            };
            failed |= step.is_err();
            (p, step, took + began.elapsed())
        })
        .collect()
}

/// The steps of the stateless stages of a query (the first that run before any with
/// state: all of them for a query without state) over the partitions `all`, on up to
/// `threads` threads at once (the caller's one of them), for about
/// [`SHARED_STEP_ROUNDS`] × [`STEP_TARGET`]: each thread takes the next partition
/// waiting, reads and computes a batch of it — and, given `write`, writes its output to
/// the sink (records of different source partitions have no order between them, so each
/// thread writes its own) — and puts it back to wait again while it had a full batch and
/// the time lasts. The threads end within a batch of each other, so little time goes to
/// waiting for the slowest. The steps in order of partition, each partition's in the
/// order read; a partition whose step failed reads no more in this call.
fn shared_rounds(
    input: &pipeline::TopicInput,
    stages: &[&dyn pipeline::SharedStage],
    log: &dyn Log,
    write: Option<(&SinkSpec, bool)>,
    all: &[(u32, Option<u64>)],
    threads: usize,
) -> Vec<(u32, Result<pipeline::Step>, Duration)> {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
    let started = Instant::now();
    let budget = STEP_TARGET * SHARED_STEP_ROUNDS;
    // Partitions waiting: each with where it reads from (`None`: where its input stands)
    // and how many of its batches this step read before.
    let waiting: Mutex<std::collections::VecDeque<(u32, Option<u64>, usize)>> =
        Mutex::new(all.iter().map(|(p, from)| (*p, *from, 0)).collect());
    let work = || {
        let mut done = Vec::new();
        // (The queue's lock is let go before the batch is worked on.)
        let next = || lock(&waiting).pop_front();
        while let Some((p, from, round)) = next() {
            let began = Instant::now();
            let step = pipeline::shared_step(input, stages, log, p, from).and_then(|mut step| {
                if let Some((spec, durable)) = write
                    && step.consumed > 0
                {
                    step.written = Some(write_step(log, spec, &mut step, p, durable)?);
                }
                Ok(step)
            });
            if let Ok(s) = &step
                && let (Some(next), Some(requested)) = (s.next, s.requested)
                && s.consumed as usize >= requested
                && started.elapsed() < budget
            {
                lock(&waiting).push_back((p, Some(next), round + 1));
            }
            done.push((p, round, step, began.elapsed()));
        }
        done
    };
    let mut done = helpers::on_threads(threads, work);
    done.sort_by_key(|(p, round, _, _)| (*p, *round));
    done.into_iter()
        .map(|(p, _, step, took)| (p, step, took))
        .collect()
}

/// `work(i)` for every i in 0..count, on up to `threads` threads at once (the caller's
/// one of them), each thread taking the next i not taken yet (so a slow one holds up no
/// other); the results in order of i. A panic in one goes on in the caller.
fn at_once<T: Send>(count: usize, threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let take = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= count {
                return done;
            }
            done.push((i, work(i)));
        }
    };
    let mut all = helpers::on_threads(threads.min(count), take);
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// `work` on each of `items` (owned: a thread takes the item it works on), on up to
/// `threads` threads at once as [`at_once`]; the results in the items' order.
fn each_at_once<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    work: impl Fn(usize, T) -> R + Sync,
) -> Vec<R> {
    let items: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    at_once(items.len(), threads, |i| {
        let item = items[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        work(i, item.expect("each item is taken once"))
    })
}

/// Encodes a batch of output for the sink (nothing written yet).
fn encode_output(q: &SinkSpec, out: &RecordBatch, sink: &Sink) -> Result<Encoded> {
    if out.num_rows() == 0 {
        return Ok(Encoded::new());
    }
    let rekeyed;
    let out = if sink.tombstones && q.plan.repartitions {
        rekeyed = q.plan.null_value_derived_keys(out)?;
        &rekeyed
    } else {
        out
    };
    let encoded = q.layout.encode(out)?;
    // Event time: the sink's TIMESTAMP column when it has one, else the source's.
    let sink_times = match q.timestamp {
        Some((col, format)) => out
            .column_by_name(col)
            .map(|c| event_times(c, format.as_deref()))
            .transpose()?,
        None => None,
    };
    let rowtimes = out.column(0).as_primitive::<Int64Type>();
    let offsets = out.column(1).as_primitive::<Int64Type>();
    let windows = match q.window {
        Some(w) => {
            let bound = |name: &str| {
                out.column_by_name(name)
                    .map(|c| c.as_primitive::<Int64Type>().clone())
                    .ok_or_else(|| EngineError::Execution(format!("{name} missing")))
            };
            Some((
                w,
                bound(aggregate::WINDOW_COLUMNS[0])?,
                bound(aggregate::WINDOW_COLUMNS[1])?,
            ))
        }
        None => None,
    };
    // `query:partition:offset` of the source record: on every record, or (where an append
    // is stored whole or not at all) on each append's last record, naming the highest
    // source offset the append holds (`append_output`).
    let tag_each = q.tag_each;
    // Each sink partition's records, and the highest source offset among them.
    let mut by_partition = Encoded::new();
    for (row, (key, value)) in encoded.into_iter().enumerate() {
        let value = if sink.tombstones { None } else { value };
        // Partitioned by the key alone; the window goes after it.
        let partition = key
            .as_deref()
            .map(|k| partition_for_key(k, q.partitions))
            .unwrap_or(0);
        let key = match (&windows, key) {
            (Some((w, starts, ends)), Some(mut k)) => {
                w.append(&mut k, starts.value(row), ends.value(row));
                Some(k)
            }
            (_, key) => key,
        };
        let offset = offsets.value(row) as u64;
        if sink.durable
            && q.already_written
                .get(&(sink.source_partition, partition))
                .is_some_and(|max| offset <= *max)
        {
            continue;
        }
        let timestamp = match &sink_times {
            // No usable timestamp (null, negative, not in the format): ksqlDB drops the row.
            Some((t, _)) if arrow::array::Array::is_null(t, row) => continue,
            Some((t, _)) => t.value(row),
            None => rowtimes.value(row),
        };
        let rows = out.num_rows();
        let sinks = q.partitions as usize;
        let (records, max) = by_partition.entry(partition).or_insert_with(|| {
            // A batch spreads over the sink's partitions about evenly.
            (Vec::with_capacity(rows / sinks + rows / (4 * sinks) + 1), 0)
        });
        *max = (*max).max(offset);
        let mut headers = sink.headers.get(&offset).cloned().unwrap_or_default();
        if tag_each {
            headers.push(source_tag(q, sink.source_partition, offset));
        }
        records.push(Record {
            key,
            value,
            timestamp,
            headers,
        });
    }
    Ok(by_partition)
}

/// Appends encoded output, sink partition by sink partition; the bytes written.
fn append_output(log: &dyn Log, q: &SinkSpec, encoded: Encoded, sink: &Sink) -> Result<u64> {
    let mut bytes = 0;
    for (i, (partition, (mut records, max))) in encoded.into_iter().enumerate() {
        if sink.durable
            && !q.tag_each
            && let Some(last) = records.last_mut()
        {
            last.headers.push(source_tag(q, sink.source_partition, max));
        }
        if i > 0 {
            // Crash tests: some of the step's partitions written, not all.
            weir_log::failpoint::hit("mid_output");
        }
        bytes += records
            .iter()
            .map(|r| {
                (r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len)) as u64
            })
            .sum::<u64>();
        log.append(q.topic, partition, &records)?;
    }
    Ok(bytes)
}

/// A windowed source's decoded rows: its columns, then WINDOWSTART and WINDOWEND.
pub(crate) fn with_window_bounds(
    schema: &arrow::datatypes::SchemaRef,
) -> arrow::datatypes::SchemaRef {
    let mut fields: Vec<arrow::datatypes::Field> =
        schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for b in WINDOW_BOUNDS {
        fields.push(arrow::datatypes::Field::new(b, DataType::Int64, true));
    }
    Arc::new(Schema::new(fields))
}

/// Decodes a run of records (all values, or all tombstones) of a source, setting event
/// time from its TIMESTAMP column; records that do not decode or have no usable time are
/// added to `problems`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_run(
    layout: &Layout,
    schema: &arrow::datatypes::SchemaRef,
    run: &[weir_log::StoredRecord],
    tombstones: bool,
    timestamp: Option<&(String, Option<String>)>,
    window: Option<KeyWindow>,
    partition: u32,
    problems: &mut Vec<Problem>,
) -> Result<weir_format::Decoded> {
    let decoded = match window {
        None if tombstones => layout.decode_tombstones(schema, run),
        None => layout.decode(schema, run),
        // A windowed key: the window comes off the key before decoding, and its bounds
        // go after the columns (`schema` ends with them).
        Some(w) => {
            let mut bounds = std::collections::HashMap::with_capacity(run.len());
            let stripped: Vec<weir_log::StoredRecord> = run
                .iter()
                .filter_map(|r| {
                    let (k, start, end) = w.split(r.record.key.as_deref()?)?;
                    bounds.insert((r.partition, r.offset), (start, end));
                    let mut r = r.clone();
                    r.record.key = Some(k.to_vec());
                    Some(r)
                })
                .collect();
            let plain = layout.schema();
            let decoded = if tombstones {
                layout.decode_tombstones(&plain, &stripped)
            } else {
                layout.decode(&plain, &stripped)
            };
            let batch = &decoded.batch;
            let partitions = batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int32Type>();
            let offsets = batch.column(2).as_primitive::<Int64Type>();
            let window: Vec<(i64, i64)> = (0..batch.num_rows())
                .map(|i| {
                    bounds
                        .get(&(partitions.value(i) as u32, offsets.value(i) as u64))
                        .copied()
                        .unwrap_or_default()
                })
                .collect();
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(arrow::array::Int64Array::from_iter_values(
                window.iter().map(|w| w.0),
            )));
            columns.push(Arc::new(arrow::array::Int64Array::from_iter_values(
                window.iter().map(|w| w.1),
            )));
            weir_format::Decoded {
                batch: RecordBatch::try_new(schema.clone(), columns)
                    .map_err(|e| EngineError::Execution(e.to_string()))?,
                errors: decoded.errors,
                unavailable: decoded.unavailable,
            }
        }
    };
    // The registry did not answer: the batch fails (read again from the last checkpoint
    // when the query is retried), nothing goes to the processing log as bad.
    if let Some(why) = decoded.unavailable {
        return Err(EngineError::Execution(format!(
            "{why} (the records are read again when it answers)"
        )));
    }
    problems.extend(
        decoded
            .errors
            .iter()
            .map(|e| Problem::new(e.partition, e.offset, e.message.clone())),
    );
    match (timestamp, tombstones) {
        (Some((col, format)), false) => {
            with_event_time(decoded, col, format.as_deref(), partition, problems)
        }
        _ => Ok(decoded),
    }
}

/// Sets ROWTIME from the source's TIMESTAMP column (BIGINT millis or TIMESTAMP). Records
/// without a usable timestamp go to the processing log, as in ksqlDB.
fn with_event_time(
    mut decoded: weir_format::Decoded,
    column: &str,
    format: Option<&str>,
    partition: u32,
    problems: &mut Vec<Problem>,
) -> Result<weir_format::Decoded> {
    let err = |e: arrow::error::ArrowError| EngineError::Execution(e.to_string());
    let batch = &decoded.batch;
    let Some(values) = batch.column_by_name(column) else {
        return Ok(decoded);
    };
    let (times, reasons) = event_times(values, format)?;
    let keep = arrow::compute::is_not_null(&times).map_err(err)?;
    let offsets = batch.column(2).as_primitive::<Int64Type>();
    for (row, reason) in reasons {
        problems.push(Problem::new(
            partition,
            offsets.value(row) as u64,
            format!("Invalid timestamp in column {column}: {reason}"),
        ));
    }
    let kept = arrow::compute::filter_record_batch(batch, &keep).map_err(err)?;
    let mut columns = kept.columns().to_vec();
    columns[0] = arrow::compute::filter(&times, &keep).map_err(err)?;
    decoded.batch = RecordBatch::try_new(kept.schema(), columns).map_err(err)?;
    Ok(decoded)
}

/// The `TIMESTAMP` column of a WITH clause, checked: it exists and is BIGINT, TIMESTAMP, or
/// a STRING with a `TIMESTAMP_FORMAT`.
fn timestamp_column(layout: &Layout, properties: &Properties) -> Result<Option<String>> {
    let timestamp_column = prop(properties, "TIMESTAMP").map(|t| t.to_uppercase());
    if let Some(ts) = &timestamp_column {
        let column = layout.columns().find(|c| c.name == *ts);
        let with_format = prop(properties, "TIMESTAMP_FORMAT").is_some();
        match column.map(|c| &c.ty) {
            None => {
                return Err(EngineError::Invalid(format!(
                    "The TIMESTAMP column set in the WITH clause does not exist in the schema: '{ts}'"
                )));
            }
            Some(weir_sql::ast::SqlType::Bigint | weir_sql::ast::SqlType::Timestamp) => {}
            Some(weir_sql::ast::SqlType::String) if with_format => {}
            Some(_) => {
                return Err(EngineError::Invalid(format!(
                    "Timestamp column, `{ts}`, should be LONG(INT64), TIMESTAMP, or a String with a timestamp_format specified."
                )));
            }
        }
    }
    Ok(timestamp_column)
}

/// Event times (millis) from a timestamp column: BIGINT or TIMESTAMP as they are, STRING
/// parsed by its Java `format`. Null where a row has no usable time (null, negative, or
/// text that does not parse), with the reason by row.
fn event_times(
    values: &ArrayRef,
    format: Option<&str>,
) -> Result<(arrow::array::Int64Array, Vec<(usize, String)>)> {
    let null = || "the value is null".to_string();
    let raw: Vec<std::result::Result<i64, String>> = match (values.data_type(), format) {
        (DataType::Utf8, Some(format)) => values
            .as_string::<i32>()
            .iter()
            .map(|s| javatime::parse_millis(s.ok_or_else(null)?, format, javatime::Zone::UTC))
            .collect(),
        _ => arrow::compute::cast(values, &DataType::Int64)
            .map_err(|e| EngineError::Execution(e.to_string()))?
            .as_primitive::<Int64Type>()
            .iter()
            .map(|t| t.ok_or_else(null))
            .collect(),
    };
    let mut reasons = Vec::new();
    let times = raw
        .into_iter()
        .enumerate()
        .map(|(row, t)| match t {
            Ok(t) if t >= 0 => Some(t),
            Ok(t) => {
                reasons.push((row, format!("negative timestamp {t}")));
                None
            }
            Err(e) => {
                reasons.push((row, e));
                None
            }
        })
        .collect();
    Ok((times, reasons))
}

/// Every record value of a (small, internal) topic's partition 0, with its offset.
/// Every record of partition 0 of `topic` (none if it does not exist).
fn read_topic_records(log: &dyn Log, topic: &str) -> Result<Vec<StoredRecord>> {
    if log.topic(topic)?.is_none() {
        return Ok(Vec::new());
    }
    Ok(log.read_to_end(topic, 0, 0)?)
}

fn read_topic_values(log: &dyn Log, topic: &str) -> Result<Vec<(u64, Vec<u8>)>> {
    Ok(read_topic_records(log, topic)?
        .into_iter()
        .filter_map(|r| r.record.value.map(|v| (r.offset, v)))
        .collect())
}

/// Appends one JSON record per problem to the processing log topic (created on first use).
fn write_processing_log(
    log: &dyn Log,
    query_id: &str,
    topic: &str,
    problems: &[Problem],
) -> Result<()> {
    if log.topic(PROCESSING_LOG_TOPIC)?.is_none() {
        log.create_topic(PROCESSING_LOG_TOPIC, TopicConfig::default())?;
    }
    let now = now_ms();
    let records: Vec<Record> = problems
        .iter()
        .map(|p| {
            let v = serde_json::json!({
                "QUERY_ID": query_id, "TOPIC": topic, "PARTITION": p.partition, "OFFSET": p.offset, "MESSAGE": p.message,
            });
            Record {
                key: None,
                value: Some(serde_json::to_vec(&v).expect("serializes")),
                timestamp: now,
                headers: vec![Header { name: "weir.query".into(), value: Some(query_id.as_bytes().to_vec()) }],
            }
        })
        .collect();
    log.append(PROCESSING_LOG_TOPIC, 0, &records)?;
    Ok(())
}

fn describe_columns(keys: &[Column], values: &[Column]) -> String {
    let cols: Vec<String> = keys
        .iter()
        .map(|c| format!("`{}` {} KEY", c.name, c.ty))
        .chain(values.iter().map(|c| format!("`{}` {}", c.name, c.ty)))
        .collect();
    format!("[{}]", cols.join(", "))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn capitalized_noun(noun: &str) -> String {
    let mut c = noun.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}
