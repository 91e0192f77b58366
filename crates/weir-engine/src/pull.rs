//! Pull queries: `SELECT ... FROM table [WHERE ...]` without EMIT CHANGES answers once,
//! from the table's current state, and ends.
//!
//! A table's state is materialized from its topic (the changelog its query writes, or
//! the topic it was declared over): the latest record per key, tombstones removing the
//! key. The engine keeps each table's materialization between pull queries and only
//! reads what was appended since the last one, so a query costs what is new plus a scan
//! of the table's rows (the WHERE runs over them as a filter: `key = x`, ranges, and any
//! other condition). Windowed tables keep a row per key and window, and expose
//! `WINDOWSTART`/`WINDOWEND` after the key columns. A pull query over a stream reads the
//! stream's records up to now.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use weir_format::Column;
use weir_log::{Log, StoredRecord};
use weir_sql::ast::{Query, SourceKind, SqlType};

use crate::catalog::Source;
use crate::error::{EngineError, Result};
use crate::pipeline::{Input, OnError, Pipeline, operators};
use crate::plan::plan_push;
use crate::push::{PushEvent, PushHandle};
use crate::types::sql_type_of;
use crate::{ChangeBatch, Engine, Outcome};

/// A table's rows as of `offsets`: the latest record per key (key bytes, window included).
#[derive(Debug, Default)]
pub(crate) struct Materialized {
    /// The statement the table was created by: a table dropped and created again under
    /// the same name starts over.
    statement: String,
    offsets: Vec<u64>,
    rows: BTreeMap<Vec<u8>, StoredRecord>,
}

