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

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use serde_json::Value;
use weir_format::Column;
use weir_log::{Log, StoredRecord};
use weir_sql::ast::{Query, SourceKind, SqlType};

use crate::catalog::Source;
use crate::error::{EngineError, Result};
use crate::plan::plan_push;
use crate::push::{PushEvent, PushHandle};
use crate::types::sql_type_of;
use crate::{Engine, Outcome};

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
        let records: Vec<StoredRecord> = match source.kind {
            SourceKind::Table => {
                let m = self.materialized.entry(source.name.clone()).or_default();
                if m.statement != source.statement {
                    *m = Materialized {
                        statement: source.statement.clone(),
                        ..Default::default()
                    };
                }
                m.catch_up(self.log.as_ref(), &source.topic)?;
                m.rows.values().cloned().collect()
            }
            SourceKind::Stream => {
                let partitions = self
                    .log
                    .topic(&source.topic)?
                    .map_or(0, |t| t.config.partitions);
                let mut all = Vec::new();
                for p in 0..partitions {
                    all.extend(
                        self.log
                            .read_to_end(&source.topic, p, 0)?
                            .into_iter()
                            .filter(|r| r.record.value.is_some()),
                    );
                }
                all
            }
        };
        // A windowed table's key carries its window: taken off before decoding, and shown
        // as WINDOWSTART and WINDOWEND after the key columns.
        let (view, batch) = match source.window {
            None => {
                let batch = source
                    .layout
                    .decode(&source.layout.schema(), &records)
                    .batch;
                (source.clone(), batch)
            }
            Some(w) => {
                let mut bounds = std::collections::HashMap::with_capacity(records.len());
                let stripped: Vec<StoredRecord> = records
                    .into_iter()
                    .filter_map(|mut r| {
                        let key = r.record.key.take()?;
                        let (k, start, end) = w.split(&key)?;
                        bounds.insert((r.partition, r.offset), (start, end));
                        r.record.key = Some(k.to_vec());
                        Some(r)
                    })
                    .collect();
                let decoded = source
                    .layout
                    .decode(&source.layout.schema(), &stripped)
                    .batch;
                windowed_view(&source, decoded, &bounds)?
            }
        };
        let plan = plan_push(&self.functions, query, &view)?;
        let columns: Vec<(String, SqlType)> = plan
            .output_schema
            .fields()
            .iter()
            .skip(2)
            .map(|f| Ok((f.name().clone(), sql_type_of(f.data_type())?)))
            .collect::<Result<_>>()?;
        let (outputs, _) = plan.apply_each(&batch);
        let mut rows = Vec::new();
        for out in outputs {
            for row in 0..out.num_rows() {
                rows.push(
                    columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, ty))| {
                            weir_format::convert::value_at(out.column(2 + i), row, ty)
                        })
                        .collect::<Vec<Value>>(),
                );
            }
        }
        if let Some(limit) = query.limit {
            rows.truncate(limit as usize);
        }
        let (sender, receiver) = flume::bounded(rows.len() + 1);
        for row in rows {
            let _ = sender.send(PushEvent::Row(row));
        }
        // The sender goes here: the handle ends after the last row.
        drop(sender);
        self.push_counter += 1;
        Ok(Outcome::Push(PushHandle {
            query_id: format!("query_{}", self.push_counter),
            columns,
            rows: receiver,
            _alive: Arc::new(()),
        }))
    }
}

/// A windowed table as a pull query sees it: key columns, WINDOWSTART, WINDOWEND, values.
fn windowed_view(
    source: &Source,
    decoded: RecordBatch,
    bounds: &std::collections::HashMap<(u32, u64), (i64, i64)>,
) -> Result<(Source, RecordBatch)> {
    let keys = source.layout.key_columns.len();
    let mut view = source.clone();
    for b in crate::WINDOW_BOUNDS {
        view.layout
            .key_columns
            .push(Column::new(b, SqlType::Bigint));
    }
    let schema = view.layout.schema();
    let mut columns: Vec<ArrayRef> = decoded.columns().to_vec();
    // Each decoded row's window, by where its record came from (records that did not
    // decode are not in the batch).
    let partitions = decoded.column(1).as_primitive::<Int32Type>();
    let offsets = decoded.column(2).as_primitive::<Int64Type>();
    let window: Vec<(i64, i64)> = (0..decoded.num_rows())
        .map(|i| {
            bounds
                .get(&(partitions.value(i) as u32, offsets.value(i) as u64))
                .copied()
                .unwrap_or_default()
        })
        .collect();
    let starts: ArrayRef = Arc::new(Int64Array::from_iter_values(window.iter().map(|w| w.0)));
    let ends: ArrayRef = Arc::new(Int64Array::from_iter_values(window.iter().map(|w| w.1)));
    columns.insert(3 + keys, ends);
    columns.insert(3 + keys, starts);
    let batch =
        RecordBatch::try_new(schema, columns).map_err(|e| EngineError::Execution(e.to_string()))?;
    Ok((view, batch))
}
