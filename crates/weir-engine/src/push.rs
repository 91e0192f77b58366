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
use weir_log::{Log, StoredRecord};
use weir_sql::ast::SqlType;

use crate::error::Result;
use crate::pipeline::Pipeline;

/// Rows a client may fall behind by before its query is ended, unless the session's
/// `weir.push.buffer.rows` property says otherwise.
pub const CLIENT_BUFFER_ROWS: usize = 10_000;

/// The most a session may set `weir.push.buffer.rows` to: what one slow client can make
/// the server hold.
pub const MAX_CLIENT_BUFFER_ROWS: usize = 1_000_000;

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
    /// `SELECT ... EMIT CHANGES`: the same pipeline a persistent query runs, with the
    /// client as its sink.
    Select {
        pipeline: Box<Pipeline>,
        /// Output column types, for rendering values, and where each is in an output batch.
        types: Vec<SqlType>,
        at: Vec<usize>,
    },
    Print {
        /// Next offset to read, per partition of `topic`.
        offsets: Vec<u64>,
        interval: u64,
        seen: u64,
    },
}

pub(crate) struct PushQuery {
    pub id: String,
    pub topic: String,
    pub kind: PushKind,
    /// Rows the client may fall behind by; the channel holds one more, so the message
    /// that ends a slow client's query always fits.
    pub buffer: usize,
    /// Since when the client's buffer has been full.
    pub full_since: Option<Instant>,
    pub sender: Sender<PushEvent>,
    pub limit: Option<u64>,
    pub sent: u64,
    pub alive: std::sync::Arc<()>,
    /// Set once it is over (before its client can see its end): the engine counts it
    /// out at once, though a worker drops it only after its step.
    pub ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
                    self.end();
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
    /// evaluate are skipped, each logged to the processing log under this query's id.
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
        let mut consumed = 0;
        let partitions = match &self.kind {
            PushKind::Select { pipeline, .. } => pipeline.partitions(),
            PushKind::Print { offsets, .. } => offsets.len() as u32,
        };
        for partition in 0..partitions {
            if room == 0 {
                break;
            }
            let rows = match &mut self.kind {
                PushKind::Select {
                    pipeline,
                    types,
                    at,
                } => {
                    // Rows that fail are skipped, each with an entry in the processing
                    // log under this query's id (its client would otherwise see nothing,
                    // and not know why): a push query's pipeline never stops on them.
                    let started = std::time::Instant::now();
                    let step = pipeline.step(log, partition, Some(max.min(room)), None)?;
                    pipeline.advance(partition, &step, started.elapsed());
                    if !step.problems.is_empty() {
                        // (Best effort: a processing log that cannot be written does not
                        // end the query.)
                        let _ =
                            crate::write_processing_log(log, &self.id, &self.topic, &step.problems);
                    }
                    room = room.saturating_sub(step.consumed as usize);
                    consumed += step.consumed;
                    client_rows(&step.changes, types, at)
                }
                PushKind::Print {
                    offsets,
                    interval,
                    seen,
                } => {
                    let from = offsets[partition as usize];
                    let records = log.read(&self.topic, partition, from, max.min(room))?;
                    room -= records.len();
                    let Some(last) = records.last() else {
                        continue;
                    };
                    offsets[partition as usize] = last.offset + 1;
                    consumed += records.len() as u64;
                    print_lines(partition, &records, *interval, seen)
                }
            };
            for row in rows {
                if self.send(row) == Next::Finished {
                    return Ok((consumed, Next::Finished));
                }
            }
        }
        // A client that left while there was nothing to send is noticed here.
        if consumed == 0 && self.client_gone() {
            return Ok((0, Next::Finished));
        }
        Ok((consumed, Next::Continue))
    }

    /// Marks it over ([`PushQuery::ended`]).
    pub fn end(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ends the query of a client that fell too far behind; the channel keeps one place
    /// free for this message.
    fn end_slow_client(&mut self) -> Next {
        self.end();
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
}

/// `PRINT`'s rows: a line per `interval` records (`seen` counts them across steps).
fn print_lines(
    partition: u32,
    records: &[StoredRecord],
    interval: u64,
    seen: &mut u64,
) -> Vec<Vec<Value>> {
    let mut lines = Vec::new();
    for r in records {
        *seen += 1;
        if (*seen - 1).is_multiple_of(interval) {
            lines.push(vec![Value::String(print_line(partition, r))]);
        }
    }
    lines
}

/// A step's changes as the client's rows: deletes (a group's retraction, a table's
/// tombstone) show as nothing.
pub(crate) fn client_rows(
    changes: &[crate::ChangeBatch],
    types: &[SqlType],
    at: &[usize],
) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for crate::ChangeBatch { batch: out, .. } in changes.iter().filter(|c| !c.tombstones) {
        for row in 0..out.num_rows() {
            rows.push(
                at.iter()
                    .zip(types)
                    .map(|(c, ty)| weir_format::convert::value_at(out.column(*c), row, ty))
                    .collect(),
            );
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