impl Materialized {
    /// Reads what the topic gained since the last time.
    fn catch_up(&mut self, log: &dyn Log, topic: &str) -> Result<()> {
        let partitions = log.topic(topic)?.map_or(0, |t| t.config.partitions) as usize;
        self.offsets.resize(partitions, 0);
        for (p, next) in self.offsets.iter_mut().enumerate() {
            for r in log.read_to_end(topic, p as u32, *next)? {
                *next = r.offset + 1;
                let Some(key) = r.record.key.clone() else {
                    continue;
                };
                if r.record.value.is_none() {
                    self.rows.remove(&key);
                } else {
                    self.rows.insert(key, r);
                }
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Answers a pull query: its rows on a handle that ends after the last one.
    pub(crate) fn pull_query(&mut self, query: &Query) -> Result<Outcome> {
        self.prepare_pull_query(query, &BTreeMap::new())?.run()
    }

    /// A pull query made ready to run without the engine: checked, its source and
    /// settings looked up, its query id given. `overrides` are the request's properties.
    pub(crate) fn prepare_pull_query(
        &mut self,
        query: &Query,
        overrides: &BTreeMap<String, String>,
    ) -> Result<PullJob> {
        for (present, clause) in [
            (!query.from.joins.is_empty(), "JOIN"),
            (query.group_by.is_some(), "GROUP BY"),
            (query.window.is_some(), "WINDOW"),
            (query.partition_by.is_some(), "PARTITION BY"),
            (query.having.is_some(), "HAVING"),
        ] {
            if present {
                return Err(EngineError::Invalid(format!(
                    "Pull queries don't support {clause} clauses. Add EMIT CHANGES for a push query."
                )));
            }
        }
        let source = self.stream(&query.from.source.name.value)?;
        let max_scan = overrides
            .get(PULL_MAX_SCAN_PROPERTY)
            .or_else(|| self.properties.get(PULL_MAX_SCAN_PROPERTY))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_PULL_MAX_SCAN);
        let table = (source.kind == SourceKind::Table).then(|| {
            let m = self.materialized.entry(source.name.clone()).or_default();
            let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
            if t.statement != source.statement {
                *t = Materialized {
                    statement: source.statement.clone(),
                    ..Default::default()
                };
            }
            drop(t);
            m.clone()
        });
        self.push_counter += 1;
        Ok(PullJob {
            query: query.clone(),
            source,
            max_scan,
            table,
            functions: self.functions.clone(),
            log: self.log.clone(),
            query_id: format!("query_{}", self.push_counter),
        })
    }
}

/// A pull query ready to run: it reads its source and computes its rows without the
/// engine (a statement, `/healthcheck` or another query never waits for its scan).
pub struct PullJob {
    query: Query,
    source: Source,
    max_scan: usize,
    /// A table's materialization, shared with the pull queries over it.
    table: Option<Arc<std::sync::Mutex<Materialized>>>,
    functions: crate::functions::Functions,
    log: Arc<dyn Log>,
    query_id: String,
}

impl PullJob {
    /// Reads and answers: its rows on a handle that ends after the last one.
    pub fn run(self) -> Result<Outcome> {
        let PullJob {
            query,
            source,
            max_scan,
            table,
            functions,
            log,
            query_id,
        } = self;
        let query = &query;
        let functions = &functions;
        let log = log.as_ref();
        let limit = query.limit.map(|l| l as usize);
        let scanned_too_many = || {
            EngineError::Invalid(format!(
                "This pull query would scan more than {max_scan} rows ({PULL_MAX_SCAN_PROPERTY}): add a LIMIT, or a WHERE on the key of a table, or raise the setting."
            ))
        };
        let mut rows: Vec<Vec<serde_json::Value>> = Vec::new();
        let columns = match table {
            Some(table) => {
                // The table's rows this query reads, copied out of the shared
                // materialization once it has caught up.
                let records: Vec<StoredRecord> = {
                    let mut m = table.lock().unwrap_or_else(|e| e.into_inner());
                    m.catch_up(log, &source.topic)?;
                    // `WHERE key = literal` (alone or ANDed with more): only that key's
                    // rows (a windowed table's: every window of it, by prefix); else every
                    // row. Text key formats may be written with other spacing by other
                    // producers: a miss there falls back to the scan.
                    let found: Option<Vec<StoredRecord>> = key_lookup(functions, query, &source)?
                        .map(|prefix| {
                            m.rows
                                .range(prefix.clone()..)
                                .take_while(|(k, _)| {
                                    if source.window.is_some() {
                                        k.starts_with(&prefix)
                                    } else {
                                        **k == prefix
                                    }
                                })
                                .map(|(_, r)| r.clone())
                                .collect()
                        });
                    match found {
                        Some(rows)
                            if !rows.is_empty()
                                || source.layout.key_format.format
                                    == weir_format::Format::Kafka =>
                        {
                            rows
                        }
                        _ if limit.is_none() && m.rows.len() > max_scan => {
                            return Err(scanned_too_many());
                        }
                        _ => m.rows.values().cloned().collect(),
                    }
                };
                let mut columns = None;
                for chunk in records.chunks(PULL_CHUNK_ROWS) {
                    columns = Some(pull_chunk(
                        functions, log, query, &source, chunk, &mut rows,
                    )?);
                    if limit.is_some_and(|l| rows.len() >= l) {
                        break;
                    }
                }
                match columns {
                    Some(c) => c,
                    None => pull_chunk(functions, log, query, &source, &[], &mut rows)?,
                }
            }
            // A stream's records up to now, a chunk at a time, until LIMIT rows are found.
            None => {
                let partitions = log.topic(&source.topic)?.map_or(0, |t| t.config.partitions);
                let ends: Vec<(u64, u64)> = (0..partitions)
                    .map(|p| log.offsets(&source.topic, p))
                    .collect::<weir_log::Result<_>>()?;
                let mut columns = pull_chunk(functions, log, query, &source, &[], &mut rows)?;
                let mut scanned = 0usize;
                'partitions: for (p, (first, end)) in ends.into_iter().enumerate() {
                    let mut next = first;
                    while next < end && limit.is_none_or(|l| rows.len() < l) {
                        // Up to one past the cap: reaching it is how the cap is known to be
                        // passed.
                        let want = PULL_CHUNK_ROWS
                            .min((end - next) as usize)
                            .min(max_scan.saturating_sub(scanned) + 1);
                        let read = log.read(&source.topic, p as u32, next, want)?;
                        let Some(last) = read.last() else {
                            break;
                        };
                        next = last.offset + 1;
                        let chunk: Vec<StoredRecord> = read
                            .into_iter()
                            .filter(|r| r.offset < end && r.record.value.is_some())
                            .collect();
                        scanned += chunk.len();
                        columns = pull_chunk(functions, log, query, &source, &chunk, &mut rows)?;
                        if limit.is_some_and(|l| rows.len() >= l) {
                            break 'partitions;
                        }
                        if scanned > max_scan {
                            return Err(scanned_too_many());
                        }
                    }
                }
                columns
            }
        };
        if let Some(limit) = limit {
            rows.truncate(limit);
        }
        let (sender, receiver) = flume::bounded(rows.len() + 1);
        for row in rows {
            let _ = sender.send(PushEvent::Row(row));
        }
        // The sender goes here: the handle ends after the last row.
        drop(sender);
        Ok(Outcome::Push(PushHandle {
            query_id,
            columns,
            rows: receiver,
            _alive: Arc::new(()),
        }))
    }
}

/// The most rows a pull query's source records are decoded and filtered in at once.
const PULL_CHUNK_ROWS: usize = 8192;

/// The session setting for the most records a pull query over a stream may read before
/// it has its rows (all of them, or its LIMIT), and the most rows of a table a pull query
/// without LIMIT may scan.
pub const PULL_MAX_SCAN_PROPERTY: &str = "weir.pull.max.scan.rows";
/// Its default.
pub const DEFAULT_PULL_MAX_SCAN: usize = 10_000_000;

/// Runs a pull query's pipeline over `records` of `source` (a chunk of its rows), adding
/// the rows it answers to `rows`; returns its columns.
fn pull_chunk(
    functions: &crate::functions::Functions,
    log: &dyn Log,
    query: &Query,
    source: &Source,
    records: &[StoredRecord],
    rows: &mut Vec<Vec<serde_json::Value>>,
) -> Result<Vec<(String, SqlType)>> {
    // A windowed table's key carries its window: taken off before decoding, and shown
    // as WINDOWSTART and WINDOWEND after the key columns.
    let (view, batch) = match source.window {
        None => {
            let batch = source.layout.decode(&source.layout.schema(), records).batch;
            (source.clone(), batch)
        }
        Some(w) => {
            let schema = crate::with_window_bounds(&source.layout.schema());
            let decoded = crate::decode_run(
                &source.layout,
                &schema,
                records,
                false,
                None,
                Some(w),
                0,
                &mut Vec::new(),
            )?;
            windowed_view(source, decoded.batch)?
        }
    };
    let plan = plan_push(functions, query, &view)?;
    let columns: Vec<(String, SqlType)> = plan
        .output_schema
        .fields()
        .iter()
        .skip(2)
        .map(|f| Ok((f.name().clone(), sql_type_of(f.data_type())?)))
        .collect::<Result<_>>()?;
    // The pipeline a push query would run, over the snapshot, into a collection.
    let at: Vec<usize> = (2..2 + columns.len()).collect();
    let types: Vec<SqlType> = columns.iter().map(|(_, t)| t.clone()).collect();
    let mut pipeline = Pipeline {
        input: Input::Snapshot(vec![ChangeBatch {
            tombstones: false,
            batch,
        }]),
        stage_rows: Vec::new(),
        by_partition: false,
        operators: operators(
            plan,
            None,
            OnError {
                stop: false,
                warnings: functions.warning_source,
            },
        ),
    };
    let step = pipeline.step(log, 0, None, None)?;
    rows.extend(crate::push::client_rows(&step.changes, &types, &at));
    Ok(columns)
}

/// The key bytes a pull query's WHERE pins the table's (single-column) key to, when one
/// of its conjuncts is `key = literal`; the WHERE still runs over what is found.
fn key_lookup(
    functions: &crate::functions::Functions,
    query: &Query,
    source: &Source,
) -> Result<Option<Vec<u8>>> {
    let [key] = source.layout.key_columns.as_slice() else {
        return Ok(None);
    };
    let Some(condition) = &query.where_clause else {
        return Ok(None);
    };
    // The conjuncts of the WHERE.
    let mut conjuncts = vec![condition];
    let mut literal = None;
    while let Some(c) = conjuncts.pop() {
        use weir_sql::sqlparser::ast::{BinaryOperator, Expr};
        match c {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => conjuncts.extend([left.as_ref(), right.as_ref()]),
            Expr::Nested(inner) => conjuncts.push(inner),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let is_key = |e: &Expr| crate::plan::column_name(e).is_some_and(|c| c == key.name);
                let is_literal = |e: &Expr| matches!(e, Expr::Value(_));
                if is_key(left) && is_literal(right) {
                    literal = Some(right.as_ref().clone());
                } else if is_key(right) && is_literal(left) {
                    literal = Some(left.as_ref().clone());
                }
            }
            _ => {}
        }
    }
    let Some(literal) = literal else {
        return Ok(None);
    };
    // The literal as the key column's value, encoded as the table's keys are.
    let empty = Arc::new(arrow::datatypes::Schema::empty());
    let compiled = crate::plan::ExprCompiler::new(functions, &empty, None)?.compile(&literal)?;
    let one_row = RecordBatch::try_new_with_options(
        empty,
        vec![],
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| EngineError::Execution(e.to_string()))?;
    let value = compiled.expr.evaluate(&one_row)?.into_array(1)?;
    let Ok(value) = arrow::compute::cast(&value, &weir_format::arrow_type(&key.ty)) else {
        return Ok(None);
    };
    let key_only = weir_format::Layout {
        key_columns: vec![key.clone()],
        value_columns: vec![],
        key_format: source.layout.key_format.clone(),
        value_format: source.layout.value_format.clone(),
        header_columns: Vec::new(),
    };
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new(&key.name, value.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(schema, vec![value])
        .map_err(|e| EngineError::Execution(e.to_string()))?;
    Ok(key_only
        .encode(&batch)
        .ok()
        .and_then(|mut encoded| encoded.pop())
        .and_then(|(k, _)| k))
}

/// A windowed table as a pull query sees it: key columns, WINDOWSTART, WINDOWEND, values.
/// (`decoded` has the bounds last, as `decode_run` gives them: they move after the keys.)
fn windowed_view(source: &Source, decoded: RecordBatch) -> Result<(Source, RecordBatch)> {
    let keys = source.layout.key_columns.len();
    let mut view = source.clone();
    // The bounds are columns of the view now, not a window to carry.
    view.window = None;
    for b in crate::WINDOW_BOUNDS {
        view.layout
            .key_columns
            .push(Column::new(b, SqlType::Bigint));
    }
    let schema = view.layout.schema();
    let mut columns: Vec<ArrayRef> = decoded.columns().to_vec();
    let ends = columns.pop().expect("WINDOWEND");
    let starts = columns.pop().expect("WINDOWSTART");
    columns.insert(3 + keys, ends);
    columns.insert(3 + keys, starts);
    let batch =
        RecordBatch::try_new(schema, columns).map_err(|e| EngineError::Execution(e.to_string()))?;
    Ok((view, batch))
}
