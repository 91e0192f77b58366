//! Push queries (`SELECT ... EMIT CHANGES [LIMIT n]`) and `PRINT topic`: transient
//! queries whose rows go to one client through a bounded channel instead of to a topic.
//!
//! A query reads only as many records as its client's channel has room for, so a fast
//! client is never overrun; a client that stops reading leaves its channel full, and after
//! [`SLOW_CLIENT_PATIENCE`] its query ends with a message rather than hold rows (or the
//! engine) back. A client that goes away ends its query at the next step.

use std::time::{Duration, Instant};

use flume::{Receiver, Sender, TrySendError};

use serde_json::Value;
use weir_format::Layout;
use weir_log::{Log, StoredRecord};
use weir_sql::ast::SqlType;

use crate::error::Result;
use crate::plan::SelectPlan;

/// Rows a client may fall behind by before its query is ended, unless the session's
/// `weir.push.buffer.rows` property says otherwise.
pub const CLIENT_BUFFER_ROWS: usize = 10_000;

/// How long a client's buffer may stay full before its query is ended.
pub const SLOW_CLIENT_PATIENCE: Duration = Duration::from_secs(2);

/// What a push query sends its client.
#[derive(Debug, Clone, PartialEq)]
pub enum PushEvent {
    /// One result row, a value per column.
    Row(Vec<Value>),
    /// The query has ended: LIMIT reached (`None`), or why it stopped.
    End(Option<String>),
}

/// The client's end of a push query. `rows` can be read blocking (`recv`,
/// `recv_timeout`) or from async code (`recv_async`, `into_stream`).
pub struct PushHandle {
    pub query_id: String,
    /// Column names and types, in order.
    pub columns: Vec<(String, SqlType)>,
    pub rows: Receiver<PushEvent>,
    /// Dropped with the handle: tells the engine the client is gone even when no row is
    /// being sent.
    pub(crate) _alive: std::sync::Arc<()>,
}

impl std::fmt::Debug for PushHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHandle")
            .field("query_id", &self.query_id)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

pub(crate) enum PushKind {
    Select {
        plan: Box<SelectPlan>,
        layout: Layout,
        timestamp: Option<(String, Option<String>)>,
        /// Output column types, for rendering values, and where each is in an output batch.
        types: Vec<SqlType>,
        at: Vec<usize>,
        /// GROUP BY: the plan's rows go through it; the client gets each group's changes.
        aggregate: Option<Box<crate::aggregate::Aggregator>>,
        /// The source is a table: an aggregation takes its deletes into account.
        source_is_table: bool,
        /// The source's keys carry windows.
        window: Option<crate::catalog::KeyWindow>,
        /// A join: its sources are read instead of `topic`, and the plan runs over the
        /// joined rows.
        join: Option<Box<crate::join::Joiner>>,
    },
    Print {
        interval: u64,
        seen: u64,
    },
}

pub(crate) struct PushQuery {
    pub id: String,
    pub statement: String,
    pub topic: String,
    pub kind: PushKind,
    pub offsets: Vec<u64>,
    /// Rows the client may fall behind by; the channel holds one more, so the message
    /// that ends a slow client's query always fits.
    pub buffer: usize,
    /// Since when the client's buffer has been full.
    pub full_since: Option<Instant>,
    pub sender: Sender<PushEvent>,
    pub limit: Option<u64>,
    pub sent: u64,
    pub alive: std::sync::Arc<()>,
}

/// Whether the query goes on after a step.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    Continue,
    Finished,
}

impl PushQuery {
    /// Offers one row; `Finished` when the client is gone, too slow, or LIMIT is reached.
    fn send(&mut self, row: Vec<Value>) -> Next {
        if self.sender.len() >= self.buffer {
            return self.end_slow_client();
        }
        match self.sender.try_send(PushEvent::Row(row)) {
            Ok(()) => {
                self.sent += 1;
                if self.limit.is_some_and(|l| self.sent >= l) {
                    let _ = self.sender.try_send(PushEvent::End(None));
                    return Next::Finished;
                }
                Next::Continue
            }
            // Full cannot happen (checked above); either way the query is over.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Next::Finished,
        }
    }

    /// Reads up to `max` records per partition and sends what they produce. Returns the
    /// records consumed, and whether the query goes on. Records that fail to decode or
    /// evaluate are skipped (the persistent queries over the same records log them).
    ///
    /// It reads no more than the client's buffer has room for, so a burst (a query from
    /// the earliest offset) never overruns a client that keeps reading; a client whose
    /// buffer stays full for [`SLOW_CLIENT_PATIENCE`] has fallen too far behind and its
    /// query ends with a message saying so.
    pub fn step(&mut self, log: &dyn Log, max: usize) -> Result<(u64, Next)> {
        let mut room = self.buffer.saturating_sub(self.sender.len());
        if room == 0 {
            if self.client_gone() {
                return Ok((0, Next::Finished));
            }
            let since = *self.full_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SLOW_CLIENT_PATIENCE {
                return Ok((0, self.end_slow_client()));
            }
            return Ok((0, Next::Continue));
        }
        self.full_since = None;
        if let PushKind::Select {
            join: Some(joiner),
            plan,
            aggregate,
            types,
            at,
            ..
        } = &mut self.kind
        {
            let step = joiner.step(log, None)?;
            let mut rows = Vec::new();
            for crate::ChangeBatch { tombstones, batch } in &step.changes {
                rows.extend(client_rows(
                    plan,
                    aggregate.as_deref_mut(),
                    (types, at),
                    *tombstones,
                    batch,
                ));
            }
            for row in rows {
                if self.send(row) == Next::Finished {
                    return Ok((step.consumed, Next::Finished));
                }
            }
            if step.consumed == 0 && self.client_gone() {
                return Ok((0, Next::Finished));
            }
            return Ok((step.consumed, Next::Continue));
        }
        let mut consumed = 0;
        for partition in 0..self.offsets.len() as u32 {
            if room == 0 {
                break;
            }
            let from = self.offsets[partition as usize];
            let records = log.read(&self.topic, partition, from, max.min(room))?;
            room -= records.len();
            let Some(last) = records.last() else {
                continue;
            };
            self.offsets[partition as usize] = last.offset + 1;
            consumed += records.len() as u64;
            if self.step_records(partition, &records)? == Next::Finished {
                return Ok((consumed, Next::Finished));
            }
        }
        // A client that left while there was nothing to send is noticed here.
        if consumed == 0 && self.client_gone() {
            return Ok((0, Next::Finished));
        }
        Ok((consumed, Next::Continue))
    }

    /// Ends the query of a client that fell too far behind; the channel keeps one place
    /// free for this message.
    fn end_slow_client(&mut self) -> Next {
        let _ = self.sender.try_send(PushEvent::End(Some(format!(
            "Push query {} ended: the client fell more than {} rows behind",
            self.id, self.buffer
        ))));
        Next::Finished
    }

    /// The handle holds the other reference to the liveness token: alone, the client is gone.
    fn client_gone(&self) -> bool {
        std::sync::Arc::strong_count(&self.alive) == 1
    }

    fn step_records(&mut self, partition: u32, records: &[StoredRecord]) -> Result<Next> {
        match &mut self.kind {
            PushKind::Print { interval, seen } => {
                let interval = *interval;
                let mut lines = Vec::new();
                for r in records {
                    *seen += 1;
                    if (*seen - 1) % interval != 0 {
                        continue;
                    }
                    lines.push(print_line(partition, r));
                }
                for line in lines {
                    if self.send(vec![Value::String(line)]) == Next::Finished {
                        return Ok(Next::Finished);
                    }
                }
                Ok(Next::Continue)
            }
            PushKind::Select {
                plan,
                layout,
                timestamp,
                types,
                at,
                aggregate,
                source_is_table,
                window,
                ..
            } => {
                let mut rows = Vec::new();
                for run in
                    records.chunk_by(|a, b| a.record.value.is_none() == b.record.value.is_none())
                {
                    // Tombstones carry no row, but take rows out of a table's groups.
                    let tombstones = run[0].record.value.is_none();
                    if tombstones && !(aggregate.is_some() && *source_is_table) {
                        continue;
                    }
                    let decoded = crate::decode_run(
                        layout,
                        &plan.input_schema,
                        run,
                        tombstones,
                        timestamp.as_ref(),
                        *window,
                        partition,
                        &mut Vec::new(),
                    )?;
                    rows.extend(client_rows(
                        plan,
                        aggregate.as_deref_mut(),
                        (types, at),
                        tombstones,
                        &decoded.batch,
                    ));
                }
                for row in rows {
                    if self.send(row) == Next::Finished {
                        return Ok(Next::Finished);
                    }
                }
                Ok(Next::Continue)
            }
        }
    }
}

/// What the plan (and the aggregation, if any) makes of a batch, as the client's rows.
/// A delete passes the WHERE (its row leaves its group); rows that fail are skipped (the
/// persistent queries log them); a group's retraction shows as nothing.
fn client_rows(
    plan: &SelectPlan,
    aggregate: Option<&mut crate::aggregate::Aggregator>,
    (types, at): (&[SqlType], &[usize]),
    tombstones: bool,
    batch: &arrow::array::RecordBatch,
) -> Vec<Vec<Value>> {
    let (batches, _) = plan.for_run(tombstones).apply_each(batch);
    let mut aggregate = aggregate;
    let mut rows = Vec::new();
    for out in batches {
        let changes = match aggregate.as_deref_mut() {
            Some(a) => a.process(&out, tombstones).0,
            None if tombstones => Vec::new(),
            None => vec![crate::ChangeBatch {
                tombstones: false,
                batch: out,
            }],
        };
        for crate::ChangeBatch { batch: out, .. } in changes.into_iter().filter(|c| !c.tombstones) {
            for row in 0..out.num_rows() {
                rows.push(
                    at.iter()
                        .zip(types)
                        .map(|(c, ty)| weir_format::convert::value_at(out.column(*c), row, ty))
                        .collect(),
                );
            }
        }
    }
    rows
}

/// One record as `PRINT` shows it.
fn print_line(partition: u32, r: &StoredRecord) -> String {
    let text = |b: &Option<Vec<u8>>| match b {
        None => "<null>".to_string(),
        Some(b) => String::from_utf8_lossy(b).into_owned(),
    };
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(r.record.timestamp)
        .map(|t| t.format("%Y/%m/%d %H:%M:%S%.3f Z").to_string())
        .unwrap_or_else(|| r.record.timestamp.to_string());
    format!(
        "rowtime: {time}, key: {}, value: {}, partition: {partition}",
        text(&r.record.key),
        text(&r.record.value)
    )
}

/// The offsets of every partition of `topic` a new query starts at: the oldest retained
/// (`earliest`) or the end.
pub(crate) fn start_offsets(log: &dyn Log, topic: &str, earliest: bool) -> Result<Vec<u64>> {
    let partitions = log.topic(topic)?.map(|t| t.config.partitions).unwrap_or(1);
    (0..partitions)
        .map(|p| {
            Ok(if earliest {
                log.offsets(topic, p)?.0
            } else {
                log.offsets(topic, p)?.1
            })
        })
        .collect()
}
